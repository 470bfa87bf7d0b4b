/* log: zap-shaped JSON log lines (see log.h). The object is built with jansson and
 * dumped compact in insertion order, which is the order zap writes its keys in. */
#include "log.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int log_verbosity;
static void (*log_sink)(void *ctx, const char *line);
static void *log_sink_ctx;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

void log_setup(int verbosity, void (*sink)(void *ctx, const char *line), void *ctx)
{
    log_verbosity = verbosity;
    log_sink = sink;
    log_sink_ctx = ctx;
}

bool log_enabled(int level) { return level <= log_verbosity; }

const char *log_level_name(int level, char *buf, unsigned cap)
{
    switch (level) {
    case LOG_ERROR: return "error";
    case LOG_WARN: return "warn";
    case LOG_INFO: return "info";
    case LOG_DEBUG: return "debug";
    default: snprintf(buf, cap, "Level(%d)", -level); return buf;
    }
}

/* ISO 8601 UTC with milliseconds, as zap's ISO8601TimeEncoder under GIE's production config. */
static void log_ts(char *buf, size_t cap)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, cap - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* The fewest significant digits (1..17) that read back as v: what Go's strconv prints. */
static int shortest_digits(double v)
{
    char buf[40];
    for (int p = 1; p < 17; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, v);
        if (strtod(buf, NULL) == v)
            return p;
    }
    return 17;
}

/* zap writes a float64 as Go's strconv.FormatFloat(v, 'f', -1, 64): an integral value
 * without a fraction (1, 0) and others in the fewest digits that read back (0.3, not
 * jansson's 0.29999999999999999). Integral reals become integers; *digits is raised to
 * what the other reals need (the line is dumped at that precision; a line carries one
 * or two reals). jansson still writes an exponent below 1e-4 where Go writes 0.0000x. */
static void go_numbers(json_t *v, int *digits)
{
    const char *key;
    json_t *x;
    size_t i;
    void *tmp;
    if (json_is_object(v)) {
        json_object_foreach_safe(v, tmp, key, x) {
            double d = json_is_real(x) ? json_real_value(x) : 0;
            if (json_is_real(x) && d == nearbyint(d) && fabs(d) < 9007199254740992.0)
                json_object_set_new(v, key, json_integer((json_int_t)d));
            else
                go_numbers(x, digits);
        }
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, x) {
            double d = json_is_real(x) ? json_real_value(x) : 0;
            if (json_is_real(x) && d == nearbyint(d) && fabs(d) < 9007199254740992.0)
                json_array_set_new(v, i, json_integer((json_int_t)d));
            else
                go_numbers(x, digits);
        }
    } else if (json_is_real(v)) {
        int p = shortest_digits(json_real_value(v));
        if (p > *digits)
            *digits = p;
    }
}

void log_at(int level, const char *file, int line, const char *msg, const char *fields, ...)
{
    if (!log_enabled(level))
        return;
    char lv[24], ts[40], caller[128];
    const char *base = strrchr(file, '/');
    snprintf(caller, sizeof caller, "%s:%d", base ? base + 1 : file, line);
    log_ts(ts, sizeof ts);
    json_t *o = json_object();
    if (!o)
        return;
    json_object_set_new(o, "level", json_string(log_level_name(level, lv, sizeof lv)));
    json_object_set_new(o, "ts", json_string(ts));
    json_object_set_new(o, "caller", json_string(caller));
    json_object_set_new(o, "msg", json_string(msg));
    if (fields) {
        va_list ap;
        va_start(ap, fields);
        json_error_t jerr;
        json_t *f = json_vpack_ex(&jerr, 0, fields, ap);
        va_end(ap);
        /* A bad format is a programming error; keep the line and say what went wrong. */
        if (f && json_is_object(f))
            json_object_update(o, f);
        else
            json_object_set_new(o, "logFieldsError", json_string(jerr.text));
        json_decref(f);
    }
    int digits = 1;
    go_numbers(o, &digits);
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(digits));
    json_decref(o);
    if (!s)
        return;
    pthread_mutex_lock(&log_mu);
    if (log_sink)
        log_sink(log_sink_ctx, s);
    else {
        fputs(s, stderr);
        fputc('\n', stderr);
    }
    pthread_mutex_unlock(&log_mu);
    free(s);
}
