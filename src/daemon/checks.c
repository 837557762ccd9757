/* checks.c — GET /check: the check table of src/check run for ledged's own configuration and
 * deployment, answered with the document `ledge check --output json` prints. The checks wait
 * on the network, the engine and the disk, so they run in a child process (a fork that computes,
 * writes the document to a pipe and exits) while the loop goes on; concurrent requests share one
 * run, and a run that overstays CHECKS_TIMEOUT_MS is killed. */
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
#include "base/fs.h"
#include "base/json.h"
#include "check/check.h"
#include "ledged.h"
#include "log/log.h"

#define COMP "check"
/* A run's whole budget: every check bounds its own waits (engine calls, NTP, TCP and TLS). */
#define CHECKS_TIMEOUT_MS 120000
/* The document is a few KiB; anything near this is not ours. */
#define CHECKS_MAX_OUTPUT (4u << 20)

struct check_waiter {
    struct hs_request *req;
    struct check_job *job;
    struct check_waiter *next;
};

struct check_job {
    struct ledged *d;
    pid_t pid;
    int out_fd, pidfd;
    struct event *out_ev, *exit_ev, *timer;
    struct lbuf out;
    bool eof, exited;
    struct check_waiter *waiters;
};

/* ------------------------------------------------------------------ the child */

/* Runs in the forked child: the checks, their document to fd, exit. Nothing of the parent's
 * loop is touched; its signal handlers would write into the parent's signal pipe, so they go. */
static _Noreturn void child_run(struct ledged *d, int fd)
{
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    const struct deployment *dep = agent_deployment(d->agent);
    struct check_deployment_view view = {0};
    const char *config_path = d->config_path ? d->config_path : CONFIG_DEFAULT_PATH;
    struct lstrv no_errors = LSTRV_INIT;
    struct check_inputs in = {
        .config = &d->cfg,
        .config_path = config_path,
        .config_status = access(config_path, F_OK) == 0 ? 0 : 1,
        .config_errors = &no_errors,
        .no_deployment = "no deployment has been applied",
    };
    if (dep && check_deployment_view(dep, "ledged", &view) == 0)
        in.deployment = &view.d;
    struct check_results res;
    if (check_run_all(&in, NULL, &res) < 0)
        _exit(1);
    json_t *doc = check_results_json(&res, config_path, in.deployment ? "ledged" : NULL, false);
    char *text = doc ? ljson_dump(doc) : NULL;
    _exit(text && lfs_write_all(fd, text, strlen(text)) == 0 ? 0 : 1);
}

/* ------------------------------------------------------------------ the parent */

static void waiter_abort(struct hs_request *r, void *ud)
{
    struct check_waiter *w = ud;
    for (struct check_waiter **p = &w->job->waiters; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    free(w);
}

static void job_free(struct check_job *j)
{
    if (!j)
        return;
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
    lbuf_free(&j->out);
    free(j);
}

/* Answer every waiter with the document (or why there is none) and end the job. */
static void job_finish(struct check_job *j, int status, const char *error)
{
    struct ledged *d = j->d;
    if (d->check_job == j)
        d->check_job = NULL;
    _cleanup_json_ json_t *doc = NULL;
    if (!error && (!j->out.len || ljson_parse(j->out.data, j->out.len, &doc, NULL) < 0)) {
        status = 500;
        error = "the checks ended without a result (see ledged's log)";
    }
    if (error)
        log_warn(COMP, "%s", error);
    while (j->waiters) {
        struct check_waiter *w = j->waiters;
        j->waiters = w->next;
        hs_request_on_abort(w->req, NULL, NULL);
        if (error)
            hs_reply_error(w->req, status, "%s", error);
        else
            hs_reply_json(w->req, 200, json_incref(doc));
        free(w);
    }
    job_free(j);
}

static void maybe_done(struct check_job *j)
{
    if (!j->eof || !j->exited)
        return;
    job_finish(j, 500, NULL);
}

static void out_cb(evutil_socket_t fd, short what, void *arg)
{
    struct check_job *j = arg;
    char buf[16384];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n > 0) {
        if (j->out.len + (size_t)n > CHECKS_MAX_OUTPUT || lbuf_append(&j->out, buf, (size_t)n) < 0)
            job_finish(j, 500, "the checks' output was too large");
        return;
    }
    event_del(j->out_ev);
    j->eof = true;
    maybe_done(j);
}

static void exit_cb(evutil_socket_t fd, short what, void *arg)
{
    struct check_job *j = arg;
    int st;
    if (waitpid(j->pid, &st, WNOHANG) != j->pid)
        return;
    event_del(j->exit_ev);
    j->exited = true;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        job_finish(j, 500, "the checks failed (out of memory?)");
        return;
    }
    maybe_done(j);
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    job_finish(arg, 504, "the checks did not finish in time");
}

static struct check_job *job_start(struct ledged *d)
{
    struct check_job *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    j->d = d;
    j->out_fd = j->pidfd = -1;
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        free(j);
        return NULL;
    }
    j->pid = fork();
    if (j->pid == 0) {
        close(p[0]);
        child_run(d, p[1]);
    }
    close(p[1]);
    j->out_fd = p[0];
    if (j->pid < 0) {
        job_free(j);
        return NULL;
    }
    fcntl(j->out_fd, F_SETFL, fcntl(j->out_fd, F_GETFL) | O_NONBLOCK);
    j->pidfd = (int)syscall(SYS_pidfd_open, j->pid, 0);
    struct timeval tv = {CHECKS_TIMEOUT_MS / 1000, 0};
    if (j->pidfd < 0 ||
        !(j->out_ev = event_new(d->base, j->out_fd, EV_READ | EV_PERSIST, out_cb, j)) ||
        !(j->exit_ev = event_new(d->base, j->pidfd, EV_READ | EV_PERSIST, exit_cb, j)) ||
        !(j->timer = evtimer_new(d->base, timeout_cb, j)) || event_add(j->out_ev, NULL) < 0 ||
        event_add(j->exit_ev, NULL) < 0 || evtimer_add(j->timer, &tv) < 0) {
        job_free(j);
        return NULL;
    }
    return j;
}

void mgmt_check(struct hs_request *r, void *ud)
{
    struct ledged *d = ud;
    struct check_waiter *w = calloc(1, sizeof(*w));
    if (!w) {
        hs_reply_error(r, 500, "out of memory");
        return;
    }
    if (!d->check_job && !(d->check_job = job_start(d))) {
        free(w);
        hs_reply_error(r, 500, "cannot start the checks");
        return;
    }
    w->req = r;
    w->job = d->check_job;
    w->next = d->check_job->waiters;
    d->check_job->waiters = w;
    hs_request_on_abort(r, waiter_abort, w);
}

void checks_stop(struct ledged *d)
{
    struct check_job *j = d->check_job;
    if (!j)
        return;
    d->check_job = NULL;
    while (j->waiters) {
        struct check_waiter *w = j->waiters;
        j->waiters = w->next;
        hs_request_on_abort(w->req, NULL, NULL);
        free(w);
    }
    job_free(j);
}
