/* test-ws.c — the WebSocket upgrade (request parsing, checks, answers) and framing (ws.h). */
#include <event2/buffer.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/ws.h"

#define PATH "/$iothub/websocket"
#define GOOD                                                                                       \
    "GET /$iothub/websocket HTTP/1.1\r\n"                                                          \
    "Host: edge.local:4443\r\n"                                                                    \
    "Upgrade: websocket\r\n"                                                                       \
    "Connection: Upgrade\r\n"                                                                      \
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"                                              \
    "Sec-WebSocket-Protocol: mqtt\r\n"                                                             \
    "Sec-WebSocket-Version: 13\r\n\r\n"

/* Parse text, then check it: the HTTP status (0 accepted), the reason in *why. */
static int upgrade_status(const char *text, char *why, size_t whylen)
{
    struct ws_request r = {0};
    struct lerr err = {0};
    int status = 0;
    int n = ws_request_parse(text, strlen(text), 8192, &r, &status, &err);
    if (n == 0)
        return -1; /* incomplete */
    if (n > 0)
        status = ws_upgrade_check(&r, PATH, "mqtt", &err);
    if (why)
        snprintf(why, whylen, "%s", err.msg);
    ws_request_clear(&r);
    return status;
}

static void test_accept_key(void **state)
{
    char k[29];
    /* RFC 6455 §1.3's example */
    assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", k), 0);
    assert_string_equal(k, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_good_upgrade(void **state)
{
    const char *text = GOOD "\x82\x80";
    struct ws_request r = {0};
    struct lerr err = {0};
    int status = 0;
    int n = ws_request_parse(text, strlen(text), 8192, &r, &status, &err);
    assert_int_equal(n, (int)strlen(GOOD)); /* the frame bytes after it are not the request's */
    assert_string_equal(r.method, "GET");
    assert_string_equal(r.path, PATH);
    assert_string_equal(r.host, "edge.local:4443");
    assert_int_equal(ws_upgrade_check(&r, PATH, "mqtt", &err), 0);
    struct lbuf out = LBUF_INIT;
    assert_int_equal(ws_upgrade_response(&r, "mqtt", &out), 0);
    assert_non_null(strstr(out.data, "HTTP/1.1 101 Switching Protocols\r\n"));
    assert_non_null(strstr(out.data, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert_non_null(strstr(out.data, "Sec-WebSocket-Protocol: mqtt\r\n"));
    lbuf_free(&out);
    ws_request_clear(&r);

    /* header names are case-insensitive, tokens in lists, the subprotocol among others, the
     * path percent-encoded */
    assert_int_equal(upgrade_status("GET /%24iothub/websocket?x=1 HTTP/1.1\r\nhost: h\r\n"
                                    "upgrade: WebSocket\r\nconnection: keep-alive, Upgrade\r\n"
                                    "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                    "sec-websocket-protocol: mqttv3.1\r\n"
                                    "Sec-WebSocket-Protocol: mqtt\r\n"
                                    "sec-websocket-version: 13\r\n\r\n",
                                    NULL, 0),
                     0);
}

static void test_incomplete_and_too_large(void **state)
{
    assert_int_equal(upgrade_status("GET /$iothub/websocket HTTP/1.1\r\nHost: x\r\n", NULL, 0), -1);
    struct ws_request r = {0};
    struct lerr err = {0};
    int status = 0;
    char big[600];
    memset(big, 'a', sizeof(big));
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    assert_int_equal(ws_request_parse(big, sizeof(big), 512, &r, &status, &err), -EMSGSIZE);
    assert_int_equal(status, 431);
    assert_non_null(strstr(err.msg, "512 bytes"));
}

static void test_refusals(void **state)
{
    char why[LERR_MSG_MAX];
    assert_int_equal(upgrade_status("\x16\x03\x01\x02\x00garbage\r\n\r\n", why, sizeof(why)), 400);
    assert_non_null(strstr(why, "not an HTTP/1.1 request"));
    assert_int_equal(upgrade_status("GET /other HTTP/1.1\r\nHost: h\r\n\r\n", why, sizeof(why)),
                     404);
    assert_non_null(strstr(why, "/other"));
    assert_int_equal(
        upgrade_status("GET /$iothub/websocket HTTP/1.1\r\nHost: h\r\n\r\n", why, sizeof(why)),
        426);
    assert_non_null(strstr(why, "Upgrade: websocket"));
    assert_int_equal(upgrade_status("POST /$iothub/websocket HTTP/1.1\r\nHost: h\r\n"
                                    "Content-Length: 2\r\n\r\nab",
                                    why, sizeof(why)),
                     400);
    assert_non_null(strstr(why, "no body"));
    char text[1024];
    /* each header of a good request, changed or left out */
    static const struct {
        const char *from, *to;
        int status;
        const char *why;
    } cases[] = {
        {"GET ", "PUT ", 400, "is a GET"},
        {"Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8", 426, "must be 13"},
        {"Sec-WebSocket-Version: 13\r\n", "", 426, "(missing)"},
        {"dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZQ==", 400, "16 bytes"},
        {"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "", 400, "16 bytes"},
        {"Sec-WebSocket-Protocol: mqtt", "Sec-WebSocket-Protocol: AMQPWSB10", 400, "AMQPWSB10"},
        {"Sec-WebSocket-Protocol: mqtt\r\n", "", 400, "offered: none"},
        {"Connection: Upgrade", "Connection: close", 426, "Connection: Upgrade"},
        {"HTTP/1.1\r\n", "HTTP/1.0\r\n", 400, "HTTP/1.1"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *at = strstr(GOOD, cases[i].from);
        assert_non_null(at);
        snprintf(text, sizeof(text), "%.*s%s%s", (int)(at - GOOD), GOOD, cases[i].to,
                 at + strlen(cases[i].from));
        assert_int_equal(upgrade_status(text, why, sizeof(why)), cases[i].status);
        assert_non_null(strstr(why, cases[i].why));
    }
    struct lbuf out = LBUF_INIT;
    assert_int_equal(ws_error_response(426, "needs an upgrade", &out), 0);
    assert_non_null(strstr(out.data, "HTTP/1.1 426 Upgrade Required\r\n"));
    assert_non_null(strstr(out.data, "Sec-WebSocket-Version: 13\r\n"));
    assert_non_null(strstr(out.data, "\r\n\r\nneeds an upgrade\n"));
    lbuf_free(&out);
}

/* A client's frame: masked, as RFC 6455 requires of clients. */
static void client_frame(struct evbuffer *b, uint8_t first, const void *payload, size_t n)
{
    uint8_t h[14], mask[4] = {0x11, 0x22, 0x33, 0x44};
    size_t hn = 0;
    h[hn++] = first;
    if (n < 126) {
        h[hn++] = 0x80 | (uint8_t)n;
    } else if (n < 65536) {
        h[hn++] = 0x80 | 126;
        h[hn++] = (uint8_t)(n >> 8);
        h[hn++] = (uint8_t)n;
    } else {
        h[hn++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            h[hn++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    memcpy(h + hn, mask, 4);
    hn += 4;
    evbuffer_add(b, h, hn);
    uint8_t *m = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        m[i] = ((const uint8_t *)payload)[i] ^ mask[i % 4];
    evbuffer_add(b, m, n);
    free(m);
}

struct pipe3 {
    struct evbuffer *raw, *app, *out;
    struct ws_conn *w;
};

static struct pipe3 pipe_new(uint64_t max_frame)
{
    struct pipe3 p = {evbuffer_new(), evbuffer_new(), evbuffer_new(), NULL};
    assert_int_equal(ws_conn_new(max_frame, &p.w), 0);
    return p;
}

static void pipe_free(struct pipe3 *p)
{
    evbuffer_free(p->raw);
    evbuffer_free(p->app);
    evbuffer_free(p->out);
    ws_conn_free(p->w);
}

static void test_frames(void **state)
{
    struct pipe3 p = pipe_new(1024);
    /* a binary message in two fragments with a ping between them, then another message */
    client_frame(p.raw, 0x02, "\x10\x0c", 2);
    client_frame(p.raw, 0x89, "hi", 2);
    client_frame(p.raw, 0x80, "abc", 3);
    client_frame(p.raw, 0x82, "def", 3);
    /* split in the middle of a frame: nothing lost */
    struct evbuffer *later = evbuffer_new();
    evbuffer_remove_buffer(p.raw, later, evbuffer_get_length(p.raw) - 5);
    evbuffer_add_buffer(later, p.raw);
    assert_int_equal(ws_conn_read(p.w, later, p.app, 1 << 20, p.out), 0);
    assert_int_equal(evbuffer_get_length(p.app), 8);
    assert_memory_equal(evbuffer_pullup(p.app, -1),
                        "\x10\x0c"
                        "abcdef",
                        8);
    /* the pong, unmasked */
    assert_int_equal(evbuffer_get_length(p.out), 4);
    assert_memory_equal(evbuffer_pullup(p.out, -1), "\x8a\x02hi", 4);
    evbuffer_drain(p.out, 4);
    /* ours: one unmasked binary frame of both parts */
    assert_int_equal(ws_conn_write(p.w, p.out, "\x20\x02", 2, "\x00\x00", 2), 0);
    assert_int_equal(evbuffer_get_length(p.out), 6);
    assert_memory_equal(evbuffer_pullup(p.out, -1), "\x82\x04\x20\x02\x00\x00", 6);
    evbuffer_drain(p.out, 6);
    /* a close: echoed, and nothing more is read */
    client_frame(later, 0x88, "\x03\xe8", 2);
    client_frame(later, 0x82, "zz", 2);
    assert_int_equal(ws_conn_read(p.w, later, p.app, 1 << 20, p.out), WS_CLOSED);
    assert_non_null(strstr(ws_conn_why(p.w), "closed by the peer (1000)"));
    assert_memory_equal(evbuffer_pullup(p.out, -1), "\x88\x02\x03\xe8", 4);
    assert_int_equal(evbuffer_get_length(p.app), 8);
    assert_int_equal(ws_conn_write(p.w, p.out, "x", 1, NULL, 0), -EPIPE);
    evbuffer_free(later);
    pipe_free(&p);
}

static void test_limit_backpressure(void **state)
{
    struct pipe3 p = pipe_new(1 << 20);
    char big[20000];
    memset(big, 'q', sizeof(big));
    client_frame(p.raw, 0x82, big, sizeof(big));
    assert_int_equal(ws_conn_read(p.w, p.raw, p.app, 1000, p.out), 0);
    /* stops near the limit; the rest waits in raw */
    assert_true(evbuffer_get_length(p.app) >= 1000);
    assert_true(evbuffer_get_length(p.app) <= 1000 + 4096);
    assert_true(evbuffer_get_length(p.raw) > 0);
    size_t total = 0;
    while (evbuffer_get_length(p.raw) > 0 || evbuffer_get_length(p.app) > 0) {
        total += evbuffer_get_length(p.app);
        evbuffer_drain(p.app, evbuffer_get_length(p.app));
        assert_int_equal(ws_conn_read(p.w, p.raw, p.app, 1000, p.out), 0);
    }
    assert_int_equal(total, sizeof(big));
    pipe_free(&p);
}

static void test_refused_frames(void **state)
{
    /* a frame beyond max_frame: closed with 1009 at its first payload byte */
    struct pipe3 p = pipe_new(100);
    uint8_t hdr[] = {0x82, 0x80 | 126, 0x01, 0x00, 1, 2, 3, 4, 0x55};
    evbuffer_add(p.raw, hdr, sizeof(hdr));
    assert_int_equal(ws_conn_read(p.w, p.raw, p.app, 1 << 20, p.out), WS_CLOSED);
    assert_non_null(strstr(ws_conn_why(p.w), "larger"));
    assert_memory_equal(evbuffer_pullup(p.out, 4), "\x88\x02\x03\xf1", 4);
    pipe_free(&p);
    /* a text frame: 1003 */
    p = pipe_new(100);
    client_frame(p.raw, 0x81, "hello", 5);
    assert_int_equal(ws_conn_read(p.w, p.raw, p.app, 1 << 20, p.out), WS_CLOSED);
    assert_non_null(strstr(ws_conn_why(p.w), "text frame"));
    assert_int_equal(evbuffer_get_length(p.app), 0);
    assert_memory_equal(evbuffer_pullup(p.out, 4), "\x88\x02\x03\xeb", 4);
    pipe_free(&p);
    /* an unmasked frame from a client: protocol error, 1002 */
    p = pipe_new(100);
    evbuffer_add(p.raw, "\x82\x02hi", 4);
    assert_int_equal(ws_conn_read(p.w, p.raw, p.app, 1 << 20, p.out), WS_CLOSED);
    assert_int_equal(evbuffer_get_length(p.app), 0);
    assert_memory_equal(evbuffer_pullup(p.out, 4), "\x88\x02\x03\xea", 4);
    pipe_free(&p);
    /* our own close, once */
    p = pipe_new(100);
    ws_conn_close(p.w, p.out, 1000);
    ws_conn_close(p.w, p.out, 1000);
    assert_int_equal(evbuffer_get_length(p.out), 4);
    assert_memory_equal(evbuffer_pullup(p.out, 4), "\x88\x02\x03\xe8", 4);
    pipe_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_key),
        cmocka_unit_test(test_good_upgrade),
        cmocka_unit_test(test_incomplete_and_too_large),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_frames),
        cmocka_unit_test(test_limit_backpressure),
        cmocka_unit_test(test_refused_frames),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
