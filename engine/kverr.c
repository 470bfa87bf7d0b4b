/* kverr: formatting of error values (see kverr.h). */
#include "kverr.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int kv_err_set(kv_err *e, int code, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->code = code;
    }
    return code;
}

int kv_err_prefix(kv_err *e, const char *fmt, ...)
{
    if (!e)
        return KV_OK;
    char head[256], old[sizeof e->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    snprintf(e->msg, sizeof e->msg, "%s%s", head, old);
    return e->code;
}

const char *kv_strerror(int code)
{
    switch (code) {
    case KV_OK: return "ok";
    case KV_EINVAL: return "invalid value";
    case KV_ENOMEM: return "out of memory";
    case KV_EPARSE: return "parse error";
    case KV_ENOTFOUND: return "not found";
    case KV_ERANGE: return "out of range";
    case KV_EIO: return "i/o error";
    case KV_EFULL: return "capacity exhausted";
    case KV_ENOENDPOINTS: return "no endpoints available";
    case KV_ESTATE: return "invalid state";
    }
    return "unknown error";
}
