/* session.h — MQTT sessions of authenticated modules, keyed by client id "<device>/<module>"
 * (part of the MQTT head). A persistent session (clean session 0) keeps its subscriptions while
 * the module is away and across restarts of the hub (table sessions in twins.db); the messages
 * for it wait in the endpoints' queues. Which topics a module may use is decided here. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/list.h"
#include "hub/hub.h"

struct conn;

struct subscription {
    char *filter;
    uint8_t qos;
};

struct session {
    struct hub *hub;
    char *client_id;        /* "<device>/<module>" as the client sent it */
    struct hub_identity id; /* who authenticated */
    bool clean;
    struct conn *conn; /* the head's connection; NULL while disconnected */
    struct subscription *subs;
    size_t n_subs;
    bool wants_inputs;  /* a subscription under devices/<d>/modules/<m>/ */
    bool wants_desired; /* subscribed to desired-property updates */
    bool wants_methods;
    bool wants_twin_res;
    char *will_topic;
    uint8_t *will_payload;
    size_t will_len;
    uint8_t will_qos;
    struct llist node;
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
void session_detach(struct session *s);
/* Module left the deployment or became another identity: forget its disconnected sessions. */
void sessions_forget_module(struct hub *h, const char *module);
/* Authorisation: may this module subscribe to filter? */
bool session_may_subscribe(const struct session *s, const char *filter, size_t len);
/* The QoS to deliver messages for input with (the highest of the matching subscriptions), or
 * -1 when no subscription matches devices/<d>/modules/<m>/inputs/<input>/<bag>. */
int session_input_qos(const struct session *s, const char *input);
/* 0; -ENOSPC beyond hub.max_subscriptions; -ENOMEM. */
int session_subscribe(struct session *s, const char *filter, size_t len, uint8_t qos);
void session_unsubscribe(struct session *s, const char *filter, size_t len);
/* `ledge hub status`: sessions[], with how many are connected and how many there are. */
json_t *sessions_status(struct hub *h, size_t *ret_connected, size_t *ret_sessions);
