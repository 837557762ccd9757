/* upstream.h — the $upstream sink: the hub's one MQTT connection to an upstream endpoint (IoT Hub,
 * any broker, or a parent ledge), draining the $upstream endpoint's queues while connected. */
#pragma once

#include <jansson.h>

#include "endpoint.h"
#include "hub.h"

extern const struct hub_sink_ops upstream_sink_ops;

/* The link's state for `ledge hub status`. */
json_t *upstream_status(struct hub *h);

/* For the metrics (exposition.c): IoT Edge's offline count (the link was lost, or could not be
 * made at start) and the offline periods that ended (their number, total length, and the
 * quantiles of their lengths in the last 10 minutes at hub_metrics_duration_objectives, NaN when
 * none ended then). */
#define UPSTREAM_OFFLINE_QUANTILES 4
struct upstream_metrics {
    bool enabled, connected;
    uint64_t offline_count;
    uint64_t offline_periods;
    int64_t offline_ms;       /* of the periods that ended */
    int64_t offline_since_ms; /* 0 unless offline now */
    uint64_t sent, acked, connects;
    double offline_q[UPSTREAM_OFFLINE_QUANTILES];
};
void upstream_get_metrics(struct hub *h, struct upstream_metrics *ret);
