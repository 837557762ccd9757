/* head_ws.c — the WebSocket listener (head_ws.h): each accepted connection does its TLS handshake
 * and sends its upgrade request within WS_UPGRADE_TIMEOUT_MS and WS_UPGRADE_MAX bytes; a good one
 * gets 101 and goes to the MQTT head with a wslay framing layer (mqtt_head_accept_ws), a bad one
 * an HTTP error naming the reason (404, 400, 426, 431), counted and logged as malformed. A request
 * with no Upgrade header to another path goes to the HTTPS API (head_https.h). */
#include "head_ws.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/list.h"
#include "base/str.h"
#include "head_https.h"
#include "head_amqp.h"
#include "head_mqtt.h"
#include "listener.h"
#include "log/log.h"
#include "net/ws.h"

#define COMP "hub"

/* A connection until its upgrade is answered. */
struct upgrading {
    struct hub *h;
    struct bufferevent *bev;
    struct event *timer; /* the deadline; after a refusal, the grace for its answer to drain */
    struct llist node;
    bool refused; /* answered with an error: freed once the answer is out */
};

struct ws_head {
    struct llist pending; /* newest first */
    size_t n;
};

static void up_free(struct upgrading *u)
{
    struct ws_head *wh = u->h->ws;
    llist_remove(&u->node);
    wh->n--;
    if (u->bev)
        bufferevent_free(u->bev);
    event_free(u->timer);
    free(u);
}

static void up_refuse(struct upgrading *u, int status, const char *why)
{
    struct hub *h = u->h;
    h->n.malformed++;
    hub_refused(h, HUB_REFUSAL_MALFORMED, "upgrade", "WebSocket upgrade refused (%d): %s", status,
                why);
    struct lbuf b = LBUF_INIT;
    if (ws_error_response(status, why, &b) == 0)
        bufferevent_write(u->bev, b.data, b.len);
    lbuf_free(&b);
    u->refused = true;
    bufferevent_disable(u->bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(u->bev)) == 0) {
        up_free(u);
        return;
    }
    struct timeval grace = {2, 0}; /* a client that never reads its answer */
    evtimer_add(u->timer, &grace);
}

static void up_readcb(struct bufferevent *bev, void *arg)
{
    struct upgrading *u = arg;
    struct hub *h = u->h;
    if (u->refused)
        return;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(in);
    const void *data = evbuffer_pullup(in, (ev_ssize_t)MIN(len, (size_t)WS_UPGRADE_MAX));
    struct ws_request rq = {0};
    struct lerr err = {0};
    int status = 0;
    int n = ws_request_parse(data, len, WS_UPGRADE_MAX, &rq, &status, &err);
    if (n == 0)
        return; /* more to come */
    if (n < 0) {
        up_refuse(u, status, err.msg);
        return;
    }
    if (!rq.upgrade && !lstr_eq(rq.path, WS_PATH)) {
        /* No upgrade: a request of the HTTPS API, which reads it again from the start. */
        ws_request_clear(&rq);
        u->bev = NULL;
        up_free(u);
        https_head_take(h, bev);
        return;
    }
    /* MQTT, or AMQP (the SDKs' AmqpWs) when that is the subprotocol offered. */
    bool amqp = false;
    status = ws_upgrade_check(&rq, WS_PATH, WS_SUBPROTOCOL, &err);
    if (status == 400 && ws_upgrade_check(&rq, WS_PATH, WS_SUBPROTOCOL_AMQP, NULL) == 0) {
        amqp = true;
        status = 0;
    }
    struct ws_conn *ws = NULL;
    struct lbuf resp = LBUF_INIT;
    if (status == 0) {
        /* A frame is one MQTT packet at most (they may also split one). */
        int r = ws_conn_new(h->max_packet + 16, &ws);
        if (r == 0)
            r = ws_upgrade_response(&rq, amqp ? WS_SUBPROTOCOL_AMQP : WS_SUBPROTOCOL, &resp);
        if (r < 0) {
            status = 503;
            lerr_set(&err, r, "out of memory");
        }
    }
    ws_request_clear(&rq);
    if (status != 0) {
        ws_conn_free(ws);
        lbuf_free(&resp);
        up_refuse(u, status, err.msg);
        return;
    }
    evbuffer_drain(in, (size_t)n);
    bufferevent_write(bev, resp.data, resp.len);
    lbuf_free(&resp);
    /* The connection is the MQTT (or AMQP) head's from here; its CONNECT (or authentication)
     * deadline starts now. */
    u->bev = NULL;
    up_free(u);
    if (amqp)
        amqp_head_accept_ws(h, bev, ws);
    else
        mqtt_head_accept_ws(h, bev, ws);
}

static void up_writecb(struct bufferevent *bev, void *arg)
{
    struct upgrading *u = arg;
    if (u->refused && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        up_free(u);
}

static void up_eventcb(struct bufferevent *bev, short what, void *arg)
{
    struct upgrading *u = arg;
    if (what & BEV_EVENT_CONNECTED)
        return;
    up_free(u); /* gone before its upgrade: nothing to say */
}

static void up_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct upgrading *u = arg;
    if (!u->refused)
        log_info(COMP, "WebSocket connection: no upgrade request in time; closing");
    up_free(u);
}

void ws_head_accept(struct hub *h, int fd, bool tls)
{
    struct ws_head *wh = h->ws;
    if (wh->n >= (size_t)h->cfg.hub.max_connections) {
        /* A flood of connections that never upgrade: the oldest one makes room. */
        struct upgrading *oldest = llist_last(&wh->pending, struct upgrading, node);
        h->n.connections_evicted++;
        hub_refused(h, HUB_REFUSAL_CONNECTIONS, "evicted",
                    "hub.max_connections (%d) WebSocket connections are upgrading: closing the "
                    "oldest to make room",
                    h->cfg.hub.max_connections);
        up_free(oldest);
    }
    struct upgrading *u = calloc(1, sizeof(*u));
    if (!u) {
        evutil_closesocket(fd);
        return;
    }
    u->h = h;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    SSL *ssl = NULL;
    if (tls && !(ssl = SSL_new(listener_tls(h)))) {
        free(u);
        evutil_closesocket(fd);
        return;
    }
    u->bev = ssl ? bufferevent_openssl_socket_new(h->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                  BEV_OPT_CLOSE_ON_FREE)
                 : bufferevent_socket_new(h->base, fd, BEV_OPT_CLOSE_ON_FREE);
    u->timer = evtimer_new(h->base, up_timer_cb, u);
    if (!u->bev || !u->timer) {
        if (u->bev)
            bufferevent_free(u->bev);
        else
            evutil_closesocket(fd);
        if (u->timer)
            event_free(u->timer);
        free(u);
        return;
    }
    bufferevent_setcb(u->bev, up_readcb, up_writecb, up_eventcb, u);
    bufferevent_setwatermark(u->bev, EV_READ, 0, WS_UPGRADE_MAX);
    bufferevent_enable(u->bev, EV_READ | EV_WRITE);
    struct timeval tv = {WS_UPGRADE_TIMEOUT_MS / 1000, (WS_UPGRADE_TIMEOUT_MS % 1000) * 1000};
    evtimer_add(u->timer, &tv);
    llist_add_head(&wh->pending, &u->node);
    wh->n++;
    h->n.connections_total++;
}

static int ws_start(struct hub *h, struct lerr *err)
{
    struct ws_head *wh = calloc(1, sizeof(*wh));
    if (!wh)
        return lerr_set(err, -ENOMEM, "WebSocket head: out of memory");
    llist_init(&wh->pending);
    h->ws = wh;
    if (h->cfg.hub.websocket_port)
        return listener_listen(h, h->cfg.hub.bind, h->cfg.hub.websocket_port, true, ws_head_accept,
                               err);
    return 0;
}

static void ws_stop(struct hub *h)
{
    struct ws_head *wh = h->ws;
    if (!wh)
        return;
    struct upgrading *u;
    while ((u = llist_first(&wh->pending, struct upgrading, node)))
        up_free(u);
    free(wh);
    h->ws = NULL;
}

static size_t ws_connections(struct hub *h)
{
    return h->ws ? h->ws->n : 0;
}

static json_t *ws_sessions_status(struct hub *h, size_t *ret_connected, size_t *ret_sessions)
{
    *ret_connected = 0;
    *ret_sessions = 0;
    return json_array(); /* its connections are the MQTT head's once upgraded */
}

const struct hub_head_ops ws_head_ops = {
    .name = "mqtt-ws",
    .start = ws_start,
    .stop = ws_stop,
    .connections = ws_connections,
    .sessions_status = ws_sessions_status,
};
