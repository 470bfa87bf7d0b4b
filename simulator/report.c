/* report: inference-perf's lifecycle report files and llm-d-benchmark's report v0.1,
 * built as jansson trees from lc_metrics and written by pyemit exactly as the Python
 * tools write them (see report.h; mapping in docs/sim-outputs.md). */
#include "report.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pyemit.h"

void report_opts_default(report_opts *o)
{
    memset(o, 0, sizeof *o);
    o->per_request = true;
    o->benchmark_report = true;
    o->model_name = "unknown";
}

/* json_object_set_new that keeps insertion order (jansson preserves it). */
static void put(json_t *obj, const char *key, json_t *v)
{
    json_object_set_new(obj, key, v ? v : json_null());
}

static json_t *stats_json(const stats_block *b)
{
    if (!b->valid)
        return json_null();
    json_t *o = json_object();
    for (int i = 0; i < STATS_NKEYS; i++)
        put(o, stats_key_names[i], json_real(b->v[i]));
    return o;
}

json_t *report_lifecycle_json(const lc_metrics *m)
{
    json_t *root = json_object(), *load = json_object(), *succ = json_object(), *lat = json_object(),
           *thr = json_object(), *fail = json_object();
    put(load, "count", json_integer((json_int_t)m->count));
    put(load, "schedule_delay", stats_json(&m->schedule_delay));
    if (m->stage >= 0) {
        put(load, "send_duration", json_real(m->send_duration));
        put(load, "requested_rate", json_real(m->requested_rate));
        put(load, "achieved_rate", json_real(m->achieved_rate));
        if (m->concurrency > 0)
            put(load, "concurrency", json_integer(m->concurrency));
    }
    put(root, "load_summary", load);

    put(lat, "request_latency", stats_json(&m->request_latency));
    put(lat, "normalized_time_per_output_token", stats_json(&m->ntpot));
    put(lat, "time_per_output_token", stats_json(&m->tpot));
    put(lat, "time_to_first_token", stats_json(&m->ttft));
    put(lat, "inter_token_latency", stats_json(&m->itl));
    put(thr, "input_tokens_per_sec", json_real(m->input_tokens_per_sec));
    put(thr, "output_tokens_per_sec", json_real(m->output_tokens_per_sec));
    put(thr, "total_tokens_per_sec", json_real(m->total_tokens_per_sec));
    put(thr, "requests_per_sec", json_real(m->requests_per_sec));
    put(succ, "count", json_integer((json_int_t)m->n_success));
    put(succ, "latency", lat);
    put(succ, "throughput", thr);
    put(succ, "prompt_len", stats_json(&m->prompt_len));
    put(succ, "output_len", stats_json(&m->output_len));
    put(root, "successes", succ);

    put(fail, "count", json_integer((json_int_t)m->n_failed));
    put(fail, "request_latency", stats_json(&m->fail_request_latency));
    put(fail, "prompt_len", stats_json(&m->fail_prompt_len));
    put(root, "failures", fail);
    return root;
}

static double secs(sim_time t)
{
    return (double)t / (double)SIM_US_PER_S;
}

/* The completion payload inference-perf would have POSTed, as Python's json.dumps
 * prints it. The simulator has token counts, not text, so "prompt" is replaced by
 * "prompt_tokens". */
static json_t *request_payload(const sim_request_record *r, const char *model)
{
    json_t *js = json_string(model);
    char *m = json_dumps(js, JSON_ENCODE_ANY | JSON_ENSURE_ASCII);
    json_decref(js);
    char buf[512];
    snprintf(buf, sizeof buf,
             "{\"model\": %s, \"prompt_tokens\": %u, \"max_tokens\": %u, \"ignore_eos\": true, \"stream\": true}",
             m ? m : "null", r->prompt_tokens, r->output_tokens);
    free(m);
    return json_string(buf);
}

typedef struct per_request_ctx {
    const sim_run *run;
    const report_opts *o;
} per_request_ctx;

/* The per-request file's item i: inference-perf's RequestLifecycleMetric. */
static json_t *per_request_item(void *ctx, size_t i)
{
    const per_request_ctx *pc = ctx;
    const report_opts *o = pc->o;
    const sim_request_record *r = &pc->run->requests[i];
    json_t *rec = json_object(), *info = json_object(), *extra = json_object();
    put(rec, "start_time", json_real(secs(r->t_start)));
    put(rec, "end_time", json_real(secs(r->t_end > r->t_start ? r->t_end : r->t_start)));
    put(rec, "request", request_payload(r, o->model_name ? o->model_name : "unknown"));
    put(rec, "response", json_string(""));
    put(info, "input_tokens", json_integer(r->prompt_tokens));
    put(info, "output_tokens", json_integer(r->output_tokens));
    if (o->token_times) {
        json_t *tt = json_array();
        sim_token_cursor tc = sim_token_cursor_of(pc->run, r);
        const sim_time *t;
        for (uint32_t n; sim_token_span(&tc, &t, &n);)
            for (uint32_t j = 0; j < n; j++)
                json_array_append_new(tt, json_real(secs(t[j])));
        put(info, "output_token_times", tt);
    }
    put(extra, "stage", json_integer(r->stage));
    put(extra, "scheduled_time", json_real(secs(r->t_scheduled)));
    put(extra, "endpoint", json_integer(r->endpoint));
    put(extra, "cached_tokens", json_integer(r->cached_tokens));
    put(extra, "preemptions", json_integer(r->preemptions));
    if (r->prefix_group != UINT32_MAX)
        put(extra, "prefix_group", json_integer(r->prefix_group));
    put(info, "extra_info", extra);
    put(rec, "info", info);
    if (r->failed) {
        json_t *e = json_object();
        put(e, "error_type", json_string("SimulatedFailure"));
        put(e, "error_msg", json_string("the simulated server rejected the request"));
        put(rec, "error", e);
    } else {
        put(rec, "error", json_null());
    }
    return rec;
}

json_t *report_per_request_json(const sim_run *run, const report_opts *o)
{
    per_request_ctx pc = {.run = run, .o = o};
    json_t *arr = json_array();
    for (size_t i = 0; i < run->n_requests; i++)
        json_array_append_new(arr, per_request_item(&pc, i));
    return arr;
}

/* A v0.1 Statistics block: units plus the inference-perf keys renamed. */
static void put_br_stats(json_t *obj, const char *key, const stats_block *b, const char *units)
{
    if (!b->valid) /* exclude_none */
        return;
    json_t *o = json_object();
    put(o, "units", json_string(units));
    for (int i = 0; i < STATS_NKEYS; i++)
        put(o, stats_key_names_br[i], json_real(b->v[i]));
    put(obj, key, o);
}

json_t *report_yaml_to_json(const yt_node *n)
{
    if (!n)
        return json_null();
    switch (n->kind) {
    case YT_SCALAR:
        return n->quoted ? json_string(n->str) : pyemit_yaml_plain_scalar(n->str);
    case YT_SEQ: {
        json_t *a = json_array();
        for (size_t i = 0; i < n->n; i++)
            json_array_append_new(a, report_yaml_to_json(n->items[i]));
        return a;
    }
    case YT_MAP: {
        json_t *o = json_object();
        for (size_t i = 0; i < n->n; i++)
            put(o, n->keys[i], report_yaml_to_json(n->items[i]));
        return o;
    }
    }
    return json_null();
}

json_t *report_benchmark_v01(const lc_metrics *m, const report_opts *o)
{
    json_t *root = json_object(), *scen = json_object(), *model = json_object(), *load = json_object(),
           *meta = json_object(), *metrics = json_object(), *time = json_object(), *req = json_object(),
           *lat = json_object(), *thr = json_object();
    put(root, "version", json_string("0.1"));
    if (o->description)
        put(scen, "description", json_string(o->description));
    put(model, "name", json_string(o->model_name ? o->model_name : "unknown"));
    put(scen, "model", model);
    put(load, "name", json_string("inference-perf"));
    if (o->load_args)
        put(load, "args", report_yaml_to_json(o->load_args));
    put(meta, "stage", json_integer(m->stage));
    put(load, "metadata", meta);
    put(scen, "load", load);
    put(root, "scenario", scen);

    put(time, "duration", json_real(m->send_duration));
    put(metrics, "time", time);
    put(req, "total", json_integer((json_int_t)m->count));
    put(req, "failures", json_integer((json_int_t)m->n_failed));
    put_br_stats(req, "input_length", &m->prompt_len, "count");
    put_br_stats(req, "output_length", &m->output_len, "count");
    put(metrics, "requests", req);
    put_br_stats(lat, "time_to_first_token", &m->ttft, "s");
    put_br_stats(lat, "normalized_time_per_output_token", &m->ntpot, "s/token");
    put_br_stats(lat, "time_per_output_token", &m->tpot, "s/token");
    put_br_stats(lat, "inter_token_latency", &m->itl, "s/token");
    put_br_stats(lat, "request_latency", &m->request_latency, "s");
    put(metrics, "latency", lat);
    put(thr, "output_tokens_per_sec", json_real(m->output_tokens_per_sec));
    put(thr, "total_tokens_per_sec", json_real(m->total_tokens_per_sec));
    put(thr, "requests_per_sec", json_real(m->requests_per_sec));
    put(metrics, "throughput", thr);
    put(root, "metrics", metrics);
    return root;
}

static int make_dir(const char *dir, kv_err *err)
{
    char path[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof path)
        return kv_err_set(err, KV_EINVAL, "report: bad output directory '%s'", dir);
    memcpy(path, dir, n + 1);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(path, 0777) != 0 && errno != EEXIST)
            return kv_err_set(err, KV_EIO, "%s: cannot create directory: %s", path, strerror(errno));
        *p = '/';
    }
    if (mkdir(path, 0777) != 0 && errno != EEXIST)
        return kv_err_set(err, KV_EIO, "%s: cannot create directory: %s", path, strerror(errno));
    return KV_OK;
}

enum { OUT_JSON, OUT_YAML, OUT_YAML_UNSORTED };

/* Writes tree (taking the reference) to dir/name. */
static int write_tree(const char *dir, const char *name, json_t *tree, int how, kv_err *err)
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) {
        json_decref(tree);
        return kv_err_set(err, KV_ERANGE, "report: path too long: %s/%s", dir, name);
    }
    if (!tree)
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory building the report", path);
    int rc = how == OUT_YAML            ? pyemit_yaml_file(path, tree, err)
             : how == OUT_YAML_UNSORTED ? pyemit_yaml_unsorted_file(path, tree, err)
                                        : pyemit_json_file(path, tree, err);
    json_decref(tree);
    return rc;
}

int report_write_router(const sim_run *run, const lc_run *m, const char *dir, const report_opts *o, kv_err *err)
{
    report_opts def;
    if (!o) {
        report_opts_default(&def);
        o = &def;
    }
    int rc = make_dir(dir, err);
    char name[128];
    for (size_t i = 0; rc == KV_OK && i < m->n_stages; i++) {
        const lc_metrics *s = &m->stages[i];
        snprintf(name, sizeof name, "stage_%d_lifecycle_metrics.json", s->stage);
        rc = write_tree(dir, name, report_lifecycle_json(s), OUT_JSON, err);
        if (rc == KV_OK && o->benchmark_report) {
            snprintf(name, sizeof name, "benchmark_report,_stage_%d_lifecycle_metrics.json.yaml", s->stage);
            rc = write_tree(dir, name, report_benchmark_v01(s, o), OUT_YAML, err);
        }
    }
    if (rc == KV_OK)
        rc = write_tree(dir, "summary_lifecycle_metrics.json", report_lifecycle_json(&m->summary), OUT_JSON, err);
    if (rc == KV_OK && o->per_request) {
        /* item by item: a run's requests as one tree cost ~2.2 KB each */
        char path[4096];
        per_request_ctx pc = {.run = run, .o = o};
        rc = (size_t)snprintf(path, sizeof path, "%s/per_request_lifecycle_metrics.json", dir) >= sizeof path
                 ? kv_err_set(err, KV_ERANGE, "report: path too long: %s", dir)
                 : pyemit_json_items_file(path, run->n_requests, per_request_item, &pc, err);
    }
    /* inference-perf saves its config with yaml.dump(sort_keys=False) */
    if (rc == KV_OK && o->load_args)
        rc = write_tree(dir, "config.yaml", report_yaml_to_json(o->load_args), OUT_YAML_UNSORTED, err);
    return rc;
}
