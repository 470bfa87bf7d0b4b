/* tsan_extproc: many concurrent ext-proc streams through the server's worker threads,
 * built with ThreadSanitizer: per-stream state, the scheduler lock, the endpoint pool,
 * in-flight accounting and shutdown must be race-free. Every request carries a prompt
 * cached on exactly one endpoint, so every answer is known in advance; in-flight counts
 * must return to zero once every stream is done. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "extproc.h"
#include "support/extproc_client.h"
#include "support/sched_fixture.h"

/* gRPC core and Abseil are not built with TSan, so their internal synchronisation is
 * invisible to it; reports whose stacks run through them are suppressed. Our own state
 * (worker threads after grpc_completion_queue_next returned, scheduler, pool) is still
 * checked: those stacks hold no gRPC frames. */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void)
{
    return "race:libgrpc.so\nrace:libgpr.so\nrace:libabsl_\nrace:libupb.so\n"
           "called_from_lib:libgrpc.so\ncalled_from_lib:libgpr.so\n"
           "deadlock:libgrpc.so\nmutex:libgrpc.so\n";
}

#define CLIENTS 4
#define PER_CLIENT 40

static const char CONFIG[] =
    "plugins:\n"
    "- type: precise-prefix-cache-scorer\n"
    "  parameters:\n"
    "    tokenProcessorConfig: {blockSize: 16}\n"
    "- type: queue-scorer\n"
    "- type: active-request-scorer\n"
    "schedulingProfiles:\n"
    "- name: default\n"
    "  plugins:\n"
    "  - {pluginRef: precise-prefix-cache-scorer, weight: 10}\n"
    "  - {pluginRef: queue-scorer}\n"
    "  - {pluginRef: active-request-scorer}\n";

typedef struct shared {
    fx *f;
    pthread_mutex_t pool_mu;
    xpc_client *cli;
    int wrong[CLIENTS];
} shared;

typedef struct arg {
    shared *sh;
    int k;
} arg;

static size_t acquire(void *ctx, sched_endpoint *const **eps)
{
    shared *sh = ctx;
    pthread_mutex_lock(&sh->pool_mu);
    *eps = sh->f->ptrs;
    return sh->f->n;
}

static void release(void *ctx) { pthread_mutex_unlock(&((shared *)ctx)->pool_mu); }

static void tokens_for(uint32_t *t, size_t ep)
{
    for (size_t i = 0; i < 32; i++)
        t[i] = (uint32_t)(ep * 1000 + i);
}

static void *client(void *p)
{
    arg *a = p;
    shared *sh = a->sh;
    const char *hdrs[] = {":path", "/v1/completions", NULL};
    for (int i = 0; i < PER_CLIENT; i++) {
        size_t ep = (size_t)(a->k + i) % 4;
        uint32_t t[32];
        tokens_for(t, ep);
        char body[512];
        size_t len = (size_t)snprintf(body, sizeof body, "{\"model\":\"m\",\"prompt\":[");
        for (size_t j = 0; j < 32; j++)
            len += (size_t)snprintf(body + len, sizeof body - len, "%s%u", j ? "," : "", t[j]);
        len += (size_t)snprintf(body + len, sizeof body - len, "]}");
        xpc_stream *s = xpc_open(sh->cli, 10000);
        xpc_send_request_headers(s, hdrs, false, NULL, 0, 0);
        xpc_send_body(s, false, body, len / 2, false);
        xpc_send_body(s, false, body + len / 2, len - len / 2, true);
        xpc_resp *r = xpc_recv(s, 10000);
        char want[32];
        snprintf(want, sizeof want, "10.0.0.%zu:8000", ep + 1);
        const char *got = r ? xpc_dest_metadata(r) : NULL;
        if (!got || strcmp(got, want))
            sh->wrong[a->k]++;
        xpc_resp_free(r);
        xpc_resp_free(xpc_recv(s, 10000)); /* the body */
        if (i % 2 == 0) {                  /* half complete their response, half just vanish */
            const char *rh[] = {":status", "200", NULL};
            xpc_send_response_headers(s, rh, true);
            xpc_resp_free(xpc_recv(s, 10000));
            xpc_finish(s, NULL, 0, 10000);
        }
        xpc_close(s);
    }
    return NULL;
}

static void test_concurrent_streams(void **state)
{
    shared sh = {0};
    sh.f = fx_new(CONFIG, 4, 3);
    assert_non_null(sh.f);
    pthread_mutex_init(&sh.pool_mu, NULL);
    sched_kvsource *src = NULL;
    assert_int_equal(sched_services(sh.f->s, "kvsource", (void **)&src, 1), 1);
    for (size_t ep = 0; ep < 4; ep++) {
        uint32_t t[32];
        uint64_t keys[2];
        tokens_for(t, ep);
        int slot = kvindex_endpoint_add(src->index, sh.f->names[ep], NULL);
        size_t n = blockkeys_compute(&src->keys, blockkeys_root(&src->keys, "m"), t, 32, NULL, 0, NULL, keys, 2);
        assert_int_equal(kvindex_store(src->index, slot, KVTIER_GPU, NULL, 0, keys, n, NULL), KV_OK);
    }
    extproc_config cfg = {.addr = "127.0.0.1:0", .sched = sh.f->s, .pool = {acquire, release, &sh}, .threads = 3,
                          .tokenize_timeout_ms = -1};
    kv_err err = {0};
    extproc_server *srv = extproc_start(&cfg, &err);
    assert_non_null(srv);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", extproc_port(srv));
    sh.cli = xpc_connect(target, NULL, NULL);
    pthread_t th[CLIENTS];
    arg args[CLIENTS];
    for (int k = 0; k < CLIENTS; k++) {
        args[k] = (arg){&sh, k};
        pthread_create(&th[k], NULL, client, &args[k]);
    }
    for (int k = 0; k < CLIENTS; k++)
        pthread_join(th[k], NULL);
    xpc_disconnect(sh.cli);
    extproc_stop(srv); /* reaps streams whose client vanished */
    for (int k = 0; k < CLIENTS; k++)
        assert_int_equal(sh.wrong[k], 0);
    for (size_t ep = 0; ep < 4; ep++)
        assert_int_equal(sh.f->eps[ep].in_flight, 0);
    fx_free(sh.f);
    pthread_mutex_destroy(&sh.pool_mu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_concurrent_streams)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
