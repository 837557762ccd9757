/* manifest.h — the deployment model: an IoT Edge `modulesContent` manifest parsed, defaulted and
 * validated into the desired state the planner works from. Pure: no I/O, no logging. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/errors.h"
#include "base/str.h"

enum module_type {
    MODULE_TYPE_DOCKER,  /* a container run through the engine */
    MODULE_TYPE_PROCESS, /* ledge extension: a supervised native program */
    MODULE_TYPE_COUNT,
};

enum module_status {
    MODULE_STATUS_RUNNING,
    MODULE_STATUS_STOPPED,
};

enum restart_policy {
    RESTART_NEVER,
    RESTART_ON_FAILURE,
    RESTART_ON_UNHEALTHY,
    RESTART_ALWAYS,
};

enum pull_policy {
    PULL_ON_CREATE,
    PULL_NEVER,
};

#define MODULE_STARTUP_ORDER_DEFAULT UINT32_MAX
#define MODULE_NAME_MAX 64

/* Bounds on what a manifest can make us build (docs/manifest.md). IoT Hub caps a twin's desired
 * properties far below MANIFEST_MAX_SIZE; local files get the same generous ceiling. */
#define MANIFEST_MAX_SIZE (1024 * 1024) /* bytes of manifest text */
#define MANIFEST_MAX_MODULES 256        /* entries under modules */
#define MANIFEST_MAX_ERRORS 100         /* messages reported; one summary line follows */

/* One module as the deployment wants it. Strings are owned by the struct. */
struct module_spec {
    char *name; /* manifest key; also the container name */
    enum module_type type;
    bool system; /* true for ledge's own hub (from systemModules.edgeHub) */
    enum module_status status;
    enum restart_policy restart_policy;
    enum pull_policy pull_policy;
    uint32_t startup_order; /* lower starts first; default MODULE_STARTUP_ORDER_DEFAULT */
    char *version;          /* free string, may be NULL */
    char *image;            /* docker: normalised reference with a tag (":latest" added) */
    json_t *create_options; /* docker: parsed ContainerCreate object (chunks joined), or NULL */
    json_t *env;            /* object: NAME -> string value (from {"NAME": {"value": "..."}}) */
    char *path;             /* process: absolute program path (settings.path) */
    json_t *args;           /* process: array of strings (settings.args), or NULL */
    /* SHA-256 (hex) over everything that forces a recreate when it changes: type, image,
     * createOptions, env, restartPolicy, imagePullPolicy, startupOrder, version, path, args.
     * `status` is deliberately excluded: a status-only change is a start or a stop. */
    char config_hash[65];
};

struct registry_credential {
    char *name;    /* key under registryCredentials */
    char *address; /* registry host[:port], e.g. "myregistry.azurecr.io" */
    char *username;
    char *password;
};

struct deployment {
    char *schema_version;     /* $edgeAgent schemaVersion: "1.0" or "1.1" */
    char *min_docker_version; /* runtime.settings.minDockerVersion, e.g. "v1.25", or NULL */
    char *logging_options;    /* runtime.settings.loggingOptions (raw string), or NULL */
    struct registry_credential *credentials;
    size_t n_credentials;
    struct module_spec *modules; /* user modules, then the system hub module when present */
    size_t n_modules;
    json_t *edge_hub;     /* $edgeHub "properties.desired" (owned reference), or NULL */
    json_t *module_twins; /* object: module name -> its "properties.desired" object */
    json_t *manifest;     /* the whole document as given (owned reference) */
    /* Added by the parser's implementation (docs/manifest.md): */
    json_t *agent_env;     /* systemModules.edgeAgent.env as NAME -> string, or NULL */
    struct lstrv warnings; /* accepted but worth logging: unknown keys ignored, twins
                            * for modules not deployed, startupOrder under 1.0, ... */
};

/* Parse and validate a manifest. Accepts either {"modulesContent": {...}} or the bare
 * modulesContent object. On failure returns -EINVAL and appends one message per problem to
 * errors, each starting with the JSON path of the offending field, for example
 *   "modules.tempSensor.settings.createOptions: not valid JSON at column 17: ..."
 * (paths are relative to $edgeAgent.properties.desired for agent fields, and start with
 * "$edgeHub." or "<module>." for the others). Validation is complete: every problem is reported,
 * not just the first. Nothing is returned on failure.
 *
 * hub_program: absolute path of the ledge-hub binary that systemModules.edgeHub maps to (a
 * process module named "edgeHub"); NULL means "omit the hub module". */
int manifest_parse(const char *text, size_t n, const char *hub_program, struct deployment **ret,
                   struct lstrv *errors);

void deployment_free(struct deployment *d);
static inline void deployment_freep(struct deployment **d)
{
    if (*d)
        deployment_free(*d);
}
#define _cleanup_deployment_ _cleanup_(deployment_freep)

const struct module_spec *deployment_find(const struct deployment *d, const char *name);
/* The credential for image's registry (Docker's reference rules: the first path component when
 * more follow and it has a '.' or ':' or is "localhost"; docker.io otherwise), matched by
 * image/creds.h's rule (img_registry_matches); the lowest name wins when several match. NULL
 * when none does. */
const struct registry_credential *deployment_credential_for(const struct deployment *d,
                                                            const char *image);

/* Normalise an image reference: add ":latest" when there is neither a tag nor a digest.
 * Surrounding blanks are trimmed (as IoT Edge does) and the reference must follow docker's
 * grammar (lower-case repository path, valid registry host/port, tag and digest), IoT Edge's
 * nested-edge "$upstream:<port>/..." registry included; -EINVAL otherwise. */
int manifest_normalize_image(const char *image, char **ret);

const char *module_status_name(enum module_status s);
const char *restart_policy_name(enum restart_policy p);
const char *pull_policy_name(enum pull_policy p);
const char *module_type_name(enum module_type t);
