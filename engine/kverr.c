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

/* The escape of byte c into esc (at most 4 bytes and a NUL); returns its length. */
static size_t quote_byte(unsigned char c, char esc[5])
{
    if (c == '\n' || c == '\r' || c == '\t')
        return (size_t)snprintf(esc, 5, "\\%c", c == '\n' ? 'n' : c == '\r' ? 'r' : 't');
    if (c < 0x20 || c == 0x7f)
        return (size_t)snprintf(esc, 5, "\\x%02x", c);
    esc[0] = (char)c;
    return 1;
}

const char *kv_err_quote(char *out, size_t cap, const char *s, size_t len)
{
    if (!cap)
        return out;
    char esc[5];
    size_t whole = 0;
    for (size_t i = 0; i < len; i++)
        whole += quote_byte((unsigned char)s[i], esc);
    /* cut text keeps room for "...", and never splits an escape */
    size_t room = whole < cap ? cap - 1 : cap > 3 ? cap - 4 : 0, o = 0;
    for (size_t i = 0; i < len; i++) {
        size_t n = quote_byte((unsigned char)s[i], esc);
        if (o + n > room)
            break;
        memcpy(out + o, esc, n);
        o += n;
    }
    if (whole >= cap && cap > 3)
        memcpy(out + o, "...", 3), o += 3;
    out[o] = 0;
    return out;
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
