/* slo: parsing and checking a scenario's slo: section (see slo.h). */
#include "slo.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "expect.h"

int slo_parse(const yt_doc *d, const yt_node *n, slo *out, kv_err *err)
{
    *out = (slo){0};
    if (yt_is_null(n))
        return KV_OK;
    if (n->kind != YT_MAP)
        return yt_error(d, n, err, KV_EINVAL, "field 'slo': expected a map of metric: bound, e.g. "
                        "{ttft_p90: 1s, itl_p90: 80ms}");
    if (n->n == 0 || n->n > SLO_MAX)
        return yt_error(d, n, err, KV_EINVAL, "field 'slo': give 1 to %d objectives", SLO_MAX);
    for (size_t i = 0; i < n->n; i++) {
        const char *key = n->keys[i];
        int m = exp_metric_find(key, strlen(key));
        if (m < 0)
            return yt_error(d, n->keynodes[i], err, KV_EINVAL, "field 'slo.%s': unknown metric (the metrics of "
                            "expect:, e.g. ttft_p90, itl_p90, latency_p90, output_tokens_per_sec)", key);
        const yt_node *v = n->items[i];
        double b;
        if (v->kind != YT_SCALAR || !exp_metric_parse(v->str, m, &b))
            return yt_error(d, v, err, KV_EINVAL, "field 'slo.%s': expected a bound in the metric's unit (50ms, "
                            "1s, 5000, 40%%), got '%s'", key, v->kind == YT_SCALAR ? v->str : "a collection");
        out->metric[out->n] = m;
        out->bound[out->n++] = b;
    }
    return KV_OK;
}

static bool within(int metric, double v, double bound)
{
    return exp_metric_higher_better(metric) ? v >= bound : v <= bound;
}

bool slo_holds(const slo *s, const lc_metrics *m, char *why, size_t cap)
{
    for (size_t i = 0; i < s->n; i++) {
        double v = exp_metric_value(s->metric[i], m);
        if (!isnan(v) && within(s->metric[i], v, s->bound[i]))
            continue;
        if (why) {
            char a[48], b[48];
            exp_metric_format(a, sizeof a, s->metric[i], v);
            exp_metric_format(b, sizeof b, s->metric[i], s->bound[i]);
            snprintf(why, cap, "%s %s %s %s", exp_metric_name(s->metric[i]), isnan(v) ? "n/a" : a,
                     exp_metric_higher_better(s->metric[i]) ? "<" : ">", b);
        }
        return false;
    }
    if (why && cap)
        why[0] = 0;
    return true;
}

void slo_describe(const slo *s, char *out, size_t cap)
{
    size_t used = 0;
    out[0] = 0;
    for (size_t i = 0; i < s->n && used < cap; i++) {
        char b[48];
        exp_metric_format(b, sizeof b, s->metric[i], s->bound[i]);
        used += (size_t)snprintf(out + used, cap - used, "%s%s %s %s", i ? ", " : "", exp_metric_name(s->metric[i]),
                                 exp_metric_higher_better(s->metric[i]) ? ">=" : "<=", b);
    }
}
