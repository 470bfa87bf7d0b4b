/* fake_vllm: a model-server stand-in for tests on loopback (libmicrohttpd, own thread):
 *   GET  /metrics   the Prometheus text set with fake_vllm_set_metrics, with the status
 *                   set there (e.g. 500), or the default vLLM-shaped body
 *   POST /tokenize  {"prompt": "..."} -> {"count": n, "max_model_len": 8192,
 *                   "tokens": [one id per byte]}, vLLM's response shape
 * Counts requests per path and TCP connections accepted. Thread-safe setters. */
#ifndef KVROUTE_FAKE_VLLM_H
#define KVROUTE_FAKE_VLLM_H

typedef struct fake_vllm fake_vllm;

fake_vllm *fake_vllm_start(void);         /* 127.0.0.1, ephemeral port */
int fake_vllm_port(const fake_vllm *v);
void fake_vllm_set_metrics(fake_vllm *v, int status, const char *body);
/* A body with these gauges (and cache_config_info, one lora_requests_info series). */
void fake_vllm_set_gauges(fake_vllm *v, int waiting, int running, double kv_usage);
unsigned fake_vllm_requests(fake_vllm *v, const char *path);
unsigned fake_vllm_connections(fake_vllm *v);   /* accepted since the start */
void fake_vllm_stop(fake_vllm *v);

#endif
