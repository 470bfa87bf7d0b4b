/* test_workload: the workload generator against inference-perf's rules (spec
 * docs/upstream/inference-perf.md §1-2): request counts int(rate*duration), Poisson windows whose
 * last arrival lands on the window's end, constant gaps summing to the duration,
 * every stage restarting at prompt 0, the shuffle being a permutation, shared prefixes,
 * length distributions, re-tokenisation drift, trace files, and parse errors; the
 * counted output tokens of output_retokenize follow their inverse CDF. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <math.h>

#include "rng.h"
#include "workload.h"

static int parse(const char *yaml, wl_spec *s, kv_err *err)
{
    yt_doc *d = yt_load_string(yaml, strlen(yaml), "t.yaml", err);
    assert_non_null(d);
    int rc = wl_parse(d, yt_get(yt_root(d), "workload"), "/tmp", NULL, NULL, s, err);
    yt_free(d);
    return rc;
}

static workload *build(const char *yaml, uint64_t seed)
{
    wl_spec s;
    kv_err e = {0};
    int rc = parse(yaml, &s, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(rc, KV_OK);
    workload *w = wl_build(&s, seed, &e);
    if (!w) fprintf(stderr, "%s\n", e.msg);
    assert_non_null(w);
    wl_spec_free(&s);
    return w;
}

static const char *LADDER =
    "workload:\n"
    "  data: {type: shared_prefix, shared_prefix: {num_groups: 150, num_prompts_per_group: 5,\n"
    "         system_prompt_len: 60, question_len: 12, output_len: 10, enable_multi_turn_chat: false}}\n"
    "  load:\n"
    "    type: poisson\n"
    "    stages: [{rate: 15, duration: 50}, {rate: 3, duration: 20}, {rate: 10, duration: 20},\n"
    "      {rate: 15, duration: 20}, {rate: 20, duration: 38}, {rate: 22, duration: 34},\n"
    "      {rate: 25, duration: 30}, {rate: 30, duration: 25}, {rate: 35, duration: 21},\n"
    "      {rate: 40, duration: 38}, {rate: 43, duration: 36}, {rate: 46, duration: 33},\n"
    "      {rate: 49, duration: 30}, {rate: 52, duration: 29}, {rate: 55, duration: 27},\n"
    "      {rate: 57, duration: 26}, {rate: 60, duration: 25}]\n";

/* The per-stage counts of the guide's ladder (docs/upstream/inference-perf.md §6), and their total. */
static void test_ladder_counts(void **state)
{
    (void)state;
    workload *w = build(LADDER, 1);
    static const uint32_t want[] = {750, 60, 200, 300, 760, 748, 750, 750, 735, 1520, 1548, 1518, 1470, 1508,
                                    1485, 1482, 1500};
    assert_int_equal(w->n_stages, 17);
    for (size_t i = 0; i < 17; i++)
        assert_int_equal(w->stages[i].n_requests, want[i]);
    assert_int_equal(wl_total_requests(w), 17084);
    assert_int_equal(w->interval, 1000000);      /* default interval 1.0 s */
    wl_free(w);
}

/* Every non-empty one-second window ends exactly on its last arrival (gaps normalised to
 * 1 s), windows are whole seconds, arrivals never go backwards, and the mean per window
 * is near the rate. */
static void test_poisson_windows(void **state)
{
    (void)state;
    uint32_t n = 1500;
    sim_time *t = malloc(n * sizeof *t);
    assert_int_equal(wl_poisson_offsets(60, n, 12345, t), KV_OK);
    uint32_t windows = 0;
    for (uint32_t i = 0; i < n; i++) {
        assert_true(t[i] > 0);
        if (i) assert_true(t[i] >= t[i - 1]);
        sim_time w = (t[i] + SIM_US_PER_S - 1) / SIM_US_PER_S;   /* arrival in (w-1, w] s */
        bool last_in_window = i + 1 == n || (t[i + 1] + SIM_US_PER_S - 1) / SIM_US_PER_S != w;
        if (last_in_window && i + 1 < n) {
            assert_int_equal(t[i], w * SIM_US_PER_S);            /* lands on the window's end */
            windows++;
        }
    }
    /* 1500 arrivals at 60/s: about 25 windows (the guide's send_duration was 24.92 s). */
    assert_true(windows >= 22 && windows <= 27);
    sim_time span = t[n - 1];
    assert_true(span > 22 * SIM_US_PER_S && span <= 27 * SIM_US_PER_S);
    /* same seed, same arrivals; another seed, others */
    sim_time *u = malloc(n * sizeof *u);
    assert_int_equal(wl_poisson_offsets(60, n, 12345, u), KV_OK);
    assert_memory_equal(t, u, n * sizeof *t);
    assert_int_equal(wl_poisson_offsets(60, n, 54321, u), KV_OK);
    assert_true(memcmp(t, u, n * sizeof *t) != 0);
    free(t);
    free(u);
}

static void test_constant_gaps(void **state)
{
    (void)state;
    uint32_t n = 30;
    sim_time t[30];
    assert_int_equal(wl_constant_offsets(1, 30, n, 9, t), KV_OK);
    for (uint32_t i = 1; i < n; i++)
        assert_true(t[i] >= t[i - 1]);
    assert_true(t[0] > 0);
    assert_int_equal(t[n - 1], 30 * SIM_US_PER_S);      /* the gaps sum to the duration */
}

/* Prompts: a permutation of groups x questions; prompts of a group share exactly the
 * system prompt; request i uses prompt i mod N and each stage restarts at prompt 0. */
static void test_shared_prefix_prompts(void **state)
{
    (void)state;
    workload *w = build("workload:\n"
                        "  data: {type: shared_prefix, shared_prefix: {num_groups: 7, num_prompts_per_group: 3,\n"
                        "         system_prompt_len: 100, question_len: 20, output_len: 5}}\n"
                        "  load: {type: constant, stages: [{rate: 10, duration: 3}, {rate: 5, duration: 2}]}\n",
                        77);
    assert_int_equal(w->n_prompts, 21);
    int per_group[7] = {0};
    bool shuffled = false;
    for (size_t i = 0; i < 21; i++) {
        const wl_prompt *p = &w->prompts[i];
        assert_int_equal(p->n_tokens, 120);
        assert_int_equal(p->n_output, 5);
        assert_true(p->group < 7);
        per_group[p->group]++;
        if (i && p->group < w->prompts[i - 1].group) shuffled = true;
        for (uint32_t k = 0; k < p->n_tokens; k++) assert_true(p->tokens[k] < w->spec.vocab);
        for (size_t j = 0; j < i; j++) {
            const wl_prompt *q = &w->prompts[j];
            if (q->group == p->group) {
                assert_memory_equal(p->tokens, q->tokens, 100 * sizeof(uint32_t));
                assert_true(memcmp(p->tokens + 100, q->tokens + 100, 20 * sizeof(uint32_t)) != 0);
            } else {
                assert_true(memcmp(p->tokens, q->tokens, 64 * sizeof(uint32_t)) != 0);
            }
        }
    }
    for (int g = 0; g < 7; g++)
        assert_int_equal(per_group[g], 3);
    assert_true(shuffled);
    assert_int_equal(w->stages[0].n_requests, 30);
    assert_int_equal(w->stages[1].n_requests, 10);
    wl_req a, b;
    for (uint64_t i = 0; i < 30; i++) {
        assert_int_equal(wl_request(w, 0, i, &a, NULL), KV_OK);
        assert_ptr_equal(a.tokens, w->prompts[i % 21].tokens);
        assert_null(a.owned);
        if (i < 10) {
            assert_int_equal(wl_request(w, 1, i, &b, NULL), KV_OK);
            assert_ptr_equal(a.tokens, b.tokens);        /* stage 1 replays from prompt 0 */
        }
    }
    assert_int_equal(wl_request(w, 1, 10, &b, NULL), KV_ERANGE);
    wl_free(w);
}

/* Drift: the prefix of a group stays identical across its prompts, and lengths spread
 * around nominal*(1+mean), within +- spread. */
static void test_retokenize_drift(void **state)
{
    (void)state;
    workload *w = build("workload:\n"
                        "  data: {type: shared_prefix, shared_prefix: {num_groups: 150, num_prompts_per_group: 5,\n"
                        "         system_prompt_len: 6000, question_len: 1200, output_len: 1000}}\n"
                        "  load: {type: poisson, stages: [{rate: 1, duration: 1}]}\n"
                        "  retokenize: {mean: 0.0533, spread: 0.012}\n",
                        42);
    double sum = 0;
    uint32_t lo = UINT32_MAX, hi = 0;
    for (size_t i = 0; i < w->n_prompts; i++) {
        uint32_t n = w->prompts[i].n_tokens;
        sum += n;
        lo = n < lo ? n : lo;
        hi = n > hi ? n : hi;
        assert_true(n >= (uint32_t)(7200 * (1 + 0.0533 - 0.012)) - 2);
        assert_true(n <= (uint32_t)(7200 * (1 + 0.0533 + 0.012)) + 2);
    }
    double mean = sum / (double)w->n_prompts;
    assert_true(mean > 7550 && mean < 7620);            /* the guide: 7584 */
    assert_true(hi - lo > 100);                         /* the guide: 7515-7689 */
    wl_free(w);
}

/* random: lengths from normal(mean, std) clipped to [min, max]; request i uses length
 * i mod total_count; tokens are fresh for every request and every stage. */
static void test_random_data(void **state)
{
    (void)state;
    workload *w = build("workload:\n"
                        "  data:\n"
                        "    type: random\n"
                        "    input_distribution: {min: 10, max: 100, mean: 50, std_dev: 10, total_count: 100}\n"
                        "    output_distribution: {min: 10, max: 100, mean: 50, std: 10, total_count: 100}\n"
                        "  load: {type: constant, stages: [{rate: 1, duration: 150}, {rate: 1, duration: 5}]}\n",
                        3);
    double sum = 0;
    for (int i = 0; i < 100; i++) {
        assert_true(w->in_len[i] >= 10 && w->in_len[i] <= 100);
        assert_true(w->out_len[i] >= 10 && w->out_len[i] <= 100);
        sum += (double)w->in_len[i];
    }
    assert_true(sum / 100 > 46 && sum / 100 < 54);
    wl_req a, b, c;
    assert_int_equal(wl_request(w, 0, 3, &a, NULL), KV_OK);
    assert_int_equal(wl_request(w, 0, 103, &b, NULL), KV_OK);
    assert_int_equal(wl_request(w, 1, 3, &c, NULL), KV_OK);
    assert_int_equal(a.n_prompt, w->in_len[3]);
    assert_int_equal(b.n_prompt, w->in_len[3]);
    assert_int_equal(c.n_prompt, w->in_len[3]);
    assert_int_equal(a.n_output, w->out_len[3]);
    assert_true(memcmp(a.tokens, b.tokens, 10 * sizeof(uint32_t)) != 0);
    assert_true(memcmp(a.tokens, c.tokens, 10 * sizeof(uint32_t)) != 0);
    wl_req a2;                                           /* and reproducible */
    assert_int_equal(wl_request(w, 0, 3, &a2, NULL), KV_OK);
    assert_memory_equal(a.tokens, a2.tokens, a.n_prompt * sizeof(uint32_t));
    wl_req_release(&a), wl_req_release(&b), wl_req_release(&c), wl_req_release(&a2);
    wl_free(w);
}

/* rng_fill_below is rng_below k times: the same values, and the stream left where k
 * single draws leave it (wl_request's prompts come from it). */
static void test_rng_fill_below(void **state)
{
    (void)state;
    enum { K = 1000 };
    const uint32_t vocab[] = {151643, 1, 7, UINT32_MAX};
    for (size_t v = 0; v < sizeof vocab / sizeof *vocab; v++) {
        rng one, many;
        rng_seed(&one, 42, RNG_STREAM_TOKENS);
        many = one;
        uint32_t want[K], got[K];
        for (int i = 0; i < K; i++)
            want[i] = (uint32_t)rng_below(&one, vocab[v]);
        rng_fill_below(&many, vocab[v], got, K);
        assert_memory_equal(want, got, sizeof want);
        assert_true(rng_u64(&one) == rng_u64(&many));
        for (int i = 0; i < K; i++)
            assert_true(got[i] < vocab[v]);
    }
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_trace_csv_and_jsonl(void **state)
{
    (void)state;
    char csv[] = "/tmp/kvroute_trace_XXXXXX.csv", jl[] = "/tmp/kvroute_trace_XXXXXX.jsonl";
    int fd = mkstemps(csv, 4);
    close(fd);
    fd = mkstemps(jl, 6);
    close(fd);
    write_file(csv, "timestamp,input_length,output_length,prefix_group,prefix_length\n"
                    "0.5,100,7,1,64\n0.5,80,3,1,64\n2.25,50,2,-1,0\n");
    write_file(jl, "{\"timestamp\": 0.5, \"input_length\": 100, \"output_length\": 7, \"prefix_group\": 1, "
                   "\"prefix_length\": 64}\n{\"timestamp\": 0.5, \"input_length\": 80, \"output_length\": 3, "
                   "\"prefix_group\": 1, \"prefix_length\": 64}\n{\"timestamp\": 2.25, \"input_length\": 50, "
                   "\"output_length\": 2}\n");
    const char *files[] = {csv, jl};
    for (int f = 0; f < 2; f++) {
        char yaml[512];
        snprintf(yaml, sizeof yaml, "workload:\n  data: {type: trace, trace: {file: %s}}\n"
                                    "  load: {type: trace_replay}\n", files[f]);
        workload *w = build(yaml, 5);
        assert_int_equal(w->n_stages, 1);
        assert_int_equal(w->stages[0].n_requests, 3);
        assert_int_equal(w->stages[0].offsets[0], 500000);
        assert_int_equal(w->stages[0].offsets[2], 2250000);
        wl_req a, b, c;
        assert_int_equal(wl_request(w, 0, 0, &a, NULL), KV_OK);
        assert_int_equal(wl_request(w, 0, 1, &b, NULL), KV_OK);
        assert_int_equal(wl_request(w, 0, 2, &c, NULL), KV_OK);
        assert_int_equal(a.n_prompt, 100);
        assert_int_equal(a.n_output, 7);
        assert_int_equal(b.n_prompt, 80);
        assert_int_equal(c.n_output, 2);
        assert_int_equal(c.group, UINT32_MAX);
        assert_memory_equal(a.tokens, b.tokens, 64 * sizeof(uint32_t));      /* the group's prefix */
        assert_true(memcmp(a.tokens + 64, b.tokens + 64, 16 * sizeof(uint32_t)) != 0);
        assert_true(memcmp(a.tokens, c.tokens, 16 * sizeof(uint32_t)) != 0);
        wl_req_release(&a), wl_req_release(&b), wl_req_release(&c);
        wl_free(w);
    }
    /* A bad row is reported with the file and line. */
    write_file(csv, "timestamp,input_length,output_length\n1.0,100,7\n0.5,10,1\n");
    char yaml[512];
    snprintf(yaml, sizeof yaml, "workload:\n  data: {type: trace, trace: {file: %s}}\n"
                                "  load: {type: trace_replay}\n", csv);
    wl_spec s;
    kv_err e = {0};
    assert_int_equal(parse(yaml, &s, &e), KV_OK);
    assert_null(wl_build(&s, 1, &e));
    char want[600];
    snprintf(want, sizeof want, "%s:3: field 'timestamp': 0.5 is earlier than the previous row's 1", csv);
    assert_string_equal(e.msg, want);
    wl_spec_free(&s);
    write_file(csv, "when,input_length\n1,2\n");
    assert_int_equal(parse(yaml, &s, &e), KV_OK);
    assert_null(wl_build(&s, 1, &e));
    snprintf(want, sizeof want, "%s:1: column 'when': unknown (timestamp, input_length, output_length, "
                                "prefix_group, prefix_length)", csv);
    assert_string_equal(e.msg, want);
    wl_spec_free(&s);
    unlink(csv);
    unlink(jl);
}

/* Numbers beyond a column's range, however large, are errors quoting the text as written
 * (they were cast to int64, undefined, and a huge prefix_length read 0); control bytes in
 * echoed text are escaped. Each case: the trace's text, the error after "<file>:". */
static void test_trace_numbers(void **state)
{
    (void)state;
    static const char *const cases[][3] = {
        {".csv", "timestamp,input_length,output_length\n0,1e30,5\n",
         "2: field 'input_length': 1e30 is out of range [1, 10000000]"},
        {".csv", "timestamp,input_length,output_length\n0,99999999999999999999999,5\n",
         "2: field 'input_length': 99999999999999999999999 is out of range [1, 10000000]"},
        {".csv", "timestamp,input_length,output_length\n0,10,-9223372036854775809\n",
         "2: field 'output_length': -9223372036854775809 is out of range [1, 10000000]"},
        {".csv", "timestamp,input_length,output_length,prefix_group,prefix_length\n0,100,5,1,1e30\n",
         "2: field 'prefix_length': 1e30 is out of range [0, 10000000]"},
        {".csv", "timestamp,input_length,output_length,prefix_group\n0,100,5,4294967295\n",
         "2: field 'prefix_group': 4294967295 is out of range [-1, 4294967294]"},
        {".csv", "timestamp,input_length,output_length\n0,nan,5\n", "2: field 'input_length': nan is out of range [1, 10000000]"},
        {".csv", "timestamp,input_length,output_length\n0, ,5\n", "2: column 2: expected a number, got ' '"},
        {".csv", "timestamp,input_length,output_length\n0,1e999,5\n", "2: column 2: expected a number, got '1e999'"},
        {".csv", "timestamp,output_length\n0,5\n", "2: field 'input_length': required"},
        {".csv", "timestamp,in\x1b[31mput\n", "1: column 'in\\x1b[31mput': unknown (timestamp, input_length, "
                                              "output_length, prefix_group, prefix_length)"},
        {".csv", "timestamp,input_length,output_length\n0,10\a\t,5\n", "2: column 2: expected a number, got '10\\x07\\t'"},
        {".jsonl", "{\"timestamp\": 0, \"input_length\": 1e30, \"output_length\": 5}\n",
         "1: field 'input_length': 1e+30 is out of range [1, 10000000]"},
        {".jsonl", "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 5, \"prefix_length\": -3}\n",
         "1: field 'prefix_length': -3 is out of range [0, 10000000]"},
        {".jsonl", "{\"timestamp\": 0, \"in\\u001b[2Jput\": 1}\n", "1: field 'in\\x1b[2Jput': unknown key"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char path[64], yaml[256], want[600];
        snprintf(path, sizeof path, "/tmp/kvroute_trace_XXXXXX%s", cases[i][0]);
        int fd = mkstemps(path, (int)strlen(cases[i][0]));
        close(fd);
        write_file(path, cases[i][1]);
        snprintf(yaml, sizeof yaml, "workload:\n  data: {type: trace, trace: {file: %s}}\n  load: {type: trace_replay}\n",
                 path);
        wl_spec s;
        kv_err e = {0};
        assert_int_equal(parse(yaml, &s, &e), KV_OK);
        assert_null(wl_build(&s, 1, &e));
        snprintf(want, sizeof want, "%s:%s", path, cases[i][2]);
        assert_string_equal(e.msg, want);
        wl_spec_free(&s);
        unlink(path);
    }
    /* a prefix longer than the prompt is the whole prompt, not 0 */
    char path[] = "/tmp/kvroute_trace_XXXXXX.csv", yaml[256];
    close(mkstemps(path, 4));
    write_file(path, "timestamp,input_length,output_length,prefix_group,prefix_length\n0,100,5,1,5000\n");
    snprintf(yaml, sizeof yaml, "workload:\n  data: {type: trace, trace: {file: %s}}\n  load: {type: trace_replay}\n", path);
    workload *w = build(yaml, 1);
    assert_int_equal(w->prompts[0].n_tokens, 100);
    wl_free(w);
    unlink(path);
}

/* A trace that does not exist is the scenario's fault: an error at the field naming it. */
static void test_trace_missing(void **state)
{
    (void)state;
    wl_spec s;
    kv_err e = {0};
    const char *yaml = "workload:\n  data: {type: trace, trace: {file: kvroute-no-such-trace.csv}}\n"
                       "  load: {type: trace_replay}\n";
    assert_int_equal(parse(yaml, &s, &e), KV_EINVAL);
    assert_string_equal(e.msg, "t.yaml:2:37: field 'workload.data.trace.file': cannot open "
                               "'/tmp/kvroute-no-such-trace.csv': No such file or directory");
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* output_retokenize: guide. The guide's published points (quantile, tokens of 1000)
 * are checked against the empirical CDF of 40,000 draws: at each point's value the
 * fraction of draws below and at it brackets the quantile (tolerance 0.01, about 5
 * standard errors); the mean matches the table's piecewise-linear mean (trapezoids,
 * computed here from the published numbers); counts are a pure function of (seed, id). */
static void test_output_retokenize_guide(void **state)
{
    (void)state;
    static const double pts[][2] = {{0, 4}, {0.01, 33}, {0.05, 192.7}, {0.10, 944.9}, {0.25, 992},
                                    {0.50, 998}, {0.75, 1000}, {0.99, 1000}, {1, 1999}};
    const size_t np = sizeof pts / sizeof *pts;
    workload *w = build("workload:\n  data: {type: shared_prefix, shared_prefix: {num_groups: 2, "
                        "num_prompts_per_group: 2, system_prompt_len: 8, question_len: 4, output_len: 1000}}\n"
                        "  load: {stages: [{rate: 1, duration: 4}]}\n  output_retokenize: guide\n", 3);
    enum { N = 40000 };
    uint32_t *c = malloc(N * sizeof *c);
    double sum = 0;
    for (uint32_t i = 0; i < N; i++) {
        c[i] = wl_counted_output(w, i, 1000);
        assert_int_equal(wl_counted_output(w, i, 1000), c[i]);     /* pure */
        sum += c[i];
    }
    qsort(c, N, sizeof *c, cmp_u32);
    assert_true(c[0] >= 4 && c[N - 1] <= 1999);
    for (size_t k = 1; k + 1 < np; k++) {
        uint32_t v = (uint32_t)lround(pts[k][1]);
        size_t below = 0, at = 0;
        for (uint32_t i = 0; i < N; i++) below += c[i] < v, at += c[i] <= v;
        assert_true((double)below / N - 0.01 <= pts[k][0]);
        assert_true((double)at / N + 0.01 >= pts[k][0]);
    }
    double mean = 0;
    for (size_t k = 1; k < np; k++) mean += (pts[k][0] - pts[k - 1][0]) * (pts[k][1] + pts[k - 1][1]) / 2;
    assert_true(fabs(sum / N - mean) < 0.01 * mean);
    assert_true(fabs(sum / N - 936.8) < 0.02 * 936.8);             /* the guide's mean output_length */
    /* the count scales with the generated length; none, zero and another seed */
    assert_int_equal(wl_counted_output(w, 7, 0), 0);
    uint32_t half = wl_counted_output(w, 7, 500), full = wl_counted_output(w, 7, 1000);
    assert_true(abs((int)(2 * half) - (int)full) <= 1);
    workload *w2 = build("workload:\n  data: {type: shared_prefix, shared_prefix: {num_groups: 2, "
                         "num_prompts_per_group: 2, system_prompt_len: 8, question_len: 4, output_len: 1000}}\n"
                         "  load: {stages: [{rate: 1, duration: 4}]}\n", 3);
    size_t differ = 0;
    for (uint32_t i = 0; i < 100; i++) {
        assert_int_equal(wl_counted_output(w2, i, 1000), 1000);       /* off */
        differ += wl_counted_output(w, i, 1000) != wl_counted_output(w, i + 100, 1000);
    }
    assert_true(differ > 50);
    wl_free(w2);
    free(c);
    wl_free(w);
}

/* A custom table: two points give a uniform ratio in [0.5, 1.0). */
static void test_output_retokenize_points(void **state)
{
    (void)state;
    workload *w = build("workload:\n  data: {type: shared_prefix, shared_prefix: {num_groups: 1, "
                        "num_prompts_per_group: 1, system_prompt_len: 8, question_len: 4, output_len: 100}}\n"
                        "  load: {stages: [{rate: 1, duration: 4}]}\n"
                        "  output_retokenize: {points: [[0, 0.5], [1, 1.0]]}\n", 9);
    uint32_t lo = 1000, hi = 0, n_low = 0;
    for (uint32_t i = 0; i < 10000; i++) {
        uint32_t v = wl_counted_output(w, i, 100);
        lo = v < lo ? v : lo, hi = v > hi ? v : hi;
        n_low += v < 75;
    }
    assert_int_equal(lo, 50);
    assert_int_equal(hi, 100);
    assert_true(n_low > 4700 && n_low < 5300);   /* about half below the midpoint */
    wl_free(w);
}

static void expect_error(const char *yaml, const char *msg)
{
    wl_spec s;
    kv_err e = {0};
    assert_int_not_equal(parse(yaml, &s, &e), KV_OK);
    assert_string_equal(e.msg, msg);
}

static void test_parse_errors(void **state)
{
    (void)state;
    expect_error("workload:\n  data: {type: shared_prefix}\n  load: {type: poisson, stages: [{rate: 1, duration: 1}],"
                 " bogus: 1}\n",
                 "t.yaml:3:59: field 'workload.load.bogus': unknown key");
    expect_error("workload:\n  data:\n    type: shared_prefix\n    shared_prefix: {enable_multi_turn_chat: maybe}\n"
                 "  load: {stages: [{rate: 1, duration: 1}]}\n",
                 "t.yaml:4:45: field 'workload.data.shared_prefix.enable_multi_turn_chat': expected true or false, "
                 "got 'maybe'");
    expect_error("workload:\n  data: {type: shared_prefix}\n  load: {type: poisson, stages: [{rate: 1}]}\n",
                 "t.yaml:3:34: field 'workload.load.stages[0].duration': required for load type poisson");
    expect_error("workload:\n  data: {type: sharegpt}\n  load: {stages: [{rate: 1, duration: 1}]}\n",
                 "t.yaml:2:16: field 'workload.data.type': 'sharegpt' is not supported (shared_prefix, random or "
                 "trace)");
    expect_error("workload:\n  data: {type: shared_prefix, shared_prefix: {num_groups: 0}}\n"
                 "  load: {stages: [{rate: 1, duration: 1}]}\n",
                 "t.yaml:2:59: field 'workload.data.shared_prefix.num_groups': 0 is out of range [1, 1000000]");
    expect_error("workload:\n  data: {type: random, input_distribution: {min: 10, max: 5, total_count: 1},"
                 " output_distribution: {total_count: 1}}\n  load: {stages: [{rate: 1, duration: 1}]}\n",
                 "t.yaml:2:44: field 'workload.data.input_distribution': min 10 is greater than max 5");
    expect_error("workload:\n  data: {type: shared_prefix}\n  load: {type: concurrent, stages: [{rate: 1, duration: 1}]}\n",
                 "t.yaml:3:37: field 'workload.load.stages[0].num_requests': required for load type concurrent");
    const char *ld = "workload:\n  data: {type: shared_prefix}\n  load: {stages: [{rate: 1, duration: 1}]}\n";
    char y[512];
    snprintf(y, sizeof y, "%s  output_retokenize: median\n", ld);
    expect_error(y, "t.yaml:4:22: field 'workload.output_retokenize': 'median' is not a built-in table (guide), "
                    "or give {points: [[quantile, ratio], ...]}");
    snprintf(y, sizeof y, "%s  output_retokenize: {points: [[0, 1]]}\n", ld);
    expect_error(y, "t.yaml:4:31: field 'workload.output_retokenize.points': expected a list of 2 to 32 "
                    "[quantile, ratio] pairs");
    snprintf(y, sizeof y, "%s  output_retokenize: {points: [[0, 1], [0.5, 0.9], [1, 2]]}\n", ld);
    expect_error(y, "t.yaml:4:46: field 'workload.output_retokenize.points[1]': ratio 0.9 out of order "
                    "(non-decreasing, in [0, 100])");
    snprintf(y, sizeof y, "%s  output_retokenize: {points: [[0.1, 1], [1, 2]]}\n", ld);
    expect_error(y, "t.yaml:4:33: field 'workload.output_retokenize.points[0]': quantile 0.1 out of order "
                    "(the first is 0, the last 1, increasing between)");
    snprintf(y, sizeof y, "%s  output_retokenize: {points: [[0, 1], [1, 2]], scale: 2}\n", ld);
    expect_error(y, "t.yaml:4:49: field 'workload.output_retokenize.scale': unknown key");
}

/* A pasted inference-perf config: the sections a simulation does not need are noted. */
static void note_count(void *ctx, const char *msg)
{
    (void)msg;
    (*(int *)ctx)++;
}

static void test_pasted_sections_noted(void **state)
{
    (void)state;
    const char *yaml = "workload:\n  api: {type: completion, streaming: true}\n  server: {type: vllm}\n"
                       "  tokenizer: {pretrained_model_name_or_path: Qwen/Qwen3-32B}\n"
                       "  report: {request_lifecycle: {summary: true}}\n  storage: {local_storage: {path: /x}}\n"
                       "  data: {type: shared_prefix}\n"
                       "  load: {type: concurrent, num_workers: 4, stages: [{num_requests: 10, concurrency_level: 2}]}\n";
    kv_err e = {0};
    yt_doc *d = yt_load_string(yaml, strlen(yaml), "t.yaml", &e);
    assert_non_null(d);
    wl_spec s;
    int notes = 0;
    assert_int_equal(wl_parse(d, yt_get(yt_root(d), "workload"), "", note_count, &notes, &s, &e), KV_OK);
    assert_int_equal(notes, 6);
    assert_int_equal(s.load, WL_LOAD_CONCURRENT);
    assert_int_equal(s.stages[0].num_requests, 10);
    assert_int_equal(s.stages[0].concurrency, 2);
    wl_spec_free(&s);
    yt_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ladder_counts),
        cmocka_unit_test(test_poisson_windows),
        cmocka_unit_test(test_constant_gaps),
        cmocka_unit_test(test_shared_prefix_prompts),
        cmocka_unit_test(test_retokenize_drift),
        cmocka_unit_test(test_random_data),
        cmocka_unit_test(test_rng_fill_below),
        cmocka_unit_test(test_trace_csv_and_jsonl),
        cmocka_unit_test(test_trace_missing),
        cmocka_unit_test(test_trace_numbers),
        cmocka_unit_test(test_output_retokenize_guide),
        cmocka_unit_test(test_output_retokenize_points),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_pasted_sections_noted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
