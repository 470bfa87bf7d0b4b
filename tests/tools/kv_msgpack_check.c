/* kv_msgpack_check: an independent reader of vLLM KV-event messages, written against
 * msgpack-c and ZMQ directly (none of kvroute's decoder), so a shell test can check
 * what a publisher sends: three frames, an 8-byte big-endian sequence number, and a
 * KVEventBatch [ts, [events], dp_rank] whose events are ["BlockStored", hashes, parent,
 * token_ids, block_size, ...] arrays or {"type": ...} maps.
 *
 *   kv_msgpack_check ENDPOINT N TIMEOUT_MS
 *
 * Connects a SUB (prefix "kv@"), prints one line per event
 * "TOPIC SEQ TYPE N_HASHES N_TOKENS" for the first N messages, exits 0; 1 on a
 * malformed message or a timeout; 2 on bad usage. */
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static int fail(const char *what)
{
    fprintf(stderr, "kv_msgpack_check: %s\n", what);
    return 1;
}

/* The event's type and its block_hashes / token_ids lengths, array or map form. */
static int event(const msgpack_object *e, char *type, size_t cap, uint32_t *n_hashes, uint32_t *n_tokens)
{
    *n_hashes = *n_tokens = 0;
    const msgpack_object *t = NULL, *h = NULL, *tok = NULL;
    if (e->type == MSGPACK_OBJECT_ARRAY && e->via.array.size >= 1) {
        t = &e->via.array.ptr[0];
        if (e->via.array.size >= 2) h = &e->via.array.ptr[1];
        if (e->via.array.size >= 4) tok = &e->via.array.ptr[3];
    } else if (e->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < e->via.map.size; i++) {
            const msgpack_object_kv *kv = &e->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR) return 1;
            const char *k = kv->key.via.str.ptr;
            uint32_t kl = kv->key.via.str.size;
            if (kl == 4 && !memcmp(k, "type", 4)) t = &kv->val;
            if (kl == 12 && !memcmp(k, "block_hashes", 12)) h = &kv->val;
            if (kl == 9 && !memcmp(k, "token_ids", 9)) tok = &kv->val;
        }
    } else {
        return 1;
    }
    if (!t || t->type != MSGPACK_OBJECT_STR || t->via.str.size >= cap) return 1;
    memcpy(type, t->via.str.ptr, t->via.str.size);
    type[t->via.str.size] = 0;
    if (strcmp(type, "AllBlocksCleared")) {
        if (!h || h->type != MSGPACK_OBJECT_ARRAY) return 1;
        *n_hashes = h->via.array.size;
        for (uint32_t i = 0; i < h->via.array.size; i++)
            if (h->via.array.ptr[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER) return 1;
    }
    if (!strcmp(type, "BlockStored")) {
        if (!tok || tok->type != MSGPACK_OBJECT_ARRAY) return 1;
        *n_tokens = tok->via.array.size;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: kv_msgpack_check ENDPOINT N TIMEOUT_MS\n");
        return 2;
    }
    int n = atoi(argv[2]), timeout = atoi(argv[3]);
    void *ctx = zmq_ctx_new(), *sub = zmq_socket(ctx, ZMQ_SUB);
    int linger = 0;
    zmq_setsockopt(sub, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sub, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "kv@", 3);
    if (zmq_connect(sub, argv[1]) != 0) return fail("cannot connect");
    int rc = 0;
    for (int m = 0; m < n && rc == 0; m++) {
        zmq_msg_t f[3];
        int k = 0, more = 1;
        while (more && k < 3) {
            zmq_msg_init(&f[k]);
            if (zmq_msg_recv(&f[k], sub, 0) < 0) {
                zmq_msg_close(&f[k]);
                rc = fail("timed out");
                break;
            }
            more = zmq_msg_more(&f[k++]);
        }
        if (rc == 0 && (k != 3 || more || zmq_msg_size(&f[1]) != 8)) rc = fail("not [topic, seq8, payload]");
        if (rc == 0) {
            const uint8_t *sb = zmq_msg_data(&f[1]);
            uint64_t seq = 0;
            for (int i = 0; i < 8; i++) seq = seq << 8 | sb[i];
            msgpack_unpacked u;
            msgpack_unpacked_init(&u);
            size_t off = 0;
            if (msgpack_unpack_next(&u, zmq_msg_data(&f[2]), zmq_msg_size(&f[2]), &off) != MSGPACK_UNPACK_SUCCESS ||
                off != zmq_msg_size(&f[2]))
                rc = fail("payload is not one msgpack value");
            const msgpack_object *b = &u.data;
            if (rc == 0 && (b->type != MSGPACK_OBJECT_ARRAY || b->via.array.size != 3 ||
                            b->via.array.ptr[0].type != MSGPACK_OBJECT_FLOAT64 ||
                            b->via.array.ptr[1].type != MSGPACK_OBJECT_ARRAY))
                rc = fail("batch is not [ts(float64), [events], dp_rank]");
            for (uint32_t i = 0; rc == 0 && i < b->via.array.ptr[1].via.array.size; i++) {
                char type[64];
                uint32_t nh, nt;
                if (event(&b->via.array.ptr[1].via.array.ptr[i], type, sizeof type, &nh, &nt))
                    rc = fail("malformed event");
                else
                    printf("%.*s %llu %s %u %u\n", (int)zmq_msg_size(&f[0]), (const char *)zmq_msg_data(&f[0]),
                           (unsigned long long)seq, type, nh, nt);
            }
            msgpack_unpacked_destroy(&u);
        }
        for (int i = 0; i < k; i++) zmq_msg_close(&f[i]);
        fflush(stdout);
    }
    zmq_close(sub);
    zmq_ctx_term(ctx);
    return rc;
}
