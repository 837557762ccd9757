/* modclient-internal.h — the module client's internal units, shared with its unit tests and fuzz
 * target: the HTTP/1.1 response reader and workload API client (workload.c), and the dispatch of
 * a PUBLISH from the hub (client.c). */
#pragma once

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/errors.h"
#include "modclient/modclient.h"

struct event_base;

/* Largest workload reply read (a trust bundle is a few KiB). */
#define MC_HTTP_MAX_RESPONSE (1u << 20)
#define MC_HTTP_MAX_HEADER 8192

/* An HTTP/1.1 response read incrementally (http_parser does the framing: Content-Length,
 * chunked, or until EOF). */
struct mc_http_reader {
    http_parser p;
    struct lbuf body; /* bounded by MC_HTTP_MAX_RESPONSE */
    size_t header_bytes;
    bool complete;
    bool failed;
};

void mc_http_reader_init(struct mc_http_reader *r);
/* Feed n bytes (n == 0: the peer closed). Returns 1 once the response is complete, 0 for more,
 * -EBADMSG (malformed) or -E2BIG (too large) with the reason in e. */
int mc_http_reader_feed(struct mc_http_reader *r, const char *data, size_t n, struct lerr *e);
int mc_http_reader_status(const struct mc_http_reader *r);
void mc_http_reader_done(struct mc_http_reader *r);

/* Workload replies. Non-2xx statuses become -EACCES (401/403), -ENOENT (404) or -EIO with the
 * server's {"message"} in e. */
int mc_workload_trust_bundle(int status, const char *body, size_t n, char **ret_pem,
                             struct lerr *e);
int mc_workload_digest(int status, const char *body, size_t n, char **ret_digest_b64,
                       struct lerr *e);

/* One request on a unix socket; cb runs exactly once (unless cancelled) with result 0 and the
 * response, or a negative errno and why. */
struct mc_http;
typedef void (*mc_http_fn)(void *ud, int result, int status, const char *body, size_t len,
                           const char *why);
int mc_http_request(struct event_base *base, const char *socket_path, const char *method,
                    const char *target, const char *body, size_t len, int timeout_ms, mc_http_fn cb,
                    void *ud, struct mc_http **ret);
void mc_http_cancel(struct mc_http *h);

/* "unix:///path" → "/path"; -EPROTONOSUPPORT for other schemes. */
int mc_workload_socket_path(const char *uri, char **ret, struct lerr *e);

/* A PUBLISH from the hub, as the MQTT connection hands it over (tests and fuzzing call it
 * directly). Replies (method answers) need a connection and are dropped without one. */
void mc_dispatch_publish(struct modclient *c, const char *topic, size_t topic_len,
                         const uint8_t *payload, size_t len);
