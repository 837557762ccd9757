/* head.h — the protocol head interface: where a transport meets the rest of the hub. A head turns
 * its wire into the hub's types and back, and nothing below it knows the wire:
 *
 *   in:  credentials → auth_check() → struct hub_identity; a message from a module's output →
 *        router_publish(); a twin request → twins_request(); a method's answer →
 *        methods_response(); a receiver's acknowledgement → input_delivery_done()
 *   out: the hub calls the head's ops table below — deliver this message to this client and tell
 *        me when it is acknowledged; answer this twin request; send this method call or desired
 *        patch; the group commit made this durable, answer the sender (commit.c); close this
 *        identity's sessions
 *
 * The heads: MQTT 3.1.1 over TCP and TLS (head_mqtt.c); MQTT over WebSockets (head_ws.c), which
 * shares head_mqtt.c's packet handling behind another transport; AMQP 1.0 (head_amqp.c, Qpid
 * Proton's connection engine), which maps a module's input link to deliver() and the client's
 * settlement to input_delivery_done(), the twin request/response links (the correlation id as the
 * request id) to twins_request() and twin_response(), and its CBS put-token to auth_check(). The
 * HTTPS method API (issue 12) only calls methods_invoke() and listens to nothing. A head
 * registers in server.c. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/errors.h"
#include "base/list.h"
#include "hub.h"
#include "message.h"

struct endpoint;
struct hub_client;
struct hub_series;

/* What the hub sends a client unasked; a client listens to some of them (MQTT: by subscribing). */
enum hub_stream {
    HUB_STREAM_INPUTS,         /* messages routed to its module's inputs */
    HUB_STREAM_DESIRED,        /* desired-property patches of its twin */
    HUB_STREAM_METHODS,        /* direct method calls */
    HUB_STREAM_TWIN_RESPONSES, /* answers to its twin requests */
    HUB_STREAM_C2D,            /* a leaf device's cloud-to-device messages */
};

/* One delivery from an input endpoint that the client must acknowledge. The head keeps it beside
 * its own handle (MQTT packet id, AMQP delivery tag) and hands it back to input_delivery_done()
 * when the client acknowledges it, or when the client goes away without doing so. */
struct hub_delivery {
    struct endpoint *ep;
    uint8_t prio;
    uint64_t seq;
    /* edgehub_message_send_duration_seconds: when it was handed over (hub_metrics_now_us()) and
     * its series (metrics.h), observed at the acknowledgement */
    int64_t handed_us;
    struct hub_series *send;
};

struct hub_head_ops {
    const char *name; /* "mqtt" */

    /* ---- the head: listeners, its clients, what it keeps for them */
    int (*start)(struct hub *h, struct lerr *err);
    /* Close every connection (h->stopping: no wills) and free what start() made. */
    void (*stop)(struct hub *h);
    /* The runtime file was reloaded: a new TLS certificate applies to new connections. */
    void (*reload)(struct hub *h);
    /* Module left the deployment or is now another identity: forget what the head keeps for it
     * while it is away (persistent sessions), after clients_close_address() cut its clients; module
     * is its address (hub_identity.address: a module id or "devices/<d>"). */
    void (*forget_module)(struct hub *h, const char *module);
    /* Connections open (authenticated or not), and the sessions for `ledge hub status`. */
    size_t (*connections)(struct hub *h);
    json_t *(*sessions_status)(struct hub *h, size_t *ret_connected, size_t *ret_sessions);

    /* ---- one authenticated client (struct hub_client) */
    /* -1 when the client does not listen to stream, else the QoS it asked for (0 or 1); input
     * names the module input for HUB_STREAM_INPUTS. */
    int (*listens)(const struct hub_client *c, enum hub_stream stream, const char *input);
    /* May the client take another delivery now: its output buffer has room and, for one it
     * must acknowledge, its window too? */
    bool (*ready)(const struct hub_client *c, bool acknowledged);
    /* Send m to the client for input (NULL: a cloud-to-device message for a leaf device). d NULL:
     * at most once; else the client acknowledges it and the head reports that through
     * input_delivery_done(d). redelivery: sent before. */
    int (*deliver)(struct hub_client *c, const char *input, const struct hub_message *m,
                   const struct hub_delivery *d, bool redelivery);
    /* The answer to twin request rid; version < 0: none to report. body may be NULL. */
    void (*twin_response)(struct hub_client *c, const char *rid, size_t rid_len, int status,
                          long long version, const char *body);
    /* A desired-property patch (JSON with its $version). */
    void (*desired)(struct hub_client *c, long long version, const char *body);
    /* A direct method call; the answer comes back through methods_response(). */
    int (*method_call)(struct hub_client *c, const char *method, const char *rid, const char *body);
    /* commit.c: what the client sent with this token is durable now; answer it (MQTT: PUBACK). */
    void (*acked)(struct hub_client *c, uint32_t token);
    /* Close the client's connection: it must send again (a failed commit: will true, its will is
     * published as for any connection that ends without a goodbye) or may not stay (its identity
     * changed: will false, as when a new connection takes over). */
    void (*close)(struct hub_client *c, const char *why, bool will);
};

/* An authenticated client of some head, embedded in the head's own connection (or link) object.
 * The head fills ops and id, and puts it on the hub's list (clients.h) for as long as it may be
 * delivered to; the hub's units keep nothing else of it. */
struct hub_client {
    const struct hub_head_ops *ops;
    const struct hub_identity *id; /* owned by the head, alive while the client is listed */
    struct llist node;             /* clients.c */
    uint32_t pending_acks;         /* commit.c: acknowledgements waiting for the group commit */
};
