/* fuzz_ingest_frames: ZMQ messages as ./epp's KV-event receiver gets them from vLLM pods
 * ([topic "kv@<pod>@<model>", seq (8 bytes), payload]), through live/ingest.c without
 * sockets (ingest_detached, ingest_feed: the receiver's frame, topic, seq and pod checks,
 * then a worker's sequence tracking -- duplicates, gaps, restarts -- decoding and
 * applying to every source's index). Two sources with the same keys and index settings
 * (two precise-prefix-cache scorers reading one kvEventsConfig); three endpoints are
 * known (10.0.0.1:8000, 10.0.0.2:8000, 10.0.0.3:8001); other pods must be rejected. A
 * kvdiag (live/kvdiag.h) is told of every topic outside "kv@" and every event message,
 * as in ./epp, so its handling of any topic bytes and model names is fuzzed too.
 *
 * Input: messages, as tests/support/fuzz_frames.h cuts them.
 *
 * Checked: every message is counted once (a message or a bad frame count), no more
 * batches are applied than messages accepted, each index holds slots of known endpoints
 * only, and the two indexes received the same changes (equal counts of blocks, holders,
 * engine keys, stores, removes and clears). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../support/fuzz_frames.h"
#include "endpoints.h"
#include "ingest.h"
#include "kvdiag.h"
#include "kvindex.h"
#include "log.h"

/* Made once (a fresh index per input held the rate at ~400 inputs/s); every input
 * leaves them empty (their endpoints' slots removed), so inputs stay independent. */
#define N_SOURCES 2
static sched_kvsource src[N_SOURCES];
static sched_kvsource *srcs[N_SOURCES];
static epset *eps;
static kvdiag *diag;   /* its issues and pods are bounded, so one serves every input */

static void quiet(void *ctx, const char *line) {}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_setup(0, quiet, NULL);
    kvindex_config ic = {.capacity = 4096, .max_endpoints = 8};
    for (size_t k = 0; k < N_SOURCES; k++) {
        src[k] = (sched_kvsource){.index = kvindex_new(&ic, NULL)};
        srcs[k] = &src[k];
        if (!src[k].index || blockkeys_init(&src[k].keys, BLOCKKEYS_FNV64A_CBOR, 16, "", NULL) != KV_OK)
            abort();
    }
    if (!(diag = kvdiag_new(NULL, NULL)) || !(eps = epset_new(0, NULL, NULL, NULL)) ||
        epset_parse_list(eps, "10.0.0.1:8000 10.0.0.2:8000 10.0.0.3:8001", "fuzz", NULL) != KV_OK)
        abort();
    return 0;
}

/* Checks the slots and that every index saw the same changes, and empties the indexes
 * for the next input. */
static void check_sources(void)
{
    epset_snap snap;
    if (epset_snapshot(eps, &snap, NULL) != KV_OK)
        abort();
    kvindex_stats first;
    kvindex_get_stats(src[0].index, &first);
    for (size_t k = 0; k < N_SOURCES; k++) {
        kvindex *ix = src[k].index;
        kvindex_stats st;
        kvindex_get_stats(ix, &st);
        if (st.blocks != first.blocks || st.entries != first.entries || st.engine_keys != first.engine_keys ||
            st.stores != first.stores || st.removes != first.removes || st.clears != first.clears)
            abort();
        for (uint32_t slot = 0; slot < kvindex_max_endpoints(ix); slot++) {
            const char *name = kvindex_endpoint_name(ix, (int)slot);
            if (name && !epset_snap_has(&snap, name))
                abort();
            if (name)
                kvindex_endpoint_remove(ix, (int)slot);
        }
    }
    epset_snap_free(&snap);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ingest_config cfg = {.sources = srcs, .n_sources = N_SOURCES, .endpoints = eps, .diag = diag,
                         .topic_filter = "kv@"};
    ingest *g = ingest_detached(&cfg, NULL);
    if (!g)
        return 0;
    uint64_t fed = 0;
    for (size_t off = 0; off < size; fed++) {
        ingest_frame f[3];
        size_t n = fuzz_frames_next(data, size, &off, f);
        ingest_feed(g, f, n);
    }
    ingest_stats st;
    ingest_get_stats(g, &st);
    if (st.messages + st.bad_frames != fed || st.batches > st.messages)
        abort();
    kvdiag_request(diag, "m", "10.0.0.1:8000", 64);   /* the request side, against whatever was fed */
    json_decref(kvdiag_issues_json(diag));
    ingest_stop(g);
    check_sources();
    return 0;
}
