/* test_kube_proxy_picker: the Kubernetes Service model (policies/kube_proxy_picker.c)
 * driven through the public scheduler with a hand-set clock: a completed request's
 * connection is reused by the next request of the same client worker within the
 * keep-alive timeout, last released first; expired or busy connections are not; a new
 * connection lands uniformly at random (a chi-square bound over many draws); a pod that
 * left the candidates is not reused; the same seed gives the same sequence; bad
 * parameters stop the config with the field's name. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "registry.h"
#include "scheduler.h"

#define NEP 8

typedef struct rig {
    epc_config *cfg;
    sched *s;
    double now;
    sched_endpoint ep[NEP];
    sched_endpoint *eps[NEP];
    char names[NEP][32];
} rig;

static double rig_clock(void *ctx) { return *(double *)ctx; }

static int rig_try(rig *r, const char *params, uint64_t seed, kv_err *err)
{
    char yaml[256];
    snprintf(yaml, sizeof yaml, "plugins:\n- type: kube-proxy-picker\n  parameters: %s\n", params);
    memset(r, 0, sizeof *r);
    if (!(r->cfg = epc_load_string(yaml, strlen(yaml), "test.yaml", registry_types, err)))
        return err->code ? err->code : KV_EINVAL;
    sched_env env = {.seed = seed, .now = rig_clock, .clock_ctx = &r->now};
    if (!(r->s = sched_new(r->cfg, &env, err))) {
        epc_free(r->cfg);
        return err->code ? err->code : KV_EINVAL;
    }
    for (int i = 0; i < NEP; i++) {
        snprintf(r->names[i], sizeof r->names[i], "10.0.0.%d:8000", i + 1);
        r->ep[i] = (sched_endpoint){.id = 100 + (uint32_t)i, .name = r->names[i], .pod = r->names[i]};
        r->eps[i] = &r->ep[i];
    }
    return KV_OK;
}

static void rig_open(rig *r, const char *params, uint64_t seed)
{
    kv_err err = {0};
    if (rig_try(r, params, seed, &err))
        fail_msg("config: %s", err.msg);
}

static void rig_close(rig *r)
{
    sched_free(r->s);
    epc_free(r->cfg);
}

/* Sends request id at time t over the first n endpoints; returns the endpoint index. */
static int rig_send(rig *r, const char *id, double t, size_t n)
{
    r->now = t;
    sched_request req = {.id = id, .model = "m"};
    sched_result res;
    kv_err err = {0};
    assert_int_equal(sched_schedule(r->s, &req, r->eps, n, &res, NULL, &err), KV_OK);
    assert_int_equal(res.n_targets, 1);
    sched_pre_request(r->s, &req, &res);
    return (int)(res.targets[0] - r->ep);
}

static void rig_done(rig *r, const char *id, double t, int ep)
{
    r->now = t;
    sched_request req = {.id = id, .model = "m"};
    sched_response_complete(r->s, &req, &r->ep[ep]);
}

/* One client worker: what one connection does, request after request. */
static void test_reuse_within_keepalive(void **state)
{
    rig r;
    rig_open(&r, "{clientWorkers: 1, keepAliveTimeout: 5s}", 7);
    char id[16];
    int first = rig_send(&r, "a", 0, NEP);
    rig_done(&r, "a", 1, first);
    /* every later request arrives 4.9 s after the previous completion: same pod */
    for (int k = 0; k < 50; k++) {
        snprintf(id, sizeof id, "r%d", k);
        double t = 1 + 5.9 * k;
        assert_int_equal(rig_send(&r, id, t + 4.9, NEP), first);
        rig_done(&r, id, t + 5.9, first);
    }
    rig_close(&r);
}

/* Two connections released at t=1 (pod A) and t=2 (pod B): aiohttp hands out B first. */
static void test_lifo_and_busy(void **state)
{
    for (uint64_t seed = 1; seed < 20; seed++) {
        rig r;
        rig_open(&r, "{clientWorkers: 1, keepAliveTimeout: 60s}", seed);
        int a = rig_send(&r, "a", 0, NEP);
        int b = rig_send(&r, "b", 0.1, NEP);        /* a's connection is busy: a new one */
        rig_done(&r, "a", 1, a);
        rig_done(&r, "b", 2, b);
        assert_int_equal(rig_send(&r, "c", 3, NEP), b);
        assert_int_equal(rig_send(&r, "d", 3.5, NEP), a);
        rig_close(&r);
    }
}

/* Idle past the timeout: closed, so every request opens a new connection and the pod is
 * uniform. 8,000 draws over 8 pods: chi-square with 7 degrees of freedom stays under
 * 24.3 (p = 0.001) for a uniform picker; a picker stuck on one pod gives 56,000. */
static void test_expired_is_uniform(void **state)
{
    rig r;
    rig_open(&r, "{clientWorkers: 1, keepAliveTimeout: 5s}", 3);
    int seen[NEP] = {0};
    char id[16];
    for (int k = 0; k < 8000; k++) {
        snprintf(id, sizeof id, "r%d", k);
        int e = rig_send(&r, id, 10.0 * k, NEP);
        seen[e]++;
        rig_done(&r, id, 10.0 * k + 4, e);           /* idle 6 s before the next */
    }
    double chi = 0;
    for (int i = 0; i < NEP; i++)
        chi += (seen[i] - 1000.0) * (seen[i] - 1000.0) / 1000.0;
    if (chi > 24.3)
        fail_msg("chi-square %.1f over 8 pods", chi);
    rig_close(&r);
}

/* A pooled connection to a pod that is no longer a candidate is dropped; the request
 * goes to one of the candidates. */
static void test_departed_pod(void **state)
{
    rig r;
    rig_open(&r, "{clientWorkers: 1, keepAliveTimeout: 60s}", 5);
    int a = rig_send(&r, "a", 0, NEP);
    rig_done(&r, "a", 1, a);
    /* the candidates without a: move a to the end and offer the first NEP-1 */
    sched_endpoint *t = r.eps[a];
    r.eps[a] = r.eps[NEP - 1];
    r.eps[NEP - 1] = t;
    int b = rig_send(&r, "b", 2, NEP - 1);
    assert_int_not_equal(b, a);
    rig_close(&r);
}

/* Many workers: a request's worker is a hash of its id, so requests of other workers do
 * not see a connection; the whole sequence is a function of the seed. */
static void test_workers_and_determinism(void **state)
{
    int seq[2][400];
    for (int run = 0; run < 2; run++) {
        rig r;
        rig_open(&r, "{clientWorkers: 224, keepAliveTimeout: 5s}", 42);
        char id[16];
        for (int k = 0; k < 400; k++) {
            snprintf(id, sizeof id, "r%d", k);
            seq[run][k] = rig_send(&r, id, 0.05 * k, NEP);
            rig_done(&r, id, 0.05 * k + 0.5, seq[run][k]);
        }
        rig_close(&r);
    }
    assert_memory_equal(seq[0], seq[1], sizeof seq[0]);
    /* 224 pools and ~10 requests completing per pool-lifetime: most requests open new
     * connections, so the pods are spread, not all one */
    int seen[NEP] = {0};
    for (int k = 0; k < 400; k++)
        seen[seq[0][k]]++;
    for (int i = 0; i < NEP; i++)
        assert_true(seen[i] > 20);
}

static void test_bad_parameters(void **state)
{
    rig r;
    kv_err err = {0};
    assert_int_equal(rig_try(&r, "{clientWorkers: 0}", 1, &err), KV_EINVAL);
    assert_non_null(strstr(err.msg, "clientWorkers"));
    err = (kv_err){0};
    assert_int_equal(rig_try(&r, "{keepAliveTimeout: -1s}", 1, &err), KV_EINVAL);
    assert_non_null(strstr(err.msg, "keepAliveTimeout"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reuse_within_keepalive),
        cmocka_unit_test(test_lifo_and_busy),
        cmocka_unit_test(test_expired_is_uniform),
        cmocka_unit_test(test_departed_pod),
        cmocka_unit_test(test_workers_and_determinism),
        cmocka_unit_test(test_bad_parameters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
