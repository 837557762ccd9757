/* qemu.h — QEMU for ledge's VMs: the command line for a definition (direct kernel boot, virtio
 * disk, user-mode network, the virtio-serial channel, 9p shares, QMP on a unix socket), the
 * monitor commands for live port forwards, and QMP message helpers. Pure: no I/O. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "base/errors.h"
#include "base/str.h"
#include "vm/def.h"

/* The virtio-serial port name the guest agent opens (/sys/class/virtio-ports/ * /name). */
#define VM_CHANNEL_NAME "org.ledge.channel.0"
/* The guest reaches the host at this slirp address and name. */
#define VM_GUEST_ADDR "10.0.2.15"
#define VM_HOST_ADDR "10.0.2.2"
#define VM_HOST_ALIAS "host.ledge.internal"
#define VM_NETDEV_ID "net0"

struct vm_qemu_paths {
    const char *dir;     /* the VM's directory: disk, kernel, initrd, logs */
    const char *run_dir; /* sockets and pid file (may equal dir) */
};

/* The translation cache under emulation (QEMU's tb-size), $LEDGE_VM_TCG_CACHE_MB overriding. */
#define VM_TCG_CACHE_MB_DEFAULT 256
int vm_qemu_tcg_cache_mb(void);

/* The QEMU binary for an architecture: "qemu-system-x86_64", "qemu-system-aarch64". */
const char *vm_qemu_binary(enum vm_arch arch);

/* The kernel command line for the guest. */
char *vm_qemu_cmdline(const struct vm_def *d, bool kvm);

/* argv for QEMU (binary first). kvm selects the accelerator; probe boots the kernel with
 * "ledge.probe" (the initramfs prints a marker and powers off) and no disk, network or channel. */
int vm_qemu_argv(const struct vm_def *d, const struct vm_qemu_paths *p, bool kvm, bool probe,
                 struct lstrv *ret, struct lerr *err);

/* The marker the initramfs prints on the console in probe mode. */
#define VM_PROBE_MARKER "LEDGE-PROBE-OK"

/* Is KVM usable for this VM? Nested KVM can hang instead of failing, so the answer comes from a
 * bounded test boot of the VM's own kernel and initramfs in probe mode, cached per host boot in
 * <vmroot>/kvm-probe-<arch>.json. Never fails: the reason is in detail. */
struct vm_kvm_probe {
    bool usable;
    bool cached;
    long long ms; /* how long the probe boot took (or ran before giving up) */
    char detail[256];
};
void vm_kvm_probe(const char *vmroot, const struct vm_def *d, const struct vm_qemu_paths *p,
                  int timeout_ms, struct vm_kvm_probe *ret);

/* HMP lines for a port forward ("hostfwd_add net0 tcp:127.0.0.1:8080-:80"). */
char *vm_qemu_hostfwd_add(const struct vm_port *p);
char *vm_qemu_hostfwd_remove(const struct vm_port *p);

/* QMP: {"execute": cmd, "arguments": args (stolen, may be NULL), "id": id} as one line. */
char *vm_qmp_command(const char *cmd, json_t *args, long id);
/* A HMP command wrapped in human-monitor-command. */
char *vm_qmp_hmp(const char *line, long id);

enum vm_qmp_kind {
    VM_QMP_GREETING,
    VM_QMP_RETURN,
    VM_QMP_ERROR,
    VM_QMP_EVENT,
};
struct vm_qmp_msg {
    enum vm_qmp_kind kind;
    long id;            /* RETURN/ERROR: the command id, -1 when absent */
    const char *event;  /* EVENT: "SHUTDOWN", "RESET", ... */
    const json_t *data; /* EVENT data, RETURN value */
    const char *error;  /* ERROR desc */
};
/* Classify one parsed QMP message (borrowed from j). -EINVAL when it is none of the kinds. */
int vm_qmp_parse(const json_t *j, struct vm_qmp_msg *ret);
