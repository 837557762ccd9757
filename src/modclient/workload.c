/* workload.c — the two workload API calls a module makes (GET /trust-bundle, POST .../sign), as
 * HTTP/1.1 over the module's unix socket on the client's libevent loop. One request per
 * connection (Connection: close); http_parser frames the response. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "base/crypto.h"
#include "base/json.h"
#include "base/str.h"
#include "modclient-internal.h"

/* ------------------------------------------------------------------ response reader */

static int on_header(http_parser *p, const char *at, size_t n)
{
    struct mc_http_reader *r = p->data;
    r->header_bytes += n;
    return r->header_bytes > MC_HTTP_MAX_HEADER;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct mc_http_reader *r = p->data;
    if (lbuf_append(&r->body, at, n) < 0) {
        r->failed = true;
        return 1;
    }
    return 0;
}

static int on_complete(http_parser *p)
{
    struct mc_http_reader *r = p->data;
    r->complete = true;
    /* Stop here: anything after the response is not ours to read. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings reader_settings = {
    .on_status = on_header,
    .on_header_field = on_header,
    .on_header_value = on_header,
    .on_body = on_body,
    .on_message_complete = on_complete,
};

void mc_http_reader_init(struct mc_http_reader *r)
{
    memset(r, 0, sizeof(*r));
    http_parser_init(&r->p, HTTP_RESPONSE);
    r->p.data = r;
    r->body.max = MC_HTTP_MAX_RESPONSE;
}

int mc_http_reader_feed(struct mc_http_reader *r, const char *data, size_t n, struct lerr *e)
{
    if (r->complete)
        return 1;
    size_t used = http_parser_execute(&r->p, &reader_settings, data, n);
    if (r->complete)
        return 1;
    if (r->failed)
        return lerr_set(e, -E2BIG, "workload reply larger than %u bytes", MC_HTTP_MAX_RESPONSE);
    enum http_errno err = HTTP_PARSER_ERRNO(&r->p);
    if (err == HPE_CB_status || err == HPE_CB_header_field || err == HPE_CB_header_value)
        return lerr_set(e, -E2BIG, "workload reply headers larger than %d bytes",
                        MC_HTTP_MAX_HEADER);
    if (err != HPE_OK || used != n)
        return lerr_set(e, -EBADMSG, "malformed workload reply: %s", http_errno_description(err));
    if (n == 0)
        return lerr_set(e, -EBADMSG, "workload reply cut short");
    return 0;
}

int mc_http_reader_status(const struct mc_http_reader *r)
{
    return (int)r->p.status_code;
}

void mc_http_reader_done(struct mc_http_reader *r)
{
    lbuf_free(&r->body);
}

/* ------------------------------------------------------------------ workload replies */

static int reply_json(int status, const char *body, size_t n, json_t **ret, struct lerr *e)
{
    json_t *j = NULL;
    struct lerr pe = {0};
    int r = n ? ljson_parse(body, n, &j, &pe) : -EINVAL;
    if (status < 200 || status > 299) {
        const char *msg = r == 0 ? ljson_str(j, "message") : NULL;
        int code = status == 401 || status == 403 ? -EACCES : status == 404 ? -ENOENT : -EIO;
        lerr_set(e, code, "workload API answered %d%s%s", status, msg ? ": " : "", msg ? msg : "");
        json_decref(j);
        return code;
    }
    if (r < 0 || !json_is_object(j)) {
        json_decref(j);
        return lerr_set(e, -EBADMSG, "workload reply: %s",
                        r < 0 && n ? pe.msg : "expected a JSON object");
    }
    *ret = j;
    return 0;
}

static int reply_string(int status, const char *body, size_t n, const char *key, char **ret,
                        struct lerr *e)
{
    _cleanup_json_ json_t *j = NULL;
    int r = reply_json(status, body, n, &j, e);
    if (r < 0)
        return r;
    const char *v = ljson_str(j, key);
    if (lstr_empty(v))
        return lerr_set(e, -EBADMSG, "workload reply: no \"%s\" string", key);
    char *s = strdup(v);
    if (!s)
        return -ENOMEM;
    *ret = s;
    return 0;
}

int mc_workload_trust_bundle(int status, const char *body, size_t n, char **ret_pem, struct lerr *e)
{
    char *pem = NULL;
    int r = reply_string(status, body, n, "certificate", &pem, e);
    if (r < 0)
        return r;
    if (!strstr(pem, "-----BEGIN CERTIFICATE-----")) {
        free(pem);
        return lerr_set(e, -EBADMSG, "workload trust bundle: no PEM certificate");
    }
    *ret_pem = pem;
    return 0;
}

int mc_workload_digest(int status, const char *body, size_t n, char **ret_digest_b64,
                       struct lerr *e)
{
    char *d = NULL;
    int r = reply_string(status, body, n, "digest", &d, e);
    if (r < 0)
        return r;
    /* It goes into a token: it must at least be base64 of an HMAC-SHA256. */
    struct lbuf raw = LBUF_INIT;
    r = lcrypto_b64_decode(d, strlen(d), &raw);
    bool ok = r == 0 && raw.len == LCRYPTO_SHA256_LEN;
    lbuf_free(&raw);
    if (!ok) {
        free(d);
        return lerr_set(e, -EBADMSG, "workload sign reply: digest is not base64 of 32 bytes");
    }
    *ret_digest_b64 = d;
    return 0;
}

int mc_workload_socket_path(const char *uri, char **ret, struct lerr *e)
{
    if (!lstr_startswith(uri, "unix://"))
        return lerr_set(e, -EPROTONOSUPPORT,
                        "IOTEDGE_WORKLOADURI: \"%s\": only unix:// sockets are supported", uri);
    const char *p = uri + strlen("unix://");
    if (p[0] != '/' || strlen(p) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return lerr_set(e, -EINVAL,
                        "IOTEDGE_WORKLOADURI: \"%s\": expected unix:///absolute/path (at most "
                        "107 bytes)",
                        uri);
    char *s = strdup(p);
    if (!s)
        return -ENOMEM;
    *ret = s;
    return 0;
}

/* ------------------------------------------------------------------ requests */

struct mc_http {
    struct bufferevent *bev;
    struct event *timer;
    struct mc_http_reader rd;
    mc_http_fn cb;
    void *ud;
};

static void http_free(struct mc_http *h)
{
    if (h->bev)
        bufferevent_free(h->bev);
    if (h->timer)
        event_free(h->timer);
    mc_http_reader_done(&h->rd);
    free(h);
}

static void http_finish(struct mc_http *h, int result, const char *why)
{
    mc_http_fn cb = h->cb;
    void *ud = h->ud;
    int status = mc_http_reader_status(&h->rd);
    /* The callback may start the next request; this one is gone before it runs. */
    struct lbuf body = h->rd.body;
    h->rd.body = (struct lbuf)LBUF_INIT;
    http_free(h);
    cb(ud, result, result == 0 ? status : 0, body.data ? body.data : "", body.len, why);
    lbuf_free(&body);
}

/* Feed what arrived; true when the request finished (and h is gone). */
static bool http_consume(struct mc_http *h)
{
    struct evbuffer *in = bufferevent_get_input(h->bev);
    struct lerr e = {0};
    while (evbuffer_get_length(in)) {
        size_t n = evbuffer_get_contiguous_space(in);
        const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
        int r = mc_http_reader_feed(&h->rd, p, n, &e);
        evbuffer_drain(in, n);
        if (r != 0) {
            http_finish(h, r < 0 ? r : 0, r < 0 ? e.msg : NULL);
            return true;
        }
    }
    return false;
}

static void http_read(struct bufferevent *bev, void *arg)
{
    http_consume(arg);
}

static void http_event(struct bufferevent *bev, short what, void *arg)
{
    struct mc_http *h = arg;
    if (what & BEV_EVENT_EOF) {
        if (http_consume(h))
            return;
        struct lerr e = {0};
        int r = mc_http_reader_feed(&h->rd, NULL, 0, &e);
        http_finish(h, r < 0 ? r : 0, r < 0 ? e.msg : NULL);
        return;
    }
    int err = EVUTIL_SOCKET_ERROR();
    char why[160];
    snprintf(why, sizeof(why), "workload socket: %s", strerror(err > 0 ? err : ECONNRESET));
    http_finish(h, err > 0 ? -err : -ECONNRESET, why);
}

static void http_timeout(evutil_socket_t fd, short what, void *arg)
{
    http_finish(arg, -ETIMEDOUT, "workload API did not answer in time");
}

int mc_http_request(struct event_base *base, const char *socket_path, const char *method,
                    const char *target, const char *body, size_t len, int timeout_ms, mc_http_fn cb,
                    void *ud, struct mc_http **ret)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (lstr_copy(sa.sun_path, sizeof(sa.sun_path), socket_path) < 0)
        return -ENAMETOOLONG;
    /* A unix socket connects (or fails) at once: no need to wait for it on the loop. */
    _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return neg_errno();
    struct mc_http *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    mc_http_reader_init(&h->rd);
    h->cb = cb;
    h->ud = ud;
    h->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (h->bev)
        fd = -1;
    h->timer = evtimer_new(base, http_timeout, h);
    if (!h->bev || !h->timer) {
        http_free(h);
        return -ENOMEM;
    }
    bufferevent_setcb(h->bev, http_read, NULL, http_event, h);
    struct evbuffer *out = bufferevent_get_output(h->bev);
    int r = evbuffer_add_printf(out,
                                "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                                "Accept: application/json\r\n",
                                method, target);
    if (r >= 0 && body)
        r = evbuffer_add_printf(out, "Content-Type: application/json\r\nContent-Length: %zu\r\n",
                                len);
    if (r >= 0)
        r = evbuffer_add(out, "\r\n", 2);
    if (r >= 0 && body && len)
        r = evbuffer_add(out, body, len);
    if (r < 0) {
        http_free(h);
        return -ENOMEM;
    }
    bufferevent_enable(h->bev, EV_READ | EV_WRITE);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evtimer_add(h->timer, &tv);
    *ret = h;
    return 0;
}

void mc_http_cancel(struct mc_http *h)
{
    if (h)
        http_free(h);
}
