/* cloud.c — per-module sessions upstream (cloud.h). A module's session opens when its client
 * attaches (clients.c tells us through h->module_presence) and closes CLOUD_GRACE_MS after its
 * last client went, so a reconnecting module keeps its session. Each session is the module
 * client library's (src/modclient): connect, tokens, back-off, twin GET/PATCH, desired
 * notifications, and method calls answered later through methods.c. */
#include "cloud.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"
#include "base/json.h"
#include "base/str.h"
#include "clients.h"
#include "identity/keys.h"
#include "log/log.h"
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
    char *module;
    struct modclient *mc;
    bool connected;
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
    struct identity_device *dev;
    struct cloud_mod *mods;
    size_t n_mods;
    uint64_t refused; /* sessions not opened at upstream.max_module_sessions */
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
    free(m);
}

static void mod_remove(struct cloud_mod *m)
{
    struct cloud *cl = m->cl;
    for (struct cloud_mod **pp = &cl->mods; *pp; pp = &(*pp)->next)
        if (*pp == m) {
            *pp = m->next;
            cl->n_mods--;
            break;
        }
    log_info(COMP, "%s: module gone: its upstream session closes", m->module);
    mod_free(m);
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
    if (methods_invoke(h, m->module, method, payload, CLOUD_METHOD_TIMEOUT_S, call_done, c,
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
        log_info(COMP, "%s: connected upstream as the module", m->module);
        sync_reported(m);
        return;
    }
    snprintf(m->last_error, sizeof(m->last_error), "%s", why ? why : "disconnected");
    if (was)
        log_warn(COMP, "%s: %s", m->module, m->last_error);
}

/* ---- lifecycle */

static int mod_open(struct cloud *cl, struct cloud_mod *m)
{
    struct hub *h = cl->h;
    uint8_t key[IDENTITY_MODULE_KEY_LEN];
    int r = identity_cloud_module_key(cl->dev, m->module, key);
    if (r < 0)
        return r;
    struct lbuf b64 = LBUF_INIT;
    r = lcrypto_b64_encode(key, sizeof(key), &b64);
    lcrypto_wipe(key, sizeof(key));
    if (r < 0)
        return r;
    struct modclient_config mc = {
        .device_id = h->rt.device_id,
        .module_id = m->module,
        .iothub_hostname = h->rt.iothub_hostname,
        .gateway_hostname = h->cfg.upstream.host,
        .port = h->cfg.upstream.port,
        .tls = h->cfg.upstream.tls,
        .ca_file = h->cfg.upstream.ca_file,
        .sas_key = b64.data,
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
    if (cl->n_mods >= (size_t)h->cfg.upstream.max_module_sessions) {
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
    m->next = cl->mods;
    cl->mods = m;
    cl->n_mods++;
    log_info(COMP, "%s: module connected: opening its upstream session", module);
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
    const char *key = ljson_str(h->rt.device, "key");
    if (!lstr_eq(ljson_str(h->rt.device, "auth"), "sas") || !key) {
        log_warn(COMP, "modules' upstream sessions need a SAS device identity: module twins and "
                       "methods stay local");
        return 0;
    }
    struct cloud *cl = calloc(1, sizeof(*cl));
    if (!cl)
        return lerr_set(err, -ENOMEM, "cloud: out of memory");
    struct lerr e2 = {0};
    if (identity_device_from_key(h->rt.iothub_hostname, h->rt.device_id, key, &cl->dev, &e2) < 0) {
        free(cl);
        log_warn(COMP, "the device key: %s; module twins and methods stay local", e2.msg);
        return 0;
    }
    cl->h = h;
    h->cloud = cl;
    h->module_presence = presence;
    h->reported_changed = reported_changed;
    return 0;
}

static void cloud_stop(struct hub *h)
{
    struct cloud *cl = h->cloud;
    if (!cl)
        return;
    h->module_presence = NULL;
    h->reported_changed = NULL;
    while (cl->mods) {
        struct cloud_mod *m = cl->mods;
        cl->mods = m->next;
        mod_free(m);
    }
    identity_device_free(cl->dev);
    free(cl);
    h->cloud = NULL;
}

/* A new runtime file: modules that left the deployment lost their clients already (auth.c). */
static void cloud_reload(struct hub *h) {}

json_t *cloud_status(struct hub *h)
{
    struct cloud *cl = h->cloud;
    if (!cl)
        return json_pack("{s:b}", "enabled", 0);
    json_t *arr = json_array();
    for (struct cloud_mod *m = cl->mods; m; m = m->next) {
        json_t *o = json_pack("{s:s, s:b}", "module", m->module, "connected", m->connected);
        if (o && !m->connected && m->last_error[0])
            json_object_set_new(o, "lastError", json_string(m->last_error));
        json_array_append_new(arr, o);
    }
    return json_pack("{s:b, s:o, s:i, s:I}", "enabled", 1, "sessions", arr, "max",
                     h->cfg.upstream.max_module_sessions, "refused", (json_int_t)cl->refused);
}

const struct hub_sink_ops cloud_sink_ops = {
    .name = "cloud",
    .start = cloud_start,
    .stop = cloud_stop,
    .reload = cloud_reload,
};
