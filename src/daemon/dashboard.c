/* dashboard.c — the web dashboard served by ledged (docs/dashboard.md): one HTTP listener
 * (plain on loopback, TLS with the device's server certificate elsewhere) whose filter lets
 * only the login page and its assets through without a session and checks Origin and the
 * session's CSRF token on every change; its /api/... routes are the management API's own
 * handlers (mgmt_route_table), so nothing is implemented twice. Also the management API's
 * /dashboard/tokens, which `ledge dashboard token` calls. */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "dashboard/session.h"
#include "dashboard/tokens.h"
#include "dashboard_internal.h"
#include "ledged.h"
#include "log/log.h"
#include "net/http_client.h"
#include "net/tcp.h"

#define COMP "dashboard"
#define MAX_ASSET (4 * 1024 * 1024)
#define CSP                                                                                        \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "              \
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

/* The management routes a dashboard session may use, under /api. Minting tokens, device keys,
 * module tokens and images stay on the management socket. */
static const char *const api_allow[] = {
    "GET /modules",
    "GET /modules/*",
    "POST /modules/*/start",
    "POST /modules/*/stop",
    "POST /modules/*/restart",
    "GET /modules/*/logs",
    "POST /deployment",
    "GET /deployment",
    "POST /deployment/rollback",
    "GET /deployments",
    "GET /deployments/*",
    "GET /modules/*/twin",
    "PATCH /modules/*/twin",
    "POST /modules/*/methods/*",
    "GET /devices", /* ids and auth kinds only: keys are GET /devices/{d}/keys, not here */
    "GET /devices/*/twin",
    "PATCH /devices/*/twin",
    "POST /devices/*/methods/*",
    "GET /hub/status",
    "GET /metrics/history",
    "GET /vms",
    "POST /vms",
    "GET /vms/*",
    "POST /vms/*/start",
    "POST /vms/*/stop",
    "POST /vms/*/restart",
    "POST /vms/*/reboot",
    "DELETE /vms/*",
    "GET /vms/*/ports",
    "POST /vms/*/ports",
    "POST /vms/*/ports/remove",
    "POST /vms/*/shares",
    "POST /vms/*/shares/remove",
    "POST /vms/*/resources",
    "GET /vms/*/console",
    "GET /systeminfo",
    "GET /status",
    "GET /check",
    "GET /systeminfo/supportbundle",
};

/* Answered without a session: the login page and what it loads. */
static bool is_public(const char *method, const char *path)
{
    if (lstr_eq(method, "POST"))
        return lstr_eq(path, "/login");
    return lstr_eq(method, "GET") &&
           (lstr_eq(path, "/login") || lstr_eq(path, "/login.js") || lstr_eq(path, "/style.css"));
}

static struct dashboard *B(void *ud)
{
    return ((struct ledged *)ud)->dashboard;
}

static bool filter(struct hs_request *r, void *ud)
{
    struct dashboard *b = B(ud);
    hs_reply_header(r, "X-Content-Type-Options", "nosniff");
    hs_reply_header(r, "X-Frame-Options", "DENY");
    hs_reply_header(r, "Referrer-Policy", "no-referrer");
    hs_reply_header(r, "Content-Security-Policy", CSP);
    hs_reply_header(r, "Cache-Control", "no-store");
    const char *method = hs_request_method(r), *path = hs_request_path(r);
    bool changes = dash_method_changes(method);
    /* Another ledge managing this one (dashboard_remote.c) sends one of our tokens as a bearer
     * credential on each call: no session, and no CSRF to fear (a browser never adds an
     * Authorization header by itself). */
    const char *auth = hs_request_header(r, "Authorization");
    if (auth && lstr_startswith(auth, "Bearer ")) {
        char id[DASH_TOKEN_ID_LEN + 1];
        if (!lstr_startswith(path, "/api/")) {
            hs_reply_error(r, 404, "a bearer token opens /api/... only");
            return false;
        }
        if (dash_tokens_verify(b->tokens, auth + strlen("Bearer "), ltime_now_ms(), id, NULL) < 0) {
            hs_reply_error(r, 401, "wrong or expired token");
            return false;
        }
        return true;
    }
    if (changes &&
        !dash_origin_ok(hs_request_header(r, "Origin"), hs_request_header(r, "Host"), b->tls)) {
        hs_reply_error(r, 403, "cross-origin request refused (Origin must be this dashboard)");
        return false;
    }
    if (is_public(method, path))
        return true;
    struct dash_session *s =
        dash_session_find(&b->sessions, hs_request_header(r, "Cookie"), ltime_now_ms());
    if (!s) {
        if (!changes && !lstr_startswith(path, "/api/")) {
            hs_reply_header(r, "Location", "/login");
            hs_reply(r, 303, "text/plain; charset=utf-8", "", 0);
        } else
            hs_reply_error(r, 401, "not logged in (or the session expired)");
        return false;
    }
    if (changes && !dash_csrf_ok(s, hs_request_header(r, DASH_CSRF_HEADER))) {
        hs_reply_error(r, 403, "missing or wrong " DASH_CSRF_HEADER);
        return false;
    }
    return true;
}

/* ------------------------------------------------------------------ the dashboard's own */

static void h_login(struct hs_request *r, void *ud)
{
    struct dashboard *b = B(ud);
    _cleanup_json_ json_t *body = NULL;
    if (hs_request_body_json(r, false, &body) < 0)
        return;
    char id[DASH_TOKEN_ID_LEN + 1];
    int64_t expires, now = ltime_now_ms();
    if (dash_tokens_verify(b->tokens, ljson_str(body, "token"), now, id, &expires) < 0) {
        log_warn(COMP, "login refused: wrong or expired token");
        hs_reply_error(r, 401, "wrong or expired token");
        return;
    }
    struct dash_session *s = dash_session_create(&b->sessions, id, expires, now);
    if (!s) {
        hs_reply_error(r, 500, "cannot make a session");
        return;
    }
    char cookie[256], when[LTIME_RFC3339_MAX];
    hs_reply_header(
        r, "Set-Cookie",
        dash_cookie_format(cookie, sizeof(cookie), s->id, (expires - now) / 1000, b->tls));
    log_info(COMP, "login with token %s", id);
    hs_reply_json(
        r, 200,
        json_pack("{s:s, s:s}", "csrf", s->csrf, "expiresAt", ltime_format_rfc3339(expires, when)));
}

static void h_logout(struct hs_request *r, void *ud)
{
    struct dashboard *b = B(ud);
    dash_session_end(&b->sessions, dash_session_find(&b->sessions, hs_request_header(r, "Cookie"),
                                                     ltime_now_ms()));
    char cookie[256];
    hs_reply_header(r, "Set-Cookie", dash_cookie_format(cookie, sizeof(cookie), "", 0, b->tls));
    hs_reply_empty(r, 204);
}

static void h_session(struct hs_request *r, void *ud)
{
    struct ledged *d = ud;
    struct dash_session *s =
        dash_session_find(&B(ud)->sessions, hs_request_header(r, "Cookie"), ltime_now_ms());
    char when[LTIME_RFC3339_MAX] = "";
    if (s)
        ltime_format_rfc3339(s->expires_ms, when);
    /* s is NULL for a bearer token (another ledge managing this one): no CSRF token then. */
    hs_reply_json(r, 200,
                  json_pack("{s:s, s:s, s:s, s:s, s:b}", "csrf", s ? s->csrf : "", "expiresAt",
                            when, "token", s ? s->token_id : "", "deviceId", d->cfg.device.id,
                            "tls", B(ud)->tls));
}

static long long meminfo_kib(const char *text, const char *key)
{
    const char *p = text ? strstr(text, key) : NULL;
    return p ? strtoll(p + strlen(key), NULL, 10) : -1;
}

/* CPU, memory and disk for the overview page. */
static void h_host(struct hs_request *r, void *ud)
{
    struct ledged *d = ud;
    _cleanup_free_ char *mem = NULL, *load = NULL, *up = NULL;
    lfs_read_file(d->cfg.check.meminfo, 65536, &mem, NULL);
    lfs_read_file("/proc/loadavg", 4096, &load, NULL);
    lfs_read_file("/proc/uptime", 4096, &up, NULL);
    double l1 = 0, l5 = 0, l15 = 0;
    if (load)
        sscanf(load, "%lf %lf %lf", &l1, &l5, &l15);
    struct statvfs vs;
    json_t *disk = json_null();
    if (statvfs(d->cfg.state_dir, &vs) == 0)
        disk = json_pack("{s:s, s:I, s:I}", "path", d->cfg.state_dir, "totalBytes",
                         (json_int_t)(vs.f_blocks * vs.f_frsize), "availableBytes",
                         (json_int_t)(vs.f_bavail * vs.f_frsize));
    hs_reply_json(r, 200,
                  json_pack("{s:I, s:[f,f,f], s:{s:I, s:I}, s:o, s:f}", "cpus",
                            (json_int_t)sysconf(_SC_NPROCESSORS_ONLN), "loadAverage", l1, l5, l15,
                            "memory", "totalBytes",
                            (json_int_t)meminfo_kib(mem, "MemTotal:") * 1024, "availableBytes",
                            (json_int_t)meminfo_kib(mem, "MemAvailable:") * 1024, "disk", disk,
                            "uptimeSeconds", up ? strtod(up, NULL) : 0.0));
}

static const char *content_type(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".json", "application/json"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(types); i++)
        if (lstr_endswith(path, types[i].ext))
            return types[i].type;
    return NULL;
}

/* Files of the assets folder; "/" is the app, "/login" the login page. No dot segments, no
 * names without a known type. */
static void h_static(struct hs_request *r, void *ud)
{
    struct dashboard *b = B(ud);
    const char *path = hs_request_path(r);
    if (dash_remote_proxy(r, ud))
        return;
    if (lstr_eq(path, "/") || lstr_eq(path, ""))
        path = "/index.html";
    else if (lstr_eq(path, "/login"))
        path = "/login.html";
    const char *type = content_type(path);
    bool ok = type && !strstr(path, "/.") && !strchr(path, '\\') && strlen(path) < 256;
    _cleanup_free_ char *file = ok ? lstr_printf("%s%s", b->assets, path) : NULL;
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    if (!file || lfs_read_file(file, MAX_ASSET, &text, &len) < 0) {
        hs_reply_error(r, 404, "no such page: %s", hs_request_path(r));
        return;
    }
    hs_reply(r, 200, type, text, len);
}

static const struct hs_route own_routes[] = {
    {"POST", "/login", h_login},
    {"POST", "/logout", h_logout},
    {"GET", "/api/session", h_session},
    {"GET", "/api/host", h_host},
    {"GET", "/api/remotes", dash_h_remotes},
    {"POST", "/api/remotes", dash_h_remote_add},
    {"DELETE", "/api/remotes/*", dash_h_remote_remove},
    {"GET", "/api/fleet", dash_h_fleet},
};

static int routes_build(struct dashboard *b)
{
    size_t n_mgmt;
    const struct hs_route *mgmt = mgmt_route_table(&n_mgmt);
    static const char *const proxied[] = {"POST", "PATCH", "PUT", "DELETE"};
    b->routes =
        calloc(ARRAY_SIZE(own_routes) + n_mgmt + 1 + ARRAY_SIZE(proxied), sizeof(*b->routes));
    if (!b->routes)
        return -ENOMEM;
    for (size_t i = 0; i < ARRAY_SIZE(own_routes); i++)
        b->routes[b->n_routes++] = own_routes[i];
    for (size_t i = 0; i < n_mgmt; i++) {
        char key[256];
        snprintf(key, sizeof(key), "%s %s", mgmt[i].method, mgmt[i].pattern);
        for (size_t j = 0; j < ARRAY_SIZE(api_allow); j++) {
            if (!lstr_eq(key, api_allow[j]))
                continue;
            char *pattern = lstr_printf("/api%s", mgmt[i].pattern);
            if (!pattern)
                return -ENOMEM;
            b->routes[b->n_routes++] = (struct hs_route){mgmt[i].method, pattern, mgmt[i].handler};
            b->n_api++;
        }
    }
    /* The catch-alls: GET serves the assets; every method proxies /api/remotes/{name}/api/... */
    b->routes[b->n_routes++] = (struct hs_route){"GET", "/**", h_static};
    for (size_t i = 0; i < ARRAY_SIZE(proxied); i++)
        b->routes[b->n_routes++] = (struct hs_route){proxied[i], "/**", dash_h_remote_proxy};
    return 0;
}

/* ------------------------------------------------------------------ TLS, assets */

SSL_CTX *ledged_tls_server_context(struct ledged *d, const char *comp)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (!d->hub_cert_path || SSL_CTX_use_certificate_chain_file(ctx, d->hub_cert_path) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, d->hub_key_path, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        unsigned long e = ERR_get_error();
        log_error(comp, "TLS: cannot use the device's server certificate %s: %s",
                  d->hub_cert_path ? d->hub_cert_path : "(none)",
                  e ? ERR_reason_error_string(e) : "unknown error");
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

void dashboard_certificates_changed(struct ledged *d)
{
    struct dashboard *b = d->dashboard;
    if (!b || !b->tls || !b->srv)
        return;
    SSL_CTX *ctx = ledged_tls_server_context(d, COMP);
    if (!ctx)
        return;
    hs_server_set_tls(b->srv, ctx);
    SSL_CTX_free(b->ctx);
    b->ctx = ctx;
}

static bool is_file(const char *p)
{
    return access(p, R_OK) == 0;
}

/* dashboard.assets, or www/ of a build tree beside ledged, or the installed folder. */
static char *assets_dir(struct ledged *d)
{
    if (d->cfg.dashboard.assets)
        return strdup(d->cfg.dashboard.assets);
    char self[4096], dir[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = 0;
        if (lfs_dirname(self, dir, sizeof(dir)) == 0) {
            _cleanup_free_ char *p = lstr_printf("%s/../dashboard/www", dir);
            _cleanup_free_ char *index = p ? lstr_printf("%s/index.html", p) : NULL;
            if (index && is_file(index))
                return realpath(p, NULL);
        }
    }
    return strdup(LEDGE_DASHBOARD_DIR);
}

/* ------------------------------------------------------------------ lifecycle */

int dashboard_start(struct ledged *d)
{
    struct dashboard *b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    d->dashboard = b;
    b->d = d;
    dash_sessions_init(&b->sessions, d->cfg.dashboard.session_idle_ms);
    _cleanup_free_ char *store = lstr_printf("%s/dashboard-tokens.json", d->cfg.state_dir);
    int r = store ? dash_tokens_open(store, &b->tokens) : -ENOMEM;
    if (r < 0) {
        log_error(COMP, "%s: %s", store ? store : "tokens", strerror(-r));
        return r;
    }
    if (!d->cfg.dashboard.enabled) {
        log_info(COMP, "off (dashboard.enabled: false)");
        return 0;
    }
    if ((r = routes_build(b)) < 0 || !(b->assets = assets_dir(d)))
        return r < 0 ? r : -ENOMEM;
    if ((r = dash_remotes_load(d, b)) < 0 || (r = hc_client_new(d->base, &b->hc)) < 0)
        return r;
    char host[64];
    int port;
    if (net_hostport_parse(d->cfg.dashboard.listen, host, sizeof(host), &port) < 0)
        return -EINVAL;
    b->tls = !net_host_is_loopback(host);
    if ((r = hs_server_new(d->base, b->routes, b->n_routes, d, &b->srv)) < 0)
        return r;
    hs_server_set_filter(b->srv, filter);
    /* The dashboard is not worth failing ledged for: a busy port is logged and it stays off. */
    int fd = net_tcp_listen(d->cfg.dashboard.listen, 64);
    if (fd < 0) {
        log_error(COMP, "cannot listen on %s: %s; the dashboard is off", d->cfg.dashboard.listen,
                  strerror(-fd));
        return 0;
    }
    struct hs_limits l = HS_LIMITS_DEFAULT;
    l.max_body = d->cfg.management.max_body;
    if (b->tls) {
        if (!(b->ctx = ledged_tls_server_context(d, COMP))) {
            close(fd);
            log_error(COMP, "the dashboard is off");
            return 0;
        }
        r = hs_server_listen_tls(b->srv, fd, b->ctx, &l, NULL);
    } else
        r = hs_server_listen_fd(b->srv, fd, &l, NULL);
    if (r < 0) {
        log_error(COMP, "cannot serve on %s: %s", d->cfg.dashboard.listen, strerror(-r));
        return 0;
    }
    log_info(COMP, "serving %s://%s/ from %s", b->tls ? "https" : "http", d->cfg.dashboard.listen,
             b->assets);
    return 0;
}

void dashboard_stop(struct ledged *d)
{
    struct dashboard *b = d->dashboard;
    if (!b)
        return;
    hs_server_free(b->srv);
    SSL_CTX_free(b->ctx);
    for (size_t i = ARRAY_SIZE(own_routes); b->routes && i < ARRAY_SIZE(own_routes) + b->n_api; i++)
        free((char *)b->routes[i].pattern);
    dash_fleet_free(b);
    dash_remotes_free(b);
    free(b->routes);
    dash_tokens_free(b->tokens);
    free(b->assets);
    free(b);
    d->dashboard = NULL;
}

/* ------------------------------------------------------------------ /dashboard/tokens */

void mgmt_dashboard_token_new(struct hs_request *r, void *ud)
{
    struct ledged *d = ud;
    struct dashboard *b = d->dashboard;
    _cleanup_json_ json_t *body = NULL;
    if (hs_request_body_json(r, true, &body) < 0)
        return;
    int64_t ttl = d->cfg.dashboard.token_lifetime_ms;
    const char *expires = ljson_str(body, "expires");
    if (expires && (ltime_parse_duration_ms(expires, &ttl) < 0 || ttl < 60000)) {
        hs_reply_error(r, 400, "expires: expected a duration of at least 1m like 12h, got \"%s\"",
                       expires);
        return;
    }
    char *token, id[DASH_TOKEN_ID_LEN + 1], when[LTIME_RFC3339_MAX];
    int64_t exp;
    int res = dash_tokens_issue(b->tokens, ltime_now_ms(), ttl, &token, id, &exp);
    if (res < 0) {
        hs_reply_error(r, 500, "cannot store the token: %s", strerror(-res));
        return;
    }
    char host[64];
    int port;
    bool tls = net_hostport_parse(d->cfg.dashboard.listen, host, sizeof(host), &port) == 0 &&
               !net_host_is_loopback(host);
    _cleanup_free_ char *url =
        lstr_printf("%s://%s/", tls ? "https" : "http", d->cfg.dashboard.listen);
    log_info(COMP, "token %s issued, expires %s", id, ltime_format_rfc3339(exp, when));
    hs_reply_json(r, 200,
                  json_pack("{s:s, s:s, s:s, s:s, s:b}", "token", token, "id", id, "expiresAt",
                            when, "url", url ? url : "", "enabled", d->cfg.dashboard.enabled));
    free(token);
}

void mgmt_dashboard_tokens(struct hs_request *r, void *ud)
{
    hs_reply_json(r, 200,
                  json_pack("{s:o}", "tokens", dash_tokens_json(B(ud)->tokens, ltime_now_ms())));
}

void mgmt_dashboard_token_revoke(struct hs_request *r, void *ud)
{
    struct dashboard *b = B(ud);
    const char *id = hs_request_param(r, 0); /* NULL on /dashboard/tokens: all of them */
    int n = dash_tokens_revoke(b->tokens, id);
    if (n < 0) {
        hs_reply_error(r, n == -ENOENT ? 404 : 500, "%s%s%s", n == -ENOENT ? "no token " : "",
                       n == -ENOENT ? id : "", n == -ENOENT ? "" : strerror(-n));
        return;
    }
    size_t ended = dash_sessions_revoke(&b->sessions, id);
    log_info(COMP, "revoked %d token(s) (%s), %zu session(s) ended", n, id ? id : "all", ended);
    hs_reply_json(r, 200,
                  json_pack("{s:i, s:I}", "revoked", n, "sessionsEnded", (json_int_t)ended));
}
