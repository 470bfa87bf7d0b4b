/* burst_hold: the window that holds requests for burst-prefix-cache-producer (see
 * burst_hold.h). */
#include "burst_hold.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

typedef struct window {
    const sched_request **reqs;
    size_t n, cap;
    size_t inside;                /* members not yet gone on (the last frees the window) */
    bool placed;
} window;

struct burst_hold {
    double window_s;
    int64_t max_batch;
    pthread_mutex_t mu;           /* guards open and every window's fields */
    pthread_cond_t cv;            /* a window was placed */
    window *open;                 /* the window requests join now, or NULL */
};

burst_hold *burst_hold_new(double window_s, int64_t max_batch, kv_err *err)
{
    burst_hold *h = calloc(1, sizeof *h);
    if (!h) {
        kv_err_set(err, KV_ENOMEM, "burst window: out of memory");
        return NULL;
    }
    h->window_s = window_s;
    h->max_batch = max_batch;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    return h;
}

void burst_hold_free(burst_hold *h)
{
    if (!h)
        return;
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

/* Sleeps until start + s on the monotonic clock, whatever signals interrupt it. */
static void sleep_until(const struct timespec *start, double s)
{
    struct timespec t = *start;
    long ns = t.tv_nsec + (long)(s * 1e9);
    t.tv_sec += ns / 1000000000L;
    t.tv_nsec = ns % 1000000000L;
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) == EINTR)
        ;
}

bool burst_hold_wait(burst_hold *h, const sched_request *r,
                     void (*place)(void *ctx, const sched_request *const *reqs, size_t n), void *ctx)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    pthread_mutex_lock(&h->mu);
    window *w = h->open;
    bool opener = !w;
    if (opener && !(w = h->open = calloc(1, sizeof *w))) {
        pthread_mutex_unlock(&h->mu);
        return false;   /* no memory for a window: routed unplaced */
    }
    if (h->max_batch > 0 && w->n >= (size_t)h->max_batch) {
        pthread_mutex_unlock(&h->mu);
        return false;
    }
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 16;
        const sched_request **g = realloc(w->reqs, cap * sizeof *g);
        if (!g) {
            if (opener)
                h->open = NULL, free(w);
            pthread_mutex_unlock(&h->mu);
            return false;
        }
        w->reqs = g, w->cap = cap;
    }
    w->reqs[w->n++] = r;
    w->inside++;
    if (opener) {
        pthread_mutex_unlock(&h->mu);
        sleep_until(&start, h->window_s);
        pthread_mutex_lock(&h->mu);
        h->open = NULL;   /* later arrivals open the next window */
        pthread_mutex_unlock(&h->mu);
        place(ctx, w->reqs, w->n);   /* members only read w->placed, under the lock */
        pthread_mutex_lock(&h->mu);
        w->placed = true;
        pthread_cond_broadcast(&h->cv);
    } else {
        while (!w->placed)
            pthread_cond_wait(&h->cv, &h->mu);
    }
    bool last = --w->inside == 0;
    pthread_mutex_unlock(&h->mu);
    if (last) {
        free(w->reqs);
        free(w);
    }
    return true;
}
