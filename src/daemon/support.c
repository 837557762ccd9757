/* support.c — GET /systeminfo/supportbundle (IoT Edge's route): the support bundle of
 * support/bundle.h, made by a child process (the bundle's calls block, several of them on this
 * daemon's own API) and streamed to the client as application/gzip while it is written. The
 * child's pipe is read only while the client keeps up, so a slow client holds back the child
 * rather than ledged's memory; a bundle that overstays SUPPORT_JOB_TIMEOUT_MS is killed. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/str.h"
#include "base/timeutil.h"
#include "ledged.h"
#include "log/log.h"
#include "support/bundle.h"

#define COMP "support"
#define SUPPORT_JOB_TIMEOUT_MS (10 * 60 * 1000)
#define SUPPORT_MAX_JOBS 2
/* Stop reading the child above this much queued for the client. */
#define SUPPORT_HIGH_WATER (1u << 20)

struct support_job {
    struct ledged *d;
    struct hs_request *req;
    pid_t pid;
    int out_fd, pidfd;
    struct event *out_ev, *exit_ev, *timer;
    bool eof, exited, failed, reading;
    struct support_job *next;
};

static _Noreturn void child_run(struct ledged *d, int fd, int64_t since_ms)
{
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    struct support_options o = {
        .config_path = d->config_path,
        .mgmt_socket = d->cfg.management.socket,
        .since_ms = since_ms,
        .vm_dir = d->cfg.vm.dir,
        .ledged_stderr_fd = STDERR_FILENO,
    };
    struct lerr err = {0};
    int r = support_bundle_write(&o, fd, NULL, &err);
    _exit(r < 0 ? 1 : 0);
}

static void job_unlink(struct support_job *j)
{
    for (struct support_job **p = &j->d->support_jobs; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            return;
        }
}

static void job_free(struct support_job *j)
{
    if (!j)
        return;
    job_unlink(j);
    if (j->pid > 0 && !j->exited) {
        kill(j->pid, SIGKILL);
        while (waitpid(j->pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    if (j->req) {
        hs_request_on_abort(j->req, NULL, NULL);
        hs_stream_on_drain(j->req, NULL, NULL);
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
    free(j);
}

/* The stream ends when the child has exited and its pipe is drained; a failed child leaves the
 * archive cut short (the client's gzip reader says so) and ledged's log says why. */
static void maybe_done(struct support_job *j)
{
    if (!j->eof || !j->exited)
        return;
    if (j->failed)
        log_warn(COMP, "the support bundle could not be completed");
    if (j->req)
        hs_stream_end(j->req);
    j->req = NULL;
    job_free(j);
}

static void set_reading(struct support_job *j, bool on)
{
    if (j->eof || on == j->reading)
        return;
    j->reading = on;
    if (on)
        event_add(j->out_ev, NULL);
    else
        event_del(j->out_ev);
}

static void out_cb(evutil_socket_t fd, short what, void *arg)
{
    struct support_job *j = arg;
    char buf[65536];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n > 0) {
        if (!j->req || hs_stream_write(j->req, buf, (size_t)n) < 0) {
            job_free(j); /* the client is gone: the child is killed */
            return;
        }
        if (hs_stream_queued(j->req) > SUPPORT_HIGH_WATER)
            set_reading(j, false);
        return;
    }
    set_reading(j, false);
    j->eof = true;
    maybe_done(j);
}

static void drain_cb(struct hs_request *r, void *ud)
{
    set_reading(ud, true);
}

static void exit_cb(evutil_socket_t fd, short what, void *arg)
{
    struct support_job *j = arg;
    int st;
    if (waitpid(j->pid, &st, WNOHANG) != j->pid)
        return;
    event_del(j->exit_ev);
    j->exited = true;
    j->failed = !WIFEXITED(st) || WEXITSTATUS(st) != 0;
    maybe_done(j);
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct support_job *j = arg;
    log_warn(COMP, "the support bundle did not finish in %d s; stopped",
             SUPPORT_JOB_TIMEOUT_MS / 1000);
    if (j->req)
        hs_stream_end(j->req);
    j->req = NULL;
    job_free(j);
}

static void abort_cb(struct hs_request *r, void *ud)
{
    struct support_job *j = ud;
    j->req = NULL;
    job_free(j);
}

void mgmt_support_bundle(struct hs_request *r, void *ud)
{
    struct ledged *d = ud;
    int64_t since_ms = 0;
    const char *since = hs_request_query(r, "since");
    if (since && *since && ltime_parse_since(since, ltime_now_ms(), &since_ms) < 0) {
        hs_reply_error(r, 400,
                       "since: expected RFC 3339, unix seconds or a duration like 2h, got \"%s\"",
                       since);
        return;
    }
    size_t running = 0;
    for (struct support_job *j = d->support_jobs; j; j = j->next)
        running++;
    if (running >= SUPPORT_MAX_JOBS) {
        hs_reply_error(r, 409, "%zu support bundles are being made; try again when they are done",
                       running);
        return;
    }
    struct support_job *j = calloc(1, sizeof(*j));
    int p[2] = {-1, -1};
    if (!j || pipe2(p, O_CLOEXEC) < 0) {
        free(j);
        hs_reply_error(r, 500, "cannot start the support bundle: %s", strerror(errno));
        return;
    }
    j->d = d;
    j->out_fd = j->pidfd = -1;
    j->pid = fork();
    if (j->pid == 0) {
        close(p[0]);
        child_run(d, p[1], since_ms);
    }
    close(p[1]);
    j->out_fd = p[0];
    j->next = d->support_jobs;
    d->support_jobs = j;
    if (j->pid < 0) {
        job_free(j);
        hs_reply_error(r, 500, "cannot start the support bundle: fork failed");
        return;
    }
    fcntl(j->out_fd, F_SETFL, fcntl(j->out_fd, F_GETFL) | O_NONBLOCK);
    j->pidfd = (int)syscall(SYS_pidfd_open, j->pid, 0);
    struct timeval tv = {SUPPORT_JOB_TIMEOUT_MS / 1000, 0};
    if (j->pidfd < 0 ||
        !(j->out_ev = event_new(d->base, j->out_fd, EV_READ | EV_PERSIST, out_cb, j)) ||
        !(j->exit_ev = event_new(d->base, j->pidfd, EV_READ | EV_PERSIST, exit_cb, j)) ||
        !(j->timer = evtimer_new(d->base, timeout_cb, j)) || event_add(j->exit_ev, NULL) < 0 ||
        evtimer_add(j->timer, &tv) < 0) {
        job_free(j);
        hs_reply_error(r, 500, "cannot start the support bundle");
        return;
    }
    char name[96], disp[160];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(name, sizeof(name), "ledge-support-%Y%m%dT%H%M%SZ.tar.gz", &tm);
    snprintf(disp, sizeof(disp), "attachment; filename=\"%s\"", name);
    hs_reply_header(r, "Content-Disposition", disp);
    j->req = r;
    hs_request_on_abort(r, abort_cb, j);
    hs_stream_start(r, 200, "application/gzip");
    hs_stream_on_drain(r, drain_cb, j);
    set_reading(j, true);
}

void support_stop(struct ledged *d)
{
    while (d->support_jobs)
        job_free(d->support_jobs);
}
