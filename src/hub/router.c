/* router.c — from a message to stored copies in the endpoints' queues (router.h): the system
 * properties the hub vouches for override the sender's, the route table picks the endpoints, one
 * copy goes to each at the best priority among its matching routes, with the route's TTL. */
#include "router.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/timeutil.h"
#include "commit.h"
#include "endpoint.h"
#include "metrics.h"
#include "route/route.h"

struct router {
    struct lbuf stored;          /* the message's stored form, reused for every message */
    struct route_match *matches; /* room for every sink of the route table */
    size_t cap_matches;
    /* enqueuedTime of the last message: formatting costs more than routing, and within one
     * second only the milliseconds change */
    int64_t enq_second;
    char enq[LTIME_RFC3339_MAX];
};

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" for now, into the router's buffer. */
static const char *enqueued_time(struct router *rt, int64_t now)
{
    int64_t sec = now / 1000;
    size_t n = strlen(rt->enq);
    if (sec != rt->enq_second || n < 5) {
        ltime_format_rfc3339(now, rt->enq);
        rt->enq_second = sec;
        return rt->enq;
    }
    int ms = (int)(now % 1000);
    rt->enq[n - 4] = (char)('0' + ms / 100);
    rt->enq[n - 3] = (char)('0' + ms / 10 % 10);
    rt->enq[n - 2] = (char)('0' + ms % 10);
    return rt->enq;
}

int router_start(struct hub *h)
{
    h->router = calloc(1, sizeof(*h->router));
    if (!h->router)
        return -ENOMEM;
    h->router->stored = (struct lbuf)LBUF_INIT;
    h->router->enq_second = -1;
    return 0;
}

void router_stop(struct hub *h)
{
    if (!h->router)
        return;
    lbuf_free(&h->router->stored);
    free(h->router->matches);
    free(h->router);
    h->router = NULL;
}

/* Route m and store its copies; *ret_refused when an endpoint could not take one. The number of
 * matching endpoints, or -errno. */
static int route_message(struct hub *h, struct hub_message *m, bool at_least_once,
                         bool *ret_refused)
{
    struct router *rt = h->router;
    struct route_prop sys[HUB_SYS_COUNT];
    struct route_prop app[HUB_MESSAGE_MAX_APP];
    struct route_message rmsg;
    hub_message_route_view(m, sys, app, &rmsg);
    size_t n_sinks = h->routes ? h->routes->n_sinks : 0;
    if (n_sinks > rt->cap_matches) {
        struct route_match *v = realloc(rt->matches, n_sinks * sizeof(*v));
        if (!v) {
            route_message_release(&rmsg);
            return -ENOMEM;
        }
        rt->matches = v;
        rt->cap_matches = n_sinks;
    }
    struct route_match *matches = rt->matches;
    int n = h->routes && n_sinks ? route_table_match(h->routes, &rmsg, matches) : 0;
    route_message_release(&rmsg);
    if (n < 0)
        return n;
    if (n == 0) {
        h->n.unrouted++;
        char id[300];
        const char *output;
        hub_metrics_sender(m, id, sizeof(id), &output);
        hub_metrics_add(h, HM_MESSAGES_DROPPED, (const char *[]){"no_route", id, output}, 1);
        return 0;
    }
    int64_t now = ltime_now_ms();
    bool encoded = false;
    for (int i = 0; i < n; i++) {
        const struct route_sink *sink = &h->routes->sinks[matches[i].sink];
        struct endpoint *ep = endpoint_find(h, sink->id);
        if (!ep)
            continue;
        /* At most once asks for no guarantee: hand it to a waiting receiver without the disk. */
        if (!at_least_once && ep->sink->direct && ep->sink->direct(h, ep, m)) {
            h->n.direct++;
            h->n.routed++;
            continue;
        }
        if (!encoded) {
            lbuf_reset(&rt->stored);
            int r = hub_message_encode(m, &rt->stored);
            if (r < 0)
                return r;
            encoded = true;
        }
        unsigned prio = matches[i].priority <= 9 ? matches[i].priority : HUB_NO_PRIORITY;
        int64_t expiry =
            matches[i].ttl_secs == ROUTE_TTL_FOREVER ? 0 : now + matches[i].ttl_secs * 1000;
        int r = endpoint_append(h, ep, prio, rt->stored.data, rt->stored.len, now, expiry);
        if (r < 0) {
            h->n.refused++;
            *ret_refused = true;
            char id[300];
            const char *output;
            hub_metrics_sender(m, id, sizeof(id), &output);
            hub_metrics_add(h, HM_MESSAGES_UNACK, (const char *[]){"storage_failure", id, output},
                            1);
            hub_refused(h, r == -ENOSPC ? HUB_REFUSAL_STORE_FULL : HUB_REFUSAL_STORE_ERROR, ep->id,
                        "endpoint %s: message refused: %s", ep->id,
                        r == -ENOSPC ? "the store is full (storeLimits.maxSizeBytes or disk)"
                                     : strerror(-r));
            continue;
        }
        h->n.routed++;
        commit_dirty(h);
        endpoint_kick(h, ep);
    }
    return n;
}

int router_inject(struct hub *h, struct hub_message *m)
{
    bool refused = false;
    int r = route_message(h, m, true, &refused);
    return r < 0 ? r : 0;
}

int router_publish(struct hub *h, const struct hub_identity *from, struct hub_message *m,
                   bool at_least_once, struct hub_client *ack_to, uint32_t token)
{
    /* What the hub vouches for. A leaf device's telemetry comes from /messages/events, as edgeHub
     * names it (a route from all messages takes it, one from /messages/modules does not), without
     * a module or an output. */
    bool device = from->kind == HUB_IDENTITY_DEVICE;
    const char *output = device ? NULL : m->sys[IOTHUB_PROP_OUTPUT_NAME];
    char source[300];
    if (device)
        snprintf(source, sizeof(source), "/messages/events");
    else if (output && *output)
        snprintf(source, sizeof(source), "/messages/modules/%s/outputs/%s", from->module_id,
                 output);
    else
        snprintf(source, sizeof(source), "/messages/modules/%s", from->module_id);
    int64_t now = ltime_now_ms();
    m->source = source;
    if (device)
        m->sys[IOTHUB_PROP_OUTPUT_NAME] = NULL;
    m->sys[IOTHUB_PROP_CONNECTION_DEVICE_ID] = from->device_id;
    m->sys[IOTHUB_PROP_CONNECTION_MODULE_ID] = from->module_id;
    m->sys[HUB_SYS_ENQUEUED_TIME] = enqueued_time(h->router, now);
    static const char *const auth_methods[2][2] = {
        {"{\"scope\":\"module\",\"type\":\"sas\",\"issuer\":\"iothub\"}",
         "{\"scope\":\"module\",\"type\":\"x509\",\"issuer\":\"iothub\"}"},
        {"{\"scope\":\"device\",\"type\":\"sas\",\"issuer\":\"iothub\"}",
         "{\"scope\":\"device\",\"type\":\"x509\",\"issuer\":\"iothub\"}"},
    };
    m->sys[HUB_SYS_CONNECTION_AUTH_METHOD] = auth_methods[device][from->method == HUB_AUTH_X509];
    m->enqueued_ms = now;
    h->n.received++;
    {
        char id[300];
        const char *out;
        hub_metrics_sender(m, id, sizeof(id), &out);
        hub_metrics_add(h, HM_MESSAGES_RECEIVED, (const char *[]){id, out}, 1);
        hub_metrics_observe(h, HM_MESSAGE_SIZE, (const char *[]){id}, (double)m->body_len);
    }

    bool refused = false;
    int r = route_message(h, m, at_least_once, &refused);
    m->source = m->sys[HUB_SYS_ENQUEUED_TIME] = NULL; /* they pointed here */
    if (r < 0)
        return r;
    if (refused && at_least_once)
        return -ENOSPC;
    if (at_least_once && ack_to)
        return commit_ack(h, ack_to, token);
    return 0;
}
