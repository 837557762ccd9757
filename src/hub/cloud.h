/* cloud.h — the module identities' own sessions upstream (issue 13): while a module is connected
 * to the hub and the upstream is IoT Hub, the hub keeps an IoT Hub MQTT session as that module
 * (SAS, the module identity's key derived from the device key) and keeps the module's twin in
 * sync with the cloud's (desired from the cloud wins; reported from the module goes up, also
 * after an outage) and relays the cloud's direct method calls to the module. Bounded by
 * upstream.max_module_sessions. docs/upstream.md "Sessions per identity". */
#pragma once

#include <jansson.h>

#include "endpoint.h"
#include "hub.h"

extern const struct hub_sink_ops cloud_sink_ops;

/* {"enabled", "sessions": [{"module", "connected", "lastError"?}], "max"} for the status. */
json_t *cloud_status(struct hub *h);
