/* workload.h — the IoT Edge workload API (contract §7) as a transport-independent request
 * handler: ledged's HTTP server hands each request on a module's socket to workload_handle()
 * together with the identity of the module that socket belongs to, and sends back the reply. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "base/macro.h"
#include "identity/ca.h"
#include "identity/keys.h"

/* Request bodies beyond this get 413 here too (the HTTP layer should stop them first). Real
 * requests are < 1 KiB; encrypt/decrypt payloads are small secrets. */
#define WORKLOAD_MAX_BODY (64 * 1024)
/* Request targets (path + query) beyond this get 414. */
#define WORKLOAD_MAX_TARGET 2048

struct workload_config {
    const char *iothub_hostname; /* for identity certificate URIs */
    const char *device_id;       /* module keys are derived per device */
    /* Content of GET /manifest-trust-bundle (PEM), NULL for an empty one. */
    const char *manifest_trust_bundle_pem;
    /* Server certificates for these names (case-insensitive; e.g. the gateway host name) are
     * issued only to the module hub_module_id, so no other module can impersonate the hub. */
    const char *hub_module_id;
    const char *const *reserved_server_names;
    size_t n_reserved_server_names;
    int64_t identity_cert_lifetime_s; /* upper bound; 0 = CA_DEFAULT_LEAF_LIFETIME_S */
    int64_t server_cert_lifetime_s;   /* upper bound; 0 = CA_DEFAULT_LEAF_LIFETIME_S */
    size_t max_body;                  /* 0 = WORKLOAD_MAX_BODY */
    int64_t (*now)(void *userdata);   /* unix seconds; NULL = the wall clock */
    void *now_userdata;
};

/* Who is calling: the module the socket (or, for process modules, the peer credentials)
 * belongs to, as ledged knows it. */
struct workload_caller {
    const char *module_id;
    const char *generation_id;
};

struct workload_reply {
    int status;               /* HTTP status */
    const char *content_type; /* always "application/json" */
    const char *allow;        /* 405: value for the Allow header; else NULL */
    char *body;               /* JSON, NUL-terminated; errors are {"message": "..."} */
    size_t body_len;
};

struct workload_ctx;

/* keys and ca are borrowed and must outlive the context; strings in cfg are copied. */
int workload_ctx_new(const struct workload_config *cfg, const struct identity_keys *keys,
                     struct ca *ca, struct workload_ctx **ret);
void workload_ctx_free(struct workload_ctx *ctx);
DEFINE_CLEANUP(struct workload_ctx *, workload_ctx_free)

/* Handle one request. target is the request target as sent ("/path?query"). Every outcome,
 * errors included, is a reply in ret (free with workload_reply_done); the return value is
 * negative only when not even an error reply could be built (-ENOMEM): answer 500 then.
 *
 * Statuses: 200/201 success; 400 missing or unsupported api-version, malformed %-escape, bad
 * JSON or field (the message names it), decrypt failure; 403 the path names another module;
 * 404 unknown path, or a generation id that is not the caller's current one; 405 wrong method;
 * 413 body too large; 414 target too long; 500 internal failure. */
int workload_handle(struct workload_ctx *ctx, const struct workload_caller *caller,
                    const char *method, const char *target, const char *body, size_t body_len,
                    struct workload_reply *ret);
void workload_reply_done(struct workload_reply *r);

/* True for the workload api-versions IoT Edge defines (2018-06-28 ... 2022-08-03). */
bool workload_api_version_supported(const char *v);
