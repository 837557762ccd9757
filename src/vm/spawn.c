/* spawn.c — running ledge-vmm and the tools `ledge vm` uses (spawn.h). */
#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/fs.h"
#include "vm/def.h"
#include "vm/paths.h"

static int wait_child(pid_t pid, int *ret_status)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return neg_errno();
    *ret_status = st;
    return 0;
}

int vm_run(char *const argv[], struct lbuf *out, int *ret_status, struct lerr *err)
{
    int pipefd[2] = {-1, -1};
    if (out && pipe2(pipefd, O_CLOEXEC) < 0)
        return lerr_set(err, neg_errno(), "pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) {
        int r = lerr_set(err, neg_errno(), "fork: %s", strerror(errno));
        if (out) {
            close(pipefd[0]);
            close(pipefd[1]);
        }
        return r;
    }
    if (pid == 0) {
        if (out)
            dup2(pipefd[1], STDOUT_FILENO);
        execvp(argv[0], argv);
        fprintf(stderr, "ledge: %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    if (out) {
        close(pipefd[1]);
        char buf[4096];
        ssize_t k;
        bool full = false;
        /* Read to the end even past out->max, so the child never blocks on a full pipe. */
        while ((k = read(pipefd[0], buf, sizeof(buf))) > 0 || (k < 0 && errno == EINTR))
            if (k > 0 && !full && lbuf_append(out, buf, (size_t)k) < 0)
                full = true;
        close(pipefd[0]);
    }
    int r = wait_child(pid, ret_status);
    return r < 0 ? lerr_set(err, r, "%s: waitpid: %s", argv[0], strerror(-r)) : 0;
}

int vm_run_tool(char *const argv[], const char *what, struct lerr *err)
{
    int st;
    int r = vm_run(argv, NULL, &st, err);
    if (r < 0)
        return r;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 0;
    if (WIFEXITED(st))
        return lerr_set(err, -EIO, "%s failed (exit %d)", what, WEXITSTATUS(st));
    return lerr_set(err, -EIO, "%s failed (signal %d)", what, WTERMSIG(st));
}

/* ledge-vmm detaches once it listens; its parent half answers through the exit status. */
int vm_supervisor_spawn(const char *vmroot, const char *name, struct lerr *err)
{
    char prog[PATH_MAX], logpath[PATH_MAX];
    if (vm_find_program("ledge-vmm", prog, sizeof(prog)) < 0)
        return lerr_set(err, -ENOENT,
                        "cannot find ledge-vmm (set LEDGE_VM_LIBDIR, or reinstall ledge)");
    if (vm_path(logpath, sizeof(logpath), vmroot, name, VM_FILE_VMM_LOG) < 0)
        return lerr_set(err, -ENAMETOOLONG, "%s/%s: path too long", vmroot, name);
    pid_t pid = fork();
    if (pid < 0)
        return lerr_set(err, neg_errno(), "fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        execl(prog, prog, "--vm-dir", vmroot, "--name", name, (char *)NULL);
        _exit(127);
    }
    int st;
    int r = wait_child(pid, &st);
    if (r < 0)
        return lerr_set(err, r, "ledge-vmm: waitpid: %s", strerror(-r));
    if (WIFEXITED(st) && WEXITSTATUS(st) == VM_SUPERVISOR_EXIT_BUSY)
        return 1;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return lerr_set(err, -EIO, "ledge-vmm could not start %s (its log: %s)", name, logpath);
    return 0;
}

bool vm_supervised(const char *vmroot, const char *name)
{
    char path[PATH_MAX];
    if (vm_path(path, sizeof(path), vmroot, name, VM_FILE_LOCK) < 0)
        return false;
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    if (flock(fd, LOCK_SH | LOCK_NB) < 0)
        return errno == EWOULDBLOCK;
    flock(fd, LOCK_UN);
    return false;
}
