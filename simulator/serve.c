/* serve: `./sim serve [SCENARIO] [flags]`, N emulated vLLM pods in one process (the
 * scenario's cluster: section, overridden by flags), each an emupod behind an emuhttp.
 * Prints one line per pod (HTTP URL, KV-event endpoint, replay endpoint) and runs
 * until SIGTERM or SIGINT, then stops cleanly.
 *
 * Threads: one libevent event loop on the main thread runs every pod's HTTP server,
 * engine timers and replay socket; there are no other threads but ZMQ's own. */
#include "serve.h"

#include <errno.h>
#include <event2/event.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "emuhttp.h"
#include "emupod.h"
#include "profiles.h"
#include "scenario.h"

#define DEFAULT_REPLAY_STEPS 1000   /* vLLM keeps 10,000; payloads here are held per pod */

typedef struct serve_opts {
    const char *scenario;
    scn_cluster k;                   /* model, hardware, sizes */
    const char *host, *served, *kv_endpoint, *encoding;
    const char *model, *hardware;    /* --model, --hardware: profile names or .yaml files */
    const char *models_dir, *hardware_dir;
    int port, kv_port, replay_port;
    size_t replay_steps;
    double speedup, drop, fail_rate;  /* speedup 0: the scenario's, else 1 */
    uint64_t seed;
} serve_opts;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: sim serve [SCENARIO] [flags]\n"
            "  Emulated vLLM pods (the simulator's replica model on the wall clock).\n"
            "  --replicas N                 pods (default 1; scenario: cluster.replicas)\n"
            "  --host ADDR                  listen address (default 127.0.0.1)\n"
            "  --port P                     pod i serves HTTP on P+i (default 8000)\n"
            "  --model NAME                 a models/ profile (default qwen3-32b), its HF name, or a .yaml file\n"
            "  --models DIR                 look for model profiles in DIR before the tree's models/\n"
            "  --served-model-name NAME     the model name the API and topics use (default the HF name)\n"
            "  --hardware NAME              a hardware/ profile (default h100-sxm) or a .yaml file\n"
            "  --hardware-dir DIR           look for hardware profiles in DIR before the tree's hardware/\n"
            "  --tp N                       tensor parallel size (default 2)\n"
            "  --block-size N               tokens per KV block (default 64)\n"
            "  --num-gpu-blocks N           KV capacity (default: from GPU memory)\n"
            "  --max-num-seqs N, --max-num-batched-tokens N   vLLM's scheduler limits\n"
            "  --speedup X                  step time divided by X (default 1; scenario: cluster.speedup)\n"
            "  --kv-events-port P           pod i binds its KV-event PUB on P+i, or\n"
            "  --kv-events-endpoint EP      every pod connects its PUB to EP (tcp://HOST:PORT)\n"
            "  --kv-events-encoding E       array (default) or map\n"
            "  --replay-port P              pod i binds its replay ROUTER on P+i\n"
            "  --replay-buffer-steps N      batches each pod keeps for replay (default %d)\n"
            "  --drop-event-batches P       drop this fraction of batches on PUB (kept for replay)\n"
            "  --fail-rate P                answer this fraction of completion requests 500\n"
            "  --seed N                     seed of the fault draws (default 42)\n",
            DEFAULT_REPLAY_STEPS);
}

static bool num(const char *flag, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "sim serve: %s: '%s' is not a number in [%g, %g]\n", flag, s, lo, hi);
        return false;
    }
    *out = v;
    return true;
}

/* Integer flags: each writes one field of the options, bounded. */
typedef struct int_flag {
    const char *name;
    double lo, hi;
} int_flag;

static int parse(int argc, char **argv, serve_opts *o)
{
    static const int_flag ints[] = {
        {"--replicas", 1, 1024}, {"--port", 1, 65535}, {"--tp", 1, 64}, {"--block-size", 1, 65536},
        {"--num-gpu-blocks", 2, 1e9}, {"--max-num-seqs", 1, 1e6}, {"--max-num-batched-tokens", 1, 1e8},
        {"--kv-events-port", 1, 65535}, {"--replay-port", 1, 65535}, {"--replay-buffer-steps", 1, 1e7},
        {"--seed", 0, 9e15},
    };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double d;
        size_t k = 0;
        while (k < sizeof ints / sizeof *ints && strcmp(a, ints[k].name)) k++;
        if (k < sizeof ints / sizeof *ints) {
            if (!v) {
                fprintf(stderr, "sim serve: %s needs a value\n", a);
                return 2;
            }
            if (!num(a, v, ints[k].lo, ints[k].hi, &d))
                return 2;
            if (d != (double)(long long)d) {
                fprintf(stderr, "sim serve: %s: '%s' is not an integer\n", a, v);
                return 2;
            }
            i++;
            long long n = (long long)d;
            switch (k) {
            case 0: o->k.replicas = (uint32_t)n; break;
            case 1: o->port = (int)n; break;
            case 2: o->k.tp = (int)n; break;
            case 3: o->k.block_size = (uint32_t)n; break;
            case 4: o->k.num_gpu_blocks = (uint64_t)n; break;
            case 5: o->k.max_num_seqs = (uint32_t)n; break;
            case 6: o->k.max_num_batched_tokens = (uint32_t)n; break;
            case 7: o->kv_port = (int)n; break;
            case 8: o->replay_port = (int)n; break;
            case 9: o->replay_steps = (size_t)n; break;
            default: o->seed = (uint64_t)n; break;
            }
        } else if (!strcmp(a, "--speedup") && v) {
            if (!num(a, argv[++i], 1e-3, 1e6, &o->speedup)) return 2;
        } else if (!strcmp(a, "--drop-event-batches") && v) {
            if (!num(a, argv[++i], 0, 1, &o->drop)) return 2;
        } else if (!strcmp(a, "--fail-rate") && v) {
            if (!num(a, argv[++i], 0, 1, &o->fail_rate)) return 2;
        } else if (!strcmp(a, "--host") && v) {
            o->host = argv[++i];
        } else if (!strcmp(a, "--served-model-name") && v) {
            o->served = argv[++i];
        } else if (!strcmp(a, "--kv-events-endpoint") && v) {
            o->kv_endpoint = argv[++i];
        } else if (!strcmp(a, "--kv-events-encoding") && v) {
            o->encoding = argv[++i];
            if (strcmp(o->encoding, "array") && strcmp(o->encoding, "map")) {
                fprintf(stderr, "sim serve: --kv-events-encoding: '%s' is not array or map\n", o->encoding);
                return 2;
            }
        } else if (!strcmp(a, "--model") && v) {
            o->model = argv[++i];
        } else if (!strcmp(a, "--hardware") && v) {
            o->hardware = argv[++i];
        } else if (!strcmp(a, "--models") && v) {
            o->models_dir = argv[++i];
        } else if (!strcmp(a, "--hardware-dir") && v) {
            o->hardware_dir = argv[++i];
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 1;
        } else if (a[0] != '-' && !o->scenario && i == 1) {
            o->scenario = a;
        } else {
            fprintf(stderr, "sim serve: unexpected argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (o->kv_port && o->kv_endpoint) {
        fprintf(stderr, "sim serve: give --kv-events-port (each pod binds) or --kv-events-endpoint (pods connect), "
                        "not both\n");
        return 2;
    }
    return 0;
}

/* Fills what neither the scenario nor a flag set: the defaults in usage(). */
static void defaults(scn_cluster *k, const scn_cluster *from)
{
    if (!k->replicas) k->replicas = from ? from->replicas : 1;
    if (!k->tp) k->tp = from ? from->tp : 2;
    if (!k->block_size) k->block_size = from ? from->block_size : 64;
    if (!from) return;
    if (!k->num_gpu_blocks) k->num_gpu_blocks = from->num_gpu_blocks;
    if (!k->max_num_seqs) k->max_num_seqs = from->max_num_seqs;
    if (!k->max_num_batched_tokens) k->max_num_batched_tokens = from->max_num_batched_tokens;
    k->gpu_memory_utilization = from->gpu_memory_utilization;
    k->long_prefill_token_threshold = from->long_prefill_token_threshold;
    k->max_model_len = from->max_model_len;
    k->prefix_caching = from->prefix_caching;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    fprintf(stderr, "sim serve: %s, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    event_base_loopbreak(arg);
}

typedef struct cluster {
    struct event_base *base;
    void *zctx;
    emupod **pods;
    emuhttp **https;
    uint32_t n;
} cluster;

static void cluster_free(cluster *c)
{
    /* HTTP first: closing its connections detaches requests from the pods */
    for (uint32_t i = 0; c->https && i < c->n; i++) emuhttp_free(c->https[i]);
    for (uint32_t i = 0; c->pods && i < c->n; i++) emupod_free(c->pods[i]);
    free(c->https);
    free(c->pods);
    if (c->zctx) zmq_ctx_term(c->zctx);
    if (c->base) event_base_free(c->base);
}

static int start_pod(cluster *c, const serve_opts *o, uint32_t i, kv_err *err)
{
    const scn_cluster *k = &o->k;
    char pod_id[300], kv[320] = "", rp[320] = "";
    snprintf(pod_id, sizeof pod_id, "%s:%d", o->host, o->port + (int)i);
    if (o->kv_port) snprintf(kv, sizeof kv, "tcp://%s:%d", o->host, o->kv_port + (int)i);
    if (o->replay_port) snprintf(rp, sizeof rp, "tcp://%s:%d", o->host, o->replay_port + (int)i);
    const char *served = o->served ? o->served : k->model->hf_name;
    emupod_config pc = {
        .srv = {.model = k->model, .hw = k->hw, .tp = k->tp, .block_size = k->block_size,
                .num_gpu_blocks = k->num_gpu_blocks, .gpu_memory_utilization = k->gpu_memory_utilization,
                .max_num_batched_tokens = k->max_num_batched_tokens, .max_num_seqs = k->max_num_seqs,
                .long_prefill_token_threshold = k->long_prefill_token_threshold, .max_model_len = k->max_model_len,
                .prefix_caching = o->scenario ? k->prefix_caching : true, .speedup = o->speedup,
                .kv_encoding = o->encoding && !strcmp(o->encoding, "map") ? KVEV_ENC_MAP_EVENTS : KVEV_ENC_ARRAY},
        .pod_id = pod_id, .served_model = served,
        .kv_bind = kv[0] ? kv : NULL, .kv_connect = o->kv_endpoint, .replay_bind = rp[0] ? rp : NULL,
        .replay_steps = o->replay_steps, .drop_batches = o->drop, .seed = o->seed + i,
    };
    if (!(c->pods[i] = emupod_new(c->base, c->zctx, &pc, err))) return err->code;
    emuhttp_config hc = {.host = o->host, .port = o->port + (int)i, .served_model = served,
                         .root_model = k->model->hf_name, .fail_rate = o->fail_rate, .seed = o->seed + i};
    if (!(c->https[i] = emuhttp_new(c->base, c->pods[i], &hc, err))) return err->code;
    printf("pod %u: http://%s  kv-events %s%s  replay %s  model %s\n", i, pod_id,
           kv[0] ? kv : o->kv_endpoint ? o->kv_endpoint : "off",
           kv[0] ? " (bind)" : o->kv_endpoint ? " (connect)" : "", rp[0] ? rp : "off", served);
    return KV_OK;
}

/* --model and --hardware: loaded into *m and *h (the caller frees them). */
static int load_profiles(serve_opts *o, const scn_dirs *dirs, sm_model **m, sm_hardware **h, kv_err *err)
{
    const char *md[] = {o->models_dir ? o->models_dir : dirs->user_models, dirs->models};
    const char *hd[] = {o->hardware_dir ? o->hardware_dir : dirs->user_hardware, dirs->hardware};
    if (o->model || !o->k.model) {
        if (!(*m = sm_model_find(md, 2, o->model ? o->model : "qwen3-32b", err))) return err->code;
        o->k.model = *m;
    }
    if (o->hardware || !o->k.hw) {
        if (!(*h = sm_hardware_find(hd, 2, o->hardware ? o->hardware : "h100-sxm", err))) return err->code;
        o->k.hw = *h;
    }
    return KV_OK;
}

int serve_main(int argc, char **argv, const scn_dirs *dirs)
{
    serve_opts o = {.host = "127.0.0.1", .port = 8000, .seed = 42,
                    .replay_steps = DEFAULT_REPLAY_STEPS};
    int rc = parse(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    kv_err err = {0};
    scenario *s = NULL;
    if (o.scenario && !(s = scn_load_in(o.scenario, dirs, &err))) {
        fprintf(stderr, "sim serve: %s\n", err.msg);
        return 2;
    }
    if (s) {
        o.k.model = s->cluster.model;
        o.k.hw = s->cluster.hw;
    }
    sm_model *own_m = NULL;
    sm_hardware *own_h = NULL;
    if (load_profiles(&o, dirs, &own_m, &own_h, &err)) {
        fprintf(stderr, "sim serve: %s\n", err.msg);
        scn_free(s);
        return 2;
    }
    defaults(&o.k, s ? &s->cluster : NULL);
    if (!o.speedup) o.speedup = s ? s->cluster.speedup : 1;
    if (o.port + (long)o.k.replicas - 1 > 65535) {
        fprintf(stderr, "sim serve: --port %d + %u replicas passes port 65535\n", o.port, o.k.replicas);
        free(own_m);
        free(own_h);
        scn_free(s);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);   /* a client that leaves mid-stream is an error value, not a signal */
    struct event_config *ec = event_config_new();
    if (ec) event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);   /* step ends to the microsecond */
    cluster c = {.base = ec ? event_base_new_with_config(ec) : NULL, .zctx = zmq_ctx_new(), .n = o.k.replicas};
    if (ec) event_config_free(ec);
    c.pods = calloc(c.n, sizeof *c.pods);
    c.https = calloc(c.n, sizeof *c.https);
    struct event *sigs[2] = {NULL, NULL};
    rc = c.base && c.zctx && c.pods && c.https ? KV_OK : kv_err_set(&err, KV_ENOMEM, "out of memory");
    for (uint32_t i = 0; rc == KV_OK && i < c.n; i++) rc = start_pod(&c, &o, i, &err);
    if (rc == KV_OK) {
        sigs[0] = evsignal_new(c.base, SIGINT, on_signal, c.base);
        sigs[1] = evsignal_new(c.base, SIGTERM, on_signal, c.base);
        for (int i = 0; i < 2; i++)
            if (sigs[i]) evsignal_add(sigs[i], NULL);
        fflush(stdout);
        event_base_dispatch(c.base);
    } else {
        fprintf(stderr, "sim serve: %s\n", err.msg);
    }
    for (int i = 0; i < 2; i++)
        if (sigs[i]) event_free(sigs[i]);
    cluster_free(&c);
    free(own_m);
    free(own_h);
    scn_free(s);
    return rc == KV_OK ? 0 : 1;
}
