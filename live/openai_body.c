/* openai_body: OpenAI request/response body reading for the EPP (see openai_body.h).
 * Requests go through yajl's callbacks (an 8k-token prompt is 8k integers: a tree of
 * json_t values cost about a millisecond per request, most of a decision); responses,
 * read once per request and small, through jansson. This file only knows which fields
 * matter for routing and accounting, and says precisely which one is wrong when a body
 * is rejected. */
#include "openai_body.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_parse.h>

#define SSE_MAX_LINE (16u << 20)

/* ---- requests ---------------------------------------------------------------------------
 * yajl callbacks, one pass over the body and no tree: token ids go straight into a uint32
 * array, the few strings that matter are copied, everything else is only validated. A
 * semantic problem is recorded (the first one per field) and the parse goes on, so that
 * bad JSON is reported as such wherever it is, and the field checks run at the end in a
 * fixed order (model, then prompt or messages). A repeated key: the last one wins, as in
 * jansson. */

enum field { F_NONE, F_MODEL, F_PROMPT, F_MESSAGES, F_MAX_TOKENS, F_MAX_COMPLETION, F_STREAM, F_SALT };
enum model_st { M_ABSENT, M_BAD, M_OK };
/* P_LIST: a list whose first element is still to come; the first element makes it
 * P_IDS (list of ids), P_TEXTS (batch of texts) or P_NESTED (batch of id lists). */
enum prompt_st { P_ABSENT, P_TEXT, P_LIST, P_IDS, P_TEXTS, P_NESTED, P_BAD };
enum kind { K_NULL, K_BOOL, K_INT, K_DOUBLE, K_STRING, K_LIST, K_MAP };

struct oai_request_parser {
    oai_request *out;
    yajl_handle h;
    size_t base;                /* body bytes fed before the current piece */
    yajl_status st;             /* not ok: stopped at byte err_off */
    size_t err_off;
    size_t msg_start, msg_end;  /* the messages list in the body */
    int depth;                  /* containers open; -1 after a scalar document */
    bool object;                /* the top level is an object */
    enum field field;           /* key of the top-level value being read */
    enum model_st model;
    enum prompt_st prompt;
    size_t idx;                 /* elements of the prompt list seen */
    size_t sub;                 /* elements of prompt[0] seen, when it is a list */
    size_t cap;                 /* of out->tokens */
    char perr[128];             /* the prompt's first error */
    int messages;               /* 0 absent or null, 1 a list, -1 anything else */
    yajl_gen gen;               /* re-encodes messages compactly */
    bool gen_failed;
    bool mt_int, mct_int;       /* max_tokens, max_completion_tokens are integers */
    long long mt, mct;
    bool oom;
};
typedef struct oai_request_parser rparse;

static char *copy_str(const unsigned char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

static void prompt_reset(rparse *p)
{
    free(p->out->tokens);
    free((char *)p->out->prompt);
    p->out->tokens = NULL, p->out->prompt = NULL;
    p->out->n_tokens = p->out->prompt_len = 0;
    p->cap = p->idx = p->sub = 0;
    p->prompt = P_ABSENT;
}

__attribute__((format(printf, 2, 3))) static void prompt_fail(rparse *p, const char *fmt, ...)
{
    if (p->prompt == P_BAD)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->perr, sizeof p->perr, fmt, ap);
    va_end(ap);
    p->prompt = P_BAD;
}

#define NOT_AN_ID "expected a token id (integer 0..4294967295)"

/* Whether the value now starting is a token id slot: an element of an id list, or of
 * prompt[0] in a batch of id lists (the rest of a batch is not routed on). */
static bool id_slot(const rparse *p)
{
    return (p->depth == 2 && p->prompt == P_IDS) || (p->depth == 3 && p->prompt == P_NESTED && p->idx == 0);
}

static void not_an_id(rparse *p)
{
    if (p->depth == 2)
        prompt_fail(p, "field 'prompt[%zu]': " NOT_AN_ID, p->idx);
    else
        prompt_fail(p, "field 'prompt[0][%zu]': " NOT_AN_ID, p->sub);
}

static bool push_token(rparse *p, long long x)
{
    if (x < 0 || x > (long long)UINT32_MAX) {
        not_an_id(p);
        return true;
    }
    oai_request *o = p->out;
    if (o->n_tokens == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 1024;
        uint32_t *t = realloc(o->tokens, cap * sizeof *t);
        if (!t)
            return false;
        o->tokens = t, p->cap = cap;
    }
    o->tokens[o->n_tokens++] = (uint32_t)x;
    return true;
}

/* A top-level value (scalar, or the start of a container) of a field that is not the
 * prompt's or the messages' list. Returns 0 (abort) when out of memory. */
static int top_value(rparse *p, enum kind k, long long i, int b, const unsigned char *s, size_t n)
{
    oai_request *o = p->out;
    switch (p->field) {
    case F_MODEL:
        free((char *)o->model);
        o->model = NULL;
        p->model = k == K_NULL ? M_ABSENT : k == K_STRING && n ? M_OK : M_BAD;
        if (p->model == M_OK && !(o->model = copy_str(s, n)))
            return 0;
        break;
    case F_PROMPT:
        prompt_reset(p);
        if (k == K_STRING) {
            p->prompt = P_TEXT;
            if (!(o->prompt = copy_str(s, n)))
                return 0;
            o->prompt_len = n;
        } else if (k != K_NULL) {
            prompt_fail(p, "field 'prompt': expected a string or a list");
        }
        break;
    case F_MESSAGES: p->messages = k == K_NULL ? 0 : -1; break;
    case F_MAX_TOKENS: p->mt_int = k == K_INT, p->mt = i; break;
    case F_MAX_COMPLETION: p->mct_int = k == K_INT, p->mct = i; break;
    case F_STREAM: o->stream = k == K_BOOL && b; break;
    case F_SALT:
        free((char *)o->cache_salt);
        o->cache_salt = NULL;
        if (k == K_STRING && !(o->cache_salt = copy_str(s, n)))
            return 0;
        break;
    default: break;
    }
    return 1;
}

/* A value inside the prompt (depth >= 2), scalar or the start of a container. */
static int prompt_value(rparse *p, enum kind k, long long i, const unsigned char *s, size_t n)
{
    if (p->depth == 2 && p->prompt == P_LIST) { /* prompt[0] decides the kind */
        if (k == K_INT) {
            p->prompt = P_IDS;
        } else if (k == K_STRING) {
            p->prompt = P_TEXTS;
            if (!(p->out->prompt = copy_str(s, n)))
                return 0;
            p->out->prompt_len = n;
        } else if (k == K_LIST) {
            p->prompt = P_NESTED;
        } else {
            prompt_fail(p, "field 'prompt[0]': expected a string, a token id or a list of token ids");
        }
    }
    if (!id_slot(p))
        return 1;
    if (k != K_INT) {
        not_an_id(p);
        return 1;
    }
    return push_token(p, i);
}

static bool in_messages(const rparse *p) { return p->field == F_MESSAGES && p->messages == 1; }

static void gen_check(rparse *p, yajl_gen_status st)
{
    if (st != yajl_gen_status_ok)
        p->gen_failed = true;
}

/* Counts a finished element of the prompt list or of prompt[0]. */
static void element_done(rparse *p)
{
    if (p->field != F_PROMPT)
        return;
    if (p->depth == 2)
        p->idx++;
    else if (p->depth == 3 && p->idx == 0)
        p->sub++;
}

static int scalar(rparse *p, enum kind k, long long i, int b, const unsigned char *s, size_t n)
{
    if (p->depth == 0)
        p->depth = -1; /* a scalar document: not an object */
    if (!p->object || p->depth < 1)
        return 1;
    int ok = 1;
    if (p->depth == 1) {
        ok = top_value(p, k, i, b, s, n);
    } else if (p->field == F_PROMPT) {
        ok = prompt_value(p, k, i, s, n);
        element_done(p);
    } else if (in_messages(p) && !p->gen_failed) {
        switch (k) {
        case K_NULL: gen_check(p, yajl_gen_null(p->gen)); break;
        case K_BOOL: gen_check(p, yajl_gen_bool(p->gen, b)); break;
        case K_INT: gen_check(p, yajl_gen_integer(p->gen, i)); break;
        case K_STRING: gen_check(p, yajl_gen_string(p->gen, s, n)); break;
        default: break; /* doubles: cb_double */
        }
    }
    if (!ok)
        p->oom = true;
    return ok;
}

static int cb_null(void *c) { return scalar(c, K_NULL, 0, 0, NULL, 0); }
static int cb_bool(void *c, int b) { return scalar(c, K_BOOL, 0, b, NULL, 0); }
static int cb_int(void *c, long long i) { return scalar(c, K_INT, i, 0, NULL, 0); }
static int cb_string(void *c, const unsigned char *s, size_t n) { return scalar(c, K_STRING, 0, 0, s, n); }

static int cb_double(void *c, double d)
{
    rparse *p = c;
    if (p->depth > 1 && in_messages(p) && !p->gen_failed)
        gen_check(p, yajl_gen_double(p->gen, d));
    return scalar(p, K_DOUBLE, 0, 0, NULL, 0);
}

static int open_container(rparse *p, bool map)
{
    if (p->depth == 0) {
        p->object = map;
        p->depth = 1;
        return 1;
    }
    if (!p->object || p->depth < 1)
        return 1;
    if (p->depth == 1 && p->field == F_PROMPT && !map) {
        prompt_reset(p);
        p->prompt = P_LIST;
    } else if (p->depth == 1 && p->field == F_MESSAGES && !map) {
        p->messages = 1;
        if (p->gen)
            yajl_gen_clear(p->gen), yajl_gen_reset(p->gen, NULL);
        else if (!(p->gen = yajl_gen_alloc(NULL)))
            return p->oom = true, 0;
        p->gen_failed = false;
        p->msg_start = p->base + yajl_get_bytes_consumed(p->h) - 1;
    } else if (p->depth == 1) {
        if (!top_value(p, map ? K_MAP : K_LIST, 0, 0, NULL, 0))
            return p->oom = true, 0;
    } else if (p->field == F_PROMPT) {
        if (!prompt_value(p, map ? K_MAP : K_LIST, 0, NULL, 0))
            return p->oom = true, 0;
    }
    if (in_messages(p) && !p->gen_failed)
        gen_check(p, map ? yajl_gen_map_open(p->gen) : yajl_gen_array_open(p->gen));
    p->depth++;
    return 1;
}

static int close_container(rparse *p, bool map)
{
    if (!p->object || p->depth < 1)
        return 1;
    p->depth--;
    if (p->depth >= 1 && in_messages(p)) {
        if (!p->gen_failed)
            gen_check(p, map ? yajl_gen_map_close(p->gen) : yajl_gen_array_close(p->gen));
        if (p->depth == 1)
            p->msg_end = p->base + yajl_get_bytes_consumed(p->h);
    }
    if (p->field == F_PROMPT) {
        if (p->depth == 1 && p->prompt == P_LIST)
            prompt_fail(p, "field 'prompt': empty list");
        else if (p->depth == 2 && p->prompt == P_NESTED && p->idx == 0 && p->sub == 0)
            prompt_fail(p, "field 'prompt[0]': empty token list");
        element_done(p);
    }
    return 1;
}

static int cb_start_map(void *c) { return open_container(c, true); }
static int cb_end_map(void *c) { return close_container(c, true); }
static int cb_start_array(void *c) { return open_container(c, false); }
static int cb_end_array(void *c) { return close_container(c, false); }

static int cb_key(void *c, const unsigned char *k, size_t n)
{
    rparse *p = c;
    if (!p->object || p->depth < 1)
        return 1;
    if (p->depth > 1) {
        if (in_messages(p) && !p->gen_failed)
            gen_check(p, yajl_gen_string(p->gen, k, n));
        return 1;
    }
#define KEY(s) (n == sizeof(s) - 1 && memcmp(k, s, n) == 0)
    p->field = KEY("model")                   ? F_MODEL
               : KEY("prompt")                ? F_PROMPT
               : KEY("messages")              ? F_MESSAGES
               : KEY("max_tokens")            ? F_MAX_TOKENS
               : KEY("max_completion_tokens") ? F_MAX_COMPLETION
               : KEY("stream")                ? F_STREAM
               : KEY("cache_salt")            ? F_SALT
                                              : F_NONE;
#undef KEY
    return 1;
}

static const yajl_callbacks CALLBACKS = {cb_null,      cb_bool, cb_int,     cb_double,      NULL,        cb_string,
                                         cb_start_map, cb_key,  cb_end_map, cb_start_array, cb_end_array};

/* KV_EPARSE naming line, column and byte of the error, as jansson's messages did. */
static int json_error(rparse *p, const char *body, size_t off, size_t len, kv_err *err)
{
    if (off > len)
        off = len;
    int line = 1, col = 0; /* jansson's convention: column = bytes read on the line */
    for (size_t i = 0; i < off; i++) {
        if (body[i] == '\n')
            line++, col = 0;
        else
            col++;
    }
    unsigned char *msg = yajl_get_error(p->h, 0, (const unsigned char *)body, len);
    size_t n = msg ? strcspn((const char *)msg, "\n") : 0;
    int rc = kv_err_set(err, KV_EPARSE, "request body: invalid JSON at line %d column %d (byte %zu): %.*s", line, col,
                        off, (int)n, msg ? (const char *)msg : "");
    if (msg)
        yajl_free_error(p->h, msg);
    return rc;
}

/* The field checks, in the order a reader of the whole object would make them. */
static int finish(rparse *p, const char *body, size_t len, kv_err *err)
{
    oai_request *o = p->out;
    if (!p->object)
        return kv_err_set(err, KV_EINVAL, "request body: expected a JSON object");
    if (p->model == M_ABSENT)
        return kv_err_set(err, KV_EINVAL, "request body: field 'model' is required");
    if (p->model == M_BAD)
        return kv_err_set(err, KV_EINVAL, "request body: field 'model': expected a non-empty string");
    if (p->prompt == P_BAD)
        return kv_err_set(err, KV_EINVAL, "request body: %s", p->perr);
    if (p->prompt == P_ABSENT) {
        if (p->messages == 0)
            return kv_err_set(err, KV_EINVAL, "request body: neither 'prompt' nor 'messages' is present");
        if (p->messages < 0)
            return kv_err_set(err, KV_EINVAL, "request body: field 'messages': expected a list");
        if (p->gen_failed)
            return kv_err_set(err, KV_EINVAL, "request body: field 'messages': cannot re-encode (nested too deep?)");
        const unsigned char *buf;
        size_t n;
        yajl_gen_get_buf(p->gen, &buf, &n);
        if (!(o->messages_json = copy_str(buf, n)))
            return kv_err_set(err, KV_ENOMEM, "request body: field 'messages': cannot serialise");
        o->messages_len = n;
        o->chat = true;
        if (p->msg_start < p->msg_end && p->msg_end <= len)
            o->messages = body + p->msg_start, o->messages_raw_len = p->msg_end - p->msg_start;
    }
    long long mt = p->mt_int ? p->mt : p->mct_int ? p->mct : 0;
    if (mt > 0)
        o->max_tokens = mt > (long long)UINT32_MAX ? UINT32_MAX : (uint32_t)mt;
    return KV_OK;
}

oai_request_parser *oai_request_begin(oai_request *out)
{
    memset(out, 0, sizeof *out);
    rparse *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->out = out;
    if (!(p->h = yajl_alloc(&CALLBACKS, NULL, p))) {
        free(p);
        return NULL;
    }
    return p;
}

int oai_request_feed(oai_request_parser *p, const char *piece, size_t len)
{
    if (p->st != yajl_status_ok || p->oom || len == 0)
        return p->oom ? KV_ENOMEM : KV_OK;
    p->st = yajl_parse(p->h, (const unsigned char *)piece, len);
    if (p->st != yajl_status_ok)
        p->err_off = p->base + yajl_get_bytes_consumed(p->h);
    p->base += len;
    return p->oom ? KV_ENOMEM : KV_OK;
}

void oai_request_parser_free(oai_request_parser *p)
{
    if (!p)
        return;
    if (p->gen)
        yajl_gen_free(p->gen);
    yajl_free(p->h);
    free(p);
}

int oai_request_end(oai_request_parser *p, const char *body, size_t len, kv_err *err)
{
    oai_request *out = p->out;
    if (p->st == yajl_status_ok && !p->oom) {
        p->st = yajl_complete_parse(p->h);
        p->err_off = len; /* premature end: the error is at the end */
    }
    int rc = p->oom                  ? kv_err_set(err, KV_ENOMEM, "request body: out of memory (%zu bytes)", len)
             : p->st != yajl_status_ok ? json_error(p, body, p->err_off, len, err)
                                       : finish(p, body, len, err);
    oai_request_parser_free(p);
    if (rc != KV_OK)
        oai_request_free(out);
    return rc;
}

int oai_request_parse(const char *body, size_t len, oai_request *out, kv_err *err)
{
    oai_request_parser *p = oai_request_begin(out);
    if (!p)
        return kv_err_set(err, KV_ENOMEM, "request body: cannot allocate a parser");
    oai_request_feed(p, body, len);
    return oai_request_end(p, body, len, err);
}

void oai_request_free(oai_request *r)
{
    if (!r)
        return;
    free((char *)r->model);
    free((char *)r->prompt);
    free((char *)r->cache_salt);
    free(r->tokens);
    free(r->messages_json);
    memset(r, 0, sizeof *r);
}

static uint64_t uint_field(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

/* Reads root.usage into u when it is an object; returns whether it was. */
static bool read_usage(const json_t *root, oai_usage *u)
{
    const json_t *usage = json_object_get(root, "usage");
    if (!json_is_object(usage))
        return false;
    u->found = true;
    u->prompt_tokens = uint_field(usage, "prompt_tokens");
    u->completion_tokens = uint_field(usage, "completion_tokens");
    u->total_tokens = uint_field(usage, "total_tokens");
    u->cached_tokens = uint_field(json_object_get(usage, "prompt_tokens_details"), "cached_tokens");
    return true;
}

int oai_usage_parse(const char *body, size_t len, oai_usage *u, kv_err *err)
{
    memset(u, 0, sizeof *u);
    json_error_t je;
    json_t *root = json_loadb(body, len, 0, &je);
    if (!root)
        return kv_err_set(err, KV_EPARSE, "response body: invalid JSON at line %d column %d (byte %d): %s", je.line,
                          je.column, je.position, je.text);
    read_usage(root, u);
    json_decref(root);
    return KV_OK;
}

static void sse_line(oai_sse *s, const char *line, size_t len)
{
    if (len && line[len - 1] == '\r')
        len--;
    if (len < 5 || memcmp(line, "data:", 5) != 0)
        return; /* comments, event:, id:, retry: and blank separators */
    line += 5, len -= 5;
    while (len && *line == ' ')
        line++, len--;
    if (len == 6 && memcmp(line, "[DONE]", 6) == 0) {
        s->done = true;
        return;
    }
    json_t *root = json_loadb(line, len, 0, NULL);
    if (!root) {
        s->bad_events++;
        return;
    }
    s->events++;
    oai_usage u = {0};
    if (read_usage(root, &u))
        s->usage = u;
    json_decref(root);
}

int oai_sse_feed(oai_sse *s, const char *chunk, size_t len)
{
    while (len) {
        const char *nl = memchr(chunk, '\n', len);
        size_t seg = nl ? (size_t)(nl - chunk) : len;
        if (s->skipping) {
            if (nl)
                s->skipping = false;
        } else if (s->len + seg > SSE_MAX_LINE) {
            s->bad_events++;
            s->len = 0;
            s->skipping = !nl;
        } else if (nl && s->len == 0) {
            sse_line(s, chunk, seg); /* whole line inside this chunk: no copy */
        } else {
            if (s->len + seg > s->cap) {
                size_t cap = s->cap ? s->cap : 256;
                while (cap < s->len + seg)
                    cap *= 2;
                char *p = realloc(s->line, cap);
                if (!p)
                    return KV_ENOMEM;
                s->line = p, s->cap = cap;
            }
            memcpy(s->line + s->len, chunk, seg);
            s->len += seg;
            if (nl) {
                sse_line(s, s->line, s->len);
                s->len = 0;
            }
        }
        if (!nl)
            break;
        chunk += seg + 1, len -= seg + 1;
    }
    return KV_OK;
}

void oai_sse_free(oai_sse *s)
{
    free(s->line);
    memset(s, 0, sizeof *s);
}
