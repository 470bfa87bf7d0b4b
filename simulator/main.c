/* ./sim: run a scenario — every router over the same simulated cluster and workload —
 * and write inference-perf's reports, the llm-d benchmark report, runs.db and charts,
 * then print the guide's comparison table.
 *
 *   ./sim SCENARIO [--out DIR] [--seed N] [--router NAME]... [--no-plots] [--quiet] [--progress]
 *                  [--junit FILE] [--baseline OLD/runs.db] [--models DIR] [--hardware-dir DIR] [--jobs N]
 * A scenario with sweep: or plan: runs those instead of the one comparison (sweep.h).
 *   ./sim SCENARIO --target URL | --live [--target-label NAME] [--target-pods LIST] [--timeout S] [...]
 *                                      the workload sent to a live endpoint (liverun.c)
 *   ./sim serve [SCENARIO] [flags]     emulated vLLM pods in real time (serve.c)
 *   ./sim compare SCENARIO [--out DIR] the sim-versus-live table from DIR/runs.db (compare.c)
 *
 * Exit status: 0 done; 1 a runtime failure (message on stderr), or a live run with failed
 * requests (the outputs are written all the same); 2 bad usage or a bad
 * scenario (the message names the file, line, column and field), or one whose estimated
 * memory exceeds what the machine has available (the message names the stage); 3 the run
 * completed but a check of the scenario's expect: section or of --baseline failed. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cluster.h"
#include "compare.h"
#include "console.h"
#include "expect.h"
#include "htmlreport.h"
#include "hugepage.h"
#include "lifecycle.h"
#include "liverun.h"
#include "monoclock.h"
#include "plots.h"
#include "report.h"
#include "scenario.h"
#include "serve.h"
#include "simdb.h"
#include "sweep.h"
#include "workload.h"

typedef struct opts {
    const char *scenario;
    const char *out;
    bool has_seed;
    uint64_t seed;
    bool no_plots, quiet, progress;
    const char *junit, *baseline;     /* --junit FILE, --baseline OLD/runs.db */
    const char *models, *hardware;    /* --models DIR, --hardware-dir DIR */
    unsigned jobs;                    /* --jobs N: sweep and plan processes (0: one per CPU) */
    const char *only[16];             /* --router: run only these (scenario order kept) */
    size_t n_only;
    bool live;                        /* --live or --target: against workload.server / the URL */
    const char *target, *target_label, *target_pods;
    double timeout_s;
} opts;

static void usage(FILE *f)
{
    fprintf(f, "usage: sim SCENARIO [--out DIR] [--seed N] [--router NAME]... [--no-plots] [--quiet] [--progress]\n"
               "                [--junit FILE] [--baseline OLD/runs.db] [--models DIR] [--hardware-dir DIR] [--jobs N]\n"
               "       sim serve [SCENARIO] [flags]   (emulated vLLM pods; sim serve --help)\n"
               "       sim compare SCENARIO [--out DIR]   (simulated vs live runs in DIR/runs.db)\n"
               "  Runs every router of SCENARIO over the same simulated vLLM cluster and workload; a scenario\n"
               "  with sweep: or plan: runs its grid of points or its capacity search instead.\n"
               "  --out DIR    where to write (default runs/<scenario name>/)\n"
               "  --seed N     override the scenario's seed\n"
               "  --router R   run only router R (repeatable; default all)\n"
               "  --no-plots   write chart data but do not run gnuplot\n"
               "  --quiet      print only the comparison table (and no progress line)\n"
               "  --progress   the progress line on stderr even when it is not a terminal\n"
               "  --target URL send the workload to this OpenAI-compatible endpoint in real time\n"
               "  --live       the same, to the workload's server.base_url (inference-perf's server section)\n"
               "  --target-label NAME  the live run's router name in the outputs (default host:port)\n"
               "  --target-pods LIST   the pods behind the target (host:port,...): their /metrics prefix-cache\n"
               "               counters over the run, and which one served each request\n"
               "  --timeout S  a live request's limit in seconds (default 300)\n"
               "  --junit F    write the expect: and --baseline results as JUnit XML to F\n"
               "  --baseline D also check no metric is worse than in D (an earlier runs.db)\n"
               "  --models DIR look for cluster.model's profile (NAME.yaml) in DIR after the scenario's own\n"
               "               models/ folder and before the tree's models/\n"
               "  --hardware-dir DIR  the same for cluster.hardware (hardware/)\n"
               "  --jobs N     a sweep's or plan's points run N processes at a time (default one per CPU)\n"
               "  Exit status: 0 done, 1 runtime failure or failed live requests, 2 bad usage or scenario,\n"
               "  3 an expect: or --baseline check failed.\n");
}

static int parse_args(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof *o);
    o->timeout_s = 300;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--out") == 0 && i + 1 < argc) {
            o->out = argv[++i];
        } else if (strcmp(a, "--seed") == 0 && i + 1 < argc) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(argv[++i], &end, 10);
            if (errno || *end || argv[i][0] == '-' || !argv[i][0]) {
                fprintf(stderr, "sim: --seed: '%s' is not a non-negative integer\n", argv[i]);
                return 2;
            }
            o->has_seed = true;
            o->seed = v;
        } else if (strcmp(a, "--junit") == 0 && i + 1 < argc) {
            o->junit = argv[++i];
        } else if (strcmp(a, "--baseline") == 0 && i + 1 < argc) {
            o->baseline = argv[++i];
        } else if (strcmp(a, "--jobs") == 0 && i + 1 < argc) {
            char *end;
            unsigned long v = strtoul(argv[++i], &end, 10);
            if (*end || !v || v > 1024 || argv[i][0] == '-') {
                fprintf(stderr, "sim: --jobs: '%s' is not a count in [1, 1024]\n", argv[i]);
                return 2;
            }
            o->jobs = (unsigned)v;
        } else if (strcmp(a, "--models") == 0 && i + 1 < argc) {
            o->models = argv[++i];
        } else if (strcmp(a, "--hardware-dir") == 0 && i + 1 < argc) {
            o->hardware = argv[++i];
        } else if (strcmp(a, "--no-plots") == 0) {
            o->no_plots = true;
        } else if (strcmp(a, "--router") == 0 && i + 1 < argc) {
            if (o->n_only == sizeof o->only / sizeof *o->only) {
                fprintf(stderr, "sim: too many --router options\n");
                return 2;
            }
            o->only[o->n_only++] = argv[++i];
        } else if (strcmp(a, "--target") == 0 && i + 1 < argc) {
            o->target = argv[++i];
            o->live = true;
        } else if (strcmp(a, "--target-label") == 0 && i + 1 < argc) {
            o->target_label = argv[++i];
        } else if (strcmp(a, "--target-pods") == 0 && i + 1 < argc) {
            o->target_pods = argv[++i];
        } else if (strcmp(a, "--live") == 0) {
            o->live = true;
        } else if (strcmp(a, "--timeout") == 0 && i + 1 < argc) {
            char *end;
            o->timeout_s = strtod(argv[++i], &end);
            if (*end || !(o->timeout_s > 0 && o->timeout_s <= 86400)) {
                fprintf(stderr, "sim: --timeout: '%s' is not a number of seconds in (0, 86400]\n", argv[i]);
                return 2;
            }
        } else if (strcmp(a, "--quiet") == 0) {
            o->quiet = true;
        } else if (strcmp(a, "--progress") == 0) {
            o->progress = true;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (a[0] == '-' || o->scenario) {
            fprintf(stderr, "sim: unexpected argument '%s'\n", a);
            usage(stderr);
            return 2;
        } else {
            o->scenario = a;
        }
    }
    if (!o->scenario) {
        usage(stderr);
        return 2;
    }
    if (o->live && o->n_only) {
        fprintf(stderr, "sim: --router selects simulated routers; a live run has one, its target\n");
        return 2;
    }
    if ((o->target_label || o->target_pods) && !o->live) {
        fprintf(stderr, "sim: --target-label and --target-pods need --target or --live\n");
        return 2;
    }
    return 0;
}

/* The tree: the folder holding policies/presets, models/ and hardware/, beside the
 * executable (the repository layout), or the current directory. */
static void tree_dir(char *out, size_t cap)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            /* build/rel/bin/sim and ./sim both sit inside the repository */
            const char *ups[] = {"", "/../../.."};
            for (size_t i = 0; i < 2; i++) {
                snprintf(out, cap, "%s%s/policies/presets", exe, ups[i]);
                struct stat st;
                if (stat(out, &st) == 0 && S_ISDIR(st.st_mode)) {
                    snprintf(out, cap, "%s%s", exe, ups[i]);
                    return;
                }
            }
        }
    }
    snprintf(out, cap, ".");
}

static int mkdirs(const char *path, kv_err *err)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return kv_err_set(err, KV_ERANGE, "%s: path too long", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || !*p) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0777) && errno != EEXIST)
                return kv_err_set(err, KV_EIO, "%s: %s", buf, strerror(errno));
            *p = c;
            if (!c)
                break;
        }
    }
    return KV_OK;
}

/* --router: drops the scenario's other routers (their configs are freed). */
static int keep_routers(scenario *s, const char *const *only, size_t n_only)
{
    for (size_t k = 0; k < n_only; k++) {
        size_t i = 0;
        while (i < s->n_routers && strcmp(s->routers[i].name, only[k]) != 0)
            i++;
        if (i == s->n_routers) {
            fprintf(stderr, "sim: --router %s: the scenario has no such router (", only[k]);
            for (size_t j = 0; j < s->n_routers; j++)
                fprintf(stderr, "%s%s", j ? ", " : "", s->routers[j].name);
            fprintf(stderr, ")\n");
            return 2;
        }
    }
    size_t kept = 0;
    for (size_t i = 0; i < s->n_routers; i++) {
        bool keep = false;
        for (size_t k = 0; k < n_only; k++)
            keep |= strcmp(s->routers[i].name, only[k]) == 0;
        if (keep) {
            s->routers[kept++] = s->routers[i];
        } else {
            epc_free(s->routers[i].cfg);
            free(s->routers[i].source);
        }
    }
    s->n_routers = kept;
    return 0;
}

/* The progress line on stderr (console_progress), redrawn at most 5 times a wall
 * second. Off by default when stderr is not a terminal, so logs and test outputs
 * stay byte-identical from run to run. */
typedef struct progress {
    bool on;
    const char *router;
    double t0, last;                  /* wall seconds: the run's start, the last redraw */
} progress;

/* /proc/meminfo's MemAvailable in bytes; 0 when it cannot be read (no check then). */
static uint64_t mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f) && sscanf(line, "MemAvailable: %llu kB", &kb) != 1)
        ;
    fclose(f);
    return (uint64_t)kb * 1024;
}

/* Refuses, before anything is built, a scenario whose requests the machine cannot hold:
 * stage by stage, the requests so far times cluster_request_bytes against MemAvailable.
 * A trace's size is known only once read (its rows are its file's size, no more). */
static int check_memory(const scenario *s, uint64_t avail, kv_err *err)
{
    const wl_spec *w = &s->workload;
    if (!avail || w->data == WL_DATA_TRACE)
        return KV_OK;
    /* random output lengths: the distribution's largest, as an upper bound */
    uint32_t out = w->data == WL_DATA_SHARED_PREFIX ? w->sp.output_len : (uint32_t)w->output.max;
    uint64_t per = cluster_request_bytes(s, out), total = 0;
    for (size_t i = 0; i < w->n_stages; i++) {
        total += (uint64_t)w->stages[i].num_requests * per;
        if (total > avail)
            return kv_err_set(err, KV_ERANGE,
                              "%s: field 'workload.load.stages[%zu]' (%u requests): the run would need about %.1f GiB "
                              "(%llu bytes per request of %u output tokens, %zu router%s), more than the %.1f GiB this "
                              "machine has available (MemAvailable)",
                              s->path, i, w->stages[i].num_requests, (double)total / (1u << 30), (unsigned long long)per,
                              out, s->n_routers, s->n_routers == 1 ? "" : "s", (double)avail / (1u << 30));
    }
    return KV_OK;
}

static void progress_cb(void *ctx, const cluster_progress *c)
{
    progress *p = ctx;
    double now = monoclock_s();
    if (!p->on || (now - p->last < 0.2 && c->completed < c->total))
        return;
    p->last = now;
    console_progress(stderr, p->router, c, now - p->t0);
    fflush(stderr);
}

typedef struct decisions {
    simdb *db;
    int64_t run_id;
} decisions;

static int decision_cb(void *ctx, uint64_t id, const sched_trace *t, const sched_result *res, kv_err *err)
{
    decisions *d = ctx;
    return simdb_add_decision(d->db, d->run_id, id, t, res, err);
}

static void warn_cb(void *ctx, const char *msg)
{
    const char *router = ctx;
    fprintf(stderr, "sim: router '%s': warning: %s\n", router, msg);
}

/* expect: and --baseline after the run over n routers (a live run: one, named live_label;
 * the scenario's checks on its simulated routers are then skipped); *failed counts the
 * checks that failed. */
static int check_expect(const scenario *s, const opts *o, const char *live_label, const lc_run *lcs, size_t n,
                        FILE *out, size_t *failed, kv_err *err)
{
    const char **names = malloc(n * sizeof *names);
    if (!names)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        names[i] = live_label ? live_label : s->routers[i].name;
    int rc = exp_check_run(&s->expect, o->baseline, o->junit, s->name, names, lcs, n, out, failed, err);
    free(names);
    return rc;
}

/* Text a printer writes, kept to be shown again in report.html. */
typedef struct capture {
    FILE *f;
    char *buf;
    size_t len;
} capture;

static bool capture_begin(capture *c)
{
    *c = (capture){0};
    return (c->f = open_memstream(&c->buf, &c->len)) != NULL;
}

/* The text (the caller frees it); NULL when the stream failed. */
static char *capture_end(capture *c)
{
    if (fclose(c->f) != 0) {
        free(c->buf);
        return NULL;
    }
    return c->buf;
}

/* A fresh folder for report.html's SVG charts under $TMPDIR (default /tmp); NULL when
 * none can be made (the report then says the charts were not drawn). */
static const char *scratch_dir(char *buf, size_t cap)
{
    const char *t = getenv("TMPDIR");
    snprintf(buf, cap, "%s/sim-report.XXXXXX", t && *t ? t : "/tmp");
    return mkdtemp(buf);
}

/* Removes report.html's scratch SVG folder and its charts. */
static void remove_svgs(const char *dir, const char *const *names, size_t n)
{
    if (!dir)
        return;
    char p[PATH_MAX + 128];
    for (size_t i = 0; i < n; i++) {
        snprintf(p, sizeof p, "%s/%s.svg", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
}

/* ./sim compare SCENARIO [--out DIR]: exit 0, 1 when a router lacks its simulated or live
 * run (or the database cannot be read), 2 bad usage or scenario. */
static int compare_main(int argc, char **argv, const scn_dirs *dirs)
{
    const char *scn = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
            out = argv[++i];
        } else if (argv[i][0] == '-' || scn) {
            fprintf(stderr, "sim compare: unexpected argument '%s'\nusage: sim compare SCENARIO [--out DIR]\n", argv[i]);
            return 2;
        } else {
            scn = argv[i];
        }
    }
    if (!scn) {
        fprintf(stderr, "usage: sim compare SCENARIO [--out DIR]\n");
        return 2;
    }
    kv_err err = {0};
    scenario *s = scn_load_in(scn, dirs, &err);
    if (!s) {
        fprintf(stderr, "sim compare: %s\n", err.msg);
        return 2;
    }
    char path[PATH_MAX + 16];
    if (out)
        snprintf(path, sizeof path, "%s/runs.db", out);
    else
        snprintf(path, sizeof path, "runs/%s/runs.db", s->name);
    int rc = compare_print(stdout, s, path, &err);
    if (rc)
        fprintf(stderr, "sim compare: %s\n", err.msg);
    scn_free(s);
    return rc ? 1 : 0;
}

/* A scenario with sweep: or plan: (sweep.h): its points instead of the one comparison. */
static int run_sweep(scenario *s, const opts *o)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, o->out ? "%s" : "runs/%s", o->out ? o->out : s->name);
    kv_err err = {0};
    int rc = mkdirs(dir, &err);
    const scn_cluster *k = &s->cluster;
    char header[1024];
    snprintf(header, sizeof header, "%s: %u x %s on %s, TP=%d, block %u; seed %llu", s->name, k->replicas,
             k->model->hf_name, k->hw->name, k->tp, k->block_size, (unsigned long long)s->seed);
    if (!rc && !o->quiet)
        printf("%s\n", header);
    bool draw = !o->no_plots && s->outputs.plots;
    char svg_tmp[PATH_MAX];
    const char *svg_dir = !rc && draw && s->sweep.on ? scratch_dir(svg_tmp, sizeof svg_tmp) : NULL;
    static const char *const chart[] = {"sweep"};
    capture cap;
    char *text = NULL;
    if (!rc && !capture_begin(&cap))
        rc = kv_err_set(&err, KV_ENOMEM, "out of memory");
    else if (!rc) {
        rc = sweep_main(s, dir, o->jobs, draw, svg_dir, cap.f, &err);
        text = capture_end(&cap);
        fputs(text ? text : "", stdout);
    }
    if (!rc) {
        hr_parts hp = {.header = header, .sweep = text, .svg_dir = svg_dir, .charts = chart,
                       .n_charts = s->sweep.on && s->outputs.plots};
        char path[PATH_MAX + 16];
        snprintf(path, sizeof path, "%s/report.html", dir);
        rc = hr_write(s, path, &hp, &err);
    }
    remove_svgs(svg_dir, chart, 1);
    free(text);
    if (!rc && !o->quiet)
        printf("\nwrote %s/ (%s%s%s, report.html)\n", dir, s->sweep.on ? "sweep.csv, charts/sweep.dat" : "",
               s->sweep.on && s->plan.on ? ", " : "", s->plan.on ? "plan.txt" : "");
    if (rc)
        fprintf(stderr, "sim: %s\n", err.msg);
    scn_free(s);
    return rc ? 1 : 0;
}

/* The pods behind a live target: the prefix-cache hit rate their counters measured over
 * the run, and the requests each served. */
static void live_pods_line(FILE *f, const live_stats *st)
{
    if (!st->n_pods)
        return;
    double q = 0, h = 0;
    bool all = true;
    for (size_t i = 0; i < st->n_pods; i++)
        all &= st->pods[i].counters_ok, q += st->pods[i].prefix_cache_queries, h += st->pods[i].prefix_cache_hits;
    if (all)
        fprintf(f, "pods' prefix cache: %.0f of %.0f prompt tokens hit (%.1f%%); routed", h, q, q > 0 ? 100 * h / q : 0);
    else
        fprintf(f, "pods' prefix cache: not measured (a pod's counters were not read, see stderr); routed");
    for (size_t i = 0; i < st->n_pods; i++)
        fprintf(f, "%s %s %llu", i ? "," : "", st->pods[i].address, (unsigned long long)st->pods[i].routed);
    fputc('\n', f);
}

int main(int argc, char **argv)
{
    hugepage_heap(argv);   /* may re-run this program (hugepage.h) */
    char tree[PATH_MAX], presets[PATH_MAX + 32], models[PATH_MAX + 32], hardware[PATH_MAX + 32];
    tree_dir(tree, sizeof tree);
    snprintf(presets, sizeof presets, "%s/policies/presets", tree);
    snprintf(models, sizeof models, "%s/models", tree);
    snprintf(hardware, sizeof hardware, "%s/hardware", tree);
    scn_dirs dirs = {.presets = presets, .models = models, .hardware = hardware};
    if (argc > 1 && strcmp(argv[1], "serve") == 0)
        return serve_main(argc - 1, argv + 1, &dirs);
    if (argc > 1 && strcmp(argv[1], "compare") == 0)
        return compare_main(argc - 1, argv + 1, &dirs);
    opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc;
    dirs.user_models = o.models;
    dirs.user_hardware = o.hardware;
    kv_err err = {0};
    scenario *s = scn_load_in(o.scenario, &dirs, &err);
    if (!s) {
        fprintf(stderr, "sim: %s\n", err.msg);
        return 2;
    }
    if (o.has_seed)
        s->seed = o.seed;
    if (o.n_only && (rc = keep_routers(s, o.only, o.n_only))) {
        scn_free(s);
        return rc;
    }
    if (check_memory(s, mem_available(), &err)) {
        fprintf(stderr, "sim: %s\n", err.msg);
        scn_free(s);
        return 2;
    }
    FILE *con = o.quiet ? NULL : stdout;
    for (size_t i = 0; con && i < s->n_notes; i++)
        fprintf(stderr, "sim: note: %s\n", s->notes[i]);
    if ((s->sweep.on || s->plan.on) && !o.live)
        return run_sweep(s, &o);

    live_target lt = {0};
    if (o.live && live_target_resolve(s, o.target, o.target_label, o.target_pods, &lt, &err)) {
        fprintf(stderr, "sim: %s\n", err.msg);
        scn_free(s);
        return 2;
    }
    workload *w = wl_build(&s->workload, s->seed, &err);
    if (!w) {
        fprintf(stderr, "sim: %s\n", err.msg);
        live_target_free(&lt);
        scn_free(s);
        return 1;
    }
    char dir[PATH_MAX];
    if (o.out)
        snprintf(dir, sizeof dir, "%s", o.out);
    else
        snprintf(dir, sizeof dir, "runs/%s", s->name);
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/runs.db", dir);
    simdb *db = NULL;
    size_t n = o.live ? 1 : s->n_routers;
    live_stats lst = {0};
    sim_run *runs = calloc(n, sizeof *runs);
    lc_run *lcs = calloc(n, sizeof *lcs);
    size_t done = 0;
    rc = runs && lcs ? KV_OK : kv_err_set(&err, KV_ENOMEM, "out of memory");
    if (!rc && !(rc = mkdirs(dir, &err)))
        db = o.live ? simdb_open_append(path, &err) : simdb_open(path, &err), rc = db ? KV_OK : err.code;
    char header[1024] = "";
    if (o.live)
        snprintf(header, sizeof header, "%s: live against %s (model %s); %llu requests in %zu stage%s (%s, %s); "
                 "seed %llu", s->name, lt.url, lt.model, (unsigned long long)wl_total_requests(w), w->n_stages,
                 w->n_stages == 1 ? "" : "s", wl_data_type_name(s->workload.data),
                 wl_load_type_name(s->workload.load), (unsigned long long)s->seed);
    else
        snprintf(header, sizeof header, "%s: %u x %s on %s, TP=%d, block %u; %llu requests in %zu stage%s (%s, %s); "
                 "seed %llu", s->name, s->cluster.replicas, s->cluster.model->hf_name, s->cluster.hw->name,
                 s->cluster.tp, s->cluster.block_size, (unsigned long long)wl_total_requests(w), w->n_stages,
                 w->n_stages == 1 ? "" : "s", wl_data_type_name(s->workload.data),
                 wl_load_type_name(s->workload.load), (unsigned long long)s->seed);
    if (!rc && con)
        fprintf(con, "%s\n", header);
    for (size_t r = 0; !rc && r < n; r++) {
        const scn_router *ro = o.live ? &(scn_router){.name = lt.label, .source = lt.url} : &s->routers[r];
        simdb_run_info info = {.scenario = s->name, .router = ro->name, .config = ro->source, .seed = s->seed};
        decisions dc = {.db = db};
        if ((rc = simdb_begin_run(db, &info, &dc.run_id, &err)))
            break;
        progress pr = {.on = con && (o.progress || isatty(STDERR_FILENO)), .router = ro->name, .t0 = monoclock_s()};
        cluster_opts co = {.progress = progress_cb, .progress_ctx = &pr, .warn = warn_cb, .warn_ctx = (void *)ro->name};
        if (s->outputs.decisions != SCN_DECISIONS_NONE) {
            co.decision = decision_cb;
            co.decision_ctx = &dc;
        }
        cluster_stats st;
        live_opts lo = {.timeout_s = o.timeout_s, .progress = con != NULL};
        rc = o.live ? live_run(s, w, &lt, &lo, &runs[r], &lst, &err) : cluster_run(s, w, r, &co, &runs[r], &st, &err);
        if (pr.on)
            fprintf(stderr, "\r%*s\r", 120, "");
        if (rc)
            break;
        done = r + 1;
        if ((rc = lc_run_compute(&runs[r], &lcs[r], &err)))
            break;
        report_opts ro_opts;
        report_opts_default(&ro_opts);
        ro_opts.per_request = s->outputs.per_request;
        ro_opts.token_times = s->outputs.token_times;
        ro_opts.model_name = s->cluster.model->hf_name;
        ro_opts.description = s->name;
        ro_opts.load_args = s->workload_node;
        char rdir[PATH_MAX + 64];
        snprintf(rdir, sizeof rdir, "%s/%s", dir, ro->name);
        for (size_t p = 0; !rc && p < lst.n_pods; p++)
            rc = simdb_add_live_pod(db, dc.run_id, &lst.pods[p], &err);
        if (rc || (rc = report_write_router(&runs[r], &lcs[r], rdir, &ro_opts, &err)) ||
            (rc = simdb_end_run(db, dc.run_id, &runs[r], &lcs[r], &err)))
            break;
        if (con && o.live) {
            fprintf(con, "\n%s (%s): %llu requests, %llu completed, %llu failed (", ro->name, ro->source,
                    (unsigned long long)lst.sent, (unsigned long long)lst.completed, (unsigned long long)lst.failed);
            for (int f = 0; f < LIVE_FAIL_N; f++)
                fprintf(con, "%s%s %llu", f ? ", " : "", live_fail_name(f), (unsigned long long)lst.failed_by[f]);
            fprintf(con, "); %.2f s\n", runs[r].wall_seconds);
            live_pods_line(con, &lst);
            console_stage_lines(con, ro->name, &lcs[r]);
        } else if (con) {
            char kv[96];
            if (st.kv_published)
                snprintf(kv, sizeof kv, "KV events: %llu delivered in %llu batches", (unsigned long long)st.kv_events_delivered,
                         (unsigned long long)st.kv_batches);
            else
                snprintf(kv, sizeof kv, "KV events: not published (the router has no kvsource)");
            char cascade[64] = "";
            if (s->cluster.cascade_attention)
                snprintf(cascade, sizeof cascade, "; %llu of %llu steps cascade", (unsigned long long)st.cascade_steps,
                         (unsigned long long)st.steps);
            fprintf(con, "\n%s (%s): %llu requests, %llu failed, %llu preemptions; %s; %llu KV blocks/replica%s; "
                         "%.1f s simulated in %.2f s\n",
                    ro->name, ro->source, (unsigned long long)runs[r].n_requests, (unsigned long long)st.failed,
                    (unsigned long long)st.preemptions, kv, (unsigned long long)st.num_gpu_blocks, cascade,
                    (double)st.sim_end_us / 1e6, runs[r].wall_seconds);
            console_stage_lines(con, ro->name, &lcs[r]);
        }
    }
    /* report.html's charts: SVG drawn into a scratch folder, inlined, removed */
    char svg_tmp[PATH_MAX];
    const char *svg_dir = !rc && s->outputs.plots && !o.no_plots ? scratch_dir(svg_tmp, sizeof svg_tmp) : NULL;
    if (!rc && (s->outputs.plots || o.no_plots)) {
        const sim_run **rp = malloc(n * sizeof *rp);
        const lc_run **lp = malloc(n * sizeof *lp);
        if (!rp || !lp) {
            rc = kv_err_set(&err, KV_ENOMEM, "out of memory");
        } else {
            for (size_t i = 0; i < n; i++)
                rp[i] = &runs[i], lp[i] = &lcs[i];
            plots_opts po = {.run_gnuplot = !o.no_plots, .svg_dir = svg_dir};
            rc = plots_write(rp, lp, n, dir, &po, &err);
        }
        free(rp);
        free(lp);
    }
    const char **names = calloc(n ? n : 1, sizeof *names);
    if (!rc && !names)
        rc = kv_err_set(&err, KV_ENOMEM, "out of memory");
    for (size_t i = 0; names && i < n; i++)
        names[i] = o.live ? lt.label : s->routers[i].name;
    char *compare = NULL, *expect = NULL;
    if (!rc && n >= 2) {
        const lc_run **lp = malloc(n * sizeof *lp);
        capture cap;
        if (lp && capture_begin(&cap)) {
            for (size_t i = 0; i < n; i++)
                lp[i] = &lcs[i];
            console_compare(cap.f, names, lp, n, s->outputs.report_stage);
            compare = capture_end(&cap);
            printf("\n%s", compare ? compare : "");
        }
        free(lp);
    }
    if (!rc && con)
        fprintf(con, "\nwrote %s/ (per-router reports, runs.db, charts, report.html)\n", dir);
    size_t failed = 0;
    capture cap;
    if (!rc && (s->expect.n || o.baseline || o.junit)) {
        if (!capture_begin(&cap))
            rc = kv_err_set(&err, KV_ENOMEM, "out of memory");
        else {
            rc = check_expect(s, &o, o.live ? lt.label : NULL, lcs, n, cap.f, &failed, &err);
            expect = capture_end(&cap);
            fputs(expect ? expect : "", stdout);
        }
    }
    if (!rc) {
        hr_parts hp = {.header = header, .names = names, .lcs = lcs, .n = done, .compare = compare,
                       .expect = expect, .svg_dir = svg_dir, .charts = plots_overlay_names,
                       .n_charts = s->outputs.plots ? 4 : 0, .all_runs = o.live ? db : NULL};
        snprintf(path, sizeof path, "%s/report.html", dir);
        rc = hr_write(s, path, &hp, &err);
    }
    remove_svgs(svg_dir, plots_overlay_names, 4);
    free(compare);
    free(expect);
    free(names);
    if (rc)
        fprintf(stderr, "sim: %s\n", err.msg);
    else if (lst.failed)
        fprintf(stderr, "sim: %llu of %llu requests to %s failed\n", (unsigned long long)lst.failed,
                (unsigned long long)lst.sent, lt.url);
    for (size_t i = 0; i < done; i++) {
        lc_run_free(&lcs[i]);
        if (o.live)
            live_run_free(&runs[i]);
        else
            cluster_run_free(&runs[i]);
    }
    live_stats_free(&lst);
    live_target_free(&lt);
    free(runs);
    free(lcs);
    simdb_close(db);
    wl_free(w);
    scn_free(s);
    return rc || lst.failed ? 1 : failed ? 3 : 0;
}
