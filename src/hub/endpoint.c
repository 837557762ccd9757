/* endpoint.c — endpoints and their queues (endpoint.h): created for the sinks of the route table
 * and for the queues earlier route tables left behind (their backlog is still delivered), removed
 * once no route names them and they are empty; delivery runs from the loop, each endpoint's sink
 * draining its queues. */
#include "endpoint.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/str.h"
#include "base/timeutil.h"
#include "log/log.h"
#include "route/route.h"
#include "store/store.h"

#define COMP "hub"
#define MODULES_PREFIX "/modules/"
#define INPUTS_INFIX "/inputs/"

struct endpoints {
    struct llist list;
    struct event *deliver_ev;
    bool deliver_scheduled;
};

/* ------------------------------------------------------------------ queue names */

static void endpoint_queue_name(const struct endpoint *ep, unsigned prio,
                                char out[static STORE_NAME_MAX])
{
    const char *base = ep->id[0] == '/' ? ep->id + 1 : ep->id;
    if (prio == HUB_NO_PRIORITY)
        snprintf(out, STORE_NAME_MAX, "%s/pd", base);
    else
        snprintf(out, STORE_NAME_MAX, "%s/p%u", base, prio);
}

/* The endpoint id a queue name belongs to, or NULL when it is none of ours. */
static char *endpoint_id_of_queue(const char *qname)
{
    const char *slash = strrchr(qname, '/');
    if (!slash || slash == qname)
        return NULL;
    const char *p = slash + 1;
    if (!(p[0] == 'p' && ((p[1] >= '0' && p[1] <= '9') || p[1] == 'd') && p[2] == 0))
        return NULL;
    size_t n = (size_t)(slash - qname);
    if (n == strlen(ENDPOINT_UPSTREAM_ID) && strncmp(qname, ENDPOINT_UPSTREAM_ID, n) == 0)
        return strdup(ENDPOINT_UPSTREAM_ID);
    return lstr_printf("/%.*s", (int)n, qname);
}

/* ------------------------------------------------------------------ endpoints */

struct endpoint *endpoint_find(struct hub *h, const char *id)
{
    struct endpoint *ep;
    llist_foreach (ep, &h->endpoints->list, node)
        if (strcmp(ep->id, id) == 0)
            return ep;
    return NULL;
}

static void endpoint_free(struct endpoint *ep)
{
    if (!ep)
        return;
    llist_remove(&ep->node);
    free(ep->id);
    free(ep->module);
    free(ep->input);
    free(ep);
}

static struct endpoint *endpoint_new(struct hub *h, const char *id)
{
    struct endpoint *ep = calloc(1, sizeof(*ep));
    if (!ep)
        return NULL;
    ep->id = strdup(id);
    if (!ep->id) {
        endpoint_free(ep);
        return NULL;
    }
    size_t idlen = strlen(id), pre = strlen(ENDPOINT_C2D_PREFIX), suf = strlen(ENDPOINT_C2D_SUFFIX);
    if (strcmp(id, ENDPOINT_UPSTREAM_ID) == 0) {
        ep->kind = HUB_SINK_UPSTREAM;
    } else if (lstr_startswith(id, ENDPOINT_C2D_PREFIX)) {
        /* "/devices/<d>/messages/devicebound": delivered to the address "devices/<d>" */
        ep->kind = HUB_SINK_C2D;
        if (idlen > pre + suf && strcmp(id + idlen - suf, ENDPOINT_C2D_SUFFIX) == 0 &&
            !memchr(id + pre, '/', idlen - pre - suf))
            ep->module = strndup(id + 1, idlen - 1 - suf);
        if (!ep->module) {
            endpoint_free(ep);
            return NULL;
        }
    } else {
        ep->kind = HUB_SINK_INPUT;
        /* "/modules/<m>/inputs/<i>" */
        const char *m = id + strlen(MODULES_PREFIX);
        const char *slash = strstr(m, INPUTS_INFIX);
        if (lstr_startswith(id, MODULES_PREFIX) && slash) {
            ep->module = strndup(m, (size_t)(slash - m));
            ep->input = strdup(slash + strlen(INPUTS_INFIX));
        }
        if (!ep->module || !ep->input) {
            endpoint_free(ep);
            return NULL;
        }
    }
    ep->sink = h->sinks[ep->kind];
    char name[STORE_NAME_MAX];
    for (unsigned p = 0; p < HUB_PRIORITIES; p++) {
        endpoint_queue_name(ep, p, name);
        ep->q[p] = store_queue_find(h->store, name);
    }
    llist_add_head(&h->endpoints->list, &ep->node);
    return ep;
}

int endpoints_start(struct hub *h)
{
    h->endpoints = calloc(1, sizeof(*h->endpoints));
    if (!h->endpoints)
        return -ENOMEM;
    llist_init(&h->endpoints->list);
    return 0;
}

void endpoints_stop(struct hub *h)
{
    struct endpoints *e = h->endpoints;
    if (!e)
        return;
    struct endpoint *ep, *tmp;
    llist_foreach_safe (ep, tmp, &e->list, node)
        endpoint_free(ep);
    if (e->deliver_ev)
        event_free(e->deliver_ev);
    free(e);
    h->endpoints = NULL;
}

int endpoints_sync(struct hub *h, const struct route_table *t, struct lerr *err)
{
    struct endpoint *ep;
    llist_foreach (ep, &h->endpoints->list, node)
        ep->in_use = false;
    for (size_t i = 0; t && i < t->n_sinks; i++) {
        ep = endpoint_find(h, t->sinks[i].id);
        if (!ep)
            ep = endpoint_new(h, t->sinks[i].id);
        if (!ep)
            return lerr_set(err, -ENOMEM, "endpoint %s: out of memory", t->sinks[i].id);
        ep->in_use = true;
    }
    /* Queues of endpoints no route names any more still hold messages addressed to them. */
    for (size_t i = 0; i < store_queue_count(h->store); i++) {
        struct queue *q = store_queue_at(h->store, i);
        _cleanup_free_ char *id = endpoint_id_of_queue(queue_name(q));
        if (id && !endpoint_find(h, id) &&
            (lstr_startswith(id, MODULES_PREFIX) || lstr_startswith(id, ENDPOINT_C2D_PREFIX) ||
             strcmp(id, ENDPOINT_UPSTREAM_ID) == 0))
            endpoint_new(h, id);
    }
    endpoints_deliver_all(h);
    return 0;
}

int endpoint_append(struct hub *h, struct endpoint *ep, unsigned prio, const void *data, size_t len,
                    int64_t now, int64_t expiry)
{
    if (!ep->q[prio]) {
        char name[STORE_NAME_MAX];
        endpoint_queue_name(ep, prio, name);
        int r = store_queue(h->store, name, &ep->q[prio]);
        if (r < 0)
            return r;
    }
    uint64_t seq;
    return queue_append(ep->q[prio], data, len, now, expiry, &seq);
}

struct endpoint *endpoint_c2d(struct hub *h, const char *device_id)
{
    char id[STORE_NAME_MAX];
    int n = snprintf(id, sizeof(id), ENDPOINT_C2D_PREFIX "%s" ENDPOINT_C2D_SUFFIX, device_id);
    if (n < 0 || (size_t)n >= sizeof(id) - 4 || strchr(device_id, '/') || !*device_id)
        return NULL;
    struct endpoint *ep = endpoint_find(h, id);
    return ep ? ep : endpoint_new(h, id);
}

bool endpoint_has_backlog(const struct endpoint *ep)
{
    for (int p = 0; p < HUB_PRIORITIES; p++) {
        if (!ep->q[p])
            continue;
        struct queue_stats st;
        queue_get_stats(ep->q[p], &st);
        if (st.depth > 0)
            return true;
    }
    return false;
}

/* ------------------------------------------------------------------ delivery */

void endpoints_deliver_all(struct hub *h)
{
    h->endpoints->deliver_scheduled = false;
    int64_t now = ltime_now_ms();
    struct endpoint *ep;
    llist_foreach (ep, &h->endpoints->list, node)
        if (ep->sink && ep->sink->drain)
            ep->sink->drain(h, ep, now);
    if (h->clients_changed)
        h->clients_changed(h);
}

static void deliver_cb(evutil_socket_t fd, short what, void *arg)
{
    endpoints_deliver_all(arg);
}

void endpoint_kick(struct hub *h, struct endpoint *ep)
{
    struct endpoints *e = h->endpoints;
    if (!e || e->deliver_scheduled)
        return;
    e->deliver_scheduled = true;
    if (!e->deliver_ev)
        e->deliver_ev = event_new(h->base, -1, 0, deliver_cb, h);
    event_active(e->deliver_ev, 0, 0);
}

void endpoints_prune(struct hub *h)
{
    struct endpoint *ep, *tmp;
    llist_foreach_safe (ep, tmp, &h->endpoints->list, node) {
        if (ep->in_use || ep->inflight || endpoint_has_backlog(ep))
            continue;
        for (int p = 0; p < HUB_PRIORITIES; p++) {
            if (!ep->q[p])
                continue;
            struct queue_stats st;
            queue_get_stats(ep->q[p], &st);
            h->n.expired += st.expired; /* the status keeps counting them */
            store_queue_remove(h->store, ep->q[p]);
        }
        log_info(COMP, "endpoint %s: no route uses it and it is empty; removed", ep->id);
        endpoint_free(ep);
    }
}

struct endpoint *endpoints_next(struct hub *h, const struct endpoint *prev)
{
    const struct llist *n = prev ? prev->node.next : h->endpoints->list.next;
    return n == &h->endpoints->list ? NULL : llist_entry(n, struct endpoint, node);
}

json_t *endpoints_status(struct hub *h)
{
    json_t *arr = json_array();
    struct endpoint *ep;
    llist_foreach (ep, &h->endpoints->list, node) {
        json_t *qs = json_array();
        uint64_t depth = 0, bytes = 0;
        for (int p = 0; p < HUB_PRIORITIES; p++) {
            if (!ep->q[p])
                continue;
            struct queue_stats st;
            queue_get_stats(ep->q[p], &st);
            depth += st.depth;
            bytes += st.bytes;
            json_t *o =
                json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "priority",
                          p == HUB_NO_PRIORITY ? "default" : (char[]){'0' + (char)p, 0}, "depth",
                          (json_int_t)st.depth, "inflight", (json_int_t)st.inflight, "bytes",
                          (json_int_t)st.bytes, "appended", (json_int_t)st.appended, "delivered",
                          (json_int_t)st.delivered, "expired", (json_int_t)st.expired, "refused",
                          (json_int_t)st.refused);
            json_array_append_new(qs, o);
        }
        json_array_append_new(arr, json_pack("{s:s, s:b, s:I, s:I, s:o}", "endpoint", ep->id,
                                             "inUse", ep->in_use, "depth", (json_int_t)depth,
                                             "bytes", (json_int_t)bytes, "queues", qs));
    }
    return arr;
}
