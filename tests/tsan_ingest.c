/* tsan_ingest: ZMQ KV-event ingestion end to end on loopback, built with ThreadSanitizer
 * (receiver + 4 workers + the test's publishers and readers). A fake vLLM publisher
 * sends batches in all three encodings; the index must end exactly as a direct serial
 * kvingest run of the same batches (the reference), also after a replayed gap; a removed
 * endpoint's blocks vanish; stray pods and malformed frames are counted and survived.
 * Every wait is bounded (a few seconds) and polls counters, never the clock's figures. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "endpoints.h"
#include "support/fake_publisher.h"
#include "ingest.h"
#include "kvdiag.h"
#include "kvingest.h"
#include "log.h"

/* libzmq is not built with TSan: frames its I/O threads fill and hand over through its
 * lock-free pipes look unsynchronised. Reports with a libzmq frame in either stack are
 * suppressed; ours (workers, index, counters, the publisher's buffer) stay checked. */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void) { return "race:libzmq.so\ncalled_from_lib:libzmq.so\n"; }

#define BS 16
#define CHAIN 8                   /* blocks per chain */
#define MAX_EP 64

static void quiet(void *ctx, const char *line) { (void)ctx; (void)line; }

/* One chain of CHAIN blocks, sent as CHAIN batches of one BlockStored each, linked by
 * parent hash (so a batch missing in the middle orphans the rest). */
typedef struct chain {
    uint32_t tok[CHAIN * BS];
    uint64_t hash[CHAIN];         /* engine hashes */
    uint64_t keys[CHAIN];         /* request keys for the index */
} chain;

static void chain_make(chain *c, const blockkeys_ctx *kc, uint32_t salt)
{
    for (size_t i = 0; i < CHAIN * BS; i++)
        c->tok[i] = salt * 7919u + (uint32_t)i;
    for (size_t i = 0; i < CHAIN; i++)
        c->hash[i] = 0x9e3779b97f4a7c15ull * (salt * 100 + i + 1);
    assert_int_equal(blockkeys_compute(kc, blockkeys_root(kc, "m"), c->tok, CHAIN * BS, NULL, 0, NULL, c->keys, CHAIN),
                     CHAIN);
}

static kvev_event chain_event(const chain *c, size_t i)
{
    return (kvev_event){.type = KVEV_BLOCK_STORED, .block_hashes = &c->hash[i], .n_block_hashes = 1,
                        .has_parent = i > 0, .parent_block_hash = i ? c->hash[i - 1] : 0,
                        .token_ids = &c->tok[i * BS], .n_token_ids = BS, .block_size = BS,
                        .medium = kvev_str_c("GPU")};
}

typedef struct fx {
    blockkeys_ctx kc;
    kvindex *ix, *ref;
    kvingest *ref_ing;
    epset *eps;
    kvdiag *diag;                 /* told of every message by the ingest threads, as in ./epp */
    ingest *g;
} fx;

static int replay_timeout_ms = 2000;

static void fx_init(fx *f, const char *endpoints, bool discover, int socket_port, int replay_port)
{
    memset(f, 0, sizeof *f);
    log_setup(0, quiet, NULL);
    assert_int_equal(blockkeys_init(&f->kc, BLOCKKEYS_FNV64A_CBOR, BS, "", NULL), KV_OK);
    kvindex_config ic = {.capacity = 100000, .max_endpoints = MAX_EP};
    f->ix = kvindex_new(&ic, NULL);
    f->ref = kvindex_new(&ic, NULL);
    f->ref_ing = kvingest_new(f->ref, &f->kc, NULL);
    f->eps = epset_new(0, NULL, NULL, NULL);
    f->diag = kvdiag_new(NULL, NULL);
    assert_non_null(f->diag);
    assert_non_null(f->ix);
    assert_non_null(f->ref_ing);
    kv_err err = {0};
    if (epset_parse_list(f->eps, endpoints, "test", &err) != KV_OK)
        fail_msg("%s", err.msg);
    sched_kvsource src = {.index = f->ix, .keys = f->kc}, *srcs[] = {&src};
    ingest_config cfg = {.sources = srcs, .n_sources = 1, .endpoints = f->eps, .concurrency = 4,
                         .discover_pods = discover, .socket_port = socket_port, .replay_port = replay_port,
                         .replay_timeout_ms = replay_timeout_ms, .diag = f->diag};
    snprintf(cfg.zmq_endpoint, sizeof cfg.zmq_endpoint, "tcp://127.0.0.1:*");
    snprintf(cfg.topic_filter, sizeof cfg.topic_filter, "kv@");
    if (!(f->g = ingest_start(&cfg, &err)))
        fail_msg("%s", err.msg);
}

static void fx_free(fx *f)
{
    ingest_stop(f->g);
    kvdiag_free(f->diag);
    kvingest_free(f->ref_ing);
    kvindex_free(f->ix);
    kvindex_free(f->ref);
    epset_free(f->eps);
}

static ingest_stats st(fx *f)
{
    ingest_stats s;
    ingest_get_stats(f->g, &s);
    return s;
}

/* Polls until field >= want (5 s at most). */
#define WAIT_FOR(f, field, want)                                         \
    do {                                                                 \
        for (int t_ = 0; t_ < 1000 && st(f).field < (uint64_t)(want); t_++) \
            usleep(5000);                                                \
        assert_true(st(f).field >= (uint64_t)(want));                    \
    } while (0)

/* Sends stray-pod messages until the subscription is live (PUB/SUB slow joiner). */
static void warm_up(fx *f, fake_pub *p)
{
    const char *topic = "kv@192.0.2.99@m";
    uint8_t seq[8] = {0};
    const void *fr[3] = {topic, seq, "\x90"};
    size_t len[3] = {strlen(topic), 8, 1};
    uint64_t before = st(f).rejected_pods;
    for (int i = 0; i < 1000 && st(f).rejected_pods == before; i++) {
        fake_pub_send_frames(p, fr, len, 3);
        usleep(5000);
    }
    assert_true(st(f).rejected_pods > before);
}

static void ref_apply(fx *f, const char *name, const kvev_batch *b)
{
    kv_err err = {0};
    int slot = kvindex_endpoint_add(f->ref, name, &err);
    assert_true(slot >= 0);
    if (kvingest_apply(f->ref_ing, slot, "m", b, &err) != KV_OK)
        fail_msg("%s", err.msg);
}

/* The index equals the reference: same totals, and the same match per endpoint name for
 * every chain. */
static void assert_same(fx *f, const chain *chains, size_t n)
{
    kvindex_stats a, b;
    kvindex_get_stats(f->ix, &a);
    kvindex_get_stats(f->ref, &b);
    assert_true(a.blocks == b.blocks);
    assert_true(a.entries == b.entries);
    assert_true(a.engine_keys == b.engine_keys);
    kvindex_match ma[MAX_EP], mb[MAX_EP];
    for (size_t c = 0; c < n; c++) {
        kvindex_lookup(f->ix, chains[c].keys, CHAIN, ma);
        kvindex_lookup(f->ref, chains[c].keys, CHAIN, mb);
        for (int s = 0; s < MAX_EP; s++) {
            const char *name = kvindex_endpoint_name(f->ref, s);
            if (!name)
                continue;
            int t = kvindex_endpoint_find(f->ix, name);
            assert_true(t >= 0);
            assert_int_equal(ma[t].blocks, mb[s].blocks);
        }
    }
}

static uint32_t held(fx *f, const char *name, const chain *c)
{
    int slot = kvindex_endpoint_find(f->ix, name);
    if (slot < 0)
        return 0;
    kvindex_match m[MAX_EP];
    kvindex_lookup(f->ix, c->keys, CHAIN, m);
    return m[slot].blocks;
}

/* All three encodings land; a BlockRemoved shortens the match; counters add up. */
static void test_events_land(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "127.0.0.1:8000, 127.0.0.1:8001", false, 0, 0);
    fake_pub *p = fake_pub_new("kv@127.0.0.1:8000@m", false);
    assert_non_null(p);
    assert_int_equal(fake_pub_connect(p, ingest_endpoint(f.g)), 0);
    warm_up(&f, p);
    chain c[3];
    for (int k = 0; k < 3; k++) {
        chain_make(&c[k], &f.kc, (uint32_t)k + 1);
        for (size_t i = 0; i < CHAIN; i++) {
            kvev_event e = chain_event(&c[k], i);
            kvev_batch b = {1.0, true, 0, &e, 1};
            fake_pub_send(p, &b, (kvev_encoding)k, false);
            ref_apply(&f, "127.0.0.1:8000", &b);
        }
    }
    kvev_event rm = {.type = KVEV_BLOCK_REMOVED, .block_hashes = &c[2].hash[5], .n_block_hashes = 3,
                     .medium = kvev_str_c("GPU")};
    kvev_batch rb = {2.0, true, 0, &rm, 1};
    fake_pub_send(p, &rb, KVEV_ENC_MAP_EVENTS, false);
    ref_apply(&f, "127.0.0.1:8000", &rb);
    for (int i = 0; i < 100; i++)   /* routing reports while the ingest threads report events */
        kvdiag_request(f.diag, "m", "127.0.0.1:8000", 64);
    WAIT_FOR(&f, batches, 3 * CHAIN + 1);
    json_t *pj = kvdiag_pod_json(f.diag, "127.0.0.1:8000");
    assert_true(json_integer_value(json_object_get(pj, "messages")) >= 3 * CHAIN + 1);   /* + warm-up */
    json_decref(pj);
    uint64_t causes[KVDIAG_REASON_COUNT];
    kvdiag_counts(f.diag, causes);
    assert_true(causes[KVDIAG_MODEL_MISMATCH] == 0 && causes[KVDIAG_EMPTY_TOPIC] == 0);
    ingest_stats s = st(&f);
    assert_true(s.events[KVEV_BLOCK_STORED] == 3 * CHAIN);
    assert_true(s.events[KVEV_BLOCK_REMOVED] == 1);
    assert_true(s.blocks_stored == 3 * CHAIN);
    assert_true(s.blocks_removed == 3);
    assert_true(s.gaps == 0 && s.lost == 0 && s.orphans == 0 && s.loose_matches == 0);
    assert_true(s.lag_count == 3 * CHAIN + 1);
    assert_int_equal(held(&f, "127.0.0.1:8000", &c[0]), CHAIN);
    assert_int_equal(held(&f, "127.0.0.1:8000", &c[1]), CHAIN);
    assert_int_equal(held(&f, "127.0.0.1:8000", &c[2]), 5);
    assert_int_equal(held(&f, "127.0.0.1:8001", &c[0]), 0);
    assert_same(&f, c, 3);

    /* The endpoint leaves: its slot and every block go. */
    ep_spec keep = {.name = "127.0.0.1:8001"};
    assert_int_equal(epset_sync(f.eps, &keep, 1, NULL), KV_OK);
    WAIT_FOR(&f, endpoints_removed, 1);
    assert_int_equal(kvindex_endpoint_find(f.ix, "127.0.0.1:8000"), -1);
    kvindex_stats is;
    kvindex_get_stats(f.ix, &is);
    assert_true(is.blocks == 0 && is.entries == 0 && is.engine_keys == 0);
    /* ...and its later events are rejected, not re-added. */
    uint64_t rej = st(&f).rejected_pods;
    kvev_event e = chain_event(&c[0], 0);
    kvev_batch b = {3.0, true, 0, &e, 1};
    fake_pub_send(p, &b, KVEV_ENC_ARRAY, false);
    WAIT_FOR(&f, rejected_pods, rej + 1);
    assert_int_equal(kvindex_endpoint_find(f.ix, "127.0.0.1:8000"), -1);
    fake_pub_free(p);
    fx_free(&f);
}

/* Batches 2..4 of 8 are never published. With a replay socket the gap is filled and the
 * index ends equal to the gap-free reference; without one the loss is counted and the
 * rest of the chain is orphaned (parents unknown). */
typedef enum { REPLAY_OK, REPLAY_NONE, REPLAY_DOWN } replay_mode;

static void run_gap(replay_mode mode)
{
    bool with_replay = mode == REPLAY_OK;
    fake_pub *p = fake_pub_new("kv@127.0.0.1:8000@m", true);
    assert_non_null(p);
    fx f;
    replay_timeout_ms = mode == REPLAY_DOWN ? 200 : 2000;
    /* REPLAY_DOWN: a replay port where nothing listens (the request times out). */
    /* REPLAY_OK: configured as ./epp's --kv-events-replay-endpoint is, from vLLM's replay_endpoint */
    ingest_config rc = {0};
    char spec[32];
    snprintf(spec, sizeof spec, "tcp://*:%d", fake_pub_replay_port(p));
    assert_int_equal(ingest_parse_replay(&rc, mode == REPLAY_OK ? spec : mode == REPLAY_DOWN ? "1" : "0", NULL),
                     mode == REPLAY_NONE ? KV_EINVAL : KV_OK);
    fx_init(&f, "127.0.0.1:8000", false, 0, rc.replay_port);
    assert_int_equal(fake_pub_connect(p, ingest_endpoint(f.g)), 0);
    warm_up(&f, p);
    chain c;
    chain_make(&c, &f.kc, 42);
    for (size_t i = 0; i < CHAIN; i++) {
        kvev_event e = chain_event(&c, i);
        kvev_batch b = {1.0, true, 0, &e, 1};
        fake_pub_send(p, &b, KVEV_ENC_MAP_EVENTS, i >= 2 && i <= 4);
        ref_apply(&f, "127.0.0.1:8000", &b);
    }
    if (with_replay) {
        WAIT_FOR(&f, batches, CHAIN);
        ingest_stats s = st(&f);
        assert_true(s.gaps == 1 && s.missed == 3 && s.replays == 1 && s.replayed_batches == 3);
        assert_true(s.lost == 0 && s.replay_failures == 0 && s.orphans == 0 && s.stale_endpoints == 0);
        assert_int_equal(held(&f, "127.0.0.1:8000", &c), CHAIN);
        assert_same(&f, &c, 1);
    } else {
        WAIT_FOR(&f, batches, CHAIN - 3);
        ingest_stats s = st(&f);
        assert_true(s.gaps == 1 && s.missed == 3 && s.lost == 3);
        assert_true(mode == REPLAY_DOWN ? s.replays == 1 && s.replay_failures == 1 : s.replays == 0);
        assert_true(s.orphans == 3);   /* batches 5..7 chain from the lost 4 */
        assert_true(s.stale_endpoints == 1);
        assert_int_equal(held(&f, "127.0.0.1:8000", &c), 2);
    }
    /* A restarted publisher (seq back to 0) is a restart, not a duplicate. */
    fake_pub_restart(p);
    kvev_event clr = {.type = KVEV_ALL_BLOCKS_CLEARED};
    kvev_batch b = {2.0, true, 0, &clr, 1};
    fake_pub_send(p, &b, KVEV_ENC_ARRAY, false);
    WAIT_FOR(&f, restarts, 1);
    WAIT_FOR(&f, events[KVEV_ALL_BLOCKS_CLEARED], 1);
    assert_int_equal(held(&f, "127.0.0.1:8000", &c), 0);
    ingest_stats s = st(&f);
    assert_true(s.stale_endpoints == 0);   /* cleared: exact again */
    assert_true(s.lost == (with_replay ? 0u : 3u));   /* a restart at seq 0 loses nothing */
    fake_pub_free(p);
    fx_free(&f);
}

static void test_gap_replay(void **state) { (void)state; run_gap(REPLAY_OK); }
static void test_gap_no_replay(void **state) { (void)state; run_gap(REPLAY_NONE); }
static void test_gap_replay_down(void **state) { (void)state; run_gap(REPLAY_DOWN); }

/* Strays, malformed frames and bad payloads are counted; the next good batch applies. */
static void test_stray_and_malformed(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "127.0.0.1:8000", false, 0, 0);
    fake_pub *p = fake_pub_new("kv@127.0.0.1:8000@m", false);
    assert_non_null(p);
    assert_int_equal(fake_pub_connect(p, ingest_endpoint(f.g)), 0);
    warm_up(&f, p);
    ingest_stats s0 = st(&f);
    chain c;
    chain_make(&c, &f.kc, 9);
    kvev_event e = chain_event(&c, 0);
    kvev_batch b = {1.0, true, 0, &e, 1};
    kvev_buf good = {0};
    assert_int_equal(kvev_encode(&b, KVEV_ENC_ARRAY, &good, NULL), KV_OK);
    uint8_t seq8[8] = {0}, seq4[4] = {0}, seq100[8] = {0, 0, 0, 0, 0, 0, 0, 100}, seq101[8] = {0, 0, 0, 0, 0, 0, 0, 101};
    const char *t = "kv@127.0.0.1:8000@m", *stray = "kv@10.9.9.9:8000@m", *badtopic = "kv@only-two";
    struct { const void *fr[4]; size_t len[4]; size_t n; } msgs[] = {
        {{t, seq8}, {strlen(t), 8}, 2},                                                  /* 2 frames */
        {{t, seq8, good.data, "x"}, {strlen(t), 8, good.len, 1}, 4},                     /* 4 frames */
        {{t, seq4, good.data}, {strlen(t), 4, good.len}, 3},                             /* short seq */
        {{t, seq100, "\xc1garbage"}, {strlen(t), 8, 8}, 3},                              /* bad msgpack */
        {{t, seq101, good.data}, {strlen(t), 8, good.len - 3}, 3},                       /* truncated */
        {{badtopic, seq8, good.data}, {strlen(badtopic), 8, good.len}, 3},               /* bad topic */
        {{stray, seq8, good.data}, {strlen(stray), 8, good.len}, 3},                     /* stray pod */
        {{"other@x@m", seq8, good.data}, {9, 8, good.len}, 3},                           /* filtered */
    };
    for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++)
        fake_pub_send_frames(p, msgs[i].fr, msgs[i].len, msgs[i].n);
    fake_pub_send(p, &b, KVEV_ENC_ARRAY, false);   /* seq 0 after 101: a publisher restart */
    WAIT_FOR(&f, batches, 1);
    ingest_stats s = st(&f);
    assert_true(s.bad_frames - s0.bad_frames == 2);
    assert_true(s.decode_errors[KVEV_ERR_SEQ] - s0.decode_errors[KVEV_ERR_SEQ] == 1);
    assert_true(s.decode_errors[KVEV_ERR_TOPIC] - s0.decode_errors[KVEV_ERR_TOPIC] == 1);
    uint64_t payload_errors = 0;
    for (int r = 0; r < KVEV_ERR_COUNT; r++)
        if (r != KVEV_ERR_SEQ && r != KVEV_ERR_TOPIC)
            payload_errors += s.decode_errors[r] - s0.decode_errors[r];
    assert_true(payload_errors == 2);
    assert_true(s.rejected_pods - s0.rejected_pods == 1);
    assert_true(s.batches == 1 && s.restarts == 1);
    assert_int_equal(held(&f, "127.0.0.1:8000", &c), 1);
    assert_int_equal(kvindex_endpoint_find(f.ix, "10.9.9.9:8000"), -1);
    kvev_buf_free(&good);
    fake_pub_free(p);
    fx_free(&f);
}

/* Pod discovery: the SUB dials each endpoint's host at socketPort and follows the set; a
 * bare-IP topic matches its endpoint loosely. Then six pods at once over four workers,
 * with a reader looking up concurrently: the index equals the serial reference. */
typedef struct reader_arg {
    fx *f;
    const chain *c;
    atomic_bool stop;
    uint64_t lookups;
} reader_arg;

static void *reader(void *arg)
{
    reader_arg *a = arg;
    kvindex_match m[MAX_EP];
    while (!atomic_load(&a->stop)) {
        uint32_t best = kvindex_lookup(a->f->ix, a->c->keys, CHAIN, m);
        assert_true(best <= CHAIN);
        a->lookups++;
    }
    return NULL;
}

static void test_discovery_and_many_pods(void **state)
{
    (void)state;
    fake_pub *p = fake_pub_new("kv@127.0.0.1@m", false);
    assert_non_null(p);
    int port = fake_pub_bind(p);
    assert_true(port > 0);
    fx f;
    fx_init(&f, "127.0.0.1:8000", true, port, 0);
    warm_up(&f, p);
    chain c[7];
    chain_make(&c[0], &f.kc, 100);
    for (size_t i = 0; i < CHAIN; i++) {
        kvev_event e = chain_event(&c[0], i);
        kvev_batch b = {1.0, true, 0, &e, 1};
        fake_pub_send(p, &b, KVEV_ENC_MAP_ALL, false);
    }
    WAIT_FOR(&f, batches, CHAIN);
    assert_true(st(&f).loose_matches == CHAIN);
    assert_int_equal(held(&f, "127.0.0.1:8000", &c[0]), CHAIN);
    fake_pub_free(p);

    /* Six more endpoints and pods, in centralised style through the same SUB is not
     * possible in discovery mode, so each pod binds its own PUB on a distinct port that
     * the endpoint list names (ip:port topics, exact matches). */
    ingest_stop(f.g);
    f.g = NULL;
    /* A restarted ingest drops the slots of endpoints no longer in the set. */
    ep_spec none = {.name = "127.0.0.1:7999"};
    assert_int_equal(epset_sync(f.eps, &none, 1, NULL), KV_OK);
    char list[512] = "";
    fake_pub *pubs[6];
    for (int k = 0; k < 6; k++) {
        char ep[64];
        snprintf(ep, sizeof ep, "%s127.0.0.1:%d", k ? "," : "", 9000 + k);
        strcat(list, ep);
    }
    sched_kvsource src = {.index = f.ix, .keys = f.kc}, *srcs[] = {&src};
    ingest_config cfg = {.sources = srcs, .n_sources = 1, .endpoints = f.eps, .concurrency = 4};
    snprintf(cfg.zmq_endpoint, sizeof cfg.zmq_endpoint, "tcp://127.0.0.1:*");
    snprintf(cfg.topic_filter, sizeof cfg.topic_filter, "kv@");
    kv_err err = {0};
    if (!(f.g = ingest_start(&cfg, &err)))
        fail_msg("%s", err.msg);
    assert_int_equal(kvindex_endpoint_find(f.ix, "127.0.0.1:8000"), -1);
    assert_int_equal(epset_parse_list(f.eps, list, "test", NULL), KV_OK);
    for (int k = 0; k < 6; k++) {
        char topic[64];
        snprintf(topic, sizeof topic, "kv@127.0.0.1:%d@m", 9000 + k);
        pubs[k] = fake_pub_new(topic, false);
        assert_non_null(pubs[k]);
        assert_int_equal(fake_pub_connect(pubs[k], ingest_endpoint(f.g)), 0);
        warm_up(&f, pubs[k]);
        chain_make(&c[k + 1], &f.kc, 200 + (uint32_t)k);
    }
    reader_arg ra = {.f = &f, .c = &c[1]};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, reader, &ra), 0);
    for (size_t i = 0; i < CHAIN; i++)
        for (int k = 0; k < 6; k++) {
            char name[32];
            snprintf(name, sizeof name, "127.0.0.1:%d", 9000 + k);
            /* every pod stores every chain, its own first */
            for (int j = 0; j < 6; j++) {
                const chain *cc = &c[1 + (k + j) % 6];
                kvev_event e = chain_event(cc, i);
                kvev_batch b = {1.0, true, 0, &e, 1};
                fake_pub_send(pubs[k], &b, (kvev_encoding)(j % 3), false);
                ref_apply(&f, name, &b);
            }
        }
    WAIT_FOR(&f, batches, 6 * 6 * CHAIN);
    atomic_store(&ra.stop, true);
    pthread_join(th, NULL);
    assert_true(ra.lookups > 0);
    assert_true(st(&f).gaps == 0 && st(&f).orphans == 0);
    assert_same(&f, &c[1], 6);
    for (int k = 0; k < 6; k++)
        fake_pub_free(pubs[k]);
    fx_free(&f);
}

/* A data-parallel pod: three ranks publish under the pod's one topic (its first port),
 * each with its own sequence and its data_parallel_rank in the batch. Each rank's blocks
 * land on that rank's ip:port endpoint, the interleaved sequences make no gap, and a rank
 * the endpoint list does not have is rejected and counted. */
static void test_dp_ranks_map_to_endpoints(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "127.0.0.1:8000, 127.0.0.1:8001, 127.0.0.1:8002", false, 0, 0);
    fake_pub *p[4];
    for (int r = 0; r < 4; r++) {
        assert_non_null(p[r] = fake_pub_new("kv@127.0.0.1:8000@m", false));
        assert_int_equal(fake_pub_connect(p[r], ingest_endpoint(f.g)), 0);
        warm_up(&f, p[r]);
    }
    chain c[4];
    for (int r = 0; r < 4; r++)
        chain_make(&c[r], &f.kc, 300 + (uint32_t)r);
    uint64_t rejected = st(&f).rejected_pods;
    for (size_t i = 0; i < CHAIN; i++)
        for (int r = 0; r < 4; r++) {
            kvev_event e = chain_event(&c[r], i);
            kvev_batch b = {1.0, true, r == 3 ? 5 : r, &e, 1};
            fake_pub_send(p[r], &b, (kvev_encoding)(i % 3), false);
        }
    WAIT_FOR(&f, batches, 3 * CHAIN);
    WAIT_FOR(&f, rejected_pods, rejected + CHAIN);
    for (int r = 0; r < 3; r++) {
        char name[32];
        snprintf(name, sizeof name, "127.0.0.1:%d", 8000 + r);
        for (int q = 0; q < 4; q++)
            assert_int_equal(held(&f, name, &c[q]), q == r ? CHAIN : 0);
    }
    ingest_stats s = st(&f);
    assert_true(s.gaps == 0 && s.restarts == 0 && s.duplicates == 0 && s.orphans == 0);
    for (int r = 0; r < 4; r++)
        fake_pub_free(p[r]);
    fx_free(&f);
}

/* Discovery mode with data-parallel ranks: the SUB dials socketPort + rank for each rank's
 * endpoint (vLLM offsets each rank's PUB by its rank), and each rank's batches land on its
 * endpoint. */
static void test_dp_ranks_discovery(void **state)
{
    (void)state;
    fake_pub *p[2] = {fake_pub_new("kv@127.0.0.1:8000@m", false), fake_pub_new("kv@127.0.0.1:8000@m", false)};
    assert_true(p[0] && p[1]);
    int port = -1;
    for (int tries = 0; tries < 50 && port < 0; tries++) {   /* two adjacent free ports */
        fake_pub_free(p[0]);
        p[0] = fake_pub_new("kv@127.0.0.1:8000@m", false);
        int base = fake_pub_bind(p[0]);
        if (base > 0 && fake_pub_bind_port(p[1], base + 1) > 0)
            port = base;
    }
    assert_true(port > 0);
    fx f;
    fx_init(&f, "127.0.0.1:8000, 127.0.0.1:8001", true, port, 0);
    warm_up(&f, p[0]);
    warm_up(&f, p[1]);
    chain c[2];
    for (int r = 0; r < 2; r++) {
        chain_make(&c[r], &f.kc, 400 + (uint32_t)r);
        for (size_t i = 0; i < CHAIN; i++) {
            kvev_event e = chain_event(&c[r], i);
            kvev_batch b = {1.0, true, r, &e, 1};
            fake_pub_send(p[r], &b, KVEV_ENC_ARRAY, false);
        }
    }
    WAIT_FOR(&f, batches, 2 * CHAIN);
    assert_int_equal(held(&f, "127.0.0.1:8000", &c[0]), CHAIN);
    assert_int_equal(held(&f, "127.0.0.1:8001", &c[1]), CHAIN);
    assert_int_equal(held(&f, "127.0.0.1:8000", &c[1]), 0);
    assert_true(st(&f).gaps == 0);
    fake_pub_free(p[0]);
    fake_pub_free(p[1]);
    fx_free(&f);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_events_land),
    cmocka_unit_test(test_gap_replay),
    cmocka_unit_test(test_gap_no_replay),
    cmocka_unit_test(test_gap_replay_down),
    cmocka_unit_test(test_stray_and_malformed),
    cmocka_unit_test(test_discovery_and_many_pods),
    cmocka_unit_test(test_dp_ranks_map_to_endpoints),
    cmocka_unit_test(test_dp_ranks_discovery),
};

int main(void) { return cmocka_run_group_tests(tests, NULL, NULL); }
