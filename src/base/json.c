/* json.c — jansson helpers (see json.h). */
#include "base/json.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int ljson_depth(const json_t *j)
{
    int max = 0;
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach ((json_t *)j, k, v) {
            int d = ljson_depth(v);
            if (d > max)
                max = d;
        }
        return max + 1;
    }
    if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach (j, i, v) {
            int d = ljson_depth(v);
            if (d > max)
                max = d;
        }
        return max + 1;
    }
    return 0;
}

int ljson_parse(const char *text, size_t n, json_t **ret, struct lerr *e)
{
    json_error_t je;
    /* jansson bounds its own recursion (2048); we enforce a tighter limit afterwards. */
    json_t *j = json_loadb(text, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!j) {
        if (je.line <= 1)
            return lerr_set(e, -EINVAL, "not valid JSON at column %d: %s", je.column, je.text);
        return lerr_set(e, -EINVAL, "not valid JSON at line %d column %d: %s", je.line, je.column,
                        je.text);
    }
    if (ljson_depth(j) > LJSON_MAX_DEPTH) {
        json_decref(j);
        return lerr_set(e, -EINVAL, "JSON nested deeper than %d levels", LJSON_MAX_DEPTH);
    }
    *ret = j;
    return 0;
}

const char *ljson_str(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

bool ljson_bool(const json_t *obj, const char *key, bool dflt)
{
    json_t *v = json_object_get(obj, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

long long ljson_int(const json_t *obj, const char *key, long long dflt)
{
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? json_integer_value(v) : dflt;
}

char *ljson_dump_sorted(const json_t *j)
{
    return json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
}

char *ljson_dump(const json_t *j)
{
    return json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
}

int ljson_path_join(char *dst, size_t size, const char *base, const char *key)
{
    int n =
        (base && *base) ? snprintf(dst, size, "%s.%s", base, key) : snprintf(dst, size, "%s", key);
    return (n < 0 || (size_t)n >= size) ? -ENAMETOOLONG : 0;
}
