/* endpoint.h — endpoints, one per route sink, with their durable queues (one per priority, in
 * store/), and the one ops table every endpoint sink sits behind: module inputs (input.c),
 * $upstream (upstream.c), twins (twin.c) and methods (methods.c). The router appends to an
 * endpoint's queues; the endpoint's sink drains them. Queue names are spelled here and only here:
 * "<endpoint id without its leading '/'>/p<0-9>" and ".../pd" for routes without a priority. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/errors.h"
#include "base/list.h"
#include "hub.h"
#include "message.h"

struct queue;
struct endpoint;

#define ENDPOINT_UPSTREAM_ID "$upstream" /* the route language's name of the upstream sink */
/* A leaf device's cloud-to-device queue: "/devices/<d>/messages/devicebound" (no route names it;
 * cloud.c fills it from the device's upstream session, input.c delivers it). */
#define ENDPOINT_C2D_PREFIX "/devices/"
#define ENDPOINT_C2D_SUFFIX "/messages/devicebound"

struct hub_sink_ops {
    const char *name;
    /* Lifecycle, in pipeline order (server.c); any may be NULL. */
    int (*start)(struct hub *h, struct lerr *err);
    void (*stop)(struct hub *h);
    /* The runtime file was reloaded (routes, identities, desired twins). */
    void (*reload)(struct hub *h);
    /* Queue-backed sinks: deliver what is due from ep's queues, highest priority first. */
    void (*drain)(struct hub *h, struct endpoint *ep, int64_t now);
    /* At most once and nothing queued before it: hand m over without the store, if a receiver is
     * waiting (true), else it is queued like the rest (false). NULL: always queued. */
    bool (*direct)(struct hub *h, struct endpoint *ep, const struct hub_message *m);
};

struct endpoint {
    const struct hub_sink_ops *sink;
    enum hub_sink_kind kind;
    char *id;     /* "/modules/m/inputs/i", "$upstream", "/devices/d/messages/devicebound" */
    char *module; /* HUB_SINK_INPUT: the module; HUB_SINK_C2D: the device's address */
    char *input;
    struct queue *q[HUB_PRIORITIES];
    bool in_use;       /* named by the current route table */
    uint32_t inflight; /* deliveries a receiver has not acknowledged yet (input.c) */
    struct llist node;
};

int endpoints_start(struct hub *h);
void endpoints_stop(struct hub *h);
/* Endpoints for every sink of t, and for the queues left by earlier route tables. */
int endpoints_sync(struct hub *h, const struct route_table *t, struct lerr *err);
struct endpoint *endpoint_find(struct hub *h, const char *id);
/* The endpoints in turn: the first after prev (NULL: the first of all), NULL after the last. */
struct endpoint *endpoints_next(struct hub *h, const struct endpoint *prev);
/* Append a stored message at priority prio (0-9, HUB_NO_PRIORITY) with its expiry (0: none).
 * 0, -ENOSPC (store full), or another -errno. */
int endpoint_append(struct hub *h, struct endpoint *ep, unsigned prio, const void *data, size_t len,
                    int64_t now, int64_t expiry);
bool endpoint_has_backlog(const struct endpoint *ep);
/* The cloud-to-device endpoint of leaf device device_id (created when missing), or NULL. */
struct endpoint *endpoint_c2d(struct hub *h, const char *device_id);
/* Something became deliverable (a new message, a receiver connected or acknowledged): deliver
 * soon, from the loop. ep may be NULL. */
void endpoint_kick(struct hub *h, struct endpoint *ep);
void endpoints_deliver_all(struct hub *h);
/* Endpoints no route names any more are removed once they are empty. */
void endpoints_prune(struct hub *h);
json_t *endpoints_status(struct hub *h);
