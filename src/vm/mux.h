/* mux.h — the host⇄guest channel multiplexer on a libevent loop: many byte-stream connections
 * (the guest's management API, its Docker socket, exec sessions) over the one virtio-serial link,
 * in frames (frame.h) with per-connection credit so a slow reader never blocks the others and no
 * side buffers more than a window per connection. Both ends use it: the host supervisor opens
 * connections, the guest agent accepts them. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/errors.h"

struct event_base;
struct vm_mux;
struct vm_mux_conn;

enum vm_mux_role {
    VM_MUX_HOST,  /* opens connections; never accepts OPEN */
    VM_MUX_GUEST, /* accepts OPEN through ops.on_open */
};

struct vm_mux_ops {
    /* A HELLO arrived (JSON, borrowed). When it carries "reset": true every connection has
     * already been closed: the peer started over. */
    void (*on_hello)(void *ud, const json_t *hello);
    /* Guest: an OPEN request (JSON, borrowed). Attach the connection with one of the
     * vm_mux_conn_attach_* calls and return 0, or return < 0 with err set to refuse (the host
     * gets a CLOSE carrying err's message). */
    int (*on_open)(void *ud, struct vm_mux_conn *c, const json_t *req, struct lerr *err);
    void (*on_event)(void *ud, const json_t *event);
    void (*on_pong)(void *ud, const void *payload, size_t n);
    /* The link hit EOF or an error; every connection is closed and the link dropped. */
    void (*on_link_down)(void *ud, int err);
    /* Host: a connection opened with vm_mux_open_stream closed (id as returned). */
    void (*on_conn_closed)(void *ud, uint32_t id);
};

struct vm_mux_limits {
    size_t max_conns;       /* open connections; more OPENs are refused */
    size_t max_link_output; /* bytes queued toward the peer before the link is declared stuck */
};
#define VM_MUX_LIMITS_DEFAULT                                                                      \
    {                                                                                              \
        .max_conns = 64, .max_link_output = 32u << 20                                              \
    }

struct vm_mux_stats {
    uint64_t frames_in, frames_out;
    uint64_t bytes_in, bytes_out; /* payload bytes */
    uint64_t skipped;             /* garbage bytes skipped while resynchronising */
    uint64_t conns_opened, conns_refused, protocol_errors;
};

int vm_mux_new(struct event_base *base, enum vm_mux_role role, const struct vm_mux_limits *limits,
               const struct vm_mux_ops *ops, void *ud, struct vm_mux **ret);
void vm_mux_free(struct vm_mux *m);

/* Use fd (a connected socket or the virtio port; ownership taken) as the link. Closes every
 * connection of a previous link. */
int vm_mux_set_link(struct vm_mux *m, int fd);
/* Close the link and every connection. */
void vm_mux_drop_link(struct vm_mux *m);
bool vm_mux_has_link(const struct vm_mux *m);
/* Close every connection (the peer restarted) but keep the link. */
void vm_mux_reset(struct vm_mux *m);

/* Control frames on connection 0; the JSON is stolen. -ENOTCONN without a link. */
int vm_mux_send_hello(struct vm_mux *m, json_t *hello);
int vm_mux_send_event(struct vm_mux *m, json_t *event);
int vm_mux_ping(struct vm_mux *m, const void *payload, size_t n);

/* Host: relay the stream socket fd (ownership taken) to a new guest connection opened with req
 * (stolen). The id is written to *ret_id when non-NULL. */
int vm_mux_open_stream(struct vm_mux *m, int fd, json_t *req, uint32_t *ret_id);
/* Host: relay a client that speaks frames itself (ownership of fd taken): its first frame must
 * be OPEN; its frames are passed through with connection ids rewritten, credit enforced. */
int vm_mux_add_relay(struct vm_mux *m, int fd);

/* Guest, inside on_open: serve the connection with a stream fd (socket), or with a child
 * process: stdin/stdout/stderr pipes, or a pty master as in_fd == out_fd with err_fd == -1.
 * pidfd (ownership taken) reports the child's exit; EXIT follows all of its output. */
int vm_mux_conn_attach_stream(struct vm_mux_conn *c, int fd);
int vm_mux_conn_attach_exec(struct vm_mux_conn *c, pid_t pid, int pidfd, int in_fd, int out_fd,
                            int err_fd);
uint32_t vm_mux_conn_id(const struct vm_mux_conn *c);

size_t vm_mux_conn_count(const struct vm_mux *m);
const struct vm_mux_stats *vm_mux_stats(const struct vm_mux *m);
