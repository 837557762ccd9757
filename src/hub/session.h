/* session.h — MQTT sessions of authenticated modules, keyed by client id "<device>/<module>"
 * (part of the MQTT head). A persistent session (clean session 0) keeps its subscriptions while
 * the module is away and across restarts of the hub (table sessions in twins.db); the messages
 * for it wait in the endpoints' queues. Which topics a module may use is decided here. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base/list.h"
#include "hub.h"

struct conn;

struct subscription {
    char *filter;
    uint8_t qos;
};

/* Idle sessions are much of a hub's memory: the fields are ordered to pack. */
struct session {
    char *client_id;        /* "<device>/<module>" as the client sent it */
    struct hub_identity id; /* who authenticated */
    struct conn *conn;      /* the head's connection; NULL while disconnected */
    struct subscription *subs;
    char *will;      /* the will's topic, NUL, then its payload (will_len bytes); NULL: none */
    char *qos_input; /* the input session_input_qos() answered for last (qos_value) */
    struct llist node;
    uint32_t n_subs;
    uint16_t will_len;
    uint8_t will_qos;
    int8_t qos_value;
    bool clean;
    bool wants_inputs;  /* a subscription under devices/<d>/modules/<m>/ */
    bool wants_desired; /* subscribed to desired-property updates */
    bool wants_methods;
    bool wants_twin_res;
};

int sessions_start(struct hub *h);
/* Free every session (the connections are gone). */
void sessions_stop(struct hub *h);
/* The persistent sessions saved before a restart, as disconnected sessions; their count. */
int sessions_load(struct hub *h);
struct session *session_find(struct hub *h, const char *client_id);
/* The session for client_id, attached to conn (which must have none, and the session no live
 * connection: a takeover closes that first). A clean connection drops what was kept;
 * *ret_present says whether a persistent session was resumed. */
struct session *session_attach(struct hub *h, struct conn *conn, const char *client_id,
                               const struct hub_identity *id, bool clean, bool *ret_present);
/* The connection is gone; a clean session goes with it. The will is the head's to publish. */
void session_detach(struct hub *h, struct session *s);
/* The will for an ungraceful end (a copy; payload at most 65535 bytes), or none (topic NULL). */
int session_set_will(struct session *s, const char *topic, size_t topic_len, const uint8_t *payload,
                     size_t payload_len, uint8_t qos);
/* The will's payload (will_len bytes), when s->will is set. */
static inline const uint8_t *session_will_payload(const struct session *s)
{
    return (const uint8_t *)s->will + strlen(s->will) + 1;
}
/* Module left the deployment or became another identity: forget its disconnected sessions. */
void sessions_forget_module(struct hub *h, const char *module);
/* Authorisation: may this module subscribe to filter? */
bool session_may_subscribe(const struct session *s, const char *filter, size_t len);
/* The QoS to deliver messages for input with (the highest of the matching subscriptions), or
 * -1 when no subscription matches devices/<d>/modules/<m>/inputs/<input>/<bag>. The answer is
 * kept for the next call with the same input, until the subscriptions change. */
int session_input_qos(struct session *s, const char *input);
/* A leaf device's: the QoS to deliver its cloud-to-device messages with (the highest of the
 * subscriptions matching devices/<d>/messages/devicebound/<bag>), or -1 (none, or a module). */
int session_c2d_qos(const struct session *s);
/* 0; -ENOSPC beyond hub.max_subscriptions; -EIO when a persistent session could not be saved
 * (nothing changed then); -ENOMEM. */
int session_subscribe(struct hub *h, struct session *s, const char *filter, size_t len,
                      uint8_t qos);
void session_unsubscribe(struct hub *h, struct session *s, const char *filter, size_t len);
/* `ledge hub status`: sessions[], with how many are connected and how many there are. */
json_t *sessions_status(struct hub *h, size_t *ret_connected, size_t *ret_sessions);
