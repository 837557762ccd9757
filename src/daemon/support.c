/* support.c — GET /systeminfo/supportbundle (IoT Edge's route): the support bundle of
 * support/bundle.h, made by a child process (the bundle's calls block, several of them on this
 * daemon's own API) and streamed to the client as application/gzip while it is written. The
 * child's pipe is read only while the client keeps up, so a slow client holds back the child
 * rather than ledged's memory; a bundle that overstays SUPPORT_JOB_TIMEOUT_MS is killed. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/str.h"
#include "base/timeutil.h"
#include "child_job.h"
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
    int64_t since_ms;
    bool client_gone; /* a write to it failed: the child was killed, nothing more to say */
    struct child_job child;
    struct support_job *next;
};

static int child_run(int fd, void *arg)
{
    struct support_job *j = arg;
    struct support_options o = {
        .config_path = j->d->config_path,
        .mgmt_socket = j->d->cfg.management.socket,
        .since_ms = j->since_ms,
        .vm_dir = j->d->cfg.vm.dir,
        .ledged_stderr_fd = STDERR_FILENO,
    };
    struct lerr err = {0};
    return support_bundle_write(&o, fd, NULL, &err) < 0 ? 1 : 0;
}

static void job_free(struct support_job *j)
{
    if (!j)
        return;
    for (struct support_job **p = &j->d->support_jobs; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            break;
        }
    child_job_release(&j->child);
    if (j->req) {
        hs_request_on_abort(j->req, NULL, NULL);
        hs_stream_on_drain(j->req, NULL, NULL);
    }
    free(j);
}

static int on_output(void *ud, const char *data, size_t n)
{
    struct support_job *j = ud;
    if (!j->req || hs_stream_write(j->req, data, n) < 0) {
        j->client_gone = true;
        return -1; /* the child is killed */
    }
    if (hs_stream_queued(j->req) > SUPPORT_HIGH_WATER)
        child_job_reading(&j->child, false);
    return 0;
}

/* The stream ends when the child has exited and its pipe is drained; a failed child leaves the
 * archive cut short (the client's gzip reader says so) and ledged's log says why. */
static void on_done(void *ud, int status)
{
    struct support_job *j = ud;
    if (!j->client_gone) {
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            log_warn(COMP, "the support bundle could not be completed");
        if (j->req)
            hs_stream_end(j->req);
        j->req = NULL;
    }
    job_free(j);
}

static void on_timeout(void *ud)
{
    struct support_job *j = ud;
    log_warn(COMP, "the support bundle did not finish in %d s; stopped",
             SUPPORT_JOB_TIMEOUT_MS / 1000);
    if (j->req)
        hs_stream_end(j->req);
    j->req = NULL;
    job_free(j);
}

static const struct child_job_ops job_ops = {on_output, on_done, on_timeout};

static void drain_cb(struct hs_request *r, void *ud)
{
    struct support_job *j = ud;
    child_job_reading(&j->child, true);
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
    if (!j) {
        hs_reply_error(r, 500, "cannot start the support bundle: out of memory");
        return;
    }
    j->d = d;
    j->since_ms = since_ms;
    int e = child_job_start(&j->child, d->base, SUPPORT_JOB_TIMEOUT_MS, false, child_run, j,
                            &job_ops, j);
    if (e < 0) {
        free(j);
        hs_reply_error(r, 500, "cannot start the support bundle: %s", strerror(-e));
        return;
    }
    j->next = d->support_jobs;
    d->support_jobs = j;
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
    child_job_reading(&j->child, true);
}

void support_stop(struct ledged *d)
{
    while (d->support_jobs)
        job_free(d->support_jobs);
}
