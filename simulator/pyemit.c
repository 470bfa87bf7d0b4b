/* pyemit: Python's json.dumps(indent=2) and yaml.dump(indent=2) over a jansson tree
 * (see pyemit.h). The YAML side follows PyYAML's representer (float repr with ".0"
 * before a bare exponent, strings quoted when an implicit resolver would read them as
 * another type) and emitter (block style, indentless sequences inside mappings,
 * single quotes, double quotes only for characters single quotes cannot carry).
 * Not reproduced: PyYAML folds plain or quoted strings longer than 80 columns at
 * spaces; our reports carry no such strings. */
#define _GNU_SOURCE
#include "pyemit.h"

#include <errno.h>
#include <math.h>
#include <regex.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

char *pyemit_float_repr(double d, char buf[32])
{
    if (isnan(d)) {
        strcpy(buf, "NaN");
        return buf;
    }
    if (isinf(d)) {
        strcpy(buf, d < 0 ? "-Infinity" : "Infinity");
        return buf;
    }
    /* Shortest %e form that reads back to d: its digits and decimal exponent. */
    char e[40];
    for (int prec = 0; prec < 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec, d);
        if (strtod(e, NULL) == d)
            break;
    }
    const char *p = e;
    bool neg = *p == '-';
    if (neg)
        p++;
    char digits[24];
    size_t nd = 0;
    for (; *p && *p != 'e'; p++)
        if (*p != '.')
            digits[nd++] = *p;
    digits[nd] = 0;
    int exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        digits[--nd] = 0;

    char *o = buf;
    if (neg)
        *o++ = '-';
    if (exp10 < -4 || exp10 >= 16) {
        *o++ = digits[0];
        if (nd > 1) {
            *o++ = '.';
            memcpy(o, digits + 1, nd - 1);
            o += nd - 1;
        }
        sprintf(o, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
        return buf;
    }
    if (exp10 < 0) {
        *o++ = '0';
        *o++ = '.';
        for (int i = -1; i > exp10; i--)
            *o++ = '0';
        memcpy(o, digits, nd);
        o += nd;
    } else {
        size_t ip = (size_t)exp10 + 1; /* digits before the point */
        for (size_t i = 0; i < ip; i++)
            *o++ = i < nd ? digits[i] : '0';
        *o++ = '.';
        if (nd > ip) {
            memcpy(o, digits + ip, nd - ip);
            o += nd - ip;
        } else {
            *o++ = '0';
        }
    }
    *o = 0;
    return buf;
}

/* ---- JSON ------------------------------------------------------------------------ */

/* Decodes one UTF-8 sequence; invalid bytes come out as U+FFFD, one byte consumed. */
static unsigned utf8_next(const unsigned char **s, const unsigned char *end)
{
    const unsigned char *p = *s;
    unsigned c = *p, need = 0, cp;
    if (c < 0x80) {
        *s = p + 1;
        return c;
    }
    if ((c & 0xE0) == 0xC0)
        need = 1, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0)
        need = 2, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0)
        need = 3, cp = c & 0x07;
    else {
        *s = p + 1;
        return 0xFFFD;
    }
    if ((size_t)(end - p) <= need) {
        *s = p + 1;
        return 0xFFFD;
    }
    for (unsigned i = 1; i <= need; i++) {
        if ((p[i] & 0xC0) != 0x80) {
            *s = p + 1;
            return 0xFFFD;
        }
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    *s = p + need + 1;
    return cp;
}

static void emit_json_string(FILE *f, const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str, *end = s + len;
    fputc('"', f);
    while (s < end) {
        unsigned c = utf8_next(&s, end);
        switch (c) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        case '\b': fputs("\\b", f); break;
        case '\f': fputs("\\f", f); break;
        default:
            if (c < 0x20 || (c >= 0x7F && c < 0x10000 && c != 0x7F))
                fprintf(f, "\\u%04x", c);
            else if (c >= 0x10000) {
                c -= 0x10000;
                fprintf(f, "\\u%04x\\u%04x", 0xD800 + (c >> 10), 0xDC00 + (c & 0x3FF));
            } else
                fputc((int)c, f);
        }
    }
    fputc('"', f);
}

static void indent_to(FILE *f, int n)
{
    for (int i = 0; i < n; i++)
        fputc(' ', f);
}

static void json_value(FILE *f, const json_t *v, int depth)
{
    char buf[32];
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        if (json_object_size(v) == 0) {
            fputs("{}", f);
            break;
        }
        fputc('{', f);
        const char *key;
        json_t *val;
        bool first = true;
        json_object_foreach((json_t *)v, key, val) {
            fputs(first ? "\n" : ",\n", f);
            first = false;
            indent_to(f, 2 * (depth + 1));
            emit_json_string(f, key, strlen(key));
            fputs(": ", f);
            json_value(f, val, depth + 1);
        }
        fputc('\n', f);
        indent_to(f, 2 * depth);
        fputc('}', f);
        break;
    }
    case JSON_ARRAY: {
        if (json_array_size(v) == 0) {
            fputs("[]", f);
            break;
        }
        fputc('[', f);
        for (size_t i = 0; i < json_array_size(v); i++) {
            fputs(i ? ",\n" : "\n", f);
            indent_to(f, 2 * (depth + 1));
            json_value(f, json_array_get(v, i), depth + 1);
        }
        fputc('\n', f);
        indent_to(f, 2 * depth);
        fputc(']', f);
        break;
    }
    case JSON_STRING: emit_json_string(f, json_string_value(v), json_string_length(v)); break;
    case JSON_INTEGER: fprintf(f, "%" JSON_INTEGER_FORMAT, json_integer_value(v)); break;
    case JSON_REAL: fputs(pyemit_float_repr(json_real_value(v), buf), f); break;
    case JSON_TRUE: fputs("true", f); break;
    case JSON_FALSE: fputs("false", f); break;
    case JSON_NULL: fputs("null", f); break;
    }
}

int pyemit_json(FILE *f, const json_t *v, kv_err *err)
{
    if (!v)
        return kv_err_set(err, KV_EINVAL, "pyemit: no JSON value to write");
    json_value(f, v, 0);
    if (ferror(f))
        return kv_err_set(err, KV_EIO, "pyemit: write failed: %s", strerror(errno));
    return KV_OK;
}

/* ---- YAML ------------------------------------------------------------------------ */

/* PyYAML's implicit resolvers (yaml/resolver.py) for bool, float, int, merge, null,
 * timestamp and value, as POSIX EREs. A string matching one is quoted on output so
 * that it reads back as a string. */
static const char *const implicit_res[] = {
    "^(yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$",
    "^([-+]?([0-9][0-9_]*)\\.[0-9_]*([eE][-+][0-9]+)?|\\.[0-9_]+([eE][-+][0-9]+)?"
    "|[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\\.[0-9_]*|[-+]?\\.(inf|Inf|INF)|\\.(nan|NaN|NAN))$",
    "^([-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+"
    "|[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+)$",
    "^<<$",
    "^(~|null|Null|NULL|)$",
    "^([0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]"
    "|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?([Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](\\.[0-9]*)?"
    "(([ \t]*)Z|[-+][0-9][0-9]?(:[0-9][0-9])?)?)$",
    "^=$",
};
#define N_IMPLICIT (sizeof implicit_res / sizeof implicit_res[0])

enum { RES_BOOL, RES_FLOAT, RES_INT, RES_MERGE, RES_NULL, RES_TIMESTAMP, RES_VALUE };

/* Index of the first implicit resolver matching s, or -1. */
static int implicit_resolver(const char *s)
{
    static regex_t re[N_IMPLICIT];
    static bool compiled;
    if (!compiled) {
        for (size_t i = 0; i < N_IMPLICIT; i++)
            if (regcomp(&re[i], implicit_res[i], REG_EXTENDED | REG_NOSUB) != 0)
                abort(); /* the patterns are constants: a failure is a build defect */
        compiled = true;
    }
    for (size_t i = 0; i < N_IMPLICIT; i++)
        if (regexec(&re[i], s, 0, NULL, 0) == 0)
            return (int)i;
    return -1;
}

static bool resolves_implicitly(const char *s)
{
    return implicit_resolver(s) >= 0;
}

/* Copies s without '_' (YAML 1.1 digit separators) into buf. */
static const char *strip_underscores(const char *s, char *buf, size_t cap)
{
    size_t o = 0;
    for (; *s && o + 1 < cap; s++)
        if (*s != '_')
            buf[o++] = *s;
    buf[o] = 0;
    return buf;
}

/* Sexagesimal "1:30:00" (YAML 1.1) as a number. */
static double sexagesimal(const char *s)
{
    double sign = 1, v = 0;
    if (*s == '-' || *s == '+')
        sign = *s++ == '-' ? -1 : 1;
    for (const char *part = s; part; part = strchr(part, ':') ? strchr(part, ':') + 1 : NULL)
        v = v * 60 + strtod(part, NULL);
    return sign * v;
}

json_t *pyemit_yaml_plain_scalar(const char *text)
{
    char buf[128];
    int kind = implicit_resolver(text);
    if (kind == RES_NULL)
        return json_null();
    if (kind == RES_BOOL)
        return json_boolean(strchr("yYtT", text[0]) || !strcasecmp(text, "on"));
    if ((kind == RES_FLOAT || kind == RES_INT) && strlen(text) < sizeof buf) {
        const char *t = strip_underscores(text, buf, sizeof buf);
        const char *u = (*t == '-' || *t == '+') ? t + 1 : t;
        if (kind == RES_FLOAT) {
            if (strchr(t, ':'))
                return json_real(sexagesimal(t));
            if (!strcasecmp(u, ".inf"))
                return json_real(*t == '-' ? -INFINITY : INFINITY);
            if (!strcasecmp(u, ".nan"))
                return json_real(NAN);
            return json_real(strtod(t, NULL));
        }
        if (strchr(t, ':'))
            return json_integer((json_int_t)sexagesimal(t));
        long long sign = *t == '-' ? -1 : 1;
        int base = 10;
        if (!strncmp(u, "0b", 2))
            base = 2, u += 2;
        else if (!strncmp(u, "0x", 2))
            base = 16, u += 2;
        else if (u[0] == '0' && u[1])
            base = 8;
        errno = 0;
        long long v = strtoll(u, NULL, base);
        if (errno == 0)
            return json_integer(sign * v);
    }
    return json_string(text);
}

typedef enum { STYLE_PLAIN, STYLE_SINGLE, STYLE_DOUBLE } scalar_style;

/* PyYAML's Emitter.analyze_scalar, reduced to what decides between plain, single- and
 * double-quoted in block context with allow_unicode off. */
static scalar_style choose_style(const char *s)
{
    size_t n = strlen(s);
    if (n == 0)
        return STYLE_SINGLE;
    bool special = false, plain = true, single = true;
    bool prev_space = false, prev_break = false;
    if (!strncmp(s, "---", 3) || !strncmp(s, "...", 3))
        plain = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i], next = i + 1 < n ? (unsigned char)s[i + 1] : 0;
        bool next_blank = next == 0 || next == ' ' || next == '\t' || next == '\n';
        if (i == 0) {
            if (strchr("#,[]{}&*!|>'\"%@`", c))
                plain = false;
            if ((c == '?' || c == ':' || c == '-') && next_blank)
                plain = false;
        } else {
            if (c == ':' && next_blank)
                plain = false;
            if (c == '#' && (s[i - 1] == ' ' || s[i - 1] == '\t'))
                plain = false;
        }
        bool is_break = c == '\n';
        if (is_break)
            plain = false;
        if (!(c == '\n' || (c >= 0x20 && c <= 0x7E)))
            special = true;
        if (c == ' ') {
            if (i == 0 || i == n - 1)
                plain = false;
            if (prev_break && i == n - 1)
                single = false;
            prev_space = true, prev_break = false;
        } else if (is_break) {
            if (i == 0 || i == n - 1 || prev_space)
                single = false, plain = false;
            prev_space = false, prev_break = true;
        } else {
            prev_space = prev_break = false;
        }
    }
    if (special)
        return STYLE_DOUBLE;
    if (plain && !resolves_implicitly(s))
        return STYLE_PLAIN;
    return single ? STYLE_SINGLE : STYLE_DOUBLE;
}

static void yaml_string(FILE *f, const char *s)
{
    switch (choose_style(s)) {
    case STYLE_PLAIN:
        fputs(s, f);
        break;
    case STYLE_SINGLE:
        fputc('\'', f);
        for (; *s; s++) {
            if (*s == '\'')
                fputc('\'', f);
            fputc(*s, f);
        }
        fputc('\'', f);
        break;
    case STYLE_DOUBLE: {
        const unsigned char *p = (const unsigned char *)s, *end = p + strlen(s);
        fputc('"', f);
        while (p < end) {
            unsigned c = utf8_next(&p, end);
            if (c == '"' || c == '\\')
                fprintf(f, "\\%c", c);
            else if (c == '\n')
                fputs("\\n", f);
            else if (c == '\t')
                fputs("\\t", f);
            else if (c >= 0x20 && c <= 0x7E)
                fputc((int)c, f);
            else if (c < 0x100)
                fprintf(f, "\\x%02X", c);
            else if (c < 0x10000)
                fprintf(f, "\\u%04X", c);
            else
                fprintf(f, "\\U%08X", c);
        }
        fputc('"', f);
        break;
    }
    }
}

static void yaml_scalar(FILE *f, const json_t *v)
{
    char buf[40];
    switch (json_typeof(v)) {
    case JSON_STRING: yaml_string(f, json_string_value(v)); break;
    case JSON_INTEGER: fprintf(f, "%" JSON_INTEGER_FORMAT, json_integer_value(v)); break;
    case JSON_REAL: {
        double d = json_real_value(v);
        if (isnan(d))
            fputs(".nan", f);
        else if (isinf(d))
            fputs(d < 0 ? "-.inf" : ".inf", f);
        else {
            pyemit_float_repr(d, buf);
            char *e = strchr(buf, 'e');
            if (e && !strchr(buf, '.')) /* PyYAML: 1e-05 -> 1.0e-05 */
                fprintf(f, "%.*s.0%s", (int)(e - buf), buf, e);
            else
                fputs(buf, f);
        }
        break;
    }
    case JSON_TRUE: fputs("true", f); break;
    case JSON_FALSE: fputs("false", f); break;
    case JSON_NULL: fputs("null", f); break;
    case JSON_OBJECT: fputs("{}", f); break; /* only reached when empty */
    case JSON_ARRAY: fputs("[]", f); break;
    }
}

static bool is_block(const json_t *v)
{
    return (json_is_object(v) && json_object_size(v)) || (json_is_array(v) && json_array_size(v));
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Writes a non-empty mapping or sequence at column 'indent'. inline_first: the first
 * line continues the current one (after "- "). */
static int yaml_block(FILE *f, const json_t *v, int indent, bool inline_first, bool sort)
{
    if (json_is_object(v)) {
        size_t n = json_object_size(v), i = 0;
        const char **keys = malloc(n * sizeof *keys);
        if (!keys)
            return KV_ENOMEM;
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)v, key, val) keys[i++] = key;
        if (sort)
            qsort(keys, n, sizeof *keys, cmp_key);
        for (i = 0; i < n; i++) {
            if (i || !inline_first)
                indent_to(f, indent);
            yaml_string(f, keys[i]);
            fputc(':', f);
            val = json_object_get(v, keys[i]);
            if (!is_block(val)) {
                fputc(' ', f);
                yaml_scalar(f, val);
                fputc('\n', f);
                continue;
            }
            fputc('\n', f);
            int rc = yaml_block(f, val, json_is_object(val) ? indent + 2 : indent, false, sort);
            if (rc) {
                free(keys);
                return rc;
            }
        }
        free(keys);
        return KV_OK;
    }
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *item = json_array_get(v, i);
        if (i || !inline_first)
            indent_to(f, indent);
        fputs("- ", f);
        if (!is_block(item)) {
            yaml_scalar(f, item);
            fputc('\n', f);
            continue;
        }
        int rc = yaml_block(f, item, indent + 2, true, sort);
        if (rc)
            return rc;
    }
    return KV_OK;
}

static int emit_yaml(FILE *f, const json_t *v, bool sort, kv_err *err)
{
    if (!v)
        return kv_err_set(err, KV_EINVAL, "pyemit: no YAML value to write");
    int rc = KV_OK;
    if (is_block(v))
        rc = yaml_block(f, v, 0, false, sort);
    else {
        yaml_scalar(f, v); /* PyYAML ends a bare scalar document with "..." */
        fputs("\n...\n", f);
    }
    if (rc)
        return kv_err_set(err, rc, "pyemit: out of memory writing YAML");
    if (ferror(f))
        return kv_err_set(err, KV_EIO, "pyemit: write failed: %s", strerror(errno));
    return KV_OK;
}

int pyemit_yaml(FILE *f, const json_t *v, kv_err *err)
{
    return emit_yaml(f, v, true, err);
}

int pyemit_yaml_unsorted(FILE *f, const json_t *v, kv_err *err)
{
    return emit_yaml(f, v, false, err);
}

/* ---- files ------------------------------------------------------------------------- */

static int write_file(const char *path, const void *v, int (*emit)(FILE *, const void *, kv_err *), kv_err *err)
{
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return kv_err_set(err, KV_ERANGE, "%s: path too long", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return kv_err_set(err, KV_EIO, "%s: cannot create: %s", tmp, strerror(errno));
    int rc = emit(f, v, err);
    if (fclose(f) != 0 && rc == KV_OK)
        rc = kv_err_set(err, KV_EIO, "%s: write failed: %s", tmp, strerror(errno));
    if (rc == KV_OK && rename(tmp, path) != 0)
        rc = kv_err_set(err, KV_EIO, "%s: cannot rename into place: %s", path, strerror(errno));
    if (rc) {
        remove(tmp);
        kv_err_prefix(err, "%s: ", path);
    }
    return rc;
}

static int emit_json(FILE *f, const void *v, kv_err *err) { return pyemit_json(f, v, err); }
static int emit_yaml_sorted(FILE *f, const void *v, kv_err *err) { return pyemit_yaml(f, v, err); }
static int emit_yaml_unsorted(FILE *f, const void *v, kv_err *err) { return pyemit_yaml_unsorted(f, v, err); }

int pyemit_json_file(const char *path, const json_t *v, kv_err *err)
{
    return write_file(path, v, emit_json, err);
}

int pyemit_yaml_file(const char *path, const json_t *v, kv_err *err)
{
    return write_file(path, v, emit_yaml_sorted, err);
}

int pyemit_yaml_unsorted_file(const char *path, const json_t *v, kv_err *err)
{
    return write_file(path, v, emit_yaml_unsorted, err);
}

typedef struct items {
    size_t n;
    pyemit_item_fn item;
    void *ctx;
} items;

/* json_value's array layout, one item in memory at a time */
static int emit_items(FILE *f, const void *p, kv_err *err)
{
    const items *it = p;
    fputs(it->n ? "[" : "[]", f);
    for (size_t i = 0; i < it->n; i++) {
        json_t *v = it->item(it->ctx, i);
        if (!v)
            return kv_err_set(err, KV_ENOMEM, "pyemit: out of memory building item %zu", i);
        fputs(i ? ",\n" : "\n", f);
        indent_to(f, 2);
        json_value(f, v, 1);
        json_decref(v);
    }
    if (it->n)
        fputs("\n]", f);
    if (ferror(f))
        return kv_err_set(err, KV_EIO, "pyemit: write failed: %s", strerror(errno));
    return KV_OK;
}

int pyemit_json_items_file(const char *path, size_t n, pyemit_item_fn item, void *ctx, kv_err *err)
{
    items it = {.n = n, .item = item, .ctx = ctx};
    return write_file(path, &it, emit_items, err);
}
