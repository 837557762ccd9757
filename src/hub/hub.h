/* hub.h — what every unit of ledge-hub shares, and nothing else: the hub's context (struct hub:
 * the loop, the configuration, the runtime file, the route table, the store, and one pointer to
 * each unit's own state), the counters, the identity a protocol head authenticated, and log-once.
 *
 * The units form a pipeline that flows one way (docs/hub.md draws it):
 *
 *   head_mqtt.c (a protocol head, head.h) ── message ──▶ router.c ── copies ──▶ endpoint.c queues
 *        ▲    │                                                                     │
 *        │    ├── twin and method requests ──▶ twin.c, methods.c (sinks)            ▼
 *        │    └── authentication ──▶ auth.c                       input.c, upstream.c (sinks)
 *        │                                                                          │
 *        └──── deliveries, answers, acknowledgements (commit.c) ◀── through the head's ops table
 *
 * (head_amqp.c, the AMQP head, sits where head_mqtt.c does.) Each unit has its own header and
 * includes only the headers of units below it (tests/lint/hub-includes.sh fails on a circle). */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/errors.h"
#include "base/str.h"
#include "config/config.h"
#include "runtime.h"

struct event_base;
struct route_table;
struct store;

#define HUB_PRIORITIES 11 /* 0..9 and "no priority" (index 10) */
#define HUB_NO_PRIORITY 10
/* Event priorities of the hub's loop: I/O and delivery run before the group commit. */
#define HUB_EVENT_PRIORITIES 3
#define HUB_PRIORITY_LOW 2
#define HUB_MAX_PACKET_OVERHEAD 8192 /* topic and property bag around a 256 KiB body */

struct hub_counters {
    uint64_t connections_total;
    uint64_t connections_refused; /* at hub.max_connections, all of them authenticated */
    uint64_t connections_evicted; /* unauthenticated ones closed to make room at the limit */
    uint64_t auth_failures;
    uint64_t received;     /* messages from modules' outputs */
    uint64_t routed;       /* message copies stored into endpoint queues */
    uint64_t unrouted;     /* matched no route */
    uint64_t delivered;    /* messages sent to a receiver */
    uint64_t acked;        /* receiver acknowledgements */
    uint64_t expired;      /* of queues removed since start; status adds the live queues' */
    uint64_t refused;      /* store full (or disk full): the sender was refused */
    uint64_t unauthorized; /* publishes/subscriptions outside a module's own topics */
    uint64_t malformed;    /* connections closed for protocol violations */
    uint64_t oversized;    /* connections closed for a packet or message over the limit */
    uint64_t qos2_refused; /* connections closed for a QoS 2 PUBLISH (as IoT Hub does) */
    uint64_t subscriptions_refused; /* beyond hub.max_subscriptions */
    uint64_t direct;                /* QoS 0 messages handed straight to a waiting receiver */
};

/* Who a client is, as a protocol head authenticated it (auth.h). Independent of the protocol:
 * MQTT's CONNECT, AMQP's CBS put-token and an HTTPS request's SAS header all end here. */
enum hub_identity_kind {
    HUB_IDENTITY_MODULE, /* a module of this device's deployment */
    HUB_IDENTITY_DEVICE, /* a leaf device behind this gateway (docs/gateway.md) */
    /* A module identity of a leaf device that is itself an edge device — a child ledge's
     * $edgeAgent, $edgeHub or module (docs/nested.md): its twin and methods, never inputs. */
    HUB_IDENTITY_CHILD_MODULE,
};

enum hub_auth_method {
    HUB_AUTH_SAS,
    HUB_AUTH_X509,
};

struct hub_identity {
    enum hub_identity_kind kind;
    enum hub_auth_method method;
    char *device_id; /* as this device is named in the runtime file */
    char *module_id; /* as the deployment names the module; NULL for a device */
    /* What twins, method calls, clients and sessions know it by: the module id,
     * "devices/<deviceId>" for a leaf device, "devices/<deviceId>/modules/<moduleId>" for a
     * child edge device's module (ids have no '/', so the three never meet). */
    char *address;
    uint8_t slot; /* the key or thumbprint it authenticated with: 0 primary, 1 secondary */
};

#define HUB_DEVICE_ADDRESS_PREFIX "devices/"
#define HUB_CHILD_MODULES_INFIX "/modules/"
/* Module identities a child edge device may have on its parent (twins kept for each). */
#define HUB_MAX_CHILD_MODULES 100

#define HUB_ID_SIZE 129 /* IoT Hub ids: 1-128 characters */
/* "devices/<d>/modules/<m>" → its device and module ids; false for any other address. */
bool hub_child_address(const char *a, char ret_device[HUB_ID_SIZE], char ret_module[HUB_ID_SIZE]);

void hub_identity_clear(struct hub_identity *id);
/* A copy of src into *ret (strings duplicated). -ENOMEM. */
int hub_identity_copy(const struct hub_identity *src, struct hub_identity *ret);

/* Kinds of endpoint sink (endpoint.h), indexing hub.sinks. */
enum hub_sink_kind {
    HUB_SINK_INPUT,    /* BrokeredEndpoint("/modules/<m>/inputs/<i>"): input.c */
    HUB_SINK_UPSTREAM, /* $upstream: upstream.c */
    HUB_SINK_TWINS,    /* twin.c */
    HUB_SINK_METHODS,  /* methods.c */
    HUB_SINK_C2D,      /* a leaf device's cloud-to-device messages: input.c */
    HUB_SINK_CLOUD,    /* the module identities' own sessions upstream (twins, methods): cloud.c */
    HUB_SINK_COUNT
};

struct hub_sink_ops;
struct hub_head_ops;
#define HUB_MAX_HEADS 6

struct hub {
    struct event_base *base;
    struct ledge_config cfg;
    char *runtime_path;
    struct hub_runtime rt;
    struct route_table *routes;
    struct store *store;
    char *queue_dir;   /* <hub.store_dir>/queues */
    size_t max_packet; /* whole MQTT packet: hub.max_packet_size + HUB_MAX_PACKET_OVERHEAD */
    int64_t started_ms;
    bool stopping; /* hub_stop(): connections close without publishing wills */
    struct hub_counters n;
    /* the pipeline's parts, wired by server.c */
    const struct hub_head_ops *heads[HUB_MAX_HEADS];
    size_t n_heads;
    const struct hub_sink_ops *sinks[HUB_SINK_COUNT];
    /* each unit's own state (opaque here) */
    struct listener *listener;
    struct mqtt_head *mqtt;
    struct ws_head *ws;
    struct https_head *https;
    struct amqp_head *amqp;
    struct sessions *sessions;
    struct clients *clients;
    struct database *db;
    struct committer *commit;
    struct endpoints *endpoints;
    struct router *router;
    struct methods *methods;
    struct upstream *upstream;
    struct cloud *cloud;
    struct server *server;
    struct hs_server *control;
    struct hub_logs *logs; /* hub.c: refusal counts and the log's rate limits */
    /* Observers, for a unit above the one that sees the change (cloud.c, methods.c): a module's or
     * a leaf device's client was attached or detached (clients.c: called after the list changed,
     * with its address), its reported properties changed (twin.c). NULL: nobody listens. They must
     * not close clients. */
    void (*module_presence)(struct hub *h, const char *module);
    void (*reported_changed)(struct hub *h, const char *module);
    /* The session of address is reading its twin in the cloud (cloud.c): the address's twin
     * GETs wait for it (twin.c: twins_cloud_synced ends the wait). */
    bool (*twin_syncing)(struct hub *h, const char *address);
    struct twin_wait *twin_waits; /* twin.c: GETs waiting for the cloud's twin */
    size_t n_twin_waits;
    /* Clients may listen to more than before (endpoint.c's deliver round, which every subscribe,
     * link and connection kicks): methods.c sends the calls waiting for their target. */
    void (*clients_changed)(struct hub *h);
    struct hub_metrics *metrics; /* metrics.c: counters by label */
};

/* Why the hub refused what a client sent or asked for. Every refusal is counted by cause
 * (`ledge hub status`: refusals) and logged at most once per HUB_LOG_INTERVAL_MS per cause and
 * key, so that a client retrying in a loop cannot flood the log. */
enum hub_refusal {
    HUB_REFUSAL_AUTH,          /* a CONNECT refused: credentials, identity, client id */
    HUB_REFUSAL_STORE_FULL,    /* a message the store (its cap, or the disk) could not take */
    HUB_REFUSAL_STORE_ERROR,   /* a message the store failed to write otherwise */
    HUB_REFUSAL_PUBLISH,       /* a PUBLISH outside the module's own topics */
    HUB_REFUSAL_SUBSCRIBE,     /* a subscription outside them */
    HUB_REFUSAL_QOS2,          /* a QoS 2 PUBLISH (IoT Hub has no QoS 2) */
    HUB_REFUSAL_MALFORMED,     /* protocol violations, bad property bags */
    HUB_REFUSAL_OVERSIZED,     /* packets or messages over hub.max_packet_size */
    HUB_REFUSAL_CONNECTIONS,   /* at hub.max_connections: refused, or an idle one evicted */
    HUB_REFUSAL_SUBSCRIPTIONS, /* beyond hub.max_subscriptions */
    HUB_REFUSAL_SESSION_SAVE,  /* a persistent session's change the database could not take */
    HUB_REFUSAL_COUNT
};

#define HUB_LOG_INTERVAL_MS 60000
#define HUB_LOG_KEYS 256 /* rate-limited keys remembered; beyond, the oldest is forgotten */

/* Count a refusal of cause and log it (a warning) unless one with the same cause and key (NULL:
 * the cause alone, e.g. a module's name for unauthorised topics) was logged less than
 * HUB_LOG_INTERVAL_MS ago; the next line logged says how many were not. */
void hub_refused(struct hub *h, enum hub_refusal cause, const char *key, const char *fmt, ...)
    _printf_(4, 5);
/* Is a line for key due? The first is, then one per HUB_LOG_INTERVAL_MS; *ret_skipped (may be
 * NULL) is how many were not logged since the last one that was. For lines that are no refusal
 * but can come as fast as a client reconnects. */
bool hub_log_due(struct hub *h, const char *key, uint64_t *ret_skipped);
/* {"<cause>": {"count", "last"}, ...} for the causes seen, for the status document. */
json_t *hub_refusals_status(struct hub *h);
void hub_logs_free(struct hub *h);
