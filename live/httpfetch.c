/* httpfetch: libcurl's easy interface, the answer collected in memory (see httpfetch.h). */
#include "httpfetch.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

static size_t on_data(char *p, size_t sz, size_t n, void *ctx)
{
    httpfetch_body *b = ctx;
    char *g = realloc(b->data, b->len + sz * n + 1);
    if (!g)
        return 0;
    memcpy(g + b->len, p, sz * n);
    b->data = g;
    b->len += sz * n;
    g[b->len] = 0;
    return sz * n;
}

long httpfetch(const char *method, const char *url, const char *body, const char *header, long timeout_ms,
               httpfetch_body *out, const char **why)
{
    CURL *c = curl_easy_init();
    if (!c) {
        *why = "cannot create a curl handle";
        return -1;
    }
    struct curl_slist *h = header ? curl_slist_append(NULL, header) : NULL;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    if (h)
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    long code = -1;
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    else
        *why = curl_easy_strerror(rc);
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    return code;
}
