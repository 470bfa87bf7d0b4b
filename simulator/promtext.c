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

/* The value at p (after spaces), which must end at a space, a tab, CR or the line's end:
 * a float, or +Inf/-Inf/NaN as Prometheus writes them. The text's NUL ends strtod. */
static int read_value(const char *p, const char *eol, double *v)
{
    while (p < eol && (*p == ' ' || *p == '\t'))
        p++;
    if (p == eol)
        return -1;
    char *e;
    *v = strtod(p, &e);
    return e == p || e > eol || (e < eol && *e != ' ' && *e != '\t' && *e != '\r') ? -1 : 0;
}

int promtext_sum(const char *text, const char *name, double *sum)
{
    size_t nl = strlen(name);
    const char *p = text, *end = text + strlen(text);
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
