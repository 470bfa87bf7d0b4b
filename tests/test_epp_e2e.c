/* test_epp_e2e: the daemon's modules wired as ./epp wires them, on loopback: vLLM-format
 * KV events from a fake publisher over ZMQ -> ingestion -> the precise scorer's index ->
 * an ext-proc request routed by Envoy's side of the protocol. The picked endpoint must
 * follow where the events say the prompt's blocks are, in both event encodings, and
 * move when a longer prefix appears elsewhere or the holder clears its cache; events
 * from a pod that is not an endpoint must not steer anything. A config with several
 * precise scorers (different block sizes, seeds and kvEventsConfigs) has every one of
 * their indexes fed, as ./sim feeds them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "registry.h"
#include "endpoints.h"
#include "extproc.h"
#include "ingest.h"
#include "support/extproc_client.h"
#include "support/fake_publisher.h"

static const char CONFIG[] =
    "plugins:\n"
    "- type: precise-prefix-cache-scorer\n"
    "  parameters:\n"
    "    tokenProcessorConfig: {blockSize: 16}\n"
    "    kvEventsConfig: {zmqEndpoint: \"tcp://127.0.0.1:*\", discoverPods: false}\n"
    "- type: queue-scorer\n"
    "schedulingProfiles:\n"
    "- name: default\n"
    "  plugins:\n"
    "  - {pluginRef: precise-prefix-cache-scorer, weight: 3}\n"
    "  - {pluginRef: queue-scorer, weight: 1}\n";

#define N_TOK 64

typedef struct world {
    epc_config *cfg;
    sched *s;
    epset *eps;
    ingest *ing;
    extproc_server *srv;
    xpc_client *cli;
    uint32_t tok[N_TOK];
    char *body;
} world;

static double clock_now(void *ctx) { return 0; }

static world *world_new(void)
{
    world *w = calloc(1, sizeof *w);
    kv_err err = {0};
    w->cfg = epc_load_string(CONFIG, strlen(CONFIG), "e2e.yaml", registry_types, &err);
    if (!w->cfg)
        fail_msg("%s", err.msg);
    sched_env env = {.seed = 1, .now = clock_now};
    w->s = sched_new(w->cfg, &env, &err);
    if (!w->s)
        fail_msg("%s", err.msg);
    w->eps = epset_new(0, NULL, NULL, &err);
    assert_int_equal(epset_parse_list(w->eps, "10.1.0.1:8000,10.1.0.2:8000,10.1.0.3:8000", "test", &err), KV_OK);
    sched_kvsource *src = NULL;
    assert_int_equal(pps_kvsources(w->s, &src, 1), 1);
    size_t n_ing = 0;
    if (ingest_start_sources(&src, 1, w->eps, NULL, &w->ing, &n_ing, &err) != KV_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(n_ing, 1);
    extproc_config xc = {.addr = "127.0.0.1:0", .sched = w->s, .pool = {epset_acquire, epset_release, w->eps},
                         .threads = 2, .tokenize_timeout_ms = -1};
    w->srv = extproc_start(&xc, &err);
    if (!w->srv)
        fail_msg("%s", err.msg);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", extproc_port(w->srv));
    w->cli = xpc_connect(target, NULL, NULL);
    for (size_t i = 0; i < N_TOK; i++)
        w->tok[i] = (uint32_t)(300 + 7 * i);
    size_t cap = 64 + N_TOK * 12, len = (size_t)snprintf(w->body = malloc(cap), cap, "{\"model\":\"m\",\"prompt\":[");
    for (size_t i = 0; i < N_TOK; i++)
        len += (size_t)snprintf(w->body + len, cap - len, "%s%u", i ? "," : "", w->tok[i]);
    snprintf(w->body + len, cap - len, "]}");
    return w;
}

static void world_free(world *w)
{
    xpc_disconnect(w->cli);
    extproc_stop(w->srv);
    ingest_stop(w->ing);
    sched_free(w->s);
    epc_free(w->cfg);
    epset_free(w->eps);
    free(w->body);
    free(w);
}

static const char *route(world *w)
{
    static char dest[64];
    const char *hdrs[] = {":path", "/v1/completions", NULL};
    xpc_stream *s = xpc_open(w->cli, 5000);
    assert_int_equal(xpc_send_request_headers(s, hdrs, false, NULL, 0, 0), 0);
    assert_int_equal(xpc_send_body(s, false, w->body, strlen(w->body), true), 0);
    xpc_resp *r = xpc_recv(s, 5000);
    assert_non_null(r);
    const char *d = xpc_dest_metadata(r);
    assert_non_null(d);
    snprintf(dest, sizeof dest, "%s", d);
    xpc_resp_free(r);
    xpc_close(s);
    return dest;
}

/* Publishes BlockStored for the first n_blocks blocks of the prompt until ingestion has
 * applied at least one more batch (ZMQ drops messages sent before the connection is up). */
static void publish_blocks(world *w, fake_pub *p, size_t n_blocks, kvev_encoding enc)
{
    uint64_t hashes[N_TOK / 16];
    for (size_t i = 0; i < n_blocks; i++)
        hashes[i] = 0xabc000 + i + 100 * (uint64_t)enc;
    kvev_event e = {.type = KVEV_BLOCK_STORED, .block_hashes = hashes, .n_block_hashes = n_blocks,
                    .token_ids = w->tok, .n_token_ids = n_blocks * 16, .block_size = 16, .medium = kvev_str_c("GPU")};
    kvev_batch b = {1.0, false, 0, &e, 1};
    ingest_stats st;
    ingest_get_stats(w->ing, &st);
    uint64_t before = st.batches;
    for (int i = 0; i < 400; i++) {
        fake_pub_send(p, &b, enc, false);
        usleep(10000);
        ingest_get_stats(w->ing, &st);
        if (st.batches > before)
            return;
    }
    fail_msg("ingestion applied nothing in 4 s");
}

static void publish_clear(world *w, fake_pub *p)
{
    kvev_event e = {.type = KVEV_ALL_BLOCKS_CLEARED};
    kvev_batch b = {2.0, false, 0, &e, 1};
    ingest_stats st;
    ingest_get_stats(w->ing, &st);
    uint64_t before = st.events[KVEV_ALL_BLOCKS_CLEARED];
    fake_pub_send(p, &b, KVEV_ENC_ARRAY, false);
    for (int i = 0; i < 400 && st.events[KVEV_ALL_BLOCKS_CLEARED] == before; i++) {
        usleep(10000);
        ingest_get_stats(w->ing, &st);
    }
    assert_true(st.events[KVEV_ALL_BLOCKS_CLEARED] > before);
}

static void test_routing_follows_events(void **state)
{
    world *w = world_new();
    const char *zmq = ingest_endpoint(w->ing);
    fake_pub *p2 = fake_pub_new("kv@10.1.0.2:8000@m", false);
    fake_pub *p3 = fake_pub_new("kv@10.1.0.3@m", false); /* v0.5-style bare ip topic */
    fake_pub *stray = fake_pub_new("kv@10.9.9.9:8000@m", false);
    assert_int_equal(fake_pub_connect(p2, zmq), 0);
    assert_int_equal(fake_pub_connect(p3, zmq), 0);
    assert_int_equal(fake_pub_connect(stray, zmq), 0);

    publish_blocks(w, p2, 2, KVEV_ENC_ARRAY);         /* 2 of 4 blocks on .2 */
    assert_string_equal(route(w), "10.1.0.2:8000");
    publish_blocks(w, p3, 4, KVEV_ENC_MAP_EVENTS);    /* all 4 on .3, the newer encoding */
    assert_string_equal(route(w), "10.1.0.3:8000");

    /* a stray publisher claiming everything changes nothing */
    uint64_t h[4] = {1, 2, 3, 4};
    kvev_event e = {.type = KVEV_BLOCK_STORED, .block_hashes = h, .n_block_hashes = 4, .token_ids = w->tok,
                    .n_token_ids = N_TOK, .block_size = 16};
    kvev_batch b = {1.0, false, 0, &e, 1};
    ingest_stats st;
    for (int i = 0; i < 400; i++) {
        fake_pub_send(stray, &b, KVEV_ENC_ARRAY, false);
        usleep(10000);
        ingest_get_stats(w->ing, &st);
        if (st.rejected_pods > 0)
            break;
    }
    assert_true(st.rejected_pods > 0);
    assert_string_equal(route(w), "10.1.0.3:8000");

    publish_clear(w, p3);                              /* .3 drops its cache */
    assert_string_equal(route(w), "10.1.0.2:8000");

    fake_pub_free(p2);
    fake_pub_free(p3);
    fake_pub_free(stray);
    world_free(w);
}

/* a and b share a kvEventsConfig (one subscription), c has its own; all three differ in
 * block size or hash seed, so each index holds its own keys for the same events. */
static const char THREE[] =
    "plugins:\n"
    "- {type: precise-prefix-cache-scorer, name: a, parameters: {tokenProcessorConfig: {blockSize: 16},\n"
    "   kvEventsConfig: {zmqEndpoint: \"tcp://127.0.0.1:*\", discoverPods: false}}}\n"
    "- {type: precise-prefix-cache-scorer, name: b, parameters: {tokenProcessorConfig: {blockSize: 32, hashSeed: s},\n"
    "   kvEventsConfig: {zmqEndpoint: \"tcp://127.0.0.1:*\", discoverPods: false}}}\n"
    "- {type: precise-prefix-cache-scorer, name: c, parameters: {tokenProcessorConfig: {blockSize: 16, hashSeed: c},\n"
    "   kvEventsConfig: {zmqEndpoint: \"tcp://127.0.0.1:*\", discoverPods: false, concurrency: 2}}}\n";

/* The leading blocks of tok that src's index says the endpoint holds. */
static uint32_t held(const sched_kvsource *src, const char *name, const uint32_t *tok, size_t n)
{
    uint64_t keys[N_TOK];
    size_t nk = blockkeys_compute(&src->keys, blockkeys_root(&src->keys, "m"), tok, n, NULL, 0, NULL, keys, N_TOK);
    int slot = kvindex_endpoint_find(src->index, name);
    if (slot < 0)
        return 0;
    kvindex_match m[256];
    assert_true(kvindex_max_endpoints(src->index) <= 256);
    kvindex_lookup(src->index, keys, nk, m);
    return m[slot].blocks;
}

static void test_every_precise_scorer_fed(void **state)
{
    kv_err err = {0};
    epc_config *cfg = epc_load_string(THREE, strlen(THREE), "three.yaml", registry_types, &err);
    if (!cfg)
        fail_msg("%s", err.msg);
    sched_env env = {.seed = 1, .now = clock_now};
    sched *s = sched_new(cfg, &env, &err);
    if (!s)
        fail_msg("%s", err.msg);
    epset *eps = epset_new(0, NULL, NULL, &err);
    assert_int_equal(epset_parse_list(eps, "10.1.0.1:8000,10.1.0.2:8000", "test", &err), KV_OK);
    sched_kvsource *srcs[3];
    assert_int_equal(pps_kvsources(s, srcs, 3), 3);
    ingest *ings[3];
    size_t n_ing = 0;
    if (ingest_start_sources(srcs, 3, eps, NULL, ings, &n_ing, &err) != KV_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(n_ing, 2);
    size_t n0, n1;
    const sched_kvsource *fed0 = ingest_sources(ings[0], &n0), *fed1 = ingest_sources(ings[1], &n1);
    assert_int_equal(n0, 2);
    assert_int_equal(n1, 1);
    assert_ptr_equal(fed0[0].index, srcs[0]->index);
    assert_ptr_equal(fed0[1].index, srcs[1]->index);
    assert_ptr_equal(fed1[0].index, srcs[2]->index);

    /* one vLLM pod publishing to both subscriptions */
    fake_pub *p = fake_pub_new("kv@10.1.0.2:8000@m", false);
    assert_int_equal(fake_pub_connect(p, ingest_endpoint(ings[0])), 0);
    assert_int_equal(fake_pub_connect(p, ingest_endpoint(ings[1])), 0);
    uint32_t tok[N_TOK];
    uint64_t hashes[N_TOK / 16];
    for (size_t i = 0; i < N_TOK; i++)
        tok[i] = (uint32_t)(900 + 3 * i);
    for (size_t i = 0; i < N_TOK / 16; i++)
        hashes[i] = 0xfeed00 + i;
    kvev_event e = {.type = KVEV_BLOCK_STORED, .block_hashes = hashes, .n_block_hashes = N_TOK / 16, .token_ids = tok,
                    .n_token_ids = N_TOK, .block_size = 16, .medium = kvev_str_c("GPU")};
    kvev_batch b = {1.0, false, 0, &e, 1};
    const uint32_t want[3] = {N_TOK / 16, N_TOK / 32, N_TOK / 16};
    bool all = false;
    for (int i = 0; i < 400 && !all; i++) {
        fake_pub_send(p, &b, KVEV_ENC_ARRAY, false);
        usleep(10000);
        all = true;
        for (size_t k = 0; k < 3; k++)
            all &= held(srcs[k], "10.1.0.2:8000", tok, N_TOK) == want[k];
    }
    for (size_t k = 0; k < 3; k++)
        assert_int_equal(held(srcs[k], "10.1.0.2:8000", tok, N_TOK), want[k]);
    assert_int_equal(held(srcs[0], "10.1.0.1:8000", tok, N_TOK), 0);

    fake_pub_free(p);
    while (n_ing)
        ingest_stop(ings[--n_ing]);
    sched_free(s);
    epc_free(cfg);
    epset_free(eps);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_routing_follows_events),
                                       cmocka_unit_test(test_every_precise_scorer_fed)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
