/* test_promtext: a counter read back from a Prometheus text exposition. The emulated
 * pods' own /metrics text (emumet_render) gives back the prefix-cache counters it was
 * rendered with (a round trip, values up to 2^53); hand-written expositions check the
 * edges: series summed, a longer name with the same prefix and comments not taken,
 * quoted label values holding '}', '"' and spaces, a timestamp after the value,
 * exponent and +Inf values, and the malformed cases (unclosed labels, no value, a
 * word, NaN) refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>

#include "emumetrics.h"
#include "promtext.h"

static double sum_of(const char *text, const char *name, int want_found)
{
    double v = -1;
    assert_int_equal(promtext_sum(text, name, &v), want_found);
    return v;
}

static void test_emulated_pod_round_trip(void **state)
{
    (void)state;
    static const uint64_t vals[][2] = {{0, 0}, {7200, 6144}, {123456789, 98765432}, {(1ull << 53), (1ull << 52) + 1}};
    for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
        emumet_pod m = {.prompt_tokens = 5, .generation_tokens = 9};
        emumet_observe(&m, EMUMET_TTFT, 0.25);
        emumet_view v = {.model_name = "Qwen/Qwen3-32B", .running = 3, .waiting = 1, .kv_usage = 0.5,
                         .block_size = 64, .num_gpu_blocks = 5500, .prefix_queries = vals[i][0],
                         .prefix_hits = vals[i][1], .preemptions = 2};
        size_t len;
        char *text = emumet_render(&m, &v, &len);
        assert_non_null(text);
        double q, h, w;
        assert_int_equal(promtext_sum(text, "vllm:prefix_cache_queries_total", &q), 1);
        assert_int_equal(promtext_sum(text, "vllm:prefix_cache_hits_total", &h), 1);
        assert_int_equal(promtext_sum(text, "vllm:num_requests_waiting", &w), 1);
        assert_true(q == (double)vals[i][0]);
        assert_true(h == (double)vals[i][1]);
        assert_true(w == 1);
        /* a histogram's _count, not its bare name */
        assert_int_equal(promtext_sum(text, "vllm:time_to_first_token_seconds", &q), 0);
        assert_int_equal(promtext_sum(text, "vllm:time_to_first_token_seconds_count", &q), 1);
        assert_true(q == 1);
        free(text);
    }
}

static void test_edges(void **state)
{
    (void)state;
    const char *two = "# HELP c a counter\n# TYPE c counter\n"
                      "c_total{engine=\"0\",model_name=\"a\"} 10\n"
                      "c_total_other{engine=\"0\"} 1000\n"
                      "c_total{engine=\"1\",model_name=\"b}\\\" x\"} 2.5e1 1700000000000\n"
                      "# c_total{engine=\"2\"} 99\n"
                      "c_total 5\n";
    assert_true(sum_of(two, "c_total", 3) == 40);
    assert_true(sum_of(two, "c_total_other", 1) == 1000);
    assert_true(sum_of(two, "c", 0) == 0);
    assert_true(isinf(sum_of("g{a=\"1\"} +Inf\n", "g", 1)));
    /* no newline at the end; CRLF lines */
    assert_true(sum_of("g 3", "g", 1) == 3);
    assert_true(sum_of("g 3\r\ng 4\r\n", "g", 2) == 7);
    static const char *const bad[] = {"g{a=\"1\" 3\n", "g{a=\"}\n", "g \n", "g{a=\"1\"}\n", "g seven\n", "g NaN\n",
                                      "g 3x\n"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        double v;
        assert_int_equal(promtext_sum(bad[i], "g", &v), -1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_emulated_pod_round_trip),
        cmocka_unit_test(test_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
