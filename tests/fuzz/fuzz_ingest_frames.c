/* fuzz_ingest_frames: ZMQ messages as ./epp's KV-event receiver gets them from vLLM pods
 * ([topic "kv@<pod>@<model>", seq (8 bytes), payload]), through live/ingest.c without
 * sockets (ingest_detached, ingest_feed: the receiver's frame, topic, seq and pod checks,
 * then a worker's sequence tracking -- duplicates, gaps, restarts -- decoding and
 * applying to the index). Three endpoints are known (10.0.0.1:8000, 10.0.0.2:8000,
 * 10.0.0.3:8001); other pods must be rejected.
 *
 * Input: messages, each a frame-count byte (count % 5) and per frame a 2-byte
 * little-endian length and its bytes.
 *
 * Checked: every message is counted once (a message or a bad frame count), no more
 * batches are applied than messages accepted, and the index holds slots of known
 * endpoints only. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "endpoints.h"
#include "ingest.h"
#include "kvindex.h"
#include "log.h"

/* Made once (a fresh index per input held the rate at ~400 inputs/s); every input
 * leaves it empty (its endpoints' slots removed), so inputs stay independent. */
static blockkeys_ctx keys;
static kvindex *ix;
static epset *eps;

static void quiet(void *ctx, const char *line) {}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_setup(0, quiet, NULL);
    kvindex_config ic = {.capacity = 4096, .max_endpoints = 8};
    if (blockkeys_init(&keys, BLOCKKEYS_FNV64A_CBOR, 16, "", NULL) != KV_OK || !(ix = kvindex_new(&ic, NULL)) ||
        !(eps = epset_new(0, NULL, NULL, NULL)) ||
        epset_parse_list(eps, "10.0.0.1:8000 10.0.0.2:8000 10.0.0.3:8001", "fuzz", NULL) != KV_OK)
        abort();
    return 0;
}

/* Checks the slots, and empties the index for the next input. */
static void check_slots(void)
{
    epset_snap snap;
    if (epset_snapshot(eps, &snap, NULL) != KV_OK)
        abort();
    for (uint32_t slot = 0; slot < kvindex_max_endpoints(ix); slot++) {
        const char *name = kvindex_endpoint_name(ix, (int)slot);
        if (name && !epset_snap_has(&snap, name))
            abort();
        if (name)
            kvindex_endpoint_remove(ix, (int)slot);
    }
    epset_snap_free(&snap);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ingest_config cfg = {.index = ix, .keys = keys, .endpoints = eps};
    ingest *g = ingest_detached(&cfg, NULL);
    if (!g)
        return 0;
    uint64_t fed = 0;
    for (size_t off = 0; off < size; fed++) {
        size_t n = data[off++] % 5;
        ingest_frame f[3] = {{0}};
        for (size_t i = 0; i < n; i++) {
            size_t len = off + 2 <= size ? (size_t)data[off] | (size_t)data[off + 1] << 8 : 0;
            off = off + 2 <= size ? off + 2 : size;
            if (len > size - off)
                len = size - off;
            if (i < 3)
                f[i] = (ingest_frame){.data = data + off, .len = len};
            off += len;
        }
        ingest_feed(g, f, n);
    }
    ingest_stats st;
    ingest_get_stats(g, &st);
    if (st.messages + st.bad_frames != fed || st.batches > st.messages)
        abort();
    ingest_stop(g);
    check_slots();
    return 0;
}
