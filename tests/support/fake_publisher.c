/* fake_publisher: vLLM-format KV-event publisher with a replay ROUTER (see the header). */
#include "fake_publisher.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

typedef struct buffered {
    uint64_t seq;
    uint8_t *data;
    size_t len;
} buffered;

struct fake_pub {
    void *ctx, *pub, *router;
    char topic[256];
    int replay_port;
    uint64_t next_seq;
    pthread_mutex_t mu;           /* guards buf */
    buffered *buf;
    size_t n_buf, cap_buf;
    pthread_t th;
    atomic_bool stop;
    kvev_buf enc;
};

static int bound_port(void *s)
{
    char ep[256];
    size_t len = sizeof ep;
    zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &len);
    const char *c = strrchr(ep, ':');
    return c ? atoi(c + 1) : 0;
}

static void be64(uint8_t *b, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        b[i] = (uint8_t)v;
}

/* Serves ["", start] requests: every buffered seq >= start, then the end marker. */
static void *replay_main(void *arg)
{
    fake_pub *p = arg;
    while (!atomic_load(&p->stop)) {
        zmq_pollitem_t pi = {.socket = p->router, .events = ZMQ_POLLIN};
        if (zmq_poll(&pi, 1, 20) <= 0)
            continue;
        zmq_msg_t f[4];
        size_t n = 0;
        bool more = true;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, p->router, 0) < 0) {
                zmq_msg_close(&m);
                break;
            }
            more = zmq_msg_more(&m);
            if (n < 4)
                f[n++] = m;
            else
                zmq_msg_close(&m);
        }
        if (n == 3 && zmq_msg_size(&f[2]) == 8) {
            const uint8_t *s = zmq_msg_data(&f[2]);
            uint64_t start = 0;
            for (int i = 0; i < 8; i++)
                start = start << 8 | s[i];
            uint8_t seq8[8];
            pthread_mutex_lock(&p->mu);
            for (size_t i = 0; i < p->n_buf; i++) {
                if (p->buf[i].seq < start)
                    continue;
                be64(seq8, p->buf[i].seq);
                zmq_send(p->router, zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), ZMQ_SNDMORE);
                zmq_send(p->router, "", 0, ZMQ_SNDMORE);
                zmq_send(p->router, seq8, 8, ZMQ_SNDMORE);
                zmq_send(p->router, p->buf[i].data, p->buf[i].len, 0);
            }
            pthread_mutex_unlock(&p->mu);
            be64(seq8, UINT64_MAX);
            zmq_send(p->router, zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), ZMQ_SNDMORE);
            zmq_send(p->router, "", 0, ZMQ_SNDMORE);
            zmq_send(p->router, seq8, 8, ZMQ_SNDMORE);
            zmq_send(p->router, "", 0, 0);
        }
        for (size_t i = 0; i < n; i++)
            zmq_msg_close(&f[i]);
    }
    return NULL;
}

fake_pub *fake_pub_new(const char *topic, bool replay)
{
    fake_pub *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_mutex_init(&p->mu, NULL);
    snprintf(p->topic, sizeof p->topic, "%s", topic);
    p->ctx = zmq_ctx_new();
    p->pub = zmq_socket(p->ctx, ZMQ_PUB);
    int zero = 0, hwm = 100000;
    zmq_setsockopt(p->pub, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(p->pub, ZMQ_SNDHWM, &hwm, sizeof hwm);
    if (replay) {
        p->router = zmq_socket(p->ctx, ZMQ_ROUTER);
        zmq_setsockopt(p->router, ZMQ_LINGER, &zero, sizeof zero);
        if (zmq_bind(p->router, "tcp://127.0.0.1:*") || pthread_create(&p->th, NULL, replay_main, p)) {
            zmq_close(p->router);
            p->router = NULL;
            fake_pub_free(p);
            return NULL;
        }
        p->replay_port = bound_port(p->router);
    }
    return p;
}

void fake_pub_free(fake_pub *p)
{
    if (!p)
        return;
    atomic_store(&p->stop, true);
    if (p->router) {
        pthread_join(p->th, NULL);
        zmq_close(p->router);
    }
    if (p->pub)
        zmq_close(p->pub);
    zmq_ctx_term(p->ctx);
    for (size_t i = 0; i < p->n_buf; i++)
        free(p->buf[i].data);
    free(p->buf);
    kvev_buf_free(&p->enc);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int fake_pub_connect(fake_pub *p, const char *endpoint) { return zmq_connect(p->pub, endpoint); }

int fake_pub_bind(fake_pub *p) { return zmq_bind(p->pub, "tcp://127.0.0.1:*") ? -1 : bound_port(p->pub); }

int fake_pub_bind_port(fake_pub *p, int port)
{
    char ep[48];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    return zmq_bind(p->pub, ep) ? -1 : port;
}
int fake_pub_replay_port(const fake_pub *p) { return p->replay_port; }

uint64_t fake_pub_send(fake_pub *p, const kvev_batch *b, kvev_encoding enc, bool drop)
{
    if (kvev_encode(b, enc, &p->enc, NULL) != KV_OK)
        abort();   /* the tests only build encodable batches */
    return fake_pub_send_payload(p, p->enc.data, p->enc.len, drop);
}

/* Only a publisher that serves replay keeps what it sent: without the ROUTER nobody reads
 * the buffer, and a long run (make soak) would grow it without bound. */
uint64_t fake_pub_send_payload(fake_pub *p, const void *payload, size_t len, bool drop)
{
    uint64_t seq = p->next_seq++;
    if (p->router) {
        pthread_mutex_lock(&p->mu);
        if (p->n_buf == p->cap_buf) {
            p->cap_buf = p->cap_buf ? 2 * p->cap_buf : 64;
            p->buf = realloc(p->buf, p->cap_buf * sizeof *p->buf);
            if (!p->buf)
                abort();
        }
        buffered *e = &p->buf[p->n_buf++];
        e->seq = seq;
        e->len = len;
        e->data = malloc(len ? len : 1);
        if (!e->data)
            abort();
        memcpy(e->data, payload, len);
        pthread_mutex_unlock(&p->mu);
    }
    if (!drop) {
        uint8_t seq8[8];
        be64(seq8, seq);
        zmq_send(p->pub, p->topic, strlen(p->topic), ZMQ_SNDMORE);
        zmq_send(p->pub, seq8, 8, ZMQ_SNDMORE);
        zmq_send(p->pub, payload, len, 0);
    }
    return seq;
}

void fake_pub_send_frames(fake_pub *p, const void *const *frames, const size_t *lens, size_t n)
{
    for (size_t i = 0; i < n; i++)
        zmq_send(p->pub, frames[i], lens[i], i + 1 < n ? ZMQ_SNDMORE : 0);
}

void fake_pub_restart(fake_pub *p)
{
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->n_buf; i++)
        free(p->buf[i].data);
    p->n_buf = 0;
    pthread_mutex_unlock(&p->mu);
    p->next_seq = 0;
}
