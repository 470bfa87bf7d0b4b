/* test_epp_e2e: the daemon's modules wired as ./epp wires them, on loopback: vLLM-format
 * KV events from a fake publisher over ZMQ -> ingestion -> the precise scorer's index ->
 * an ext-proc request routed by Envoy's side of the protocol. The picked endpoint must
 * follow where the events say the prompt's blocks are, in both event encodings, and
 * move when a longer prefix appears elsewhere or the holder clears its cache; events
 * from a pod that is not an endpoint must not steer anything. */
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
    w->cfg = epc_load_string(CONFIG, strlen(CONFIG), "e2e.yaml", &err);
    if (!w->cfg)
        fail_msg("%s", err.msg);
    sched_env env = {.seed = 1, .now = clock_now};
    w->s = sched_new(w->cfg, &env, &err);
    if (!w->s)
        fail_msg("%s", err.msg);
    w->eps = epset_new(0, NULL, NULL, &err);
    assert_int_equal(epset_parse_list(w->eps, "10.1.0.1:8000,10.1.0.2:8000,10.1.0.3:8000", "test", &err), KV_OK);
    sched_kvsource *src = NULL;
    assert_int_equal(sched_services(w->s, "kvsource", (void **)&src, 1), 1);
    ingest_config ic;
    ingest_config_from_kvsource(&ic, src, w->eps);
    w->ing = ingest_start(&ic, &err);
    if (!w->ing)
        fail_msg("%s", err.msg);
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

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_routing_follows_events)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
