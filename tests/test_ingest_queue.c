/* test_ingest_queue: the KV-event backlog bound (ingest.h, "Backlog bound") on loopback.
 * The ingest worker is held without signals or test hooks: a sequence gap makes it ask
 * the pod's replay socket for the missing batches, and the test's replay ROUTER does not
 * answer until the test says so. While it waits, a publisher burst far larger than the
 * budget arrives: the hand-off queue must stay within its half of the budget, the
 * excess is dropped and counted, and every dropped batch shows up as a missed one once
 * the pod's next message is seen. When the backlog drains, the queue is empty again and
 * memory was handed back (malloc_trim counted). Every wait is bounded and polls counters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <zmq.h>

#include "endpoints.h"
#include "ingest.h"
#include "log.h"
#include "support/fake_publisher.h"

#define BS 16
#define BLOCKS 256                /* per batch: about 23 KB encoded */
#define BURST 200                 /* batches: about 4.6 MB against a 1 MiB hand-off queue */
#define QUEUE_BYTES ((size_t)2 << 20)
#define POD "127.0.0.1:8000"

static void quiet(void *ctx, const char *line) { (void)ctx; (void)line; }

typedef struct fx {
    blockkeys_ctx kc;
    kvindex *ix;
    epset *eps;
    ingest *g;
    void *zctx, *router;          /* the pod's replay socket, answered by the test */
    fake_pub *pub;
    uint32_t tok[BLOCKS * BS];
    uint64_t hash[BLOCKS];
} fx;

static ingest_stats st(fx *f)
{
    ingest_stats s;
    ingest_get_stats(f->g, &s);
    return s;
}

/* Answers every pending replay request with the end marker (nothing buffered), so the
 * worker's fetch returns at once; true if one was answered. */
static bool answer_replays(fx *f)
{
    bool any = false;
    for (;;) {
        zmq_msg_t id;
        zmq_msg_init(&id);
        if (zmq_msg_recv(&id, f->router, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&id);
            return any;
        }
        while (zmq_msg_more(&id)) {   /* ["", start seq]: not needed */
            zmq_msg_t m;
            zmq_msg_init(&m);
            zmq_msg_recv(&m, f->router, 0);
            int more = zmq_msg_more(&m);
            zmq_msg_close(&m);
            if (!more)
                break;
        }
        uint8_t end[8];
        memset(end, 0xff, sizeof end);
        zmq_msg_send(&id, f->router, ZMQ_SNDMORE);
        zmq_send(f->router, "", 0, ZMQ_SNDMORE);
        zmq_send(f->router, end, sizeof end, ZMQ_SNDMORE);
        zmq_send(f->router, "", 0, 0);
        any = true;
    }
}

/* Polls until field >= want (10 s at most); replay requests are answered meanwhile when
 * serve is set. */
#define WAIT_FOR(f, field, want, serve)                                       \
    do {                                                                      \
        for (int t_ = 0; t_ < 2000 && st(f).field < (uint64_t)(want); t_++) { \
            if (serve)                                                        \
                answer_replays(f);                                            \
            usleep(5000);                                                     \
        }                                                                     \
        assert_true(st(f).field >= (uint64_t)(want));                         \
    } while (0)

static void send_batch(fx *f, bool drop)
{
    kvev_event e = {.type = KVEV_BLOCK_STORED, .block_hashes = f->hash, .n_block_hashes = BLOCKS,
                    .token_ids = f->tok, .n_token_ids = BLOCKS * BS, .block_size = BS,
                    .medium = kvev_str_c("GPU")};
    kvev_batch b = {.events = &e, .n_events = 1};
    fake_pub_send(f->pub, &b, KVEV_ENC_MAP_EVENTS, drop);
}

static void fx_init(fx *f)
{
    memset(f, 0, sizeof *f);
    log_setup(0, quiet, NULL);
    for (size_t i = 0; i < BLOCKS * BS; i++)
        f->tok[i] = 100000u + (uint32_t)i * 37u;
    for (size_t i = 0; i < BLOCKS; i++)
        f->hash[i] = 0x9e3779b97f4a7c15ull * (i + 1);
    assert_int_equal(blockkeys_init(&f->kc, BLOCKKEYS_FNV64A_CBOR, BS, "", NULL), KV_OK);
    kvindex_config ic = {.capacity = 100000, .max_endpoints = 4};
    assert_non_null(f->ix = kvindex_new(&ic, NULL));
    f->eps = epset_new(0, NULL, NULL, NULL);
    kv_err err = {0};
    if (epset_parse_list(f->eps, POD, "test", &err) != KV_OK)
        fail_msg("%s", err.msg);

    f->zctx = zmq_ctx_new();
    f->router = zmq_socket(f->zctx, ZMQ_ROUTER);
    int zero = 0;
    zmq_setsockopt(f->router, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_bind(f->router, "tcp://127.0.0.1:*"), 0);
    char bound[64];
    size_t bl = sizeof bound;
    zmq_getsockopt(f->router, ZMQ_LAST_ENDPOINT, bound, &bl);

    sched_kvsource src = {.index = f->ix, .keys = f->kc}, *srcs[] = {&src};
    ingest_config cfg = {.sources = srcs, .n_sources = 1, .endpoints = f->eps, .concurrency = 1,
                         .replay_port = atoi(strrchr(bound, ':') + 1), .replay_timeout_ms = 20000,
                         .queue_bytes = QUEUE_BYTES};
    snprintf(cfg.zmq_endpoint, sizeof cfg.zmq_endpoint, "tcp://127.0.0.1:*");
    snprintf(cfg.topic_filter, sizeof cfg.topic_filter, "kv@");
    if (!(f->g = ingest_start(&cfg, &err)))
        fail_msg("%s", err.msg);
    assert_non_null(f->pub = fake_pub_new("kv@" POD "@m", false));
    assert_int_equal(fake_pub_connect(f->pub, ingest_endpoint(f->g)), 0);
}

static void fx_free(fx *f)
{
    fake_pub_free(f->pub);
    ingest_stop(f->g);
    zmq_close(f->router);
    zmq_ctx_term(f->zctx);
    kvindex_free(f->ix);
    epset_free(f->eps);
}

static void test_backlog_bound(void **state)
{
    fx f;
    fx_init(&f);
    ingest_stats s0 = st(&f);
    assert_int_equal(s0.queue_limit_bytes, QUEUE_BYTES);
    assert_int_equal(s0.queued_bytes, 0);

    /* seq 0 once the subscription is live (PUB/SUB slow joiner: resend until applied) */
    for (int i = 0; i < 400 && st(&f).batches == 0; i++) {
        fake_pub_restart(f.pub);
        send_batch(&f, false);
        usleep(10000);
    }
    assert_int_equal(st(&f).batches, 1);

    /* seq 1 is lost, seq 2 makes the worker ask for it and wait on the silent ROUTER */
    send_batch(&f, true);
    send_batch(&f, false);
    WAIT_FOR(&f, replays, 1, false);

    uint64_t m0 = st(&f).messages;
    for (int i = 0; i < BURST; i++)
        send_batch(&f, false);
    /* the receiver takes all of it while the worker is held: what it could not queue is
     * dropped (a burst of 200 batches cannot fit in 1 MiB) */
    WAIT_FOR(&f, messages, m0 + BURST, false);
    ingest_stats held = st(&f);
    assert_true(held.queue_dropped > BURST / 2);
    assert_true(held.queued_bytes <= QUEUE_BYTES / 2);
    assert_true(held.queue_peak_bytes <= QUEUE_BYTES / 2);
    assert_true(held.queue_peak_bytes > QUEUE_BYTES / 4);   /* it did fill up */
    assert_int_equal(held.batches, 1);                       /* the worker really was held */

    /* release the worker: it drains the queue; one more batch shows the last gap */
    uint64_t applied = BURST + 3 - st(&f).queue_dropped - 1;   /* all sent, less dropped, less seq 1 */
    WAIT_FOR(&f, batches, applied, true);
    send_batch(&f, false);
    WAIT_FOR(&f, batches, applied + 1, true);

    ingest_stats s = st(&f);
    assert_int_equal(s.queued_bytes, 0);
    assert_true(s.queue_peak_bytes <= QUEUE_BYTES / 2);
    assert_int_equal(s.queue_dropped, held.queue_dropped);
    /* every batch not applied was seen missing: seq 1 and each dropped one */
    assert_int_equal(s.missed, s.queue_dropped + 1);
    assert_int_equal(s.lost, s.missed);
    assert_int_equal(s.stale_endpoints, 1);
    assert_int_equal(s.batches + s.queue_dropped + 1, BURST + 4);
    /* the drained backlog is handed back a second after it was last seen, once (the
     * trailing gap's batch alone is far below the mark) */
    WAIT_FOR(&f, memory_trims, 1, true);
    usleep(1500 * 1000);
    assert_int_equal(st(&f).memory_trims, 1);
    fx_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backlog_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
