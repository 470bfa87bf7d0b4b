/* pyemit: writes a jansson tree byte for byte as Python would, because inference-perf's
 * files come from json.dumps(indent=2) and llm-d's benchmark report from
 * yaml.dump(indent=2) (keys sorted). Floats are Python's repr (shortest string that
 * reads back to the same double, exponent below 1e-4 and from 1e16), so outputs are
 * deterministic and diff cleanly against real runs. Only writing: parsing stays with
 * jansson and libyaml. Key order for JSON is the object's insertion order. */
#ifndef KVROUTE_SIM_PYEMIT_H
#define KVROUTE_SIM_PYEMIT_H

#include <jansson.h>
#include <stdio.h>

#include "kverr.h"

/* Python repr(float) into buf (>= 32 bytes); returns buf. nan/inf as "NaN", "Infinity",
 * "-Infinity" (json.dumps spelling). */
char *pyemit_float_repr(double d, char buf[32]);

/* A plain (unquoted) YAML scalar typed as yaml.safe_load types it: null, bool, int,
 * float, else string (timestamps stay strings). Returns a new reference or NULL (ENOMEM). */
json_t *pyemit_yaml_plain_scalar(const char *text);

/* json.dumps(v, indent=2) (ensure_ascii; no trailing newline). */
int pyemit_json(FILE *f, const json_t *v, kv_err *err);
/* yaml.dump(v, indent=2): block style, keys sorted, sequences in mappings not indented,
 * strings that would read back as another type single-quoted. Ends with a newline. */
int pyemit_yaml(FILE *f, const json_t *v, kv_err *err);
/* yaml.dump(v, sort_keys=False): the same, keys in insertion order (inference-perf's
 * config.yaml). */
int pyemit_yaml_unsorted(FILE *f, const json_t *v, kv_err *err);

/* Writes to path via a temporary file renamed into place; errors name the path. */
int pyemit_json_file(const char *path, const json_t *v, kv_err *err);
int pyemit_yaml_file(const char *path, const json_t *v, kv_err *err);
int pyemit_yaml_unsorted_file(const char *path, const json_t *v, kv_err *err);

/* Makes item i of an array: a new reference, or NULL when out of memory. */
typedef json_t *(*pyemit_item_fn)(void *ctx, size_t i);
/* pyemit_json_file of an array of n items, each made by item, written and freed before
 * the next is made: the same bytes in the memory of one item (the per-request report of
 * a long run would otherwise hold every request's tree at once). */
int pyemit_json_items_file(const char *path, size_t n, pyemit_item_fn item, void *ctx, kv_err *err);

#endif
