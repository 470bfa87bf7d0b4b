/* fuzz_k8s_stream: Kubernetes API-server replies as ./epp's watcher reads them
 * (live/k8s.c without HTTP: k8s_detached, k8s_feed_list, k8s_feed_watch): LIST replies
 * and WATCH event streams of pods, the InferencePool, InferenceObjectives and
 * InferenceModelRewrites, applied to a real endpoint set, objectives and rewrites table.
 *
 * Input: one options byte (bit 0: follow the InferencePool "pool", else the selector
 * app=vllm with target ports 8000 and 8001), then records: a byte (bits 0-1 the
 * collection, bit 2 WATCH rather than LIST, bits 3-7 the watch chunk size, 0: whole),
 * a 2-byte little-endian length and that many bytes of reply body.
 *
 * Checked: every endpoint of the set is "ip:port" with one of the ports in use, and a
 * pick from the rewrites table succeeds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "endpoints.h"
#include "k8s.h"
#include "log.h"
#include "model_rewrites.h"
#include "objectives.h"

static void quiet(void *ctx, const char *line) {}

static uint64_t counter_rand(void *ctx) { return (*(uint64_t *)ctx)++; }

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_setup(0, quiet, NULL);
    return 0;
}

/* Every endpoint name ends in ":<port>" with a port from 1 to 65535. */
static void check_endpoints(epset *eps)
{
    epset_snap snap;
    if (epset_snapshot(eps, &snap, NULL) != KV_OK)
        abort();
    for (size_t i = 0; i < snap.n; i++) {
        const char *colon = strrchr(snap.names[i], ':');
        long port = colon ? strtol(colon + 1, NULL, 10) : 0;
        if (port < 1 || port > 65535)
            abort();
    }
    epset_snap_free(&snap);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint64_t draws = 0;
    epset *eps = epset_new(0, NULL, NULL, NULL);
    objectives *objs = objectives_new(NULL);
    model_rewrites *rws = model_rewrites_new(counter_rand, &draws, NULL);
    k8s_watcher *w = NULL;
    if (!eps || !objs || !rws)
        goto out;
    k8s_config cfg = {.endpoints = eps, .ns = "default", .objectives = objs, .model_rewrites = rws};
    if (data[0] & 1) {
        cfg.pool_name = "pool";
    } else {
        cfg.selector = "app=vllm";
        cfg.target_ports[0] = 8000, cfg.target_ports[1] = 8001;
        cfg.n_target_ports = 2;
    }
    if (!(w = k8s_detached(&cfg, NULL)))
        goto out;
    for (size_t off = 1; off + 3 <= size;) {
        uint8_t rec = data[off];
        size_t len = (size_t)data[off + 1] | (size_t)data[off + 2] << 8;
        off += 3;
        if (len > size - off)
            len = size - off;
        k8s_collection c = (k8s_collection)(rec & 3);
        if (rec & 4)
            k8s_feed_watch(w, c, (const char *)data + off, len, rec >> 3);
        else
            k8s_feed_list(w, c, (const char *)data + off, len, NULL);
        off += len;
    }
    check_endpoints(eps);
    char *to = NULL;
    if (model_rewrites_pick(rws, "m", &to, NULL) != KV_OK)
        abort();
    free(to);
out:
    k8s_stop(w);
    model_rewrites_free(rws);
    objectives_free(objs);
    epset_free(eps);
    return 0;
}
