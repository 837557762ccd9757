/* child_job.c — a job in a forked child process, watched from the loop (child_job.h). */
#include "child_job.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void finish(struct child_job *j)
{
    if (j->exited && j->eof && j->ops->done) {
        int st = j->status;
        j->ops->done(j->ud, st); /* last: it may release j */
    }
}

static void stop(struct child_job *j)
{
    child_job_reading(j, false);
    j->eof = true; /* nothing more is wanted from the pipe */
    if (!j->exited)
        kill(j->pid, SIGKILL);
}

/* Read what is there; true when the pipe reached its end (or the owner stopped the job). */
static bool read_some(struct child_job *j, bool all)
{
    char buf[65536];
    for (;;) {
        ssize_t n = read(j->out_fd, buf, sizeof(buf));
        if (n > 0) {
            if (j->ops->output && j->ops->output(j->ud, buf, (size_t)n) < 0) {
                stop(j);
                return true;
            }
            if (all)
                continue;
            return false;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return false;
        return true; /* EOF, or an error: the same end */
    }
}

static void out_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct child_job *j = arg;
    if (j->eof || !read_some(j, false))
        return;
    child_job_reading(j, false);
    j->eof = true;
    finish(j);
}

static void exit_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct child_job *j = arg;
    int st;
    pid_t r;
    while ((r = waitpid(j->pid, &st, WNOHANG)) < 0 && errno == EINTR)
        ;
    if (r != j->pid)
        return;
    event_del(j->exit_ev);
    j->exited = true;
    j->status = st;
    /* what is left in the pipe was written before the exit; a process the child started may
     * hold the pipe open, so the end is not waited for */
    if (!j->eof) {
        read_some(j, true);
        child_job_reading(j, false);
        j->eof = true;
    }
    finish(j);
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct child_job *j = arg;
    if (j->ops->timeout)
        j->ops->timeout(j->ud); /* last: it may release j */
}

void child_job_reading(struct child_job *j, bool on)
{
    if (!j->out_ev || j->eof || on == j->reading)
        return;
    j->reading = on;
    if (on)
        event_add(j->out_ev, NULL);
    else
        event_del(j->out_ev);
}

int child_job_start(struct child_job *j, struct event_base *base, int timeout_ms, bool read,
                    child_job_fn fn, void *arg, const struct child_job_ops *ops, void *ud)
{
    *j = (struct child_job){.out_fd = -1, .pidfd = -1, .ops = ops, .ud = ud};
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    j->pid = fork();
    if (j->pid == 0) {
        close(p[0]);
        for (int sig = 1; sig < NSIG; sig++)
            signal(sig, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        _exit(fn(p[1], arg));
    }
    int err = errno;
    close(p[1]);
    j->out_fd = p[0];
    if (j->pid < 0) {
        j->pid = 0;
        child_job_release(j);
        return -err;
    }
    j->pidfd = (int)syscall(SYS_pidfd_open, j->pid, 0);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    if (j->pidfd < 0 || fcntl(j->out_fd, F_SETFL, fcntl(j->out_fd, F_GETFL) | O_NONBLOCK) < 0 ||
        !(j->out_ev = event_new(base, j->out_fd, EV_READ | EV_PERSIST, out_cb, j)) ||
        !(j->exit_ev = event_new(base, j->pidfd, EV_READ | EV_PERSIST, exit_cb, j)) ||
        !(j->timer = evtimer_new(base, timeout_cb, j)) || event_add(j->exit_ev, NULL) < 0 ||
        (timeout_ms > 0 && evtimer_add(j->timer, &tv) < 0)) {
        child_job_release(j);
        return -ENOMEM;
    }
    child_job_reading(j, read);
    return 0;
}

void child_job_release(struct child_job *j)
{
    if (j->pid > 0 && !j->exited) {
        kill(j->pid, SIGKILL);
        while (waitpid(j->pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    if (j->out_ev)
        event_free(j->out_ev);
    if (j->exit_ev)
        event_free(j->exit_ev);
    if (j->timer)
        event_free(j->timer);
    if (j->out_fd >= 0)
        close(j->out_fd);
    if (j->pidfd >= 0)
        close(j->pidfd);
    *j = (struct child_job){.out_fd = -1, .pidfd = -1};
}
