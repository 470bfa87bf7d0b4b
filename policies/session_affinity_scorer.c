/* session-affinity-scorer (llm-d): 1.0 for the pod named by the request's x-session-token
 * header, 0 for the others. The token is base64("<namespace>/<pod>"), which the EPP puts
 * on the response at ResponseComplete; this scorer only reads it. A missing or undecodable
 * token scores every pod 0. */
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "policy_util.h"
#include "session_affinity.h"

#define SA_MAX_TOKEN 512

/* Standard base64 with padding, as Go's base64.StdEncoding; returns the decoded length
 * or -1. */
static int sa_decode(const char *in, unsigned char *out, size_t cap)
{
    size_t n = strlen(in);
    if (n == 0 || n % 4 != 0 || n / 4 * 3 > cap)
        return -1;
    int len = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
    if (len < 0)
        return -1;
    /* EVP_DecodeBlock counts the bytes padding stands for */
    if (in[n - 1] == '=')
        len--;
    if (in[n - 2] == '=')
        len--;
    return len;
}

static const char *sa_ns(const sched_endpoint *ep) { return ep->ns ? ep->ns : ""; }
static const char *sa_pod(const sched_endpoint *ep) { return ep->pod ? ep->pod : ep->name; }

int session_affinity_token(const sched_endpoint *ep, char *out, size_t cap)
{
    unsigned char plain[SA_MAX_TOKEN];
    int n = snprintf((char *)plain, sizeof plain, "%s/%s", sa_ns(ep), sa_pod(ep));
    if (n < 0 || (size_t)n >= sizeof plain || ((size_t)n + 2) / 3 * 4 + 1 > cap)
        return KV_ERANGE;
    return EVP_EncodeBlock((unsigned char *)out, plain, n);
}

static bool sa_is(const sched_endpoint *ep, const unsigned char *tok, size_t len)
{
    const char *ns = sa_ns(ep), *pod = sa_pod(ep);
    size_t nl = strlen(ns), pl = strlen(pod);
    return len == nl + 1 + pl && memcmp(tok, ns, nl) == 0 && tok[nl] == '/' && memcmp(tok + nl + 1, pod, pl) == 0;
}

static void sa_score(sched_plugin *p, sched_cycle *c, sched_endpoint *const *eps, size_t n, double *scores)
{
    const char *hdr = sched_header(sched_cycle_request(c), SESSION_AFFINITY_HEADER);
    unsigned char tok[SA_MAX_TOKEN];
    int len = hdr ? sa_decode(hdr, tok, sizeof tok) : -1;
    for (size_t i = 0; i < n; i++)
        scores[i] = len > 0 && sa_is(eps[i], tok, (size_t)len) ? 1.0 : 0.0;
}

const sched_plugin_type session_affinity_scorer_type = {
    .type = "session-affinity-scorer",
    .kind = SCHED_SCORER,
    .score = sa_score,
};
