/* dashboard_fleet.c — GET /api/fleet (docs/dashboard.md "The fleet"): this device and every
 * remote device side by side. For each, GET /systeminfo, /modules, /deployments, /hub/status and
 * /vms at once — this device's on the management socket, a remote's through the same pinned TLS
 * and bearer token as the proxy (dashboard_remote.c) — each call bounded by ?timeout=S (5 s), so
 * a dead device costs at most that; the answers are summarised by dashboard/fleet.h. At most
 * FLEET_MAX_INFLIGHT such requests at once. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"
#include "base/json.h"
#include "base/str.h"
#include "dashboard/fleet.h"
#include "dashboard_internal.h"
#include "net/http_client.h"

#define FLEET_MAX_INFLIGHT 4
#define FLEET_TIMEOUT_S 5
#define FLEET_TIMEOUT_MAX_S 60
#define FLEET_MAX_ANSWER (4u << 20)

enum { CALL_SYSTEMINFO, CALL_MODULES, CALL_DEPLOYMENTS, CALL_HUB, CALL_VMS, CALL_COUNT };
static const char *const call_paths[CALL_COUNT] = {"/systeminfo", "/modules", "/deployments",
                                                   "/hub/status", "/vms"};

struct fleet;

struct fleet_call {
    struct fleet *f;
    struct hc_transfer *t;
    int result;
    long status;
    json_t *answer;
    char *error; /* why it failed, for the page */
};

struct fleet_device {
    char *name; /* NULL: this device */
    char *address;
    struct fleet_call calls[CALL_COUNT];
};

struct fleet {
    struct dashboard *b;
    struct hs_request *req;
    struct fleet_device *devs;
    size_t n_devs;
    size_t pending;
    struct fleet *next;
};

static void fleet_free(struct fleet *f)
{
    if (!f)
        return;
    for (struct fleet **pp = &f->b->fleets; *pp; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            f->b->n_fleets--;
            break;
        }
    for (size_t i = 0; i < f->n_devs; i++) {
        for (int c = 0; c < CALL_COUNT; c++) {
            struct fleet_call *k = &f->devs[i].calls[c];
            if (k->t)
                hc_cancel(k->t);
            json_decref(k->answer);
            free(k->error);
        }
        free(f->devs[i].name);
        free(f->devs[i].address);
    }
    free(f->devs);
    free(f);
}

static json_t *device_json(struct fleet *f, struct fleet_device *dev)
{
    struct fleet_call *c = dev->calls;
    struct dash_fleet_answers a = {
        .systeminfo = c[CALL_SYSTEMINFO].answer,
        .modules = c[CALL_MODULES].answer,
        .deployments = c[CALL_DEPLOYMENTS].answer,
        .hub = c[CALL_HUB].answer,
        .vms = c[CALL_VMS].answer,
        .result = c[CALL_SYSTEMINFO].result,
        .status = c[CALL_SYSTEMINFO].status,
        .hub_error = c[CALL_HUB].error,
        .vms_error = c[CALL_VMS].error,
    };
    json_t *o = dash_fleet_device(&a);
    if (!o)
        return NULL;
    json_object_set_new(o, "name", dev->name ? json_string(dev->name) : json_null());
    json_object_set_new(o, "local", json_boolean(!dev->name));
    if (dev->address)
        json_object_set_new(o, "address", json_string(dev->address));
    if (!dev->name && !ljson_str(o, "deviceId"))
        json_object_set_new(o, "deviceId", json_string(f->b->d->cfg.device.id));
    const char *sys_err = c[CALL_SYSTEMINFO].error;
    if (sys_err && !json_is_true(json_object_get(o, "reachable")))
        json_object_set_new(o, "error", json_string(sys_err));
    return o;
}

static void fleet_reply(struct fleet *f)
{
    json_t *list = json_array();
    for (size_t i = 0; list && i < f->n_devs; i++) {
        json_t *o = device_json(f, &f->devs[i]);
        if (o)
            json_array_append_new(list, o);
    }
    hs_request_on_abort(f->req, NULL, NULL);
    if (!list)
        hs_reply_error(f->req, 500, "out of memory");
    else
        hs_reply_json(f->req, 200, json_pack("{s:o}", "devices", list));
    f->req = NULL;
    fleet_free(f);
}

static void call_done(void *ud, int result, long status, struct lbuf *body)
{
    struct fleet_call *k = ud;
    struct fleet *f = k->f;
    k->t = NULL;
    k->result = result;
    k->status = status;
    char buf[128];
    const char *why = dash_fleet_reason(result, status, buf, sizeof(buf));
    if (!why && (!body->data || ljson_parse(body->data, body->len, &k->answer, NULL) < 0))
        why = "not JSON";
    if (why) {
        /* the error's own message, when the device said one ({"message"}) */
        json_t *e = NULL;
        if (body->data && body->len && ljson_parse(body->data, body->len, &e, NULL) == 0 &&
            ljson_str(e, "message"))
            k->error = lstr_printf("%s: %s", why, ljson_str(e, "message"));
        else
            k->error = strdup(why);
        json_decref(e);
        json_decref(k->answer);
        k->answer = NULL;
    }
    if (--f->pending == 0)
        fleet_reply(f);
}

static void fleet_abort(struct hs_request *r, void *ud)
{
    (void)r;
    struct fleet *f = ud;
    f->req = NULL;
    fleet_free(f); /* cancels the calls still running */
}

static int device_start(struct fleet *f, struct fleet_device *dev, const json_t *remote,
                        long timeout_ms)
{
    struct ledged *d = f->b->d;
    _cleanup_free_ char *auth =
        remote ? lstr_printf("Authorization: Bearer %s", ljson_str(remote, "token")) : NULL;
    if (remote && !auth)
        return -ENOMEM;
    const char *headers[] = {auth, NULL};
    int res = 0;
    for (int c = 0; c < CALL_COUNT && res == 0; c++) {
        struct fleet_call *k = &dev->calls[c];
        k->f = f;
        _cleanup_free_ char *url =
            remote ? lstr_printf("https://%s/api%s", dev->address, call_paths[c])
                   : lstr_printf("http://localhost%s", call_paths[c]);
        if (!url) {
            res = -ENOMEM;
            break;
        }
        struct hc_request q = {
            .url = url,
            .unix_socket = remote ? NULL : d->cfg.management.socket,
            .headers = remote ? headers : NULL,
            .pinned_pubkey = remote ? ljson_str(remote, "pin") : NULL,
            .timeout_ms = timeout_ms,
            .connect_timeout_ms = timeout_ms,
            .max_response = FLEET_MAX_ANSWER,
            .on_done = call_done,
            .ud = k,
        };
        if (!(k->t = hc_request(f->b->hc, &q)))
            res = -EIO;
        else
            f->pending++;
    }
    if (auth)
        lcrypto_wipe(auth, strlen(auth));
    return res;
}

/* GET /api/fleet[?timeout=S][&device=NAME]: every device, or only NAME (empty: this one). */
void dash_h_fleet(struct hs_request *r, void *ud)
{
    struct ledged *d = ud;
    struct dashboard *b = d->dashboard;
    const char *t = hs_request_query(r, "timeout"), *only = hs_request_query(r, "device");
    long long timeout_s = FLEET_TIMEOUT_S;
    if (t && (lstr_to_i64(t, &timeout_s) < 0 || timeout_s < 1 || timeout_s > FLEET_TIMEOUT_MAX_S)) {
        hs_reply_error(r, 400, "timeout: expected whole seconds 1-%d, got \"%s\"",
                       FLEET_TIMEOUT_MAX_S, t);
        return;
    }
    if (only && *only) {
        bool known = false;
        size_t i;
        json_t *e;
        json_array_foreach (b->remotes, i, e)
            known = known || lstr_eq(ljson_str(e, "name"), only);
        if (!known) {
            hs_reply_error(r, 404, "no remote device %s", only);
            return;
        }
    }
    if (b->n_fleets >= FLEET_MAX_INFLIGHT) {
        hs_reply_error(r, 503, "%d fleet requests are running; try again when one has ended",
                       FLEET_MAX_INFLIGHT);
        return;
    }
    struct fleet *f = calloc(1, sizeof(*f));
    size_t n = 1 + json_array_size(b->remotes);
    if (!f || !(f->devs = calloc(n, sizeof(*f->devs)))) {
        free(f);
        hs_reply_error(r, 500, "out of memory");
        return;
    }
    f->b = b;
    f->req = r;
    f->next = b->fleets;
    b->fleets = f;
    b->n_fleets++;
    int res = 0;
    if (!only || !*only)
        res = device_start(f, &f->devs[f->n_devs++], NULL, timeout_s * 1000);
    size_t i;
    json_t *e;
    json_array_foreach (b->remotes, i, e) {
        if (res < 0)
            break;
        const char *name = ljson_str(e, "name");
        if (only && !lstr_eq(name, only))
            continue;
        struct fleet_device *dev = &f->devs[f->n_devs++];
        if (!(dev->name = strdup(name)) || !(dev->address = strdup(ljson_str(e, "address"))))
            res = -ENOMEM;
        else
            res = device_start(f, dev, e, timeout_s * 1000);
    }
    if (res < 0) {
        f->req = NULL;
        fleet_free(f);
        hs_reply_error(r, 500, "cannot start the fleet's calls: %s", strerror(-res));
        return;
    }
    if (f->pending == 0) { /* nothing to ask (cannot happen: this device at least) */
        fleet_reply(f);
        return;
    }
    hs_request_on_abort(r, fleet_abort, f);
}

void dash_fleet_free(struct dashboard *b)
{
    while (b->fleets) /* after the server: their requests are gone */
        fleet_free(b->fleets);
}
