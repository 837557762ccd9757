/* dashboard_remote.c — remote management from the dashboard (docs/dashboard.md "Other devices"):
 * other ledge devices added by address and one of their dashboard tokens, reached over TLS with
 * the public key their dashboard presented when they were added pinned (trust on first use), and
 * proxied under /api/remotes/{name}/api/... to their own /api/..., authenticated with the token
 * as a bearer credential. The list lives in <state>/dashboard-remotes.json (0600: it holds the
 * tokens). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "dashboard_internal.h"
#include "log/log.h"
#include "net/http_client.h"
#include "net/tcp.h"

#define COMP "dashboard"
#define REMOTES_MAX 64
#define REMOTES_FILE_MAX (1024 * 1024)

struct remote_call {
    struct dashboard *b;
    struct hs_request *req;
    struct hc_transfer *t;
    bool started;
    char *name, *address, *token, *pin; /* adding one */
    struct remote_call *next, **pprev;
};

static char *store_path(struct ledged *d)
{
    return lstr_printf("%s/dashboard-remotes.json", d->cfg.state_dir);
}

int dash_remotes_load(struct ledged *d, struct dashboard *b)
{
    _cleanup_free_ char *path = store_path(d);
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    b->remotes = json_array();
    if (!path || !b->remotes)
        return -ENOMEM;
    int r = lfs_read_file(path, REMOTES_FILE_MAX, &text, &len);
    if (r == -ENOENT)
        return 0;
    json_t *o = r < 0 ? NULL : json_loadb(text, len, 0, NULL);
    json_t *list = json_object_get(o, "remotes");
    if (!json_is_array(list)) {
        log_error(COMP, "%s: %s; no remote devices", path, r < 0 ? strerror(-r) : "not valid");
        json_decref(o);
        return 0;
    }
    json_array_extend(b->remotes, list);
    json_decref(o);
    return 0;
}

static int remotes_save(struct ledged *d, struct dashboard *b)
{
    _cleanup_free_ char *path = store_path(d);
    json_t *o = json_pack("{s:O}", "remotes", b->remotes);
    _cleanup_free_ char *text = o ? ljson_dump(o) : NULL;
    json_decref(o);
    if (!path || !text)
        return -ENOMEM;
    return lfs_write_atomic(path, text, strlen(text), 0600);
}

static json_t *remote_find(struct dashboard *b, const char *name, size_t *ret_index)
{
    size_t i;
    json_t *e;
    json_array_foreach (b->remotes, i, e)
        if (name && lstr_eq(ljson_str(e, "name"), name)) {
            if (ret_index)
                *ret_index = i;
            return e;
        }
    return NULL;
}

/* What the page sees of one: never the token. */
static json_t *remote_public(const json_t *e)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s}", "name", ljson_str(e, "name"), "address",
                     ljson_str(e, "address"), "pin", ljson_str(e, "pin"), "deviceId",
                     ljson_str(e, "deviceId") ?: "", "addedAt", ljson_str(e, "addedAt") ?: "");
}

static bool name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_' || s[i] == '.'))
            return false;
    return true;
}

/* ADDR:PORT, [ADDR6]:PORT or HOSTNAME:PORT. */
static bool address_ok(const char *s)
{
    char host[64];
    int port;
    if (!s || strlen(s) > 255)
        return false;
    if (net_hostport_parse(s, host, sizeof(host), &port) == 0)
        return true;
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s)
        return false;
    for (const char *p = s; p < colon; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '.'))
            return false;
    unsigned long long v;
    return lstr_to_u64(colon + 1, &v) == 0 && v >= 1 && v <= 65535;
}

static void call_free(struct remote_call *c)
{
    if (!c)
        return;
    if (c->pprev) {
        *c->pprev = c->next;
        if (c->next)
            c->next->pprev = c->pprev;
    }
    free(c->name);
    free(c->address);
    if (c->token)
        lcrypto_wipe(c->token, strlen(c->token));
    free(c->token);
    free(c->pin);
    free(c);
}

static struct remote_call *call_new(struct dashboard *b, struct hs_request *r)
{
    struct remote_call *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->b = b;
    c->req = r;
    c->next = b->calls;
    if (b->calls)
        b->calls->pprev = &c->next;
    c->pprev = &b->calls;
    b->calls = c;
    return c;
}

/* The browser went away: the remote call with it. */
static void call_abort(struct hs_request *r, void *ud)
{
    (void)r;
    struct remote_call *c = ud;
    hc_cancel(c->t);
    call_free(c);
}

static const char *transport_error(int result)
{
    return result == -EKEYREJECTED
               ? "its TLS key is not the one pinned when it was added (a new certificate, or "
                 "another machine at that address: remove it and add it again if that is expected)"
               : strerror(-result);
}

/* ------------------------------------------------------------------ adding one */

static void add_peer_key(void *ud, const char *pin)
{
    struct remote_call *c = ud;
    free(c->pin);
    c->pin = strdup(pin);
}

static void add_done(void *ud, int result, long status, struct lbuf *body)
{
    struct remote_call *c = ud;
    struct hs_request *r = c->req;
    struct dashboard *b = c->b;
    c->t = NULL;
    hs_request_on_abort(r, NULL, NULL);
    if (result < 0) {
        hs_reply_error(r, 502, "cannot reach %s over TLS: %s", c->address, transport_error(result));
    } else if (status == 401) {
        hs_reply_error(r, 400, "%s refused the token (wrong, expired or revoked)", c->address);
    } else if (status != 200 || !c->pin) {
        hs_reply_error(r, 502, "%s answered %ld, not like a ledge dashboard", c->address, status);
    } else if (remote_find(b, c->name, NULL)) {
        hs_reply_error(r, 409, "a device named %s was added meanwhile", c->name);
    } else {
        json_t *info = json_loadb(body->data ? body->data : "", body->len, 0, NULL);
        char when[LTIME_RFC3339_MAX];
        json_t *e = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "name", c->name, "address",
                              c->address, "token", c->token, "pin", c->pin, "deviceId",
                              ljson_str(info, "deviceId") ?: "", "addedAt",
                              ltime_format_rfc3339(ltime_now_ms(), when));
        json_decref(info);
        int res = e ? json_array_append_new(b->remotes, e) : -1;
        if (res == 0 && (res = remotes_save(b->d, b)) < 0)
            json_array_remove(b->remotes, json_array_size(b->remotes) - 1);
        if (res < 0) {
            hs_reply_error(r, 500, "cannot store the device: %s", strerror(-res));
        } else {
            log_info(COMP, "remote device %s (%s, %s) added, key %s", c->name, c->address,
                     ljson_str(e, "deviceId"), c->pin);
            hs_reply_json(r, 201, remote_public(e));
        }
    }
    call_free(c);
}

void dash_h_remote_add(struct hs_request *r, void *ud)
{
    struct dashboard *b = ((struct ledged *)ud)->dashboard;
    _cleanup_json_ json_t *body = NULL;
    if (hs_request_body_json(r, false, &body) < 0)
        return;
    const char *name = ljson_str(body, "name"), *address = ljson_str(body, "address"),
               *token = ljson_str(body, "token");
    if (!name_ok(name)) {
        hs_reply_error(r, 400, "name: 1 to 64 letters, digits, '-', '_' or '.'");
        return;
    }
    if (!address_ok(address)) {
        hs_reply_error(r, 400, "address: expected HOST:PORT (its dashboard.listen), got \"%s\"",
                       address ? address : "");
        return;
    }
    if (!token || !lstr_startswith(token, "ldt_") || strlen(token) > 200) {
        hs_reply_error(r, 400, "token: a token `ledge dashboard token` printed on that device");
        return;
    }
    if (remote_find(b, name, NULL)) {
        hs_reply_error(r, 409, "a device named %s is already there", name);
        return;
    }
    if (json_array_size(b->remotes) >= REMOTES_MAX) {
        hs_reply_error(r, 409, "at most %d remote devices", REMOTES_MAX);
        return;
    }
    struct remote_call *c = call_new(b, r);
    _cleanup_free_ char *url = lstr_printf("https://%s/api/systeminfo", address);
    _cleanup_free_ char *auth = lstr_printf("Authorization: Bearer %s", token);
    if (!c || !url || !auth || !(c->name = strdup(name)) || !(c->address = strdup(address)) ||
        !(c->token = strdup(token))) {
        call_free(c);
        hs_reply_error(r, 500, "out of memory");
        return;
    }
    const char *headers[] = {auth, NULL};
    struct hc_request q = {
        .url = url,
        .headers = headers,
        .timeout_ms = 15000,
        .max_response = 65536,
        .tls_learn_key = true,
        .on_peer_key = add_peer_key,
        .on_done = add_done,
        .ud = c,
    };
    if (!(c->t = hc_request(b->hc, &q))) {
        call_free(c);
        hs_reply_error(r, 500, "cannot start the request to %s", address);
        return;
    }
    lcrypto_wipe(auth, strlen(auth));
    hs_request_on_abort(r, call_abort, c);
}

void dash_h_remotes(struct hs_request *r, void *ud)
{
    struct dashboard *b = ((struct ledged *)ud)->dashboard;
    json_t *list = json_array();
    size_t i;
    json_t *e;
    json_array_foreach (b->remotes, i, e)
        json_array_append_new(list, remote_public(e));
    hs_reply_json(r, 200, json_pack("{s:o}", "remotes", list));
}

void dash_h_remote_remove(struct hs_request *r, void *ud)
{
    struct ledged *d = ud;
    struct dashboard *b = d->dashboard;
    size_t i;
    const char *name = hs_request_param(r, 0);
    if (!remote_find(b, name, &i)) {
        hs_reply_error(r, 404, "no remote device %s", name);
        return;
    }
    json_t *e = json_incref(json_array_get(b->remotes, i));
    json_array_remove(b->remotes, i);
    int res = remotes_save(d, b);
    if (res < 0) {
        json_array_insert(b->remotes, i, e);
        json_decref(e);
        hs_reply_error(r, 500, "cannot store the list: %s", strerror(-res));
        return;
    }
    json_decref(e);
    log_info(COMP, "remote device %s removed", name);
    hs_reply_empty(r, 204);
}

/* ------------------------------------------------------------------ the proxy */

static void proxy_headers(void *ud, long status, const char *content_type)
{
    struct remote_call *c = ud;
    c->started = true;
    hs_stream_start(c->req, (int)status, content_type ? content_type : "application/octet-stream");
}

static int proxy_data(void *ud, const char *data, size_t n)
{
    struct remote_call *c = ud;
    if (!c->started)
        proxy_headers(c, 200, NULL);
    return hs_stream_write(c->req, data, n) < 0 ? -1 : 0;
}

static void proxy_done(void *ud, int result, long status, struct lbuf *body)
{
    (void)status;
    (void)body;
    struct remote_call *c = ud;
    c->t = NULL;
    hs_request_on_abort(c->req, NULL, NULL);
    if (c->started)
        hs_stream_end(c->req);
    else if (result < 0)
        hs_reply_error(c->req, 502, "remote device %s (%s): %s", c->name, c->address,
                       transport_error(result));
    else
        hs_reply_empty(c->req, (int)status);
    call_free(c);
}

/* /api/remotes/{name}/api/...: the same request to that device's /api/..., streamed back. */
bool dash_remote_proxy(struct hs_request *r, struct ledged *d)
{
    struct dashboard *b = d->dashboard;
    const char *target = hs_request_target(r);
    static const char prefix[] = "/api/remotes/";
    if (!lstr_startswith(target, prefix))
        return false;
    const char *name_start = target + strlen(prefix);
    const char *rest = strchr(name_start, '/');
    if (!rest || !lstr_startswith(rest, "/api/"))
        return false;
    _cleanup_free_ char *name = strndup(name_start, (size_t)(rest - name_start));
    json_t *e = remote_find(b, name, NULL);
    if (!e) {
        hs_reply_error(r, 404, "no remote device %s", name ? name : "");
        return true;
    }
    struct remote_call *c = call_new(b, r);
    _cleanup_free_ char *url = lstr_printf("https://%s%s", ljson_str(e, "address"), rest);
    _cleanup_free_ char *auth = lstr_printf("Authorization: Bearer %s", ljson_str(e, "token"));
    const char *ct = hs_request_header(r, "Content-Type");
    if (!c || !url || !auth || !(c->name = strdup(name)) ||
        !(c->address = strdup(ljson_str(e, "address")))) {
        call_free(c);
        hs_reply_error(r, 500, "out of memory");
        return true;
    }
    size_t n = 0;
    const char *body = hs_request_body(r, &n);
    const char *headers[] = {auth, NULL};
    struct hc_request q = {
        .method = hs_request_method(r),
        .url = url,
        .body = n ? body : NULL,
        .body_len = n,
        .content_type = ct,
        .headers = headers,
        .pinned_pubkey = ljson_str(e, "pin"),
        .on_headers = proxy_headers,
        .on_data = proxy_data,
        .on_done = proxy_done,
        .ud = c,
    };
    c->t = hc_request(b->hc, &q);
    lcrypto_wipe(auth, strlen(auth));
    if (!c->t) {
        call_free(c);
        hs_reply_error(r, 500, "cannot start the request to %s", name);
        return true;
    }
    hs_request_on_abort(r, call_abort, c);
    return true;
}

void dash_h_remote_proxy(struct hs_request *r, void *ud)
{
    if (!dash_remote_proxy(r, ud))
        hs_reply_error(r, 404, "no such page: %s", hs_request_path(r));
}

void dash_remotes_free(struct dashboard *b)
{
    while (b->calls) {
        struct remote_call *c = b->calls;
        if (c->t)
            hc_cancel(c->t);
        call_free(c);
    }
    hc_client_free(b->hc);
    b->hc = NULL;
    json_decref(b->remotes);
    b->remotes = NULL;
}
