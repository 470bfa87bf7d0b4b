/* fake_upstream: see fake_upstream.h. Everything but the getters runs on the server's
 * loop thread; held and silent requests wait in one list until released, cut short by
 * their client, or the server stops. */
#include "fake_upstream.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "monoclock.h"

typedef struct fu_req fu_req;
struct fu_req {
    fake_upstream *u;
    struct evhttp_request *req;
    struct evhttp_connection *con;
    bool gone;                          /* never released (FU_SILENT) */
    struct event *watch;                /* the client's socket, for its EOF */
    fu_req *next;
};

struct fake_upstream {
    char model[128];
    struct event_base *base;
    struct evhttp *http;
    struct event *release_ev;
    pthread_t th;
    int port;
    pthread_mutex_t mu;
    fu_mode mode;
    int status;
    unsigned requests, finished, cancelled;
    char last_id[128], last_body[4096];
    double last_arrival;
    fu_req *waiting;                    /* loop thread only */
};

static void event_text(struct evbuffer *b, const char *model, int i, bool last)
{
    evbuffer_add_printf(b,
                        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"model\":\"%s\",\"choices\":[{"
                        "\"index\":0,\"text\":\" t%d\",\"finish_reason\":%s}]%s}\n\n",
                        model, i, last ? "\"length\"" : "null",
                        last ? ",\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}" : "");
}

static void unlink_waiting(fu_req *r)
{
    for (fu_req **p = &r->u->waiting; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            return;
        }
}

static void fu_req_free(fu_req *r)
{
    if (r->watch)
        event_free(r->watch);
    free(r);
}

static void on_close(struct evhttp_connection *con, void *arg)
{
    fu_req *r = arg;
    pthread_mutex_lock(&r->u->mu);
    r->u->cancelled++;
    pthread_mutex_unlock(&r->u->mu);
    unlink_waiting(r);
    if (!evhttp_request_get_connection(r->req)) /* unlinked by libevent: ours to free */
        evhttp_request_free(r->req);
    fu_req_free(r);
}

/* The client hung up on a waiting request (libevent does not read while it waits). */
static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    fu_req *r = arg;
    char c;
    if (recv(fd, &c, 1, MSG_PEEK) <= 0)
        evhttp_connection_free(r->con); /* on_close follows */
}

/* Cuts a stream after its first event went out. */
static void on_cut(evutil_socket_t fd, short what, void *arg)
{
    fu_req *r = arg;
    evhttp_connection_set_closecb(r->con, NULL, NULL);
    evhttp_connection_free(r->con); /* frees the request too */
    fu_req_free(r);
}

/* Sends the rest of a held stream. */
static void finish_stream(fu_req *r, int from)
{
    struct evbuffer *b = evbuffer_new();
    for (int i = from; i < FU_CHUNKS; i++)
        event_text(b, r->u->model, i, i == FU_CHUNKS - 1);
    evbuffer_add_printf(b, "data: [DONE]\n\n");
    evhttp_send_reply_chunk(r->req, b);
    evbuffer_free(b);
    evhttp_connection_set_closecb(r->con, NULL, NULL);
    evhttp_send_reply_end(r->req);
    pthread_mutex_lock(&r->u->mu);
    r->u->finished++;
    pthread_mutex_unlock(&r->u->mu);
    fu_req_free(r);
}

static void on_release(evutil_socket_t fd, short what, void *arg)
{
    fake_upstream *u = arg;
    fu_req *r = u->waiting, *keep = NULL;
    u->waiting = NULL;
    while (r) {
        fu_req *next = r->next;
        if (r->gone) { /* FU_SILENT requests stay silent */
            r->next = keep, keep = r;
        } else {
            finish_stream(r, 1);
        }
        r = next;
    }
    u->waiting = keep;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    fake_upstream *u = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *id = evhttp_find_header(evhttp_request_get_input_headers(req), "x-request-id");
    pthread_mutex_lock(&u->mu);
    fu_mode mode = u->mode;
    int status = u->status;
    u->requests++;
    u->last_arrival = monoclock_s();
    snprintf(u->last_id, sizeof u->last_id, "%s", id ? id : "");
    size_t n = len < sizeof u->last_body - 1 ? len : sizeof u->last_body - 1;
    evbuffer_copyout(in, u->last_body, n);
    u->last_body[n] = 0;
    bool stream = strstr(u->last_body, "\"stream\":true") || strstr(u->last_body, "\"stream\": true");
    pthread_mutex_unlock(&u->mu);
    struct evbuffer *b = evbuffer_new();
    if (evhttp_request_get_command(req) == EVHTTP_REQ_GET) {
        evbuffer_add_printf(b, "{\"object\":\"list\",\"data\":[{\"id\":\"%s\",\"object\":\"model\"}]}", u->model);
        evhttp_send_reply(req, 200, "OK", b);
        evbuffer_free(b);
        return;
    }
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    if (mode == FU_STATUS) {
        evhttp_add_header(h, "Content-Type", "application/json");
        evbuffer_add_printf(b, "{\"error\":{\"message\":\"fake %d\",\"type\":\"x\",\"code\":%d}}", status, status);
        evhttp_send_reply(req, status, "Fake", b);
    } else if (mode == FU_SILENT || mode == FU_HOLD || mode == FU_CUT || stream) {
        fu_req *r = calloc(1, sizeof *r);
        *r = (fu_req){.u = u, .req = req, .con = evhttp_request_get_connection(req)};
        evhttp_connection_set_closecb(r->con, on_close, r);
        if (mode == FU_SILENT || mode == FU_HOLD) {
            r->watch = event_new(u->base, bufferevent_getfd(evhttp_connection_get_bufferevent(r->con)), EV_READ,
                                 on_readable, r);
            event_add(r->watch, NULL);
        }
        if (mode == FU_SILENT) {
            r->gone = true; /* never released */
            r->next = u->waiting, u->waiting = r;
        } else {
            evhttp_add_header(h, "Content-Type", "text/event-stream");
            evhttp_send_reply_start(req, 200, "OK");
            event_text(b, u->model, 0, false);
            evhttp_send_reply_chunk(req, b);
            if (mode == FU_HOLD) {
                r->next = u->waiting, u->waiting = r;
            } else if (mode == FU_CUT) {
                const struct timeval flush = {0, 50000};
                event_base_once(u->base, -1, EV_TIMEOUT, on_cut, r, &flush);
            } else {
                finish_stream(r, 1);
            }
        }
        evbuffer_free(b);
        return;
    } else {
        evhttp_add_header(h, "Content-Type", "application/json");
        evbuffer_add_printf(b,
                            "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"model\":\"%s\",\"choices\":[{"
                            "\"index\":0,\"text\":\" t0 t1 t2 t3\",\"finish_reason\":\"length\"}],\"usage\":{"
                            "\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}",
                            u->model);
        evhttp_send_reply(req, 200, "OK", b);
    }
    evbuffer_free(b);
    pthread_mutex_lock(&u->mu);
    u->finished++;
    pthread_mutex_unlock(&u->mu);
}

static void *loop(void *arg)
{
    fake_upstream *u = arg;
    event_base_loop(u->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

fake_upstream *fake_upstream_start(const char *model)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, (void (*)(void))evthread_use_pthreads);
    fake_upstream *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    snprintf(u->model, sizeof u->model, "%s", model);
    pthread_mutex_init(&u->mu, NULL);
    u->base = event_base_new();
    u->http = u->base ? evhttp_new(u->base) : NULL;
    struct evhttp_bound_socket *bs = u->http ? evhttp_bind_socket_with_handle(u->http, "127.0.0.1", 0) : NULL;
    if (!bs) {
        if (u->http)
            evhttp_free(u->http);
        if (u->base)
            event_base_free(u->base);
        free(u);
        return NULL;
    }
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sa, &sl);
    u->port = ntohs(sa.sin_port);
    evhttp_set_gencb(u->http, on_request, u);
    u->release_ev = event_new(u->base, -1, 0, on_release, u);
    pthread_create(&u->th, NULL, loop, u);
    return u;
}

int fake_upstream_port(const fake_upstream *u) { return u->port; }

void fake_upstream_set_mode(fake_upstream *u, fu_mode mode, int status)
{
    pthread_mutex_lock(&u->mu);
    u->mode = mode, u->status = status;
    pthread_mutex_unlock(&u->mu);
}

void fake_upstream_release(fake_upstream *u) { event_active(u->release_ev, 0, 0); }

#define GETTER(name, field)                 \
    unsigned fake_upstream_##name(fake_upstream *u) \
    {                                       \
        pthread_mutex_lock(&u->mu);         \
        unsigned v = u->field;              \
        pthread_mutex_unlock(&u->mu);       \
        return v;                           \
    }
GETTER(requests, requests)
GETTER(finished, finished)
GETTER(cancelled, cancelled)
#undef GETTER

void fake_upstream_last(fake_upstream *u, char *request_id, size_t id_cap, char *body, size_t body_cap)
{
    pthread_mutex_lock(&u->mu);
    if (request_id)
        snprintf(request_id, id_cap, "%s", u->last_id);
    if (body)
        snprintf(body, body_cap, "%s", u->last_body);
    pthread_mutex_unlock(&u->mu);
}

double fake_upstream_last_arrival(fake_upstream *u)
{
    pthread_mutex_lock(&u->mu);
    double t = u->last_arrival;
    pthread_mutex_unlock(&u->mu);
    return t;
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    fake_upstream *u = arg;
    while (u->waiting) { /* still linked to their connections: evhttp_free frees them */
        fu_req *r = u->waiting;
        u->waiting = r->next;
        evhttp_connection_set_closecb(r->con, NULL, NULL);
        fu_req_free(r);
    }
    event_base_loopbreak(u->base);
}

void fake_upstream_stop(fake_upstream *u)
{
    if (!u)
        return;
    event_base_once(u->base, -1, EV_TIMEOUT, on_stop, u, NULL);
    pthread_join(u->th, NULL);
    event_free(u->release_ev);
    evhttp_free(u->http);
    event_base_free(u->base);
    pthread_mutex_destroy(&u->mu);
    free(u);
}

int fake_upstream_dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    bind(fd, (struct sockaddr *)&sa, sizeof sa);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    close(fd);
    return ntohs(sa.sin_port);
}
