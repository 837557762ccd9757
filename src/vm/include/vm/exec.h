/* exec.h — running a command in a VM's guest: the client end of the supervisor's exec socket
 * (the channel's frame protocol: OPEN of kind exec, DATA/STDERR with window credit, EOF, RESIZE,
 * EXIT, CLOSE; docs/vm.md "Channel"), and copying an image into the guest's engine over it.
 * Blocking: the caller's file descriptors are the command's stdin, stdout and stderr. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "base/errors.h"
#include "vm/host.h"

struct vm_exec_request {
    char *const *argv; /* argc strings, searched in the guest's PATH */
    size_t argc;
    bool tty;      /* a pty in the guest (stdout and stderr merged) */
    unsigned rows; /* tty: the terminal's size; 0 leaves the guest's default */
    unsigned cols;
    const char *term; /* tty: $TERM, or NULL */
};

struct vm_exec_io {
    int in_fd;  /* the command's stdin; -1 for none (EOF at once) */
    int out_fd; /* where its stdout goes */
    int err_fd; /* and its stderr */
    /* Asked when a signal interrupted the wait (SIGWINCH, say): true with the terminal's new
     * size to send it to the guest. May be NULL. */
    bool (*resized)(void *ud, unsigned *rows, unsigned *cols);
    void *ud;
};

/* Run req in VM name until it exits: 0 with its exit code in *ret_code (128 + N when killed by
 * signal N), or < 0 with err (not running, the guest refused, the session broke). */
int vm_exec(const struct vm_host *h, const char *name, const struct vm_exec_request *req,
            const struct vm_exec_io *io, int *ret_code, struct lerr *err);

/* Copy an image into VM name's engine: what is a docker-save archive (a regular file) or an image
 * of this host's engine (streamed from `docker save`). The guest's `docker load` (a docker
 * guest) or `ledge image load` (an oci guest: the archive staged in its state directory first)
 * writes its messages to out_fd and err_fd. */
int vm_image_load(const struct vm_host *h, const char *name, const char *what, int out_fd,
                  int err_fd, struct lerr *err);
