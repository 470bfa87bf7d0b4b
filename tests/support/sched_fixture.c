/* sched_fixture: see sched_fixture.h. */
#include "sched_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "registry.h"

static double fx_clock(void *ctx)
{
    fx *f = ctx;
    double t = f->now;
    f->now += f->tick;
    return t;
}

/* Takes cfg (NULL: a failed load, whose message err holds). */
static fx *fx_of(epc_config *cfg, size_t n_eps, uint64_t seed, kv_err *err)
{
    fx *f = calloc(1, sizeof *f);
    if (!f || n_eps > FX_MAX_EPS || !cfg) {
        fprintf(stderr, "sched_fixture: %s\n", cfg ? "out of memory or too many endpoints" : err->msg);
        epc_free(cfg);
        free(f);
        return NULL;
    }
    f->cfg = cfg;
    sched_env env = {.seed = seed, .now = fx_clock, .clock_ctx = f};
    if (!(f->s = sched_new(f->cfg, &env, err))) {
        fprintf(stderr, "sched_fixture: %s\n", err->msg);
        epc_free(f->cfg);
        free(f);
        return NULL;
    }
    f->n = n_eps;
    for (size_t i = 0; i < n_eps; i++) {
        snprintf(f->names[i], sizeof f->names[i], "10.0.0.%zu:8000", i + 1);
        f->eps[i] = (sched_endpoint){.id = (uint32_t)i, .name = f->names[i], .pod = f->names[i], .ns = ""};
        f->eps[i].m.valid = true;
        f->ptrs[i] = &f->eps[i];
    }
    return f;
}

fx *fx_new(const char *yaml, size_t n_eps, uint64_t seed)
{
    kv_err err = {0};
    return fx_of(epc_load_string(yaml, strlen(yaml), "fixture.yaml", registry_types, &err), n_eps, seed, &err);
}

fx *fx_preset(const char *name, size_t n_eps, uint64_t seed)
{
    kv_err err = {0};
    return fx_of(epc_load_preset("policies/presets", name, registry_types, &err), n_eps, seed, &err);
}

void fx_free(fx *f)
{
    sched_trace_free(&f->trace);
    sched_free(f->s);
    epc_free(f->cfg);
    free(f);
}

int fx_run(fx *f, const sched_request *r, size_t n, double *scores, sched_result *res)
{
    sched_result tmp;
    f->err = (kv_err){0};
    int rc = sched_schedule(f->s, r, f->ptrs, n, res ? res : &tmp, &f->trace, &f->err);
    for (size_t i = 0; scores && i < n; i++) {
        scores[i] = -1;
        for (size_t k = 0; k < f->trace.n_scores; k++)
            if (f->trace.scores[k].ep == &f->eps[i])
                scores[i] = f->trace.scores[k].score;
    }
    return rc;
}

sched_endpoint *fx_pick(fx *f, const sched_request *r)
{
    sched_result res;
    int rc = fx_run(f, r, f->n, NULL, &res);
    if (rc != KV_OK || res.n_targets != 1) {
        fprintf(stderr, "sched_fixture: sched_schedule: %s (%zu targets)\n", rc ? f->err.msg : "ok",
                rc ? 0 : res.n_targets);
        return NULL;
    }
    return res.targets[0];
}

sched_endpoint *fx_route(fx *f, const sched_request *r)
{
    sched_endpoint *ep = fx_pick(f, r);
    if (ep)
        fx_assign(f, r, ep);
    return ep;
}

void fx_assign(fx *f, const sched_request *r, sched_endpoint *ep)
{
    sched_result res = {.profile = "default", .n_targets = 1};
    res.targets[0] = ep;
    sched_pre_request(f->s, r, &res);
}

void fx_done(fx *f, const sched_request *r, sched_endpoint *ep)
{
    sched_response_complete(f->s, r, ep);
}

double fx_score(const fx *f, const char *type, size_t i)
{
    for (size_t k = 0; k < f->trace.n_scores; k++) {
        const sched_trace_score *t = &f->trace.scores[k];
        if (t->ep == &f->eps[i] && strcmp(t->plugin->type->type, type) == 0)
            return t->score;
    }
    return -1;
}

sched_request fx_text(const char *id, const char *prompt)
{
    return (sched_request){.id = id, .model = "m", .prompt = prompt, .prompt_len = prompt ? strlen(prompt) : 0};
}

sched_request fx_tokens(const char *id, const uint32_t *tokens, size_t n)
{
    return (sched_request){.id = id, .model = "m", .tokens = tokens, .n_tokens = n};
}

void fx_collect(void *warnbuf, const char *msg)
{
    fx_warnbuf *w = warnbuf;
    int n = snprintf(w->text + w->len, sizeof w->text - w->len, "%s\n", msg);
    if (n > 0 && w->len + (size_t)n < sizeof w->text)
        w->len += (size_t)n;
}
