/* test_scrape: the /metrics parser on vLLM-shaped bodies (labels, escapes, several series,
 * LoRA info by largest value, cache config, legacy and configured KV metric names, missing
 * and malformed input), then the poller against a fake vLLM on loopback: values land in
 * the endpoint set, follow changes, a failing endpoint goes stale after 2 s (test clock)
 * and an unreachable one never becomes valid. */
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

/* Scraping many pods keeps one connection to each, as a pod is scraped 20 times a second:
 * libcurl's connection cache holds 4 per easy handle still added, so the last transfers
 * of a round, finishing with few handles left, closed connections the next round had to
 * open again (1,280 connects/s and a churning descriptor count at 64 pods). */
static void test_poller_keeps_connections(void **state)
{
    (void)state;
    enum { PODS = 24, ROUNDS = 30 };
    fake_vllm *v[PODS];
    char list[PODS * 24] = "";
    for (int i = 0; i < PODS; i++) {
        assert_non_null(v[i] = fake_vllm_start());
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s127.0.0.1:%d", i ? "," : "",
                 fake_vllm_port(v[i]));
    }
    epset *eps = epset_new(2.0, test_now, NULL, NULL);
    assert_int_equal(epset_parse_list(eps, list, "test", NULL), KV_OK);
    scrape_config cfg = {.endpoints = eps, .interval_ms = 10, .timeout_ms = 2000};
    kv_err err = {0};
    scraper *s = scrape_start(&cfg, &err);
    if (!s)
        fail_msg("%s", err.msg);
    for (int i = 0; i < PODS; i++)
        WAIT(fake_vllm_requests(v[i], "/metrics") >= ROUNDS);
    scrape_stop(s);
    unsigned connects = 0;
    for (int i = 0; i < PODS; i++) {
        connects += fake_vllm_connections(v[i]);
        fake_vllm_stop(v[i]);
    }
    epset_free(eps);
    assert_int_equal(connects, PODS);
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
    cmocka_unit_test(test_fake_tokenize),
    cmocka_unit_test(test_poller),
    cmocka_unit_test(test_poller_keeps_connections),
};

int main(void) { return cmocka_run_group_tests(tests, NULL, NULL); }
