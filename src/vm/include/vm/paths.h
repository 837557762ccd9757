/* paths.h — where ledge's VMs live: the VMs' directory and the image cache (defaults and
 * environment overrides), per-VM file paths with the unix-socket length checked, connecting to
 * those sockets, and finding ledge's VM programs (ledge-vmm, ledge-vm-build) next to the running
 * binary or installed. */
#pragma once

#include <stddef.h>

#include "base/errors.h"

#define VM_DIR_DEFAULT "/var/lib/ledge/vm"     /* config vm.dir */
#define VM_CACHE_DEFAULT "/var/cache/ledge/vm" /* built guest images */
#define VM_RUN_SUBDIR "run"                    /* sockets, pid file */

/* $LEDGE_VM_DIR, else the default. */
const char *vm_dir_default(void);
/* $LEDGE_VM_CACHE, else the default. */
const char *vm_cache_dir_default(void);

/* "<vmdir>/<name>[/<file>]"; -ENAMETOOLONG when it does not fit. */
int vm_path(char *buf, size_t size, const char *vmdir, const char *name, const char *file);
/* "<vmdir>/<name>/run/<sock>", checked against the 107-byte limit of unix socket paths. */
int vm_sock_path(char *buf, size_t size, const char *vmdir, const char *name, const char *sock,
                 struct lerr *err);

/* A stream connection to the unix socket at path (SOCK_CLOEXEC, plus sock_flags such as
 * SOCK_NONBLOCK): the fd, or a negative errno. */
int vm_unix_connect(const char *path, int sock_flags);

/* A program of ledge's: $LEDGE_VM_LIBDIR/<name>, beside the running binary, the build tree's
 * src/vm/<name>, or the installed library directory. -ENOENT when none is executable. */
int vm_find_program(const char *name, char *buf, size_t size);
