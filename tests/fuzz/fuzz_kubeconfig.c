/* fuzz_kubeconfig: a kubeconfig file as ./epp --kubeconfig reads it (kubeconfig_load).
 * On success the strings it filled must be terminated within their fields, and the
 * decoded CA bundle at its length. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kubeconfig.h"
#include "../support/fuzz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file_write("config", data, size);
    if (!path)
        return 0;
    kubeconfig kc;
    kv_err err = {0};
    if (kubeconfig_load(&kc, path, &err) != KV_OK) {
        if (kc.ca_pem || kc.token || !err.msg[0])
            abort();
        return 0;
    }
    if (!memchr(kc.context, 0, sizeof kc.context) || !memchr(kc.server, 0, sizeof kc.server) || !kc.server[0] ||
        !memchr(kc.ca_path, 0, sizeof kc.ca_path) || !memchr(kc.token_path, 0, sizeof kc.token_path) ||
        (kc.ca_pem && kc.ca_pem[kc.ca_pem_len]))
        abort();
    kubeconfig_free(&kc);
    return 0;
}
