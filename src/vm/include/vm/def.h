/* def.h — a VM's definition (vm.json in its directory): resources, architecture, accelerator,
 * autostart, port forwards and shared folders; parsing, validation and the per-VM paths. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/errors.h"

#define VM_NAME_MAX 32
#define VM_MAX_PORTS 64
#define VM_MAX_SHARES 16
#define VM_MIN_MEMORY (256ull << 20)
#define VM_MAX_MEMORY (1ull << 40)
#define VM_MIN_DISK (2ull << 30)
#define VM_MAX_DISK (64ull << 40)
#define VM_MAX_CPUS 64
#define VM_DEFAULT_MEMORY (1024ull << 20) /* the seeds' minimums: 1 GiB, 1 vCPU, 10 GiB */
#define VM_DEFAULT_CPUS 1
#define VM_DEFAULT_DISK (10ull << 30)
#define VM_DEFAULT_BOOT_TIMEOUT_S 180
#define VM_DEFAULT_HUB_PORT 8883

/* Files in a VM's directory. */
#define VM_FILE_DEF "vm.json"
#define VM_FILE_DISK "disk.img"
#define VM_FILE_KERNEL "kernel"
#define VM_FILE_INITRD "initrd.img"
/* The data disk's virtio serial: the guest checks it before formatting vdb. */
#define VM_DATA_SERIAL "ledge-data"
#define VM_FILE_DATA "data.img" /* the guest's state (/var/lib/ledge, docker, containerd) */
#define VM_FILE_CONSOLE "console.log"
#define VM_FILE_VMM_LOG "vmm.log"
#define VM_FILE_STATE "state.json"   /* written by the supervisor */
#define VM_FILE_LOCK "vm.lock"       /* flock: held by the supervisor while it runs */
#define VM_SOCK_CTL "ctl.sock"       /* supervisor control API (HTTP+JSON) */
#define VM_SOCK_API "api.sock"       /* the guest's management API, relayed */
#define VM_SOCK_EXEC "exec.sock"     /* exec streams (frame protocol) */
#define VM_SOCK_DOCKER "docker.sock" /* the guest's Docker Engine API, relayed */
#define VM_SOCK_QMP "qmp.sock"       /* QEMU monitor */
#define VM_SOCK_CHAN "chan.sock"     /* QEMU's end of the virtio-serial channel */

enum vm_arch {
    VM_ARCH_AMD64,
    VM_ARCH_ARM64,
};

/* The container engine the guest runs (its image's variant, docs/vm.md "Guest images"). */
enum vm_engine {
    VM_ENGINE_DOCKER, /* Moby (docker.io) in the guest, ledged on engine.type docker */
    VM_ENGINE_OCI,    /* ledge's oci engine on crun: no dockerd, containerd or shims */
};

enum vm_accel {
    VM_ACCEL_AUTO, /* KVM when a probe boot shows it works, TCG otherwise */
    VM_ACCEL_KVM,
    VM_ACCEL_TCG,
};

struct vm_port {
    char proto[4]; /* "tcp" or "udp" */
    char addr[64]; /* host address to bind: "127.0.0.1" by default, "0.0.0.0" for all */
    uint16_t host_port;
    uint16_t guest_port;
};

struct vm_share {
    char tag[16];    /* 9p mount tag: "share0".. */
    char *host_dir;  /* absolute */
    char *guest_dir; /* absolute */
    bool read_only;
};

struct vm_def {
    char name[VM_NAME_MAX + 1];
    enum vm_arch arch;
    enum vm_accel accel;
    enum vm_engine engine; /* vm.json "engine"; absent (VMs made before variants): docker */
    uint64_t memory;       /* bytes */
    int cpus;
    uint64_t disk; /* bytes */
    bool autostart;
    int boot_timeout_s; /* no agent after this long: the boot is hung, reset and retry */
    uint16_t hub_port;  /* host port forwarded to the guest hub's MQTT/TLS port; 0 = none */
    char *image;        /* the image the disk was made from ("amd64-1a2b...") */
    bool data_disk;     /* VM_FILE_DATA holds the guest's state (VMs made before it: false) */
    struct vm_port ports[VM_MAX_PORTS];
    size_t n_ports;
    struct vm_share shares[VM_MAX_SHARES];
    size_t n_shares;
};

/* 1-32 of [a-z0-9-], starting with a letter or digit. */
int vm_name_check(const char *name, struct lerr *err);

const char *vm_arch_name(enum vm_arch a);            /* "amd64", "arm64" */
const char *vm_arch_uname(enum vm_arch a);           /* "x86_64", "aarch64" */
int vm_arch_parse(const char *s, enum vm_arch *ret); /* also x86_64, aarch64 */
/* The architecture of this host, or -ENOTSUP. */
int vm_arch_host(enum vm_arch *ret);
const char *vm_accel_name(enum vm_accel a);
int vm_accel_parse(const char *s, enum vm_accel *ret);
const char *vm_engine_name(enum vm_engine e);            /* "docker", "oci" */
int vm_engine_parse(const char *s, enum vm_engine *ret); /* -EINVAL on anything else */

/* "1024M", "1G", "10GiB", "512m", bare bytes; -EINVAL on anything else, -ERANGE on overflow. */
int vm_size_parse(const char *s, uint64_t *ret);
/* "1.0 GiB" style, into buf. */
const char *vm_size_format(uint64_t bytes, char *buf, size_t size);

/* Defaults for a new VM named name (validated). */
int vm_def_init(struct vm_def *d, const char *name, struct lerr *err);
void vm_def_free(struct vm_def *d);
/* Check ranges; message names the setting ("memory: at least 256 MiB"). */
int vm_def_validate(const struct vm_def *d, struct lerr *err);

int vm_def_from_json(const json_t *j, struct vm_def *ret, struct lerr *err);
json_t *vm_def_to_json(const struct vm_def *d);
int vm_def_load(const char *path, struct vm_def *ret, struct lerr *err);
int vm_def_save(const char *path, const struct vm_def *d);

/* Port specs: "HOST:GUEST", "ADDR:HOST:GUEST", "PORT" (same on both sides), each with an optional
 * "/tcp" or "/udp". */
int vm_port_parse(const char *spec, struct vm_port *ret, struct lerr *err);
/* "127.0.0.1:8080->80/tcp" */
const char *vm_port_format(const struct vm_port *p, char *buf, size_t size);
bool vm_port_same_host_side(const struct vm_port *a, const struct vm_port *b);
/* -EEXIST when the host side is taken, -ENOSPC beyond VM_MAX_PORTS. */
int vm_def_add_port(struct vm_def *d, const struct vm_port *p, struct lerr *err);
/* Remove by host side (proto, addr, host port); -ENOENT when absent. */
int vm_def_remove_port(struct vm_def *d, const struct vm_port *p, struct lerr *err);

/* Host dir must exist and be a directory; paths absolute, normalised; guest dir unique. */
int vm_def_add_share(struct vm_def *d, const char *host_dir, const char *guest_dir, bool read_only,
                     struct lerr *err);
/* Remove by guest dir, or by host dir when guest_dir is NULL. */
int vm_def_remove_share(struct vm_def *d, const char *host_dir, const char *guest_dir,
                        struct lerr *err);

/* A port a deployed module publishes (HostConfig.PortBindings with a fixed host port on all of
 * the guest's addresses): forwarded from the same host port on 127.0.0.1. */
struct vm_auto_port {
    struct vm_port port;
    char module[64];
};
/* The published ports of a deployment manifest (GET /deployment), at most max. Modules whose
 * createOptions do not parse are skipped. Returns the count. */
size_t vm_deployment_ports(const json_t *manifest, struct vm_auto_port *out, size_t max);

/* JSON of the shares as the guest agent receives them in the host HELLO. */
json_t *vm_def_shares_json(const struct vm_def *d);
