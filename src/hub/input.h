/* input.h — the module-input sink: an endpoint BrokeredEndpoint("/modules/<m>/inputs/<i>")
 * delivers to its module's client, through whatever head it connected by, while the client listens
 * to that input: priority 0 first, in order within a priority, acknowledged deliveries bounded by
 * the client's window, a message leaving its queue only when the client acknowledged it. */
#pragma once

#include <stdbool.h>

#include "endpoint.h"
#include "head.h"
#include "hub.h"

extern const struct hub_sink_ops input_sink_ops;
/* A leaf device's cloud-to-device endpoint (endpoint_c2d()): the same delivery to the device's
 * client while it subscribes to devices/<d>/messages/devicebound/#. */
extern const struct hub_sink_ops c2d_sink_ops;

/* The client acknowledged d (acked), or went away without doing so: then it and everything after
 * it in its queue are delivered again, in order. */
void input_delivery_done(struct hub *h, const struct hub_delivery *d, bool acked);
