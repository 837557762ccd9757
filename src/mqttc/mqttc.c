/* mqttc.c — MQTT client connection (see mqttc.h).
 *
 * States: IDLE → CONNECTING (TCP, TLS handshake) → WAIT_CONNACK → CONNECTED → CLOSED. A single
 * timer serves as the connect deadline and, once connected, as the keep-alive: a PINGREQ goes
 * out when nothing was sent for keep_alive seconds, and the connection is declared dead when no
 * packet arrived for 1.5 times that. Callbacks may free the object only from on_close. */
#include "mqttc/mqttc.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <limits.h>
#include <sys/socket.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/crypto.h"
#include "base/timeutil.h"
#include "client_ctx.h"

enum mstate { M_IDLE, M_CONNECTING, M_WAIT_CONNACK, M_CONNECTED, M_CLOSED };

struct mqttc {
    struct event_base *base;
    struct evdns_base *dns;
    struct mqttc_options o;
    char *host, *ca_file, *cert_file, *key_file, *verify_name, *client_id, *username, *password;
    SSL_CTX *ctx;
    struct bufferevent *bev;
    struct event *timer;
    enum mstate state;
    uint16_t next_id;
    int64_t last_rx_ms, last_tx_ms;
    bool in_callback;
    bool free_pending;
    bool ack_held;   /* mqttc_hold_ack() during on_message */
    char error[256]; /* see mqttc_error() */
};

static void close_with(struct mqttc *m, int reason, bool notify);

static char *dup_opt(const char *s)
{
    return s ? strdup(s) : NULL;
}

int mqttc_new(struct event_base *base, struct evdns_base *dns, const struct mqttc_options *o,
              struct mqttc **ret)
{
    struct mqttc *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->base = base;
    m->dns = dns;
    m->o = *o;
    m->host = dup_opt(o->host);
    m->ca_file = dup_opt(o->ca_file);
    m->cert_file = dup_opt(o->cert_file);
    m->key_file = dup_opt(o->key_file);
    m->verify_name = dup_opt(o->verify_name ? o->verify_name : o->host);
    m->client_id = dup_opt(o->client_id ? o->client_id : "");
    m->username = dup_opt(o->username);
    m->password = dup_opt(o->password);
    if (!m->o.max_packet)
        m->o.max_packet = 1u << 20;
    if (!m->o.connect_timeout_ms)
        m->o.connect_timeout_ms = 10000;
    if (!o->host) {
        mqttc_free(m);
        return -EINVAL;
    }
    /* every option given must have been copied: a missing ca_file would mean trusting the
     * system's CAs instead of the configured ones */
    if (!m->host || !m->client_id || !m->verify_name || (o->ca_file && !m->ca_file) ||
        (o->cert_file && !m->cert_file) || (o->key_file && !m->key_file) ||
        (o->username && !m->username) || (o->password && !m->password)) {
        mqttc_free(m);
        return -ENOMEM;
    }
    *ret = m;
    return 0;
}

const char *mqttc_error(const struct mqttc *m)
{
    return m->error;
}

bool mqttc_connected(const struct mqttc *m)
{
    return m && m->state == M_CONNECTED;
}

size_t mqttc_output_pending(const struct mqttc *m)
{
    return m->bev ? evbuffer_get_length(bufferevent_get_output(m->bev)) : 0;
}

static int send_buf(struct mqttc *m, const struct lbuf *b)
{
    if (!m->bev || bufferevent_write(m->bev, b->data, b->len) < 0)
        return -EPIPE;
    m->last_tx_ms = ltime_mono_ms();
    return 0;
}

static void arm_timer(struct mqttc *m)
{
    int ms;
    if (m->state == M_CONNECTED)
        ms = m->o.keep_alive_s ? m->o.keep_alive_s * 500 : 0; /* check twice per period */
    else
        ms = m->o.connect_timeout_ms;
    if (ms > 0) {
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
        evtimer_add(m->timer, &tv);
    } else {
        evtimer_del(m->timer);
    }
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mqttc *m = arg;
    if (m->state != M_CONNECTED) {
        close_with(m, -ETIMEDOUT, true);
        return;
    }
    int64_t now = ltime_mono_ms();
    if (now - m->last_rx_ms > (int64_t)m->o.keep_alive_s * 1500) {
        close_with(m, -ETIMEDOUT, true);
        return;
    }
    if (now - m->last_tx_ms >= (int64_t)m->o.keep_alive_s * 1000 / 2) {
        struct lbuf b = LBUF_INIT;
        mqtt_encode_empty(&b, MQTT_PINGREQ);
        send_buf(m, &b);
        lbuf_free(&b);
    }
    arm_timer(m);
}

static void handle_packet(struct mqttc *m, const struct mqtt_packet *p)
{
    switch (p->type) {
    case MQTT_CONNACK:
        if (m->state != M_WAIT_CONNACK) {
            close_with(m, -EPROTO, true);
            return;
        }
        if (p->connack.return_code != MQTT_CONNACK_ACCEPTED) {
            int code = p->connack.return_code;
            if (m->o.on_connect)
                m->o.on_connect(m->o.ud, -ECONNREFUSED, code, false);
            close_with(m, -ECONNREFUSED, false);
            return;
        }
        m->state = M_CONNECTED;
        arm_timer(m);
        if (m->o.on_connect)
            m->o.on_connect(m->o.ud, 0, 0, p->connack.session_present);
        return;
    case MQTT_PUBLISH:
        m->ack_held = false;
        if (m->o.on_message)
            m->o.on_message(m->o.ud, &p->publish);
        if (p->publish.qos == 1 && m->state == M_CONNECTED && !m->ack_held) {
            struct lbuf b = LBUF_INIT;
            mqtt_encode_ack(&b, MQTT_PUBACK, p->publish.packet_id);
            send_buf(m, &b);
            lbuf_free(&b);
        } else if (p->publish.qos == 2) {
            close_with(m, -EPROTO, true);
        }
        return;
    case MQTT_PUBACK:
        if (m->o.on_puback)
            m->o.on_puback(m->o.ud, p->ack.packet_id);
        return;
    case MQTT_SUBACK:
        if (m->o.on_suback)
            m->o.on_suback(m->o.ud, p->suback.packet_id, p->suback.codes, p->suback.count);
        return;
    case MQTT_UNSUBACK:
    case MQTT_PINGRESP:
        return;
    default:
        close_with(m, -EPROTO, true);
    }
}

static void readcb(struct bufferevent *bev, void *arg)
{
    struct mqttc *m = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    m->in_callback = true;
    while (m->state == M_WAIT_CONNACK || m->state == M_CONNECTED) {
        size_t avail = evbuffer_get_length(in);
        if (avail < 2)
            break;
        uint8_t hdr[MQTT_FIXED_HEADER_MAX];
        size_t hn = MIN(avail, sizeof(hdr)), total = 0;
        evbuffer_copyout(in, hdr, hn);
        /* the fixed header gives the packet's size before its bytes are all here */
        int r = mqtt_frame_length(hdr, hn, m->o.max_packet, &total);
        if (r < 0) {
            close_with(m, -EMSGSIZE, true);
            break;
        }
        if (r == 0 || avail < total)
            break;
        const uint8_t *pkt = evbuffer_pullup(in, (ev_ssize_t)total);
        struct mqtt_packet p;
        struct lerr err = {0};
        if (mqtt_decode(pkt, total, &p, &err) < 0 || !mqtt_type_from_server(p.type)) {
            close_with(m, -EPROTO, true);
            break;
        }
        m->last_rx_ms = ltime_mono_ms();
        handle_packet(m, &p);
        /* A callback may have closed or disconnected us: the buffer is gone then. */
        if ((m->state != M_WAIT_CONNACK && m->state != M_CONNECTED) || m->free_pending || !m->bev)
            break;
        evbuffer_drain(in, total);
    }
    m->in_callback = false;
    if (m->free_pending)
        mqttc_free(m);
}

static void eventcb(struct bufferevent *bev, short what, void *arg)
{
    struct mqttc *m = arg;
    if (what & BEV_EVENT_CONNECTED) {
        m->state = M_WAIT_CONNACK;
        struct mqtt_connect c = {
            .protocol_level = MQTT_PROTOCOL_LEVEL,
            .clean_session = m->o.clean_session,
            .keep_alive = m->o.keep_alive_s,
            .client_id = mqtt_str_c(m->client_id),
            .has_username = m->username != NULL,
            .username = mqtt_str_c(m->username),
            .has_password = m->password != NULL,
            .password = (const uint8_t *)m->password,
            .password_len = m->password ? strlen(m->password) : 0,
        };
        struct lbuf b = LBUF_INIT;
        int r = mqtt_encode_connect(&b, &c);
        if (r == 0)
            r = send_buf(m, &b);
        lbuf_free(&b);
        m->last_rx_ms = ltime_mono_ms();
        if (r < 0)
            close_with(m, r, true);
        return;
    }
    int reason = (what & BEV_EVENT_EOF) ? -ECONNRESET : -ECONNREFUSED;
    int sock_err = EVUTIL_SOCKET_ERROR();
    if (!(what & BEV_EVENT_EOF) && (sock_err == ENETUNREACH || sock_err == EHOSTUNREACH))
        reason = -sock_err; /* no route: the network is down, not the server */
    if (m->bev && (what & BEV_EVENT_ERROR)) {
        unsigned long e = bufferevent_get_openssl_error(m->bev);
        /* A cut connection shows up as an "unexpected EOF" TLS error: report it as the reset it
         * is, and keep -EPROTO for real TLS failures (certificates, protocol). */
        if (e && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            reason = -ECONNRESET;
        } else if (e) {
            reason = -EPROTO;
            SSL *ssl = bufferevent_openssl_get_ssl(m->bev);
            long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
            const char *why = ERR_reason_error_string(e);
            if (v != X509_V_OK)
                snprintf(m->error, sizeof(m->error),
                         "TLS: the server's certificate is not trusted for \"%s\": %s",
                         m->verify_name, X509_verify_cert_error_string(v));
            else if (why && strstr(why, "alert"))
                snprintf(m->error, sizeof(m->error),
                         "TLS: the server refused the handshake (%s): is the client certificate "
                         "one it trusts?",
                         why);
            else
                snprintf(m->error, sizeof(m->error), "TLS: %s", why ? why : "handshake failed");
        }
    }
    close_with(m, reason, true);
}

int mqttc_connect(struct mqttc *m)
{
    if (m->state == M_CONNECTING || m->state == M_WAIT_CONNACK || m->state == M_CONNECTED)
        return -EALREADY;
    m->error[0] = '\0';
    if (!m->timer && !(m->timer = evtimer_new(m->base, timer_cb, m)))
        return -ENOMEM;
    if (m->o.tls) {
        if (!m->ctx && !(m->ctx = mqttc_client_ctx(m->ca_file, m->cert_file, m->key_file)))
            return -EPROTO;
        SSL *ssl = SSL_new(m->ctx);
        if (!ssl)
            return -ENOMEM;
        if (lcrypto_tls_expect_peer(ssl, m->verify_name) < 0) {
            SSL_free(ssl);
            return -EINVAL;
        }
        m->bev = bufferevent_openssl_socket_new(m->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                BEV_OPT_CLOSE_ON_FREE);
    } else {
        m->bev = bufferevent_socket_new(m->base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!m->bev)
        return -ENOMEM;
    bufferevent_setcb(m->bev, readcb, NULL, eventcb, m);
    bufferevent_enable(m->bev, EV_READ | EV_WRITE);
    m->state = M_CONNECTING;
    arm_timer(m);
    /* A connect that fails at once (no route: the network is down) runs eventcb from inside
     * this call: on_connect reports the failure there, and may free us (deferred like a read
     * callback's). It is reported once, through on_connect: this returns 0. */
    bool nested = m->in_callback;
    m->in_callback = true;
    int r = bufferevent_socket_connect_hostname(m->bev, m->dns, AF_UNSPEC, m->host, m->o.port);
    m->in_callback = nested;
    if (!nested && m->free_pending) {
        mqttc_free(m);
        return 0;
    }
    if (m->state != M_CONNECTING)
        return 0;
    if (r < 0) {
        bufferevent_free(m->bev);
        m->bev = NULL;
        m->state = M_IDLE;
        evtimer_del(m->timer);
        return -EHOSTUNREACH;
    }
    evutil_socket_t fd = bufferevent_getfd(m->bev);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return 0;
}

static void close_with(struct mqttc *m, int reason, bool notify)
{
    if (m->state == M_CLOSED || m->state == M_IDLE)
        return;
    bool was_connected = m->state == M_CONNECTED;
    m->state = M_CLOSED;
    if (m->timer)
        evtimer_del(m->timer);
    if (m->bev) {
        bufferevent_free(m->bev);
        m->bev = NULL;
    }
    if (!notify)
        return;
    /* on_connect reports every attempt exactly once; on_close only ends an accepted one. */
    if (!was_connected) {
        if (m->o.on_connect)
            m->o.on_connect(m->o.ud, reason, -1, false);
    } else if (m->o.on_close) {
        m->o.on_close(m->o.ud, reason);
    }
}

/* Write out what is queued, DISCONNECT last, synchronously and without blocking, then (TLS) a
 * close_notify: the bufferevent would only write it from the loop, and the caller frees the
 * connection right after. The kernel's socket buffer takes a DISCONNECT (2 bytes, one TLS
 * record) whatever the backlog before it; only a backlog larger than the socket's buffer can
 * keep it out, and then the server sees the connection close anyway. */
static void flush_now(struct mqttc *m)
{
    struct evbuffer *out = bufferevent_get_output(m->bev);
    size_t n = evbuffer_get_length(out);
    const unsigned char *p = n ? evbuffer_pullup(out, (ev_ssize_t)n) : NULL;
    SSL *ssl = m->o.tls ? bufferevent_openssl_get_ssl(m->bev) : NULL;
    if (ssl) {
        while (p && n > 0) {
            int w = SSL_write(ssl, p, (int)MIN(n, (size_t)INT_MAX));
            if (w <= 0)
                break;
            p += w;
            n -= (size_t)w;
        }
        if (n == 0)
            SSL_shutdown(ssl); /* close_notify: the server reads an orderly end */
        ERR_clear_error();
        return;
    }
    evutil_socket_t fd = bufferevent_getfd(m->bev);
    while (fd >= 0 && p && n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w <= 0)
            break;
        p += w;
        n -= (size_t)w;
    }
}

void mqttc_disconnect(struct mqttc *m)
{
    if (m->state == M_CONNECTED && m->bev) {
        struct lbuf b = LBUF_INIT;
        if (mqtt_encode_empty(&b, MQTT_DISCONNECT) == 0 &&
            evbuffer_add(bufferevent_get_output(m->bev), b.data, b.len) == 0)
            flush_now(m);
        lbuf_free(&b);
    }
    close_with(m, 0, false);
    m->state = M_IDLE;
}

void mqttc_free(struct mqttc *m)
{
    if (!m)
        return;
    if (m->in_callback) {
        m->free_pending = true;
        close_with(m, 0, false);
        return;
    }
    close_with(m, 0, false);
    if (m->timer)
        event_free(m->timer);
    SSL_CTX_free(m->ctx);
    free(m->host);
    free(m->ca_file);
    free(m->cert_file);
    free(m->key_file);
    free(m->verify_name);
    free(m->client_id);
    free(m->username);
    if (m->password) {
        memset(m->password, 0, strlen(m->password));
        free(m->password);
    }
    free(m);
}

static uint16_t next_id(struct mqttc *m)
{
    if (++m->next_id == 0)
        m->next_id = 1;
    return m->next_id;
}

int mqttc_publish(struct mqttc *m, const char *topic, size_t topic_len, const void *payload,
                  size_t len, uint8_t qos, bool dup, uint16_t *ret_packet_id)
{
    if (m->state != M_CONNECTED)
        return -ENOTCONN;
    uint16_t id = qos ? next_id(m) : 0;
    uint8_t hdr[MQTT_PUBLISH_HEADER_MAX];
    int n = mqtt_encode_publish_header(hdr, topic, topic_len, qos, false, dup, id, len);
    if (n < 0)
        return n;
    struct evbuffer *out = bufferevent_get_output(m->bev);
    if (evbuffer_add(out, hdr, (size_t)n) < 0 || (len && evbuffer_add(out, payload, len) < 0))
        return -ENOMEM;
    m->last_tx_ms = ltime_mono_ms();
    if (ret_packet_id)
        *ret_packet_id = id;
    return 0;
}

void mqttc_hold_ack(struct mqttc *m)
{
    m->ack_held = true;
}

int mqttc_puback(struct mqttc *m, uint16_t packet_id)
{
    if (m->state != M_CONNECTED)
        return -ENOTCONN;
    struct lbuf b = LBUF_INIT;
    int r = mqtt_encode_ack(&b, MQTT_PUBACK, packet_id);
    if (r >= 0)
        r = send_buf(m, &b);
    lbuf_free(&b);
    return r < 0 ? r : 0;
}

int mqttc_subscribe(struct mqttc *m, const char *filter, uint8_t qos, uint16_t *ret_packet_id)
{
    if (m->state != M_CONNECTED)
        return -ENOTCONN;
    uint16_t id = next_id(m);
    struct mqtt_subscription s = {mqtt_str_c(filter), qos};
    struct lbuf b = LBUF_INIT;
    int r = mqtt_encode_subscribe(&b, id, &s, 1);
    if (r == 0)
        r = send_buf(m, &b);
    lbuf_free(&b);
    if (r == 0 && ret_packet_id)
        *ret_packet_id = id;
    return r;
}
