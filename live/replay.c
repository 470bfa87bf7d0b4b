/* replay: DEALER client of vLLM's replay ROUTER (see replay.h). */
#include "replay.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <zmq.h>

static void put_be64(uint8_t *b, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        b[i] = (uint8_t)v;
}

static uint64_t get_be64(const uint8_t *b)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | b[i];
    return v;
}

/* Receives one whole message into up to 3 frames; *n gets the frame count (frames past
 * the third are dropped but counted). */
static int recv_multi(void *sock, zmq_msg_t f[3], size_t *n)
{
    *n = 0;
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, 0) < 0) {
            zmq_msg_close(&m);
            return -1;
        }
        bool more = zmq_msg_more(&m);
        if (*n < 3)
            f[*n] = m;
        else
            zmq_msg_close(&m);
        (*n)++;
        if (!more)
            return 0;
    }
}

int replay_reply(const char *endpoint, const replay_frame *f, size_t n, size_t max_batches, long *delivered,
                 bool *done, int (*cb)(void *ctx, uint64_t seq, const void *payload, size_t len), void *ctx,
                 kv_err *err)
{
    bool ok = n == 3 && f[0].len == 0 && f[1].len >= 8;
    uint64_t seq = ok ? get_be64(f[1].data) : 0;
    bool end = ok && seq == REPLAY_END;
    int cb_rc = 0;
    if (ok && !end && (size_t)*delivered < max_batches) {
        cb_rc = cb(ctx, seq, f[2].data, f[2].len);
        (*delivered)++;
    }
    *done = !ok || cb_rc || end || (size_t)*delivered >= max_batches;
    if (!ok)
        return kv_err_set(err, KV_EPARSE, "replay %s: reply %ld is not [\"\", seq8, payload] (%zu frames)", endpoint,
                          *delivered, n);
    return cb_rc;
}

long replay_fetch(void *zctx, const char *endpoint, uint64_t start_seq, int timeout_ms, size_t max_batches,
                  int (*cb)(void *ctx, uint64_t seq, const void *payload, size_t len), void *ctx, kv_err *err)
{
    void *s = zmq_socket(zctx, ZMQ_DEALER);
    if (!s)
        return kv_err_set(err, KV_EIO, "replay %s: socket: %s", endpoint, zmq_strerror(zmq_errno()));
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &timeout_ms, sizeof timeout_ms);
    long rc = 0;
    uint8_t seq8[8];
    put_be64(seq8, start_seq);
    if (zmq_connect(s, endpoint) != 0) {
        rc = kv_err_set(err, KV_EIO, "replay %s: connect: %s", endpoint, zmq_strerror(zmq_errno()));
        goto out;
    }
    if (zmq_send(s, "", 0, ZMQ_SNDMORE) < 0 || zmq_send(s, seq8, 8, 0) < 0) {
        rc = kv_err_set(err, KV_EIO, "replay %s: request from seq %llu: %s", endpoint,
                        (unsigned long long)start_seq, zmq_strerror(zmq_errno()));
        goto out;
    }
    long delivered = 0;
    for (bool done = false; !done;) {
        zmq_msg_t m[3];
        size_t n;
        if (recv_multi(s, m, &n) != 0) {
            rc = kv_err_set(err, KV_EIO, "replay %s: no end marker after %ld batches from seq %llu: %s", endpoint,
                            delivered, (unsigned long long)start_seq,
                            zmq_errno() == EAGAIN ? "timed out" : zmq_strerror(zmq_errno()));
            goto out;
        }
        replay_frame f[3];
        for (size_t i = 0; i < n && i < 3; i++)
            f[i] = (replay_frame){.data = zmq_msg_data(&m[i]), .len = zmq_msg_size(&m[i])};
        rc = replay_reply(endpoint, f, n, max_batches, &delivered, &done, cb, ctx, err);
        for (size_t i = 0; i < n && i < 3; i++)
            zmq_msg_close(&m[i]);
        if (rc)
            goto out;
    }
    rc = delivered;
out:
    zmq_close(s);
    return rc;
}
