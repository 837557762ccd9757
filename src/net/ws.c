/* ws.c — WebSocket server side (ws.h): the upgrade request through http-parser, the handshake's
 * checks and answers, and the framing through wslay's event API driven from evbuffers (wslay
 * never touches a socket: its callbacks read from and write to the buffers of the current call). */
#include "net/ws.h"

#include <errno.h>
#include <event2/buffer.h>
#include <http_parser.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <wslay/wslay.h>

#include "base/crypto.h"
#include "base/macro.h"
#include "base/str.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* ------------------------------------------------------------------ the upgrade request */

enum hdr_slot { H_NONE, H_UPGRADE, H_CONNECTION, H_KEY, H_PROTOCOL, H_VERSION, H_HOST };

static const struct {
    const char *name;
    enum hdr_slot slot;
} interesting[] = {
    {"Upgrade", H_UPGRADE},
    {"Connection", H_CONNECTION},
    {"Sec-WebSocket-Key", H_KEY},
    {"Sec-WebSocket-Protocol", H_PROTOCOL},
    {"Sec-WebSocket-Version", H_VERSION},
    {"Host", H_HOST},
};

struct parse_state {
    struct lbuf url, field, value[H_HOST + 1];
    bool in_value, done, has_body, seen[H_HOST + 1];
    int oom;
};

static enum hdr_slot field_slot(const struct lbuf *f)
{
    for (size_t i = 0; i < ARRAY_SIZE(interesting); i++)
        if (f->len == strlen(interesting[i].name) &&
            strncasecmp(f->data, interesting[i].name, f->len) == 0)
            return interesting[i].slot;
    return H_NONE;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct parse_state *st = p->data;
    st->oom |= lbuf_append(&st->url, at, n) < 0;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct parse_state *st = p->data;
    if (st->in_value) {
        lbuf_reset(&st->field);
        st->in_value = false;
    }
    st->oom |= lbuf_append(&st->field, at, n) < 0;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct parse_state *st = p->data;
    enum hdr_slot s = field_slot(&st->field);
    if (!st->in_value) {
        st->in_value = true;
        if (s != H_NONE && st->seen[s]) /* a repeated header: a list, joined */
            st->oom |= lbuf_puts(&st->value[s], ", ") < 0;
        if (s != H_NONE)
            st->seen[s] = true;
    }
    if (s != H_NONE)
        st->oom |= lbuf_append(&st->value[s], at, n) < 0;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct parse_state *st = p->data;
    st->has_body =
        (p->flags & F_CHUNKED) || (p->content_length > 0 && p->content_length != ULLONG_MAX);
    return st->has_body ? 1 : 0; /* 1: skip the body; the request ends with its headers here */
}

static int on_message_complete(http_parser *p)
{
    struct parse_state *st = p->data;
    st->done = true;
    http_parser_pause(p, 1); /* what follows is not ours to parse */
    return 0;
}

static char *take(struct lbuf *b, bool present)
{
    if (!present)
        return NULL;
    while (b->len && (b->data[b->len - 1] == ' ' || b->data[b->len - 1] == '\t'))
        b->data[--b->len] = 0;
    return lstr_ndup(b->data ? b->data : "", b->len);
}

void ws_request_clear(struct ws_request *r)
{
    if (!r)
        return;
    free(r->method);
    free(r->path);
    free(r->target);
    free(r->upgrade);
    free(r->connection);
    free(r->key);
    free(r->protocols);
    free(r->version);
    free(r->host);
    *r = (struct ws_request){0};
}

int ws_request_parse(const void *data, size_t len, size_t max, struct ws_request *ret,
                     int *ret_status, struct lerr *err)
{
    static const http_parser_settings settings = {
        .on_url = on_url,
        .on_header_field = on_header_field,
        .on_header_value = on_header_value,
        .on_headers_complete = on_headers_complete,
        .on_message_complete = on_message_complete,
    };
    struct parse_state st = {.url = LBUF_INIT, .field = LBUF_INIT};
    for (size_t i = 0; i < ARRAY_SIZE(st.value); i++)
        st.value[i] = (struct lbuf)LBUF_INIT;
    http_parser p;
    http_parser_init(&p, HTTP_REQUEST);
    p.data = &st;
    size_t n = MIN(len, max);
    size_t used = http_parser_execute(&p, &settings, data, n);
    enum http_errno e = HTTP_PARSER_ERRNO(&p);
    int r = 0, status = 0;
    if (st.oom) {
        r = -ENOMEM;
        status = 500;
        lerr_set(err, r, "out of memory");
    } else if (e != HPE_OK && e != HPE_PAUSED) {
        r = -EINVAL;
        status = 400;
        lerr_set(err, r, "not an HTTP/1.1 request: %s", http_errno_description(e));
    } else if (!st.done) {
        if (n == max) {
            r = -EMSGSIZE;
            status = 431;
            lerr_set(err, r, "no complete request in %zu bytes", max);
        }
    } else {
        struct ws_request q = {
            .method = lstr_ndup(http_method_str((enum http_method)p.method),
                                strlen(http_method_str((enum http_method)p.method))),
            .target = lstr_ndup(st.url.data ? st.url.data : "", st.url.len),
            .upgrade = take(&st.value[H_UPGRADE], st.seen[H_UPGRADE]),
            .connection = take(&st.value[H_CONNECTION], st.seen[H_CONNECTION]),
            .key = take(&st.value[H_KEY], st.seen[H_KEY]),
            .protocols = take(&st.value[H_PROTOCOL], st.seen[H_PROTOCOL]),
            .version = take(&st.value[H_VERSION], st.seen[H_VERSION]),
            .host = take(&st.value[H_HOST], st.seen[H_HOST]),
            .http_major = p.http_major,
            .http_minor = p.http_minor,
            .has_body = st.has_body,
        };
        struct lbuf path = LBUF_INIT;
        if (q.target) {
            size_t plen = strcspn(q.target, "?#");
            if (lstr_url_decode(q.target, plen, false, &path) < 0) {
                r = -EINVAL;
                status = 400;
                lerr_set(err, r, "the request target is not a valid path");
            }
        }
        q.path = lbuf_steal(&path);
        lbuf_free(&path);
        bool oom = !q.method || !q.target || !q.path || (st.seen[H_UPGRADE] && !q.upgrade) ||
                   (st.seen[H_CONNECTION] && !q.connection) || (st.seen[H_KEY] && !q.key) ||
                   (st.seen[H_PROTOCOL] && !q.protocols) || (st.seen[H_VERSION] && !q.version) ||
                   (st.seen[H_HOST] && !q.host);
        if (r == 0 && oom) {
            r = -ENOMEM;
            status = 500;
            lerr_set(err, r, "out of memory");
        }
        if (r == 0) {
            *ret = q;
            r = (int)used;
        } else {
            ws_request_clear(&q);
        }
    }
    lbuf_free(&st.url);
    lbuf_free(&st.field);
    for (size_t i = 0; i < ARRAY_SIZE(st.value); i++)
        lbuf_free(&st.value[i]);
    if (r < 0 && ret_status)
        *ret_status = status;
    return r;
}

/* Is tok one of the comma-separated tokens of list? */
static bool list_has(const char *list, const char *tok, bool ci)
{
    size_t tn = strlen(tok);
    for (const char *s = list; s && *s;) {
        s += strspn(s, " \t,");
        size_t n = strcspn(s, ",");
        size_t m = n;
        while (m && (s[m - 1] == ' ' || s[m - 1] == '\t'))
            m--;
        if (m == tn && (ci ? strncasecmp(s, tok, tn) == 0 : strncmp(s, tok, tn) == 0))
            return true;
        s += n;
    }
    return false;
}

int ws_upgrade_check(const struct ws_request *r, const char *path, const char *subprotocol,
                     struct lerr *err)
{
    if (!lstr_eq(r->path, path)) {
        lerr_set(err, -ENOENT, "no such path: %.100s (WebSocket connections go to %s)", r->path,
                 path);
        return 404;
    }
    if (r->has_body) {
        lerr_set(err, -EINVAL, "an upgrade request has no body");
        return 400;
    }
    if (!lstr_eq(r->method, "GET")) {
        lerr_set(err, -EINVAL, "a WebSocket upgrade is a GET, not %s", r->method);
        return 400;
    }
    if (r->http_major != 1 || r->http_minor < 1) {
        lerr_set(err, -EINVAL, "a WebSocket upgrade needs HTTP/1.1");
        return 400;
    }
    if (!r->upgrade || !list_has(r->upgrade, "websocket", true) || !r->connection ||
        !list_has(r->connection, "upgrade", true)) {
        lerr_set(err, -EINVAL,
                 "%s is a WebSocket endpoint: the request needs Upgrade: websocket and "
                 "Connection: Upgrade",
                 path);
        return 426;
    }
    if (!r->version || !lstr_eq(r->version, "13")) {
        lerr_set(err, -EINVAL, "Sec-WebSocket-Version must be 13, not %.20s",
                 r->version ? r->version : "(missing)");
        return 426;
    }
    struct lbuf k = LBUF_INIT;
    bool key_ok = r->key && lcrypto_b64_decode(r->key, strlen(r->key), &k) == 0 && k.len == 16;
    lbuf_free(&k);
    if (!key_ok) {
        lerr_set(err, -EINVAL, "Sec-WebSocket-Key must be the base64 of 16 bytes");
        return 400;
    }
    if (!r->protocols || !list_has(r->protocols, subprotocol, false)) {
        lerr_set(err, -EINVAL, "Sec-WebSocket-Protocol must offer \"%s\" (offered: %.100s)",
                 subprotocol, r->protocols ? r->protocols : "none");
        return 400;
    }
    return 0;
}

int ws_accept_key(const char *key, char out[29])
{
    _cleanup_free_ char *cat = lstr_printf("%s%s", key, WS_GUID);
    if (!cat)
        return -ENOMEM;
    uint8_t md[LCRYPTO_SHA1_LEN];
    int r = lcrypto_sha1(cat, strlen(cat), md);
    if (r < 0)
        return r;
    struct lbuf b = LBUF_INIT;
    r = lcrypto_b64_encode(md, sizeof(md), &b);
    if (r == 0 && b.len != 28)
        r = -EIO;
    if (r == 0)
        memcpy(out, b.data, 29);
    lbuf_free(&b);
    return r;
}

int ws_upgrade_response(const struct ws_request *r, const char *subprotocol, struct lbuf *out)
{
    char accept[29];
    int rr = ws_accept_key(r->key, accept);
    if (rr < 0)
        return rr;
    return lbuf_printf(out,
                       "HTTP/1.1 101 Switching Protocols\r\n"
                       "Upgrade: websocket\r\n"
                       "Connection: Upgrade\r\n"
                       "Sec-WebSocket-Accept: %s\r\n"
                       "Sec-WebSocket-Protocol: %s\r\n\r\n",
                       accept, subprotocol);
}

static const char *status_reason(int status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 426:
        return "Upgrade Required";
    case 431:
        return "Request Header Fields Too Large";
    case 503:
        return "Service Unavailable";
    default:
        return "Internal Server Error";
    }
}

int ws_error_response(int status, const char *reason, struct lbuf *out)
{
    return lbuf_printf(out,
                       "HTTP/1.1 %d %s\r\n"
                       "%s"
                       "Content-Type: text/plain; charset=utf-8\r\n"
                       "Content-Length: %zu\r\n"
                       "Connection: close\r\n\r\n%s\n",
                       status, status_reason(status),
                       status == 426 ? "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n" : "",
                       strlen(reason) + 1, reason);
}

/* ------------------------------------------------------------------ framing */

struct ws_conn {
    wslay_event_context_ptr ctx;
    /* the current call's buffers */
    struct evbuffer *raw, *app, *out;
    size_t limit;
    uint8_t opcode;  /* of the data message being received (continuations keep it) */
    bool in_control; /* the frame being received is a control frame */
    bool refused;    /* a frame we do not take: its payload is dropped, the close is queued */
    char why[80];
    struct lbuf scratch; /* a message of two parts, made one */
};

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    struct ws_conn *w = user;
    if (!w->raw || evbuffer_get_length(w->raw) == 0 ||
        (w->app && evbuffer_get_length(w->app) >= w->limit)) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    int n = evbuffer_remove(w->raw, buf, len);
    if (n <= 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    return n;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    struct ws_conn *w = user;
    if (!w->out || evbuffer_add(w->out, data, len) < 0) {
        wslay_event_set_error(ctx, w->out ? WSLAY_ERR_CALLBACK_FAILURE : WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    return (ssize_t)len;
}

static void refuse(struct ws_conn *w, uint16_t code, const char *why)
{
    if (w->refused)
        return;
    w->refused = true;
    snprintf(w->why, sizeof(w->why), "%s", why);
    wslay_event_queue_close(w->ctx, code, NULL, 0);
    wslay_event_shutdown_read(w->ctx);
}

static void frame_start_cb(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *a, void *user)
{
    struct ws_conn *w = user;
    w->in_control = (a->opcode & 0x8) != 0;
    if (a->opcode == WSLAY_TEXT_FRAME)
        refuse(w, WSLAY_CODE_UNSUPPORTED_DATA, "a text frame (only binary frames carry data)");
    if (a->opcode == WSLAY_TEXT_FRAME || a->opcode == WSLAY_BINARY_FRAME)
        w->opcode = a->opcode; /* continuations keep the message's opcode */
}

static void frame_chunk_cb(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_chunk_arg *a, void *user)
{
    struct ws_conn *w = user;
    if (w->refused || w->in_control || w->opcode != WSLAY_BINARY_FRAME || !a->data_length)
        return;
    if (evbuffer_add(w->app, a->data, a->data_length) < 0)
        refuse(w, WSLAY_CODE_INTERNAL_SERVER_ERROR, "out of memory");
}

static void msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *a,
                   void *user)
{
    struct ws_conn *w = user;
    if (a->opcode == WSLAY_CONNECTION_CLOSE && !w->refused) {
        w->refused = true;
        snprintf(w->why, sizeof(w->why), "closed by the peer (%u)", a->status_code);
    }
}

int ws_conn_new(uint64_t max_frame, struct ws_conn **ret)
{
    static const struct wslay_event_callbacks cbs = {
        .recv_callback = recv_cb,
        .send_callback = send_cb,
        .on_frame_recv_start_callback = frame_start_cb,
        .on_frame_recv_chunk_callback = frame_chunk_cb,
        .on_msg_recv_callback = msg_cb,
    };
    struct ws_conn *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->scratch = (struct lbuf)LBUF_INIT;
    if (wslay_event_context_server_init(&w->ctx, &cbs, w) != 0) {
        free(w);
        return -ENOMEM;
    }
    /* Payloads stream through frame_chunk_cb as they arrive: nothing is buffered per message,
     * and the bound applies to each frame. */
    wslay_event_config_set_no_buffering(w->ctx, 1);
    wslay_event_config_set_max_recv_msg_length(w->ctx, max_frame);
    *ret = w;
    return 0;
}

void ws_conn_free(struct ws_conn *w)
{
    if (!w)
        return;
    wslay_event_context_free(w->ctx);
    lbuf_free(&w->scratch);
    free(w);
}

static void flush_out(struct ws_conn *w, struct evbuffer *out)
{
    w->out = out;
    wslay_event_send(w->ctx);
    w->out = NULL;
}

int ws_conn_read(struct ws_conn *w, struct evbuffer *raw, struct evbuffer *app, size_t limit,
                 struct evbuffer *out)
{
    w->raw = raw;
    w->app = app;
    w->limit = limit;
    int r = wslay_event_get_read_enabled(w->ctx) ? wslay_event_recv(w->ctx) : 0;
    w->raw = w->app = NULL;
    flush_out(w, out);
    if (r == WSLAY_ERR_NOMEM)
        return -ENOMEM;
    if (r != 0 && !w->refused) {
        w->refused = true;
        snprintf(w->why, sizeof(w->why), "WebSocket protocol error");
    }
    if (!wslay_event_get_read_enabled(w->ctx) && !w->refused) {
        /* wslay queued a close of its own: a protocol error or a frame beyond max_frame */
        w->refused = true;
        uint16_t code = wslay_event_get_status_code_sent(w->ctx);
        snprintf(w->why, sizeof(w->why), "%s",
                 code == WSLAY_CODE_MESSAGE_TOO_BIG ? "a frame larger than allowed"
                                                    : "WebSocket protocol error");
    }
    return w->refused ? WS_CLOSED : 0;
}

int ws_conn_write(struct ws_conn *w, struct evbuffer *out, const void *a, size_t an, const void *b,
                  size_t bn)
{
    if (wslay_event_get_close_sent(w->ctx) || !wslay_event_get_write_enabled(w->ctx))
        return -EPIPE;
    const void *msg = a;
    size_t len = an;
    if (bn) {
        lbuf_reset(&w->scratch);
        if (lbuf_append(&w->scratch, a, an) < 0 || lbuf_append(&w->scratch, b, bn) < 0)
            return -ENOMEM;
        msg = w->scratch.data;
        len = w->scratch.len;
    }
    struct wslay_event_msg m = {WSLAY_BINARY_FRAME, msg, len};
    int r = wslay_event_queue_msg(w->ctx, &m);
    if (bn && w->scratch.cap > (64u << 10)) /* do not keep a large message's buffer */
        lbuf_free(&w->scratch);
    if (r == WSLAY_ERR_NOMEM)
        return -ENOMEM;
    if (r != 0)
        return -EPIPE;
    flush_out(w, out);
    return 0;
}

void ws_conn_close(struct ws_conn *w, struct evbuffer *out, uint16_t code)
{
    if (!wslay_event_get_close_sent(w->ctx))
        wslay_event_queue_close(w->ctx, code, NULL, 0);
    flush_out(w, out);
}

const char *ws_conn_why(const struct ws_conn *w)
{
    return w->why[0] ? w->why : "closed";
}
