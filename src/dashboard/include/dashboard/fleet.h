/* fleet.h — the dashboard's fleet page's summary of one device (this one or another ledge added
 * on the devices page) from the management API's answers it fetched: identity, ledge version,
 * the deployment in force and its outcome, modules running of total with the failed ones named,
 * the hub's upstream link and the VMs. Pure: the answers are peers' JSON, read defensively. */
#pragma once

#include <jansson.h>

/* One device's answers (each NULL when that call failed or its answer was not JSON), and how the
 * call of GET /systeminfo went: result 0 or -errno (transport), status its HTTP status. */
struct dash_fleet_answers {
    const json_t *systeminfo;  /* GET /systeminfo */
    const json_t *modules;     /* GET /modules */
    const json_t *deployments; /* GET /deployments */
    const json_t *hub;         /* GET /hub/status */
    const json_t *vms;         /* GET /vms */
    int result;                /* of GET /systeminfo */
    long status;
    const char *hub_error; /* why GET /hub/status failed (NULL: it did not) */
    const char *vms_error; /* likewise GET /vms */
};

/* Why a device counts as unreachable ("key changed", "refused", "timeout", "unreachable",
 * "token refused", "answered 500", or the transport's error), NULL when result is 0 and
 * status 200. The text is static or in buf. */
const char *dash_fleet_reason(int result, long status, char *buf, size_t size);

/* {"reachable", "reason"?, "deviceId", "version", "deployment": {"id", "outcome", "kind",
 * "inProgress"}, "modules": {"running", "total", "failed": [{"name", "status"}]}, "hub":
 * {"state": "connected"|"disconnected"|"off"|"unavailable", "host"?, "error"?}, "vms": [{"name",
 * "state", "arch"}] | null, "vmsError"?}: what is known; NULL only without memory. At most
 * DASH_FLEET_MAX_LIST failed modules and VMs are listed (the counts stay right). */
#define DASH_FLEET_MAX_LIST 256
json_t *dash_fleet_device(const struct dash_fleet_answers *a);
