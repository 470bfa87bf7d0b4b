/* fake_k8s: a tiny Kubernetes API server for tests (plain HTTP on 127.0.0.1, libmicrohttpd,
 * a thread per connection): GET of one InferencePool, LIST of pods and streaming WATCH of
 * pods (ADDED/MODIFIED/DELETED lines from a resourceVersion on), bearer-token checked.
 * The label selector a client sends is recorded, not evaluated: tests put only the pods
 * the selector would match. Thread-safe setters. */
#ifndef KVROUTE_FAKE_K8S_H
#define KVROUTE_FAKE_K8S_H

#include <stdbool.h>

typedef struct fake_k8s fake_k8s;

fake_k8s *fake_k8s_start(const char *token);
int fake_k8s_port(const fake_k8s *k);
/* The InferencePool "ns/name" served (v1 shape): matchLabels "k=v,...", target ports. */
void fake_k8s_set_pool(fake_k8s *k, const char *ns, const char *name, const char *match_labels, const int *ports,
                       int n_ports);
/* Adds or replaces a pod (ADDED or MODIFIED event). labels "k=v,...". */
void fake_k8s_put_pod(fake_k8s *k, const char *name, const char *ip, bool ready, bool deleting, const char *labels);
void fake_k8s_delete_pod(fake_k8s *k, const char *name);
/* Ends the open watches; the next watch request gets an ERROR event (410 Gone) and
 * ends too: the client must re-list. */
void fake_k8s_expire_next_watch(fake_k8s *k);
/* The last labelSelector query value received (decoded), and request counts. */
void fake_k8s_last_selector(fake_k8s *k, char *out, unsigned cap);
unsigned fake_k8s_lists(fake_k8s *k);
unsigned fake_k8s_watches(fake_k8s *k);
unsigned fake_k8s_unauthorized(fake_k8s *k);
void fake_k8s_stop(fake_k8s *k);

#endif
