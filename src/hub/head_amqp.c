/* head_amqp.c — the AMQP 1.0 head (head_amqp.h): a TLS (or, in tests, plain) bufferevent per
 * connection feeding Qpid Proton's connection engine, Proton's events turned into the hub's calls,
 * and what the hub sends written as messages on the client's links.
 *
 *   $cbs (sender and receiver)       put-token requests → auth_check(); 200 or 401 answers
 *   .../messages/events  (client →) telemetry → router_publish(), accepted once durable
 *   .../messages/events  (→ client) a module's inputs (annotation x-opt-input-name); settled by
 *                                   the client → input_delivery_done()
 *   .../twin (both)                  GET, PATCH reported, PUT/DELETE desired notifications →
 *                                   twins_request(); answers by correlation id; desired patches
 *   .../methods/devicebound (both)   method calls out (IoThub-methodname, correlation id), their
 *                                   answers in (IoThub-status) → methods_response()
 *   /devices/{d}/messages/devicebound (→ a leaf device) its cloud-to-device queue, one message
 *                                   unsettled at a time: accepted (complete) and rejected leave the
 *                                   queue, released or modified (abandon) and unsettled when the
 *                                   link goes are delivered again → input_delivery_done()
 *
 * A connection authenticates once (one identity per connection, as MQTT's CONNECT); later
 * put-tokens for the same identity renew it, one for another is refused. Links other than $cbs
 * attach only for that identity's own addresses. */
#include "head_amqp.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/connection_driver.h>
#include <proton/delivery.h>
#include <proton/event.h>
#include <proton/link.h>
#include <proton/message.h>
#include <proton/sasl.h>
#include <proton/session.h>
#include <proton/terminus.h>
#include <proton/transport.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "base/str.h"
#include "base/timeutil.h"
#include "amqp_map.h"
#include "auth.h"
#include "clients.h"
#include "commit.h"
#include "metrics.h"
#include "endpoint.h"
#include "input.h"
#include "listener.h"
#include "methods.h"
#include "router.h"
#include "twin.h"
#include "log/log.h"
#include "net/ws.h"

#define COMP "hub"
#define OUTPUT_HIGH (1u << 20)
#define OUTPUT_LOW (256u << 10)
#define DELIVER_OUTPUT_HIGH (512u << 10)
#define MAX_FRAME 65536
#define RID_MAX 300

enum aconn_state {
    ACONN_NEW,    /* not authenticated yet */
    ACONN_ACTIVE, /* authenticated: on the hub's client list */
    ACONN_CLOSING,
};

/* What a link is for, kept as its context. */
enum alink_role {
    ALINK_NONE,
    ALINK_CBS_IN,
    ALINK_CBS_OUT,
    ALINK_EVENTS_IN,
    ALINK_INPUTS_OUT,
    ALINK_TWIN_IN,
    ALINK_TWIN_OUT,
    ALINK_METHODS_IN,
    ALINK_METHODS_OUT,
    ALINK_C2D_OUT,
};

/* A message the client sent at least once, waiting for the group commit (commit.c). */
struct pending_ack {
    uint32_t token;
    pn_delivery_t *d;
};

struct aconn {
    struct hub *hub;
    struct hub_client client; /* on the hub's list while ACONN_ACTIVE */
    struct hub_identity id;   /* valid while ACONN_ACTIVE (and after, until freed) */
    struct bufferevent *bev;
    struct event *timer;
    struct ws_conn *ws;    /* AMQP over WebSockets: the framing, and the AMQP bytes decoded */
    struct evbuffer *wsin; /* (head_ws.c did the upgrade) */
    pn_connection_driver_t drv;
    struct llist node;
    pn_link_t *cbs_out, *inputs_out, *twin_out, *methods_out, *c2d_out;
    struct pending_ack *acks;
    size_t n_acks, cap_acks;
    uint32_t next_token;
    uint32_t n_inflight; /* input deliveries the client has not settled */
    uint64_t next_tag;
    int64_t auth_deadline_ms; /* monotonic */
    unsigned n_links;
    uint8_t state;
    bool pumping;
    bool peer_gone;
    bool wants_desired;
    bool has_id;
    bool refused; /* a put-token was refused: the deadline closes it without a line */
};

struct amqp_head {
    struct llist conns;
    size_t n_conns, n_closing;
    pn_message_t *msg;    /* scratch for every message in and out */
    pn_rwbytes_t encoded; /* pn_message_send()'s buffer */
    struct lbuf rx;       /* a delivery's bytes */
};

static void conn_close(struct aconn *c, const char *why);
static void conn_start(struct hub *h, struct aconn *c);
static void arm_timer(struct aconn *c);
static void conn_free(struct aconn *c);
static void pump(struct aconn *c);

static struct aconn *conn_of(const struct hub_client *cl)
{
    return llist_entry(cl, struct aconn, client);
}

static const char *who(const struct aconn *c)
{
    return c->has_id ? c->id.address : "unauthenticated AMQP client";
}

static enum alink_role role_of(pn_link_t *l)
{
    return (enum alink_role)(uintptr_t)pn_link_get_context(l);
}

static size_t output_pending(const struct aconn *c)
{
    return evbuffer_get_length(bufferevent_get_output(c->bev));
}

/* ------------------------------------------------------------------ sending */

/* h->amqp->msg on link l; pre-settled unless ctx (then the delivery's context). */
static int send_msg(struct aconn *c, pn_link_t *l, void *ctx)
{
    struct amqp_head *ah = c->hub->amqp;
    if (!l || c->state == ACONN_CLOSING || pn_link_state(l) & PN_LOCAL_CLOSED)
        return -EPIPE;
    uint64_t tag = ++c->next_tag;
    pn_delivery_t *d = pn_delivery(l, pn_dtag((const char *)&tag, sizeof(tag)));
    if (!d)
        return -ENOMEM;
    if (pn_message_send(ah->msg, l, &ah->encoded) < 0) {
        pn_delivery_settle(d);
        return -ENOMEM;
    }
    if (ctx)
        pn_delivery_set_context(d, ctx);
    else
        pn_delivery_settle(d);
    pump(c);
    return 0;
}

static void put_sym(pn_data_t *d, const char *s)
{
    pn_data_put_symbol(d, pn_bytes(strlen(s), s));
}

static void set_body(pn_message_t *m, const char *body)
{
    if (!body)
        return;
    pn_message_set_inferred(m, true);
    pn_data_put_binary(pn_message_body(m), pn_bytes(strlen(body), body));
}

/* ------------------------------------------------------------------ the head's ops */

static int amqp_listens(const struct hub_client *cl, enum hub_stream stream, const char *input)
{
    const struct aconn *c = conn_of(cl);
    if (c->state != ACONN_ACTIVE)
        return -1;
    switch (stream) {
    case HUB_STREAM_INPUTS:
        return c->inputs_out ? 1 : -1;
    case HUB_STREAM_DESIRED:
        return c->twin_out && c->wants_desired ? 0 : -1;
    case HUB_STREAM_METHODS:
        return c->methods_out ? 0 : -1;
    case HUB_STREAM_TWIN_RESPONSES:
        return c->twin_out ? 0 : -1;
    case HUB_STREAM_C2D:
        return c->c2d_out ? 1 : -1;
    }
    return -1;
}

/* Where deliveries go: a module's inputs link, a leaf device's cloud-to-device link. */
static pn_link_t *deliver_link(const struct aconn *c)
{
    return c->id.kind == HUB_IDENTITY_DEVICE ? c->c2d_out : c->inputs_out;
}

static bool amqp_ready(const struct hub_client *cl, bool acknowledged)
{
    const struct aconn *c = conn_of(cl);
    pn_link_t *l = deliver_link(c);
    if (!l || output_pending(c) > DELIVER_OUTPUT_HIGH)
        return false;
    if (pn_link_credit(l) <= 0)
        return false;
    /* Cloud-to-device messages one at a time: an abandoned one (released) rewinds the queue to
     * it, which is exact only when nothing after it is in flight. */
    uint32_t window = l == c->c2d_out ? 1 : (uint32_t)c->hub->cfg.hub.max_inflight;
    return !acknowledged || c->n_inflight < window;
}

static int amqp_deliver(struct hub_client *cl, const char *input, const struct hub_message *m,
                        const struct hub_delivery *d, bool redelivery)
{
    struct aconn *c = conn_of(cl);
    struct amqp_head *ah = c->hub->amqp;
    if (amqp_message_from_hub(m, input, ah->msg) < 0)
        return -ENOMEM;
    if (redelivery)
        pn_message_set_delivery_count(ah->msg, 1);
    struct hub_delivery *ctx = NULL;
    if (d) {
        ctx = malloc(sizeof(*ctx));
        if (!ctx)
            return -ENOMEM;
        *ctx = *d;
    }
    int r = send_msg(c, input ? c->inputs_out : c->c2d_out, ctx);
    if (r < 0) {
        free(ctx);
        return r;
    }
    if (ctx)
        c->n_inflight++;
    return 0;
}

static void amqp_twin_response(struct hub_client *cl, const char *rid, size_t rid_len, int status,
                               long long version, const char *body)
{
    struct aconn *c = conn_of(cl);
    pn_message_t *m = c->hub->amqp->msg;
    char storage[RID_MAX];
    pn_msgid_t id;
    if (rid_len > sizeof(storage) || amqp_msgid_from_rid(rid, rid_len, storage, &id) < 0)
        return;
    pn_message_clear(m);
    pn_message_set_correlation_id(m, id);
    pn_data_t *ann = pn_message_annotations(m);
    pn_data_put_map(ann);
    pn_data_enter(ann);
    put_sym(ann, "status");
    pn_data_put_int(ann, status);
    if (version >= 0) {
        put_sym(ann, "version");
        pn_data_put_long(ann, version);
    }
    pn_data_exit(ann);
    set_body(m, body);
    send_msg(c, c->twin_out, NULL);
}

static void amqp_desired(struct hub_client *cl, long long version, const char *body)
{
    struct aconn *c = conn_of(cl);
    pn_message_t *m = c->hub->amqp->msg;
    pn_message_clear(m);
    pn_data_t *ann = pn_message_annotations(m);
    pn_data_put_map(ann);
    pn_data_enter(ann);
    put_sym(ann, "version");
    pn_data_put_long(ann, version);
    pn_data_exit(ann);
    set_body(m, body);
    send_msg(c, c->twin_out, NULL);
}

static int amqp_method_call(struct hub_client *cl, const char *method, const char *rid,
                            const char *body)
{
    struct aconn *c = conn_of(cl);
    pn_message_t *m = c->hub->amqp->msg;
    pn_message_clear(m);
    pn_msgid_t id;
    memset(&id, 0, sizeof(id));
    id.type = PN_STRING;
    id.u.as_bytes = pn_bytes(strlen(rid), rid);
    pn_message_set_correlation_id(m, id);
    pn_data_t *props = pn_message_properties(m);
    pn_data_put_map(props);
    pn_data_enter(props);
    pn_data_put_string(props, pn_bytes(strlen("IoThub-methodname"), "IoThub-methodname"));
    pn_data_put_string(props, pn_bytes(strlen(method), method));
    pn_data_exit(props);
    set_body(m, body);
    return send_msg(c, c->methods_out, NULL);
}

static void amqp_acked(struct hub_client *cl, uint32_t token)
{
    struct aconn *c = conn_of(cl);
    for (size_t i = 0; i < c->n_acks; i++) {
        if (c->acks[i].token != token)
            continue;
        pn_delivery_t *d = c->acks[i].d;
        memmove(&c->acks[i], &c->acks[i + 1], (c->n_acks - i - 1) * sizeof(c->acks[0]));
        c->n_acks--;
        pn_delivery_update(d, PN_ACCEPTED);
        pn_delivery_settle(d);
        pump(c);
        return;
    }
}

static void amqp_close(struct hub_client *cl, const char *why, bool will)
{
    conn_close(conn_of(cl), why);
}

/* ------------------------------------------------------------------ authentication */

static void cbs_answer(struct aconn *c, pn_msgid_t request_id, int status, const char *desc)
{
    pn_message_t *m = c->hub->amqp->msg;
    pn_message_clear(m);
    pn_message_set_correlation_id(m, request_id);
    pn_data_t *props = pn_message_properties(m);
    pn_data_put_map(props);
    pn_data_enter(props);
    pn_data_put_string(props, pn_bytes(strlen("status-code"), "status-code"));
    pn_data_put_int(props, status);
    pn_data_put_string(props, pn_bytes(strlen("status-description"), "status-description"));
    pn_data_put_string(props, pn_bytes(strlen(desc), desc));
    pn_data_exit(props);
    send_msg(c, c->cbs_out, NULL);
}

/* The connection is now id's: it takes over from another of the same address, as MQTT does. */
static void become(struct aconn *c, struct hub_identity *id)
{
    struct hub *h = c->hub;
    struct hub_client *old = clients_find(h, id->address);
    if (old) {
        log_info(COMP, "%s: a new AMQP connection takes over", id->address);
        old->ops->close(old, "a new connection takes over", false);
    }
    c->id = *id;
    memset(id, 0, sizeof(*id));
    c->has_id = true;
    c->state = ACONN_ACTIVE;
    c->client = (struct hub_client){.ops = &amqp_head_ops, .id = &c->id};
    clients_attach(h, &c->client);
    char key[160];
    snprintf(key, sizeof(key), "amqp-connect:%s", c->id.address);
    uint64_t skipped;
    if (hub_log_due(h, key, &skipped))
        log_info(COMP, "%s connected over AMQP (%s)", c->id.address,
                 c->id.method == HUB_AUTH_X509 ? "X.509" : "SAS token");
    endpoint_kick(h, NULL);
}

/* A refused put-token or certificate; reason (IoT Edge's edgehub_client_connect_failed_total:
 * not_authenticated, protocol_error) counts it for the identity it claimed (device, module; NULL
 * when it named none), NULL for a refusal that is no failed connection (a second identity). */
static void refuse_auth(struct aconn *c, const char *device, const char *module, const char *reason,
                        const char *why)
{
    struct hub *h = c->hub;
    h->n.auth_failures++;
    if (reason) {
        char idb[256];
        hub_metrics_add(h, HM_CLIENT_CONNECT_FAIL,
                        (const char *[]){hub_metrics_client_id(device, module, idb, sizeof(idb)),
                                         reason, "amqp"},
                        1);
    }
    hub_refused(h, HUB_REFUSAL_AUTH, NULL, "AMQP: authentication refused: %s", why);
}

static void on_put_token(struct aconn *c, pn_message_t *msg)
{
    struct hub *h = c->hub;
    pn_msgid_t rq = pn_message_get_id(msg);
    /* The request's id outlives msg's reuse for the answer. */
    char rq_storage[RID_MAX], rid[RID_MAX];
    int n = amqp_rid_from_msgid(rq, rid, sizeof(rid));
    if (n < 0 || amqp_msgid_from_rid(rid, (size_t)n, rq_storage, &rq) < 0)
        memset(&rq, 0, sizeof(rq));
    struct amqp_put_token pt;
    struct lerr err = {0};
    if (amqp_put_token_parse(msg, &pt, &err) < 0) {
        refuse_auth(c, NULL, NULL, "protocol_error", err.msg);
        cbs_answer(c, rq, 400, err.msg);
        return;
    }
    _cleanup_free_ char *scratch = malloc(pt.audience.len + 2);
    _cleanup_free_ char *token = lstr_ndup(pt.token.ptr, pt.token.len);
    if (!scratch || !token)
        return;
    struct amqp_addr aud;
    if (amqp_audience_parse(pt.audience.ptr, pt.audience.len, scratch, pt.audience.len + 2, &aud) <
        0) {
        refuse_auth(c, NULL, NULL, "protocol_error", "the put-token's audience names no device");
        cbs_answer(c, rq, 400, "the audience must be <host>/devices/<d>[/modules/<m>]");
        return;
    }
    _cleanup_free_ char *device = lstr_ndup(aud.device.ptr, aud.device.len);
    _cleanup_free_ char *module = lstr_ndup(aud.module.ptr, aud.module.len);
    if (!device || !module)
        return;
    struct hub_credentials cr = {.device_id = device, .module_id = module, .sas_token = token};
    struct hub_identity id;
    if (auth_check(h, &cr, &id, &err) < 0) {
        refuse_auth(c, device, module, "not_authenticated", err.msg);
        cbs_answer(c, rq, 401, err.msg);
        /* Not authenticated: it goes soon (the SDK closes itself on a 401), not at once, so that
         * the answer is read before the socket closes. */
        if (c->state == ACONN_NEW) {
            c->refused = true;
            int64_t soon = ltime_mono_ms() + 1000;
            c->auth_deadline_ms = MIN(c->auth_deadline_ms, soon);
            arm_timer(c);
        }
        return;
    }
    if (c->has_id) {
        bool same = strcmp(id.address, c->id.address) == 0;
        hub_identity_clear(&id);
        if (!same) {
            refuse_auth(c, NULL, NULL, NULL, "a connection authenticates one identity");
            cbs_answer(c, rq, 401, "this connection is authenticated as another identity");
            return;
        }
        cbs_answer(c, rq, 200, "OK"); /* a renewed token */
        return;
    }
    become(c, &id);
    cbs_answer(c, rq, 200, "OK");
}

/* A client certificate and no put-token: the first link's address says who it claims to be. */
static bool try_x509(struct aconn *c, const struct amqp_addr *a)
{
    SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
    X509 *cert = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    if (!cert)
        return false;
    _cleanup_free_ char *device = lstr_ndup(a->device.ptr, a->device.len);
    _cleanup_free_ char *module = lstr_ndup(a->module.ptr, a->module.len);
    if (!device || !module)
        return false;
    struct hub_credentials cr = {.device_id = device,
                                 .module_id = module,
                                 .cert = cert,
                                 .chain = SSL_get_peer_cert_chain(ssl)};
    struct hub_identity id;
    struct lerr err = {0};
    if (auth_check(c->hub, &cr, &id, &err) < 0) {
        refuse_auth(c, device, module, "not_authenticated", err.msg);
        return false;
    }
    become(c, &id);
    return true;
}

/* ------------------------------------------------------------------ links */

static bool span_eq_ci(struct mqtt_str a, const char *b)
{
    return b && a.len == strlen(b) && strncasecmp(a.ptr, b, a.len) == 0;
}

static void link_refuse(pn_link_t *l, const char *name, const char *why)
{
    pn_link_open(l);
    pn_condition_format(pn_link_condition(l), name, "%s", why);
    pn_link_close(l);
}

/* The input deliveries on l the client did not settle are delivered again. */
static void link_drop_inflight(struct aconn *c, pn_link_t *l)
{
    for (pn_delivery_t *d = pn_unsettled_head(l); d; d = pn_unsettled_next(d)) {
        struct hub_delivery *hd = pn_delivery_get_context(d);
        if (!hd)
            continue;
        pn_delivery_set_context(d, NULL);
        c->n_inflight--;
        input_delivery_done(c->hub, hd, false);
        free(hd);
    }
}

static void link_gone(struct aconn *c, pn_link_t *l)
{
    enum alink_role role = role_of(l);
    pn_link_t **slot = role == ALINK_CBS_OUT       ? &c->cbs_out
                       : role == ALINK_INPUTS_OUT  ? &c->inputs_out
                       : role == ALINK_TWIN_OUT    ? &c->twin_out
                       : role == ALINK_METHODS_OUT ? &c->methods_out
                       : role == ALINK_C2D_OUT     ? &c->c2d_out
                                                   : NULL;
    if (slot && *slot == l)
        *slot = NULL;
    if (role == ALINK_INPUTS_OUT || role == ALINK_C2D_OUT)
        link_drop_inflight(c, l);
    if (role == ALINK_EVENTS_IN) { /* no acknowledgement can reach it now */
        for (size_t i = 0; i < c->n_acks;) {
            if (pn_delivery_link(c->acks[i].d) == l) {
                memmove(&c->acks[i], &c->acks[i + 1], (c->n_acks - i - 1) * sizeof(c->acks[0]));
                c->n_acks--;
            } else {
                i++;
            }
        }
    }
    pn_link_set_context(l, (void *)(uintptr_t)ALINK_NONE);
}

static void link_open(struct aconn *c, pn_link_t *l)
{
    struct hub *h = c->hub;
    bool out = pn_link_is_sender(l); /* the hub sends, the client receives */
    pn_terminus_copy(pn_link_source(l), pn_link_remote_source(l));
    pn_terminus_copy(pn_link_target(l), pn_link_remote_target(l));
    if (++c->n_links > AMQP_MAX_LINKS) {
        pn_condition_format(pn_connection_condition(c->drv.connection),
                            "amqp:resource-limit-exceeded", "more than %d links", AMQP_MAX_LINKS);
        conn_close(c, "too many links");
        return;
    }
    const char *addr =
        pn_terminus_get_address(out ? pn_link_remote_source(l) : pn_link_remote_target(l));
    struct amqp_addr a;
    amqp_addr_parse(addr, addr ? strlen(addr) : 0, &a);
    if (a.kind == AMQP_ADDR_UNKNOWN) {
        h->n.unauthorized++;
        hub_refused(h, HUB_REFUSAL_SUBSCRIBE, NULL, "%s: AMQP link to \"%.120s\" refused", who(c),
                    addr ? addr : "(none)");
        link_refuse(l, "amqp:not-found", "no such address");
        return;
    }
    if (a.kind == AMQP_ADDR_CBS) {
        pn_link_set_context(l, (void *)(uintptr_t)(out ? ALINK_CBS_OUT : ALINK_CBS_IN));
        if (out)
            c->cbs_out = l;
        pn_link_open(l);
        if (!out)
            pn_link_flow(l, 8);
        return;
    }
    if (c->state == ACONN_NEW && !try_x509(c, &a)) {
        link_refuse(l, "amqp:unauthorized-access", "put a token on $cbs first");
        return;
    }
    if (c->state != ACONN_ACTIVE)
        return;
    bool device = c->id.kind == HUB_IDENTITY_DEVICE;
    if (!span_eq_ci(a.device, c->id.device_id) ||
        (device ? a.module.len != 0 : !span_eq_ci(a.module, c->id.module_id))) {
        h->n.unauthorized++;
        hub_refused(h, HUB_REFUSAL_SUBSCRIBE, c->id.address,
                    "%s: AMQP link to \"%.120s\" refused: not its own address", c->id.address,
                    addr);
        link_refuse(l, "amqp:unauthorized-access", "not this connection's identity");
        return;
    }
    enum alink_role role = ALINK_NONE;
    pn_link_t **slot = NULL;
    switch (a.kind) {
    case AMQP_ADDR_EVENTS:
        if (out && device) {
            link_refuse(l, "amqp:not-found", "a device has no inputs");
            return;
        }
        if (out && c->id.kind == HUB_IDENTITY_CHILD_MODULE) {
            /* routes deliver to this device's modules only (docs/nested.md) */
            link_refuse(l, "amqp:not-found", "a child edge device's module has no inputs here");
            return;
        }
        role = out ? ALINK_INPUTS_OUT : ALINK_EVENTS_IN;
        slot = out ? &c->inputs_out : NULL;
        break;
    case AMQP_ADDR_DEVICEBOUND:
        if (!out) {
            link_refuse(l, "amqp:not-allowed", "cloud-to-device messages come from the hub");
            return;
        }
        role = ALINK_C2D_OUT;
        slot = &c->c2d_out;
        break;
    case AMQP_ADDR_TWIN:
        role = out ? ALINK_TWIN_OUT : ALINK_TWIN_IN;
        slot = out ? &c->twin_out : NULL;
        break;
    case AMQP_ADDR_METHODS:
        role = out ? ALINK_METHODS_OUT : ALINK_METHODS_IN;
        slot = out ? &c->methods_out : NULL;
        break;
    default:
        link_refuse(l, "amqp:not-found", "no such address");
        return;
    }
    if (slot && *slot && *slot != l) {
        /* A second link for the same thing replaces the first. */
        pn_link_t *old = *slot;
        link_gone(c, old);
        pn_link_close(old);
    }
    if (slot)
        *slot = l;
    pn_link_set_context(l, (void *)(uintptr_t)role);
    if (!out)
        pn_link_set_max_message_size(l, h->max_packet);
    pn_link_open(l);
    if (!out)
        pn_link_flow(l, AMQP_LINK_CREDIT);
    endpoint_kick(h, NULL);
}

/* ------------------------------------------------------------------ what clients send */

static void settle(pn_delivery_t *d, uint64_t outcome, const char *cond, const char *why)
{
    if (cond)
        pn_condition_format(pn_disposition_condition(pn_delivery_local(d)), cond, "%s", why);
    pn_delivery_update(d, outcome);
    pn_delivery_settle(d);
}

static void on_telemetry(struct aconn *c, pn_link_t *l, pn_delivery_t *d, pn_message_t *msg)
{
    struct hub *h = c->hub;
    struct hub_message m;
    struct lerr err = {0};
    _cleanup_lstrv_ struct lstrv keep = LSTRV_INIT;
    if (amqp_message_to_hub(msg, &m, &keep, &err) < 0) {
        h->n.malformed++;
        hub_refused(h, HUB_REFUSAL_MALFORMED, c->id.address, "%s: AMQP message refused: %s",
                    c->id.address, err.msg);
        settle(d, PN_REJECTED, "amqp:decode-error", err.msg);
        return;
    }
    if (m.body_len > h->cfg.hub.max_packet_size) {
        h->n.oversized++;
        hub_refused(h, HUB_REFUSAL_OVERSIZED, NULL,
                    "%s: message of %zu bytes is over hub.max_packet_size", c->id.address,
                    m.body_len);
        settle(d, PN_REJECTED, "amqp:link:message-size-exceeded", "over hub.max_packet_size");
        return;
    }
    bool at_least_once = !pn_delivery_settled(d);
    uint32_t token = ++c->next_token;
    if (at_least_once) {
        if (c->n_acks == c->cap_acks) {
            size_t cap = c->cap_acks ? c->cap_acks * 2 : 16;
            struct pending_ack *v = realloc(c->acks, cap * sizeof(*v));
            if (!v) {
                settle(d, PN_RELEASED, NULL, NULL);
                return;
            }
            c->acks = v;
            c->cap_acks = cap;
        }
        c->acks[c->n_acks++] = (struct pending_ack){token, d};
    }
    int r = router_publish(h, &c->id, &m, at_least_once, &c->client, token);
    if (!at_least_once) {
        pn_delivery_settle(d);
        return;
    }
    if (r < 0) {
        /* Not stored: drop its pending acknowledgement (it may have been answered already). */
        for (size_t i = 0; i < c->n_acks; i++)
            if (c->acks[i].token == token) {
                memmove(&c->acks[i], &c->acks[i + 1], (c->n_acks - i - 1) * sizeof(c->acks[0]));
                c->n_acks--;
                if (r == -ENOSPC)
                    settle(d, PN_REJECTED, "amqp:resource-limit-exceeded",
                           "the hub's store is full");
                else
                    settle(d, PN_RELEASED, NULL, NULL);
                break;
            }
    }
}

static void on_twin_request(struct aconn *c, pn_delivery_t *d, pn_message_t *msg)
{
    struct hub *h = c->hub;
    char rid[RID_MAX];
    int n = amqp_rid_from_msgid(pn_message_get_correlation_id(msg), rid, sizeof(rid));
    struct amqp_twin_request tr;
    struct mqtt_str body;
    if (n < 0 || amqp_twin_request_parse(msg, &tr) < 0 || amqp_message_body(msg, &body) < 0) {
        h->n.malformed++;
        hub_refused(h, HUB_REFUSAL_MALFORMED, c->id.address,
                    "%s: AMQP twin request without a correlation id, operation or resource",
                    c->id.address);
        settle(d, PN_REJECTED, "amqp:invalid-field", "not a twin request");
        return;
    }
    settle(d, PN_ACCEPTED, NULL, NULL);
    switch (tr.op) {
    case AMQP_TWIN_GET:
    case AMQP_TWIN_PATCH_REPORTED: {
        struct hub_twin_request req = {
            .op = tr.op == AMQP_TWIN_GET ? HUB_TWIN_GET : HUB_TWIN_PATCH_REPORTED,
            .rid = rid,
            .rid_len = (size_t)n,
            .body = body.ptr,
            .body_len = body.len,
        };
        twins_request(h, &c->client, &req);
        break;
    }
    case AMQP_TWIN_SUBSCRIBE_DESIRED:
    case AMQP_TWIN_UNSUBSCRIBE_DESIRED:
        c->wants_desired = tr.op == AMQP_TWIN_SUBSCRIBE_DESIRED;
        amqp_twin_response(&c->client, rid, (size_t)n, 200, -1, NULL);
        break;
    }
}

static void on_method_response(struct aconn *c, pn_delivery_t *d, pn_message_t *msg)
{
    char rid[RID_MAX];
    int status;
    struct mqtt_str body;
    int n = amqp_msgid_string(pn_message_get_correlation_id(msg), rid, sizeof(rid));
    if (n <= 0 || amqp_method_status(msg, &status) < 0 || amqp_message_body(msg, &body) < 0) {
        c->hub->n.malformed++;
        hub_refused(c->hub, HUB_REFUSAL_MALFORMED, c->id.address,
                    "%s: AMQP method answer without a correlation id or IoThub-status",
                    c->id.address);
        settle(d, PN_REJECTED, "amqp:invalid-field", "not a method answer");
        return;
    }
    settle(d, PN_ACCEPTED, NULL, NULL);
    methods_response(c->hub, &c->id, rid, (size_t)n, status, body.ptr, body.len);
}

static void on_incoming(struct aconn *c, pn_link_t *l, pn_delivery_t *d)
{
    struct hub *h = c->hub;
    struct amqp_head *ah = h->amqp;
    if (!pn_delivery_readable(d))
        return;
    if (pn_delivery_aborted(d)) {
        pn_delivery_settle(d);
        return;
    }
    size_t pending = pn_delivery_pending(d);
    if (pending > h->max_packet) {
        h->n.oversized++;
        hub_refused(h, HUB_REFUSAL_OVERSIZED, NULL,
                    "%s: AMQP message larger than hub.max_packet_size; closing", who(c));
        pn_condition_format(pn_connection_condition(c->drv.connection),
                            "amqp:link:message-size-exceeded", "over hub.max_packet_size");
        conn_close(c, NULL);
        return;
    }
    if (pn_delivery_partial(d))
        return; /* the rest comes in later frames (bounded by the session's capacity) */
    lbuf_reset(&ah->rx);
    if (lbuf_reserve(&ah->rx, pending + 1) < 0)
        return;
    ssize_t n = pn_link_recv(l, ah->rx.data, pending);
    pn_link_advance(l);
    if (pn_link_credit(l) < AMQP_LINK_CREDIT / 2)
        pn_link_flow(l, AMQP_LINK_CREDIT - pn_link_credit(l));
    enum alink_role role = role_of(l);
    /* Proton's decoder asserts on an empty buffer: an empty transfer is no message either. */
    if (n <= 0 || pn_message_decode(ah->msg, ah->rx.data, (size_t)n) != 0) {
        h->n.malformed++;
        hub_refused(h, HUB_REFUSAL_MALFORMED, NULL, "%s: an AMQP message that does not decode",
                    who(c));
        settle(d, PN_REJECTED, "amqp:decode-error", "the message does not decode");
        return;
    }
    switch (role) {
    case ALINK_CBS_IN:
        settle(d, PN_ACCEPTED, NULL, NULL);
        on_put_token(c, ah->msg);
        break;
    case ALINK_EVENTS_IN:
        on_telemetry(c, l, d, ah->msg);
        break;
    case ALINK_TWIN_IN:
        on_twin_request(c, d, ah->msg);
        break;
    case ALINK_METHODS_IN:
        on_method_response(c, d, ah->msg);
        break;
    default:
        settle(d, PN_REJECTED, "amqp:not-allowed", "this link takes no messages");
        break;
    }
}

/* The client settled (or answered) what the hub sent. */
static void on_outgoing(struct aconn *c, pn_delivery_t *d)
{
    if (!pn_delivery_updated(d) && !pn_delivery_settled(d))
        return;
    uint64_t state = pn_delivery_remote_state(d);
    if (!pn_delivery_settled(d) && state != PN_ACCEPTED && state != PN_REJECTED &&
        state != PN_RELEASED && state != PN_MODIFIED)
        return;
    struct hub_delivery *hd = pn_delivery_get_context(d);
    pn_delivery_set_context(d, NULL);
    pn_delivery_settle(d);
    if (!hd)
        return;
    c->n_inflight--;
    /* A module's input: accepted, rejected (a message it will never take) and released alike
     * leave the queue: the hub redelivers what a client did not settle when it goes, not one
     * released message while later ones are in flight. A cloud-to-device message (one in flight
     * at a time) as IoT Hub has it: complete (accepted) and reject leave the queue, abandon
     * (released, or modified) delivers it again. */
    bool done = true;
    if (role_of(pn_delivery_link(d)) == ALINK_C2D_OUT &&
        (state == PN_RELEASED || state == PN_MODIFIED))
        done = false;
    struct endpoint *ep = hd->ep;
    input_delivery_done(c->hub, hd, done);
    free(hd);
    if (!done)
        endpoint_kick(c->hub, ep);
}

/* ------------------------------------------------------------------ Proton's events */

static void handle(struct aconn *c, pn_event_t *e)
{
    struct hub *h = c->hub;
    if (c->state == ACONN_CLOSING)
        return;
    switch (pn_event_type(e)) {
    case PN_CONNECTION_REMOTE_OPEN: {
        pn_connection_t *pc = pn_event_connection(e);
        pn_connection_set_container(pc, "ledge-hub");
        pn_connection_open(pc);
        break;
    }
    case PN_SESSION_REMOTE_OPEN: {
        pn_session_t *s = pn_event_session(e);
        if (pn_session_state(s) & PN_LOCAL_UNINIT) {
            pn_session_set_incoming_capacity(s, 2 * h->max_packet + MAX_FRAME);
            pn_session_open(s);
        }
        break;
    }
    case PN_LINK_REMOTE_OPEN: {
        pn_link_t *l = pn_event_link(e);
        if (pn_link_state(l) & PN_LOCAL_UNINIT)
            link_open(c, l);
        break;
    }
    case PN_LINK_REMOTE_CLOSE:
    case PN_LINK_REMOTE_DETACH: {
        pn_link_t *l = pn_event_link(e);
        link_gone(c, l);
        if (!(pn_link_state(l) & PN_LOCAL_CLOSED))
            pn_link_close(l);
        break;
    }
    case PN_SESSION_REMOTE_CLOSE: {
        pn_session_t *s = pn_event_session(e);
        for (pn_link_t *l = pn_link_head(c->drv.connection, 0); l; l = pn_link_next(l, 0))
            if (pn_link_session(l) == s) {
                link_gone(c, l);
                if (!(pn_link_state(l) & PN_LOCAL_CLOSED))
                    pn_link_close(l);
            }
        if (!(pn_session_state(s) & PN_LOCAL_CLOSED))
            pn_session_close(s);
        break;
    }
    case PN_LINK_FLOW: {
        pn_link_t *l = pn_event_link(e);
        if (pn_link_is_sender(l) && role_of(l) == ALINK_INPUTS_OUT && pn_link_credit(l) > 0)
            endpoint_kick(h, NULL);
        break;
    }
    case PN_DELIVERY: {
        pn_delivery_t *d = pn_event_delivery(e);
        pn_link_t *l = pn_delivery_link(d);
        if (pn_link_is_receiver(l))
            on_incoming(c, l, d);
        else
            on_outgoing(c, d);
        break;
    }
    case PN_CONNECTION_REMOTE_CLOSE:
        conn_close(c, "connection closed by the client");
        break;
    case PN_TRANSPORT_ERROR: {
        pn_condition_t *cond = pn_transport_condition(pn_event_transport(e));
        if (c->state != ACONN_CLOSING) {
            h->n.malformed++;
            hub_refused(h, HUB_REFUSAL_MALFORMED, "amqp", "%s: AMQP: %s: %s; closing", who(c),
                        pn_condition_get_name(cond) ? pn_condition_get_name(cond) : "error",
                        pn_condition_get_description(cond) ? pn_condition_get_description(cond)
                                                           : "");
            conn_close(c, NULL);
        }
        break;
    }
    default:
        break;
    }
}

/* What Proton wrote, onto the socket: as it is, or as one binary WebSocket message. */
static void write_out(struct aconn *c, struct evbuffer *out, pn_bytes_t w)
{
    if (c->ws)
        ws_conn_write(c->ws, out, w.start, w.size, NULL, 0);
    else
        evbuffer_add(out, w.start, w.size);
    pn_connection_driver_write_done(&c->drv, w.size);
}

/* Run Proton's events and write what it has to send, until neither is left. */
static void pump(struct aconn *c)
{
    if (c->pumping || !c->bev)
        return;
    c->pumping = true;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    for (;;) {
        pn_event_t *e;
        while (c->state != ACONN_CLOSING && (e = pn_connection_driver_next_event(&c->drv)))
            handle(c, e);
        if (c->state == ACONN_CLOSING)
            break;
        pn_bytes_t w = pn_connection_driver_write_buffer(&c->drv);
        if (w.size) {
            write_out(c, out, w);
            continue;
        }
        if (!pn_connection_driver_has_event(&c->drv))
            break;
    }
    c->pumping = false;
}

/* ------------------------------------------------------------------ I/O and timers */

static void arm_timer(struct aconn *c)
{
    if (c->state == ACONN_CLOSING || c->peer_gone)
        return;
    int64_t now = ltime_mono_ms();
    int64_t next = pn_transport_tick(c->drv.transport, now);
    if (c->state == ACONN_NEW && (next == 0 || c->auth_deadline_ms < next))
        next = c->auth_deadline_ms;
    if (next == 0) {
        evtimer_del(c->timer);
        return;
    }
    int64_t ms = MAX(next - now, (int64_t)1);
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

/* The bytes that came in (decoded from WebSocket frames first), into Proton. */
static void feed_bytes(struct aconn *c, struct evbuffer *in);

static void feed(struct aconn *c)
{
    struct evbuffer *raw = bufferevent_get_input(c->bev);
    if (!c->ws) {
        feed_bytes(c, raw);
        return;
    }
    /* Frames → AMQP bytes, a few frames' worth ahead, into Proton; again while the frames make
     * progress. */
    for (;;) {
        size_t before = evbuffer_get_length(raw);
        int r = ws_conn_read(c->ws, raw, c->wsin, 4 * MAX_FRAME, bufferevent_get_output(c->bev));
        feed_bytes(c, c->wsin);
        if (c->state == ACONN_CLOSING)
            return;
        if (r != 0) {
            if (r < 0 || !lstr_startswith(ws_conn_why(c->ws), "closed by the peer")) {
                c->hub->n.malformed++;
                hub_refused(c->hub, HUB_REFUSAL_MALFORMED, "websocket",
                            "%s: WebSocket: %s; closing", who(c),
                            r < 0 ? strerror(-r) : ws_conn_why(c->ws));
            }
            conn_close(c, "WebSocket closed");
            return;
        }
        size_t after = evbuffer_get_length(raw);
        if (after == 0 || after == before)
            break;
    }
}

static void feed_bytes(struct aconn *c, struct evbuffer *in)
{
    while (c->state != ACONN_CLOSING && evbuffer_get_length(in) > 0) {
        pn_rwbytes_t rb = pn_connection_driver_read_buffer(&c->drv);
        if (!rb.size)
            break;
        int n = evbuffer_remove(in, rb.start, rb.size);
        if (n <= 0)
            break;
        pn_connection_driver_read_done(&c->drv, (size_t)n);
        pump(c);
    }
}

static void readcb(struct bufferevent *bev, void *arg)
{
    struct aconn *c = arg;
    if (c->state == ACONN_CLOSING) {
        /* What comes while the goodbye drains is dropped (a socket closed with unread input
         * resets, and the peer could lose the last answers). */
        struct evbuffer *in = bufferevent_get_input(bev);
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    feed(c);
    if (c->state == ACONN_CLOSING)
        return;
    if (output_pending(c) > OUTPUT_HIGH)
        bufferevent_disable(bev, EV_READ);
    arm_timer(c);
}

static void writecb(struct bufferevent *bev, void *arg)
{
    struct aconn *c = arg;
    if (c->state == ACONN_CLOSING) {
        if (output_pending(c) == 0)
            event_active(c->timer, EV_TIMEOUT, 0);
        return;
    }
    if (output_pending(c) < OUTPUT_LOW) {
        bufferevent_enable(bev, EV_READ);
        if (c->state == ACONN_ACTIVE)
            endpoint_kick(c->hub, NULL);
    }
}

static void eventcb(struct bufferevent *bev, short what, void *arg)
{
    struct aconn *c = arg;
    if (what & BEV_EVENT_CONNECTED)
        return;
    if (c->state == ACONN_CLOSING) {
        event_active(c->timer, EV_TIMEOUT, 0);
        return;
    }
    /* As the MQTT head: finish on the next pass, after the read callback saw the last bytes. */
    c->peer_gone = true;
    struct timeval now = {0, 0};
    evtimer_add(c->timer, &now);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct aconn *c = arg;
    if (c->state == ACONN_CLOSING) {
        conn_free(c);
        return;
    }
    if (c->peer_gone) {
        feed(c);
        if (c->state != ACONN_CLOSING) {
            pn_connection_driver_read_close(&c->drv);
            conn_close(c, "connection closed by peer");
        }
        event_active(c->timer, EV_TIMEOUT, 0);
        return;
    }
    if (c->state == ACONN_NEW && ltime_mono_ms() >= c->auth_deadline_ms) {
        if (!c->refused)
            log_info(COMP, "AMQP client: no authentication in time; closing");
        conn_close(c, NULL);
        return;
    }
    pump(c);
    if (pn_connection_driver_finished(&c->drv) && c->state != ACONN_CLOSING) {
        conn_close(c, "AMQP idle timeout");
        return;
    }
    arm_timer(c);
}

/* ------------------------------------------------------------------ lifecycle */

static void conn_close(struct aconn *c, const char *why)
{
    if (c->state == ACONN_CLOSING)
        return;
    struct hub *h = c->hub;
    if (why && c->has_id)
        log_info(COMP, "%s (AMQP): %s", c->id.address, why);
    bool was_active = c->state == ACONN_ACTIVE;
    c->state = ACONN_CLOSING;
    h->amqp->n_closing++;
    if (was_active)
        clients_detach(h, &c->client);
    for (pn_link_t *l = pn_link_head(c->drv.connection, 0); l; l = pn_link_next(l, 0))
        if (role_of(l) == ALINK_INPUTS_OUT || role_of(l) == ALINK_C2D_OUT)
            link_drop_inflight(c, l);
    c->n_acks = 0;
    if (was_active) {
        commit_client_gone(h, &c->client);
        twins_client_gone(h, &c->client);
    }
    c->inputs_out = c->twin_out = c->methods_out = c->cbs_out = c->c2d_out = NULL;
    /* Say goodbye: Proton writes its close frame (and a SASL outcome if due). */
    pn_connection_close(c->drv.connection);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    for (;;) {
        pn_event_t *e;
        while ((e = pn_connection_driver_next_event(&c->drv)))
            ; /* nothing more reaches the hub */
        pn_bytes_t w = pn_connection_driver_write_buffer(&c->drv);
        if (!w.size)
            break;
        write_out(c, out, w);
    }
    if (c->ws)
        ws_conn_close(c->ws, out, 1000);
    bufferevent_enable(c->bev, EV_READ); /* drained and dropped (readcb) */
    if (output_pending(c) == 0) {
        event_active(c->timer, EV_TIMEOUT, 0);
    } else {
        struct timeval grace = {5, 0};
        evtimer_add(c->timer, &grace);
    }
}

static void conn_free(struct aconn *c)
{
    struct amqp_head *ah = c->hub->amqp;
    if (c->state != ACONN_CLOSING)
        conn_close(c, NULL);
    llist_remove(&c->node);
    ah->n_conns--;
    ah->n_closing--;
    pn_connection_driver_destroy(&c->drv);
    bufferevent_free(c->bev);
    ws_conn_free(c->ws);
    if (c->wsin)
        evbuffer_free(c->wsin);
    event_free(c->timer);
    hub_identity_clear(&c->id);
    free(c->acks);
    free(c);
}

static bool make_room(struct hub *h)
{
    struct amqp_head *ah = h->amqp;
    if (ah->n_conns - ah->n_closing < (size_t)h->cfg.hub.max_connections)
        return true;
    struct aconn *oldest = NULL, *x;
    llist_foreach_reverse (x, &ah->conns, node)
        if (x->state == ACONN_NEW) {
            oldest = x;
            break;
        }
    if (!oldest) {
        h->n.connections_refused++;
        hub_refused(h, HUB_REFUSAL_CONNECTIONS, "refused",
                    "AMQP connection refused: hub.max_connections (%d) reached",
                    h->cfg.hub.max_connections);
        return false;
    }
    h->n.connections_evicted++;
    hub_refused(h, HUB_REFUSAL_CONNECTIONS, "evicted",
                "hub.max_connections (%d) reached: closing the oldest AMQP connection that has "
                "not authenticated",
                h->cfg.hub.max_connections);
    conn_close(oldest, NULL);
    return true;
}

void amqp_head_accept(struct hub *h, int fd, bool tls)
{
    struct amqp_head *ah = h->amqp;
    if (!ah || !make_room(h)) {
        evutil_closesocket(fd);
        return;
    }
    struct aconn *c = calloc(1, sizeof(*c));
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    c->hub = h;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (tls) {
        SSL *ssl = SSL_new(listener_tls(h));
        c->bev = ssl ? bufferevent_openssl_socket_new(h->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                      BEV_OPT_CLOSE_ON_FREE)
                     : NULL;
        if (ssl && !c->bev)
            SSL_free(ssl);
    } else {
        c->bev = bufferevent_socket_new(h->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!c->bev) {
        evutil_closesocket(fd);
        free(c);
        return;
    }
    conn_start(h, c);
}

void amqp_head_accept_ws(struct hub *h, struct bufferevent *bev, struct ws_conn *ws)
{
    struct aconn *c = h->amqp && make_room(h) ? calloc(1, sizeof(*c)) : NULL;
    if (!c || !(c->wsin = evbuffer_new())) {
        free(c);
        ws_conn_free(ws);
        bufferevent_free(bev);
        return;
    }
    c->hub = h;
    c->bev = bev;
    c->ws = ws;
    conn_start(h, c);
}

/* c has its bev (and framing): Proton's engine as a server, the deadline, the head's list. */
static void conn_start(struct hub *h, struct aconn *c)
{
    struct amqp_head *ah = h->amqp;
    c->timer = evtimer_new(h->base, timer_cb, c);
    if (!c->timer || pn_connection_driver_init(&c->drv, NULL, NULL) != 0) {
        bufferevent_free(c->bev);
        if (c->timer)
            event_free(c->timer);
        ws_conn_free(c->ws);
        if (c->wsin)
            evbuffer_free(c->wsin);
        free(c);
        return;
    }
    pn_transport_t *t = c->drv.transport;
    pn_transport_set_server(t);
    /* SASL ANONYMOUS, or none at all (the Node SDK skips SASL): the CBS put-token or the TLS
     * client certificate is what authenticates. */
    pn_sasl_allowed_mechs(pn_sasl(t), "ANONYMOUS");
    pn_transport_require_auth(t, false);
    pn_transport_set_max_frame(t, MAX_FRAME);
    pn_transport_set_channel_max(t, 15);
    pn_transport_set_idle_timeout(t, 240000);
    c->auth_deadline_ms = ltime_mono_ms() + AMQP_AUTH_TIMEOUT_MS;
    c->state = ACONN_NEW;
    llist_add_head(&ah->conns, &c->node);
    ah->n_conns++;
    h->n.connections_total++;
    bufferevent_setcb(c->bev, readcb, writecb, eventcb, c);
    bufferevent_setwatermark(c->bev, EV_READ, 0, 4 * MAX_FRAME);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    pump(c);
    arm_timer(c);
    /* Frames that came right behind the upgrade request. */
    if (c->ws && evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        readcb(c->bev, c);
}

static int amqp_start(struct hub *h, struct lerr *err)
{
    struct amqp_head *ah = calloc(1, sizeof(*ah));
    if (!ah)
        return lerr_set(err, -ENOMEM, "AMQP head: out of memory");
    h->amqp = ah;
    llist_init(&ah->conns);
    ah->rx = (struct lbuf)LBUF_INIT;
    ah->msg = pn_message();
    if (!ah->msg)
        return lerr_set(err, -ENOMEM, "AMQP head: out of memory");
    if (h->cfg.hub.amqp_port)
        return listener_listen(h, h->cfg.hub.bind, h->cfg.hub.amqp_port, true, amqp_head_accept,
                               err);
    return 0;
}

static void amqp_stop(struct hub *h)
{
    struct amqp_head *ah = h->amqp;
    if (!ah)
        return;
    struct aconn *c;
    while ((c = llist_first(&ah->conns, struct aconn, node)))
        conn_free(c);
    if (ah->msg)
        pn_message_free(ah->msg);
    free(ah->encoded.start);
    lbuf_free(&ah->rx);
    free(ah);
    h->amqp = NULL;
}

static size_t amqp_connections(struct hub *h)
{
    struct amqp_head *ah = h->amqp;
    return ah ? ah->n_conns - ah->n_closing : 0;
}

static json_t *amqp_sessions_status(struct hub *h, size_t *ret_connected, size_t *ret_sessions)
{
    json_t *a = json_array();
    size_t n = 0;
    struct aconn *c;
    if (h->amqp)
        llist_foreach (c, &h->amqp->conns, node) {
            if (c->state != ACONN_ACTIVE)
                continue;
            n++;
            /* named as MQTT's client ids are: <device>/<module>, or a device's id */
            char cid[300];
            if (c->id.module_id)
                snprintf(cid, sizeof(cid), "%s/%s", c->id.device_id, c->id.module_id);
            else
                snprintf(cid, sizeof(cid), "%s", c->id.device_id);
            json_array_append_new(a, json_pack("{s:s, s:b, s:b, s:s}", "clientId", cid, "connected",
                                               true, "persistent", false, "transport", "amqp"));
        }
    *ret_connected = n;
    *ret_sessions = n;
    return a;
}

const struct hub_head_ops amqp_head_ops = {
    .name = "amqp",
    .start = amqp_start,
    .stop = amqp_stop,
    .connections = amqp_connections,
    .sessions_status = amqp_sessions_status,
    .listens = amqp_listens,
    .ready = amqp_ready,
    .deliver = amqp_deliver,
    .twin_response = amqp_twin_response,
    .desired = amqp_desired,
    .method_call = amqp_method_call,
    .acked = amqp_acked,
    .close = amqp_close,
};
