/* test_log: log lines are zap-shaped JSON (key order level, ts, caller, msg, fields),
 * V(n) levels print as zap does ("debug", "Level(-4)"), verbosity filters, and a bad
 * field format still yields a valid line that says so. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "log.h"

static char last[4096];
static int lines;

static void sink(void *ctx, const char *line)
{
    (void)ctx;
    snprintf(last, sizeof last, "%s", line);
    lines++;
}

static void test_shape_and_levels(void **state)
{
    (void)state;
    log_setup(4, sink, NULL);
    lines = 0;
    LOG_V(4, "Calculated score", "{s:s, s:{s:s, s:s}, s:f}", "plugin", "precise-prefix-cache-scorer/p", "endpoint",
          "name", "pod-a-rank-0", "namespace", "ns", "score", 1.0);
    assert_int_equal(lines, 1);
    json_error_t je;
    json_t *o = json_loads(last, 0, &je);
    assert_non_null(o);
    const char *want_keys[] = {"level", "ts", "caller", "msg", "plugin", "endpoint", "score"};
    void *it = json_object_iter(o);
    for (size_t i = 0; i < 7; i++, it = json_object_iter_next(o, it)) {
        assert_non_null(it);
        assert_string_equal(json_object_iter_key(it), want_keys[i]);
    }
    assert_string_equal(json_string_value(json_object_get(o, "level")), "Level(-4)");
    assert_string_equal(json_string_value(json_object_get(o, "msg")), "Calculated score");
    assert_string_equal(json_string_value(json_object_get(json_object_get(o, "endpoint"), "name")), "pod-a-rank-0");
    const char *caller = json_string_value(json_object_get(o, "caller"));
    assert_true(!strncmp(caller, "test_log.c:", 11));
    int y, mo, d, h, mi, s, ms;
    char z;
    assert_int_equal(sscanf(json_string_value(json_object_get(o, "ts")), "%4d-%2d-%2dT%2d:%2d:%2d.%3d%c", &y, &mo,
                            &d, &h, &mi, &s, &ms, &z),
                     8);
    assert_int_equal(z, 'Z');
    assert_int_equal(strlen(json_string_value(json_object_get(o, "ts"))), 24);
    json_decref(o);

    /* The grep users run (guide README) matches the line text. */
    assert_non_null(strstr(last, "\"msg\":\"Calculated score\""));

    char buf[24];
    assert_string_equal(log_level_name(LOG_DEBUG, buf, sizeof buf), "debug");
    assert_string_equal(log_level_name(LOG_INFO, buf, sizeof buf), "info");
    assert_string_equal(log_level_name(LOG_WARN, buf, sizeof buf), "warn");
    assert_string_equal(log_level_name(LOG_ERROR, buf, sizeof buf), "error");
    assert_string_equal(log_level_name(3, buf, sizeof buf), "Level(-3)");
}

static void test_filter_and_bad_fields(void **state)
{
    (void)state;
    log_setup(3, sink, NULL);
    lines = 0;
    LOG_V(4, "hidden", NULL);
    assert_int_equal(lines, 0);
    LOG_V(3, "shown", NULL);
    LOG_E("always", NULL);
    assert_int_equal(lines, 2);
    assert_non_null(strstr(last, "\"level\":\"error\""));
    log_setup(0, sink, NULL);
    LOG_W("warned", "{s:i}", "n", 5);
    assert_int_equal(lines, 3);
    assert_non_null(strstr(last, "\"level\":\"warn\""));
    assert_non_null(strstr(last, "\"n\":5"));
    LOG_I("bad fields", "[i]", 5);   /* not an object */
    json_t *o = json_loads(last, 0, NULL);
    assert_non_null(o);
    assert_non_null(json_object_get(o, "logFieldsError"));
    json_decref(o);
}

/* Reals as zap writes a Go float64 (strconv 'f', -1): integral without a fraction,
 * others in their shortest form, nested ones too; integers untouched. */
static void test_go_numbers(void **state)
{
    (void)state;
    log_setup(0, sink, NULL);
    LOG_I("n", "{s:f, s:f, s:f, s:f, s:[f], s:{s:f}, s:I}", "one", 1.0, "zero", 0.0, "tenth", 0.1, "third", 1.0 / 3,
          "list", -2.0, "obj", "half", 0.5, "int", (json_int_t)7);
    assert_non_null(strstr(last, "\"one\":1,\"zero\":0,\"tenth\":0.1,\"third\":0.3333333333333333,"
                                 "\"list\":[-2],\"obj\":{\"half\":0.5},\"int\":7}"));
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_go_numbers),
    cmocka_unit_test(test_shape_and_levels),
    cmocka_unit_test(test_filter_and_bad_fields),
};

int main(void) { return cmocka_run_group_tests(tests, NULL, NULL); }
