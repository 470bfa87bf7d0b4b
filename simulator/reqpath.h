/* reqpath: the request path outside the engine — what a request costs between the client's
 * send and vLLM's scheduler, and between a token leaving the engine and the client — per
 * router, so that TTFT counts the gateway, the EPP's work and the HTTP/SSE path, and a
 * router that does not do a step (a plain Service has no gateway; a router that does not
 * tokenise pays no tokenisation) does not pay for it.
 *
 *   inbound  = hop + gateway + n_prompt x (body + tokenize + server_tokenize) + scoring
 *   outbound = hop + gateway
 *
 *   hop               one-way network and HTTP handling, client <-> pod (every router)
 *   gateway           one-way proxy hop through the gateway and its ext_proc call
 *   body              per prompt token: the body streamed through the gateway to the EPP
 *                     (ext_proc) and parsed there (gateway routers)
 *   tokenize          per prompt token: the EPP's own tokenisation (render or /tokenize;
 *                     routers whose config tokenises: precise prefix producer/scorer,
 *                     token-producer)
 *   scoring           the EPP's scheduling cycle (gateway routers)
 *   server_tokenize   per prompt token: vLLM's API server tokenising the text prompt
 *                     (every router: the engine only sees token ids)
 *
 * The defaults (reqpath_defaults) and their sources are in docs/VALIDATION.md "Request
 * path"; a scenario overrides any of them per router (routers[i].request_path, durations
 * such as 0.5ms or 1.5us). Pure values and functions: any thread. */
#ifndef KVROUTE_SIM_REQPATH_H
#define KVROUTE_SIM_REQPATH_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "kverr.h"
#include "records.h"
#include "yamltree.h"

typedef struct reqpath {
    double hop_us, gateway_us, scoring_us;                     /* per request */
    double body_us, tokenize_us, server_tokenize_us;           /* per prompt token */
} reqpath;

/* The defaults for a router with config cfg: a Service (only kube-proxy-picker or
 * round-robin-picker besides profile handlers) has no gateway, EPP or tokenisation. */
reqpath reqpath_defaults(const epc_config *cfg);
/* Overrides from a scenario's request_path map at n (NULL: none); errors name
 * "<path>.<key>" and the position. Unknown keys are refused. */
int reqpath_parse(const yt_doc *d, const yt_node *n, const char *path, reqpath *inout, kv_err *err);
/* Client send -> the request reaches vLLM's scheduler. */
sim_time reqpath_inbound(const reqpath *p, uint32_t n_prompt);
/* A token leaves the engine -> the client reads it. */
sim_time reqpath_outbound(const reqpath *p);

#endif
