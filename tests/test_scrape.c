/* test_scrape: the /metrics parser on vLLM-shaped bodies (labels, escapes, several series,
 * LoRA info by largest value, cache config, legacy and configured KV metric names, missing
 * and malformed input; NaN, infinite and negative gauges rejected, huge ones clamped),
 * then the poller against a fake vLLM on loopback: values land in the endpoint set,
 * follow changes, a failing endpoint goes stale after 2 s (test clock)
 * and an unreachable one never becomes valid; a pod sending a NaN queue is counted and
 * logged once until it recovers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "endpoints.h"
#include "log.h"
#include "scrape.h"
#include "support/fake_vllm.h"

static const char BODY[] =
    "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
    "# TYPE vllm:num_requests_waiting gauge\n"
    "vllm:num_requests_waiting{engine=\"0\",model_name=\"Qwen/Qwen3-0.6B\"} 4.0\n"
    "vllm:num_requests_waiting{engine=\"1\",model_name=\"Qwen/Qwen3-0.6B\"} 9.0\n"
    "vllm:num_requests_running{engine=\"0\",model_name=\"Qwen/Qwen3-0.6B\"} 12.0\r\n"
    "   vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"a \\\"quoted\\\", b\\\\c\"} 0.375 1700000000000\n"
    "vllm:gpu_cache_usage_perc{engine=\"0\"} 0.99\n"
    "vllm:lora_requests_info{max_lora=\"4\",running_lora_adapters=\"old\",waiting_lora_adapters=\"\"} 1.0e9\n"
    "vllm:lora_requests_info{max_lora=\"4\",running_lora_adapters=\"sql,chat\",waiting_lora_adapters=\"math\"} 1.7e9\n"
    "vllm:lora_requests_info{max_lora=\"4\",running_lora_adapters=\"older\",waiting_lora_adapters=\"\"} 1.2e9\n"
    "vllm:cache_config_info{block_size=\"64\",cache_dtype=\"auto\",num_gpu_blocks=\"27531\"} 1.0\n"
    "process_cpu_seconds_total 12.5\n"
    "vllm:prompt_tokens_total{model_name=\"x\"} NaN\n";

static void test_parse(void **state)
{
    (void)state;
    scrape_sample s;
    kv_err err = {0};
    assert_int_equal(scrape_parse(BODY, strlen(BODY), NULL, &s, &err), KV_OK);
    assert_true(s.m.valid);
    assert_int_equal(s.m.waiting, 4);      /* the first series */
    assert_int_equal(s.m.running, 12);
    assert_true(s.m.kv_usage == 0.375);    /* the current name wins over the legacy one */
    assert_int_equal(s.m.max_lora, 4);
    assert_int_equal(s.m.n_running_loras, 2);
    assert_string_equal(s.m.running_loras[0], "sql");
    assert_string_equal(s.m.running_loras[1], "chat");
    assert_int_equal(s.m.n_waiting_loras, 1);
    assert_string_equal(s.m.waiting_loras[0], "math");
    assert_int_equal(s.m.block_size, 64);
    assert_int_equal(s.m.num_gpu_blocks, 27531);
    scrape_sample_free(&s);

    /* A configured name; the legacy name when the configured one is absent. */
    const char *custom = "vllm:num_requests_waiting 1\nvllm:num_requests_running 2\nmy:kv 0.25\n";
    assert_int_equal(scrape_parse(custom, strlen(custom), "my:kv", &s, NULL), KV_OK);
    assert_true(s.m.kv_usage == 0.25);
    assert_int_equal(s.m.n_running_loras + s.m.n_waiting_loras, 0);
    scrape_sample_free(&s);
    const char *legacy = "vllm:num_requests_waiting 1\nvllm:num_requests_running 2\nvllm:gpu_cache_usage_perc 0.5";
    assert_int_equal(scrape_parse(legacy, strlen(legacy), NULL, &s, NULL), KV_OK);
    assert_true(s.m.kv_usage == 0.5);
    scrape_sample_free(&s);

    /* Missing metrics and malformed lines are errors naming what and where. */
    const char *missing = "vllm:num_requests_waiting 1\nvllm:kv_cache_usage_perc 0.1\n";
    assert_int_equal(scrape_parse(missing, strlen(missing), NULL, &s, &err), KV_ENOTFOUND);
    assert_non_null(strstr(err.msg, "vllm:num_requests_running"));
    const char *bad[] = {
        "vllm:num_requests_waiting 1\nvllm:num_requests_running{a=\"x} 2\n",
        "vllm:num_requests_waiting 1\nvllm:num_requests_running{a=x} 2\n",
        "vllm:num_requests_waiting 1\nvllm:num_requests_running 2x\n",
        "vllm:num_requests_waiting 1\nvllm:num_requests_running\n",
        "vllm:num_requests_waiting 1\n{a=\"b\"} 2\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(scrape_parse(bad[i], strlen(bad[i]), NULL, &s, &err), KV_EPARSE);
        assert_non_null(strstr(err.msg, "line 2"));
    }
    /* Every truncation of a valid body parses or fails cleanly (ASan checks the bounds). */
    for (size_t n = 0; n <= strlen(BODY); n++) {
        char *cut = malloc(n ? n : 1);
        memcpy(cut, BODY, n);
        if (scrape_parse(cut, n, NULL, &s, NULL) == KV_OK)
            scrape_sample_free(&s);
        free(cut);
    }
}

/* A gauge the scheduler reads that is NaN, infinite or negative fails the scrape, naming
 * the line, the metric and the value as the pod wrote it; huge values are clamped. */
static void test_bad_values(void **state)
{
    (void)state;
    static const char *const METRIC[] = {"vllm:num_requests_waiting", "vllm:num_requests_running",
                                         "vllm:kv_cache_usage_perc"};
    static const char *const VALUE[] = {"NaN", "+Inf", "-Inf", "-5", "-0.001", "nan", "-1e400"};
    static const char *const GOOD[] = {"3", "1", "0.5"};
    char body[256], want[128];
    scrape_sample s;
    kv_err err = {0};
    for (size_t m = 0; m < 3; m++)
        for (size_t v = 0; v < sizeof VALUE / sizeof *VALUE; v++) {
            size_t n = 0;
            for (size_t k = 0; k < 3; k++)
                n += (size_t)snprintf(body + n, sizeof body - n, "%s %s\n", METRIC[k], k == m ? VALUE[v] : GOOD[k]);
            assert_int_equal(scrape_parse(body, n, NULL, &s, &err), KV_ERANGE);
            snprintf(want, sizeof want, "/metrics line %zu: %s is %s,", m + 1, METRIC[m], VALUE[v]);
            assert_non_null(strstr(err.msg, want));
        }
    /* the legacy KV name is read under the same rule */
    const char *legacy = "vllm:num_requests_waiting 1\nvllm:num_requests_running 2\nvllm:gpu_cache_usage_perc NaN\n";
    assert_int_equal(scrape_parse(legacy, strlen(legacy), NULL, &s, &err), KV_ERANGE);
    /* (a NaN in a metric nobody reads is no error: BODY has one) */

    const char *huge = "vllm:num_requests_waiting 1e300\nvllm:num_requests_running 3000000000\n"
                       "vllm:kv_cache_usage_perc 7\n"
                       "vllm:lora_requests_info{max_lora=\"99999999999999999999\",running_lora_adapters=\"\"} 1\n"
                       "vllm:cache_config_info{block_size=\"-3\",num_gpu_blocks=\"99999999999\"} 1\n";
    assert_int_equal(scrape_parse(huge, strlen(huge), NULL, &s, &err), KV_OK);
    assert_int_equal(s.m.waiting, SCRAPE_MAX_REQUESTS);
    assert_int_equal(s.m.running, SCRAPE_MAX_REQUESTS);
    assert_true(s.m.kv_usage == 1.0);
    assert_int_equal(s.m.max_lora, SCRAPE_MAX_REQUESTS);
    assert_int_equal(s.m.block_size, 0);   /* not a count: unknown */
    assert_int_equal(s.m.num_gpu_blocks, UINT32_MAX);
    scrape_sample_free(&s);
}

static _Atomic double clock_s = 1000.0;
static double test_now(void *ctx) { (void)ctx; return atomic_load(&clock_s); }

static sched_metrics metrics_of(epset *eps, const char *name)
{
    sched_endpoint *const *e;
    size_t n = epset_acquire(eps, &e);
    sched_metrics m = {0};
    for (size_t i = 0; i < n; i++)
        if (!strcmp(e[i]->name, name))
            m = e[i]->m;
    epset_release(eps);
    return m;
}

/* log sink: counts the warnings that a scrape was rejected */
static atomic_int rejected_logs;
static void count_rejections(void *ctx, const char *line)
{
    (void)ctx;
    if (strstr(line, "metrics scrape rejected"))
        atomic_fetch_add(&rejected_logs, 1);
}

#define WAIT(cond)                                   \
    do {                                             \
        for (int t_ = 0; t_ < 1000 && !(cond); t_++) \
            usleep(5000);                            \
        assert_true(cond);                           \
    } while (0)

static void test_poller(void **state)
{
    (void)state;
    fake_vllm *v = fake_vllm_start();
    assert_non_null(v);
    fake_vllm_set_gauges(v, 3, 5, 0.25);
    char up[64], list[160];
    snprintf(up, sizeof up, "127.0.0.1:%d", fake_vllm_port(v));
    snprintf(list, sizeof list, "%s,127.0.0.1:1", up);   /* port 1: nothing listens */
    epset *eps = epset_new(2.0, test_now, NULL, NULL);
    assert_int_equal(epset_parse_list(eps, list, "test", NULL), KV_OK);
    scrape_config cfg = {.endpoints = eps, .interval_ms = 10, .timeout_ms = 500};
    kv_err err = {0};
    scraper *s = scrape_start(&cfg, &err);
    if (!s)
        fail_msg("%s", err.msg);

    WAIT(metrics_of(eps, up).valid);
    sched_metrics m = metrics_of(eps, up);
    assert_int_equal(m.waiting, 3);
    assert_int_equal(m.running, 5);
    assert_true(m.kv_usage == 0.25);
    assert_int_equal(m.block_size, 16);
    assert_int_equal(m.max_lora, 2);
    scrape_stats st;
    WAIT((scrape_get_stats(s, &st), st.failed_transfer > 0));
    assert_false(metrics_of(eps, "127.0.0.1:1").valid);

    /* Changes are followed at the polling rate. */
    unsigned before = fake_vllm_requests(v, "/metrics");
    fake_vllm_set_gauges(v, 7, 1, 0.75);
    WAIT(metrics_of(eps, up).waiting == 7);
    assert_true(fake_vllm_requests(v, "/metrics") > before);
    assert_true(metrics_of(eps, up).kv_usage == 0.75);

    /* The endpoint starts failing: the last values stay valid for 2 s, then go stale. */
    fake_vllm_set_metrics(v, 500, "boom");
    WAIT((scrape_get_stats(s, &st), st.failed_http > 0));
    assert_true(metrics_of(eps, up).valid);
    atomic_store(&clock_s, atomic_load(&clock_s) + 2.5);
    m = metrics_of(eps, up);
    assert_false(m.valid);
    assert_int_equal(m.waiting, 7);        /* kept, but not to be trusted */
    /* An unparsable 200 is a parse failure, and recovery makes it valid again. */
    fake_vllm_set_metrics(v, 200, "not a metric line {\n");
    WAIT((scrape_get_stats(s, &st), st.failed_parse > 0));
    fake_vllm_set_gauges(v, 2, 2, 0.5);
    WAIT(metrics_of(eps, up).valid);

    /* A NaN queue fails the scrape: counted as a bad value, the last good metrics kept
     * until they go stale, one warning however many scrapes fail, one more after a recovery. */
    log_setup(0, count_rejections, NULL);
    fake_vllm_set_metrics(v, 200, "vllm:num_requests_waiting NaN\nvllm:num_requests_running 1\nvllm:kv_cache_usage_perc 0.1\n");
    uint64_t value0 = (scrape_get_stats(s, &st), st.failed_value);
    WAIT((scrape_get_stats(s, &st), st.failed_value >= value0 + 5));
    m = metrics_of(eps, up);
    assert_true(m.valid);
    assert_int_equal(m.waiting, 2);
    atomic_store(&clock_s, atomic_load(&clock_s) + 2.5);
    assert_false(metrics_of(eps, up).valid);
    assert_int_equal(atomic_load(&rejected_logs), 1);
    fake_vllm_set_gauges(v, 4, 2, 0.5);
    WAIT(metrics_of(eps, up).valid && metrics_of(eps, up).waiting == 4);
    fake_vllm_set_metrics(v, 200, "vllm:num_requests_waiting -5\nvllm:num_requests_running 1\nvllm:kv_cache_usage_perc 0.1\n");
    WAIT((scrape_get_stats(s, &st), st.failed_value >= value0 + 8));
    assert_int_equal(atomic_load(&rejected_logs), 2);
    assert_int_equal(metrics_of(eps, up).waiting, 4);
    log_setup(0, NULL, NULL);
    fake_vllm_set_gauges(v, 2, 2, 0.5);
    WAIT(metrics_of(eps, up).waiting == 2);

    /* A removed endpoint is no longer scraped. */
    ep_spec only = {.name = "127.0.0.1:1"};
    assert_int_equal(epset_sync(eps, &only, 1, NULL), KV_OK);
    usleep(50000);
    unsigned after_removal = fake_vllm_requests(v, "/metrics");
    usleep(100000);
    assert_true(fake_vllm_requests(v, "/metrics") <= after_removal + 1);
    scrape_stop(s);
    epset_free(eps);
    fake_vllm_stop(v);
}

typedef struct buf {
    char data[4096];
    size_t len;
} buf;

static size_t collect(char *p, size_t sz, size_t n, void *ctx)
{
    buf *b = ctx;
    size_t k = sz * n < sizeof b->data - 1 - b->len ? sz * n : sizeof b->data - 1 - b->len;
    memcpy(b->data + b->len, p, k);
    b->len += k;
    b->data[b->len] = 0;
    return sz * n;
}

/* The fake's /tokenize answers in vLLM's shape (one id per byte) for other tests. */
static void test_fake_tokenize(void **state)
{
    (void)state;
    fake_vllm *v = fake_vllm_start();
    assert_non_null(v);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/tokenize", fake_vllm_port(v));
    CURL *c = curl_easy_init();
    buf b = {.len = 0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, "{\"model\":\"m\",\"prompt\":\"AB\"}");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    assert_int_equal(code, 200);
    assert_string_equal(b.data, "{\"count\":2,\"max_model_len\":8192,\"tokens\":[65,66]}");
    assert_int_equal(fake_vllm_requests(v, "/tokenize"), 1);
    fake_vllm_stop(v);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_parse),
    cmocka_unit_test(test_bad_values),
    cmocka_unit_test(test_fake_tokenize),
    cmocka_unit_test(test_poller),
};

int main(void) { return cmocka_run_group_tests(tests, NULL, NULL); }
