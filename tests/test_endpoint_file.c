/* test_endpoint_file: file-discovery's endpoints file in ./epp -- llm-d-router's schema
 * (YAML and JSON alike: name, namespace, address, port as string or number, labels),
 * start-up errors naming file:line:col and field (bad port, host name, missing field,
 * duplicate, syntax, size), reloads skipping bad entries with a warning, and the watcher
 * adding and removing endpoints when the file is edited in place or replaced by rename,
 * keeping the set when the file turns unreadable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "endpoint_file.h"
#include "endpoints.h"
#include "support/sched_fixture.h"

typedef struct fixture {
    char dir[64];
    char path[96];
    epset *s;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/epfile.XXXXXX");
    if (!f || !mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof f->path, "%s/endpoints.yaml", f->dir);
    f->s = epset_new(0, NULL, NULL, NULL);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    char other[128];
    snprintf(other, sizeof other, "%s/next.yaml", f->dir);
    unlink(f->path);
    unlink(other);
    rmdir(f->dir);
    epset_free(f->s);
    free(f);
    return 0;
}

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

/* The set as "name pod ns label-count" lines, in file order. */
static void describe(epset *s, char *out, size_t cap)
{
    sched_endpoint *const *e;
    size_t n = epset_acquire(s, &e), len = 0;
    out[0] = 0;
    for (size_t i = 0; i < n; i++) {
        const char *role = sched_label(e[i], "llm-d.ai/role");
        len += (size_t)snprintf(out + len, cap - len, "%s %s %s %zu %s\n", e[i]->name, e[i]->pod, e[i]->ns,
                                e[i]->n_labels, role ? role : "-");
    }
    epset_release(s);
}

static const char yaml_two[] = "endpoints:\n"
                               "  - name: vllm-0\n"
                               "    address: \"10.0.0.1\"\n"
                               "    port: \"8000\"\n"
                               "    labels:\n"
                               "      llm-d.ai/role: decode\n"
                               "  - name: vllm-1\n"
                               "    namespace: prod\n"
                               "    address: 10.0.0.2\n"
                               "    port: 8001\n";

static void test_schema_yaml_and_json(void **state)
{
    fixture *f = *state;
    char got[512];
    kv_err err = {0};
    fx_warnbuf w = {0};
    write_file(f->path, yaml_two);
    assert_int_equal(epfile_load(f->s, f->path, true, fx_collect, &w, &err), KV_OK);
    describe(f->s, got, sizeof got);
    assert_string_equal(got, "10.0.0.1:8000 vllm-0 default 1 decode\n10.0.0.2:8001 vllm-1 prod 0 -\n");
    assert_int_equal(w.len, 0);
    /* the same set as JSON, with llm-d-router's quoted ports */
    write_file(f->path, "{\"endpoints\": [{\"name\": \"vllm-0\", \"address\": \"10.0.0.1\", \"port\": \"8000\", "
                        "\"labels\": {\"llm-d.ai/role\": \"decode\"}}, {\"name\": \"vllm-1\", \"namespace\": \"prod\", "
                        "\"address\": \"10.0.0.2\", \"port\": \"8001\"}]}");
    uint64_t gen = epset_generation(f->s);
    assert_int_equal(epfile_load(f->s, f->path, true, fx_collect, &w, &err), KV_OK);
    describe(f->s, got, sizeof got);
    assert_string_equal(got, "10.0.0.1:8000 vllm-0 default 1 decode\n10.0.0.2:8001 vllm-1 prod 0 -\n");
    assert_int_equal(epset_generation(f->s), gen);   /* same members: no change seen by followers */
    /* accepted and ignored, each named: an unknown field, a metricsHost kvroute cannot use */
    write_file(f->path, "endpoints:\n- name: a\n  address: 10.0.0.1\n  port: 80\n  metricsHost: 10.0.0.1:9090\n"
                        "  weight: 3\n");
    assert_int_equal(epfile_load(f->s, f->path, true, fx_collect, &w, &err), KV_OK);
    assert_non_null(strstr(w.text, "endpoints.yaml:5:16: field 'endpoints[0].metricsHost': '10.0.0.1:9090' is "
                                   "ignored: kvroute scrapes the endpoint's own address:port (10.0.0.1:80)"));
    assert_non_null(strstr(w.text, "endpoints.yaml:6:3: field 'endpoints[0].weight': unknown field, ignored"));
    /* an empty file or list is an empty pool, as in llm-d-router */
    write_file(f->path, "endpoints: []\n");
    assert_int_equal(epfile_load(f->s, f->path, true, NULL, NULL, &err), KV_OK);
    assert_int_equal(epset_count(f->s), 0);
}

static void test_errors_name_line_and_field(void **state)
{
    fixture *f = *state;
    static const struct {
        const char *text, *error;
    } cases[] = {
        {"endpoints:\n- name: a\n  address: 10.0.0.1\n  port: 70000\n",
         "endpoints.yaml:4:9: field 'endpoints[0].port': 70000 is out of range [1, 65535]"},
        {"endpoints:\n- name: a\n  address: 10.0.0.1\n  port: \"http\"\n",
         "endpoints.yaml:4:9: field 'endpoints[0].port': expected an integer, got 'http'"},
        {"endpoints:\n- name: a\n  address: vllm-0.local\n  port: 8000\n",
         "endpoints.yaml:3:12: field 'endpoints[0].address': 'vllm-0.local' is not an IPv4 address (file-discovery "
         "takes literal IPv4 addresses, no host names)"},
        {"endpoints:\n- name: a\n  port: 8000\n", "endpoints.yaml:2:3: field 'endpoints[0]': missing field 'address'"},
        {"endpoints:\n- name: a\n  address: 10.0.0.1\n  port: 1\n- name: a\n  address: 10.0.0.2\n  port: 1\n",
         "endpoints.yaml:5:3: field 'endpoints[1]': name 'a' is already endpoints[0]'s (line 2)"},
        {"endpoints:\n- name: a\n  address: 10.0.0.1\n  port: 1\n- name: b\n  address: 10.0.0.1\n  port: 1\n",
         "endpoints.yaml:5:3: field 'endpoints[1]': address:port '10.0.0.1:1' is already endpoints[0]'s (line 2)"},
        {"endpoints:\n- name: a\n  address: 10.0.0.1\n  port: 1\n  labels: [x]\n",
         "endpoints.yaml:5:11: field 'endpoints[0].labels': expected a map of strings"},
        {"endpoints: 10.0.0.1:8000\n",
         "endpoints.yaml:1:12: field 'endpoints': expected a list of {name, address, port, labels}"},
        {"endpoints:\n- name: a\n  address: [10.0.0.1\n", "endpoints.yaml:4:"},
    };
    write_file(f->path, yaml_two);
    kv_err err = {0};
    assert_int_equal(epfile_load(f->s, f->path, true, NULL, NULL, &err), KV_OK);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        write_file(f->path, cases[i].text);
        err = (kv_err){0};
        assert_int_not_equal(epfile_load(f->s, f->path, true, NULL, NULL, &err), KV_OK);
        const char *at = strstr(err.msg, "endpoints.yaml:");
        if (!at || strncmp(at, cases[i].error, strlen(cases[i].error)))
            fail_msg("case %zu: want \"%s\", got \"%s\"", i, cases[i].error, err.msg);
        assert_int_equal(epset_count(f->s), 2);   /* a failed load changes nothing */
    }
    /* llm-d-router's 1 MiB cap */
    char *big = malloc(EPFILE_MAX_BYTES + 16);
    memset(big, '#', EPFILE_MAX_BYTES + 15);
    big[EPFILE_MAX_BYTES + 15] = 0;
    write_file(f->path, big);
    free(big);
    assert_int_equal(epfile_load(f->s, f->path, true, NULL, NULL, &err), KV_EINVAL);
    assert_non_null(strstr(err.msg, "endpoints.yaml: larger than 1 MiB"));
    unlink(f->path);
    assert_int_equal(epfile_load(f->s, f->path, true, NULL, NULL, &err), KV_EIO);
    assert_non_null(strstr(err.msg, "endpoints.yaml: No such file or directory"));
}

/* A reload (not strict) applies the valid entries and names each skipped one. */
static void test_reload_skips_bad_entries(void **state)
{
    fixture *f = *state;
    write_file(f->path, "endpoints:\n- name: a\n  address: 10.0.0.1\n  port: 0\n- name: b\n  address: 10.0.0.2\n"
                        "  port: 8000\n");
    kv_err err = {0};
    fx_warnbuf w = {0};
    assert_int_equal(epfile_load(f->s, f->path, false, fx_collect, &w, &err), KV_OK);
    char got[256];
    describe(f->s, got, sizeof got);
    assert_string_equal(got, "10.0.0.2:8000 b default 0 -\n");
    assert_non_null(strstr(w.text, "endpoints.yaml:4:9: field 'endpoints[0].port': 0 is out of range [1, 65535] "
                                   "(entry skipped)"));
}

/* Waits (bounded) for the watcher's reload count to pass n. */
static void wait_reloads(epfile *wf, unsigned long n)
{
    for (int i = 0; i < 4000 && epfile_reloads(wf) <= n; i++)
        nanosleep(&(struct timespec){.tv_nsec = 5000000}, NULL);
    assert_true(epfile_reloads(wf) > n);
}

static void test_watch_adds_and_removes(void **state)
{
    fixture *f = *state;
    write_file(f->path, "endpoints:\n- {name: a, address: 10.0.0.1, port: \"8000\"}\n");
    kv_err err = {0};
    fx_warnbuf w = {0};
    epfile_config c = {.endpoints = f->s, .path = f->path, .watch = true, .poll_ms = 5, .warn = fx_collect, .warn_ctx = &w};
    epfile *wf = epfile_start(&c, &err);
    assert_non_null(wf);
    char got[256];
    describe(f->s, got, sizeof got);
    assert_string_equal(got, "10.0.0.1:8000 a default 0 -\n");
    uint32_t id_a;
    {
        sched_endpoint *const *e;
        epset_acquire(f->s, &e);
        id_a = e[0]->id;
        epset_release(f->s);
    }
    /* edited in place: an endpoint added; a keeps its identity */
    write_file(f->path, "endpoints:\n- {name: a, address: 10.0.0.1, port: \"8000\"}\n"
                        "- {name: b, address: 10.0.0.2, port: \"8000\", labels: {llm-d.ai/role: prefill}}\n");
    wait_reloads(wf, 0);
    describe(f->s, got, sizeof got);
    assert_string_equal(got, "10.0.0.1:8000 a default 0 -\n10.0.0.2:8000 b default 1 prefill\n");
    {
        sched_endpoint *const *e;
        epset_acquire(f->s, &e);
        assert_int_equal(e[0]->id, id_a);
        epset_release(f->s);
    }
    /* replaced by an atomic rename (a new inode): a removed */
    char next[128];
    snprintf(next, sizeof next, "%s/next.yaml", f->dir);
    write_file(next, "endpoints:\n- {name: b, address: 10.0.0.2, port: \"8000\"}\n");
    unsigned long before = epfile_reloads(wf);
    assert_int_equal(rename(next, f->path), 0);
    wait_reloads(wf, before);
    describe(f->s, got, sizeof got);
    assert_string_equal(got, "10.0.0.2:8000 b default 0 -\n");
    /* broken: the set stays and the error is reported with its line */
    before = epfile_reloads(wf);
    write_file(f->path, "endpoints:\n- {name: b, address: 10.0.0.2, port: \"8000\"\n");
    wait_reloads(wf, before);
    assert_int_equal(epset_count(f->s), 1);
    assert_non_null(strstr(w.text, "endpoints.yaml:"));
    assert_non_null(strstr(w.text, "keeping the 1 endpoints loaded before"));
    epfile_stop(wf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_schema_yaml_and_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_name_line_and_field, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_skips_bad_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watch_adds_and_removes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
