/* kubeconfig: the API server and credentials of a kubeconfig file's current context, so
 * ./epp can discover endpoints from outside a cluster (a developer machine, a test)
 * the way controller-runtime's --kubeconfig and $KUBECONFIG let GIE's EPP do.
 *
 * Read: current-context -> contexts[].context.{cluster, user}; the cluster's server,
 * certificate-authority (a file, relative to the kubeconfig's folder) or
 * certificate-authority-data (base64 PEM), insecure-skip-tls-verify; the user's token or
 * tokenFile (relative likewise). Anything else that changes how to reach or authenticate
 * to the server (client certificates, exec plugins, auth providers, basic auth,
 * impersonation, proxy-url, tls-server-name) is refused with "file:line:col: field
 * 'users[i].user.exec': ... not supported" rather than connecting without it; other
 * users, clusters and contexts are not looked at. */
#ifndef KVROUTE_KUBECONFIG_H
#define KVROUTE_KUBECONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "kverr.h"

typedef struct kubeconfig {
    char context[256];
    char server[1024];            /* e.g. https://127.0.0.1:6443 (http:// accepted, for test servers) */
    char ca_path[1024];           /* "" unless certificate-authority */
    char *ca_pem;                 /* certificate-authority-data decoded; NULL if none */
    size_t ca_pem_len;
    bool insecure;                /* insecure-skip-tls-verify */
    char *token;                  /* user.token; NULL if none */
    char token_path[1024];        /* "" unless user.tokenFile */
} kubeconfig;

/* Fills kc from the file; on error KV_EINVAL (or KV_EIO for an unreadable file) with a
 * message naming the file, line, column and field. kubeconfig_free after success. */
int kubeconfig_load(kubeconfig *kc, const char *path, kv_err *err);
void kubeconfig_free(kubeconfig *kc);

/* Which kubeconfig to use, as controller-runtime decides: the flag, else $KUBECONFIG
 * (one file), else NULL (in-cluster) when $KUBERNETES_SERVICE_HOST is set, else
 * ~/.kube/config if it exists, else NULL. KV_EINVAL for a $KUBECONFIG list of several
 * files (not merged here: name one with --kubeconfig). out gets the path or "".
 * getenv_fn is getenv outside tests. */
int kubeconfig_locate(const char *flag, char *(*getenv_fn)(const char *), char *out, size_t cap, kv_err *err);

#endif
