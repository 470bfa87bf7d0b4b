/* manifests: a file of Kubernetes manifests as `kubectl apply -f` takes them -- YAML
 * documents separated by "---" lines, each one object or a List with items -- handed to
 * a loader one object at a time. The static --endpoints mode reads its GIE objects
 * (--objectives, --model-rewrites) this way, so a user's cluster manifests work as is.
 *
 * Messages name "file:line:col" (or "file (document N):line:col" when there are several
 * documents, each keeping its own line numbers) and the field ("items[2].spec..."). */
#ifndef KVROUTE_MANIFESTS_H
#define KVROUTE_MANIFESTS_H

#include "kverr.h"
#include "yamltree.h"

/* One object; what is the kind ("InferenceObjective") or "items[i]" for fields' names. */
typedef int (*manifest_fn)(void *ctx, const yt_doc *d, const yt_node *obj, const char *what, kv_err *err);

/* Reads path and calls fn for each object, stopping at the first error. flag names the
 * option in I/O errors ("--objectives"); kind names what a document must be. */
int manifests_load(const char *path, const char *flag, const char *kind, manifest_fn fn, void *ctx, kv_err *err);

/* obj's metadata.name, after checking that its kind is kind (an absent kind is fine). */
int manifest_name(const yt_doc *d, const yt_node *obj, const char *what, const char *kind, const char **name,
                  kv_err *err);

#endif
