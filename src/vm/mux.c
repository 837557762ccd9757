/* mux.c — the channel multiplexer (mux.h).
 *
 * Each connection has a local side (a socket, an exec child's pipes or pty, or a frame-speaking
 * relay client) and a credit state per direction:
 *   send_credit   bytes of DATA/STDERR we may still send; WINDOW frames from the peer add to it;
 *                 at 0 we stop reading the local sources (back-pressure reaches the producer).
 *   recv_allowed  bytes the peer may still send us; a peer that sends more is a protocol error.
 *   unacked       bytes we received and the local sink has consumed but we have not credited
 *                 back; returned in WINDOW frames once a quarter window has drained.
 * So nothing is buffered beyond one window per connection per direction.
 *
 * A connection ends when both sides sent EOF and our output drained (streams), when the child
 * exited and its output was sent (exec, then EXIT and CLOSE), or on CLOSE/error. Connections are
 * freed from a deferred event, never inside a libevent callback of their own bufferevents. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/json.h"
#include "frame.h"
#include "mux.h"

enum conn_kind {
    CONN_NEW,    /* OPEN received, not attached yet */
    CONN_STREAM, /* a socket */
    CONN_EXEC,   /* a child: pipes or a pty */
    CONN_RELAY,  /* a host client speaking frames */
};

struct vm_mux_conn {
    struct vm_mux *m;
    struct vm_mux_conn *next;
    uint32_t id;
    enum conn_kind kind;
    bool dead;

    struct bufferevent *w;      /* sink for DATA from the peer (NULL once closed) */
    struct bufferevent *src[2]; /* sources of DATA and STDERR (src[0] may equal w) */
    bool src_eof[2];
    bool tty;
    int tty_fd;

    pid_t pid;
    struct event *pid_ev;
    int pidfd;
    bool exited;
    int wstatus;

    struct bufferevent *relay; /* CONN_RELAY: the client */
    uint32_t client_id;
    bool relay_open;
    bool relay_closing;

    int64_t send_credit;
    int64_t recv_allowed;
    size_t unacked;
    bool eof_sent, eof_recv, w_shut, close_after_flush;
};

struct vm_mux {
    struct event_base *base;
    enum vm_mux_role role;
    struct vm_mux_limits limits;
    struct vm_mux_ops ops;
    void *ud;
    struct bufferevent *link;
    struct bufferevent *dead_link;
    struct vm_mux_conn *conns;
    struct vm_mux_conn *dead;
    struct event *reap_ev;
    uint32_t next_id;
    size_t n_conns;
    struct lbuf out; /* scratch for encoding */
    uint8_t *chunk;  /* scratch for one payload */
    struct vm_mux_stats stats;
    bool link_down_pending;
    int link_down_err;
};

#define CREDIT_RETURN_MIN (VM_FRAME_WINDOW_INITIAL / 4)
#define SRC_READ_HIGH (64 * 1024)

static void conn_kill(struct vm_mux_conn *c, bool notify);
static void conn_pump(struct vm_mux_conn *c);
static void conn_check_done(struct vm_mux_conn *c);

/* ------------------------------------------------------------------ link output */

static int send_frame(struct vm_mux *m, uint8_t type, uint32_t id, const void *p, size_t n)
{
    if (!m->link || m->link_down_pending)
        return -ENOTCONN;
    lbuf_reset(&m->out);
    int r = vm_frame_encode(&m->out, type, id, p, n);
    if (r < 0)
        return r;
    if (bufferevent_write(m->link, m->out.data, m->out.len) < 0)
        return -ENOMEM;
    m->stats.frames_out++;
    m->stats.bytes_out += n;
    if (evbuffer_get_length(bufferevent_get_output(m->link)) > m->limits.max_link_output) {
        /* The peer stopped reading altogether (credit bounds every connection, so only a stuck
         * or absent peer gets here): give up on the link rather than buffer without end. */
        m->link_down_pending = true;
        m->link_down_err = -ENOBUFS;
        event_active(m->reap_ev, EV_READ, 0);
        return -ENOBUFS;
    }
    return 0;
}

static int send_json(struct vm_mux *m, uint8_t type, uint32_t id, json_t *j)
{
    if (!j)
        return -ENOMEM;
    char *s = ljson_dump(j);
    json_decref(j);
    if (!s)
        return -ENOMEM;
    int r = send_frame(m, type, id, s, strlen(s));
    free(s);
    return r;
}

static void send_close(struct vm_mux *m, uint32_t id, const char *error)
{
    if (error)
        send_json(m, VM_FRAME_CLOSE, id, json_pack("{s:s}", "error", error));
    else
        send_frame(m, VM_FRAME_CLOSE, id, NULL, 0);
}

/* Frames to a relay client, with its own connection id. */
static void relay_send(struct vm_mux_conn *c, uint8_t type, const void *p, size_t n)
{
    if (!c->relay)
        return;
    struct lbuf b = LBUF_INIT;
    if (vm_frame_encode(&b, type, c->client_id, p, n) == 0)
        bufferevent_write(c->relay, b.data, b.len);
    lbuf_free(&b);
}

/* ------------------------------------------------------------------ connections */

static struct vm_mux_conn *conn_find(struct vm_mux *m, uint32_t id)
{
    for (struct vm_mux_conn *c = m->conns; c; c = c->next)
        if (c->id == id)
            return c;
    return NULL;
}

static struct vm_mux_conn *conn_new(struct vm_mux *m, uint32_t id)
{
    struct vm_mux_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->m = m;
    c->id = id;
    c->pidfd = -1;
    c->tty_fd = -1;
    c->send_credit = VM_FRAME_WINDOW_INITIAL;
    c->recv_allowed = VM_FRAME_WINDOW_INITIAL;
    c->next = m->conns;
    m->conns = c;
    m->n_conns++;
    return c;
}

static void bev_release(struct bufferevent **b)
{
    if (*b) {
        bufferevent_setcb(*b, NULL, NULL, NULL, NULL);
        bufferevent_disable(*b, EV_READ | EV_WRITE);
    }
}

/* Unlink now, free later (from the reap event). */
static void conn_kill(struct vm_mux_conn *c, bool notify)
{
    if (c->dead)
        return;
    struct vm_mux *m = c->m;
    for (struct vm_mux_conn **p = &m->conns; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    m->n_conns--;
    c->dead = true;
    bev_release(&c->w);
    bev_release(&c->src[0]);
    bev_release(&c->src[1]);
    if (c->relay) {
        bufferevent_setcb(c->relay, NULL, NULL, NULL, NULL);
        bufferevent_disable(c->relay, EV_READ);
    }
    if (c->pid_ev)
        event_del(c->pid_ev);
    c->next = m->dead;
    m->dead = c;
    event_active(m->reap_ev, EV_READ, 0);
    if (notify && m->ops.on_conn_closed && c->kind == CONN_STREAM && m->role == VM_MUX_HOST)
        m->ops.on_conn_closed(m->ud, c->id);
}

static void conn_free(struct vm_mux_conn *c)
{
    struct bufferevent *bevs[3] = {c->w, c->src[0], c->src[1]};
    for (int i = 0; i < 3; i++) {
        if (!bevs[i])
            continue;
        for (int k = i + 1; k < 3; k++)
            if (bevs[k] == bevs[i])
                bevs[k] = NULL;
        bufferevent_free(bevs[i]);
    }
    if (c->relay) {
        /* Let what was queued for the client go out first; the fd closes with the bufferevent
         * once libevent is done with it. */
        bufferevent_free(c->relay);
    }
    if (c->pid_ev)
        event_free(c->pid_ev);
    if (c->pidfd >= 0)
        close(c->pidfd);
    if (c->pid > 0 && !c->exited) {
        /* The session is gone (host closed it, or the link went down): end the child. */
        kill(c->pid, SIGKILL);
        waitpid(c->pid, NULL, 0);
    }
    free(c);
}

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
    struct vm_mux *m = arg;
    while (m->dead) {
        struct vm_mux_conn *c = m->dead;
        m->dead = c->next;
        conn_free(c);
    }
    if (m->link_down_pending && m->link) {
        int err = m->link_down_err;
        vm_mux_drop_link(m);
        if (m->ops.on_link_down)
            m->ops.on_link_down(m->ud, err);
    }
    if (m->dead_link) {
        bufferevent_free(m->dead_link);
        m->dead_link = NULL;
    }
}

void vm_mux_reset(struct vm_mux *m)
{
    while (m->conns)
        conn_kill(m->conns, true);
}

/* ------------------------------------------------------------------ local sinks */

/* Credit back what the local sink consumed. */
static void sink_drained_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct vm_mux_conn *c = arg;
    if (c->dead || info->n_deleted == 0)
        return;
    c->unacked += info->n_deleted;
    size_t left = evbuffer_get_length(buf);
    if (c->unacked >= CREDIT_RETURN_MIN || (left == 0 && c->unacked > 0)) {
        lbuf_reset(&c->m->out);
        if (c->m->link && vm_frame_encode_window(&c->m->out, c->id, (uint32_t)c->unacked) == 0 &&
            bufferevent_write(c->m->link, c->m->out.data, c->m->out.len) == 0)
            c->m->stats.frames_out++;
        c->recv_allowed += (int64_t)c->unacked;
        c->unacked = 0;
    }
}

/* After the peer's EOF and once our output drained: pass the EOF on to the local side. */
static void sink_maybe_shut(struct vm_mux_conn *c)
{
    if (c->dead || !c->w)
        return;
    if (evbuffer_get_length(bufferevent_get_output(c->w)) > 0)
        return;
    if (c->close_after_flush) {
        conn_kill(c, true);
        return;
    }
    if (!c->eof_recv || c->w_shut)
        return;
    c->w_shut = true;
    if (c->kind == CONN_STREAM) {
        shutdown(bufferevent_getfd(c->w), SHUT_WR);
    } else if (c->kind == CONN_EXEC && !c->tty) {
        /* Closing the stdin pipe is the child's EOF. */
        struct bufferevent *w = c->w;
        c->w = NULL;
        bufferevent_setcb(w, NULL, NULL, NULL, NULL);
        bufferevent_free(w);
    }
    conn_check_done(c);
}

static void sink_write_cb(struct bufferevent *bev, void *arg)
{
    struct vm_mux_conn *c = arg;
    sink_maybe_shut(c);
}

/* ------------------------------------------------------------------ local sources */

static void src_set_reading(struct vm_mux_conn *c, bool on)
{
    for (int i = 0; i < 2; i++) {
        if (!c->src[i] || c->src_eof[i])
            continue;
        if (on)
            bufferevent_enable(c->src[i], EV_READ);
        else
            bufferevent_disable(c->src[i], EV_READ);
    }
}

static void conn_pump(struct vm_mux_conn *c)
{
    struct vm_mux *m = c->m;
    for (int i = 0; i < 2 && !c->dead; i++) {
        if (!c->src[i])
            continue;
        struct evbuffer *in = bufferevent_get_input(c->src[i]);
        while (c->send_credit > 0 && evbuffer_get_length(in) > 0) {
            size_t n = evbuffer_get_length(in);
            n = MIN(n, (size_t)c->send_credit);
            n = MIN(n, (size_t)VM_FRAME_MAX_PAYLOAD);
            int got = evbuffer_remove(in, m->chunk, n);
            if (got <= 0)
                break;
            if (send_frame(m, i == 0 ? VM_FRAME_DATA : VM_FRAME_STDERR, c->id, m->chunk,
                           (size_t)got) < 0) {
                conn_kill(c, true);
                return;
            }
            c->send_credit -= got;
        }
    }
    src_set_reading(c, c->send_credit > 0);
    conn_check_done(c);
}

static bool sources_done(const struct vm_mux_conn *c)
{
    for (int i = 0; i < 2; i++)
        if (c->src[i] &&
            (!c->src_eof[i] || evbuffer_get_length(bufferevent_get_input(c->src[i])) > 0))
            return false;
    return true;
}

static void conn_check_done(struct vm_mux_conn *c)
{
    if (c->dead || c->kind == CONN_RELAY || c->kind == CONN_NEW)
        return;
    if (!sources_done(c))
        return;
    if (c->kind == CONN_EXEC) {
        if (!c->exited)
            return;
        json_t *ex = WIFSIGNALED(c->wstatus) ? json_pack("{s:i}", "signal", WTERMSIG(c->wstatus))
                                             : json_pack("{s:i}", "code", WEXITSTATUS(c->wstatus));
        send_json(c->m, VM_FRAME_EXIT, c->id, ex);
        send_close(c->m, c->id, NULL);
        conn_kill(c, false);
        return;
    }
    if (!c->eof_sent) {
        c->eof_sent = true;
        send_frame(c->m, VM_FRAME_EOF, c->id, NULL, 0);
    }
    bool drained = !c->w || evbuffer_get_length(bufferevent_get_output(c->w)) == 0;
    if (c->eof_recv && drained) {
        send_close(c->m, c->id, NULL);
        conn_kill(c, true);
    }
}

static void src_read_cb(struct bufferevent *bev, void *arg)
{
    conn_pump(arg);
}

static void src_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct vm_mux_conn *c = arg;
    if (c->dead)
        return;
    int i = bev == c->src[0] ? 0 : bev == c->src[1] ? 1 : -1;
    bool stream_error = (what & BEV_EVENT_ERROR) && c->kind == CONN_STREAM;
    if (stream_error) {
        char msg[128];
        snprintf(msg, sizeof(msg), "local connection: %s", strerror(errno ? errno : EIO));
        send_close(c->m, c->id, msg);
        conn_kill(c, true);
        return;
    }
    if (what & BEV_EVENT_WRITING) {
        /* The sink went away (a reader closed its end): nothing more can be delivered. */
        if (c->kind == CONN_EXEC && bev == c->w && !c->tty) {
            struct bufferevent *w = c->w;
            c->w = NULL;
            bufferevent_setcb(w, NULL, NULL, NULL, NULL);
            bufferevent_free(w);
            conn_check_done(c);
        }
        return;
    }
    /* EOF, or EIO on a pty master once the child is gone: the source is finished. */
    if (i >= 0) {
        c->src_eof[i] = true;
        bufferevent_disable(bev, EV_READ);
    }
    conn_pump(c);
}

/* ------------------------------------------------------------------ exec children */

static void pid_cb(evutil_socket_t fd, short what, void *arg)
{
    struct vm_mux_conn *c = arg;
    if (c->dead || c->exited)
        return;
    int st;
    pid_t p = waitpid(c->pid, &st, WNOHANG);
    if (p == 0)
        return; /* spurious */
    c->exited = true;
    c->wstatus = p == c->pid ? st : 0;
    event_del(c->pid_ev);
    if (c->tty && c->src[0] && !c->src_eof[0]) {
        /* A pty master reports EIO only after the reader drains; a detached grandchild may keep
         * the slave open, so the exit of the child ends the session. */
        struct evbuffer *in = bufferevent_get_input(c->src[0]);
        int master = bufferevent_getfd(c->src[0]);
        while (evbuffer_get_length(in) < 4 * VM_FRAME_WINDOW_INITIAL &&
               evbuffer_read(in, master, 65536) > 0)
            ;
        c->src_eof[0] = true;
        bufferevent_disable(c->src[0], EV_READ);
    }
    conn_pump(c);
}

static struct bufferevent *bev_for(struct vm_mux *m, int fd)
{
    evutil_make_socket_nonblocking(fd);
    return bufferevent_socket_new(m->base, fd, BEV_OPT_CLOSE_ON_FREE);
}

static void attach_sink(struct vm_mux_conn *c, struct bufferevent *w)
{
    c->w = w;
    evbuffer_add_cb(bufferevent_get_output(w), sink_drained_cb, c);
}

static void attach_source(struct vm_mux_conn *c, int i, struct bufferevent *b)
{
    c->src[i] = b;
    bufferevent_setwatermark(b, EV_READ, 0, SRC_READ_HIGH);
}

int vm_mux_conn_attach_stream(struct vm_mux_conn *c, int fd)
{
    if (c->kind != CONN_NEW) {
        close(fd);
        return -EBUSY;
    }
    struct bufferevent *b = bev_for(c->m, fd);
    if (!b) {
        close(fd);
        return -ENOMEM;
    }
    c->kind = CONN_STREAM;
    attach_sink(c, b);
    attach_source(c, 0, b);
    bufferevent_setcb(b, src_read_cb, sink_write_cb, src_event_cb, c);
    bufferevent_enable(b, EV_READ | EV_WRITE);
    return 0;
}

int vm_mux_conn_attach_exec(struct vm_mux_conn *c, pid_t pid, int pidfd, int in_fd, int out_fd,
                            int err_fd)
{
    struct vm_mux *m = c->m;
    int r = -ENOMEM;
    c->pid = pid;
    c->pidfd = pidfd;
    if (c->kind != CONN_NEW) {
        r = -EBUSY;
        goto fail;
    }
    c->kind = CONN_EXEC;
    c->tty = in_fd == out_fd && err_fd < 0;
    struct bufferevent *out = bev_for(m, out_fd);
    if (!out)
        goto fail;
    out_fd = -1;
    attach_source(c, 0, out);
    if (c->tty) {
        c->tty_fd = in_fd;
        in_fd = -1;
        attach_sink(c, out);
        bufferevent_setcb(out, src_read_cb, sink_write_cb, src_event_cb, c);
        bufferevent_enable(out, EV_READ | EV_WRITE);
    } else {
        struct bufferevent *in = bev_for(m, in_fd);
        if (!in)
            goto fail;
        in_fd = -1;
        attach_sink(c, in);
        bufferevent_setcb(in, NULL, sink_write_cb, src_event_cb, c);
        bufferevent_enable(in, EV_WRITE);
        bufferevent_setcb(out, src_read_cb, NULL, src_event_cb, c);
        bufferevent_enable(out, EV_READ);
        if (err_fd >= 0) {
            struct bufferevent *e = bev_for(m, err_fd);
            if (!e)
                goto fail;
            err_fd = -1;
            attach_source(c, 1, e);
            bufferevent_setcb(e, src_read_cb, NULL, src_event_cb, c);
            bufferevent_enable(e, EV_READ);
        }
    }
    c->pid_ev = event_new(m->base, pidfd, EV_READ | EV_PERSIST, pid_cb, c);
    if (!c->pid_ev || event_add(c->pid_ev, NULL) < 0)
        goto fail;
    return 0;
fail:
    if (in_fd >= 0)
        close(in_fd);
    if (out_fd >= 0 && out_fd != in_fd)
        close(out_fd);
    if (err_fd >= 0)
        close(err_fd);
    return r;
}

uint32_t vm_mux_conn_id(const struct vm_mux_conn *c)
{
    return c->id;
}

/* ------------------------------------------------------------------ relay clients (host) */

static void relay_kill(struct vm_mux_conn *c, const char *error)
{
    if (c->relay_open)
        send_close(c->m, c->id, error);
    conn_kill(c, false);
}

static void relay_frame(struct vm_mux_conn *c, const struct vm_frame *f)
{
    struct vm_mux *m = c->m;
    if (!c->relay_open) {
        if (f->type != VM_FRAME_OPEN) {
            m->stats.protocol_errors++;
            conn_kill(c, false);
            return;
        }
        c->client_id = f->conn;
        c->relay_open = true;
        if (send_frame(m, VM_FRAME_OPEN, c->id, f->payload, f->len) < 0) {
            static const char msg[] = "{\"error\":\"the guest is not connected\"}";
            relay_send(c, VM_FRAME_CLOSE, msg, sizeof(msg) - 1);
            c->relay_closing = true;
            bufferevent_disable(c->relay, EV_READ);
        }
        return;
    }
    uint32_t credit;
    switch (f->type) {
    case VM_FRAME_DATA:
        if ((int64_t)f->len > c->send_credit) {
            m->stats.protocol_errors++;
            relay_kill(c, "client exceeded its window");
            return;
        }
        c->send_credit -= f->len;
        break;
    case VM_FRAME_WINDOW:
        if (vm_frame_window_credit(f, &credit) < 0) {
            m->stats.protocol_errors++;
            relay_kill(c, "bad WINDOW");
            return;
        }
        c->recv_allowed += credit;
        break;
    case VM_FRAME_EOF:
    case VM_FRAME_RESIZE:
        break;
    case VM_FRAME_CLOSE:
        send_frame(m, VM_FRAME_CLOSE, c->id, f->payload, f->len);
        conn_kill(c, false);
        return;
    default:
        m->stats.protocol_errors++;
        relay_kill(c, "unexpected frame from client");
        return;
    }
    send_frame(m, f->type, c->id, f->payload, f->len);
}

/* The next whole frame at the head of in, if there is one; its payload points into in, so drain
 * *ret_used bytes once it is handled. Skipped garbage is counted in *skipped; with no whole
 * frame, what the decoder consumed is drained here. */
static bool pull_frame(struct evbuffer *in, struct vm_frame *f, size_t *ret_used, uint64_t *skipped)
{
    size_t len = evbuffer_get_length(in);
    if (len == 0)
        return false;
    size_t want = MIN(len, (size_t)(VM_FRAME_HEADER + VM_FRAME_MAX_PAYLOAD));
    const uint8_t *p = evbuffer_pullup(in, (ssize_t)want);
    size_t used, n_skipped;
    int found = vm_frame_decode(p, want, f, &used, &n_skipped);
    *skipped += n_skipped;
    if (!found) {
        evbuffer_drain(in, used);
        return false;
    }
    *ret_used = used;
    return true;
}

static void relay_read_cb(struct bufferevent *bev, void *arg)
{
    struct vm_mux_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct vm_frame f;
    size_t used;
    while (!c->dead && !c->relay_closing && pull_frame(in, &f, &used, &c->m->stats.skipped)) {
        relay_frame(c, &f);
        evbuffer_drain(in, used);
    }
}

static void relay_write_cb(struct bufferevent *bev, void *arg)
{
    struct vm_mux_conn *c = arg;
    if (c->relay_closing)
        conn_kill(c, false);
}

static void relay_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct vm_mux_conn *c = arg;
    /* The client went away: the guest side ends too. */
    relay_kill(c, NULL);
}

int vm_mux_add_relay(struct vm_mux *m, int fd)
{
    if (m->role != VM_MUX_HOST) {
        close(fd);
        return -EINVAL;
    }
    if (m->n_conns >= m->limits.max_conns) {
        close(fd);
        m->stats.conns_refused++;
        return -EMFILE;
    }
    struct bufferevent *b = bev_for(m, fd);
    if (!b) {
        close(fd);
        return -ENOMEM;
    }
    struct vm_mux_conn *c = conn_new(m, ++m->next_id ? m->next_id : ++m->next_id);
    if (!c) {
        bufferevent_free(b);
        return -ENOMEM;
    }
    c->kind = CONN_RELAY;
    c->relay = b;
    bufferevent_setwatermark(b, EV_READ, 0, VM_FRAME_HEADER + VM_FRAME_MAX_PAYLOAD);
    bufferevent_setcb(b, relay_read_cb, relay_write_cb, relay_event_cb, c);
    bufferevent_enable(b, EV_READ | EV_WRITE);
    m->stats.conns_opened++;
    return 0;
}

/* Frames from the link for a relayed connection go to its client, credit checked. */
static void relay_from_link(struct vm_mux_conn *c, const struct vm_frame *f)
{
    uint32_t credit;
    switch (f->type) {
    case VM_FRAME_DATA:
    case VM_FRAME_STDERR:
        if ((int64_t)f->len > c->recv_allowed) {
            c->m->stats.protocol_errors++;
            static const char msg[] = "{\"error\":\"guest exceeded its window\"}";
            relay_send(c, VM_FRAME_CLOSE, msg, sizeof(msg) - 1);
            send_close(c->m, c->id, "window exceeded");
            c->relay_closing = true;
            return;
        }
        c->recv_allowed -= f->len;
        break;
    case VM_FRAME_WINDOW:
        if (vm_frame_window_credit(f, &credit) == 0)
            c->send_credit += credit;
        break;
    case VM_FRAME_CLOSE:
        relay_send(c, f->type, f->payload, f->len);
        c->relay_closing = true;
        bufferevent_disable(c->relay, EV_READ);
        if (evbuffer_get_length(bufferevent_get_output(c->relay)) == 0)
            conn_kill(c, false);
        return;
    default:
        break;
    }
    relay_send(c, f->type, f->payload, f->len);
}

/* ------------------------------------------------------------------ host streams */

int vm_mux_open_stream(struct vm_mux *m, int fd, json_t *req, uint32_t *ret_id)
{
    int r;
    if (m->role != VM_MUX_HOST) {
        r = -EINVAL;
        goto fail;
    }
    if (!m->link) {
        r = -ENOTCONN;
        goto fail;
    }
    if (m->n_conns >= m->limits.max_conns) {
        m->stats.conns_refused++;
        r = -EMFILE;
        goto fail;
    }
    uint32_t id = ++m->next_id ? m->next_id : ++m->next_id;
    struct vm_mux_conn *c = conn_new(m, id);
    if (!c) {
        r = -ENOMEM;
        goto fail;
    }
    if ((r = send_json(m, VM_FRAME_OPEN, id, req)) < 0) {
        req = NULL;
        conn_kill(c, false);
        goto fail;
    }
    req = NULL;
    if ((r = vm_mux_conn_attach_stream(c, fd)) < 0) {
        fd = -1;
        send_close(m, id, NULL);
        conn_kill(c, false);
        return r;
    }
    m->stats.conns_opened++;
    if (ret_id)
        *ret_id = id;
    return 0;
fail:
    json_decref(req);
    if (fd >= 0)
        close(fd);
    return r;
}

/* ------------------------------------------------------------------ frames from the link */

static void handle_open(struct vm_mux *m, const struct vm_frame *f)
{
    struct lerr err = {0};
    if (m->role != VM_MUX_GUEST || f->conn == 0 || conn_find(m, f->conn)) {
        m->stats.protocol_errors++;
        send_close(m, f->conn, "unexpected OPEN");
        return;
    }
    if (m->n_conns >= m->limits.max_conns) {
        m->stats.conns_refused++;
        send_close(m, f->conn, "too many connections");
        return;
    }
    _cleanup_json_ json_t *req = NULL;
    if (ljson_parse((const char *)f->payload, f->len, &req, &err) < 0 || !json_is_object(req)) {
        send_close(m, f->conn, "OPEN: the request must be a JSON object");
        return;
    }
    struct vm_mux_conn *c = conn_new(m, f->conn);
    if (!c) {
        send_close(m, f->conn, "out of memory");
        return;
    }
    int r = m->ops.on_open ? m->ops.on_open(m->ud, c, req, &err) : -ENOTSUP;
    if (r >= 0 && c->kind == CONN_NEW)
        r = lerr_set(&err, -EINVAL, "nothing to connect to");
    if (r < 0) {
        m->stats.conns_refused++;
        send_close(m, f->conn, lerr_str(&err));
        conn_kill(c, false);
        return;
    }
    m->stats.conns_opened++;
}

static void handle_data(struct vm_mux *m, struct vm_mux_conn *c, const struct vm_frame *f)
{
    if ((int64_t)f->len > c->recv_allowed) {
        m->stats.protocol_errors++;
        send_close(m, c->id, "window exceeded");
        conn_kill(c, true);
        return;
    }
    c->recv_allowed -= f->len;
    if (f->type == VM_FRAME_STDERR && m->role == VM_MUX_GUEST) {
        m->stats.protocol_errors++;
        return;
    }
    if (c->w && !c->w_shut && !c->eof_recv) {
        bufferevent_write(c->w, f->payload, f->len);
    } else {
        /* Nowhere to deliver (stdin already closed): consume it, give the credit back. */
        c->recv_allowed += f->len;
        lbuf_reset(&m->out);
        if (f->len && vm_frame_encode_window(&m->out, c->id, f->len) == 0)
            bufferevent_write(m->link, m->out.data, m->out.len);
    }
}

static void handle_conn_frame(struct vm_mux *m, const struct vm_frame *f)
{
    struct vm_mux_conn *c = conn_find(m, f->conn);
    if (!c)
        return; /* late frames of a connection we already closed */
    if (c->kind == CONN_RELAY) {
        relay_from_link(c, f);
        return;
    }
    uint32_t credit;
    switch (f->type) {
    case VM_FRAME_DATA:
    case VM_FRAME_STDERR:
        handle_data(m, c, f);
        break;
    case VM_FRAME_WINDOW:
        if (vm_frame_window_credit(f, &credit) < 0) {
            m->stats.protocol_errors++;
            break;
        }
        c->send_credit += credit;
        if (c->send_credit > (int64_t)VM_FRAME_WINDOW_INITIAL * 64)
            c->send_credit = (int64_t)VM_FRAME_WINDOW_INITIAL * 64;
        conn_pump(c);
        break;
    case VM_FRAME_EOF:
        c->eof_recv = true;
        sink_maybe_shut(c);
        conn_check_done(c);
        break;
    case VM_FRAME_CLOSE:
        /* A session's end kills its child at once; a socket first gets what was sent before
         * the CLOSE (its reader is a live client). */
        c->close_after_flush = true;
        src_set_reading(c, false);
        if (c->kind == CONN_EXEC || !c->w || evbuffer_get_length(bufferevent_get_output(c->w)) == 0)
            conn_kill(c, true);
        break;
    case VM_FRAME_RESIZE:
        if (c->tty && c->tty_fd >= 0 && f->len == 4) {
            struct winsize ws = {
                .ws_row = (unsigned short)(f->payload[0] << 8 | f->payload[1]),
                .ws_col = (unsigned short)(f->payload[2] << 8 | f->payload[3]),
            };
            ioctl(c->tty_fd, TIOCSWINSZ, &ws);
        }
        break;
    default:
        m->stats.protocol_errors++;
        break;
    }
}

static void handle_frame(struct vm_mux *m, const struct vm_frame *f)
{
    m->stats.frames_in++;
    m->stats.bytes_in += f->len;
    _cleanup_json_ json_t *j = NULL;
    switch (f->type) {
    case VM_FRAME_HELLO:
    case VM_FRAME_EVENT:
        if (f->conn != 0 || ljson_parse((const char *)f->payload, f->len, &j, NULL) < 0 ||
            !json_is_object(j)) {
            m->stats.protocol_errors++;
            return;
        }
        if (f->type == VM_FRAME_HELLO) {
            if (json_is_true(json_object_get(j, "reset")))
                vm_mux_reset(m);
            if (m->ops.on_hello)
                m->ops.on_hello(m->ud, j);
        } else if (m->ops.on_event) {
            m->ops.on_event(m->ud, j);
        }
        return;
    case VM_FRAME_PING:
        send_frame(m, VM_FRAME_PONG, 0, f->payload, f->len);
        return;
    case VM_FRAME_PONG:
        if (m->ops.on_pong)
            m->ops.on_pong(m->ud, f->payload, f->len);
        return;
    case VM_FRAME_OPEN:
        handle_open(m, f);
        return;
    default:
        if (f->conn == 0) {
            m->stats.protocol_errors++;
            return;
        }
        handle_conn_frame(m, f);
    }
}

static void link_read_cb(struct bufferevent *bev, void *arg)
{
    struct vm_mux *m = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct vm_frame f;
    size_t used;
    while (m->link == bev && !m->link_down_pending &&
           pull_frame(in, &f, &used, &m->stats.skipped)) {
        handle_frame(m, &f);
        evbuffer_drain(in, used);
    }
}

static void link_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct vm_mux *m = arg;
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
        return;
    m->link_down_pending = true;
    m->link_down_err = (what & BEV_EVENT_EOF) ? -EPIPE : (errno ? -errno : -EIO);
    bufferevent_disable(bev, EV_READ | EV_WRITE);
    event_active(m->reap_ev, EV_READ, 0);
}

/* ------------------------------------------------------------------ the mux */

int vm_mux_new(struct event_base *base, enum vm_mux_role role, const struct vm_mux_limits *limits,
               const struct vm_mux_ops *ops, void *ud, struct vm_mux **ret)
{
    struct vm_mux *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->base = base;
    m->role = role;
    m->limits = limits ? *limits : (struct vm_mux_limits)VM_MUX_LIMITS_DEFAULT;
    if (ops)
        m->ops = *ops;
    m->ud = ud;
    /* Host ids count up from 1; the guest never allocates. */
    m->chunk = malloc(VM_FRAME_MAX_PAYLOAD);
    m->reap_ev = event_new(base, -1, 0, reap_cb, m);
    if (!m->chunk || !m->reap_ev) {
        vm_mux_free(m);
        return -ENOMEM;
    }
    *ret = m;
    return 0;
}

void vm_mux_free(struct vm_mux *m)
{
    if (!m)
        return;
    vm_mux_reset(m);
    if (m->link)
        bufferevent_free(m->link);
    if (m->dead_link)
        bufferevent_free(m->dead_link);
    while (m->dead) {
        struct vm_mux_conn *c = m->dead;
        m->dead = c->next;
        conn_free(c);
    }
    if (m->reap_ev)
        event_free(m->reap_ev);
    lbuf_free(&m->out);
    free(m->chunk);
    free(m);
}

int vm_mux_set_link(struct vm_mux *m, int fd)
{
    vm_mux_drop_link(m);
    struct bufferevent *b = bev_for(m, fd);
    if (!b) {
        close(fd);
        return -ENOMEM;
    }
    m->link = b;
    m->link_down_pending = false;
    bufferevent_setcb(b, link_read_cb, NULL, link_event_cb, m);
    bufferevent_enable(b, EV_READ | EV_WRITE);
    return 0;
}

void vm_mux_drop_link(struct vm_mux *m)
{
    vm_mux_reset(m);
    if (m->link) {
        bufferevent_setcb(m->link, NULL, NULL, NULL, NULL);
        bufferevent_disable(m->link, EV_READ | EV_WRITE);
        if (m->dead_link)
            bufferevent_free(m->dead_link);
        m->dead_link = m->link;
        m->link = NULL;
        event_active(m->reap_ev, EV_READ, 0);
    }
    m->link_down_pending = false;
}

bool vm_mux_has_link(const struct vm_mux *m)
{
    return m->link && !m->link_down_pending;
}

int vm_mux_send_hello(struct vm_mux *m, json_t *hello)
{
    if (hello && json_is_true(json_object_get(hello, "reset")))
        vm_mux_reset(m);
    return send_json(m, VM_FRAME_HELLO, 0, hello);
}

int vm_mux_send_event(struct vm_mux *m, json_t *event)
{
    return send_json(m, VM_FRAME_EVENT, 0, event);
}

int vm_mux_ping(struct vm_mux *m, const void *payload, size_t n)
{
    return send_frame(m, VM_FRAME_PING, 0, payload, n);
}

size_t vm_mux_conn_count(const struct vm_mux *m)
{
    return m->n_conns;
}
const struct vm_mux_stats *vm_mux_stats(const struct vm_mux *m)
{
    return &m->stats;
}
