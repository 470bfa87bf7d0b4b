/* test_doctor: `kvctl doctor`'s judgement (live/doctor.h) on /debug/ answers shaped as
 * ./epp writes them: each known misconfiguration is one finding with its fix, a healthy
 * EPP has none, issues older than --since are left out, and a pod with nothing to judge
 * yet is only noted. (tests/it_doctor.sh runs it against a real ./epp.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "doctor.h"

/* A pod as /debug/endpoints writes it; events NULL: none known. */
static json_t *pod(const char *name, bool metrics_valid, int vllm_bs, json_t *events, long long blocks)
{
    return json_pack("{s:s, s:{s:b, s:i}, s:o, s:o}", "name", name, "metrics", "valid", metrics_valid, "blockSize",
                     vllm_bs, "kvEvents", events ? events : json_null(), "blocksHeld",
                     blocks >= 0 ? json_integer(blocks) : json_null());
}

static json_t *events(int messages, int routed, bool stale)
{
    return json_pack("{s:i, s:i, s:b, s:f}", "messages", messages, "routedSinceLastEvent", routed, "stale", stale,
                     "lastEventAgeSeconds", 42.0);
}

static json_t *index_of(int block_size, int rejected, int decode_errors)
{
    return json_pack("{s:[{s:i}], s:[{s:i, s:i}]}", "indexes", "blockSize", block_size, "ingests", "rejectedPods",
                     rejected, "decodeErrors", decode_errors);
}

/* doctor_check's findings and its printout. */
static int run(json_t *eps, json_t *ix, double since, char **text)
{
    size_t len = 0;
    FILE *f = open_memstream(text, &len);
    int n = doctor_check(eps, ix, since, f);
    fclose(f);
    json_decref(eps);
    json_decref(ix);
    return n;
}

static void test_healthy(void **state)
{
    json_t *eps = json_pack("{s:[o, o], s:b, s:[]}", "endpoints", pod("10.0.0.1:8000", true, 64, events(5, 0, false), 12),
                            pod("10.0.0.2:8000", true, 64, NULL, 0), "preciseIndex", true, "issues");
    char *out;
    assert_int_equal(run(eps, index_of(64, 0, 0), 600, &out), 0);
    assert_null(strstr(out, "PROBLEM"));
    assert_non_null(strstr(out, "note    pod 10.0.0.2:8000: no KV events and no request routed to it yet"));
    free(out);
}

static void test_each_finding(void **state)
{
    json_t *issue = json_pack("{s:s, s:s, s:s, s:i, s:f, s:s}", "reason", "model_mismatch", "pod", "10.0.0.1:8000",
                              "model", "Qwen/Qwen3-32B", "count", 3, "ageSeconds", 5.0, "message",
                              "events for model Qwen/Qwen3-32B on pod 10.0.0.1:8000, requests ask for qwen: set ...");
    json_t *old = json_pack("{s:s, s:s, s:s, s:i, s:f, s:s}", "reason", "empty_topic", "pod", "10.0.0.9", "model", "",
                            "count", 1, "ageSeconds", 4000.0, "message", "old news");
    json_t *eps = json_pack(
        "{s:[o, o, o, o], s:b, s:[o, o]}", "endpoints",
        pod("10.0.0.1:8000", true, 64, events(7, 0, false), 0),   /* received, keyed to nothing */
        pod("10.0.0.2:8000", false, 16, events(0, 4, true), 0),   /* no metrics, small blocks, silent */
        pod("10.0.0.3:8000", true, 64, events(9, 2, true), 30),   /* stale since its last event */
        pod("10.0.0.4:8000", true, 64, events(0, 1, false), 0),   /* just routed: not judged yet */
        "preciseIndex", true, "issues", issue, old);
    char *out;
    int n = run(eps, index_of(64, 2, 1), 600, &out);
    const char *want[] = {
        "PROBLEM model_mismatch: pod 10.0.0.1:8000, model 'Qwen/Qwen3-32B' (3 time(s))\n"
        "  fix: events for model Qwen/Qwen3-32B on pod 10.0.0.1:8000, requests ask for qwen: set ...\n",
        "PROBLEM pod 10.0.0.1:8000: 7 KV event message(s) received, the index holds nothing for it\n",
        "PROBLEM pod 10.0.0.2:8000: no fresh /metrics",
        "PROBLEM pod 10.0.0.2:8000: vLLM's block size is 16, the index keys blocks of 64, which do not divide it\n"
        "  fix: set tokenProcessorConfig.blockSize: 16 (vLLM's --block-size, or a divisor of it), or start vLLM with "
        "--block-size 64\n",
        "PROBLEM pod 10.0.0.2:8000: 4 request(s) routed to it, no KV event ever received from it\n",
        "PROBLEM pod 10.0.0.3:8000: routed to, no KV event for 42 s\n",
        "PROBLEM 1 KV event message(s) could not be decoded\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        if (!strstr(out, want[i]))
            fail_msg("missing: %s\nin:\n%s", want[i], out);
    assert_int_equal(n, (int)(sizeof want / sizeof *want));
    assert_null(strstr(out, "old news"));       /* older than --since */
    assert_null(strstr(out, "10.0.0.4:8000"));  /* routed a moment ago: nothing to judge */
    free(out);
}

static void test_no_endpoints(void **state)
{
    char *out;
    json_t *eps = json_pack("{s:[], s:b, s:[]}", "endpoints", "preciseIndex", false, "issues");
    assert_int_equal(run(eps, json_pack("{s:[], s:[]}", "indexes", "ingests"), 600, &out), 1);
    assert_non_null(strstr(out, "PROBLEM the EPP has no endpoints"));
    assert_non_null(strstr(out, "note    the config has no precise prefix index"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_healthy),
        cmocka_unit_test(test_each_finding),
        cmocka_unit_test(test_no_endpoints),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
