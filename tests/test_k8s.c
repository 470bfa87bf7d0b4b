/* test_k8s: discovery against a fake API server on loopback -- the InferencePool's
 * selector and target ports, the first LIST (only Ready pods without a deletion
 * timestamp, one endpoint per pod x port named <pod>-rank-<i>, the pod's labels), WATCH
 * transitions (ready, not ready, deleting, deleted, new pod), re-list after a 410,
 * InferencePool changes after start (new ports, new selector, deleted, re-created) with
 * the endpoint set following, InferenceObjectives of the pool (list, watch, other pools
 * ignored, CRD absent at first), and start-up failures naming the cause (bad token,
 * missing pool, missing ports). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "endpoints.h"
#include "k8s.h"
#include "log.h"
#include "model_rewrites.h"
#include "objectives.h"
#include "support/fake_k8s.h"

static void quiet(void *ctx, const char *line) { (void)ctx; (void)line; }

/* "name=pod,name=pod" of the set, sorted as the watcher publishes (by pod name). */
static void set_str(epset *eps, char *out, size_t cap)
{
    sched_endpoint *const *e;
    size_t n = epset_acquire(eps, &e);
    size_t off = 0;
    out[0] = 0;
    for (size_t i = 0; i < n && off < cap; i++)
        off += (size_t)snprintf(out + off, cap - off, "%s%s=%s", i ? "," : "", e[i]->name, e[i]->pod);
    epset_release(eps);
}

static bool set_is(epset *eps, const char *want)
{
    char got[1024];
    set_str(eps, got, sizeof got);
    return !strcmp(got, want);
}

#define WAIT_SET(eps, want)                                        \
    do {                                                           \
        for (int t_ = 0; t_ < 1000 && !set_is(eps, want); t_++)    \
            usleep(5000);                                          \
        char got_[1024];                                           \
        set_str(eps, got_, sizeof got_);                           \
        assert_string_equal(got_, want);                           \
    } while (0)

typedef struct fx {
    fake_k8s *api;
    epset *eps;
    char token_path[64];
    char base[64];
} fx;

static void fx_init(fx *f, const char *token_in_file)
{
    log_setup(0, quiet, NULL);
    f->api = fake_k8s_start("s3cret");
    assert_non_null(f->api);
    snprintf(f->base, sizeof f->base, "http://127.0.0.1:%d", fake_k8s_port(f->api));
    snprintf(f->token_path, sizeof f->token_path, "/tmp/kvroute-k8s-token-XXXXXX");
    int fd = mkstemp(f->token_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, token_in_file, strlen(token_in_file)), (ssize_t)strlen(token_in_file));
    close(fd);
    f->eps = epset_new(0, NULL, NULL, NULL);
    int ports[] = {8000, 8001};
    fake_k8s_set_pool(f->api, "ns", "pool", "app=vllm,tier=gpu", ports, 2);
}

static void fx_free(fx *f)
{
    fake_k8s_stop(f->api);
    epset_free(f->eps);
    unlink(f->token_path);
}

static k8s_config pool_cfg(fx *f)
{
    return (k8s_config){.endpoints = f->eps, .base_url = f->base, .token_path = f->token_path, .ns = "ns",
                        .pool_name = "pool", .retry_ms = 20};
}

static void test_pool_list_and_watch(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "s3cret\n");
    fake_k8s_put_pod(f.api, "p1", "10.0.0.1", true, false, "app=vllm,tier=gpu,llm-d.ai/role=decode");
    fake_k8s_put_pod(f.api, "p2", "10.0.0.2", false, false, "app=vllm,tier=gpu");
    fake_k8s_put_pod(f.api, "p3", "10.0.0.3", true, true, "app=vllm,tier=gpu");
    k8s_config cfg = pool_cfg(&f);
    kv_err err = {0};
    k8s_watcher *w = k8s_start(&cfg, &err);
    if (!w)
        fail_msg("%s", err.msg);
    assert_true(k8s_synced(w));
    char sel[256];
    k8s_selector(w, sel, sizeof sel);
    assert_string_equal(sel, "app=vllm,tier=gpu");
    fake_k8s_last_selector(f.api, sel, sizeof sel);
    assert_string_equal(sel, "app=vllm,tier=gpu");
    /* The first list is in place when k8s_start returns. */
    assert_true(set_is(f.eps, "10.0.0.1:8000=p1-rank-0,10.0.0.1:8001=p1-rank-1"));
    sched_endpoint *const *e;
    size_t n = epset_acquire(f.eps, &e);
    assert_int_equal(n, 2);
    assert_string_equal(e[0]->ns, "ns");
    assert_string_equal(sched_label(e[0], "llm-d.ai/role"), "decode");
    assert_string_equal(sched_label(e[1], "app"), "vllm");
    epset_release(f.eps);

    fake_k8s_put_pod(f.api, "p2", "10.0.0.2", true, false, "app=vllm,tier=gpu");      /* becomes ready */
    WAIT_SET(f.eps, "10.0.0.1:8000=p1-rank-0,10.0.0.1:8001=p1-rank-1,10.0.0.2:8000=p2-rank-0,10.0.0.2:8001=p2-rank-1");
    fake_k8s_put_pod(f.api, "p1", "10.0.0.1", false, false, "app=vllm,tier=gpu");     /* not ready */
    WAIT_SET(f.eps, "10.0.0.2:8000=p2-rank-0,10.0.0.2:8001=p2-rank-1");
    fake_k8s_put_pod(f.api, "p2", "10.0.0.2", true, true, "app=vllm,tier=gpu");       /* terminating */
    WAIT_SET(f.eps, "");
    fake_k8s_delete_pod(f.api, "p2");
    fake_k8s_put_pod(f.api, "p4", "10.0.0.4", true, false, "app=vllm,tier=gpu");      /* new pod */
    WAIT_SET(f.eps, "10.0.0.4:8000=p4-rank-0,10.0.0.4:8001=p4-rank-1");
    k8s_stats st;
    k8s_get_stats(w, &st);
    assert_true(st.events >= 5);
    assert_true(st.pods_ready == 1);

    /* 410 Gone on the watch: the watcher re-lists and keeps following. */
    unsigned lists = fake_k8s_lists(f.api);
    fake_k8s_expire_next_watch(f.api);
    for (int t = 0; t < 1000 && fake_k8s_lists(f.api) == lists; t++)
        usleep(5000);
    assert_true(fake_k8s_lists(f.api) > lists);
    fake_k8s_put_pod(f.api, "p1", "10.0.0.1", true, false, "app=vllm,tier=gpu");
    WAIT_SET(f.eps, "10.0.0.1:8000=p1-rank-0,10.0.0.1:8001=p1-rank-1,10.0.0.4:8000=p4-rank-0,10.0.0.4:8001=p4-rank-1");
    k8s_get_stats(w, &st);
    assert_true(st.relists >= 1);
    assert_int_equal(fake_k8s_unauthorized(f.api), 0);
    k8s_stop(w);
    fx_free(&f);
}

static void test_selector_mode(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "s3cret");
    fake_k8s_put_pod(f.api, "a", "10.1.0.1", true, false, "llm-d.ai/inference-serving=true");
    k8s_config cfg = {.endpoints = f.eps, .base_url = f.base, .token_path = f.token_path, .ns = "ns",
                      .selector = "llm-d.ai/inference-serving=true", .retry_ms = 20};
    kv_err err = {0};
    assert_null(k8s_start(&cfg, &err));   /* no target ports */
    assert_non_null(strstr(err.msg, "target ports"));
    assert_int_equal(k8s_parse_ports("8200", cfg.target_ports, &cfg.n_target_ports, NULL), KV_OK);
    k8s_watcher *w = k8s_start(&cfg, &err);
    if (!w)
        fail_msg("%s", err.msg);
    assert_true(set_is(f.eps, "10.1.0.1:8200=a-rank-0"));
    char sel[256];
    fake_k8s_last_selector(f.api, sel, sizeof sel);
    assert_string_equal(sel, "llm-d.ai/inference-serving=true");
    k8s_stop(w);

    int ports[K8S_MAX_PORTS];
    size_t n;
    assert_int_equal(k8s_parse_ports("8000,8001", ports, &n, NULL), KV_OK);
    assert_true(n == 2 && ports[1] == 8001);
    assert_int_equal(k8s_parse_ports("8000,x", ports, &n, &err), KV_EINVAL);
    assert_non_null(strstr(err.msg, "'x'"));
    assert_int_equal(k8s_parse_ports("0", ports, &n, NULL), KV_EINVAL);
    assert_int_equal(k8s_parse_ports("1,2,3,4,5,6,7,8,9", ports, &n, NULL), KV_ERANGE);
    fx_free(&f);
}

/* The pool changes under a running watcher: ports, then selector, then it is deleted
 * and created again; the endpoint set follows each time. */
static void test_pool_changes(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "s3cret");
    fake_k8s_put_pod(f.api, "a", "10.2.0.1", true, false, "app=vllm,tier=gpu");
    fake_k8s_put_pod(f.api, "b", "10.2.0.2", true, false, "app=other");
    k8s_config cfg = pool_cfg(&f);
    kv_err err = {0};
    k8s_watcher *w = k8s_start(&cfg, &err);
    if (!w)
        fail_msg("%s", err.msg);
    assert_true(set_is(f.eps, "10.2.0.1:8000=a-rank-0,10.2.0.1:8001=a-rank-1"));

    int one[] = {9000};
    fake_k8s_set_pool(f.api, "ns", "pool", "app=vllm,tier=gpu", one, 1);   /* ports only */
    WAIT_SET(f.eps, "10.2.0.1:9000=a-rank-0");
    /* new selector: the pods are listed again with it */
    unsigned lists = fake_k8s_lists(f.api);
    fake_k8s_set_pool(f.api, "ns", "pool", "app=other", one, 1);
    WAIT_SET(f.eps, "10.2.0.2:9000=b-rank-0");
    assert_true(fake_k8s_lists(f.api) > lists);
    char sel[256];
    fake_k8s_last_selector(f.api, sel, sizeof sel);
    assert_string_equal(sel, "app=other");
    k8s_selector(w, sel, sizeof sel);
    assert_string_equal(sel, "app=other");

    fake_k8s_delete_pool(f.api, "pool");                                   /* deleted: no endpoints */
    WAIT_SET(f.eps, "");
    fake_k8s_put_pod(f.api, "c", "10.2.0.3", true, false, "app=other");    /* pods still followed */
    usleep(100000);
    assert_true(set_is(f.eps, ""));
    int two[] = {8200, 8201};
    fake_k8s_set_pool(f.api, "ns", "pool", "app=other", two, 2);           /* re-created */
    WAIT_SET(f.eps, "10.2.0.2:8200=b-rank-0,10.2.0.2:8201=b-rank-1,10.2.0.3:8200=c-rank-0,10.2.0.3:8201=c-rank-1");
    k8s_stats st;
    k8s_get_stats(w, &st);
    assert_int_equal(st.pool_changes, 4);
    k8s_stop(w);
    fx_free(&f);
}

static bool prio_is(objectives *o, const char *name, bool known, int want)
{
    for (int t = 0; t < 1000; t++) {
        int p;
        if (objectives_priority(o, name, &p) == known && p == want)
            return true;
        usleep(5000);
    }
    return false;
}

/* The target for model once the watcher has caught up ("" for none), polled. */
static bool rewrite_is(model_rewrites *t, const char *model, const char *want)
{
    for (int i = 0; i < 1000; i++) {
        char *to = NULL;
        assert_int_equal(model_rewrites_pick(t, model, &to, NULL), KV_OK);
        bool ok = !strcmp(to ? to : "", want);
        free(to);
        if (ok)
            return true;
        usleep(5000);
    }
    return false;
}

/* InferenceModelRewrites of the pool: the CRD appears after start; rewrites of other
 * pools are ignored; the older object wins a conflict; updates, moves and deletes follow. */
static void test_model_rewrites(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "s3cret");
    model_rewrites *rw = model_rewrites_new(NULL, NULL, NULL);
    k8s_config cfg = pool_cfg(&f);
    cfg.model_rewrites = rw;
    kv_err err = {0};
    k8s_watcher *w = k8s_start(&cfg, &err);
    if (!w)
        fail_msg("%s", err.msg); /* no InferenceModelRewrite CRD yet: not a start-up failure */
    usleep(50000);
    fake_k8s_put_model_rewrite(f.api, "alias", "2025-06-02T00:00:00Z",
                               "{\"poolRef\":{\"name\":\"pool\"},\"rules\":[{\"matches\":[{\"model\":"
                               "{\"type\":\"Exact\",\"value\":\"lora\"}}],"
                               "\"targets\":[{\"modelRewrite\":\"lora-v2\"}]}]}");
    fake_k8s_put_model_rewrite(f.api, "theirs", "2025-01-01T00:00:00Z",
                               "{\"poolRef\":{\"name\":\"other-pool\"},\"rules\":[{\"targets\":"
                               "[{\"modelRewrite\":\"elsewhere\"}]}]}");
    assert_true(rewrite_is(rw, "lora", "lora-v2"));
    assert_true(rewrite_is(rw, "base", ""));
    /* an older object naming the same model wins */
    fake_k8s_put_model_rewrite(f.api, "older", "2025-06-01T00:00:00Z",
                               "{\"poolRef\":{\"name\":\"pool\"},\"rules\":[{\"matches\":[{\"model\":"
                               "{\"value\":\"lora\"}}],\"targets\":[{\"modelRewrite\":\"lora-v1\"}]}]}");
    assert_true(rewrite_is(rw, "lora", "lora-v1"));
    /* moved to another pool: gone from ours */
    fake_k8s_put_model_rewrite(f.api, "older", "2025-06-01T00:00:00Z",
                               "{\"poolRef\":{\"name\":\"other-pool\"},\"rules\":[]}");
    assert_true(rewrite_is(rw, "lora", "lora-v2"));
    /* updated to a catch-all */
    fake_k8s_put_model_rewrite(f.api, "alias", "2025-06-02T00:00:00Z",
                               "{\"poolRef\":{\"name\":\"pool\"},\"rules\":[{\"matches\":[],"
                               "\"targets\":[{\"modelRewrite\":\"base\"}]}]}");
    assert_true(rewrite_is(rw, "anything", "base"));
    assert_int_equal(model_rewrites_count(rw), 1);
    fake_k8s_delete_model_rewrite(f.api, "alias");
    assert_true(rewrite_is(rw, "anything", ""));
    assert_int_equal(model_rewrites_count(rw), 0);
    k8s_stop(w);
    model_rewrites_free(rw);
    fx_free(&f);
}

/* InferenceObjectives of the pool: the CRD appears after start, then objectives come,
 * change, move to another pool and go. */
static void test_objectives(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "s3cret");
    objectives *objs = objectives_new(NULL);
    k8s_config cfg = pool_cfg(&f);
    cfg.objectives = objs;
    kv_err err = {0};
    k8s_watcher *w = k8s_start(&cfg, &err);
    if (!w)
        fail_msg("%s", err.msg); /* no InferenceObjective CRD yet: not a start-up failure */
    usleep(50000);
    fake_k8s_put_objective(f.api, "batch", "pool", true, -3);
    fake_k8s_put_objective(f.api, "plain", "pool", false, 0);
    fake_k8s_put_objective(f.api, "theirs", "other-pool", true, 7);
    assert_true(prio_is(objs, "batch", true, -3));
    assert_true(prio_is(objs, "plain", true, 0));
    assert_true(prio_is(objs, "theirs", false, 0));
    fake_k8s_put_objective(f.api, "batch", "pool", true, 2);             /* changed */
    assert_true(prio_is(objs, "batch", true, 2));
    fake_k8s_put_objective(f.api, "plain", "other-pool", true, 1);       /* moved away */
    assert_true(prio_is(objs, "plain", false, 0));
    fake_k8s_delete_objective(f.api, "batch");
    assert_true(prio_is(objs, "batch", false, 0));
    assert_int_equal(objectives_count(objs), 0);
    k8s_stop(w);
    objectives_free(objs);
    fx_free(&f);
}

static void test_startup_failures(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "wrong-token");
    k8s_config cfg = pool_cfg(&f);
    kv_err err = {0};
    assert_null(k8s_start(&cfg, &err));
    assert_non_null(strstr(err.msg, "HTTP 401"));
    assert_non_null(strstr(err.msg, "/inferencepools/pool"));
    assert_true(fake_k8s_unauthorized(f.api) >= 1);
    fx_free(&f);

    fx_init(&f, "s3cret");
    cfg = pool_cfg(&f);
    cfg.pool_name = "missing";
    assert_null(k8s_start(&cfg, &err));
    assert_int_equal(err.code, KV_ENOTFOUND);
    assert_non_null(strstr(err.msg, "inferencepools/missing"));
    cfg = pool_cfg(&f);
    cfg.token_path = "/nonexistent/token";
    assert_null(k8s_start(&cfg, &err));
    assert_non_null(strstr(err.msg, "/nonexistent/token"));
    cfg = pool_cfg(&f);
    cfg.base_url = "http://127.0.0.1:1";
    assert_null(k8s_start(&cfg, &err));
    assert_int_equal(err.code, KV_EIO);
    fx_free(&f);
}

/* --pool-group inference.networking.x-k8s.io: the pool is read at that group's v1alpha2 path. */
static void test_pool_group_v1alpha2(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, "s3cret");
    fake_k8s_put_pod(f.api, "p1", "10.0.0.1", true, false, "app=vllm,tier=gpu");
    k8s_config cfg = pool_cfg(&f);
    cfg.pool_group = "inference.networking.x-k8s.io";
    kv_err err = {0};
    k8s_watcher *w = k8s_start(&cfg, &err);
    if (!w)
        fail_msg("%s", err.msg);
    assert_true(set_is(f.eps, "10.0.0.1:8000=p1-rank-0,10.0.0.1:8001=p1-rank-1"));
    k8s_stop(w);
    fx_free(&f);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_pool_list_and_watch),
    cmocka_unit_test(test_selector_mode),
    cmocka_unit_test(test_pool_changes),
    cmocka_unit_test(test_objectives),
    cmocka_unit_test(test_model_rewrites),
    cmocka_unit_test(test_startup_failures),
    cmocka_unit_test(test_pool_group_v1alpha2),
};

int main(void) { return cmocka_run_group_tests(tests, NULL, NULL); }
