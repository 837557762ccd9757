/* check.h — what running ledge's VMs needs from this host (docs/vm.md "Requirements"): QEMU for
 * the guest's architecture, KVM or software emulation (from the cached probe), memory and disk
 * for the VMs, and for building images debootstrap and, for a foreign architecture, qemu-user
 * through binfmt_misc. `ledge vm check` prints these; `ledge check` can include them. */
#pragma once

#include <jansson.h>

#include "vm/def.h"

struct vm_check_env {
    const char *vmroot;
    const char *cache;
    const char *meminfo;    /* /proc/meminfo */
    const char *path;       /* $PATH to look for programs; NULL = getenv("PATH") */
    const char *kvm_device; /* /dev/kvm */
    const char *binfmt_dir; /* /proc/sys/fs/binfmt_misc */
};

/* One result per check: [{"id", "result": "ok"|"warning"|"error", "message", "fix"?}], for
 * every defined VM (or only d when non-NULL, e.g. before creating it). NULL on ENOMEM. */
json_t *vm_host_checks(const struct vm_check_env *env, const struct vm_def *d);
/* How many VMs are defined under env->vmroot. */
size_t vm_defined_count(const struct vm_check_env *env);
