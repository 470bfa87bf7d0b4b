/* kvctl: the debugging CLI for "the precise score is always 0" (issue 2 §5).
 *   kvctl keys    the request keys kvroute (and llm-d) compute for a token list, so they
 *                 can be compared with what the index holds;
 *   kvctl decode  a KVEventBatch payload as JSON lines, vLLM's field names;
 *   kvctl listen  a live ZMQ SUB on a vLLM publisher (or bound, for vLLM to connect),
 *                 printing events with topic, seq, and per-pod sequence gaps;
 *   kvctl config  an EndpointPickerConfig loaded exactly as ./epp and ./sim load it (the
 *                 config loader, then the scheduler): its plugins with the parameters in
 *                 force, its profiles and its data layer, every warning on stderr;
 *   kvctl doctor  a running ./epp's known misconfigurations, each with its fix, read from
 *                 its /debug/ endpoints (live/doctor.h); exit 1 when it finds one.
 * Bad usage exits 2 with the usage text; bad input exits 1 with the decoder's message. */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "blockkeys.h"
#include "config.h"
#include "doctor.h"
#include "grow.h"
#include "kvevents.h"
#include "registry.h"
#include "scheduler.h"
#include "seqtrack.h"

static const char USAGE[] =
    "usage: kvctl keys --model M [--seed S] [--block-size N] [--algo xxh64|fnv64a-cbor] [--lora NAME]\n"
    "                  [--extra BLOCK=ID]... [--cache-salt S] TOKENS...\n"
    "         TOKENS: integers or inclusive ranges A..B (also comma-separated); one key per full block\n"
    "       kvctl decode [FILE | --hex HEX | -]      a msgpack KVEventBatch -> one JSON line per event\n"
    "       kvctl listen tcp://HOST:PORT [--bind] [--topic PREFIX]   (default topic prefix kv@; Ctrl-C stops)\n"
    "       kvctl config FILE                        an EndpointPickerConfig as ./epp and ./sim load it\n"
    "       kvctl doctor URL [--since SECONDS]       a running EPP's misconfigurations, from its metrics port\n"
    "         URL: http://HOST:METRICS_PORT; --since: issues seen in the last SECONDS (default 600)\n";

static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kvctl: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s", USAGE);
    return 2;
}

/* Bad input or environment: one message, exit status 1. */
static int failed(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int failed(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kvctl: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

/* --- keys ---------------------------------------------------------------------------- */

static bool parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    if (!*s || *s == '-' || *s == '+') return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max) return false;
    *out = v;
    return true;
}

typedef struct u32vec {
    uint32_t *v;
    size_t n, cap;
} u32vec;

static void push(u32vec *t, uint32_t x)
{
    if (!grow_array((void **)&t->v, &t->cap, t->n + 1, sizeof *t->v)) exit(failed("out of memory"));
    t->v[t->n++] = x;
}

/* "7", "1..32", "1,2,5..9". */
static bool parse_tokens(const char *arg, u32vec *t)
{
    char *copy = strdup(arg), *save = NULL;
    bool ok = copy != NULL;
    for (char *part = ok ? strtok_r(copy, ",", &save) : NULL; ok && part; part = strtok_r(NULL, ",", &save)) {
        char *dots = strstr(part, "..");
        uint64_t a, b;
        if (!dots) {
            ok = parse_u64(part, UINT32_MAX, &a);
            if (ok) push(t, (uint32_t)a);
            continue;
        }
        *dots = 0;
        ok = parse_u64(part, UINT32_MAX, &a) && parse_u64(dots + 2, UINT32_MAX, &b) && a <= b && b - a < (1u << 24);
        for (uint64_t x = a; ok && x <= b; x++) push(t, (uint32_t)x);
    }
    free(copy);
    return ok;
}

typedef struct extra_arg {
    size_t block;
    const char *id;
} extra_arg;

static int cmd_keys(int argc, char **argv)
{
    const char *model = NULL, *seed = "", *algo_name = "xxh64", *lora = NULL, *salt = NULL;
    uint64_t block_size = 16;
    extra_arg *xa = calloc((size_t)argc, sizeof *xa);
    size_t n_xa = 0;
    u32vec tok = {0};
    int rc = 0;
    for (int i = 0; i < argc && rc == 0; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;
        if (strcmp(a, "--model") == 0 && has_val) model = argv[++i];
        else if (strcmp(a, "--seed") == 0 && has_val) seed = argv[++i];
        else if (strcmp(a, "--algo") == 0 && has_val) algo_name = argv[++i];
        else if (strcmp(a, "--lora") == 0 && has_val) lora = argv[++i];
        else if (strcmp(a, "--cache-salt") == 0 && has_val) salt = argv[++i];
        else if (strcmp(a, "--block-size") == 0 && has_val) {
            if (!parse_u64(argv[++i], UINT32_MAX, &block_size) || block_size == 0)
                rc = usage("--block-size must be a positive integer, got \"%s\"", argv[i]);
        } else if (strcmp(a, "--extra") == 0 && has_val) {
            const char *v = argv[++i], *eq = strchr(v, '=');
            char num[32];
            uint64_t blk;
            if (!eq || (size_t)(eq - v) >= sizeof num || !eq[1]) {
                rc = usage("--extra wants BLOCK=ID, got \"%s\"", v);
                continue;
            }
            memcpy(num, v, (size_t)(eq - v));
            num[eq - v] = 0;
            if (!parse_u64(num, SIZE_MAX, &blk)) rc = usage("--extra: bad block number in \"%s\"", v);
            else xa[n_xa++] = (extra_arg){(size_t)blk, eq + 1};
        } else if (a[0] == '-' && a[1] == '-') {
            rc = usage("unknown or incomplete option \"%s\"", a);
        } else if (!parse_tokens(a, &tok)) {
            rc = usage("bad token list \"%s\" (integers in [0, 2^32) or A..B ranges)", a);
        }
    }
    if (rc == 0 && !model) rc = usage("keys needs --model");
    blockkeys_ctx ctx;
    blockkeys_algo algo;
    kv_err err;
    if (rc == 0 && blockkeys_algo_parse(algo_name, &algo, &err)) rc = usage("%s", err.msg);
    if (rc == 0 && blockkeys_init(&ctx, algo, (uint32_t)block_size, seed, &err)) rc = usage("%s", err.msg);
    if (rc == 0) {
        /* one blockkeys_extra per --extra, in command-line order (the order ids hash in) */
        blockkeys_extra *ex = calloc(n_xa ? n_xa : 1, sizeof *ex);
        for (size_t i = 0; i < n_xa; i++) ex[i] = (blockkeys_extra){xa[i].block, &xa[i].id, 1};
        size_t n = tok.n / ctx.block_size;
        uint64_t *keys = calloc(n ? n : 1, sizeof *keys);
        blockkeys_compute(&ctx, blockkeys_root(&ctx, lora && *lora ? lora : model), tok.v, tok.n, ex, n_xa, salt, keys, n);
        for (size_t i = 0; i < n; i++) printf("%llu\n", (unsigned long long)keys[i]);
        if (n == 0) fprintf(stderr, "kvctl: %zu tokens make no full block of %u\n", tok.n, ctx.block_size);
        free(keys);
        free(ex);
    }
    free(xa);
    free(tok.v);
    return rc;
}

/* --- events as JSON ---------------------------------------------------------------------- */

/* jansson integers are signed 64-bit, and vLLM hashes are unsigned 64-bit. Hashes go in
 * as marked strings and lose their quotes when the line is printed. */
#define U64_MARK "\x01u64:"

static json_t *u64_json(uint64_t v)
{
    char buf[40];
    snprintf(buf, sizeof buf, U64_MARK "%llu", (unsigned long long)v);
    return json_string(buf);
}

static void print_json_line(json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    static const char esc[] = "\"\\u0001u64:";
    for (char *p = s; *p;) {
        char *m = strstr(p, esc);
        if (!m) {
            fputs(p, stdout);
            break;
        }
        fwrite(p, 1, (size_t)(m - p), stdout);
        char *end = strchr(m + sizeof esc - 1, '"');
        fwrite(m + sizeof esc - 1, 1, (size_t)(end - (m + sizeof esc - 1)), stdout);
        p = end + 1;
    }
    fputc('\n', stdout);
    free(s);
}

static json_t *str_or_null(kvev_str s)
{
    return s.s ? json_stringn(s.s, s.len) : json_null();
}

static json_t *opt_int(bool has, int64_t v)
{
    return has ? json_integer(v) : json_null();
}

static json_t *hashes_json(const kvev_event *e)
{
    json_t *a = json_array();
    for (size_t i = 0; i < e->n_block_hashes; i++) json_array_append_new(a, u64_json(e->block_hashes[i]));
    return a;
}

static json_t *extra_keys_json(const kvev_event *e)
{
    json_t *a = json_array();
    for (size_t b = 0; b < e->n_extra_keys; b++) {
        const kvev_block_extra *bx = &e->extra_keys[b];
        if (bx->none) {
            json_array_append_new(a, json_null());
            continue;
        }
        json_t *items = json_array();
        for (size_t i = 0; i < bx->n_items; i++) {
            const kvev_extra_item *it = &bx->items[i];
            if (it->kind == KVEV_EXTRA_STR) json_array_append_new(items, str_or_null(it->id));
            else if (it->kind == KVEV_EXTRA_PAIR) json_array_append_new(items, json_pack("[o,I]", str_or_null(it->id), (json_int_t)it->offset));
            else json_array_append_new(items, json_string("<other>"));
        }
        json_array_append_new(a, items);
    }
    return a;
}

/* The event with vLLM's field names; optional trailing fields only when present. */
static json_t *event_json(const kvev_event *e)
{
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string(kvev_type_name(e->type)));
    if (e->type == KVEV_ALL_BLOCKS_CLEARED) return o;
    json_object_set_new(o, "block_hashes", hashes_json(e));
    if (e->type == KVEV_BLOCK_STORED) {
        json_object_set_new(o, "parent_block_hash", e->has_parent ? u64_json(e->parent_block_hash) : json_null());
        json_t *t = json_array();
        for (size_t i = 0; i < e->n_token_ids; i++) json_array_append_new(t, json_integer(e->token_ids[i]));
        json_object_set_new(o, "token_ids", t);
        json_object_set_new(o, "block_size", json_integer(e->block_size));
        json_object_set_new(o, "lora_id", opt_int(e->has_lora_id, e->lora_id));
    }
    json_object_set_new(o, "medium", str_or_null(e->medium));
    if (e->type == KVEV_BLOCK_STORED) {
        json_object_set_new(o, "lora_name", str_or_null(e->lora_name));
        if (e->has_extra_keys) json_object_set_new(o, "extra_keys", extra_keys_json(e));
    }
    if (e->has_group_idx) json_object_set_new(o, "group_idx", json_integer(e->group_idx));
    if (e->kv_cache_spec_kind.s) json_object_set_new(o, "kv_cache_spec_kind", str_or_null(e->kv_cache_spec_kind));
    if (e->has_sliding_window)
        json_object_set_new(o, "kv_cache_spec_sliding_window", json_integer(e->kv_cache_spec_sliding_window));
    return o;
}

/* --- decode ----------------------------------------------------------------------------- */

static bool unhex(const char *s, uint8_t **out, size_t *n)
{
    size_t len = strlen(s), k = 0;
    uint8_t *b = malloc(len / 2 + 1);
    int hi = -1;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (v < 0) {
            if (c == ' ' || c == '\n' || c == '\t' || c == ':') continue;
            free(b);
            return false;
        }
        if (hi < 0) {
            hi = v;
        } else {
            b[k++] = (uint8_t)(hi << 4 | v);
            hi = -1;
        }
    }
    if (hi >= 0) {
        free(b);
        return false;
    }
    *out = b;
    *n = k;
    return true;
}

static bool read_all(FILE *f, uint8_t **out, size_t *n)
{
    size_t cap = 4096, len = 0;
    uint8_t *b = malloc(cap);
    for (size_t r; b && (r = fread(b + len, 1, cap - len, f)) > 0;) {
        len += r;
        if (len == cap) {
            uint8_t *nb = realloc(b, cap *= 2);
            if (!nb) free(b);
            b = nb;
        }
    }
    if (!b || ferror(f)) {
        free(b);
        return false;
    }
    *out = b;
    *n = len;
    return true;
}

static int cmd_decode(int argc, char **argv)
{
    uint8_t *p = NULL;
    size_t n = 0;
    if (argc > 2 || (argc == 2 && strcmp(argv[0], "--hex") != 0)) return usage("decode takes one FILE, --hex HEX or -");
    if (argc == 2) {
        if (!unhex(argv[1], &p, &n)) return usage("--hex: \"%s\" is not an even number of hex digits", argv[1]);
    } else if (argc == 0 || strcmp(argv[0], "-") == 0) {
        if (!read_all(stdin, &p, &n)) return failed("cannot read stdin");
    } else if (strcmp(argv[0], "--hex") == 0) {
        return usage("--hex needs a value");
    } else {
        FILE *f = fopen(argv[0], "rb");
        if (!f) return failed("%s: %s", argv[0], strerror(errno));
        bool ok = read_all(f, &p, &n);
        fclose(f);
        if (!ok) return failed("%s: read error", argv[0]);
    }
    kv_err err;
    kvev_decoder *d = kvev_decoder_new(0, &err);
    kvev_batch b;
    int rc = 0;
    if (kvev_decode_batch(d, p, n, &b, &err)) {
        rc = failed("%s", err.msg);
    } else {
        for (size_t i = 0; i < b.n_events; i++) {
            json_t *o = event_json(&b.events[i]);
            print_json_line(o);
            json_decref(o);
        }
    }
    kvev_decoder_free(d);
    free(p);
    return rc;
}

/* --- listen ----------------------------------------------------------------------------- */

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

/* Receives one multipart message into frames[] (up to 4); returns the frame count, 0 on
 * timeout or interruption, -1 on error. */
static int recv_message(void *sock, zmq_msg_t *frames, int max)
{
    int n = 0;
    for (;;) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, sock, 0) < 0) {
            zmq_msg_close(&part);
            for (int i = 0; i < n && i < max; i++) zmq_msg_close(&frames[i]);
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        }
        bool more = zmq_msg_more(&part);
        if (n < max) frames[n] = part;
        else zmq_msg_close(&part);
        n++;
        if (!more) return n;
    }
}

static void print_message(kvev_decoder *d, seqtrack *seq, zmq_msg_t *f, int nf)
{
    if (nf != 3) {
        printf("# dropped a message of %d frames (vLLM sends topic, seq, payload)\n", nf);
        return;
    }
    kvev_message m;
    kv_err err;
    if (kvev_decode_message(d, zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), zmq_msg_data(&f[1]), zmq_msg_size(&f[1]),
                            zmq_msg_data(&f[2]), zmq_msg_size(&f[2]), &m, &err)) {
        printf("# bad message on topic \"%.*s\": %s\n", (int)zmq_msg_size(&f[0]), (const char *)zmq_msg_data(&f[0]), err.msg);
        return;
    }
    seqtrack_result r;
    if (seqtrack_observe(seq, m.pod.s, m.pod.len, m.seq, &r, &err) == KV_OK) {
        if (r.status == SEQTRACK_GAP)
            printf("# pod %s seq %llu: gap, %llu missed (replay from %llu)\n", m.pod.s, (unsigned long long)m.seq,
                   (unsigned long long)r.missed, (unsigned long long)r.replay_from);
        else if (r.status == SEQTRACK_RESTART)
            printf("# pod %s seq %llu: publisher restarted (previous seq %llu)\n", m.pod.s, (unsigned long long)m.seq,
                   (unsigned long long)r.last);
        else if (r.status == SEQTRACK_DUPLICATE)
            printf("# pod %s seq %llu: duplicate\n", m.pod.s, (unsigned long long)m.seq);
    }
    for (size_t i = 0; i < m.batch.n_events; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "pod", json_stringn(m.pod.s, m.pod.len));
        json_object_set_new(o, "model", json_stringn(m.model.s, m.model.len));
        json_object_set_new(o, "seq", u64_json(m.seq));
        json_t *ev = event_json(&m.batch.events[i]);
        json_object_update(o, ev);
        json_decref(ev);
        print_json_line(o);
        json_decref(o);
    }
    fflush(stdout);
}

static int cmd_listen(int argc, char **argv)
{
    const char *endpoint = NULL, *topic = "kv@";
    bool bind = false;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--bind") == 0) bind = true;
        else if (strcmp(argv[i], "--topic") == 0 && i + 1 < argc) topic = argv[++i];
        else if (argv[i][0] != '-' && !endpoint) endpoint = argv[i];
        else return usage("listen: unexpected argument \"%s\"", argv[i]);
    }
    if (!endpoint) return usage("listen needs an endpoint such as tcp://10.0.0.7:5557");
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_SUB);
    int timeout_ms = 200, linger = 0;
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_SUBSCRIBE, topic, strlen(topic));
    if ((bind ? zmq_bind(sock, endpoint) : zmq_connect(sock, endpoint)) != 0) {
        int rc = failed("cannot %s %s: %s", bind ? "bind" : "connect to", endpoint, zmq_strerror(zmq_errno()));
        zmq_close(sock);
        zmq_ctx_term(ctx);
        return rc;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    fprintf(stderr, "kvctl: %s %s, topic prefix \"%s\" (Ctrl-C stops)\n", bind ? "bound to" : "connected to", endpoint, topic);
    kvev_decoder *d = kvev_decoder_new(0, NULL);
    seqtrack *seq = seqtrack_new(NULL);
    int rc = 0;
    while (!stop) {
        zmq_msg_t f[4];
        int nf = recv_message(sock, f, 4);
        if (nf < 0) {
            rc = failed("receive: %s", zmq_strerror(zmq_errno()));
            break;
        }
        if (nf == 0) continue;
        print_message(d, seq, f, nf);
        for (int i = 0; i < nf && i < 4; i++) zmq_msg_close(&f[i]);
    }
    const kvev_stats *st = kvev_decoder_stats(d);
    uint64_t bad = 0;
    for (int r = 0; r < KVEV_ERR_COUNT; r++) bad += st->errors[r];
    fprintf(stderr, "kvctl: %llu batches, %llu rejected\n", (unsigned long long)st->batches, (unsigned long long)bad);
    seqtrack_free(seq);
    kvev_decoder_free(d);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return rc;
}

/* --- config --------------------------------------------------------------------------- */

static void config_warn(void *ctx, const char *msg)
{
    (void)ctx;
    fprintf(stderr, "kvctl: warning: %s\n", msg);
}

/* A parameter subtree as written, YAML-like, indented. */
static void print_node(const yt_node *n, int indent)
{
    if (n->kind == YT_SCALAR) {
        printf(" %s\n", n->str);
        return;
    }
    if (n->n == 0) {
        printf(" %s\n", n->kind == YT_MAP ? "{}" : "[]");
        return;
    }
    putchar('\n');
    for (size_t i = 0; i < n->n; i++) {
        if (n->kind == YT_MAP)
            printf("%*s%s:", indent, "", n->keys[i]);
        else
            printf("%*s-", indent, "");
        print_node(n->items[i], indent + 2);
    }
}

static const char *kind_name(sched_kind k)
{
    switch (k) {
    case SCHED_PROFILE_HANDLER: return "profile handler";
    case SCHED_FILTER: return "filter";
    case SCHED_SCORER: return "scorer";
    case SCHED_PICKER: return "picker";
    case SCHED_REQUEST_CONTROL: return "request hook / producer";
    }
    return "?";
}

static void print_plugin(const epc_plugin *cp, const sched_plugin *p)
{
    printf("  %s (%s, %s)%s\n", cp->name, cp->type, kind_name(cp->impl->kind), cp->node ? "" : " [added by default]");
    if (p->type->describe) {
        char buf[2048];
        p->type->describe(p, buf, sizeof buf);
        for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
            printf("    %s\n", line);
    } else if (cp->params && cp->params->n) {
        printf("    (as written)");
        print_node(cp->params, 6);
    }
}

static int cmd_config(int argc, char **argv)
{
    if (argc != 1) return usage("config takes one FILE");
    kv_err err = {0};
    epc_config *c = epc_load_file(argv[0], registry_types, &err);
    if (!c) return failed("%s", err.msg);
    sched_env env = {.seed = 1, .warn = config_warn};
    sched *s = sched_new(c, &env, &err);
    if (!s) {
        epc_free(c);
        return failed("%s", err.msg);
    }
    printf("%s: %s\nplugins:\n", argv[0], c->api_version[0] ? c->api_version : "(config body, no apiVersion)");
    for (size_t i = 0; i < c->n_plugins; i++)
        print_plugin(&c->plugins[i], sched_plugin_at(s, i));
    printf("profile handler: %s\nprofiles:\n", c->plugins[c->handler].name);
    for (size_t i = 0; i < c->n_profiles; i++) {
        printf("  %s:\n", c->profiles[i].name);
        for (size_t j = 0; j < c->profiles[i].n_refs; j++) {
            const epc_ref *r = &c->profiles[i].refs[j];
            const epc_plugin *cp = &c->plugins[r->plugin];
            if (cp->impl->kind == SCHED_SCORER)
                printf("    %s %s, weight %g\n", kind_name(cp->impl->kind), cp->name, r->weight);
            else
                printf("    %s %s%s\n", kind_name(cp->impl->kind), cp->name,
                       cp->impl->kind == SCHED_REQUEST_CONTROL ? " (no effect in a profile)" : "");
        }
    }
    if (c->data_layer) {
        printf("dataLayer:");
        print_node(c->data_layer, 2);
    }
    sched_free(s);
    epc_free(c);
    return 0;
}

static int cmd_doctor(int argc, char **argv)
{
    const char *url = NULL;
    double since = 600;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--since")) {
            char *end;
            if (i + 1 >= argc || (since = strtod(argv[++i], &end)) < 0 || *end || end == argv[i])
                return usage("--since needs a number of seconds >= 0");
        } else if (!url && strncmp(argv[i], "--", 2)) {
            url = argv[i];
        } else {
            return usage("doctor: unexpected argument \"%s\"", argv[i]);
        }
    }
    if (!url) return usage("doctor needs the EPP's metrics URL, e.g. http://127.0.0.1:9090");
    kv_err err = {0};
    int n = doctor_run(url, since, stdout, &err);
    if (n < 0) return failed("%s", err.msg);
    if (n == 0) printf("no known misconfiguration found\n");
    return n ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) return usage("a command is required");
    if (strcmp(argv[1], "keys") == 0) return cmd_keys(argc - 2, argv + 2);
    if (strcmp(argv[1], "decode") == 0) return cmd_decode(argc - 2, argv + 2);
    if (strcmp(argv[1], "listen") == 0) return cmd_listen(argc - 2, argv + 2);
    if (strcmp(argv[1], "config") == 0) return cmd_config(argc - 2, argv + 2);
    if (strcmp(argv[1], "doctor") == 0) return cmd_doctor(argc - 2, argv + 2);
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        fputs(USAGE, stdout);
        return 0;
    }
    return usage("unknown command \"%s\"", argv[1]);
}
