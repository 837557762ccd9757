/* modclient.h — the module client library: what an IoT Edge module needs to talk to ledge-hub
 * (or IoT Edge's own hub) from C on a libevent loop: identity from the environment ledged injects,
 * SAS tokens signed through the workload API, MQTT over TLS trusting the workload trust bundle,
 * outputs, inputs, the module twin and direct methods. docs/modules.md describes it. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/errors.h"
#include "mqtt/iothub.h"

struct event_base;
struct modclient;

#define MODCLIENT_API_VERSION_DEFAULT "2019-01-30" /* workload API */
#define MODCLIENT_OBO_MODULE "$edgeHub" /* the module whose key signs on behalf of others */
#define MODCLIENT_PORT_DEFAULT 8883
#define MODCLIENT_TOKEN_LIFETIME_DEFAULT 3600 /* seconds; renewed at 80 % by reconnecting */
#define MODCLIENT_MAX_PENDING_DEFAULT 1000    /* outgoing messages kept until acknowledged */
#define MODCLIENT_WINDOW 64                   /* QoS 1 messages in flight at once */
#define MODCLIENT_BACKOFF_MIN_MS 1000
#define MODCLIENT_BACKOFF_MAX_MS 60000
#define MODCLIENT_REQUEST_TIMEOUT_MS 30000 /* workload calls, twin requests */
#define MODCLIENT_MAX_REQUESTS 64          /* twin requests awaiting their answer */

/* Who the module is and how it reaches its hub. Strings are owned (modclient_config_clear). */
struct modclient_config {
    char *device_id;
    char *module_id;        /* NULL: a device identity (with sas_key; a gateway's leaf device) */
    char *generation_id;    /* for the workload API's sign path */
    char *iothub_hostname;  /* audience of the SAS token, host part of the MQTT user name */
    char *gateway_hostname; /* the hub: where to connect and the name its certificate carries */
    char *connect_host;     /* where to connect when not gateway_hostname (LEDGE_HUB_HOST) */
    int port;
    bool tls;
    char *workload_socket; /* path of the workload API's unix socket, or NULL */
    char *api_version;     /* workload API version */
    char *ca_file;         /* trust this PEM bundle instead of the workload trust bundle */
    char *sas_key;         /* base64 module key: sign tokens here instead of the workload API */
    /* On behalf of (a gateway speaking for an identity whose key it does not hold, as edgeHub's
     * ClientAuthenticationForEdgeHubOnBehalfOf): the edge device whose $edgeHub signs this
     * identity's tokens. The connection is still the identity's own (client id, user name);
     * the token's audience is "<iothub_hostname>/devices/<on_behalf_of>/modules/$edgeHub" and
     * sas_key must be that $edgeHub's key. IoT Hub takes it for an identity in the edge
     * device's scope (a leaf whose parent is the edge). NULL: the identity's own token. */
    char *on_behalf_of;
    int token_lifetime_s;
    size_t max_pending;
};

/* Read the configuration the way Azure IoT module SDKs do (contract §6): IOTEDGE_WORKLOADURI
 * (unix://), IOTEDGE_DEVICEID, IOTEDGE_MODULEID, IOTEDGE_MODULEGENERATIONID,
 * IOTEDGE_IOTHUBHOSTNAME, IOTEDGE_GATEWAYHOSTNAME, IOTEDGE_AUTHSCHEME (sasToken) and
 * IOTEDGE_APIVERSION; or the legacy EdgeHubConnectionString with EdgeModuleCACertificateFile.
 * ledge extensions: LEDGE_HUB_HOST (connect there, still verifying the gateway host name),
 * LEDGE_HUB_PORT, LEDGE_HUB_TLS (true/false). getenv_fn may be NULL (then getenv). Errors name
 * the variable: "IOTEDGE_MODULEID: not set". */
int modclient_config_from_env(const char *(*getenv_fn)(const char *name, void *ud), void *ud,
                              struct modclient_config *ret, struct lerr *e);
/* "HostName=h;GatewayHostName=g;DeviceId=d;ModuleId=m;SharedAccessKey=k" (parts in any order,
 * names case-insensitive); fills the identity fields of cfg and sas_key. */
int modclient_config_from_connection_string(const char *s, struct modclient_config *cfg,
                                            struct lerr *e);
void modclient_config_clear(struct modclient_config *cfg);

/* ---- the client ---- */

/* modclient_config_from_env() then modclient_new(): the usual start of a module. */
int modclient_from_environment(struct event_base *base, struct modclient **ret, struct lerr *e);
/* cfg is copied. The client does nothing until modclient_start(). */
int modclient_new(struct event_base *base, const struct modclient_config *cfg,
                  struct modclient **ret, struct lerr *e);
/* Fails every pending operation with -ECANCELED (their callbacks run), then frees. Not from
 * inside one of this client's callbacks. Accepts NULL. */
void modclient_free(struct modclient *c);
/* Connect and keep connected: trust bundle, token, MQTT CONNECT; on any failure retry with
 * back-off from 1 s to 60 s; renew the token at 80 % of its lifetime by reconnecting. */
int modclient_start(struct modclient *c);
bool modclient_connected(const struct modclient *c);
/* Not connected: give up the back-off wait or the attempt in progress and connect now, the
 * back-off back at its start (the caller knows the endpoint is reachable again: the hub's device
 * link to it came up). Connected, or not started: nothing. A failure is reported through the
 * connection callback as any attempt's. */
void modclient_reconnect_now(struct modclient *c);
/* connected: true after each successful CONNECT; false with the reason after a failure or loss. */
typedef void (*modclient_connection_fn)(void *ud, bool connected, const char *why);
void modclient_on_connection(struct modclient *c, modclient_connection_fn cb, void *ud);

/* ---- outputs ---- */

/* result: 0 the hub acknowledged (stored) it; -ECANCELED the client was freed first. */
typedef void (*modclient_sent_fn)(void *ud, int result);
/* Send body to output (QoS 1, on devices/<d>/modules/<m>/messages/events/ with $.on=output and
 * props' system and application properties; $.on, $.cdid and $.cmid in props are ignored).
 * Kept and re-sent across reconnects until acknowledged. done may be NULL. -ENOBUFS when
 * max_pending messages are waiting already; -EINVAL for an output name that cannot be sent. */
int modclient_send_output(struct modclient *c, const char *output, const struct iothub_props *props,
                          const void *body, size_t len, modclient_sent_fn done, void *ud);
/* The identity's own telemetry, as IoT Hub takes it from a device or a module connected to it
 * directly: body on devices/<d>/messages/events/<bag> (a module's: devices/<d>/modules/<m>/
 * messages/events/<bag>), QoS 1, kept and re-sent as above, props' system and application
 * properties without $.on, $.cdid, $.cmid (IoT Hub adds who sent it). -ENOBUFS as above. */
int modclient_send_event(struct modclient *c, const struct iothub_props *props, const void *body,
                         size_t len, modclient_sent_fn done, void *ud);
/* Messages waiting for their acknowledgement (sent or not yet). */
size_t modclient_pending(const struct modclient *c);
/* Add an application property (strings borrowed until the call that uses props). -E2BIG past
 * IOTHUB_APP_PROPS_MAX. */
int modclient_props_add(struct iothub_props *p, const char *key, const char *value);

/* ---- inputs ---- */

struct modclient_message {
    const char *input;                /* NUL-terminated */
    const struct iothub_props *props; /* decoded system and application properties */
    const uint8_t *body;
    size_t len;
};
typedef void (*modclient_input_fn)(void *ud, const struct modclient_message *m);
/* Call cb for messages arriving on input (NULL: every input without its own handler). One
 * handler per name; setting it again replaces it, cb NULL removes it. The hub's QoS 1 delivery
 * is acknowledged when cb returns. Everything in m is valid only during the call. */
int modclient_on_input(struct modclient *c, const char *input, modclient_input_fn cb, void *ud);
/* The value of an application property (NULL when absent) as a NUL-terminated copy in buf. */
const char *modclient_message_prop(const struct modclient_message *m, const char *key, char *buf,
                                   size_t size);

/* ---- twin ---- */

/* status: the hub's (200 for GET) or a negative errno (-ETIMEDOUT, -ECANCELED); twin is the
 * whole document {"desired": {...}, "reported": {...}} (borrowed) or NULL. */
typedef void (*modclient_twin_fn)(void *ud, int status, const json_t *twin);
int modclient_twin_get(struct modclient *c, modclient_twin_fn cb, void *ud);
/* status 204 on success with the new reported $version, or as above. */
typedef void (*modclient_report_fn)(void *ud, int status, int64_t version);
/* Patch the reported properties (a JSON merge patch: null removes a key). cb may be NULL.
 * -EBUSY past MODCLIENT_MAX_REQUESTS unanswered requests. */
int modclient_twin_report(struct modclient *c, const json_t *patch, modclient_report_fn cb,
                          void *ud);
/* Desired properties: complete true with the whole desired document after every (re)connect
 * (so nothing changed while disconnected is missed), false with each patch the hub pushes. */
typedef void (*modclient_desired_fn)(void *ud, const json_t *desired, int64_t version,
                                     bool complete);
void modclient_on_desired(struct modclient *c, modclient_desired_fn cb, void *ud);

/* ---- direct methods ---- */

/* Return the status to answer with (200, 400, ...) and optionally a JSON reply in *ret_reply
 * (owned by the library afterwards). payload is the request's JSON (a JSON string when it was
 * not JSON; null when empty). */
typedef int (*modclient_method_fn)(void *ud, const char *method, const json_t *payload,
                                   json_t **ret_reply);
/* One handler per name (NULL: every method without its own handler). A method without any
 * handler is answered 501. cb NULL removes it. */
int modclient_on_method(struct modclient *c, const char *method, modclient_method_fn cb, void *ud);

/* Methods answered later (a gateway relaying the call elsewhere): cb gets every method call
 * (before any handler of modclient_on_method) with its request id (NUL-terminated, as sent), and
 * the answer goes out with modclient_method_respond() on the same connection. NULL removes it. */
typedef void (*modclient_method_async_fn)(void *ud, const char *method, const json_t *payload,
                                          const char *rid);
void modclient_on_method_async(struct modclient *c, modclient_method_async_fn cb, void *ud);
/* -ENOTCONN when the connection the call came on is gone (the caller's service times out). */
int modclient_method_respond(struct modclient *c, const char *rid, int status, const json_t *reply);

/* ---- cloud-to-device messages (a device identity) ---- */

/* Set before modclient_start(): the client subscribes to devices/<d>/messages/devicebound/# and
 * cb gets each message (input ""; everything in m valid only during the call). It is
 * acknowledged to the server only by modclient_c2d_ack(token) — once the caller has it safe —
 * on the connection it came on; token 0 (QoS 0) needs none. A connection lost first leaves it
 * unacknowledged: the server sends it again (at least once). */
typedef void (*modclient_c2d_fn)(void *ud, const struct modclient_message *m, uint32_t token);
void modclient_on_c2d(struct modclient *c, modclient_c2d_fn cb, void *ud);
/* -ENOTCONN when that connection is gone. */
int modclient_c2d_ack(struct modclient *c, uint32_t token);

/* ---- SAS tokens (exposed for tests and tools) ---- */

/* The resource a token is for: "<iothub_hostname>/devices/<d>/modules/<m>" (a device's:
 * "<iothub_hostname>/devices/<d>"; on behalf of an edge device E:
 * "<iothub_hostname>/devices/<E>/modules/$edgeHub"). */
char *modclient_token_resource(const struct modclient_config *cfg);
/* The string to sign: percent-encoded resource, "\n", expiry. */
int modclient_token_string_to_sign(const char *resource, uint64_t expiry, struct lbuf *out);
/* "SharedAccessSignature sr=<enc resource>&sig=<enc signature>&se=<expiry>". */
int modclient_token_build(const char *resource, const char *signature_b64, uint64_t expiry,
                          struct lbuf *out);
