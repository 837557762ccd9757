/* fuzz-https.c — the HTTPS API's request path on arbitrary bytes: the stream goes, as the
 * WebSocket listener hands it over, to an http_server intake (hs_server_take) whose handler maps
 * each request with https_request_of() and https_request_parse() and answers what the API would
 * (the call itself, or the refusal with its status). The hub's authentication and methods are
 * not in it: fuzz-conn covers the hub, this the parsing the API adds to http_server. */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/json.h"
#include "head_https.h"
#include "net/http_server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void h_any(struct hs_request *r, void *ud)
{
    struct https_request rq;
    https_request_of(r, &rq);
    struct https_call c = {0};
    struct lerr err = {0};
    int status = 0;
    if (https_request_parse(&rq, &c, &status, &err) < 0) {
        https_reply_error(r, status, err.msg);
        return;
    }
    json_t *j = json_pack("{s:s, s:s?, s:s, s:s?, s:s, s:O, s:i, s:i}", "caller", c.caller_device,
                          "callerModule", c.caller_module, "device", c.device_id, "module",
                          c.module_id, "method", c.method_name, "payload", c.payload, "timeout",
                          c.response_timeout_s, "connect", c.connect_timeout_s);
    https_call_clear(&c);
    hs_reply_json(r, 200, j);
}

static const struct hs_route routes[] = {
    {"POST", "/**", h_any},
    {"GET", "/**", h_any},
    {"PUT", "/**", h_any},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
        return 0;
    struct event_base *base = event_base_new();
    struct hs_server *srv = NULL;
    struct hs_listener *in = NULL;
    struct hs_limits l = HS_LIMITS_DEFAULT;
    l.max_body = 4096;
    l.max_header_bytes = HTTPS_MAX_HEADER;
    l.request_timeout_ms = 20;
    hs_server_new(base, routes, sizeof(routes) / sizeof(routes[0]), NULL, &srv);
    hs_server_intake(srv, &l, NULL, &in);
    /* as head_ws.c hands it over: the first bytes already read into the bufferevent's input */
    struct bufferevent *bev = bufferevent_socket_new(base, sv[0], BEV_OPT_CLOSE_ON_FREE);
    size_t first = size < 512 ? size : 512;
    bufferevent_enable(bev, EV_READ);
    if (first && write(sv[1], data, first) == (ssize_t)first)
        for (int i = 0; i < 10 && evbuffer_get_length(bufferevent_get_input(bev)) < first; i++)
            event_base_loop(base, EVLOOP_NONBLOCK);
    hs_server_take(in, bev);
    size_t off = first;
    for (int stuck = 0; stuck < 100;) {
        if (off < size) {
            ssize_t w = write(sv[1], data + off, size - off > 65536 ? 65536 : size - off);
            if (w > 0)
                off += (size_t)w;
            else
                stuck++; /* the server reads no more (a request being answered, a refusal) */
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
        char sink[65536];
        while (recv(sv[1], sink, sizeof(sink), MSG_DONTWAIT) > 0)
            ;
        if (off >= size)
            break;
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
