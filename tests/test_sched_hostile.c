/* test_sched_hostile: every shipped preset routes requests over endpoints whose metrics
 * are hostile (NaN and infinite KV usage, INT_MIN / negative / INT_MAX queues, stale
 * scrapes, nonsense LoRA limits and block counts) and still picks one of the candidates,
 * with every scorer's score in [0,1] and totals that are the weighted sums of them
 * (sched_check.h, the same check fuzz_sched_hostile runs on decoded input). The checker
 * itself is shown to reject a foreign target, an out-of-range score and a wrong total. */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "support/sched_check.h"

#define N_EPS 5

static const char *const loras[] = {"lora-a", "lora-b"};

/* Endpoint i of hostile set k; the last endpoint of the mixed set (k == 4) is healthy. */
static sched_metrics hostile(size_t k, size_t i)
{
    static const sched_metrics sets[4] = {
        {.valid = true, .waiting = INT_MIN, .running = INT_MIN, .kv_usage = NAN, .max_lora = INT_MIN,
         .block_size = 0, .num_gpu_blocks = 0},
        {.valid = true, .waiting = -5, .running = -1, .kv_usage = -1, .max_lora = -1, .block_size = UINT32_MAX,
         .num_gpu_blocks = UINT32_MAX, .running_loras = loras, .n_running_loras = 2},
        {.valid = true, .waiting = INT_MAX, .running = INT_MAX, .kv_usage = DBL_MAX, .max_lora = INT_MAX,
         .block_size = 1, .num_gpu_blocks = 1, .waiting_loras = loras, .n_waiting_loras = 2},
        {.valid = false, .waiting = 7, .running = 1000000, .kv_usage = INFINITY, .max_lora = 0},
    };
    if (k < 4)
        return sets[(k + i) % 4];
    if (i == N_EPS - 1)
        return (sched_metrics){.valid = true, .waiting = 1, .running = 2, .kv_usage = 0.3, .max_lora = 4,
                               .block_size = 16, .num_gpu_blocks = 1000};
    sched_metrics m = sets[i % 4];
    m.kv_usage = i % 2 ? -INFINITY : -NAN;
    return m;
}

static void test_hostile_metrics_every_preset(void **state)
{
    (void)state;
    epc_config **presets = sched_check_presets("policies/presets");
    assert_non_null(presets);
    uint32_t tokens[200];
    for (uint32_t i = 0; i < 200; i++)
        tokens[i] = 1000 + i * 37;
    sched_kv session = {"x-session-token", "10.0.0.1:8000"};
    const sched_request reqs[3] = {
        {.id = "tokens", .model = "m", .tokens = tokens, .n_tokens = 200},
        {.id = "text", .model = "m", .prompt = "hello", .prompt_len = 5, .headers = &session, .n_headers = 1},
        {.id = "lora", .model = "m", .lora = "lora-a", .tokens = tokens, .n_tokens = 64, .priority = -1},
    };
    size_t n_presets = 0;
    for (; presets[n_presets]; n_presets++)
        for (size_t k = 0; k < 5; k++)
            for (size_t q = 0; q < 3; q++) {
                sched_endpoint eps[N_EPS], *ptrs[N_EPS];
                char names[N_EPS][32];
                for (size_t i = 0; i < N_EPS; i++) {
                    snprintf(names[i], sizeof names[i], "10.0.0.%zu:8000", i + 1);
                    eps[i] = (sched_endpoint){.id = (uint32_t)i, .name = names[i], .pod = names[i], .ns = "",
                                              .m = hostile(k, i)};
                    ptrs[i] = &eps[i];
                }
                bool built;
                if (!sched_check_route(presets[n_presets], &reqs[q], ptrs, N_EPS, &built))
                    fail_msg("preset %zu, hostile set %zu, request %s: invariant broken", n_presets, k, reqs[q].id);
                assert_true(built);
            }
    assert_true(n_presets >= 6);
    sched_check_presets_free(presets);
}

static void test_checker_rejects(void **state)
{
    (void)state;
    sched_endpoint eps[2] = {{.id = 0, .name = "a"}, {.id = 1, .name = "b"}}, other = {.id = 2, .name = "c"};
    sched_endpoint *ptrs[2] = {&eps[0], &eps[1]};
    sched_plugin plugin = {0};
    sched_trace_score scores[2] = {
        {.profile = "default", .plugin = &plugin, .ep = &eps[0], .score = 0.5, .weight = 2},
        {.profile = "default", .plugin = &plugin, .ep = &eps[1], .score = 1, .weight = 2},
    };
    sched_scored totals[2] = {{&eps[0], 1.0}, {&eps[1], 2.0}};
    sched_trace t = {.scores = scores, .n_scores = 2, .totals = totals, .n_totals = 2};
    sched_result res = {.profile = "default", .targets = {&eps[1]}, .n_targets = 1};
    assert_true(sched_check_result(&res, &t, ptrs, 2));
    res.targets[0] = &other;
    assert_false(sched_check_result(&res, &t, ptrs, 2));
    res.targets[0] = &eps[1];
    scores[1].score = 1.5;
    assert_false(sched_check_result(&res, &t, ptrs, 2));
    scores[1].score = NAN;
    assert_false(sched_check_result(&res, &t, ptrs, 2));
    scores[1].score = 1;
    totals[0].score = 1.5;
    assert_false(sched_check_result(&res, &t, ptrs, 2));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostile_metrics_every_preset),
        cmocka_unit_test(test_checker_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
