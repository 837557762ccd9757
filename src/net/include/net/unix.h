/* unix.h — listening unix sockets created with exactly the mode asked for, without touching the
 * process-wide umask (which would race with other threads creating files). */
#pragma once

#include <sys/types.h>

/* Create a listening unix socket of type (SOCK_STREAM, SOCK_SEQPACKET; SOCK_CLOEXEC is always
 * added, SOCK_NONBLOCK may be or'ed in) at path with mode and, unless gid is (gid_t)-1, group
 * gid (owner root). A socket file already at path is replaced; anything else there is -EEXIST.
 * The file never exists with more access than mode. Returns the fd, or -errno. */
int net_unix_listen(const char *path, int type, mode_t mode, gid_t gid, int backlog);
