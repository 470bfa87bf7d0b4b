/* test_kvdiag: each cause of "the precise score is always 0" (live/kvdiag.h) produces its
 * counter and exactly one warning, through the real receive path: messages go through
 * ingest_feed (the receiver's topic filter and pod match, then a worker's decoding and
 * applying), requests through kvdiag_request as ./epp's decision hook calls it. The
 * clock is the test's, so staleness is judged on stated times, never on wall time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "endpoints.h"
#include "ingest.h"
#include "kvdiag.h"
#include "log.h"
#include "promexp.h"
#include "support/fake_publisher.h"
#include <unistd.h>

#define POD_A "10.0.0.1:8000"
#define POD_B "10.0.0.2:8000"
#define MODEL "Qwen/Qwen3-32B"
#define BS 16

typedef struct fx {
    double now;
    kvdiag *diag;
    sched_kvsource src;
    sched_kvsource *srcs[1];
    epset *eps;
    ingest *g;
    uint64_t seq;
    char warnings[8][1024];       /* the "scores will stay 0" warnings, as logged */
    int n_warnings;
} fx;


static void sink(void *ctx, const char *line)
{
    fx *f = ctx;
    if (strstr(line, "\"msg\":\"Precise prefix scores will stay 0\"") && f->n_warnings < 8)
        snprintf(f->warnings[f->n_warnings++], sizeof f->warnings[0], "%s", line);
}

static double clock_fn(void *ctx) { return ((fx *)ctx)->now; }

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    log_setup(0, sink, f);
    kvdiag_config dc = {.stale_after_s = 30, .now = clock_fn, .now_ctx = f};
    assert_non_null(f->diag = kvdiag_new(&dc, NULL));
    kvindex_config ic = {.capacity = 4096, .max_endpoints = 8};
    assert_non_null(f->src.index = kvindex_new(&ic, NULL));
    assert_int_equal(blockkeys_init(&f->src.keys, BLOCKKEYS_XXH64, BS, "", NULL), KV_OK);
    f->srcs[0] = &f->src;
    assert_non_null(f->eps = epset_new(0, NULL, NULL, NULL));
    assert_int_equal(epset_parse_list(f->eps, POD_A "," POD_B, "test", NULL), KV_OK);
    ingest_config cfg = {.sources = f->srcs, .n_sources = 1, .endpoints = f->eps, .diag = f->diag};
    snprintf(cfg.topic_filter, sizeof cfg.topic_filter, "kv@");
    assert_non_null(f->g = ingest_detached(&cfg, NULL));
    f->now = 100;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    ingest_stop(f->g);
    epset_free(f->eps);
    kvindex_free(f->src.index);
    kvdiag_free(f->diag);
    log_setup(0, NULL, NULL);
    free(f);
    return 0;
}

/* One message [topic, seq, a batch with one BlockStored of n_tok tokens in engine blocks
 * of engine_bs] through the receiver and a worker. */
static void feed(fx *f, const char *topic, uint32_t engine_bs, size_t n_tok)
{
    uint32_t tok[256];
    uint64_t hashes[256];
    for (size_t i = 0; i < n_tok; i++)
        tok[i] = (uint32_t)(7 + i * 13);
    size_t nh = engine_bs ? n_tok / engine_bs : 0;
    for (size_t i = 0; i < nh; i++)
        hashes[i] = f->seq * 1000 + i + 1;
    kvev_event e = {.type = KVEV_BLOCK_STORED, .block_hashes = hashes, .n_block_hashes = nh, .token_ids = tok,
                    .n_token_ids = n_tok, .block_size = engine_bs};
    kvev_batch b = {.ts = 1.0, .events = &e, .n_events = 1};
    kvev_buf buf = {0};
    assert_int_equal(kvev_encode(&b, KVEV_ENC_ARRAY, &buf, NULL), KV_OK);
    uint8_t seq[8];
    for (int i = 0; i < 8; i++)
        seq[i] = (uint8_t)(f->seq >> (56 - 8 * i));
    f->seq++;
    ingest_frame fr[3] = {{topic, strlen(topic)}, {seq, 8}, {buf.data, buf.len}};
    ingest_feed(f->g, fr, 3);
    kvev_buf_free(&buf);
}

static uint64_t count(fx *f, kvdiag_reason r)
{
    uint64_t n[KVDIAG_REASON_COUNT];
    kvdiag_counts(f->diag, n);
    return n[r];
}

/* The other reasons stayed at 0: each cause is told apart. */
static void only(fx *f, kvdiag_reason r, uint64_t want)
{
    for (int k = 0; k < KVDIAG_REASON_COUNT; k++)
        assert_int_equal(count(f, (kvdiag_reason)k), k == (int)r ? want : 0);
}

static json_t *warning(fx *f, int i)
{
    json_t *o = json_loads(f->warnings[i], 0, NULL);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "level")), "warn");
    return o;
}

static void test_empty_topic(void **state)
{
    fx *f = *state;
    feed(f, "", BS, 64);
    feed(f, "", BS, 64);
    only(f, KVDIAG_EMPTY_TOPIC, 2);
    ingest_stats st;
    ingest_get_stats(f->g, &st);
    assert_int_equal(st.messages, 2);   /* received and counted, as before the filter */
    assert_int_equal(st.batches, 0);    /* ... and never applied */
    assert_int_equal(f->n_warnings, 1);
    json_t *w = warning(f, 0);
    assert_string_equal(json_string_value(json_object_get(w, "reason")), "empty_topic");
    assert_non_null(strstr(json_string_value(json_object_get(w, "fix")), "\"topic\":\"kv@<ip:port"));
    json_decref(w);
    json_t *issues = kvdiag_issues_json(f->diag);
    assert_int_equal(json_array_size(issues), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(issues, 0), "count")), 2);
    json_decref(issues);
}

static void test_foreign_topic(void **state)
{
    fx *f = *state;
    feed(f, "vllm-kv-events", BS, 64);
    feed(f, "vllm-kv-events", BS, 64);
    feed(f, "kv@" POD_A "@" MODEL, BS, 64);   /* a good one is not counted */
    only(f, KVDIAG_FOREIGN_TOPIC, 2);
    assert_int_equal(f->n_warnings, 1);
    json_t *w = warning(f, 0);
    assert_string_equal(json_string_value(json_object_get(w, "model")), "vllm-kv-events");
    assert_non_null(strstr(json_string_value(json_object_get(w, "fix")), "topicFilter 'kv@'"));
    json_decref(w);
}

static void test_model_mismatch_after_requests(void **state)
{
    fx *f = *state;
    kvdiag_request(f->diag, "qwen", POD_A);   /* an alias: vLLM serves Qwen/Qwen3-32B */
    feed(f, "kv@" POD_A "@" MODEL, BS, 64);
    feed(f, "kv@" POD_A "@" MODEL, BS, 64);
    only(f, KVDIAG_MODEL_MISMATCH, 2);
    assert_int_equal(f->n_warnings, 1);
    json_t *w = warning(f, 0);
    assert_string_equal(json_string_value(json_object_get(w, "pod")), POD_A);
    assert_string_equal(json_string_value(json_object_get(w, "model")), MODEL);
    const char *fix = json_string_value(json_object_get(w, "fix"));
    assert_non_null(strstr(fix, "events for model " MODEL " on pod " POD_A ", requests ask for qwen: set "
                                "--served-model-name"));
    assert_non_null(strstr(fix, "scorer's modelName"));
    json_decref(w);
    /* the events were applied all the same: the index holds them under the topic's model */
    ingest_stats st;
    ingest_get_stats(f->g, &st);
    assert_int_equal(st.batches, 2);
    assert_true(st.blocks_stored > 0);
}

static void test_model_mismatch_before_requests(void **state)
{
    fx *f = *state;
    feed(f, "kv@" POD_A "@" MODEL, BS, 64);   /* no request yet: nothing to compare with */
    only(f, KVDIAG_MODEL_MISMATCH, 0);
    kvdiag_request(f->diag, "qwen", POD_A);
    only(f, KVDIAG_MODEL_MISMATCH, 1);
    kvdiag_request(f->diag, MODEL, POD_A);    /* now both are asked for: no more */
    feed(f, "kv@" POD_A "@" MODEL, BS, 64);
    only(f, KVDIAG_MODEL_MISMATCH, 1);
    assert_int_equal(f->n_warnings, 1);
    json_t *models = kvdiag_models_json(f->diag);
    assert_int_equal(json_array_size(models), 2);
    json_decref(models);
}

/* Requests for the pods' model work; then requests arrive under an alias: each of them
 * is counted (none can match), the pods publishing are named once. */
static void test_model_alias_after_good_requests(void **state)
{
    fx *f = *state;
    kvdiag_request(f->diag, MODEL, POD_A);
    feed(f, "kv@" POD_A "@" MODEL, BS, 64);
    only(f, KVDIAG_MODEL_MISMATCH, 0);
    kvdiag_request(f->diag, "qwen", POD_A);
    kvdiag_request(f->diag, "qwen", POD_B);
    only(f, KVDIAG_MODEL_MISMATCH, 2);
    assert_int_equal(f->n_warnings, 1);
    json_t *w = warning(f, 0);
    assert_string_equal(json_string_value(json_object_get(w, "pod")), POD_A);
    assert_non_null(strstr(json_string_value(json_object_get(w, "fix")),
                           "events for model " MODEL " on pod " POD_A ", requests ask for qwen"));
    json_decref(w);
    feed(f, "kv@" POD_A "@" MODEL, BS, 64);   /* MODEL is asked for too: its events are fine */
    only(f, KVDIAG_MODEL_MISMATCH, 2);
}

static void test_stale(void **state)
{
    fx *f = *state;
    kvdiag_request(f->diag, MODEL, POD_B);    /* POD_B never publishes */
    f->now += 29;
    kvdiag_check(f->diag);
    only(f, KVDIAG_STALE, 0);                 /* not yet: vLLM has had 29 s */
    feed(f, "kv@" POD_A "@" MODEL, BS, 64);   /* another pod's events do not help POD_B */
    f->now += 2;
    kvdiag_check(f->diag);
    only(f, KVDIAG_STALE, 1);
    kvdiag_check(f->diag);
    only(f, KVDIAG_STALE, 1);                 /* once per episode */
    assert_int_equal(f->n_warnings, 1);
    json_t *w = warning(f, 0);
    assert_string_equal(json_string_value(json_object_get(w, "pod")), POD_B);
    assert_non_null(strstr(json_string_value(json_object_get(w, "fix")), "never sent a KV event"));
    json_decref(w);
    json_t *p = kvdiag_pod_json(f->diag, POD_B);
    assert_true(json_is_null(json_object_get(p, "lastEventAgeSeconds")));
    assert_true(json_is_true(json_object_get(p, "stale")));
    assert_int_equal(json_integer_value(json_object_get(p, "routedSinceLastEvent")), 1);
    json_decref(p);

    /* POD_A published, then was routed to and fell silent: a second episode of another pod */
    kvdiag_request(f->diag, MODEL, POD_A);
    f->now += 31;
    kvdiag_request(f->diag, MODEL, POD_A);    /* the check rides on a request */
    only(f, KVDIAG_STALE, 2);
    assert_int_equal(f->n_warnings, 2);
    assert_non_null(strstr(f->warnings[1], "sent no KV event since its last one"));
    /* events resume: the pod is fresh again; a new silence counts again, without a new warning */
    feed(f, "kv@" POD_A "@" MODEL, BS, 64);
    p = kvdiag_pod_json(f->diag, POD_A);
    assert_int_equal(json_integer_value(json_object_get(p, "routedSinceLastEvent")), 0);
    assert_true(json_is_false(json_object_get(p, "stale")));
    assert_int_equal(json_integer_value(json_object_get(p, "messages")), 2);
    json_decref(p);
    kvdiag_request(f->diag, MODEL, POD_A);
    f->now += 40;
    kvdiag_check(f->diag);
    only(f, KVDIAG_STALE, 3);
    assert_int_equal(f->n_warnings, 2);
}

static void test_block_size(void **state)
{
    fx *f = *state;
    feed(f, "kv@" POD_A "@" MODEL, 32, 64);   /* a multiple of the index's 16: keyed fine */
    only(f, KVDIAG_BLOCK_SIZE, 0);
    feed(f, "kv@" POD_A "@" MODEL, 8, 8);     /* 8-token blocks: shorter than one index block */
    feed(f, "kv@" POD_A "@" MODEL, 8, 8);
    only(f, KVDIAG_BLOCK_SIZE, 2);
    feed(f, "kv@" POD_B "@" MODEL, 24, 48);   /* not a multiple: tokens left over per block */
    only(f, KVDIAG_BLOCK_SIZE, 3);
    assert_int_equal(f->n_warnings, 2);       /* one per pod */
    json_t *w = warning(f, 0);
    assert_non_null(strstr(json_string_value(json_object_get(w, "fix")),
                           "stores blocks of 8 tokens, the index keys blocks of 16 (tokenProcessorConfig.blockSize): "
                           "set blockSize: 8, or start vLLM with --block-size 16"));
    json_decref(w);
}

/* The counters reach /metrics by reason. */
static void test_metrics(void **state)
{
    fx *f = *state;
    feed(f, "", BS, 64);
    promexp_sources src = {.pool_name = "p", .diag = f->diag};
    promexp *p = promexp_start(-1, &src, NULL);
    assert_non_null(p);
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    promexp_write(p, m);
    fclose(m);
    assert_non_null(strstr(buf, "# TYPE kvroute_score_zero_causes_total counter\n"));
    assert_non_null(strstr(buf, "kvroute_score_zero_causes_total{reason=\"empty_topic\"} 1\n"));
    assert_non_null(strstr(buf, "kvroute_score_zero_causes_total{reason=\"model_mismatch\"} 0\n"));
    free(buf);
    promexp_stop(p);
}

/* Over sockets, as vLLM sends it: the SUB takes every topic, so a pod publishing on the
 * default empty topic is seen, counted and named by its address (libzmq's Peer-Address). */
static void test_empty_topic_socket(void **state)
{
    fx *f = *state;
    ingest_config cfg = {.sources = f->srcs, .n_sources = 1, .endpoints = f->eps, .diag = f->diag,
                         .concurrency = 1};
    snprintf(cfg.topic_filter, sizeof cfg.topic_filter, "kv@");
    snprintf(cfg.zmq_endpoint, sizeof cfg.zmq_endpoint, "tcp://127.0.0.1:*");
    ingest *g = ingest_start(&cfg, NULL);
    assert_non_null(g);
    fake_pub *pub = fake_pub_new("", false);   /* vLLM's KVEventsConfig.topic default */
    assert_int_equal(fake_pub_connect(pub, ingest_endpoint(g)), 0);
    uint32_t tok[BS] = {1};
    uint64_t h = 1;
    kvev_event e = {.type = KVEV_BLOCK_STORED, .block_hashes = &h, .n_block_hashes = 1, .token_ids = tok,
                    .n_token_ids = BS, .block_size = BS};
    kvev_batch b = {.ts = 1.0, .events = &e, .n_events = 1};
    /* a PUB drops what it sends before the connection is up: send until one is seen */
    for (int i = 0; i < 500 && !count(f, KVDIAG_EMPTY_TOPIC); i++) {
        fake_pub_send(pub, &b, KVEV_ENC_ARRAY, false);
        usleep(10000);
    }
    assert_true(count(f, KVDIAG_EMPTY_TOPIC) >= 1);
    fake_pub_free(pub);
    ingest_stop(g);
    json_t *issues = kvdiag_issues_json(f->diag);
    assert_int_equal(json_array_size(issues), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(issues, 0), "pod")), "127.0.0.1");
    json_decref(issues);
    assert_int_equal(f->n_warnings, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_empty_topic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreign_topic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_model_mismatch_after_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_model_mismatch_before_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_model_alias_after_good_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale, setup, teardown),
        cmocka_unit_test_setup_teardown(test_block_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_topic_socket, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
