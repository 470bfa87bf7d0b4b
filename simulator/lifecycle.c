/* lifecycle: inference-perf's request-lifecycle metrics from simulated request records
 * (definitions in lifecycle.h). Every duration is computed in integer microseconds and
 * converted to seconds once, so no rounding depends on the order of subtraction. */
#include "lifecycle.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double secs(sim_time t)
{
    return (double)t / (double)SIM_US_PER_S;
}

static bool in_set(const sim_request_record *r, int stage)
{
    return stage < 0 || r->stage == stage;
}

static bool streamable(const sim_request_record *r)
{
    return !r->failed && r->n_token_times > 1 && sim_has_token_times(r);
}

/* Scratch arrays for one set, sized by a first pass over the records. */
typedef struct lc_scratch {
    double *delay, *lat, *ntpot, *tpot, *ttft, *plen, *olen, *flat, *fplen;
    size_t n_delay, n_lat, n_tpot, n_fail;
} lc_scratch;

static void scratch_free(lc_scratch *s)
{
    free(s->delay), free(s->lat), free(s->ntpot), free(s->tpot), free(s->ttft);
    free(s->plen), free(s->olen), free(s->flat), free(s->fplen);
}

static double *alloc_n(size_t n, bool *ok)
{
    double *p = malloc((n ? n : 1) * sizeof *p);
    if (!p)
        *ok = false;
    return p;
}

static size_t request_gaps(const sim_request_record *r)
{
    return streamable(r) ? r->n_token_times - 1 : 0;
}

/* Walks a set's inter-token gaps in record order for stats_summarize_us_stream: one
 * per streamed token after the first, by far the set's largest data (17 million per
 * router on a ladder), read from the token times where they lie instead of copied. */
typedef struct gap_cursor {
    const sim_run *run;
    int stage;
    size_t i;                /* the record */
    bool started;            /* its first timestamp has been read */
    sim_token_cursor tc;     /* its spans */
    const sim_time *t;       /* the span's unread timestamps, n of them */
    uint32_t n;
    sim_time prev;           /* the last timestamp read */
} gap_cursor;

static void next_gaps(void *ctx, int64_t *buf, size_t k)
{
    gap_cursor *c = ctx;
    size_t got = 0;
    while (got < k) {
        if (!c->started) {
            const sim_request_record *r = &c->run->requests[c->i];
            if (!in_set(r, c->stage) || !request_gaps(r)) {
                c->i++;
                continue;
            }
            c->tc = sim_token_cursor_of(c->run, r);
            sim_token_span(&c->tc, &c->t, &c->n);
            c->prev = *c->t++;
            c->n--;
            c->started = true;
        }
        for (; c->n && got < k; c->n--) {
            sim_time t = *c->t++;
            buf[got++] = t - c->prev;
            c->prev = t;
        }
        if (!c->n && !sim_token_span(&c->tc, &c->t, &c->n))
            c->i++, c->started = false;
    }
}

int lc_compute(const sim_run *run, int stage, lc_metrics *out, kv_err *err)
{
    memset(out, 0, sizeof *out);
    out->stage = stage;
    if (!run || (run->n_requests && !run->requests))
        return kv_err_set(err, KV_EINVAL, "lifecycle: run without request records");

    size_t n = 0, n_succ = 0, n_stream = 0, n_gaps = 0, n_fail = 0;
    for (size_t i = 0; i < run->n_requests; i++) {
        const sim_request_record *r = &run->requests[i];
        if (!in_set(r, stage))
            continue;
        if (!r->failed && (r->t_end < r->t_start || r->t_start < 0))
            return kv_err_set(err, KV_EINVAL, "lifecycle: request %llu: end %lld before start %lld",
                              (unsigned long long)r->id, (long long)r->t_end, (long long)r->t_start);
        n++;
        if (r->failed) {
            n_fail++;
            continue;
        }
        n_succ++;
        n_stream += streamable(r);
        n_gaps += request_gaps(r);
    }

    bool ok = true;
    lc_scratch s = {0};
    s.delay = alloc_n(n, &ok);
    s.lat = alloc_n(n_succ, &ok);
    s.ntpot = alloc_n(n_succ, &ok);
    s.plen = alloc_n(n_succ, &ok);
    s.olen = alloc_n(n_succ, &ok);
    s.tpot = alloc_n(n_stream, &ok);
    s.ttft = alloc_n(n_stream, &ok);
    s.flat = alloc_n(n_fail, &ok);
    s.fplen = alloc_n(n_fail, &ok);
    if (!ok) {
        scratch_free(&s);
        return kv_err_set(err, KV_ENOMEM, "lifecycle: out of memory for %zu requests", n);
    }

    sim_time s_min = 0, s_max = 0, e_max = 0;
    bool first = true;
    for (size_t i = 0; i < run->n_requests; i++) {
        const sim_request_record *r = &run->requests[i];
        if (!in_set(r, stage))
            continue;
        if (first || r->t_start < s_min)
            s_min = r->t_start;
        if (first || r->t_start > s_max)
            s_max = r->t_start;
        sim_time end = r->t_end > r->t_start ? r->t_end : r->t_start; /* a failure may lack an end */
        if (first || end > e_max)
            e_max = end;
        first = false;
        s.delay[s.n_delay++] = secs(r->t_start - r->t_scheduled);
        if (r->failed) {
            s.flat[s.n_fail] = secs(end - r->t_start);
            s.fplen[s.n_fail++] = (double)r->prompt_tokens;
            continue;
        }
        double e2e = secs(r->t_end - r->t_start);
        s.lat[s.n_lat] = e2e;
        s.ntpot[s.n_lat] = r->output_tokens ? e2e / (double)r->output_tokens : 0.0;
        s.plen[s.n_lat] = (double)r->prompt_tokens;
        s.olen[s.n_lat++] = (double)r->output_tokens;
        out->input_tokens += r->prompt_tokens;
        out->output_tokens += r->output_tokens;
        out->cached_tokens += r->cached_tokens;
        out->preemptions += r->preemptions;
        if (streamable(r)) {
            uint32_t k = r->n_token_times;
            sim_time t0 = sim_token_time(run, r, 0);
            s.ttft[s.n_tpot] = secs(t0 - r->t_start);
            s.tpot[s.n_tpot++] = secs(sim_token_time(run, r, k - 1) - t0) / (double)(k - 1);
        }
    }

    out->count = n;
    out->n_success = n_succ;
    out->n_failed = n_fail;
    stats_summarize(s.delay, s.n_delay, &out->schedule_delay);
    stats_summarize(s.lat, s.n_lat, &out->request_latency);
    stats_summarize(s.ntpot, s.n_lat, &out->ntpot);
    stats_summarize(s.tpot, s.n_tpot, &out->tpot);
    stats_summarize(s.ttft, s.n_tpot, &out->ttft);
    stats_summarize(s.plen, s.n_lat, &out->prompt_len);
    stats_summarize(s.olen, s.n_lat, &out->output_len);
    stats_summarize(s.flat, s.n_fail, &out->fail_request_latency);
    stats_summarize(s.fplen, s.n_fail, &out->fail_prompt_len);
    scratch_free(&s);
    gap_cursor gc = {.run = run, .stage = stage};
    if (!stats_summarize_us_stream(n_gaps, next_gaps, &gc, &out->itl))
        return kv_err_set(err, KV_ENOMEM, "lifecycle: out of memory for %zu gaps", n_gaps);

    out->send_duration = n ? secs(s_max - s_min) : 0;
    out->total_time = n ? secs(e_max - s_min) : 0;
    out->achieved_rate = out->send_duration > 0 ? (double)n / out->send_duration : 0;
    if (out->total_time > 0) {
        out->requests_per_sec = (double)n_succ / out->total_time;
        out->input_tokens_per_sec = (double)out->input_tokens / out->total_time;
        out->output_tokens_per_sec = (double)out->output_tokens / out->total_time;
        out->total_tokens_per_sec = (double)(out->input_tokens + out->output_tokens) / out->total_time;
    }
    if (stage >= 0) {
        for (size_t i = 0; i < run->n_stages; i++)
            if (run->stages[i].index == stage) {
                out->requested_rate = run->stages[i].rate;
                out->concurrency = run->stages[i].concurrency;
            }
    }
    return KV_OK;
}

int lc_run_compute(const sim_run *run, lc_run *out, kv_err *err)
{
    memset(out, 0, sizeof *out);
    if (run->n_stages) {
        out->stages = calloc(run->n_stages, sizeof *out->stages);
        if (!out->stages)
            return kv_err_set(err, KV_ENOMEM, "lifecycle: out of memory for %zu stages", run->n_stages);
    }
    out->n_stages = run->n_stages;
    for (size_t i = 0; i < run->n_stages; i++) {
        int rc = lc_compute(run, run->stages[i].index, &out->stages[i], err);
        if (rc) {
            lc_run_free(out);
            kv_err_prefix(err, "router '%s', stage %d: ", run->router ? run->router : "?", run->stages[i].index);
            return rc;
        }
    }
    /* A stage that holds every request (a one-stage run: the scale scenarios, most
     * sweeps) has the summary's set, in the same order, so its metrics are the summary's
     * but for the stage's own fields: the inter-token gaps, a big run's largest data, are
     * read once instead of twice. */
    for (size_t i = 0; i < out->n_stages; i++) {
        if (out->stages[i].count != run->n_requests)
            continue;
        out->summary = out->stages[i];
        out->summary.stage = -1;
        out->summary.requested_rate = 0;
        out->summary.concurrency = 0;
        return KV_OK;
    }
    int rc = lc_compute(run, -1, &out->summary, err);
    if (rc) {
        lc_run_free(out);
        kv_err_prefix(err, "router '%s', summary: ", run->router ? run->router : "?");
        return rc;
    }
    return KV_OK;
}

void lc_run_free(lc_run *r)
{
    free(r->stages);
    r->stages = NULL;
    r->n_stages = 0;
}
