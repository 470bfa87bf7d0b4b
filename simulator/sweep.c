/* sweep: the sweep: and plan: sections, the grid, the plan's searches and their
 * outputs (see sweep.h). */
#include "sweep.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "plots.h"
#include "scenario.h"
#include "stats.h"

/* ---- parsing ---------------------------------------------------------------------- */

static int expect_seq(const yt_doc *d, const yt_node *n, const char *what, kv_err *err)
{
    if (n->kind != YT_SEQ || n->n == 0)
        return yt_error(d, n, err, KV_EINVAL, "field '%s': expected a non-empty list", what);
    return KV_OK;
}

/* A rate for the measured stage: positive, and a request count wl_parse would accept. */
static int check_rate(const yt_doc *d, const yt_node *n, const char *what, double rate, double duration, kv_err *err)
{
    if (!(rate > 0 && rate <= 1e6))
        return yt_error(d, n, err, KV_ERANGE, "field '%s': %g is out of range (0, 1e6]", what, rate);
    if (rate * duration > 1e8)
        return yt_error(d, n, err, KV_ERANGE, "field '%s': rate*duration = %g requests is too many", what,
                        rate * duration);
    return KV_OK;
}

/* A non-empty list of numbers: replica counts (whole, in [1, 4096]), weights
 * ([0, 1e6]) or rates (checked against the measured stage's duration). */
typedef enum { LIST_REPLICAS, LIST_WEIGHTS, LIST_RATES } list_kind;

static int num_list(const yt_doc *d, const yt_node *n, const char *what, list_kind kind, double duration,
                    double **out, size_t *count, kv_err *err)
{
    int rc = expect_seq(d, n, what, err);
    if (rc)
        return rc;
    if (!(*out = calloc(n->n, sizeof **out)))
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    *count = n->n;
    for (size_t i = 0; i < n->n && rc == KV_OK; i++) {
        char w[96];
        snprintf(w, sizeof w, "%s[%zu]", what, i);
        int64_t v;
        double *x = &(*out)[i];
        if (kind == LIST_REPLICAS) {
            if (!(rc = yt_int_range(d, n->items[i], w, 1, 4096, &v, err)))
                *x = (double)v;
        } else if (kind == LIST_WEIGHTS) {
            rc = yt_double_range(d, n->items[i], w, 0, 1e6, x, err);
        } else if (!(rc = yt_double(d, n->items[i], w, x, err))) {
            rc = check_rate(d, n->items[i], w, *x, duration, err);
        }
    }
    return rc;
}

/* The same for replica counts, as integers. */
static int replica_list(const yt_doc *d, const yt_node *n, const char *what, uint32_t **out, size_t *count,
                        kv_err *err)
{
    double *v = NULL;
    int rc = num_list(d, n, what, LIST_REPLICAS, 0, &v, count, err);
    if (rc == KV_OK && !(*out = calloc(*count, sizeof **out)))
        rc = kv_err_set(err, KV_ENOMEM, "out of memory");
    for (size_t i = 0; rc == KV_OK && i < *count; i++)
        (*out)[i] = (uint32_t)v[i];
    free(v);
    return rc;
}

static int router_index(const scenario *s, const char *name)
{
    for (size_t i = 0; i < s->n_routers; i++)
        if (strcmp(s->routers[i].name, name) == 0)
            return (int)i;
    return -1;
}

static bool has_plugin(const epc_config *c, const char *name)
{
    for (size_t i = 0; i < c->n_plugins; i++)
        if (strcmp(c->plugins[i].name, name) == 0)
            return true;
    return false;
}

/* The measured stage's duration when its rate can change; 0 (and an error) when not. */
static int rate_stage(const yt_doc *d, const yt_node *n, const char *what, const scenario *s, double *duration,
                      kv_err *err)
{
    if (s->workload.load != WL_LOAD_POISSON && s->workload.load != WL_LOAD_CONSTANT)
        return yt_error(d, n, err, KV_EINVAL, "field '%s': rates need a poisson or constant load (this one is %s)",
                        what, wl_load_type_name(s->workload.load));
    *duration = s->workload.stages[pr_stage(s)].duration;
    return KV_OK;
}

static int parse_weights(const yt_doc *d, const yt_node *n, scenario *s, kv_err *err)
{
    sweep_spec *sw = &s->sweep;
    if (n->kind != YT_MAP)
        return yt_error(d, n, err, KV_EINVAL, "field 'sweep.weights': expected {plugin: NAME, values: [...]}");
    const yt_node *pn = yt_get(n, "plugin"), *vn = yt_get(n, "values");
    if (!pn || !vn)
        return yt_error(d, n, err, KV_EINVAL, "field 'sweep.weights.%s': required", pn ? "values" : "plugin");
    int rc;
    if ((rc = yt_string(d, pn, "sweep.weights.plugin", &sw->weight_plugin, err)) ||
        (rc = num_list(d, vn, "sweep.weights.values", LIST_WEIGHTS, 0, &sw->weights, &sw->n_weights, err)) ||
        (rc = wl_check_keys(d, n, "sweep.weights", err)))
        return rc;
    bool any = false;
    for (size_t i = 0; i < s->n_routers; i++) {
        bool swept = !sw->routers;
        for (size_t k = 0; k < sw->n_routers; k++)
            swept |= strcmp(sw->routers[k], s->routers[i].name) == 0;
        any |= swept && has_plugin(s->routers[i].cfg, sw->weight_plugin);
    }
    if (!any)
        return yt_error(d, pn, err, KV_EINVAL, "field 'sweep.weights.plugin': no swept router has a plugin named "
                        "'%s'", sw->weight_plugin);
    return KV_OK;
}

static int parse_sweep(const yt_doc *d, const yt_node *n, scenario *s, kv_err *err)
{
    sweep_spec *sw = &s->sweep;
    if (n->kind != YT_MAP)
        return yt_error(d, n, err, KV_EINVAL, "field 'sweep': expected a map (routers, replicas, rates, weights)");
    sw->on = true;
    int rc;
    const yt_node *x;
    if ((x = yt_get(n, "routers"))) {
        if ((rc = expect_seq(d, x, "sweep.routers", err)))
            return rc;
        if (!(sw->routers = calloc(x->n, sizeof *sw->routers)))
            return kv_err_set(err, KV_ENOMEM, "out of memory");
        sw->n_routers = x->n;
        for (size_t i = 0; i < x->n; i++) {
            char w[48];
            snprintf(w, sizeof w, "sweep.routers[%zu]", i);
            if ((rc = yt_string(d, x->items[i], w, &sw->routers[i], err)))
                return rc;
            if (router_index(s, sw->routers[i]) < 0)
                return yt_error(d, x->items[i], err, KV_EINVAL, "field '%s': the scenario has no router '%s'", w,
                                sw->routers[i]);
        }
    }
    if ((x = yt_get(n, "replicas")) &&
        (rc = replica_list(d, x, "sweep.replicas", &sw->replicas, &sw->n_replicas, err)))
        return rc;
    if ((x = yt_get(n, "rates"))) {
        double duration = 0;
        if ((rc = rate_stage(d, x, "sweep.rates", s, &duration, err)) ||
            (rc = num_list(d, x, "sweep.rates", LIST_RATES, duration, &sw->rates, &sw->n_rates, err)))
            return rc;
    }
    if ((x = yt_get(n, "weights")) && (rc = parse_weights(d, x, s, err)))
        return rc;
    return wl_check_keys(d, n, "sweep", err);
}

static int parse_plan(const yt_doc *d, const yt_node *n, scenario *s, kv_err *err)
{
    plan_spec *pl = &s->plan;
    if (n->kind != YT_MAP)
        return yt_error(d, n, err, KV_EINVAL, "field 'plan': expected a map (rate, max_replicas, rates, replicas)");
    if (!s->slo.n)
        return yt_error(d, n, err, KV_EINVAL, "field 'plan': needs an slo: section (what the plan must meet)");
    double duration = 0;
    int rc = rate_stage(d, n, "plan", s, &duration, err);
    if (rc)
        return rc;
    pl->on = true;
    pl->rate = s->workload.stages[pr_stage(s)].rate;
    pl->max_replicas = s->cluster.replicas * 4 > 4096 ? 4096 : s->cluster.replicas * 4;
    const yt_node *x;
    if ((rc = yt_opt_double(d, n, "plan", "rate", 1e-9, 1e6, &pl->rate, err)) ||
        ((x = yt_get(n, "rate")) && (rc = check_rate(d, x, "plan.rate", pl->rate, duration, err))) ||
        (rc = yt_opt_u32(d, n, "plan", "max_replicas", 1, 4096, &pl->max_replicas, err)))
        return rc;
    if (!(x = yt_get(n, "rates")) || x->kind != YT_MAP)
        return yt_error(d, x ? x : n, err, KV_EINVAL, "field 'plan.rates': required, {min: R, max: R, step: R}");
    const char *keys[] = {"min", "max", "step"};
    double *dst[] = {&pl->rate_min, &pl->rate_max, &pl->rate_step};
    for (int i = 0; i < 3; i++) {
        if (!yt_get(x, keys[i]))
            return yt_error(d, x, err, KV_EINVAL, "field 'plan.rates.%s': required", keys[i]);
        if ((rc = yt_opt_double(d, x, "plan.rates", keys[i], 1e-9, 1e6, dst[i], err)))
            return rc;
    }
    if (pl->rate_max < pl->rate_min || (pl->rate_max - pl->rate_min) / pl->rate_step > 100000)
        return yt_error(d, x, err, KV_EINVAL, "field 'plan.rates': needs min <= max and at most 100000 steps");
    if ((rc = check_rate(d, x, "plan.rates.max", pl->rate_max, duration, err)) ||
        (rc = wl_check_keys(d, x, "plan.rates", err)))
        return rc;
    if ((x = yt_get(n, "replicas")) &&
        (rc = replica_list(d, x, "plan.replicas", &pl->replicas, &pl->n_replicas, err)))
        return rc;
    return wl_check_keys(d, n, "plan", err);
}

int sweep_parse(const yt_doc *d, const yt_node *sweep, const yt_node *plan, scenario *s, kv_err *err)
{
    int rc;
    if (!yt_is_null(sweep) && (rc = parse_sweep(d, sweep, s, err)))
        return rc;
    if (!yt_is_null(plan) && (rc = parse_plan(d, plan, s, err)))
        return rc;
    return KV_OK;
}

void sweep_spec_free(sweep_spec *sw, plan_spec *pl)
{
    free(sw->routers);
    free(sw->replicas);
    free(sw->rates);
    free(sw->weights);
    free(pl->replicas);
}

/* ---- the grid --------------------------------------------------------------------- */

static bool swept(const sweep_spec *sw, const char *router)
{
    if (!sw->routers)
        return true;
    for (size_t k = 0; k < sw->n_routers; k++)
        if (strcmp(sw->routers[k], router) == 0)
            return true;
    return false;
}

int sweep_grid_build(const scenario *s, sweep_grid *g, kv_err *err)
{
    const sweep_spec *sw = &s->sweep;
    size_t nrep = sw->n_replicas ? sw->n_replicas : 1, nrate = sw->n_rates ? sw->n_rates : 1;
    size_t nw = sw->n_weights ? sw->n_weights : 1;
    *g = (sweep_grid){0};
    if (!(g->points = calloc(s->n_routers * nrep * nw * nrate, sizeof *g->points)))
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    for (size_t r = 0; r < s->n_routers; r++) {
        if (!swept(sw, s->routers[r].name))
            continue;
        bool weighted = sw->weight_plugin && has_plugin(s->routers[r].cfg, sw->weight_plugin);
        for (size_t i = 0; i < nrep; i++)
            for (size_t w = 0; w < (weighted ? nw : 1); w++)
                for (size_t k = 0; k < nrate; k++)
                    g->points[g->n++] = (pr_point){
                        .router = r, .replicas = sw->replicas ? sw->replicas[i] : 0,
                        .rate = sw->rates ? sw->rates[k] : 0, .weight_plugin = weighted ? sw->weight_plugin : NULL,
                        .weight = weighted ? sw->weights[w] : 0};
    }
    return KV_OK;
}

void sweep_grid_free(sweep_grid *g)
{
    free(g->points);
    *g = (sweep_grid){0};
}

/* ---- the plan --------------------------------------------------------------------- */

/* The first index of 0..n-1 where a monotone predicate (false ... false true ... true)
 * turns true, n when it never does: lo and hi bracket it, each probe halves them. */
typedef struct bisect {
    size_t lo, hi, probes;
} bisect;

static bool bisect_done(const bisect *b)
{
    return b->lo >= b->hi;
}

static size_t bisect_mid(const bisect *b)
{
    return b->lo + (b->hi - b->lo) / 2;
}

static void bisect_feed(bisect *b, bool pred)
{
    size_t mid = bisect_mid(b);
    if (pred)
        b->hi = mid;
    else
        b->lo = mid + 1;
    b->probes++;
}

/* One search of the plan: Q1 (replicas 1..max at the plan's rate; the predicate: the SLO
 * holds) or Q2 (the rate grid at fixed replicas; the predicate: the SLO fails). */
typedef struct search {
    size_t router;
    int question;                     /* 1 or 2 */
    size_t rep;                       /* Q2: index into the plan's replica counts */
    bisect b;
} search;

static pr_point search_point(const scenario *s, const plan_result *r, const search *q)
{
    size_t mid = bisect_mid(&q->b);
    if (q->question == 1)
        return (pr_point){.router = q->router, .replicas = (uint32_t)mid + 1, .rate = r->rate};
    return (pr_point){.router = q->router, .replicas = r->replicas[q->rep],
                      .rate = s->plan.rate_min + (double)mid * s->plan.rate_step};
}

int plan_run(const scenario *s, unsigned jobs, plan_result *out, kv_err *err)
{
    const plan_spec *pl = &s->plan;
    *out = (plan_result){.rate = pl->rate};
    size_t nrep = pl->n_replicas ? pl->n_replicas : 1;
    size_t ngrid = (size_t)floor((pl->rate_max - pl->rate_min) / pl->rate_step + 1e-9) + 1;
    size_t nsearch = s->n_routers * (1 + nrep);
    out->a = calloc(s->n_routers, sizeof *out->a);
    out->replicas = calloc(nrep, sizeof *out->replicas);
    search *q = calloc(nsearch, sizeof *q);
    pr_point *pts = calloc(nsearch, sizeof *pts);
    pr_result *res = calloc(nsearch, sizeof *res);
    size_t *which = calloc(nsearch, sizeof *which);
    int rc = out->a && out->replicas && q && pts && res && which ? KV_OK : kv_err_set(err, KV_ENOMEM, "out of memory");
    if (rc == KV_OK) {
        out->n = s->n_routers;
        out->n_replicas = nrep;
        for (size_t i = 0; i < nrep; i++)
            out->replicas[i] = pl->replicas ? pl->replicas[i] : s->cluster.replicas;
    }
    size_t k = 0;
    for (size_t r = 0; rc == KV_OK && r < s->n_routers; r++) {
        out->a[r].router = s->routers[r].name;
        out->a[r].best_rate = calloc(nrep, sizeof *out->a[r].best_rate);
        out->a[r].best_rate_capped = calloc(nrep, sizeof *out->a[r].best_rate_capped);
        if (!out->a[r].best_rate || !out->a[r].best_rate_capped)
            rc = kv_err_set(err, KV_ENOMEM, "out of memory");
        q[k++] = (search){.router = r, .question = 1, .b = {.hi = pl->max_replicas}};
        for (size_t i = 0; i < nrep; i++)
            q[k++] = (search){.router = r, .question = 2, .rep = i, .b = {.hi = ngrid}};
    }
    /* rounds: one probe of every unfinished search, all run together */
    while (rc == KV_OK) {
        size_t n = 0;
        for (size_t i = 0; i < nsearch; i++)
            if (!bisect_done(&q[i].b)) {
                which[n] = i;
                pts[n++] = search_point(s, out, &q[i]);
            }
        if (!n)
            break;
        if ((rc = pr_run_all(s, pts, n, jobs, res, err)))
            break;
        for (size_t j = 0; j < n && rc == KV_OK; j++) {
            if (res[j].rc)
                rc = kv_err_set(err, res[j].rc, "plan: router '%s', %u replicas, rate %g: %s",
                                s->routers[pts[j].router].name, pts[j].replicas, pts[j].rate, res[j].msg);
            bool holds = slo_holds(&s->slo, &res[j].m, NULL, 0);
            search *x = &q[which[j]];
            bisect_feed(&x->b, x->question == 1 ? holds : !holds);
        }
    }
    for (size_t i = 0; rc == KV_OK && i < nsearch; i++) {
        plan_answer *a = &out->a[q[i].router];
        if (q[i].question == 1) {
            a->fewest_replicas = q[i].b.lo < pl->max_replicas ? (uint32_t)q[i].b.lo + 1 : 0;
            a->q1_points = q[i].b.probes;
        } else {
            size_t first_fail = q[i].b.lo;
            a->best_rate[q[i].rep] = first_fail ? pl->rate_min + (double)(first_fail - 1) * pl->rate_step : 0;
            a->best_rate_capped[q[i].rep] = first_fail == ngrid;
            a->q2_points += q[i].b.probes;
        }
    }
    free(q);
    free(pts);
    free(res);
    free(which);
    return rc;
}

void plan_result_free(plan_result *r)
{
    for (size_t i = 0; r->a && i < r->n; i++) {
        free(r->a[i].best_rate);
        free(r->a[i].best_rate_capped);
    }
    free(r->a);
    free(r->replicas);
    *r = (plan_result){0};
}

/* ---- outputs ---------------------------------------------------------------------- */

static double st(const stats_block *b, int key)
{
    return b->valid ? b->v[key] : NAN;
}

static void print_plan(FILE *f, const scenario *s, const plan_result *p)
{
    char slo_text[256];
    slo_describe(&s->slo, slo_text, sizeof slo_text);
    const plan_spec *pl = &s->plan;
    fprintf(f, "plan (slo: %s; measured stage %zu)\n", slo_text, pr_stage(s));
    fprintf(f, "  fewest replicas meeting the SLO at %g req/s (searched 1..%u):\n", p->rate, pl->max_replicas);
    for (size_t i = 0; i < p->n; i++) {
        if (p->a[i].fewest_replicas)
            fprintf(f, "    %-24s %5u replicas   (%zu points run)\n", p->a[i].router, p->a[i].fewest_replicas,
                    p->a[i].q1_points);
        else
            fprintf(f, "    %-24s  none up to %u   (%zu points run)\n", p->a[i].router, pl->max_replicas,
                    p->a[i].q1_points);
    }
    fprintf(f, "  highest rate within the SLO (grid %g..%g req/s, step %g):\n", pl->rate_min, pl->rate_max,
            pl->rate_step);
    for (size_t i = 0; i < p->n; i++)
        for (size_t k = 0; k < p->n_replicas; k++) {
            fprintf(f, "    %-24s x %-4u ", p->a[i].router, p->replicas[k]);
            if (p->a[i].best_rate[k] > 0)
                fprintf(f, "%s%g req/s", p->a[i].best_rate_capped[k] ? ">= " : "", p->a[i].best_rate[k]);
            else
                fprintf(f, "none (fails at %g req/s)", pl->rate_min);
            if (k + 1 == p->n_replicas)
                fprintf(f, "   (%zu points run)", p->a[i].q2_points);
            fputc('\n', f);
        }
}

static void point_label(const scenario *s, const pr_point *p, char *out, size_t cap)
{
    uint32_t reps = p->replicas ? p->replicas : s->cluster.replicas;
    if (p->weight_plugin)
        snprintf(out, cap, "%s/r%u/w%g", s->routers[p->router].name, reps, p->weight);
    else
        snprintf(out, cap, "%s/r%u", s->routers[p->router].name, reps);
}

static double point_rate(const scenario *s, const pr_point *p)
{
    return p->rate > 0 ? p->rate : s->workload.stages[pr_stage(s)].rate;
}

static void print_sweep(FILE *f, const scenario *s, const sweep_grid *g, const pr_result *res)
{
    char slo_text[256] = "";
    if (s->slo.n)
        slo_describe(&s->slo, slo_text, sizeof slo_text);
    fprintf(f, "sweep: %zu points, measured stage %zu%s%s\n", g->n, pr_stage(s), s->slo.n ? "; slo: " : "", slo_text);
    fprintf(f, "%-16s %8s %7s %8s %10s | %-23s | %-23s | %7s %6s %s\n", "router", "replicas", "weight", "rate",
            "out tok/s", "TTFT p50/p90/p99 (s)", "E2E p50/p90/p99 (s)", "ITL p90", "failed", s->slo.n ? " SLO" : "");
    for (size_t i = 0; i < g->n; i++) {
        const pr_point *p = &g->points[i];
        const lc_metrics *m = &res[i].m;
        char w[16] = "-";
        if (p->weight_plugin)
            snprintf(w, sizeof w, "%g", p->weight);
        fprintf(f, "%-16s %8u %7s %8g %10.1f | %7.3f %7.3f %7.3f | %7.2f %7.2f %7.2f | %5.1fms %6llu",
                s->routers[p->router].name, p->replicas ? p->replicas : s->cluster.replicas, w, point_rate(s, p),
                m->output_tokens_per_sec, st(&m->ttft, STATS_MEDIAN), st(&m->ttft, STATS_P90), st(&m->ttft, STATS_P99),
                st(&m->request_latency, STATS_MEDIAN), st(&m->request_latency, STATS_P90),
                st(&m->request_latency, STATS_P99), 1000 * st(&m->itl, STATS_P90), (unsigned long long)m->n_failed);
        if (s->slo.n) {
            char why[128];
            bool ok = slo_holds(&s->slo, m, why, sizeof why);
            fprintf(f, "  %s%s%s", ok ? "yes" : "no", ok ? "" : ": ", why);
        }
        fputc('\n', f);
    }
}

static int write_csv(const char *dir, const scenario *s, const sweep_grid *g, const pr_result *res, kv_err *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/sweep.csv", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return kv_err_set(err, KV_EIO, "%s: cannot create: %s", path, strerror(errno));
    fprintf(f, "router,replicas,weight_plugin,weight,rate,achieved_rate,output_tokens_per_sec,requests_per_sec,"
               "ttft_p50,ttft_p90,ttft_p99,e2e_p50,e2e_p90,e2e_p99,itl_p90,failed,slo_ok\n");
    for (size_t i = 0; i < g->n; i++) {
        const pr_point *p = &g->points[i];
        const lc_metrics *m = &res[i].m;
        fprintf(f, "%s,%u,%s,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%llu,%s\n",
                s->routers[p->router].name, p->replicas ? p->replicas : s->cluster.replicas,
                p->weight_plugin ? p->weight_plugin : "", p->weight_plugin ? p->weight : NAN, point_rate(s, p),
                m->achieved_rate, m->output_tokens_per_sec, m->requests_per_sec, st(&m->ttft, STATS_MEDIAN),
                st(&m->ttft, STATS_P90), st(&m->ttft, STATS_P99), st(&m->request_latency, STATS_MEDIAN),
                st(&m->request_latency, STATS_P90), st(&m->request_latency, STATS_P99), st(&m->itl, STATS_P90),
                (unsigned long long)m->n_failed, !s->slo.n ? "" : slo_holds(&s->slo, m, NULL, 0) ? "1" : "0");
    }
    bool bad = ferror(f);
    if (fclose(f) || bad)
        return kv_err_set(err, KV_EIO, "%s: write failed", path);
    return KV_OK;
}

/* charts/sweep.dat: one gnuplot index per series (router, replicas, weight), rows by
 * rate; the series labels, space-separated, in *labels (the caller frees it). */
static int write_chart_data(const char *cdir, const scenario *s, const sweep_grid *g, const pr_result *res,
                            char **labels, size_t *nseries, kv_err *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/sweep.dat", cdir);
    FILE *f = fopen(path, "w");
    char *words = calloc(g->n ? g->n : 1, 160);
    if (!f || !words) {
        if (f)
            fclose(f);
        free(words);
        return kv_err_set(err, KV_EIO, "%s: cannot create: %s", path, strerror(errno));
    }
    *nseries = 0;
    char prev[160] = "";
    for (size_t i = 0; i < g->n; i++) {
        char label[160];
        point_label(s, &g->points[i], label, sizeof label);
        if (strcmp(label, prev) != 0) {   /* the grid's rates are innermost: a series is contiguous */
            fprintf(f, "%s# %s\n# rate ttft_p90_s output_tok_s e2e_p90_s slo_ok\n", *nseries ? "\n\n" : "", label);
            if (*nseries)
                strcat(words, " ");
            strcat(words, label);
            ++*nseries;
            snprintf(prev, sizeof prev, "%s", label);
        }
        const lc_metrics *m = &res[i].m;
        fprintf(f, "%.9g %.9g %.9g %.9g %d\n", point_rate(s, &g->points[i]), st(&m->ttft, STATS_P90),
                m->output_tokens_per_sec, st(&m->request_latency, STATS_P90),
                s->slo.n ? slo_holds(&s->slo, m, NULL, 0) : 1);
    }
    bool bad = ferror(f);
    if (fclose(f) || bad) {
        free(words);
        return kv_err_set(err, KV_EIO, "%s: write failed", path);
    }
    *labels = words;
    return KV_OK;
}

/* plots/sweep.gp over the data, as PNG beside it and (svg_dir) as SVG there;
 * KV_ENOTFOUND when gnuplot is absent. */
static int run_chart(const char *cdir, const char *labels, size_t nseries, const char *svg_dir, kv_err *err)
{
    char sdir[PATH_MAX], script[PATH_MAX + 16];
    if (!plots_find_scripts(NULL, sdir, sizeof sdir))
        return kv_err_set(err, KV_ENOTFOUND, "plots: no gnuplot scripts in %s", sdir);
    snprintf(script, sizeof script, "%s/sweep.gp", sdir);
    size_t cap = strlen(labels) + 4 * PATH_MAX;
    char *vars = malloc(cap);
    if (!vars)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    int rc = KV_OK;
    for (int svg = 0; rc == KV_OK && svg < 1 + (svg_dir != NULL); svg++) {
        snprintf(vars, cap, "datadir='%s'; scriptdir='%s'; series='%s'; nseries=%zu%s%s%s", cdir, sdir, labels,
                 nseries, svg ? "; svg=1; outdir='" : "", svg ? svg_dir : "", svg ? "'" : "");
        rc = plots_run_gnuplot(vars, script, err);
    }
    free(vars);
    return rc;
}

static int run_sweep(const scenario *s, const char *dir, unsigned jobs, bool run_gnuplot, const char *svg_dir,
                     FILE *out, kv_err *err)
{
    sweep_grid g;
    int rc = sweep_grid_build(s, &g, err);
    if (rc)
        return rc;
    pr_result *res = calloc(g.n ? g.n : 1, sizeof *res);
    if (!res) {
        sweep_grid_free(&g);
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    }
    rc = pr_run_all(s, g.points, g.n, jobs, res, err);
    for (size_t i = 0; rc == KV_OK && i < g.n; i++)
        if (res[i].rc)
            rc = kv_err_set(err, res[i].rc, "sweep: router '%s', point %zu: %s", s->routers[g.points[i].router].name,
                            i, res[i].msg);
    if (rc == KV_OK) {
        if (out)
            print_sweep(out, s, &g, res);
        rc = write_csv(dir, s, &g, res, err);
    }
    char cdir[PATH_MAX], *labels = NULL;
    size_t nseries = 0;
    snprintf(cdir, sizeof cdir, "%s/charts", dir);
    if (rc == KV_OK && mkdir(cdir, 0777) != 0 && errno != EEXIST)
        rc = kv_err_set(err, KV_EIO, "%s: cannot create directory: %s", cdir, strerror(errno));
    if (rc == KV_OK)
        rc = write_chart_data(cdir, s, &g, res, &labels, &nseries, err);
    if (rc == KV_OK && run_gnuplot && (rc = run_chart(cdir, labels, nseries, svg_dir, err)) == KV_ENOTFOUND) {
        fprintf(stderr, "sim: gnuplot not found on PATH; sweep chart data written to %s/sweep.dat\n", cdir);
        rc = KV_OK;
    }
    free(labels);
    free(res);
    sweep_grid_free(&g);
    return rc;
}

int sweep_main(const scenario *s, const char *dir, unsigned jobs, bool run_gnuplot, const char *svg_dir, FILE *out,
               kv_err *err)
{
    int rc = KV_OK;
    if (s->sweep.on)
        rc = run_sweep(s, dir, jobs, run_gnuplot, svg_dir, out, err);
    if (rc == KV_OK && s->plan.on) {
        plan_result p;
        if ((rc = plan_run(s, jobs, &p, err)) == KV_OK) {
            if (out) {
                if (s->sweep.on)
                    fputc('\n', out);
                print_plan(out, s, &p);
            }
            char path[PATH_MAX];
            snprintf(path, sizeof path, "%s/plan.txt", dir);
            FILE *f = fopen(path, "w");
            if (!f)
                rc = kv_err_set(err, KV_EIO, "%s: cannot create: %s", path, strerror(errno));
            else {
                print_plan(f, s, &p);
                bool bad = ferror(f);
                if (fclose(f) || bad)
                    rc = kv_err_set(err, KV_EIO, "%s: write failed", path);
            }
        }
        plan_result_free(&p);
    }
    return rc;
}
