/* registry_proxy.c — the parent side of nested edge's images (docs/registry-proxy.md): the
 * registry API v2 served on registry_proxy.listen over TLS with the device's server certificate
 * and forwarded to registry_proxy.target, as IoT Edge's API proxy forwards /v2 on 443. Pulls
 * only (GET, HEAD); request and response headers pass through untouched but for HTTP's
 * hop-by-hop ones (Authorization and WWW-Authenticate included: the credentials are the target's);
 * redirects (blob storage) are followed here, since a child cannot reach what its parent's
 * registry points at; so is a Bearer challenge's token realm: the challenge the child gets names
 * the proxy (TOKEN_PATH<n>), whose requests go on to the realm the target named, so a child
 * needs no route to the token server either; bodies are relayed with bounded memory: the
 * transfer from the target is paused while more than RELAY_HIGH_WATER bytes wait for the child. */
#include <errno.h>
#include <inttypes.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/macro.h"
#include "base/str.h"
#include "engine/engine.h"
#include "image/auth.h"
#include "ledged.h"
#include "log/log.h"
#include "net/http_client.h"
#include "net/tcp.h"

#define COMP "registry-proxy"
#define RELAY_HIGH_WATER (1u << 20) /* bytes queued for the child before the target is paused */
#define RELAY_MAX_HEADERS 64        /* response headers passed back, as the server takes */
#define RELAY_MAX_HEADER_BYTES (32u << 10)
/* A token realm the target named, as the child sees it: https://<the child's Host>/ledge/token/N,
 * N the realm's place among those learned (at most PROXY_MAX_REALMS, never reused: a number keeps
 * naming one realm while ledged runs). */
#define TOKEN_PATH "/ledge/token/"
#define PROXY_MAX_REALMS 8
#define PROXY_MAX_HOST 256

struct registry_proxy {
    struct ledged *d;
    struct hs_server *srv;
    SSL_CTX *ctx;
    struct hc_client *hc;
    char *target; /* "https://host:port", $upstream resolved */
    char *ca_file;
    size_t active, max_active;
    long idle_s;
    struct relay *relays;
    char *realms[PROXY_MAX_REALMS]; /* token realms the target's challenges named */
    size_t n_realms;
    bool realms_full_logged;
};

struct relay {
    struct registry_proxy *p;
    struct hs_request *req; /* NULL once the child went */
    struct hc_transfer *t;  /* NULL once the target's answer ended */
    bool started;           /* the reply's head went to the child */
    int status;             /* of the response being received (redirects reset it) */
    int64_t length;         /* its Content-Length, -1 when none */
    char *content_type;
    char *names[RELAY_MAX_HEADERS], *values[RELAY_MAX_HEADERS];
    size_t n_headers, header_bytes;
    bool header_overflow;
    uint64_t bytes;
    char host[PROXY_MAX_HOST]; /* the child's Host, for a token realm it is to reach us at */
    char what[200];            /* "GET /v2/..." for log lines */
    struct relay *next, *prev;
};

/* HTTP/1.1's hop-by-hop headers (RFC 9110 7.6.1) and the framing this side sets itself. */
static bool hop_by_hop(const char *name, size_t n)
{
    static const char *const names[] = {"Connection",
                                        "Keep-Alive",
                                        "Transfer-Encoding",
                                        "TE",
                                        "Trailer",
                                        "Upgrade",
                                        "Proxy-Authorization",
                                        "Proxy-Authenticate",
                                        "Proxy-Connection",
                                        "Content-Length",
                                        "Host",
                                        "Expect"};
    for (size_t i = 0; i < ARRAY_SIZE(names); i++)
        if (strlen(names[i]) == n && strncasecmp(names[i], name, n) == 0)
            return true;
    return false;
}

static void relay_clear_headers(struct relay *x)
{
    for (size_t i = 0; i < x->n_headers; i++) {
        free(x->names[i]);
        free(x->values[i]);
    }
    x->n_headers = x->header_bytes = 0;
    free(x->content_type);
    x->content_type = NULL;
    x->length = -1;
    x->status = 0;
}

static void relay_free(struct relay *x)
{
    struct registry_proxy *p = x->p;
    if (x->prev)
        x->prev->next = x->next;
    else
        p->relays = x->next;
    if (x->next)
        x->next->prev = x->prev;
    if (x->t)
        hc_cancel(x->t);
    if (x->req)
        hs_request_on_abort(x->req, NULL, NULL);
    relay_clear_headers(x);
    p->active--;
    free(x);
}

static void on_client_gone(struct hs_request *r, void *ud)
{
    struct relay *x = ud;
    log_info(COMP, "%s: the client went after %" PRIu64 " bytes", x->what, x->bytes);
    x->req = NULL;
    relay_free(x);
}

static void on_drained(struct hs_request *r, void *ud)
{
    struct relay *x = ud;
    if (x->t)
        hc_resume(x->t);
}

/* The index of a token realm the target named, learned on first sight; -ENOSPC past
 * PROXY_MAX_REALMS. */
static int realm_index(struct registry_proxy *p, const char *realm)
{
    for (size_t i = 0; i < p->n_realms; i++)
        if (strcmp(p->realms[i], realm) == 0)
            return (int)i;
    if (p->n_realms == PROXY_MAX_REALMS)
        return -ENOSPC;
    if (!(p->realms[p->n_realms] = strdup(realm)))
        return -ENOMEM;
    log_info(COMP, "the target's token realm %s is served to children as %s%zu", realm, TOKEN_PATH,
             p->n_realms);
    return (int)p->n_realms++;
}

/* A Bearer challenge from the target with its realm pointed at this proxy, in out; < 0 to pass
 * the value on as it came (Basic, no usable realm, no Host to name us by). */
static int relay_challenge(struct relay *x, const char *value, size_t vl, struct lbuf *out)
{
    struct registry_proxy *p = x->p;
    struct img_challenge c;
    if (!x->host[0] || img_challenge_parse(value, vl, &c) < 0 || c.scheme != IMG_AUTH_BEARER ||
        (!lstr_startswith_ci(c.realm, "https://") && !lstr_startswith_ci(c.realm, "http://")))
        return -EINVAL;
    int idx = realm_index(p, c.realm);
    if (idx == -ENOSPC && !p->realms_full_logged) {
        p->realms_full_logged = true;
        log_warn(COMP,
                 "%s: the target names more than %d token realms: %s is passed on as it is (the "
                 "child must reach it itself)",
                 x->what, PROXY_MAX_REALMS, c.realm);
    }
    if (idx < 0)
        return idx;
    char realm[PROXY_MAX_HOST + 64], old[IMG_AUTH_PARAM_MAX];
    snprintf(realm, sizeof(realm), "https://%s" TOKEN_PATH "%d", x->host, idx);
    return img_challenge_rewrite_realm(value, vl, realm, out, old);
}

static void on_header(void *ud, const char *name, size_t nl, const char *value, size_t vl)
{
    struct relay *x = ud;
    if (!name) { /* a new response: a redirect being followed, or an interim 1xx */
        relay_clear_headers(x);
        x->status = hc_status_line_code(value, vl);
        return;
    }
    if (nl == 14 && strncasecmp(name, "Content-Length", 14) == 0) {
        char num[24];
        unsigned long long v;
        if (vl < sizeof(num)) {
            memcpy(num, value, vl);
            num[vl] = 0;
            if (lstr_to_u64(num, &v) == 0 && v <= INT64_MAX)
                x->length = (int64_t)v;
        }
        return;
    }
    if (nl == 12 && strncasecmp(name, "Content-Type", 12) == 0) {
        free(x->content_type);
        x->content_type = strndup(value, vl);
        return;
    }
    if (hop_by_hop(name, nl))
        return;
    _cleanup_lbuf_ struct lbuf challenge = LBUF_INIT;
    if (nl == 16 && strncasecmp(name, "WWW-Authenticate", 16) == 0 &&
        relay_challenge(x, value, vl, &challenge) == 0) {
        value = challenge.data;
        vl = challenge.len;
    }
    if (x->n_headers == RELAY_MAX_HEADERS || x->header_bytes + nl + vl > RELAY_MAX_HEADER_BYTES) {
        x->header_overflow = true;
        return;
    }
    char *n = strndup(name, nl), *v = strndup(value, vl);
    if (!n || !v) {
        free(n);
        free(v);
        x->header_overflow = true;
        return;
    }
    x->names[x->n_headers] = n;
    x->values[x->n_headers++] = v;
    x->header_bytes += nl + vl;
}

/* The head of the reply: the target's status and headers, the body framed by its length. */
static int relay_start(struct relay *x, int status)
{
    if (x->header_overflow) {
        log_warn(COMP, "%s: the target's answer has too many headers (at most %d, %u bytes)",
                 x->what, RELAY_MAX_HEADERS, RELAY_MAX_HEADER_BYTES);
        hs_reply_error(x->req, 502, "the registry's answer has too many headers");
        x->req = NULL;
        return -E2BIG;
    }
    for (size_t i = 0; i < x->n_headers; i++)
        hs_reply_header(x->req, x->names[i], x->values[i]);
    bool bodiless = status == 204 || status == 304 || (status >= 100 && status < 200);
    int r = x->length >= 0 || bodiless
                ? hs_stream_start_sized(x->req, status, x->content_type,
                                        x->length >= 0 ? (uint64_t)x->length : 0)
                : hs_stream_start(x->req, status, x->content_type);
    x->started = r == 0;
    return r;
}

static int on_data(void *ud, const char *data, size_t n)
{
    struct relay *x = ud;
    if (!x->req)
        return -EPIPE;
    if (!x->started && relay_start(x, x->status ? x->status : 200) < 0)
        return -EPROTO;
    if (hs_stream_queued(x->req) > RELAY_HIGH_WATER)
        return HC_DATA_PAUSE; /* on_drained resumes it */
    int r = hs_stream_write(x->req, data, n);
    if (r < 0)
        return r;
    x->bytes += n;
    return 0;
}

static void on_done(void *ud, int result, long status, struct lbuf *body)
{
    struct relay *x = ud;
    x->t = NULL;
    if (!x->req) {
        relay_free(x);
        return;
    }
    struct hs_request *req = x->req;
    hs_request_on_abort(req, NULL, NULL);
    x->req = NULL;
    if (result < 0 && !x->started) {
        log_warn(COMP, "%s: the target %s did not answer: %s", x->what, x->p->target,
                 strerror(-result));
        hs_reply_error(req, result == -ETIMEDOUT ? 504 : 502, "the registry %s did not answer: %s",
                       x->p->target, strerror(-result));
    } else if (result < 0) {
        log_warn(COMP, "%s: cut after %" PRIu64 " bytes: %s", x->what, x->bytes, strerror(-result));
        hs_stream_abort(req); /* the child sees the body cut, never a complete one */
    } else {
        x->req = req;
        if (!x->started && relay_start(x, (int)status) < 0) {
            relay_free(x);
            return;
        }
        x->req = NULL;
        log_debug(COMP, "%s: %d, %" PRIu64 " bytes", x->what, x->status ? x->status : (int)status,
                  x->bytes);
        hs_stream_end(req);
    }
    relay_free(x);
}

/* /v2 or /v2/..., printable, no ".." segment: the registry API and nothing else of the target. */
static bool registry_api_target(const char *t)
{
    if (strncmp(t, "/v2", 3) != 0 || (t[3] && t[3] != '/' && t[3] != '?'))
        return false;
    for (const char *c = t; *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7f || *c == '\\')
            return false;
    size_t path_len = strcspn(t, "?");
    for (const char *s = strstr(t, "/.."); s && (size_t)(s - t) < path_len;
         s = strstr(s + 1, "/.."))
        if (s[3] == '/' || s[3] == '?' || s[3] == 0)
            return false;
    return true;
}

static void h_proxy(struct hs_request *r, void *ud)
{
    struct registry_proxy *p = ((struct ledged *)ud)->registry_proxy;
    const char *method = hs_request_method(r), *target = hs_request_target(r);
    if (!lstr_eq(method, "GET") && !lstr_eq(method, "HEAD")) {
        log_warn(COMP, "refused %s %.160s: pulls only (GET, HEAD)", method, target);
        hs_reply_header(r, "Allow", "GET, HEAD");
        hs_reply_error(r, 405, "this registry proxy serves pulls only");
        return;
    }
    _cleanup_free_ char *url = NULL;
    if (lstr_startswith(target, TOKEN_PATH)) {
        /* a token request for a realm the target named: on to that realm, query and all */
        const char *num = target + strlen(TOKEN_PATH);
        size_t digits = strspn(num, "0123456789");
        unsigned long long idx;
        char nbuf[8];
        bool ok = digits > 0 && digits < sizeof(nbuf) && (num[digits] == 0 || num[digits] == '?');
        if (ok) {
            memcpy(nbuf, num, digits);
            nbuf[digits] = 0;
            ok = lstr_to_u64(nbuf, &idx) == 0 && idx < p->n_realms;
        }
        if (!ok) {
            log_warn(COMP, "refused %s %.160s: no such token realm", method, target);
            hs_reply_error(r, 404, "no such token realm");
            return;
        }
        const char *realm = p->realms[idx], *query = num[digits] == '?' ? num + digits + 1 : "";
        url = lstr_printf("%s%s%s", realm, *query ? (strchr(realm, '?') ? "&" : "?") : "", query);
    } else if (!registry_api_target(target)) {
        log_warn(COMP, "refused %s %.160s: not the registry API (/v2/...)", method, target);
        hs_reply_error(r, 404, "only the registry API (/v2/) is served here");
        return;
    } else {
        url = lstr_printf("%s%s", p->target, target);
    }
    if (p->active >= p->max_active) {
        log_warn(COMP,
                 "refused %s %.160s: %zu requests in progress (registry_proxy.max_connections)",
                 method, target, p->active);
        hs_reply_header(r, "Retry-After", "1");
        hs_reply_error(r, 503, "too many requests in progress");
        return;
    }
    struct relay *x = calloc(1, sizeof(*x));
    if (!x || !url) {
        free(x);
        hs_reply_error(r, 500, "out of memory");
        return;
    }
    x->p = p;
    x->req = r;
    x->length = -1;
    snprintf(x->what, sizeof(x->what), "%s %.180s", method, target);
    /* the name the child reached us by (host[:port]), for the realms in challenges */
    const char *host = hs_request_header(r, "Host");
    if (host && strlen(host) < sizeof(x->host) &&
        strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]") ==
            strlen(host))
        lstr_copy(x->host, sizeof(x->host), host);
    /* the child's headers as they came, but for the hop-by-hop ones */
    char *hdrs[RELAY_MAX_HEADERS + 1];
    size_t n = 0;
    const char *name, *value;
    for (size_t i = 0; n < RELAY_MAX_HEADERS && hs_request_header_at(r, i, &name, &value); i++)
        if (!hop_by_hop(name, strlen(name)) && (hdrs[n] = lstr_printf("%s: %s", name, value)))
            n++;
    hdrs[n] = NULL;
    struct hc_request hr = {
        .method = method,
        .url = url,
        .headers = (const char *const *)hdrs,
        .connect_timeout_ms = 10000,
        .low_speed_time_s = p->idle_s,
        .on_data = on_data,
        .on_header = on_header,
        .on_done = on_done,
        .ud = x,
        .ca_file = p->ca_file,
        .follow_redirects = true,
        .http1_only = true, /* flow control: see hc_request */
    };
    p->active++;
    x->next = p->relays;
    if (p->relays)
        p->relays->prev = x;
    p->relays = x;
    x->t = hc_request(p->hc, &hr);
    for (size_t i = 0; i < n; i++)
        free(hdrs[i]);
    if (!x->t) {
        x->req = NULL;
        relay_free(x);
        hs_reply_error(r, 500, "cannot start the request to the registry");
        return;
    }
    hs_request_on_abort(r, on_client_gone, x);
    hs_stream_on_drain(r, on_drained, x);
}

static const struct hs_route routes[] = {
    {"GET", "/**", h_proxy}, {"HEAD", "/**", h_proxy},  {"POST", "/**", h_proxy},
    {"PUT", "/**", h_proxy}, {"PATCH", "/**", h_proxy}, {"DELETE", "/**", h_proxy},
};

/* registry_proxy.target with "$upstream:PORT" resolved to upstream.parent (a middle layer's
 * proxy forwards to its own parent's), "https://host:port" without a trailing slash. */
static char *resolve_target(struct ledged *d, struct lerr *err)
{
    const char *t = d->cfg.registry_proxy.target;
    size_t scheme = strstr(t, "://") ? (size_t)(strstr(t, "://") - t) + 3 : 0;
    char host[ENGINE_IMAGE_MAX];
    if (engine_upstream_resolve(d->cfg.upstream.parent, t + scheme, host, sizeof(host), err) < 0)
        return NULL;
    size_t n = strlen(host);
    if (n && host[n - 1] == '/')
        host[n - 1] = 0;
    return lstr_printf("%.*s%s", (int)scheme, t, host);
}

int registry_proxy_start(struct ledged *d)
{
    const struct config_registry_proxy *c = &d->cfg.registry_proxy;
    if (!c->listen || !c->target)
        return 0;
    struct registry_proxy *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    d->registry_proxy = p;
    p->d = d;
    p->max_active = (size_t)c->max_connections;
    p->idle_s = (long)(c->idle_timeout_ms / 1000);
    struct lerr err = {0};
    if (!(p->target = resolve_target(d, &err))) {
        log_error(COMP, "registry_proxy.target: %s; the registry proxy is off",
                  err.msg[0] ? err.msg : "out of memory");
        return 0;
    }
    bool upstream = engine_names_upstream(strstr(c->target, "://") + 3);
    const char *ca = c->target_ca_file ? c->target_ca_file
                     : upstream        ? d->cfg.upstream.ca_file
                                       : NULL;
    if (ca && !(p->ca_file = strdup(ca)))
        return -ENOMEM;
    int r = hc_client_new(d->base, &p->hc);
    if (r < 0 || (r = hs_server_new(d->base, routes, ARRAY_SIZE(routes), d, &p->srv)) < 0)
        return r;
    /* Like the dashboard, not worth failing ledged for: a busy port is logged and it stays off. */
    int fd = net_tcp_listen(c->listen, 64);
    if (fd < 0) {
        log_error(COMP, "cannot listen on %s: %s; the registry proxy is off", c->listen,
                  strerror(-fd));
        return 0;
    }
    if (!(p->ctx = ledged_tls_server_context(d, COMP))) {
        close(fd);
        log_error(COMP, "the registry proxy is off");
        return 0;
    }
    struct hs_limits l = HS_LIMITS_DEFAULT;
    /* room above max_connections for the refusals to be answered (and logged) by h_proxy */
    l.max_connections = p->max_active * 2 + 4;
    l.max_inflight = p->max_active * 2 + 4;
    l.max_body = 64u << 10; /* pulls carry no body; a push's first request gets its 405 */
    l.max_output = RELAY_HIGH_WATER * 4;
    l.request_timeout_ms = (int)c->idle_timeout_ms;
    if ((r = hs_server_listen_tls(p->srv, fd, p->ctx, &l, NULL)) < 0) {
        log_error(COMP, "cannot serve on %s: %s", c->listen, strerror(-r));
        return 0;
    }
    log_info(COMP, "serving the registry API on https://%s/v2/, forwarded to %s", c->listen,
             p->target);
    return 0;
}

void registry_proxy_certificates_changed(struct ledged *d)
{
    struct registry_proxy *p = d->registry_proxy;
    if (!p || !p->srv || !p->ctx)
        return;
    SSL_CTX *ctx = ledged_tls_server_context(d, COMP);
    if (!ctx)
        return;
    hs_server_set_tls(p->srv, ctx);
    SSL_CTX_free(p->ctx);
    p->ctx = ctx;
}

void registry_proxy_stop(struct ledged *d)
{
    struct registry_proxy *p = d->registry_proxy;
    if (!p)
        return;
    /* the server first: aborting its requests frees their relays */
    hs_server_free(p->srv);
    while (p->relays)
        relay_free(p->relays);
    hc_client_free(p->hc);
    SSL_CTX_free(p->ctx);
    free(p->target);
    free(p->ca_file);
    for (size_t i = 0; i < p->n_realms; i++)
        free(p->realms[i]);
    free(p);
    d->registry_proxy = NULL;
}
