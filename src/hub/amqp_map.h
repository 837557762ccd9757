/* amqp_map.h — what the AMQP head (head_amqp.c) adds on top of Qpid Proton, without I/O: the IoT
 * Hub link addresses a client attaches (/devices/<d>[/modules/<m>]/messages/events, .../twin,
 * .../methods/devicebound, $cbs), the CBS put-token request and its audience, AMQP message ids as
 * the hub's request ids and back, and an AMQP message as the hub's message (properties,
 * application properties, annotations, body) and back. Unit-tested (test-hub.c) and fuzzed
 * (fuzz-amqp.c). */
#pragma once

#include <proton/codec.h>
#include <proton/message.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/errors.h"
#include "base/str.h"
#include "message.h"
#include "mqtt/codec.h"

enum amqp_addr_kind {
    AMQP_ADDR_UNKNOWN,
    AMQP_ADDR_CBS,         /* $cbs: put-token requests and their answers */
    AMQP_ADDR_EVENTS,      /* .../messages/events: telemetry in; a module's inputs out */
    AMQP_ADDR_DEVICEBOUND, /* /devices/<d>/messages/devicebound: a device's cloud-to-device */
    AMQP_ADDR_TWIN,        /* .../twin */
    AMQP_ADDR_METHODS,     /* .../methods/devicebound */
};

struct amqp_addr {
    enum amqp_addr_kind kind;
    struct mqtt_str device; /* views into the parsed string; module.len 0: a device's link */
    struct mqtt_str module;
};

/* A link's address: "$cbs", or "[amqps://<host>]/devices/<d>[/modules/<m>]/<what>[/][?query]".
 * 0 with *ret (kind AMQP_ADDR_UNKNOWN for anything else); never fails otherwise. */
int amqp_addr_parse(const char *s, size_t n, struct amqp_addr *ret);

/* The audience of a put-token ("<host>/devices/<d>[/modules/<m>]", percent-encoded or not):
 * device and module decoded into scratch (at least n + 2 bytes), views into it in *ret.
 * -EINVAL when it names no device. */
int amqp_audience_parse(const char *s, size_t n, char *scratch, size_t scratch_size,
                        struct amqp_addr *ret);

/* A put-token request: the token (body: a string, or binary) and the audience (application
 * property "name"); -EINVAL with a reason when it is not one (operation "put-token", type
 * "servicebus.windows.net:sastoken" or "azure-devices.net:sastoken"). Views into msg. */
struct amqp_put_token {
    struct mqtt_str audience;
    struct mqtt_str token;
};
int amqp_put_token_parse(pn_message_t *msg, struct amqp_put_token *ret, struct lerr *err);

/* A twin request on a client's twin link: message annotations "operation" (GET, PATCH, PUT,
 * DELETE) and "resource" (/properties/reported, /notifications/twin/properties/desired). -EINVAL
 * for anything else. */
enum amqp_twin_op {
    AMQP_TWIN_GET,
    AMQP_TWIN_PATCH_REPORTED,
    AMQP_TWIN_SUBSCRIBE_DESIRED,
    AMQP_TWIN_UNSUBSCRIBE_DESIRED,
};
struct amqp_twin_request {
    enum amqp_twin_op op;
};
int amqp_twin_request_parse(pn_message_t *msg, struct amqp_twin_request *ret);
/* A method answer's status: application property "IoThub-status" (an integer, or its text).
 * -EINVAL without one. */
int amqp_method_status(pn_message_t *msg, int *ret);
/* The body's bytes (a data section, a string or binary value; none: {NULL, 0}); -EBADMSG for
 * another kind of body. Views into msg. */
int amqp_message_body(pn_message_t *msg, struct mqtt_str *ret);

/* An AMQP message id (message-id, correlation-id) as a request id the hub echoes: a typed string
 * ("s:text", "u:<32 hex>", "n:<decimal>", "b:<hex>") into out (cap bytes, NUL-terminated); its
 * length, -E2BIG when it does not fit, -EINVAL for a null id. */
int amqp_rid_from_msgid(pn_msgid_t id, char *out, size_t cap);
/* Back: the id into *ret (a string or binary points into storage, which must hold rid_len bytes
 * and outlive *ret). -EINVAL when rid is no such string. */
int amqp_msgid_from_rid(const char *rid, size_t rid_len, char *storage, pn_msgid_t *ret);
/* A message id as IoT Hub shows it: a string as it is, a uuid in its 8-4-4-4-12 form, an integer
 * in decimal, binary in hex. NULL id: nothing (returns 0 with out ""). */
int amqp_msgid_string(pn_msgid_t id, char *out, size_t cap);

/* A message from a client's events link as the hub's message: system properties from the AMQP
 * properties (message-id, correlation-id, user-id, to, content-type, content-encoding,
 * absolute-expiry-time, creation-time), the output name from application property
 * "iothub-outputname", message annotations iothub-interface-id, dt-subject, dt-dataschema; the
 * other application properties as they are (numbers and booleans in text); the body of a data
 * section or a string value. The strings live in keep (which the caller frees); the body points
 * into msg. -EBADMSG with a reason: too many properties, a key or value that is not text. */
int amqp_message_to_hub(pn_message_t *msg, struct hub_message *m, struct lstrv *keep,
                        struct lerr *err);
/* m as an AMQP message for a module input (annotation x-opt-input-name = input; NULL: none), its
 * connection device and module ids and enqueued time as annotations, as IoT Hub sends them; the
 * sender's output name is not passed on (as over MQTT). */
int amqp_message_from_hub(const struct hub_message *m, const char *input, pn_message_t *out);
