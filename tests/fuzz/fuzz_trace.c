/* fuzz_trace: a trace file of the workload (`workload.data.type: trace`), CSV or JSONL,
 * through wl_build as the simulator calls it after loading a scenario, then the first
 * requests built from it (wl_request). The first input byte picks the format (even:
 * CSV, odd: JSONL; the reader goes by the file's extension); the rest is the file,
 * written to trace.csv or trace.jsonl in a temporary folder.
 * Everything is allocated and freed per input. Single-threaded. */
#include <stdint.h>
#include <stdlib.h>

#include "../support/fuzz_file.h"
#include "workload.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *path = fuzz_file_write(data[0] & 1 ? "trace.jsonl" : "trace.csv", data + 1, size - 1);
    if (!path)
        abort();
    wl_spec spec = {.data = WL_DATA_TRACE, .load = WL_LOAD_TRACE_REPLAY, .trace_path = (char *)path,
                    .interval = 1.0, .vocab = 151643};
    workload *w = wl_build(&spec, 42, NULL);
    if (!w)
        return 0;
    for (uint64_t i = 0; i < w->stages[0].n_requests && i < 4; i++) {
        wl_req req;
        if (wl_request(w, 0, i, &req, NULL) == KV_OK)
            wl_req_release(&req);
    }
    wl_free(w);
    return 0;
}
