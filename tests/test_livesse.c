/* test_livesse: what `./sim --target` reads from a streamed completion (simulator/livesse.c):
 * stamps, counts and usage of vLLM-shaped streams, and the ways a stream is malformed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "kverr.h"
#include "livesse.h"

static void feed(livesse *s, const char *text, sim_time now)
{
    assert_int_equal(livesse_feed(s, text, strlen(text), now), KV_OK);
}

static void test_vllm_stream(void **st)
{
    livesse s = {0};
    feed(&s, "data: {\"choices\":[{\"index\":0,\"text\":\"a\"}]}\n\nda", 10);
    assert_int_equal(s.chunks, 1);
    feed(&s, "ta: {\"choices\":[{\"index\":0,\"text\":\"b\"}]}\r\n\r\n: comment\n", 20);
    feed(&s, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,"
             "\"prompt_tokens_details\":{\"cached_tokens\":3}}}\n\ndata: [DONE]\n\n", 30);
    assert_false(s.malformed);
    assert_true(s.done_marker);
    assert_int_equal(s.chunks, 2);
    assert_true(s.has_usage);
    assert_int_equal(s.usage_prompt, 5);
    assert_int_equal(s.usage_output, 2);
    assert_int_equal(s.usage_cached, 3);
    uint32_t n;
    sim_time *t = livesse_take_times(&s, &n);
    assert_int_equal(n, 3);           /* the second chunk was stamped when its line ended */
    assert_int_equal(t[0], 10);
    assert_int_equal(t[1], 20);
    assert_int_equal(t[2], 30);
    free(t);
    livesse_free(&s);
}

static void test_malformed(void **st)
{
    static const char *bad[] = {
        "data: [DONE]\n\ndata: {\"choices\":[{\"text\":\"late\"}]}\n",
        "data: {\"error\":{\"message\":\"boom\"}}\n",
        "data: {\"choices\":{}}\n",
        "data: not json\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        livesse s = {0};
        feed(&s, bad[i], 1);
        assert_true(s.malformed);
        /* nothing after the fault is read */
        feed(&s, "data: {\"choices\":[{\"text\":\"x\"}]}\n", 2);
        assert_int_equal(s.chunks, 0);
        livesse_free(&s);
    }
}

static void test_overlong_line(void **st)
{
    livesse s = {0};
    char *big = malloc(LIVESSE_MAX_LINE / 2 + 1);
    memset(big, 'x', LIVESSE_MAX_LINE / 2);
    big[LIVESSE_MAX_LINE / 2] = 0;
    feed(&s, "data: ", 1);
    feed(&s, big, 1);
    assert_false(s.malformed);        /* half the limit, unterminated: still waiting */
    feed(&s, big, 1);
    assert_true(s.malformed);
    free(big);
    livesse_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vllm_stream),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_overlong_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
