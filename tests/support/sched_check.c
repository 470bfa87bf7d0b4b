/* sched_check: see sched_check.h. */
#include "sched_check.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "registry.h"

static bool is_candidate(const sched_endpoint *ep, sched_endpoint *const *eps, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (eps[i] == ep)
            return true;
    return false;
}

bool sched_check_result(const sched_result *res, const sched_trace *t, sched_endpoint *const *eps, size_t n)
{
    if (res->n_targets > SCHED_MAX_TARGETS || res->n_others > SCHED_MAX_PROFILES)
        return false;
    for (size_t i = 0; i < res->n_targets; i++)
        if (!is_candidate(res->targets[i], eps, n))
            return false;
    for (size_t i = 0; i < res->n_others; i++)
        if (res->others[i].target && !is_candidate(res->others[i].target, eps, n))
            return false;
    for (size_t i = 0; i < t->n_scores; i++)
        if (!(t->scores[i].score >= 0 && t->scores[i].score <= 1) || !is_candidate(t->scores[i].ep, eps, n))
            return false;
    /* a total is the weighted sum of the primary profile's traced scores for that endpoint */
    for (size_t i = 0; i < t->n_totals; i++) {
        double sum = 0;
        for (size_t j = 0; j < t->n_scores; j++)
            if (t->scores[j].ep == t->totals[i].ep && res->profile && strcmp(t->scores[j].profile, res->profile) == 0)
                sum += t->scores[j].score * t->scores[j].weight;
        if (!isfinite(t->totals[i].score) || fabs(t->totals[i].score - sum) > 1e-9 * (1 + fabs(sum)) ||
            !is_candidate(t->totals[i].ep, eps, n))
            return false;
    }
    return true;
}

static double check_clock(void *ctx)
{
    return 1000.0;
}

/* One schedule; false only when it succeeded with a result that breaks an invariant. */
static bool route_once(sched *s, const sched_request *r, sched_endpoint *const *eps, size_t n, sched_trace *t,
                       sched_result *res, bool *routed)
{
    sched_trace_reset(t);
    *res = (sched_result){0};
    *routed = sched_schedule(s, r, eps, n, res, t, NULL) == KV_OK;
    return !*routed || sched_check_result(res, t, eps, n);
}

bool sched_check_route(const epc_config *cfg, const sched_request *r, sched_endpoint *const *eps, size_t n,
                       bool *built)
{
    sched_env env = {.seed = 42, .now = check_clock};
    sched *s = sched_new(cfg, &env, NULL);
    *built = s != NULL;
    if (!s)
        return true;
    sched_trace t = {0};
    sched_result res;
    bool routed, ok = route_once(s, r, eps, n, &t, &res, &routed);
    if (ok && routed) {
        sched_pre_request(s, r, &res);
        sched_endpoint *first = res.targets[0];
        ok = route_once(s, r, eps, n, &t, &res, &routed);
        sched_response_complete(s, r, first);
    }
    sched_trace_free(&t);
    sched_free(s);
    return ok;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

epc_config **sched_check_presets(const char *dir)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, by_name);
    if (n < 0)
        return NULL;
    epc_config **cfgs = calloc((size_t)n + 1, sizeof *cfgs);
    size_t k = 0;
    bool ok = cfgs != NULL;
    for (int i = 0; i < n; i++) {
        size_t len = strlen(names[i]->d_name);
        if (ok && len > 5 && strcmp(names[i]->d_name + len - 5, ".yaml") == 0) {
            names[i]->d_name[len - 5] = 0;
            ok = (cfgs[k++] = epc_load_preset(dir, names[i]->d_name, registry_types, NULL)) != NULL;
        }
        free(names[i]);
    }
    free(names);
    if (!ok || k == 0) {
        sched_check_presets_free(cfgs);
        return NULL;
    }
    return cfgs;
}

void sched_check_presets_free(epc_config **cfgs)
{
    for (size_t i = 0; cfgs && cfgs[i]; i++)
        epc_free(cfgs[i]);
    free(cfgs);
}
