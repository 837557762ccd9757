/* proc.h — running a program to completion for the tools' libraries (support bundles, updates):
 * its stdout and stderr collected into bounded buffers, a deadline after which it (and its
 * process group) is killed, and its wait status. Blocking; no event loop. And a process's start
 * time, which tells a pid's process from a later one of the same pid (adopting after a restart). */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "base/buf.h"

struct lproc {
    char *const *argv; /* argv[0] searched in PATH */
    char *const *envp; /* NULL: ours */
    int in_fd;         /* the program's stdin; -1: /dev/null */
    struct lbuf *out;  /* its stdout (bounded by out->max, the rest read and dropped);
                          NULL: out_fd, else /dev/null */
    int out_fd;        /* with out NULL and out_fd > 0: its stdout goes to out_fd */
    struct lbuf *err;  /* its stderr likewise; NULL: /dev/null */
    int err_to_out;    /* stderr goes where stdout goes */
    long timeout_ms;   /* 0: none; past it the process group gets SIGKILL */
    const char *cwd;   /* NULL: ours */
};

/* Run p to completion: 0 with its wait status (waitpid(2)) in *ret_status, -ETIMEDOUT when it was
 * killed at the deadline (the status is still written), or < 0 when it could not be started
 * (-ENOENT: no such program). The program runs in its own process group. */
int lproc_run(const struct lproc *p, int *ret_status);

/* The wait status as words: "exited 0", "exit status 3", "killed by signal 9". */
const char *lproc_status_str(int status, char *buf, size_t size);
/* lproc_run() whose result is an exit status of 0: 0, else -EIO (-ETIMEDOUT at the deadline;
 * *ret_status, when non-NULL, gets the status either way). */
int lproc_run_ok(const struct lproc *p, int *ret_status);

/* Field 22 of /proc/<pid>/stat (start time in clock ticks since boot): parsed after the last ')'
 * because the command name may hold spaces and parentheses. 0, -EINVAL for text that is not a
 * stat line, or the error reading the file (-ENOENT: no such process). */
int lproc_starttime_parse(const char *stat_line, unsigned long long *ret);
int lproc_starttime(pid_t pid, unsigned long long *ret);
