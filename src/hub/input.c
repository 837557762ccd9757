/* input.c — delivery from module-input endpoints to their module's client, and from a leaf
 * device's cloud-to-device endpoint to the device's client (input.h). When the client goes, what
 * it had not acknowledged is delivered again, in order, marked as a redelivery. */
#include "input.h"

#include <string.h>

#include "clients.h"
#include "metrics.h"
#include "log/log.h"
#include "store/store.h"

#define COMP "hub"

/* The client of the endpoint's module, if it listens to this input; *ret_qos is what it asked
 * for. */
static struct hub_client *receiver(struct hub *h, const struct endpoint *ep, int *ret_qos)
{
    struct hub_client *c = clients_find(h, ep->module);
    if (!c)
        return NULL;
    int qos = ep->kind == HUB_SINK_C2D ? c->ops->listens(c, HUB_STREAM_C2D, NULL)
                                       : c->ops->listens(c, HUB_STREAM_INPUTS, ep->input);
    if (qos < 0)
        return NULL;
    *ret_qos = qos;
    return c;
}

static void sent(struct hub *h, const struct hub_client *c, const struct endpoint *ep,
                 const struct hub_message *m, unsigned prio)
{
    char to[300];
    hub_metrics_client_id(c->id->device_id, c->id->module_id, to, sizeof(to));
    hub_metrics_sent(h, m, to, ep->input, prio);
}

static bool input_direct(struct hub *h, struct endpoint *ep, const struct hub_message *m)
{
    if (endpoint_has_backlog(ep))
        return false;
    int qos;
    struct hub_client *c = receiver(h, ep, &qos);
    if (!c || !c->ops->ready(c, false))
        return false;
    if (c->ops->deliver(c, ep->input, m, NULL, false) < 0)
        return false;
    h->n.delivered++;
    sent(h, c, ep, m, HUB_NO_PRIORITY);
    return true;
}

static void input_drain(struct hub *h, struct endpoint *ep, int64_t now)
{
    int qos;
    struct hub_client *c = receiver(h, ep, &qos);
    if (!c)
        return;
    for (int p = 0; p < HUB_PRIORITIES; p++) {
        struct queue *q = ep->q[p];
        if (!q)
            continue;
        for (;;) {
            if (!c->ops->ready(c, true))
                return; /* resumes when it acknowledges or its output drains */
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
            struct hub_delivery d = {ep, (uint8_t)p, rec.seq, 0, NULL};
            if (qos) { /* acknowledged: its send duration is measured */
                char to[300];
                hub_metrics_client_id(c->id->device_id, c->id->module_id, to, sizeof(to));
                d.send = hub_metrics_send_series(h, &m, to, ep->input ? ep->input : "");
                d.handed_us = hub_metrics_now_us();
            }
            if (c->ops->deliver(c, ep->input, &m, qos ? &d : NULL, rec.redelivery) < 0) {
                queue_rewind_inflight(q);
                return;
            }
            h->n.delivered++;
            sent(h, c, ep, &m, (unsigned)p);
            if (qos)
                ep->inflight++;
            else
                queue_ack(q, rec.seq);
        }
        /* Strict priority: a lower priority waits while this one still has undelivered
         * messages (e.g. held back by the store's own in-flight window). */
        struct queue_stats st;
        queue_get_stats(q, &st);
        if (st.depth > st.inflight)
            return;
    }
}

void input_delivery_done(struct hub *h, const struct hub_delivery *d, bool acked)
{
    struct endpoint *ep = d->ep;
    struct queue *q = ep->q[d->prio];
    ep->inflight--;
    if (!acked) {
        if (q)
            queue_rewind_inflight(q);
        return;
    }
    if (q)
        queue_ack(q, d->seq);
    h->n.acked++;
    hub_metrics_send_done(h, d->send, d->handed_us);
    endpoint_kick(h, ep);
}

const struct hub_sink_ops input_sink_ops = {
    .name = "module input",
    .drain = input_drain,
    .direct = input_direct,
};

/* Cloud-to-device messages are never handed over without the store: IoT Hub's acknowledgement
 * waits for them to be durable (cloud.c). */
const struct hub_sink_ops c2d_sink_ops = {
    .name = "cloud-to-device",
    .drain = input_drain,
};
