/* conn.c — client connections: TLS or plain bufferevents, MQTT framing over the input buffer,
 * a dispatch table from packet type to handler, CONNECT authentication (SAS tokens as IoT Hub
 * checks them), keep-alive, back-pressure, and teardown.
 *
 * Protocol violations close the connection without an answer (MQTT 3.1.1 §4.8); the hub answers
 * as IoT Hub does where the protocol allows more than IoT Hub supports: QoS 2 publishes close the
 * connection, QoS 2 subscriptions are granted QoS 1, and RETAIN is ignored (docs/hub.md). */
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
#include <arpa/inet.h>

#include "base/str.h"
#include "base/timeutil.h"
#include "hub/hub.h"
#include "identity/sas.h"
#include "log/log.h"
#include "mqtt/iothub.h"
#include "mqtt/topic.h"

#define COMP "hub"
/* Stop reading from a client whose answers pile up unread; resume below the low mark. */
#define OUTPUT_HIGH (1u << 20)
#define OUTPUT_LOW (256u << 10)

typedef int (*packet_fn)(struct conn *c, const struct mqtt_packet *p);

static void conn_free(struct conn *c);
static void free_cb(evutil_socket_t fd, short what, void *arg);

/* ------------------------------------------------------------------ output */

int conn_send(struct conn *c, const void *data, size_t n)
{
    if (c->state == CONN_CLOSING)
        return -EPIPE;
    return bufferevent_write(c->bev, data, n) == 0 ? 0 : -ENOMEM;
}

int conn_send_publish(struct conn *c, const char *topic, size_t topic_len, uint8_t qos, bool dup,
                      uint16_t packet_id, const void *payload, size_t payload_len)
{
    if (c->state == CONN_CLOSING)
        return -EPIPE;
    uint8_t hdr[MQTT_PUBLISH_HEADER_MAX];
    int n =
        mqtt_encode_publish_header(hdr, topic, topic_len, qos, false, dup, packet_id, payload_len);
    if (n < 0)
        return n;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (evbuffer_add(out, hdr, (size_t)n) < 0 ||
        (payload_len && evbuffer_add(out, payload, payload_len) < 0))
        return -ENOMEM;
    return 0;
}

size_t conn_output_pending(const struct conn *c)
{
    return evbuffer_get_length(bufferevent_get_output(c->bev));
}

uint16_t conn_next_packet_id(struct conn *c)
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

/* ------------------------------------------------------------------ CONNECT */

static int refuse(struct conn *c, uint8_t code, const char *why)
{
    struct lbuf b = LBUF_INIT;
    mqtt_encode_connack(&b, false, code);
    conn_send(c, b.data, b.len);
    lbuf_free(&b);
    c->hub->n.auth_failures +=
        code == MQTT_CONNACK_NOT_AUTHORIZED || code == MQTT_CONNACK_BAD_USERNAME_PASSWORD;
    log_warn(COMP, "%s: connection refused: %s", c->peer, why);
    conn_close(c, NULL);
    return -EACCES;
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
    if (!cn->has_username || !cn->has_password)
        return refuse(c, MQTT_CONNACK_BAD_USERNAME_PASSWORD,
                      "user name and password (a SAS token) are required");
    struct iothub_username u;
    struct lerr err = {0};
    if (iothub_username_parse(cn->username.ptr, cn->username.len, &u, &err) < 0)
        return refuse(c, MQTT_CONNACK_BAD_USERNAME_PASSWORD, err.msg);
    if (u.module_id.len == 0)
        return refuse(c, MQTT_CONNACK_NOT_AUTHORIZED,
                      "device identities cannot connect here; modules only");
    _cleanup_free_ char *device = str_dup(u.device_id), *module = str_dup(u.module_id);
    _cleanup_free_ char *client_id = str_dup(cn->client_id);
    _cleanup_free_ char *expect = lstr_printf("%s/%s", device, module);
    if (!device || !module || !client_id || !expect)
        return -ENOMEM;
    if (strcmp(client_id, expect) != 0)
        return refuse(c, MQTT_CONNACK_IDENTIFIER_REJECTED,
                      "client id must be <device>/<module> of the user name");
    if (strcasecmp(device, h->rt.device_id) != 0)
        return refuse(c, MQTT_CONNACK_NOT_AUTHORIZED, "unknown device");
    const struct hub_module_identity *id = hub_runtime_module(&h->rt, module);
    if (!id)
        return refuse(c, MQTT_CONNACK_NOT_AUTHORIZED, "unknown module");
    _cleanup_free_ char *token = lstr_ndup(cn->password, cn->password_len);
    if (!token)
        return -ENOMEM;
    const char *hosts[] = {h->rt.iothub_hostname, h->rt.gateway_hostname};
    if (sas_token_verify(token, hosts, 2, device, module, id->key, id->keylen,
                         (uint64_t)(ltime_now_ms() / 1000), &err) < 0) {
        char why[LERR_MSG_MAX + 64];
        snprintf(why, sizeof(why), "module %s: %s", module, err.msg);
        return refuse(c, MQTT_CONNACK_NOT_AUTHORIZED, why);
    }
    bool present = false;
    struct session *s = session_attach(h, c, client_id, h->rt.device_id, id->module_id,
                                       cn->clean_session, &present);
    if (!s)
        return -ENOMEM;
    free(s->will_topic);
    free(s->will_payload);
    s->will_topic = NULL;
    s->will_payload = NULL;
    if (cn->will) {
        s->will_topic = str_dup(cn->will_topic);
        s->will_payload = malloc(cn->will_payload_len ? cn->will_payload_len : 1);
        if (s->will_payload)
            memcpy(s->will_payload, cn->will_payload, cn->will_payload_len);
        s->will_len = cn->will_payload_len;
        s->will_qos = cn->will_qos;
    }
    c->state = CONN_ACTIVE;
    c->keep_alive_s = cn->keep_alive;
    struct lbuf b = LBUF_INIT;
    mqtt_encode_connack(&b, present, MQTT_CONNACK_ACCEPTED);
    conn_send(c, b.data, b.len);
    lbuf_free(&b);
    log_info(COMP, "%s connected as %s (%s session%s)", c->peer, client_id,
             cn->clean_session ? "clean" : "persistent", present ? ", resumed" : "");
    endpoints_kick_module(h, s->module_id);
    return 0;
}

/* ------------------------------------------------------------------ other packets */

static int on_publish(struct conn *c, const struct mqtt_packet *p)
{
    if (c->state != CONN_ACTIVE)
        return -EPROTO;
    if (p->publish.qos == 2) {
        /* IoT Hub closes the connection of a client that publishes with QoS 2. */
        c->hub->n.qos2_refused++;
        hub_log_once(c->hub, "qos2", "%s: QoS 2 PUBLISH: IoT Hub does not support QoS 2; closing",
                     c->session->client_id);
        return -EOPNOTSUPP;
    }
    if (p->publish.payload_len > c->hub->cfg.hub.max_packet_size) {
        /* The packet fitted (its envelope has room for topic and properties); the message
         * itself is over the limit. */
        c->hub->n.oversized++;
        log_warn(COMP, "%s: message of %zu bytes is over hub.max_packet_size (%llu); closing",
                 c->session->client_id, p->publish.payload_len,
                 (unsigned long long)c->hub->cfg.hub.max_packet_size);
        return -EMSGSIZE;
    }
    return router_publish(c->hub, c->session, c, &p->publish);
}

static int on_puback(struct conn *c, const struct mqtt_packet *p)
{
    if (c->state != CONN_ACTIVE)
        return -EPROTO;
    endpoint_puback(c->hub, c, p->ack.packet_id);
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
    struct lbuf b = LBUF_INIT;
    while (mqtt_filter_iter_next(&it, &f, &qos)) {
        uint8_t code;
        if (!session_may_subscribe(s, f.ptr, f.len)) {
            char key[160];
            snprintf(key, sizeof(key), "sub:%s", s->module_id);
            hub_log_once(c->hub, key,
                         "%s: subscription to \"%.*s\" refused: a module may only "
                         "subscribe to its own inputs, twin and methods",
                         s->client_id, (int)MIN(f.len, (size_t)200), f.ptr);
            c->hub->n.unauthorized++;
            code = MQTT_SUBACK_FAILURE;
        } else {
            uint8_t granted = qos > 1 ? 1 : qos; /* IoT Hub grants QoS 1 for QoS 2 */
            int sr = session_subscribe(s, f.ptr, f.len, granted);
            if (sr == -ENOSPC) {
                c->hub->n.subscriptions_refused++;
                hub_log_once(c->hub, "maxsubs",
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
    int r = mqtt_encode_suback(&b, p->subscribe.packet_id, (const uint8_t *)codes.data, codes.len);
    if (r == 0)
        r = conn_send(c, b.data, b.len);
    lbuf_free(&b);
    lbuf_free(&codes);
    if (r < 0)
        return r;
    endpoints_kick_module(c->hub, s->module_id);
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
        session_unsubscribe(c->session, f.ptr, f.len);
    struct lbuf b = LBUF_INIT;
    mqtt_encode_ack(&b, MQTT_UNSUBACK, p->unsubscribe.packet_id);
    conn_send(c, b.data, b.len);
    lbuf_free(&b);
    return 0;
}

static int on_pingreq(struct conn *c, const struct mqtt_packet *p)
{
    if (c->state != CONN_ACTIVE)
        return -EPROTO;
    static const uint8_t pingresp[2] = {0xd0, 0x00};
    return conn_send(c, pingresp, sizeof(pingresp));
}

static int on_disconnect(struct conn *c, const struct mqtt_packet *p)
{
    if (c->session)
        session_detach(c->session, true); /* graceful: no will */
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

/* mqtt_frame() on just the first bytes says "need more" for any packet longer than them; decode
 * the remaining-length varint here to know the full size (and refuse an oversize one early). */
static int header_length(const uint8_t *hdr, size_t n, size_t max, size_t *ret)
{
    size_t len = 0;
    unsigned shift = 0;
    for (size_t i = 1; i < n && i <= 4; i++) {
        len |= (size_t)(hdr[i] & 0x7f) << shift;
        if (!(hdr[i] & 0x80)) {
            size_t total = 1 + i + len;
            if (max && total > max)
                return -EMSGSIZE;
            *ret = total;
            return 1;
        }
        shift += 7;
    }
    return n >= 5 ? MQTT_EMALFORMED : 0;
}

static void keepalive_arm(struct conn *c)
{
    if (c->peer_gone)
        return; /* the timer finishes the connection now */
    /* MQTT-3.1.2-24: one and a half times the keep-alive without a packet closes it. */
    int64_t ms = (int64_t)c->keep_alive_s * 1500;
    if (c->state == CONN_NEW)
        ms = HUB_CONNECT_TIMEOUT_MS; /* the CONNECT must come quickly */
    if (ms) {
        struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
        evtimer_add(c->keepalive, &tv);
    } else {
        evtimer_del(c->keepalive);
    }
}

static void conn_readcb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct hub *h = c->hub;
    struct evbuffer *in = bufferevent_get_input(bev);
    bool got = false;
    while (c->state != CONN_CLOSING) {
        size_t avail = evbuffer_get_length(in);
        if (avail < 2)
            break;
        uint8_t hdr[5];
        size_t hn = MIN(avail, sizeof(hdr));
        evbuffer_copyout(in, hdr, hn);
        size_t plen = 0;
        if (c->state == CONN_NEW && hdr[0] != (MQTT_CONNECT << 4)) {
            /* Not MQTT (or not a CONNECT first): no need to wait for what it announces. */
            h->n.malformed++;
            log_warn(COMP, "%s: the first packet is not a CONNECT; closing", c->peer);
            conn_close(c, NULL);
            return;
        }
        /* The size comes from the header alone, so an oversize packet is refused before its
         * bytes arrive. */
        int r = header_length(hdr, hn, h->max_packet, &plen);
        if (r < 0) {
            if (r == -EMSGSIZE)
                h->n.oversized++;
            else
                h->n.malformed++;
            log_warn(COMP, "%s: %s; closing", c->session ? c->session->client_id : c->peer,
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
            log_warn(COMP, "%s: %s; closing", c->peer, err.msg);
            conn_close(c, NULL);
            return;
        }
        if ((c->state == CONN_NEW && p.type != MQTT_CONNECT) || !mqtt_type_from_client(p.type) ||
            !handlers[p.type]) {
            h->n.malformed++;
            log_warn(COMP, "%s: unexpected %s; closing", c->peer, mqtt_type_name(p.type));
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

static void conn_writecb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    if (c->state == CONN_CLOSING) {
        if (conn_output_pending(c) == 0)
            event_active(c->free_ev, 0, 0);
        return;
    }
    if (conn_output_pending(c) < OUTPUT_LOW) {
        bufferevent_enable(bev, EV_READ);
        if (c->session && c->session->module_id)
            endpoints_kick_module(c->hub, c->session->module_id);
    }
}

static void conn_eventcb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    if (what & BEV_EVENT_CONNECTED)
        return;
    if (c->state == CONN_CLOSING) {
        event_active(c->free_ev, 0, 0);
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

static void keepalive_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    if (c->peer_gone) {
        if (c->state != CONN_CLOSING && evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
            conn_readcb(c->bev, c);
        conn_close(c, c->gone_eof ? "connection closed by peer" : "connection error");
        event_active(c->free_ev, 0, 0);
        return;
    }
    if (c->state != CONN_CLOSING)
        log_info(COMP, "%s: %s", c->session ? c->session->client_id : c->peer,
                 c->state == CONN_NEW ? "no CONNECT in time" : "keep-alive expired");
    conn_close(c, NULL);
    event_active(c->free_ev, 0, 0);
}

/* ------------------------------------------------------------------ lifecycle */

static void peer_name(int fd, char *out, size_t n)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0) {
        snprintf(out, n, "?");
        return;
    }
    char addr[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, addr, sizeof(addr));
        port = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, addr, sizeof(addr));
        port = ntohs(a->sin6_port);
    }
    snprintf(out, n, "%s:%d", addr, port);
}

void conn_accept(struct hub *h, int fd, bool tls)
{
    if (h->n_conns - h->n_closing >= (size_t)h->cfg.hub.max_connections) {
        /* At the limit, idle connections that never authenticated (a flood of them, or TLS
         * handshakes that stall) make room: the oldest goes. Authenticated ones never do. */
        struct conn *oldest = NULL;
        for (struct conn *x = h->conns; x; x = x->next)
            if (x->state == CONN_NEW)
                oldest = x;
        if (!oldest) {
            h->n.connections_refused++;
            hub_log_once(h, "maxconn", "connection refused: hub.max_connections (%d) reached",
                         h->cfg.hub.max_connections);
            evutil_closesocket(fd);
            return;
        }
        h->n.connections_evicted++;
        hub_log_once(h, "evict",
                     "hub.max_connections (%d) reached: closing the oldest connection that has "
                     "not authenticated to make room",
                     h->cfg.hub.max_connections);
        conn_close(oldest, NULL);
    }
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    c->hub = h;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    peer_name(fd, c->peer, sizeof(c->peer));
    if (tls) {
        SSL *ssl = SSL_new(h->ssl_ctx);
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
    c->free_ev = event_new(h->base, -1, 0, free_cb, c);
    if (!c->bev || !c->keepalive || !c->free_ev) {
        if (c->bev)
            bufferevent_free(c->bev);
        else
            evutil_closesocket(fd);
        if (c->keepalive)
            event_free(c->keepalive);
        if (c->free_ev)
            event_free(c->free_ev);
        free(c);
        return;
    }
    bufferevent_setcb(c->bev, conn_readcb, conn_writecb, conn_eventcb, c);
    /* Read at most one maximum packet ahead; the MQTT flow control does the rest. */
    bufferevent_setwatermark(c->bev, EV_READ, 0, h->max_packet + 4096);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->state = CONN_NEW;
    keepalive_arm(c);
    c->next = h->conns;
    if (h->conns)
        h->conns->prev = c;
    h->conns = c;
    h->n_conns++;
    h->n.connections_total++;
}

static void free_cb(evutil_socket_t fd, short what, void *arg)
{
    conn_free(arg);
}

/* Detach from everything. The memory goes from the loop (free_ev), once the output has drained
 * or after a short grace period, never inside a callback that may still use c. */
void conn_close(struct conn *c, const char *why)
{
    if (c->state == CONN_CLOSING)
        return;
    struct hub *h = c->hub;
    if (why && c->session)
        log_info(COMP, "%s (%s): %s", c->session->client_id, c->peer, why);
    c->state = CONN_CLOSING;
    h->n_closing++;
    endpoint_conn_gone(h, c);
    router_conn_gone(h, c);
    if (c->session) {
        session_detach(c->session, false);
        c->session = NULL;
    }
    bufferevent_disable(c->bev, EV_READ);
    if (conn_output_pending(c) == 0) {
        event_active(c->free_ev, 0, 0);
    } else {
        struct timeval grace = {5, 0}; /* a peer that never reads its last answer */
        evtimer_add(c->keepalive, &grace);
    }
}

static void conn_free(struct conn *c)
{
    struct hub *h = c->hub;
    if (c->state != CONN_CLOSING)
        conn_close(c, NULL);
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    h->n_conns--;
    h->n_closing--;
    bufferevent_free(c->bev);
    event_free(c->keepalive);
    event_free(c->free_ev);
    free(c->inflight);
    free(c);
}

void conn_free_all(struct hub *h)
{
    while (h->conns)
        conn_free(h->conns);
}
