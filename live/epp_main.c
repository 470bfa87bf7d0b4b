/* epp_main: ./epp, the endpoint picker daemon. Parses GIE-style flags, loads the
 * EndpointPickerConfig, builds the scheduler and wires the live modules around it:
 * endpoints (a static --endpoints list or file, the file of a file-discovery plugin named
 * by the config's dataLayer.discovery (live/endpoint_file.h), or Kubernetes discovery by InferencePool
 * or label selector: live/endpoints.h, live/k8s.h; in cluster with the service account, or
 * with --kubeconfig / $KUBECONFIG from outside: live/kubeconfig.h), /metrics scraping (live/scrape.h),
 * vLLM KV-event ingestion into the index of every precise scorer the config has
 * (live/ingest.h, kvEventsConfig), the Prometheus exporter (live/promexp.h; its index and
 * event metrics are the first precise scorer's), the ext-proc server (TLS by default) and the plaintext gRPC health server, plus the optional SQLite
 * decision log. Admission as GIE's director: InferenceObjective priorities
 * (live/objectives.h, from the cluster or --objectives) and the saturation detector
 * (live/saturation.h) that sheds requests with priority < 0; InferenceModelRewrites
 * (live/model_rewrites.h, from the cluster or --model-rewrites) choose the model sent upstream.
 * With --http-port, an OpenAI-compatible HTTP gateway (live/gateway.h) serves alongside
 * the ext-proc server (or instead of it, --grpc-port -1): both front doors share one
 * router (live/route.h), so they route alike, and the same metrics and decision log.
 * Runs until SIGTERM/SIGINT, then stops everything in reverse order.
 *
 * Start-up fails fast, exit status 2, with one precise message on stderr: a bad flag or
 * config (file:line:col from the loader), a busy port (gRPC, health, metrics or ZMQ), a
 * missing or mismatched certificate, an unreachable API server. Logs are zap-shaped JSON
 * lines on stderr (live/log.h), so llm-d users' greps keep working. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "monoclock.h"
#include "registry.h"
#include "debugapi.h"
#include "decisionlog.h"
#include "extproc.h"
#include "endpoint_file.h"
#include "endpoints.h"
#include "gateway.h"
#include "file_discovery.h"
#include "health.h"
#include "ingest.h"
#include "kvdiag.h"
#include "k8s.h"
#include "kubeconfig.h"
#include "log.h"
#include "model_rewrites.h"
#include "objectives.h"
#include "promexp.h"
#include "saturation.h"
#include "scheduler.h"
#include "scrape.h"
#include "tls.h"
#include "token_producer.h"

typedef struct opts {
    const char *config_file;
    int grpc_port, health_port, metrics_port, http_port;
    double request_timeout_s, breaker_cooldown_s;
    int max_concurrent, queue_size, breaker_failures;
    const char *api_key;
    bool secure;
    const char *cert_path;
    const char *kv_metric;
    const char *pool_name, *pool_namespace, *pool_group, *endpoint_selector, *target_ports;
    const char *endpoints;
    const char *kubeconfig;
    const char *objectives;
    const char *model_rewrites;
    const char *decision_log;
    const char *replay_endpoint;
    const char *zmq_endpoint;
    const char *zap_encoder;
    int verbosity;
    int threads;
    int tokenize_timeout_ms;
    int kv_events_queue_mib;
} opts;

static void on_warn(void *ctx, const char *msg) { LOG_W("config warning", "{s:s}", "warning", msg); }

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "epp: %s\n", msg);
    return 2;
}

/* ---- flags ----------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: epp --config-file FILE (--endpoints LIST | --pool-name NAME | --endpoint-selector SEL) [flags]\n"
            "       (or no endpoint flag when the config's dataLayer.discovery names a file-discovery plugin)\n"
            "  --config-file FILE                  EndpointPickerConfig YAML (GIE/llm-d format)\n"
            "  --endpoints LIST|FILE               static model-server endpoints ip:port,...\n"
            "  --pool-name NAME                    InferencePool to follow (in-cluster, or --kubeconfig)\n"
            "  --pool-namespace NS                 its namespace (default $NAMESPACE, then default)\n"
            "  --pool-group GROUP                  InferencePool API group (default inference.networking.k8s.io)\n"
            "  --endpoint-selector k=v,...         pods to follow instead of a pool\n"
            "  --endpoint-target-ports P,...       their model-server ports\n"
            "  --kubeconfig FILE                   API server and token from a kubeconfig's current context\n"
            "                                      (default $KUBECONFIG; in a cluster the service account)\n"
            "  --objectives FILE|name=prio,...     InferenceObjectives without a cluster (manifests or inline)\n"
            "  --model-rewrites FILE               InferenceModelRewrite manifests without a cluster\n"
            "  --grpc-port N                       ext-proc port (default 9002; -1: no ext-proc server)\n"
            "  --http-port N                       OpenAI-compatible HTTP gateway port (default off; 0: any free port)\n"
            "  --request-timeout S                 gateway: seconds from arrival to last byte (default 1800; 0: none)\n"
            "  --max-concurrent-requests N         gateway: requests routed or forwarded at once (default 0: no limit)\n"
            "  --queue-size N                      gateway: requests waiting beyond that, 429 when full (default 100)\n"
            "  --api-key KEY                       gateway: require Authorization: Bearer KEY (default: none)\n"
            "  --circuit-breaker-failures N        gateway: consecutive endpoint failures that open its breaker (default 5)\n"
            "  --circuit-breaker-cooldown S        gateway: seconds an open breaker keeps the endpoint out (default 10)\n"
            "  --grpc-health-port N                gRPC health port, plaintext (default 9003)\n"
            "  --metrics-port N                    Prometheus port (default 9090)\n"
            "  --secure-serving[=true|false]       TLS on the ext-proc port (default true)\n"
            "  --cert-path DIR                     tls.crt and tls.key (default: self-signed)\n"
            "  --kv-cache-usage-percentage-metric  vLLM metric name (default vllm:kv_cache_usage_perc)\n"
            "  --tokenize-timeout-ms N             prompt rendering timeout, completions and chat (default: the\n"
            "                                      token producer's vllm.timeout 5s, chat max(timeout, mmTimeout)\n"
            "                                      30s); -1: never tokenise\n"
            "  --threads N                         ext-proc worker threads, and the gateway's routing workers (default 8)\n"
            "  --kv-events-replay-endpoint EP      vLLM's replay_endpoint on every pod (tcp://*:5558 or 5558)\n"
            "  --kv-events-queue-mib N             memory bound on KV events received, not yet applied (default 64)\n"
            "  --kv-events-zmq-endpoint EP         bind EP instead of kvEventsConfig.zmqEndpoint (centralised mode)\n"
            "  --decision-log FILE                 SQLite log of every decision (simulator schema)\n"
            "  -v N                                log verbosity (4: per-scorer score lines)\n"
            "  --zap-encoder json                  accepted for GIE compatibility (logs are always JSON)\n");
}

/* "--name=value", "--name value" or "-name ..." (Go's flag package accepts one or two dashes). */
static const char *flag_value(int argc, char **argv, int *i, const char *name, bool is_bool)
{
    const char *a = argv[*i];
    a += a[1] == '-' ? 2 : 1;
    size_t n = strlen(name);
    if (strncmp(a, name, n))
        return NULL;
    if (a[n] == '=')
        return a + n + 1;
    if (a[n])
        return NULL;
    if (is_bool) {
        if (*i + 1 < argc && (!strcmp(argv[*i + 1], "true") || !strcmp(argv[*i + 1], "false")))
            return argv[++*i];
        return "true";
    }
    if (*i + 1 >= argc)
        return "";
    return argv[++*i];
}

static int parse_int(const char *name, const char *v, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi)
        return fail("flag --%s: expected an integer in [%d, %d], got '%s'", name, lo, hi, v);
    *out = (int)x;
    return 0;
}

static int parse_double(const char *name, const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !(x >= lo && x <= hi))
        return fail("flag --%s: expected a number in [%g, %g], got '%s'", name, lo, hi, v);
    *out = x;
    return 0;
}

static int parse_flags(int argc, char **argv, opts *o)
{
    *o = (opts){.grpc_port = 9002, .health_port = 9003, .metrics_port = 9090, .http_port = -1,
                .request_timeout_s = 1800, .queue_size = 100, .breaker_failures = 5, .breaker_cooldown_s = 10,
                .secure = true, .kv_metric = "vllm:kv_cache_usage_perc", .threads = 8,
                .kv_events_queue_mib = (int)(INGEST_QUEUE_BYTES_DEFAULT >> 20)};
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (argv[i][0] != '-' || !argv[i][1])
            return fail("unexpected argument '%s' (flags start with --)", argv[i]);
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            exit(0);
        }
#define STR(flag, field)                                                   \
    if ((v = flag_value(argc, argv, &i, flag, false))) {                   \
        if (!*v)                                                           \
            return fail("flag --%s needs a value", flag);                  \
        o->field = v;                                                      \
        continue;                                                          \
    }
#define INT(flag, field, lo, hi)                                           \
    if ((v = flag_value(argc, argv, &i, flag, false))) {                   \
        if (parse_int(flag, v, lo, hi, &o->field))                         \
            return 2;                                                      \
        continue;                                                          \
    }
#define DBL(flag, field, lo, hi)                                           \
    if ((v = flag_value(argc, argv, &i, flag, false))) {                   \
        if (parse_double(flag, v, lo, hi, &o->field))                      \
            return 2;                                                      \
        continue;                                                          \
    }
        STR("config-file", config_file)
        STR("cert-path", cert_path)
        STR("kv-cache-usage-percentage-metric", kv_metric)
        STR("pool-name", pool_name)
        STR("pool-namespace", pool_namespace)
        STR("pool-group", pool_group)
        STR("endpoint-selector", endpoint_selector)
        STR("endpoint-target-ports", target_ports)
        STR("endpoints", endpoints)
        STR("kubeconfig", kubeconfig)
        STR("objectives", objectives)
        STR("model-rewrites", model_rewrites)
        STR("decision-log", decision_log)
        STR("kv-events-replay-endpoint", replay_endpoint)
        STR("kv-events-zmq-endpoint", zmq_endpoint)
        STR("zap-encoder", zap_encoder)
        STR("api-key", api_key)
        INT("grpc-port", grpc_port, -1, 65535)
        INT("http-port", http_port, -1, 65535)
        INT("max-concurrent-requests", max_concurrent, 0, 1 << 20)
        INT("queue-size", queue_size, 0, 1 << 20)
        INT("circuit-breaker-failures", breaker_failures, 1, 1 << 20)
        DBL("request-timeout", request_timeout_s, 0, 1e7)
        DBL("circuit-breaker-cooldown", breaker_cooldown_s, 0.001, 1e7)
        INT("grpc-health-port", health_port, 0, 65535)
        INT("metrics-port", metrics_port, 0, 65535)
        INT("v", verbosity, 0, 10)
        INT("threads", threads, 1, 256)
        INT("tokenize-timeout-ms", tokenize_timeout_ms, -1, 600000)
        INT("kv-events-queue-mib", kv_events_queue_mib, 1, 1 << 20)
#undef STR
#undef INT
#undef DBL
        if ((v = flag_value(argc, argv, &i, "secure-serving", true))) {
            if (strcmp(v, "true") && strcmp(v, "false"))
                return fail("flag --secure-serving: expected true or false, got '%s'", v);
            o->secure = !strcmp(v, "true");
            continue;
        }
        usage(stderr);
        return fail("unknown flag '%s'", argv[i]);
    }
    if (!o->config_file)
        return fail("--config-file is required");
    if (o->grpc_port < 0 && o->http_port < 0)
        return fail("--grpc-port -1 turns the ext-proc server off: give --http-port for the gateway, or nothing serves");
    if (o->zap_encoder && strcmp(o->zap_encoder, "json"))
        return fail("flag --zap-encoder: only json is supported (log lines are zap's JSON shape), got '%s'",
                    o->zap_encoder);
    /* none is checked once the config is read: its dataLayer.discovery may name the source */
    if (!!o->endpoints + !!o->pool_name + !!o->endpoint_selector > 1)
        return fail("--endpoints, --pool-name and --endpoint-selector are exclusive: pick one");
    bool cluster = o->pool_name || o->endpoint_selector;
    if (o->objectives && cluster)
        return fail("--objectives is for --endpoints or file-discovery; with --pool-name or --endpoint-selector the InferenceObjectives "
                    "come from the cluster");
    if (o->model_rewrites && cluster)
        return fail("--model-rewrites is for --endpoints or file-discovery; with --pool-name or --endpoint-selector the "
                    "InferenceModelRewrites come from the cluster");
    if (o->kubeconfig && !cluster)
        return fail("--kubeconfig is for --pool-name or --endpoint-selector; --endpoints and file-discovery need no "
                    "API server");
    if (o->endpoint_selector && !o->target_ports)
        return fail("--endpoint-selector needs --endpoint-target-ports");
    return 0;
}

/* ---- main --------------------------------------------------------------------------------------- */

typedef struct epp_daemon {
    promexp *pm;
    decisionlog *dl;
    k8s_watcher *k8s;
    epfile *epf;
    objectives *objs;
    model_rewrites *rewrites;
    epset *eps;
    kvdiag *diag;
    saturation_config sat;
} epp_daemon;

static bool ready(void *ctx)
{
    const epp_daemon *d = ctx;
    return !d->k8s || k8s_synced(d->k8s);
}

static bool objective_priority(void *ctx, const char *objective, int *priority)
{
    return objectives_priority(((epp_daemon *)ctx)->objs, objective, priority);
}

static int rewrite_model(void *ctx, const char *model, char **to)
{
    return model_rewrites_pick(((epp_daemon *)ctx)->rewrites, model, to, NULL);
}

static bool saturated(void *ctx, sched_endpoint *const *cands, size_t n)
{
    epp_daemon *d = ctx;
    return saturation_saturated(&d->sat, cands, n, epset_metrics_age, d->eps);
}

static void on_decision(void *ctx, const extproc_decision *dec)
{
    epp_daemon *d = ctx;
    if (!dec->shed) {
        promexp_observe_schedule(d->pm, dec->sched_seconds, dec->target != NULL);
        /* the model the request's keys were computed for (the rewritten one) */
        kvdiag_request(d->diag, dec->target_model ? dec->target_model : dec->model,
                       dec->target && dec->result->n_targets ? dec->result->targets[0]->name : NULL);
    }
    kv_err err = {0};
    if (d->dl && decisionlog_add(d->dl, dec, &err) != KV_OK)
        LOG_E("decision log write failed", "{s:s}", "error", err.msg);
}

static void on_complete(void *ctx, const extproc_completion *c)
{
    epp_daemon *d = ctx;
    promexp_observe_request(d->pm, c->model ? c->model : "", c->target_model, c->http_status, c->seconds);
}

int main(int argc, char **argv)
{
    opts o;
    int rc = parse_flags(argc, argv, &o);
    if (rc)
        return rc;
    extproc_keep_heap();
    log_setup(o.verbosity, NULL, NULL);
    kv_err err = {0};
    epp_daemon d = {0};
    epset *eps = NULL;
    epc_config *cfg = NULL;
    sched *s = NULL;
    tls_pem pem = {0};
    kubeconfig kcfg = {0};
    sched_kvsource **srcs = NULL;
    ingest **ings = NULL;
    size_t n_ing = 0;
    scraper *scr = NULL;
    route_router *router = NULL;
    extproc_server *xs = NULL;
    gateway *gw = NULL;
    health_server *hs = NULL;
    debugapi *dbg = NULL;
    rc = 2;

    if (!(cfg = epc_load_file(o.config_file, registry_types, &err)))
        goto out;
    saturation_defaults(&d.sat);
    if (saturation_from_env(&d.sat, getenv, &err) != KV_OK || !(d.objs = objectives_new(&err)) ||
        (o.objectives && objectives_load(d.objs, o.objectives, &err) != KV_OK) ||
        !(d.rewrites = model_rewrites_new(NULL, NULL, &err)) ||
        (o.model_rewrites && model_rewrites_load(d.rewrites, o.model_rewrites, &err) != KV_OK))
        goto out;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    sched_env env = {.seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20), .now = monoclock_now, .warn = on_warn};
    if (!(s = sched_new(cfg, &env, &err)))
        goto out;
    if (o.secure && (o.cert_path ? tls_load_dir(o.cert_path, &pem, &err) : tls_self_signed("epp", &pem, &err)))
        goto out;
    if (o.decision_log && !(d.dl = decisionlog_open(o.decision_log, o.config_file, env.seed, &err)))
        goto out;

    /* Signals are taken synchronously by main; every thread started below inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    const file_discovery *fd;
    if (file_discovery_of(s, cfg, &fd, &err) != KV_OK)
        goto out;
    if (!!fd + !!o.endpoints + !!o.pool_name + !!o.endpoint_selector != 1) {
        kv_err_set(&err, KV_EINVAL, fd ? "%s: dataLayer.discovery names plugin '%s' (file-discovery): drop "
                                         "--endpoints, --pool-name and --endpoint-selector"
                                       : "%sendpoints: give --endpoints ip:port,..., --pool-name, --endpoint-selector "
                                         "or a file-discovery plugin in the config's dataLayer.discovery%s",
                   fd ? o.config_file : "", fd ? fd->plugin : "");
        goto out;
    }
    if (!(eps = d.eps = epset_new(0, NULL, NULL, &err)) || !(d.diag = kvdiag_new(NULL, &err)))
        goto out;
    if (fd) {
        epfile_config fc = {.endpoints = eps, .path = fd->path, .watch = fd->watch_file, .warn = on_warn};
        if (!(d.epf = epfile_start(&fc, &err)))
            goto out;
        LOG_I("Endpoints from file", "{s:s, s:s, s:b, s:i}", "plugin", fd->plugin, "path", fd->path, "watchFile",
              fd->watch_file, "endpoints", (int)epset_count(eps));
    } else if (o.endpoints) { /* the list itself, or a file holding it */
        if ((access(o.endpoints, R_OK) == 0 ? epset_load_file(eps, o.endpoints, &err)
                                             : epset_parse_list(eps, o.endpoints, "--endpoints", &err)) != KV_OK)
            goto out;
        if (epset_count(eps) == 0) {
            kv_err_set(&err, KV_EINVAL, "--endpoints: no endpoint given");
            goto out;
        }
    } else {
        k8s_config kc = {.endpoints = eps, .ns = o.pool_namespace, .selector = o.endpoint_selector,
                         .pool_name = o.pool_name, .pool_group = o.pool_group, .objectives = d.objs,
                         .model_rewrites = d.rewrites};
        if (o.target_ports && k8s_parse_ports(o.target_ports, kc.target_ports, &kc.n_target_ports, &err) != KV_OK)
            goto out;
        char kpath[1024];
        if (kubeconfig_locate(o.kubeconfig, getenv, kpath, sizeof kpath, &err) != KV_OK ||
            (kpath[0] && kubeconfig_load(&kcfg, kpath, &err) != KV_OK))
            goto out;
        if (kpath[0]) {
            kc.base_url = kcfg.server;
            kc.token = kcfg.token;
            kc.token_path = kcfg.token_path[0] ? kcfg.token_path : NULL;
            kc.ca_path = kcfg.ca_path[0] ? kcfg.ca_path : NULL;
            kc.ca_pem = kcfg.ca_pem;
            kc.insecure_skip_tls_verify = kcfg.insecure;
            LOG_I("Using kubeconfig", "{s:s, s:s, s:s}", "path", kpath, "context", kcfg.context, "server",
                  kcfg.server);
        }
        if (!(d.k8s = k8s_start(&kc, &err)))
            goto out;
    }

    /* KV events feed the index of every precise scorer the config has */
    size_t n_src = pps_kvsources(s, NULL, 0);
    if (n_src > 0) {
        ingest_config ic = {.queue_bytes = (size_t)o.kv_events_queue_mib << 20, .diag = d.diag};
        if (o.zmq_endpoint && snprintf(ic.zmq_endpoint, sizeof ic.zmq_endpoint, "%s", o.zmq_endpoint) >=
                                  (int)sizeof ic.zmq_endpoint) {
            kv_err_set(&err, KV_EINVAL, "--kv-events-zmq-endpoint: longer than %zu bytes", sizeof ic.zmq_endpoint - 1);
            goto out;
        }
        if (!(srcs = calloc(n_src, sizeof *srcs)) || !(ings = calloc(n_src, sizeof *ings))) {
            kv_err_set(&err, KV_ENOMEM, "out of memory");
            goto out;
        }
        pps_kvsources(s, srcs, n_src);
        if ((o.replay_endpoint && ingest_parse_replay(&ic, o.replay_endpoint, &err) != KV_OK) ||
            ingest_start_sources(srcs, n_src, eps, &ic, ings, &n_ing, &err) != KV_OK)
            goto out;
        for (size_t i = 0; i < n_ing; i++) {
            size_t n_fed;
            const pps_kvevents *ev = &ingest_sources(ings[i], &n_fed)->events;
            LOG_I("KV-event ingestion started", "{s:s, s:s, s:b, s:i, s:i, s:i, s:i}", "zmqEndpoint",
                  ev->discover_pods ? "" : ingest_endpoint(ings[i]), "topicFilter", ev->topic_filter, "discoverPods",
                  ev->discover_pods, "concurrency", ev->concurrency, "replayPort", ic.replay_port, "scorers",
                  (int)n_fed, "queueMiB", o.kv_events_queue_mib);
        }
    }
    scrape_config sc = {.endpoints = eps, .kv_metric = o.kv_metric};
    if (!(scr = scrape_start(&sc, &err)))
        goto out;
    if (!(dbg = debugapi_new(&(debugapi_config){.endpoints = eps, .diag = d.diag, .ingests = ings,
                                                 .n_ingests = n_ing},
                             &err)))
        goto out;
    promexp_sources ps = {.pool_name = o.pool_name ? o.pool_name : "epp", .endpoints = eps, .kvsources = srcs,
                          .n_kvsources = n_src, .ingests = ings, .n_ingests = n_ing, .scrape = scr, .tokenize = true,
                          .diag = d.diag, .debug = debugapi_serve, .debug_ctx = dbg};
    if (!(d.pm = promexp_start(o.metrics_port, &ps, &err)) || promexp_observe_sched(d.pm, s, &err) != KV_OK)
        goto out;

    const token_producer *tp = token_producer_of(s);
    /* the flag overrides both of the config's timeouts (-1: never tokenise) */
    int tok_ms = o.tokenize_timeout_ms ? o.tokenize_timeout_ms
                                       : (int)(1000 * (tp ? tp->timeout_s : TOKEN_PRODUCER_TIMEOUT_S));
    int chat_ms = o.tokenize_timeout_ms ? o.tokenize_timeout_ms
                                        : (int)(1000 * (tp ? tp->chat_timeout_s : TOKEN_PRODUCER_MM_TIMEOUT_S));
    LOG_I("Prompt rendering", "{s:s, s:s, s:i, s:i}", "tokenProducer", tp ? tp->plugin : "", "renderer",
          tp && tp->url ? tp->url : "the serving pods", "timeoutMs", tok_ms, "chatTimeoutMs", chat_ms);
    char addr[64], haddr[64];
    snprintf(addr, sizeof addr, "0.0.0.0:%d", o.grpc_port);
    snprintf(haddr, sizeof haddr, "0.0.0.0:%d", o.health_port);
    extproc_config xc = {
        .addr = addr,
        .cert_pem = pem.cert,
        .key_pem = pem.key,
        .sched = s,
        .pool = {epset_acquire, epset_release, eps},
        .threads = o.threads,
        .tokenize_url = tp ? tp->url : NULL,
        .tokenize_timeout_ms = tok_ms,
        .tokenize_chat_timeout_ms = chat_ms,
        .trace_decisions = d.dl != NULL,
        .on_decision = on_decision,
        .on_complete = on_complete,
        .hook_ctx = &d,
        .objective_priority = objective_priority,
        .saturated = saturated,
        .model_rewrite = rewrite_model,
        .admission_ctx = &d,
    };
    /* one router for both front doors: one sched lock, the same decisions */
    if (!(router = xc.router = route_new(&xc.route, &err)))
        goto out;
    if (o.grpc_port >= 0 && !(xs = extproc_start(&xc, &err)))
        goto out;
    if (o.http_port >= 0) {
        gateway_config gc = {
            .port = o.http_port,
            .threads = o.threads,
            .request_timeout_s = o.request_timeout_s,
            .max_concurrent = o.max_concurrent,
            .queue_size = o.queue_size,
            .api_key = o.api_key,
            .breaker_failures = o.breaker_failures,
            .breaker_cooldown_s = o.breaker_cooldown_s,
            .metrics = d.pm,
            .router = router,
            .route = xc.route,
        };
        if (!(gw = gateway_start(&gc, &err)))
            goto out;
        promexp_set_gateway(d.pm, gw);
    }
    if (!(hs = health_start(haddr, ready, &d, &err)))
        goto out;
    debugapi_set_router(dbg, router);
    char ports[240];
    snprintf(ports, sizeof ports, "grpc=%d http=%d health=%d metrics=%d tls=%s endpoints=%zu",
             xs ? extproc_port(xs) : -1, gw ? gateway_port(gw) : -1, health_port(hs), promexp_port(d.pm),
             o.secure ? (o.cert_path ? "files" : "self-signed") : "off", epset_count(eps));
    LOG_I("EPP started", "{s:s}", "listening", ports);

    int sig = 0;
    sigwait(&sigs, &sig);
    LOG_I("Shutting down", "{s:s}", "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    rc = 0;
out:
    if (rc)
        fail("%s", err.msg);
    health_stop(hs);
    if (dbg)
        debugapi_set_router(dbg, NULL);   /* no dry run may outlive the router */
    extproc_stop(xs);
    if (gw) {
        promexp_set_gateway(d.pm, NULL);
        gateway_stop(gw);
    }
    route_free(router);
    /* after the ext-proc hooks that observe into it, before the sources a scrape reads
     * (ingest, index, endpoints): a scrape during shutdown must not see them freed */
    if (d.pm)
        promexp_stop(d.pm);
    debugapi_free(dbg);
    if (scr)
        scrape_stop(scr);
    if (d.k8s)
        k8s_stop(d.k8s);
    epfile_stop(d.epf);
    while (n_ing)
        ingest_stop(ings[--n_ing]);
    free(ings);
    free(srcs);
    decisionlog_close(d.dl);
    objectives_free(d.objs);
    kvdiag_free(d.diag);
    model_rewrites_free(d.rewrites);
    tls_pem_free(&pem);
    kubeconfig_free(&kcfg);
    if (s)
        sched_free(s);
    if (cfg)
        epc_free(cfg);
    if (eps)
        epset_free(eps);
    if (!rc)
        LOG_I("EPP stopped", NULL);
    return rc;
}
