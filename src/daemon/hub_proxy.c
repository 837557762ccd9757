/* hub_proxy.c — management API calls that the hub answers (hub status, twins, direct methods, of
 * modules and of leaf devices):
 * forwarded to the hub's control socket, answered with the hub's status and body. Also the
 * module credentials `ledge token` hands tools such as mosquitto_pub (minted by identity). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "ledged.h"
#include "identity/keys.h"
#include "log/log.h"
#include "net/http_client.h"

#define COMP "mgmt"

struct proxy {
    struct hs_request *req;
    struct hc_transfer *t;
};

static void proxy_abort(struct hs_request *r, void *ud)
{
    struct proxy *p = ud;
    hc_cancel(p->t);
    free(p);
}

static void proxy_done(void *ud, int result, long status, struct lbuf *body)
{
    struct proxy *p = ud;
    hs_request_on_abort(p->req, NULL, NULL);
    if (result < 0 || status == 0)
        hs_reply_error(p->req, 503, "the hub is not running or not answering (%s)",
                       strerror(result < 0 ? -result : EIO));
    else
        hs_reply(p->req, (int)status, "application/json", body->data ? body->data : "", body->len);
    free(p);
}

/* Forward to the hub: method, path (with query), the request's body. */
static void forward(struct ledged *d, struct hs_request *r, const char *method, const char *path,
                    long timeout_ms)
{
    if (!d->hub_client && hc_client_new(d->base, &d->hub_client) < 0) {
        hs_reply_error(r, 500, "out of memory");
        return;
    }
    struct proxy *p = calloc(1, sizeof(*p));
    if (!p) {
        hs_reply_error(r, 500, "out of memory");
        return;
    }
    char url[1024];
    snprintf(url, sizeof(url), "http://localhost%s", path);
    size_t len;
    const char *body = hs_request_body(r, &len);
    struct hc_request req = {
        .method = method,
        .unix_socket = d->cfg.hub.control_socket,
        .url = url,
        .body = len ? body : NULL,
        .body_len = len,
        .timeout_ms = timeout_ms,
        .connect_timeout_ms = 2000,
        .on_done = proxy_done,
        .ud = p,
    };
    p->req = r;
    p->t = hc_request(d->hub_client, &req);
    if (!p->t) {
        free(p);
        hs_reply_error(r, 500, "cannot reach the hub");
        return;
    }
    hs_request_on_abort(r, proxy_abort, p);
}

static bool known_module(struct ledged *d, struct hs_request *r, const char *name)
{
    const struct deployment *dep = agent_deployment(d->agent);
    if (!deployment_find(dep, name)) {
        hs_reply_error(r, 404, "no module named \"%s\" in the deployment", name);
        return false;
    }
    return true;
}

static char *enc(const char *s)
{
    struct lbuf b = LBUF_INIT;
    lstr_url_encode(s, strlen(s), &b);
    return lbuf_steal(&b);
}

void mgmt_hub_status(struct hs_request *r, void *ud)
{
    forward(ud, r, "GET", "/status", 5000);
}

/* /modules/{m}/twin → the hub's /twins/{m}[suffix], for a module of the deployment. */
static void forward_twin(struct hs_request *r, void *ud, const char *method, const char *suffix)
{
    struct ledged *d = ud;
    const char *m = hs_request_param(r, 0);
    if (!known_module(d, r, m))
        return;
    _cleanup_free_ char *e = enc(m);
    char path[600];
    snprintf(path, sizeof(path), "/twins/%s%s", e, suffix);
    forward(d, r, method, path, 5000);
}

void mgmt_twin_get(struct hs_request *r, void *ud)
{
    forward_twin(r, ud, "GET", "");
}
void mgmt_twin_patch(struct hs_request *r, void *ud)
{
    forward_twin(r, ud, "PATCH", "/desired");
}

/* A leaf device this gateway keeps (devices.c), as its record spells the id; NULL (404 answered)
 * otherwise. */
static const char *known_device(struct ledged *d, struct hs_request *r, const char *id)
{
    const char *canonical = NULL;
    if (!devices_known(d, id, &canonical) || !canonical) {
        hs_reply_error(r, 404, "no leaf device \"%s\" (ledge device list)", id);
        return NULL;
    }
    return canonical;
}

/* /devices/{d}/twin → the hub's /devices/{d}/twin[suffix]. */
static void forward_device_twin(struct hs_request *r, void *ud, const char *method,
                                const char *suffix)
{
    struct ledged *d = ud;
    const char *id = known_device(d, r, hs_request_param(r, 0));
    if (!id)
        return;
    _cleanup_free_ char *e = enc(id);
    char path[600];
    snprintf(path, sizeof(path), "/devices/%s/twin%s", e, suffix);
    forward(d, r, method, path, 5000);
}

void mgmt_device_twin_get(struct hs_request *r, void *ud)
{
    forward_device_twin(r, ud, "GET", "");
}
void mgmt_device_twin_patch(struct hs_request *r, void *ud)
{
    forward_device_twin(r, ud, "PATCH", "/desired");
}

/* ?timeout= of an invoke: whole seconds 1-300 (default 30), or -1 with 400 answered. */
static long long invoke_timeout(struct hs_request *r)
{
    const char *t = hs_request_query(r, "timeout");
    long long secs = 30;
    if (t && (lstr_to_i64(t, &secs) < 0 || secs < 1 || secs > 300)) {
        hs_reply_error(r, 400, "timeout: expected whole seconds 1-300, got \"%s\"", t);
        return -1;
    }
    return secs;
}

void mgmt_device_invoke(struct hs_request *r, void *ud)
{
    struct ledged *d = ud;
    const char *id = known_device(d, r, hs_request_param(r, 0));
    if (!id)
        return;
    long long secs = invoke_timeout(r);
    if (secs < 0)
        return;
    _cleanup_free_ char *ed = enc(id), *ex = enc(hs_request_param(r, 1));
    char path[1200];
    snprintf(path, sizeof(path), "/devices/%s/methods/%s?timeout=%lld", ed, ex, secs);
    forward(d, r, "POST", path, (long)(secs + 5) * 1000);
}

/* A child edge device's module (nested edge, docs/nested.md): /devices/{d}/modules/{m}/... →
 * the hub's /devices/{d}/modules/{m}/<rest>. */
static void forward_child(struct hs_request *r, struct ledged *d, const char *method,
                          const char *rest, long timeout_ms)
{
    const char *id = known_device(d, r, hs_request_param(r, 0));
    if (!id)
        return;
    _cleanup_free_ char *ed = enc(id), *em = enc(hs_request_param(r, 1));
    char path[1400];
    snprintf(path, sizeof(path), "/devices/%s/modules/%s/%s", ed, em, rest);
    forward(d, r, method, path, timeout_ms);
}

void mgmt_child_twin_get(struct hs_request *r, void *ud)
{
    forward_child(r, ud, "GET", "twin", 5000);
}

void mgmt_child_twin_patch(struct hs_request *r, void *ud)
{
    forward_child(r, ud, "PATCH", "twin/desired", 5000);
}

void mgmt_child_invoke(struct hs_request *r, void *ud)
{
    long long secs = invoke_timeout(r);
    if (secs < 0)
        return;
    _cleanup_free_ char *ex = enc(hs_request_param(r, 2));
    char rest[600];
    snprintf(rest, sizeof(rest), "methods/%s?timeout=%lld", ex, secs);
    forward_child(r, ud, "POST", rest, (long)(secs + 5) * 1000);
}

void mgmt_invoke(struct hs_request *r, void *ud)
{
    struct ledged *d = ud;
    const char *m = hs_request_param(r, 0);
    if (!known_module(d, r, m))
        return;
    const char *t = hs_request_query(r, "timeout");
    long long secs = 30;
    if (t && (lstr_to_i64(t, &secs) < 0 || secs < 1 || secs > 300)) {
        hs_reply_error(r, 400, "timeout: expected whole seconds 1-300, got \"%s\"", t);
        return;
    }
    _cleanup_free_ char *em = enc(m), *ex = enc(hs_request_param(r, 1));
    char path[1200];
    snprintf(path, sizeof(path), "/methods/%s/%s?timeout=%lld", em, ex, secs);
    forward(d, r, "POST", path, (long)(secs + 5) * 1000);
}

void mgmt_token(struct hs_request *r, void *ud)
{
    struct ledged *d = ud;
    const char *m = hs_request_param(r, 0);
    if (!known_module(d, r, m))
        return;
    const char *gen = agent_module_generation(d->agent, m);
    if (!gen) {
        hs_reply_error(r, 409, "module \"%s\" has no identity yet (not created)", m);
        return;
    }
    long long ttl = 3600;
    const char *t = hs_request_query(r, "ttl");
    if (t && (lstr_to_i64(t, &ttl) < 0 || ttl < 1 || ttl > IDENTITY_MODULE_TOKEN_TTL_MAX_S)) {
        hs_reply_error(r, 400, "ttl: expected seconds 1-%lld, got \"%s\"",
                       IDENTITY_MODULE_TOKEN_TTL_MAX_S, t);
        return;
    }
    const char *host = hs_request_query(r, "host");
    if (!host)
        host = d->cfg.device.iothub_hostname;
    struct identity_module_credentials cred;
    uint64_t expiry = (uint64_t)(ltime_now_ms() / 1000 + ttl);
    if (identity_module_credentials(d->keys, host, d->cfg.device.id, m, gen, expiry, &cred) < 0) {
        hs_reply_error(r, 500, "cannot make the token");
        return;
    }
    log_info(COMP, "minted a %lld s SAS token for module %s", ttl, m);
    hs_reply_json(r, 200,
                  json_pack("{s:s, s:s, s:s, s:I}", "token", cred.token, "clientId", cred.client_id,
                            "username", cred.username, "expiry", (json_int_t)cred.expiry));
    identity_module_credentials_clear(&cred);
}
