/* runtime.h — the runtime file ledged writes for the hub (<run_dir>/hub/runtime.json, re-read on
 * SIGHUP): device, module and leaf-device identities, the $edgeHub section, desired twins, TLS
 * paths. */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "base/errors.h"
#include "identity/leaf.h"

struct hub_module_identity {
    char *module_id;
    char *generation_id;
    uint8_t key[32];
    size_t keylen;
};

struct hub_runtime {
    char *device_id;
    char *iothub_hostname;
    char *gateway_hostname;
    char *server_cert;
    char *server_key;
    char *trust_bundle;
    char *device_ca;  /* CAs for leaf devices' certificates (ledged's devices.c), or NULL */
    json_t *edge_hub; /* $edgeHub desired, or NULL */
    json_t *twins;    /* module -> desired properties */
    json_t *device;   /* {"auth": "sas", "key"} or {"auth": "x509", ...} */
    struct hub_module_identity *modules;
    size_t n_modules;
    struct identity_leaf **leaves; /* leaf devices behind this gateway (docs/gateway.md) */
    size_t n_leaves;
};

int hub_runtime_load(const char *path, struct hub_runtime *ret, struct lerr *err);
void hub_runtime_clear(struct hub_runtime *r);
/* The module's identity (ids compare case-insensitively, as IoT Hub's), or NULL. */
const struct hub_module_identity *hub_runtime_module(const struct hub_runtime *r,
                                                     const char *module_id);
/* The leaf device's identity (ids compare case-insensitively), or NULL. */
const struct identity_leaf *hub_runtime_leaf(const struct hub_runtime *r, const char *device_id);
