/* slo: a scenario's service-level objective, the bar a sweep point or a plan's answer
 * must clear:
 *
 *   slo: {ttft_p90: 1s, itl_p90: 80ms, output_tokens_per_sec: 5000}
 *
 * Keys are expect:'s metrics (docs/policy-regression.md); a latency, count or ratio holds
 * when the measured value is at most the bound, a throughput when it is at least. A
 * metric with nothing to measure (no request finished) does not hold.
 * Ownership: plain values, no pointers into the YAML. Any thread. */
#ifndef KVROUTE_SIM_SLO_H
#define KVROUTE_SIM_SLO_H

#include <stdbool.h>
#include <stddef.h>

#include "kverr.h"
#include "lifecycle.h"
#include "yamltree.h"

#define SLO_MAX 16

typedef struct slo {
    size_t n;                          /* 0: no slo: section */
    int metric[SLO_MAX];               /* expect.h's metric indices */
    double bound[SLO_MAX];
} slo;

/* Parses an slo: node (NULL or null: none); errors name "slo.KEY". */
int slo_parse(const yt_doc *d, const yt_node *n, slo *out, kv_err *err);
/* Whether m meets every objective; when not and why is non-NULL, the first one missed
 * as "ttft_p90 1.2 s > 1 s". */
bool slo_holds(const slo *s, const lc_metrics *m, char *why, size_t cap);
/* "ttft_p90 <= 1 s, itl_p90 <= 80 ms" */
void slo_describe(const slo *s, char *out, size_t cap);

#endif
