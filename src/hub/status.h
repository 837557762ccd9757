/* status.h — the hub's status document for `ledge hub status` (docs/hub.md lists its fields):
 * connections and sessions from the heads, counters, endpoints and their queues, the store, the
 * upstream link. */
#pragma once

#include <jansson.h>

#include "hub.h"

json_t *hub_status_json(struct hub *h);
