/* fs.c — durable file operations (see fs.h). */
#include "base/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/macro.h"

int lfs_write_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return neg_errno();
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int lfs_dirname(const char *path, char *dst, size_t size)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return snprintf(dst, size, ".") < (int)size ? 0 : -ENAMETOOLONG;
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    if (n >= size)
        return -ENAMETOOLONG;
    memcpy(dst, path, n);
    dst[n] = 0;
    return 0;
}

int lfs_fsync_dir(const char *dir)
{
    _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return neg_errno();
    if (fsync(fd) < 0)
        return neg_errno();
    return 0;
}

int lfs_write_atomic(const char *path, const void *data, size_t n, mode_t mode)
{
    char tmp[PATH_MAX], dir[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    int r = lfs_dirname(path, dir, sizeof(dir));
    if (r < 0)
        return r;
    _cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return neg_errno();
    if (fchmod(fd, mode) < 0 || (r = lfs_write_all(fd, data, n)) < 0 || fsync(fd) < 0) {
        r = r < 0 ? r : neg_errno();
        unlink(tmp);
        return r;
    }
    if (rename(tmp, path) < 0) {
        r = neg_errno();
        unlink(tmp);
        return r;
    }
    return lfs_fsync_dir(dir);
}

int lfs_read_file(const char *path, size_t max, char **ret, size_t *ret_len)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return neg_errno();
    size_t cap = 4096, len = 0;
    _cleanup_free_ char *buf = malloc(cap + 1);
    if (!buf)
        return -ENOMEM;
    for (;;) {
        if (len == cap) {
            if (cap >= max + 1)
                return -EFBIG;
            size_t ncap = MIN(cap * 2, max + 1);
            char *nb = realloc(buf, ncap + 1);
            if (!nb)
                return -ENOMEM;
            buf = nb;
            cap = ncap;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return neg_errno();
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > max)
            return -EFBIG;
    }
    buf[len] = 0;
    if (ret_len)
        *ret_len = len;
    *ret = TAKE_PTR(buf);
    return 0;
}

int lfs_mkdir_p(const char *path, mode_t mode)
{
    char p[PATH_MAX];
    if (strlen(path) >= sizeof(p))
        return -ENAMETOOLONG;
    strcpy(p, path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        if (mkdir(p, mode) < 0 && errno != EEXIST)
            return neg_errno();
        *s = '/';
    }
    if (mkdir(p, mode) < 0 && errno != EEXIST)
        return neg_errno();
    return 0;
}
