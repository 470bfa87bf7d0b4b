/* bench_kvdiag: what ./epp's "score is 0" bookkeeping (live/kvdiag.h) costs on the KV-event
 * path: one kvdiag_events per event message (a pod lookup among 256, its sequence number
 * and time, the block-size and model checks), from one thread and from four ingest
 * threads at once as ./epp runs them, with a routing thread reporting requests meanwhile.
 * A batch carries tens to hundreds of blocks that cost ~0.3 us each to key and insert
 * (bench_ingest), so per message this should stay well under a microsecond. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kvdiag.h"
#include "log.h"

#define PODS 256
#define MESSAGES 2000000
#define THREADS 4
#define TARGET_NS 1000.0

static char names[PODS][32];
static kvdiag *diag;
static atomic_bool done;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void quiet(void *ctx, const char *line) {}

/* An ingest worker: its share of the pods' messages, as ingest shards them. */
static void *worker(void *arg)
{
    int w = (int)(intptr_t)arg;
    for (int i = w; i < MESSAGES; i += THREADS)
        kvdiag_events(diag, names[(i / THREADS) % PODS], "Qwen/Qwen3-32B", (uint64_t)i, 64, 64);
    return NULL;
}

static void *router(void *arg)
{
    for (int i = 0; !atomic_load(&done); i++)
        kvdiag_request(diag, "Qwen/Qwen3-32B", names[i % PODS], 64);
    return NULL;
}

int main(void)
{
    log_setup(0, quiet, NULL);
    for (int i = 0; i < PODS; i++)
        snprintf(names[i], sizeof names[i], "10.0.%d.%d:8000", i / 250, i % 250);
    if (!(diag = kvdiag_new(NULL, NULL)))
        return 1;
    kvdiag_request(diag, "Qwen/Qwen3-32B", NULL, 64);
    double t0 = now();
    worker((void *)(intptr_t)0);
    for (int i = 1; i < THREADS; i++)   /* the rest of the messages, so every pod is seen */
        worker((void *)(intptr_t)i);
    double one = (now() - t0) / MESSAGES * 1e9;
    pthread_t th[THREADS], r;
    pthread_create(&r, NULL, router, NULL);
    t0 = now();
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    double four = (now() - t0) / MESSAGES * 1e9;
    atomic_store(&done, true);
    pthread_join(r, NULL);
    uint64_t n[KVDIAG_REASON_COUNT];
    kvdiag_counts(diag, n);
    kvdiag_free(diag);
    bool clean = true;
    for (int k = 0; k < KVDIAG_REASON_COUNT; k++)
        clean &= n[k] == 0;   /* a healthy stream: nothing to report */
    printf("| %-58s | %-52s | %-14s | %-4s |\n", "kvdiag benchmark", "measured", "target", "");
    char measured[96], target[32];
    snprintf(target, sizeof target, "<= %.0f ns", TARGET_NS);
    snprintf(measured, sizeof measured, "%.0f ns per message", one);
    printf("| %-58s | %-52s | %-14s | %-4s |\n", "kvdiag_events, 256 pods, one thread", measured, target,
           one <= TARGET_NS && clean ? "PASS" : "MISS");
    snprintf(measured, sizeof measured, "%.0f ns per message (wall / messages)", four);
    printf("| %-58s | %-52s | %-14s | %-4s |\n", "  same, 4 ingest threads + a routing thread", measured, target,
           four <= TARGET_NS && clean ? "PASS" : "MISS");
    return 0;
}
