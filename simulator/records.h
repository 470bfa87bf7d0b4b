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
    sim_time t_scheduled;              /* when the load generator meant to send it */
    sim_time t_start;                  /* sent (inference-perf start_time) */
    sim_time t_first_token;            /* first streamed event (TTFT = this - t_start) */
    sim_time t_end;                    /* response fully read (E) */
    /* Timestamps of every streamed event, [DONE] included (inference-perf appends one
     * per SSE event), n_token_times of them in microseconds, in one of two forms; readers
     * go through sim_token_time or sim_token_span. Flat (live runs, tests): token_times.
     * Stepped (the cluster driver; token_times NULL): each token is stamped at the end of
     * an emitting step of the record's server (sim_run.servers[endpoint]), and a sequence
     * emits at consecutive emitting steps until it finishes unless preempted or left out
     * of a step, so the tokens are runs of that server's step times: the first run inline
     * (run0 steps from step0), any later ones chained from `more` through
     * sim_run.token_runs; the last timestamp, [DONE], is t_end. */
    const sim_time *token_times;
    int stage;                         /* load stage index */
    uint32_t prompt_tokens;
    uint32_t output_tokens;
    uint32_t cached_tokens;            /* prefix-cache hit tokens at (first) admission */
    uint32_t preemptions;
    int endpoint;                      /* replica index the router chose */
    uint32_t n_token_times;
    uint32_t prefix_group;             /* shared_prefix group (or UINT32_MAX) */
    uint32_t step0, run0;              /* stepped: the first run; run0 == 0: no stepped times */
    uint32_t more;                     /* stepped: 1 + index of the next run in token_runs; 0: none */
    bool failed;
} sim_request_record;

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

/* A stepped record's run after its first: len emitting steps from step of its server. */
typedef struct sim_token_run {
    uint32_t step, len;
    uint32_t next;                     /* 1 + index of the record's next run; 0: last */
} sim_token_run;

/* The end times (plus the request path back to the client) of a server's steps in which
 * any sequence emitted a token, in step order: what stepped records index. */
typedef struct sim_server_steps {
    sim_time *t;
    size_t n;
} sim_server_steps;

/* One router's run over the scenario's workload. */
typedef struct sim_run {
    const char *router;                /* router name from the scenario */
    const char *config_path;           /* EndpointPickerConfig file or preset used */
    sim_request_record *requests; size_t n_requests;
    sim_server_steps *servers; size_t n_servers;   /* stepped records' token times */
    sim_token_run *token_runs; size_t n_token_runs;
    sim_stage_info *stages; size_t n_stages;
    sim_server_sample *samples; size_t n_samples;
    uint64_t events_delivered;         /* KV events that reached the router's index */
    double wall_seconds;               /* host time the run took (not written to outputs
                                        * that must be byte-identical) */
} sim_run;

static inline bool sim_has_token_times(const sim_request_record *r)
{
    return r->token_times != NULL || r->run0 > 0;
}

/* Timestamp j < n_token_times of record r of run (which a flat record does not need),
 * with sim_has_token_times. Stepped: walks r's runs; sequential readers take spans. */
static inline sim_time sim_token_time(const sim_run *run, const sim_request_record *r, uint32_t j)
{
    if (r->token_times)
        return r->token_times[j];
    if (j + 1 == r->n_token_times)
        return r->t_end;
    const sim_time *t = run->servers[r->endpoint].t;
    if (j < r->run0)
        return t[r->step0 + j];
    j -= r->run0;
    const sim_token_run *k = &run->token_runs[r->more - 1];
    for (; j >= k->len; k = &run->token_runs[k->next - 1])
        j -= k->len;
    return t[k->step + j];
}

/* Reads a record's timestamps in order, a span of consecutive ones at a time. */
typedef struct sim_token_cursor {
    const sim_run *run;
    const sim_request_record *r;
    uint32_t next;                     /* 0: the first span; 1 + i: token_runs[i]; UINT32_MAX: [DONE] */
    bool end;
} sim_token_cursor;

static inline sim_token_cursor sim_token_cursor_of(const sim_run *run, const sim_request_record *r)
{
    return (sim_token_cursor){.run = run, .r = r, .end = !sim_has_token_times(r)};
}

/* The next span of the cursor's record, t[0..*n) with *n > 0; false when none is left. */
static inline bool sim_token_span(sim_token_cursor *c, const sim_time **t, uint32_t *n)
{
    const sim_request_record *r = c->r;
    if (c->end)
        return false;
    if (r->token_times) {
        c->end = true;
        *t = r->token_times, *n = r->n_token_times;
        return *n > 0;
    }
    const sim_time *base = c->run->servers[r->endpoint].t;
    if (c->next == UINT32_MAX) {
        c->end = true;
        *t = &r->t_end, *n = 1;
    } else if (c->next == 0) {
        c->next = r->more ? r->more : UINT32_MAX;
        *t = base + r->step0, *n = r->run0;
    } else {
        const sim_token_run *k = &c->run->token_runs[c->next - 1];
        c->next = k->next ? k->next : UINT32_MAX;
        *t = base + k->step, *n = k->len;
    }
    return true;
}

/* (records.c) One more than the largest server number among the samples; 0 without any. */
int sim_server_count(const sim_run *run);
/* The samples' indices grouped by server, in their run order within each server (so in
 * time order): a counting sort, one pass to count and one to place. first[s]..first[s + 1]
 * are server s's in order[], for s < nservers (at least sim_server_count). Both arrays are
 * the caller's to free, also on false (out of memory). */
bool sim_samples_by_server(const sim_run *run, int nservers, size_t **order, size_t **first);

#endif
