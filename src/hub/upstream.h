/* upstream.h — the $upstream sink: the hub's one MQTT connection to an upstream endpoint (IoT Hub,
 * any broker, or a parent ledge), draining the $upstream endpoint's queues while connected. */
#pragma once

#include <jansson.h>

#include "endpoint.h"
#include "hub.h"

extern const struct hub_sink_ops upstream_sink_ops;

/* The link's state for `ledge hub status`. */
json_t *upstream_status(struct hub *h);
