/* http_server.h — a small HTTP/1.1 server for ledge's local APIs (management, workload, hub
 * control) on unix sockets (or any stream fd), built on libevent bufferevents and the packaged
 * http-parser. Everything a client controls is bounded: connections per listener, concurrent
 * requests per listener, header bytes, body bytes, the time to deliver a complete request, and
 * output queued for a slow reader. Routing is a table of method + path pattern → handler. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "base/macro.h"

struct bufferevent;
struct event_base;
struct hs_listener;
struct hs_server;
struct hs_request;
struct ssl_ctx_st; /* OpenSSL's SSL_CTX */

struct hs_limits {
    size_t max_connections;  /* open connections per listener; at the limit the oldest one still
                                waiting for its request is dropped; when every connection is
                                busy with a request, the newcomer is answered 503 */
    size_t max_inflight;     /* requests being handled (not yet answered) per listener → 503 */
    size_t max_header_bytes; /* request line + headers → 431 */
    size_t max_body;         /* request body → 413 */
    size_t max_output;       /* queued response bytes for a slow reader before we drop it */
    int request_timeout_ms;  /* a complete request must arrive within this (also idle keep-alive) */
};
#define HS_LIMITS_DEFAULT                                                                          \
    {                                                                                              \
        .max_connections = 64, .max_inflight = 32, .max_header_bytes = 16 * 1024,                  \
        .max_body = 4 * 1024 * 1024, .max_output = 8 * 1024 * 1024, .request_timeout_ms = 30000,   \
    }

typedef void (*hs_handler_fn)(struct hs_request *req, void *userdata);

/* Pattern segments: literal, or "*" to capture one URL-decoded segment (hs_request_param).
 * The pattern "/ **" (without the space) matches every path: the handler routes by itself. */
struct hs_route {
    const char *method;  /* "GET", "POST", ... */
    const char *pattern; /* "/modules/ * /start" written without spaces */
    hs_handler_fn handler;
};

int hs_server_new(struct event_base *base, const struct hs_route *routes, size_t n_routes,
                  void *userdata, struct hs_server **ret);
void hs_server_free(struct hs_server *s);

/* Listen on a unix socket path (an existing socket file is replaced), chmod to mode and chown to
 * gid when gid != (gid_t)-1. listener_data is handed to handlers via hs_request_listener_data. */
int hs_server_listen_unix(struct hs_server *s, const char *path, mode_t mode, gid_t gid,
                          const struct hs_limits *limits, void *listener_data);
/* Listen on an already bound, listening stream socket (takes ownership). */
int hs_server_listen_fd(struct hs_server *s, int fd, const struct hs_limits *limits,
                        void *listener_data);
/* Listen on a bound, listening TCP socket (takes ownership) with TLS on every connection: the
 * server takes a reference to tls (the caller keeps its own). */
int hs_server_listen_tls(struct hs_server *s, int fd, struct ssl_ctx_st *tls,
                         const struct hs_limits *limits, void *listener_data);
/* New connections on every TLS listener use tls from now on (a renewed certificate); the
 * number of listeners changed. */
int hs_server_set_tls(struct hs_server *s, struct ssl_ctx_st *tls);

/* A filter runs before routing for every request: it returns true to go on, or replies and
 * returns false (authentication, CSRF checks, headers every answer carries). */
typedef bool (*hs_filter_fn)(struct hs_request *r, void *userdata);
void hs_server_set_filter(struct hs_server *s, hs_filter_fn filter);

/* Stop listening on path and close its connections. */
int hs_server_unlisten(struct hs_server *s, const char *path);

/* Serve one already-accepted connection (e.g. a host-guest channel). */
int hs_server_adopt_connection(struct hs_server *s, int fd, const struct hs_limits *limits,
                               void *listener_data);

/* A listener without a socket of its own, for connections another listener accepted and hands
 * over with hs_server_take(); its limits (connections, requests in flight) are shared by all of
 * them. Freed with the server. */
int hs_server_intake(struct hs_server *s, const struct hs_limits *limits, void *listener_data,
                     struct hs_listener **ret);
/* Serve bev on the intake l (ownership taken; its callbacks, watermarks and timeouts become the
 * server's): a TLS bufferevent, say, whose input may already hold the start of the request. */
void hs_server_take(struct hs_listener *l, struct bufferevent *bev);

/* Counters (for tests and status). */
size_t hs_server_connections(const struct hs_server *s);

/* ---- request accessors (valid inside the handler, and until the reply ends) ---- */
const char *hs_request_method(const struct hs_request *r);
const char *hs_request_path(const struct hs_request *r);            /* decoded path, no query */
const char *hs_request_target(const struct hs_request *r);          /* as sent */
const char *hs_request_param(const struct hs_request *r, size_t i); /* i-th "*" capture */
const char *hs_request_query(const struct hs_request *r, const char *name); /* decoded, or NULL */
bool hs_request_has_query(const struct hs_request *r, const char *name);
const char *hs_request_header(const struct hs_request *r, const char *name); /* case-insensitive */
/* The i-th header as it came (repeated headers one by one); false past the last. */
bool hs_request_header_at(const struct hs_request *r, size_t i, const char **ret_name,
                          const char **ret_value);
const char *hs_request_body(const struct hs_request *r, size_t *ret_len);
/* Parse the body as JSON; on failure replies 400 naming the problem and returns -EINVAL. An
 * empty body gives ret = NULL and 0 when allow_empty. */
int hs_request_body_json(struct hs_request *r, bool allow_empty, json_t **ret);
void *hs_request_listener_data(const struct hs_request *r);
/* Did the request come over TLS? */
bool hs_request_tls(const struct hs_request *r);
/* Peer credentials of a unix-socket client (SO_PEERCRED), or NULL. */
const struct ucred *hs_request_peer(const struct hs_request *r);

/* ---- replies: exactly one reply per request; after it ends the request is gone ---- */
/* Add a response header (before the reply). */
void hs_reply_header(struct hs_request *r, const char *name, const char *value);
void hs_reply(struct hs_request *r, int status, const char *content_type, const void *body,
              size_t len);
void hs_reply_json(struct hs_request *r, int status, json_t *body /* reference stolen */);
void hs_reply_error(struct hs_request *r, int status, const char *fmt, ...) _printf_(3, 4);
void hs_reply_empty(struct hs_request *r, int status);

/* Streaming (chunked) replies, e.g. logs with follow. write returns -EPIPE once the client is
 * gone and -ENOBUFS when more than max_output is queued (the connection is then dropped). */
int hs_stream_start(struct hs_request *r, int status, const char *content_type);
/* The same with a Content-Length instead of chunks (a relayed body whose length is known): at
 * most length bytes may be written; a reply ended short closes the connection, so the client
 * sees it cut. For a HEAD request nothing may be written: the length is the one a GET gives. */
int hs_stream_start_sized(struct hs_request *r, int status, const char *content_type,
                          uint64_t length);
int hs_stream_write(struct hs_request *r, const void *data, size_t n);
void hs_stream_end(struct hs_request *r);
/* End a streaming reply that is not complete (its source failed): the connection is closed at
 * once, without the last chunk, so the client cannot take it for a whole body. */
void hs_stream_abort(struct hs_request *r);
/* Backpressure for a writer that could outrun its reader (a pipe into a stream): the bytes queued
 * for the client, and a callback when all of them have been sent (NULL removes it). A writer
 * stops above a level of its own, well below max_output, and goes on from the callback. */
size_t hs_stream_queued(const struct hs_request *r);
void hs_stream_on_drain(struct hs_request *r, void (*cb)(struct hs_request *r, void *ud), void *ud);

/* Called once if the client goes away before the reply ends; the request is freed right after
 * the callback returns, so an asynchronous handler must drop its pointer to it there. */
void hs_request_on_abort(struct hs_request *r, void (*cb)(struct hs_request *r, void *ud),
                         void *ud);

const char *hs_status_reason(int status);
