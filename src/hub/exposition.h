/* exposition.h — the hub's metrics in the Prometheus text format (docs/metrics.md): IoT Edge's
 * edgehub_* families with their labels (the counters of metrics.c, the queue lengths of the
 * endpoints' queues, the upstream link's offline count and time, the connected clients) and
 * ledge's own ledge_hub_* beside them. Served on the control socket as GET /metrics; ledged's
 * metrics endpoint appends it to its own families. */
#pragma once

#include "base/buf.h"
#include "hub.h"

/* Every sample carries IoT Edge's common labels: iothub, edge_device, instance_number (a UUID
 * made at the hub's start). 0, or -errno. */
int hub_exposition(struct hub *h, struct lbuf *out);
/* The hub's instance_number. */
const char *hub_instance_number(struct hub *h);
