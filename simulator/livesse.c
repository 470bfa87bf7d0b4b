/* livesse: the streamed response reader of `./sim --target` (livesse.h). Lines end at
 * "\n" or "\r\n", as libevent's EVBUFFER_EOL_CRLF split them before; each data line's
 * JSON is read by jansson. */
#include "livesse.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "grow.h"
#include "kverr.h"

static int stamp(livesse *s, sim_time t)
{
    if (s->n_times == UINT32_MAX || !grow_array((void **)&s->times, &s->cap_times, (size_t)s->n_times + 1, sizeof *s->times))
        return KV_ENOMEM;
    s->times[s->n_times++] = t;
    return KV_OK;
}

static uint32_t json_u32(const json_t *o, const char *key)
{
    json_int_t v = json_integer_value(json_object_get(o, key));
    return v < 0 ? 0 : v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

/* One line without its end. Blank separators, comments and event:/id: fields are skipped. */
static int one_line(livesse *s, const char *line, size_t len, sim_time now)
{
    if (len < 5 || memcmp(line, "data:", 5) != 0)
        return KV_OK;
    line += 5, len -= 5;
    if (len && *line == ' ')
        line++, len--;
    if (s->done_marker) {
        s->malformed = true;
        return KV_OK;
    }
    if (len == 6 && memcmp(line, "[DONE]", 6) == 0) {
        s->done_marker = true;
        return stamp(s, now);
    }
    json_t *j = json_loadb(line, len, 0, NULL);
    const json_t *choices = json_object_get(j, "choices"), *usage = json_object_get(j, "usage");
    int rc = KV_OK;
    if (!json_is_object(j) || json_object_get(j, "error") || (choices && !json_is_array(choices))) {
        s->malformed = true;
    } else {
        if (json_array_size(choices) > 0) {
            s->chunks++;
            rc = stamp(s, now);
        }
        if (json_is_object(usage)) {
            s->has_usage = true;
            s->usage_prompt = json_u32(usage, "prompt_tokens");
            s->usage_output = json_u32(usage, "completion_tokens");
            s->usage_cached = json_u32(json_object_get(usage, "prompt_tokens_details"), "cached_tokens");
        }
    }
    json_decref(j);
    return rc;
}

static int keep(livesse *s, const char *p, size_t n)
{
    if (s->len + n > LIVESSE_MAX_LINE) {
        s->malformed = true;
        return KV_OK;
    }
    if (!grow_array((void **)&s->line, &s->cap, s->len + n, 1))
        return KV_ENOMEM;
    memcpy(s->line + s->len, p, n);
    s->len += n;
    return KV_OK;
}

int livesse_feed(livesse *s, const char *p, size_t n, sim_time now)
{
    while (n && !s->malformed) {
        const char *nl = memchr(p, '\n', n);
        if (!nl)
            return keep(s, p, n);
        size_t k = (size_t)(nl - p);
        const char *line = p;
        if (s->len) {                 /* the line began in an earlier read */
            int rc = keep(s, p, k);
            if (rc || s->malformed)
                return rc;
            line = s->line, k = s->len;
        }
        if (k && line[k - 1] == '\r')
            k--;
        int rc = one_line(s, line, k, now);
        s->len = 0;
        if (rc)
            return rc;
        n -= (size_t)(nl - p) + 1, p = nl + 1;
    }
    return KV_OK;
}

sim_time *livesse_take_times(livesse *s, uint32_t *n)
{
    sim_time *t = s->times;
    *n = s->n_times;
    s->times = NULL, s->n_times = 0, s->cap_times = 0;
    return t;
}

void livesse_free(livesse *s)
{
    free(s->line);
    free(s->times);
    memset(s, 0, sizeof *s);
}
