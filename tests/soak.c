/* soak: the real ./epp, started as a child process, for SOAK_MINUTES (default 30) under a
 * steady load, watched for growth (`make soak`; not part of `make test`).
 *
 * Load, all on 127.0.0.1:
 * - 64 fake vLLM pods (tests/support/fake_vllm.h) serve /metrics to the EPP's scraper;
 * - one publisher per pod (tests/support/fake_publisher.h) connects to the EPP's
 *   centralised ZMQ endpoint; one thread paces them all at RATE_BLOCKS BlockStored blocks
 *   per second (batches of STORE_BLOCKS new blocks, both event encodings), each batch also
 *   removing REMOVE_BLOCKS of the pod's previous ones (BlockRemoved). Every 8th batch also
 *   stores a shared system prompt's blocks, so that request lookups hit. Every 15 s a pod
 *   clears its cache (AllBlocksCleared), every 20 s a pod restarts (seq back to 0), every
 *   second a malformed message arrives (two frames, a bad seq frame, garbage or a
 *   truncated batch);
 * - CLIENTS threads send REQ_RATE requests/s through ext-proc (tests/support/extproc_client.h),
 *   one stream each as Envoy opens them, prompts of PROMPT_TOKENS token ids whose first
 *   PREFIX_BLOCKS blocks are one of GROUPS shared system prompts. A request fails unless
 *   the EPP picks an endpoint and streams the body back whole.
 * The EPP runs the shipped llm-d-precise preset (ZMQ on an ephemeral loopback port) with
 * an index capacity (CAPACITY blocks) small enough that it fills and evicts within the
 * first minute, so from minute 5 on the run is in steady state.
 *
 * Every SAMPLE_S seconds: the EPP's VmRSS (/proc/PID/status), open descriptors
 * (/proc/PID/fd) and kvcache_index_size_bytes (its /metrics), with the load counters:
 * one line on stdout, one row in build/soak/soak.csv; the EPP's /proc/PID/smaps is
 * copied at minute 5 and at the end (smaps-base.txt, smaps-end.txt). The run fails
 * (exit 1, saying which series and by how much) if RSS, descriptors or index bytes
 * grows more than GROWTH_MAX from its value at minute 5 (half the run when it is
 * shorter than 10 minutes) to its maximum after that, if a request failed, if no lookup
 * hit, if the index never evicted, if the EPP counted no restart, clear, malformed
 * message or removal (the run did not exercise it), if the publishers fell below
 * FLOOR_BLOCKS blocks/s, or if the EPP died or did not stop cleanly on SIGTERM.
 *
 * The EPP dies with this process however it ends (PR_SET_PDEATHSIG, and a kill on
 * SIGINT/SIGTERM and at exit). Threads: main (start-up, sampling, verdict), the
 * publisher thread, CLIENTS client threads, and the fakes' own threads. */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "support/extproc_client.h"
#include "support/fake_publisher.h"
#include "support/fake_vllm.h"

#define PODS 64
#define BLOCK 64
#define RATE_BLOCKS 105000.0   /* what the publishers aim at */
#define FLOOR_BLOCKS 100000.0  /* what they must achieve (issue 10) */
#define STORE_BLOCKS 128
#define REMOVE_BLOCKS 32
#define GROUPS 64
#define PREFIX_BLOCKS 16
#define PROMPT_TOKENS 2048
#define BODIES 256
#define REQ_RATE 100.0
#define CLIENTS 4
#define CAPACITY 2000000       /* index blocks: full after ~25 s of ~80k net new blocks/s */
#define SAMPLE_S 10
#define BASE_S 300.0
#define GROWTH_MAX 0.05
#define TOKEN_POOL (1u << 20)
#define VOCAB 150000
#define OUT_DIR "build/soak"
#define PRESET "policies/presets/llm-d-precise.yaml"

typedef struct sample {
    double t, rss_kib, fds, index_bytes;
    double index_blocks, evictions, lookups, hit_blocks, epp_stored;
    /* what the EPP counted of the disturbances: restarts, AllBlocksCleared, malformed
     * messages (bad frames and decode errors), BlockRemoved entries */
    double epp_restarts, epp_clears, epp_malformed, epp_removed;
    uint64_t published, requests, failed;
} sample;

typedef struct soak {
    fake_vllm *pods[PODS];
    fake_pub *pubs[PODS];
    xpc_client *cli;
    char *body[BODIES];
    size_t len[BODIES];
    double t0;
    atomic_bool stop;
    atomic_uint_fast64_t published, requests, failed, malformed, restarts, clears, clients_started;
    pthread_mutex_t fail_mu;
    char first_failure[256];
} soak;

static volatile pid_t epp_pid;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sleep_until(double t)
{
    double d = t - now_s();
    if (d > 0) {
        struct timespec ts = {(time_t)d, (long)((d - (time_t)d) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Token i of group g's shared system prompt: the same for the requests and the events. */
static uint32_t group_token(size_t g, size_t i) { return (uint32_t)((g * 100003 + i * 7) % VOCAB); }

static void kill_epp(void)
{
    if (epp_pid > 0)
        kill(epp_pid, SIGKILL);
}

static void on_signal(int sig)
{
    kill_epp();
    _exit(128 + sig);
}

/* ---- the publisher thread --------------------------------------------------------------- */

static void send_malformed(soak *s, fake_pub *p, unsigned kind, kvev_buf *enc, const kvev_batch *good, uint64_t *rng)
{
    static const char topic[] = "kv@soak@m", seq3[3] = {0, 0, 1};
    uint8_t junk[64];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (uint8_t)rng_next(rng);
    switch (kind % 4) {
    case 0: { /* two frames */
        const void *f[] = {topic, junk};
        size_t l[] = {sizeof topic - 1, sizeof junk};
        fake_pub_send_frames(p, f, l, 2);
        break;
    }
    case 1: { /* a three-byte seq frame */
        const void *f[] = {topic, seq3, junk};
        size_t l[] = {sizeof topic - 1, sizeof seq3, sizeof junk};
        fake_pub_send_frames(p, f, l, 3);
        break;
    }
    case 2: /* garbage payload with a good topic and seq */
        fake_pub_send_payload(p, junk, sizeof junk, false);
        break;
    default: /* a real batch cut in half */
        if (kvev_encode(good, KVEV_ENC_ARRAY, enc, NULL) == KV_OK)
            fake_pub_send_payload(p, enc->data, enc->len / 2, false);
        break;
    }
    atomic_fetch_add(&s->malformed, 1);
}

static void *publisher(void *arg)
{
    soak *s = arg;
    prctl(PR_SET_NAME, "soak-publisher");
    uint64_t rng = 77;
    uint32_t *pool = malloc(TOKEN_POOL * sizeof *pool);
    static uint32_t prefix[GROUPS][PREFIX_BLOCKS * BLOCK];
    static uint64_t last[PODS][STORE_BLOCKS];
    bool have_last[PODS] = {false};
    if (!pool)
        abort();
    for (size_t i = 0; i < TOKEN_POOL; i++)
        pool[i] = (uint32_t)(rng_next(&rng) % VOCAB);
    for (size_t g = 0; g < GROUPS; g++)
        for (size_t i = 0; i < PREFIX_BLOCKS * BLOCK; i++)
            prefix[g][i] = group_token(g, i);
    kvev_buf enc = {0};
    uint64_t hashes[STORE_BLOCKS], pfx_hashes[PREFIX_BLOCKS], blocks = 0;
    double start = now_s(), next_clear = start + 15, next_restart = start + 20, next_bad = start + 1;
    for (uint64_t n = 0; !atomic_load(&s->stop); n++) {
        size_t pod = n % PODS;
        kvev_event ev[3];
        size_t ne = 0;
        for (size_t i = 0; i < STORE_BLOCKS; i++)
            hashes[i] = rng_next(&rng);
        size_t off = rng_next(&rng) % (TOKEN_POOL - STORE_BLOCKS * BLOCK);
        ev[ne++] = (kvev_event){.type = KVEV_BLOCK_STORED, .block_hashes = hashes, .n_block_hashes = STORE_BLOCKS,
                                .token_ids = pool + off, .n_token_ids = STORE_BLOCKS * BLOCK, .block_size = BLOCK,
                                .medium = kvev_str_c("GPU")};
        if (have_last[pod])
            ev[ne++] = (kvev_event){.type = KVEV_BLOCK_REMOVED, .block_hashes = last[pod],
                                    .n_block_hashes = REMOVE_BLOCKS, .medium = kvev_str_c("GPU")};
        if (n % 8 == 0) {
            for (size_t i = 0; i < PREFIX_BLOCKS; i++)
                pfx_hashes[i] = rng_next(&rng);
            ev[ne++] = (kvev_event){.type = KVEV_BLOCK_STORED, .block_hashes = pfx_hashes,
                                    .n_block_hashes = PREFIX_BLOCKS, .token_ids = prefix[rng_next(&rng) % GROUPS],
                                    .n_token_ids = PREFIX_BLOCKS * BLOCK, .block_size = BLOCK,
                                    .medium = kvev_str_c("GPU")};
            blocks += PREFIX_BLOCKS;
        }
        kvev_batch batch = {.ts = now_s(), .events = ev, .n_events = ne};
        fake_pub_send(s->pubs[pod], &batch, pod % 2 ? KVEV_ENC_MAP_EVENTS : KVEV_ENC_ARRAY, false);
        memcpy(last[pod], hashes, sizeof hashes);
        have_last[pod] = true;
        blocks += STORE_BLOCKS;
        atomic_store(&s->published, blocks);

        double now = now_s();
        if (now >= next_clear) {
            uint64_t c = atomic_fetch_add(&s->clears, 1);
            kvev_event e = {.type = KVEV_ALL_BLOCKS_CLEARED};
            kvev_batch b = {.ts = now, .events = &e, .n_events = 1};
            fake_pub_send(s->pubs[(c * 13 + 5) % PODS], &b, KVEV_ENC_ARRAY, false);
            have_last[(c * 13 + 5) % PODS] = false;
            next_clear += 15;
        }
        if (now >= next_restart) {
            uint64_t r = atomic_fetch_add(&s->restarts, 1);
            fake_pub_restart(s->pubs[(r * 29 + 11) % PODS]);
            next_restart += 20;
        }
        if (now >= next_bad) {
            send_malformed(s, s->pubs[rng_next(&rng) % PODS], (unsigned)atomic_load(&s->malformed), &enc, &batch,
                           &rng);
            next_bad += 1;
        }
        sleep_until(start + (double)blocks / RATE_BLOCKS);
    }
    kvev_buf_free(&enc);
    free(pool);
    return NULL;
}

/* ---- the request clients ---------------------------------------------------------------- */

static void failure(soak *s, const char *what, uint64_t i)
{
    if (atomic_fetch_add(&s->failed, 1) == 0) {
        pthread_mutex_lock(&s->fail_mu);
        snprintf(s->first_failure, sizeof s->first_failure, "request %llu: %s", (unsigned long long)i, what);
        pthread_mutex_unlock(&s->fail_mu);
    }
}

/* One request as Envoy sends it; NULL when the EPP routed it and gave the body back. */
static const char *request(soak *s, const char *body, size_t len)
{
    static const char *const hdrs[] = {":method", "POST", ":path", "/v1/completions", ":authority", "soak",
                                       "content-type", "application/json", NULL};
    const char *why = NULL;
    xpc_stream *st = xpc_open(s->cli, 5000);
    if (!st)
        return "stream not opened";
    xpc_resp *r = NULL;
    if (xpc_send_request_headers(st, hdrs, false, NULL, 0, 0) || xpc_send_body(st, false, body, len, true))
        why = "send failed";
    else if (!(r = xpc_recv(st, 5000)))
        why = "no reply to the request (stream ended or timed out)";
    else if (r->response_case != ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_REQUEST_HEADERS)
        why = r->response_case == ENVOY__SERVICE__EXT_PROC__V3__PROCESSING_RESPONSE__RESPONSE_IMMEDIATE_RESPONSE
                  ? "immediate response (request refused)"
                  : "unexpected reply";
    else if (!xpc_dest_metadata(r))
        why = "no destination endpoint";
    xpc_resp_free(r);
    for (size_t got = 0; !why && got < len;) { /* the body comes back in chunks */
        xpc_resp *c = xpc_recv(st, 5000);
        if (!c || !c->request_body || !c->request_body->response || !c->request_body->response->body_mutation ||
            !c->request_body->response->body_mutation->streamed_response)
            why = "body not streamed back whole";
        else
            got += c->request_body->response->body_mutation->streamed_response->body.len;
        xpc_resp_free(c);
    }
    if (!why && xpc_finish(st, NULL, 0, 5000) != GRPC_STATUS_OK)
        why = "stream did not end with OK";
    xpc_close(st);
    return why;
}

/* Open loop: request i is due at t0 + i / REQ_RATE, whatever the replies take; client k
 * (in start order) sends i = k, k + CLIENTS, ... */
static void *client(void *arg)
{
    soak *s = arg;
    prctl(PR_SET_NAME, "soak-client");
    for (uint64_t i = atomic_fetch_add(&s->clients_started, 1); !atomic_load(&s->stop); i += CLIENTS) {
        sleep_until(s->t0 + (double)i / REQ_RATE);
        if (atomic_load(&s->stop))
            break;
        const char *why = request(s, s->body[i % BODIES], s->len[i % BODIES]);
        atomic_fetch_add(&s->requests, 1);
        if (why)
            failure(s, why, i);
    }
    return NULL;
}

static void build_bodies(soak *s)
{
    uint64_t rng = 5;
    size_t cap = 64 + PROMPT_TOKENS * 8;
    for (size_t b = 0; b < BODIES; b++) {
        char *p = s->body[b] = malloc(cap);
        if (!p)
            abort();
        size_t len = (size_t)snprintf(p, cap, "{\"model\":\"m\",\"max_tokens\":16,\"prompt\":[");
        for (size_t i = 0; i < PROMPT_TOKENS; i++) {
            uint32_t t = i < PREFIX_BLOCKS * BLOCK ? group_token(b % GROUPS, i) : (uint32_t)(rng_next(&rng) % VOCAB);
            len += (size_t)snprintf(p + len, cap - len, "%s%u", i ? "," : "", t);
        }
        s->len[b] = len + (size_t)snprintf(p + len, cap - len, "]}");
    }
}

/* ---- the EPP process -------------------------------------------------------------------- */

typedef struct text {
    char *s;
    size_t len, cap;
} text;

static size_t on_data(char *p, size_t size, size_t n, void *ctx)
{
    text *t = ctx;
    size_t add = size * n;
    if (t->len + add + 1 > t->cap) {
        size_t cap = (t->len + add + 1) * 2;
        char *s = realloc(t->s, cap);
        if (!s)
            return 0;
        t->s = s, t->cap = cap;
    }
    memcpy(t->s + t->len, p, add);
    t->s[t->len += add] = 0;
    return add;
}

/* The shipped llm-d-precise preset (the guide's config), on an ephemeral loopback ZMQ
 * port, with the index capacity set; 0 on success, else a message in why. */
static int write_config(const char *preset, const char *path, char *why, size_t cap)
{
    static const char zmq_from[] = "\"tcp://*:5557\"", index_at[] = "    indexerConfig:\n";
    text t = {0};
    FILE *in = fopen(preset, "r"), *out = NULL;
    char chunk[4096];
    for (size_t n; in && (n = fread(chunk, 1, sizeof chunk, in)) > 0;)
        on_data(chunk, 1, n, &t);
    char *z = t.s ? strstr(t.s, zmq_from) : NULL, *ix = t.s ? strstr(t.s, index_at) : NULL;
    if (!z || !ix || z < ix)
        snprintf(why, cap, "%s: %s", preset, in ? "no indexerConfig followed by zmqEndpoint \"tcp://*:5557\"" : strerror(errno));
    else if (!(out = fopen(path, "w")))
        snprintf(why, cap, "%s: %s", path, strerror(errno));
    else
        fprintf(out, "%.*s%s      kvBlockIndexConfig: {inMemoryConfig: {size: %d}}\n%.*s\"tcp://127.0.0.1:*\"%s",
                (int)(ix - t.s), t.s, index_at, CAPACITY, (int)(z - ix - (sizeof index_at - 1)),
                ix + sizeof index_at - 1, z + sizeof zmq_from - 1);
    if (in)
        fclose(in);
    free(t.s);
    return out && !fclose(out) ? 0 : -1;
}

static pid_t spawn_epp(const char *epp, const char *config, const char *endpoints, const char *log)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* no EPP outlives the soak, however it ends */
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || dup2(fd, 2) < 0)
        _exit(127);
    close(fd);
    execl(epp, epp, "--config-file", config, "--endpoints", endpoints, "--grpc-port", "0", "--grpc-health-port", "0",
          "--metrics-port", "0", "--secure-serving=false", "--threads", "2", (char *)NULL);
    dprintf(2, "soak: cannot run %s: %s\n", epp, strerror(errno));
    _exit(127);
}

/* The number after key in the first log line holding both marker and key. */
static long log_value(const char *log, const char *marker, const char *key)
{
    FILE *f = fopen(log, "r");
    char line[4096];
    long v = -1;
    while (f && v < 0 && fgets(line, sizeof line, f)) {
        const char *k = strstr(line, marker) ? strstr(line, key) : NULL;
        if (k)
            v = strtol(k + strlen(key), NULL, 10);
    }
    if (f)
        fclose(f);
    return v;
}

/* ---- sampling ------------------------------------------------------------------------- */

/* The sum of the series whose name (with labels, if given) starts a line of Prometheus
 * text, or NAN when none does. */
static double prom_sum(const char *body, const char *name)
{
    size_t nl = strlen(name);
    double sum = NAN;
    for (const char *p = body; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (!strncmp(p, name, nl) && (p[nl] == ' ' || p[nl] == '{')) {
            const char *v = strchr(p + nl, ' ');
            sum = (isnan(sum) ? 0 : sum) + (v ? strtod(v + 1, NULL) : NAN);
        }
    return sum;
}

static double proc_rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    double v = NAN;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6))
            v = strtod(line + 6, NULL);
    if (f)
        fclose(f);
    return v;
}

static double proc_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return NAN;
    double n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* A copy of the EPP's /proc/PID/smaps, so that growth can be traced to a mapping (the
 * heap, a thread's malloc arena, an index region) by comparing two copies. */
static void save_smaps(const char *path)
{
    char src[64], buf[65536];
    snprintf(src, sizeof src, "/proc/%d/smaps", (int)epp_pid);
    FILE *in = fopen(src, "r"), *out = fopen(path, "w");
    for (size_t n; in && out && (n = fread(buf, 1, sizeof buf, in)) > 0;)
        fwrite(buf, 1, n, out);
    if (in)
        fclose(in);
    if (out)
        fclose(out);
}

static bool take_sample(soak *s, CURL *curl, sample *o)
{
    text body = {0};
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
    bool ok = curl_easy_perform(curl) == CURLE_OK && body.s;
    *o = (sample){.t = now_s() - s->t0,
                  .rss_kib = proc_rss_kib(epp_pid),
                  .fds = proc_fds(epp_pid),
                  .published = atomic_load(&s->published),
                  .requests = atomic_load(&s->requests),
                  .failed = atomic_load(&s->failed)};
    if (ok) {
        o->index_bytes = prom_sum(body.s, "kvcache_index_size_bytes");
        o->index_blocks = prom_sum(body.s, "kvcache_index_size_blocks");
        o->evictions = prom_sum(body.s, "kvcache_index_evictions_total");
        o->lookups = prom_sum(body.s, "kvcache_index_lookup_requests_total");
        o->hit_blocks = prom_sum(body.s, "kvcache_index_lookup_hits_total");
        o->epp_stored = prom_sum(body.s, "kvroute_kv_events_blocks_stored_total");
        o->epp_restarts = prom_sum(body.s, "kvroute_kv_events_restarts_total");
        o->epp_clears = prom_sum(body.s, "kvroute_kv_events_events_total{type=\"AllBlocksCleared\"}");
        o->epp_malformed = prom_sum(body.s, "kvroute_kv_events_bad_frames_total") +
                           prom_sum(body.s, "kvroute_kv_events_decode_errors_total");
        o->epp_removed = prom_sum(body.s, "kvroute_kv_events_blocks_removed_total");
    }
    free(body.s);
    return ok && !isnan(o->index_bytes) && !isnan(o->rss_kib) && !isnan(o->fds);
}

static void print_sample(FILE *out, const char *tag, const sample *x, const sample *prev)
{
    double dt = prev ? x->t - prev->t : x->t;
    double pub = prev ? (double)(x->published - prev->published) : (double)x->published;
    double stored = prev ? x->epp_stored - prev->epp_stored : x->epp_stored;
    double req = prev ? (double)(x->requests - prev->requests) : (double)x->requests;
    fprintf(out,
            "%s %3d:%02d  rss %7.1f MiB  fds %4.0f  index %11.0f B (%8.0f blocks, %9.0f evicted)  events %6.0f "
            "blocks/s (epp stored %6.0f/s)  requests %5.1f/s, %llu failed\n",
            tag, (int)x->t / 60, (int)x->t % 60, x->rss_kib / 1024, x->fds, x->index_bytes, x->index_blocks,
            x->evictions, pub / dt, stored / dt, req / dt, (unsigned long long)x->failed);
    fflush(out);
}

/* ---- the verdict ---------------------------------------------------------------------- */

typedef struct series {
    const char *name;
    size_t off;
} series;

static const series SERIES[] = {{"rss (KiB)", offsetof(sample, rss_kib)},
                                {"open fds", offsetof(sample, fds)},
                                {"index bytes", offsetof(sample, index_bytes)}};

static double field(const sample *x, size_t off) { return *(const double *)((const char *)x + off); }

/* Growth of each series from the base sample to its maximum after it; false if any
 * exceeds GROWTH_MAX. */
static bool judge_growth(const sample *v, size_t n, size_t base)
{
    bool ok = true;
    for (size_t k = 0; k < sizeof SERIES / sizeof SERIES[0]; k++) {
        double b = field(&v[base], SERIES[k].off), max = b, t_max = v[base].t;
        for (size_t i = base; i < n; i++)
            if (field(&v[i], SERIES[k].off) > max)
                max = field(&v[i], SERIES[k].off), t_max = v[i].t;
        double g = b > 0 ? (max - b) / b : 0;
        bool bad = g > GROWTH_MAX;
        printf("soak: %-11s %+6.2f%% (%.0f at %d:%02d -> max %.0f at %d:%02d, last %.0f)%s\n", SERIES[k].name, 100 * g,
               b, (int)v[base].t / 60, (int)v[base].t % 60, max, (int)t_max / 60, (int)t_max % 60,
               field(&v[n - 1], SERIES[k].off), bad ? "  FAIL: grew more than 5%" : "");
        ok &= !bad;
    }
    return ok;
}

static void stop_load(soak *s, pthread_t pub, const pthread_t *cl)
{
    atomic_store(&s->stop, true);
    pthread_join(pub, NULL);
    for (int k = 0; k < CLIENTS; k++)
        pthread_join(cl[k], NULL);
}

/* SIGTERM and up to 30 s for a clean exit (status 0); SIGKILL otherwise. */
static bool stop_epp(void)
{
    int st = 0;
    kill(epp_pid, SIGTERM);
    for (int i = 0; i < 300; i++) {
        if (waitpid(epp_pid, &st, WNOHANG) == epp_pid) {
            epp_pid = 0;
            return WIFEXITED(st) && WEXITSTATUS(st) == 0;
        }
        usleep(100000);
    }
    kill_epp();
    waitpid(epp_pid, NULL, 0);
    epp_pid = 0;
    return false;
}

int main(int argc, char **argv)
{
    const char *epp = argc > 1 ? argv[1] : "build/rel/bin/epp", *env = getenv("SOAK_MINUTES");
    double minutes = env && *env ? strtod(env, NULL) : 30;
    if (!(minutes > 0 && minutes <= 24 * 60)) {
        fprintf(stderr, "soak: SOAK_MINUTES='%s': expected minutes in (0, 1440]\n", env);
        return 2;
    }
    static soak s;
    pthread_mutex_init(&s.fail_mu, NULL);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    atexit(kill_epp);
    mkdir("build", 0755);
    mkdir(OUT_DIR, 0755);

    char endpoints[PODS * 24] = "";
    for (int i = 0; i < PODS; i++) {
        if (!(s.pods[i] = fake_vllm_start())) {
            fprintf(stderr, "soak: fake vLLM pod %d did not start\n", i);
            return 1;
        }
        snprintf(endpoints + strlen(endpoints), sizeof endpoints - strlen(endpoints), "%s127.0.0.1:%d", i ? "," : "",
                 fake_vllm_port(s.pods[i]));
    }
    const char *config = OUT_DIR "/epp.yaml", *log = OUT_DIR "/epp.log";
    char why[512];
    if (write_config(PRESET, config, why, sizeof why)) {
        fprintf(stderr, "soak: %s\n", why);
        return 1;
    }
    build_bodies(&s);
    if ((epp_pid = spawn_epp(epp, config, endpoints, log)) < 0) {
        fprintf(stderr, "soak: fork: %s\n", strerror(errno));
        return 1;
    }
    long grpc = -1, metrics = -1, zmq = -1;
    for (int i = 0; i < 300 && (grpc < 0 || zmq < 0); i++) {
        if (waitpid(epp_pid, NULL, WNOHANG) == epp_pid) {
            epp_pid = 0;
            fprintf(stderr, "soak: FAIL: %s exited at start-up; its log is %s\n", epp, log);
            return 1;
        }
        usleep(100000);
        grpc = log_value(log, "EPP started", "grpc=");
        metrics = log_value(log, "EPP started", "metrics=");
        zmq = log_value(log, "KV-event ingestion started", "\"zmqEndpoint\":\"tcp://127.0.0.1:");
    }
    if (grpc <= 0 || metrics <= 0 || zmq <= 0) {
        fprintf(stderr, "soak: FAIL: no ports in %s after 30 s\n", log);
        return 1;
    }
    char target[64], url[64], zmq_ep[64];
    snprintf(target, sizeof target, "127.0.0.1:%ld", grpc);
    snprintf(url, sizeof url, "http://127.0.0.1:%ld/metrics", metrics);
    snprintf(zmq_ep, sizeof zmq_ep, "tcp://127.0.0.1:%ld", zmq);
    for (int i = 0; i < PODS; i++) {
        char topic[64];
        snprintf(topic, sizeof topic, "kv@127.0.0.1:%d@m", fake_vllm_port(s.pods[i]));
        if (!(s.pubs[i] = fake_pub_new(topic, false)) || fake_pub_connect(s.pubs[i], zmq_ep)) {
            fprintf(stderr, "soak: publisher %d cannot connect to %s\n", i, zmq_ep);
            return 1;
        }
    }
    s.cli = xpc_connect(target, NULL, NULL);
    CURL *curl = curl_easy_init();
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
    FILE *csv = fopen(OUT_DIR "/soak.csv", "w");
    if (!s.cli || !curl || !csv) {
        fprintf(stderr, "soak: set-up failed (client, curl or %s/soak.csv)\n", OUT_DIR);
        return 1;
    }
    fprintf(csv, "t_s,rss_kib,fds,index_bytes,index_blocks,evictions,blocks_published,epp_blocks_stored,requests,"
                 "failed,lookups,lookup_hit_blocks\n");
    printf("soak: %s for %.1f min, pid %d; %d pods; events %.0f blocks/s, requests %.0f/s; index capacity %d "
           "blocks; log %s, samples %s/soak.csv\n",
           epp, minutes, (int)epp_pid, PODS, RATE_BLOCKS, REQ_RATE, CAPACITY, log, OUT_DIR);
    fflush(stdout);

    s.t0 = now_s();
    pthread_t pub, cl[CLIENTS];
    pthread_create(&pub, NULL, publisher, &s);
    for (int k = 0; k < CLIENTS; k++)
        pthread_create(&cl[k], NULL, client, &s);
    double base_t = fmin(BASE_S, minutes * 60 / 2);
    size_t n_max = minutes * 60 >= 2 * SAMPLE_S ? (size_t)(minutes * 60 / SAMPLE_S) : 2, n = 0, base = 0;
    sample *v = calloc(n_max, sizeof *v);
    const char *died = NULL;
    for (size_t i = 1; v && i <= n_max; i++) {
        sleep_until(s.t0 + (double)i * SAMPLE_S);
        if (waitpid(epp_pid, NULL, WNOHANG) == epp_pid) {
            epp_pid = 0;
            died = "the EPP died";
            break;
        }
        if (!take_sample(&s, curl, &v[n])) {
            died = "the EPP's /proc entry or /metrics could not be read";
            break;
        }
        print_sample(stdout, "soak", &v[n], n ? &v[n - 1] : NULL);
        fprintf(csv, "%.1f,%.0f,%.0f,%.0f,%.0f,%.0f,%llu,%.0f,%llu,%llu,%.0f,%.0f\n", v[n].t, v[n].rss_kib, v[n].fds,
                v[n].index_bytes, v[n].index_blocks, v[n].evictions, (unsigned long long)v[n].published,
                v[n].epp_stored, (unsigned long long)v[n].requests, (unsigned long long)v[n].failed, v[n].lookups,
                v[n].hit_blocks);
        fflush(csv);
        if ((n == 0 || v[n - 1].t < base_t - 1) && v[n].t >= base_t - 1) {
            base = n;
            save_smaps(OUT_DIR "/smaps-base.txt");
        }
        n++;
    }
    if (!died)
        save_smaps(OUT_DIR "/smaps-end.txt");
    stop_load(&s, pub, cl);
    bool clean = !died && stop_epp();
    fclose(csv);
    curl_easy_cleanup(curl);

    bool ok = !died && clean && n >= 2;
    if (died)
        printf("soak: FAIL: %s after %zu samples; its log is %s\n", died, n, log);
    if (!died && !clean)
        printf("soak: FAIL: the EPP did not exit 0 within 30 s of SIGTERM; its log is %s\n", log);
    if (n >= 2) {
        const sample *a = &v[0], *z = &v[n - 1];
        printf("soak: %.1f min, %d pods; events %.0f blocks/s published (floor %.0f), %.0f/s stored by the EPP; "
               "requests %.1f/s, %llu sent, %llu failed; lookups %.0f, %.1f blocks hit per lookup; %llu malformed "
               "messages, %llu pod restarts, %llu cache clears\n",
               z->t / 60, PODS, (double)z->published / z->t, FLOOR_BLOCKS, z->epp_stored / z->t,
               (double)z->requests / z->t, (unsigned long long)z->requests, (unsigned long long)z->failed, z->lookups,
               z->lookups > 0 ? z->hit_blocks / z->lookups : 0, (unsigned long long)atomic_load(&s.malformed),
               (unsigned long long)atomic_load(&s.restarts), (unsigned long long)atomic_load(&s.clears));
        print_sample(stdout, "soak: first", a, NULL);
        print_sample(stdout, "soak: base ", &v[base], base ? &v[base - 1] : NULL);
        print_sample(stdout, "soak: last ", z, &v[n - 2]);
        ok &= judge_growth(v, n, base);
        if (z->failed) {
            printf("soak: FAIL: %llu of %llu requests failed; the first: %s\n", (unsigned long long)z->failed,
                   (unsigned long long)z->requests, s.first_failure);
            ok = false;
        }
        printf("soak: the EPP counted %.0f publisher restarts, %.0f AllBlocksCleared, %.0f malformed messages, "
               "%.0f index entries removed by BlockRemoved\n",
               z->epp_restarts, z->epp_clears, z->epp_malformed, z->epp_removed);
        if (!(z->epp_restarts > 0 && z->epp_clears > 0 && z->epp_malformed > 0 && z->epp_removed > 0)) {
            printf("soak: FAIL: the EPP saw none of one kind of disturbance: the run did not exercise it\n");
            ok = false;
        }
        if (!(z->hit_blocks > 0)) {
            printf("soak: FAIL: no lookup hit a cached block: the requests did not exercise the index\n");
            ok = false;
        }
        if (!(v[base].evictions > 0)) {
            printf("soak: FAIL: the index had not evicted by %d:%02d: growth was measured during fill-up\n",
                   (int)v[base].t / 60, (int)v[base].t % 60);
            ok = false;
        }
        if ((double)z->published / z->t < FLOOR_BLOCKS) {
            printf("soak: FAIL: the publishers achieved %.0f blocks/s, below %.0f\n", (double)z->published / z->t,
                   FLOOR_BLOCKS);
            ok = false;
        }
    }
    printf("soak: %s\n", ok ? "PASS" : "FAIL");
    xpc_disconnect(s.cli);
    for (int i = 0; i < PODS; i++) {
        fake_pub_free(s.pubs[i]);
        fake_vllm_stop(s.pods[i]);
    }
    for (size_t b = 0; b < BODIES; b++)
        free(s.body[b]);
    free(v);
    return ok ? 0 : 1;
}
