/* kubeconfig: the current context's server and credentials (see kubeconfig.h). */
#include "kubeconfig.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "yamltree.h"

/* Fields that would change how to reach or authenticate to the server, and why we stop. */
static const struct {
    const char *key, *what;
} refused_user[] = {
    {"client-certificate", "client certificates are"}, {"client-certificate-data", "client certificates are"},
    {"client-key", "client certificates are"},         {"client-key-data", "client certificates are"},
    {"exec", "exec credential plugins are"},           {"auth-provider", "auth providers are"},
    {"username", "basic authentication is"},           {"password", "basic authentication is"},
    {"as", "impersonation is"},                        {"as-uid", "impersonation is"},
    {"as-groups", "impersonation is"},                 {"as-user-extra", "impersonation is"},
}, refused_cluster[] = {
    {"proxy-url", "proxy-url is"},
    {"tls-server-name", "tls-server-name is"},
};

/* A scalar string field of map (absent or null: *out untouched, returns KV_OK). */
static int opt_str(const yt_doc *d, const yt_node *map, const char *path, const char *key, const char **out,
                   kv_err *err)
{
    const yt_node *n = yt_get(map, key);
    if (!n || yt_is_null(n))
        return KV_OK;
    char what[320];
    snprintf(what, sizeof what, "%s.%s", path, key);
    return yt_string(d, n, what, out, err);
}

/* The entry of list (contexts, clusters, users) whose name is name, and its index. */
static const yt_node *find_named(const yt_doc *d, const char *list, const char *name, size_t *idx,
                                 const yt_node *ref, const char *ref_field, kv_err *err)
{
    const yt_node *l = yt_get(yt_root(d), list);
    for (size_t i = 0; l && l->kind == YT_SEQ && i < l->n; i++) {
        const yt_node *nm = yt_get(l->items[i], "name");
        if (nm && nm->kind == YT_SCALAR && !strcmp(nm->str, name)) {
            *idx = i;
            return l->items[i];
        }
    }
    yt_error(d, ref, err, KV_EINVAL, "field '%s': no entry named '%s' in %s", ref_field, name, list);
    return NULL;
}

/* The inner map of an entry ("context", "cluster", "user"), required. */
static const yt_node *inner(const yt_doc *d, const yt_node *entry, const char *key, const char *path, kv_err *err)
{
    const yt_node *n = yt_get(entry, key);
    if (!n || n->kind != YT_MAP) {
        yt_error(d, n ? n : entry, err, KV_EINVAL, "field '%s.%s': expected a map", path, key);
        return NULL;
    }
    return n;
}

/* A path from the file, relative to the kubeconfig's folder as client-go resolves it. */
static void resolve(const char *kc_path, const char *p, char *out, size_t cap)
{
    const char *slash = strrchr(kc_path, '/');
    if (p[0] == '/' || !slash)
        snprintf(out, cap, "%s", p);
    else
        snprintf(out, cap, "%.*s/%s", (int)(slash - kc_path), kc_path, p);
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Standard base64 (padding optional, whitespace skipped) into a new NUL-terminated
 * buffer; false on any other character. */
static bool b64_decode(const char *s, char **out, size_t *len)
{
    size_t n = strlen(s), k = 0;
    char *buf = malloc(n / 4 * 3 + 4);
    if (!buf)
        return false;
    uint32_t acc = 0;
    int bits = 0, pad = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
            continue;
        if (c == '=') {
            pad++;
            continue;
        }
        int v = b64_value(c);
        if (v < 0 || pad) {
            free(buf);
            return false;
        }
        acc = acc << 6 | (uint32_t)v;
        if ((bits += 6) >= 8) {
            bits -= 8;
            buf[k++] = (char)(acc >> bits & 0xff);
        }
    }
    buf[k] = 0;
    *out = buf;
    *len = k;
    return true;
}

static int refuse(const yt_doc *d, const yt_node *map, const char *path, const char *key, const char *what,
                  kv_err *err)
{
    const yt_node *n = yt_get(map, key);
    if (!n)
        return KV_OK;
    return yt_error(d, n, err, KV_EINVAL,
                    "field '%s.%s': %s not supported (give the user a bearer token: token or tokenFile)", path,
                    key, what);
}

static int read_cluster(kubeconfig *kc, const yt_doc *d, const yt_node *c, const char *path, const char *file,
                        kv_err *err)
{
    for (size_t i = 0; i < sizeof refused_cluster / sizeof refused_cluster[0]; i++)
        if (yt_get(c, refused_cluster[i].key))
            return yt_error(d, yt_get(c, refused_cluster[i].key), err, KV_EINVAL,
                            "field '%s.%s': %s not supported", path, refused_cluster[i].key,
                            refused_cluster[i].what);
    const char *server = NULL, *ca = NULL, *ca_data = NULL;
    if (opt_str(d, c, path, "server", &server, err) || opt_str(d, c, path, "certificate-authority", &ca, err) ||
        opt_str(d, c, path, "certificate-authority-data", &ca_data, err))
        return KV_EINVAL;
    if (!server)
        return yt_error(d, c, err, KV_EINVAL, "field '%s.server': missing", path);
    if (strncmp(server, "https://", 8) && strncmp(server, "http://", 7))
        return yt_error(d, yt_get(c, "server"), err, KV_EINVAL,
                        "field '%s.server': expected an https:// (or http://) URL, got '%s'", path, server);
    snprintf(kc->server, sizeof kc->server, "%s", server);
    size_t l = strlen(kc->server);
    while (l > 0 && kc->server[l - 1] == '/')
        kc->server[--l] = 0; /* request paths start with '/' */
    if (ca)
        resolve(file, ca, kc->ca_path, sizeof kc->ca_path);
    if (ca_data && !b64_decode(ca_data, &kc->ca_pem, &kc->ca_pem_len))
        return yt_error(d, yt_get(c, "certificate-authority-data"), err, KV_EINVAL,
                        "field '%s.certificate-authority-data': not valid base64", path);
    const yt_node *ins = yt_get(c, "insecure-skip-tls-verify");
    char what[320];
    snprintf(what, sizeof what, "%s.insecure-skip-tls-verify", path);
    return ins && !yt_is_null(ins) ? yt_bool(d, ins, what, &kc->insecure, err) : KV_OK;
}

static int read_user(kubeconfig *kc, const yt_doc *d, const yt_node *u, const char *path, const char *file,
                     kv_err *err)
{
    for (size_t i = 0; i < sizeof refused_user / sizeof refused_user[0]; i++)
        if (refuse(d, u, path, refused_user[i].key, refused_user[i].what, err))
            return KV_EINVAL;
    const char *token = NULL, *token_file = NULL;
    if (opt_str(d, u, path, "token", &token, err) || opt_str(d, u, path, "tokenFile", &token_file, err))
        return KV_EINVAL;
    if (token && !(kc->token = strdup(token)))
        return kv_err_set(err, KV_ENOMEM, "kubeconfig: out of memory");
    if (token_file)
        resolve(file, token_file, kc->token_path, sizeof kc->token_path);
    return KV_OK;
}

int kubeconfig_load(kubeconfig *kc, const char *path, kv_err *err)
{
    *kc = (kubeconfig){0};
    kv_err yerr = {0};
    yt_doc *d = yt_load_file(path, &yerr);
    if (!d)
        return kv_err_set(err, yerr.code == KV_EPARSE ? KV_EINVAL : KV_EIO, "kubeconfig: %s", yerr.msg);
    int rc = KV_EINVAL;
    const yt_node *root = yt_root(d), *cur = yt_get(root, "current-context");
    const char *ctx_name = NULL;
    size_t ci, li, ui;
    const yt_node *ctx, *cinner, *cl, *us;
    const char *cluster = NULL, *user = NULL;
    char p[96];
    if (!root || root->kind != YT_MAP) {
        kv_err_set(err, KV_EINVAL, "%s: not a kubeconfig (expected a map with clusters, contexts, users)", path);
        goto out;
    }
    if (!cur || yt_is_null(cur)) {
        yt_error(d, root, err, KV_EINVAL, "field 'current-context': not set");
        goto out;
    }
    if (yt_string(d, cur, "current-context", &ctx_name, err))
        goto out;
    snprintf(kc->context, sizeof kc->context, "%s", ctx_name);
    if (!(ctx = find_named(d, "contexts", ctx_name, &ci, cur, "current-context", err)))
        goto out;
    snprintf(p, sizeof p, "contexts[%zu]", ci);
    if (!(cinner = inner(d, ctx, "context", p, err)))
        goto out;
    snprintf(p, sizeof p, "contexts[%zu].context", ci);
    if (opt_str(d, cinner, p, "cluster", &cluster, err) || opt_str(d, cinner, p, "user", &user, err))
        goto out;
    if (!cluster) {
        yt_error(d, cinner, err, KV_EINVAL, "field '%s.cluster': missing", p);
        goto out;
    }
    char ref[96];
    snprintf(ref, sizeof ref, "%s.cluster", p);
    if (!(cl = find_named(d, "clusters", cluster, &li, yt_get(cinner, "cluster"), ref, err)))
        goto out;
    snprintf(p, sizeof p, "clusters[%zu]", li);
    if (!(cl = inner(d, cl, "cluster", p, err)))
        goto out;
    snprintf(p, sizeof p, "clusters[%zu].cluster", li);
    if (read_cluster(kc, d, cl, p, path, err))
        goto out;
    if (user) { /* a context without a user is anonymous */
        snprintf(ref, sizeof ref, "contexts[%zu].context.user", ci);
        if (!(us = find_named(d, "users", user, &ui, yt_get(cinner, "user"), ref, err)))
            goto out;
        const yt_node *u = yt_get(us, "user");
        snprintf(p, sizeof p, "users[%zu].user", ui);
        if (u && !yt_is_null(u) && (u->kind != YT_MAP ? yt_error(d, u, err, KV_EINVAL, "field '%s': expected a map", p)
                                                      : read_user(kc, d, u, p, path, err)))
            goto out;
    }
    rc = KV_OK;
out:
    yt_free(d);
    if (rc)
        kubeconfig_free(kc);
    return rc;
}

void kubeconfig_free(kubeconfig *kc)
{
    free(kc->ca_pem);
    free(kc->token);
    kc->ca_pem = kc->token = NULL;
}

int kubeconfig_locate(const char *flag, char *(*getenv_fn)(const char *), char *out, size_t cap, kv_err *err)
{
    out[0] = 0;
    if (flag) {
        snprintf(out, cap, "%s", flag);
        return KV_OK;
    }
    const char *env = getenv_fn("KUBECONFIG");
    if (env && *env) {
        if (strchr(env, ':'))
            return kv_err_set(err, KV_EINVAL,
                              "KUBECONFIG='%s' lists several files, which ./epp does not merge: name one with "
                              "--kubeconfig",
                              env);
        snprintf(out, cap, "%s", env);
        return KV_OK;
    }
    const char *host = getenv_fn("KUBERNETES_SERVICE_HOST"), *home = getenv_fn("HOME");
    if (host && *host)
        return KV_OK;
    if (home && *home) {
        snprintf(out, cap, "%s/.kube/config", home);
        if (access(out, R_OK) != 0)
            out[0] = 0;
    }
    return KV_OK;
}
