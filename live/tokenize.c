/* tokenize: vLLM /tokenize client (see tokenize.h). libcurl for HTTP, jansson for JSON. */
#include "tokenize.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define REPLY_MAX (64u << 20)

static pthread_once_t once = PTHREAD_ONCE_INIT;
static void init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }
void tokenize_global_init(void) { pthread_once(&once, init_once); }

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

static char *request_body(const char *model, const char *prompt, size_t prompt_len, const char *messages_json)
{
    json_t *o = json_object();
    json_object_set_new(o, "model", json_string(model));
    if (messages_json) {
        json_t *m = json_loads(messages_json, JSON_ALLOW_NUL, NULL); /* as the request reader allows */
        if (!m) {
            json_decref(o);
            return NULL;
        }
        json_object_set_new(o, "messages", m);
    } else {
        json_object_set_new(o, "prompt", json_stringn(prompt, prompt_len));
    }
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

int tokenize_parse_reply(const char *body, size_t len, uint32_t **tokens, size_t *n, kv_err *err)
{
    json_error_t je;
    json_t *root = json_loadb(body ? body : "", len, 0, &je);
    if (!root)
        return kv_err_set(err, KV_EPARSE, "/tokenize reply: invalid JSON at byte %d: %s", je.position, je.text);
    const json_t *arr = json_object_get(root, "tokens");
    int rc = KV_OK;
    if (!json_is_array(arr)) {
        rc = kv_err_set(err, KV_EPARSE, "/tokenize reply: no 'tokens' list");
        goto out;
    }
    size_t k = json_array_size(arr);
    uint32_t *t = malloc((k ? k : 1) * sizeof *t);
    if (!t) {
        rc = kv_err_set(err, KV_ENOMEM, "/tokenize reply: %zu tokens", k);
        goto out;
    }
    for (size_t i = 0; i < k; i++) {
        const json_t *v = json_array_get(arr, i);
        json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
        if (x < 0 || x > (json_int_t)UINT32_MAX) {
            free(t);
            rc = kv_err_set(err, KV_EPARSE, "/tokenize reply: tokens[%zu] is not a token id", i);
            goto out;
        }
        t[i] = (uint32_t)x;
    }
    *tokens = t;
    *n = k;
out:
    json_decref(root);
    return rc;
}

int tokenize_vllm(const char *endpoint, const char *model, const char *prompt, size_t prompt_len,
                  const char *messages_json, int timeout_ms, uint32_t **tokens, size_t *n, kv_err *err)
{
    *tokens = NULL;
    *n = 0;
    tokenize_global_init();
    char *body = request_body(model, prompt, prompt_len, messages_json);
    if (!body)
        return kv_err_set(err, KV_EINVAL, "/tokenize: cannot encode the request (messages not JSON?)");
    char url[512];
    snprintf(url, sizeof url, "http://%s/tokenize", endpoint);
    CURL *c = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    reply r = {0};
    int rc = KV_OK;
    if (!c || !h) {
        rc = kv_err_set(err, KV_ENOMEM, "/tokenize: cannot create a curl handle");
        goto out;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    CURLcode cc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (cc != CURLE_OK)
        rc = kv_err_set(err, KV_EIO, "%s: %s", url, r.overflow ? "reply larger than 64 MiB" : curl_easy_strerror(cc));
    else if (status != 200)
        rc = kv_err_set(err, KV_EIO, "%s: HTTP status %ld", url, status);
    else
        rc = tokenize_parse_reply(r.data, r.len, tokens, n, err);
out:
    curl_slist_free_all(h);
    if (c)
        curl_easy_cleanup(c);
    free(r.data);
    free(body);
    return rc;
}
