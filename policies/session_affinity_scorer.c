/* session-affinity-scorer (llm-d): 1.0 for the pod named by the request's x-session-token
 * header, 0 for the others. The token is base64("<namespace>/<pod>"); llm-d's EPP sets it
 * on responses, kvroute's drivers do not (yet), so here it comes only from a client that
 * sends it (session_affinity_token builds it). A missing or undecodable token scores
 * every pod 0. */
#include <stdio.h>
#include <string.h>

#include "policy_util.h"
#include "session_affinity.h"

#define SA_MAX_TOKEN 512

/* Standard base64 with padding (Go's base64.StdEncoding), written out here rather than
 * taken from OpenSSL so that the policies, and ./sim, do not link a TLS library. */
static const char SA_B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int sa_sextet(char ch)
{
    const char *at = ch ? strchr(SA_B64, ch) : NULL;
    return at ? (int)(at - SA_B64) : -1;
}

/* Decodes in (strict: only the alphabet, '=' padding at the end, length a multiple of
 * 4); returns the decoded length or -1. */
static int sa_decode(const char *in, unsigned char *out, size_t cap)
{
    size_t n = strlen(in);
    if (n == 0 || n % 4 != 0 || n / 4 * 3 > cap)
        return -1;
    size_t pad = in[n - 1] == '=' ? (in[n - 2] == '=' ? 2 : 1) : 0;
    size_t len = 0;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        for (size_t k = 0; k < 4; k++) {
            int x = i + k >= n - pad ? 0 : sa_sextet(in[i + k]);
            if (x < 0)
                return -1;
            v = v << 6 | (uint32_t)x;
        }
        out[len++] = (unsigned char)(v >> 16);
        out[len++] = (unsigned char)(v >> 8);
        out[len++] = (unsigned char)v;
    }
    return (int)(len - pad);
}

/* Encodes n bytes of in into out (room for (n + 2) / 3 * 4 + 1); returns the length. */
static int sa_encode(const unsigned char *in, size_t n, char *out)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[len++] = SA_B64[v >> 18 & 63];
        out[len++] = SA_B64[v >> 12 & 63];
        out[len++] = i + 1 < n ? SA_B64[v >> 6 & 63] : '=';
        out[len++] = i + 2 < n ? SA_B64[v & 63] : '=';
    }
    out[len] = 0;
    return (int)len;
}

static const char *sa_ns(const sched_endpoint *ep) { return ep->ns ? ep->ns : ""; }
static const char *sa_pod(const sched_endpoint *ep) { return ep->pod ? ep->pod : ep->name; }

int session_affinity_token(const sched_endpoint *ep, char *out, size_t cap)
{
    unsigned char plain[SA_MAX_TOKEN];
    int n = snprintf((char *)plain, sizeof plain, "%s/%s", sa_ns(ep), sa_pod(ep));
    if (n < 0 || (size_t)n >= sizeof plain || ((size_t)n + 2) / 3 * 4 + 1 > cap)
        return KV_ERANGE;
    return sa_encode(plain, (size_t)n, out);
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
