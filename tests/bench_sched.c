/* bench_sched: decision latency of the llm-d-precise preset (the guide's config: precise
 * prefix 3, kv-util 2, queue 2, max-score-picker) for one 8192-token request over 8 and
 * 256 endpoints, as table rows with the target of issue 3 §4 (p99 <= 50 us at 256).
 *
 * Index: each endpoint holds 2048 unrelated blocks (64-block chains, a realistic share of
 * a GPU's KV cache at block size 64). The request begins with a system prompt (its first
 * 32 blocks) held by a quarter of the endpoints, half of those in the cpu tier; its
 * conversation is held to 120 of 128 blocks by one endpoint and to 80 by another, as a
 * prefix-routed cluster leaves it. Metrics are random per endpoint, except that the two
 * conversation holders carry a light load (waiting 4, kv 0.3), so that the longest prefix
 * winning, which each run checks, holds for every seed rather than for a lucky one. Rows: "keys precomputed" hands the request's block keys in (sched_request.keys,
 * as a driver that hashed them on arrival does) — the figure the target applies to; "keys
 * hashed" passes only tokens, so each call also hashes 8192 tokens once (shown for
 * information). Each sched_schedule call is timed alone, twice: on-CPU time of the thread
 * (CLOCK_THREAD_CPUTIME_ID), which the target is judged on because the build hosts are
 * shared and a preempted call says nothing about the scheduler, and wall time
 * (CLOCK_MONOTONIC), printed beside it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "registry.h"
#include "rng.h"
#include "precise_prefix_cache_scorer.h"
#include "scheduler.h"
#include "stats.h"

#define PROMPT_TOKENS 8192
#define BACKGROUND_BLOCKS 2048
#define CHAIN 64
#define TARGET_P99_US 50.0
#define MODEL "Qwen/Qwen3-32B"

static double now_us(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void die(const char *what, const kv_err *err)
{
    fprintf(stderr, "bench_sched: %s: %s\n", what, err ? err->msg : "failed");
    exit(1);
}

static void row(const char *name, const char *measured, const char *target, const char *status)
{
    printf("| %-58s | %-52s | %-17s | %-4s |\n", name, measured, target, status);
    fflush(stdout);
}

static void populate(sched_kvsource *src, uint32_t n_eps, const uint64_t *req_keys, size_t n_req, rng *rg)
{
    kv_err err = {0};
    uint32_t tokens[CHAIN * 64];
    uint64_t keys[CHAIN];
    for (uint32_t e = 0; e < n_eps; e++) {
        char name[32];
        snprintf(name, sizeof name, "10.2.%u.%u:8000", e / 250, e % 250);
        int slot = kvindex_endpoint_add(src->index, name, &err);
        if (slot < 0)
            die("endpoint_add", &err);
        for (int c = 0; c < BACKGROUND_BLOCKS / CHAIN; c++) {
            for (size_t t = 0; t < CHAIN * src->keys.block_size; t++)
                tokens[t] = (uint32_t)rng_below(rg, 150000);
            size_t nk = blockkeys_compute(&src->keys, blockkeys_root(&src->keys, MODEL), tokens,
                                          CHAIN * src->keys.block_size, NULL, 0, NULL, keys, CHAIN);
            if (kvindex_store(src->index, slot, KVTIER_GPU, NULL, 0, keys, nk, &err))
                die("store", &err);
        }
        size_t held = e == 1 ? n_req - 8 : e == n_eps / 2 ? n_req * 5 / 8 : e % 4 == 0 ? n_req / 4 : 0;
        if (held && kvindex_store(src->index, slot, e % 8 == 0 ? KVTIER_CPU : KVTIER_GPU, NULL, 0, req_keys, held,
                                  &err))
            die("store", &err);
    }
}

static void run(uint32_t n_eps, int iterations)
{
    kv_err err = {0};
    epc_config *cfg = epc_load_preset("policies/presets", "llm-d-precise", registry_types, &err);
    if (!cfg)
        die("preset", &err);
    sched *s = sched_new(cfg, &(sched_env){.seed = 1}, &err);
    if (!s)
        die("sched_new", &err);
    void *svc[1];
    if (sched_services(s, "kvsource", svc, 1) != 1)
        die("kvsource", NULL);
    sched_kvsource *src = svc[0];

    rng rg;
    rng_seed(&rg, 12345, 0);
    static uint32_t tokens[PROMPT_TOKENS];
    for (size_t i = 0; i < PROMPT_TOKENS; i++)
        tokens[i] = (uint32_t)rng_below(&rg, 150000);
    size_t n_keys = PROMPT_TOKENS / src->keys.block_size;
    uint64_t *keys = malloc(n_keys * sizeof *keys);
    blockkeys_compute(&src->keys, blockkeys_root(&src->keys, MODEL), tokens, PROMPT_TOKENS, NULL, 0, NULL, keys,
                      n_keys);
    populate(src, n_eps, keys, n_keys, &rg);

    sched_endpoint *ep = calloc(n_eps, sizeof *ep);
    sched_endpoint **eps = calloc(n_eps, sizeof *eps);
    char (*names)[32] = calloc(n_eps, sizeof *names);
    for (uint32_t e = 0; e < n_eps; e++) {
        snprintf(names[e], sizeof names[e], "10.2.%u.%u:8000", e / 250, e % 250);
        ep[e] = (sched_endpoint){.id = e, .name = names[e], .pod = names[e], .ns = ""};
        ep[e].m = (sched_metrics){.valid = true, .waiting = (int)rng_below(&rg, 16),
                                  .running = (int)rng_below(&rg, 64), .kv_usage = rng_below(&rg, 1000) / 1000.0};
        if (e == 1 || e == n_eps / 2) /* see the header: the check below must not hang on the seed */
            ep[e].m = (sched_metrics){.valid = true, .waiting = 4, .running = 16, .kv_usage = 0.3};
        eps[e] = &ep[e];
    }

    double *lat = malloc((size_t)iterations * sizeof *lat), *wall = malloc((size_t)iterations * sizeof *wall);
    for (int variant = 0; variant < 2; variant++) {
        sched_request r = {.id = "bench", .model = MODEL, .tokens = tokens, .n_tokens = PROMPT_TOKENS};
        if (variant == 0) {
            r.keys_ctx = &src->keys;
            r.keys = keys;
            r.n_keys = n_keys;
        }
        sched_result res;
        for (int i = -200; i < iterations; i++) {
            double w0 = now_us(CLOCK_MONOTONIC), c0 = now_us(CLOCK_THREAD_CPUTIME_ID);
            if (sched_schedule(s, &r, eps, n_eps, &res, NULL, &err))
                die("schedule", &err);
            double c1 = now_us(CLOCK_THREAD_CPUTIME_ID), w1 = now_us(CLOCK_MONOTONIC);
            if (i >= 0) {
                lat[i] = c1 - c0;
                wall[i] = w1 - w0;
            }
        }
        if (res.targets[0] != &ep[1])
            die("the endpoint holding the longest prefix was not chosen", NULL);
        stats_block cpu, wl; /* np.percentile's linear p99: never below the nearest-rank one */
        stats_summarize(lat, (size_t)iterations, &cpu);
        stats_summarize(wall, (size_t)iterations, &wl);
        double p50 = cpu.v[STATS_MEDIAN], p99 = cpu.v[STATS_P99];
        char name[96], measured[128], target[32];
        snprintf(name, sizeof name, "sched llm-d-precise: 8k tokens (%zu keys), %u eps, keys %s", n_keys, n_eps,
                 variant == 0 ? "precomputed" : "hashed");
        snprintf(measured, sizeof measured, "cpu p50 %.1f, p99 %.1f us; wall p50 %.1f, p99 %.1f us", p50, p99,
                 wl.v[STATS_MEDIAN], wl.v[STATS_P99]);
        if (variant == 0 && n_eps == 256) {
            snprintf(target, sizeof target, "cpu p99 <= %.0f us", TARGET_P99_US);
            row(name, measured, target, p99 <= TARGET_P99_US ? "PASS" : "MISS");
        } else {
            row(name, measured, "(info)", "-");
        }
    }
    free(lat);
    free(wall);
    free(names);
    free(eps);
    free(ep);
    free(keys);
    sched_free(s);
    epc_free(cfg);
}

int main(void)
{
    run(8, 20000);
    run(256, 5000);
    return 0;
}
