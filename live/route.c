/* route: one request from headers and body to a decision and a completion record (see
 * route.h for the API, the answers and the thread rules).
 *
 * The router's lock serialises the sched (single-threaded) and the shared trace; its
 * stats lock guards the counters and the renderers' round robin, so a request waiting
 * on its prompt's rendering never holds the sched. */
#include "route.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "burst_hold.h"
#include "burst_prefix_cache_producer.h"
#include "log.h"
#include "monoclock.h"
#include "tokenize.h"

struct route_router {
    route_config cfg;
    burst *burst;                     /* the config's burst-prefix-cache-producer, or NULL */
    burst_hold *hold;                 /* its window */
    pthread_mutex_t sched_mu;         /* sched calls and the trace */
    sched_trace trace;
    pthread_mutex_t mu;               /* stats, rr */
    route_stats stats;
    uint64_t rr;                      /* round robin over endpoints for /tokenize */
};

/* Counts one in a field of r->stats. */
static void count(route_router *r, uint64_t *counter)
{
    pthread_mutex_lock(&r->mu);
    (*counter)++;
    pthread_mutex_unlock(&r->mu);
}

route_router *route_new(const route_config *cfg, kv_err *err)
{
    if (!cfg->sched || !cfg->pool.acquire || !cfg->pool.release) {
        kv_err_set(err, KV_EINVAL, "route: sched and pool are required");
        return NULL;
    }
    route_router *r = malloc(sizeof *r);
    if (r) {
        *r = (route_router){.cfg = *cfg, .burst = burst_of(cfg->sched)};
        pthread_mutex_init(&r->sched_mu, NULL);
        pthread_mutex_init(&r->mu, NULL);
        tokenize_global_init();
        if (r->burst && !(r->hold = burst_hold_new(burst_window_s(r->burst), burst_max_batch(r->burst), err))) {
            route_free(r);
            return NULL;
        }
    } else {
        kv_err_set(err, KV_ENOMEM, "route: out of memory");
    }
    return r;
}

void route_free(route_router *r)
{
    if (!r)
        return;
    sched_trace_free(&r->trace);
    burst_hold_free(r->hold);
    pthread_mutex_destroy(&r->sched_mu);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void route_get_stats(route_router *r, route_stats *out)
{
    pthread_mutex_lock(&r->mu);
    *out = r->stats;
    pthread_mutex_unlock(&r->mu);
}

void route_req_init(route_req *q, route_router *r)
{
    *q = (route_req){.router = r};
}

void route_req_free(route_req *q)
{
    for (size_t i = 0; i < q->n_hdrs; i++)
        free(q->hdrs[i].key), free(q->hdrs[i].value);
    free(q->hdrs);
    free(q->skv);
    for (size_t i = 0; i < q->n_subset; i++)
        free(q->subset[i]);
    free(q->subset);
    free(q->body);
    json_decref(q->rewritten);
    oai_request_free(&q->oreq);
    free(q->tok);
    free(q->target);
    for (size_t i = 0; i < q->n_excluded; i++)
        free(q->excluded[i]);
    free(q->excluded);
}

/* ---- headers ------------------------------------------------------------------------------- */

int route_begin(route_req *q, size_t n_headers)
{
    q->t_start = monoclock_s();
    q->hdrs = calloc(n_headers + 1, sizeof *q->hdrs); /* + a generated x-request-id */
    q->skv = calloc(n_headers + 1, sizeof *q->skv);
    return q->hdrs && q->skv ? KV_OK : KV_ENOMEM;
}

int route_add_header(route_req *q, const char *key, const char *value, size_t value_len)
{
    char *k = strdup(key), *v = strndup(value, value_len);
    if (!k || !v) {
        free(k), free(v);
        return KV_ENOMEM;
    }
    for (char *c = k; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c += 32;
    q->hdrs[q->n_hdrs++] = (route_header){.key = k, .value = v};
    if (!strcmp(k, "x-request-id") && !q->request_id)
        q->request_id = v;
    return KV_OK;
}

/* A control header by its GIE name, or by llm-d-router's newer alias, which wins. */
static const char *control_header(const route_req *q, const char *gie, const char *llmd)
{
    const sched_request view = {.headers = q->skv, .n_headers = q->n_hdrs};
    const char *v = sched_header(&view, llmd);
    return v ? v : sched_header(&view, gie);
}

int route_headers_end(route_req *q)
{
    if (!q->request_id) { /* GIE generates a UUID and sends it upstream */
        uint8_t u[16] = {0};
        if (getrandom(u, sizeof u, 0) != (ssize_t)sizeof u)
            for (size_t i = 0; i < sizeof u; i++)
                u[i] = (uint8_t)(rand() >> 7);
        u[6] = (u[6] & 0x0f) | 0x40, u[8] = (u[8] & 0x3f) | 0x80;
        char *id = malloc(37), *k = strdup("x-request-id");
        if (!id || !k) {
            free(id), free(k);
            return KV_ENOMEM;
        }
        snprintf(id, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1], u[2],
                 u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
        q->hdrs[q->n_hdrs++] = (route_header){.key = k, .value = id};
        q->request_id = id;
    }
    for (size_t i = 0; i < q->n_hdrs; i++)
        q->skv[i] = (sched_kv){q->hdrs[i].key, q->hdrs[i].value};
    q->objective = control_header(q, "x-gateway-inference-objective", "x-llm-d-inference-objective");
    q->fairness_id = control_header(q, "x-gateway-inference-fairness-id", "x-llm-d-inference-fairness-id");
    if (!q->fairness_id || !*q->fairness_id)
        q->fairness_id = "default-flow"; /* GIE's DefaultFairnessID */
    return KV_OK;
}

/* ---- subset hint and candidates ------------------------------------------------------------- */

void route_subset_clear(route_req *q)
{
    for (size_t k = 0; k < q->n_subset; k++)
        free(q->subset[k]);
    q->n_subset = 0;
    q->have_subset = true;
}

void route_subset_add(route_req *q, const char *s, size_t len)
{
    char **v = realloc(q->subset, (q->n_subset + 1) * sizeof *v);
    if (!v)
        return;
    q->subset = v;
    if ((v[q->n_subset] = strndup(s, len)))
        q->n_subset++;
}

static bool in_subset(const route_req *q, const char *name)
{
    if (!q->have_subset)
        return true;
    size_t iplen = strcspn(name, ":");
    for (size_t i = 0; i < q->n_subset; i++) {
        const char *s = q->subset[i];
        if (!strcmp(s, name) || (!strchr(s, ':') && strlen(s) == iplen && !strncmp(s, name, iplen)))
            return true;
    }
    return false;
}

/* Whether ep may serve q: in its subset hint, not excluded by a retry, and not refused
 * by the request's endpoint_ok (caller holds the pool). */
static bool eligible(const route_req *q, const sched_endpoint *ep)
{
    if (!in_subset(q, ep->name))
        return false;
    for (size_t i = 0; i < q->n_excluded; i++)
        if (!strcmp(q->excluded[i], ep->name))
            return false;
    return !q->endpoint_ok || q->endpoint_ok(q->endpoint_ctx, ep);
}

/* Candidates from the pool (caller holds the pool). Returns the count; *out malloc'd. */
static size_t candidates(const route_req *q, sched_endpoint *const *eps, size_t n, sched_endpoint ***out)
{
    *out = malloc((n ? n : 1) * sizeof **out);
    if (!*out)
        return 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (eligible(q, eps[i]))
            (*out)[k++] = eps[i];
    return k;
}

/* ---- body ------------------------------------------------------------------------------------ */

bool route_body_append(route_req *q, const uint8_t *p, size_t n)
{
    if (!n)
        return true; /* an empty piece (a decoded empty chunk's data is NULL): nothing to copy */
    size_t max = q->router->cfg.max_body ? q->router->cfg.max_body : (64u << 20);
    if (q->body_len + n > max)
        return false;
    /* room for the parser's read-ahead past the end (OAI_BODY_PADDING) saves a copy */
    if (q->body_len + n + OAI_BODY_PADDING > q->body_cap) {
        size_t cap = q->body_cap ? q->body_cap * 2 : 4096;
        while (cap < q->body_len + n + OAI_BODY_PADDING)
            cap *= 2;
        char *b = realloc(q->body, cap);
        if (!b)
            return false;
        q->body = b, q->body_cap = cap;
    }
    memcpy(q->body + q->body_len, p, n);
    q->body_len += n;
    return true;
}

/* ---- the decision ---------------------------------------------------------------------------- */

static int answer(route_req *q, int status, const char *msg)
{
    q->http_status = status;
    snprintf(q->error, sizeof q->error, "%s", msg);
    return status;
}

/* llm-d-router's V(4) line (scheduler_profile.go), field for field, so the guide's
 * `grep "Calculated score"` pipelines work unchanged: the request logger's values
 * (x-request-id from the server, then the director's objectiveKey, incomingModelName,
 * targetModelName and priority), the plugin as TypedName.String() writes it
 * ("<name>/<type>"), the endpoint's NamespacedName as logr marshals it ({"name"} plus
 * "namespace" when set) and the score as a Go float64 (log.h). */
static void log_scores(const route_req *q, const sched_trace *t)
{
    char plugin[256];
    for (size_t i = 0; i < t->n_scores; i++) {
        const sched_trace_score *sc = &t->scores[i];
        snprintf(plugin, sizeof plugin, "%s/%s", sc->plugin->name, sc->plugin->type->type);
        const char *ns = sc->ep->ns ? sc->ep->ns : "";
        LOG_V(4, "Calculated score", "{s:s, s:s, s:s, s:s, s:i, s:s, s:{s:s, s:s*}, s:f}", "x-request-id",
              q->request_id, "objectiveKey", q->objective ? q->objective : "", "incomingModelName", q->sreq.model,
              "targetModelName", q->sreq.target_model ? q->sreq.target_model : q->sreq.model, "priority",
              q->sreq.priority, "plugin", plugin, "endpoint", "name", sc->ep->pod ? sc->ep->pod : sc->ep->name,
              "namespace", *ns ? ns : NULL, "score", sc->score);
    }
}

/* A text or chat prompt's token ids, rendered on the token producer's server or on one of
 * the request's candidates in turn; false on failure, which is counted by reason and
 * logged (the request is routed without ids: llm-d's Director carries on the same way). */
static bool tokenize(route_req *q, const char *model)
{
    route_router *r = q->router;
    char base[300] = "";
    if (r->cfg.tokenize_url) {
        snprintf(base, sizeof base, "%s", r->cfg.tokenize_url);
    } else {
        const route_pool *pool = &r->cfg.pool;
        sched_endpoint *const *eps;
        size_t n = pool->acquire(pool->ctx, &eps), k = 0;
        for (size_t i = 0; i < n; i++)
            k += eligible(q, eps[i]);
        if (k) {
            pthread_mutex_lock(&r->mu);
            size_t pick = r->rr++ % k;
            pthread_mutex_unlock(&r->mu);
            for (size_t i = 0; i < n && !base[0]; i++)
                if (eligible(q, eps[i]) && pick-- == 0)
                    snprintf(base, sizeof base, "http://%s", eps[i]->name);
        }
        pool->release(pool->ctx);
    }
    const oai_request *o = &q->oreq;
    tokenize_result tr = {0};
    kv_err e = {0};
    int rc;
    if (!base[0]) {
        tokenize_count_failure(tr.reason = TOKENIZE_NO_ENDPOINT);
        rc = kv_err_set(&e, KV_ENOENDPOINTS, "no candidate endpoint to render the prompt on");
    } else {
        int ms = o->chat ? r->cfg.tokenize_chat_timeout_ms : r->cfg.tokenize_timeout_ms;
        const sched_request hv = {.headers = q->skv, .n_headers = q->n_hdrs};
        tokenize_req tq = {.base_url = base, .body = q->body, .body_len = q->body_len, .chat = o->chat, .model = model,
                           .prompt = o->prompt, .prompt_len = o->prompt_len, .messages_json = o->messages_json,
                           .authorization = sched_header(&hv, "authorization"),
                           .timeout_ms = ms > 0 ? ms : o->chat ? 30000 : 5000};
        rc = tokenize_prompt(&tq, &tr, &e);
    }
    if (rc == KV_OK) {
        q->tok = tr.tokens;
        q->n_tok = tr.n;
    } else {
        LOG_W("Tokenization failed; routing without token ids", "{s:s, s:s, s:s, s:s}", "x-request-id",
              q->request_id, "reason", tokenize_reason_name(tr.reason), "renderer", base, "error", e.msg);
    }
    count(r, rc == KV_OK ? &r->stats.tokenize_ok : &r->stats.tokenize_failed);
    return rc == KV_OK;
}

/* A burst window's placement (burst_hold's place callback): the window's requests over the
 * whole pool, under the sched's lock as every call into the sched is. */
static void place_window(void *ctx, const sched_request *const *reqs, size_t n)
{
    route_router *r = ctx;
    const route_pool *pool = &r->cfg.pool;
    pthread_mutex_lock(&r->sched_mu);
    sched_endpoint *const *eps;
    size_t n_eps = pool->acquire(pool->ctx, &eps);
    kv_err e = {0};
    if (burst_assign(r->burst, reqs, n, eps, n_eps, &e) != KV_OK)
        LOG_E("Burst window not placed; its requests are routed without affinity", "{s:s}", "error", e.msg);
    pool->release(pool->ctx);
    pthread_mutex_unlock(&r->sched_mu);
}

/* An InferenceModelRewrite rule for the body's model, else x-gateway-model-name-rewrite:
 * GIE sends the body upstream with `model` replaced, so the body is re-serialised (and
 * Content-Length follows). This rare path alone builds a JSON tree (kept for the new
 * name's lifetime); the parsed request keeps the incoming name for logs and hooks.
 * jansson reads strings holding \u0000 as the request reader does (JSON_ALLOW_NUL);
 * what it still cannot hold (an integer beyond 64 bits, \u0000 in a key) is the
 * client's to fix. Returns the model to route for, or NULL with *err set: KV_ENOMEM,
 * or KV_EINVAL quoting jansson's complaint. */
static const char *rewrite_model(route_req *q, kv_err *err)
{
    const route_config *cfg = &q->router->cfg;
    char *ruled = NULL;
    if (cfg->model_rewrite && cfg->model_rewrite(cfg->admission_ctx, q->oreq.model, &ruled) != KV_OK) {
        kv_err_set(err, KV_ENOMEM, "out of memory");
        return NULL;
    }
    const char *to =
        ruled ? ruled : control_header(q, "x-gateway-model-name-rewrite", "x-llm-d-model-name-rewrite");
    if (!to || !*to || !strcmp(to, q->oreq.model)) {
        free(ruled);
        return q->oreq.model;
    }
    json_error_t je;
    json_t *root = json_loadb(q->body, q->body_len, JSON_ALLOW_NUL, &je);
    if (!root && json_error_code(&je) != json_error_out_of_memory) {
        free(ruled);
        kv_err_set(err, KV_EINVAL, "request body: cannot rewrite 'model' (line %d column %d, byte %d): %s", je.line,
                   je.column, je.position, je.text);
        return NULL;
    }
    /* json_string refuses a name that is not UTF-8 (a header may carry any byte); a
     * name of a few bytes failing for memory is not worth telling apart */
    json_t *name = root ? json_string(to) : NULL;
    free(ruled);
    if (!name || json_object_set_new(root, "model", name)) {
        kv_err_set(err, root && !name ? KV_EINVAL : KV_ENOMEM,
                   root && !name ? "the rewritten model name is not valid UTF-8" : "out of memory");
        json_decref(root);
        return NULL;
    }
    q->rewritten = root;
    char *body = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!body) {
        kv_err_set(err, KV_ENOMEM, "out of memory");
        return NULL;
    }
    free(q->body);
    q->body = body;
    q->body_len = q->body_cap = strlen(body);
    return json_string_value(json_object_get(root, "model"));
}

/* "ip:port[,ip:port...]" of the result's targets, malloc'd; NULL on memory. */
static char *join_targets(const sched_result *res)
{
    size_t len = 0;
    for (size_t i = 0; i < res->n_targets; i++)
        len += strlen(res->targets[i]->name) + 1;
    char *t = malloc(len);
    if (!t)
        return NULL;
    t[0] = 0;
    for (size_t i = 0; i < res->n_targets; i++) {
        if (i)
            strcat(t, ",");
        strcat(t, res->targets[i]->name);
    }
    return t;
}

static int schedule(route_req *q, double t_body);
static void hook_target(route_req *q, void (*hook)(sched *, const sched_request *, sched_endpoint *));

int route_decide(route_req *q)
{
    route_router *r = q->router;
    kv_err e = {0};
    double t_body = monoclock_s();
    int rc = oai_request_parse(q->body, q->body_len, q->body_cap, &q->oreq, &e);
    if (rc != KV_OK)
        return answer(q, rc == KV_ENOMEM ? 500 : 400, e.msg);
    const oai_request *o = &q->oreq;
    const char *target_model = rewrite_model(q, &e);
    if (!target_model)
        return answer(q, e.code == KV_ENOMEM ? 500 : 400, e.msg);
    int priority = 0;
    if (r->cfg.objective_priority)
        r->cfg.objective_priority(r->cfg.admission_ctx, q->objective, &priority);
    bool tok_failed = false;
    if (!o->tokens && r->cfg.tokenize_timeout_ms >= 0)
        tok_failed = !tokenize(q, target_model);
    q->sreq = (sched_request){
        .id = q->request_id,
        .model = o->model,
        .target_model = target_model == o->model ? NULL : target_model,
        .cache_salt = o->cache_salt,
        .tokens = o->tokens ? o->tokens : q->tok,
        .n_tokens = o->tokens ? o->n_tokens : q->n_tok,
        .prompt = o->chat ? o->messages_json : o->prompt,
        .prompt_len = o->chat ? o->messages_len : o->prompt_len,
        .headers = q->skv,
        .n_headers = q->n_hdrs,
        .priority = priority,
        .output_tokens_hint = o->max_tokens,
    };
    q->priority = priority;
    q->tok_failed = tok_failed;
    return schedule(q, t_body);
}

/* Admission and scheduling of a parsed request (q->sreq) over its eligible candidates;
 * t_body is when its decision began. */
static int schedule(route_req *q, double t_body)
{
    route_router *r = q->router;
    const oai_request *o = &q->oreq;
    int priority = q->priority, rc;
    kv_err e = {0};
    bool dry = q->inspect != NULL;
    bool verbose = !dry && log_enabled(4), tracing = verbose || dry || r->cfg.trace_decisions;
    /* burst-prefix-cache-producer: a routed request (not a dry run) is held until its window
     * is placed (after tokenisation, whose ids the placement hashes, as llm-d's producer
     * consumes the token producer's) */
    if (!dry && r->hold && !burst_hold_wait(r->hold, &q->sreq, place_window, r))
        LOG_V(2, "Burst window full (maxBatchSize); routed without affinity", "{s:s}", "x-request-id",
              q->request_id);
    const route_pool *pool = &r->cfg.pool;
    pthread_mutex_lock(&r->sched_mu);
    sched_endpoint *const *eps;
    size_t n = pool->acquire(pool->ctx, &eps);
    sched_endpoint **cand;
    size_t k = candidates(q, eps, n, &cand);
    sched_result res = {0};
    double t0 = monoclock_s(), dt = 0;
    bool no_candidates = k == 0;
    /* GIE's admission: only sheddable requests are checked, after the candidates. */
    bool shed = !no_candidates && priority < 0 && r->cfg.saturated && r->cfg.saturated(r->cfg.admission_ctx, cand, k);
    if (no_candidates || shed) {
        rc = KV_ENOENDPOINTS;
    } else {
        if (tracing)
            sched_trace_reset(&r->trace);
        rc = sched_schedule(r->cfg.sched, &q->sreq, cand, k, &res, tracing ? &r->trace : NULL, &e);
        dt = monoclock_s() - t0;
    }
    if (rc == KV_OK && res.n_targets > 0 && (q->target = join_targets(&res))) {
        q->target_id = res.targets[0]->id;
        if (!dry) {
            sched_pre_request(r->cfg.sched, &q->sreq, &res);
            q->pre_requested = true;
        }
    }
    if (k > 0 && !shed && verbose)
        log_scores(q, &r->trace);
    if (k > 0 && (dry || r->cfg.on_decision)) {
        const route_decision d = {
            .request_id = q->request_id,
            .model = o->model,
            .target_model = q->sreq.target_model,
            .objective = q->objective,
            .fairness_id = q->fairness_id,
            .priority = priority,
            .shed = shed,
            .target = rc == KV_OK ? q->target : NULL,
            .profile = res.profile,
            .n_tokens = q->sreq.n_tokens,
            .tokenize_failed = q->tok_failed,
            .sched_seconds = dt,
            .decide_seconds = monoclock_s() - t_body,
            .result = &res,
            .trace = tracing && !shed ? &r->trace : NULL,
        };
        if (dry)
            q->inspect(q->inspect_ctx, &d);
        else
            r->cfg.on_decision(r->cfg.hook_ctx, &d);
    }
    pool->release(pool->ctx);
    pthread_mutex_unlock(&r->sched_mu);
    free(cand);

    /* GIE: no candidates before scheduling is 503; any scheduler failure, filters that
     * leave nothing included, is 429 "failed to find target pod" (director.go). */
    if (no_candidates)
        return answer(q, 503,
                      q->have_subset ? "failed to find candidate pods for serving the request: no eligible "
                                       "endpoint in the subset hint"
                                     : "failed to find candidate pods for serving the request");
    if (shed)
        return answer(q, 429, "system saturated, sheddable request dropped");
    if (rc != KV_OK || res.n_targets == 0) {
        snprintf(q->error, sizeof q->error, "failed to find target pod: %s", e.msg[0] ? e.msg : "no target");
        q->http_status = 429;
        return 429;
    }
    if (!q->target)
        return answer(q, 500, "out of memory");
    if (!dry)
        LOG_V(3, "Request handled", "{s:s, s:s, s:s, s:s?, s:s, s:i, s:I}", "x-request-id", q->request_id, "model",
          o->model, "endpoint", q->target, "objectiveKey", q->objective, "fairnessID", q->fairness_id, "priority",
          priority, "tokens", (json_int_t)q->sreq.n_tokens);
    q->http_status = 200;
    return 200;
}

int route_retry(route_req *q)
{
    if (!q->target)
        return answer(q, 500, "route_retry: the request was not routed");
    if (q->pre_requested) /* the failed attempt is over for the sched */
        hook_target(q, sched_response_complete);
    q->pre_requested = q->first_chunk = false;
    for (const char *t = q->target; *t;) {
        size_t len = strcspn(t, ",");
        char **v = realloc(q->excluded, (q->n_excluded + 1) * sizeof *v);
        if (!v || !(v[q->n_excluded] = strndup(t, len))) {
            if (v)
                q->excluded = v;
            return answer(q, 500, "out of memory");
        }
        q->excluded = v;
        q->n_excluded++;
        t += len + (t[len] == ',');
    }
    free(q->target);
    q->target = NULL;
    return schedule(q, monoclock_s());
}

int route_decide_headers_only(route_req *q)
{
    const route_pool *pool = &q->router->cfg.pool;
    sched_endpoint *const *eps;
    size_t n = pool->acquire(pool->ctx, &eps);
    sched_endpoint **cand;
    size_t k = candidates(q, eps, n, &cand);
    if (k) {
        uint64_t x;
        if (getrandom(&x, sizeof x, 0) != (ssize_t)sizeof x)
            x = (uint64_t)rand();
        q->target = strdup(cand[x % k]->name);
    }
    pool->release(pool->ctx);
    free(cand);
    if (!q->target)
        return answer(q, 500, "no pods available in datastore");
    q->http_status = 200;
    return 200;
}

/* ---- completion ------------------------------------------------------------------------------ */

/* A response-side scheduler hook for the routed endpoint, under the router's lock. */
static void hook_target(route_req *q, void (*hook)(sched *, const sched_request *, sched_endpoint *))
{
    route_router *r = q->router;
    const route_pool *pool = &r->cfg.pool;
    pthread_mutex_lock(&r->sched_mu);
    sched_endpoint *const *eps;
    size_t n = pool->acquire(pool->ctx, &eps);
    for (size_t i = 0; i < n; i++)
        if (eps[i]->id == q->target_id) {
            hook(r->cfg.sched, &q->sreq, eps[i]);
            break;
        }
    pool->release(pool->ctx);
    pthread_mutex_unlock(&r->sched_mu);
}

void route_response_started(route_req *q)
{
    if (!q->pre_requested || q->first_chunk)
        return;
    q->first_chunk = true;   /* llm-d's StartOfStream: the prefill is done */
    hook_target(q, sched_response_started);
}

void route_complete(route_req *q)
{
    if (q->reported)
        return;
    q->reported = true;
    route_router *r = q->router;
    if (q->pre_requested)
        hook_target(q, sched_response_complete);
    if (q->target)
        count(r, &r->stats.completed);
    if (r->cfg.on_complete) {
        const route_completion c = {
            .request_id = q->request_id,
            .model = q->oreq.model,
            .target_model = q->sreq.target_model,
            .target = q->target,
            .http_status = q->http_status,
            .usage_found = q->usage.found,
            .prompt_tokens = q->usage.prompt_tokens,
            .completion_tokens = q->usage.completion_tokens,
            .cached_tokens = q->usage.cached_tokens,
            .request_bytes = q->request_bytes,
            .response_bytes = q->response_bytes,
            .seconds = monoclock_s() - q->t_start,
        };
        r->cfg.on_complete(r->cfg.hook_ctx, &c);
    }
}
