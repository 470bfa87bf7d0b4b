/* fake_k8s: a tiny Kubernetes API server for tests (plain HTTP on 127.0.0.1, libmicrohttpd,
 * a thread per connection), bearer-token checked, for three collections: pods,
 * InferencePools (inference.networking.k8s.io/v1; the same v1-shaped objects are also
 * served under inference.networking.x-k8s.io/v1alpha2's path) and InferenceObjectives
 * (inference.networking.x-k8s.io/v1alpha2; 404, as without the CRD, until the first
 * fake_k8s_put_objective). Each serves GET of one object, LIST and streaming WATCH
 * (ADDED/MODIFIED/DELETED lines from a resourceVersion on), fieldSelector
 * metadata.name=X and equality label selectors (k=v,...) honoured; the last pod label
 * selector a client sent is recorded. Thread-safe setters. */
#ifndef KVROUTE_FAKE_K8S_H
#define KVROUTE_FAKE_K8S_H

#include <stdbool.h>

typedef struct fake_k8s fake_k8s;

fake_k8s *fake_k8s_start(const char *token);
int fake_k8s_port(const fake_k8s *k);
/* Adds or replaces the InferencePool "ns/name" (v1 shape): matchLabels "k=v,...", target
 * ports (an ADDED or MODIFIED event). */
void fake_k8s_set_pool(fake_k8s *k, const char *ns, const char *name, const char *match_labels, const int *ports,
                       int n_ports);
void fake_k8s_delete_pool(fake_k8s *k, const char *name);
/* An InferenceObjective of the pool (spec.priority only when has_priority). */
void fake_k8s_put_objective(fake_k8s *k, const char *name, const char *pool, bool has_priority, int priority);
void fake_k8s_delete_objective(fake_k8s *k, const char *name);
/* An InferenceModelRewrite: creationTimestamp and spec (JSON text, poolRef included). The
 * first one "installs" the CRD: until then the collection answers 404. */
void fake_k8s_put_model_rewrite(fake_k8s *k, const char *name, const char *created, const char *spec_json);
void fake_k8s_delete_model_rewrite(fake_k8s *k, const char *name);
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
