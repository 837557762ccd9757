/* unix.c — listening unix sockets with an exact mode and no umask games (net/unix.h). */
#include "net/unix.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int net_unix_listen(const char *path, int type, mode_t mode, gid_t gid, int backlog)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            close(fd);
            return -EEXIST;
        }
        unlink(path);
    }
    /* Create the socket file with no access, then open it up to exactly mode: no window in
     * which it is reachable with the umask's permissions — without touching the umask, which is
     * the process's and would apply to files other threads create meanwhile (the hub's commit
     * worker). Linux makes the file with the mode of the socket's own inode minus the umask
     * (net/unix/af_unix.c, unix_bind: S_IFSOCK | (SOCK_INODE(sock)->i_mode & ~current_umask());
     * sockfs starts it at 0777), and fchmod() on the unbound socket sets that inode's mode, so
     * after fchmod(fd, 0) the file appears as 0000 whatever the umask (test_unix_socket_mode).
     * Simpler than binding in a private directory and renaming into place, and the path keeps
     * its length limit. */
    int r = fchmod(fd, 0);
    if (r == 0)
        r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    if (r < 0 || (gid != (gid_t)-1 && chown(path, 0, gid) < 0) || chmod(path, mode) < 0 ||
        listen(fd, backlog) < 0) {
        r = -errno;
        close(fd);
        unlink(path);
        return r;
    }
    return fd;
}
