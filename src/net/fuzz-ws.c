/* fuzz-ws.c — the WebSocket upgrade request parser and checks (ws.h) on arbitrary bytes, and
 * whatever follows a complete request fed to the framing as the client's frames. */
#include <event2/buffer.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/ws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ws_request rq = {0};
    struct lerr err = {0};
    int status = 0;
    int n = ws_request_parse(data, size, 8192, &rq, &status, &err);
    struct lbuf out = LBUF_INIT;
    if (n < 0) {
        ws_error_response(status, err.msg, &out);
    } else if (n > 0) {
        int st = ws_upgrade_check(&rq, "/$iothub/websocket", "mqtt", &err);
        if (st == 0)
            ws_upgrade_response(&rq, "mqtt", &out);
        else
            ws_error_response(st, err.msg, &out);
        struct ws_conn *w = NULL;
        struct evbuffer *raw = evbuffer_new(), *app = evbuffer_new(), *o = evbuffer_new();
        if (raw && app && o && ws_conn_new(4096, &w) == 0) {
            evbuffer_add(raw, data + n, size - (size_t)n);
            while (ws_conn_read(w, raw, app, 1024, o) == 0 && evbuffer_get_length(app) >= 1024)
                evbuffer_drain(app, evbuffer_get_length(app));
            ws_conn_write(w, o, "x", 1, "yz", 2);
            ws_conn_close(w, o, 1000);
            ws_conn_why(w);
            ws_conn_free(w);
        }
        evbuffer_free(raw);
        evbuffer_free(app);
        evbuffer_free(o);
    }
    lbuf_free(&out);
    ws_request_clear(&rq);
    return 0;
}
