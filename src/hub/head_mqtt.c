/* head_mqtt.c — the MQTT head (head_mqtt.h): TLS or plain bufferevents, optionally WebSocket
 * framing under MQTT (net/ws.h: head_ws.c did the upgrade), MQTT framing over the input buffer
 * (src/mqtt's codec), a dispatch table from packet type to handler, CONNECT through
 * auth.c, topics classified and turned into the hub's messages and requests, deliveries and
 * answers written back as packets, keep-alive, back-pressure, and teardown.
 *
 * Protocol violations close the connection without an answer (MQTT 3.1.1 §4.8); the hub answers
 * as IoT Hub does where the protocol allows more than IoT Hub supports: QoS 2 publishes close the
 * connection, QoS 2 subscriptions are granted QoS 1, and RETAIN is ignored (docs/hub.md). */
#include "head_mqtt.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/str.h"
#include "auth.h"
#include "clients.h"
#include "commit.h"
#include "endpoint.h"
#include "input.h"
#include "listener.h"
#include "methods.h"
#include "metrics.h"
#include "router.h"
#include "session.h"
#include "twin.h"
#include "log/log.h"
#include "mqtt/codec.h"
#include "mqtt/iothub.h"
#include "net/ws.h"

#define COMP "hub"
/* Stop reading from a client whose answers pile up unread; resume below the low mark. */
#define OUTPUT_HIGH (1u << 20)
#define OUTPUT_LOW (256u << 10)
/* Deliveries to a client pause while this much output waits for it. */
#define DELIVER_OUTPUT_HIGH (512u << 10)
#define CONNECT_TIMEOUT_MS 10000 /* TLS handshake and CONNECT, from accept */

enum conn_state {
    CONN_NEW, /* waiting for CONNECT */
    CONN_ACTIVE,
    CONN_CLOSING, /* flushing, then freed */
};

/* A delivery to an input awaiting the receiver's PUBACK. */
struct inflight {
    uint16_t packet_id;
    struct hub_delivery d;
};

/* The peer's address, kept small (formatted only for a log line). */
struct peer_addr {
    uint8_t addr[16];
    uint16_t port;
    uint8_t family; /* AF_INET, AF_INET6, or 0: unknown */
};

/* Idle connections are most of a hub's memory: the fields are ordered to pack. */
struct conn {
    struct hub *hub;
    struct hub_client client; /* on the hub's list while CONN_ACTIVE */
    struct bufferevent *bev;
    struct event *keepalive; /* also frees a closed connection from the loop */
    struct ws_conn *ws;      /* MQTT over WebSockets: the framing, and the MQTT bytes decoded */
    struct evbuffer *wsin;
    struct session *session; /* after CONNECT */
    /* outgoing QoS 1 window (at most hub.max_inflight, below 65536) */
    struct inflight *inflight;
    uint32_t n_inflight, cap_inflight;
    struct llist node; /* the head's connections */
    struct peer_addr peer;
    uint8_t state;  /* enum conn_state */
    bool peer_gone; /* EOF or error seen: finish on the next loop pass (conn_eventcb) */
    bool gone_eof;
    bool no_will; /* closed by the hub for a reason that is not the module's failure */
    uint16_t keep_alive_s;
    uint16_t next_packet_id;
};

#define PEER_STR_MAX 64
/* "addr:port" for a log line; the buffer lives as long as the enclosing block. */
#define PEER(c) peer_str(&(c)->peer, (char[PEER_STR_MAX]){0})

struct mqtt_head {
    struct llist conns; /* newest first */
    size_t n_conns;     /* all, closing ones included (they are freed from the loop) */
    size_t n_closing;   /* of which CONN_CLOSING */
    /* scratch buffers reused for every message */
    struct lbuf props, topic;
};

typedef int (*packet_fn)(struct conn *c, const struct mqtt_packet *p);

static void conn_close(struct conn *c, const char *why);
static void conn_free(struct conn *c);
static void conn_free_soon(struct conn *c);

static const char *peer_str(const struct peer_addr *p, char *out)
{
    char addr[INET6_ADDRSTRLEN] = "?";
    if (!p->family || !inet_ntop(p->family, p->addr, addr, sizeof(addr)))
        return "?";
    snprintf(out, PEER_STR_MAX, "%s:%u", addr, p->port);
    return out;
}

static struct conn *conn_of(const struct hub_client *cl)
{
    return llist_entry(cl, struct conn, client);
}

/* ------------------------------------------------------------------ output */

static size_t conn_output_pending(const struct conn *c)
{
    return evbuffer_get_length(bufferevent_get_output(c->bev));
}

static int conn_send(struct conn *c, const void *data, size_t n)
{
    if (c->state == CONN_CLOSING)
        return -EPIPE;
    if (c->ws)
        return ws_conn_write(c->ws, bufferevent_get_output(c->bev), data, n, NULL, 0);
    return bufferevent_write(c->bev, data, n) == 0 ? 0 : -ENOMEM;
}

static int conn_send_buf(struct conn *c, struct lbuf *b)
{
    int r = conn_send(c, b->data, b->len);
    lbuf_free(b);
    return r;
}

/* The payload goes out from where it is, after the header the codec writes. */
static int conn_send_publish(struct conn *c, const char *topic, size_t topic_len, uint8_t qos,
                             bool dup, uint16_t packet_id, const void *payload, size_t payload_len)
{
    if (c->state == CONN_CLOSING)
        return -EPIPE;
    uint8_t hdr[MQTT_PUBLISH_HEADER_MAX];
    int n =
        mqtt_encode_publish_header(hdr, topic, topic_len, qos, false, dup, packet_id, payload_len);
    if (n < 0)
        return n;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (c->ws) /* one WebSocket message per packet */
        return ws_conn_write(c->ws, out, hdr, (size_t)n, payload, payload_len);
    if (evbuffer_add(out, hdr, (size_t)n) < 0 ||
        (payload_len && evbuffer_add(out, payload, payload_len) < 0))
        return -ENOMEM;
    return 0;
}

static int conn_send_topic(struct conn *c, struct lbuf *topic, const char *body)
{
    return conn_send_publish(c, topic->data, topic->len, 0, false, 0, body,
                             body ? strlen(body) : 0);
}

static uint16_t conn_next_packet_id(struct conn *c)
{
    /* Callers keep n_inflight below hub.max_inflight (at most 65535), so a free id exists. */
    for (;;) {
        uint16_t id = ++c->next_packet_id;
        if (id == 0)
            continue;
        bool used = false;
        for (size_t i = 0; i < c->n_inflight; i++)
            if (c->inflight[i].packet_id == id) {
                used = true;
                break;
            }
        if (!used)
            return id;
    }
}

/* ------------------------------------------------------------------ the head's ops */

static int mqtt_listens(const struct hub_client *cl, enum hub_stream stream, const char *input)
{
    const struct conn *c = conn_of(cl);
    struct session *s = c->session;
    if (!s || c->state != CONN_ACTIVE)
        return -1;
    switch (stream) {
    case HUB_STREAM_INPUTS:
        return session_input_qos(s, input);
    case HUB_STREAM_DESIRED:
        return s->wants_desired ? 0 : -1;
    case HUB_STREAM_METHODS:
        return s->wants_methods ? 0 : -1;
    case HUB_STREAM_TWIN_RESPONSES:
        return s->wants_twin_res ? 0 : -1;
    case HUB_STREAM_C2D:
        return session_c2d_qos(s);
    }
    return -1;
}

static bool mqtt_ready(const struct hub_client *cl, bool acknowledged)
{
    const struct conn *c = conn_of(cl);
    if (conn_output_pending(c) > DELIVER_OUTPUT_HIGH)
        return false;
    return !acknowledged || c->n_inflight < (size_t)c->hub->cfg.hub.max_inflight;
}

static int mqtt_deliver(struct hub_client *cl, const char *input, const struct hub_message *m,
                        const struct hub_delivery *d, bool redelivery)
{
    struct conn *c = conn_of(cl);
    struct mqtt_head *mh = c->hub->mqtt;
    if (d && c->n_inflight == c->cap_inflight) {
        size_t cap = c->cap_inflight ? c->cap_inflight * 2 : 16;
        struct inflight *v = realloc(c->inflight, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        c->inflight = v;
        c->cap_inflight = cap;
    }
    struct iothub_props props;
    hub_message_props(m, &props);
    lbuf_reset(&mh->topic);
    int r =
        input ? iothub_topic_module_input(&mh->topic, mqtt_str_c(cl->id->device_id),
                                          mqtt_str_c(cl->id->module_id), mqtt_str_c(input), &props)
              : iothub_topic_devicebound(&mh->topic, mqtt_str_c(cl->id->device_id), &props);
    if (r < 0)
        return r;
    uint16_t pid = d ? conn_next_packet_id(c) : 0;
    r = conn_send_publish(c, mh->topic.data, mh->topic.len, d ? 1 : 0, redelivery, pid, m->body,
                          m->body_len);
    if (r < 0)
        return r;
    if (d)
        c->inflight[c->n_inflight++] = (struct inflight){pid, *d};
    return 0;
}

static void mqtt_twin_response(struct hub_client *cl, const char *rid, size_t rid_len, int status,
                               long long version, const char *body)
{
    struct lbuf topic = LBUF_INIT;
    if (iothub_topic_twin_response(&topic, status, (struct mqtt_str){rid, rid_len}, version >= 0,
                                   (uint64_t)version) == 0)
        conn_send_topic(conn_of(cl), &topic, body);
    lbuf_free(&topic);
}

static void mqtt_desired(struct hub_client *cl, long long version, const char *body)
{
    struct lbuf topic = LBUF_INIT;
    if (iothub_topic_twin_desired(&topic, (uint64_t)version) == 0)
        conn_send_topic(conn_of(cl), &topic, body);
    lbuf_free(&topic);
}

static int mqtt_method_call(struct hub_client *cl, const char *method, const char *rid,
                            const char *body)
{
    struct lbuf topic = LBUF_INIT;
    int r = iothub_topic_method_request(&topic, mqtt_str_c(method), mqtt_str_c(rid));
    if (r == 0)
        r = conn_send_topic(conn_of(cl), &topic, body);
    lbuf_free(&topic);
    return r;
}

static void mqtt_acked(struct hub_client *cl, uint32_t token)
{
    uint8_t ack[MQTT_ACK_LEN];
    if (mqtt_encode_ack_bytes(ack, MQTT_PUBACK, (uint16_t)token) > 0)
        conn_send(conn_of(cl), ack, sizeof(ack));
}

static void mqtt_close(struct hub_client *cl, const char *why, bool will)
{
    struct conn *c = conn_of(cl);
    c->no_will = !will;
    conn_close(c, why);
}

/* ------------------------------------------------------------------ CONNECT */

/* Refuse a CONNECT from the client claiming id (NULL: none could be read): edgehub_client_connect_
 * failed_total counts it by IoT Edge's reasons. */
static int refuse_id(struct conn *c, const char *id, uint8_t code, const char *why)
{
    const char *reason =
        code == MQTT_CONNACK_IDENTIFIER_REJECTED ? "identifier_rejected"
        : code == MQTT_CONNACK_NOT_AUTHORIZED || code == MQTT_CONNACK_BAD_USERNAME_PASSWORD
            ? "not_authenticated"
            : "protocol_error";
    hub_metrics_add(c->hub, HM_CLIENT_CONNECT_FAIL, (const char *[]){id, reason, "mqtt"}, 1);
    struct lbuf b = LBUF_INIT;
    mqtt_encode_connack(&b, false, code);
    conn_send_buf(c, &b);
    c->hub->n.auth_failures +=
        code == MQTT_CONNACK_NOT_AUTHORIZED || code == MQTT_CONNACK_BAD_USERNAME_PASSWORD;
    hub_refused(c->hub, HUB_REFUSAL_AUTH, NULL, "%s: connection refused (CONNACK %u): %s", PEER(c),
                code, why);
    conn_close(c, NULL);
    return -EACCES;
}

static int refuse(struct conn *c, uint8_t code, const char *why)
{
    return refuse_id(c, NULL, code, why);
}

static char *str_dup(struct mqtt_str s)
{
    return lstr_ndup(s.ptr, s.len);
}

static int on_connect(struct conn *c, const struct mqtt_packet *p)
{
    struct hub *h = c->hub;
    const struct mqtt_connect *cn = &p->connect;
    if (c->state != CONN_NEW)
        return -EPROTO; /* a second CONNECT is a protocol violation */
    /* A TLS client certificate (the listener asks for one and takes whatever comes: auth.c
     * checks it against the identity claimed). */
    SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
    X509 *cert = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    _cleanup_free_ char *client_id = str_dup(cn->client_id);
    if (!client_id)
        return -ENOMEM;
    if (!cn->has_username || (!cn->has_password && !cert))
        return refuse_id(
            c, client_id, MQTT_CONNACK_BAD_USERNAME_PASSWORD,
            "user name and password (a SAS token) or a client certificate are required");
    struct iothub_username u;
    struct lerr err = {0};
    if (iothub_username_parse(cn->username.ptr, cn->username.len, &u, &err) < 0)
        return refuse_id(c, client_id, MQTT_CONNACK_BAD_USERNAME_PASSWORD, err.msg);
    _cleanup_free_ char *device = str_dup(u.device_id), *module = str_dup(u.module_id);
    _cleanup_free_ char *expect = lstr_printf("%s/%s", device, module);
    _cleanup_free_ char *token =
        cn->has_password ? lstr_ndup((const char *)cn->password, cn->password_len) : strdup("");
    if (!device || !module || !expect || !token)
        return -ENOMEM;
    if (*module && strcmp(client_id, expect) != 0)
        return refuse_id(c, client_id, MQTT_CONNACK_IDENTIFIER_REJECTED,
                         "client id must be <device>/<module> of the user name");
    if (!*module && strcmp(client_id, device) != 0)
        return refuse_id(c, client_id, MQTT_CONNACK_IDENTIFIER_REJECTED,
                         "a device's client id must be its device id, as in the user name");
    struct hub_credentials cr = {
        .device_id = device,
        .module_id = module,
        .sas_token = cn->has_password ? token : NULL,
        .cert = cert,
        .chain = ssl ? SSL_get_peer_cert_chain(ssl) : NULL,
    };
    struct hub_identity id;
    if (auth_check(h, &cr, &id, &err) < 0)
        return refuse_id(c, client_id, MQTT_CONNACK_NOT_AUTHORIZED, err.msg);
    struct session *s = session_find(h, client_id);
    if (s && s->conn) {
        /* MQTT-3.1.4-2: a second connection with the same client id takes over (no will). */
        struct conn *old = s->conn;
        log_info(COMP, "%s: a new connection takes over from %s", client_id, PEER(old));
        old->session = NULL;
        s->conn = NULL;
        conn_close(old, NULL);
    }
    bool present = false;
    s = session_attach(h, c, client_id, &id, cn->clean_session, &present);
    hub_identity_clear(&id);
    if (!s)
        return -ENOMEM;
    c->session = s;
    /* A will that does not fit in memory is lost, not the connection (as before it was kept). */
    session_set_will(s, cn->will ? cn->will_topic.ptr : NULL, cn->will_topic.len, cn->will_payload,
                     cn->will_payload_len, cn->will_qos);
    c->state = CONN_ACTIVE;
    c->keep_alive_s = cn->keep_alive;
    c->client = (struct hub_client){.ops = &mqtt_head_ops, .id = &s->id};
    clients_attach(h, &c->client);
    struct lbuf b = LBUF_INIT;
    mqtt_encode_connack(&b, present, MQTT_CONNACK_ACCEPTED);
    conn_send_buf(c, &b);
    /* A client that reconnects in a loop (refused each time, say) gets one line a minute. */
    char key[160];
    snprintf(key, sizeof(key), "connect:%s", client_id);
    uint64_t skipped;
    if (!hub_log_due(h, key, &skipped))
        log_debug(COMP, "%s connected as %s", PEER(c), client_id);
    else if (skipped)
        log_info(COMP, "%s connected as %s (%s session%s; %llu more times since the last line)",
                 PEER(c), client_id, cn->clean_session ? "clean" : "persistent",
                 present ? ", resumed" : "", (unsigned long long)skipped);
    else
        log_info(COMP, "%s connected as %s (%s session%s)", PEER(c), client_id,
                 cn->clean_session ? "clean" : "persistent", present ? ", resumed" : "");
    endpoint_kick(h, NULL);
    return 0;
}

/* ------------------------------------------------------------------ PUBLISH */

/* IoT Hub ids are case-insensitive. */
static bool span_eq_ci(struct mqtt_str a, const char *b)
{
    return a.len == strlen(b) && strncasecmp(a.ptr, b, a.len) == 0;
}

/* A PUBLISH to a topic the module may not use: counted, logged (rate-limited per module). */
static int publish_refused(struct hub *h, const struct session *s, const struct mqtt_publish *p)
{
    h->n.unauthorized++;
    hub_refused(h, HUB_REFUSAL_PUBLISH, s->id.address,
                "%s: PUBLISH to \"%.*s\" refused: a %s may only publish to its own events, "
                "twin and method topics; closing",
                s->client_id, (int)MIN(p->topic.len, (size_t)120), p->topic.ptr,
                s->id.kind == HUB_IDENTITY_DEVICE ? "device" : "module");
    return -EACCES;
}

/* A message from the module's events topic: its property bag becomes the message's properties;
 * the router adds what the hub vouches for. */
static int publish_message(struct hub *h, struct session *s, struct conn *c,
                           const struct iothub_topic *t, const struct mqtt_publish *p, bool will,
                           struct lerr *err)
{
    struct mqtt_head *mh = h->mqtt;
    struct iothub_props props;
    lbuf_reset(&mh->props);
    if (lbuf_reserve(&mh->props, t->propbag.len + 1) < 0)
        return -ENOMEM;
    if (t->propbag.len && iothub_props_parse(t->propbag.ptr, t->propbag.len, mh->props.data,
                                             mh->props.cap, &props, err) < 0) {
        hub_refused(h, HUB_REFUSAL_MALFORMED, s->id.address, "%s: %s; closing", s->client_id,
                    err->msg);
        return -EPROTO;
    }
    if (!t->propbag.len)
        memset(&props, 0, sizeof(props));

    /* C strings for the message: one allocation for this message's lifetime. */
    struct hub_message m = {0};
    _cleanup_lstrv_ struct lstrv keep = LSTRV_INIT;
    for (int i = 0; i < IOTHUB_PROP_COUNT; i++) {
        if (!props.sys[i].ptr)
            continue;
        if (lstrv_push_take(&keep, str_dup(props.sys[i])) < 0)
            return -ENOMEM;
        m.sys[i] = keep.v[keep.n - 1];
    }
    for (size_t i = 0; i < props.n_app; i++) {
        if (lstrv_push_take(&keep, str_dup(props.app[i].key)) < 0 ||
            lstrv_push_take(&keep, str_dup(props.app[i].value)) < 0)
            return -ENOMEM;
        m.app_key[m.n_app] = keep.v[keep.n - 2];
        m.app_value[m.n_app] = keep.v[keep.n - 1];
        m.n_app++;
    }
    if (p->retain && m.n_app < HUB_MESSAGE_MAX_APP) {
        /* IoT Hub keeps no retained messages; it tells the receiver the flag was set. */
        m.app_key[m.n_app] = "mqtt-retain";
        m.app_value[m.n_app] = "true";
        m.n_app++;
    }
    if (will && m.n_app < HUB_MESSAGE_MAX_APP) {
        /* As IoT Hub marks a will it sends to the telemetry channel. */
        m.app_key[m.n_app] = "iothub-MessageType";
        m.app_value[m.n_app] = "Will";
        m.n_app++;
    }
    m.body = p->payload;
    m.body_len = p->payload_len;
    int r = router_publish(h, &s->id, &m, p->qos == 1, c ? &c->client : NULL, p->packet_id);
    if (r == -ENOSPC && c) {
        /* MQTT 3.1.1 has no negative PUBACK. IoT Hub disconnects a device it cannot take
         * messages from; so does the hub, after logging and counting it (router.c). The client
         * retransmits after reconnecting; copies stored in other endpoints meanwhile become
         * duplicates, never losses. */
        if (c->state != CONN_CLOSING && hub_log_due(h, "store-full-close", NULL))
            log_warn(COMP, "%s: QoS 1 message refused (store full); closing so that it retransmits",
                     s->client_id);
        return -ENOSPC;
    }
    return r == -ENOSPC ? 0 : r;
}

/* Classify the topic and hand it on: a message to the router, a twin request to the twins, a
 * method's answer to the methods. c is NULL for a will (published after the connection went). */
static int handle_publish(struct hub *h, struct session *s, struct conn *c,
                          const struct mqtt_publish *p, bool will)
{
    struct iothub_topic t;
    struct lerr err = {0};
    int r = iothub_topic_parse(p->topic.ptr, p->topic.len, &t, &err);
    /* A module sends on its module events topic, a leaf device on its device events topic:
     * neither on the other's (a module cannot pass for a device, nor a device for a module). */
    enum iothub_topic_kind events =
        s->id.kind == HUB_IDENTITY_DEVICE ? IOTHUB_TOPIC_DEVICE_EVENTS : IOTHUB_TOPIC_MODULE_EVENTS;
    enum iothub_topic_kind other = events == IOTHUB_TOPIC_DEVICE_EVENTS
                                       ? IOTHUB_TOPIC_MODULE_EVENTS
                                       : IOTHUB_TOPIC_DEVICE_EVENTS;
    if (r < 0 || t.kind == IOTHUB_TOPIC_UNKNOWN || t.kind == other ||
        t.kind >= IOTHUB_TOPIC_MODULE_INPUT || (will && t.kind != events))
        return publish_refused(h, s, p);
    switch (t.kind) {
    case IOTHUB_TOPIC_TWIN_GET:
    case IOTHUB_TOPIC_TWIN_REPORTED: {
        struct hub_twin_request req = {
            .op = t.kind == IOTHUB_TOPIC_TWIN_GET ? HUB_TWIN_GET : HUB_TWIN_PATCH_REPORTED,
            .rid = t.rid.ptr,
            .rid_len = t.rid.len,
            .body = p->payload,
            .body_len = p->payload_len,
        };
        twins_request(h, &c->client, &req);
        /* Twin operations are answered on their response topic; the PUBLISH itself is acked too. */
        return p->qos == 1 ? commit_ack(h, &c->client, p->packet_id) : 0;
    }
    case IOTHUB_TOPIC_METHOD_RESPONSE:
        methods_response(h, &s->id, t.rid.ptr, t.rid.len, t.status, p->payload, p->payload_len);
        return p->qos == 1 ? commit_ack(h, &c->client, p->packet_id) : 0;
    default:
        break;
    }
    /* Its own events topic only: its device (and module). */
    if (!span_eq_ci(t.device_id, s->id.device_id) ||
        (events == IOTHUB_TOPIC_MODULE_EVENTS && !span_eq_ci(t.module_id, s->id.module_id)))
        return publish_refused(h, s, p);
    return publish_message(h, s, c, &t, p, will, &err);
}

/* ------------------------------------------------------------------ other packets */

static int on_publish(struct conn *c, const struct mqtt_packet *p)
{
    if (c->state != CONN_ACTIVE)
        return -EPROTO;
    if (p->publish.qos == 2) {
        /* IoT Hub closes the connection of a client that publishes with QoS 2. */
        c->hub->n.qos2_refused++;
        hub_refused(c->hub, HUB_REFUSAL_QOS2, NULL,
                    "%s: QoS 2 PUBLISH: IoT Hub does not support QoS 2; closing",
                    c->session->client_id);
        return -EOPNOTSUPP;
    }
    if (p->publish.payload_len > c->hub->cfg.hub.max_packet_size) {
        /* The packet fitted (its envelope has room for topic and properties); the message
         * itself is over the limit. */
        c->hub->n.oversized++;
        hub_refused(c->hub, HUB_REFUSAL_OVERSIZED, NULL,
                    "%s: message of %zu bytes is over hub.max_packet_size (%llu); closing",
                    c->session->client_id, p->publish.payload_len,
                    (unsigned long long)c->hub->cfg.hub.max_packet_size);
        return -EMSGSIZE;
    }
    return handle_publish(c->hub, c->session, c, &p->publish, false);
}

static int on_puback(struct conn *c, const struct mqtt_packet *p)
{
    if (c->state != CONN_ACTIVE)
        return -EPROTO;
    for (size_t i = 0; i < c->n_inflight; i++) {
        if (c->inflight[i].packet_id != p->ack.packet_id)
            continue;
        struct hub_delivery d = c->inflight[i].d;
        c->inflight[i] = c->inflight[--c->n_inflight];
        input_delivery_done(c->hub, &d, true);
        return 0;
    }
    /* A PUBACK for nothing we sent: harmless (e.g. after a takeover); ignore it. */
    return 0;
}

static int on_qos2_flow(struct conn *c, const struct mqtt_packet *p)
{
    return -EPROTO; /* PUBREC/PUBREL/PUBCOMP: there is no QoS 2 here */
}

static int on_subscribe(struct conn *c, const struct mqtt_packet *p)
{
    if (c->state != CONN_ACTIVE)
        return -EPROTO;
    struct session *s = c->session;
    /* One return code per filter (MQTT-3.9.3-1); a packet within hub.max_packet_size bounds
     * how many there are. */
    struct lbuf codes = LBUF_INIT;
    struct mqtt_filter_iter it;
    mqtt_filter_iter_init(&it, p);
    struct mqtt_str f;
    uint8_t qos;
    while (mqtt_filter_iter_next(&it, &f, &qos)) {
        uint8_t code;
        if (!session_may_subscribe(s, f.ptr, f.len)) {
            hub_refused(c->hub, HUB_REFUSAL_SUBSCRIBE, s->id.address,
                        "%s: subscription to \"%.*s\" refused: a %s may only subscribe to its "
                        "own %s, twin and methods",
                        s->client_id, (int)MIN(f.len, (size_t)120), f.ptr,
                        s->id.kind == HUB_IDENTITY_DEVICE ? "device" : "module",
                        s->id.kind == HUB_IDENTITY_DEVICE ? "cloud-to-device messages" : "inputs");
            c->hub->n.unauthorized++;
            code = MQTT_SUBACK_FAILURE;
        } else {
            uint8_t granted = qos > 1 ? 1 : qos; /* IoT Hub grants QoS 1 for QoS 2 */
            int sr = session_subscribe(c->hub, s, f.ptr, f.len, granted);
            if (sr == -ENOSPC) {
                c->hub->n.subscriptions_refused++;
                hub_refused(c->hub, HUB_REFUSAL_SUBSCRIPTIONS, NULL,
                            "%s: subscription refused: hub.max_subscriptions (%d) reached",
                            s->client_id, c->hub->cfg.hub.max_subscriptions);
            }
            code = sr < 0 ? MQTT_SUBACK_FAILURE : granted;
        }
        if (lbuf_append(&codes, &code, 1) < 0) {
            lbuf_free(&codes);
            return -ENOMEM;
        }
    }
    struct lbuf b = LBUF_INIT;
    int r = mqtt_encode_suback(&b, p->subscribe.packet_id, (const uint8_t *)codes.data, codes.len);
    lbuf_free(&codes);
    r = r == 0 ? conn_send_buf(c, &b) : r;
    if (r < 0)
        return r;
    endpoint_kick(c->hub, NULL);
    return 0;
}

static int on_unsubscribe(struct conn *c, const struct mqtt_packet *p)
{
    if (c->state != CONN_ACTIVE)
        return -EPROTO;
    struct mqtt_filter_iter it;
    mqtt_filter_iter_init(&it, p);
    struct mqtt_str f;
    while (mqtt_filter_iter_next(&it, &f, NULL))
        session_unsubscribe(c->hub, c->session, f.ptr, f.len);
    struct lbuf b = LBUF_INIT;
    mqtt_encode_ack(&b, MQTT_UNSUBACK, p->unsubscribe.packet_id);
    conn_send_buf(c, &b);
    return 0;
}

static int on_pingreq(struct conn *c, const struct mqtt_packet *p)
{
    if (c->state != CONN_ACTIVE)
        return -EPROTO;
    struct lbuf b = LBUF_INIT;
    int r = mqtt_encode_empty(&b, MQTT_PINGRESP);
    return r < 0 ? r : conn_send_buf(c, &b);
}

/* The session goes from the connection; an ungraceful end publishes its will first (not when the
 * hub itself stops). */
static void conn_leave_session(struct conn *c, bool graceful)
{
    struct session *s = c->session;
    if (!s)
        return;
    struct hub *h = c->hub;
    c->session = NULL;
    s->conn = NULL;
    if (!graceful && s->will && !h->stopping) {
        /* The will of an ungraceful disconnect is published for the module: only to its own
         * events topic, where it is routed like any message from it. */
        struct mqtt_publish p = {
            .qos = s->will_qos > 1 ? 1 : s->will_qos,
            .topic = mqtt_str_c(s->will),
            .payload = session_will_payload(s),
            .payload_len = s->will_len,
        };
        log_info(COMP, "%s: publishing its will", s->client_id);
        handle_publish(h, s, NULL, &p, true);
    }
    session_detach(h, s);
}

static int on_disconnect(struct conn *c, const struct mqtt_packet *p)
{
    clients_detach(c->hub, &c->client);
    conn_leave_session(c, true); /* graceful: no will */
    conn_close(c, NULL);
    return -ECONNRESET; /* stop processing input */
}

static const packet_fn handlers[16] = {
    [MQTT_CONNECT] = on_connect,     [MQTT_PUBLISH] = on_publish,
    [MQTT_PUBACK] = on_puback,       [MQTT_PUBREC] = on_qos2_flow,
    [MQTT_PUBREL] = on_qos2_flow,    [MQTT_PUBCOMP] = on_qos2_flow,
    [MQTT_SUBSCRIBE] = on_subscribe, [MQTT_UNSUBSCRIBE] = on_unsubscribe,
    [MQTT_PINGREQ] = on_pingreq,     [MQTT_DISCONNECT] = on_disconnect,
};

/* ------------------------------------------------------------------ input */

static void keepalive_arm(struct conn *c)
{
    if (c->peer_gone)
        return; /* the timer finishes the connection now */
    /* MQTT-3.1.2-24: one and a half times the keep-alive without a packet closes it. */
    int64_t ms = (int64_t)c->keep_alive_s * 1500;
    if (c->state == CONN_NEW)
        ms = CONNECT_TIMEOUT_MS; /* the CONNECT must come quickly */
    if (ms) {
        struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
        evtimer_add(c->keepalive, &tv);
    } else {
        evtimer_del(c->keepalive);
    }
}

/* Every complete packet in `in` (the socket's input, or what the WebSocket frames carried). */
static void conn_process(struct conn *c, struct evbuffer *in)
{
    struct hub *h = c->hub;
    struct bufferevent *bev = c->bev;
    bool got = false;
    while (c->state != CONN_CLOSING) {
        size_t avail = evbuffer_get_length(in);
        if (avail < 2)
            break;
        uint8_t hdr[MQTT_FIXED_HEADER_MAX];
        size_t hn = MIN(avail, sizeof(hdr));
        evbuffer_copyout(in, hdr, hn);
        size_t plen = 0;
        if (c->state == CONN_NEW && hdr[0] != (MQTT_CONNECT << 4)) {
            /* Not MQTT (or not a CONNECT first): no need to wait for what it announces. */
            h->n.malformed++;
            hub_refused(h, HUB_REFUSAL_MALFORMED, NULL,
                        "%s: the first packet is not a CONNECT; closing", PEER(c));
            conn_close(c, NULL);
            return;
        }
        /* The size comes from the header alone, so an oversize packet is refused before its
         * bytes arrive. */
        int r = mqtt_frame_length(hdr, hn, h->max_packet, &plen);
        if (r < 0) {
            if (r == -EMSGSIZE)
                h->n.oversized++;
            else
                h->n.malformed++;
            hub_refused(h, r == -EMSGSIZE ? HUB_REFUSAL_OVERSIZED : HUB_REFUSAL_MALFORMED, NULL,
                        "%s: %s; closing", c->session ? c->session->client_id : PEER(c),
                        r == -EMSGSIZE ? "packet larger than hub.max_packet_size"
                                       : "malformed packet length");
            conn_close(c, NULL);
            return;
        }
        if (r == 0 || avail < plen)
            break; /* wait for the rest */
        const uint8_t *pkt = evbuffer_pullup(in, (ev_ssize_t)plen);
        struct mqtt_packet p;
        struct lerr err = {0};
        r = mqtt_decode(pkt, plen, &p, &err);
        if (r < 0) {
            int code = mqtt_connack_code_for_error(r);
            if (c->state == CONN_NEW && code >= 0) {
                refuse(c, (uint8_t)code, err.msg);
                return;
            }
            h->n.malformed++;
            hub_refused(h, HUB_REFUSAL_MALFORMED, NULL, "%s: %s; closing", PEER(c), err.msg);
            conn_close(c, NULL);
            return;
        }
        if ((c->state == CONN_NEW && p.type != MQTT_CONNECT) || !mqtt_type_from_client(p.type) ||
            !handlers[p.type]) {
            h->n.malformed++;
            hub_refused(h, HUB_REFUSAL_MALFORMED, NULL, "%s: unexpected %s; closing", PEER(c),
                        mqtt_type_name(p.type));
            conn_close(c, NULL);
            return;
        }
        got = true;
        r = handlers[p.type](c, &p);
        if (c->state == CONN_CLOSING)
            return;
        evbuffer_drain(in, plen);
        if (r < 0) {
            if (r == -EPROTO)
                h->n.malformed++;
            conn_close(c, NULL);
            return;
        }
    }
    if (got)
        keepalive_arm(c);
    /* Back-pressure: a client that does not read its acknowledgements stops being read. */
    if (conn_output_pending(c) > OUTPUT_HIGH)
        bufferevent_disable(bev, EV_READ);
}

static void conn_readcb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    if (!c->ws) {
        conn_process(c, bufferevent_get_input(bev));
        return;
    }
    /* Frames → MQTT bytes, at most about one maximum packet ahead, then the packets; again while
     * the frames make progress (the decoded bytes are consumed each time, so it ends). */
    struct evbuffer *raw = bufferevent_get_input(bev);
    for (;;) {
        size_t before = evbuffer_get_length(raw);
        int r = ws_conn_read(c->ws, raw, c->wsin, c->hub->max_packet, bufferevent_get_output(bev));
        conn_process(c, c->wsin);
        if (c->state == CONN_CLOSING)
            return;
        if (r != 0) {
            if (r < 0 || !lstr_startswith(ws_conn_why(c->ws), "closed by the peer")) {
                c->hub->n.malformed++;
                hub_refused(c->hub, HUB_REFUSAL_MALFORMED, "websocket",
                            "%s: WebSocket: %s; closing",
                            c->session ? c->session->client_id : PEER(c),
                            r < 0 ? strerror(-r) : ws_conn_why(c->ws));
                conn_close(c, NULL);
            } else {
                conn_close(c, "WebSocket closed by the peer");
            }
            return;
        }
        size_t after = evbuffer_get_length(raw);
        if (after == 0 || after == before)
            break;
    }
}

static void conn_writecb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    if (c->state == CONN_CLOSING) {
        if (conn_output_pending(c) == 0)
            conn_free_soon(c);
        return;
    }
    if (conn_output_pending(c) < OUTPUT_LOW) {
        bufferevent_enable(bev, EV_READ);
        if (c->session)
            endpoint_kick(c->hub, NULL);
    }
}

static void conn_eventcb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    if (what & BEV_EVENT_CONNECTED)
        return;
    if (c->state == CONN_CLOSING) {
        conn_free_soon(c);
        return;
    }
    /* libevent's TLS bufferevent reports an error from inside its read, before it commits what
     * that same read decrypted (bufferevent_openssl.c do_read: conn_closed(), then
     * evbuffer_commit_space()). Finish on the next loop pass, after the read callback has seen
     * those packets: a client that acknowledges, disconnects and closes at once would otherwise
     * lose its last PUBACKs and get the messages again. */
    c->peer_gone = true;
    c->gone_eof = (what & BEV_EVENT_EOF) != 0;
    struct timeval now = {0, 0};
    evtimer_add(c->keepalive, &now);
}

/* The connection's one timer: the CONNECT deadline, the keep-alive, the pass after the peer went
 * (conn_eventcb), and for a closed connection its end: the output drained, or the grace period
 * for a peer that never reads its last answer ran out. */
static void keepalive_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    if (c->state == CONN_CLOSING) {
        conn_free(c); /* nothing runs on c after its own timer */
        return;
    }
    if (c->peer_gone) {
        if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
            conn_readcb(c->bev, c);
        conn_close(c, c->gone_eof ? "connection closed by peer" : "connection error");
    } else {
        log_info(COMP, "%s: %s", c->session ? c->session->client_id : PEER(c),
                 c->state == CONN_NEW ? "no CONNECT in time" : "keep-alive expired");
        conn_close(c, NULL);
    }
    conn_free_soon(c);
}

/* ------------------------------------------------------------------ lifecycle */

static void peer_name(int fd, struct peer_addr *out)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    memset(out, 0, sizeof(*out));
    if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
        return;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        memcpy(out->addr, &a->sin_addr, sizeof(a->sin_addr));
        out->port = ntohs(a->sin_port);
        out->family = AF_INET;
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        memcpy(out->addr, &a->sin6_addr, sizeof(a->sin6_addr));
        out->port = ntohs(a->sin6_port);
        out->family = AF_INET6;
    }
}

/* At hub.max_connections: make room by closing the oldest connection that has not
 * authenticated, or refuse the new one (false). */
static bool conn_make_room(struct hub *h)
{
    struct mqtt_head *mh = h->mqtt;
    if (mh->n_conns - mh->n_closing >= (size_t)h->cfg.hub.max_connections) {
        /* At the limit, idle connections that never authenticated (a flood of them, or TLS
         * handshakes that stall) make room: the oldest goes. Authenticated ones never do. */
        struct conn *oldest = NULL, *x;
        llist_foreach_reverse (x, &mh->conns, node)
            if (x->state == CONN_NEW) {
                oldest = x;
                break;
            }
        if (!oldest) {
            h->n.connections_refused++;
            hub_refused(h, HUB_REFUSAL_CONNECTIONS, "refused",
                        "connection refused: hub.max_connections (%d) reached",
                        h->cfg.hub.max_connections);
            return false;
        }
        h->n.connections_evicted++;
        hub_refused(h, HUB_REFUSAL_CONNECTIONS, "evicted",
                    "hub.max_connections (%d) reached: closing the oldest connection that has "
                    "not authenticated to make room",
                    h->cfg.hub.max_connections);
        conn_close(oldest, NULL);
    }
    return true;
}

/* c has its bev: listen, arm the CONNECT deadline, join the head's list. */
static void conn_start(struct hub *h, struct conn *c)
{
    struct mqtt_head *mh = h->mqtt;
    bufferevent_setcb(c->bev, conn_readcb, conn_writecb, conn_eventcb, c);
    /* Read at most one maximum packet ahead; the MQTT flow control does the rest. */
    bufferevent_setwatermark(c->bev, EV_READ, 0, h->max_packet + 4096);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->state = CONN_NEW;
    keepalive_arm(c);
    llist_add_head(&mh->conns, &c->node);
    mh->n_conns++;
    h->n.connections_total++;
}

void mqtt_head_accept_ws(struct hub *h, struct bufferevent *bev, struct ws_conn *ws)
{
    struct conn *c = conn_make_room(h) ? calloc(1, sizeof(*c)) : NULL;
    if (c) {
        c->hub = h;
        c->bev = bev;
        c->ws = ws;
        c->wsin = evbuffer_new();
        c->keepalive = evtimer_new(h->base, keepalive_cb, c);
    }
    if (!c || !c->wsin || !c->keepalive) {
        if (c && c->wsin)
            evbuffer_free(c->wsin);
        if (c && c->keepalive)
            event_free(c->keepalive);
        free(c);
        ws_conn_free(ws);
        bufferevent_free(bev);
        return;
    }
    peer_name(bufferevent_getfd(bev), &c->peer);
    conn_start(h, c);
    /* Frames that came right behind the upgrade request. */
    if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
        conn_readcb(bev, c);
}

void mqtt_head_accept(struct hub *h, int fd, bool tls)
{
    if (!conn_make_room(h)) {
        evutil_closesocket(fd);
        return;
    }
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    c->hub = h;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    peer_name(fd, &c->peer);
    if (tls) {
        SSL *ssl = SSL_new(listener_tls(h));
        if (!ssl) {
            free(c);
            evutil_closesocket(fd);
            return;
        }
        c->bev = bufferevent_openssl_socket_new(h->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                BEV_OPT_CLOSE_ON_FREE);
    } else {
        c->bev = bufferevent_socket_new(h->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    c->keepalive = evtimer_new(h->base, keepalive_cb, c);
    if (!c->bev || !c->keepalive) {
        if (c->bev)
            bufferevent_free(c->bev);
        else
            evutil_closesocket(fd);
        if (c->keepalive)
            event_free(c->keepalive);
        free(c);
        return;
    }
    conn_start(h, c);
}

/* Free c from the loop, on its timer's next pass: never inside a callback that may still use it. */
static void conn_free_soon(struct conn *c)
{
    event_active(c->keepalive, EV_TIMEOUT, 0);
}

/* Detach from everything. The memory goes from the loop (conn_free_soon), once the output has
 * drained or after a short grace period. */
static void conn_close(struct conn *c, const char *why)
{
    if (c->state == CONN_CLOSING)
        return;
    struct hub *h = c->hub;
    if (why && c->session)
        log_info(COMP, "%s (%s): %s", c->session->client_id, PEER(c), why);
    c->state = CONN_CLOSING;
    h->mqtt->n_closing++;
    clients_detach(h, &c->client);
    /* Everything this connection had not acknowledged is delivered again, in order. */
    size_t n = c->n_inflight;
    c->n_inflight = 0;
    for (size_t i = 0; i < n; i++)
        input_delivery_done(h, &c->inflight[i].d, false);
    commit_client_gone(h, &c->client);
    twins_client_gone(h, &c->client);
    conn_leave_session(c, c->no_will);
    bufferevent_disable(c->bev, EV_READ);
    if (c->ws)
        ws_conn_close(c->ws, bufferevent_get_output(c->bev), 1000);
    if (conn_output_pending(c) == 0) {
        conn_free_soon(c);
    } else {
        struct timeval grace = {5, 0}; /* a peer that never reads its last answer */
        evtimer_add(c->keepalive, &grace);
    }
}

static void conn_free(struct conn *c)
{
    struct mqtt_head *mh = c->hub->mqtt;
    if (c->state != CONN_CLOSING)
        conn_close(c, NULL);
    llist_remove(&c->node);
    mh->n_conns--;
    mh->n_closing--;
    bufferevent_free(c->bev);
    event_free(c->keepalive);
    ws_conn_free(c->ws);
    if (c->wsin)
        evbuffer_free(c->wsin);
    free(c->inflight);
    free(c);
}

size_t mqtt_head_connections(struct hub *h, bool with_closing)
{
    struct mqtt_head *mh = h->mqtt;
    return mh ? mh->n_conns - (with_closing ? 0 : mh->n_closing) : 0;
}

static size_t mqtt_connections(struct hub *h)
{
    return mqtt_head_connections(h, false);
}

static int mqtt_start(struct hub *h, struct lerr *err)
{
    struct mqtt_head *mh = calloc(1, sizeof(*mh));
    if (!mh)
        return lerr_set(err, -ENOMEM, "MQTT head: out of memory");
    h->mqtt = mh;
    llist_init(&mh->conns);
    mh->props = (struct lbuf)LBUF_INIT;
    mh->topic = (struct lbuf)LBUF_INIT;
    int r = sessions_start(h);
    if (r < 0)
        return lerr_set(err, r, "MQTT head: out of memory");
    int n_sessions = sessions_load(h);
    if (n_sessions < 0)
        log_warn(COMP, "persistent sessions: cannot read them: %s", strerror(-n_sessions));
    else if (n_sessions > 0)
        log_info(COMP, "%d persistent sessions restored", n_sessions);
    if (h->cfg.hub.tls_port && (r = listener_listen(h, h->cfg.hub.bind, h->cfg.hub.tls_port, true,
                                                    mqtt_head_accept, err)) < 0)
        return r;
    /* Debugging and conformance tools only: never beyond this machine. */
    if (h->cfg.hub.plain_port && (r = listener_listen(h, "127.0.0.1", h->cfg.hub.plain_port, false,
                                                      mqtt_head_accept, err)) < 0)
        return r;
    return 0;
}

static void mqtt_stop(struct hub *h)
{
    struct mqtt_head *mh = h->mqtt;
    if (!mh)
        return;
    struct conn *c;
    while ((c = llist_first(&mh->conns, struct conn, node)))
        conn_free(c);
    sessions_stop(h);
    lbuf_free(&mh->props);
    lbuf_free(&mh->topic);
    free(mh);
    h->mqtt = NULL;
}

static void mqtt_forget_module(struct hub *h, const char *module)
{
    if (h->sessions)
        sessions_forget_module(h, module);
}

static json_t *mqtt_sessions_status(struct hub *h, size_t *ret_connected, size_t *ret_sessions)
{
    return sessions_status(h, ret_connected, ret_sessions);
}

const struct hub_head_ops mqtt_head_ops = {
    .name = "mqtt",
    .start = mqtt_start,
    .stop = mqtt_stop,
    .forget_module = mqtt_forget_module,
    .connections = mqtt_connections,
    .sessions_status = mqtt_sessions_status,
    .listens = mqtt_listens,
    .ready = mqtt_ready,
    .deliver = mqtt_deliver,
    .twin_response = mqtt_twin_response,
    .desired = mqtt_desired,
    .method_call = mqtt_method_call,
    .acked = mqtt_acked,
    .close = mqtt_close,
};
