/* hoststats.h — what the metrics endpoint reads from the host for IoT Edge's edgeAgent_* host and
 * module families (docs/metrics.md): uptime, memory, disks, and a module's memory, CPU time and
 * processes, disk and network bytes from its cgroup (v2, v1 or a hybrid of both) or, where it has
 * none of its own, from its process. Each call reads a few small files under /proc and /sys;
 * nothing is cached but where the hierarchies are mounted. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct host_disk {
    char name[64];    /* the device's name: "sda1", "nvme0n1p2", "vg-root" */
    char fs_type[32]; /* "ext4" */
    char kind[8];     /* "SSD", "HDD" or "Unknown" (the device's queue/rotational) */
    uint64_t available_bytes, total_bytes;
};

/* Seconds since the host booted. */
int hoststats_uptime(double *ret_s);
/* MemTotal of /proc/meminfo, in bytes. */
int hoststats_memory_total(uint64_t *ret_bytes);
/* The mounted block devices (a source under /dev/, each device once) and the file system that
 * holds state_dir whatever its source: at most max, written to out; returns how many. */
size_t hoststats_disks(const char *state_dir, struct host_disk *out, size_t max);

/* Where the cgroup hierarchies are mounted (from /proc/self/mountinfo): the unified (v2) one, and
 * the v1 hierarchies of the controllers read here. A v2 host has v2 only; a v1 host the others;
 * a hybrid host (systemd's) both, the unified one with few or no controllers. "" when none. */
struct cgroup_mounts {
    char v2[256], memory[256], cpuacct[256], pids[256];
};
int hoststats_cgroup_mounts(const char *mountinfo, struct cgroup_mounts *ret);

enum module_usage_source {
    MODULE_USAGE_PROCESS,   /* the program's own numbers (/proc/<pid>) */
    MODULE_USAGE_CGROUP_V2, /* the container's cgroup in the unified hierarchy */
    MODULE_USAGE_CGROUP_V1, /* the container's cgroups of the v1 controllers */
};

struct module_usage {
    uint64_t memory_bytes; /* cgroup: usage less inactive page cache; process: its RSS */
    uint64_t memory_limit; /* cgroup: its memory limit when set; 0 when none or not known */
    uint64_t cpu_us;       /* CPU time used so far */
    uint64_t pids;         /* cgroup: pids.current; process: its threads */
    uint64_t disk_read_bytes, disk_write_bytes; /* io.stat; else its processes' /proc/<pid>/io */
    uint64_t net_in_bytes, net_out_bytes;       /* its network namespace's, lo excepted */
    bool has_disk, has_net;
    enum module_usage_source source;
};

/* A module's usage from its host pid: its cgroup's when the pid's cgroup paths name
 * container_id (docker, Podman and oci containers each have theirs), each number from the
 * unified hierarchy when it has it, else from the v1 controller; else the process's own
 * (process modules share ledged's cgroup). Network bytes only when the pid has a network
 * namespace of its own. proc is "/proc" (a test's tree otherwise); host_mem tells v1's
 * "no limit" from a limit. -ENOENT when the process is gone. */
int hoststats_module(const struct cgroup_mounts *cm, const char *proc, int pid,
                     const char *container_id, uint64_t host_mem, struct module_usage *ret);
/* "cgroup_v2", "cgroup_v1", "process" */
const char *hoststats_usage_source(enum module_usage_source s);
