/* fuzz_replay_reply: the replies of a pod's KV-event replay socket as live/replay.c
 * reads them (replay_reply, which replay_fetch calls on every received message), each
 * delivered batch decoded as the ingest worker decodes it (kvev_decode_batch).
 *
 * Input: one options byte (bits 0-2: max_batches 1..8, or unbounded when 0; bits 3-5:
 * the callback stops the fetch at that batch, never when 0), then messages, as
 * tests/support/fuzz_frames.h cuts them.
 *
 * Checked: a fetch never delivers more than max_batches, every delivered batch carries
 * the seq of its reply's second frame, nothing is delivered after the fetch is done, and
 * an error is KV_EPARSE or the callback's stop. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../support/fuzz_frames.h"
#include "kvevents.h"
#include "replay.h"

#define CB_STOP 7

typedef struct fetch {
    kvev_decoder *dec;
    uint64_t expect_seq;
    long calls, stop_at;
} fetch;

static int on_batch(void *ctx, uint64_t seq, const void *payload, size_t len)
{
    fetch *f = ctx;
    if (seq != f->expect_seq)
        abort();
    kvev_batch b;
    kv_err err = {0};
    kvev_decode_batch(f->dec, payload, len, &b, &err);
    return ++f->calls == f->stop_at ? CB_STOP : 0;
}

static uint64_t be64(const uint8_t *b)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | b[i];
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    kv_err err = {0};
    fetch f = {.dec = kvev_decoder_new(0, &err), .stop_at = data[0] >> 3 & 7};
    if (!f.dec)
        return 0;
    size_t max_batches = data[0] & 7 ? data[0] & 7 : SIZE_MAX;
    long delivered = 0;
    bool done = false;
    for (size_t off = 1; off < size && !done;) {
        replay_frame fr[3];
        size_t n = fuzz_frames_next(data, size, &off, fr);
        f.expect_seq = n == 3 && fr[1].len >= 8 ? be64(fr[1].data) : 0;
        long before = delivered;
        int rc = replay_reply("tcp://10.0.0.1:5558", fr, n, max_batches, &delivered, &done, on_batch, &f, &err);
        if ((size_t)delivered > max_batches || delivered - before > 1 || delivered != f.calls ||
            (rc && (!done || (rc != KV_EPARSE && rc != CB_STOP))))
            abort();
    }
    kvev_decoder_free(f.dec);
    return 0;
}
