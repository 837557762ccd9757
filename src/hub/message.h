/* message.h — a message as the hub keeps it: source, system properties, application properties
 * and body, with the compact binary form stored in endpoint queues (decoded without copying).
 * Pure: unit-tested and fuzzed. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/errors.h"
#include "mqtt/iothub.h"
#include "route/route.h"

/* System properties: the ones on the MQTT wire (same numbering as enum iothub_sysprop), then the
 * ones the hub adds. */
enum hub_sys {
    HUB_SYS_ENQUEUED_TIME = IOTHUB_PROP_COUNT,
    HUB_SYS_CONNECTION_DEVICE_GENERATION_ID,
    HUB_SYS_CONNECTION_AUTH_METHOD,
    HUB_SYS_INPUT_NAME,
    HUB_SYS_MESSAGE_TYPE,
    HUB_SYS_ACK,
    HUB_SYS_COUNT
};

#define HUB_MESSAGE_VERSION 1
#define HUB_MESSAGE_MAX_APP IOTHUB_APP_PROPS_MAX

/* Every string is NUL-terminated (views into a buffer the caller keeps alive). */
struct hub_message {
    const char *source;             /* "/messages/modules/<m>/outputs/<o>", ... */
    const char *sys[HUB_SYS_COUNT]; /* NULL: absent */
    const char *app_key[HUB_MESSAGE_MAX_APP];
    const char *app_value[HUB_MESSAGE_MAX_APP];
    size_t n_app;
    const uint8_t *body;
    size_t body_len;
    int64_t enqueued_ms;
};

/* The route language's name of a system property ("messageId"), or NULL for wire-only ones. */
const char *hub_sys_route_name(int sys);

int hub_message_encode(const struct hub_message *m, struct lbuf *out);
/* Views point into data, which must outlive *ret. -EBADMSG with a reason on malformed input. */
int hub_message_decode(const void *data, size_t len, struct hub_message *ret, struct lerr *e);

/* Fill a route_message for evaluating conditions; sys/app must hold HUB_SYS_COUNT and n_app
 * entries. The result refers to m's strings. */
void hub_message_route_view(const struct hub_message *m, struct route_prop *sys,
                            struct route_prop *app, struct route_message *ret);

/* Fill iothub_props (for encoding a property bag on delivery) from m. */
void hub_message_props(const struct hub_message *m, struct iothub_props *ret);
