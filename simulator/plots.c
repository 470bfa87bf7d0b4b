/* plots: chart data files and the gnuplot runs that draw them (see plots.h).
 * Data layout (DIR/charts/):
 *   stages.dat        one gnuplot index per router, one row per stage
 *   ttft_cdf.dat      one index per router: TTFT (s) and cumulative fraction
 *   servers_<r>.dat   per router, one index per server: time series samples, at most
 *                     two rows per time bucket (see write_servers)
 * gnuplot gets the data directory, the router names and counts through -e, so the
 * scripts in plots/ stay plain gnuplot that a user can rerun and edit. */
#define _GNU_SOURCE
#include "plots.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* Router names become file names and gnuplot words: keep [A-Za-z0-9._-]. */
static void safe_name(char *out, size_t cap, const char *name)
{
    size_t o = 0;
    for (const char *p = name ? name : "router"; *p && o + 1 < cap; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                  c == '_' || c == '-';
        out[o++] = ok ? c : '_';
    }
    out[o] = 0;
}

static FILE *open_data(const char *dir, const char *name, char *path, size_t cap, kv_err *err)
{
    snprintf(path, cap, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        kv_err_set(err, KV_EIO, "%s: cannot create: %s", path, strerror(errno));
    return f;
}

static int close_data(FILE *f, const char *path, kv_err *err)
{
    bool bad = ferror(f);
    if (fclose(f) != 0 || bad)
        return kv_err_set(err, KV_EIO, "%s: write failed", path);
    return KV_OK;
}

static double ms(const stats_block *b, int key)
{
    return b->valid ? 1000 * b->v[key] : NAN; /* gnuplot skips "nan" */
}

static int cmp_by_rate(const void *a, const void *b)
{
    const lc_metrics *x = *(const lc_metrics *const *)a, *y = *(const lc_metrics *const *)b;
    if (x->achieved_rate != y->achieved_rate)
        return x->achieved_rate < y->achieved_rate ? -1 : 1;
    return (x->stage > y->stage) - (x->stage < y->stage);
}

/* Rows in order of achieved rate, so a line through a ladder whose warm-up stage comes
 * first does not double back. */
static int write_stages(const char *dir, const sim_run *const *runs, const lc_run *const *m, size_t n, kv_err *err)
{
    char path[PATH_MAX];
    FILE *f = open_data(dir, "stages.dat", path, sizeof path, err);
    if (!f)
        return KV_EIO;
    for (size_t r = 0; r < n; r++) {
        fprintf(f, "%s# router %s\n# stage requested_rate achieved_rate ttft_ms ntpot_ms itl_ms input_tok_s "
                   "output_tok_s total_tok_s ttft_p90_ms latency_s req_s\n",
                r ? "\n\n" : "", runs[r]->router ? runs[r]->router : "?");
        const lc_metrics **order = malloc((m[r]->n_stages ? m[r]->n_stages : 1) * sizeof *order);
        if (!order) {
            fclose(f);
            return kv_err_set(err, KV_ENOMEM, "%s: out of memory", path);
        }
        for (size_t i = 0; i < m[r]->n_stages; i++)
            order[i] = &m[r]->stages[i];
        qsort(order, m[r]->n_stages, sizeof *order, cmp_by_rate);
        for (size_t i = 0; i < m[r]->n_stages; i++) {
            const lc_metrics *s = order[i];
            fprintf(f, "%d %.9g %.9g %.9g %.9g %.9g %.9g %.9g %.9g %.9g %.9g %.9g\n", s->stage, s->requested_rate,
                    s->achieved_rate, ms(&s->ttft, STATS_MEAN), ms(&s->ntpot, STATS_MEAN), ms(&s->itl, STATS_MEAN),
                    s->input_tokens_per_sec, s->output_tokens_per_sec, s->total_tokens_per_sec,
                    ms(&s->ttft, STATS_P90), ms(&s->request_latency, STATS_MEAN) / 1000, s->requests_per_sec);
        }
        free(order);
    }
    return close_data(f, path, err);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* At most this many points per CDF: enough for a smooth line at any run size. */
#define CDF_POINTS 2000

static int write_ttft_cdf(const char *dir, const sim_run *const *runs, size_t n, kv_err *err)
{
    char path[PATH_MAX];
    FILE *f = open_data(dir, "ttft_cdf.dat", path, sizeof path, err);
    if (!f)
        return KV_EIO;
    int rc = KV_OK;
    for (size_t r = 0; r < n && rc == KV_OK; r++) {
        const sim_run *run = runs[r];
        double *v = malloc((run->n_requests ? run->n_requests : 1) * sizeof *v);
        if (!v) {
            rc = kv_err_set(err, KV_ENOMEM, "%s: out of memory", path);
            break;
        }
        size_t k = 0;
        for (size_t i = 0; i < run->n_requests; i++) {
            const sim_request_record *q = &run->requests[i];
            if (!q->failed && q->n_token_times > 1 && sim_has_token_times(q))
                v[k++] = (double)(sim_token_time(run, q, 0) - q->t_start) / SIM_US_PER_S;
        }
        qsort(v, k, sizeof *v, cmp_double);
        fprintf(f, "%s# router %s\n# ttft_s fraction\n", r ? "\n\n" : "", run->router ? run->router : "?");
        size_t step = k > CDF_POINTS ? k / CDF_POINTS : 1;
        for (size_t i = 0; i < k; i += step)
            fprintf(f, "%.9g %.9g\n", v[i], (double)(i + 1) / (double)k);
        if (k && (k - 1) % step)
            fprintf(f, "%.9g 1\n", v[k - 1]);
        if (k == 0) /* gnuplot needs at least one point per index */
            fprintf(f, "0 0\n");
        free(v);
    }
    int crc = close_data(f, path, err);
    return rc ? rc : crc;
}

/* A server chart is ~1,000 px wide, while a ladder run scrapes each server every 50 ms for
 * 47 minutes (56,000 samples per server, 15 MB of text per router that gnuplot parsed and
 * drew in more CPU time than the whole report took). So each server's series is cut into
 * at most SERIES_BUCKETS equal time buckets (the same for every server of the run), and a
 * bucket of several samples becomes two rows: the minimum of every column at the bucket's
 * first sample time, then the maximum at its last. A line through them covers, in each
 * bucket, exactly the vertical range the full series covers there, so a one-sample spike
 * (a KV-usage peak, a hit-rate dip) stays as visible as before, which a mean or a 1-in-k
 * pick would hide. A bucket of one sample is that sample's row, so short runs are written
 * in full. runs.db's samples table keeps every sample. */
#define SERIES_BUCKETS 1000

typedef struct series_bucket {
    size_t n;
    sim_time t_first, t_last;
    double kv_lo, kv_hi, hit_lo, hit_hi;   /* hit: NaN while no sample of the bucket has one */
    int wait_lo, wait_hi, run_lo, run_hi;
    uint64_t pre_lo, pre_hi;
} series_bucket;

static void bucket_add(series_bucket *b, const sim_server_sample *x)
{
    if (b->n++ == 0) {
        *b = (series_bucket){.n = 1, .t_first = x->t, .t_last = x->t, .kv_lo = x->kv_usage, .kv_hi = x->kv_usage,
                             .hit_lo = x->hit_rate, .hit_hi = x->hit_rate, .wait_lo = x->waiting,
                             .wait_hi = x->waiting, .run_lo = x->running, .run_hi = x->running,
                             .pre_lo = x->preemptions, .pre_hi = x->preemptions};
        return;
    }
    b->t_last = x->t;
    b->kv_lo = fmin(b->kv_lo, x->kv_usage), b->kv_hi = fmax(b->kv_hi, x->kv_usage);
    b->hit_lo = fmin(b->hit_lo, x->hit_rate), b->hit_hi = fmax(b->hit_hi, x->hit_rate); /* fmin skips a NaN */
    b->wait_lo = x->waiting < b->wait_lo ? x->waiting : b->wait_lo;
    b->wait_hi = x->waiting > b->wait_hi ? x->waiting : b->wait_hi;
    b->run_lo = x->running < b->run_lo ? x->running : b->run_lo;
    b->run_hi = x->running > b->run_hi ? x->running : b->run_hi;
    b->pre_lo = x->preemptions < b->pre_lo ? x->preemptions : b->pre_lo;
    b->pre_hi = x->preemptions > b->pre_hi ? x->preemptions : b->pre_hi;
}

static void put_row(FILE *f, sim_time t, double kv, double hit, int waiting, int running, uint64_t preemptions)
{
    char h[32];   /* NaN (nothing admitted in the window) is a gap in the chart */
    if (isnan(hit))
        snprintf(h, sizeof h, "NaN");
    else
        snprintf(h, sizeof h, "%.6g", 100 * hit);
    fprintf(f, "%.6f %.6g %s %d %d %llu\n", (double)t / SIM_US_PER_S, 100 * kv, h, waiting, running,
            (unsigned long long)preemptions);
}

static void bucket_flush(FILE *f, series_bucket *b)
{
    if (b->n == 0)
        return;
    put_row(f, b->t_first, b->kv_lo, b->hit_lo, b->wait_lo, b->run_lo, b->pre_lo);
    if (b->n > 1)
        put_row(f, b->t_last, b->kv_hi, b->hit_hi, b->wait_hi, b->run_hi, b->pre_hi);
    b->n = 0;
}

static int write_servers(const char *dir, const sim_run *run, const char *safe, int nservers, kv_err *err)
{
    size_t *order, *first;
    if (!sim_samples_by_server(run, nservers, &order, &first)) {
        free(order), free(first);
        return kv_err_set(err, KV_ENOMEM, "plots: out of memory for %zu samples", run->n_samples);
    }
    char path[PATH_MAX], name[300];
    snprintf(name, sizeof name, "servers_%s.dat", safe);
    FILE *f = open_data(dir, name, path, sizeof path, err);
    if (!f) {
        free(order), free(first);
        return KV_EIO;
    }
    sim_time t0 = run->n_samples ? run->samples[0].t : 0, t1 = t0;
    for (size_t i = 0; i < run->n_samples; i++) {
        t0 = run->samples[i].t < t0 ? run->samples[i].t : t0;
        t1 = run->samples[i].t > t1 ? run->samples[i].t : t1;
    }
    sim_time span = t1 - t0 + 1;
    fprintf(f, "# every sample, or per time bucket (%d over the run) the minima of its samples at the first's "
               "time then their maxima at the last's; runs.db has every sample\n",
            SERIES_BUCKETS);
    for (int s = 0; s < nservers; s++) {
        fprintf(f, "%s# server %d\n# t_s kv_usage_pct hit_rate_pct waiting running preemptions\n", s ? "\n\n" : "",
                s);
        series_bucket b = {0};
        int64_t cur = -1;
        for (size_t j = first[s]; j < first[s + 1]; j++) {
            const sim_server_sample *x = &run->samples[order[j]];
            int64_t k = (x->t - t0) * SERIES_BUCKETS / span;   /* 0 .. SERIES_BUCKETS - 1 */
            if (k != cur)
                bucket_flush(f, &b);
            cur = k;
            bucket_add(&b, x);
        }
        bucket_flush(f, &b);
        if (first[s] == first[s + 1])
            fprintf(f, "0 0 0 0 0 0\n");
    }
    free(order), free(first);
    return close_data(f, path, err);
}

static bool has_scripts(const char *dir)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/latency_vs_qps.gp", dir);
    return access(p, R_OK) == 0;
}

const char *const plots_overlay_names[4] = {"latency_vs_qps", "throughput_vs_qps", "throughput_vs_latency",
                                           "ttft_cdf"};

bool plots_find_scripts(const plots_opts *o, char *out, size_t cap)
{
    if (o && o->script_dir) {
        snprintf(out, cap, "%s", o->script_dir);
        return has_scripts(out);
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        snprintf(out, cap, "%s/plots", dirname(exe));
        if (has_scripts(out))
            return true;
    }
    snprintf(out, cap, "plots");
    return has_scripts(out);
}

int plots_run_gnuplot(const char *vars, const char *script, kv_err *err)
{
    return plots_run_gnuplot_batch(&vars, &script, 1, err);
}

/* One gnuplot process draws every chart: its start-up (cairo, pango, fontconfig) costs
 * more CPU than drawing a chart, so one process per chart dominated a run's charts.
 * gnuplot runs its -e commands and files in command-line order; "reset" before each
 * script drops the previous one's settings. Variables are not dropped (gnuplot 5.4 has
 * no "reset session"): the scripts in plots/ assign every variable they read except the
 * ones they default with exists() (svg, outdir), which every job must therefore set, so
 * each chart is drawn as if by its own process. */
int plots_run_gnuplot_batch(const char *const *vars, const char *const *scripts, size_t n, kv_err *err)
{
    char **argv = calloc(3 * n + 2, sizeof *argv), **cmds = calloc(n ? n : 1, sizeof *cmds);
    int rc = argv && cmds ? KV_OK : kv_err_set(err, KV_ENOMEM, "gnuplot: out of memory");
    size_t k = 0;
    if (rc == KV_OK)
        argv[k++] = "gnuplot";
    for (size_t i = 0; rc == KV_OK && i < n; i++) {
        if (asprintf(&cmds[i], "reset; %s", vars[i]) < 0) {
            cmds[i] = NULL;
            rc = kv_err_set(err, KV_ENOMEM, "gnuplot: out of memory");
            break;
        }
        argv[k++] = "-e";
        argv[k++] = cmds[i];
        argv[k++] = (char *)scripts[i];
    }
    pid_t pid;
    int src = rc == KV_OK ? posix_spawnp(&pid, "gnuplot", NULL, NULL, argv, environ) : 0;
    if (rc == KV_OK && src == ENOENT)
        rc = KV_ENOTFOUND;
    else if (rc == KV_OK && src != 0)
        rc = kv_err_set(err, KV_EIO, "gnuplot: cannot start: %s", strerror(src));
    int status = 0;
    while (rc == KV_OK && waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            rc = kv_err_set(err, KV_EIO, "gnuplot: wait failed: %s", strerror(errno));
    if (rc == KV_OK && WIFEXITED(status) && WEXITSTATUS(status) == 127)
        rc = KV_ENOTFOUND;
    else if (rc == KV_OK && (!WIFEXITED(status) || WEXITSTATUS(status) != 0))
        rc = kv_err_set(err, KV_EIO, "gnuplot %s%s failed (status %d)", n ? scripts[0] : "",
                        n > 1 ? " and the charts after it" : "", status);
    for (size_t i = 0; cmds && i < n; i++)
        free(cmds[i]);
    free(cmds), free(argv);
    return rc;
}

int plots_write(const sim_run *const *runs, const lc_run *const *m, size_t n, const char *dir, const plots_opts *o,
                kv_err *err)
{
    char cdir[PATH_MAX];
    if ((size_t)snprintf(cdir, sizeof cdir, "%s/charts", dir) >= sizeof cdir)
        return kv_err_set(err, KV_ERANGE, "plots: path too long: %s", dir);
    if (mkdir(cdir, 0777) != 0 && errno != EEXIST)
        return kv_err_set(err, KV_EIO, "%s: cannot create directory: %s", cdir, strerror(errno));

    char (*safe)[128] = calloc(n ? n : 1, sizeof *safe);
    int *nservers = calloc(n ? n : 1, sizeof *nservers);
    int rc = safe && nservers ? KV_OK : kv_err_set(err, KV_ENOMEM, "plots: out of memory");
    for (size_t r = 0; rc == KV_OK && r < n; r++) {
        safe_name(safe[r], sizeof safe[r], runs[r]->router);
        nservers[r] = sim_server_count(runs[r]);
        rc = write_servers(cdir, runs[r], safe[r], nservers[r], err);
    }
    if (rc == KV_OK)
        rc = write_stages(cdir, runs, m, n, err);
    if (rc == KV_OK)
        rc = write_ttft_cdf(cdir, runs, n, err);
    if (rc != KV_OK || !o || !o->run_gnuplot)
        goto out;

    char sdir[PATH_MAX];
    if (!plots_find_scripts(o, sdir, sizeof sdir)) {
        rc = kv_err_set(err, KV_ENOTFOUND, "plots: no gnuplot scripts (latency_vs_qps.gp) in %s", sdir);
        goto out;
    }
    /* Router words for the overlay titles, in order: word(routers, i). Every job names
     * svg and outdir, the variables the scripts default with exists(), since one gnuplot
     * process runs them all (plots_run_gnuplot_batch). */
    enum { NOVER = sizeof plots_overlay_names / sizeof *plots_overlay_names };
    size_t nsvg = o->svg_dir != NULL, njobs = NOVER * (1 + nsvg) + n;
    size_t vcap = 128 + n * 130 + 3 * PATH_MAX, scap = PATH_MAX + 64, nj = 0;
    char *words = malloc(n * 130 + 1), *buf = malloc(njobs * (vcap + scap));
    const char **vars = calloc(njobs, sizeof *vars), **scripts = calloc(njobs, sizeof *scripts);
    if (!words || !buf || !vars || !scripts) {
        free(words), free(buf), free(vars), free(scripts);
        rc = kv_err_set(err, KV_ENOMEM, "plots: out of memory");
        goto out;
    }
    words[0] = 0;
    for (size_t r = 0; r < n; r++) {
        if (r)
            strcat(words, " ");
        strcat(words, safe[r]);
    }
    for (size_t svg = 0; svg <= nsvg; svg++)
        for (size_t i = 0; i < NOVER; i++, nj++) {
            char *v = buf + nj * (vcap + scap), *sc = v + vcap;
            snprintf(v, vcap, "datadir='%s'; scriptdir='%s'; routers='%s'; nrouters=%zu; svg=%zu; outdir='%s'", cdir,
                     sdir, words, n, svg, svg ? o->svg_dir : cdir);
            snprintf(sc, scap, "%s/%s.gp", sdir, plots_overlay_names[i]);
            vars[nj] = v, scripts[nj] = sc;
        }
    for (size_t r = 0; r < n; r++) {
        if (!runs[r]->n_samples)
            continue;                 /* a live run has no per-server samples (gnuplot fails on none) */
        char *v = buf + nj * (vcap + scap), *sc = v + vcap;
        snprintf(v, vcap, "datadir='%s'; scriptdir='%s'; router='%s'; nservers=%d; svg=0; outdir='%s'", cdir, sdir,
                 safe[r], nservers[r], cdir);
        snprintf(sc, scap, "%s/server_timeseries.gp", sdir);
        vars[nj] = v, scripts[nj++] = sc;
    }
    rc = plots_run_gnuplot_batch(vars, scripts, nj, err);
    free(words), free(buf), free(vars), free(scripts);
    if (rc == KV_ENOTFOUND) {
        fprintf(stderr, "sim: gnuplot not found on PATH; chart data written to %s (.dat files)\n", cdir);
        rc = KV_OK;
    }
out:
    free(safe);
    free(nservers);
    return rc;
}
