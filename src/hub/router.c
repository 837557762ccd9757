/* router.c — from a module's PUBLISH to stored copies in the endpoints' queues: classify the
 * topic, check the module publishes only to its own topics, build the message (system properties
 * the hub vouches for override the client's), match the route table, append one copy per matching
 * endpoint at the route's priority with its TTL, and acknowledge QoS 1 only after the group
 * commit made the batch durable (store_sync() once per loop iteration, PUBACKs in order). */
#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/str.h"
#include "base/timeutil.h"
#include "hub/hub.h"
#include "log/log.h"
#include "mqtt/iothub.h"

#define COMP "hub"

static int add_pending_ack(struct hub *h, struct conn *c, uint16_t packet_id)
{
    if (h->n_acks == h->cap_acks) {
        size_t cap = h->cap_acks ? h->cap_acks * 2 : 256;
        struct pending_ack *v = realloc(h->acks, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        h->acks = v;
        h->cap_acks = cap;
    }
    h->acks[h->n_acks++] = (struct pending_ack){c, packet_id};
    c->pending_acks++;
    return 0;
}

int router_ack(struct hub *h, struct conn *c, uint16_t packet_id)
{
    /* PUBACKs go out in the order the PUBLISHes came in (MQTT-4.6.0-2): behind the batch. */
    int r = add_pending_ack(h, c, packet_id);
    if (r == 0)
        router_schedule_commit(h);
    return r;
}

void router_conn_gone(struct hub *h, struct conn *c)
{
    commit_conn_gone(h, c);
    for (size_t i = 0; i < h->n_acks && c->pending_acks; i++)
        if (h->acks[i].c == c) {
            h->acks[i].c = NULL;
            c->pending_acks--;
        }
}

void router_commit(struct hub *h)
{
    h->commit_scheduled = false;
    commit_now(h);
}

static void commit_cb(evutil_socket_t fd, short what, void *arg)
{
    router_commit(arg);
}

void router_schedule_commit(struct hub *h)
{
    if (h->commit_scheduled)
        return;
    h->commit_scheduled = true;
    if (!h->commit_ev) {
        h->commit_ev = event_new(h->base, -1, 0, commit_cb, h);
        /* Lowest priority: every readable connection of this loop pass is routed first, so
         * one batch carries all of them. */
        event_priority_set(h->commit_ev, HUB_PRIORITY_LOW);
    }
    /* After every callback already active in this loop iteration: one sync per batch. */
    event_active(h->commit_ev, 0, 0);
}

/* Append the message to one endpoint queue. 0, or -ENOSPC (store full), or another -errno. */
static int store_copy(struct hub *h, struct endpoint *ep, const struct route_match *rm,
                      const struct lbuf *stored, int64_t now)
{
    unsigned prio = rm->priority <= 9 ? rm->priority : HUB_NO_PRIORITY;
    if (!ep->q[prio]) {
        char name[STORE_NAME_MAX];
        if (prio == HUB_NO_PRIORITY)
            snprintf(name, sizeof(name), "%s/pd", ep->id[0] == '/' ? ep->id + 1 : ep->id);
        else
            snprintf(name, sizeof(name), "%s/p%u", ep->id[0] == '/' ? ep->id + 1 : ep->id, prio);
        int r = store_queue(h->store, name, &ep->q[prio]);
        if (r < 0)
            return r;
    }
    int64_t expiry = rm->ttl_secs == ROUTE_TTL_FOREVER ? 0 : now + rm->ttl_secs * 1000;
    uint64_t seq;
    return queue_append(ep->q[prio], stored->data, stored->len, now, expiry, &seq);
}

static int route_message(struct hub *h, struct hub_message *m, uint8_t qos, bool *ret_refused)
{
    struct route_prop sys[HUB_SYS_COUNT];
    struct route_prop app[HUB_MESSAGE_MAX_APP];
    struct route_message rmsg;
    hub_message_route_view(m, sys, app, &rmsg);
    size_t n_sinks = h->routes ? h->routes->n_sinks : 0;
    if (n_sinks > h->cap_matches) {
        struct route_match *v = realloc(h->matches, n_sinks * sizeof(*v));
        if (!v) {
            route_message_release(&rmsg);
            return -ENOMEM;
        }
        h->matches = v;
        h->cap_matches = n_sinks;
    }
    struct route_match *matches = h->matches;
    int n = h->routes && n_sinks ? route_table_match(h->routes, &rmsg, matches) : 0;
    route_message_release(&rmsg);
    if (n < 0)
        return n;
    if (n == 0) {
        h->n.unrouted++;
        return 0;
    }
    int64_t now = ltime_now_ms();
    bool encoded = false;
    for (int i = 0; i < n; i++) {
        const struct route_sink *sink = &h->routes->sinks[matches[i].sink];
        struct endpoint *ep = endpoint_find(h, sink->id);
        if (!ep)
            continue;
        /* QoS 0 asks for no guarantee: hand it to a waiting receiver without touching disk. */
        if (qos == 0 && endpoint_try_direct(h, ep, m)) {
            h->n.direct++;
            h->n.routed++;
            continue;
        }
        if (!encoded) {
            lbuf_reset(&h->scratch_msg);
            int r = hub_message_encode(m, &h->scratch_msg);
            if (r < 0)
                return r;
            encoded = true;
        }
        int r = store_copy(h, ep, &matches[i], &h->scratch_msg, now);
        if (r < 0) {
            h->n.refused++;
            *ret_refused = true;
            hub_log_once(h, r == -ENOSPC ? "store-full" : "store-error",
                         "endpoint %s: message refused: %s", ep->id,
                         r == -ENOSPC ? "the store is full (storeLimits.maxSizeBytes or disk)"
                                      : strerror(-r));
            continue;
        }
        h->n.routed++;
        h->store_dirty = true;
        endpoint_kick(h, ep);
    }
    return n;
}

int router_inject(struct hub *h, struct hub_message *m)
{
    bool refused = false;
    int r = route_message(h, m, 1, &refused);
    if (h->store_dirty)
        router_schedule_commit(h);
    return r < 0 ? r : 0;
}

static char *dup_span(struct mqtt_str s)
{
    return lstr_ndup(s.ptr, s.len);
}

/* IoT Hub ids are case-insensitive. */
static bool span_eq_ci(struct mqtt_str a, const char *b)
{
    return a.len == strlen(b) && strncasecmp(a.ptr, b, a.len) == 0;
}

/* A PUBLISH to a topic the module may not use: counted, logged once per module. */
static int publish_refused(struct hub *h, const struct session *s, const struct mqtt_publish *p)
{
    char key[200];
    snprintf(key, sizeof(key), "pub:%s", s->module_id);
    h->n.unauthorized++;
    hub_log_once(h, key,
                 "%s: PUBLISH to \"%.*s\" refused: a module may only publish to its own "
                 "events, twin and method topics; closing",
                 s->client_id, (int)MIN(p->topic.len, (size_t)200), p->topic.ptr);
    return -EACCES;
}

static int publish(struct hub *h, struct session *s, struct conn *c, const struct mqtt_publish *p,
                   bool will)
{
    struct iothub_topic t;
    struct lerr err = {0};
    int r = iothub_topic_parse(p->topic.ptr, p->topic.len, &t, &err);
    if (r < 0 || t.kind == IOTHUB_TOPIC_UNKNOWN || t.kind == IOTHUB_TOPIC_DEVICE_EVENTS ||
        t.kind >= IOTHUB_TOPIC_MODULE_INPUT)
        return publish_refused(h, s, p);
    if (t.kind == IOTHUB_TOPIC_TWIN_GET || t.kind == IOTHUB_TOPIC_TWIN_REPORTED)
        return twin_publish(h, s, c, &t, p);
    if (t.kind == IOTHUB_TOPIC_METHOD_RESPONSE)
        return methods_response(h, s, &t, p);

    /* IOTHUB_TOPIC_MODULE_EVENTS: its own device and module only. */
    if (!span_eq_ci(t.device_id, s->device_id) || !span_eq_ci(t.module_id, s->module_id))
        return publish_refused(h, s, p);
    h->n.received++;
    struct iothub_props props;
    lbuf_reset(&h->scratch_props);
    if (lbuf_reserve(&h->scratch_props, t.propbag.len + 1) < 0)
        return -ENOMEM;
    if (t.propbag.len && iothub_props_parse(t.propbag.ptr, t.propbag.len, h->scratch_props.data,
                                            h->scratch_props.cap, &props, &err) < 0) {
        hub_log_once(h, "bag", "%s: %s; closing", s->client_id, err.msg);
        return -EPROTO;
    }
    if (!t.propbag.len)
        memset(&props, 0, sizeof(props));

    /* C strings for the message: one allocation for this message's lifetime. */
    struct hub_message m = {0};
    _cleanup_lstrv_ struct lstrv keep = LSTRV_INIT;
    for (int i = 0; i < IOTHUB_PROP_COUNT; i++) {
        if (!props.sys[i].ptr)
            continue;
        if (lstrv_push_take(&keep, dup_span(props.sys[i])) < 0)
            return -ENOMEM;
        m.sys[i] = keep.v[keep.n - 1];
    }
    for (size_t i = 0; i < props.n_app; i++) {
        if (lstrv_push_take(&keep, dup_span(props.app[i].key)) < 0 ||
            lstrv_push_take(&keep, dup_span(props.app[i].value)) < 0)
            return -ENOMEM;
        m.app_key[m.n_app] = keep.v[keep.n - 2];
        m.app_value[m.n_app] = keep.v[keep.n - 1];
        m.n_app++;
    }
    if (p->retain && m.n_app < HUB_MESSAGE_MAX_APP) {
        /* IoT Hub keeps no retained messages; it tells the receiver the flag was set. */
        m.app_key[m.n_app] = "mqtt-retain";
        m.app_value[m.n_app] = "true";
        m.n_app++;
    }
    if (will && m.n_app < HUB_MESSAGE_MAX_APP) {
        /* As IoT Hub marks a will it sends to the telemetry channel. */
        m.app_key[m.n_app] = "iothub-MessageType";
        m.app_value[m.n_app] = "Will";
        m.n_app++;
    }
    /* What the hub vouches for. */
    const char *output = m.sys[IOTHUB_PROP_OUTPUT_NAME];
    char source[300];
    if (output && *output)
        snprintf(source, sizeof(source), "/messages/modules/%s/outputs/%s", s->module_id, output);
    else
        snprintf(source, sizeof(source), "/messages/modules/%s", s->module_id);
    char enq[LTIME_RFC3339_MAX];
    int64_t now = ltime_now_ms();
    m.source = source;
    m.sys[IOTHUB_PROP_CONNECTION_DEVICE_ID] = s->device_id;
    m.sys[IOTHUB_PROP_CONNECTION_MODULE_ID] = s->module_id;
    m.sys[HUB_SYS_ENQUEUED_TIME] = ltime_format_rfc3339(now, enq);
    m.sys[HUB_SYS_CONNECTION_AUTH_METHOD] =
        "{\"scope\":\"module\",\"type\":\"sas\",\"issuer\":\"iothub\"}";
    m.enqueued_ms = now;
    m.body = p->payload;
    m.body_len = p->payload_len;

    bool refused = false;
    r = route_message(h, &m, p->qos, &refused);
    if (r < 0)
        return r;
    if (refused && p->qos == 1 && c) {
        /* MQTT 3.1.1 has no negative PUBACK. IoT Hub disconnects a device it cannot take
         * messages from; so does the hub, after logging and counting it (route_message). The
         * client retransmits after reconnecting; copies stored in other endpoints meanwhile
         * become duplicates, never losses. */
        if (c->state != CONN_CLOSING)
            log_warn(COMP, "%s: QoS 1 message refused (store full); closing so that it retransmits",
                     s->client_id);
        return -ENOSPC;
    }
    if (p->qos == 1 && c && !refused) {
        if (add_pending_ack(h, c, p->packet_id) < 0)
            return -ENOMEM;
        router_schedule_commit(h);
    } else if (h->store_dirty) {
        router_schedule_commit(h);
    }
    return 0;
}

int router_publish(struct hub *h, struct session *s, struct conn *c, const struct mqtt_publish *p)
{
    return publish(h, s, c, p, false);
}

int router_publish_will(struct hub *h, struct session *s, const struct mqtt_publish *p)
{
    return publish(h, s, NULL, p, true);
}
