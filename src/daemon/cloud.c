/* cloud.c — deployments from IoT Hub: ledged's own upstream sessions as `$edgeAgent` and
 * `$edgeHub` (IoT Hub MQTT, one per identity, SAS tokens signed with each identity's key derived
 * from the device key), their desired properties applied as the deployment through the agent's
 * one deploy path (agent_apply, as `ledge deploy`), and their reported properties written in IoT
 * Edge's schema. The last applied deployment stays in force offline (the agent stores it); the
 * versions of the desired properties last acted on are kept in <state_dir>/cloud.json, so a link
 * that comes back applies only what is newer. docs/agent.md "Deployments from the cloud". */
#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include "agent/cloud.h"
#include "base/crypto.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "ledged.h"
#include "log/log.h"
#include "modclient/modclient.h"

#define COMP "cloud"
#define APPLY_DELAY_MS 300   /* both twins of one deployment usually change together */
#define REPORT_EVERY_MS 2000 /* the modules' runtime state is compared this often */
#define RETRY_APPLY_MS 5000

struct cloud_session {
    struct cloud *c;
    const char *module; /* "$edgeAgent" or "$edgeHub" */
    struct modclient *mc;
    json_t *desired; /* the whole desired document last synced, with its $version */
    bool synced;     /* a whole desired document arrived since ledged started */
    bool connected;
    char last_error[256];
    json_t *cloud_reported; /* what the cloud holds: the base the next patch is made against */
    bool reported_known;
    bool reporting;    /* a patch is in flight */
    json_t *in_flight; /* the document that patch makes */
    int64_t connects;
};

struct cloud {
    struct ledged *d;
    struct cloud_session agent, hub;
    struct event *apply_ev, *report_ev;
    bool applying;
    int64_t pending_agent, pending_hub; /* the versions being applied */
    /* cloud.json */
    int64_t agent_version, hub_version; /* last acted on; -1 none */
    int code;
    char *description;
    char started[LTIME_RFC3339_MAX];
    char os[64], arch[64];
    /* metrics (cloud_get_metrics): $edgeAgent twin syncs attempted (desired properties whole
     * or patched, twin reads, connection attempts) and failed; the time from a desired change
     * to its deployment applied or refused, summed */
    uint64_t syncs, failed_syncs;
    int64_t change_ms; /* monotonic: the first desired change not deployed yet; 0 none */
    int64_t deployment_ms;
};

static void schedule(struct event *ev, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

static char *state_path(struct cloud *c)
{
    return lstr_printf("%s/cloud.json", c->d->cfg.state_dir);
}

static void state_load(struct cloud *c)
{
    c->agent_version = c->hub_version = -1;
    c->code = CLOUD_STATUS_MISSING;
    _cleanup_free_ char *path = state_path(c), *text = NULL;
    size_t len;
    if (!path || lfs_read_file(path, 64 * 1024, &text, &len) < 0)
        return;
    json_t *j = NULL;
    struct lerr err = {0};
    if (ljson_parse(text, len, &j, &err) < 0) {
        log_warn(COMP, "%s: %s; starting afresh", path, err.msg);
        return;
    }
    c->agent_version = ljson_int(j, "agentVersion", -1);
    c->hub_version = ljson_int(j, "hubVersion", -1);
    c->code = (int)ljson_int(j, "code", CLOUD_STATUS_MISSING);
    const char *desc = ljson_str(j, "description");
    free(c->description);
    c->description = desc ? strdup(desc) : NULL;
    json_decref(j);
}

static void state_save(struct cloud *c)
{
    json_t *j = json_pack("{s:I, s:I, s:i, s:s}", "agentVersion", (json_int_t)c->agent_version,
                          "hubVersion", (json_int_t)c->hub_version, "code", c->code, "description",
                          c->description ? c->description : "");
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    _cleanup_free_ char *path = state_path(c);
    int r = text && path ? lfs_write_atomic(path, text, strlen(text), 0600) : -ENOMEM;
    if (r < 0)
        log_error(COMP, "cannot save the cloud deployment's state: %s", strerror(-r));
    free(text);
}

static void set_status(struct cloud *c, int code, const char *description)
{
    c->code = code;
    free(c->description);
    c->description = description ? strdup(description) : NULL;
}

/* ------------------------------------------------------------------ reported properties */

/* $edgeAgent's desired properties inside the applied manifest (any of its three shapes). */
static json_t *applied_agent_desired(struct cloud *c)
{
    const char *text = agent_deployment_text(c->d->agent);
    json_t *m = NULL;
    struct lerr err = {0};
    if (!text || ljson_parse(text, strlen(text), &m, &err) < 0)
        return NULL;
    json_t *mc = json_object_get(m, "modulesContent");
    if (!mc)
        mc = json_object_get(json_object_get(m, "content"), "modulesContent");
    if (!mc)
        mc = m;
    json_t *desired = json_object_get(json_object_get(mc, "$edgeAgent"), "properties.desired");
    json_t *copy = desired ? json_incref(desired) : NULL;
    /* no registry passwords in what the cloud reads back */
    if (copy) {
        json_t *rs = json_object_get(json_object_get(copy, "runtime"), "settings");
        if (json_is_object(rs) && json_object_get(rs, "registryCredentials")) {
            json_t *dup = json_deep_copy(copy);
            json_decref(copy);
            copy = dup;
            json_object_del(json_object_get(json_object_get(copy, "runtime"), "settings"),
                            "registryCredentials");
        }
    }
    json_decref(m);
    return copy;
}

static json_t *build_reported(struct cloud *c, struct cloud_session *s)
{
    if (s == &c->agent) {
        json_t *mods = agent_modules_json(c->d->agent);
        json_t *desired = applied_agent_desired(c);
        struct cloud_agent_report in = {
            .modules = mods,
            .desired = desired,
            .desired_version = c->agent_version,
            .status_code = c->code,
            .status_description = c->description,
            .version = LEDGE_VERSION,
            .os = c->os,
            .arch = c->arch,
            .started_utc = c->started,
        };
        json_t *o = cloud_agent_reported(&in);
        json_decref(mods);
        json_decref(desired);
        return o;
    }
    struct cloud_hub_report in = {
        .desired_version = c->hub_version,
        .status_code = c->code,
        .status_description = c->description,
        .version = LEDGE_VERSION,
    };
    return cloud_hub_reported(&in);
}

static void report_done(void *ud, int status, int64_t version)
{
    struct cloud_session *s = ud;
    s->reporting = false;
    if (status == 204) {
        json_decref(s->cloud_reported);
        s->cloud_reported = s->in_flight;
        s->in_flight = NULL;
        log_debug(COMP, "%s: reported properties at version %lld", s->module, (long long)version);
        return;
    }
    json_decref(s->in_flight);
    s->in_flight = NULL;
    if (status != -ECANCELED)
        log_warn(COMP, "%s: the reported properties were not taken (%d); reading the twin again",
                 s->module, status);
    s->reported_known = false; /* GET again on the next connect, or now */
}

static void got_twin(void *ud, int status, const json_t *twin);

static void report_session(struct cloud *c, struct cloud_session *s)
{
    if (!s->mc || !s->connected || s->reporting)
        return;
    if (!s->reported_known) {
        if (modclient_twin_get(s->mc, got_twin, s) == 0)
            s->reporting = true;
        return;
    }
    json_t *doc = build_reported(c, s);
    json_t *patch = doc ? cloud_merge_diff(s->cloud_reported, doc) : NULL;
    if (!patch) {
        json_decref(doc);
        return;
    }
    if (modclient_twin_report(s->mc, patch, report_done, s) == 0) {
        s->reporting = true;
        s->in_flight = doc;
    } else {
        json_decref(doc);
    }
    json_decref(patch);
}

static void got_twin(void *ud, int status, const json_t *twin)
{
    struct cloud_session *s = ud;
    s->reporting = false;
    if (status != 200) {
        if (s == &s->c->agent && status != -ECANCELED) {
            s->c->syncs++;
            s->c->failed_syncs++;
        }
        if (status != -ECANCELED)
            log_warn(COMP, "%s: cannot read the twin (%d)", s->module, status);
        return;
    }
    json_decref(s->cloud_reported);
    s->cloud_reported = cloud_strip_twin_keys(json_object_get(twin, "reported"));
    s->reported_known = true;
    report_session(s->c, s);
}

static void report_cb(evutil_socket_t fd, short what, void *arg)
{
    struct cloud *c = arg;
    report_session(c, &c->agent);
    report_session(c, &c->hub);
    schedule(c->report_ev, REPORT_EVERY_MS);
}

static void report_now(struct cloud *c)
{
    evtimer_del(c->report_ev);
    report_cb(-1, 0, c);
}

/* ------------------------------------------------------------------ applying */

/* A deployment of the cloud's desired properties ended: the time since the change came. */
static void deployment_ended(struct cloud *c)
{
    if (c->change_ms) {
        c->deployment_ms += ltime_mono_ms() - c->change_ms;
        c->change_ms = 0;
    }
}

static void apply_planned(void *ud, int result, const json_t *report, const struct lstrv *errors)
{
    struct cloud *c = ud;
    if (result == 0) {
        log_info(COMP, "applying the deployment of $edgeAgent version %lld, $edgeHub version %lld",
                 (long long)c->pending_agent, (long long)c->pending_hub);
        return; /* done follows */
    }
    c->applying = false;
    if (result == -EBUSY) {
        /* another deployment (a local `ledge deploy`) is being applied: after it */
        log_info(COMP, "a deployment is in progress; the cloud's waits for it");
        schedule(c->apply_ev, RETRY_APPLY_MS);
        return;
    }
    c->agent_version = c->pending_agent;
    c->hub_version = c->pending_hub;
    deployment_ended(c);
    _cleanup_free_ char *desc =
        result == -EINVAL ? cloud_describe_errors(errors) : lstr_printf("%s", strerror(-result));
    set_status(c, result == -EINVAL ? CLOUD_STATUS_INVALID : CLOUD_STATUS_FAILED, desc);
    log_warn(COMP, "the deployment of $edgeAgent version %lld was refused: %s",
             (long long)c->pending_agent, desc ? desc : "");
    state_save(c);
    report_now(c);
    schedule(c->apply_ev, APPLY_DELAY_MS); /* newer desired properties may be waiting */
}

static void apply_done(void *ud, int result, const json_t *report)
{
    struct cloud *c = ud;
    c->applying = false;
    deployment_ended(c);
    c->agent_version = c->pending_agent;
    c->hub_version = c->pending_hub;
    if (result == 0) {
        set_status(c, CLOUD_STATUS_OK, "");
        log_info(COMP, "the deployment of $edgeAgent version %lld is applied",
                 (long long)c->agent_version);
    } else {
        /* the failed steps, as `ledge deploy` prints them */
        struct lbuf b = LBUF_INIT;
        lbuf_puts(&b, "the deployment could not be applied:");
        /* atomic deployments (docs/deployments.md): why, and whether it was rolled back */
        const json_t *dj = json_object_get(report, "deployment");
        if (ljson_str(dj, "reason"))
            lbuf_printf(&b, " %s;", ljson_str(dj, "reason"));
        if (lstr_eq(ljson_str(dj, "outcome"), "rolled-back"))
            lbuf_puts(&b, " the previous deployment is restored;");
        size_t i;
        json_t *o;
        json_array_foreach (json_object_get(report, "outcome"), i, o) {
            const char *err = ljson_str(o, "error");
            if (!err)
                continue;
            lbuf_printf(&b, " %s: %s;", ljson_str(o, "module") ?: "?", err);
        }
        set_status(c, CLOUD_STATUS_FAILED, b.data);
        log_warn(COMP, "%s", b.data ? b.data : "the deployment could not be applied");
        lbuf_free(&b);
    }
    state_save(c);
    report_now(c);
    schedule(c->apply_ev, APPLY_DELAY_MS);
}

static void apply_cb(evutil_socket_t fd, short what, void *arg)
{
    struct cloud *c = arg;
    if (c->applying || !c->agent.synced || !c->hub.synced)
        return;
    int64_t va = cloud_desired_version(c->agent.desired);
    int64_t vh = cloud_desired_version(c->hub.desired);
    if (va == c->agent_version && vh == c->hub_version) {
        c->change_ms = 0; /* nothing new (a reconnection's whole twin): no deployment */
        return;
    }
    c->pending_agent = va;
    c->pending_hub = vh;
    if (!cloud_desired_has_deployment(c->agent.desired)) {
        c->agent_version = va;
        c->hub_version = vh;
        deployment_ended(c);
        set_status(c, CLOUD_STATUS_MISSING, "no deployment in $edgeAgent's desired properties");
        state_save(c);
        report_now(c);
        return;
    }
    _cleanup_free_ char *text = cloud_manifest_text(c->agent.desired, c->hub.desired);
    if (!text) {
        schedule(c->apply_ev, RETRY_APPLY_MS);
        return;
    }
    static const struct agent_apply_cb cb = {.planned = apply_planned, .done = apply_done};
    c->applying = true;
    const struct agent_apply_options o = {.wait = true};
    int r = agent_apply(c->d->agent, text, strlen(text), &o, &cb, c);
    if (r < 0) {
        c->applying = false;
        log_warn(COMP, "cannot start applying the cloud's deployment: %s; retrying", strerror(-r));
        schedule(c->apply_ev, RETRY_APPLY_MS);
    }
}

/* ------------------------------------------------------------------ sessions */

static void on_desired(void *ud, const json_t *desired, int64_t version, bool complete)
{
    struct cloud_session *s = ud;
    if (s == &s->c->agent)
        s->c->syncs++;
    if (!s->c->change_ms)
        s->c->change_ms = ltime_mono_ms();
    if (complete) {
        json_decref(s->desired);
        s->desired = json_deep_copy(desired);
        s->synced = true;
    } else {
        cloud_merge_patch(&s->desired, desired);
    }
    if (json_is_object(s->desired) && version >= 0)
        json_object_set_new(s->desired, "$version", json_integer(version));
    log_debug(COMP, "%s: desired properties version %lld (%s)", s->module, (long long)version,
              complete ? "whole" : "patch");
    schedule(s->c->apply_ev, APPLY_DELAY_MS);
}

static void on_connection(void *ud, bool connected, const char *why)
{
    struct cloud_session *s = ud;
    bool was = s->connected;
    s->connected = connected;
    if (connected) {
        s->connects++;
        s->last_error[0] = 0;
        s->reported_known = false;
        s->reporting = false;
        log_info(COMP, "%s: connected to %s:%d", s->module, s->c->d->cfg.upstream.host,
                 s->c->d->cfg.upstream.port);
        report_now(s->c);
        return;
    }
    if (s == &s->c->agent && !was) {
        /* an attempt to connect, and so to read the twin, that failed */
        s->c->syncs++;
        s->c->failed_syncs++;
    }
    snprintf(s->last_error, sizeof(s->last_error), "%s", why ? why : "disconnected");
    if (was || s->connects == 0)
        log_warn(COMP, "%s: %s", s->module, s->last_error);
}

static int session_start(struct cloud *c, struct cloud_session *s, const char *module)
{
    struct ledged *d = c->d;
    s->c = c;
    s->module = module;
    struct lbuf b64 = LBUF_INIT;
    int r = identity_cloud_module_key_b64(d->device, module, &b64);
    if (r < 0)
        return r;
    struct modclient_config mc = {
        .device_id = d->cfg.device.id,
        .module_id = (char *)module,
        .iothub_hostname = d->cfg.device.iothub_hostname,
        .gateway_hostname = d->cfg.upstream.host,
        .port = d->cfg.upstream.port,
        .tls = d->cfg.upstream.tls,
        .ca_file = d->cfg.upstream.ca_file,
        .sas_key = b64.data,
        .token_lifetime_s = (int)(d->cfg.upstream.token_lifetime_ms / 1000),
    };
    struct lerr err = {0};
    r = modclient_new(d->base, &mc, &s->mc, &err);
    lcrypto_wipe(b64.data, b64.len);
    lbuf_free(&b64);
    if (r < 0) {
        log_error(COMP, "%s: %s", module, lerr_str(&err));
        return r;
    }
    modclient_on_connection(s->mc, on_connection, s);
    modclient_on_desired(s->mc, on_desired, s);
    return modclient_start(s->mc);
}

static void session_stop(struct cloud_session *s)
{
    modclient_free(s->mc);
    s->mc = NULL;
    json_decref(s->desired);
    json_decref(s->cloud_reported);
    json_decref(s->in_flight);
}

int cloud_start(struct ledged *d)
{
    if (!d->cfg.upstream.iothub)
        return 0;
    if (!d->device || d->device->auth != IDENTITY_AUTH_SAS) {
        log_warn(COMP, "deployments from the cloud need a SAS device identity (device.key or "
                       "device.connection_string): the link to IoT Hub carries telemetry only");
        return 0;
    }
    struct cloud *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    d->cloud = c;
    c->d = d;
    state_load(c);
    ltime_format_rfc3339(ltime_now_ms(), c->started);
    struct utsname u;
    if (uname(&u) == 0) {
        snprintf(c->os, sizeof(c->os), "linux");
        size_t n = strnlen(u.machine, sizeof(c->arch) - 1);
        memcpy(c->arch, u.machine, n);
        c->arch[n] = 0;
    }
    c->apply_ev = evtimer_new(d->base, apply_cb, c);
    c->report_ev = evtimer_new(d->base, report_cb, c);
    if (!c->apply_ev || !c->report_ev)
        return -ENOMEM;
    int r = session_start(c, &c->agent, "$edgeAgent");
    if (r == 0)
        r = session_start(c, &c->hub, "$edgeHub");
    if (r < 0) {
        log_error(COMP, "cannot start the cloud sessions: %s", strerror(-r));
        return r;
    }
    schedule(c->report_ev, REPORT_EVERY_MS);
    log_info(COMP, "deployments from IoT Hub %s through %s:%d ($edgeAgent, $edgeHub)",
             d->cfg.device.iothub_hostname, d->cfg.upstream.host, d->cfg.upstream.port);
    return 0;
}

void cloud_stop(struct ledged *d)
{
    struct cloud *c = d->cloud;
    if (!c)
        return;
    if (d->agent)
        agent_cancel_waiter(d->agent, c);
    session_stop(&c->agent);
    session_stop(&c->hub);
    if (c->apply_ev)
        event_free(c->apply_ev);
    if (c->report_ev)
        event_free(c->report_ev);
    free(c->description);
    free(c);
    d->cloud = NULL;
}

static json_t *session_json(const struct cloud_session *s)
{
    json_t *o =
        json_pack("{s:b, s:I, s:I}", "connected", s->connected, "connects", (json_int_t)s->connects,
                  "desiredVersion", (json_int_t)cloud_desired_version(s->desired));
    if (o && s->last_error[0] && !s->connected)
        json_object_set_new(o, "lastError", json_string(s->last_error));
    return o;
}

void cloud_get_metrics(struct ledged *d, struct cloud_metrics *ret)
{
    const struct cloud *c = d->cloud;
    *ret = (struct cloud_metrics){0};
    if (!c)
        return;
    ret->syncs = c->syncs;
    ret->failed_syncs = c->failed_syncs;
    ret->deployment_seconds = (double)c->deployment_ms / 1000.0;
}

json_t *cloud_status_json(struct ledged *d)
{
    struct cloud *c = d->cloud;
    if (!c)
        return json_pack("{s:b}", "enabled", 0);
    return json_pack("{s:b, s:o, s:o, s:{s:I, s:I, s:i, s:s}, s:b}", "enabled", 1, "edgeAgent",
                     session_json(&c->agent), "edgeHub", session_json(&c->hub), "lastDesired",
                     "edgeAgentVersion", (json_int_t)c->agent_version, "edgeHubVersion",
                     (json_int_t)c->hub_version, "code", c->code, "description",
                     c->description ? c->description : "", "applying", c->applying);
}
