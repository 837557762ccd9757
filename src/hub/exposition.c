/* exposition.c — the hub's metrics in the Prometheus text format (exposition.h). */
#include "exposition.h"

#include <stdio.h>
#include <string.h>

#include "base/crypto.h"
#include "base/prom.h"
#include "base/timeutil.h"
#include "clients.h"
#include "endpoint.h"
#include "head.h"
#include "metrics.h"
#include "upstream.h"
#include "store/store.h"

/* IoT Edge marks the series its own telemetry may carry; ledge sends none, but keeps the label
 * so that queries written for IoT Edge's output select the same series. */
static const struct prom_label ms_telemetry = {"ms_telemetry", "True"};

const char *hub_instance_number(struct hub *h)
{
    static char id[37];
    if (!id[0]) {
        uint8_t b[16] = {0};
        lcrypto_random(b, sizeof(b));
        b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
        b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
        snprintf(id, sizeof(id),
                 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                 b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                 b[15]);
    }
    (void)h;
    return id;
}

/* IoT Edge's endpoint ids: "iothub" for the upstream, "<device>/<module>/<input>" for an input. */
static const char *endpoint_label(struct hub *h, const struct endpoint *ep, char *buf, size_t size)
{
    if (ep->kind == HUB_SINK_UPSTREAM)
        return "iothub";
    if (ep->kind == HUB_SINK_INPUT && ep->module && ep->input) {
        snprintf(buf, size, "%s/%s/%s", h->rt.device_id ? h->rt.device_id : "", ep->module,
                 ep->input);
        return buf;
    }
    return ep->id[0] == '/' ? ep->id + 1 : ep->id;
}

static void counters(struct hub *h, struct prom_writer *w, enum hub_metric m, const char *help)
{
    prom_family(w, hub_metrics_name(m), PROM_COUNTER, help);
    hub_metrics_write(h, m, w, &ms_telemetry, 1);
}

int hub_exposition(struct hub *h, struct lbuf *out)
{
    const char *dev = h->rt.device_id ? h->rt.device_id : h->cfg.device.id;
    const struct prom_label common[] = {
        {"iothub", h->rt.iothub_hostname ? h->rt.iothub_hostname : h->cfg.device.iothub_hostname},
        {"edge_device", dev},
        {"instance_number", hub_instance_number(h)},
    };
    struct prom_writer w;
    prom_writer_init(&w, out, common, ARRAY_SIZE(common));
    char self[300];
    hub_metrics_client_id(dev, "$edgeHub", self, sizeof(self));

    counters(h, &w, HM_MESSAGES_RECEIVED, "Messages received from clients");
    counters(h, &w, HM_MESSAGES_SENT, "Messages sent to clients or upstream");

    /* Dropped: no route (counted by sender), TTL expiry (the store's count; it does not read
     * an expired record, so the sender labels are empty). */
    uint64_t expired = h->n.expired, qbytes = 0;
    for (size_t i = 0; i < store_queue_count(h->store); i++) {
        struct queue_stats qs;
        queue_get_stats(store_queue_at(h->store, i), &qs);
        expired += qs.expired;
    }
    prom_family(&w, hub_metrics_name(HM_MESSAGES_DROPPED), PROM_COUNTER,
                "Messages removed: no route matched, or their time to live expired");
    hub_metrics_write(h, HM_MESSAGES_DROPPED, &w, &ms_telemetry, 1);
    prom_sample(
        &w, NULL,
        (const struct prom_label[]){
            {"reason", "ttl_expiry"}, {"from", ""}, {"from_route_output", ""}, ms_telemetry},
        4, (double)expired);
    counters(h, &w, HM_MESSAGES_UNACK, "Messages not acknowledged because storing them failed");

    prom_family(&w, "edgehub_queue_length", PROM_GAUGE,
                "Messages waiting in an endpoint's queue of one priority");
    struct endpoint *ep;
    for (ep = endpoints_next(h, NULL); ep; ep = endpoints_next(h, ep)) {
        char eb[400], pb[16];
        const char *label = endpoint_label(h, ep, eb, sizeof(eb));
        for (unsigned p = 0; p < HUB_PRIORITIES; p++) {
            if (!ep->q[p])
                continue;
            struct queue_stats st;
            queue_get_stats(ep->q[p], &st);
            prom_sample(
                &w, NULL,
                (const struct prom_label[]){{"endpoint", label},
                                            {"priority", hub_metrics_priority(p, pb, sizeof(pb))},
                                            ms_telemetry},
                3, (double)st.depth);
        }
    }

    struct upstream_metrics um;
    upstream_get_metrics(h, &um);
    int64_t now = ltime_now_ms();
    const struct prom_label self_l[] = {{"id", self}, ms_telemetry};
    prom_family(&w, "edgehub_offline_count_total", PROM_COUNTER,
                "Times the hub went offline (its upstream link lost or not made)");
    prom_sample(&w, NULL, self_l, 2, (double)um.offline_count);
    prom_family(&w, "edgehub_offline_duration_seconds", PROM_SUMMARY,
                "Time the hub was offline, per offline period that ended");
    prom_quantiles(&w, self_l, 2, hub_metrics_duration_objectives, um.offline_q,
                   UPSTREAM_OFFLINE_QUANTILES);
    prom_sample(&w, "_sum", self_l, 2, (double)um.offline_ms / 1000.0);
    prom_sample(&w, "_count", self_l, 2, (double)um.offline_periods);

    counters(h, &w, HM_CLIENT_CONNECT_FAIL, "Clients that failed to connect");
    counters(h, &w, HM_DIRECT_METHODS, "Direct method calls sent to clients");
    counters(h, &w, HM_GETTWIN, "GetTwin calls");
    counters(h, &w, HM_REPORTED_PROPERTIES, "Reported property updates");

    /* IoT Edge's summaries: quantiles of the last 10 minutes, _sum and _count */
    static const struct {
        enum hub_metric m;
        const char *help;
    } summaries[] = {
        {HM_MESSAGE_SIZE, "Size of the messages received from clients (their bodies), in bytes"},
        {HM_MESSAGE_PROCESS_DURATION,
         "Time from a message's enqueuing to its hand-off to the receiver or upstream"},
        {HM_MESSAGE_SEND_DURATION,
         "Time from a message's hand-off to the receiver or upstream to its acknowledgement"},
        {HM_GETTWIN_DURATION, "Time from a twin read to its answer"},
        {HM_REPORTED_DURATION, "Time from a reported-property update to its answer"},
        {HM_METHOD_DURATION, "Time from a direct method call to its answer or timeout"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(summaries); i++) {
        prom_family(&w, hub_metrics_name(summaries[i].m), PROM_SUMMARY, summaries[i].help);
        hub_metrics_write(h, summaries[i].m, &w, &ms_telemetry, 1);
    }

    size_t devices = 0, clients = clients_count(h, &devices);
    prom_family(&w, "edgehub_connected_clients", PROM_GAUGE,
                "Clients connected to the hub (modules and leaf devices)");
    prom_sample(&w, NULL, &ms_telemetry, 1, (double)clients);

    /* ledge's own */
    prom_family(&w, "ledge_hub_uptime_seconds", PROM_GAUGE, "Seconds since the hub started");
    prom_sample(&w, NULL, NULL, 0, (double)(now - h->started_ms) / 1000.0);
    size_t open = 0;
    for (size_t i = 0; i < h->n_heads; i++)
        open += h->heads[i]->connections(h);
    prom_family(&w, "ledge_hub_connections", PROM_GAUGE, "Open connections, authenticated or not");
    prom_sample(&w, NULL, NULL, 0, (double)open);
    prom_family(&w, "ledge_hub_connected_devices", PROM_GAUGE,
                "Leaf devices connected through this gateway");
    prom_sample(&w, NULL, NULL, 0, (double)devices);
    prom_family(&w, "ledge_hub_queue_bytes", PROM_GAUGE,
                "Bytes on disk of an endpoint's queue of one priority");
    for (ep = endpoints_next(h, NULL); ep; ep = endpoints_next(h, ep)) {
        char eb[400], pb[16];
        const char *label = endpoint_label(h, ep, eb, sizeof(eb));
        for (unsigned p = 0; p < HUB_PRIORITIES; p++) {
            if (!ep->q[p])
                continue;
            struct queue_stats st;
            queue_get_stats(ep->q[p], &st);
            qbytes += st.bytes;
            prom_sample(
                &w, NULL,
                (const struct prom_label[]){{"endpoint", label},
                                            {"priority", hub_metrics_priority(p, pb, sizeof(pb))}},
                2, (double)st.bytes);
        }
    }
    const struct {
        const char *name, *help;
        uint64_t v;
    } totals[] = {
        {"ledge_hub_messages_received_total", "Messages received from clients (all series)",
         h->n.received},
        {"ledge_hub_messages_routed_total", "Message copies stored into endpoint queues",
         h->n.routed},
        {"ledge_hub_messages_delivered_total", "Messages sent to a receiver", h->n.delivered},
        {"ledge_hub_messages_acked_total", "Receiver acknowledgements", h->n.acked},
        {"ledge_hub_messages_refused_total",
         "Messages refused because the store could not take them", h->n.refused},
        {"ledge_hub_auth_failures_total", "CONNECTs refused for their credentials",
         h->n.auth_failures},
        {"ledge_hub_metrics_series_dropped_total",
         "Counts not kept because the series table was full (metrics.max_series)",
         hub_metrics_dropped(h)},
        {"ledge_hub_upstream_sent_total", "Messages published upstream", um.sent},
        {"ledge_hub_upstream_acked_total", "Upstream acknowledgements", um.acked},
        {"ledge_hub_upstream_connects_total", "Upstream connections made", um.connects},
    };
    for (size_t i = 0; i < ARRAY_SIZE(totals); i++) {
        prom_family(&w, totals[i].name, PROM_COUNTER, totals[i].help);
        prom_sample(&w, NULL, NULL, 0, (double)totals[i].v);
    }
    prom_family(&w, "ledge_hub_metrics_series", PROM_GAUGE,
                "Labelled series the hub keeps (bounded by metrics.max_series)");
    prom_sample(&w, NULL, NULL, 0, (double)hub_metrics_series(h));
    prom_family(&w, "ledge_hub_metrics_bytes", PROM_GAUGE,
                "Bytes of memory the labelled series hold (labels, counts, quantile windows)");
    prom_sample(&w, NULL, NULL, 0, (double)hub_metrics_bytes(h));
    prom_family(&w, "ledge_hub_upstream_connected", PROM_GAUGE,
                "1 while the upstream link is up, 0 while down; absent when upstream is disabled");
    if (um.enabled)
        prom_sample(&w, NULL, NULL, 0, um.connected ? 1 : 0);
    prom_family(&w, "ledge_hub_upstream_offline_seconds", PROM_GAUGE,
                "Seconds the current offline period has lasted (0 while online)");
    if (um.enabled)
        prom_sample(&w, NULL, NULL, 0,
                    um.offline_since_ms ? (double)(now - um.offline_since_ms) / 1000.0 : 0);
    prom_family(&w, "ledge_hub_store_bytes", PROM_GAUGE, "Bytes of every queue on disk");
    prom_sample(&w, NULL, NULL, 0, (double)qbytes);
    return prom_writer_error(&w);
}
