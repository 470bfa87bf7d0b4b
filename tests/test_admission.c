/* test_admission: the pieces of GIE's admission in ./epp -- the InferenceObjective table
 * (--objectives manifests and inline lists, errors naming file, document and field;
 * Kubernetes-style put/remove/sync) and the utilization saturation detector against a
 * hand-computed reference (mean of max(waiting/5, kv/0.8), stale or missing metrics
 * counting 1.0, empty candidates saturated) with GIE's SD_* overrides. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "objectives.h"
#include "saturation.h"

static int prio(objectives *o, const char *name)
{
    int p = 12345;
    assert_true(objectives_priority(o, name, &p));
    return p;
}

static void write_file(char *path, const char *text)
{
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static void test_objectives_sources(void **state)
{
    kv_err err = {0};
    objectives *o = objectives_new(&err);
    assert_non_null(o);
    int p = 7;
    assert_false(objectives_priority(o, "x", &p));
    assert_int_equal(p, 0);
    assert_false(objectives_priority(o, NULL, &p));

    /* two manifests as kubectl takes them; priority omitted means 0 */
    char path[] = "/tmp/test_admission_XXXXXX";
    write_file(path, "---\napiVersion: inference.networking.x-k8s.io/v1alpha2\nkind: InferenceObjective\n"
                     "metadata: {name: batch}\nspec:\n  priority: -5\n  poolRef: {name: pool}\n---\n"
                     "kind: InferenceObjective\nmetadata:\n  name: chat\nspec: {poolRef: {name: pool}}\n");
    assert_int_equal(objectives_load(o, path, &err), KV_OK);
    assert_int_equal(objectives_count(o), 2);
    assert_int_equal(prio(o, "batch"), -5);
    assert_int_equal(prio(o, "chat"), 0);
    unlink(path);

    /* a List with items, and inline */
    char list[] = "/tmp/test_admission_XXXXXX";
    write_file(list, "apiVersion: v1\nkind: List\nitems:\n- metadata: {name: gold}\n  spec: {priority: 100}\n");
    assert_int_equal(objectives_load(o, list, &err), KV_OK);
    assert_int_equal(prio(o, "gold"), 100);
    unlink(list);
    assert_int_equal(objectives_load(o, "gold=3,free=-2", &err), KV_OK);
    assert_int_equal(prio(o, "gold"), 3);
    assert_int_equal(prio(o, "free"), -2);

    /* errors name the source */
    assert_int_equal(objectives_load(o, "gold=high", &err), KV_EINVAL);
    assert_non_null(strstr(err.msg, "'gold=high' is not name=priority"));
    assert_int_equal(objectives_load(o, "=1", &err), KV_EINVAL);
    char bad[] = "/tmp/test_admission_XXXXXX";
    write_file(bad, "kind: InferenceObjective\nmetadata: {name: a}\n---\nkind: InferenceObjective\n"
                    "metadata: {name: b}\nspec: {priority: soon}\n");
    assert_int_equal(objectives_load(o, bad, &err), KV_EINVAL);
    char want[128];
    snprintf(want, sizeof want, "%s (document 2):3:", bad);
    assert_non_null(strstr(err.msg, want));
    assert_non_null(strstr(err.msg, "spec.priority"));
    write_file(strcpy(bad, "/tmp/test_admission_XXXXXX"), "kind: InferencePool\nmetadata: {name: p}\n");
    assert_int_equal(objectives_load(o, bad, &err), KV_EINVAL);
    assert_non_null(strstr(err.msg, "expected InferenceObjective"));
    unlink(bad);

    /* the Kubernetes side: remove, then a re-list replaces everything */
    objectives_remove(o, "free");
    assert_false(objectives_priority(o, "free", &p));
    objective_spec specs[] = {{"only", -1}};
    assert_int_equal(objectives_sync(o, specs, 1, &err), KV_OK);
    assert_int_equal(objectives_count(o), 1);
    assert_int_equal(prio(o, "only"), -1);
    assert_false(objectives_priority(o, "gold", &p));
    objectives_free(o);
}

static double ages[8];
static double age_of(void *ctx, const sched_endpoint *ep) { return ages[ep->id]; }

/* The reference: GIE's roofline mean, written out independently. */
static double reference(const saturation_config *c, const sched_endpoint *eps, size_t n)
{
    if (!n)
        return 1;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        if (!eps[i].m.valid || ages[eps[i].id] > c->staleness_s) {
            sum += 1;
            continue;
        }
        sum += fmax(eps[i].m.waiting / (double)c->queue_depth, eps[i].m.kv_usage / c->kv_util);
    }
    return sum / n;
}

static void test_saturation_rule(void **state)
{
    saturation_config c;
    saturation_defaults(&c);
    assert_int_equal(c.queue_depth, 5);
    assert_true(c.kv_util == 0.8 && c.staleness_s == 0.2);
    sched_endpoint eps[4] = {0};
    sched_endpoint *ptr[4];
    for (int i = 0; i < 4; i++) {
        eps[i].id = (uint32_t)i;
        eps[i].m.valid = true;
        ptr[i] = &eps[i];
        ages[i] = 0.05;
    }
    assert_true(saturation_saturated(&c, ptr, 0, age_of, NULL)); /* no candidates: no capacity */
    /* a mean, not "any endpoint with room": one overloaded endpoint can outweigh one with room */
    eps[0].m.waiting = 10;                  /* 2.0 */
    eps[1].m.kv_usage = 0.4;                /* 0.5 */
    assert_true(saturation_saturated(&c, ptr, 2, age_of, NULL));
    assert_true(fabs(saturation_level(&c, ptr, 2, age_of, NULL) - 1.25) < 1e-12);
    eps[1].m.kv_usage = 0;
    assert_true(fabs(saturation_level(&c, ptr, 2, age_of, NULL) - 1.0) < 1e-12);
    assert_true(saturation_saturated(&c, ptr, 2, age_of, NULL)); /* exactly 1.0 counts */
    eps[0].m.waiting = 4;                   /* 0.8 */
    eps[1].m.kv_usage = 0.72;               /* 0.9 */
    assert_false(saturation_saturated(&c, ptr, 2, age_of, NULL));
    ages[1] = 0.25;                         /* stale: 1.0, mean 0.9 */
    assert_false(saturation_saturated(&c, ptr, 2, age_of, NULL));
    ages[0] = INFINITY;                     /* never scraped */
    assert_true(saturation_saturated(&c, ptr, 2, age_of, NULL));
    /* random states against the reference */
    srand(5);
    for (int it = 0; it < 2000; it++) {
        size_t n = (size_t)(rand() % 5);
        for (size_t i = 0; i < 4; i++) {
            eps[i].m.valid = rand() % 8 != 0;
            eps[i].m.waiting = rand() % 12;
            eps[i].m.kv_usage = (rand() % 101) / 100.0;
            ages[i] = (rand() % 40) / 100.0;
        }
        double want = reference(&c, eps, n), got = saturation_level(&c, ptr, n, age_of, NULL);
        assert_true(fabs(want - got) < 1e-12);
        assert_int_equal(saturation_saturated(&c, ptr, n, age_of, NULL), want >= 1.0);
    }
}

static const char *env_q, *env_kv, *env_st;
static char *fake_getenv(const char *name)
{
    const char *v = !strcmp(name, "SD_QUEUE_DEPTH_THRESHOLD")     ? env_q
                    : !strcmp(name, "SD_KV_CACHE_UTIL_THRESHOLD") ? env_kv
                    : !strcmp(name, "SD_METRICS_STALENESS_THRESHOLD") ? env_st
                                                                    : NULL;
    return (char *)v;
}

static void test_saturation_env(void **state)
{
    saturation_config c;
    saturation_defaults(&c);
    kv_err err = {0};
    env_q = "8", env_kv = "0.9", env_st = "150ms";
    assert_int_equal(saturation_from_env(&c, fake_getenv, &err), KV_OK);
    assert_int_equal(c.queue_depth, 8);
    assert_true(c.kv_util == 0.9 && fabs(c.staleness_s - 0.15) < 1e-12);
    env_st = "1s";
    assert_int_equal(saturation_from_env(&c, fake_getenv, &err), KV_OK);
    assert_true(c.staleness_s == 1.0);
    env_q = "0";
    assert_int_equal(saturation_from_env(&c, fake_getenv, &err), KV_EINVAL);
    assert_non_null(strstr(err.msg, "SD_QUEUE_DEPTH_THRESHOLD"));
    env_q = NULL, env_kv = "1.5";
    assert_int_equal(saturation_from_env(&c, fake_getenv, &err), KV_EINVAL);
    assert_non_null(strstr(err.msg, "'1.5'"));
    env_kv = NULL, env_st = "soon";
    assert_int_equal(saturation_from_env(&c, fake_getenv, &err), KV_EINVAL);
    assert_non_null(strstr(err.msg, "SD_METRICS_STALENESS_THRESHOLD"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_objectives_sources),
        cmocka_unit_test(test_saturation_rule),
        cmocka_unit_test(test_saturation_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
