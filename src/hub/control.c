/* control.c — the hub's control API for ledged: HTTP/1.1 + JSON on a unix socket only root can
 * reach (hub.control_socket, 0600). `ledge hub status`, `ledge twin`, `ledge invoke` (for modules,
 * and with --device for leaf devices and, nested, a child edge device's modules) arrive here
 * through ledged's management API. */
#include "control.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/fs.h"
#include "base/json.h"
#include "base/prom.h"
#include "base/str.h"
#include "exposition.h"
#include "methods.h"
#include "status.h"
#include "twin.h"
#include "net/http_server.h"

static void h_status(struct hs_request *r, void *ud)
{
    hs_reply_json(r, 200, hub_status_json(ud));
}

/* The hub's metrics in the Prometheus text format, for ledged's /metrics. */
static void h_metrics(struct hs_request *r, void *ud)
{
    struct lbuf b = LBUF_INIT;
    if (hub_exposition(ud, &b) < 0) {
        lbuf_free(&b);
        hs_reply_error(r, 500, "cannot write the metrics");
        return;
    }
    hs_reply(r, 200, PROM_CONTENT_TYPE, b.data ? b.data : "", b.len);
    lbuf_free(&b);
}

/* A leaf device's twin and methods are addressed "devices/<d>" (hub_identity.address), with the
 * id as the runtime file spells it; NULL (404 answered) for a device this gateway does not know. */
static char *device_address(struct hs_request *r, struct hub *h)
{
    const char *id = hs_request_param(r, 0);
    const struct identity_leaf *l = hub_runtime_leaf(&h->rt, id);
    if (!l) {
        hs_reply_error(r, 404, "no leaf device \"%s\" on this gateway", id);
        return NULL;
    }
    char *a = lstr_printf(HUB_DEVICE_ADDRESS_PREFIX "%s", l->device_id);
    if (!a)
        hs_reply_error(r, 500, "out of memory");
    return a;
}

/* A child edge device's module identity (nested edge, docs/nested.md):
 * "devices/<d>/modules/<m>", the device as the runtime file spells it; NULL (answered) for a
 * device this gateway does not know or a module id that cannot be one. */
static char *child_address(struct hs_request *r, struct hub *h)
{
    const char *id = hs_request_param(r, 0), *m = hs_request_param(r, 1);
    const struct identity_leaf *l = hub_runtime_leaf(&h->rt, id);
    if (!l) {
        hs_reply_error(r, 404, "no leaf device \"%s\" on this gateway", id);
        return NULL;
    }
    if (!*m || strlen(m) >= HUB_ID_SIZE || strchr(m, '/')) {
        hs_reply_error(r, 400, "\"%.64s\" is not a module id", m);
        return NULL;
    }
    char *a =
        lstr_printf(HUB_DEVICE_ADDRESS_PREFIX "%s" HUB_CHILD_MODULES_INFIX "%s", l->device_id, m);
    if (!a)
        hs_reply_error(r, 500, "out of memory");
    return a;
}

static void twin_get(struct hs_request *r, struct hub *h, const char *address)
{
    json_t *t = twins_get(h, address);
    if (!t) {
        hs_reply_error(r, 500, "twin storage failed");
        return;
    }
    hs_reply_json(r, 200, t);
}

static void h_twin_get(struct hs_request *r, void *ud)
{
    twin_get(r, ud, hs_request_param(r, 0));
}

static void h_device_twin_get(struct hs_request *r, void *ud)
{
    _cleanup_free_ char *a = device_address(r, ud);
    if (a)
        twin_get(r, ud, a);
}

static void twin_patch(struct hs_request *r, struct hub *h, const char *address)
{
    json_t *patch = NULL;
    if (hs_request_body_json(r, false, &patch) < 0)
        return;
    json_t *twin = NULL;
    struct lerr err = {0};
    int rc = twins_patch_desired(h, address, patch, &twin, &err);
    json_decref(patch);
    if (rc < 0) {
        hs_reply_error(r, rc == -EINVAL ? 400 : 500, "%s", lerr_str(&err));
        return;
    }
    hs_reply_json(r, 200, twin);
}

static void h_twin_patch(struct hs_request *r, void *ud)
{
    twin_patch(r, ud, hs_request_param(r, 0));
}

static void h_device_twin_patch(struct hs_request *r, void *ud)
{
    _cleanup_free_ char *a = device_address(r, ud);
    if (a)
        twin_patch(r, ud, a);
}

static void h_child_twin_get(struct hs_request *r, void *ud)
{
    _cleanup_free_ char *a = child_address(r, ud);
    if (a)
        twin_get(r, ud, a);
}

static void h_child_twin_patch(struct hs_request *r, void *ud)
{
    _cleanup_free_ char *a = child_address(r, ud);
    if (a)
        twin_patch(r, ud, a);
}

/* PUT: the whole desired document replaced, as a deployment replaces it (`ledge --device D
 * deploy` at the top of a hierarchy, where this hub is the source of truth); the module gets
 * the difference. A cloud above, where there is one, still wins on its next change. */
static void h_child_twin_put(struct hs_request *r, void *ud)
{
    struct hub *h = ud;
    _cleanup_free_ char *a = child_address(r, h);
    if (!a)
        return;
    json_t *desired = NULL;
    if (hs_request_body_json(r, false, &desired) < 0)
        return;
    int rc = json_is_object(desired) ? twins_cloud_desired(h, a, desired, 0, true) : -EINVAL;
    json_decref(desired);
    if (rc < 0) {
        hs_reply_error(r, rc == -EINVAL ? 400 : 500, "%s",
                       rc == -EINVAL
                           ? "desired properties: must be a JSON object of at most 32 KiB "
                             "and 10 levels"
                           : "twin storage failed");
        return;
    }
    json_t *t = twins_get(h, a);
    if (!t) {
        hs_reply_error(r, 500, "twin storage failed");
        return;
    }
    hs_reply_json(r, 200, t);
}

struct call {
    struct hub *h;
    struct hs_request *req;
    void *handle;
};

static void call_abort(struct hs_request *r, void *ud)
{
    struct call *c = ud;
    methods_cancel(c->h, c->handle);
    free(c);
}

static void call_done(void *ud, int status, json_t *reply)
{
    struct call *c = ud;
    hs_request_on_abort(c->req, NULL, NULL);
    hs_reply_json(c->req, status, json_incref(reply));
    free(c);
}

static void invoke(struct hs_request *r, struct hub *h, const char *address, const char *method)
{
    json_t *payload = NULL;
    if (hs_request_body_json(r, true, &payload) < 0)
        return;
    int timeout = 30;
    const char *t = hs_request_query(r, "timeout");
    long long v;
    if (t && (lstr_to_i64(t, &v) < 0 || v < 1 || v > 300)) {
        json_decref(payload);
        hs_reply_error(r, 400, "timeout: expected whole seconds 1-300, got \"%s\"", t);
        return;
    }
    if (t)
        timeout = (int)v;
    struct call *c = calloc(1, sizeof(*c));
    if (!c) {
        json_decref(payload);
        hs_reply_error(r, 500, "out of memory");
        return;
    }
    c->h = h;
    c->req = r;
    struct lerr err = {0};
    int rc =
        methods_invoke(h, address, method, payload, timeout, 0, call_done, c, &c->handle, &err);
    json_decref(payload);
    if (rc < 0) {
        free(c);
        hs_reply_error(r,
                       rc == -ENOENT   ? 404
                       : rc == -EINVAL ? 400
                       : rc == -EBUSY  ? 503
                                       : 500,
                       "%s", lerr_str(&err));
        return;
    }
    hs_request_on_abort(r, call_abort, c);
}

static void h_invoke(struct hs_request *r, void *ud)
{
    invoke(r, ud, hs_request_param(r, 0), hs_request_param(r, 1));
}

static void h_device_invoke(struct hs_request *r, void *ud)
{
    _cleanup_free_ char *a = device_address(r, ud);
    if (a)
        invoke(r, ud, a, hs_request_param(r, 1));
}

static void h_child_invoke(struct hs_request *r, void *ud)
{
    _cleanup_free_ char *a = child_address(r, ud);
    if (a)
        invoke(r, ud, a, hs_request_param(r, 2));
}

static const struct hs_route routes[] = {
    {"GET", "/status", h_status},
    {"GET", "/metrics", h_metrics},
    {"GET", "/twins/*", h_twin_get},
    {"PATCH", "/twins/*/desired", h_twin_patch},
    {"POST", "/methods/*/*", h_invoke},
    {"GET", "/devices/*/twin", h_device_twin_get},
    {"PATCH", "/devices/*/twin/desired", h_device_twin_patch},
    {"POST", "/devices/*/methods/*", h_device_invoke},
    {"GET", "/devices/*/modules/*/twin", h_child_twin_get},
    {"PATCH", "/devices/*/modules/*/twin/desired", h_child_twin_patch},
    {"PUT", "/devices/*/modules/*/twin/desired", h_child_twin_put},
    {"POST", "/devices/*/modules/*/methods/*", h_child_invoke},
};

int control_start(struct hub *h)
{
    int r = hs_server_new(h->base, routes, ARRAY_SIZE(routes), h, &h->control);
    if (r < 0)
        return r;
    char dir[4096];
    lfs_dirname(h->cfg.hub.control_socket, dir, sizeof(dir));
    lfs_mkdir_p(dir, 0755);
    struct hs_limits l = HS_LIMITS_DEFAULT;
    l.max_connections = 16;
    l.max_inflight = 64;
    l.max_body = 64 * 1024;
    return hs_server_listen_unix(h->control, h->cfg.hub.control_socket, 0600, (gid_t)-1, &l, NULL);
}

void control_stop(struct hub *h)
{
    hs_server_free(h->control);
    h->control = NULL;
}
