/* cloud.c — per-identity sessions upstream (cloud.h): one per connected module and one per
 * connected leaf device (a SAS leaf with its own key; an X.509 leaf, whose key the edge does not
 * hold, authenticated on behalf of the edge with $edgeHub's key, as edgeHub does). A session opens
 * when its identity's client attaches (clients.c tells us through h->module_presence) and closes
 * CLOUD_GRACE_MS after its last client went, so a reconnecting client keeps its session. Each
 * session is the module client library's (src/modclient; a device identity for a leaf): connect,
 * tokens, back-off, twin GET/PATCH, desired notifications, method calls answered later through
 * methods.c, and a leaf's cloud-to-device messages: stored in its C2D endpoint's queue
 * (endpoint_c2d(), delivered by input.c) and acknowledged to IoT Hub only once the group commit
 * made them durable (commit.c, through the session's own hub_client). */
#include "cloud.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"
#include "base/json.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "clients.h"
#include "commit.h"
#include "identity/keys.h"
#include "log/log.h"
#include "message.h"
#include "methods.h"
#include "modclient/modclient.h"
#include "twin.h"

#define COMP "cloud"
#define CLOUD_GRACE_MS 5000
#define CLOUD_METHOD_TIMEOUT_S 300 /* IoT Hub's own timeout ends the call first */
#define CLOUD_MAX_CALLS 64         /* method calls in progress per module */

struct cloud_mod;

struct cloud_call {
    struct cloud_mod *m;
    char rid[65];
    void *handle; /* methods.c's */
    struct cloud_call *next;
};

struct cloud_mod {
    struct cloud *cl;
    char *module; /* the identity's address: a module id, "devices/<d>" or "devices/<d>/modules/<m>"
                   */
    char *device_id; /* a leaf device's id (as the runtime file spells it); NULL for a module */
    /* An X.509 leaf: its session's tokens are the edge's $edgeHub's, on behalf of it (IoT Hub
     * takes them when the leaf's parent is this edge device); a SAS leaf signs with its own. */
    bool obo;
    /* A child edge device's module identity (nested edge, docs/nested.md): its device (as the
     * runtime file spells it) and module id; NULL for this device's modules and leaf devices.
     * Counted with the modules' sessions. */
    char *child_device, *child_module;
    char *generation_id;
    int64_t keys_changed_ms;
    struct modclient *mc;
    struct hub_client acker; /* commit.c acknowledges C2D messages to IoT Hub through it */
    bool connected;
    bool failed; /* a connection attempt failed or a connection ended since it opened */
    /* Its telemetry goes as the edge device's for now: an attempt failed while the device link
     * was up (refused, or unreachable where the link got through). Cleared when it connects and
     * when the device link comes up again (it then tries at once). docs/upstream.md. */
    bool unusable;
    bool synced; /* the cloud's twin was read once: the identity's twin GETs need not wait */
    char last_error[200];
    json_t *cloud_reported; /* what the cloud holds, the base of the next patch */
    bool reported_known;
    bool busy;         /* a twin GET or PATCH in flight */
    json_t *in_flight; /* the reported document that PATCH makes */
    struct event *check_ev;
    struct cloud_call *calls;
    size_t n_calls;
    struct cloud_mod *next;
};

struct cloud {
    struct hub *h;
    struct identity_device *dev; /* NULL: no SAS device identity, no module sessions */
    struct cloud_mod *mods;
    size_t n_mods, n_devices;
    uint64_t refused;         /* sessions not opened at upstream.max_module_sessions */
    uint64_t devices_refused; /* at upstream.max_device_sessions */
    uint64_t c2d_received, c2d_stored;
    bool link_up; /* the hub's device link is connected (upstream.c: cloud_upstream_link) */
};

static struct cloud_mod *find(struct cloud *cl, const char *module)
{
    for (struct cloud_mod *m = cl->mods; m; m = m->next)
        if (strcmp(m->module, module) == 0)
            return m;
    return NULL;
}

static void mod_free(struct cloud_mod *m)
{
    struct hub *h = m->cl->h;
    commit_client_gone(h, &m->acker);
    twins_cloud_synced(h, m->module); /* GETs that waited for this session: the local twin */
    while (m->calls) {
        struct cloud_call *c = m->calls;
        m->calls = c->next;
        methods_cancel(h, c->handle);
        free(c);
    }
    modclient_free(m->mc);
    if (m->check_ev)
        event_free(m->check_ev);
    json_decref(m->cloud_reported);
    json_decref(m->in_flight);
    free(m->module);
    free(m->device_id);
    free(m->child_device);
    free(m->child_module);
    free(m->generation_id);
    free(m);
}

static void mod_remove(struct cloud_mod *m)
{
    struct cloud *cl = m->cl;
    for (struct cloud_mod **pp = &cl->mods; *pp; pp = &(*pp)->next)
        if (*pp == m) {
            *pp = m->next;
            if (m->device_id)
                cl->n_devices--;
            else
                cl->n_mods--;
            break;
        }
    log_info(COMP, "%s: %s gone: its upstream session closes", m->module,
             m->device_id ? "device" : "module");
    struct hub *h = cl->h;
    mod_free(m);
    endpoint_kick(h, NULL); /* telemetry waiting for it goes as the edge device's */
}

/* ---- reported: local → cloud */

static void got_twin(void *ud, int status, const json_t *twin);

static void report_done(void *ud, int status, int64_t version)
{
    struct cloud_mod *m = ud;
    m->busy = false;
    if (status == 204) {
        json_decref(m->cloud_reported);
        m->cloud_reported = m->in_flight;
        m->in_flight = NULL;
        return;
    }
    json_decref(m->in_flight);
    m->in_flight = NULL;
    m->reported_known = false;
    if (status != -ECANCELED)
        log_warn(COMP, "%s: the cloud did not take the reported properties (%d)", m->module,
                 status);
}

/* Send what the cloud does not have yet of the module's reported properties. */
static void sync_reported(struct cloud_mod *m)
{
    if (!m->mc || !m->connected || m->busy)
        return;
    if (!m->reported_known) {
        if (modclient_twin_get(m->mc, got_twin, m) == 0)
            m->busy = true;
        return;
    }
    json_t *twin = twins_get(m->cl->h, m->module);
    json_t *local = twin ? json_deep_copy(json_object_get(twin, "reported")) : NULL;
    json_decref(twin);
    if (!local)
        return;
    json_object_del(local, "$version");
    json_t *patch = json_object();
    /* keys: top level is enough for IoT Hub's merge; nested objects are diffed the same way */
    const char *k;
    json_t *v;
    json_object_foreach (local, k, v) {
        json_t *o = json_object_get(m->cloud_reported, k);
        if (!o || !json_equal(o, v))
            json_object_set(patch, k, v);
    }
    json_object_foreach (m->cloud_reported, k, v)
        if (!json_object_get(local, k))
            json_object_set_new(patch, k, json_null());
    if (json_object_size(patch) > 0 && modclient_twin_report(m->mc, patch, report_done, m) == 0) {
        m->busy = true;
        m->in_flight = local;
        local = NULL;
    }
    json_decref(patch);
    json_decref(local);
}

static void got_twin(void *ud, int status, const json_t *twin)
{
    struct cloud_mod *m = ud;
    m->busy = false;
    if (status != 200) {
        if (status != -ECANCELED)
            log_warn(COMP, "%s: cannot read the module's twin in the cloud (%d)", m->module,
                     status);
        return;
    }
    json_decref(m->cloud_reported);
    m->cloud_reported = json_deep_copy(json_object_get(twin, "reported"));
    if (!json_is_object(m->cloud_reported)) {
        json_decref(m->cloud_reported);
        m->cloud_reported = json_object();
    }
    json_object_del(m->cloud_reported, "$version");
    m->reported_known = true;
    sync_reported(m);
}

/* ---- desired: cloud → local */

static void on_desired(void *ud, const json_t *desired, int64_t version, bool complete)
{
    struct cloud_mod *m = ud;
    int r = twins_cloud_desired(m->cl->h, m->module, desired, version, complete);
    if (r < 0)
        log_warn(COMP, "%s: the cloud's desired properties (version %lld) not taken: %s", m->module,
                 (long long)version, strerror(-r));
    else
        log_debug(COMP, "%s: desired properties version %lld from the cloud", m->module,
                  (long long)version);
    if (complete && !m->synced) {
        m->synced = true;
        twins_cloud_synced(m->cl->h, m->module); /* GETs that waited get the cloud's desired */
    }
}

/* hub.twin_syncing: a GET of address waits while its session, not failed yet, has not read the
 * cloud's twin once. Offline (a failed session) and without a session it is answered at once. */
static bool twin_syncing(struct hub *h, const char *address)
{
    struct cloud_mod *m = h->cloud ? find(h->cloud, address) : NULL;
    return m && m->mc && !m->failed && !m->synced;
}

/* ---- methods: cloud → module → cloud */

static void call_done(void *ud, int status, json_t *reply)
{
    struct cloud_call *c = ud;
    struct cloud_mod *m = c->m;
    for (struct cloud_call **pp = &m->calls; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            m->n_calls--;
            break;
        }
    /* the module's answer is {"status", "payload"} (methods.c); the hub's own ones (504 when
     * it did not answer) are {"message"} */
    json_t *st = json_object_get(reply, "status");
    if (status == 200 && json_is_integer(st)) {
        status = (int)json_integer_value(st);
        reply = json_object_get(reply, "payload");
    }
    if (m->mc && modclient_method_respond(m->mc, c->rid, status, reply) < 0)
        log_debug(COMP, "%s: the cloud's method call %s ended before its answer", m->module,
                  c->rid);
    free(c); /* reply is methods.c's */
}

static void on_method(void *ud, const char *method, const json_t *payload, const char *rid)
{
    struct cloud_mod *m = ud;
    struct hub *h = m->cl->h;
    if (m->n_calls >= CLOUD_MAX_CALLS) {
        json_t *e = json_pack("{s:s}", "message", "too many method calls in progress");
        modclient_method_respond(m->mc, rid, 503, e);
        json_decref(e);
        return;
    }
    struct cloud_call *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->m = m;
    lstr_copy(c->rid, sizeof(c->rid), rid);
    struct lerr err = {0};
    c->next = m->calls;
    m->calls = c;
    m->n_calls++;
    if (methods_invoke(h, m->module, method, payload, CLOUD_METHOD_TIMEOUT_S, 0, call_done, c,
                       &c->handle, &err) < 0) {
        for (struct cloud_call **pp = &m->calls; *pp; pp = &(*pp)->next)
            if (*pp == c) {
                *pp = c->next;
                m->n_calls--;
                break;
            }
        json_t *e = json_pack("{s:s}", "message", err.msg[0] ? err.msg : "cannot call the module");
        /* IoT Hub's answers: 404 for a module that is not there to take it */
        int status = err.code == -ENOENT   ? 404
                     : err.code == -EBUSY  ? 503
                     : err.code == -EINVAL ? 400
                                           : 500;
        modclient_method_respond(m->mc, rid, status, e);
        json_decref(e);
        free(c);
    }
}

static void on_connection(void *ud, bool connected, const char *why)
{
    struct cloud_mod *m = ud;
    bool was = m->connected;
    m->connected = connected;
    if (connected) {
        m->last_error[0] = 0;
        m->reported_known = false;
        m->busy = false;
        m->unusable = false;
        log_info(COMP, "%s: connected upstream as the %s%s", m->module,
                 m->device_id ? "device" : "module", m->obo ? ", on behalf of this edge" : "");
        sync_reported(m);
        endpoint_kick(m->cl->h, NULL); /* its telemetry waiting in $upstream */
        return;
    }
    m->failed = true;
    twins_cloud_synced(m->cl->h, m->module); /* GETs that waited: the local twin */
    /* A connection lost waits for the next attempt (1 s); an attempt that failed while the
     * device link is up will not come soon: what waits for it goes as the edge device's. */
    if (!was && m->cl->link_up && !m->unusable) {
        m->unusable = true;
        endpoint_kick(m->cl->h, NULL);
    }
    snprintf(m->last_error, sizeof(m->last_error), "%s%s", why ? why : "disconnected",
             m->obo && why && strstr(why, "not authorized")
                 ? " (on behalf of this edge: IoT Hub takes it only for a device whose parent is "
                   "this edge device)"
                 : "");
    if (was)
        log_warn(COMP, "%s: %s", m->module, m->last_error);
}

/* ---- cloud-to-device messages: IoT Hub → the store → the leaf device */

/* commit.c: the C2D message with this token is durable; IoT Hub may forget it. */
static void acker_acked(struct hub_client *c, uint32_t token)
{
    struct cloud_mod *m = llist_entry(c, struct cloud_mod, acker);
    if (m->mc && modclient_c2d_ack(m->mc, token) < 0)
        log_debug(COMP, "%s: the connection a C2D message came on is gone: IoT Hub sends it again",
                  m->module);
}

static const struct hub_head_ops acker_ops = {
    .name = "cloud",
    .acked = acker_acked,
};

static void arena_str(struct lbuf *arena, struct mqtt_str s, size_t *offs, int *r)
{
    *offs = arena->len;
    if (*r == 0 && (*r = lbuf_append(arena, s.ptr, s.len)) == 0)
        *r = lbuf_putc(arena, 0);
}

int cloud_c2d_message(const struct iothub_props *props, const void *body, size_t len,
                      int64_t now_ms, struct lbuf *out, int64_t *ret_expiry_ms)
{
    /* The message's strings are copied NUL-terminated into one arena; pointers into it are
     * taken once it stops growing. */
    struct lbuf arena = LBUF_INIT;
    size_t sys_off[IOTHUB_PROP_COUNT], key_off[IOTHUB_APP_PROPS_MAX], val_off[IOTHUB_APP_PROPS_MAX];
    int r = 0;
    for (int i = 0; i < IOTHUB_PROP_COUNT; i++)
        if (props->sys[i].ptr)
            arena_str(&arena, props->sys[i], &sys_off[i], &r);
    size_t n_app = MIN(props->n_app, (size_t)HUB_MESSAGE_MAX_APP);
    for (size_t i = 0; i < n_app; i++) {
        arena_str(&arena, props->app[i].key, &key_off[i], &r);
        arena_str(&arena, props->app[i].value, &val_off[i], &r);
    }
    struct hub_message m = {
        .source = "/messages/devicebound",
        .body = body,
        .body_len = len,
        .enqueued_ms = now_ms,
    };
    int64_t expiry = 0;
    if (r == 0) {
        for (int i = 0; i < IOTHUB_PROP_COUNT; i++)
            if (props->sys[i].ptr)
                m.sys[i] = arena.data + sys_off[i];
        for (size_t i = 0; i < n_app; i++) {
            m.app_key[i] = arena.data + key_off[i];
            m.app_value[i] = arena.data + val_off[i];
        }
        m.n_app = n_app;
        /* IoT Hub's expiry ($.exp, ISO 8601) is the message's time to live in the store too; one
         * that cannot be read is kept as if it had none (IoT Hub enforces it on its side). */
        const char *exp = m.sys[IOTHUB_PROP_EXPIRY_TIME_UTC];
        if (exp && ltime_parse_rfc3339(exp, &expiry) < 0)
            expiry = 0;
        r = hub_message_encode(&m, out);
    }
    lbuf_free(&arena);
    if (r == 0)
        *ret_expiry_ms = expiry;
    return r;
}

static void on_c2d(void *ud, const struct modclient_message *msg, uint32_t token)
{
    struct cloud_mod *m = ud;
    struct cloud *cl = m->cl;
    struct hub *h = cl->h;
    cl->c2d_received++;
    int64_t now = ltime_now_ms(), expiry = 0;
    struct lbuf rec = LBUF_INIT;
    struct endpoint *ep = endpoint_c2d(h, m->device_id);
    int r = ep ? cloud_c2d_message(msg->props, msg->body, msg->len, now, &rec, &expiry) : -ENOMEM;
    if (r == 0 && expiry && expiry <= now) {
        /* expired on the way: nothing to keep */
        lbuf_free(&rec);
        modclient_c2d_ack(m->mc, token);
        return;
    }
    if (r == 0)
        r = endpoint_append(h, ep, HUB_NO_PRIORITY, rec.data, rec.len, now, expiry);
    lbuf_free(&rec);
    if (r < 0) {
        /* Not acknowledged: IoT Hub keeps it and sends it again on the next connection. */
        uint64_t skipped = 0;
        if (hub_log_due(h, "cloud-c2d", &skipped))
            log_warn(COMP,
                     "%s: a cloud-to-device message could not be stored: %s (%llu more not "
                     "logged)",
                     m->module, strerror(-r), (unsigned long long)skipped);
        return;
    }
    cl->c2d_stored++;
    commit_dirty(h);
    if (token && commit_ack(h, &m->acker, token) < 0)
        log_warn(COMP, "%s: cannot acknowledge a cloud-to-device message", m->module);
    endpoint_kick(h, ep);
}

/* ---- telemetry: a leaf device's or a module's messages routed to $upstream, under its own
 * identity */

static int identity_send(struct cloud *cl, const char *address, const struct hub_message *msg,
                         void (*done)(void *ud, int result), void *ud)
{
    struct cloud_mod *m = find(cl, address);
    if (!m || !m->mc)
        return 0;
    if (!m->connected)
        return m->unusable ? 0 : -EAGAIN; /* opening, or retrying: wait for it */
    struct iothub_props props;
    hub_message_props(msg, &props);
    int r = modclient_send_event(m->mc, &props, msg->body, msg->body_len, done, ud);
    if (r == -ENOBUFS)
        return -EAGAIN;
    return r < 0 ? 0 : 1;
}

int cloud_device_send(struct hub *h, const char *device_id, const struct hub_message *msg,
                      void (*done)(void *ud, int result), void *ud)
{
    struct cloud *cl = h->cloud;
    char address[300];
    int n = snprintf(address, sizeof(address), HUB_DEVICE_ADDRESS_PREFIX "%s", device_id);
    const struct identity_leaf *l = hub_runtime_leaf(&h->rt, device_id);
    if (!cl || !l || n < 0 || (size_t)n >= sizeof(address))
        return 0;
    /* the runtime file's spelling of the id, as the session's */
    snprintf(address, sizeof(address), HUB_DEVICE_ADDRESS_PREFIX "%s", l->device_id);
    return identity_send(cl, address, msg, done, ud);
}

int cloud_module_send(struct hub *h, const char *module_id, const struct hub_message *msg,
                      void (*done)(void *ud, int result), void *ud)
{
    if (!h->cloud || !module_id ||
        strncmp(module_id, HUB_DEVICE_ADDRESS_PREFIX, strlen(HUB_DEVICE_ADDRESS_PREFIX)) == 0)
        return 0;
    return identity_send(h->cloud, module_id, msg, done, ud);
}

int cloud_child_send(struct hub *h, const char *device_id, const char *module_id,
                     const struct hub_message *msg, void (*done)(void *ud, int result), void *ud)
{
    const struct identity_leaf *l = hub_runtime_leaf(&h->rt, device_id);
    char address[300];
    int n = l ? snprintf(address, sizeof(address),
                         HUB_DEVICE_ADDRESS_PREFIX "%s" HUB_CHILD_MODULES_INFIX "%s", l->device_id,
                         module_id)
              : -1;
    if (!h->cloud || n < 0 || (size_t)n >= sizeof(address))
        return 0;
    return identity_send(h->cloud, address, msg, done, ud);
}

void cloud_upstream_link(struct hub *h, bool up)
{
    struct cloud *cl = h->cloud;
    if (!cl)
        return;
    cl->link_up = up;
    if (!up)
        return;
    /* The endpoint answers again: every session that is not connected tries now instead of at
     * the end of its back-off, and its telemetry waits for that attempt. */
    for (struct cloud_mod *m = cl->mods; m; m = m->next) {
        if (m->connected || !m->mc)
            continue;
        m->unusable = false;
        modclient_reconnect_now(m->mc);
    }
}

/* ---- lifecycle */

static int mod_open(struct cloud *cl, struct cloud_mod *m)
{
    struct hub *h = cl->h;
    struct lbuf b64 = LBUF_INIT;
    int r;
    if (m->device_id && m->obo) {
        /* An X.509 leaf: the edge holds no key of it, so its session is authenticated on behalf
         * of this edge device, with a token for $edgeHub signed with $edgeHub's key (derived
         * from the device key as for every module identity). */
        if (!cl->dev)
            return -EOPNOTSUPP;
        r = identity_cloud_module_key_b64(cl->dev, MODCLIENT_OBO_MODULE, &b64);
    } else if (m->device_id) {
        /* A SAS leaf device logs in upstream with its own key: the one it has in IoT Hub, which
         * `ledge device add --key` registered here. */
        const struct identity_leaf *l = hub_runtime_leaf(&h->rt, m->device_id);
        if (!l || l->auth != IDENTITY_LEAF_SAS || !l->keylen[0])
            return -EOPNOTSUPP;
        r = lcrypto_b64_encode(l->key[0], l->keylen[0], &b64);
    } else if (m->child_device) {
        /* A child edge device's module, relayed upstream as itself: its key derives from the
         * child's primary key, as the child derives it (and the layer above checks it). */
        const struct identity_leaf *l = hub_runtime_leaf(&h->rt, m->child_device);
        uint8_t key[IDENTITY_MODULE_KEY_LEN];
        r = l ? identity_leaf_module_key(l, 0, m->child_module, key) : -EOPNOTSUPP;
        if (r == 0) {
            r = lcrypto_b64_encode(key, sizeof(key), &b64);
            lcrypto_wipe(key, sizeof(key));
        }
    } else {
        r = identity_cloud_module_key_b64(cl->dev, m->module, &b64);
    }
    if (r < 0)
        return r;
    struct modclient_config mc = {
        .device_id = m->device_id      ? m->device_id
                     : m->child_device ? m->child_device
                                       : h->rt.device_id,
        .module_id = m->device_id      ? NULL
                     : m->child_module ? m->child_module
                                       : m->module,
        .iothub_hostname = h->rt.iothub_hostname,
        .gateway_hostname = h->cfg.upstream.host,
        .port = h->cfg.upstream.port,
        .tls = h->cfg.upstream.tls,
        .ca_file = h->cfg.upstream.ca_file,
        .sas_key = b64.data,
        .on_behalf_of = m->obo ? h->rt.device_id : NULL,
        .token_lifetime_s = (int)(h->cfg.upstream.token_lifetime_ms / 1000),
    };
    struct lerr err = {0};
    r = modclient_new(h->base, &mc, &m->mc, &err);
    lcrypto_wipe(b64.data, b64.len);
    lbuf_free(&b64);
    if (r < 0) {
        log_error(COMP, "%s: %s", m->module, lerr_str(&err));
        return r;
    }
    modclient_on_connection(m->mc, on_connection, m);
    modclient_on_desired(m->mc, on_desired, m);
    modclient_on_method_async(m->mc, on_method, m);
    if (m->device_id)
        modclient_on_c2d(m->mc, on_c2d, m);
    return modclient_start(m->mc);
}

static void check_cb(evutil_socket_t fd, short what, void *arg)
{
    struct cloud_mod *m = arg;
    if (!clients_find(m->cl->h, m->module))
        mod_remove(m);
}

static void presence(struct hub *h, const char *module)
{
    struct cloud *cl = h->cloud;
    struct cloud_mod *m = find(cl, module);
    bool here = clients_find(h, module) != NULL;
    char child_dev[HUB_ID_SIZE], child_mod[HUB_ID_SIZE];
    bool child = hub_child_address(module, child_dev, child_mod);
    bool device = !child && lstr_startswith(module, HUB_DEVICE_ADDRESS_PREFIX);
    if (m) {
        if (!here) {
            struct timeval tv = {CLOUD_GRACE_MS / 1000, (CLOUD_GRACE_MS % 1000) * 1000};
            evtimer_add(m->check_ev, &tv);
        } else {
            evtimer_del(m->check_ev);
        }
        return;
    }
    if (!here || h->stopping)
        return;
    const struct identity_leaf *leaf =
        device  ? hub_runtime_leaf(&h->rt, module + strlen(HUB_DEVICE_ADDRESS_PREFIX))
        : child ? hub_runtime_leaf(&h->rt, child_dev)
                : NULL;
    if (child && (!leaf || leaf->auth != IDENTITY_LEAF_SAS))
        return; /* auth.c lets no other in */
    if (device && !leaf)
        return;
    bool obo = device && leaf->auth != IDENTITY_LEAF_SAS;
    if (obo && !cl->dev) {
        uint64_t skipped = 0;
        if (hub_log_due(h, "cloud-x509-leaf", &skipped))
            log_warn(COMP,
                     "%s: an X.509 leaf device's upstream session is authenticated on behalf of "
                     "this edge with $edgeHub's key, derived from a SAS device key, and this "
                     "device has none: its twin, methods and C2D stay local (%llu more not "
                     "logged)",
                     module, (unsigned long long)skipped);
        return;
    }
    if (device && cl->n_devices >= (size_t)h->cfg.upstream.max_device_sessions) {
        cl->devices_refused++;
        uint64_t skipped = 0;
        if (hub_log_due(h, "cloud-device-sessions", &skipped))
            log_warn(COMP,
                     "%s: no upstream session: upstream.max_device_sessions (%d) are open "
                     "(%llu more not logged)",
                     module, h->cfg.upstream.max_device_sessions, (unsigned long long)skipped);
        return;
    }
    if (!device && !child && !cl->dev)
        return; /* no SAS device identity to derive module keys from (logged at start) */
    if (!device && cl->n_mods >= (size_t)h->cfg.upstream.max_module_sessions) {
        cl->refused++;
        uint64_t skipped = 0;
        if (hub_log_due(h, "cloud-sessions", &skipped))
            log_warn(COMP,
                     "%s: no upstream session: upstream.max_module_sessions (%d) are open "
                     "(%llu more not logged)",
                     module, h->cfg.upstream.max_module_sessions, (unsigned long long)skipped);
        return;
    }
    m = calloc(1, sizeof(*m));
    if (!m || !(m->module = strdup(module)) || !(m->check_ev = evtimer_new(h->base, check_cb, m))) {
        if (m) {
            free(m->module);
            free(m);
        }
        return;
    }
    m->cl = cl;
    m->obo = obo;
    m->acker.ops = &acker_ops;
    if (device && (!(m->device_id = strdup(leaf->device_id)) ||
                   (leaf->generation_id && !(m->generation_id = strdup(leaf->generation_id))))) {
        free(m->device_id);
        event_free(m->check_ev);
        free(m->module);
        free(m);
        return;
    }
    if (child &&
        (!(m->child_device = strdup(leaf->device_id)) || !(m->child_module = strdup(child_mod)) ||
         (leaf->generation_id && !(m->generation_id = strdup(leaf->generation_id))))) {
        free(m->child_device);
        free(m->child_module);
        event_free(m->check_ev);
        free(m->module);
        free(m);
        return;
    }
    if (device || child)
        m->keys_changed_ms = leaf->keys_changed_ms;
    m->next = cl->mods;
    cl->mods = m;
    if (device)
        cl->n_devices++;
    else
        cl->n_mods++;
    log_info(COMP, "%s: %s connected: opening its upstream session%s", module,
             device  ? "device"
             : child ? "child edge device's module"
                     : "module",
             obo ? " on behalf of this edge ($edgeHub's token)" : "");
    if (mod_open(cl, m) < 0) {
        snprintf(m->last_error, sizeof(m->last_error), "cannot open the session");
        log_warn(COMP, "%s: cannot open its upstream session", module);
    }
}

static void reported_changed(struct hub *h, const char *module)
{
    struct cloud_mod *m = find(h->cloud, module);
    if (m)
        sync_reported(m);
}

static int cloud_start(struct hub *h, struct lerr *err)
{
    if (!h->cfg.upstream.iothub || !h->cfg.upstream.host)
        return 0;
    struct cloud *cl = calloc(1, sizeof(*cl));
    if (!cl)
        return lerr_set(err, -ENOMEM, "cloud: out of memory");
    /* Module sessions need module keys, derived from a SAS device key; leaf devices' sessions
     * use the leaves' own keys and need none. */
    const char *key = ljson_str(h->rt.device, "key");
    struct lerr e2 = {0};
    if (!lstr_eq(ljson_str(h->rt.device, "auth"), "sas") || !key)
        log_warn(COMP, "modules' upstream sessions need a SAS device identity: module twins and "
                       "methods stay local");
    else if (identity_device_from_key(h->rt.iothub_hostname, h->rt.device_id, key, &cl->dev, &e2) <
             0)
        log_warn(COMP, "the device key: %s; module twins and methods stay local", e2.msg);
    cl->h = h;
    h->cloud = cl;
    h->module_presence = presence;
    h->reported_changed = reported_changed;
    h->twin_syncing = twin_syncing;
    return 0;
}

static void cloud_stop(struct hub *h)
{
    struct cloud *cl = h->cloud;
    if (!cl)
        return;
    h->module_presence = NULL;
    h->reported_changed = NULL;
    h->twin_syncing = NULL;
    while (cl->mods) {
        struct cloud_mod *m = cl->mods;
        cl->mods = m->next;
        mod_free(m);
    }
    identity_device_free(cl->dev);
    free(cl);
    h->cloud = NULL;
}

/* A new runtime file: modules that left the deployment lost their clients already (auth.c). A
 * leaf device whose key changed (rotated, or set to IoT Hub's again) logs in again with it. */
static void cloud_reload(struct hub *h)
{
    struct cloud *cl = h->cloud;
    if (!cl)
        return;
    for (struct cloud_mod *m = cl->mods; m; m = m->next) {
        if (!m->device_id && !m->child_device)
            continue;
        const struct identity_leaf *l =
            hub_runtime_leaf(&h->rt, m->device_id ? m->device_id : m->child_device);
        bool obo = l && l->auth != IDENTITY_LEAF_SAS;
        if (!l || (m->child_device && obo))
            continue; /* its clients were cut: the session goes after the grace period */
        /* an X.509 leaf's thumbprints are not what its session logs in with: only another
         * device (a new generation) or another kind of credential makes it log in again */
        if (lstr_eq(l->generation_id, m->generation_id) && obo == m->obo &&
            (obo || l->keys_changed_ms == m->keys_changed_ms))
            continue;
        log_info(COMP, "%s: its credentials changed: the upstream session logs in again",
                 m->module);
        m->obo = m->device_id && obo;
        m->keys_changed_ms = l->keys_changed_ms;
        free(m->generation_id);
        m->generation_id = l->generation_id ? strdup(l->generation_id) : NULL;
        commit_client_gone(h, &m->acker);
        modclient_free(m->mc);
        m->mc = NULL;
        m->connected = false;
        if (mod_open(cl, m) < 0)
            snprintf(m->last_error, sizeof(m->last_error), "cannot open the session");
    }
}

json_t *cloud_status(struct hub *h)
{
    struct cloud *cl = h->cloud;
    if (!cl)
        return json_pack("{s:b}", "enabled", 0);
    json_t *arr = json_array();
    for (struct cloud_mod *m = cl->mods; m; m = m->next) {
        json_t *o = m->device_id ? json_pack("{s:s, s:b, s:b}", "device", m->device_id, "connected",
                                             m->connected, "onBehalfOf", m->obo)
                    : m->child_device
                        ? json_pack("{s:s, s:s, s:b}", "device", m->child_device, "module",
                                    m->child_module, "connected", m->connected)
                        : json_pack("{s:s, s:b}", "module", m->module, "connected", m->connected);
        if (o && !m->connected && m->last_error[0])
            json_object_set_new(o, "lastError", json_string(m->last_error));
        json_array_append_new(arr, o);
    }
    return json_pack("{s:b, s:o, s:i, s:I, s:i, s:I, s:{s:I, s:I}}", "enabled", 1, "sessions", arr,
                     "max", h->cfg.upstream.max_module_sessions, "refused", (json_int_t)cl->refused,
                     "maxDevices", h->cfg.upstream.max_device_sessions, "devicesRefused",
                     (json_int_t)cl->devices_refused, "c2d", "received",
                     (json_int_t)cl->c2d_received, "stored", (json_int_t)cl->c2d_stored);
}

const struct hub_sink_ops cloud_sink_ops = {
    .name = "cloud",
    .start = cloud_start,
    .stop = cloud_stop,
    .reload = cloud_reload,
};
