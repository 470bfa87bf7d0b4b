/* test_expect: a scenario's expect: section against hand-computed cases — parsing
 * (units, relative bounds, errors naming file:line:col and field), evaluation (pass,
 * fail, margins, a router left out), the --baseline comparison against a runs.db
 * written by hand, and the JUnit file's escaping. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "expect.h"

static const char *const routers[] = {"svc", "precise"};

/* The checks point into their document's strings: the documents live until the end. */
static yt_doc *docs[32];
static size_t n_docs;

static int free_docs(void **state)
{
    (void)state;
    while (n_docs)
        yt_free(docs[--n_docs]);
    return 0;
}

/* Parses text as an expect: section; returns the error code (msg in err). */
static int parse(const char *text, exp_set *e, kv_err *err)
{
    kv_err lerr = {0};
    yt_doc *d = yt_load_string(text, strlen(text), "s.yaml", &lerr);
    assert_non_null(d);
    assert_true(n_docs < sizeof docs / sizeof *docs);
    docs[n_docs++] = d;
    return exp_parse(d, yt_get(yt_root(d), "expect"), routers, 2, 2, e, err);
}

static void test_parse_units(void **state)
{
    (void)state;
    exp_set e;
    kv_err err = {0};
    assert_int_equal(parse("expect:\n  tolerance: 10%\n  checks:\n"
                           "    - router: precise\n      stage: 0\n      tolerance: 0.2\n"
                           "      that: [ttft_p90 < 250ms, 'failed == 0', prefix_hit_rate >= 50%,\n"
                           "             'output_tokens_per_sec >= 1.8 * svc.output_tokens_per_sec', itl_p50 <= 2]\n",
                           &e, &err),
                     KV_OK);
    assert_int_equal(e.n, 5);
    assert_true(e.tolerance == 0.1);
    assert_string_equal(e.checks[0].router, "precise");
    assert_int_equal(e.checks[0].stage, 0);
    assert_true(e.checks[0].tolerance == 0.2);
    assert_int_equal(e.checks[0].op, EXP_LT);
    assert_true(e.checks[0].bound == 0.25);
    assert_int_equal(e.checks[1].op, EXP_EQ);
    assert_true(e.checks[2].bound == 0.5);
    assert_int_equal(e.checks[2].op, EXP_GE);
    assert_string_equal(e.checks[3].ref_router, "svc");
    assert_true(e.checks[3].bound == 1.8);
    assert_true(e.checks[4].bound == 2.0);
    assert_int_equal(e.checks[4].op, EXP_LE);
    exp_set_free(&e);
}

/* Each bad section fails at load with the position and the field. */
static void test_parse_errors(void **state)
{
    (void)state;
    static const struct { const char *text, *msg; } cases[] = {
        {"expect:\n  checks:\n    - router: precise\n      that: [ttft_p91 < 1s]\n",
         "s.yaml:4:14: field 'expect.checks[0].that[0]': unknown metric 'ttft_p91'"},
        {"expect:\n  checks:\n    - router: nope\n      that: [failed == 0]\n",
         "s.yaml:3:15: field 'expect.checks[0].router': unknown router 'nope'"},
        {"expect:\n  checks:\n    - router: precise\n      that: ['ttft_p90 < 2 * other.ttft_p90']\n",
         "s.yaml:4:14: field 'expect.checks[0].that[0]': unknown router 'other'"},
        {"expect:\n  checks:\n    - router: precise\n      that: [ttft_p90 < 1 parsec]\n",
         "s.yaml:4:14: field 'expect.checks[0].that[0]': '1 parsec' is neither"},
        {"expect:\n  checks:\n    - router: precise\n      that: ['ttft_p90 < svc.output_tokens_per_sec']\n",
         "are not in the same unit"},
        {"expect:\n  checks:\n    - router: precise\n      stage: 2\n      that: [failed == 0]\n",
         "s.yaml:4:14: field 'expect.checks[0].stage'"},
        {"expect:\n  checks:\n    - router: precise\n      that: [failed = 0]\n",
         "expected one of < <= > >= =="},
        {"expect:\n  tolerance: lots\n", "s.yaml:2:14: field 'expect.tolerance': expected a tolerance"},
        {"expect:\n  checks:\n    - router: precise\n      thta: [failed == 0]\n", "that"},
        {"expect:\n  chekcs: []\n", "chekcs"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        exp_set e;
        kv_err err = {0};
        int rc = parse(cases[i].text, &e, &err);
        if (rc == KV_OK || !strstr(err.msg, cases[i].msg))
            fail_msg("case %zu: rc %d, message '%s', expected '%s'", i, rc, err.msg, cases[i].msg);
        exp_set_free(&e);
    }
}

/* Two routers, two stages, figures chosen so every bound is easy to check by hand. */
static void fill(lc_run *r, lc_metrics st[2], double ttft_p90, double out_tps, uint64_t failed)
{
    for (int i = 0; i < 2; i++) {
        memset(&st[i], 0, sizeof st[i]);
        st[i].stage = i;
        st[i].ttft.valid = true;
        st[i].ttft.v[STATS_P90] = ttft_p90 * (i + 1);
        st[i].output_tokens_per_sec = out_tps;
        st[i].n_failed = failed;
        st[i].input_tokens = 1000;
        st[i].cached_tokens = 250;
    }
    *r = (lc_run){.stages = st, .n_stages = 2};
}

static char *printed(const exp_report *rep)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    exp_print(f, rep);
    fclose(f);
    return buf;
}

static void test_eval(void **state)
{
    (void)state;
    exp_set e;
    kv_err err = {0};
    assert_int_equal(parse("expect:\n  checks:\n    - router: precise\n"
                           "      that: [ttft_p90 < 250ms, failed == 0, prefix_hit_rate > 30%,\n"
                           "             'output_tokens_per_sec >= 1.8 * svc.output_tokens_per_sec']\n"
                           "    - {router: svc, stage: 0, that: [ttft_p90 <= 1s]}\n",
                           &e, &err),
                     KV_OK);
    lc_metrics a[2], b[2];
    lc_run runs[2];
    fill(&runs[0], a, 0.5, 1000, 0);     /* svc: stage 0 p90 0.5 s, stage 1 1.0 s */
    fill(&runs[1], b, 0.1, 1700, 2);     /* precise: last stage p90 0.2 s */
    exp_report rep = {0};
    assert_int_equal(exp_eval(&e, routers, runs, 2, &rep, &err), KV_OK);
    assert_int_equal(rep.n, 5);
    assert_int_equal(rep.n_failed, 3);
    char *out = printed(&rep);
    assert_string_equal(out,
        "PASS  precise last stage: ttft_p90 < 250ms: 200 ms (bound < 250 ms, margin 50 ms)\n"
        "FAIL  precise last stage: failed == 0: 2 (bound == 0, margin -2)\n"
        "FAIL  precise last stage: prefix_hit_rate > 30%: 25.00% (bound > 30.00%, margin -5.00%)\n"
        "FAIL  precise last stage: output_tokens_per_sec >= 1.8 * svc.output_tokens_per_sec: 1700.0/s "
        "(bound >= 1800.0/s, margin -100.0/s)\n"
        "PASS  svc stage 0: ttft_p90 <= 1s: 500 ms (bound <= 1 s, margin 500 ms)\n"
        "expect: 2 passed, 3 failed, 0 skipped\n");
    free(out);
    exp_report_free(&rep);

    /* --router precise: the relative check and svc's own are skipped, not failed */
    const char *only[] = {"precise"};
    assert_int_equal(exp_eval(&e, only, &runs[1], 1, &rep, &err), KV_OK);
    assert_int_equal(rep.n_failed, 2);
    assert_int_equal(rep.n_skipped, 2);
    assert_string_equal(rep.r[3].detail, "router 'svc' did not run");
    exp_report_free(&rep);
    exp_set_free(&e);
}

/* A runs.db with the two columns the checks read, as simdb writes them. */
static void write_baseline(const char *path)
{
    sqlite3 *db;
    unlink(path);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
        "CREATE TABLE runs(run_id INTEGER PRIMARY KEY, router TEXT);"
        "CREATE TABLE stages(run_id, stage, ttft_p90, output_tokens_per_sec, failures, cached_tokens, input_tokens);"
        "INSERT INTO runs VALUES(1, 'svc'), (2, 'precise');"
        "INSERT INTO stages VALUES(1, 0, 0.5, 1000, 0, 0, 1), (1, 1, 0.9, 1000, 0, 0, 1),"
        "                         (2, 0, 0.1, 1800, 0, 0, 1), (2, 1, 0.19, 1800, 0, 0, 1);",
        NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static void test_baseline(void **state)
{
    (void)state;
    char path[] = "/tmp/test_expect_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    write_baseline(path);
    lc_metrics a[2], b[2];
    lc_run runs[2];
    fill(&runs[0], a, 0.5, 1000, 0);
    fill(&runs[1], b, 0.1, 1700, 0);
    kv_err err = {0};

    /* no checks: the default set on every router's last stage, 5% */
    exp_set none = {.tolerance = 0.05};
    exp_report rep = {0};
    assert_int_equal(exp_baseline(&none, path, routers, runs, 2, &rep, &err), KV_OK);
    char *out = printed(&rep);
    assert_string_equal(out,
        "FAIL  svc last stage: ttft_p90 no worse than the baseline by more than 5%: 1 s (bound <= 945 ms, "
        "baseline 900 ms, margin -55 ms)\n"
        "PASS  svc last stage: output_tokens_per_sec no worse than the baseline by more than 5%: 1000.0/s "
        "(bound >= 950.0/s, baseline 1000.0/s, margin 50.0/s)\n"
        "PASS  svc last stage: failed no worse than the baseline by more than 5%: 0 (bound <= 0, baseline 0, "
        "margin 0)\n"
        "FAIL  precise last stage: ttft_p90 no worse than the baseline by more than 5%: 200 ms (bound <= 199.5 ms, "
        "baseline 190 ms, margin -0.5 ms)\n"
        "FAIL  precise last stage: output_tokens_per_sec no worse than the baseline by more than 5%: 1700.0/s "
        "(bound >= 1710.0/s, baseline 1800.0/s, margin -10.0/s)\n"
        "PASS  precise last stage: failed no worse than the baseline by more than 5%: 0 (bound <= 0, baseline 0, "
        "margin 0)\n"
        "expect: 3 passed, 3 failed, 0 skipped\n");
    free(out);
    exp_report_free(&rep);

    /* a check's own tolerance; one comparison per router, stage and metric */
    exp_set e;
    assert_int_equal(parse("expect:\n  checks:\n    - router: precise\n      stage: 0\n      tolerance: 10%\n"
                           "      that: [ttft_p90 < 1s, ttft_p90 > 1ms]\n",
                           &e, &err),
                     KV_OK);
    assert_int_equal(exp_baseline(&e, path, routers, runs, 2, &rep, &err), KV_OK);
    assert_int_equal(rep.n, 1);
    assert_int_equal(rep.r[0].status, EXP_PASS);     /* 100 ms against 110 ms */
    exp_report_free(&rep);
    exp_set_free(&e);

    assert_int_not_equal(exp_baseline(&none, "/nonexistent/runs.db", routers, runs, 2, &rep, &err), KV_OK);
    assert_non_null(strstr(err.msg, "/nonexistent/runs.db"));
    exp_report_free(&rep);
    unlink(path);
}

/* Every user string is escaped; a failure carries value, bound and margin. */
static void test_junit(void **state)
{
    (void)state;
    exp_report rep = {0};
    rep.r = calloc(2, sizeof *rep.r);
    rep.r[0] = (exp_result){.router = strdup("a&b"), .name = strdup("ttft_p90 < 1s"),
                            .detail = strdup("2 s (bound < 1 s, margin -1 s)"), .status = EXP_FAIL};
    rep.r[1] = (exp_result){.router = strdup("c"), .name = strdup("x \"q\" 'y'"), .detail = strdup("ok"),
                            .status = EXP_PASS};
    rep.n = 2, rep.n_failed = 1;
    char path[] = "/tmp/test_expect_junit_XXXXXX";
    close(mkstemp(path));
    kv_err err = {0};
    assert_int_equal(exp_write_junit(path, "s<1>", &rep, &err), KV_OK);
    FILE *f = fopen(path, "r");
    char buf[2048];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    unlink(path);
    assert_string_equal(buf,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<testsuites tests=\"2\" failures=\"1\" skipped=\"0\">\n"
        "  <testsuite name=\"s&lt;1&gt;\" tests=\"2\" failures=\"1\" skipped=\"0\">\n"
        "    <testcase classname=\"s&lt;1&gt;.a&amp;b\" name=\"ttft_p90 &lt; 1s\">\n"
        "      <failure message=\"2 s (bound &lt; 1 s, margin -1 s)\"/>\n"
        "    </testcase>\n"
        "    <testcase classname=\"s&lt;1&gt;.c\" name=\"x &quot;q&quot; &apos;y&apos;\">\n"
        "      <system-out>ok</system-out>\n"
        "    </testcase>\n"
        "  </testsuite>\n"
        "</testsuites>\n");
    exp_report_free(&rep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_units),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_eval),
        cmocka_unit_test(test_baseline),
        cmocka_unit_test(test_junit),
    };
    return cmocka_run_group_tests(tests, NULL, free_docs);
}
