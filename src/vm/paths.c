/* paths.c — VM directories, per-VM paths and sockets, and ledge's VM programs (paths.h). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/str.h"
#include "vm/paths.h"

#ifndef LEDGE_VM_LIBDIR
#define LEDGE_VM_LIBDIR "/usr/lib/ledge"
#endif

const char *vm_dir_default(void)
{
    const char *e = getenv("LEDGE_VM_DIR");
    return e && *e ? e : VM_DIR_DEFAULT;
}

const char *vm_cache_dir_default(void)
{
    const char *e = getenv("LEDGE_VM_CACHE");
    return e && *e ? e : VM_CACHE_DEFAULT;
}

int vm_path(char *buf, size_t size, const char *vmdir, const char *name, const char *file)
{
    int n = file ? snprintf(buf, size, "%s/%s/%s", vmdir, name, file)
                 : snprintf(buf, size, "%s/%s", vmdir, name);
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

int vm_sock_path(char *buf, size_t size, const char *vmdir, const char *name, const char *sock,
                 struct lerr *err)
{
    struct sockaddr_un sa;
    int n = snprintf(buf, size, "%s/%s/%s/%s", vmdir, name, VM_RUN_SUBDIR, sock);
    if (n < 0 || (size_t)n >= size || (size_t)n >= sizeof(sa.sun_path))
        return lerr_set(err, -ENAMETOOLONG,
                        "%s/%s/%s/%s: longer than a unix socket path may be (%zu bytes); use a "
                        "shorter VM directory",
                        vmdir, name, VM_RUN_SUBDIR, sock, sizeof(sa.sun_path) - 1);
    return 0;
}

static int self_dir(char *dir, size_t size)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return -ENOENT;
    self[n] = 0;
    return lfs_dirname(self, dir, size);
}

int vm_find_program(const char *name, char *buf, size_t size)
{
    char dir[PATH_MAX];
    const char *env = getenv("LEDGE_VM_LIBDIR");
    char cand[4][PATH_MAX * 2];
    size_t n = 0;
    if (env && *env)
        snprintf(cand[n++], sizeof(cand[0]), "%s/%s", env, name);
    if (self_dir(dir, sizeof(dir)) == 0) {
        snprintf(cand[n++], sizeof(cand[0]), "%s/%s", dir, name);
        /* The build tree: src/cli/ledge or src/daemon/ledged beside src/vm/. */
        snprintf(cand[n++], sizeof(cand[0]), "%s/../vm/%s", dir, name);
    }
    snprintf(cand[n++], sizeof(cand[0]), "%s/%s", LEDGE_VM_LIBDIR, name);
    for (size_t i = 0; i < n; i++) {
        char real[PATH_MAX];
        if (access(cand[i], X_OK) == 0 && realpath(cand[i], real))
            return lstr_copy(buf, size, real);
    }
    return -ENOENT;
}

int vm_unix_connect(const char *path, int sock_flags)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (lstr_copy(sa.sun_path, sizeof(sa.sun_path), path) < 0)
        return -ENAMETOOLONG;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | sock_flags, 0);
    if (fd < 0)
        return neg_errno();
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}
