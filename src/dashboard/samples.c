/* samples.c — the ring of samples behind the dashboard's charts (samples.h). Every series has a
 * value slot for each sample of the ring, NaN where it had none; the times are one ring beside
 * them. Names are reused: a series whose values all left the ring frees its slot. */
#include "dashboard/samples.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct series {
    bool used;
    enum dash_series_kind kind;
    char name[DASH_SAMPLES_NAME_MAX + 1];
    double *v; /* capacity values, by ring index */
};

struct dash_samples {
    size_t cap, n, head; /* head: where the next sample goes */
    bool begun;
    size_t cur; /* the sample being taken */
    int64_t *t;
    uint64_t dropped;
    struct series ser[DASH_SAMPLES_MAX_SERIES];
};

int dash_samples_new(size_t capacity, struct dash_samples **ret)
{
    if (capacity < 1 || capacity > 100000)
        return -EINVAL;
    struct dash_samples *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->cap = capacity;
    s->t = calloc(capacity, sizeof(*s->t));
    if (!s->t) {
        free(s);
        return -ENOMEM;
    }
    *ret = s;
    return 0;
}

void dash_samples_free(struct dash_samples *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < DASH_SAMPLES_MAX_SERIES; i++)
        free(s->ser[i].v);
    free(s->t);
    free(s);
}

static void series_clear(struct dash_samples *s, struct series *x)
{
    for (size_t i = 0; i < s->cap; i++)
        x->v[i] = NAN;
}

void dash_samples_begin(struct dash_samples *s, int64_t t_ms)
{
    if (s->n && t_ms < s->t[(s->head + s->cap - 1) % s->cap]) {
        s->n = s->head = 0;
        for (size_t i = 0; i < DASH_SAMPLES_MAX_SERIES; i++)
            s->ser[i].used = false;
    }
    s->cur = s->head;
    s->t[s->cur] = t_ms;
    s->head = (s->head + 1) % s->cap;
    if (s->n < s->cap)
        s->n++;
    for (size_t i = 0; i < DASH_SAMPLES_MAX_SERIES; i++)
        if (s->ser[i].used)
            s->ser[i].v[s->cur] = NAN;
    s->begun = true;
}

static bool series_empty(const struct dash_samples *s, const struct series *x)
{
    for (size_t i = 0; i < s->cap; i++)
        if (!isnan(x->v[i]))
            return false;
    return true;
}

static struct series *series_take(struct dash_samples *s, const char *name,
                                  enum dash_series_kind kind)
{
    struct series *free_slot = NULL, *stale = NULL;
    for (size_t i = 0; i < DASH_SAMPLES_MAX_SERIES; i++) {
        struct series *x = &s->ser[i];
        if (x->used && strcmp(x->name, name) == 0)
            return x;
        if (!x->used && !free_slot)
            free_slot = x;
    }
    if (!free_slot)
        for (size_t i = 0; i < DASH_SAMPLES_MAX_SERIES && !stale; i++)
            if (series_empty(s, &s->ser[i]))
                stale = &s->ser[i];
    struct series *x = free_slot ? free_slot : stale;
    if (!x)
        return NULL;
    if (!x->v && !(x->v = malloc(s->cap * sizeof(*x->v))))
        return NULL;
    series_clear(s, x);
    x->used = true;
    x->kind = kind;
    strcpy(x->name, name);
    return x;
}

int dash_samples_put(struct dash_samples *s, const char *name, enum dash_series_kind kind,
                     double value)
{
    if (!s->begun || !name || !*name || strlen(name) > DASH_SAMPLES_NAME_MAX)
        return -EINVAL;
    struct series *x = series_take(s, name, kind);
    if (!x) {
        s->dropped++;
        return -ENOSPC;
    }
    x->v[s->cur] = value;
    return 0;
}

size_t dash_samples_count(const struct dash_samples *s)
{
    return s->n;
}

static json_t *number_or_null(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

json_t *dash_samples_json(const struct dash_samples *s, const char *prefix)
{
    size_t first = (s->head + s->cap - s->n) % s->cap;
    json_t *times = json_array(), *series = json_object();
    for (size_t i = 0; i < s->n; i++)
        json_array_append_new(times, json_integer(s->t[(first + i) % s->cap]));
    size_t plen = prefix ? strlen(prefix) : 0;
    for (size_t k = 0; k < DASH_SAMPLES_MAX_SERIES; k++) {
        const struct series *x = &s->ser[k];
        if (!x->used || (prefix && strncmp(x->name, prefix, plen) != 0) || series_empty(s, x))
            continue;
        json_t *values = json_array();
        for (size_t i = 0; i < s->n; i++) {
            size_t at = (first + i) % s->cap;
            double v = x->v[at];
            if (x->kind == DASH_SERIES_COUNTER) {
                size_t before = (at + s->cap - 1) % s->cap;
                double dt = i ? (double)(s->t[at] - s->t[before]) / 1000.0 : 0;
                double dv = i ? v - x->v[before] : NAN;
                v = dt > 0 && dv >= 0 ? dv / dt : NAN; /* NaN propagates through a gap */
            }
            json_array_append_new(values, number_or_null(v));
        }
        json_object_set_new(series, x->name,
                            json_pack("{s:s, s:o}", "kind",
                                      x->kind == DASH_SERIES_COUNTER ? "counter" : "gauge",
                                      "values", values));
    }
    return json_pack("{s:o, s:o, s:I}", "times", times, "series", series, "dropped",
                     (json_int_t)s->dropped);
}
