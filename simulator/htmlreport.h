/* htmlreport: DIR/report.html, one self-contained page a user opens instead of reading
 * JSON: the run's header, the per-stage comparison (the console's table and a full
 * table per router and stage), the charts inline as SVG (gnuplot's svg terminal), the
 * expect: results, a sweep's or plan's answer, for a live run every run of its runs.db
 * (simulated against measured), and the scenario as written. Nothing is
 * fetched: no external script, style, image or font; a short inline script marks the
 * page once every chart has a size (tests/it_report.sh reads that in headless Chromium).
 * Main thread only. */
#ifndef KVROUTE_SIM_HTMLREPORT_H
#define KVROUTE_SIM_HTMLREPORT_H

#include <stddef.h>

#include "kverr.h"
#include "lifecycle.h"
#include "scenario.h"
#include "simdb.h"

/* What a report shows besides the scenario; NULL or empty parts are left out. */
typedef struct hr_parts {
    const char *header;               /* the console's first line */
    const char *const *names;         /* routers that ran, with their metrics */
    const lc_run *lcs;
    size_t n;
    const char *compare;              /* the console's comparison table */
    const char *expect;               /* expect:'s and --baseline's results, as printed */
    const char *sweep;                /* a sweep's and plan's answer, as printed */
    const char *svg_dir;              /* the charts as SVG files (NULL: none drawn) */
    const char *const *charts;        /* their names in svg_dir, without .svg */
    size_t n_charts;
    simdb *all_runs;                  /* a live run: every run of its runs.db, the simulated
                                         ones beside the measured one; NULL: none */
} hr_parts;

int hr_write(const scenario *s, const char *path, const hr_parts *p, kv_err *err);

#endif
