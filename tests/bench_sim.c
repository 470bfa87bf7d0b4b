/* bench_sim: the simulator's speed on the guide's full benchmark — the 17-stage ladder
 * (17,084 requests of ~7,600 prompt and 1,000 output tokens on 8 replicas), once per
 * router (round robin, then llm-d precise prefix routing, whose KV events go through
 * the real decode and index path). Measured: wall time of the simulation itself
 * (workload generation included, report writing excluded) as CPU time of this single-
 * threaded process (steady on a shared machine) and wall time, and simulated requests
 * per CPU second. Target: both routers in under 2 s on one core, judged on CPU time:
 * wall time is printed with the load average, since on a busy host it measures the
 * neighbours as much as the simulator. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "cluster.h"
#include "scenario.h"
#include "workload.h"

#define TARGET_S 2.0

static double clock_s(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double cpu_s(void) { return clock_s(CLOCK_PROCESS_CPUTIME_ID); }
static double wall_s(void) { return clock_s(CLOCK_MONOTONIC); }

static void row(const char *name, const char *measured, const char *target, bool pass)
{
    printf("| %-58s | %-56s | %-14s | %-4s |\n", name, measured, target, pass ? "PASS" : "MISS");
}

int main(void)
{
    kv_err err = {0};
    double t0 = cpu_s(), w0 = wall_s();
    scenario *s = scn_load("scenarios/precise-guide-ladder.yaml", "policies/presets", &err);
    workload *w = s ? wl_build(&s->workload, s->seed, &err) : NULL;
    if (!w) {
        fprintf(stderr, "bench_sim: %s\n", err.msg);
        scn_free(s);
        return 1;
    }
    double t_wl = cpu_s() - t0, total = t_wl;
    char name[96], measured[96], target[32];
    snprintf(measured, sizeof measured, "%.3f s CPU (%zu prompts, %llu requests)", t_wl, w->n_prompts,
             (unsigned long long)wl_total_requests(w));
    row("sim: ladder workload generation", measured, "-", true);
    for (size_t r = 0; r < s->n_routers; r++) {
        sim_run run;
        cluster_stats st;
        double t = cpu_s(), wt = wall_s();
        if (cluster_run(s, w, r, NULL, &run, &st, &err)) {
            fprintf(stderr, "bench_sim: %s\n", err.msg);
            wl_free(w);
            scn_free(s);
            return 1;
        }
        double dt = cpu_s() - t, dw = wall_s() - wt;
        total += dt;
        snprintf(name, sizeof name, "sim: 17-stage ladder, %s", s->routers[r].name);
        snprintf(measured, sizeof measured, "%.3f s CPU, %.3f s wall, %.0f sim req/s, %.0f s sim", dt, dw,
                 (double)run.n_requests / dt, (double)st.sim_end_us / 1e6);
        row(name, measured, "-", true);
        cluster_run_free(&run);
    }
    snprintf(measured, sizeof measured, "%.3f s CPU (%.3f s wall), %.0f sim req/s", total, wall_s() - w0,
             (double)wl_total_requests(w) * (double)s->n_routers / total);
    snprintf(target, sizeof target, "< %.1f s CPU", TARGET_S);
    row("sim: 17-stage ladder, both routers (one core)", measured, target, total < TARGET_S);
    double load[3];
    if (getloadavg(load, 3) == 3) {
        snprintf(measured, sizeof measured, "%.2f %.2f %.2f (1, 5, 15 min)", load[0], load[1], load[2]);
        row("sim: host load average during the run", measured, "-", true);
    }
    wl_free(w);
    scn_free(s);
    return 0;
}
