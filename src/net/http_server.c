/* http_server.c — bounded HTTP/1.1 server over bufferevents and http-parser (see http_server.h).
 *
 * Connection state machine:
 *   READING  — feeding input to the parser; the deadline timer runs; errors answer 4xx and close.
 *   HANDLING — a complete request was dispatched; input is buffered (bounded by a read watermark)
 *              but not parsed, so requests on one connection are answered strictly in order.
 *   CLOSING  — the last reply is queued; the connection closes once the output drains.
 *   LINGER   — after an error reply to a request that was not read to its end (413, 503, 431):
 *              our side is shut down and whatever the client still sends is read and dropped
 *              for a moment, so it gets to read the reply instead of a reset.
 * A keep-alive reply returns the connection to READING through a deferred event, never by
 * recursion from inside a handler, and connections are only freed from event callbacks. */
#include "net/http_server.h"
#include "net/unix.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <http_parser.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/str.h"

#define HS_MAX_PARAMS 8
#define HS_MAX_HEADERS 64
#define HS_MAX_QUERY 32

enum conn_state { CONN_READING, CONN_HANDLING, CONN_CLOSING, CONN_LINGER };

struct hs_listener {
    struct hs_server *srv;
    struct evconnlistener *lev; /* NULL for an adopted single connection */
    char *path;
    struct hs_limits limits;
    void *data;
    size_t n_conns, n_inflight;
    struct hs_conn *conns;
    struct event *retry; /* re-enables accepting after EMFILE */
    bool adopted;
    SSL_CTX *tls; /* TLS on every connection (a reference held), or NULL */
    struct hs_listener *next;
};

struct hs_conn {
    struct hs_listener *l;
    struct bufferevent *bev;
    struct event *timer;
    struct event *resume; /* deferred: continue parsing after a keep-alive reply */
    http_parser parser;
    struct ucred peer;
    bool has_peer;
    enum conn_state state;
    bool in_message; /* parser has seen the start of a request */
    bool message_done;
    bool peer_eof;
    bool dead;   /* dropped from inside a call; freed by the resume event */
    bool linger; /* drain the client's unread input before closing (error replies) */
    size_t header_bytes;
    struct lbuf url;
    struct lbuf hfield, hvalue;
    bool last_was_value;
    char *hnames[HS_MAX_HEADERS], *hvalues[HS_MAX_HEADERS];
    size_t n_headers;
    int pending_error; /* status to answer after the parser stops (413/431/400) */
    struct lbuf body;
    struct hs_request *req;
    struct hs_conn *next, *prev;
};

struct hs_request {
    struct hs_conn *c;
    char method[16];
    char *target;
    char *path;
    char *params[HS_MAX_PARAMS];
    size_t n_params;
    char *qnames[HS_MAX_QUERY], *qvalues[HS_MAX_QUERY];
    size_t n_query;
    bool streaming;
    bool sized; /* streaming with a Content-Length: remaining bytes below */
    uint64_t remaining;
    bool keep_alive;
    struct lbuf headers; /* extra response header lines ("Name: value\r\n") */
    void (*on_abort)(struct hs_request *, void *);
    void *abort_ud;
    void (*on_drain)(struct hs_request *, void *);
    void *drain_ud;
};

struct hs_server {
    struct event_base *base;
    const struct hs_route *routes;
    size_t n_routes;
    void *userdata;
    hs_filter_fn filter;
    struct hs_listener *listeners;
};

static void conn_free(struct hs_conn *c, bool aborted);
static void conn_process_input(struct hs_conn *c);

const char *hs_status_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 426:
        return "Upgrade Required";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}

/* ---------------------------------------------------------------- request object */

static void request_free(struct hs_request *r)
{
    if (!r)
        return;
    free(r->target);
    free(r->path);
    lbuf_free(&r->headers);
    for (size_t i = 0; i < r->n_params; i++)
        free(r->params[i]);
    for (size_t i = 0; i < r->n_query; i++) {
        free(r->qnames[i]);
        free(r->qvalues[i]);
    }
    free(r);
}

static void conn_reset_message(struct hs_conn *c)
{
    lbuf_reset(&c->url);
    lbuf_reset(&c->hfield);
    lbuf_reset(&c->hvalue);
    lbuf_reset(&c->body);
    for (size_t i = 0; i < c->n_headers; i++) {
        free(c->hnames[i]);
        free(c->hvalues[i]);
    }
    c->n_headers = 0;
    c->header_bytes = 0;
    c->last_was_value = false;
    c->in_message = false;
    c->message_done = false;
    c->pending_error = 0;
}

/* ---------------------------------------------------------------- low-level output */

static void conn_write_head(struct hs_conn *c, int status, const char *content_type, bool chunked,
                            size_t len, bool keep_alive)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n", status, hs_status_reason(status));
    if (content_type)
        evbuffer_add_printf(out, "Content-Type: %s\r\n", content_type);
    if (chunked)
        evbuffer_add_printf(out, "Transfer-Encoding: chunked\r\n");
    else
        evbuffer_add_printf(out, "Content-Length: %zu\r\n", len);
    if (!keep_alive)
        evbuffer_add_printf(out, "Connection: close\r\n");
    if (c->req && c->req->headers.len)
        evbuffer_add(out, c->req->headers.data, c->req->headers.len);
    evbuffer_add(out, "\r\n", 2);
}

/* Answer an error from the server itself (parse errors, limits) and close. */
static void conn_reply_error_and_close(struct hs_conn *c, int status, const char *message)
{
    json_t *j = json_pack("{s:s}", "message", message);
    char *text = j ? ljson_dump(j) : NULL;
    json_decref(j);
    const char *body = text ? text : "{}";
    conn_write_head(c, status, "application/json", false, strlen(body), false);
    evbuffer_add(bufferevent_get_output(c->bev), body, strlen(body));
    free(text);
    c->state = CONN_CLOSING;
    c->linger = true;
    bufferevent_disable(c->bev, EV_READ);
    evtimer_del(c->timer);
}

/* ---------------------------------------------------------------- http-parser callbacks */

static int on_message_begin(http_parser *p)
{
    struct hs_conn *c = p->data;
    c->in_message = true;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct hs_conn *c = p->data;
    c->header_bytes += n;
    if (c->header_bytes > c->l->limits.max_header_bytes) {
        c->pending_error = 414;
        return -1;
    }
    return lbuf_append(&c->url, at, n) < 0 ? -1 : 0;
}

static int header_commit(struct hs_conn *c)
{
    if (c->hfield.len == 0)
        return 0;
    if (c->n_headers >= HS_MAX_HEADERS) {
        c->pending_error = 431;
        return -1;
    }
    c->hnames[c->n_headers] = lbuf_steal(&c->hfield);
    c->hvalues[c->n_headers] = lbuf_steal(&c->hvalue);
    c->n_headers++;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct hs_conn *c = p->data;
    c->header_bytes += n;
    if (c->header_bytes > c->l->limits.max_header_bytes) {
        c->pending_error = 431;
        return -1;
    }
    if (c->last_was_value) {
        if (header_commit(c) < 0)
            return -1;
        c->last_was_value = false;
    }
    return lbuf_append(&c->hfield, at, n) < 0 ? -1 : 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct hs_conn *c = p->data;
    c->header_bytes += n;
    if (c->header_bytes > c->l->limits.max_header_bytes) {
        c->pending_error = 431;
        return -1;
    }
    c->last_was_value = true;
    return lbuf_append(&c->hvalue, at, n) < 0 ? -1 : 0;
}

static int on_headers_complete(http_parser *p)
{
    struct hs_conn *c = p->data;
    if (c->last_was_value && header_commit(c) < 0)
        return -1;
    c->last_was_value = false;
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > c->l->limits.max_body) {
        c->pending_error = 413;
        return -1;
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct hs_conn *c = p->data;
    if (c->body.len + n > c->l->limits.max_body) {
        c->pending_error = 413;
        return -1;
    }
    return lbuf_append(&c->body, at, n) < 0 ? -1 : 0;
}

static int on_message_complete(http_parser *p)
{
    struct hs_conn *c = p->data;
    c->message_done = true;
    http_parser_pause(p, 1); /* one request at a time */
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---------------------------------------------------------------- routing */

/* Split the raw path into URL-decoded segments. */
static int split_path(const char *raw, size_t n, struct lstrv *segs)
{
    size_t i = 0;
    if (n == 0 || raw[0] != '/')
        return -EINVAL;
    while (i < n) {
        i++; /* skip '/' */
        size_t start = i;
        while (i < n && raw[i] != '/')
            i++;
        _cleanup_lbuf_ struct lbuf seg = LBUF_INIT;
        if (lstr_url_decode(raw + start, i - start, false, &seg) < 0)
            return -EINVAL;
        if (memchr(seg.data ? seg.data : "", 0, seg.len))
            return -EINVAL;
        int r = lstrv_push_take(segs, lbuf_steal(&seg));
        if (r < 0)
            return r;
        if (segs->n > 64)
            return -EINVAL;
    }
    return 0;
}

static bool route_match(const char *pattern, const struct lstrv *segs, struct hs_request *r)
{
    if (strcmp(pattern, "/**") == 0)
        return true; /* catch-all: the handler routes by itself */
    size_t k = 0;
    const char *p = pattern;
    size_t nparams = 0;
    while (*p) {
        if (*p != '/')
            return false;
        p++;
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (k >= segs->n)
            return false;
        if (len == 1 && *p == '*') {
            if (segs->v[k][0] == 0)
                return false;
            if (r && nparams < HS_MAX_PARAMS)
                r->params[nparams] = strdup(segs->v[k]);
            nparams++;
        } else if (strlen(segs->v[k]) != len || strncmp(segs->v[k], p, len) != 0) {
            return false;
        }
        k++;
        p += len;
    }
    if (k != segs->n)
        return false;
    if (r)
        r->n_params = MIN(nparams, HS_MAX_PARAMS);
    return true;
}

static int parse_query(struct hs_request *r, const char *q, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t start = i;
        while (i < n && q[i] != '&')
            i++;
        size_t len = i - start;
        i++;
        if (len == 0)
            continue;
        if (r->n_query >= HS_MAX_QUERY)
            return -E2BIG;
        const char *eq = memchr(q + start, '=', len);
        size_t nlen = eq ? (size_t)(eq - (q + start)) : len;
        _cleanup_lbuf_ struct lbuf name = LBUF_INIT, value = LBUF_INIT;
        if (lstr_url_decode(q + start, nlen, true, &name) < 0)
            return -EINVAL;
        if (eq && lstr_url_decode(eq + 1, len - nlen - 1, true, &value) < 0)
            return -EINVAL;
        r->qnames[r->n_query] = lbuf_steal(&name);
        r->qvalues[r->n_query] = lbuf_steal(&value);
        r->n_query++;
    }
    return 0;
}

static void conn_dispatch(struct hs_conn *c)
{
    struct hs_listener *l = c->l;
    struct hs_server *s = l->srv;
    evtimer_del(c->timer);

    struct hs_request *r = calloc(1, sizeof(*r));
    if (!r) {
        conn_reply_error_and_close(c, 500, "out of memory");
        return;
    }
    r->c = c;
    r->keep_alive = http_should_keep_alive(&c->parser) && !c->peer_eof;
    lstr_copy(r->method, sizeof(r->method), http_method_str(c->parser.method));
    r->target = strdup(c->url.data ? c->url.data : "");
    c->req = r;
    c->state = CONN_HANDLING;
    l->n_inflight++;

    struct http_parser_url u;
    http_parser_url_init(&u);
    _cleanup_lstrv_ struct lstrv segs = LSTRV_INIT;
    if (!r->target || http_parser_parse_url(r->target, strlen(r->target), 0, &u) != 0 ||
        !(u.field_set & (1 << UF_PATH))) {
        hs_reply_error(r, 400, "malformed request target");
        return;
    }
    const char *rawpath = r->target + u.field_data[UF_PATH].off;
    size_t rawlen = u.field_data[UF_PATH].len;
    if (split_path(rawpath, rawlen, &segs) < 0) {
        hs_reply_error(r, 400, "malformed path");
        return;
    }
    {
        _cleanup_lbuf_ struct lbuf p = LBUF_INIT;
        for (size_t i = 0; i < segs.n; i++)
            if (lbuf_putc(&p, '/') < 0 || lbuf_puts(&p, segs.v[i]) < 0)
                break;
        r->path = lbuf_steal(&p);
    }
    if ((u.field_set & (1 << UF_QUERY)) &&
        parse_query(r, r->target + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len) < 0) {
        hs_reply_error(r, 400, "malformed query string");
        return;
    }
    if (l->n_inflight > l->limits.max_inflight) {
        hs_reply_error(r, 503, "too many concurrent requests (limit %zu)", l->limits.max_inflight);
        return;
    }

    if (s->filter && !s->filter(r, s->userdata))
        return; /* the filter replied */

    bool path_matched = false;
    _cleanup_lbuf_ struct lbuf allow = LBUF_INIT;
    for (size_t i = 0; i < s->n_routes; i++) {
        const struct hs_route *rt = &s->routes[i];
        if (!route_match(rt->pattern, &segs, NULL))
            continue;
        path_matched = true;
        if (strcmp(rt->method, r->method) != 0) {
            lbuf_printf(&allow, "%s%s", allow.len ? ", " : "", rt->method);
            continue;
        }
        route_match(rt->pattern, &segs, r);
        rt->handler(r, s->userdata);
        return;
    }
    if (path_matched) {
        hs_reply_header(r, "Allow", allow.data ? allow.data : "");
        hs_reply_error(r, 405, "method %s not allowed on %s", r->method, r->path);
    } else
        hs_reply_error(r, 404, "no such resource: %s", r->path);
}

/* ---------------------------------------------------------------- connection I/O */

static void conn_process_input(struct hs_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (c->state == CONN_READING) {
        size_t avail = evbuffer_get_length(in);
        if (avail == 0) {
            if (c->peer_eof) {
                if (c->in_message)
                    http_parser_execute(&c->parser, &parser_settings, NULL, 0);
                if (!c->message_done) {
                    conn_free(c, false);
                    return;
                }
            } else {
                return;
            }
        }
        if (!c->message_done) {
            size_t chunk = avail;
            unsigned char *data = evbuffer_pullup(in, (ev_ssize_t)MIN(chunk, (size_t)65536));
            chunk = MIN(chunk, (size_t)65536);
            size_t used =
                http_parser_execute(&c->parser, &parser_settings, (const char *)data, chunk);
            enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
            if (err == HPE_PAUSED) {
                http_parser_pause(&c->parser, 0);
                evbuffer_drain(in, used);
            } else if (err != HPE_OK) {
                int status = c->pending_error ? c->pending_error : 400;
                char msg[160];
                if (status == 413)
                    snprintf(msg, sizeof(msg), "request body larger than %zu bytes",
                             c->l->limits.max_body);
                else if (status == 431 || status == 414)
                    snprintf(msg, sizeof(msg), "request headers larger than %zu bytes",
                             c->l->limits.max_header_bytes);
                else
                    snprintf(msg, sizeof(msg), "malformed HTTP request: %s",
                             http_errno_description(err));
                conn_reply_error_and_close(c, status, msg);
                return;
            } else {
                evbuffer_drain(in, used);
                if (used == 0 && !c->message_done)
                    return;
            }
        }
        if (c->message_done) {
            conn_dispatch(c);
            return;
        }
    }
}

static void conn_readcb(struct bufferevent *bev, void *arg)
{
    struct hs_conn *c = arg;
    if (c->state == CONN_READING)
        conn_process_input(c);
    else if (c->state == CONN_LINGER)
        evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
}

#define LINGER_MS 2000

static void conn_writecb(struct bufferevent *bev, void *arg)
{
    struct hs_conn *c = arg;
    if (c->state == CONN_HANDLING && c->req && c->req->streaming && c->req->on_drain && !c->dead &&
        evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        c->req->on_drain(c->req, c->req->drain_ud);
        return;
    }
    if (c->state != CONN_CLOSING || evbuffer_get_length(bufferevent_get_output(bev)) != 0)
        return;
    if (!c->linger || c->l->tls) { /* TLS: no half-close under the record layer */
        conn_free(c, false);
        return;
    }
    /* Reply sent: stop sending, keep reading (and dropping) until the client closes. */
    shutdown(bufferevent_getfd(bev), SHUT_WR);
    c->state = CONN_LINGER;
    struct timeval tv = {LINGER_MS / 1000, (LINGER_MS % 1000) * 1000};
    evtimer_add(c->timer, &tv);
    bufferevent_setwatermark(bev, EV_READ, 0, 0);
    bufferevent_enable(bev, EV_READ);
}

static void conn_eventcb(struct bufferevent *bev, short what, void *arg)
{
    struct hs_conn *c = arg;
    /* TLS: the handshake is done; the request follows. */
    if ((what & BEV_EVENT_CONNECTED) && !(what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)))
        return;
    if (what & BEV_EVENT_EOF) {
        c->peer_eof = true;
        /* A client that half-closes after sending a request still gets its reply; a streaming
         * reply or an idle connection ends here. */
        if (c->state == CONN_HANDLING && c->req && !c->req->streaming)
            return;
        if (c->state == CONN_READING) {
            conn_process_input(c);
            return;
        }
        if (c->state == CONN_CLOSING || c->state == CONN_LINGER)
            return conn_free(c, false);
    }
    conn_free(c, c->state != CONN_LINGER);
}

static void conn_timeoutcb(evutil_socket_t fd, short what, void *arg)
{
    struct hs_conn *c = arg;
    if (c->state == CONN_LINGER) {
        conn_free(c, false);
        return;
    }
    if (c->state != CONN_READING)
        return;
    if (c->in_message) {
        conn_reply_error_and_close(c, 408, "request not received in time");
        return;
    }
    conn_free(c, false);
}

static void conn_resumecb(evutil_socket_t fd, short what, void *arg)
{
    struct hs_conn *c = arg;
    if (c->dead) {
        conn_free(c, true);
        return;
    }
    if (c->state == CONN_READING)
        conn_process_input(c);
}

static void conn_free(struct hs_conn *c, bool aborted)
{
    struct hs_listener *l = c->l;
    if (c->req) {
        struct hs_request *r = c->req;
        c->req = NULL;
        r->c = NULL; /* replies from inside the callback are no-ops */
        if (r->on_abort)
            r->on_abort(r, r->abort_ud);
        request_free(r);
        l->n_inflight--;
    }
    conn_reset_message(c);
    lbuf_free(&c->url);
    lbuf_free(&c->hfield);
    lbuf_free(&c->hvalue);
    lbuf_free(&c->body);
    if (c->timer)
        event_free(c->timer);
    if (c->resume)
        event_free(c->resume);
    if (c->bev)
        bufferevent_free(c->bev);
    if (c->prev)
        c->prev->next = c->next;
    else
        l->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    l->n_conns--;
    free(c);
    if (l->adopted && l->n_conns == 0) {
        struct hs_listener **pp = &l->srv->listeners;
        while (*pp && *pp != l)
            pp = &(*pp)->next;
        if (*pp)
            *pp = l->next;
        free(l->path);
        free(l);
    }
}

/* Serve bev (a plain socket's, or one a TLS listener accepted: its input may already hold the
 * start of a request). */
static void conn_new_bev(struct hs_listener *l, struct bufferevent *bev)
{
    struct hs_server *s = l->srv;
    struct timeval tv = {l->limits.request_timeout_ms / 1000,
                         (l->limits.request_timeout_ms % 1000) * 1000};
    bool reject = false;
    if (l->n_conns >= l->limits.max_connections) {
        /* Full: make room by dropping the oldest connection that is only waiting for (or
         * trickling in) a request — idle and slow clients cannot lock out a new one. A
         * connection whose request is being handled is never dropped. */
        struct hs_conn *victim = NULL;
        for (struct hs_conn *v = l->conns; v; v = v->next)
            if (v->state == CONN_READING)
                victim = v; /* the list is newest first: the last one found is the oldest */
        if (victim)
            conn_free(victim, false);
        else
            reject = true;
    }
    if (reject && l->n_conns >= 2 * l->limits.max_connections) {
        bufferevent_free(bev); /* even the refusals are bounded */
        return;
    }
    struct hs_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        bufferevent_free(bev);
        return;
    }
    c->l = l;
    socklen_t len = sizeof(c->peer);
    if (getsockopt(bufferevent_getfd(bev), SOL_SOCKET, SO_PEERCRED, &c->peer, &len) == 0 &&
        len == sizeof(c->peer))
        c->has_peer = true;
    c->bev = bev;
    c->timer = evtimer_new(s->base, conn_timeoutcb, c);
    c->resume = event_new(s->base, -1, 0, conn_resumecb, c);
    l->n_conns++;
    c->next = l->conns;
    if (l->conns)
        l->conns->prev = c;
    l->conns = c;
    if (!c->timer || !c->resume) {
        conn_free(c, false);
        return;
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->state = CONN_READING;
    bufferevent_setcb(c->bev, conn_readcb, conn_writecb, conn_eventcb, c);
    if (reject) {
        bufferevent_enable(c->bev, EV_WRITE);
        conn_reply_error_and_close(c, 503, "too many connections busy with requests; retry");
        return;
    }
    /* Stop reading once this much is buffered while a request is being handled. */
    bufferevent_setwatermark(c->bev, EV_READ, 0, l->limits.max_header_bytes + 65536);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    evtimer_add(c->timer, &tv);
    if (evbuffer_get_length(bufferevent_get_input(c->bev)))
        event_active(c->resume, 0, 0); /* what the previous owner read, parsed from the loop */
}

static void conn_new(struct hs_listener *l, int fd)
{
    evutil_make_socket_nonblocking(fd);
    evutil_make_socket_closeonexec(fd);
    struct bufferevent *bev = NULL;
    if (l->tls) {
        SSL *ssl = SSL_new(l->tls);
        bev = ssl ? bufferevent_openssl_socket_new(l->srv->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                   BEV_OPT_CLOSE_ON_FREE)
                  : NULL;
        if (bev)
            bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
        else
            SSL_free(ssl);
    } else
        bev = bufferevent_socket_new(l->srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        close(fd);
        return;
    }
    conn_new_bev(l, bev);
}

static void listener_acceptcb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                              int socklen, void *arg)
{
    conn_new(arg, fd);
}

static void listener_retrycb(evutil_socket_t fd, short what, void *arg)
{
    struct hs_listener *l = arg;
    if (l->lev)
        evconnlistener_enable(l->lev);
}

static void listener_errorcb(struct evconnlistener *lev, void *arg)
{
    /* EMFILE/ENFILE: pause accepting briefly rather than spinning on the error. */
    struct hs_listener *l = arg;
    struct timeval tv = {0, 200 * 1000};
    evconnlistener_disable(lev);
    if (l->retry)
        evtimer_add(l->retry, &tv);
}

/* ---------------------------------------------------------------- public: server */

int hs_server_new(struct event_base *base, const struct hs_route *routes, size_t n_routes,
                  void *userdata, struct hs_server **ret)
{
    struct hs_server *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->base = base;
    s->routes = routes;
    s->n_routes = n_routes;
    s->userdata = userdata;
    *ret = s;
    return 0;
}

static void listener_free(struct hs_listener *l)
{
    while (l->conns)
        conn_free(l->conns, true);
    if (l->lev)
        evconnlistener_free(l->lev);
    if (l->retry)
        event_free(l->retry);
    if (l->path)
        unlink(l->path);
    SSL_CTX_free(l->tls);
    free(l->path);
    free(l);
}

void hs_server_free(struct hs_server *s)
{
    if (!s)
        return;
    while (s->listeners) {
        struct hs_listener *l = s->listeners;
        s->listeners = l->next;
        l->adopted = false; /* freed here, not by conn_free */
        listener_free(l);
    }
    free(s);
}

size_t hs_server_connections(const struct hs_server *s)
{
    size_t n = 0;
    for (const struct hs_listener *l = s->listeners; l; l = l->next)
        n += l->n_conns;
    return n;
}

static struct hs_listener *listener_new(struct hs_server *s, const struct hs_limits *limits,
                                        void *data)
{
    struct hs_listener *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    struct hs_limits dflt = HS_LIMITS_DEFAULT;
    l->srv = s;
    l->limits = limits ? *limits : dflt;
    l->data = data;
    return l;
}

int hs_server_listen_fd(struct hs_server *s, int fd, const struct hs_limits *limits,
                        void *listener_data)
{
    struct hs_listener *l = listener_new(s, limits, listener_data);
    if (!l) {
        close(fd);
        return -ENOMEM;
    }
    evutil_make_socket_nonblocking(fd);
    evutil_make_socket_closeonexec(fd);
    l->lev = evconnlistener_new(s->base, listener_acceptcb, l,
                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
    if (!l->lev) {
        close(fd);
        free(l);
        return -EIO;
    }
    evconnlistener_set_error_cb(l->lev, listener_errorcb);
    l->retry = evtimer_new(s->base, listener_retrycb, l);
    l->next = s->listeners;
    s->listeners = l;
    return 0;
}

int hs_server_listen_tls(struct hs_server *s, int fd, SSL_CTX *tls, const struct hs_limits *limits,
                         void *listener_data)
{
    if (!tls || SSL_CTX_up_ref(tls) != 1) {
        close(fd);
        return -EINVAL;
    }
    int r = hs_server_listen_fd(s, fd, limits, listener_data);
    if (r < 0) {
        SSL_CTX_free(tls);
        return r;
    }
    s->listeners->tls = tls;
    return 0;
}

int hs_server_set_tls(struct hs_server *s, SSL_CTX *tls)
{
    int n = 0;
    for (struct hs_listener *l = s->listeners; l; l = l->next) {
        if (!l->tls || l->tls == tls || SSL_CTX_up_ref(tls) != 1)
            continue;
        SSL_CTX_free(l->tls);
        l->tls = tls;
        n++;
    }
    return n;
}

bool hs_request_tls(const struct hs_request *r)
{
    return r->c && r->c->l->tls;
}

void hs_server_set_filter(struct hs_server *s, hs_filter_fn filter)
{
    s->filter = filter;
}

int hs_server_listen_unix(struct hs_server *s, const char *path, mode_t mode, gid_t gid,
                          const struct hs_limits *limits, void *listener_data)
{
    int fd = net_unix_listen(path, SOCK_STREAM | SOCK_NONBLOCK, mode, gid, 128);
    if (fd < 0)
        return fd;
    int r;
    r = hs_server_listen_fd(s, fd, limits, listener_data);
    if (r < 0) {
        unlink(path);
        return r;
    }
    s->listeners->path = strdup(path);
    return 0;
}

int hs_server_unlisten(struct hs_server *s, const char *path)
{
    for (struct hs_listener **pp = &s->listeners; *pp; pp = &(*pp)->next) {
        struct hs_listener *l = *pp;
        if (l->path && strcmp(l->path, path) == 0) {
            *pp = l->next;
            listener_free(l);
            return 0;
        }
    }
    return -ENOENT;
}

int hs_server_adopt_connection(struct hs_server *s, int fd, const struct hs_limits *limits,
                               void *listener_data)
{
    struct hs_listener *l = listener_new(s, limits, listener_data);
    if (!l) {
        close(fd);
        return -ENOMEM;
    }
    l->adopted = true;
    l->next = s->listeners;
    s->listeners = l;
    conn_new(l, fd);
    return 0;
}

int hs_server_intake(struct hs_server *s, const struct hs_limits *limits, void *listener_data,
                     struct hs_listener **ret)
{
    struct hs_listener *l = listener_new(s, limits, listener_data);
    if (!l)
        return -ENOMEM;
    l->next = s->listeners;
    s->listeners = l;
    *ret = l;
    return 0;
}

void hs_server_take(struct hs_listener *l, struct bufferevent *bev)
{
    conn_new_bev(l, bev);
}

/* ---------------------------------------------------------------- public: request */

const char *hs_request_method(const struct hs_request *r)
{
    return r->method;
}
const char *hs_request_path(const struct hs_request *r)
{
    return r->path ? r->path : "";
}
const char *hs_request_target(const struct hs_request *r)
{
    return r->target ? r->target : "";
}

const char *hs_request_param(const struct hs_request *r, size_t i)
{
    return i < r->n_params ? r->params[i] : NULL;
}

const char *hs_request_query(const struct hs_request *r, const char *name)
{
    for (size_t i = 0; i < r->n_query; i++)
        if (strcmp(r->qnames[i], name) == 0)
            return r->qvalues[i];
    return NULL;
}

bool hs_request_has_query(const struct hs_request *r, const char *name)
{
    return hs_request_query(r, name) != NULL;
}

const char *hs_request_header(const struct hs_request *r, const char *name)
{
    struct hs_conn *c = r->c;
    for (size_t i = 0; c && i < c->n_headers; i++)
        if (strcasecmp(c->hnames[i], name) == 0)
            return c->hvalues[i];
    return NULL;
}

bool hs_request_header_at(const struct hs_request *r, size_t i, const char **ret_name,
                          const char **ret_value)
{
    struct hs_conn *c = r->c;
    if (!c || i >= c->n_headers)
        return false;
    *ret_name = c->hnames[i];
    *ret_value = c->hvalues[i];
    return true;
}

const char *hs_request_body(const struct hs_request *r, size_t *ret_len)
{
    struct hs_conn *c = r->c;
    if (ret_len)
        *ret_len = c ? c->body.len : 0;
    return c && c->body.data ? c->body.data : "";
}

int hs_request_body_json(struct hs_request *r, bool allow_empty, json_t **ret)
{
    size_t n;
    const char *body = hs_request_body(r, &n);
    if (n == 0) {
        if (allow_empty) {
            *ret = NULL;
            return 0;
        }
        hs_reply_error(r, 400, "request body: expected JSON, got nothing");
        return -EINVAL;
    }
    struct lerr e = {0};
    if (ljson_parse(body, n, ret, &e) < 0) {
        hs_reply_error(r, 400, "request body: %s", e.msg);
        return -EINVAL;
    }
    return 0;
}

void *hs_request_listener_data(const struct hs_request *r)
{
    return r->c ? r->c->l->data : NULL;
}

const struct ucred *hs_request_peer(const struct hs_request *r)
{
    return r->c && r->c->has_peer ? &r->c->peer : NULL;
}

void hs_reply_header(struct hs_request *r, const char *name, const char *value)
{
    lbuf_printf(&r->headers, "%s: %s\r\n", name, value);
}

void hs_request_on_abort(struct hs_request *r, void (*cb)(struct hs_request *, void *), void *ud)
{
    r->on_abort = cb;
    r->abort_ud = ud;
}

/* ---------------------------------------------------------------- public: replies */

/* The reply is complete: free the request and either wait for the next one or close. */
static void request_finish(struct hs_request *r)
{
    struct hs_conn *c = r->c;
    bool keep = r->keep_alive;
    c->req = NULL;
    c->l->n_inflight--;
    request_free(r);
    conn_reset_message(c);
    if (keep && !c->peer_eof) {
        struct timeval tv = {c->l->limits.request_timeout_ms / 1000,
                             (c->l->limits.request_timeout_ms % 1000) * 1000};
        c->state = CONN_READING;
        http_parser_init(&c->parser, HTTP_REQUEST);
        c->parser.data = c;
        evtimer_add(c->timer, &tv);
        event_active(c->resume, 0, 0);
    } else {
        /* The queued reply is never empty, so the write callback closes the connection. */
        c->state = CONN_CLOSING;
        bufferevent_disable(c->bev, EV_READ);
    }
}

void hs_reply(struct hs_request *r, int status, const char *content_type, const void *body,
              size_t len)
{
    struct hs_conn *c = r->c;
    if (!c || r->streaming)
        return;
    conn_write_head(c, status, content_type, false, len, r->keep_alive);
    if (len)
        evbuffer_add(bufferevent_get_output(c->bev), body, len);
    request_finish(r);
}

void hs_reply_json(struct hs_request *r, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(body);
    if (!text) {
        hs_reply(r, 500, "application/json", "{\"message\":\"out of memory\"}", 27);
        return;
    }
    hs_reply(r, status, "application/json", text, strlen(text));
    free(text);
}

void hs_reply_error(struct hs_request *r, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    hs_reply_json(r, status, json_pack("{s:s}", "message", msg));
}

void hs_reply_empty(struct hs_request *r, int status)
{
    hs_reply(r, status, NULL, NULL, 0);
}

int hs_stream_start(struct hs_request *r, int status, const char *content_type)
{
    struct hs_conn *c = r->c;
    if (!c || r->streaming)
        return -EINVAL;
    r->streaming = true;
    conn_write_head(c, status, content_type, true, 0, r->keep_alive);
    return 0;
}

int hs_stream_start_sized(struct hs_request *r, int status, const char *content_type,
                          uint64_t length)
{
    struct hs_conn *c = r->c;
    if (!c || r->streaming || length > SIZE_MAX)
        return -EINVAL;
    r->streaming = true;
    r->sized = true;
    r->remaining = strcmp(r->method, "HEAD") == 0 ? 0 : length;
    conn_write_head(c, status, content_type, false, (size_t)length, r->keep_alive);
    return 0;
}

int hs_stream_write(struct hs_request *r, const void *data, size_t n)
{
    struct hs_conn *c = r->c;
    if (!c || !r->streaming || c->dead)
        return -EPIPE;
    if (n == 0)
        return 0;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (evbuffer_get_length(out) + n > c->l->limits.max_output) {
        /* A reader this slow is dropped; the abort callback runs from the loop. */
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
        c->peer_eof = true;
        c->dead = true;
        event_active(c->resume, 0, 0);
        return -ENOBUFS;
    }
    if (r->sized) {
        if (n > r->remaining)
            return -E2BIG;
        r->remaining -= n;
        evbuffer_add(out, data, n);
        return 0;
    }
    evbuffer_add_printf(out, "%zx\r\n", n);
    evbuffer_add(out, data, n);
    evbuffer_add(out, "\r\n", 2);
    return 0;
}

size_t hs_stream_queued(const struct hs_request *r)
{
    return r->c && r->streaming ? evbuffer_get_length(bufferevent_get_output(r->c->bev)) : 0;
}

void hs_stream_on_drain(struct hs_request *r, void (*cb)(struct hs_request *r, void *ud), void *ud)
{
    r->on_drain = cb;
    r->drain_ud = ud;
}

void hs_stream_end(struct hs_request *r)
{
    struct hs_conn *c = r->c;
    if (!c || !r->streaming)
        return;
    if (!r->sized)
        evbuffer_add(bufferevent_get_output(c->bev), "0\r\n\r\n", 5);
    else if (r->remaining) {
        /* cut short: closing says so, after what is queued (at once when nothing is) */
        r->keep_alive = false;
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
            hs_stream_abort(r);
            return;
        }
    }
    request_finish(r);
}

void hs_stream_abort(struct hs_request *r)
{
    struct hs_conn *c = r->c;
    if (!c || !r->streaming || c->dead)
        return;
    r->on_abort = NULL; /* the caller knows */
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    c->peer_eof = true;
    c->dead = true;
    event_active(c->resume, 0, 0);
}
