/* route.h — the Azure IoT Edge route language: parse "FROM <source> [WHERE <condition>] INTO
 * <sink>", evaluate conditions against messages, and build the $edgeHub route table (schema
 * 1.0-1.3, priorities, TTLs). Pure: no I/O, no globals. docs/routes.md describes the language. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/errors.h"
#include "base/str.h"

/* Bounds on what a deployment can make us build or compute. */
#define ROUTE_MAX_TEXT 8192          /* bytes of one route string */
#define ROUTE_MAX_DEPTH 128          /* expression nesting (operators, calls, parentheses) */
#define ROUTE_EVAL_MAX_BYTES 1048576 /* strings built while evaluating one condition */
#define ROUTE_TABLE_MAX_ROUTES 1000  /* routes in one $edgeHub configuration */

/* A route without an explicit priority ranks below all explicit ones (0 highest ... 9 lowest).
 * Same value as IoT Edge's RouteFactory.DefaultPriority, so plain numeric ordering works. */
#define ROUTE_PRIORITY_DEFAULT 2000000000u
#define ROUTE_TTL_FOREVER (-1)      /* effective TTL of "never expires" */
#define ROUTE_DEFAULT_TTL_SECS 7200 /* global TTL when storeAndForwardConfiguration omits it */

/* ---- messages ---------------------------------------------------------------------------- */

struct route_prop {
    const char *name;
    const char *value;
};

/* What a condition can see of a message. The caller owns every pointer and keeps them valid
 * while evaluating. Property names match case-insensitively (ASCII), as in IoT Edge.
 *
 * source: "/messages/modules/<m>/outputs/<o>", "/messages/modules/<m>", "/messages" (device
 * telemetry) or "/twinChangeNotifications".
 * sys: system properties by their IoT Edge names: messageId enqueuedTime to correlationId userId
 * ack connectionDeviceId connectionDeviceGenerationId connectionAuthMethod contentType
 * contentEncoding connectionModuleId outputName inputName messageType.
 * app: application properties. body: the payload bytes.
 *
 * The body is parsed as JSON at most once, on the first $body query or twin_change_includes of
 * any route, and only when contentType is "application/json" and contentEncoding is utf-8,
 * utf-16 or utf-32 (case-insensitive, no parameters; IoT Edge's rule). The parse is cached in
 * the struct: initialise the private fields to zero (designated initialisers do) and call
 * route_message_release() when done. */
struct route_message {
    const char *source;
    const struct route_prop *sys;
    size_t n_sys;
    const struct route_prop *app;
    size_t n_app;
    const void *body;
    size_t body_len;

    /* private: body parse cache */
    int body_state_; /* 0 not tried, 1 parsed, -1 not available */
    json_t *body_json_;
};

void route_message_release(struct route_message *m);

/* ---- single routes ----------------------------------------------------------------------- */

enum route_sink_kind {
    ROUTE_SINK_UPSTREAM, /* $upstream */
    ROUTE_SINK_MODULE,   /* BrokeredEndpoint("/modules/<module>/inputs/<input>") */
};

struct route_sink {
    enum route_sink_kind kind;
    char *module; /* ROUTE_SINK_MODULE only */
    char *input;  /* ROUTE_SINK_MODULE only */
    char *id;     /* "$upstream" or "/modules/<module>/inputs/<input>": one queue per id */
};

struct route;

/* Parse (and type-check, as IoT Edge compiles) one route. On failure e says
 * "column N: <reason>", N being the 1-based character column in text. */
int route_parse(const char *text, struct route **ret, struct lerr *e);
void route_free(struct route *r);
DEFINE_CLEANUP(struct route *, route_free)
#define _cleanup_route_ _cleanup_(route_freep)

const char *route_text(const struct route *r);
/* The source path as written in the route (trailing '*' and '/' still there). */
const char *route_source(const struct route *r);
const struct route_sink *route_sink(const struct route *r);
bool route_has_condition(const struct route *r);

/* Does the message source fall under the route's source? Trailing '*' and '/' of the route
 * source are dropped; the rest must be a case-insensitive prefix ending on a segment boundary. */
bool route_source_matches(const struct route *r, const char *message_source);

enum route_truth {
    ROUTE_FALSE = 0,
    ROUTE_TRUE = 1,
    ROUTE_UNDEFINED = 2, /* does not route, like false */
};

/* Evaluate the condition (a route without one is true); the source is not checked. Returns 0,
 * or -ENOMEM, or -E2BIG when the condition would build more than ROUTE_EVAL_MAX_BYTES. */
int route_eval(const struct route *r, struct route_message *m, enum route_truth *ret);

/* Evaluate and describe the condition's raw value, for tests and tooling: "undefined", "null",
 * "true", "false", "number 3.5", "string 'abc'" (the string is not escaped). */
int route_eval_describe(const struct route *r, struct route_message *m, char *buf, size_t size);

/* ---- the $edgeHub route table ------------------------------------------------------------ */

struct route_entry {
    char *name;
    struct route *route;
    uint32_t priority; /* 0-9, or ROUTE_PRIORITY_DEFAULT */
    uint32_t ttl_secs; /* as configured; 0 = use the global TTL */
    size_t sink;       /* index into the table's sinks */
};

struct route_table {
    struct route_entry *routes; /* in the order of the JSON object */
    size_t n_routes;
    struct route_sink *sinks; /* distinct endpoints, in order of first use */
    size_t n_sinks;
    int64_t ttl_secs;       /* global TTL in seconds, or ROUTE_TTL_FOREVER */
    int64_t max_size_bytes; /* storeLimits.maxSizeBytes, 0 when not set */
    char *schema_version;
};

/* Build the table from the $edgeHub "properties.desired" object. Every problem found is
 * appended to errors (when non-NULL) as "<path>: <reason>", e.g.
 * "routes.r1: column 23: expected INTO"; any problem fails the whole table with -EINVAL. */
int route_table_new(const json_t *desired, struct route_table **ret, struct lstrv *errors);
void route_table_free(struct route_table *t);
DEFINE_CLEANUP(struct route_table *, route_table_free)
#define _cleanup_route_table_ _cleanup_(route_table_freep)

struct route_match {
    size_t sink;       /* index into t->sinks */
    uint32_t priority; /* 0-9 or ROUTE_PRIORITY_DEFAULT */
    int64_t ttl_secs;  /* effective: the route's, else the global; ROUTE_TTL_FOREVER = never */
    const char *route; /* name of the route that won */
};

/* Which endpoints get the message. As in IoT Edge, several matching routes into one endpoint
 * yield one match, from the route with the best (lowest) priority; ties go to the route listed
 * first. ret must hold t->n_sinks entries. Returns the number of matches (0..n_sinks) or
 * -ENOMEM. A route whose evaluation fails (-E2BIG) does not match. */
int route_table_match(const struct route_table *t, struct route_message *m,
                      struct route_match *ret);
