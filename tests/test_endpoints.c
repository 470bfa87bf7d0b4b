/* test_endpoints: the endpoint set -- list parsing (separators, comments, errors naming
 * the line), sync keeping ids/metrics/in-flight of staying endpoints and bumping the
 * generation only on membership changes, topic pod matching (exact, bare-IP loose with
 * the lowest port, no cross-port match), metrics copies and the 2 s staleness rule, pool
 * summary, snapshots. */
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

static double now_s = 100.0;
static double test_now(void *ctx) { (void)ctx; return now_s; }

static sched_endpoint *find(epset *s, const char *name)
{
    sched_endpoint *const *e;
    size_t n = epset_acquire(s, &e);
    sched_endpoint *r = NULL;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(e[i]->name, name))
            r = e[i];
    epset_release(s);
    return r;
}

static void test_parse_and_sync(void **state)
{
    (void)state;
    epset *s = epset_new(0, test_now, NULL, NULL);
    kv_err err = {0};
    assert_int_equal(epset_parse_list(s, "10.0.0.1:8000, 10.0.0.2:8000\n# comment, 9.9.9.9:1\n10.0.0.3:8001#x\n",
                                      "list", &err),
                     KV_OK);
    assert_int_equal(epset_count(s), 3);
    uint64_t g = epset_generation(s);
    sched_endpoint *a = find(s, "10.0.0.1:8000");
    assert_non_null(a);
    assert_string_equal(a->pod, "10.0.0.1:8000");
    assert_string_equal(a->ns, "");
    uint32_t id_a = a->id;
    a->in_flight = 5;   /* what the sched keeps */
    assert_null(find(s, "9.9.9.9:1"));

    /* The same set again: nothing changes. A new set: staying endpoints keep id, in-flight
     * and pointer; labels and pod names follow the spec. */
    assert_int_equal(epset_parse_list(s, "10.0.0.3:8001,10.0.0.2:8000,10.0.0.1:8000", "list", NULL), KV_OK);
    assert_true(epset_generation(s) == g);
    sched_kv lab[] = {{"llm-d.ai/role", "decode"}};
    ep_spec specs[] = {{.name = "10.0.0.1:8000", .pod = "p-rank-0", .ns = "ns", .labels = lab, .n_labels = 1},
                       {.name = "10.0.0.9:8000"}};
    assert_int_equal(epset_sync(s, specs, 2, NULL), KV_OK);
    assert_true(epset_generation(s) == g + 1);
    sched_endpoint *a2 = find(s, "10.0.0.1:8000");
    assert_ptr_equal(a2, a);
    assert_int_equal(a2->id, id_a);
    assert_int_equal(a2->in_flight, 5);
    assert_string_equal(a2->pod, "p-rank-0");
    assert_string_equal(sched_label(a2, "llm-d.ai/role"), "decode");
    assert_null(find(s, "10.0.0.2:8000"));
    sched_endpoint *b = find(s, "10.0.0.9:8000");
    assert_non_null(b);
    assert_true(b->id != id_a);

    /* Errors name the entry and leave the set alone. */
    assert_int_equal(epset_parse_list(s, "10.0.0.1:8000\n\n10.0.0.1\n", "f.txt", &err), KV_EINVAL);
    assert_string_equal(err.msg, "f.txt:3: '10.0.0.1' is not ip:port");
    assert_int_equal(epset_parse_list(s, "a:1,a:1", "l", &err), KV_EINVAL);
    assert_non_null(strstr(err.msg, "listed twice"));
    assert_int_equal(epset_parse_list(s, "a:0", "l", &err), KV_EINVAL);
    assert_int_equal(epset_parse_list(s, "a:65536", "l", &err), KV_EINVAL);
    assert_int_equal(epset_parse_list(s, " # nothing\n", "l", &err), KV_EINVAL);
    assert_non_null(strstr(err.msg, "no endpoint"));
    assert_int_equal(epset_count(s), 2);
    assert_int_equal(epset_load_file(s, "/nonexistent/eps", &err), KV_EIO);
    assert_non_null(strstr(err.msg, "/nonexistent/eps"));

    char path[] = "/tmp/kvroute-eps-XXXXXX";
    int fd = mkstemp(path);
    const char *text = "# pool\n10.1.0.1:8000\n10.1.0.2:8000\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    assert_int_equal(epset_load_file(s, path, NULL), KV_OK);
    unlink(path);
    epset_snap snap;
    assert_int_equal(epset_snapshot(s, &snap, NULL), KV_OK);
    assert_int_equal(snap.n, 2);
    assert_true(epset_snap_has(&snap, "10.1.0.2:8000"));
    assert_false(epset_snap_has(&snap, "10.0.0.1:8000"));
    assert_true(snap.generation == epset_generation(s));
    epset_snap_free(&snap);
    epset_free(s);
}

static void test_match_pod(void **state)
{
    (void)state;
    epset *s = epset_new(0, NULL, NULL, NULL);
    assert_int_equal(epset_parse_list(s, "10.0.0.1:8001,10.0.0.1:8000,10.0.0.2:8000,10.0.0.22:8000", "l", NULL), KV_OK);
    char name[64];
    assert_int_equal(epset_match_pod(s, "10.0.0.1:8001", 13, name, sizeof name), EPSET_EXACT);
    assert_string_equal(name, "10.0.0.1:8001");
    assert_int_equal(epset_match_pod(s, "10.0.0.1", 8, name, sizeof name), EPSET_LOOSE);
    assert_string_equal(name, "10.0.0.1:8000");          /* lowest port */
    assert_int_equal(epset_match_pod(s, "10.0.0.2", 8, name, sizeof name), EPSET_LOOSE);
    assert_string_equal(name, "10.0.0.2:8000");          /* not 10.0.0.22 */
    assert_int_equal(epset_match_pod(s, "10.0.0.2:9000", 13, name, sizeof name), EPSET_NO_MATCH);
    assert_int_equal(epset_match_pod(s, "10.0.0.3", 8, name, sizeof name), EPSET_NO_MATCH);
    assert_int_equal(epset_match_pod(s, "10.0.0.1:8000xyz", 13, name, sizeof name), EPSET_EXACT);  /* by length */
    assert_int_equal(epset_match_pod(s, "", 0, name, sizeof name), EPSET_NO_MATCH);
    epset_free(s);
}

static void test_metrics_and_staleness(void **state)
{
    (void)state;
    now_s = 100.0;
    epset *s = epset_new(2.0, test_now, NULL, NULL);
    assert_int_equal(epset_parse_list(s, "10.0.0.1:8000,10.0.0.2:8000,10.0.0.3:8000", "l", NULL), KV_OK);
    assert_false(find(s, "10.0.0.1:8000")->m.valid);   /* never scraped */
    char *run[] = {strdup("sql"), strdup("chat")};
    char *wait[] = {strdup("math")};
    sched_metrics m = {.valid = true, .waiting = 4, .running = 2, .kv_usage = 0.5, .max_lora = 3,
                       .running_loras = (const char *const *)run, .n_running_loras = 2,
                       .waiting_loras = (const char *const *)wait, .n_waiting_loras = 1};
    assert_true(epset_set_metrics(s, "10.0.0.1:8000", &m));
    free(run[0]);
    free(run[1]);
    free(wait[0]);   /* copied */
    sched_metrics m2 = {.valid = true, .waiting = 2, .kv_usage = 0.1};
    assert_true(epset_set_metrics(s, "10.0.0.2:8000", &m2));
    assert_false(epset_set_metrics(s, "10.9.9.9:8000", &m2));
    sched_endpoint *a = find(s, "10.0.0.1:8000");
    assert_true(a->m.valid);
    assert_int_equal(a->m.n_running_loras, 2);
    assert_string_equal(a->m.running_loras[1], "chat");
    assert_string_equal(a->m.waiting_loras[0], "math");
    epset_summary sum;
    epset_get_summary(s, &sum);
    assert_int_equal(sum.ready, 3);
    assert_int_equal(sum.with_metrics, 2);
    assert_true(sum.avg_kv_usage == 0.3);
    assert_true(sum.avg_waiting == 3.0);

    now_s = 102.0;   /* exactly 2 s: still fresh */
    assert_true(find(s, "10.0.0.1:8000")->m.valid);
    now_s = 102.001;
    a = find(s, "10.0.0.1:8000");
    assert_false(a->m.valid);
    assert_int_equal(a->m.waiting, 4);   /* last values kept */
    epset_get_summary(s, &sum);
    assert_int_equal(sum.with_metrics, 0);
    assert_true(sum.avg_kv_usage == 0.0);
    epset_free(s);
}

/* Data-parallel ranks: rank i is the host's i-th lowest port; a batch's rank maps from
 * the pod's rank-0 topic to that rank's endpoint, and nowhere else. */
static void test_dp_ranks(void **state)
{
    (void)state;
    epset *s = epset_new(0, test_now, NULL, NULL);
    assert_int_equal(epset_parse_list(s, "10.0.0.1:8002 10.0.0.1:8000 10.0.0.1:8001 10.0.0.2:8000 10.0.0.3:9000 "
                                         "10.0.0.3:9100", "list", NULL), KV_OK);
    static const struct {
        const char *name;
        int index;
    } idx[] = {{"10.0.0.1:8000", 0}, {"10.0.0.1:8001", 1}, {"10.0.0.1:8002", 2}, {"10.0.0.2:8000", 0},
               {"10.0.0.3:9100", 1}, {"10.0.0.9:8000", -1}};
    for (size_t i = 0; i < sizeof idx / sizeof *idx; i++)
        assert_int_equal(epset_rank_index(s, idx[i].name), idx[i].index);
    static const struct {
        const char *topic;
        int64_t rank;
        const char *want;   /* NULL: no such endpoint */
    } cases[] = {
        {"10.0.0.1:8000", 0, "10.0.0.1:8000"},   /* rank 0, or a batch without a rank */
        {"10.0.0.1:8000", 1, "10.0.0.1:8001"},   /* one topic for the pod: the rank picks the port */
        {"10.0.0.1:8000", 2, "10.0.0.1:8002"},
        {"10.0.0.1:8000", 3, NULL},              /* a rank the set does not list */
        {"10.0.0.1:8001", 1, "10.0.0.1:8001"},   /* each rank names itself in its topic */
        {"10.0.0.3:9100", 0, "10.0.0.3:9100"},   /* two servers without DP on one host */
        {"10.0.0.2:8000", 1, NULL},              /* a single-port pod has no rank 1 */
        {"10.0.0.9:8000", 1, NULL},              /* not an endpoint */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char out[64];
        bool ok = epset_match_rank(s, cases[i].topic, cases[i].rank, out, sizeof out);
        if (ok != (cases[i].want != NULL) || (ok && strcmp(out, cases[i].want)))
            fail_msg("case %zu: %s rank %lld -> %s %s", i, cases[i].topic, (long long)cases[i].rank,
                     ok ? "true" : "false", out);
    }
    epset_free(s);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_parse_and_sync),
    cmocka_unit_test(test_match_pod),
    cmocka_unit_test(test_dp_ranks),
    cmocka_unit_test(test_metrics_and_staleness),
};

int main(void) { return cmocka_run_group_tests(tests, NULL, NULL); }
