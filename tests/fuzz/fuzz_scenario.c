/* fuzz_scenario: a scenario file as `./sim SCENARIO` reads it, through scn_load (YAML,
 * cluster, routers with their presets, inline or file configs, workload sections). The
 * input is written to scenario.yaml in a temporary folder (scn_load takes a path);
 * relative config and trace paths resolve there, so they name files that do not exist.
 * Everything is allocated and freed per input. Single-threaded. */
#include <stdint.h>
#include <stdlib.h>

#include "../support/fuzz_file.h"
#include "scenario.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file_write("scenario.yaml", data, size);
    if (!path)
        abort();
    scn_free(scn_load(path, "policies/presets", NULL));
    return 0;
}
