/* test_emureq: request bodies as an emulated vLLM pod reads them (simulator/emureq.c):
 * vLLM's defaults and refusals, chat content parts joined as vLLM joins them, token ids
 * against the vocabulary. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "emureq.h"
#include "emutok.h"
#include "kverr.h"

static const emureq_limits lim = {.served_model = "m", .vocab = 50000, .max_model_len = 100};

static int rd(const char *body, emureq_kind k, emureq *q, emureq_refusal *r)
{
    return emureq_read(body, strlen(body), k, &lim, q, r);
}

static void refused(const char *body, emureq_kind k, int code, const char *param, const char *needle)
{
    emureq q;
    emureq_refusal r;
    assert_int_equal(rd(body, k, &q, &r), code);
    assert_int_equal(r.code, code);
    if (param)
        assert_string_equal(r.param, param);
    else
        assert_null(r.param);
    assert_non_null(strstr(r.msg, needle));
    assert_null(q.body);
    assert_null(q.ids);
}

static void test_completion_defaults(void **st)
{
    emureq q;
    emureq_refusal r;
    assert_int_equal(rd("{\"prompt\":[5,6,7],\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
                        EMUREQ_COMPLETION, &q, &r), 0);
    assert_int_equal(q.n, 3);
    assert_int_equal(q.ids[2], 7);
    assert_int_equal(q.max_tokens, 16);   /* vLLM's CompletionRequest default */
    assert_true(q.stream);
    assert_true(q.include_usage);
    assert_false(q.chat);
    emureq_free(&q);
    /* chat without max_tokens: what the context leaves */
    assert_int_equal(rd("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", EMUREQ_CHAT, &q, &r), 0);
    assert_true(q.chat);
    assert_int_equal(q.max_tokens, 100 - q.n);
    emureq_free(&q);
}

static void test_chat_parts_joined(void **st)
{
    emureq q;
    emureq_refusal r;
    assert_int_equal(rd("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"ab\"},"
                        "{\"type\":\"text\",\"text\":\"c\"}]}],\"max_tokens\":2}", EMUREQ_CHAT, &q, &r), 0);
    emutok_msg m = {.role = "user", .content = "ab\nc"};
    char *text = emutok_chat_text(&m, 1, true);
    uint32_t *ids;
    size_t n;
    assert_int_equal(emutok_encode(text, strlen(text), lim.vocab, &ids, &n), KV_OK);
    assert_int_equal(q.n, n);
    assert_memory_equal(q.ids, ids, n * sizeof *ids);
    free(ids);
    free(text);
    emureq_free(&q);
}

static void test_refusals(void **st)
{
    refused("{\"model\":\"x\",\"prompt\":\"a\"}", EMUREQ_COMPLETION, 404, "model", "The model `x` does not exist.");
    refused("[1", EMUREQ_COMPLETION, 400, NULL, "JSON decode error at line 1");
    refused("[1]", EMUREQ_TOKENIZE, 400, NULL, "must be a JSON object");
    refused("{\"prompt\":\"a\",\"n\":2}", EMUREQ_COMPLETION, 400, "n", "only n=1");
    refused("{\"prompt\":[]}", EMUREQ_COMPLETION, 400, "prompt", "cannot be empty");
    refused("{\"prompt\":[1,50000]}", EMUREQ_RENDER_COMPLETION, 400, "prompt", "prompt[1]: token id out of vocabulary");
    refused("{\"prompt\":{}}", EMUREQ_COMPLETION, 400, "prompt", "'prompt' must be");
    refused("{\"messages\":[]}", EMUREQ_RENDER_CHAT, 400, "messages", "non-empty list");
    refused("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", EMUREQ_CHAT, 400, "messages",
            "messages[0]");
    refused("{\"prompt\":[1],\"max_tokens\":0}", EMUREQ_COMPLETION, 400, "max_tokens", "at least 1");
    refused("{\"prompt\":[1,2],\"max_tokens\":99}", EMUREQ_COMPLETION, 400, NULL,
            "maximum context length is 100 tokens. However, you requested 101 tokens (2 in the messages, 99");
}

static void test_tokenize_kinds(void **st)
{
    emureq q;
    emureq_refusal r;
    /* /tokenize reads messages when present; no generation checks (an empty prompt is fine) */
    assert_int_equal(rd("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", EMUREQ_TOKENIZE, &q, &r), 0);
    assert_true(q.chat);
    emureq_free(&q);
    assert_int_equal(rd("{\"prompt\":[]}", EMUREQ_TOKENIZE, &q, &r), 0);
    assert_int_equal(q.n, 0);
    emureq_free(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_completion_defaults),
        cmocka_unit_test(test_chat_parts_joined),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_tokenize_kinds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
