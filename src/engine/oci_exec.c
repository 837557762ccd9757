/* oci_exec.c — short-lived helper programs for the oci engine on the event loop: the OCI
 * runtime's delete, CNI plugins, the image helper. Input written to stdin, stdout and stderr
 * collected up to a bound (or stdout handed over line by line), the exit seen through a pidfd:
 * nothing waits, nothing polls. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/buf.h"
#include "oci-internal.h"

struct oci_exec {
    struct event_base *base;
    pid_t pid;
    int pidfd;
    int in_fd, out_fd, err_fd;
    struct event *in_ev, *out_ev, *err_ev, *pid_ev, *timer;
    char *input;
    size_t input_len, input_off;
    struct lbuf out, err;
    size_t out_max, err_max;
    bool truncated;
    int status;
    oci_exec_line_fn on_line;
    oci_exec_done_fn done;
    void *ud;
};

static void exec_free(struct oci_exec *x)
{
    struct event *evs[] = {x->in_ev, x->out_ev, x->err_ev, x->pid_ev, x->timer};
    for (size_t i = 0; i < ARRAY_SIZE(evs); i++)
        if (evs[i])
            event_free(evs[i]);
    int fds[] = {x->in_fd, x->out_fd, x->err_fd, x->pidfd};
    for (size_t i = 0; i < ARRAY_SIZE(fds); i++)
        if (fds[i] >= 0)
            close(fds[i]);
    if (x->input) {
        explicit_bzero(x->input, x->input_len); /* it may hold credentials */
        free(x->input);
    }
    lbuf_free(&x->out);
    lbuf_free(&x->err);
    free(x);
}

static void close_stdin(struct oci_exec *x)
{
    if (x->in_ev) {
        event_free(x->in_ev);
        x->in_ev = NULL;
    }
    if (x->in_fd >= 0) {
        close(x->in_fd);
        x->in_fd = -1;
    }
}

static void in_cb(evutil_socket_t fd, short what, void *arg)
{
    struct oci_exec *x = arg;
    while (x->input_off < x->input_len) {
        ssize_t n = write(fd, x->input + x->input_off, x->input_len - x->input_off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n < 0)
            break; /* the program closed its stdin: its status says the rest */
        x->input_off += (size_t)n;
    }
    close_stdin(x);
}

static void emit_lines(struct oci_exec *x, bool eof)
{
    char *nl;
    while ((nl = memchr(x->out.data, '\n', x->out.len))) {
        *nl = 0;
        x->on_line(x->ud, x->out.data);
        lbuf_consume(&x->out, (size_t)(nl - x->out.data) + 1);
    }
    if (eof && x->out.len) {
        lbuf_putc(&x->out, 0);
        x->on_line(x->ud, x->out.data);
        lbuf_reset(&x->out);
    }
}

/* Read what is there; false at EOF. */
static bool drain(struct oci_exec *x, int fd, struct lbuf *b, size_t max, bool lines)
{
    char buf[8192];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN;
        if (n == 0)
            return false;
        size_t room = b->len < max ? max - b->len : 0;
        if ((size_t)n > room) {
            x->truncated = true;
            n = (ssize_t)room;
        }
        lbuf_append(b, buf, (size_t)n);
        if (lines) {
            emit_lines(x, false);
            if (b->len >= max) /* a line longer than the bound: cut */
                lbuf_reset(b);
        }
    }
}

static void out_cb(evutil_socket_t fd, short what, void *arg)
{
    struct oci_exec *x = arg;
    if (!drain(x, fd, &x->out, x->out_max, x->on_line != NULL)) {
        event_free(x->out_ev);
        x->out_ev = NULL;
        close(x->out_fd);
        x->out_fd = -1;
    }
}

static void err_cb(evutil_socket_t fd, short what, void *arg)
{
    struct oci_exec *x = arg;
    if (!drain(x, fd, &x->err, x->err_max, false)) {
        event_free(x->err_ev);
        x->err_ev = NULL;
        close(x->err_fd);
        x->err_fd = -1;
    }
}

static void pid_cb(evutil_socket_t fd, short what, void *arg)
{
    struct oci_exec *x = arg;
    siginfo_t si = {0};
    if (waitid((idtype_t)P_PIDFD, (id_t)x->pidfd, &si, WEXITED | WNOHANG) < 0 || si.si_pid == 0)
        return;
    x->status = si.si_code == CLD_EXITED ? si.si_status : 128 + si.si_status;
    x->pid = 0;
    /* Everything it wrote is in the pipes now; a grandchild holding them open is not waited for. */
    if (x->out_fd >= 0)
        drain(x, x->out_fd, &x->out, x->out_max, x->on_line != NULL);
    if (x->err_fd >= 0)
        drain(x, x->err_fd, &x->err, x->err_max, false);
    if (x->on_line)
        emit_lines(x, true);
    lbuf_putc(&x->out, 0);
    lbuf_putc(&x->err, 0);
    x->out.len--;
    x->err.len--;
    oci_exec_done_fn done = x->done;
    void *ud = x->ud;
    int status = x->status;
    struct oci_exec_result res = {
        .status = status,
        .out = x->out.data ? x->out.data : "",
        .out_len = x->out.len,
        .err = x->err.data ? x->err.data : "",
        .err_len = x->err.len,
        .truncated = x->truncated,
    };
    done(ud, &res);
    exec_free(x);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct oci_exec *x = arg;
    if (x->pid > 0)
        syscall(SYS_pidfd_send_signal, x->pidfd, SIGKILL, NULL, 0);
}

int oci_exec_start(struct event_base *base, const struct oci_exec_opts *o, struct oci_exec **ret)
{
    struct oci_exec *x = calloc(1, sizeof(*x));
    if (!x)
        return -ENOMEM;
    x->base = base;
    x->in_fd = x->out_fd = x->err_fd = x->pidfd = -1;
    x->out_max = o->out_max ? o->out_max : 1u << 20;
    x->err_max = o->err_max ? o->err_max : 64u << 10;
    x->on_line = o->on_line;
    x->done = o->done;
    x->ud = o->ud;
    if (o->input_len) {
        x->input = malloc(o->input_len);
        if (!x->input) {
            free(x);
            return -ENOMEM;
        }
        memcpy(x->input, o->input, o->input_len);
        x->input_len = o->input_len;
    }
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
    int r = 0;
    if (pipe2(in, O_CLOEXEC | O_NONBLOCK) < 0 || pipe2(out, O_CLOEXEC | O_NONBLOCK) < 0 ||
        pipe2(err, O_CLOEXEC | O_NONBLOCK) < 0) {
        r = neg_errno();
        goto fail;
    }
    /* The child's ends blocking, ours not. */
    fcntl(in[0], F_SETFL, 0);
    fcntl(out[1], F_SETFL, 0);
    fcntl(err[1], F_SETFL, 0);
    static const char *const default_env[] = {
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", NULL};
    const char *const *envp = o->envp ? o->envp : default_env;
    pid_t pid = fork();
    if (pid < 0) {
        r = neg_errno();
        goto fail;
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        for (int s = 1; s < 32; s++)
            if (s != SIGKILL && s != SIGSTOP)
                signal(s, SIG_DFL);
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        /* Nothing of ledged's but 0-2 reaches the helper. */
        if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
            /* every fd of ours is O_CLOEXEC already */
        }
        if (o->setsid)
            setsid();
        execve(o->argv[0], (char *const *)o->argv, (char *const *)envp);
        dprintf(2, "cannot execute %s: %s\n", o->argv[0], strerror(errno));
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    close(err[1]);
    in[0] = out[1] = err[1] = -1;
    x->pid = pid;
    x->in_fd = in[1];
    x->out_fd = out[0];
    x->err_fd = err[0];
    x->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (x->pidfd < 0) {
        r = neg_errno();
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        exec_free(x);
        return r;
    }
    fcntl(x->pidfd, F_SETFD, FD_CLOEXEC);
    x->out_ev = event_new(base, x->out_fd, EV_READ | EV_PERSIST, out_cb, x);
    x->err_ev = event_new(base, x->err_fd, EV_READ | EV_PERSIST, err_cb, x);
    x->pid_ev = event_new(base, x->pidfd, EV_READ | EV_PERSIST, pid_cb, x);
    x->timer = evtimer_new(base, timer_cb, x);
    if (x->input_len)
        x->in_ev = event_new(base, x->in_fd, EV_WRITE | EV_PERSIST, in_cb, x);
    if (!x->out_ev || !x->err_ev || !x->pid_ev || !x->timer || (x->input_len && !x->in_ev)) {
        oci_exec_cancel(x);
        return -ENOMEM;
    }
    event_add(x->out_ev, NULL);
    event_add(x->err_ev, NULL);
    event_add(x->pid_ev, NULL);
    if (x->in_ev)
        event_add(x->in_ev, NULL);
    else
        close_stdin(x);
    if (o->timeout_ms > 0) {
        struct timeval tv = {o->timeout_ms / 1000, (o->timeout_ms % 1000) * 1000};
        evtimer_add(x->timer, &tv);
    }
    if (ret)
        *ret = x;
    return 0;
fail:
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0)
            close(in[i]);
        if (out[i] >= 0)
            close(out[i]);
        if (err[i] >= 0)
            close(err[i]);
    }
    exec_free(x);
    return r;
}

void oci_exec_cancel(struct oci_exec *x)
{
    if (!x)
        return;
    if (x->pid > 0 && x->pidfd >= 0) {
        /* Killed and reaped here: SIGKILL cannot be ignored, so the wait is short. */
        syscall(SYS_pidfd_send_signal, x->pidfd, SIGKILL, NULL, 0);
        siginfo_t si;
        waitid((idtype_t)P_PIDFD, (id_t)x->pidfd, &si, WEXITED);
    }
    exec_free(x);
}
