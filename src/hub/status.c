/* status.c — the status document (status.h), gathered from the units that keep each part. */
#include "status.h"

#include <unistd.h>

#include "base/timeutil.h"
#include "cloud.h"
#include "database.h"
#include "endpoint.h"
#include "head.h"
#include "metrics.h"
#include "upstream.h"
#include "store/store.h"

json_t *hub_status_json(struct hub *h)
{
    struct store_stats ss;
    store_get_stats(h->store, &ss);
    size_t open = 0, connected = 0, n_sessions = 0;
    json_t *sessions = json_array();
    for (size_t i = 0; i < h->n_heads; i++) {
        const struct hub_head_ops *hd = h->heads[i];
        size_t c = 0, n = 0;
        open += hd->connections(h);
        json_t *a = hd->sessions_status(h, &c, &n);
        json_array_extend(sessions, a);
        json_decref(a);
        connected += c;
        n_sessions += n;
    }
    uint64_t expired = h->n.expired;
    for (size_t i = 0; i < store_queue_count(h->store); i++) {
        struct queue_stats qs;
        queue_get_stats(store_queue_at(h->store, i), &qs);
        expired += qs.expired;
    }
    const struct hub_counters *n = &h->n;
    const struct {
        const char *name;
        uint64_t v;
    } counters[] = {
        {"received", n->received},
        {"routed", n->routed},
        {"unrouted", n->unrouted},
        {"delivered", n->delivered},
        {"acked", n->acked},
        {"direct", n->direct},
        {"expired", expired},
        {"refused", n->refused},
        {"unauthorized", n->unauthorized},
        {"authFailures", n->auth_failures},
        {"malformed", n->malformed},
        {"oversized", n->oversized},
        {"qos2Refused", n->qos2_refused},
        {"subscriptionsRefused", n->subscriptions_refused},
        {"connectionsRefused", n->connections_refused},
        {"connectionsEvicted", n->connections_evicted},
        {"connectionsTotal", n->connections_total},
    };
    json_t *cj = json_object();
    for (size_t i = 0; i < ARRAY_SIZE(counters); i++)
        json_object_set_new(cj, counters[i].name, json_integer((json_int_t)counters[i].v));
    json_t *o = json_pack(
        "{s:s, s:I, s:{s:I, s:I, s:I, s:I}, s:o, s:o, s:o, s:{s:I, s:I, s:I, s:I, s:s}, s:o, "
        "s:o*, s:o*}",
        "version", LEDGE_VERSION, "uptimeSeconds",
        (json_int_t)((ltime_now_ms() - h->started_ms) / 1000), "connections", "open",
        (json_int_t)open, "max", (json_int_t)h->cfg.hub.max_connections, "modules",
        (json_int_t)connected, "sessions", (json_int_t)n_sessions, "sessions", sessions, "counters",
        cj, "endpoints", endpoints_status(h), "store", "bytes", (json_int_t)ss.bytes, "maxBytes",
        (json_int_t)ss.max_bytes, "syncs", (json_int_t)ss.syncs, "syncErrors",
        (json_int_t)ss.sync_errors, "fsync", store_sync_policy_to_string(ss.sync), "upstream",
        upstream_status(h), "twinsDatabase", database_status(h), "refusals",
        hub_refusals_status(h));
    if (o) {
        json_object_set_new(o, "cloud", cloud_status(h));
        json_object_set_new(o, "metrics", hub_metrics_status(h));
    }
    /* which process answers: `ledge update` checks that the hub was restarted on the new binary */
    if (o)
        json_object_set_new(o, "pid", json_integer(getpid()));
    return o;
}
