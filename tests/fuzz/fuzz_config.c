/* fuzz_config: an EndpointPickerConfig YAML file as ./epp --config and a scenario's
 * `config:` read it: epc_load_string, then sched_new (every plugin found through the
 * registry and initialised with its parameters, as both drivers do), then one request
 * routed over four fixed, healthy endpoints (sched_check_route: schedule, pre_request,
 * schedule, response_complete), whose results must keep the scheduler's invariants
 * (sched_check.h; abort() otherwise). A config that does not load or build is fine;
 * one that builds must route without breaking them.
 * Everything is allocated and freed per input. Single-threaded. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "../support/sched_check.h"
#include "registry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    epc_config *cfg = epc_load_string((const char *)data, size, "fuzz.yaml", registry_types, NULL);
    if (!cfg)
        return 0;
    sched_endpoint eps[4], *ptrs[4];
    char names[4][32];
    for (size_t i = 0; i < 4; i++) {
        snprintf(names[i], sizeof names[i], "10.0.0.%zu:8000", i + 1);
        eps[i] = (sched_endpoint){.id = (uint32_t)i, .name = names[i], .pod = names[i], .ns = "",
                                  .m = {.valid = true, .waiting = (int)i, .running = 2, .kv_usage = 0.25 * (double)i,
                                        .block_size = 16, .num_gpu_blocks = 1000}};
        ptrs[i] = &eps[i];
    }
    uint32_t tokens[128];
    for (uint32_t i = 0; i < 128; i++)
        tokens[i] = 1000 + i * 37;
    sched_request req = {.id = "fuzz", .model = "m", .tokens = tokens, .n_tokens = 128, .prompt = "hello",
                         .prompt_len = 5};
    bool built;
    if (!sched_check_route(cfg, &req, ptrs, 4, &built))
        abort();
    epc_free(cfg);
    return 0;
}
