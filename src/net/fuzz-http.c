/* fuzz-http.c — feeds arbitrary bytes to the HTTP server as one client connection (through a
 * socketpair and a real event loop) and runs the loop until the server has answered or closed. */
#include <event2/event.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/json.h"
#include "net/http_server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void h_ok(struct hs_request *r, void *ud)
{
    json_t *body = NULL;
    if (strcmp(hs_request_method(r), "POST") == 0) {
        if (hs_request_body_json(r, true, &body) < 0)
            return;
    }
    json_t *j = json_pack("{s:s, s:s?, s:o?}", "path", hs_request_path(r), "q",
                          hs_request_query(r, "api-version"), "body", body);
    hs_reply_json(r, 200, j);
}

static void h_stream(struct hs_request *r, void *ud)
{
    hs_stream_start(r, 200, "text/plain");
    hs_stream_write(r, "x", 1);
    hs_stream_end(r);
}

static const struct hs_route routes[] = {
    {"GET", "/modules/*/logs", h_stream},
    {"GET", "/modules/*", h_ok},
    {"POST", "/modules/*/genid/*/sign", h_ok},
    {"GET", "/", h_ok},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return 0;
    struct event_base *base = event_base_new();
    struct hs_server *srv = NULL;
    hs_server_new(base, routes, sizeof(routes) / sizeof(routes[0]), NULL, &srv);
    struct hs_limits l = HS_LIMITS_DEFAULT;
    l.max_body = 4096;
    l.max_header_bytes = 4096;
    l.request_timeout_ms = 20;
    hs_server_adopt_connection(srv, sv[0], &l, NULL);
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(sv[1], data + off, size - off > 65536 ? 65536 : size - off);
        if (w <= 0)
            break;
        off += (size_t)w;
        event_base_loop(base, EVLOOP_NONBLOCK);
        char sink[65536];
        while (recv(sv[1], sink, sizeof(sink), MSG_DONTWAIT) > 0)
            ;
    }
    shutdown(sv[1], SHUT_WR);
    for (int i = 0; i < 50 && hs_server_connections(srv) > 0; i++) {
        event_base_loop(base, EVLOOP_ONCE);
        char sink[65536];
        while (recv(sv[1], sink, sizeof(sink), MSG_DONTWAIT) > 0)
            ;
    }
    hs_server_free(srv);
    event_base_free(base);
    close(sv[1]);
    return 0;
}
