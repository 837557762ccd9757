/* proc.c — running a program to completion with bounded output and a deadline, a process's start
 * time (proc.h). */
#include "base/proc.h"

#include <errno.h>
#include <stdlib.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/macro.h"
#include "base/timeutil.h"

static void close_pair(int p[2])
{
    for (int i = 0; i < 2; i++)
        if (p[i] >= 0) {
            close(p[i]);
            p[i] = -1;
        }
}

/* Append what a pipe has; excess beyond the buffer's bound is dropped (the program must never
 * block on a full pipe). 0 at EOF, 1 when more may come. */
static int drain(int fd, struct lbuf *b)
{
    char buf[16384];
    ssize_t k = read(fd, buf, sizeof(buf));
    if (k < 0)
        return errno == EINTR || errno == EAGAIN ? 1 : 0;
    if (k == 0)
        return 0;
    if (b && (!b->max || b->len < b->max)) {
        size_t room = b->max ? b->max - b->len : (size_t)k;
        lbuf_append(b, buf, MIN((size_t)k, room));
    }
    return 1;
}

int lproc_run(const struct lproc *p, int *ret_status)
{
    int outp[2] = {-1, -1}, errp[2] = {-1, -1}, execp[2] = {-1, -1};
    int r = 0;
    if (pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0 || pipe2(execp, O_CLOEXEC) < 0) {
        r = neg_errno();
        close_pair(outp);
        close_pair(errp);
        close_pair(execp);
        return r;
    }
    pid_t pid = fork();
    if (pid < 0) {
        r = neg_errno();
        close_pair(outp);
        close_pair(errp);
        close_pair(execp);
        return r;
    }
    if (pid == 0) {
        /* Child: async-signal-safe calls only. */
        setpgid(0, 0);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        int in = p->in_fd >= 0 ? p->in_fd : open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (in >= 0 && in != STDIN_FILENO)
            dup2(in, STDIN_FILENO);
        int out = !p->out && p->out_fd > 0 ? p->out_fd : outp[1];
        dup2(out, STDOUT_FILENO);
        dup2(p->err_to_out ? out : errp[1], STDERR_FILENO);
        if (p->cwd && chdir(p->cwd) < 0) {
            int e = errno;
            (void)!write(execp[1], &e, sizeof(e));
            _exit(127);
        }
        if (p->envp)
            execvpe(p->argv[0], p->argv, p->envp);
        else
            execvp(p->argv[0], p->argv);
        int e = errno;
        (void)!write(execp[1], &e, sizeof(e));
        _exit(127);
    }
    close(outp[1]);
    close(errp[1]);
    close(execp[1]);
    outp[1] = errp[1] = execp[1] = -1;
    int exec_errno = 0;
    ssize_t k;
    while ((k = read(execp[0], &exec_errno, sizeof(exec_errno))) < 0 && errno == EINTR)
        ;
    close_pair(execp);
    if (k == (ssize_t)sizeof(exec_errno)) {
        close_pair(outp);
        close_pair(errp);
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        return -exec_errno;
    }

    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    int64_t deadline = p->timeout_ms > 0 ? ltime_mono_ms() + p->timeout_ms : 0;
    bool out_open = true, err_open = true, exited = false, timed_out = false;
    while (out_open || err_open || (!exited && pidfd >= 0)) {
        struct pollfd fds[3];
        int n = 0, io = -1, ie = -1, ip = -1;
        if (out_open) {
            io = n;
            fds[n++] = (struct pollfd){.fd = outp[0], .events = POLLIN};
        }
        if (err_open) {
            ie = n;
            fds[n++] = (struct pollfd){.fd = errp[0], .events = POLLIN};
        }
        if (!exited && pidfd >= 0) {
            ip = n;
            fds[n++] = (struct pollfd){.fd = pidfd, .events = POLLIN};
        }
        int wait_ms = -1;
        if (deadline) {
            int64_t left = deadline - ltime_mono_ms();
            if (left <= 0) {
                timed_out = true;
                break;
            }
            wait_ms = (int)MIN(left, 60000);
        }
        int pr = poll(fds, (nfds_t)n, wait_ms);
        if (pr < 0 && errno != EINTR)
            break;
        if (pr <= 0)
            continue;
        if (io >= 0 && fds[io].revents && drain(outp[0], p->out) == 0)
            out_open = false;
        if (ie >= 0 && fds[ie].revents && drain(errp[0], p->err) == 0)
            err_open = false;
        if (ip >= 0 && fds[ip].revents)
            exited = true;
        /* A program that exited while a descendant keeps its pipes open: stop waiting for EOF
         * once it is gone and the pipes are quiet. */
        if (exited && (out_open || err_open)) {
            struct pollfd q[2];
            int m = 0;
            if (out_open)
                q[m++] = (struct pollfd){.fd = outp[0], .events = POLLIN};
            if (err_open)
                q[m++] = (struct pollfd){.fd = errp[0], .events = POLLIN};
            if (poll(q, (nfds_t)m, 100) == 0)
                break;
        }
    }
    if (timed_out) {
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
    }
    close_pair(outp);
    close_pair(errp);
    if (pidfd >= 0)
        close(pidfd);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return neg_errno();
    *ret_status = st;
    return timed_out ? -ETIMEDOUT : 0;
}

const char *lproc_status_str(int status, char *buf, size_t size)
{
    if (WIFEXITED(status))
        snprintf(buf, size, "exit status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, size, "killed by signal %d", WTERMSIG(status));
    else
        snprintf(buf, size, "wait status %d", status);
    return buf;
}

int lproc_run_ok(const struct lproc *p, int *ret_status)
{
    int st = 0;
    int r = lproc_run(p, &st);
    if (r < 0 && r != -ETIMEDOUT)
        return r;
    if (ret_status)
        *ret_status = st;
    if (r == -ETIMEDOUT)
        return r;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EIO;
}

int lproc_starttime_parse(const char *stat_line, unsigned long long *ret)
{
    const char *p = strrchr(stat_line, ')');
    if (!p)
        return -EINVAL;
    p++; /* " S ppid ..." : field 3 is the state */
    for (int field = 3; field < 22; field++) {
        p = strchr(p + 1, ' ');
        if (!p)
            return -EINVAL;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(p + 1, &end, 10);
    if (end == p + 1 || errno)
        return -EINVAL;
    *ret = v;
    return 0;
}

int lproc_starttime(pid_t pid, unsigned long long *ret)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    _cleanup_free_ char *text = NULL;
    int r = lfs_read_file(path, 4096, &text, NULL);
    if (r < 0)
        return r;
    return lproc_starttime_parse(text, ret);
}
