/* http_client.h — asynchronous HTTP client for the event loop: libcurl's multi interface driven
 * by libevent, over unix sockets (the Docker Engine API, ledge's own sockets) or TCP. Responses
 * are either collected (bounded) or streamed to a callback (event streams, followed logs). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"

struct event_base;
struct hc_client;
struct hc_transfer;

/* Called once when a transfer ends (not after hc_cancel). result: 0, or -errno for transport
 * failures (-ECONNREFUSED, -ENOENT for a missing socket, -ETIMEDOUT, -E2BIG over max_response,
 * -ECANCELED when on_data asked to stop). status: HTTP status (0 without a response).
 * body: the collected response (empty when streaming). The transfer is freed after return. */
typedef void (*hc_done_fn)(void *ud, int result, long status, struct lbuf *body);
/* Streaming: called for each piece of the body; return < 0 to abort the transfer. */
typedef int (*hc_data_fn)(void *ud, const char *data, size_t n);

struct hc_request {
    const char *method;      /* "GET" when NULL */
    const char *unix_socket; /* path, or NULL for TCP */
    const char *url;         /* "http://localhost/v1.41/containers/json" */
    const char *body;        /* may be NULL */
    size_t body_len;
    const char *content_type;   /* sent when body != NULL; default application/json */
    const char *const *headers; /* extra "Name: value" headers, NULL-terminated, or NULL */
    long timeout_ms;            /* whole transfer; 0 = none (streams) */
    long connect_timeout_ms;    /* 0 = 5000 */
    size_t max_response;        /* collected body bound; 0 = 16 MiB */
    hc_data_fn on_data;         /* streaming when set */
    void (*on_status)(void *ud, long status); /* once, before the first body byte (optional) */
    hc_done_fn on_done;
    void *ud;
};

int hc_client_new(struct event_base *base, struct hc_client **ret);
/* Cancels every transfer without calling their callbacks. */
void hc_client_free(struct hc_client *c);

/* Start a transfer; returns NULL (and calls nothing) when it cannot start. */
struct hc_transfer *hc_request(struct hc_client *c, const struct hc_request *req);
/* Cancel a running transfer; its on_done is not called. Safe from inside on_data. */
void hc_cancel(struct hc_transfer *t);
size_t hc_client_active(const struct hc_client *c);

/* Blocking request for command-line tools (no event loop): collects the body into ret_body (or
 * streams it to on_data). Same result convention as hc_done_fn. */
int hc_request_sync(const struct hc_request *req, long *ret_status, struct lbuf *ret_body);
