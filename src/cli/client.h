/* client.h — the CLI's connection to the management API: which socket (-H, LEDGE_HOST, default),
 * blocking requests, streamed responses, and turning API errors into one clear message. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "base/buf.h"

#define LEDGE_DEFAULT_HOST "/run/ledge/mgmt.sock"

struct cli {
    const char *socket; /* resolved unix socket path */
    bool json;          /* --json output where a command supports it */
    bool quiet;         /* don't print transport errors */
    const char *vm;     /* --vm NAME: the socket is that VM's guest API (cmd_vm.c) */
    const char *device; /* --device NAME: a child edge device of this one (cmd_child.c) */
};

/* Accepts "unix:///path", "/path" or a relative path. */
int cli_set_host(struct cli *c, const char *host);

/* Blocking request; on success the parsed JSON body (or NULL for an empty one) in *ret and the
 * status in *ret_status. On transport failure prints why and returns < 0. */
int cli_call(struct cli *c, const char *method, const char *path, const char *body, size_t len,
             long *ret_status, json_t **ret);
/* Streamed request: on_data gets the body as it arrives. */
int cli_stream(struct cli *c, const char *method, const char *path, const char *body, size_t len,
               long *ret_status, int (*on_data)(void *ud, const char *data, size_t n), void *ud,
               struct lbuf *ret_error_body);
/* Print "ledge: <message>" (and any "errors" lines) for a non-2xx answer; returns 1. */
int cli_report_error(long status, const json_t *body);
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
