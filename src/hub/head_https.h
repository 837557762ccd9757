/* head_https.h — the edgeHub HTTPS API on the WebSocket listener (hub.websocket_port, TLS with the
 * hub's server certificate): what the Azure IoT SDKs' ModuleClient.invokeMethod calls on the
 * gateway, POST /twins/{deviceId}/modules/{moduleId}/methods (a module of this device) and POST
 * /twins/{deviceId}/methods (a leaf device behind it), authenticated by the caller's SAS token
 * (Authorization: SharedAccessSignature ...) for the identity its x-ms-edge-moduleId header
 * names, checked by auth_check() as the MQTT head does. Only modules of this edge device may
 * call. The call goes through methods_invoke(); the answer is {"status","payload"} as the target
 * sent them, 404 when it is not connected, 504 when it does not answer in time. head_ws.c hands
 * every request that is not a WebSocket upgrade here; net/http_server.h reads it (bounded). */
#pragma once

#include <jansson.h>
#include <stddef.h>

#include "base/errors.h"
#include "head.h"
#include "hub.h"

struct bufferevent;
struct hs_request;

#define HTTPS_MAX_BODY (128 * 1024 + 1024) /* IoT Hub's 128 KiB method payload, and the call */
#define HTTPS_MAX_HEADER 8192              /* request line and headers (WS_UPGRADE_MAX) */
#define HTTPS_TIMEOUT_MS 10000             /* a complete request, from the hand-over */
#define HTTPS_MAX_CONNECTIONS 64           /* connections the API keeps at once */
#define HTTPS_MAX_INFLIGHT 256             /* calls waiting for their answer */
#define HTTPS_MAX_ID 128                   /* bytes of a device or module id (IoT Hub's) */
#define HTTPS_MAX_METHOD 256               /* bytes of a method name */
#define HTTPS_MAX_TIMEOUT_S 300            /* responseTimeoutInSeconds, as IoT Hub */
#define HTTPS_DEFAULT_TIMEOUT_S 30

extern const struct hub_head_ops https_head_ops;

/* Serve bev (a connection of the WebSocket listener, TLS done, its input holding a request that
 * is no upgrade): ownership taken. */
void https_head_take(struct hub *h, struct bufferevent *bev);

/* ---- what a request says, parsed and checked without the hub (unit tests, the fuzz target) */

/* A request as it arrived; header values NULL when absent. */
struct https_request {
    const char *method;
    const char *target; /* as sent: path and query */
    const char *authorization;
    const char *edge_module_id; /* x-ms-edge-moduleId: "<deviceId>/<moduleId>" of the caller */
    const char *content_type;
    const char *body;
    size_t body_len;
};

/* The method call it asks for. Strings are owned (https_call_clear()). */
struct https_call {
    char *caller_device;
    char *caller_module; /* NULL: the header named a device ("<deviceId>") */
    char *sas_token;     /* the Authorization header's SharedAccessSignature, whole */
    char *device_id;     /* the target, as the path names it (percent-decoded) */
    char *module_id;     /* NULL: /twins/{deviceId}/methods, a device */
    char *api_version;   /* NULL when the query has none (the Node SDK sends none) */
    char *method_name;
    json_t *payload; /* never NULL (JSON null when absent) */
    int response_timeout_s, connect_timeout_s;
};

void https_call_clear(struct https_call *c);

/* Parse rq into *ret: 0, or a negative errno with *ret_status and err saying why: 404 no such
 * resource, 405 not a POST (answer with Allow: POST), 400 a bad id in the path or a bad query or
 * body, 401 no SharedAccessSignature or no x-ms-edge-moduleId naming the caller, 415 a body that
 * is not application/json. The token itself is checked later, by auth_check(). */
int https_request_parse(const struct https_request *rq, struct https_call *ret, int *ret_status,
                        struct lerr *err);

/* The fields of r (net/http_server.h) that the API reads; valid while r is. */
void https_request_of(const struct hs_request *r, struct https_request *ret);
/* Answer r with status and {"message": msg, "Message": "ErrorCode:<code>;<msg>"} (405: with
 * Allow: POST). */
void https_reply_error(struct hs_request *r, int status, const char *msg);

/* The IoT Hub error code an SDK expects with status (its errors carry {"Message":
 * "ErrorCode:<code>;<text>"}). */
const char *https_error_code(int status);
