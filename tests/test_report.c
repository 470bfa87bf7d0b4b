/* test_report: the inference-perf metric definitions on hand-made records (every
 * expected number worked out in the comments), the JSON shape and float spelling
 * against a real inference-perf report (tests/data/inference-perf/), the llm-d v0.1
 * mapping, PyYAML's output layout, and byte-identical files across two writes. */
#define _GNU_SOURCE
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "lifecycle.h"
#include "pyemit.h"
#include "report.h"

#define US(s) ((sim_time)((s) * 1000000.0 + 0.5))

/* Stage 0: three requests.
 *   r0: scheduled 0.9, start 1.0, events 1.5 1.6 1.8, end 2.0, prompt 100, out 2
 *   r1: scheduled 2.0, start 2.0, events 2.2 2.3,     end 3.5, prompt 50,  out 1
 *   r2: scheduled 3.0, start 3.0, failed,              end 3.0, prompt 10
 * Stage 1: r3: start 10.0, events 10.5 11.0, end 12.0, prompt 20, out 1. */
static const sim_time tt0[] = {US(1.5), US(1.6), US(1.8)};
static const sim_time tt1[] = {US(2.2), US(2.3)};
static const sim_time tt3[] = {US(10.5), US(11.0)};

static sim_request_record recs[] = {
    {.id = 0, .stage = 0, .t_scheduled = US(0.9), .t_start = US(1.0), .t_first_token = US(1.5), .t_end = US(2.0),
     .prompt_tokens = 100, .output_tokens = 2, .cached_tokens = 64, .endpoint = 1, .token_times = tt0,
     .n_token_times = 3, .prefix_group = 7},
    {.id = 1, .stage = 0, .t_scheduled = US(2.0), .t_start = US(2.0), .t_first_token = US(2.2), .t_end = US(3.5),
     .prompt_tokens = 50, .output_tokens = 1, .endpoint = 0, .token_times = tt1, .n_token_times = 2,
     .prefix_group = UINT32_MAX},
    {.id = 2, .stage = 0, .t_scheduled = US(3.0), .t_start = US(3.0), .t_end = US(3.0), .prompt_tokens = 10,
     .failed = true, .prefix_group = UINT32_MAX},
    {.id = 3, .stage = 1, .t_scheduled = US(10.0), .t_start = US(10.0), .t_first_token = US(10.5),
     .t_end = US(12.0), .prompt_tokens = 20, .output_tokens = 1, .preemptions = 2, .token_times = tt3,
     .n_token_times = 2, .prefix_group = UINT32_MAX},
};
static sim_stage_info stages[] = {
    {.index = 0, .rate = 1.5, .duration_s = 2, .num_requests = 3, .t_begin = US(1.0), .t_end = US(3.5)},
    {.index = 1, .rate = 1.0, .duration_s = 1, .num_requests = 1, .t_begin = US(10.0), .t_end = US(12.0)},
};
static sim_run fixture = {.router = "rr", .config_path = "presets/rr.yaml", .requests = recs, .n_requests = 4,
                          .stages = stages, .n_stages = 2};

static void near(double got, double want)
{
    if (fabs(got - want) > 1e-12 * (fabs(want) > 1 ? fabs(want) : 1))
        fail_msg("got %.17g, want %.17g", got, want);
}

static void test_stage_definitions(void **state)
{
    (void)state;
    lc_metrics m;
    assert_int_equal(lc_compute(&fixture, 0, &m, NULL), KV_OK);
    assert_int_equal(m.count, 3);
    assert_int_equal(m.n_success, 2);
    assert_int_equal(m.n_failed, 1);
    /* request_latency = E - S over successes: 1.0, 1.5 */
    near(m.request_latency.v[STATS_MEAN], 1.25);
    near(m.request_latency.v[STATS_MIN], 1.0);
    near(m.request_latency.v[STATS_MAX], 1.5);
    /* TTFT = times[0] - S: 0.5, 0.2 */
    near(m.ttft.v[STATS_MIN], 0.2);
    near(m.ttft.v[STATS_MAX], 0.5);
    /* TPOT = (times[-1] - times[0]) / (len - 1): 0.3/2 = 0.15 and 0.1/1 */
    near(m.tpot.v[STATS_MAX], 0.15);
    near(m.tpot.v[STATS_MIN], 0.1);
    /* ITL pooled: 0.1, 0.2 (r0) and 0.1 (r1); median of {0.1, 0.1, 0.2} = 0.1 */
    near(m.itl.v[STATS_MEAN], 0.4 / 3);
    near(m.itl.v[STATS_MEDIAN], 0.1);
    near(m.itl.v[STATS_MAX], 0.2);
    /* NTPOT = (E - S) / output_tokens: 0.5 and 1.5 */
    near(m.ntpot.v[STATS_MIN], 0.5);
    near(m.ntpot.v[STATS_MAX], 1.5);
    /* total_time = max(E) - min(S) = 3.5 - 1.0, the drain of r1 included */
    near(m.total_time, 2.5);
    near(m.requests_per_sec, 2 / 2.5);
    near(m.input_tokens_per_sec, 150 / 2.5);
    near(m.output_tokens_per_sec, 3 / 2.5);
    near(m.total_tokens_per_sec, 153 / 2.5);
    /* send_duration = max(S) - min(S) = 3.0 - 1.0 (the failure counts); achieved 3 / 2 */
    near(m.send_duration, 2.0);
    near(m.achieved_rate, 1.5);
    near(m.requested_rate, 1.5);
    /* schedule_delay = S - scheduled: 0.1, 0, 0 */
    near(m.schedule_delay.v[STATS_MAX], 0.1);
    near(m.schedule_delay.v[STATS_MIN], 0.0);
    near(m.prompt_len.v[STATS_MEAN], 75);
    near(m.output_len.v[STATS_MEDIAN], 1.5);
    assert_true(m.fail_prompt_len.valid);
    near(m.fail_prompt_len.v[STATS_MEAN], 10);
    near(m.fail_request_latency.v[STATS_MEAN], 0);
    assert_int_equal(m.cached_tokens, 64);
}

static void test_summary_spans_all_stages(void **state)
{
    (void)state;
    lc_run r;
    assert_int_equal(lc_run_compute(&fixture, &r, NULL), KV_OK);
    assert_int_equal(r.n_stages, 2);
    assert_int_equal(r.stages[1].count, 1);
    assert_int_equal(r.stages[1].preemptions, 2);
    /* stage 1 alone: one request, send_duration 0 -> achieved_rate reported as 0 */
    near(r.stages[1].send_duration, 0);
    near(r.stages[1].achieved_rate, 0);
    near(r.stages[1].total_time, 2.0);
    /* summary: total_time = 12.0 - 1.0 across the gap between stages */
    assert_int_equal(r.summary.count, 4);
    assert_int_equal(r.summary.n_success, 3);
    near(r.summary.total_time, 11.0);
    near(r.summary.requests_per_sec, 3 / 11.0);
    /* ITL pooled over both stages: 0.1 0.2 0.1 0.5 */
    near(r.summary.itl.v[STATS_MAX], 0.5);
    lc_run_free(&r);
}

static void same_block(const stats_block *a, const stats_block *b)
{
    assert_int_equal(a->valid, b->valid);
    assert_memory_equal(a->v, b->v, sizeof a->v);   /* bit for bit: NaN for NaN */
}

/* A run of one stage: lc_run_compute takes the summary from the stage, which holds every
 * request, instead of reading the records again; it must equal the summary lc_compute
 * makes over all requests, field for field, bar the stage's own fields. */
static void test_one_stage_summary_is_the_stage(void **state)
{
    (void)state;
    sim_run one = fixture;
    one.n_requests = 3;   /* r0, r1, r2: stage 0 only */
    one.n_stages = 1;
    lc_run r;
    lc_metrics all;
    assert_int_equal(lc_run_compute(&one, &r, NULL), KV_OK);
    assert_int_equal(lc_compute(&one, -1, &all, NULL), KV_OK);
    const lc_metrics *s = &r.summary;
    assert_int_equal(s->stage, -1);
    assert_true(s->requested_rate == 0 && all.requested_rate == 0);
    assert_true(r.stages[0].requested_rate == 1.5);
    assert_int_equal(s->concurrency, all.concurrency);
    assert_int_equal(s->count, all.count);
    assert_int_equal(s->n_success, all.n_success);
    assert_int_equal(s->n_failed, all.n_failed);
    const double sd[] = {s->send_duration, s->achieved_rate, s->input_tokens_per_sec, s->output_tokens_per_sec,
                         s->total_tokens_per_sec, s->requests_per_sec, s->total_time};
    const double ad[] = {all.send_duration, all.achieved_rate, all.input_tokens_per_sec, all.output_tokens_per_sec,
                         all.total_tokens_per_sec, all.requests_per_sec, all.total_time};
    assert_memory_equal(sd, ad, sizeof sd);
    const uint64_t su[] = {s->input_tokens, s->output_tokens, s->cached_tokens, s->preemptions};
    const uint64_t au[] = {all.input_tokens, all.output_tokens, all.cached_tokens, all.preemptions};
    assert_memory_equal(su, au, sizeof su);
    same_block(&s->schedule_delay, &all.schedule_delay);
    same_block(&s->request_latency, &all.request_latency);
    same_block(&s->ntpot, &all.ntpot);
    same_block(&s->tpot, &all.tpot);
    same_block(&s->ttft, &all.ttft);
    same_block(&s->itl, &all.itl);
    same_block(&s->prompt_len, &all.prompt_len);
    same_block(&s->output_len, &all.output_len);
    same_block(&s->fail_request_latency, &all.fail_request_latency);
    same_block(&s->fail_prompt_len, &all.fail_prompt_len);
    near(s->itl.v[STATS_MEAN], 0.4 / 3);
    lc_run_free(&r);

    /* Two stages: neither holds every request, and the summary is its own. */
    assert_int_equal(lc_run_compute(&fixture, &r, NULL), KV_OK);
    assert_int_equal(r.summary.count, 4);
    near(r.summary.itl.v[STATS_MAX], 0.5);
    lc_run_free(&r);
}

static char *emit(int (*fn)(FILE *, const json_t *, kv_err *), const json_t *v)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(fn(f, v, NULL), KV_OK);
    fclose(f);
    return buf;
}

/* Same keys, same order, same JSON types (null allowed either side for a block). */
static void same_shape(const json_t *a, const json_t *b, const char *path)
{
    if (json_is_null(a) || json_is_null(b))
        return;
    if (json_is_number(a) && json_is_number(b))
        return;
    if (json_typeof(a) != json_typeof(b))
        fail_msg("%s: type %d vs %d", path, json_typeof(a), json_typeof(b));
    if (!json_is_object(a))
        return;
    void *ia = json_object_iter((json_t *)a), *ib = json_object_iter((json_t *)b);
    while (ia && ib) {
        const char *ka = json_object_iter_key(ia), *kb = json_object_iter_key(ib);
        if (strcmp(ka, kb))
            fail_msg("%s: key '%s' where the example has '%s'", path, ka, kb);
        char sub[512];
        snprintf(sub, sizeof sub, "%s.%s", path, ka);
        same_shape(json_object_iter_value(ia), json_object_iter_value(ib), sub);
        ia = json_object_iter_next((json_t *)a, ia);
        ib = json_object_iter_next((json_t *)b, ib);
    }
    if (ia || ib)
        fail_msg("%s: key count differs from the example", path);
}

static json_t *load_example(const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "tests/data/inference-perf/%s", name);
    json_error_t je;
    json_t *v = json_load_file(path, 0, &je);
    if (!v)
        fail_msg("%s:%d: %s", path, je.line, je.text);
    return v;
}

static void test_json_shape_matches_inference_perf(void **state)
{
    (void)state;
    lc_run r;
    assert_int_equal(lc_run_compute(&fixture, &r, NULL), KV_OK);
    const char *names[] = {"stage_0_lifecycle_metrics.json", "summary_lifecycle_metrics.json"};
    const lc_metrics *ms[] = {&r.stages[0], &r.summary};
    for (int i = 0; i < 2; i++) {
        json_t *tree = report_lifecycle_json(ms[i]);
        char *text = emit(pyemit_json, tree);
        json_error_t je;
        json_t *back = json_loads(text, 0, &je);
        assert_non_null(back);
        json_t *example = load_example(names[i]);
        same_shape(back, example, names[i]);
        /* values survive the text round trip exactly; the summary has no rates */
        json_t *ar = json_object_get(json_object_get(back, "load_summary"), "achieved_rate");
        if (i == 0)
            assert_true(json_real_value(ar) == ms[i]->achieved_rate);
        else
            assert_null(ar);
        json_t *lat = json_object_get(json_object_get(back, "successes"), "latency");
        assert_true(json_real_value(json_object_get(json_object_get(lat, "inter_token_latency"), "mean")) ==
                    ms[i]->itl.v[STATS_MEAN]);
        assert_int_equal(json_integer_value(json_object_get(json_object_get(back, "failures"), "count")), 1);
        /* indent 2, no trailing newline, like json.dumps(indent=2) */
        assert_true(!strncmp(text, "{\n  \"load_summary\": {\n    \"count\": ", 35));
        assert_true(text[strlen(text) - 1] == '}');
        json_decref(example);
        json_decref(back);
        json_decref(tree);
        free(text);
    }
    lc_run_free(&r);
}

static char *strip_ws(const char *s)
{
    char *o = malloc(strlen(s) + 1), *p = o;
    for (; *s; s++)
        if (*s != ' ' && *s != '\n')
            *p++ = *s;
    *p = 0;
    return o;
}

/* Every float in the real report was written by Python's repr; re-emitting the parsed
 * file must reproduce each one character for character. */
static void test_floats_spelled_like_python(void **state)
{
    (void)state;
    const char *names[] = {"stage_0_lifecycle_metrics.json", "summary_lifecycle_metrics.json"};
    for (int i = 0; i < 2; i++) {
        char path[256];
        snprintf(path, sizeof path, "tests/data/inference-perf/%s", names[i]);
        FILE *f = fopen(path, "r");
        assert_non_null(f);
        char *orig = NULL;
        size_t cap = 0;
        ssize_t n = getdelim(&orig, &cap, '\0', f);
        fclose(f);
        assert_true(n > 0);
        json_t *v = load_example(names[i]);
        char *mine = emit(pyemit_json, v);
        char *a = strip_ws(orig), *b = strip_ws(mine);
        assert_string_equal(b, a);
        free(a), free(b), free(mine), free(orig);
        json_decref(v);
    }
    char buf[32];
    assert_string_equal(pyemit_float_repr(1e-05, buf), "1e-05");
    assert_string_equal(pyemit_float_repr(0.0001, buf), "0.0001");
    assert_string_equal(pyemit_float_repr(1e16, buf), "1e+16");
    assert_string_equal(pyemit_float_repr(1234567890123456.0, buf), "1234567890123456.0");
    assert_string_equal(pyemit_float_repr(0.1 + 0.2, buf), "0.30000000000000004");
    assert_string_equal(pyemit_float_repr(-0.0, buf), "-0.0");
    assert_string_equal(pyemit_float_repr(196.0, buf), "196.0");
}

static void test_benchmark_report_v01_mapping(void **state)
{
    (void)state;
    lc_run r;
    assert_int_equal(lc_run_compute(&fixture, &r, NULL), KV_OK);
    report_opts o;
    report_opts_default(&o);
    o.model_name = "Qwen/Qwen3-32B";
    json_t *br = report_benchmark_v01(&r.stages[0], &o);
    assert_string_equal(json_string_value(json_object_get(br, "version")), "0.1");
    json_t *met = json_object_get(br, "metrics");
    /* time.duration is load_summary.send_duration, not total_time */
    assert_true(json_real_value(json_object_get(json_object_get(met, "time"), "duration")) == r.stages[0].send_duration);
    json_t *req = json_object_get(met, "requests");
    assert_int_equal(json_integer_value(json_object_get(req, "total")), 3);
    assert_int_equal(json_integer_value(json_object_get(req, "failures")), 1);
    json_t *il = json_object_get(req, "input_length");
    assert_string_equal(json_string_value(json_object_get(il, "units")), "count");
    assert_true(json_real_value(json_object_get(il, "p50")) == r.stages[0].prompt_len.v[STATS_MEDIAN]);
    assert_null(json_object_get(il, "median"));
    json_t *lat = json_object_get(met, "latency");
    json_t *ttft = json_object_get(lat, "time_to_first_token");
    assert_string_equal(json_string_value(json_object_get(ttft, "units")), "s");
    assert_true(json_real_value(json_object_get(ttft, "p0p1")) == r.stages[0].ttft.v[STATS_P0_1]);
    assert_true(json_real_value(json_object_get(ttft, "p99p9")) == r.stages[0].ttft.v[STATS_P99_9]);
    assert_string_equal(json_string_value(json_object_get(json_object_get(lat, "inter_token_latency"), "units")),
                        "s/token");
    json_t *thr = json_object_get(met, "throughput");
    assert_null(json_object_get(thr, "input_tokens_per_sec"));
    assert_true(json_real_value(json_object_get(thr, "requests_per_sec")) == r.stages[0].requests_per_sec);
    json_t *sc = json_object_get(br, "scenario");
    assert_string_equal(json_string_value(json_object_get(json_object_get(sc, "model"), "name")), "Qwen/Qwen3-32B");
    json_t *load = json_object_get(sc, "load");
    assert_string_equal(json_string_value(json_object_get(load, "name")), "inference-perf");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(load, "metadata"), "stage")), 0);
    assert_null(json_object_get(load, "args"));

    /* yaml.dump sorts keys: metrics < scenario < version; within a block max, mean, min,
     * p0p1, p1, p10, ... units. */
    char *y = emit(pyemit_yaml, br);
    char *pm = strstr(y, "metrics:\n"), *ps = strstr(y, "\nscenario:\n"), *pv = strstr(y, "\nversion: '0.1'\n");
    assert_true(pm == y && ps && pv && ps < pv);
    assert_non_null(strstr(y, "    time_to_first_token:\n      max: "));
    char *p1 = strstr(y, "      p1: "), *p10 = strstr(y, "      p10: "), *p5 = strstr(y, "      p5: ");
    assert_true(p1 && p10 && p5 && p1 < p10 && p10 < p5);
    assert_non_null(strstr(y, "      units: s/token\n"));
    assert_non_null(strstr(y, "    name: Qwen/Qwen3-32B\n"));
    free(y);
    json_decref(br);
    lc_run_free(&r);
}

/* PyYAML's layout on a hand tree; the expected text is what yaml.dump(d, indent=2)
 * prints for d = {'h': {'i': 's/token'}, 'a': [1, {'c': 1e-05, 'b': 'x'}, [2, 3]],
 * 'd': {}, 'e': 'true', 'f': '0.1', 'g': None, 'k': "it's", 'l': '', 'm': 'a: b',
 * 'n': 2.5, 'o': True}. */
static void test_yaml_layout_like_pyyaml(void **state)
{
    (void)state;
    json_t *d = json_pack("{s:{s:s}, s:[i, {s:f, s:s}, [i, i]], s:{}, s:s, s:s, s:n, s:s, s:s, s:s, s:f, s:b}",
                          "h", "i", "s/token", "a", 1, "c", 1e-05, "b", "x", 2, 3, "d", "e", "true", "f", "0.1",
                          "g", "k", "it's", "l", "", "m", "a: b", "n", 2.5, "o", 1);
    assert_non_null(d);
    char *y = emit(pyemit_yaml, d);
    assert_string_equal(y, "a:\n"
                           "- 1\n"
                           "- b: x\n"
                           "  c: 1.0e-05\n"
                           "- - 2\n"
                           "  - 3\n"
                           "d: {}\n"
                           "e: 'true'\n"
                           "f: '0.1'\n"
                           "g: null\n"
                           "h:\n"
                           "  i: s/token\n"
                           "k: it's\n"
                           "l: ''\n"
                           "m: 'a: b'\n"
                           "n: 2.5\n"
                           "o: true\n");
    free(y);
    json_decref(d);
}

static void test_yaml_args_typed_like_safe_load(void **state)
{
    (void)state;
    const char *text = "load:\n  type: poisson\n  stages:\n  - {rate: 15, duration: 50}\n  interval: 1.0\n"
                       "  sweep: null\n  flag: yes\n  name: '10'\n";
    yt_doc *doc = yt_load_string(text, strlen(text), "args.yaml", NULL);
    assert_non_null(doc);
    json_t *j = report_yaml_to_json(yt_root(doc));
    json_t *load = json_object_get(j, "load");
    assert_true(json_is_integer(json_object_get(json_array_get(json_object_get(load, "stages"), 0), "rate")));
    assert_true(json_is_real(json_object_get(load, "interval")));
    assert_true(json_is_null(json_object_get(load, "sweep")));
    assert_true(json_is_true(json_object_get(load, "flag")));
    assert_true(json_is_string(json_object_get(load, "name")));
    char *y = emit(pyemit_yaml, j);
    assert_string_equal(y, "load:\n  flag: true\n  interval: 1.0\n  name: '10'\n  stages:\n  - duration: 50\n"
                           "    rate: 15\n  sweep: null\n  type: poisson\n");
    free(y);
    json_decref(j);
    yt_free(doc);
}

static char *slurp(const char *path, size_t *len);

/* json.dumps escapes (ensure_ascii) and PyYAML's quoting for what plain style cannot carry. */
static void test_string_escapes(void **state)
{
    (void)state;
    json_t *j = json_pack("[s]", "a\"b\\c\n\x01\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    char *t = emit(pyemit_json, j);
    assert_string_equal(t, "[\n  \"a\\\"b\\\\c\\n\\u0001\\u00e9\\u20ac\\ud83d\\ude00\"\n]");
    free(t);
    json_decref(j);
    j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "u", "\xc3\xa9\xe2\x82\xac", "dash", "- x", "hash",
                  "#x", "yes", "yes", "num", "12", "lead", " x", "url", "http://gw:80/v1");
    t = emit(pyemit_yaml, j);
    assert_string_equal(t, "dash: '- x'\nhash: '#x'\nlead: ' x'\nnum: '12'\nu: \"\\xE9\\u20AC\"\n"
                           "url: http://gw:80/v1\n'yes': 'yes'\n");
    free(t);
    json_decref(j);
}

static void test_config_yaml_keeps_order(void **state)
{
    (void)state;
    const char *text = "load:\n  type: poisson\n  stages:\n  - {rate: 15, duration: 50}\ndata:\n  type: random\n";
    yt_doc *doc = yt_load_string(text, strlen(text), "w.yaml", NULL);
    assert_non_null(doc);
    char d[] = "/tmp/test_report_cfg_XXXXXX";
    assert_non_null(mkdtemp(d));
    report_opts o;
    report_opts_default(&o);
    o.per_request = false;
    o.load_args = yt_root(doc);
    lc_run r;
    assert_int_equal(lc_run_compute(&fixture, &r, NULL), KV_OK);
    assert_int_equal(report_write_router(&fixture, &r, d, &o, NULL), KV_OK);
    char p[200];
    snprintf(p, sizeof p, "%s/config.yaml", d);
    size_t n;
    char *b = slurp(p, &n);
    b[n] = 0;
    /* yaml.dump(sort_keys=False): load before data, rate before duration */
    assert_string_equal(b, "load:\n  type: poisson\n  stages:\n  - rate: 15\n    duration: 50\ndata:\n  type: random\n");
    free(b);
    /* and the v0.1 report carries the same config, sorted, under scenario.load.args */
    snprintf(p, sizeof p, "%s/benchmark_report,_stage_0_lifecycle_metrics.json.yaml", d);
    b = slurp(p, &n);
    b[n] = 0;
    assert_non_null(strstr(b, "  load:\n    args:\n      data:\n        type: random\n      load:\n        stages:\n"
                              "        - duration: 50\n          rate: 15\n        type: poisson\n    metadata:\n"
                              "      stage: 0\n    name: inference-perf\n"));
    free(b);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    assert_int_equal(system(cmd), 0);
    lc_run_free(&r);
    yt_free(doc);
}

static void test_per_request_records(void **state)
{
    (void)state;
    report_opts o;
    report_opts_default(&o);
    json_t *a = report_per_request_json(&fixture, &o);
    assert_int_equal(json_array_size(a), 4);
    json_t *r0 = json_array_get(a, 0);
    assert_true(json_real_value(json_object_get(r0, "start_time")) == 1.0);
    assert_true(json_real_value(json_object_get(r0, "end_time")) == 2.0);
    json_t *info = json_object_get(r0, "info");
    assert_int_equal(json_integer_value(json_object_get(info, "input_tokens")), 100);
    assert_null(json_object_get(info, "output_token_times")); /* off by default */
    json_t *req = json_loads(json_string_value(json_object_get(r0, "request")), 0, NULL);
    assert_string_equal(json_string_value(json_object_get(req, "model")), "unknown");
    json_decref(req);
    assert_true(json_is_null(json_object_get(r0, "error")));
    assert_true(json_is_object(json_object_get(json_array_get(a, 2), "error")));
    json_decref(a);
    o.token_times = true;
    a = report_per_request_json(&fixture, &o);
    json_t *tt = json_object_get(json_object_get(json_array_get(a, 0), "info"), "output_token_times");
    assert_int_equal(json_array_size(tt), 3);
    assert_true(json_real_value(json_array_get(tt, 2)) == 1.8);
    json_decref(a);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* The per-request file, written item by item, is byte for byte pyemit_json of the whole
 * tree (with and without token times; an empty run too). */
static void test_per_request_file_streamed(void **state)
{
    (void)state;
    char d[] = "/tmp/test_report_pr_XXXXXX";
    assert_non_null(mkdtemp(d));
    lc_run r;
    assert_int_equal(lc_run_compute(&fixture, &r, NULL), KV_OK);
    sim_run empty = fixture;
    empty.n_requests = 0;
    for (int k = 0; k < 3; k++) {
        const sim_run *run = k == 2 ? &empty : &fixture;
        report_opts o;
        report_opts_default(&o);
        o.token_times = k == 1;
        assert_int_equal(report_write_router(run, &r, d, &o, NULL), KV_OK);
        char p[200], *want = NULL;
        size_t n, wn = 0;
        snprintf(p, sizeof p, "%s/per_request_lifecycle_metrics.json", d);
        char *b = slurp(p, &n);
        FILE *f = open_memstream(&want, &wn);
        json_t *tree = report_per_request_json(run, &o);
        assert_int_equal(pyemit_json(f, tree, NULL), KV_OK);
        fclose(f);
        json_decref(tree);
        assert_int_equal(n, wn);
        assert_memory_equal(b, want, n);
        free(b);
        free(want);
    }
    lc_run_free(&r);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    assert_int_equal(system(cmd), 0);
}

static void test_files_byte_identical_across_writes(void **state)
{
    (void)state;
    char d1[] = "/tmp/test_report_XXXXXX", d2[] = "/tmp/test_report_XXXXXX";
    assert_non_null(mkdtemp(d1));
    assert_non_null(mkdtemp(d2));
    char o1[300], o2[300];
    snprintf(o1, sizeof o1, "%s/rr", d1);
    snprintf(o2, sizeof o2, "%s/rr", d2);
    report_opts o;
    report_opts_default(&o);
    for (int k = 0; k < 2; k++) {
        lc_run r;
        assert_int_equal(lc_run_compute(&fixture, &r, NULL), KV_OK);
        assert_int_equal(report_write_router(&fixture, &r, k ? o2 : o1, &o, NULL), KV_OK);
        lc_run_free(&r);
    }
    const char *files[] = {"stage_0_lifecycle_metrics.json", "stage_1_lifecycle_metrics.json",
                           "summary_lifecycle_metrics.json", "per_request_lifecycle_metrics.json",
                           "benchmark_report,_stage_0_lifecycle_metrics.json.yaml",
                           "benchmark_report,_stage_1_lifecycle_metrics.json.yaml"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char p1[400], p2[400];
        snprintf(p1, sizeof p1, "%s/%s", o1, files[i]);
        snprintf(p2, sizeof p2, "%s/%s", o2, files[i]);
        size_t n1, n2;
        char *b1 = slurp(p1, &n1), *b2 = slurp(p2, &n2);
        assert_true(n1 > 0);
        assert_true(n1 == n2 && memcmp(b1, b2, n1) == 0);
        free(b1), free(b2);
        unlink(p1), unlink(p2);
    }
    rmdir(o1), rmdir(o2), rmdir(d1), rmdir(d2);

    kv_err e = {0};
    lc_run r;
    assert_int_equal(lc_run_compute(&fixture, &r, NULL), KV_OK);
    assert_int_equal(report_write_router(&fixture, &r, "/proc/no/such/dir", &o, &e), KV_EIO);
    assert_non_null(strstr(e.msg, "/proc/no"));
    lc_run_free(&r);
}

static void test_bad_records_rejected(void **state)
{
    (void)state;
    sim_request_record bad = recs[0];
    bad.t_end = bad.t_start - 1;
    sim_run run = fixture;
    run.requests = &bad;
    run.n_requests = 1;
    kv_err e = {0};
    lc_metrics m;
    assert_int_equal(lc_compute(&run, 0, &m, &e), KV_EINVAL);
    assert_non_null(strstr(e.msg, "request 0"));
}

/* Gaps are summarised as 32-bit microseconds until one does not fit (a token_times
 * record can hold a 71-minute stall); then the set moves to seconds. Either way the ITL
 * block is the gaps' own: here 1 s, 2 s, 5,000 s (over 2^32 us) and 1 s again. */
static void test_itl_gap_past_32_bits(void **state)
{
    (void)state;
    const sim_time S = SIM_US_PER_S;
    static sim_time times[5];
    times[0] = 10 * S, times[1] = 11 * S, times[2] = 13 * S, times[3] = 5013 * S, times[4] = 5014 * S;
    sim_request_record r = {.id = 0, .stage = 0, .t_scheduled = 0, .t_start = 0, .t_first_token = times[0],
                            .t_end = times[4], .prompt_tokens = 10, .output_tokens = 4, .token_times = times,
                            .n_token_times = 5};
    sim_run run = fixture;
    run.requests = &r;
    run.n_requests = 1;
    lc_metrics m;
    assert_int_equal(lc_compute(&run, 0, &m, NULL), KV_OK);
    assert_true(m.itl.valid);
    assert_true(m.itl.v[STATS_MIN] == 1.0 && m.itl.v[STATS_MAX] == 5000.0);
    assert_true(m.itl.v[STATS_MEAN] == 5004.0 / 4);
    assert_true(m.itl.v[STATS_MEDIAN] == 1.5);
    times[3] = 14 * S, times[4] = 15 * S;        /* all gaps fit: the microsecond path */
    r.t_end = times[4];
    assert_int_equal(lc_compute(&run, 0, &m, NULL), KV_OK);
    assert_true(m.itl.v[STATS_MAX] == 2.0 && m.itl.v[STATS_MEAN] == 5.0 / 4 && m.itl.v[STATS_MEDIAN] == 1.0);
}

/* The reference model of the ITL block: every set's gaps gathered in record order as
 * seconds, the values secs() gives, and summarized by stats_summarize (sort-free NumPy).
 * lc_compute streams the gaps from the token times and counts them instead; every key
 * must be bit-identical, for each stage and the summary of a run whose records are in the
 * cluster driver's stepped form (runs of their server's step times, broken every fifth
 * token by a step they skip; one with a falling time: a negative gap) or token_times (one
 * with a gap past 32 bits), with failures, stages that interleave, requests of a stage the
 * stage list lacks, and a listed stage with no requests. */
static void test_itl_streamed_equals_gathered(void **state)
{
    (void)state;
    enum { N = 300, T = 300, BREAK = 5 };
    static sim_time times[N][T];
    static sim_time steps[N][T + T / BREAK];
    static sim_server_steps servers[N];
    static sim_token_run runs[N * (T / BREAK)];
    static sim_request_record r[N];
    static double gaps[N * T];
    static sim_stage_info st[] = {{.index = 0, .rate = 1}, {.index = 1, .rate = 2}, {.index = 2, .rate = 3},
                                  {.index = 7, .rate = 4}};
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (int layout = 0; layout < 2; layout++) {
        for (int i = 0; i < N; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            uint32_t k = 1 + (uint32_t)(x % (T - 1));
            sim_time start = (sim_time)i * 100000;
            r[i] = (sim_request_record){.id = (uint64_t)i, .t_scheduled = start, .t_start = start,
                                        .prompt_tokens = 100, .output_tokens = k, .endpoint = i,
                                        .prefix_group = UINT32_MAX};
            r[i].stage = layout == 0 ? i * 4 / N : (int)(x >> 40) % 4;   /* 3: not in the stage list */
            sim_time t = start;
            for (uint32_t j = 0; j < k; j++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                t += x % 10 == 0 ? 1000000 + (sim_time)(x % 3000000) : 1000 + (sim_time)(x % 90000);
                times[i][j] = t;
            }
            r[i].n_token_times = k;
            r[i].failed = i % 37 == 5;
        }
        assert_true(r[11].n_token_times > 2 && r[20].n_token_times > 3);
        times[11][2] = times[11][1] - 1;                             /* a falling time */
        sim_time gap20 = times[20][3] - times[20][2];
        for (uint32_t j = 3; j < r[20].n_token_times; j++)
            times[20][j] += 5000 * SIM_US_PER_S;                     /* a gap past 2^32 us */
        size_t n_runs = 0;
        for (int i = 0; i < N; i++) {
            uint32_t k = r[i].n_token_times;
            r[i].t_first_token = times[i][0];
            r[i].t_end = times[i][k - 1];
            if (i % 2 == 0 || k < 2) {
                r[i].token_times = times[i];
                continue;
            }
            /* the last time is [DONE], t_end; the others are steps of server i */
            sim_server_steps *sv = &servers[i];
            sv->t = steps[i], sv->n = 0;
            uint32_t *link = &r[i].more;
            for (uint32_t j = 0; j + 1 < k; j++) {
                if (j % BREAK == 0 && j > 0)
                    sv->t[sv->n++] = times[i][j - 1];                /* a step it skips */
                if (j == 0) {
                    r[i].step0 = (uint32_t)sv->n;
                } else if (j % BREAK == 0) {
                    runs[n_runs] = (sim_token_run){.step = (uint32_t)sv->n};
                    *link = (uint32_t)++n_runs;
                    link = &runs[n_runs - 1].next;
                }
                if (j < BREAK)
                    r[i].run0++;
                else
                    runs[n_runs - 1].len++;
                sv->t[sv->n++] = times[i][j];
            }
        }
        sim_run run = fixture;
        run.requests = r, run.n_requests = N, run.stages = st, run.n_stages = 4;
        run.servers = servers, run.n_servers = N, run.token_runs = runs, run.n_token_runs = n_runs;
        for (int i = 0; i < N; i++)
            for (uint32_t j = 0; j < r[i].n_token_times && r[i].n_token_times > 1; j++)
                assert_int_equal(sim_token_time(&run, &r[i], j), times[i][j]);
        lc_run all;
        assert_int_equal(lc_run_compute(&run, &all, NULL), KV_OK);
        for (int set = 0; set <= 4; set++) {
            int stage = set < 4 ? st[set].index : -1;
            size_t n = 0;
            for (int i = 0; i < N; i++) {
                if ((stage >= 0 && r[i].stage != stage) || r[i].failed || r[i].n_token_times < 2)
                    continue;
                for (uint32_t j = 1; j < r[i].n_token_times; j++)
                    gaps[n++] = (double)(times[i][j] - times[i][j - 1]) / SIM_US_PER_S;
            }
            stats_block want;
            stats_summarize(gaps, n, &want);
            const stats_block *got = set < 4 ? &all.stages[set].itl : &all.summary.itl;
            assert_int_equal(got->valid, want.valid);
            for (int key = 0; want.valid && key < STATS_NKEYS; key++)
                assert_memory_equal(&got->v[key], &want.v[key], sizeof want.v[key]);
        }
        assert_true(all.summary.itl.v[STATS_MAX] == 5000.0 + (double)gap20 / SIM_US_PER_S);
        assert_true(all.summary.itl.v[STATS_MIN] == -1e-6);
        assert_false(all.stages[3].itl.valid);
        lc_run_free(&all);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stage_definitions),
        cmocka_unit_test(test_summary_spans_all_stages),
        cmocka_unit_test(test_one_stage_summary_is_the_stage),
        cmocka_unit_test(test_json_shape_matches_inference_perf),
        cmocka_unit_test(test_floats_spelled_like_python),
        cmocka_unit_test(test_benchmark_report_v01_mapping),
        cmocka_unit_test(test_yaml_layout_like_pyyaml),
        cmocka_unit_test(test_yaml_args_typed_like_safe_load),
        cmocka_unit_test(test_string_escapes),
        cmocka_unit_test(test_config_yaml_keeps_order),
        cmocka_unit_test(test_per_request_records),
        cmocka_unit_test(test_per_request_file_streamed),
        cmocka_unit_test(test_files_byte_identical_across_writes),
        cmocka_unit_test(test_bad_records_rejected),
        cmocka_unit_test(test_itl_gap_past_32_bits),
        cmocka_unit_test(test_itl_streamed_equals_gathered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
