/* promtext: a counter's samples summed from a Prometheus text exposition (promtext.h). */
#include "promtext.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Past a label set starting at p ('{'), quoted values and their escapes included;
 * NULL when it does not close before end. */
static const char *skip_labels(const char *p, const char *end)
{
    bool quoted = false;
    for (p++; p < end; p++) {
        if (quoted) {
            if (*p == '\\')
                p++;
            else if (*p == '"')
                quoted = false;
        } else if (*p == '"') {
            quoted = true;
        } else if (*p == '}') {
            return p + 1;
        } else if (*p == '\n') {
            return NULL;
        }
    }
    return NULL;
}

/* The value at p (after spaces) up to the line's end: a float, or +Inf/-Inf/NaN as
 * Prometheus writes them. */
static int read_value(const char *p, const char *eol, double *v)
{
    while (p < eol && (*p == ' ' || *p == '\t'))
        p++;
    size_t n = 0;
    while (p + n < eol && p[n] != ' ' && p[n] != '\t' && p[n] != '\r')
        n++;
    char buf[64];
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, p, n);
    buf[n] = 0;
    char *e;
    *v = strtod(buf, &e);
    return *e ? -1 : 0;
}

int promtext_sum(const char *text, size_t len, const char *name, double *sum)
{
    size_t nl = strlen(name);
    const char *p = text, *end = text + len;
    int found = 0;
    *sum = 0;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        if ((size_t)(eol - p) > nl && memcmp(p, name, nl) == 0 && (p[nl] == '{' || p[nl] == ' ' || p[nl] == '\t')) {
            const char *q = p + nl;
            if (*q == '{' && !(q = skip_labels(q, eol)))
                return -1;
            double v;
            if (read_value(q, eol, &v) || isnan(v))
                return -1;
            *sum += v;
            found++;
        }
        p = eol + 1;
    }
    return found;
}
