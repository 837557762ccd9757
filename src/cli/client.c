/* client.c — management API client for the CLI (see client.h). */
#include "client.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/json.h"
#include "base/str.h"
#include "net/http_client.h"

int cli_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ledge: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int cli_set_host(struct cli *c, const char *host)
{
    if (!host || !*host)
        return -EINVAL;
    if (lstr_startswith(host, "unix://"))
        host += strlen("unix://");
    else if (strstr(host, "://"))
        return -EPROTONOSUPPORT;
    c->socket = host;
    return 0;
}

static void transport_error(struct cli *c, int r)
{
    if (c->quiet)
        return;
    if (r == -ECONNREFUSED || r == -ENOENT || r == -EIO)
        cli_fail("cannot reach ledged at %s (is it running? is the socket path right? "
                 "use -H or LEDGE_HOST)",
                 c->socket);
    else if (r == -ETIMEDOUT)
        cli_fail("ledged at %s did not answer in time", c->socket);
    else
        cli_fail("talking to ledged at %s: %s", c->socket, strerror(-r));
}

int cli_call(struct cli *c, const char *method, const char *path, const char *body, size_t len,
             long *ret_status, json_t **ret)
{
    char url[2048];
    snprintf(url, sizeof(url), "http://localhost%s", path);
    struct hc_request req = {
        .method = method,
        .unix_socket = c->socket,
        .url = url,
        .body = body,
        .body_len = len,
        .timeout_ms = 0,
        .connect_timeout_ms = 5000,
    };
    struct lbuf out = LBUF_INIT;
    long status = 0;
    int r = hc_request_sync(&req, &status, &out);
    if (r < 0) {
        lbuf_free(&out);
        transport_error(c, r);
        return r;
    }
    *ret = NULL;
    if (out.len) {
        json_error_t je;
        *ret = json_loadb(out.data, out.len, JSON_DECODE_ANY, &je);
        if (!*ret && status < 300) {
            lbuf_free(&out);
            cli_fail("ledged answered something that is not JSON");
            return -EPROTO;
        }
    }
    lbuf_free(&out);
    *ret_status = status;
    return 0;
}

struct stream_ctx {
    int (*on_data)(void *ud, const char *data, size_t n);
    void *ud;
    struct lbuf *err_body;
    long status;
};

static void stream_status(void *ud, long status)
{
    struct stream_ctx *s = ud;
    s->status = status;
}

static int stream_data(void *ud, const char *data, size_t n)
{
    struct stream_ctx *s = ud;
    if (s->status >= 300)
        return s->err_body->len + n > (1 << 20) ? -E2BIG : lbuf_append(s->err_body, data, n);
    return s->on_data(s->ud, data, n);
}

int cli_stream(struct cli *c, const char *method, const char *path, const char *body, size_t len,
               long *ret_status, int (*on_data)(void *ud, const char *data, size_t n), void *ud,
               struct lbuf *ret_error_body)
{
    char url[2048];
    snprintf(url, sizeof(url), "http://localhost%s", path);
    struct stream_ctx s = {.on_data = on_data, .ud = ud, .err_body = ret_error_body};
    struct hc_request req = {
        .method = method,
        .unix_socket = c->socket,
        .url = url,
        .body = body,
        .body_len = len,
        .timeout_ms = 0,
        .connect_timeout_ms = 5000,
        .on_data = stream_data,
        .on_status = stream_status,
        .ud = &s,
    };
    long status = 0;
    int r = hc_request_sync(&req, &status, NULL);
    if (r < 0 && r != -ECANCELED) {
        transport_error(c, r);
        return r;
    }
    *ret_status = status ? status : s.status;
    return 0;
}

int cli_report_error(long status, const json_t *body)
{
    const char *msg = ljson_str(body, "message");
    if (msg)
        cli_fail("%s", msg);
    else
        cli_fail("ledged answered HTTP %ld", status);
    json_t *errors = json_object_get(body, "errors");
    size_t i;
    json_t *e;
    if (json_array_size(errors) > 1 ||
        (json_array_size(errors) == 1 && msg &&
         !lstr_eq(json_string_value(json_array_get(errors, 0)), msg)))
        json_array_foreach (errors, i, e)
            fprintf(stderr, "  %s\n", json_string_value(e));
    return 1;
}
