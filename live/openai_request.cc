/* openai_request: reads an OpenAI request body for routing (oai_request_parse and
 * oai_request_free, declared in openai_body.h; responses are read in openai_body.c).
 *
 * Why simdjson: an 8k-token prompt is 8k integers, and the byte-at-a-time lexer of yajl
 * spent ~190 us per such body, half of the EPP's CPU per request; simdjson's On-Demand
 * API reads it in about a quarter of that. On-Demand only parses what it is asked for,
 * so every value is visited here, unknown fields included: invalid JSON anywhere is
 * still rejected, as GIE's full unmarshal rejects it. When simdjson says "invalid",
 * yajl re-reads the body only to say where (line, column, byte), and yajl_gen writes
 * the compact `messages` text the approximate scorer hashes and /tokenize receives.
 *
 * Semantics: a repeated key, the last one wins; a field that has the wrong type is
 * recorded (the first problem per field) and reading goes on, so that a JSON error later
 * in the body still wins; the field checks run at the end in a fixed order (model, then
 * prompt or messages).
 *
 * Threads: one simdjson parser per thread (thread_local), reused across requests so its
 * buffers are allocated once per thread at the largest body seen. */
#include <simdjson.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

extern "C" {
#include <yajl/yajl_gen.h>
#include <yajl/yajl_parse.h>

#include "openai_body.h"
}

static_assert(OAI_BODY_PADDING >= simdjson::SIMDJSON_PADDING, "OAI_BODY_PADDING below simdjson's padding");

namespace {

using simdjson::error_code;
using simdjson::SUCCESS;
namespace od = simdjson::ondemand;

#define NOT_AN_ID "expected a token id (integer 0..4294967295)"

enum class model_st { absent, bad, ok };
enum class prompt_st { absent, ok, bad };

struct reader {
    oai_request *out;
    model_st model = model_st::absent;
    prompt_st prompt = prompt_st::absent;
    char perr[128] = "";
    int messages = 0;  // 0 absent or null, 1 a list, -1 anything else
    yajl_gen gen = nullptr;
    bool gen_failed = false;
    bool mt_int = false, mct_int = false;
    long long mt = 0, mct = 0;
    bool oom = false;

    explicit reader(oai_request *o) : out(o) {}
    ~reader()
    {
        if (gen)
            yajl_gen_free(gen);
    }
    reader(const reader &) = delete;
    reader &operator=(const reader &) = delete;
};

// Errors that say "this value has another type (or range)", not "this is not JSON".
bool semantic(error_code e) { return e == simdjson::INCORRECT_TYPE || e == simdjson::NUMBER_OUT_OF_RANGE; }

char *copy_str(std::string_view s)
{
    char *p = static_cast<char *>(malloc(s.size() + 1));
    if (p) {
        memcpy(p, s.data(), s.size());
        p[s.size()] = 0;
    }
    return p;
}

__attribute__((format(printf, 2, 3))) void prompt_fail(reader &r, const char *fmt, ...)
{
    if (r.prompt == prompt_st::bad)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r.perr, sizeof r.perr, fmt, ap);
    va_end(ap);
    r.prompt = prompt_st::bad;
}

void prompt_reset(reader &r)
{
    oai_request *o = r.out;
    free(o->tokens);
    free(const_cast<char *>(o->prompt));
    o->tokens = nullptr, o->prompt = nullptr;
    o->n_tokens = o->prompt_len = 0;
    r.prompt = prompt_st::absent;
}

void gen_check(reader &r, yajl_gen_status st)
{
    if (st != yajl_gen_status_ok)
        r.gen_failed = true;
}

// Visits a whole value so that invalid JSON inside it is found; with g, also writes it
// compactly (strings re-escaped by yajl_gen, numbers as written). `depth` counts the
// arrays and objects around v, the body's own object included: the walk recurses once
// per level, so a container past OAI_MAX_DEPTH is refused (DEPTH_ERROR) before the
// stack is.
error_code walk(reader &r, od::value v, yajl_gen g, unsigned depth)
{
    bool emit = g && !r.gen_failed;
    od::json_type t;
    error_code e = v.type().get(t);
    if (e)
        return e;
    if ((t == od::json_type::object || t == od::json_type::array) && depth >= OAI_MAX_DEPTH)
        return simdjson::DEPTH_ERROR;
    switch (t) {
    case od::json_type::object: {
        od::object o;
        if ((e = v.get_object().get(o)))
            return e;
        if (emit)
            gen_check(r, yajl_gen_map_open(g));
        for (auto f : o) {
            od::field fld;
            std::string_view k;
            if ((e = std::move(f).get(fld)) || (e = fld.unescaped_key().get(k)))
                return e;
            if (g && !r.gen_failed)
                gen_check(r, yajl_gen_string(g, reinterpret_cast<const unsigned char *>(k.data()), k.size()));
            if ((e = walk(r, fld.value(), g, depth + 1)))
                return e;
        }
        if (g && !r.gen_failed)
            gen_check(r, yajl_gen_map_close(g));
        return SUCCESS;
    }
    case od::json_type::array: {
        od::array a;
        if ((e = v.get_array().get(a)))
            return e;
        if (emit)
            gen_check(r, yajl_gen_array_open(g));
        for (auto el : a) {
            od::value x;
            if ((e = el.get(x)) || (e = walk(r, x, g, depth + 1)))
                return e;
        }
        if (g && !r.gen_failed)
            gen_check(r, yajl_gen_array_close(g));
        return SUCCESS;
    }
    case od::json_type::string: {
        std::string_view s;
        if ((e = v.get_string().get(s)))
            return e;
        if (emit)
            gen_check(r, yajl_gen_string(g, reinterpret_cast<const unsigned char *>(s.data()), s.size()));
        return SUCCESS;
    }
    case od::json_type::number: {
        double d;
        if ((e = v.get_double().get(d)))
            return e;
        std::string_view raw = v.raw_json_token();
        while (!raw.empty() && strchr(" \t\r\n", raw.back()))
            raw.remove_suffix(1);
        if (emit)
            gen_check(r, yajl_gen_number(g, raw.data(), raw.size()));
        return SUCCESS;
    }
    case od::json_type::boolean: {
        bool b;
        if ((e = v.get_bool().get(b)))
            return e;
        if (emit)
            gen_check(r, yajl_gen_bool(g, b));
        return SUCCESS;
    }
    case od::json_type::null: {
        bool n;
        if ((e = v.is_null().get(n)))
            return e;
        if (!n)
            return simdjson::N_ATOM_ERROR;
        if (emit)
            gen_check(r, yajl_gen_null(g));
        return SUCCESS;
    }
    }
    return simdjson::TAPE_ERROR;
}

// Ids being read, kept in locals (not in *r.out) so the per-id loop stays in registers.
struct ids {
    uint32_t *v = nullptr;
    size_t n = 0, cap = 0;
};

bool grow(ids &t)
{
    size_t cap = t.cap ? t.cap * 2 : 1024;
    uint32_t *v = static_cast<uint32_t *>(realloc(t.v, cap * sizeof *v));
    if (!v)
        return false;
    t.v = v, t.cap = cap;
    return true;
}

// One element of a token-id list (inside `depth` containers): appended, or recorded as
// the prompt's problem (named by `where`) and visited for validity. Takes the element as the iteration yields it:
// reading the id straight from it keeps the per-id loop short.
__attribute__((always_inline)) inline error_code token(reader &r, ids &t, simdjson::simdjson_result<od::value> &el,
                                                       const char *where, size_t i, unsigned depth)
{
    uint64_t u;
    error_code e = el.get_uint64().get(u);
    if (simdjson_likely(!e && u <= UINT32_MAX)) {
        if (simdjson_unlikely(t.n == t.cap) && !grow(t))
            return simdjson::MEMALLOC;
        t.v[t.n++] = static_cast<uint32_t>(u);
        return SUCCESS;
    }
    if (e && (el.error() || !semantic(e)))
        return e;
    prompt_fail(r, "field '%s[%zu]': " NOT_AN_ID, where, i);
    return walk(r, el.value_unsafe(), nullptr, depth);
}

// The list of ids that is prompt[0] of a batch.
error_code nested_ids(reader &r, ids &t, od::value v)
{
    od::array a;
    error_code e = v.get_array().get(a);
    if (e)
        return e;
    size_t i = 0;
    for (auto el : a)
        if ((e = token(r, t, el, "prompt[0]", i++, 3)))
            return e;
    if (i == 0)
        prompt_fail(r, "field 'prompt[0]': empty token list");
    return SUCCESS;
}

// prompt: text, token ids, a batch of texts or a batch of id lists. Only the first element
// of a batch is routed on (one request goes to one endpoint); the rest is only validated.
error_code read_prompt(reader &r, od::value v)
{
    prompt_reset(r);
    od::json_type t;
    error_code e = v.type().get(t);
    if (e)
        return e;
    if (t == od::json_type::string) {
        std::string_view s;
        if ((e = v.get_string().get(s)))
            return e;
        if (!(r.out->prompt = copy_str(s)))
            return simdjson::MEMALLOC;
        r.out->prompt_len = s.size();
        r.prompt = prompt_st::ok;
        return SUCCESS;
    }
    if (t != od::json_type::array) {
        if (t != od::json_type::null)
            prompt_fail(r, "field 'prompt': expected a string or a list");
        return walk(r, v, nullptr, 1);
    }
    // The first element decides what the list is. On-Demand cannot look at an element
    // without starting to read it, so its first byte is read from the text after '['.
    // raw_json_token() is "[" and the whitespace after it; the text stays valid through
    // the document's padding, so the scan stops at the element's byte or the ']'.
    const char *q = v.raw_json_token().data() + 1;
    while (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n')
        q++;
    char c = *q;
    od::array a;
    if ((e = v.get_array().get(a)))
        return e;
    r.prompt = prompt_st::ok;
    size_t i = 0;
    ids got;
    if (c == '-' || (c >= '0' && c <= '9')) { // token ids: the hot loop
        for (auto el : a)
            if ((e = token(r, got, el, "prompt", i++, 2)))
                break;
    } else {
        for (auto el : a) {
            od::value x;
            if ((e = el.get(x)))
                break;
            if (i == 0 && c == '"') {
                std::string_view s;
                if (!(e = x.get_string().get(s)) && (r.out->prompt = copy_str(s)))
                    r.out->prompt_len = s.size();
                else if (!e)
                    e = simdjson::MEMALLOC;
            } else if (i == 0 && c == '[') {
                e = nested_ids(r, got, x);
            } else {
                if (i == 0)
                    prompt_fail(r, "field 'prompt[0]': expected a string, a token id or a list of token ids");
                e = walk(r, x, nullptr, 2);
            }
            if (e)
                break;
            i++;
        }
    }
    r.out->tokens = got.v, r.out->n_tokens = got.n; // owned by *r.out from here, even on error
    if (!e && i == 0)
        prompt_fail(r, "field 'prompt': empty list");
    return e;
}

error_code read_messages(reader &r, od::value v)
{
    od::json_type t;
    error_code e = v.type().get(t);
    if (e)
        return e;
    if (t != od::json_type::array) {
        r.messages = t == od::json_type::null ? 0 : -1;
        return walk(r, v, nullptr, 1);
    }
    r.messages = 1;
    if (r.gen)
        yajl_gen_clear(r.gen), yajl_gen_reset(r.gen, nullptr);
    else if (!(r.gen = yajl_gen_alloc(nullptr)))
        return simdjson::MEMALLOC;
    r.gen_failed = false;
    return walk(r, v, r.gen, 1);
}

// An optional string field (model, cache_salt): the string, or null for anything else.
error_code read_string(reader &r, od::value v, const char **dst, bool *is_null)
{
    free(const_cast<char *>(*dst));
    *dst = nullptr;
    std::string_view s;
    error_code e = v.get_string().get(s);
    if (!e)
        return (*dst = copy_str(s)) ? SUCCESS : simdjson::MEMALLOC;
    if (!semantic(e))
        return e;
    if (is_null) {
        bool n = false;
        *is_null = v.is_null().get(n) == SUCCESS && n;
    }
    return walk(r, v, nullptr, 1);
}

error_code read_int(reader &r, od::value v, bool *is_int, long long *x)
{
    int64_t i;
    error_code e = v.get_int64().get(i);
    *is_int = !e, *x = e ? 0 : i;
    if (e && !semantic(e))
        return e;
    return e ? walk(r, v, nullptr, 1) : SUCCESS;
}

error_code read_field(reader &r, std::string_view k, od::value v)
{
    oai_request *o = r.out;
    if (k == "model") {
        bool null = false;
        error_code e = read_string(r, v, &o->model, &null);
        r.model = o->model && *o->model ? model_st::ok : null ? model_st::absent : model_st::bad;
        return e;
    }
    if (k == "prompt")
        return read_prompt(r, v);
    if (k == "messages")
        return read_messages(r, v);
    if (k == "max_tokens")
        return read_int(r, v, &r.mt_int, &r.mt);
    if (k == "max_completion_tokens")
        return read_int(r, v, &r.mct_int, &r.mct);
    if (k == "cache_salt")
        return read_string(r, v, &o->cache_salt, nullptr);
    if (k == "stream") {
        bool b;
        error_code e = v.get_bool().get(b);
        o->stream = !e && b;
        return !e || !semantic(e) ? e : walk(r, v, nullptr, 1);
    }
    return walk(r, v, nullptr, 1);
}

// A body simdjson did not read as a JSON object: yajl re-reads it to say where it is
// invalid (KV_EPARSE naming line, column and byte). Valid to yajl: KV_EINVAL when it
// is just not an object (not_object), else simdjson's reason without a position.
int json_error(const char *body, size_t len, error_code why, bool not_object, kv_err *err)
{
    yajl_handle h = yajl_alloc(nullptr, nullptr, nullptr);
    if (!h)
        return kv_err_set(err, KV_ENOMEM, "request body: out of memory");
    const unsigned char *b = reinterpret_cast<const unsigned char *>(body);
    yajl_status st = yajl_parse(h, b, len);
    size_t off = st == yajl_status_ok ? len : yajl_get_bytes_consumed(h);
    if (st == yajl_status_ok)
        st = yajl_complete_parse(h);
    int rc;
    if (st == yajl_status_ok && not_object) {
        rc = kv_err_set(err, KV_EINVAL, "request body: expected a JSON object");
    } else if (st == yajl_status_ok) {
        rc = kv_err_set(err, KV_EPARSE, "request body: invalid JSON: %s", simdjson::error_message(why));
    } else {
        if (off > len)
            off = len;
        int line = 1, col = 0; // column = bytes read on the line
        for (size_t i = 0; i < off; i++) {
            if (body[i] == '\n')
                line++, col = 0;
            else
                col++;
        }
        unsigned char *msg = yajl_get_error(h, 0, b, len);
        size_t n = msg ? strcspn(reinterpret_cast<const char *>(msg), "\n") : 0;
        rc = kv_err_set(err, KV_EPARSE, "request body: invalid JSON at line %d column %d (byte %zu): %.*s", line, col,
                        off, static_cast<int>(n), msg ? reinterpret_cast<const char *>(msg) : "");
        if (msg)
            yajl_free_error(h, msg);
    }
    yajl_free(h);
    return rc;
}

// The field checks, in the order a reader of the whole object would make them.
int finish(reader &r, kv_err *err)
{
    oai_request *o = r.out;
    if (r.model == model_st::absent)
        return kv_err_set(err, KV_EINVAL, "request body: field 'model' is required");
    if (r.model == model_st::bad)
        return kv_err_set(err, KV_EINVAL, "request body: field 'model': expected a non-empty string");
    if (r.prompt == prompt_st::bad)
        return kv_err_set(err, KV_EINVAL, "request body: %s", r.perr);
    if (r.prompt == prompt_st::absent) {
        if (r.messages == 0)
            return kv_err_set(err, KV_EINVAL, "request body: neither 'prompt' nor 'messages' is present");
        if (r.messages < 0)
            return kv_err_set(err, KV_EINVAL, "request body: field 'messages': expected a list");
        if (r.gen_failed)
            return kv_err_set(err, KV_EINVAL, "request body: field 'messages': cannot re-encode (nested too deep?)");
        const unsigned char *buf;
        size_t n;
        yajl_gen_get_buf(r.gen, &buf, &n);
        if (!(o->messages_json = copy_str(std::string_view(reinterpret_cast<const char *>(buf), n))))
            return kv_err_set(err, KV_ENOMEM, "request body: field 'messages': cannot serialise");
        o->messages_len = n;
        o->chat = true;
    }
    long long mt = r.mt_int ? r.mt : r.mct_int ? r.mct : 0;
    if (mt > 0)
        o->max_tokens = mt > static_cast<long long>(UINT32_MAX) ? UINT32_MAX : static_cast<uint32_t>(mt);
    return KV_OK;
}

// Reads the document; SUCCESS with *object false when it is valid JSON but not an object.
error_code read_document(reader &r, simdjson::padded_string_view in, bool *object)
{
    static thread_local od::parser parser;
    od::document doc;
    error_code e = parser.iterate(in).get(doc);
    od::json_type t;
    if (e || (e = doc.type().get(t)))
        return e;
    *object = t == od::json_type::object;
    if (!*object) // rare: json_error has yajl judge its validity rather than a second walker here
        return simdjson::INCORRECT_TYPE;
    od::object o;
    if ((e = doc.get_object().get(o)))
        return e;
    for (auto f : o) {
        od::field fld;
        std::string_view k;
        if ((e = std::move(f).get(fld)) || (e = fld.unescaped_key().get(k)) || (e = read_field(r, k, fld.value())))
            return e;
    }
    // past the object's end there is no further structural character, only whitespace
    return doc.current_location().error() == simdjson::OUT_OF_BOUNDS ? SUCCESS : simdjson::TRAILING_CONTENT;
}

} // namespace

extern "C" int oai_request_parse(const char *body, size_t len, size_t readable, oai_request *out, kv_err *err)
{
    memset(out, 0, sizeof *out);
    simdjson::padded_string copy;
    simdjson::padded_string_view in;
    if (readable >= len + simdjson::SIMDJSON_PADDING) {
        in = simdjson::padded_string_view(body, len, readable);
    } else {
        copy = simdjson::padded_string(body, len);
        if (len && !copy.data())
            return kv_err_set(err, KV_ENOMEM, "request body: out of memory (%zu bytes)", len);
        in = copy;
    }
    reader r(out);
    bool object = false;
    error_code e = read_document(r, in, &object);
    int rc;
    if (e == simdjson::MEMALLOC)
        rc = kv_err_set(err, KV_ENOMEM, "request body: out of memory (%zu bytes)", len);
    else if (e == simdjson::DEPTH_ERROR)
        rc = kv_err_set(err, KV_EINVAL, "request body: arrays and objects nested deeper than %d levels", OAI_MAX_DEPTH);
    else if (e)
        rc = json_error(body, len, e, e == simdjson::INCORRECT_TYPE && !object, err);
    else
        rc = finish(r, err);
    if (rc != KV_OK)
        oai_request_free(out);
    return rc;
}

extern "C" void oai_request_free(oai_request *r)
{
    if (!r)
        return;
    free(const_cast<char *>(r->model));
    free(const_cast<char *>(r->prompt));
    free(const_cast<char *>(r->cache_salt));
    free(r->tokens);
    free(r->messages_json);
    memset(r, 0, sizeof *r);
}
