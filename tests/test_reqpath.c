/* test_reqpath: the request path stage (simulator/reqpath.c) — the documented defaults per
 * router kind (a Service pays no gateway, EPP or EPP tokenisation; a tokenising EPP pays
 * all), the inbound/outbound formulas, scenario overrides and their errors with file,
 * line and field, and, through whole simulations, that the path adds exactly inbound +
 * outbound to every request's TTFT and end and nothing to its inter-token gaps when the
 * engine is idle at each arrival. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "cluster.h"
#include "reqpath.h"
#include "scenario.h"
#include "workload.h"

/* Writes text to a temporary .yaml and loads it; NULL with *e on error. */
static scenario *load_text(const char *text, kv_err *e)
{
    char path[] = "/tmp/kvroute_reqpath_XXXXXX.yaml";
    int fd = mkstemps(path, 5);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    scenario *s = scn_load(path, "policies/presets", e);
    unlink(path);
    return s;
}

static scenario *load_ok(const char *text)
{
    kv_err e = {0};
    scenario *s = load_text(text, &e);
    if (!s)
        fail_msg("%s", e.msg);
    return s;
}

#define WORKLOAD                                                                                       \
    "workload:\n"                                                                                      \
    "  data: {type: shared_prefix, shared_prefix: {num_groups: 2, num_prompts_per_group: 2,\n"        \
    "         system_prompt_len: 300, question_len: 50, output_len: 5}}\n"                             \
    "  load: {type: constant, stages: [{rate: 0.5, duration: 16}]}\n"                                  \
    "outputs: {plots: false, per_request: false}\n"

static void test_defaults(void **state)
{
    (void)state;
    scenario *s = load_ok("name: d\ncluster: {replicas: 2, model: llama-3.1-8b, tp: 1, block_size: 16}\n"
                            "routers:\n"
                            "  - {name: svc, preset: k8s-service}\n"
                            "  - {name: precise, preset: llm-d-precise}\n"
                            "  - {name: approx, preset: llm-d-approximate}\n"
                            "  - {name: affinity, preset: llm-d-precise-affinity}\n" WORKLOAD);
    const reqpath *svc = &s->routers[0].path, *pr = &s->routers[1].path, *ap = &s->routers[2].path,
                  *af = &s->routers[3].path;
    /* a Service: the network hop and vLLM's own tokenisation only */
    assert_true(svc->gateway_us == 0 && svc->body_us == 0 && svc->tokenize_us == 0 && svc->scoring_us == 0);
    assert_true(svc->hop_us == 100 && svc->server_tokenize_us == 1.0);
    /* the guide's precise router: gateway, EPP body, EPP tokenisation, scoring */
    assert_true(pr->gateway_us == 500 && pr->body_us == 2.9 && pr->tokenize_us == 1.5 && pr->scoring_us == 1000);
    /* the approximate router hashes text: a gateway and an EPP, no tokenisation */
    assert_true(ap->gateway_us == 500 && ap->body_us == 2.9 && ap->tokenize_us == 0);
    /* the precise producer tokenises too */
    assert_true(af->tokenize_us == 1.5);
    /* the guide's 7,584-token prompt through the precise router: 0.6 ms + 1 ms +
     * 7584 x 5.4 us = 42,553.6 us in, 0.6 ms out; through the Service 0.1 ms + 7,584 us */
    assert_int_equal(reqpath_inbound(pr, 7584), 42554);
    assert_int_equal(reqpath_outbound(pr), 600);
    assert_int_equal(reqpath_inbound(svc, 7584), 7684);
    assert_int_equal(reqpath_outbound(svc), 100);
    scn_free(s);
}

static void expect_error(const char *router_line, const char *want)
{
    kv_err e = {0};
    char text[1024];
    snprintf(text, sizeof text, "name: bad\nrouters:\n%s" WORKLOAD, router_line);
    scenario *s = load_text(text, &e);
    assert_null(s);
    if (!strstr(e.msg, want))
        fail_msg("error '%s' does not contain '%s'", e.msg, want);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error("  - {name: a, preset: k8s-service, request_path: {hop: fast}}\n",
                 ":3:56: field 'routers[0].request_path.hop': expected a duration");
    expect_error("  - {name: a, preset: k8s-service, request_path: {hops: 1ms}}\n",
                 "field 'routers[0].request_path.hops'");
    expect_error("  - {name: a, preset: k8s-service, request_path: 5ms}\n",
                 "field 'routers[0].request_path': expected a map");
    expect_error("  - {name: a, preset: k8s-service, request_path: {gateway: 2m}}\n",
                 "field 'routers[0].request_path.gateway': longer than a minute");
}

/* Two routers that pick the same way (one replica) over requests 2 s apart: the engine is
 * idle at every arrival, so the only difference is the path. */
static void test_path_adds_exactly(void **state)
{
    (void)state;
    kv_err e = {0};
    scenario *s = load_ok("name: p\ncluster: {replicas: 1, model: llama-3.1-8b, tp: 1, block_size: 16}\n"
                            "routers:\n"
                            "  - {name: bare, preset: k8s-service, request_path: {hop: 0, server_tokenize_per_token: 0}}\n"
                            "  - {name: slow, preset: k8s-service, request_path: {hop: 3ms, gateway: 2ms, scoring: 1ms,\n"
                            "     body_per_token: 1us, tokenize_per_token: 2us, server_tokenize_per_token: 0.5us}}\n"
                            WORKLOAD);
    workload *w = wl_build(&s->workload, s->seed, &e);
    assert_non_null(w);
    sim_run a, b;
    assert_int_equal(cluster_run(s, w, 0, NULL, &a, NULL, &e), KV_OK);
    assert_int_equal(cluster_run(s, w, 1, NULL, &b, NULL, &e), KV_OK);
    assert_int_equal(a.n_requests, 8);
    assert_int_equal(b.n_requests, a.n_requests);
    for (size_t i = 0; i < a.n_requests; i++) {
        const sim_request_record *ra = &a.requests[i], *rb = &b.requests[i];
        uint32_t n = ra->prompt_tokens;
        assert_true(n > 300);
        sim_time in = 3000 + 2000 + 1000 + (sim_time)llround(3.5 * n), out = 5000;
        assert_int_equal(rb->t_start, ra->t_start);                 /* the client sends at the same time */
        assert_int_equal(rb->t_first_token - rb->t_start, ra->t_first_token - ra->t_start + in + out);
        assert_int_equal(rb->t_end - rb->t_start, ra->t_end - ra->t_start + in + out);
        assert_int_equal(rb->n_token_times, ra->n_token_times);
        for (uint32_t k = 1; k < ra->n_token_times; k++)             /* gaps unchanged */
            assert_int_equal(sim_token_time(&b, rb, k) - sim_token_time(&b, rb, k - 1),
                             sim_token_time(&a, ra, k) - sim_token_time(&a, ra, k - 1));
    }
    cluster_run_free(&a);
    cluster_run_free(&b);
    wl_free(w);
    scn_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_path_adds_exactly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
