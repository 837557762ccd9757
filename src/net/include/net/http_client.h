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
/* What hc_data_fn returns to pause the transfer without taking the piece: it comes again, to
 * the same callback, after hc_resume() (flow control for a relay to a slower reader). */
#define HC_DATA_PAUSE 1
/* Each response header, split (name without the colon, value without surrounding blanks);
 * name NULL when a new response begins (a redirect followed, an interim 1xx), value its status
 * line then: forget what the previous one said. */
typedef void (*hc_header_fn)(void *ud, const char *name, size_t name_len, const char *value,
                             size_t value_len);

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
    /* https: the server's public key must be pinned_pubkey ("sha256//BASE64" of its
     * SubjectPublicKeyInfo; no CA or host name check then: the pin is the identity), or with
     * tls_learn_key any certificate is accepted and on_peer_key is told its key's pin before
     * on_done (trust on first use). A key that does not match fails with -EKEYREJECTED. */
    const char *pinned_pubkey;
    bool tls_learn_key;
    void (*on_peer_key)(void *ud, const char *pin);
    /* Once, with the status, as on_status, and the response's Content-Type (NULL: none). */
    void (*on_headers)(void *ud, long status, const char *content_type);
    hc_header_fn on_header; /* optional: every response header line */
    const char *ca_file;    /* https: trust these CAs (PEM) instead of the system's */
    bool follow_redirects;  /* up to 5, http(s) only; credentials in headers stay with the
                               first host (libcurl drops Authorization and Cookie on a redirect
                               to another host) */
    long low_speed_time_s;  /* abort when under 1 byte/s for this long; 0: never */
    /* HTTP/1.1 only, no HTTP/2 over TLS: a paused transfer then stops reading its socket (TCP
     * pushes back), where a paused HTTP/2 stream goes on filling libcurl's buffer up to its
     * window (tens of MiB) */
    bool http1_only;
};

int hc_client_new(struct event_base *base, struct hc_client **ret);
/* Cancels every transfer without calling their callbacks. */
void hc_client_free(struct hc_client *c);

/* Start a transfer; returns NULL (and calls nothing) when it cannot start. */
struct hc_transfer *hc_request(struct hc_client *c, const struct hc_request *req);
/* Cancel a running transfer; its on_done is not called. Safe from inside on_data. */
void hc_cancel(struct hc_transfer *t);
/* Go on with a transfer whose on_data returned HC_DATA_PAUSE. */
void hc_resume(struct hc_transfer *t);
size_t hc_client_active(const struct hc_client *c);

/* Blocking request for command-line tools (no event loop): collects the body into ret_body (or
 * streams it to on_data). Same result convention as hc_done_fn. */
/* The status code of a status line ("HTTP/1.1 307 Temporary Redirect", "HTTP/2 200"), or 0
 * when it is none. Pure. */
int hc_status_line_code(const char *line, size_t n);
/* Split one raw header line ("Name: value\r\n") as on_header gets it: 0, or -EINVAL for a status
 * line, the blank line ending the block, or a line without a name and a colon. Pure. */
int hc_header_split(const char *line, size_t n, const char **ret_name, size_t *ret_name_len,
                    const char **ret_value, size_t *ret_value_len);

int hc_request_sync(const struct hc_request *req, long *ret_status, struct lbuf *ret_body);
