/* test-child-job.c — a job in a forked child (child_job.h): its output and exit status, a child
 * that exits with output still in the pipe, back-pressure, a stop from the output callback, the
 * deadline, and a release that kills and reaps a running child. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/fs.h"
#include "child_job.h"

struct seen {
    struct event_base *base;
    struct child_job job;
    struct lbuf out;
    int done, timeouts, status, stop_after;
    bool release_on_timeout;
};

static int on_output(void *ud, const char *data, size_t n)
{
    struct seen *s = ud;
    assert_int_equal(lbuf_append(&s->out, data, n), 0);
    return s->stop_after && s->out.len >= (size_t)s->stop_after ? -1 : 0;
}

static void on_done(void *ud, int status)
{
    struct seen *s = ud;
    s->done++;
    s->status = status;
    child_job_release(&s->job);
    event_base_loopbreak(s->base);
}

static void on_timeout(void *ud)
{
    struct seen *s = ud;
    s->timeouts++;
    child_job_release(&s->job);
    event_base_loopbreak(s->base);
}

static const struct child_job_ops ops = {on_output, on_done, on_timeout};

static int write_and_exit(int fd, void *arg)
{
    const char *text = arg;
    return lfs_write_all(fd, text, strlen(text)) == 0 ? 3 : 1;
}

static int big_then_exit(int fd, void *arg)
{
    (void)arg;
    static char buf[1 << 20];
    memset(buf, 'x', sizeof(buf));
    return lfs_write_all(fd, buf, sizeof(buf)) == 0 ? 0 : 1;
}

static int sleep_forever(int fd, void *arg)
{
    (void)fd;
    (void)arg;
    sleep(60);
    return 0;
}

static void run(struct seen *s)
{
    struct timeval tv = {20, 0};
    event_base_loopexit(s->base, &tv);
    event_base_dispatch(s->base);
}

static void setup_seen(struct seen *s)
{
    memset(s, 0, sizeof(*s));
    s->base = event_base_new();
    assert_non_null(s->base);
}

static void teardown_seen(struct seen *s)
{
    child_job_release(&s->job);
    lbuf_free(&s->out);
    event_base_free(s->base);
}

static void test_output_and_status(void **state)
{
    (void)state;
    struct seen s;
    setup_seen(&s);
    assert_int_equal(
        child_job_start(&s.job, s.base, 10000, true, write_and_exit, "hello", &ops, &s), 0);
    run(&s);
    assert_int_equal(s.done, 1);
    assert_true(WIFEXITED(s.status));
    assert_int_equal(WEXITSTATUS(s.status), 3);
    assert_int_equal(s.out.len, 5);
    assert_memory_equal(s.out.data, "hello", 5);
    assert_int_equal(s.job.pid, 0); /* released */
    teardown_seen(&s);
}

/* Not reading until told to: the child blocks on the full pipe; once reading, all of it comes,
 * whether it is read before the exit or drained after it. */
static void test_back_pressure(void **state)
{
    (void)state;
    struct seen s;
    setup_seen(&s);
    assert_int_equal(child_job_start(&s.job, s.base, 10000, false, big_then_exit, NULL, &ops, &s),
                     0);
    struct timeval tv = {0, 200000};
    event_base_loopexit(s.base, &tv);
    event_base_dispatch(s.base);
    assert_int_equal(s.done, 0);
    assert_int_equal(s.out.len, 0);
    child_job_reading(&s.job, true);
    run(&s);
    assert_int_equal(s.done, 1);
    assert_int_equal(s.out.len, 1 << 20);
    assert_true(WIFEXITED(s.status) && WEXITSTATUS(s.status) == 0);
    teardown_seen(&s);
}

/* The output callback stops the job: the child is killed, done() follows. */
static void test_stop_from_output(void **state)
{
    (void)state;
    struct seen s;
    setup_seen(&s);
    s.stop_after = 1;
    assert_int_equal(child_job_start(&s.job, s.base, 10000, true, big_then_exit, NULL, &ops, &s),
                     0);
    run(&s);
    assert_int_equal(s.done, 1);
    assert_true(s.out.len < (1u << 20));
    assert_true(WIFSIGNALED(s.status) && WTERMSIG(s.status) == SIGKILL);
    teardown_seen(&s);
}

static void test_deadline_and_release(void **state)
{
    (void)state;
    struct seen s;
    setup_seen(&s);
    assert_int_equal(child_job_start(&s.job, s.base, 300, true, sleep_forever, NULL, &ops, &s), 0);
    pid_t pid = s.job.pid;
    run(&s);
    assert_int_equal(s.timeouts, 1);
    assert_int_equal(s.done, 0);
    /* released from the callback: killed and reaped, nothing left of it */
    assert_int_equal(waitpid(pid, NULL, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
    /* a job that never started releases as well */
    struct child_job none = {.out_fd = -1, .pidfd = -1};
    child_job_release(&none);
    teardown_seen(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_output_and_status),
        cmocka_unit_test(test_back_pressure),
        cmocka_unit_test(test_stop_from_output),
        cmocka_unit_test(test_deadline_and_release),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
