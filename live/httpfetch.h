/* httpfetch: one blocking HTTP request whose answer is collected in memory -- what
 * `kvctl doctor` asks a running EPP with (live/doctor.h), and what the tests of the
 * metrics port read it with. For ./epp's own hot paths (scraping, /tokenize, the
 * Kubernetes watch) the modules keep their own transfers, with their own limits.
 *
 * Threads: any; each call has its own curl handle. */
#ifndef KVROUTE_HTTPFETCH_H
#define KVROUTE_HTTPFETCH_H

#include <stddef.h>

typedef struct httpfetch_body {
    char *data;                   /* malloc'd, NUL-terminated; NULL when nothing came */
    size_t len;
} httpfetch_body;

/* method (GET, POST, ...) on url with body (NULL: none) and one extra header line (NULL:
 * none), at most timeout_ms. The HTTP status, or -1 with *why (curl's words, static)
 * when the transfer failed. out->data is the caller's to free either way. */
long httpfetch(const char *method, const char *url, const char *body, const char *header, long timeout_ms,
               httpfetch_body *out, const char **why);

#endif
