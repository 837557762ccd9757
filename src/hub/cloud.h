/* cloud.h — the module identities' and leaf devices' own sessions upstream (issue 13): while a
 * module (or a leaf device: a SAS leaf with its own key, an X.509 leaf on behalf of the edge with
 * $edgeHub's) is connected to the hub and the upstream is IoT
 * Hub, the hub keeps an IoT Hub MQTT session as that module (SAS, the module identity's key derived
 * from the device key) and keeps the module's twin in sync with the cloud's (desired from the cloud
 * wins; reported from the module goes up, also after an outage) and relays the cloud's direct
 * method calls to the module. Bounded by upstream.max_module_sessions. docs/upstream.md "Sessions
 * per identity". */
#pragma once

#include <jansson.h>
#include <stdint.h>

#include "base/buf.h"
#include "message.h"
#include "mqtt/iothub.h"

#include "endpoint.h"
#include "hub.h"

extern const struct hub_sink_ops cloud_sink_ops;

/* A cloud-to-device message as IoT Hub sent it (its bag's system and application properties,
 * its body) in the hub's stored form (message.h), appended to out, and the expiry its $.exp asks
 * for (0: none, or not readable). Pure; unit-tested. */
int cloud_c2d_message(const struct iothub_props *props, const void *body, size_t len,
                      int64_t now_ms, struct lbuf *out, int64_t *ret_expiry_ms);
/* Send a leaf device's telemetry (routed to $upstream; msg's strings are copied) over that
 * device's own session, so that IoT Hub sees it from the device: 1 handed over, done(ud, 0) once
 * IoT Hub acknowledged it (-ECANCELED if the session went first: send it again); 0 the device has
 * no usable session (none, or its session failed to connect): send it as the
 * edge device; -EAGAIN its session is opening or full: try again (the session's connect kicks
 * the endpoints). */
int cloud_device_send(struct hub *h, const char *device_id, const struct hub_message *msg,
                      void (*done)(void *ud, int result), void *ud);
/* The same for a module's telemetry over the module's own session (open while the module is
 * connected to the hub), so that IoT Hub sees it from the module, as edgeHub sends it. */
int cloud_module_send(struct hub *h, const char *module_id, const struct hub_message *msg,
                      void (*done)(void *ud, int result), void *ud);
/* The same for the telemetry of a child edge device's module (nested edge), over the session
 * of that identity ("devices/<device>/modules/<module>"): a middle layer's relay. */
int cloud_child_send(struct hub *h, const char *device_id, const char *module_id,
                     const struct hub_message *msg, void (*done)(void *ud, int result), void *ud);
/* The hub's device link to the upstream connected (up) or went. Up: the sessions that are not
 * connected try again at once; a message waits for its identity's session while that session is
 * opening or retrying, and goes as the edge device's once an attempt made while the link is up
 * failed (docs/upstream.md "Telemetry follows its identity"). */
void cloud_upstream_link(struct hub *h, bool up);
/* {"enabled", "sessions": [{"module" | "device", "connected", "lastError"?}], "max", "refused",
 * "maxDevices", "devicesRefused", "c2d": {"received", "stored"}} for the status. */
json_t *cloud_status(struct hub *h);
