/* fuzz-fleet.c — arbitrary JSON as every answer a device gives the fleet page's summary. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

#include "dashboard/fleet.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    if (!j)
        return 0;
    struct dash_fleet_answers a = {
        .systeminfo = j, .modules = j, .deployments = j, .hub = j, .vms = j, .status = 200};
    json_decref(dash_fleet_device(&a));
    json_t *in = json_object_get(j, "in");
    a = (struct dash_fleet_answers){.systeminfo = json_object_get(in, "systeminfo"),
                                    .modules = json_object_get(in, "modules"),
                                    .deployments = json_object_get(in, "deployments"),
                                    .hub = json_object_get(in, "hub"),
                                    .vms = json_object_get(in, "vms"),
                                    .status = (long)(size % 600)};
    json_decref(dash_fleet_device(&a));
    json_decref(j);
    return 0;
}
