/* fuzz_trace: a trace file of the workload (`workload.data.type: trace`) through wl_build
 * as the simulator calls it after loading a scenario, then the first requests built from
 * it (wl_request). The reader picks CSV or JSONL by the file's extension, so each input
 * is read both ways: written to trace.csv, then to trace.jsonl, in a temporary folder.
 * Everything is allocated and freed per input. Single-threaded. */
#include <stdint.h>
#include <stdlib.h>

#include "../support/fuzz_file.h"
#include "workload.h"

static void read_as(const char *name, const uint8_t *data, size_t size)
{
    const char *path = fuzz_file_write(name, data, size);
    if (!path)
        abort();
    wl_spec spec = {.data = WL_DATA_TRACE, .load = WL_LOAD_TRACE_REPLAY, .trace_path = (char *)path,
                    .interval = 1.0, .vocab = 151643};
    workload *w = wl_build(&spec, 42, NULL);
    if (!w)
        return;
    for (uint64_t i = 0; i < w->stages[0].n_requests && i < 4; i++) {
        wl_req req;
        if (wl_request(w, 0, i, &req, NULL) == KV_OK)
            wl_req_release(&req);
    }
    wl_free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    read_as("trace.csv", data, size);
    read_as("trace.jsonl", data, size);
    return 0;
}
