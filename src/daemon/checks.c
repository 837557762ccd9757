/* checks.c — GET /check: the check table of src/check run for ledged's own configuration and
 * deployment, answered with the document `ledge check --output json` prints. The checks wait
 * on the network, the engine and the disk, so they run in a child process (a fork that computes,
 * writes the document to a pipe and exits) while the loop goes on; concurrent requests share one
 * run, and a run that overstays CHECKS_TIMEOUT_MS is killed. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/json.h"
#include "check/check.h"
#include "child_job.h"
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
    struct child_job child;
    struct lbuf out;
    bool too_large;
    struct check_waiter *waiters;
};

/* ------------------------------------------------------------------ the child */

/* Runs in the forked child: the checks, their document to fd. Nothing of the parent's loop is
 * touched. */
static int child_run(int fd, void *arg)
{
    struct ledged *d = arg;
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
        return 1;
    json_t *doc = check_results_json(&res, config_path, in.deployment ? "ledged" : NULL, false);
    char *text = doc ? ljson_dump(doc) : NULL;
    return text && lfs_write_all(fd, text, strlen(text)) == 0 ? 0 : 1;
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
    child_job_release(&j->child);
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

static int on_output(void *ud, const char *data, size_t n)
{
    struct check_job *j = ud;
    if (j->out.len + n > CHECKS_MAX_OUTPUT || lbuf_append(&j->out, data, n) < 0) {
        j->too_large = true;
        return -1;
    }
    return 0;
}

static void on_done(void *ud, int status)
{
    struct check_job *j = ud;
    if (j->too_large)
        job_finish(j, 500, "the checks' output was too large");
    else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        job_finish(j, 500, "the checks failed (out of memory?)");
    else
        job_finish(j, 500, NULL);
}

static void on_timeout(void *ud)
{
    job_finish(ud, 504, "the checks did not finish in time");
}

static const struct child_job_ops job_ops = {on_output, on_done, on_timeout};

static struct check_job *job_start(struct ledged *d)
{
    struct check_job *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    j->d = d;
    if (child_job_start(&j->child, d->base, CHECKS_TIMEOUT_MS, true, child_run, d, &job_ops, j) <
        0) {
        free(j);
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
