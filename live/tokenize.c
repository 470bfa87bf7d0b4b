/* tokenize: vLLM render and /tokenize client (see tokenize.h). libcurl for HTTP, jansson
 * for JSON. */
#include "tokenize.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define REPLY_MAX (64u << 20)

static pthread_once_t once = PTHREAD_ONCE_INIT;
static void init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }
void tokenize_global_init(void) { pthread_once(&once, init_once); }

static _Atomic uint64_t n_rendered, n_fell_back, n_failures[TOKENIZE_REASONS];

const char *tokenize_reason_name(tokenize_reason r)
{
    static const char *const names[TOKENIZE_REASONS] = {"timeout", "transport", "http_status", "bad_reply",
                                                        "no_endpoint"};
    return (unsigned)r < TOKENIZE_REASONS ? names[r] : "?";
}

void tokenize_count_failure(tokenize_reason r)
{
    if ((unsigned)r < TOKENIZE_REASONS)
        atomic_fetch_add(&n_failures[r], 1);
}

void tokenize_get_stats(tokenize_stats *out)
{
    out->rendered = atomic_load(&n_rendered);
    out->fell_back = atomic_load(&n_fell_back);
    for (int r = 0; r < TOKENIZE_REASONS; r++)
        out->failures[r] = atomic_load(&n_failures[r]);
}

typedef struct reply {
    char *data;
    size_t len, cap;
    int overflow;
} reply;

static size_t on_data(char *p, size_t sz, size_t nm, void *ud)
{
    reply *r = ud;
    size_t n = sz * nm;
    if (r->len + n > REPLY_MAX) {
        r->overflow = 1;
        return 0;
    }
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 4096;
        while (cap < r->len + n)
            cap *= 2;
        char *d = realloc(r->data, cap);
        if (!d)
            return 0;
        r->data = d, r->cap = cap;
    }
    memcpy(r->data + r->len, p, n);
    r->len += n;
    return n;
}

/* /tokenize's body: the model and the prompt or the messages. */
static char *tokenize_body(const tokenize_req *q)
{
    json_t *o = json_object();
    json_object_set_new(o, "model", json_string(q->model));
    if (q->messages_json) {
        json_t *m = json_loads(q->messages_json, JSON_ALLOW_NUL, NULL); /* as the request reader allows */
        if (!m) {
            json_decref(o);
            return NULL;
        }
        json_object_set_new(o, "messages", m);
    } else {
        json_object_set_new(o, "prompt", json_stringn(q->prompt, q->prompt_len));
    }
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* One POST; KV_OK with *status and the reply, or the transport failure's reason. */
static int post(const tokenize_req *q, const char *path, const char *body, size_t len, long *status, reply *r,
                tokenize_reason *why, kv_err *err)
{
    char url[600], auth[1100];
    snprintf(url, sizeof url, "%s%s", q->base_url, path);
    CURL *c = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (h && q->authorization) {
        snprintf(auth, sizeof auth, "Authorization: %s", q->authorization);
        struct curl_slist *h2 = curl_slist_append(h, auth);
        h = h2 ? h2 : h;
    }
    int rc = KV_OK;
    if (!c || !h) {
        *why = TOKENIZE_TRANSPORT;
        rc = kv_err_set(err, KV_ENOMEM, "%s: cannot create a curl handle", url);
        goto out;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)q->timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    CURLcode cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    if (cc != CURLE_OK) {
        *why = r->overflow ? TOKENIZE_BAD_REPLY : cc == CURLE_OPERATION_TIMEDOUT ? TOKENIZE_TIMEOUT : TOKENIZE_TRANSPORT;
        rc = kv_err_set(err, KV_EIO, "%s: %s", url, r->overflow ? "reply larger than 64 MiB" : curl_easy_strerror(cc));
    }
out:
    curl_slist_free_all(h);
    if (c)
        curl_easy_cleanup(c);
    return rc;
}

int tokenize_prompt(const tokenize_req *q, tokenize_result *out, kv_err *err)
{
    *out = (tokenize_result){0};
    tokenize_global_init();
    long status = 0;
    reply r = {0};
    int rc = post(q, q->chat ? "/v1/chat/completions/render" : "/v1/completions/render", q->body, q->body_len, &status,
                  &r, &out->reason, err);
    char *body = NULL;
    if (rc == KV_OK && status == 404) {   /* vLLM older than the render API */
        out->fell_back = true;
        free(r.data);
        r = (reply){0};
        if (!(body = tokenize_body(q))) {
            out->reason = TOKENIZE_BAD_REPLY;
            rc = kv_err_set(err, KV_EINVAL, "%s/tokenize: cannot encode the request (messages not JSON?)", q->base_url);
        } else {
            rc = post(q, "/tokenize", body, strlen(body), &status, &r, &out->reason, err);
        }
    }
    if (rc == KV_OK && status != 200) {
        out->reason = TOKENIZE_HTTP_STATUS;
        rc = kv_err_set(err, KV_EIO, "%s%s: HTTP status %ld", q->base_url,
                        out->fell_back ? "/tokenize" : q->chat ? "/v1/chat/completions/render" : "/v1/completions/render",
                        status);
    }
    if (rc == KV_OK) {
        rc = out->fell_back ? tokenize_parse_reply(r.data, r.len, &out->tokens, &out->n, err)
                            : tokenize_parse_render(r.data, r.len, &out->tokens, &out->n, err);
        if (rc != KV_OK)
            out->reason = TOKENIZE_BAD_REPLY;
    }
    if (rc == KV_OK)
        atomic_fetch_add(out->fell_back ? &n_fell_back : &n_rendered, 1);
    else
        tokenize_count_failure(out->reason);
    free(r.data);
    free(body);
    return rc;
}

/* The ids of a JSON list of token ids. */
static int read_ids(const json_t *arr, const char *what, uint32_t **tokens, size_t *n, kv_err *err)
{
    size_t k = json_array_size(arr);
    uint32_t *t = malloc((k ? k : 1) * sizeof *t);
    if (!t)
        return kv_err_set(err, KV_ENOMEM, "%s: %zu tokens", what, k);
    for (size_t i = 0; i < k; i++) {
        const json_t *v = json_array_get(arr, i);
        json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
        if (x < 0 || x > (json_int_t)UINT32_MAX) {
            free(t);
            return kv_err_set(err, KV_EPARSE, "%s: item %zu is not a token id", what, i);
        }
        t[i] = (uint32_t)x;
    }
    *tokens = t;
    *n = k;
    return KV_OK;
}

/* The list under key of the reply's object (or, when list_ok, of a list's first item). */
static int parse_ids(const char *body, size_t len, const char *key, bool list_ok, const char *what,
                     uint32_t **tokens, size_t *n, kv_err *err)
{
    json_error_t je;
    json_t *root = json_loadb(body ? body : "", len, 0, &je);
    if (!root)
        return kv_err_set(err, KV_EPARSE, "%s: invalid JSON at byte %d: %s", what, je.position, je.text);
    const json_t *obj = list_ok && json_is_array(root) ? json_array_get(root, 0) : root;
    const json_t *arr = json_object_get(obj, key);
    int rc = json_is_array(arr) ? read_ids(arr, what, tokens, n, err)
                                : kv_err_set(err, KV_EPARSE, "%s: no '%s' list", what, key);
    json_decref(root);
    return rc;
}

int tokenize_parse_reply(const char *body, size_t len, uint32_t **tokens, size_t *n, kv_err *err)
{
    return parse_ids(body, len, "tokens", false, "/tokenize reply", tokens, n, err);
}

int tokenize_parse_render(const char *body, size_t len, uint32_t **tokens, size_t *n, kv_err *err)
{
    return parse_ids(body, len, "token_ids", true, "render reply", tokens, n, err);
}
