/* bench_demo_live: make demo-live's sim-versus-live table as a benchmark. Runs
 * mk/demo-live.sh on scenarios/rate60-live.yaml (BENCH_DEMO_LIVE_SCENARIO=FILE for another)
 * into build/bench/demo-live/, prints its table (which also holds TTFT mean and p90), then
 * one row per router and figure with the difference measured - simulated and a target:
 * requests/s and output tokens/s within 10%, end-to-end latency within 25%, the prefix-cache
 * hit rate within 5 points. TTFT has no target: at the demo's speedup the live path's own
 * time (HTTP hops, parsing a 7,200-token prompt three times), which does not scale with
 * the pods, is most of llm-d-precise's TTFT. The load average is printed: the pods, the
 * gateway and the client share the machine with whatever else runs, and once they cannot
 * keep up the measured side falls behind the wall clock the simulation assumes.
 * Exit status: 1 when the demo itself fails (a live request failed, a run is missing);
 * a MISS row is a figure, not a failure. */
#include <math.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "compare.h"
#include "scenario.h"

#define SCENARIO "scenarios/rate60-live.yaml"
#define OUT "build/bench/demo-live"

extern char **environ;

static void row(const char *name, const char *measured, const char *target, bool pass)
{
    printf("| %-58s | %-56s | %-14s | %-4s |\n", name, measured, target, pass ? "PASS" : "MISS");
}

int main(void)
{
    const char *path = getenv("BENCH_DEMO_LIVE_SCENARIO") ? getenv("BENCH_DEMO_LIVE_SCENARIO") : SCENARIO;
    kv_err err = {0};
    scenario *s = scn_load(path, "policies/presets", &err);
    if (!s) {
        fprintf(stderr, "bench_demo_live: %s\n", err.msg);
        return 1;
    }
    char *argv[] = {"sh", "mk/demo-live.sh", (char *)path, OUT, NULL};
    pid_t pid;
    int st = -1;
    fflush(stdout);
    if (posix_spawnp(&pid, "sh", NULL, NULL, argv, environ) != 0 || waitpid(pid, &st, 0) != pid) {
        fprintf(stderr, "bench_demo_live: cannot run mk/demo-live.sh\n");
        scn_free(s);
        return 1;
    }
    double load[1] = {0};
    getloadavg(load, 1);
    compare_side *sim = calloc(s->n_routers, sizeof *sim), *live = calloc(s->n_routers, sizeof *live);
    int rc = sim && live ? compare_read(s, OUT "/runs.db", sim, live, &err) : KV_ENOMEM;
    if (rc) {
        fprintf(stderr, "bench_demo_live: %s\n", rc == KV_ENOMEM ? "out of memory" : err.msg);
    } else {
        printf("\nsim versus live (%s, speedup %g, load average %.2f at the end):\n", s->name, s->cluster.speedup,
               load[0]);
        static const struct {
            int m;
            const char *what, *target;
            double limit;             /* relative, or points for the hit rate */
        } figs[] = {
            {COMPARE_RPS, "requests/s", "|Δ| < 10%", 0.10},
            {COMPARE_OUT_TPS, "output tokens/s", "|Δ| < 10%", 0.10},
            {COMPARE_E2E, "E2E latency mean", "|Δ| < 25%", 0.25},
            {COMPARE_HIT, "prefix-cache hit rate", "|Δ| < 5 pts", 5},
        };
        for (size_t r = 0; r < s->n_routers; r++) {
            for (size_t k = 0; k < sizeof figs / sizeof *figs; k++) {
                double a = sim[r].v[figs[k].m], b = live[r].v[figs[k].m];
                bool hit = figs[k].m == COMPARE_HIT;
                double d = hit ? b - a : (b - a) / a;
                char name[128], m[128];
                snprintf(name, sizeof name, "demo-live %s: %s", s->routers[r].name, figs[k].what);
                if (hit)
                    snprintf(m, sizeof m, "sim %.1f%%, live %.1f%%: %+.1f pts", a, b, d);
                else
                    snprintf(m, sizeof m, "sim %.4g, live %.4g: %+.1f%%", a, b, 100 * d);
                row(name, m, figs[k].target, isfinite(d) && fabs(d) < figs[k].limit);
            }
        }
    }
    free(sim);
    free(live);
    scn_free(s);
    bool demo_ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (!demo_ok)
        fprintf(stderr, "bench_demo_live: mk/demo-live.sh failed (status %d); see %s/demo-live-logs/\n", st, OUT);
    return rc || !demo_ok ? 1 : 0;
}
