/* compare: the sim-versus-live table from runs.db (compare.h). */
#include "compare.h"

#include <math.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct metric {
    const char *label;
    int decimals;
    bool points;                      /* a percentage: the difference is in points, no Δ% */
} metric;

static const metric metrics[COMPARE_N] = {
    [COMPARE_RPS] = {"Requests/sec", 3, false},
    [COMPARE_OUT_TPS] = {"Output tokens/sec", 1, false},
    [COMPARE_TTFT] = {"TTFT mean (s)", 4, false},
    [COMPARE_TTFT_P90] = {"TTFT p90 (s)", 4, false},
    [COMPARE_E2E] = {"E2E latency mean (s)", 4, false},
    [COMPARE_HIT] = {"Prefix-cache hit rate (%)", 1, true},
};

static int db_fail(sqlite3 *db, const char *path, kv_err *err)
{
    return kv_err_set(err, KV_EIO, "%s: %s", path, sqlite3_errmsg(db));
}

/* The first row's column 0 as a double (NaN for NULL or no row). */
static double one_double(sqlite3 *db, const char *sql, int64_t run_id, bool *ok)
{
    sqlite3_stmt *st;
    double v = NAN;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        *ok = false;
        return v;
    }
    sqlite3_bind_int64(st, 1, run_id);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        v = sqlite3_column_double(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* The latest run of router (live: its config is an http:// URL) and its figures. */
static int read_side(sqlite3 *db, const scenario *s, const char *router, bool live, compare_side *out, bool *ok)
{
    *out = (compare_side){.stage = -1};
    for (int m = 0; m < COMPARE_N; m++)
        out->v[m] = NAN;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT run_id FROM runs WHERE scenario = ?1 AND (router = ?2 OR (?3 AND router = ?2 || "
                               "'-live')) AND (coalesce(config, '') LIKE 'http://%') = ?3 ORDER BY run_id DESC LIMIT 1",
                           -1, &st, NULL) != SQLITE_OK)
        return *ok = false, 0;
    sqlite3_bind_text(st, 1, s->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, router, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, live);
    int64_t run_id = 0;
    if (sqlite3_step(st) == SQLITE_ROW)
        out->found = true, run_id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (!out->found)
        return 0;
    /* the report stage (-1: the run's last) */
    const char *q = s->outputs.report_stage < 0
                        ? "SELECT stage, rate, duration, requests_per_sec, output_tokens_per_sec, ttft_mean, ttft_p90, "
                          "latency_mean FROM stages WHERE run_id = ?1 ORDER BY stage DESC LIMIT 1"
                        : "SELECT stage, rate, duration, requests_per_sec, output_tokens_per_sec, ttft_mean, ttft_p90, "
                          "latency_mean FROM stages WHERE run_id = ?1 AND stage = ?2";
    if (sqlite3_prepare_v2(db, q, -1, &st, NULL) != SQLITE_OK)
        return *ok = false, 0;
    sqlite3_bind_int64(st, 1, run_id);
    sqlite3_bind_int(st, 2, s->outputs.report_stage);
    if (sqlite3_step(st) == SQLITE_ROW) {
        out->stage = sqlite3_column_int(st, 0);
        out->rate = sqlite3_column_double(st, 1);
        out->duration = sqlite3_column_double(st, 2);
        for (int m = COMPARE_RPS; m <= COMPARE_E2E; m++)
            if (sqlite3_column_type(st, 3 + m) != SQLITE_NULL)
                out->v[m] = sqlite3_column_double(st, 3 + m);
    }
    sqlite3_finalize(st);
    if (!live) {
        out->v[COMPARE_HIT] = one_double(db, "SELECT 100.0 * sum(cached_tokens) / nullif(sum(prompt_tokens), 0) "
                                       "FROM requests WHERE run_id = ?1 AND NOT failed", run_id, ok);
    } else if (one_double(db, "SELECT count(*) FROM sqlite_master WHERE name = 'live_pods'", 0, ok) > 0) {
        /* every pod's counters, or no rate: a pod left out would bias it */
        out->v[COMPARE_HIT] = one_double(db, "SELECT CASE WHEN count(*) > 0 AND count(*) = count(prefix_cache_queries) "
                                       "THEN 100.0 * sum(prefix_cache_hits) / nullif(sum(prefix_cache_queries), 0) "
                                       "END FROM live_pods WHERE run_id = ?1", run_id, ok);
    }
    return 0;
}

static void fmt(char *buf, size_t cap, double v, int decimals, bool sign)
{
    if (isnan(v))
        snprintf(buf, cap, "-");
    else
        snprintf(buf, cap, sign ? "%+.*f" : "%.*f", decimals, v);
}

int compare_read(const scenario *s, const char *db_path, compare_side *sim, compare_side *live, kv_err *err)
{
    sqlite3 *db = NULL;
    bool ok = sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK;
    for (size_t r = 0; ok && r < s->n_routers; r++) {
        read_side(db, s, s->routers[r].name, false, &sim[r], &ok);
        read_side(db, s, s->routers[r].name, true, &live[r], &ok);
    }
    int rc = ok ? KV_OK : db_fail(db, db_path, err);
    sqlite3_close(db);
    return rc;
}

int compare_print(FILE *f, const scenario *s, const char *db_path, kv_err *err)
{
    compare_side *sims = calloc(s->n_routers, sizeof *sims), *lives = calloc(s->n_routers, sizeof *lives);
    int rc = sims && lives ? compare_read(s, db_path, sims, lives, err) : kv_err_set(err, KV_ENOMEM, "out of memory");
    if (!rc) {
        const compare_side *any = NULL;
        for (size_t r = 0; r < s->n_routers && !any; r++)
            any = sims[r].stage >= 0 ? &sims[r] : lives[r].stage >= 0 ? &lives[r] : NULL;
        fprintf(f, "Sim versus live: %s", s->name);
        if (any)
            fprintf(f, ", stage %d (rate %g req/s for %g s)", any->stage, any->rate, any->duration);
        fprintf(f, "; prefix-cache hit rate over the whole run\n");
        double x = s->cluster.speedup;
        if (x != 1)
            fprintf(f, "Time base: wall clock at speedup %g (the pods' step times are the model's / %g): the model's "
                       "times are %g x these, its rates / %g; a router's own time does not scale\n", x, x, x, x);
        else
            fprintf(f, "Time base: wall clock, speedup 1 (the model's own times)\n");
        /* "Δ" is two bytes and one column (printf pads bytes) */
        fprintf(f, "%-16s %-26s %12s %12s %17s %9s\n", "Router", "Metric", "Simulated", "Measured",
                "Δ (meas - sim)", "Δ%");
        for (size_t r = 0; r < s->n_routers; r++) {
            for (int m = 0; m < COMPARE_N; m++) {
                const metric *mt = &metrics[m];
                double a = sims[r].v[m], b = lives[r].v[m], d = b - a;
                char s1[32], s2[32], s3[40], s4[32];
                fmt(s1, sizeof s1, a, mt->decimals, false);
                fmt(s2, sizeof s2, b, mt->decimals, false);
                fmt(s3, sizeof s3, d, mt->decimals, true);
                if (mt->points && !isnan(d))
                    strcat(s3, " pts");
                if (!mt->points && !isnan(d) && a != 0)
                    snprintf(s4, sizeof s4, "%+.1f%%", 100 * d / a);
                else
                    snprintf(s4, sizeof s4, mt->points ? "" : "-");
                char line[256];
                int n = snprintf(line, sizeof line, "%-16s %-26s %12s %12s %16s %8s", m ? "" : s->routers[r].name,
                                 mt->label, s1, s2, s3, s4);
                while (n > 0 && line[n - 1] == ' ')   /* the hit rate's empty Δ% */
                    line[--n] = 0;
                fprintf(f, "%s\n", line);
            }
        }
        for (size_t r = 0; r < s->n_routers; r++) {
            if (!sims[r].found || !lives[r].found) {
                fprintf(f, "%s: no %s run in %s\n", s->routers[r].name, sims[r].found ? "live" : "simulated", db_path);
                rc = kv_err_set(err, KV_ENOTFOUND, "%s: router %s has no %s run", db_path, s->routers[r].name,
                                sims[r].found ? "live" : "simulated");
            }
        }
    }
    free(sims);
    free(lives);
    return rc;
}
