/* test_emutok: the emulated pods' built-in tokenizer against hand-derived ids (bijective
 * base 26 worked out on paper), its round trips, the vocabulary edge, UTF-8 repair and
 * the ChatML template's exact text; and emumetrics' bucket placement at vLLM's bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "emumetrics.h"
#include "emutok.h"

#define VOCAB 151936u   /* Qwen3's */

static void expect_ids(const char *text, uint32_t vocab, const uint32_t *want, size_t n)
{
    uint32_t *ids;
    size_t k;
    assert_int_equal(emutok_encode(text, strlen(text), vocab, &ids, &k), KV_OK);
    assert_int_equal(k, n);
    for (size_t i = 0; i < n; i++) assert_int_equal(ids[i], want[i]);
    free(ids);
}

static char *decode(const uint32_t *ids, size_t n, uint32_t vocab)
{
    char *s;
    size_t len;
    assert_int_equal(emutok_decode(ids, n, vocab, &s, &len, NULL), KV_OK);
    assert_int_equal(len, strlen(s));
    return s;
}

static void test_hand_derived_ids(void **state)
{
    (void)state;
    /* " the" = ((20*26 + 8)*26 + 5) + 255; " cat" = ((3*26 + 1)*26 + 20) + 255 */
    expect_ids(" the cat", VOCAB, (const uint32_t[]){13988, 2329}, 2);
    /* capitals, digits and a word glued to punctuation-free text are bytes */
    expect_ids("Hello", VOCAB, (const uint32_t[]){72, 101, 108, 108, 111}, 5);
    /* a word must end at a non-letter: " ab" + "," */
    expect_ids(" ab,", VOCAB, (const uint32_t[]){256 + 27, ','}, 2);
    /* more than 8 letters: one byte each */
    expect_ids(" abcdefghi", VOCAB, (const uint32_t[]){' ', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'}, 10);
    /* at a small vocabulary " zz" (702 + 255) does not exist: bytes; " ab" (283) does */
    expect_ids(" zz ab", 300, (const uint32_t[]){' ', 'z', 'z', 283}, 4);
    uint32_t *ids = (uint32_t *)1;
    size_t n = 9;
    assert_int_equal(emutok_encode("", 0, VOCAB, &ids, &n), KV_OK);
    assert_int_equal(n, 0);
}

static void test_decode_words_and_bytes(void **state)
{
    (void)state;
    char *s = decode((const uint32_t[]){256, 281, 282, 72, 105}, 5, VOCAB);
    assert_string_equal(s, " a z aaHi");
    free(s);
    /* a lone 0xff byte and a cut UTF-8 sequence become U+FFFD; a whole one stays */
    s = decode((const uint32_t[]){0xff, 0xc3, 0xa9, 0xe2, 0x82}, 5, VOCAB);
    assert_string_equal(s, "\xEF\xBF\xBD\xC3\xA9\xEF\xBF\xBD\xEF\xBF\xBD");
    free(s);
    kv_err e = {0};
    char *out;
    size_t len;
    assert_int_equal(emutok_decode((const uint32_t[]){5, VOCAB}, 2, VOCAB, &out, &len, &e), KV_ERANGE);
    assert_non_null(strstr(e.msg, "token 1"));
}

/* Every word id decodes to text that encodes back to it, alone and in a row. */
static void test_word_round_trip(void **state)
{
    (void)state;
    uint32_t row[64];
    size_t k = 0;
    for (uint32_t id = 256; id < VOCAB; id += 977) {
        char *s = decode(&id, 1, VOCAB);
        expect_ids(s, VOCAB, &id, 1);
        free(s);
        if (k < 64) row[k++] = id;
    }
    char *s = decode(row, k, VOCAB);
    expect_ids(s, VOCAB, row, k);
    free(s);
}

static void test_chat_template(void **state)
{
    (void)state;
    emutok_msg m[] = {{.role = "system", .content = "be brief"}, {.role = "user", .content = "hi"}};
    char *t = emutok_chat_text(m, 2, true);
    assert_string_equal(t, "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                           "<|im_start|>assistant\n");
    free(t);
    t = emutok_chat_text(m + 1, 1, false);
    assert_string_equal(t, "<|im_start|>user\nhi<|im_end|>\n");
    free(t);
}

/* A value equal to a bound falls in that bucket (Prometheus le), past the last in +Inf. */
static void test_metric_buckets(void **state)
{
    (void)state;
    emumet_pod m = {0};
    emumet_observe(&m, EMUMET_TTFT, 0.001);    /* bucket 0: le 0.001 */
    emumet_observe(&m, EMUMET_TTFT, 0.0011);   /* bucket 1: le 0.005 */
    emumet_observe(&m, EMUMET_TTFT, 1e6);      /* +Inf, after the 22 finite bounds */
    assert_int_equal(m.h[EMUMET_TTFT].counts[0], 1);
    assert_int_equal(m.h[EMUMET_TTFT].counts[1], 1);
    assert_int_equal(m.h[EMUMET_TTFT].counts[22], 1);
    assert_int_equal(m.h[EMUMET_TTFT].count, 3);
    emumet_view v = {.model_name = "m", .block_size = 64, .num_gpu_blocks = 10};
    size_t len;
    char *s = emumet_render(&m, &v, &len);
    assert_non_null(strstr(s, "vllm:time_to_first_token_seconds_bucket{engine=\"0\",model_name=\"m\",le=\"0.001\"} 1.0\n"));
    assert_non_null(strstr(s, "vllm:time_to_first_token_seconds_bucket{engine=\"0\",model_name=\"m\",le=\"0.005\"} 2.0\n"));
    assert_non_null(strstr(s, "vllm:time_to_first_token_seconds_bucket{engine=\"0\",model_name=\"m\",le=\"2560.0\"} 2.0\n"));
    assert_non_null(strstr(s, "vllm:time_to_first_token_seconds_bucket{engine=\"0\",model_name=\"m\",le=\"+Inf\"} 3.0\n"));
    assert_non_null(strstr(s, "vllm:cache_config_info{block_size=\"64\",cache_dtype=\"auto\","
                              "enable_prefix_caching=\"True\",engine=\"0\",num_gpu_blocks=\"10\"} 1.0\n"));
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_derived_ids),   cmocka_unit_test(test_decode_words_and_bytes),
        cmocka_unit_test(test_word_round_trip),    cmocka_unit_test(test_chat_template),
        cmocka_unit_test(test_metric_buckets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
