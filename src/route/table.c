/* table.c — the $edgeHub route table: validates "properties.desired" (schemaVersion 1.0-1.3,
 * routes as strings or {route, priority, timeToLiveSecs}, storeAndForwardConfiguration) as IoT
 * Edge's EdgeHubConfigParser does, and answers which endpoints a message goes to. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "route-internal.h"

struct builder {
    struct route_table *t;
    struct lstrv *errors;
    bool failed;
    int rc; /* -ENOMEM once memory ran out */
};

_printf_(2, 3) static void report(struct builder *b, const char *fmt, ...)
{
    b->failed = true;
    if (!b->errors)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0 || lstrv_push_take(b->errors, s) < 0)
        b->rc = -ENOMEM;
}

/* System.Version: two to four dot-separated non-negative integers. Returns the minor version
 * when the major is 1, else -1. */
static int schema_minor(const char *s)
{
    long parts[4];
    int n = 0;
    const char *p = s;
    for (;;) {
        if (n == 4 || *p < '0' || *p > '9')
            return -1;
        long v = 0;
        while (*p >= '0' && *p <= '9') {
            v = v * 10 + (*p++ - '0');
            if (v > INT32_MAX)
                return -1;
        }
        parts[n++] = v;
        if (!*p)
            break;
        if (*p++ != '.')
            return -1;
    }
    if (n < 2 || parts[0] != 1)
        return -1;
    return parts[1] > 3 ? -1 : (int)parts[1];
}

static bool blank(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n' && *s != '\v' && *s != '\f')
            return false;
    return true;
}

/* Route names match ^[^.$# ]+$ (the IoT Edge manifest schema). */
static bool valid_name(const char *s)
{
    return *s && !strpbrk(s, ".$# ");
}

static bool int_in(const json_t *v, json_int_t min, json_int_t max, json_int_t *ret)
{
    if (!json_is_integer(v))
        return false;
    json_int_t i = json_integer_value(v);
    if (i < min || i > max)
        return false;
    *ret = i;
    return true;
}

static size_t intern_sink(struct builder *b, const struct route_sink *s)
{
    struct route_table *t = b->t;
    for (size_t i = 0; i < t->n_sinks; i++)
        if (strcmp(t->sinks[i].id, s->id) == 0)
            return i;
    struct route_sink *c = &t->sinks[t->n_sinks];
    c->kind = s->kind;
    c->id = strdup(s->id);
    if (s->kind == ROUTE_SINK_MODULE) {
        c->module = strdup(s->module);
        c->input = strdup(s->input);
    }
    if (!c->id || (s->kind == ROUTE_SINK_MODULE && (!c->module || !c->input)))
        b->rc = -ENOMEM;
    return t->n_sinks++;
}

static void add_route(struct builder *b, const char *name, const json_t *spec, int minor)
{
    const json_t *text = spec;
    char path[512];
    snprintf(path, sizeof(path), "routes.%s", name);
    json_int_t priority = ROUTE_PRIORITY_DEFAULT, ttl = 0;
    bool bad = false;

    if (!valid_name(name)) {
        report(b, "%s: route names must not be empty or contain '.', '$', '#' or spaces", path);
        bad = true;
    }
    if (json_is_object(spec) && minor != 0) {
        text = json_object_get(spec, "route");
        snprintf(path, sizeof(path), "routes.%s.route", name);
        const json_t *p = json_object_get(spec, "priority");
        if (p && !int_in(p, 0, 9, &priority)) {
            report(b, "routes.%s.priority: must be an integer 0-9", name);
            bad = true;
        }
        const json_t *l = json_object_get(spec, "timeToLiveSecs");
        if (l && !int_in(l, 0, UINT32_MAX, &ttl)) {
            report(b, "routes.%s.timeToLiveSecs: must be an integer 0-4294967295", name);
            bad = true;
        }
        if (!text) {
            report(b, "%s: missing", path);
            return;
        }
    } else if (!json_is_string(spec)) {
        if (minor == 0)
            report(b, "%s: must be a string (schemaVersion 1.0)", path);
        else
            report(b,
                   "%s: must be a string or an object {\"route\", \"priority\", "
                   "\"timeToLiveSecs\"}",
                   path);
        return;
    }
    if (!json_is_string(text)) {
        report(b, "%s: must be a string", path);
        return;
    }
    const char *s = json_string_value(text);
    if (strlen(s) != json_string_length(text)) {
        report(b, "%s: contains a NUL character", path);
        return;
    }
    if (blank(s)) {
        if (minor == 0 && json_is_string(spec))
            return; /* schema 1.0: IoT Edge skips blank routes */
        report(b, "%s: route is empty", path);
        return;
    }
    struct lerr e = {0};
    struct route *r = NULL;
    int rc = route_parse(s, &r, &e);
    if (rc == -ENOMEM) {
        b->rc = rc;
        return;
    }
    if (rc < 0) {
        report(b, "%s: %s", path, lerr_str(&e));
        return;
    }
    if (bad) {
        route_free(r);
        return;
    }
    struct route_entry *ent = &b->t->routes[b->t->n_routes];
    ent->name = strdup(name);
    if (!ent->name) {
        route_free(r);
        b->rc = -ENOMEM;
        return;
    }
    ent->route = r;
    ent->priority = (uint32_t)priority;
    ent->ttl_secs = (uint32_t)ttl;
    ent->sink = intern_sink(b, &r->sink);
    b->t->n_routes++;
}

static void store_and_forward(struct builder *b, const json_t *saf)
{
    struct route_table *t = b->t;
    t->ttl_secs = ROUTE_DEFAULT_TTL_SECS;
    if (!saf)
        return;
    if (!json_is_object(saf)) {
        report(b, "storeAndForwardConfiguration: must be an object");
        return;
    }
    const json_t *ttl = json_object_get(saf, "timeToLiveSecs");
    json_int_t v;
    if (ttl) {
        if (!int_in(ttl, INT32_MIN, INT32_MAX, &v))
            report(b, "storeAndForwardConfiguration.timeToLiveSecs: must be an integer "
                      "(seconds; negative = forever)");
        else
            t->ttl_secs = v < 0 ? ROUTE_TTL_FOREVER : v;
    }
    const json_t *limits = json_object_get(saf, "storeLimits");
    if (!limits)
        return;
    if (!json_is_object(limits)) {
        report(b, "storeAndForwardConfiguration.storeLimits: must be an object");
        return;
    }
    const json_t *max = json_object_get(limits, "maxSizeBytes");
    if (!int_in(max, 1, INT64_MAX, &v))
        report(b, "storeAndForwardConfiguration.storeLimits.maxSizeBytes: must be a positive "
                  "integer");
    else
        t->max_size_bytes = v;
}

void route_table_free(struct route_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n_routes; i++) {
        free(t->routes[i].name);
        route_free(t->routes[i].route);
    }
    for (size_t i = 0; i < t->n_sinks; i++) {
        free(t->sinks[i].id);
        free(t->sinks[i].module);
        free(t->sinks[i].input);
    }
    free(t->routes);
    free(t->sinks);
    free(t->schema_version);
    free(t);
}

int route_table_new(const json_t *desired, struct route_table **ret, struct lstrv *errors)
{
    _cleanup_route_table_ struct route_table *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    struct builder b = {.t = t, .errors = errors};
    if (!json_is_object(desired)) {
        report(&b, "properties.desired: must be an object");
        return b.rc ? b.rc : -EINVAL;
    }

    int minor = 1; /* when the version is unusable, still check routes as 1.1+ would */
    const json_t *ver = json_object_get(desired, "schemaVersion");
    if (!ver) {
        report(&b, "schemaVersion: missing");
    } else if (!json_is_string(ver)) {
        report(&b, "schemaVersion: must be a string");
    } else if ((minor = schema_minor(json_string_value(ver))) < 0) {
        report(&b, "schemaVersion: unsupported version '%s' (1.0 to 1.3 are supported)",
               json_string_value(ver));
        minor = 1;
    } else if (!(t->schema_version = strdup(json_string_value(ver)))) {
        return -ENOMEM;
    }

    const json_t *routes = json_object_get(desired, "routes");
    if (routes && !json_is_object(routes)) {
        report(&b, "routes: must be an object");
    } else if (routes && json_object_size(routes) > ROUTE_TABLE_MAX_ROUTES) {
        report(&b, "routes: more than %d routes", ROUTE_TABLE_MAX_ROUTES);
    } else if (routes && json_object_size(routes) > 0) {
        size_t n = json_object_size(routes);
        t->routes = calloc(n, sizeof(*t->routes));
        t->sinks = calloc(n, sizeof(*t->sinks));
        if (!t->routes || !t->sinks)
            return -ENOMEM;
        const char *name;
        json_t *spec;
        json_object_foreach ((json_t *)routes, name, spec) {
            add_route(&b, name, spec, minor);
            if (b.rc)
                return b.rc;
        }
    }
    store_and_forward(&b, json_object_get(desired, "storeAndForwardConfiguration"));
    if (b.rc)
        return b.rc;
    if (b.failed)
        return -EINVAL;
    *ret = TAKE_PTR(t);
    return 0;
}

int route_table_match(const struct route_table *t, struct route_message *m, struct route_match *ret)
{
    size_t n = 0;
    for (size_t i = 0; i < t->n_routes; i++) {
        const struct route_entry *e = &t->routes[i];
        if (!route_source_matches(e->route, m->source))
            continue;
        enum route_truth truth;
        int rc = route_eval(e->route, m, &truth);
        if (rc == -ENOMEM)
            return rc;
        if (rc < 0 || truth != ROUTE_TRUE)
            continue;
        int64_t ttl = e->ttl_secs ? (int64_t)e->ttl_secs : t->ttl_secs;
        size_t k = 0;
        while (k < n && ret[k].sink != e->sink)
            k++;
        /* Several routes into one endpoint: the best priority wins (Evaluator.Evaluate),
         * the earlier route on a tie. */
        if (k < n && ret[k].priority <= e->priority)
            continue;
        ret[k] = (struct route_match){e->sink, e->priority, ttl, e->name};
        if (k == n)
            n++;
    }
    return (int)n;
}
