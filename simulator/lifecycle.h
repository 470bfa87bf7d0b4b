/* lifecycle: inference-perf's request-lifecycle metrics (docs/sim-outputs.md),
 * computed from the simulator's request records. One lc_metrics is what one
 * stage_N_lifecycle_metrics.json (or the summary file) says; the report writers,
 * the SQLite stages table, the charts and the console all read these numbers so
 * they can never disagree.
 *
 * Definitions (S = t_start, E = t_end, times = token_times, in seconds):
 *   request_latency E - S (successes); time_to_first_token times[0] - S and
 *   time_per_output_token (times[-1] - times[0]) / (len - 1), both over streamable
 *   successes (more than one timestamp); inter_token_latency every consecutive gap,
 *   pooled; normalized_time_per_output_token (E - S) / output_tokens, 0 when 0;
 *   total_time max(E) - min(S) over every request of the set, failures included,
 *   so throughput includes the drain; send_duration max(S) - min(S);
 *   achieved_rate count / send_duration; schedule_delay S - t_scheduled.
 * Ownership: an lc_run owns its metrics; the sim_run it was computed from is only read. */
#ifndef KVROUTE_SIM_LIFECYCLE_H
#define KVROUTE_SIM_LIFECYCLE_H

#include <stdint.h>

#include "kverr.h"
#include "records.h"
#include "stats.h"

typedef struct lc_metrics {
    int stage;                        /* stage index, or -1 for the whole run (summary) */
    /* load_summary */
    uint64_t count;                   /* requests in the set, failures included */
    stats_block schedule_delay;
    double send_duration;             /* s */
    double requested_rate;            /* from the stage info; 0 for the summary */
    double achieved_rate;             /* count / send_duration (0 when send_duration is 0) */
    int concurrency;                  /* concurrent load type only; 0 = not written */
    /* successes */
    uint64_t n_success;
    stats_block request_latency, ntpot, tpot, ttft, itl;   /* s, s/token */
    double input_tokens_per_sec, output_tokens_per_sec, total_tokens_per_sec, requests_per_sec;
    stats_block prompt_len, output_len;
    /* failures */
    uint64_t n_failed;
    stats_block fail_request_latency, fail_prompt_len;
    /* simulator extras (SQLite, console; not in inference-perf's files) */
    double total_time;                /* s; max(E) - min(S) */
    uint64_t input_tokens, output_tokens, cached_tokens, preemptions;  /* sums over successes */
} lc_metrics;

/* Every stage of a run, plus the summary over all of them. */
typedef struct lc_run {
    lc_metrics *stages;               /* stages[i] for run->stages[i] */
    size_t n_stages;
    lc_metrics summary;
} lc_run;

/* Metrics for the requests with record.stage == stage (stage < 0: all requests). */
int lc_compute(const sim_run *run, int stage, lc_metrics *out, kv_err *err);
int lc_run_compute(const sim_run *run, lc_run *out, kv_err *err);
void lc_run_free(lc_run *r);

#endif
