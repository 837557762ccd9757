/* methods.h — the methods sink: direct method calls from ledged's management API (through the
 * control socket) to a module's client, through whatever head it connected by, and the module's
 * answers. A module that is not connected (or does not listen for methods) gets 404 — at once,
 * or after the call's connect timeout; no answer in time gets 504. */
#pragma once

#include <jansson.h>
#include <stddef.h>

#include "base/errors.h"
#include "endpoint.h"
#include "hub.h"

extern const struct hub_sink_ops methods_sink_ops;

/* Invoke method on module (an address: a module id, or "devices/<d>" for a leaf device); cb gets
 * the HTTP-like status and the JSON reply (owned by callee). connect_timeout_s > 0 (IoT Hub's
 * connectTimeoutInSeconds): a target not connected or not listening for methods is waited for
 * that long (then 404 through cb) instead of -ENOENT at once; timeout_s starts when it is sent. */
typedef void (*methods_done_fn)(void *ud, int status, json_t *reply);
int methods_invoke(struct hub *h, const char *module, const char *method, const json_t *payload,
                   int timeout_s, int connect_timeout_s, methods_done_fn cb, void *ud,
                   void **ret_handle, struct lerr *err);
void methods_cancel(struct hub *h, void *handle);
/* Module from's answer to call rid: status and payload as it sent them. */
void methods_response(struct hub *h, const struct hub_identity *from, const char *rid,
                      size_t rid_len, int status, const void *payload, size_t payload_len);
