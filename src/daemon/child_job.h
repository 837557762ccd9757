/* child_job.h — a job ledged runs in a forked child process (GET /check, support bundles, the
 * VM routes): the child runs one function that writes its result to a pipe and exits, while the
 * loop reads the pipe, sees the exit at once through a pidfd, and kills a child that overstays
 * its deadline. The owner keeps what it reads and decides what it means. */
#pragma once

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct child_job_ops {
    /* Bytes from the child's pipe. Must not release the job; a negative return stops the job:
     * the child is killed and done() follows. */
    int (*output)(void *ud, const char *data, size_t n);
    /* The child has exited (wait status as waitpid gives it) and its pipe was read to its end
     * (what a process the child started still writes there is not waited for). May release. */
    void (*done)(void *ud, int wait_status);
    /* The deadline passed with the child still running. May release (which kills it). */
    void (*timeout)(void *ud);
};

struct child_job {
    pid_t pid;
    int out_fd, pidfd;
    struct event *out_ev, *exit_ev, *timer;
    bool reading, exited, eof;
    int status; /* once exited */
    const struct child_job_ops *ops;
    void *ud;
};

/* Run in the child, with the write end of the pipe; its return is the child's exit status. The
 * child starts with default signal dispositions and no signal blocked (the parent's handlers
 * would write into the parent's signal pipe). */
typedef int (*child_job_fn)(int fd, void *arg);

/* Fork a child running fn(fd, arg) and watch it on base, reading its pipe from the start unless
 * read is false; timeout_ms > 0 is its deadline. 0, or -errno with j released. */
int child_job_start(struct child_job *j, struct event_base *base, int timeout_ms, bool read,
                    child_job_fn fn, void *arg, const struct child_job_ops *ops, void *ud);
/* Read the pipe or stop reading it (a consumer's back-pressure). */
void child_job_reading(struct child_job *j, bool on);
/* Kill the child if it still runs and reap it, free the events, close the fds; j is then
 * zeroed. Safe on a job that never started. */
void child_job_release(struct child_job *j);
