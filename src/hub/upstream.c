/* upstream.c — the hub's one connection to an upstream MQTT endpoint (IoT Hub, any broker, or a
 * parent ledge), configured in the `upstream` section. Messages routed to $upstream drain from
 * their durable queues while connected: highest priority first, in order, QoS 1 in a window of
 * hub.max_inflight, each removed only when the upstream acknowledged it. Disconnected, they wait
 * (TTL applies) and the link reconnects with back-off from 1 s to 60 s. With a SAS identity the
 * token is renewed by reconnecting before it expires. With upstream.iothub a leaf device's
 * message goes over that device's own session instead (cloud.c), so that IoT Hub sees it from
 * the device (a module's, a child edge device's module's likewise); one whose session is opening
 * or retrying waits at the head of its queue ("parked"), and goes as the edge device's only once
 * that identity has no session to come (cloud.h: cloud_upstream_link). */
#include "upstream.h"

#include <errno.h>
#include <math.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/crypto.h"
#include "base/json.h"
#include "base/quantile.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "cloud.h"
#include "identity/sas.h"
#include "log/log.h"
#include "mqttc/mqttc.h"
#include "store/store.h"
#include "metrics.h"

#define COMP "upstream"
#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 60000
#define UPSTREAM_OUTPUT_HIGH (512u << 10)

struct up_inflight {
    uint16_t packet_id;
    uint8_t prio;
    uint64_t seq;
    int64_t handed_us;       /* for edgehub_message_send_duration_seconds */
    struct hub_series *send; /* its series */
};

/* A leaf device's or a module's message handed to its own session, until IoT Hub acknowledged
 * it. */
struct up_leaf {
    struct upstream *u;
    uint8_t prio;
    bool module;
    uint64_t seq;
    int64_t handed_us;
    struct hub_series *send;
};

/* A record taken from its queue for a leaf whose session is still opening. */
struct up_parked {
    void *data;
    size_t len;
    uint64_t seq;
    bool redelivery;
};

struct upstream {
    struct hub *h;
    struct evdns_base *dns;
    struct mqttc *m;
    struct event *retry;
    struct event *renew;
    int backoff_ms;
    bool connected;
    struct up_inflight *inflight;
    size_t n_inflight, cap_inflight;
    uint64_t sent, acked, connects, failures;
    size_t n_leaf; /* leaf and module messages with their own sessions, in the same window */
    uint64_t leaf_sent, leaf_acked;     /* over the leaves' own sessions */
    uint64_t module_sent, module_acked; /* over the modules' own sessions */
    struct up_parked parked[HUB_PRIORITIES];
    int64_t connected_ms;
    int64_t first_delivery_ms; /* after the latest connect, for the reconnect-latency figure */
    char last_error[320];
    struct lbuf topic;
    /* offline periods, for the metrics */
    uint64_t offline_count, offline_periods;
    int64_t offline_ms, offline_since_ms;
    struct lquant offline_q; /* their lengths' quantiles */
};

_Static_assert(UPSTREAM_OFFLINE_QUANTILES == HUB_METRICS_DURATION_OBJECTIVES,
               "edgehub_offline_duration_seconds is an IoT Edge duration");

/* The link is down (lost, or the first attempt failed): an offline period starts. */
static void went_offline(struct upstream *u)
{
    if (u->offline_since_ms)
        return;
    u->offline_since_ms = ltime_now_ms();
    u->offline_count++;
}

static struct endpoint *upstream_endpoint(struct hub *h)
{
    return endpoint_find(h, ENDPOINT_UPSTREAM_ID);
}

static void schedule_retry(struct upstream *u)
{
    u->backoff_ms = u->backoff_ms ? MIN(u->backoff_ms * 2, BACKOFF_MAX_MS) : BACKOFF_MIN_MS;
    struct timeval tv = {u->backoff_ms / 1000, (u->backoff_ms % 1000) * 1000};
    evtimer_add(u->retry, &tv);
}

static void unpark(struct upstream *u, int p)
{
    free(u->parked[p].data);
    u->parked[p] = (struct up_parked){0};
}

static void rewind_all(struct upstream *u)
{
    for (int p = 0; p < HUB_PRIORITIES; p++)
        unpark(u, p);
    struct endpoint *ep = upstream_endpoint(u->h);
    if (ep)
        for (int p = 0; p < HUB_PRIORITIES; p++)
            if (ep->q[p])
                queue_rewind_inflight(ep->q[p]);
    u->n_inflight = 0;
}

static void on_close(void *ud, int reason)
{
    struct upstream *u = ud;
    u->connected = false;
    cloud_upstream_link(u->h, false);
    went_offline(u);
    snprintf(u->last_error, sizeof(u->last_error), "connection lost: %s",
             u->m && mqttc_error(u->m)[0] ? mqttc_error(u->m) : strerror(-reason));
    log_warn(COMP, "%s:%d: %s; reconnecting", u->h->cfg.upstream.host, u->h->cfg.upstream.port,
             u->last_error);
    rewind_all(u);
    evtimer_del(u->renew);
    schedule_retry(u);
}

static void on_connect(void *ud, int result, int code, bool present)
{
    struct upstream *u = ud;
    struct hub *h = u->h;
    if (result < 0) {
        u->failures++;
        if (code > 0)
            snprintf(u->last_error, sizeof(u->last_error), "refused by the server (CONNACK %d)",
                     code);
        else if (u->m && mqttc_error(u->m)[0])
            snprintf(u->last_error, sizeof(u->last_error), "%s", mqttc_error(u->m));
        else
            snprintf(u->last_error, sizeof(u->last_error), "%s", strerror(-result));
        went_offline(u);
        if (u->failures == 1 || u->failures % 10 == 0)
            log_warn(COMP, "%s:%d: %s; retrying (messages wait in the store)", h->cfg.upstream.host,
                     h->cfg.upstream.port, u->last_error);
        schedule_retry(u);
        return;
    }
    u->connected = true;
    u->backoff_ms = 0;
    u->connects++;
    u->failures = 0;
    u->connected_ms = ltime_now_ms();
    if (u->offline_since_ms) {
        u->offline_ms += u->connected_ms - u->offline_since_ms;
        u->offline_periods++;
        (void)lquant_observe(&u->offline_q,
                             (double)(u->connected_ms - u->offline_since_ms) / 1000.0,
                             ltime_mono_ms());
        u->offline_since_ms = 0;
    }
    u->first_delivery_ms = 0;
    u->last_error[0] = 0;
    log_info(COMP, "connected to %s:%d", h->cfg.upstream.host, h->cfg.upstream.port);
    /* A SAS token is good for token_lifetime: reconnect with a fresh one at 80 % of it. */
    if (h->rt.device && lstr_eq(ljson_str(h->rt.device, "auth"), "sas")) {
        int64_t ms = h->cfg.upstream.token_lifetime_ms * 4 / 5;
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
        evtimer_add(u->renew, &tv);
    }
    cloud_upstream_link(h, true); /* before the drain: the sessions retrying try now */
    endpoint_kick(h, NULL);
}

static void on_puback(void *ud, uint16_t packet_id)
{
    struct upstream *u = ud;
    struct endpoint *ep = upstream_endpoint(u->h);
    for (size_t i = 0; i < u->n_inflight; i++) {
        if (u->inflight[i].packet_id != packet_id)
            continue;
        if (ep && ep->q[u->inflight[i].prio])
            queue_ack(ep->q[u->inflight[i].prio], u->inflight[i].seq);
        u->acked++;
        hub_metrics_send_done(u->h, u->inflight[i].send, u->inflight[i].handed_us);
        /* keep the window in send order: acks arrive in order from a conforming server */
        memmove(&u->inflight[i], &u->inflight[i + 1],
                (u->n_inflight - i - 1) * sizeof(*u->inflight));
        u->n_inflight--;
        endpoint_kick(u->h, ep);
        return;
    }
}

/* The CONNECT credentials from the device identity ledged handed over. */
static int credentials(struct upstream *u, char **ret_user, char **ret_pass)
{
    struct hub *h = u->h;
    *ret_user = lstr_printf("%s/%s/?api-version=2021-04-12&DeviceClientType=ledge%%2F%s",
                            h->rt.iothub_hostname, h->rt.device_id, LEDGE_VERSION);
    *ret_pass = NULL;
    const char *auth = ljson_str(h->rt.device, "auth");
    if (lstr_eq(auth, "sas")) {
        const char *key = ljson_str(h->rt.device, "key");
        struct lbuf raw = LBUF_INIT, tok = LBUF_INIT;
        _cleanup_free_ char *resource =
            lstr_printf("%s/devices/%s", h->rt.iothub_hostname, h->rt.device_id);
        uint64_t expiry = (uint64_t)((ltime_now_ms() + h->cfg.upstream.token_lifetime_ms) / 1000);
        int r = (!key || !resource) ? -EINVAL : lcrypto_b64_decode(key, strlen(key), &raw);
        if (r == 0)
            r = sas_token_make(resource, raw.data, raw.len, expiry, NULL, &tok);
        if (raw.data)
            lcrypto_wipe(raw.data, raw.len);
        lbuf_free(&raw);
        if (r < 0) {
            lbuf_free(&tok);
            return r;
        }
        *ret_pass = lbuf_steal(&tok);
    }
    return *ret_user ? 0 : -ENOMEM;
}

static void connect_now(struct upstream *u)
{
    struct hub *h = u->h;
    if (u->m) {
        mqttc_free(u->m);
        u->m = NULL;
    }
    _cleanup_free_ char *user = NULL, *pass = NULL;
    if (credentials(u, &user, &pass) < 0) {
        snprintf(u->last_error, sizeof(u->last_error), "cannot make credentials");
        schedule_retry(u);
        return;
    }
    const char *auth = ljson_str(h->rt.device, "auth");
    struct mqttc_options o = {
        .host = h->cfg.upstream.host,
        .port = h->cfg.upstream.port,
        .tls = h->cfg.upstream.tls,
        .ca_file = h->cfg.upstream.ca_file,
        .cert_file = lstr_eq(auth, "x509") ? ljson_str(h->rt.device, "certFile") : NULL,
        .key_file = lstr_eq(auth, "x509") ? ljson_str(h->rt.device, "keyFile") : NULL,
        .client_id = h->rt.device_id,
        .username = user,
        .password = pass,
        .clean_session = false,
        .keep_alive_s = (uint16_t)(h->cfg.upstream.keepalive_ms / 1000),
        .max_packet = h->max_packet,
        .on_connect = on_connect,
        .on_close = on_close,
        .on_puback = on_puback,
        .ud = u,
    };
    int r = mqttc_new(h->base, u->dns, &o, &u->m);
    if (pass)
        lcrypto_wipe(pass, strlen(pass));
    if (r == 0)
        r = mqttc_connect(u->m);
    if (r < 0) {
        snprintf(u->last_error, sizeof(u->last_error), "cannot connect: %s", strerror(-r));
        schedule_retry(u);
    }
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    connect_now(arg);
}

static void renew_cb(evutil_socket_t fd, short what, void *arg)
{
    struct upstream *u = arg;
    log_info(COMP, "renewing the SAS token: reconnecting");
    if (u->m)
        mqttc_disconnect(u->m);
    u->connected = false;
    cloud_upstream_link(u->h, false);
    rewind_all(u);
    connect_now(u);
}

static int upstream_start(struct hub *h, struct lerr *err)
{
    if (!h->cfg.upstream.enabled || !h->cfg.upstream.host)
        return 0;
    struct upstream *u = calloc(1, sizeof(*u));
    if (!u)
        return lerr_set(err, -ENOMEM, "upstream: out of memory");
    h->upstream = u;
    u->h = h;
    lquant_init(&u->offline_q, HUB_METRICS_QUANTILE_MAX_AGE_MS);
    u->dns = evdns_base_new(h->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    u->retry = evtimer_new(h->base, retry_cb, u);
    u->renew = evtimer_new(h->base, renew_cb, u);
    if (!u->retry || !u->renew)
        return lerr_set(err, -ENOMEM, "upstream: out of memory");
    if (!u->dns)
        log_warn(COMP, "no DNS resolver configured; upstream.host must be an IP address");
    connect_now(u);
    return 0;
}

static void upstream_stop(struct hub *h)
{
    struct upstream *u = h->upstream;
    if (!u)
        return;
    if (u->m) {
        mqttc_disconnect(u->m);
        mqttc_free(u->m);
    }
    if (u->retry)
        event_free(u->retry);
    if (u->renew)
        event_free(u->renew);
    if (u->dns)
        evdns_base_free(u->dns, 0);
    for (int p = 0; p < HUB_PRIORITIES; p++)
        unpark(u, p);
    free(u->inflight);
    lbuf_free(&u->topic);
    lquant_fini(&u->offline_q);
    free(u);
    h->upstream = NULL;
}

/* devices/{device}/messages/events/{properties}: {device}, {module} (origin) and {properties}
 * (the IoT Hub property bag, system and application properties). */
static int build_topic(struct upstream *u, const struct hub_message *m)
{
    struct hub *h = u->h;
    lbuf_reset(&u->topic);
    const char *t = h->cfg.upstream.topic;
    for (const char *p = t; *p;) {
        int r = 0;
        if (*p != '{') {
            /* a literal run up to the next placeholder */
            size_t n = strcspn(p, "{");
            r = lbuf_append(&u->topic, p, n);
            p += n;
        } else if (strncmp(p, "{device}", 8) == 0) {
            r = lbuf_puts(&u->topic, h->rt.device_id);
            p += 8;
        } else if (strncmp(p, "{module}", 8) == 0) {
            const char *mod = m->sys[IOTHUB_PROP_CONNECTION_MODULE_ID];
            r = lbuf_puts(&u->topic, mod ? mod : "");
            p += 8;
        } else if (strncmp(p, "{properties}", 12) == 0) {
            struct iothub_props props;
            hub_message_props(m, &props);
            r = iothub_props_encode(&u->topic, &props);
            p += 12;
        } else {
            r = lbuf_putc(&u->topic, *p++);
        }
        if (r < 0)
            return r;
    }
    return 0;
}

static void leaf_sent(void *ud, int result)
{
    struct up_leaf *lf = ud;
    struct upstream *u = lf->u;
    struct endpoint *ep = upstream_endpoint(u->h);
    struct queue *q = ep ? ep->q[lf->prio] : NULL;
    u->n_leaf--;
    if (q && result == 0) {
        queue_ack(q, lf->seq);
        hub_metrics_send_done(u->h, lf->send, lf->handed_us);
        if (lf->module)
            u->module_acked++;
        else
            u->leaf_acked++;
    } else if (q) {
        queue_rewind_inflight(q); /* its session went first: it (and what followed) again */
    }
    free(lf);
    endpoint_kick(u->h, ep);
}

/* A leaf device's or a module's message (upstream.iothub), sent as IoT Hub would have it from
 * that identity, as edgeHub does: 1 handed to its own session, 0 not one to send that way (the
 * edge device's link carries it), -EAGAIN wait (its session is opening or retrying). */
static int send_as_identity(struct upstream *u, const struct hub_message *m, int prio, uint64_t seq)
{
    struct hub *h = u->h;
    const char *cdid = m->sys[IOTHUB_PROP_CONNECTION_DEVICE_ID];
    const char *cmid = m->sys[IOTHUB_PROP_CONNECTION_MODULE_ID];
    bool own = !cdid || strcasecmp(cdid, h->rt.device_id) == 0;
    if (!h->cloud || (own && !cmid))
        return 0;
    struct up_leaf *lf = calloc(1, sizeof(*lf));
    if (!lf)
        return -EAGAIN;
    /* a child edge device's module's (nested edge) goes over that identity's session too */
    *lf =
        (struct up_leaf){u,   (uint8_t)prio,        cmid != NULL,
                         seq, hub_metrics_now_us(), hub_metrics_send_series(h, m, "upstream", "")};
    int r = own    ? cloud_module_send(h, cmid, m, leaf_sent, lf)
            : cmid ? cloud_child_send(h, cdid, cmid, m, leaf_sent, lf)
                   : cloud_device_send(h, cdid, m, leaf_sent, lf);
    if (r != 1) {
        free(lf);
        return r;
    }
    u->n_leaf++;
    if (cmid)
        u->module_sent++;
    else
        u->leaf_sent++;
    return 1;
}

static void upstream_drain(struct hub *h, struct endpoint *ep, int64_t now)
{
    struct upstream *u = h->upstream;
    if (!u || !u->connected || !u->m || !mqttc_connected(u->m))
        return;
    size_t window = (size_t)MAX(h->cfg.hub.max_inflight, 1);
    for (int p = 0; p < HUB_PRIORITIES; p++) {
        struct queue *q = ep->q[p];
        if (!q)
            continue;
        for (;;) {
            if (u->n_inflight + u->n_leaf >= window ||
                mqttc_output_pending(u->m) > UPSTREAM_OUTPUT_HIGH)
                return;
            struct queue_record rec;
            struct up_parked *pk = &u->parked[p];
            if (pk->data) {
                rec = (struct queue_record){
                    .seq = pk->seq, .data = pk->data, .len = pk->len, .redelivery = pk->redelivery};
            } else {
                int r = queue_next(q, now, &rec);
                if (r <= 0)
                    break;
            }
            struct hub_message m;
            struct lerr err = {0};
            if (hub_message_decode(rec.data, rec.len, &m, &err) < 0 || build_topic(u, &m) < 0) {
                log_error(COMP, "dropping an unreadable message: %s", err.msg);
                queue_ack(q, rec.seq);
                unpark(u, p);
                continue;
            }
            int lr = send_as_identity(u, &m, p, rec.seq);
            if (lr == -EAGAIN) {
                /* the leaf's session is opening: this message waits at the head (kept here,
                 * in flight in the store); its connect kicks the endpoints */
                if (!pk->data) {
                    pk->data = malloc(rec.len ? rec.len : 1);
                    if (!pk->data) {
                        queue_rewind_inflight(q);
                        return;
                    }
                    memcpy(pk->data, rec.data, rec.len);
                    *pk = (struct up_parked){pk->data, rec.len, rec.seq, rec.redelivery};
                }
                return;
            }
            if (lr == 1) {
                hub_metrics_sent(h, &m, "upstream", "", (unsigned)p); /* m may be the parked copy */
                unpark(u, p);
                h->n.delivered++;
                continue;
            }
            /* as the edge device; m may point into the parked copy: it is freed after m's last
             * use (the metrics' labels read its properties) */
            uint16_t pid;
            int pr = mqttc_publish(u->m, u->topic.data, u->topic.len, m.body, m.body_len, 1,
                                   rec.redelivery, &pid);
            if (pr < 0) {
                unpark(u, p);
                queue_rewind_inflight(q);
                return;
            }
            if (u->n_inflight == u->cap_inflight) {
                size_t cap = u->cap_inflight ? u->cap_inflight * 2 : 64;
                struct up_inflight *v = realloc(u->inflight, cap * sizeof(*v));
                if (!v) {
                    unpark(u, p);
                    queue_rewind_inflight(q);
                    return;
                }
                u->inflight = v;
                u->cap_inflight = cap;
            }
            u->inflight[u->n_inflight++] =
                (struct up_inflight){pid, (uint8_t)p, rec.seq, hub_metrics_now_us(),
                                     hub_metrics_send_series(h, &m, "upstream", "")};
            u->sent++;
            h->n.delivered++;
            hub_metrics_sent(h, &m, "upstream", "", (unsigned)p);
            unpark(u, p);
            if (!u->first_delivery_ms)
                u->first_delivery_ms = ltime_now_ms();
        }
        struct queue_stats st;
        queue_get_stats(q, &st);
        if (st.depth > st.inflight)
            return; /* strict priority */
    }
}

json_t *upstream_status(struct hub *h)
{
    struct upstream *u = h->upstream;
    if (!u)
        return json_pack("{s:b}", "enabled", 0);
    json_t *o = json_pack(
        "{s:b, s:s, s:i, s:b, s:I, s:I, s:I, s:I, s:{s:I, s:I, s:I}, s:{s:I, s:I}}", "enabled", 1,
        "host", h->cfg.upstream.host, "port", h->cfg.upstream.port, "connected", u->connected,
        "sent", (json_int_t)u->sent, "acked", (json_int_t)u->acked, "inflight",
        (json_int_t)u->n_inflight, "connects", (json_int_t)u->connects, "leafSessions", "sent",
        (json_int_t)u->leaf_sent, "acked", (json_int_t)u->leaf_acked, "inflight",
        (json_int_t)u->n_leaf, "moduleSessions", "sent", (json_int_t)u->module_sent, "acked",
        (json_int_t)u->module_acked);
    if (u->last_error[0])
        json_object_set_new(o, "lastError", json_string(u->last_error));
    if (u->connected && u->first_delivery_ms)
        json_object_set_new(o, "firstDeliveryAfterConnectMs",
                            json_integer(u->first_delivery_ms - u->connected_ms));
    return o;
}

void upstream_get_metrics(struct hub *h, struct upstream_metrics *ret)
{
    struct upstream *u = h->upstream;
    *ret = (struct upstream_metrics){0};
    for (size_t i = 0; i < UPSTREAM_OFFLINE_QUANTILES; i++)
        ret->offline_q[i] = NAN;
    if (!u)
        return;
    double q[UPSTREAM_OFFLINE_QUANTILES];
    if (lquant_quantiles(&u->offline_q, ltime_mono_ms(), hub_metrics_duration_objectives,
                         UPSTREAM_OFFLINE_QUANTILES, q) < 0)
        for (size_t i = 0; i < UPSTREAM_OFFLINE_QUANTILES; i++)
            q[i] = NAN;
    *ret = (struct upstream_metrics){
        .enabled = true,
        .connected = u->connected,
        .offline_count = u->offline_count,
        .offline_periods = u->offline_periods,
        .offline_ms = u->offline_ms,
        .offline_since_ms = u->offline_since_ms,
        .sent = u->sent,
        .acked = u->acked,
        .connects = u->connects,
    };
    memcpy(ret->offline_q, q, sizeof(q));
}

const struct hub_sink_ops upstream_sink_ops = {
    .name = "upstream",
    .start = upstream_start,
    .stop = upstream_stop,
    .drain = upstream_drain,
};
