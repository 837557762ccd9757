/* hub.h — ledge-hub's internals shared by its units: the hub, client connections, MQTT sessions,
 * endpoints (one per route sink) with their durable queues (one per priority), and counters.
 *
 * Data flow: a module PUBLISHes to its events topic → router.c builds the message, matches the
 * route table, appends it to each matching endpoint's queue (store/) → the QoS 1 PUBACK waits for
 * the group commit (store_sync once per loop iteration) → endpoint.c delivers from the queues,
 * highest priority first, to the module subscribed to that input (or upstream.c to the upstream
 * broker) and acks the record when the receiver's PUBACK arrives. */
#pragma once

#include <jansson.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/errors.h"
#include "config/config.h"
#include "hub/message.h"
#include "mqtt/codec.h"
#include "net/http_server.h"
#include "route/route.h"
#include "store/store.h"

struct event_base;
struct event;
struct bufferevent;
struct evconnlistener;
struct hub;
struct session;
struct endpoint;

#define HUB_PRIORITIES 11 /* 0..9 and "no priority" (index 10) */
/* Event priorities of the hub's loop: I/O and delivery run before the group commit. */
#define HUB_EVENT_PRIORITIES 3
#define HUB_PRIORITY_LOW 2
#define HUB_NO_PRIORITY 10
#define HUB_MAX_PACKET_OVERHEAD 8192 /* topic and property bag around a 256 KiB body */
#define HUB_CONNECT_TIMEOUT_MS 10000 /* TLS handshake and CONNECT, from accept */

/* ------------------------------------------------------------------ identities (runtime.c) */

struct hub_module_identity {
    char *module_id;
    char *generation_id;
    uint8_t key[32];
    size_t keylen;
};

/* What ledged tells the hub through <state_dir>/hub/runtime.json (re-read on SIGHUP). */
struct hub_runtime {
    char *device_id;
    char *iothub_hostname;
    char *gateway_hostname;
    char *server_cert;
    char *server_key;
    char *trust_bundle;
    json_t *edge_hub; /* $edgeHub desired, or NULL */
    json_t *twins;    /* module -> desired properties */
    json_t *device;   /* {"auth": "sas", "key"} or {"auth": "x509", ...} */
    struct hub_module_identity *modules;
    size_t n_modules;
};

int hub_runtime_load(const char *path, struct hub_runtime *ret, struct lerr *err);
void hub_runtime_clear(struct hub_runtime *r);
const struct hub_module_identity *hub_runtime_module(const struct hub_runtime *r,
                                                     const char *module_id);

/* ------------------------------------------------------------------ counters */

struct hub_counters {
    uint64_t connections_total;
    uint64_t connections_refused; /* at hub.max_connections, all of them authenticated */
    uint64_t connections_evicted; /* unauthenticated ones closed to make room at the limit */
    uint64_t auth_failures;
    uint64_t received;     /* PUBLISH to an events topic */
    uint64_t routed;       /* message copies stored into endpoint queues */
    uint64_t unrouted;     /* matched no route */
    uint64_t delivered;    /* PUBLISH sent to a receiver */
    uint64_t acked;        /* receiver acknowledgements (QoS 1) */
    uint64_t expired;      /* of queues removed since start; status adds the live queues' */
    uint64_t refused;      /* store full (or disk full): the sender was refused */
    uint64_t unauthorized; /* publishes/subscriptions outside a module's own topics */
    uint64_t malformed;    /* connections closed for protocol violations */
    uint64_t oversized;    /* connections closed for a packet or message over the limit */
    uint64_t qos2_refused; /* connections closed for a QoS 2 PUBLISH (as IoT Hub does) */
    uint64_t subscriptions_refused; /* beyond hub.max_subscriptions */
    uint64_t direct;                /* QoS 0 messages handed straight to a waiting receiver */
};

/* ------------------------------------------------------------------ connections (conn.c) */

enum conn_state {
    CONN_NEW, /* waiting for CONNECT */
    CONN_ACTIVE,
    CONN_CLOSING, /* flushing, then freed */
};

/* A PUBLISH to an input awaiting the receiver's PUBACK. */
struct inflight {
    uint16_t packet_id;
    struct endpoint *ep;
    uint8_t prio;
    uint64_t seq;
};

struct conn {
    struct hub *hub;
    struct bufferevent *bev;
    struct event *keepalive;
    struct event *free_ev;
    enum conn_state state;
    char peer[64];
    struct session *session; /* after CONNECT */
    uint16_t keep_alive_s;
    /* QoS 1 PUBACKs to send once the batch they belong to is durable */
    uint32_t pending_acks;
    /* outgoing QoS 1 window */
    struct inflight *inflight;
    size_t n_inflight, cap_inflight;
    uint16_t next_packet_id;
    bool peer_gone; /* EOF or error seen: finish on the next loop pass (conn_eventcb) */
    bool gone_eof;
    struct conn *next, *prev;
};

void conn_accept(struct hub *h, int fd, bool tls);
void conn_close(struct conn *c, const char *why);
void conn_free_all(struct hub *h);
/* Queue raw bytes; the payload may be referenced without a copy. */
int conn_send(struct conn *c, const void *data, size_t n);
int conn_send_publish(struct conn *c, const char *topic, size_t topic_len, uint8_t qos, bool dup,
                      uint16_t packet_id, const void *payload, size_t payload_len);
size_t conn_output_pending(const struct conn *c);
uint16_t conn_next_packet_id(struct conn *c);

/* ------------------------------------------------------------------ sessions (session.c) */

struct subscription {
    char *filter;
    uint8_t qos;
};

/* An authenticated module client. Persistent sessions (clean session 0) keep their
 * subscriptions across connections; messages for inputs live in the endpoints' queues. */
struct session {
    struct hub *hub;
    char *client_id; /* "<device>/<module>" */
    char *device_id;
    char *module_id;
    bool clean;
    struct conn *conn; /* NULL while disconnected */
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
    struct session *next;
};

struct session *session_find(struct hub *h, const char *client_id);
struct session *session_attach(struct hub *h, struct conn *c, const char *client_id,
                               const char *device, const char *module, bool clean,
                               bool *ret_present);
void session_detach(struct session *s, bool graceful);
void session_free_all(struct hub *h);
/* The persistent sessions saved before a restart, as disconnected sessions; their count. */
int sessions_load(struct hub *h);
/* Authorisation: may this module subscribe to filter / publish to topic? */
bool session_may_subscribe(const struct session *s, const char *filter, size_t len);
/* The QoS to deliver messages for input with (the highest of the matching subscriptions), or
 * -1 when no subscription matches devices/<d>/modules/<m>/inputs/<input>/<bag>. */
int session_input_qos(const struct session *s, const char *input);
int session_subscribe(struct session *s, const char *filter, size_t len, uint8_t qos);
void session_unsubscribe(struct session *s, const char *filter, size_t len);

/* ------------------------------------------------------------------ routing (router.c) */

struct pending_ack {
    struct conn *c; /* NULL once the connection is gone */
    uint16_t packet_id;
};

/* Handle a PUBLISH from an authenticated module's session: route it, store it, and (QoS 1)
 * acknowledge it on c after the group commit. Returns < 0 when the connection must be closed:
 * -EACCES (not its topic), -EPROTO (bad property bag), -ENOSPC (QoS 1 refused: store full). */
int router_publish(struct hub *h, struct session *s, struct conn *c, const struct mqtt_publish *p);
/* A will, published for s after an ungraceful disconnect: routed like a message from it, with
 * the application property iothub-MessageType=Will (as IoT Hub marks wills). */
int router_publish_will(struct hub *h, struct session *s, const struct mqtt_publish *p);
/* A message produced inside the hub (twin change notifications, wills). */
int router_inject(struct hub *h, struct hub_message *m);
/* Run the group commit now: store_sync, then send the PUBACKs it makes true. */
void router_commit(struct hub *h);
void router_schedule_commit(struct hub *h);
/* commit.c: the group commit (fsyncs on a worker thread, PUBACKs when durable). */
int commit_start(struct hub *h);
void commit_stop(struct hub *h);
void commit_now(struct hub *h);
void commit_conn_gone(struct hub *h, struct conn *c);
/* Acknowledge a QoS 1 PUBLISH in order with the ones waiting for the group commit. */
int router_ack(struct hub *h, struct conn *c, uint16_t packet_id);
void router_conn_gone(struct hub *h, struct conn *c);

/* ------------------------------------------------------------------ endpoints (endpoint.c) */

enum endpoint_kind {
    ENDPOINT_MODULE,   /* BrokeredEndpoint("/modules/<m>/inputs/<i>") */
    ENDPOINT_UPSTREAM, /* $upstream */
};

struct endpoint {
    struct hub *hub;
    enum endpoint_kind kind;
    char *id;     /* "/modules/m/inputs/i" or "$upstream" */
    char *module; /* ENDPOINT_MODULE */
    char *input;
    struct queue *q[HUB_PRIORITIES];
    bool in_use; /* named by the current route table */
    struct endpoint *next;
};

int endpoints_sync(struct hub *h, const struct route_table *t, struct lerr *err);
struct endpoint *endpoint_find(struct hub *h, const char *id);
/* Something became deliverable (new message, receiver connected or acked): deliver soon. */
void endpoint_kick(struct hub *h, struct endpoint *ep);
void endpoints_kick_module(struct hub *h, const char *module);
void endpoints_deliver_all(struct hub *h);
/* The receiver acknowledged packet_id on c. */
void endpoint_puback(struct hub *h, struct conn *c, uint16_t packet_id);
/* A receiver's connection went away: unacked deliveries will be redelivered. */
void endpoint_conn_gone(struct hub *h, struct conn *c);
void endpoints_free(struct hub *h);
void endpoints_prune(struct hub *h);
json_t *endpoints_status(struct hub *h);
/* QoS 0 fast path: hand a message straight to a connected receiver with an empty queue. */
bool endpoint_try_direct(struct hub *h, struct endpoint *ep, const struct hub_message *m);

/* ------------------------------------------------------------------ upstream (upstream.c) */

int upstream_start(struct hub *h);
void upstream_stop(struct hub *h);
/* Drain ep ($upstream) to the upstream broker while connected. */
void upstream_deliver(struct hub *h, struct endpoint *ep, int64_t now);
json_t *upstream_status(struct hub *h);

/* ------------------------------------------------------------------ twins and methods */

/* twin.c: $iothub/twin/GET and reported PATCH from a module. */
int twin_publish(struct hub *h, struct session *s, struct conn *c, const struct iothub_topic *t,
                 const struct mqtt_publish *p);
int twins_start(struct hub *h, struct lerr *err);
void twins_stop(struct hub *h);
/* The hub's SQLite database (twins.db), or NULL before twins_start(). */
struct sqlite3 *twins_db(struct hub *h);
/* The deployment's desired documents changed (runtime reload): apply and notify. */
void twins_runtime_changed(struct hub *h);
/* {"desired": {..., "$version"}, "reported": {..., "$version"}} or NULL. */
json_t *twins_get(struct hub *h, const char *module);
/* Merge a patch into the desired properties, notify the module; *ret is the new twin. */
int twins_patch_desired(struct hub *h, const char *module, const json_t *patch, json_t **ret,
                        struct lerr *err);

/* methods.c: a module's answer to a direct method call. */
int methods_response(struct hub *h, struct session *s, const struct iothub_topic *t,
                     const struct mqtt_publish *p);
int methods_start(struct hub *h);
void methods_stop(struct hub *h);
/* Invoke method on module; cb gets the HTTP-like status and the JSON reply (owned by callee). */
typedef void (*methods_done_fn)(void *ud, int status, json_t *reply);
int methods_invoke(struct hub *h, const char *module, const char *method, const json_t *payload,
                   int timeout_s, methods_done_fn cb, void *ud, void **ret_handle,
                   struct lerr *err);
void methods_cancel(struct hub *h, void *handle);

/* ------------------------------------------------------------------ the hub (hub.c) */

struct hub {
    struct event_base *base;
    struct ledge_config cfg;
    char *runtime_path;
    struct hub_runtime rt;
    struct route_table *routes;
    struct store *store;
    SSL_CTX *ssl_ctx;
    struct evconnlistener *tls_listener;
    struct evconnlistener *plain_listener;
    struct conn *conns;
    size_t n_conns;   /* all, closing ones included (they are freed from the loop) */
    size_t n_closing; /* of which CONN_CLOSING */
    struct session *sessions;
    size_t n_sessions;
    struct endpoint *endpoints;
    struct event *commit_ev;
    struct event *deliver_ev;
    struct event *tick_ev;
    struct event *sighup_ev, *sigterm_ev, *sigint_ev;
    struct hs_server *control;
    struct upstream *upstream;
    struct committer *committer;
    struct twins *twins;
    struct methods *methods;
    /* group commit: PUBACKs waiting for store_sync() */
    struct pending_ack *acks;
    size_t n_acks, cap_acks;
    bool store_dirty;
    /* scratch buffers reused for every message */
    struct lbuf scratch_props, scratch_msg, scratch_topic;
    struct route_match *matches; /* room for every sink of the route table */
    size_t cap_matches;
    bool commit_scheduled;
    bool deliver_scheduled;
    struct hub_counters n;
    size_t max_packet; /* whole MQTT packet: hub.max_packet_size + HUB_MAX_PACKET_OVERHEAD */
    int64_t started_ms;
    int64_t last_prune_ms;
    bool stopping;   /* hub_stop(): connections close without publishing wills */
    char *queue_dir; /* <hub.store_dir>/queues */
    /* unauthorised attempts are logged once per module and topic kind */
    struct lstrv logged_once;
};

int hub_start(struct hub *h, struct lerr *err);
void hub_stop(struct hub *h);
int hub_load_runtime(struct hub *h, struct lerr *err);
/* Log a message once per key (e.g. "module:topic"), count it every time. */
void hub_log_once(struct hub *h, const char *key, const char *fmt, ...) _printf_(3, 4);
json_t *hub_status_json(struct hub *h);

/* control.c: the hub's control API on a unix socket (status, twins, methods) for ledged. */
int control_start(struct hub *h);
void control_stop(struct hub *h);
