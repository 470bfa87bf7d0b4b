/* bench_serve: ./sim serve against the wall clock. Starts `./sim serve` with the guide's
 * cluster (8 x Qwen3-32B, tests/data/scenarios/serve-bench.yaml) at --speedup 1, sends
 * the guide's workload shape at rate 15 for 20 s (inference-perf's poisson timer,
 * shared_prefix 6000 + 1200 prompt tokens, 1000 output tokens) round robin over the
 * pods, streamed, and measures as a client does: TTFT at the first chunk, end to end at
 * the response's end.
 *
 * Rows: the emulator's CPU (user + system time of the ./sim serve process over the run,
 * as a fraction of one core) with the output tokens per second it served; and its
 * timing error against the simulator's replica model fed the same requests at the
 * same send times per pod (simsrv stepped in simulated time, no clock): per request,
 * |measured - simulated| / simulated for TTFT and end to end, median and p99. Targets
 * (issue 12): under half a core; median error under 2 %, p99 under 10 %, on an idle
 * machine. The load average is printed: on a busy host the emulator gets at most
 * cores / runnable tasks of a core, and once its steps cannot keep up with the wall
 * clock, their lateness (and the timing error) is the neighbours' as much as its own.
 * BENCH_SERVE_SCENARIO=FILE runs another scenario; BENCH_SERVE_DUMP=1 prints each
 * request's measured and simulated times on stderr. */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "scenario.h"
#include "server.h"
#include "stats.h"
#include "workload.h"

#define SCENARIO "tests/data/scenarios/serve-bench.yaml"
#define BASE_PORT 18700
#define CPU_TARGET 0.5
#define MEDIAN_TARGET 0.02
#define P99_TARGET 0.10

extern char **environ;

typedef struct breq {
    uint32_t pod;
    wl_req w;
    int64_t t_send, t_first, t_end;   /* monotonic us; 0 = not yet */
    uint32_t chunks;
    bool failed;
    struct evhttp_connection *con;
} breq;

typedef struct bench {
    struct event_base *base;
    breq *r;
    size_t n, done;
    uint32_t pods;
    const char *model;
} bench;

static int64_t mono_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static void row(const char *name, const char *measured, const char *target, bool pass)
{
    printf("| %-58s | %-56s | %-14s | %-4s |\n", name, measured, target, pass ? "PASS" : "MISS");
}

/* user + system seconds of process pid (system alone in *sys when not NULL) */
static double proc_cpu_s(pid_t pid, double *sys)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return NAN;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');   /* the command name may hold spaces */
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) return NAN;
    if (sys) *sys = (double)st / (double)sysconf(_SC_CLK_TCK);
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* --- the client ------------------------------------------------------------------------- */

typedef struct sendctx {
    bench *b;
    size_t i;
} sendctx;

static void on_chunk(struct evhttp_request *req, void *arg)
{
    sendctx *c = arg;
    breq *r = &c->b->r[c->i];
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len && !r->t_first) r->t_first = mono_us();
    const char *p = (const char *)evbuffer_pullup(in, -1);
    for (size_t i = 0; p && i + 6 <= len; i++)
        if (!memcmp(p + i, "data: ", 6)) r->chunks++;
    evbuffer_drain(in, len);
}

static void finished(bench *b)
{
    if (++b->done == b->n) event_base_loopbreak(b->base);
}

static void on_done(struct evhttp_request *req, void *arg)
{
    sendctx *c = arg;
    breq *r = &c->b->r[c->i];
    r->t_end = mono_us();
    /* every token's chunk, the usage-less end and [DONE]: at least n_output + 1 events */
    r->failed = !req || evhttp_request_get_response_code(req) != 200 || r->chunks < r->w.n_output + 1;
    finished(c->b);
}

static void send_one(evutil_socket_t fd, short what, void *arg)
{
    sendctx *c = arg;
    bench *b = c->b;
    breq *r = &b->r[c->i];
    struct evbuffer *body = evbuffer_new();
    evbuffer_add_printf(body, "{\"model\":\"%s\",\"stream\":true,\"ignore_eos\":true,\"max_tokens\":%u,\"prompt\":[",
                        b->model, r->w.n_output);
    for (uint32_t k = 0; k < r->w.n_prompt; k++) evbuffer_add_printf(body, k ? ",%u" : "%u", r->w.tokens[k]);
    evbuffer_add(body, "]}", 2);
    r->con = evhttp_connection_base_new(b->base, NULL, "127.0.0.1", (uint16_t)(BASE_PORT + r->pod));
    evhttp_connection_set_timeout(r->con, 3600);
    struct evhttp_request *req = evhttp_request_new(on_done, c);   /* both callbacks get c */
    evhttp_request_set_chunked_cb(req, on_chunk);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", "127.0.0.1");
    evhttp_add_header(h, "Content-Type", "application/json");
    evbuffer_add_buffer(evhttp_request_get_output_buffer(req), body);
    evbuffer_free(body);
    r->t_send = mono_us();
    if (evhttp_make_request(r->con, req, EVHTTP_REQ_POST, "/v1/completions") != 0) {
        r->failed = true;
        r->t_end = r->t_send;
        finished(b);
    }
}

/* --- the reference: the same requests through simsrv in simulated time ------------------ */

typedef struct sref {
    simsrv_req sr;
    breq *b;
    int64_t first, end;               /* simulated us since the pod's first send */
} sref;

static int cmp_send(const void *a, const void *b)
{
    const sref *x = a, *y = b;
    return x->b->t_send < y->b->t_send ? -1 : x->b->t_send > y->b->t_send;
}

/* Steps one pod's model over its requests (sorted by send time) as the emulator does:
 * a step starts when the previous ends or, idle, at the next arrival. */
static int simulate_pod(const scn_cluster *k, sref *q, size_t n, kv_err *err)
{
    simsrv_config sc = {.model = k->model, .hw = k->hw, .tp = k->tp, .block_size = k->block_size,
                        .num_gpu_blocks = k->num_gpu_blocks, .prefix_caching = true};
    simsrv *s = simsrv_new(&sc, err);
    if (!s) return err->code;
    qsort(q, n, sizeof *q, cmp_send);
    int64_t now = n ? q[0].b->t_send : 0;
    size_t next = 0, left = n;
    while (left) {
        while (next < n && q[next].b->t_send <= now) {
            q[next].sr = (simsrv_req){.id = next, .tokens = q[next].b->w.tokens, .n_prompt = q[next].b->w.n_prompt,
                                      .n_output = q[next].b->w.n_output, .user = &q[next]};
            if (simsrv_submit(s, &q[next].sr) != KV_OK) left--;   /* unservable: no reference */
            next++;
        }
        simsrv_step_result res;
        if (!simsrv_has_work(s)) {
            if (next < n) now = q[next].b->t_send;
            continue;
        }
        if (simsrv_step(s, now, &res) != KV_OK) break;
        now += res.duration;
        for (size_t i = 0; i < res.n_tokens_out; i++) {
            sref *r = res.tokens_out[i]->user;
            if (r->sr.n_generated == 1) r->first = now;
        }
        for (size_t i = 0; i < res.n_finished; i++) {
            ((sref *)res.finished[i]->user)->end = now;
            left--;
        }
    }
    simsrv_free(s);
    return KV_OK;
}

static void rel_errors(const sref *q, size_t n, bool ttft, double *med, double *p99)
{
    double *e = malloc((n ? n : 1) * sizeof *e);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const breq *b = q[i].b;
        if (b->failed || !q[i].end) continue;
        double meas = (double)((ttft ? b->t_first : b->t_end) - b->t_send);
        double sim = (double)((ttft ? q[i].first : q[i].end) - b->t_send);
        if (sim > 0) e[k++] = fabs(meas - sim) / sim;
        if (getenv("BENCH_SERVE_DUMP"))
            fprintf(stderr, "pod %u send %lld meas %.0f sim %.0f\n", b->pod, (long long)b->t_send, meas, sim);
    }
    stats_sort(e, k);
    *med = k ? stats_percentile_sorted(e, k, 50) : NAN;
    *p99 = k ? stats_percentile_sorted(e, k, 99) : NAN;
    free(e);
}

int main(void)
{
    kv_err err = {0};
    const char *path = getenv("BENCH_SERVE_SCENARIO") ? getenv("BENCH_SERVE_SCENARIO") : SCENARIO;
    scenario *s = scn_load(path, "policies/presets", &err);
    workload *w = s ? wl_build(&s->workload, s->seed, &err) : NULL;
    if (!w) {
        fprintf(stderr, "bench_serve: %s\n", err.msg);
        return 1;
    }
    char port[16];
    snprintf(port, sizeof port, "%d", BASE_PORT);
    char *argv[] = {"./sim", "serve", (char *)path, "--port", port, "--speedup", "1", NULL};
    pid_t pid;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    if (posix_spawn(&pid, "./sim", &fa, NULL, argv, environ) != 0) {
        fprintf(stderr, "bench_serve: cannot start ./sim serve (run make all)\n");
        return 1;
    }
    posix_spawn_file_actions_destroy(&fa);
    usleep(500000);   /* the pods bind their ports */

    bench b = {.base = event_base_new(), .pods = s->cluster.replicas, .model = s->cluster.model->hf_name};
    b.n = w->stages[0].n_requests;
    b.r = calloc(b.n, sizeof *b.r);
    sendctx *ctx = calloc(b.n, sizeof *ctx);
    struct event **evs = calloc(b.n, sizeof *evs);
    for (size_t i = 0; i < b.n; i++) {
        if (wl_request(w, 0, i, &b.r[i].w, &err) != KV_OK) {
            fprintf(stderr, "bench_serve: %s\n", err.msg);
            return 1;
        }
        b.r[i].pod = (uint32_t)(i % b.pods);
        ctx[i] = (sendctx){.b = &b, .i = i};
        evs[i] = evtimer_new(b.base, send_one, &ctx[i]);
        sim_time off = w->stages[0].offsets[i];
        struct timeval tv = {.tv_sec = off / 1000000, .tv_usec = off % 1000000};
        evtimer_add(evs[i], &tv);
    }
    double sys0 = 0, sys1 = 0, cpu0 = proc_cpu_s(pid, &sys0);
    int64_t t0 = mono_us();
    event_base_dispatch(b.base);
    double wall = (double)(mono_us() - t0) / 1e6, cpu = proc_cpu_s(pid, &sys1) - cpu0;
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);

    uint64_t tokens = 0, failed = 0;
    for (size_t i = 0; i < b.n; i++) {
        failed += b.r[i].failed;
        if (!b.r[i].failed) tokens += b.r[i].w.n_output;
    }
    sref *q = calloc(b.n, sizeof *q);
    size_t at = 0;
    for (uint32_t p = 0; p < b.pods; p++) {
        size_t from = at;
        for (size_t i = 0; i < b.n; i++)
            if (b.r[i].pod == p) q[at++].b = &b.r[i];
        if (simulate_pod(&s->cluster, q + from, at - from, &err) != KV_OK) {
            fprintf(stderr, "bench_serve: %s\n", err.msg);
            return 1;
        }
    }
    double loads[1] = {0};
    getloadavg(loads, 1);
    char m[160];
    snprintf(m, sizeof m, "%u pods, %.0f out tok/s, %.1f%% of a core (%.0f%% sys), %.1f us/token, load %.1f",
             b.pods, (double)tokens / wall, 100 * cpu / wall, 100 * (sys1 - sys0) / cpu, 1e6 * cpu / (double)tokens,
             loads[0]);
    row("sim serve: 8 pods Qwen3-32B, guide rate 15, speedup 1", m, "< 50% core", failed == 0 && cpu / wall < CPU_TARGET);
    if (failed) printf("  (%llu of %zu requests failed)\n", (unsigned long long)failed, b.n);
    double tm, tp, em, ep;
    rel_errors(q, b.n, true, &tm, &tp);
    rel_errors(q, b.n, false, &em, &ep);
    snprintf(m, sizeof m, "TTFT med %.2f%% p99 %.2f%%; E2E med %.2f%% p99 %.2f%%", 100 * tm, 100 * tp, 100 * em,
             100 * ep);
    row("sim serve: timing error vs the simulated replica model", m, "med<2% p99<10%",
        tm < MEDIAN_TARGET && em < MEDIAN_TARGET && tp < P99_TARGET && ep < P99_TARGET);
    for (size_t i = 0; i < b.n; i++) {
        event_free(evs[i]);
        if (b.r[i].con) evhttp_connection_free(b.r[i].con);
        wl_req_release(&b.r[i].w);
    }
    free(evs);
    free(ctx);
    free(q);
    free(b.r);
    event_base_free(b.base);
    wl_free(w);
    scn_free(s);
    return 0;
}
