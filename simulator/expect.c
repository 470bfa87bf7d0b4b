/* expect: parsing and evaluating a scenario's expect: section, the --baseline
 * comparison and the JUnit report (see expect.h). */
#define _GNU_SOURCE
#include "expect.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "workload.h"

typedef enum { K_DUR, K_RATE, K_COUNT, K_RATIO } metric_kind;

/* The metrics, in the order of the table below: four statistics of TTFT, latency and ITL
 * first (mean, p50, p90, p99, so metric_value can index them), then the rest. */
enum {
    M_TTFT_MEAN, M_TPOT_MEAN = 12, M_NTPOT_MEAN, M_REQUESTS_PER_SEC,
    M_INPUT_TPS, M_OUTPUT_TPS, M_TOTAL_TPS, M_FAILED, M_PREEMPTIONS, M_PREFIX_HIT_RATE, M_COUNT
};
#define M_TTFT_P90 (M_TTFT_MEAN + 2)

/* name, kind, whether more is better, and the same figure from runs.db's stages table */
static const struct metric {
    const char *name;
    metric_kind kind;
    bool higher_better;
    const char *sql;
} metrics[] = {
    {"ttft_mean", K_DUR, false, "ttft_mean"},        {"ttft_p50", K_DUR, false, "ttft_p50"},
    {"ttft_p90", K_DUR, false, "ttft_p90"},          {"ttft_p99", K_DUR, false, "ttft_p99"},
    {"latency_mean", K_DUR, false, "latency_mean"},  {"latency_p50", K_DUR, false, "latency_p50"},
    {"latency_p90", K_DUR, false, "latency_p90"},    {"latency_p99", K_DUR, false, "latency_p99"},
    {"itl_mean", K_DUR, false, "itl_mean"},          {"itl_p50", K_DUR, false, "itl_p50"},
    {"itl_p90", K_DUR, false, "itl_p90"},            {"itl_p99", K_DUR, false, "itl_p99"},
    {"tpot_mean", K_DUR, false, "tpot_mean"},        {"ntpot_mean", K_DUR, false, "ntpot_mean"},
    {"requests_per_sec", K_RATE, true, "requests_per_sec"},
    {"input_tokens_per_sec", K_RATE, true, "input_tokens_per_sec"},
    {"output_tokens_per_sec", K_RATE, true, "output_tokens_per_sec"},
    {"total_tokens_per_sec", K_RATE, true, "total_tokens_per_sec"},
    {"failed", K_COUNT, false, "failures"},          {"preemptions", K_COUNT, false, "preemptions"},
    {"prefix_hit_rate", K_RATIO, true, "CAST(cached_tokens AS REAL) / NULLIF(input_tokens, 0)"},
};
#define N_METRICS (sizeof metrics / sizeof *metrics)
_Static_assert(N_METRICS == M_COUNT, "the metric table and its enum disagree");

const char *exp_metric_name(int metric)
{
    return metrics[metric].name;
}

bool exp_metric_higher_better(int metric)
{
    return metrics[metric].higher_better;
}

static const char *const op_text[] = {"<", "<=", ">", ">=", "=="};

static double stat(const stats_block *b, int key)
{
    return b->valid ? b->v[key] : NAN;
}

/* The metric's value in one stage's figures; NaN when there is nothing to measure. */
double exp_metric_value(int metric, const lc_metrics *m)
{
    static const int keys[] = {STATS_MEAN, STATS_MEDIAN, STATS_P90, STATS_P99};
    const stats_block *blocks[] = {&m->ttft, &m->request_latency, &m->itl};
    if (metric < M_TPOT_MEAN)
        return stat(blocks[metric / 4], keys[metric % 4]);
    switch (metric) {
    case M_TPOT_MEAN: return stat(&m->tpot, STATS_MEAN);
    case M_NTPOT_MEAN: return stat(&m->ntpot, STATS_MEAN);
    case M_REQUESTS_PER_SEC: return m->requests_per_sec;
    case M_INPUT_TPS: return m->input_tokens_per_sec;
    case M_OUTPUT_TPS: return m->output_tokens_per_sec;
    case M_TOTAL_TPS: return m->total_tokens_per_sec;
    case M_FAILED: return (double)m->n_failed;
    case M_PREEMPTIONS: return (double)m->preemptions;
    default: return m->input_tokens ? (double)m->cached_tokens / (double)m->input_tokens : NAN;
    }
}

int exp_metric_find(const char *s, size_t len)
{
    for (size_t i = 0; i < N_METRICS; i++)
        if (strlen(metrics[i].name) == len && strncmp(metrics[i].name, s, len) == 0)
            return (int)i;
    return -1;
}

/* "0.412 s", "12345.6 tok/s"-style text of a value in its metric's unit. */
void exp_metric_format(char *buf, size_t cap, int metric, double v)
{
    switch (metrics[metric].kind) {
    case K_DUR:
        if (fabs(v) < 1.0)
            snprintf(buf, cap, "%.4g ms", v * 1e3);
        else
            snprintf(buf, cap, "%.4g s", v);
        break;
    case K_RATE: snprintf(buf, cap, "%.1f/s", v); break;
    case K_COUNT: snprintf(buf, cap, "%.0f", v); break;
    case K_RATIO: snprintf(buf, cap, "%.2f%%", v * 100); break;
    }
}

/* A bound in the metric's unit: durations as yt_duration reads them, ratios with an
 * optional %, the rest plain numbers. */
bool exp_metric_parse(const char *s, int metric, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || !isfinite(v))
        return false;
    if (!*end) {
        *out = v;
        return true;
    }
    if (metrics[metric].kind == K_DUR)
        return v >= 0 && yt_parse_duration(s, out);
    if (metrics[metric].kind == K_RATIO && strcmp(end, "%") == 0) {
        *out = v / 100;
        return true;
    }
    return false;
}

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* METRIC OP BOUND (expect.h). what names the field in messages. */
static int parse_check(const yt_doc *d, const yt_node *n, const char *what, const char *const *routers,
                       size_t n_routers, exp_check *c, kv_err *err)
{
    const char *s;
    int rc = yt_string(d, n, what, &s, err);
    if (rc)
        return rc;
    c->text = s;
    const char *p = skip_ws(s), *m0 = p;
    while (isalnum((unsigned char)*p) || *p == '_')
        p++;
    if ((c->metric = exp_metric_find(m0, (size_t)(p - m0))) < 0)
        return yt_error(d, n, err, KV_EINVAL, "field '%s': unknown metric '%.*s' (expected METRIC OP BOUND, "
                        "METRIC one of ttft_p90, output_tokens_per_sec, failed, prefix_hit_rate, ... as in "
                        "docs/policy-regression.md)", what, (int)(p - m0), m0);
    p = skip_ws(p);
    static const exp_op ops[] = {EXP_LE, EXP_GE, EXP_EQ, EXP_LT, EXP_GT};
    static const char *const optx[] = {"<=", ">=", "==", "<", ">"};
    size_t k = 0;
    while (k < 5 && strncmp(p, optx[k], strlen(optx[k])) != 0)
        k++;
    if (k == 5)
        return yt_error(d, n, err, KV_EINVAL, "field '%s': expected one of < <= > >= == after '%s', got '%s'",
                        what, metrics[c->metric].name, p);
    c->op = ops[k];
    p = skip_ws(p + strlen(optx[k]));
    char rhs[256];
    size_t len = strlen(p);
    while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
        len--;
    if (!len || len >= sizeof rhs)
        return yt_error(d, n, err, KV_EINVAL, "field '%s': expected a bound after '%s'", what, optx[k]);
    memcpy(rhs, p, len);
    rhs[len] = 0;
    char *ref = rhs, *star = strchr(rhs, '*');
    c->bound = 1;
    if (star) {
        char *e = star;
        while (e > rhs && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        *e = 0;
        char *end;
        c->bound = strtod(rhs, &end);
        if (end == rhs || *end || !isfinite(c->bound))
            return yt_error(d, n, err, KV_EINVAL, "field '%s': '%s' is not a number (expected FACTOR * "
                            "ROUTER.METRIC)", what, rhs);
        ref = (char *)skip_ws(star + 1);
    } else if (exp_metric_parse(rhs, c->metric, &c->bound)) {
        return KV_OK;
    }
    char *dot = strrchr(ref, '.');
    int rm = dot ? exp_metric_find(dot + 1, strlen(dot + 1)) : -1;
    if (rm < 0)
        return yt_error(d, n, err, KV_EINVAL, "field '%s': '%s' is neither a %s bound nor ROUTER.METRIC", what,
                        ref, metrics[c->metric].kind == K_DUR ? "duration (50ms, 2s)" : "numeric");
    *dot = 0;
    size_t r = 0;
    while (r < n_routers && strcmp(routers[r], ref) != 0)
        r++;
    if (r == n_routers)
        return yt_error(d, n, err, KV_EINVAL, "field '%s': unknown router '%s'", what, ref);
    if (metrics[rm].kind != metrics[c->metric].kind)
        return yt_error(d, n, err, KV_EINVAL, "field '%s': %s and %s are not in the same unit", what,
                        metrics[c->metric].name, metrics[rm].name);
    c->ref_router = routers[r];
    c->ref_metric = rm;
    return KV_OK;
}

/* "5%" or a fraction such as 0.05. */
static int parse_tolerance(const yt_doc *d, const yt_node *n, const char *what, double *out, kv_err *err)
{
    const char *s;
    int rc = yt_string(d, n, what, &s, err);
    if (rc)
        return rc;
    char *end;
    double v = strtod(s, &end);
    if (end != s && strcmp(end, "%") == 0)
        v /= 100;
    else if (end == s || *end)
        v = -1;
    if (!(v >= 0 && v <= 10))
        return yt_error(d, n, err, KV_EINVAL, "field '%s': expected a tolerance such as 5%% or 0.05, got '%s'", what,
                        s);
    *out = v;
    return KV_OK;
}

static int parse_group(const yt_doc *d, const yt_node *g, size_t gi, const char *const *routers, size_t n_routers,
                       size_t n_stages, exp_set *e, kv_err *err)
{
    char what[96];
    snprintf(what, sizeof what, "expect.checks[%zu]", gi);
    if (g->kind != YT_MAP)
        return yt_error(d, g, err, KV_EINVAL, "field '%s': expected a map {router, stage, tolerance, that}", what);
    const yt_node *rn = yt_get(g, "router"), *that = yt_get(g, "that"), *n;
    const char *router;
    char f[128];
    snprintf(f, sizeof f, "%s.router", what);
    if (!rn)
        return yt_error(d, g, err, KV_EINVAL, "field '%s': required", f);
    int rc = yt_string(d, rn, f, &router, err);
    if (rc)
        return rc;
    size_t r = 0;
    while (r < n_routers && strcmp(routers[r], router) != 0)
        r++;
    if (r == n_routers)
        return yt_error(d, rn, err, KV_EINVAL, "field '%s': unknown router '%s'", f, router);
    router = routers[r];
    int64_t stage = -1;
    double tol = e->tolerance;
    if ((rc = yt_opt_int(d, g, what, "stage", -1, (int64_t)n_stages - 1, &stage, err)))
        return rc;
    if (!yt_is_null(n = yt_get(g, "tolerance"))) {
        snprintf(f, sizeof f, "%s.tolerance", what);
        if ((rc = parse_tolerance(d, n, f, &tol, err)))
            return rc;
    }
    snprintf(f, sizeof f, "%s.that", what);
    if (!that || that->kind != YT_SEQ || !that->n)
        return yt_error(d, that ? that : g, err, KV_EINVAL, "field '%s': expected a non-empty list of checks", f);
    exp_check *grown = realloc(e->checks, (e->n + that->n) * sizeof *grown);
    if (!grown)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    e->checks = grown;
    for (size_t j = 0; j < that->n; j++) {
        char cw[160];
        snprintf(cw, sizeof cw, "%s[%zu]", f, j);
        exp_check c = {.router = router, .stage = (int)stage, .tolerance = tol};
        if ((rc = parse_check(d, that->items[j], cw, routers, n_routers, &c, err)))
            return rc;
        e->checks[e->n++] = c;
    }
    return wl_check_keys(d, g, what, err);
}

int exp_parse(const yt_doc *d, const yt_node *n, const char *const *routers, size_t n_routers, size_t n_stages,
              exp_set *out, kv_err *err)
{
    *out = (exp_set){.tolerance = 0.05};
    if (yt_is_null(n))
        return KV_OK;
    if (n->kind != YT_MAP)
        return yt_error(d, n, err, KV_EINVAL, "field 'expect': expected a map {tolerance, checks}");
    const yt_node *t = yt_get(n, "tolerance"), *cs = yt_get(n, "checks");
    int rc;
    if (!yt_is_null(t) && (rc = parse_tolerance(d, t, "expect.tolerance", &out->tolerance, err)))
        return rc;
    if (cs && (cs->kind != YT_SEQ || !cs->n))
        return yt_error(d, cs, err, KV_EINVAL, "field 'expect.checks': expected a non-empty list");
    for (size_t i = 0; cs && i < cs->n; i++)
        if ((rc = parse_group(d, cs->items[i], i, routers, n_routers, n_stages, out, err)))
            return rc;
    return wl_check_keys(d, n, "expect", err);
}

void exp_set_free(exp_set *e)
{
    free(e->checks);
    *e = (exp_set){0};
}

/* Appends a result; the strings are formatted copies. */
static int add_result(exp_report *rep, exp_status st, const char *router, const char *name, const char *detail,
                      kv_err *err)
{
    exp_result *g = realloc(rep->r, (rep->n + 1) * sizeof *g);
    if (!g)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    rep->r = g;
    exp_result *x = &g[rep->n];
    *x = (exp_result){.router = strdup(router), .name = strdup(name), .detail = strdup(detail), .status = st};
    if (!x->router || !x->name || !x->detail) {
        free(x->router), free(x->name), free(x->detail);
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    }
    rep->n++;
    rep->n_failed += st == EXP_FAIL;
    rep->n_skipped += st == EXP_SKIP;
    return KV_OK;
}

static long find_router(const char *const *names, size_t n, const char *router)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], router) == 0)
            return (long)i;
    return -1;
}

static const lc_metrics *stage_of(const lc_run *m, int stage)
{
    if (!m->n_stages)
        return NULL;
    return stage < 0 ? &m->stages[m->n_stages - 1] : (size_t)stage < m->n_stages ? &m->stages[stage] : NULL;
}

static bool holds(exp_op op, double v, double b)
{
    switch (op) {
    case EXP_LT: return v < b;
    case EXP_LE: return v <= b;
    case EXP_GT: return v > b;
    case EXP_GE: return v >= b;
    default: return v == b;
    }
}

static void stage_name(char *buf, size_t cap, int stage)
{
    if (stage < 0)
        snprintf(buf, cap, "last stage");
    else
        snprintf(buf, cap, "stage %d", stage);
}

int exp_eval(const exp_set *e, const char *const *names, const lc_run *m, size_t n, exp_report *rep,
             kv_err *err)
{
    for (size_t i = 0; i < e->n; i++) {
        const exp_check *c = &e->checks[i];
        char name[512], detail[512], sv[64], sb[64], sm[64], st[32];
        stage_name(st, sizeof st, c->stage);
        snprintf(name, sizeof name, "%s: %s", st, c->text);
        long r = find_router(names, n, c->router), rr = c->ref_router ? find_router(names, n, c->ref_router) : r;
        exp_status status = EXP_SKIP;
        if (r < 0 || rr < 0) {
            snprintf(detail, sizeof detail, "router '%s' did not run", r < 0 ? c->router : c->ref_router);
        } else {
            const lc_metrics *s = stage_of(&m[r], c->stage), *rs = stage_of(&m[rr], c->stage);
            double v = s ? exp_metric_value(c->metric, s) : NAN;
            double b = c->ref_router ? (rs ? c->bound * exp_metric_value(c->ref_metric, rs) : NAN) : c->bound;
            exp_metric_format(sv, sizeof sv, c->metric, v);
            exp_metric_format(sb, sizeof sb, c->metric, b);
            /* + 0.0 turns the -0 of an exact == into 0 */
            double margin = (c->op == EXP_EQ ? -fabs(v - b) : c->op <= EXP_LE ? b - v : v - b) + 0.0;
            exp_metric_format(sm, sizeof sm, c->metric, margin);
            status = isfinite(v) && isfinite(b) && holds(c->op, v, b) ? EXP_PASS : EXP_FAIL;
            if (!isfinite(v) || !isfinite(b))
                snprintf(detail, sizeof detail, "no value to compare (%s, bound %s): nothing was measured", sv, sb);
            else
                snprintf(detail, sizeof detail, "%s (bound %s %s, margin %s)", sv, op_text[c->op], sb, sm);
        }
        int rc = add_result(rep, status, c->router, name, detail, err);
        if (rc)
            return rc;
    }
    return KV_OK;
}

/* The baseline's figure for a router, stage and metric; NaN when it has none. */
static int baseline_value(sqlite3 *db, const char *path, const char *router, int stage, int metric, double *out,
                          kv_err *err)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT %s FROM stages s JOIN runs r USING (run_id) WHERE r.router = ?1 AND s.stage = "
             "(CASE WHEN ?2 < 0 THEN (SELECT max(stage) FROM stages WHERE run_id = s.run_id) ELSE ?2 END) "
             "ORDER BY run_id DESC LIMIT 1",
             metrics[metric].sql);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return kv_err_set(err, KV_EIO, "%s: not a runs.db written by ./sim: %s", path, sqlite3_errmsg(db));
    sqlite3_bind_text(st, 1, router, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, stage);
    int s = sqlite3_step(st);
    *out = s == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL ? sqlite3_column_double(st, 0) : NAN;
    sqlite3_finalize(st);
    if (s != SQLITE_ROW && s != SQLITE_DONE)
        return kv_err_set(err, KV_EIO, "%s: %s", path, sqlite3_errmsg(db));
    return KV_OK;
}

/* One baseline comparison: the run's value may be worse than the baseline's by at
 * most tol (a fraction of the baseline's value). */
static int baseline_check(sqlite3 *db, const char *path, const char *router, int stage, int metric, double tol,
                          const char *const *names, const lc_run *m, size_t n, exp_report *rep, kv_err *err)
{
    char name[256], detail[512], sv[64], sb[64], sm[64], st[32];
    stage_name(st, sizeof st, stage);
    snprintf(name, sizeof name, "%s: %s no worse than the baseline by more than %g%%", st, metrics[metric].name,
             tol * 100);
    long r = find_router(names, n, router);
    const lc_metrics *s = r < 0 ? NULL : stage_of(&m[r], stage);
    double base, v = s ? exp_metric_value(metric, s) : NAN;
    int rc = baseline_value(db, path, router, stage, metric, &base, err);
    if (rc)
        return rc;
    if (!s || isnan(base)) {
        snprintf(detail, sizeof detail, "%s", !s ? "the router did not run" : "the baseline has no such figure");
        return add_result(rep, EXP_SKIP, router, name, detail, err);
    }
    bool hb = metrics[metric].higher_better;
    double bound = hb ? base * (1 - tol) : base * (1 + tol);
    exp_metric_format(sv, sizeof sv, metric, v);
    exp_metric_format(sb, sizeof sb, metric, bound);
    exp_metric_format(sm, sizeof sm, metric, hb ? v - bound : bound - v);
    bool ok = isfinite(v) && (hb ? v >= bound : v <= bound);
    char bv[64];
    exp_metric_format(bv, sizeof bv, metric, base);
    snprintf(detail, sizeof detail, "%s (bound %s %s, baseline %s, margin %s)", sv, hb ? ">=" : "<=", sb, bv, sm);
    return add_result(rep, ok ? EXP_PASS : EXP_FAIL, router, name, detail, err);
}

int exp_baseline(const exp_set *e, const char *db_path, const char *const *names, const lc_run *m, size_t n,
                 exp_report *rep, kv_err *err)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        int rc = kv_err_set(err, KV_EIO, "--baseline %s: %s", db_path, db ? sqlite3_errmsg(db) : "cannot open");
        sqlite3_close(db);
        return rc;
    }
    int rc = KV_OK;
    if (!e->n) {
        /* the documented default set */
        static const int defaults[] = {M_TTFT_P90, M_OUTPUT_TPS, M_FAILED};
        for (size_t r = 0; !rc && r < n; r++)
            for (size_t k = 0; !rc && k < 3; k++)
                rc = baseline_check(db, db_path, names[r], -1, defaults[k], e->tolerance, names, m, n, rep, err);
    }
    for (size_t i = 0; !rc && i < e->n; i++) {
        const exp_check *c = &e->checks[i];
        bool seen = false;     /* one comparison per router, stage and metric */
        for (size_t j = 0; j < i && !seen; j++)
            seen = e->checks[j].metric == c->metric && e->checks[j].stage == c->stage &&
                   strcmp(e->checks[j].router, c->router) == 0;
        if (!seen)
            rc = baseline_check(db, db_path, c->router, c->stage, c->metric, c->tolerance, names, m, n, rep, err);
    }
    sqlite3_close(db);
    return rc;
}

void exp_report_free(exp_report *rep)
{
    for (size_t i = 0; i < rep->n; i++)
        free(rep->r[i].router), free(rep->r[i].name), free(rep->r[i].detail);
    free(rep->r);
    *rep = (exp_report){0};
}

static const char *const status_text[] = {"PASS", "FAIL", "SKIP"};

void exp_print(FILE *f, const exp_report *rep)
{
    for (size_t i = 0; i < rep->n; i++)
        fprintf(f, "%s  %s %s: %s\n", status_text[rep->r[i].status], rep->r[i].router, rep->r[i].name,
                rep->r[i].detail);
    fprintf(f, "expect: %zu passed, %zu failed, %zu skipped\n", rep->n - rep->n_failed - rep->n_skipped,
            rep->n_failed, rep->n_skipped);
}

/* Writes s as XML attribute or text content; control bytes XML 1.0 cannot hold become '?'. */
static void xml_escaped(FILE *f, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        switch (c) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&apos;", f); break;
        default: fputc(c < 0x20 && c != '\t' && c != '\n' ? '?' : c, f);
        }
    }
}

int exp_write_junit(const char *path, const char *suite, const exp_report *rep, kv_err *err)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return kv_err_set(err, KV_EIO, "--junit %s: %s", path, strerror(errno));
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites tests=\"%zu\" failures=\"%zu\" "
               "skipped=\"%zu\">\n  <testsuite name=\"",
            rep->n, rep->n_failed, rep->n_skipped);
    xml_escaped(f, suite);
    fprintf(f, "\" tests=\"%zu\" failures=\"%zu\" skipped=\"%zu\">\n", rep->n, rep->n_failed, rep->n_skipped);
    for (size_t i = 0; i < rep->n; i++) {
        const exp_result *x = &rep->r[i];
        fputs("    <testcase classname=\"", f);
        xml_escaped(f, suite);
        fputc('.', f);
        xml_escaped(f, x->router);
        fputs("\" name=\"", f);
        xml_escaped(f, x->name);
        if (x->status == EXP_PASS) {
            fputs("\">\n      <system-out>", f);
            xml_escaped(f, x->detail);
            fputs("</system-out>\n    </testcase>\n", f);
            continue;
        }
        fputs(x->status == EXP_FAIL ? "\">\n      <failure message=\"" : "\">\n      <skipped message=\"", f);
        xml_escaped(f, x->detail);
        fputs("\"/>\n    </testcase>\n", f);
    }
    fputs("  </testsuite>\n</testsuites>\n", f);
    if (fclose(f) != 0)
        return kv_err_set(err, KV_EIO, "--junit %s: %s", path, strerror(errno));
    return KV_OK;
}

int exp_check_run(const exp_set *e, const char *baseline, const char *junit, const char *suite,
                  const char *const *names, const lc_run *m, size_t n, FILE *out, size_t *failed, kv_err *err)
{
    exp_report rep = {0};
    int rc = exp_eval(e, names, m, n, &rep, err);
    if (!rc && baseline)
        rc = exp_baseline(e, baseline, names, m, n, &rep, err);
    if (!rc) {
        fputc('\n', out);
        exp_print(out, &rep);
        *failed = rep.n_failed;
    }
    if (!rc && junit)
        rc = exp_write_junit(junit, suite, &rep, err);
    exp_report_free(&rep);
    return rc;
}
