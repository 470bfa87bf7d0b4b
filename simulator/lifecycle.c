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

/* The inter-token gaps of a set in record order, by far its largest array (one per
 * streamed token): integer microseconds, 4 bytes each, until a gap does not fit 32 bits
 * (over 71 minutes, which only a token_times record can hold); then all of them as
 * seconds in s, the values secs() gives. Exactly one of us and s is set. */
typedef struct lc_gaps {
    uint32_t *us;
    double *s;
    size_t n;
} lc_gaps;

static void gaps_free(lc_gaps *g)
{
    free(g->us), free(g->s);
    *g = (lc_gaps){0};
}

static size_t request_gaps(const sim_request_record *r)
{
    return streamable(r) ? r->n_token_times - 1 : 0;
}

static int gaps_extract(const sim_run *run, int stage, lc_gaps *g, kv_err *err)
{
    size_t total = 0;
    for (size_t i = 0; i < run->n_requests; i++)
        if (in_set(&run->requests[i], stage))
            total += request_gaps(&run->requests[i]);
    *g = (lc_gaps){.us = malloc((total ? total : 1) * sizeof *g->us)};
    for (size_t i = 0; (g->us || g->s) && i < run->n_requests; i++) {
        const sim_request_record *r = &run->requests[i];
        if (!in_set(r, stage) || !request_gaps(r))
            continue;
        const uint32_t *off = r->token_offsets;
        bool rising = off != NULL;   /* the cluster driver's offsets: the gaps fit 32 bits as they are */
        for (uint32_t j = 1; rising && j < r->n_token_times; j++)
            rising = off[j] >= off[j - 1];
        if (g->us && rising) {
            for (uint32_t j = 1; j < r->n_token_times; j++)
                g->us[g->n++] = off[j] - off[j - 1];
            continue;
        }
        sim_time prev = sim_token_time(r, 0);
        for (uint32_t j = 1; j < r->n_token_times; j++) {
            sim_time t = sim_token_time(r, j), gap = t - prev;
            if (g->us && (gap < 0 || gap > (sim_time)UINT32_MAX)) {
                g->s = malloc(total * sizeof *g->s);
                for (size_t k = 0; g->s && k < g->n; k++)
                    g->s[k] = secs((sim_time)g->us[k]);
                free(g->us);
                g->us = NULL;
                if (!g->s)
                    break;   /* and the outer loop ends: out of memory */
            }
            if (g->us)
                g->us[g->n++] = (uint32_t)gap;
            else
                g->s[g->n++] = secs(gap);
            prev = t;
        }
    }
    if (!g->us && !g->s)
        return kv_err_set(err, KV_ENOMEM, "lifecycle: out of memory for %zu gaps", total);
    return KV_OK;
}

/* The ITL block of gaps g[lo..hi), g left as it is. */
static int gaps_summarize(const lc_gaps *g, size_t lo, size_t hi, stats_block *out, kv_err *err)
{
    if (g->us) {
        if (!stats_summarize_us(g->us + lo, hi - lo, out))
            return kv_err_set(err, KV_ENOMEM, "lifecycle: out of memory for %zu gaps", hi - lo);
        return KV_OK;
    }
    double *c = malloc((hi - lo ? hi - lo : 1) * sizeof *c);
    if (!c)
        return kv_err_set(err, KV_ENOMEM, "lifecycle: out of memory for %zu gaps", hi - lo);
    if (hi > lo)
        memcpy(c, g->s + lo, (hi - lo) * sizeof *c);
    stats_summarize(c, hi - lo, out);
    free(c);
    return KV_OK;
}

/* The metrics of one set, its ITL from gaps[lo..hi), which must be the set's gaps in
 * record order (gaps_extract's array for the set, or a slice of the run's). */
static int compute_set(const sim_run *run, int stage, const lc_gaps *gaps, size_t lo, size_t hi, lc_metrics *out,
                       kv_err *err)
{
    size_t n = 0, n_succ = 0, n_stream = 0, n_fail = 0;
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
            sim_time t0 = sim_token_time(r, 0);
            s.ttft[s.n_tpot] = secs(t0 - r->t_start);
            s.tpot[s.n_tpot++] = secs(sim_token_time(r, k - 1) - t0) / (double)(k - 1);
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
    int rc = gaps_summarize(gaps, lo, hi, &out->itl, err);
    if (rc)
        return rc;

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

static int check_run(const sim_run *run, kv_err *err)
{
    if (!run || (run->n_requests && !run->requests))
        return kv_err_set(err, KV_EINVAL, "lifecycle: run without request records");
    return KV_OK;
}

int lc_compute(const sim_run *run, int stage, lc_metrics *out, kv_err *err)
{
    memset(out, 0, sizeof *out);
    out->stage = stage;
    lc_gaps g;
    int rc = check_run(run, err);
    if (rc || (rc = gaps_extract(run, stage, &g, err)))
        return rc;
    rc = compute_set(run, stage, &g, 0, g.n, out, err);
    gaps_free(&g);
    return rc;
}

/* The first stage of the run with this index (lc_compute's set for index is its). */
static size_t stage_slot(const sim_run *run, int index)
{
    size_t i = 0;
    while (i < run->n_stages && run->stages[i].index != index)
        i++;
    return i;
}

/* Where each stage's gaps lie in the run's gap array (all requests, record order):
 * lo[i]..hi[i] for the first stage of each index when no other stage's gaps come between
 * its requests' (the cluster driver writes requests in arrival order and stages follow
 * each other, so every stage); lo[i] = SIZE_MAX for one whose gaps are interleaved. */
static void stage_slices(const sim_run *run, size_t *lo, size_t *hi)
{
    size_t *cnt = hi;   /* counts the stage's gaps first, then becomes its end */
    size_t *end = calloc(run->n_stages ? run->n_stages : 1, sizeof *end);
    for (size_t i = 0; i < run->n_stages; i++)
        lo[i] = SIZE_MAX, cnt[i] = 0;
    size_t pos = 0, slot = run->n_stages;
    int last = 0;
    for (size_t i = 0; end && i < run->n_requests; i++) {
        const sim_request_record *r = &run->requests[i];
        size_t k = request_gaps(r);
        if (!k)
            continue;
        if (slot == run->n_stages || r->stage != last)
            slot = stage_slot(run, last = r->stage);
        if (slot < run->n_stages) {
            lo[slot] = lo[slot] == SIZE_MAX ? pos : lo[slot];
            cnt[slot] += k;
            end[slot] = pos + k;
        }
        pos += k;
    }
    for (size_t i = 0; i < run->n_stages; i++) {
        if (!end)
            lo[i] = SIZE_MAX;                        /* out of memory: each stage extracts its own */
        else if (lo[i] == SIZE_MAX && cnt[i] == 0)
            lo[i] = 0, hi[i] = 0;                    /* no gaps: an empty slice */
        else if (lo[i] != SIZE_MAX && end[i] - lo[i] == cnt[i])
            hi[i] = end[i];
        else
            lo[i] = SIZE_MAX;
    }
    free(end);
}

/* The run's gaps are extracted once: each stage's are a slice of them (stage_slices) and
 * the summary's are all of them, and stats_summarize_us leaves them in place, so the
 * tens of millions of gaps of a ladder run are read from the token times once, not twice. */
int lc_run_compute(const sim_run *run, lc_run *out, kv_err *err)
{
    memset(out, 0, sizeof *out);
    size_t ns = run->n_stages;
    size_t *lo = calloc(ns ? ns : 1, sizeof *lo), *hi = calloc(ns ? ns : 1, sizeof *hi);
    out->stages = calloc(ns ? ns : 1, sizeof *out->stages);
    if (!lo || !hi || !out->stages) {
        free(lo), free(hi), lc_run_free(out);
        return kv_err_set(err, KV_ENOMEM, "lifecycle: out of memory for %zu stages", ns);
    }
    out->n_stages = ns;
    lc_gaps all = {0};
    int rc = check_run(run, err);
    if (rc == KV_OK)
        rc = gaps_extract(run, -1, &all, err);
    if (rc == KV_OK)
        stage_slices(run, lo, hi);
    for (size_t i = 0; rc == KV_OK && i < ns; i++) {
        lc_metrics *m = &out->stages[i];
        m->stage = run->stages[i].index;
        size_t slot = stage_slot(run, m->stage);
        if (lo[slot] != SIZE_MAX)
            rc = compute_set(run, m->stage, &all, lo[slot], hi[slot], m, err);
        else
            rc = lc_compute(run, m->stage, m, err);
        if (rc)
            kv_err_prefix(err, "router '%s', stage %d: ", run->router ? run->router : "?", m->stage);
    }
    if (rc == KV_OK) {
        out->summary.stage = -1;
        rc = compute_set(run, -1, &all, 0, all.n, &out->summary, err);
        if (rc)
            kv_err_prefix(err, "router '%s', summary: ", run->router ? run->router : "?");
    }
    gaps_free(&all);
    free(lo), free(hi);
    if (rc)
        lc_run_free(out);
    return rc;
}

void lc_run_free(lc_run *r)
{
    free(r->stages);
    r->stages = NULL;
    r->n_stages = 0;
}
