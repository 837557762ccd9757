/* cloud.h — deployments from IoT Hub, the pure half: the `$edgeAgent` and `$edgeHub` module
 * twins' desired properties turned into the deployment manifest `ledge deploy` takes, and the
 * agent's view of the modules turned into the reported properties IoT Edge's edgeAgent and
 * edgeHub write (the schema the portal and `az iot edge` read). JSON merge patches (RFC 7386)
 * both ways. No I/O; ledged's cloud.c drives it (docs/agent.md "Deployments from the cloud"). */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/str.h"

/* lastDesiredStatus codes, as edgeAgent reports them. */
#define CLOUD_STATUS_OK 200
#define CLOUD_STATUS_INVALID 400 /* the desired properties are not a deployment ledge accepts */
#define CLOUD_STATUS_MISSING 417 /* no deployment in the desired properties yet */
#define CLOUD_STATUS_FAILED 500  /* accepted, but applying it failed */

#define CLOUD_SCHEMA_VERSION "1.1"
/* lastDesiredStatus.description is cut to this many bytes (IoT Hub's 4 KiB string limit). */
#define CLOUD_DESCRIPTION_MAX 4000

/* Apply a JSON merge patch to *target (replaced when the patch is not an object; an object
 * target is changed in place). Keys with null values are removed. */
void cloud_merge_patch(json_t **target, const json_t *patch);
/* The merge patch that turns from into to (NULL when they are equal). Objects are compared key
 * by key, anything else replaced whole; a key of from missing in to becomes null. */
json_t *cloud_merge_diff(const json_t *from, const json_t *to);

/* The twin document's own keys ("$version", "$metadata") at every depth removed: a copy. */
json_t *cloud_strip_twin_keys(const json_t *desired);
/* Does $edgeAgent's desired document hold a deployment (modules, systemModules or runtime)?
 * IoT Hub's default desired properties of a new edge device do not. */
bool cloud_desired_has_deployment(const json_t *agent_desired);
/* {"modulesContent": {"$edgeAgent": {"properties.desired": A}, "$edgeHub": {...: H}}} as text,
 * the twins' own keys stripped (hub_desired may be NULL or empty: then no $edgeHub entry).
 * NULL when out of memory. */
char *cloud_manifest_text(const json_t *agent_desired, const json_t *hub_desired);
/* The $version of a desired document; -1 when absent. */
int64_t cloud_desired_version(const json_t *desired);
/* Validation problems as lastDesiredStatus.description: "invalid deployment: " + the problems
 * (each starts with its JSON path in the desired properties), "; "-separated, cut to
 * CLOUD_DESCRIPTION_MAX. */
char *cloud_describe_errors(const struct lstrv *errors);

struct cloud_agent_report {
    const json_t *modules;   /* agent_modules_json(): [{name, type, runtimeStatus, ...}] */
    const json_t *desired;   /* $edgeAgent's desired properties last applied, or NULL */
    int64_t desired_version; /* lastDesiredVersion; < 0: none yet */
    int status_code;         /* lastDesiredStatus */
    const char *status_description;
    const char *version;     /* ledge's version */
    const char *os, *arch;   /* runtime.platform */
    const char *started_utc; /* when ledged (the edgeAgent) started, ISO 8601 */
};
/* $edgeAgent's reported properties: schemaVersion, version, lastDesiredVersion,
 * lastDesiredStatus, runtime, systemModules {edgeAgent, edgeHub}, modules {name: {...}}. */
json_t *cloud_agent_reported(const struct cloud_agent_report *in);

struct cloud_hub_report {
    int64_t desired_version;
    int status_code;
    const char *status_description;
    const char *version;
    const json_t *clients; /* {"<device>/<module>": {"status": "Connected", ...}} or NULL */
};
/* $edgeHub's reported properties: schemaVersion, version, lastDesiredVersion,
 * lastDesiredStatus, clients. */
json_t *cloud_hub_reported(const struct cloud_hub_report *in);
