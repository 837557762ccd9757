/* json.h — thin helpers over jansson: parsing with a positioned error message, typed getters,
 * compact dumping, and a cleanup attribute for json_t references. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/errors.h"
#include "base/macro.h"

static inline void ljson_decrefp(json_t **j)
{
    if (*j)
        json_decref(*j);
}
#define _cleanup_json_ _cleanup_(ljson_decrefp)

/* Parse n bytes of JSON text. On failure e says "not valid JSON at line L column C: reason".
 * Nesting is limited to LJSON_MAX_DEPTH to bound what a client can make us build. */
#define LJSON_MAX_DEPTH 64
int ljson_parse(const char *text, size_t n, json_t **ret, struct lerr *e);
/* Depth of nesting of a value (scalars are 0). */
int ljson_depth(const json_t *j);

/* Typed getters: NULL/default when absent or of another type. */
const char *ljson_str(const json_t *obj, const char *key);
bool ljson_bool(const json_t *obj, const char *key, bool dflt);
long long ljson_int(const json_t *obj, const char *key, long long dflt);

/* Compact, key-sorted dump (stable across runs: used for hashing). Caller frees. */
char *ljson_dump_sorted(const json_t *j);
/* Compact dump in insertion order. Caller frees. */
char *ljson_dump(const json_t *j);

/* Append "key" or ".key" to a dotted JSON path ("a.b" + "c" = "a.b.c"). */
int ljson_path_join(char *dst, size_t size, const char *base, const char *key);
