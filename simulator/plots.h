/* plots: inference-perf --analyze's three charts with the routers overlaid
 * (latency_vs_qps, throughput_vs_qps, throughput_vs_latency; x = achieved rate, means
 * in ms), a TTFT CDF, and per router a chart of each server's KV usage and prefix-cache
 * hit rate over time. Data goes to DIR/charts/ as .dat files; the gnuplot scripts in
 * plots/ turn them into .png files next to them. Without gnuplot on PATH the data files are still
 * written and one line on stderr says so. */
#ifndef KVROUTE_SIM_PLOTS_H
#define KVROUTE_SIM_PLOTS_H

#include <stdbool.h>
#include <stddef.h>

#include "kverr.h"
#include "lifecycle.h"
#include "records.h"

typedef struct plots_opts {
    bool run_gnuplot;                 /* false = data files only (--no-plots) */
    /* Where the *.gp scripts are; NULL = "plots" next to the executable, then ./plots. */
    const char *script_dir;
    /* Also draw the overlaid charts as SVG into this folder (report.html inlines them);
     * NULL: PNG only. */
    const char *svg_dir;
} plots_opts;

/* The overlaid charts, in the order plots_write draws them (NAME.png, NAME.svg). */
extern const char *const plots_overlay_names[4];

/* runs[i] and m[i] belong to router i (baseline first). */
int plots_write(const sim_run *const *runs, const lc_run *const *m, size_t n, const char *dir,
                const plots_opts *o, kv_err *err);

/* The folder of the *.gp scripts: o->script_dir, else plots/ next to the executable
 * (the repository root for ./sim), else ./plots; false when it has none. */
bool plots_find_scripts(const plots_opts *o, char *out, size_t cap);
/* Runs gnuplot -e vars script; KV_ENOTFOUND when gnuplot is not on PATH. */
int plots_run_gnuplot(const char *vars, const char *script, kv_err *err);
/* Runs scripts[0..n) in one gnuplot process, each after "reset" and its vars[i] (which
 * must set every variable a script defaults with exists(): variables outlive "reset");
 * KV_ENOTFOUND when gnuplot is not on PATH. */
int plots_run_gnuplot_batch(const char *const *vars, const char *const *scripts, size_t n, kv_err *err);

#endif
