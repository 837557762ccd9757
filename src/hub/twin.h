/* twin.h — the twins sink: module twins, desired properties from the deployment and from
 * `ledge twin set`, reported properties from the module, each side with its $version, kept in
 * twins.db (database.h). Requests come from a head as hub types; answers and desired patches go
 * back through the client's head. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/errors.h"
#include "endpoint.h"
#include "head.h"
#include "hub.h"

extern const struct hub_sink_ops twins_sink_ops;

enum hub_twin_op {
    HUB_TWIN_GET,            /* the whole twin */
    HUB_TWIN_PATCH_REPORTED, /* merge body into the reported properties */
};

struct hub_twin_request {
    enum hub_twin_op op;
    const char *rid; /* the client's request id, echoed verbatim */
    size_t rid_len;
    const void *body; /* HUB_TWIN_PATCH_REPORTED: a JSON object */
    size_t body_len;
};

/* Twins are named by address (hub_identity.address): a module id, "devices/<d>" for a leaf
 * device's twin, "devices/<d>/modules/<m>" for a child edge device's module's. */

/* A request from client c about its own twin; answered through c's head. While the identity's
 * session upstream is reading the cloud's twin (hub.twin_syncing), a GET waits for it (at most
 * TWIN_CLOUD_WAIT_MS), so that the first twin a module gets is the cloud's, as edgeHub answers
 * from the cloud while it is connected: a desired change that arrived between an answer from
 * the local twin and the module's subscription to desired patches would be lost. */
void twins_request(struct hub *h, struct hub_client *c, const struct hub_twin_request *r);
/* The session of address has the cloud's twin, or gave up: answer its waiting GETs. */
void twins_cloud_synced(struct hub *h, const char *address);
/* Client c is going: forget its waiting GETs. */
void twins_client_gone(struct hub *h, struct hub_client *c);
/* {"desired": {..., "$version"}, "reported": {..., "$version"}} or NULL. */
json_t *twins_get(struct hub *h, const char *module);
/* Merge a patch into the desired properties, notify the module; *ret is the new twin. */
int twins_patch_desired(struct hub *h, const char *module, const json_t *patch, json_t **ret,
                        struct lerr *err);
/* Is there a twin of address in the store? And how many twins of a child edge device's module
 * identities ("devices/<device>/modules/...") are there? (auth.c bounds them.) */
bool twins_known(struct hub *h, const char *address);
int twins_child_count(struct hub *h, const char *device_id);
/* Forget the twin of address (a leaf device removed or recreated: the next is another identity). */
void twins_forget(struct hub *h, const char *address);
/* The module's twin in the cloud (cloud.c) wins: its whole desired document (complete) or a
 * patch of it replaces or changes the local one, which takes the cloud's $version (version > 0);
 * a connected module is sent the difference. -EINVAL for a document over the twin limits. */
int twins_cloud_desired(struct hub *h, const char *module, const json_t *desired, int64_t version,
                        bool complete);
