/* endpoint.c — endpoints (one per route sink) and delivery from their queues. A module input
 * endpoint delivers to the module's session when it is connected and subscribed to its inputs:
 * priority 0 first, in order within a priority, QoS 1 deliveries bounded by hub.max_inflight per
 * connection and acknowledged to the store only on the module's PUBACK. When the module goes
 * away, what it had not acknowledged is delivered again. Endpoints whose routes are gone keep
 * delivering their backlog and are removed once empty. */
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
#define DELIVER_OUTPUT_HIGH (512u << 10)

struct endpoint *endpoint_find(struct hub *h, const char *id)
{
    for (struct endpoint *ep = h->endpoints; ep; ep = ep->next)
        if (strcmp(ep->id, id) == 0)
            return ep;
    return NULL;
}

static struct endpoint *endpoint_new(struct hub *h, const char *id)
{
    struct endpoint *ep = calloc(1, sizeof(*ep));
    if (!ep)
        return NULL;
    ep->hub = h;
    ep->id = strdup(id);
    if (strcmp(id, "$upstream") == 0) {
        ep->kind = ENDPOINT_UPSTREAM;
    } else {
        ep->kind = ENDPOINT_MODULE;
        /* "/modules/<m>/inputs/<i>" */
        const char *m = id + strlen("/modules/");
        const char *slash = strstr(m, "/inputs/");
        if (lstr_startswith(id, "/modules/") && slash) {
            ep->module = strndup(m, (size_t)(slash - m));
            ep->input = strdup(slash + strlen("/inputs/"));
        }
        if (!ep->module || !ep->input) {
            free(ep->module);
            free(ep->input);
            free(ep->id);
            free(ep);
            return NULL;
        }
    }
    if (!ep->id) {
        free(ep);
        return NULL;
    }
    char name[STORE_NAME_MAX];
    const char *base = id[0] == '/' ? id + 1 : id;
    for (int p = 0; p < HUB_PRIORITIES; p++) {
        if (p == HUB_NO_PRIORITY)
            snprintf(name, sizeof(name), "%s/pd", base);
        else
            snprintf(name, sizeof(name), "%s/p%d", base, p);
        ep->q[p] = store_queue_find(h->store, name);
    }
    ep->next = h->endpoints;
    h->endpoints = ep;
    return ep;
}

static void endpoint_free(struct endpoint *ep)
{
    free(ep->id);
    free(ep->module);
    free(ep->input);
    free(ep);
}

/* Queue names are "<endpoint id without the leading '/'>/p<0-9|d>". */
static char *endpoint_id_of_queue(const char *qname)
{
    const char *slash = strrchr(qname, '/');
    if (!slash || slash == qname)
        return NULL;
    const char *p = slash + 1;
    if (!(p[0] == 'p' && ((p[1] >= '0' && p[1] <= '9') || p[1] == 'd') && p[2] == 0))
        return NULL;
    size_t n = (size_t)(slash - qname);
    if (n == strlen("$upstream") && strncmp(qname, "$upstream", n) == 0)
        return strdup("$upstream");
    return lstr_printf("/%.*s", (int)n, qname);
}

int endpoints_sync(struct hub *h, const struct route_table *t, struct lerr *err)
{
    for (struct endpoint *ep = h->endpoints; ep; ep = ep->next)
        ep->in_use = false;
    for (size_t i = 0; t && i < t->n_sinks; i++) {
        struct endpoint *ep = endpoint_find(h, t->sinks[i].id);
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
            (lstr_startswith(id, "/modules/") || strcmp(id, "$upstream") == 0))
            endpoint_new(h, id);
    }
    endpoints_deliver_all(h);
    return 0;
}

/* The connected session of the endpoint's module, if it subscribed to this input; *ret_qos is
 * the QoS to deliver with. */
static struct session *receiver(struct hub *h, const struct endpoint *ep, uint8_t *ret_qos)
{
    for (struct session *s = h->sessions; s; s = s->next) {
        if (!s->conn || s->conn->state != CONN_ACTIVE || strcmp(s->module_id, ep->module) != 0)
            continue;
        int qos = session_input_qos(s, ep->input);
        if (qos < 0)
            return NULL; /* one session per module (client id device/module) */
        *ret_qos = qos ? 1 : 0;
        return s;
    }
    return NULL;
}

static int inflight_add(struct conn *c, struct endpoint *ep, int prio, uint64_t seq,
                        uint16_t packet_id)
{
    if (c->n_inflight == c->cap_inflight) {
        size_t cap = c->cap_inflight ? c->cap_inflight * 2 : 16;
        struct inflight *v = realloc(c->inflight, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        c->inflight = v;
        c->cap_inflight = cap;
    }
    c->inflight[c->n_inflight++] = (struct inflight){packet_id, ep, (uint8_t)prio, seq};
    return 0;
}

static int send_input(struct hub *h, struct session *s, struct endpoint *ep,
                      const struct hub_message *m, uint8_t qos, bool dup, uint16_t packet_id)
{
    struct iothub_props props;
    hub_message_props(m, &props);
    lbuf_reset(&h->scratch_topic);
    int r = iothub_topic_module_input(&h->scratch_topic, mqtt_str_c(s->device_id),
                                      mqtt_str_c(s->module_id), mqtt_str_c(ep->input), &props);
    if (r < 0)
        return r;
    return conn_send_publish(s->conn, h->scratch_topic.data, h->scratch_topic.len, qos, dup,
                             packet_id, m->body, m->body_len);
}

static bool has_backlog(struct endpoint *ep)
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

bool endpoint_try_direct(struct hub *h, struct endpoint *ep, const struct hub_message *m)
{
    if (ep->kind != ENDPOINT_MODULE || has_backlog(ep))
        return false;
    uint8_t qos;
    struct session *s = receiver(h, ep, &qos);
    if (!s || conn_output_pending(s->conn) > DELIVER_OUTPUT_HIGH)
        return false;
    if (send_input(h, s, ep, m, 0, false, 0) < 0)
        return false;
    h->n.delivered++;
    return true;
}

static void deliver_module(struct hub *h, struct endpoint *ep, int64_t now)
{
    uint8_t qos;
    struct session *s = receiver(h, ep, &qos);
    if (!s)
        return;
    struct conn *c = s->conn;
    size_t window = (size_t)h->cfg.hub.max_inflight;
    for (int p = 0; p < HUB_PRIORITIES; p++) {
        struct queue *q = ep->q[p];
        if (!q)
            continue;
        for (;;) {
            if (c->n_inflight >= window || conn_output_pending(c) > DELIVER_OUTPUT_HIGH)
                return; /* resumes on PUBACK or when the output drains */
            struct queue_record rec;
            int r = queue_next(q, now, &rec);
            if (r < 0) {
                log_error(COMP, "endpoint %s: reading its queue: %s", ep->id, strerror(-r));
                return;
            }
            if (r == 0)
                break;
            struct hub_message m;
            struct lerr err = {0};
            if (hub_message_decode(rec.data, rec.len, &m, &err) < 0) {
                log_error(COMP, "endpoint %s: dropping an unreadable message: %s", ep->id, err.msg);
                queue_ack(q, rec.seq);
                continue;
            }
            uint16_t pid = qos ? conn_next_packet_id(c) : 0;
            if (send_input(h, s, ep, &m, qos, rec.redelivery, pid) < 0) {
                queue_rewind_inflight(q);
                return;
            }
            h->n.delivered++;
            if (qos) {
                if (inflight_add(c, ep, p, rec.seq, pid) < 0) {
                    queue_rewind_inflight(q);
                    return;
                }
            } else {
                queue_ack(q, rec.seq);
            }
        }
        /* Strict priority: a lower priority waits while this one still has undelivered
         * messages (e.g. held back by the store's own in-flight window). */
        struct queue_stats st;
        queue_get_stats(q, &st);
        if (st.depth > st.inflight)
            return;
    }
}

void endpoints_deliver_all(struct hub *h)
{
    h->deliver_scheduled = false;
    int64_t now = ltime_now_ms();
    for (struct endpoint *ep = h->endpoints; ep; ep = ep->next) {
        if (ep->kind == ENDPOINT_MODULE)
            deliver_module(h, ep, now);
        else
            upstream_deliver(h, ep, now);
    }
}

static void deliver_cb(evutil_socket_t fd, short what, void *arg)
{
    endpoints_deliver_all(arg);
}

void endpoint_kick(struct hub *h, struct endpoint *ep)
{
    if (h->deliver_scheduled)
        return;
    h->deliver_scheduled = true;
    if (!h->deliver_ev)
        h->deliver_ev = event_new(h->base, -1, 0, deliver_cb, h);
    event_active(h->deliver_ev, 0, 0);
}

void endpoints_kick_module(struct hub *h, const char *module)
{
    endpoint_kick(h, NULL);
}

void endpoint_puback(struct hub *h, struct conn *c, uint16_t packet_id)
{
    for (size_t i = 0; i < c->n_inflight; i++) {
        struct inflight *f = &c->inflight[i];
        if (f->packet_id != packet_id)
            continue;
        struct endpoint *ep = f->ep;
        if (ep->q[f->prio])
            queue_ack(ep->q[f->prio], f->seq);
        h->n.acked++;
        c->inflight[i] = c->inflight[--c->n_inflight];
        endpoint_kick(h, ep);
        return;
    }
    /* A PUBACK for nothing we sent: harmless (e.g. after a takeover); ignore it. */
}

void endpoint_conn_gone(struct hub *h, struct conn *c)
{
    /* Everything this connection had not acknowledged is delivered again, in order. */
    for (size_t i = 0; i < c->n_inflight; i++) {
        struct inflight *f = &c->inflight[i];
        if (f->ep->q[f->prio])
            queue_rewind_inflight(f->ep->q[f->prio]);
    }
    c->n_inflight = 0;
}

void endpoints_free(struct hub *h)
{
    while (h->endpoints) {
        struct endpoint *ep = h->endpoints;
        h->endpoints = ep->next;
        endpoint_free(ep);
    }
}

/* Endpoints no route names any more are removed once they are empty. */
void endpoints_prune(struct hub *h)
{
    for (struct endpoint **pp = &h->endpoints; *pp;) {
        struct endpoint *ep = *pp;
        if (ep->in_use || has_backlog(ep)) {
            pp = &ep->next;
            continue;
        }
        bool busy = false;
        for (struct conn *c = h->conns; c && !busy; c = c->next)
            for (size_t i = 0; i < c->n_inflight; i++)
                if (c->inflight[i].ep == ep)
                    busy = true;
        if (busy) {
            pp = &ep->next;
            continue;
        }
        for (int p = 0; p < HUB_PRIORITIES; p++) {
            if (!ep->q[p])
                continue;
            struct queue_stats st;
            queue_get_stats(ep->q[p], &st);
            h->n.expired += st.expired; /* the status keeps counting them */
            store_queue_remove(h->store, ep->q[p]);
        }
        *pp = ep->next;
        log_info(COMP, "endpoint %s: no route uses it and it is empty; removed", ep->id);
        endpoint_free(ep);
    }
}

json_t *endpoints_status(struct hub *h)
{
    json_t *arr = json_array();
    for (struct endpoint *ep = h->endpoints; ep; ep = ep->next) {
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
