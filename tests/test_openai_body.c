/* test_openai_body: OpenAI request parsing (live/openai_request.cc) and usage extraction
 * (live/openai_body.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "openai_body.h"
#include "support/regress.h"

static int parse(const char *s, oai_request *r, kv_err *e)
{
    return oai_request_parse(s, strlen(s), strlen(s), r, e);
}

static void test_text_prompt(void **st)
{
    oai_request r;
    kv_err e = {0};
    assert_int_equal(parse("{\"model\":\"m1\",\"prompt\":\"hello\",\"max_tokens\":7,\"stream\":true,"
                           "\"cache_salt\":\"s\"}", &r, &e), KV_OK);
    assert_string_equal(r.model, "m1");
    assert_false(r.chat);
    assert_int_equal(r.prompt_len, 5);
    assert_memory_equal(r.prompt, "hello", 5);
    assert_null(r.tokens);
    assert_int_equal(r.max_tokens, 7);
    assert_true(r.stream);
    assert_string_equal(r.cache_salt, "s");
    oai_request_free(&r);
}

static void test_token_prompts(void **st)
{
    oai_request r;
    kv_err e = {0};
    assert_int_equal(parse("{\"model\":\"m\",\"prompt\":[1,2,4294967295]}", &r, &e), KV_OK);
    assert_int_equal(r.n_tokens, 3);
    assert_int_equal(r.tokens[0], 1);
    assert_int_equal(r.tokens[2], 4294967295u);
    assert_null(r.prompt);
    assert_false(r.stream);
    oai_request_free(&r);
    /* a batch of token lists routes on the first */
    assert_int_equal(parse("{\"model\":\"m\",\"prompt\":[[5,6],[7,8,9]],\"max_completion_tokens\":3}", &r, &e),
                     KV_OK);
    assert_int_equal(r.n_tokens, 2);
    assert_int_equal(r.tokens[0], 5);
    assert_int_equal(r.tokens[1], 6);
    assert_int_equal(r.max_tokens, 3);
    oai_request_free(&r);
    /* whitespace before the first element does not change what the list is */
    assert_int_equal(parse("{\"model\":\"m\",\"prompt\":[ \n\t1, 2 ]}", &r, &e), KV_OK);
    assert_int_equal(r.n_tokens, 2);
    oai_request_free(&r);
    assert_int_equal(parse("{\"model\":\"m\",\"prompt\":[\r\n [ 5 , 6 ] ]}", &r, &e), KV_OK);
    assert_int_equal(r.n_tokens, 2);
    assert_int_equal(r.tokens[1], 6);
    oai_request_free(&r);
    assert_int_equal(parse("{\"model\":\"m\",\"prompt\":[  \"ab\" ]}", &r, &e), KV_OK);
    assert_memory_equal(r.prompt, "ab", 2);
    oai_request_free(&r);
    /* a batch of texts routes on the first */
    assert_int_equal(parse("{\"model\":\"m\",\"prompt\":[\"ab\",\"cd\"]}", &r, &e), KV_OK);
    assert_int_equal(r.prompt_len, 2);
    assert_memory_equal(r.prompt, "ab", 2);
    oai_request_free(&r);
}

static void expect_err(const char *body, int code, const char *needle);

static void test_chat(void **st)
{
    oai_request r;
    kv_err e = {0};
    assert_int_equal(parse("{\"model\":\"m\",\"messages\":[ {\"role\": \"user\", \"content\": \"hi\"} ]}", &r, &e),
                     KV_OK);
    assert_true(r.chat);
    assert_string_equal(r.messages_json, "[{\"role\":\"user\",\"content\":\"hi\"}]");
    assert_int_equal(r.messages_len, strlen(r.messages_json));
    oai_request_free(&r);

    /* nesting, numbers (as written), escapes and non-ASCII come out compact and as
     * jansson wrote them; an escaped key is unescaped */
    const char *b = "{\"messages\": [{\"role\":\"user\", \"content\": [{\"type\": \"text\", \"text\": \"a\\\"b\\n\u00e9\"}],"
                    " \"n\": [1, -2, 2.5e-3 , true, false, null, {}], \"\\u006b\": []}], \"model\": \"m\", \"prompt\": null}";
    assert_int_equal(parse(b, &r, &e), KV_OK);
    assert_true(r.chat);
    assert_string_equal(r.messages_json, "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\\\"b\\n\u00e9\"}],"
                                         "\"n\":[1,-2,2.5e-3,true,false,null,{}],\"k\":[]}]");
    oai_request_free(&r);

    /* a prompt wins over messages, whatever the messages are */
    assert_int_equal(parse("{\"messages\":7,\"model\":\"m\",\"prompt\":[3]}", &r, &e), KV_OK);
    assert_false(r.chat);
    assert_null(r.messages_json);
    assert_int_equal(r.n_tokens, 1);
    oai_request_free(&r);
}

/* Fields anywhere in the object, nested look-alikes ignored, repeated keys: last wins. */
static void test_field_order_and_repeats(void **st)
{
    oai_request r;
    kv_err e = {0};
    assert_int_equal(parse("{\"x\":{\"model\":\"no\",\"prompt\":[9]},\"stream\":true,\"prompt\":[[1]],"
                           "\"max_tokens\":\"5\",\"max_completion_tokens\":4,\"cache_salt\":\"a\","
                           "\"prompt\":[7,8],\"model\":\"m1\",\"model\":\"m2\",\"stream\":1,\"cache_salt\":\"b\"}",
                           &r, &e),
                     KV_OK);
    assert_string_equal(r.model, "m2");
    assert_int_equal(r.n_tokens, 2);
    assert_int_equal(r.tokens[0], 7);
    assert_int_equal(r.tokens[1], 8);
    assert_false(r.stream);
    assert_int_equal(r.max_tokens, 4); /* max_tokens is not an integer: max_completion_tokens */
    assert_string_equal(r.cache_salt, "b");
    oai_request_free(&r);
    /* a bad prompt replaced by a good one is fine; the reverse is not */
    assert_int_equal(parse("{\"model\":\"m\",\"prompt\":[-1],\"prompt\":\"ok\"}", &r, &e), KV_OK);
    assert_memory_equal(r.prompt, "ok", 2);
    oai_request_free(&r);
    expect_err("{\"model\":\"m\",\"prompt\":\"ok\",\"prompt\":[1,{}]}", KV_EINVAL, "field 'prompt[1]'");
    /* JSON errors win over field errors, and say where they are */
    expect_err("{\"prompt\":[-1],\n\"model\":3,\n  x}", KV_EPARSE, "invalid JSON at line 3 column 3");
    expect_err("{\"model\":\"m\",\"prompt\":[1]} {}", KV_EPARSE, "invalid JSON");
    expect_err("{\"model\":\"m\",\"prompt\":\"\xff\"}", KV_EPARSE, "invalid JSON");
    expect_err("{\"model\":\"m\",\"prompt\":[1, 99999999999999999999]}", KV_EINVAL, "field 'prompt[1]'"); /* valid JSON */
    expect_err("{\"model\":\"m\",\"prompt\":[1],\"temperature\":tru}", KV_EPARSE, "invalid JSON at line 1"); /* unread field */
    expect_err("{\"model\":\"m\",\"prompt\":[1],\"x\":[{\"y\":[1 2]}]}", KV_EPARSE, "invalid JSON");
    expect_err("{\"model\":\"m\",\"prompt\":[1],\"x\":\"\\q\"}", KV_EPARSE, "invalid JSON");
    expect_err("3", KV_EINVAL, "expected a JSON object");
}

/* Read in place, with hostile bytes in the padding after the end, a body parses exactly
 * as its copy does: same fields, same error text. Every proper prefix is invalid JSON. */
static void same_in_place(const char *body, size_t len, size_t cut, char fill)
{
    static char buf[4096];
    assert_true(len + OAI_BODY_PADDING <= sizeof buf);
    memcpy(buf, body, cut);
    memset(buf + cut, fill, OAI_BODY_PADDING);
    oai_request whole, part;
    kv_err ew = {0}, ep = {0};
    int rw = oai_request_parse(body, cut, cut, &whole, &ew);
    assert_int_equal(oai_request_parse(buf, cut, cut + OAI_BODY_PADDING, &part, &ep), rw);
    assert_string_equal(ep.msg, ew.msg);
    if (cut < len)
        assert_int_equal(rw, KV_EPARSE);
    if (rw == KV_OK) {
        assert_string_equal(part.model, whole.model);
        assert_int_equal(part.chat, whole.chat);
        assert_int_equal(part.n_tokens, whole.n_tokens);
        if (whole.n_tokens)
            assert_memory_equal(part.tokens, whole.tokens, whole.n_tokens * sizeof whole.tokens[0]);
        assert_int_equal(part.prompt_len, whole.prompt_len);
        if (whole.prompt)
            assert_memory_equal(part.prompt, whole.prompt, whole.prompt_len);
        if (whole.chat)
            assert_string_equal(part.messages_json, whole.messages_json);
        assert_int_equal(part.max_tokens, whole.max_tokens);
        assert_int_equal(part.stream, whole.stream);
    }
    oai_request_free(&whole);
    oai_request_free(&part);
}

static void test_in_place(void **st)
{
    static const char *bodies[] = {
        "{\"model\":\"m\",\"prompt\":[123456,7,4294967295,0],\"max_tokens\":9,\"stream\":true}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9llo \\\"x\\\"\"}],\"cache_salt\":\"s\"}",
        "{\"model\":\"m\",\"prompt\":[[1,2],[3]],\"max_completion_tokens\":2}",
        "{\"model\":\"m\",\"prompt\":\"text\\n\"}",
        "{\"model\":\"m\",\n\"prompt\":[1,2,}",
        "{\"model\":\"m\",\"prompt\":[1,-2]}",
        "{\"model\":\"m\",\"prompt\":[1,2]",
    };
    static const char fills[] = {0, '}', ']', '"', '1', ',', '\\', ' '};
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        size_t len = strlen(bodies[i]);
        for (size_t f = 0; f < sizeof fills; f++)
            for (size_t cut = 0; cut <= len; cut++)
                same_in_place(bodies[i], len, cut, fills[f]);
    }
}

/* Token-id lists of every size and spacing against the ids they were printed from. */
static void test_token_lists_reference(void **st)
{
    static char body[1 << 20];
    static uint32_t ids[60000];
    uint64_t x = 42;
    for (int round = 0; round < 40; round++) {
        size_t n = round < 3 ? (size_t)round + 1 : 1 + (size_t)(x >> 33) % 60000;
        int len = snprintf(body, sizeof body, "{ \"model\" : \"m\" ,\"prompt\":%s[", round % 2 ? "[" : "");
        for (size_t i = 0; i < n; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            ids[i] = (uint32_t)(x >> (32 + (i % 3) * 8)); /* 32, 24 and 16-bit magnitudes */
            len += snprintf(body + len, sizeof body - len, "%s%u", i ? (i % 5 ? "," : " ,\n ") : "", ids[i]);
        }
        len += snprintf(body + len, sizeof body - len, "]%s}", round % 2 ? ",[1]]" : "");
        oai_request r;
        kv_err e = {0};
        assert_int_equal(oai_request_parse(body, (size_t)len, (size_t)len, &r, &e), KV_OK);
        assert_int_equal(r.n_tokens, n);
        assert_memory_equal(r.tokens, ids, n * sizeof ids[0]);
        oai_request_free(&r);
    }
}

static void expect_err(const char *body, int code, const char *needle)
{
    oai_request r;
    kv_err e = {0};
    assert_int_equal(parse(body, &r, &e), code);
    if (!strstr(e.msg, needle))
        fail_msg("error '%s' lacks '%s'", e.msg, needle);
    assert_null(r.model);
    assert_null(r.tokens);
    assert_null(r.prompt);
    assert_null(r.messages_json);
    oai_request_free(&r);
}

static void test_errors(void **st)
{
    expect_err("{\"model\":\"m\",", KV_EPARSE, "invalid JSON at line 1");
    expect_err("", KV_EPARSE, "invalid JSON");
    expect_err("[1]", KV_EINVAL, "expected a JSON object");
    expect_err("{\"prompt\":\"x\"}", KV_EINVAL, "field 'model' is required");
    expect_err("{\"model\":null,\"prompt\":\"x\"}", KV_EINVAL, "field 'model' is required");
    expect_err("{\"model\":3,\"prompt\":\"x\"}", KV_EINVAL, "field 'model': expected a non-empty string");
    expect_err("{\"model\":\"\",\"prompt\":\"x\"}", KV_EINVAL, "field 'model'");
    expect_err("{\"model\":\"m\"}", KV_EINVAL, "neither 'prompt' nor 'messages'");
    expect_err("{\"model\":\"m\",\"prompt\":[]}", KV_EINVAL, "field 'prompt': empty list");
    expect_err("{\"model\":\"m\",\"prompt\":[1,-2]}", KV_EINVAL, "field 'prompt[1]': expected a token id");
    expect_err("{\"model\":\"m\",\"prompt\":[1,4294967296]}", KV_EINVAL, "field 'prompt[1]'");
    expect_err("{\"model\":\"m\",\"prompt\":[1,2.5]}", KV_EINVAL, "field 'prompt[1]'");
}

static void test_errors_nested(void **st)
{
    expect_err("{\"model\":\"m\",\"prompt\":[[1,\"x\"]]}", KV_EINVAL, "field 'prompt[0][1]'");
    expect_err("{\"model\":\"m\",\"prompt\":[[]]}", KV_EINVAL, "field 'prompt[0]': empty token list");
    expect_err("{\"model\":\"m\",\"prompt\":[{}]}", KV_EINVAL, "field 'prompt[0]'");
    expect_err("{\"model\":\"m\",\"prompt\":7}", KV_EINVAL, "field 'prompt': expected a string or a list");
    expect_err("{\"model\":\"m\",\"messages\":{}}", KV_EINVAL, "field 'messages': expected a list");
}

/* head, then n times open, then mid, then n times close, then tail (caller frees). */
static char *nest(const char *head, const char *open, size_t n, const char *mid, const char *close, const char *tail)
{
    size_t lo = strlen(open), lc = strlen(close);
    char *b = malloc(strlen(head) + n * (lo + lc) + strlen(mid) + strlen(tail) + 1), *p = b;
    p = stpcpy(p, head);
    for (size_t i = 0; i < n; i++)
        p = stpcpy(p, open);
    p = stpcpy(p, mid);
    for (size_t i = 0; i < n; i++)
        p = stpcpy(p, close);
    stpcpy(p, tail);
    return b;
}

#define DEEPER "nested deeper than 1024 levels"

/* OAI_MAX_DEPTH counts the body's own object: 1024 levels in all are read, 1025 are
 * refused with the limit named, in an unread field, in the prompt and in messages. */
static void test_depth_limit(void **st)
{
    assert_int_equal(OAI_MAX_DEPTH, 1024);
    static const struct {
        const char *head, *open, *mid, *close;
    } shapes[] = {
        {"{\"model\":\"m\",\"prompt\":\"hi\",\"x\":", "[", "", "]"},
        {"{\"model\":\"m\",\"prompt\":\"hi\",\"x\":", "{\"a\":", "1", "}"},
        {"{\"model\":\"m\",\"prompt\":[1,", "[", "", "]"},
        {"{\"model\":\"m\",\"prompt\":[[1,", "[", "", "]"},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        size_t around = 1 + (size_t)(i >= 2) + (size_t)(i == 3); /* levels the head opens */
        char *ok = nest(shapes[i].head, shapes[i].open, OAI_MAX_DEPTH - around, shapes[i].mid, shapes[i].close,
                        i == 3 ? "]]}" : i == 2 ? "]}" : "}");
        char *over = nest(shapes[i].head, shapes[i].open, OAI_MAX_DEPTH - around + 1, shapes[i].mid, shapes[i].close,
                          i == 3 ? "]]}" : i == 2 ? "]}" : "}");
        oai_request r;
        kv_err e = {0};
        int rc = parse(ok, &r, &e);
        if (i < 2)
            assert_int_equal(rc, KV_OK);
        else /* a list is not a token id: the prompt's own error, not the depth's */
            assert_null(strstr(e.msg, DEEPER));
        oai_request_free(&r);
        expect_err(over, KV_EINVAL, DEEPER);
        free(ok);
        free(over);
    }
    char *msgs = nest("{\"model\":\"m\",\"messages\":", "[", OAI_MAX_DEPTH, "", "]", "}");
    expect_err(msgs, KV_EINVAL, DEEPER);
    free(msgs);
}

/* Issue 10 finding 1: 100,000 nested arrays in an unread field overflowed the stack. */
static void test_depth_regress(void **st)
{
    size_t n;
    char *b = regress_read("openai_body", "nested-100k.json", &n);
    assert_non_null(b);
    assert_true(n > 200000);
    expect_err(b, KV_EINVAL, DEEPER);
    free(b);
}

static void test_usage_unstreamed(void **st)
{
    const char *b = "{\"id\":\"x\",\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":4,\"total_tokens\":14,"
                    "\"prompt_tokens_details\":{\"cached_tokens\":8}}}";
    oai_usage u;
    assert_int_equal(oai_usage_parse(b, strlen(b), &u, NULL), KV_OK);
    assert_true(u.found);
    assert_int_equal(u.prompt_tokens, 10);
    assert_int_equal(u.completion_tokens, 4);
    assert_int_equal(u.total_tokens, 14);
    assert_int_equal(u.cached_tokens, 8);
    assert_int_equal(oai_usage_parse("{}", 2, &u, NULL), KV_OK);
    assert_false(u.found);
    kv_err e = {0};
    assert_int_equal(oai_usage_parse("nope", 4, &u, &e), KV_EPARSE);
    assert_non_null(strstr(e.msg, "response body"));
}

static const char SSE[] =
    "data: {\"choices\":[{\"text\":\"a\"}],\"usage\":null}\n\n"
    ": keep-alive comment\n"
    "data: {\"choices\":[{\"text\":\"b\"}]}\r\n\r\n"
    "data: not json\n\n"
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n"
    "data: [DONE]\n\n";

static void check_sse(const oai_sse *s)
{
    assert_true(s->done);
    assert_true(s->usage.found);
    assert_int_equal(s->usage.prompt_tokens, 3);
    assert_int_equal(s->usage.completion_tokens, 2);
    assert_int_equal(s->usage.total_tokens, 5);
    assert_int_equal(s->events, 3);
    assert_int_equal(s->bad_events, 1);
}

/* The result must not depend on where chunk boundaries fall: every split into two,
 * and byte-by-byte. */
static void test_sse_splits(void **st)
{
    size_t n = strlen(SSE);
    oai_sse s = {0};
    assert_int_equal(oai_sse_feed(&s, SSE, n), KV_OK);
    check_sse(&s);
    oai_sse_free(&s);
    for (size_t cut = 0; cut <= n; cut++) {
        oai_sse t = {0};
        assert_int_equal(oai_sse_feed(&t, SSE, cut), KV_OK);
        assert_int_equal(oai_sse_feed(&t, SSE + cut, n - cut), KV_OK);
        check_sse(&t);
        oai_sse_free(&t);
    }
    oai_sse b = {0};
    for (size_t i = 0; i < n; i++)
        assert_int_equal(oai_sse_feed(&b, SSE + i, 1), KV_OK);
    check_sse(&b);
    oai_sse_free(&b);
}

static void test_sse_without_done(void **st)
{
    oai_sse s = {0};
    const char *t = "data: {\"usage\":{\"prompt_tokens\":1}}\n\ndata: {\"x\":1";
    assert_int_equal(oai_sse_feed(&s, t, strlen(t)), KV_OK);
    assert_false(s.done);
    assert_true(s.usage.found);
    assert_int_equal(s.usage.prompt_tokens, 1);
    assert_int_equal(s.events, 1); /* the unterminated line is still pending */
    oai_sse_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_prompt),   cmocka_unit_test(test_token_prompts),
        cmocka_unit_test(test_chat),          cmocka_unit_test(test_errors),
        cmocka_unit_test(test_errors_nested), cmocka_unit_test(test_usage_unstreamed),
        cmocka_unit_test(test_sse_splits),    cmocka_unit_test(test_sse_without_done),
        cmocka_unit_test(test_field_order_and_repeats), cmocka_unit_test(test_token_lists_reference),
        cmocka_unit_test(test_in_place),      cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_depth_regress),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
