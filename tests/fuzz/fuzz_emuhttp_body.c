/* fuzz_emuhttp_body: a request body as an emulated vLLM pod (./sim serve) reads it
 * (simulator/emureq.c, what emuhttp calls for completions, chat, /tokenize and the render
 * endpoints). Each input is read as every kind. A refusal is a 400, 404 or 500 with a
 * message and leaves nothing behind; an accepted request's token ids are in the
 * vocabulary, and a generation request has a prompt and fits the context length. */
#include <stdint.h>
#include <stdlib.h>

#include "emureq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const emureq_limits lim = {.served_model = "m", .vocab = 50000, .max_model_len = 4096};
    for (int k = EMUREQ_COMPLETION; k <= EMUREQ_RENDER_CHAT; k++) {
        emureq q;
        emureq_refusal r = {0};
        int rc = emureq_read((const char *)data, size, (emureq_kind)k, &lim, &q, &r);
        if (rc) {
            if ((rc != 400 && rc != 404 && rc != 500) || rc != r.code || !r.msg[0] || q.body || q.ids)
                abort();
            continue;
        }
        for (size_t i = 0; i < q.n; i++)
            if (q.ids[i] >= lim.vocab)
                abort();
        if ((k == EMUREQ_COMPLETION || k == EMUREQ_CHAT) &&
            (q.n == 0 || q.max_tokens == 0 || q.n + q.max_tokens > lim.max_model_len))
            abort();
        emureq_free(&q);
    }
    return 0;
}
