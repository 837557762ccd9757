/* mgmt.c — the management API: HTTP/1.1 + JSON on a unix socket (root:ledge, 0660), the only way
 * the CLI talks to ledged. Routes are a table; errors are {"message": ...} with the status chosen
 * in one place (http_status_for). Deployments with ?wait=1 answer as a stream of JSON lines so
 * the CLI can show the plan first, image pull progress while it runs, and the outcome last. */
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "ledged.h"
#include "log/log.h"
#include "net/http_client.h"

#define COMP "mgmt"

/* The one place internal errors become HTTP statuses. */
static int http_status_for(int err)
{
    switch (err) {
    case -ENOENT:
        return 404;
    case -EINVAL:
        return 400;
    case -E2BIG:
    case -EFBIG:
        return 413;
    case -EBUSY:
    case -EEXIST:
        return 409;
    case -EACCES:
    case -EPERM:
        return 403;
    case -EHOSTDOWN:
    case -ECONNREFUSED:
        return 503;
    case -ETIMEDOUT:
        return 504;
    default:
        return 500;
    }
}

static struct ledged *D(void *ud)
{
    return ud;
}

/* ------------------------------------------------------------------ modules */

static void h_modules(struct hs_request *r, void *ud)
{
    hs_reply_json(r, 200, json_pack("{s:o}", "modules", agent_modules_json(D(ud)->agent)));
}

static void h_module(struct hs_request *r, void *ud)
{
    json_t *m = agent_module_json(D(ud)->agent, hs_request_param(r, 0));
    if (!m) {
        hs_reply_error(r, 404, "no module named \"%s\"", hs_request_param(r, 0));
        return;
    }
    hs_reply_json(r, 200, m);
}

struct deploy_stream {
    struct pending *p;
    struct deploy_stream *next;
};

/* An asynchronous reply: the request may go away before the answer. */
struct pending {
    struct ledged *d;
    struct hs_request *req;
    bool wait;       /* deployments: stream the outcome */
    bool validating; /* deployments: the agent's verdict is still to come */
    struct agent_logs *logs;
    struct deploy_stream *stream;
};

static void deploy_stream_remove(struct ledged *d, struct pending *p);

static void pending_abort(struct hs_request *r, void *ud)
{
    struct pending *p = ud;
    p->req = NULL;
    if (p->logs) {
        agent_logs_cancel(p->logs);
        free(p);
    } else if (p->stream || p->validating) {
        /* the deploy continues (or its validation ends unheard); only its reporting stops */
        agent_cancel_waiter(p->d->agent, p);
        deploy_stream_remove(p->d, p);
        free(p);
    }
    /* module commands finish on their own and free p in their callback */
}

static void command_done(void *ud, int result, const json_t *report)
{
    struct pending *p = ud;
    if (p->req) {
        hs_request_on_abort(p->req, NULL, NULL);
        if (result < 0)
            hs_reply_error(p->req, http_status_for(result), "%s",
                           ljson_str(report, "message") ?: strerror(-result));
        else
            hs_reply_json(p->req, 200, json_deep_copy(report));
    }
    free(p);
}

static void module_command(struct hs_request *r, void *ud, const char *verb)
{
    struct ledged *d = ud;
    struct pending *p = calloc(1, sizeof(*p));
    if (!p) {
        hs_reply_error(r, 500, "out of memory");
        return;
    }
    p->d = d;
    p->req = r;
    hs_request_on_abort(r, pending_abort, p);
    struct lerr err = {0};
    int res = agent_module_command(d->agent, hs_request_param(r, 0), verb, command_done, p, &err);
    if (res < 0) {
        hs_request_on_abort(r, NULL, NULL);
        hs_reply_error(r, http_status_for(res), "%s", lerr_str(&err));
        free(p);
    }
}

static void h_start(struct hs_request *r, void *ud)
{
    module_command(r, ud, "start");
}
static void h_stop(struct hs_request *r, void *ud)
{
    module_command(r, ud, "stop");
}
static void h_restart(struct hs_request *r, void *ud)
{
    module_command(r, ud, "restart");
}

/* ------------------------------------------------------------------ logs */

static bool query_bool(struct hs_request *r, const char *name)
{
    const char *v = hs_request_query(r, name);
    return v && (strcmp(v, "") == 0 || strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0);
}

static int logs_data(void *ud, int stream, const char *data, size_t n)
{
    struct pending *p = ud;
    if (!p->req)
        return -ECANCELED;
    return hs_stream_write(p->req, data, n) < 0 ? -ECANCELED : 0;
}

static void logs_done(void *ud, int result, const struct lerr *err)
{
    struct pending *p = ud;
    if (p->req) {
        hs_request_on_abort(p->req, NULL, NULL);
        if (result < 0 && err) {
            char line[LERR_MSG_MAX + 16];
            int n = snprintf(line, sizeof(line), "ledge: %s\n", err->msg);
            hs_stream_write(p->req, line, (size_t)n);
        }
        hs_stream_end(p->req);
    }
    free(p);
}

static void h_logs(struct hs_request *r, void *ud)
{
    struct ledged *d = ud;
    struct engine_logs_options o = {.tail = -1};
    o.follow = query_bool(r, "follow");
    o.timestamps = query_bool(r, "timestamps");
    const char *tail = hs_request_query(r, "tail");
    if (tail && strcmp(tail, "all") != 0) {
        long long t;
        if (lstr_to_i64(tail, &t) < 0 || t < 0) {
            hs_reply_error(r, 400, "tail: expected a number of lines or \"all\", got \"%s\"", tail);
            return;
        }
        o.tail = (long)t;
    }
    const char *since = hs_request_query(r, "since");
    if (since && *since) {
        int64_t ms;
        if (ltime_parse_since(since, ltime_now_ms(), &ms) < 0) {
            hs_reply_error(r, 400,
                           "since: expected RFC 3339, unix seconds or a duration like 10m, got "
                           "\"%s\"",
                           since);
            return;
        }
        o.since_ms = ms;
    }
    struct pending *p = calloc(1, sizeof(*p));
    if (!p) {
        hs_reply_error(r, 500, "out of memory");
        return;
    }
    p->d = d;
    p->req = r;
    struct lerr err = {0};
    p->logs = agent_logs(d->agent, hs_request_param(r, 0), &o, logs_data, logs_done, p, &err);
    if (!p->logs) {
        free(p);
        hs_reply_error(r, http_status_for(err.code), "%s", lerr_str(&err));
        return;
    }
    hs_request_on_abort(r, pending_abort, p);
    hs_stream_start(r, 200, "text/plain; charset=utf-8");
}

/* ------------------------------------------------------------------ deployments */

static void stream_line(struct hs_request *r, json_t *obj)
{
    char *text = ljson_dump(obj);
    json_decref(obj);
    if (!text)
        return;
    hs_stream_write(r, text, strlen(text));
    hs_stream_write(r, "\n", 1);
    free(text);
}

static void deploy_stream_remove(struct ledged *d, struct pending *p)
{
    for (struct deploy_stream **pp = &d->deploy_streams; *pp; pp = &(*pp)->next)
        if ((*pp)->p == p) {
            struct deploy_stream *s = *pp;
            *pp = s->next;
            free(s);
            return;
        }
}

void mgmt_progress(struct ledged *d, const char *module, const char *line)
{
    for (struct deploy_stream *s = d->deploy_streams; s; s = s->next)
        if (s->p->req)
            stream_line(s->p->req, json_pack("{s:s, s:s, s:s}", "event", "progress", "module",
                                             module, "line", line));
}

static void deploy_done(void *ud, int result, const json_t *report)
{
    struct pending *p = ud;
    deploy_stream_remove(p->d, p);
    if (p->req) {
        hs_request_on_abort(p->req, NULL, NULL);
        json_t *o = json_deep_copy(report);
        json_object_set_new(o, "event", json_string("result"));
        json_object_set_new(o, "ok", json_boolean(result == 0));
        stream_line(p->req, o);
        hs_stream_end(p->req);
    }
    free(p);
}

static void reply_errors(struct hs_request *r, int res, const struct lstrv *errors)
{
    json_t *errs = json_array();
    for (size_t i = 0; errors && i < errors->n; i++)
        json_array_append_new(errs, json_string(errors->v[i]));
    json_t *o = json_pack("{s:s, s:o}", "message",
                          res == -EINVAL ? "invalid deployment manifest"
                                         : "the deployment could not be applied",
                          "errors", errs);
    size_t n = errors ? errors->n : 0;
    if (n == 1 && res == -EINVAL) {
        json_object_set_new(o, "message", json_string(errors->v[0]));
    } else if (n > 1 && res == -EINVAL) {
        char msg[128];
        snprintf(msg, sizeof(msg), "invalid deployment manifest: %zu problems", n);
        json_object_set_new(o, "message", json_string(msg));
    }
    hs_reply_json(r, res == -EINVAL ? 400 : http_status_for(res), o);
}

/* The agent's verdict (validation, then the plan): the answer for dry runs and deployments
 * without wait, the first line of the stream otherwise. */
static void deploy_planned(void *ud, int result, const json_t *report, const struct lstrv *errors)
{
    struct pending *p = ud;
    struct ledged *d = p->d;
    p->validating = false;
    hs_request_on_abort(p->req, NULL, NULL);
    if (result < 0) {
        reply_errors(p->req, result, errors);
        free(p);
        return;
    }
    if (!p->wait) {
        hs_reply_json(p->req, 200, json_deep_copy(report));
        free(p);
        return;
    }
    struct deploy_stream *s = calloc(1, sizeof(*s));
    if (s) {
        s->p = p;
        s->next = d->deploy_streams;
        d->deploy_streams = s;
    }
    p->stream = s;
    hs_request_on_abort(p->req, pending_abort, p);
    hs_stream_start(p->req, 200, "application/x-ndjson");
    json_t *plan = json_object_get(report, "plan");
    json_t *line = json_pack("{s:s, s:O}", "event", "plan", "plan", plan ? plan : json_null());
    json_t *warnings = json_object_get(report, "warnings");
    if (line && json_array_size(warnings))
        json_object_set(line, "warnings", warnings);
    stream_line(p->req, line);
}

/* ?dryRun, ?wait, ?rollback=0 (--no-rollback), ?timeout=DURATION (the deadline for its
 * modules to run, agent.deploy_timeout otherwise). false (answered) when one is wrong. */
static bool deploy_options(struct hs_request *r, struct agent_apply_options *o)
{
    *o = (struct agent_apply_options){.dry_run = query_bool(r, "dryRun")};
    o->wait = !o->dry_run && query_bool(r, "wait");
    const char *rb = hs_request_query(r, "rollback");
    o->no_rollback = rb && (strcmp(rb, "0") == 0 || strcasecmp(rb, "false") == 0);
    const char *t = hs_request_query(r, "timeout");
    if (t && *t) {
        int64_t ms;
        if (ltime_parse_duration_ms(t, &ms) < 0 || ms < 1000 || ms > 86400000) {
            hs_reply_error(r, 400,
                           "timeout: expected a duration from 1s to 1d (e.g. 90s), got \"%s\"", t);
            return false;
        }
        o->timeout_ms = ms;
    }
    return true;
}

/* POST /deployment (a manifest in the body) and POST /deployment/rollback (the previous one, or
 * deployment N of the history with ?to=N). */
static void deploy_request(struct hs_request *r, struct ledged *d, bool rollback)
{
    long long to = 0;
    const char *to_text = rollback ? hs_request_query(r, "to") : NULL;
    if (to_text && (lstr_to_i64(to_text, &to) < 0 || to <= 0)) {
        hs_reply_error(r, 400, "to: expected the id of a deployment in the history, got \"%s\"",
                       to_text);
        return;
    }
    size_t n = 0;
    const char *body = rollback ? NULL : hs_request_body(r, &n);
    if (!rollback && n == 0) {
        hs_reply_error(r, 400, "expected a deployment manifest (JSON) in the request body");
        return;
    }
    struct agent_apply_options o;
    if (!deploy_options(r, &o))
        return;
    struct pending *p = calloc(1, sizeof(*p));
    if (!p) {
        hs_reply_error(r, 500, "out of memory");
        return;
    }
    p->d = d;
    p->req = r;
    p->wait = o.wait;
    /* Until the verdict, a client going away only cancels it (pending_abort). */
    p->validating = true;
    hs_request_on_abort(r, pending_abort, p);
    static const struct agent_apply_cb cb = {.planned = deploy_planned, .done = deploy_done};
    struct lerr err = {0};
    int res = rollback ? agent_rollback(d->agent, to, &o, &cb, p, &err)
                       : agent_apply(d->agent, body, n, &o, &cb, p);
    if (res < 0) {
        hs_request_on_abort(r, NULL, NULL);
        if (err.msg[0])
            hs_reply_error(r, http_status_for(res), "%s", err.msg);
        else
            hs_reply_error(r, http_status_for(res), "the deployment could not be validated: %s",
                           strerror(-res));
        free(p);
    }
}

static void h_deploy(struct hs_request *r, void *ud)
{
    deploy_request(r, ud, false);
}

static void h_deploy_rollback(struct hs_request *r, void *ud)
{
    deploy_request(r, ud, true);
}

static void h_deployments(struct hs_request *r, void *ud)
{
    hs_reply_json(r, 200, agent_deployments_json(D(ud)->agent));
}

/* GET /deployments/{id}: that deployment's manifest, as it was applied (the dashboard shows a
 * rollback's diff against the one in force). */
static void h_deployment_of(struct hs_request *r, void *ud)
{
    long long id = 0;
    _cleanup_free_ char *text = NULL;
    if (lstr_to_i64(hs_request_param(r, 0), &id) < 0 || id <= 0) {
        hs_reply_error(r, 400, "expected the id of a deployment in the history, got \"%s\"",
                       hs_request_param(r, 0));
        return;
    }
    int res = agent_deployment_text_of(D(ud)->agent, id, &text);
    if (res < 0) {
        hs_reply_error(r, http_status_for(res),
                       res == -ENOENT ? "no deployment %lld in the history (`ledge deployments`)"
                                      : "deployment %lld cannot be read from the state database",
                       id);
        return;
    }
    hs_reply(r, 200, "application/json", text, strlen(text));
}

static void h_deployment(struct hs_request *r, void *ud)
{
    const char *text = agent_deployment_text(D(ud)->agent);
    if (!text) {
        hs_reply_error(r, 404, "no deployment has been applied");
        return;
    }
    hs_reply(r, 200, "application/json", text, strlen(text));
}

/* ------------------------------------------------------------------ system */

static char *os_pretty_name(void)
{
    _cleanup_free_ char *text = NULL;
    if (lfs_read_file("/etc/os-release", 65536, &text, NULL) < 0)
        return strdup("unknown");
    char *line = strstr(text, "PRETTY_NAME=");
    if (!line)
        return strdup("unknown");
    line += strlen("PRETTY_NAME=");
    char *end = strchr(line, '\n');
    if (end)
        *end = 0;
    size_t len = strlen(line);
    if (len >= 2 && (line[0] == '"' || line[0] == '\'') && line[len - 1] == line[0]) {
        line[len - 1] = 0;
        line++;
    }
    return strdup(line);
}

static void h_systeminfo(struct hs_request *r, void *ud)
{
    struct ledged *d = ud;
    struct utsname u;
    uname(&u);
    _cleanup_free_ char *os = os_pretty_name();
    json_t *engine =
        json_pack("{s:s, s:s, s:b}", "type", d->cfg.engine.type, "uri", d->cfg.engine.uri,
                  "connected", agent_engine_connected(d->agent, MODULE_TYPE_DOCKER));
    if (d->container_version_known) {
        json_object_set_new(engine, "product", json_string(d->container_version.product));
        json_object_set_new(engine, "version", json_string(d->container_version.version));
        json_object_set_new(engine, "apiVersion", json_string(d->container_version.api_version));
    }
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o}", "version", LEDGE_VERSION,
                  "deviceId", d->cfg.device.id, "iothubHostname", d->cfg.device.iothub_hostname,
                  "gatewayHostname", d->cfg.device.gateway_hostname, "osName", os, "kernelVersion",
                  u.release, "architecture", u.machine, "stateDir", d->cfg.state_dir, "configFile",
                  d->config_path ? d->config_path : "", "engine", engine);
    hs_reply_json(r, 200, o);
}

static void h_status(struct hs_request *r, void *ud)
{
    struct ledged *d = ud;
    json_t *o = agent_status_json(d->agent);
    json_object_set_new(o, "version", json_string(LEDGE_VERSION));
    json_object_set_new(o, "deviceId", json_string(d->cfg.device.id));
    json_object_set_new(o, "pid", json_integer(getpid()));
    json_object_set_new(o, "cloud", cloud_status_json(d));
    hs_reply_json(r, 200, o);
}

static const struct hs_route routes[] = {
    {"GET", "/modules", h_modules},
    {"GET", "/modules/*", h_module},
    {"POST", "/modules/*/start", h_start},
    {"POST", "/modules/*/stop", h_stop},
    {"POST", "/modules/*/restart", h_restart},
    {"GET", "/modules/*/logs", h_logs},
    {"POST", "/deployment", h_deploy},
    {"POST", "/deployment/rollback", h_deploy_rollback},
    {"GET", "/deployment", h_deployment},
    {"GET", "/deployments", h_deployments},
    {"GET", "/deployments/*", h_deployment_of},
    {"GET", "/modules/*/twin", mgmt_twin_get},
    {"PATCH", "/modules/*/twin", mgmt_twin_patch},
    {"POST", "/modules/*/methods/*", mgmt_invoke},
    {"POST", "/modules/*/token", mgmt_token},
    {"GET", "/hub/status", mgmt_hub_status},
    {"GET", "/devices", mgmt_devices_list},
    {"POST", "/devices", mgmt_device_add},
    {"GET", "/devices/*", mgmt_device_get},
    {"DELETE", "/devices/*", mgmt_device_remove},
    {"GET", "/devices/*/keys", mgmt_device_keys},
    {"POST", "/devices/*/keys/rotate", mgmt_device_rotate},
    {"POST", "/devices/*/certificate", mgmt_device_cert},
    {"GET", "/devices/*/twin", mgmt_device_twin_get},
    {"PATCH", "/devices/*/twin", mgmt_device_twin_patch},
    {"POST", "/devices/*/methods/*", mgmt_device_invoke},
    {"GET", "/devices/*/modules/*/twin", mgmt_child_twin_get},
    {"PATCH", "/devices/*/modules/*/twin", mgmt_child_twin_patch},
    {"POST", "/devices/*/modules/*/methods/*", mgmt_child_invoke},
    {"POST", "/devices/*/deployment", mgmt_child_deploy},
    {"GET", "/trust-bundle", mgmt_trust_bundle},
    {"GET", "/device-cas", mgmt_device_cas_list},
    {"POST", "/device-cas", mgmt_device_ca_add},
    {"DELETE", "/device-cas/*", mgmt_device_ca_remove},
    {"GET", "/systeminfo", h_systeminfo},
    {"GET", "/systeminfo/supportbundle", mgmt_support_bundle},
    {"GET", "/status", h_status},
    {"GET", "/check", mgmt_check},
    {"GET", "/metrics/history", mgmt_metrics_history},
    {"GET", "/vms", mgmt_vms_list},
    {"POST", "/vms", mgmt_vm_create},
    {"GET", "/vms/*", mgmt_vm_get},
    {"POST", "/vms/*/start", mgmt_vm_start},
    {"POST", "/vms/*/stop", mgmt_vm_stop},
    {"POST", "/vms/*/restart", mgmt_vm_restart},
    {"POST", "/vms/*/reboot", mgmt_vm_reboot},
    {"DELETE", "/vms/*", mgmt_vm_delete},
    {"GET", "/vms/*/ports", mgmt_vm_ports},
    {"POST", "/vms/*/ports", mgmt_vm_port_add},
    {"POST", "/vms/*/ports/remove", mgmt_vm_port_remove},
    {"POST", "/vms/*/shares", mgmt_vm_share_add},
    {"POST", "/vms/*/shares/remove", mgmt_vm_share_remove},
    {"POST", "/vms/*/resources", mgmt_vm_resources},
    {"GET", "/vms/*/console", mgmt_vm_console},
    {"GET", "/images", mgmt_images},
    {"POST", "/images/load", mgmt_image_load},
    {"POST", "/images/remove", mgmt_image_remove},
    {"POST", "/images/prune", mgmt_image_prune},
    {"POST", "/dashboard/tokens", mgmt_dashboard_token_new},
    {"GET", "/dashboard/tokens", mgmt_dashboard_tokens},
    {"DELETE", "/dashboard/tokens", mgmt_dashboard_token_revoke},
    {"DELETE", "/dashboard/tokens/*", mgmt_dashboard_token_revoke},
};

const struct hs_route *mgmt_route_table(size_t *ret_n)
{
    *ret_n = ARRAY_SIZE(routes);
    return routes;
}

int mgmt_start(struct ledged *d)
{
    int r = hs_server_new(d->base, routes, ARRAY_SIZE(routes), d, &d->mgmt);
    if (r < 0)
        return r;
    char dir[4096];
    lfs_dirname(d->cfg.management.socket, dir, sizeof(dir));
    lfs_mkdir_p(dir, 0755);
    gid_t gid = (gid_t)-1;
    struct group *g = getgrnam(d->cfg.management.group);
    if (g)
        gid = g->gr_gid;
    else
        log_warn(COMP, "group \"%s\" does not exist; only root can use %s", d->cfg.management.group,
                 d->cfg.management.socket);
    struct hs_limits l = HS_LIMITS_DEFAULT;
    l.max_connections = (size_t)d->cfg.management.max_connections;
    l.max_inflight = l.max_connections;
    l.max_body = d->cfg.management.max_body;
    l.request_timeout_ms = (int)d->cfg.management.request_timeout_ms;
    r = hs_server_listen_unix(d->mgmt, d->cfg.management.socket, 0660, gid, &l, NULL);
    if (r < 0) {
        log_error(COMP, "cannot listen on %s: %s", d->cfg.management.socket, strerror(-r));
        return r;
    }
    return 0;
}

void mgmt_stop(struct ledged *d)
{
    vms_stop(d);
    checks_stop(d);
    support_stop(d);
    hs_server_free(d->mgmt);
    d->mgmt = NULL;
    hc_client_free(d->hub_client);
    d->hub_client = NULL;
    while (d->deploy_streams) {
        struct deploy_stream *s = d->deploy_streams;
        d->deploy_streams = s->next;
        free(s);
    }
}
