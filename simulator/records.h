/* records: what the simulator measured, in the shapes the report writers consume.
 * Produced by the cluster driver (simulator/cluster.c), read by simulator/report.c (inference-perf
 * JSON, llm-d benchmark report), simulator/simdb.c (SQLite) and simulator/plots.c (gnuplot).
 * Times are integer microseconds of simulated time (sim_time); writers convert to
 * seconds. Ownership: a sim_run owns its arrays; writers only read. records.c holds what
 * more than one writer computes from them. */
#ifndef KVROUTE_SIM_RECORDS_H
#define KVROUTE_SIM_RECORDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef int64_t sim_time;              /* microseconds */
#define SIM_US_PER_S 1000000LL

typedef struct sim_request_record {
    uint64_t id;                       /* 0.. in arrival order within the run */
    int stage;                         /* load stage index */
    sim_time t_scheduled;              /* when the load generator meant to send it */
    sim_time t_start;                  /* sent (inference-perf start_time) */
    sim_time t_first_token;            /* first streamed event (TTFT = this - t_start) */
    sim_time t_end;                    /* response fully read (E) */
    uint32_t prompt_tokens;
    uint32_t output_tokens;
    uint32_t cached_tokens;            /* prefix-cache hit tokens at (first) admission */
    uint32_t preemptions;
    int endpoint;                      /* replica index the router chose */
    bool failed;
    /* Timestamps of every streamed event, [DONE] included (inference-perf appends one
     * per SSE event): token_times[0..n_token_times) in microseconds. */
    const sim_time *token_times;
    uint32_t n_token_times;
    uint32_t prefix_group;             /* shared_prefix group (or UINT32_MAX) */
    /* The same timestamps in the cluster driver's compact form, microseconds after
     * t_start (half the bytes of the run's largest array). At most one of token_times
     * and token_offsets is set; readers go through sim_token_time. */
    const uint32_t *token_offsets;
} sim_request_record;

static inline bool sim_has_token_times(const sim_request_record *r)
{
    return r->token_times != NULL || r->token_offsets != NULL;
}

/* Timestamp j < n_token_times of a record with sim_has_token_times. */
static inline sim_time sim_token_time(const sim_request_record *r, uint32_t j)
{
    return r->token_offsets ? r->t_start + (sim_time)r->token_offsets[j] : r->token_times[j];
}

typedef struct sim_stage_info {
    int index;
    double rate;                       /* requested rate (req/s); 0 for concurrent */
    double duration_s;                 /* configured duration */
    int concurrency;                   /* concurrent load type; 0 otherwise */
    uint32_t num_requests;
    sim_time t_begin, t_end;           /* first send, last completion */
} sim_stage_info;

/* Per-server time series sample, taken at each scrape interval. */
typedef struct sim_server_sample {
    sim_time t;
    int server;
    int waiting, running;
    double kv_usage;                   /* 0..1 */
    double hit_rate;                   /* prefix-cache hit tokens / prompt tokens admitted over the
                                        * trailing 5 s; NaN when nothing was admitted then */
    uint64_t preemptions;              /* cumulative */
} sim_server_sample;

/* One router's run over the scenario's workload. */
typedef struct sim_run {
    const char *router;                /* router name from the scenario */
    const char *config_path;           /* EndpointPickerConfig file or preset used */
    sim_request_record *requests; size_t n_requests;
    sim_stage_info *stages; size_t n_stages;
    sim_server_sample *samples; size_t n_samples;
    uint64_t events_delivered;         /* KV events that reached the router's index */
    double wall_seconds;               /* host time the run took (not written to outputs
                                        * that must be byte-identical) */
} sim_run;

/* (records.c) One more than the largest server number among the samples; 0 without any. */
int sim_server_count(const sim_run *run);
/* The samples' indices grouped by server, in their run order within each server (so in
 * time order): a counting sort, one pass to count and one to place. first[s]..first[s + 1]
 * are server s's in order[], for s < nservers (at least sim_server_count). Both arrays are
 * the caller's to free, also on false (out of memory). */
bool sim_samples_by_server(const sim_run *run, int nservers, size_t **order, size_t **first);

#endif
