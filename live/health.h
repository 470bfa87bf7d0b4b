/* health: the plaintext grpc.health.v1 server of ./epp (port 9003; docs/upstream/epp.md §4).
 *
 * Check answers SERVING for every service name once the caller's ready() says so
 * (GIE without leader election: any name, once the pool has synced), NOT_SERVING
 * before; Watch and anything else answer UNIMPLEMENTED, as GIE does.
 * One thread with its own completion queue; ready() is called on that thread. */
#ifndef KVROUTE_HEALTH_H
#define KVROUTE_HEALTH_H

#include <stdbool.h>

#include "kverr.h"

typedef struct health_server health_server;

/* addr "0.0.0.0:9003" (port 0 picks one). KV_EIO naming addr when it cannot listen. */
health_server *health_start(const char *addr, bool (*ready)(void *ctx), void *ctx, kv_err *err);
int health_port(const health_server *h);
void health_stop(health_server *h);

#endif
