/* yaml2json: a YAML stream (helm template's output) as one JSON array of its non-empty
 * documents, so tests/it_chart.sh can check rendered manifests with python3's standard
 * library, which has no YAML parser (PyYAML is not a dependency here).
 *
 * Plain scalars are typed by the YAML 1.2 core schema (null, true/false, integers,
 * floats; everything else a string); quoted and block scalars stay strings (libyaml's
 * loader does not say whether a tag was explicit, so "!!str 1" reads as 1). That is the
 * distinction the checks need: Kubernetes rejects a container arg or env value that
 * parses as a number. A duplicate mapping key is an error (file:line:col), not a
 * silent overwrite. Build: cc yaml2json.c $(pkg-config --cflags --libs yaml-0.1 jansson).
 * Usage: yaml2json [FILE] (stdin without FILE); exit 1 with a message on bad input. */
#include <errno.h>
#include <jansson.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

static const char *src = "<stdin>";

static json_t *bad(const yaml_node_t *n, const char *what, const char *detail)
{
    fprintf(stderr, "yaml2json: %s:%zu:%zu: %s%s%s\n", src, n->start_mark.line + 1, n->start_mark.column + 1, what,
            detail ? " " : "", detail ? detail : "");
    return NULL;
}

static int matches(const char *re, const char *s)
{
    regex_t r;
    if (regcomp(&r, re, REG_EXTENDED | REG_NOSUB))
        return 0;
    int ok = regexec(&r, s, 0, NULL, 0) == 0;
    regfree(&r);
    return ok;
}

/* YAML 1.2 core schema resolution of a plain scalar. */
static json_t *plain_scalar(const char *s)
{
    if (!*s || !strcmp(s, "~") || matches("^(null|Null|NULL)$", s))
        return json_null();
    if (matches("^(true|True|TRUE)$", s))
        return json_true();
    if (matches("^(false|False|FALSE)$", s))
        return json_false();
    if (matches("^[-+]?[0-9]+$", s))
        return json_integer(strtoll(s, NULL, 10));
    if (matches("^0o[0-7]+$", s))
        return json_integer(strtoll(s + 2, NULL, 8));
    if (matches("^0x[0-9a-fA-F]+$", s))
        return json_integer(strtoll(s + 2, NULL, 16));
    if (matches("^[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?$", s))
        return json_real(strtod(s, NULL));
    return json_string(s);
}

static json_t *convert(yaml_document_t *doc, yaml_node_t *n, int depth)
{
    if (depth > 64)
        return bad(n, "nesting deeper than 64", NULL);
    switch (n->type) {
    case YAML_SCALAR_NODE: {
        const char *v = (const char *)n->data.scalar.value;
        if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
            return json_stringn(v, n->data.scalar.length);
        return plain_scalar(v);
    }
    case YAML_SEQUENCE_NODE: {
        json_t *a = json_array();
        for (yaml_node_item_t *i = n->data.sequence.items.start; i < n->data.sequence.items.top; i++) {
            json_t *e = convert(doc, yaml_document_get_node(doc, *i), depth + 1);
            if (!e) {
                json_decref(a);
                return NULL;
            }
            json_array_append_new(a, e);
        }
        return a;
    }
    case YAML_MAPPING_NODE: {
        json_t *o = json_object();
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
            yaml_node_t *k = yaml_document_get_node(doc, p->key);
            if (k->type != YAML_SCALAR_NODE) {
                json_decref(o);
                return bad(k, "mapping key is not a scalar", NULL);
            }
            const char *key = (const char *)k->data.scalar.value;
            if (json_object_get(o, key)) {
                json_decref(o);
                return bad(k, "duplicate key", key);
            }
            json_t *v = convert(doc, yaml_document_get_node(doc, p->value), depth + 1);
            if (!v) {
                json_decref(o);
                return NULL;
            }
            json_object_set_new(o, key, v);
        }
        return o;
    }
    default:
        return bad(n, "empty node", NULL);
    }
}

int main(int argc, char **argv)
{
    FILE *f = stdin;
    if (argc > 2) {
        fprintf(stderr, "usage: yaml2json [FILE]\n");
        return 2;
    }
    if (argc == 2 && !(f = fopen(src = argv[1], "rb"))) {
        fprintf(stderr, "yaml2json: %s: %s\n", src, strerror(errno));
        return 1;
    }
    yaml_parser_t p;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_file(&p, f);
    json_t *docs = json_array();
    int rc = 0;
    for (;;) {
        yaml_document_t d;
        if (!yaml_parser_load(&p, &d)) {
            fprintf(stderr, "yaml2json: %s:%zu:%zu: %s\n", src, p.problem_mark.line + 1, p.problem_mark.column + 1,
                    p.problem ? p.problem : "parse error");
            rc = 1;
            break;
        }
        yaml_node_t *root = yaml_document_get_root_node(&d);
        if (!root) { /* end of stream */
            yaml_document_delete(&d);
            break;
        }
        /* "---" followed by comments only (helm's "# Source:" of an empty template) */
        int empty = root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0;
        json_t *j = empty ? NULL : convert(&d, root, 0);
        yaml_document_delete(&d);
        if (!empty && !j) {
            rc = 1;
            break;
        }
        if (j)
            json_array_append_new(docs, j);
    }
    yaml_parser_delete(&p);
    if (f != stdin)
        fclose(f);
    if (!rc && json_dumpf(docs, stdout, JSON_COMPACT) == 0)
        putchar('\n');
    json_decref(docs);
    return rc;
}
