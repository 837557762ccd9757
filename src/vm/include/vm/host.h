/* host.h — managing the VMs of this host, one set of functions for `ledge vm` and the dashboard:
 * definitions (create, list, change, delete), the supervisor (start, wait, stop, reboot, status,
 * live port forwards; its control API is docs/vm.md "Supervision"), shared folders and logs.
 * Blocking calls with bounded waits; errors come back as -errno with the message in struct lerr,
 * nothing is printed. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/errors.h"
#include "vm/def.h"

/* Where the VMs and their images live. */
struct vm_host {
    const char *root;  /* the VMs' directory (config vm.dir) */
    const char *cache; /* the image cache */
};

/* vm_host_list() reads at most this many VMs. */
#define VM_HOST_LIST_MAX 256

/* A VM as a list shows it: its definition and, while its supervisor answers, the supervisor's
 * status document (GET /status: state, accel, address, boot, ports, sockets, ...). */
struct vm_info {
    struct vm_def def;
    json_t *status; /* NULL when no supervisor answers */
};
void vm_info_clear(struct vm_info *i);
void vm_infos_free(struct vm_info *v, size_t n);
/* The supervisor's state ("starting", "running", ...), "stopped" without one. */
const char *vm_info_state(const struct vm_info *i);
/* The definition as JSON with "state" and, when supervised, "status" (`ledge vm list --json`). */
json_t *vm_info_json(const struct vm_info *i);

/* The definition of VM name: -EINVAL for a malformed name, -ENOENT when there is no such VM. */
int vm_host_load(const struct vm_host *h, const char *name, struct vm_def *ret, struct lerr *err);
int vm_host_save(const struct vm_host *h, const struct vm_def *d, struct lerr *err);
int vm_host_info(const struct vm_host *h, const char *name, struct vm_info *ret, struct lerr *err);
/* Every VM, sorted by name (at most VM_HOST_LIST_MAX; unreadable definitions are left out). */
int vm_host_list(const struct vm_host *h, struct vm_info **ret, size_t *ret_n, struct lerr *err);

/* The supervisor's status document; -ENOTCONN when none answers (the VM is stopped). */
int vm_host_status(const struct vm_host *h, const char *name, json_t **ret, struct lerr *err);
/* A supervisor answers and its VM is not stopped or failed. */
bool vm_host_running(const struct vm_host *h, const char *name);

/* Define VM d->name from an image: image (a cache key; without arch_given its "amd64-"/"arm64-"
 * prefix sets d->arch, without engine_given its manifest sets d->engine), else one of d->engine
 * built from the ledge .deb deb with ledge-vm-build (minutes; its messages go to stderr), else
 * the newest cached image of d->arch and d->engine. d is validated; on success d->image holds
 * the key used. -EEXIST when the VM exists. */
int vm_host_create(const struct vm_host *h, struct vm_def *d, const char *image, const char *deb,
                   bool arch_given, bool engine_given, struct lerr *err);
/* Start the VM's supervisor (which boots it); 0 also when it was supervised already. */
int vm_host_start(const struct vm_host *h, const char *name, struct lerr *err);
/* Wait (at most timeout_s) until the VM is in state or gave up; the final status in *ret. */
int vm_host_wait(const struct vm_host *h, const char *name, const char *state, int timeout_s,
                 json_t **ret, struct lerr *err);
/* Shut the guest down cleanly (forced after timeout_s) and wait until the supervisor let go of
 * the VM; the final status in *ret (may be NULL). -ENOTCONN when it was not running. */
int vm_host_stop(const struct vm_host *h, const char *name, int timeout_s, json_t **ret,
                 struct lerr *err);
/* Reboot the guest from inside (the supervisor stays). */
int vm_host_reboot(const struct vm_host *h, const char *name, struct lerr *err);
/* Remove the VM and its disk; a running one only with force (stopped first), else -EBUSY. */
int vm_host_delete(const struct vm_host *h, const char *name, bool force, struct lerr *err);
/* Replace the definition of a stopped VM (-EBUSY while it runs) with d: validated, the disk
 * grown when d->disk grew (never shrunk), saved. Takes effect at the next start. */
int vm_host_set(const struct vm_host *h, const struct vm_def *d, struct lerr *err);

/* Port forwards ([ADDR:]HOSTPORT:GUESTPORT[/udp]): the supervisor's list of every forward (hub,
 * manual, automatic) while it runs, -ENOTCONN when stopped (the definition has the rest). */
int vm_host_ports(const struct vm_host *h, const char *name, json_t **ret, struct lerr *err);
/* Add or remove a manual forward: live and saved while the VM runs (*ret_live true), else in the
 * definition for the next start. ret_port (may be NULL) gets the parsed forward. */
int vm_host_port_add(const struct vm_host *h, const char *name, const char *spec,
                     struct vm_port *ret_port, bool *ret_live, struct lerr *err);
int vm_host_port_remove(const struct vm_host *h, const char *name, const char *spec,
                        struct vm_port *ret_port, bool *ret_live, struct lerr *err);

/* Share host_dir (resolved to its real path, written to ret_real when non-NULL) as guest_dir,
 * from the next start; *ret_running says whether that is a restart away. */
int vm_host_share_add(const struct vm_host *h, const char *name, const char *host_dir,
                      const char *guest_dir, bool read_only, char *ret_real, size_t size,
                      bool *ret_running, struct lerr *err);
/* Stop sharing: by guest directory, host directory, or both (either may be NULL, not both). */
int vm_host_share_remove(const struct vm_host *h, const char *name, const char *host_dir,
                         const char *guest_dir, bool *ret_running, struct lerr *err);

/* The last lines lines of one of the VM's logs (VM_FILE_CONSOLE, VM_FILE_VMM_LOG) into *ret
 * (NUL-terminated, *ret_len bytes); -ENOENT when the file does not exist yet. */
int vm_host_log_tail(const struct vm_host *h, const char *name, const char *file, size_t lines,
                     char **ret, size_t *ret_len, struct lerr *err);
