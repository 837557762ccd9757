/* autostart.c — starting the supervisors of autostart VMs (autostart.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/str.h"
#include "vm/autostart.h"
#include "vm/def.h"
#include "vm/paths.h"

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

/* ledge-vmm detaches once it listens; its parent half answers through the exit status. */
static int spawn(const char *vmroot, const char *name, char *msg, size_t size)
{
    char prog[PATH_MAX], logpath[PATH_MAX];
    if (vm_find_program("ledge-vmm", prog, sizeof(prog)) < 0) {
        snprintf(msg, size, "cannot find ledge-vmm");
        return -ENOENT;
    }
    vm_path(logpath, sizeof(logpath), vmroot, name, VM_FILE_VMM_LOG);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(msg, size, "fork: %s", strerror(errno));
        return neg_errno();
    }
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
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 3)
        return 1;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        snprintf(msg, size, "ledge-vmm failed (see %.200s)", logpath);
        return -EIO;
    }
    return 0;
}

int vm_autostart(const char *vmroot, vm_autostart_fn report, void *ud)
{
    DIR *d = opendir(vmroot);
    if (!d)
        return neg_errno();
    int started = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[PATH_MAX], msg[256] = "";
        struct vm_def def;
        struct lerr err = {0};
        if (vm_name_check(e->d_name, NULL) < 0 ||
            vm_path(path, sizeof(path), vmroot, e->d_name, VM_FILE_DEF) < 0 ||
            access(path, F_OK) < 0)
            continue;
        if (vm_def_load(path, &def, &err) < 0) {
            if (report)
                report(ud, e->d_name, err.code ? err.code : -EINVAL, lerr_str(&err));
            continue;
        }
        bool want = def.autostart;
        vm_def_free(&def);
        if (!want)
            continue;
        int r = vm_supervised(vmroot, e->d_name) ? 1 : spawn(vmroot, e->d_name, msg, sizeof(msg));
        if (r == 0)
            started++;
        if (report)
            report(ud, e->d_name, r, msg);
    }
    closedir(d);
    return started;
}
