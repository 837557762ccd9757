/* ws.h — the server side of WebSocket (RFC 6455) for ledge's listeners: the HTTP/1.1 upgrade
 * request read with http-parser (bounded, parsed afresh from the start of the buffer each time
 * more arrives), the checks and answers of the handshake (101 with Sec-WebSocket-Accept, or an
 * HTTP error naming the reason), and the framing, delegated to the packaged wslay, on evbuffers. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/errors.h"

struct evbuffer;

/* What the request said, as far as a WebSocket handshake cares. Strings are NUL-terminated
 * copies (NULL when absent); repeated headers are joined with ", " as HTTP allows. */
struct ws_request {
    char *method;
    char *path;   /* the target without its query, percent-decoded */
    char *target; /* as sent */
    char *upgrade;
    char *connection;
    char *key;       /* Sec-WebSocket-Key */
    char *protocols; /* Sec-WebSocket-Protocol */
    char *version;   /* Sec-WebSocket-Version */
    char *host;
    unsigned http_major, http_minor;
    bool has_body; /* Content-Length or chunked: the request's length counts its headers only */
};

void ws_request_clear(struct ws_request *r);

/* Parse the request at the start of data[0..len). Returns the request's length in bytes (>0,
 * headers included; bytes after it are the client's next ones) with *ret filled, 0 when the
 * request is not complete yet (and still below max bytes), or a negative errno with err set and
 * *ret_status the HTTP status to answer: 400 not HTTP, 431 no complete request within max
 * bytes. A request with a body (no upgrade: one for another handler on the same port, see
 * has_body) ends with its headers here; ws_upgrade_check() refuses it. */
int ws_request_parse(const void *data, size_t len, size_t max, struct ws_request *ret,
                     int *ret_status, struct lerr *err);

/* Is it a WebSocket upgrade to path offering subprotocol? 0 when yes, else the HTTP status to
 * answer with err saying why: 404 another path, 400 a body or not a GET or HTTP/1.0 or a missing or
 * bad Sec-WebSocket-Key or no subprotocol offered, 426 not an upgrade to websocket or a version
 * other than 13 (the answer then carries Upgrade / Sec-WebSocket-Version). */
int ws_upgrade_check(const struct ws_request *r, const char *path, const char *subprotocol,
                     struct lerr *err);

/* RFC 6455 §4.2.2: base64(SHA-1(key + GUID)) into out (29 bytes with the NUL). */
int ws_accept_key(const char *key, char out[29]);

/* The 101 Switching Protocols answer for r, choosing subprotocol. */
int ws_upgrade_response(const struct ws_request *r, const char *subprotocol, struct lbuf *out);
/* An error answer: status, a text/plain body with the reason and Connection: close (426 adds
 * Upgrade: websocket and Sec-WebSocket-Version: 13). */
int ws_error_response(int status, const char *reason, struct lbuf *out);

/* ---- framing after the handshake (server side: frames from the client are masked, ours are
 * not). One per connection; it keeps no reference to the buffers between calls. */
struct ws_conn;

/* max_frame bounds the payload of one frame from the peer (a larger one closes with 1009). */
int ws_conn_new(uint64_t max_frame, struct ws_conn **ret);
void ws_conn_free(struct ws_conn *w);

/* ws_conn_read results beyond 0 */
#define WS_CLOSED 1 /* the peer closed or broke the protocol: nothing more will be read */

/* Decode frames from raw (drained as consumed) into app: the payload of binary frames, as one
 * byte stream (message boundaries are not kept). Stops once app holds limit bytes (it may go up
 * to 4 KiB beyond). Answers to control frames (pong; the close echoed; a close with the reason
 * for a protocol error, a text frame, or a frame beyond max_frame) go into out. Returns 0 or
 * WS_CLOSED (ws_conn_why() says why), -ENOMEM. */
int ws_conn_read(struct ws_conn *w, struct evbuffer *raw, struct evbuffer *app, size_t limit,
                 struct evbuffer *out);
/* One binary message of a[0..an) followed by b[0..bn) (b may be NULL) into out. -EPIPE after a
 * close was sent. */
int ws_conn_write(struct ws_conn *w, struct evbuffer *out, const void *a, size_t an, const void *b,
                  size_t bn);
/* Send a close frame with code (1000 normal, 1008 policy, 1011 server error) unless one was sent.
 */
void ws_conn_close(struct ws_conn *w, struct evbuffer *out, uint16_t code);
/* Why ws_conn_read returned WS_CLOSED ("closed by the peer (1000)", "a text frame", ...). */
const char *ws_conn_why(const struct ws_conn *w);
