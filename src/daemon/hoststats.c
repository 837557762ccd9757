/* hoststats.c — host and module numbers for the metrics endpoint, read from /proc and /sys at
 * each scrape (hoststats.h). */
#include "hoststats.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <mntent.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "base/macro.h"

/* The whole of a small file into buf, NUL-terminated: its length, or -errno. */
static ssize_t read_small(const char *path, char *buf, size_t size)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t n = 0;
    while (n + 1 < size) {
        ssize_t r = read(fd, buf + n, size - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    return (ssize_t)n;
}

static int read_u64(const char *path, uint64_t *ret)
{
    char buf[64];
    ssize_t n = read_small(path, buf, sizeof(buf));
    if (n < 0)
        return (int)n;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    if (errno || end == buf)
        return -EINVAL; /* "max" among others */
    *ret = v;
    return 0;
}

/* The value of "key value" in a file of such lines (cpu.stat, memory.stat, meminfo). */
static int read_keyed(const char *path, const char *key, uint64_t *ret)
{
    char buf[8192];
    ssize_t n = read_small(path, buf, sizeof(buf));
    if (n < 0)
        return (int)n;
    size_t klen = strlen(key);
    for (char *line = buf; line && *line;) {
        char *next = strchr(line, '\n');
        if (strncmp(line, key, klen) == 0 && (line[klen] == ' ' || line[klen] == ':')) {
            *ret = strtoull(line + klen + 1 + strspn(line + klen + 1, " :\t"), NULL, 10);
            return 0;
        }
        line = next ? next + 1 : NULL;
    }
    return -ENOENT;
}

int hoststats_uptime(double *ret_s)
{
    char buf[128];
    ssize_t n = read_small("/proc/uptime", buf, sizeof(buf));
    if (n < 0)
        return (int)n;
    *ret_s = strtod(buf, NULL);
    return 0;
}

int hoststats_memory_total(uint64_t *ret_bytes)
{
    uint64_t kb = 0;
    int r = read_keyed("/proc/meminfo", "MemTotal", &kb);
    if (r < 0)
        return r;
    *ret_bytes = kb * 1024;
    return 0;
}

/* SSD or HDD from the block device's queue (a partition's is its disk's, one level up). */
static void disk_kind(const char *name, char *dst, size_t size)
{
    char path[PATH_MAX];
    uint64_t rot = 2;
    snprintf(path, sizeof(path), "/sys/class/block/%s/queue/rotational", name);
    if (read_u64(path, &rot) < 0) {
        snprintf(path, sizeof(path), "/sys/class/block/%s/../queue/rotational", name);
        if (read_u64(path, &rot) < 0)
            rot = 2;
    }
    snprintf(dst, size, "%s", rot == 0 ? "SSD" : rot == 1 ? "HDD" : "Unknown");
}

static bool disk_add(struct host_disk *out, dev_t *devs, size_t *n, size_t max,
                     const struct mntent *me)
{
    struct stat st;
    struct statvfs vfs;
    if (*n >= max || stat(me->mnt_dir, &st) < 0)
        return false;
    for (size_t i = 0; i < *n; i++)
        if (devs[i] == st.st_dev)
            return false;
    if (statvfs(me->mnt_dir, &vfs) < 0 || vfs.f_blocks == 0)
        return false;
    struct host_disk *d = &out[*n];
    const char *base = strrchr(me->mnt_fsname, '/');
    snprintf(d->name, sizeof(d->name), "%s", base ? base + 1 : me->mnt_fsname);
    snprintf(d->fs_type, sizeof(d->fs_type), "%s", me->mnt_type);
    disk_kind(d->name, d->kind, sizeof(d->kind));
    d->available_bytes = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    d->total_bytes = (uint64_t)vfs.f_blocks * vfs.f_frsize;
    devs[(*n)++] = st.st_dev;
    return true;
}

/* Is dir (a mount point) path itself or one of its parents? */
static size_t mount_prefix(const char *dir, const char *path)
{
    size_t n = strlen(dir);
    if (strcmp(dir, "/") == 0)
        return 1;
    return strncmp(dir, path, n) == 0 && (path[n] == '/' || path[n] == '\0') ? n : 0;
}

size_t hoststats_disks(const char *state_dir, struct host_disk *out, size_t max)
{
    if (max == 0)
        return 0;
    _cleanup_fclose_ FILE *f = setmntent("/proc/self/mounts", "re");
    if (!f)
        return 0;
    dev_t devs[64];
    if (max > ARRAY_SIZE(devs))
        max = ARRAY_SIZE(devs);
    char state[PATH_MAX] = "";
    if (!state_dir || !realpath(state_dir, state))
        state[0] = '\0';
    /* the mount holding the state directory: the longest mount point that is its prefix
     * (compared as text, so no other mount point is stat'ed) */
    struct mntent best = {0};
    char best_fs[256] = "", best_dir[PATH_MAX] = "", best_type[32] = "";
    size_t best_len = 0, n = 0;
    struct mntent me_buf;
    char line[4096];
    struct mntent *me;
    while ((me = getmntent_r(f, &me_buf, line, sizeof(line)))) {
        if (state[0]) {
            size_t l = mount_prefix(me->mnt_dir, state);
            if (l && l >= best_len) {
                best_len = l;
                snprintf(best_fs, sizeof(best_fs), "%s", me->mnt_fsname);
                snprintf(best_dir, sizeof(best_dir), "%s", me->mnt_dir);
                snprintf(best_type, sizeof(best_type), "%s", me->mnt_type);
            }
        }
        if (strncmp(me->mnt_fsname, "/dev/", 5) == 0 && strncmp(me->mnt_fsname, "/dev/loop", 9))
            disk_add(out, devs, &n, max, me);
    }
    if (best_len) {
        best.mnt_fsname = best_fs;
        best.mnt_dir = best_dir;
        best.mnt_type = best_type;
        disk_add(out, devs, &n, max, &best);
    }
    return n;
}

/* A v1 hierarchy's controllers from its super options ("rw,cpu,cpuacct"): which of ours. */
static void mount_v1(struct cgroup_mounts *cm, const char *opts, const char *dir)
{
    static const struct {
        const char *name;
        size_t off;
    } ctl[] = {
        {"memory", offsetof(struct cgroup_mounts, memory)},
        {"cpuacct", offsetof(struct cgroup_mounts, cpuacct)},
        {"pids", offsetof(struct cgroup_mounts, pids)},
    };
    for (const char *p = opts; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        for (size_t i = 0; i < ARRAY_SIZE(ctl); i++)
            if (strlen(ctl[i].name) == len && strncmp(p, ctl[i].name, len) == 0) {
                char *dst = (char *)cm + ctl[i].off;
                if (!dst[0])
                    snprintf(dst, sizeof(cm->memory), "%s", dir);
            }
        p = end ? end + 1 : NULL;
    }
}

/* mountinfo escapes blanks in paths as \040 and so on; a cgroup mount point with one is not
 * ours to guess at, so it is kept only when it has none. */
int hoststats_cgroup_mounts(const char *mountinfo, struct cgroup_mounts *ret)
{
    _cleanup_fclose_ FILE *f = fopen(mountinfo, "re");
    if (!f)
        return -errno;
    struct cgroup_mounts cm = {0};
    char line[4096];
    while (fgets(line, sizeof(line), f)) {
        /* id parent maj:min root mount-point options [optional...] - fstype source super */
        char *fields[6] = {0}, *save = NULL, *tok = strtok_r(line, " \n", &save);
        size_t n = 0;
        while (tok && n < 5) {
            fields[n++] = tok;
            tok = strtok_r(NULL, " \n", &save);
        }
        while (tok && strcmp(tok, "-") != 0)
            tok = strtok_r(NULL, " \n", &save);
        char *fstype = tok ? strtok_r(NULL, " \n", &save) : NULL;
        char *source = fstype ? strtok_r(NULL, " \n", &save) : NULL;
        char *super = source ? strtok_r(NULL, " \n", &save) : NULL;
        if (n < 5 || !fstype || strchr(fields[4], '\\') || strlen(fields[4]) >= sizeof(cm.v2))
            continue;
        if (strcmp(fstype, "cgroup2") == 0 && !cm.v2[0])
            snprintf(cm.v2, sizeof(cm.v2), "%s", fields[4]);
        else if (strcmp(fstype, "cgroup") == 0 && super)
            mount_v1(&cm, super, fields[4]);
    }
    *ret = cm;
    return 0;
}

/* The cgroup paths of a pid (/proc/<pid>/cgroup): the unified one ("0::/...") and those of the
 * v1 controllers read here. */
struct pid_cgroups {
    char v2[512], memory[512], cpuacct[512], pids[512];
};

static int pid_cgroups(const char *proc, int pid, struct pid_cgroups *ret)
{
    char path[PATH_MAX], buf[8192];
    snprintf(path, sizeof(path), "%s/%d/cgroup", proc, pid);
    ssize_t n = read_small(path, buf, sizeof(buf));
    if (n < 0)
        return (int)n;
    struct pid_cgroups pc = {0};
    for (char *line = buf; line && *line;) {
        char *next = strchr(line, '\n');
        if (next)
            *next = '\0';
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (c2 && c2[1] == '/' && !strstr(c2 + 1, "..") && strlen(c2 + 1) < sizeof(pc.v2)) {
            const char *cgpath = c2 + 1;
            *c1 = *c2 = '\0';
            const char *ctls = c1 + 1;
            if (strcmp(line, "0") == 0 && !ctls[0])
                snprintf(pc.v2, sizeof(pc.v2), "%s", cgpath);
            for (const char *p = ctls; *p;) {
                size_t len = strcspn(p, ",");
                char *dst = len == 6 && !strncmp(p, "memory", 6)    ? pc.memory
                            : len == 7 && !strncmp(p, "cpuacct", 7) ? pc.cpuacct
                            : len == 4 && !strncmp(p, "pids", 4)    ? pc.pids
                                                                    : NULL;
                if (dst)
                    snprintf(dst, sizeof(pc.v2), "%s", cgpath);
                p += len;
                if (*p == ',')
                    p++;
            }
        }
        line = next ? next + 1 : NULL;
    }
    *ret = pc;
    return 0;
}

/* "<mount><cgroup>/<file>", when the cgroup is the container's (its path names its id). */
static bool cg_file(char *dst, size_t size, const char *mount, const char *cg, const char *id,
                    const char *file)
{
    if (!mount[0] || !cg[0] || !strstr(cg, id))
        return false;
    int n = snprintf(dst, size, "%s%s/%s", mount, strcmp(cg, "/") == 0 ? "" : cg, file);
    return n > 0 && (size_t)n < size;
}

/* Sum of the "<key>=N" fields of io.stat (one line per device). */
static int io_stat_v2(const char *path, uint64_t *ret_read, uint64_t *ret_write)
{
    char buf[8192];
    if (read_small(path, buf, sizeof(buf)) < 0)
        return -ENOENT;
    uint64_t rd = 0, wr = 0;
    for (char *p = buf; (p = strpbrk(p, "rw"));) {
        if (strncmp(p, "rbytes=", 7) == 0)
            rd += strtoull(p + 7, &p, 10);
        else if (strncmp(p, "wbytes=", 7) == 0)
            wr += strtoull(p + 7, &p, 10);
        else
            p++;
    }
    *ret_read = rd;
    *ret_write = wr;
    return 0;
}

#define MAX_PROCS_READ 256 /* a module's processes whose I/O is summed, at most */

/* The storage-layer bytes (/proc/<pid>/io read_bytes, write_bytes) of the processes in a
 * cgroup (its cgroup.procs), summed: v1's per-cgroup counters will not do (blkio.throttle's count
 * only the I/O of cgroups with a limit on recent kernels, and never the page cache's writeback,
 * which v1 charges to the root). Bytes of processes that exited are not in it. */
static int procs_io(const char *proc, const char *procs_path, uint64_t *ret_read,
                    uint64_t *ret_write)
{
    _cleanup_fclose_ FILE *f = fopen(procs_path, "re");
    if (!f)
        return -errno;
    uint64_t rd = 0, wr = 0;
    char path[PATH_MAX];
    int pid, n = 0;
    while (n < MAX_PROCS_READ && fscanf(f, "%d", &pid) == 1) {
        uint64_t r = 0, w = 0;
        snprintf(path, sizeof(path), "%s/%d/io", proc, pid);
        if (read_keyed(path, "read_bytes", &r) == 0 && read_keyed(path, "write_bytes", &w) == 0) {
            rd += r;
            wr += w;
        }
        n++;
    }
    *ret_read = rd;
    *ret_write = wr;
    return 0;
}

/* The container's cgroup numbers, each from the unified hierarchy when its file is there and
 * else from the v1 controller's (hybrid hosts: the unified hierarchy has no controllers, or only
 * some). -ENOENT when the memory numbers of neither are the container's. */
static int cgroup_usage(const struct cgroup_mounts *cm, const char *proc,
                        const struct pid_cgroups *pc, const char *id, uint64_t host_mem,
                        struct module_usage *u)
{
    char path[PATH_MAX];
    uint64_t v = 0;
    if (cg_file(path, sizeof(path), cm->v2, pc->v2, id, "memory.current") &&
        read_u64(path, &u->memory_bytes) == 0) {
        cg_file(path, sizeof(path), cm->v2, pc->v2, id, "memory.stat");
        /* what `docker stats` shows: the page cache that can go first is not counted */
        if (read_keyed(path, "inactive_file", &v) == 0 && v <= u->memory_bytes)
            u->memory_bytes -= v;
        cg_file(path, sizeof(path), cm->v2, pc->v2, id, "memory.max");
        if (read_u64(path, &u->memory_limit) < 0)
            u->memory_limit = 0;
        u->source = MODULE_USAGE_CGROUP_V2;
    } else if (cg_file(path, sizeof(path), cm->memory, pc->memory, id, "memory.usage_in_bytes") &&
               read_u64(path, &u->memory_bytes) == 0) {
        cg_file(path, sizeof(path), cm->memory, pc->memory, id, "memory.stat");
        /* docker stats on v1: usage less total_inactive_file (the hierarchy's) */
        if (read_keyed(path, "total_inactive_file", &v) == 0 && v <= u->memory_bytes)
            u->memory_bytes -= v;
        cg_file(path, sizeof(path), cm->memory, pc->memory, id, "memory.limit_in_bytes");
        /* v1's "no limit" is a huge number (PAGE_COUNTER_MAX pages) */
        if (read_u64(path, &u->memory_limit) < 0 || (host_mem && u->memory_limit >= host_mem))
            u->memory_limit = 0;
        u->source = MODULE_USAGE_CGROUP_V1;
    } else {
        return -ENOENT;
    }

    if (cg_file(path, sizeof(path), cm->v2, pc->v2, id, "cpu.stat") &&
        read_keyed(path, "usage_usec", &u->cpu_us) == 0)
        ;
    else if (cg_file(path, sizeof(path), cm->cpuacct, pc->cpuacct, id, "cpuacct.usage") &&
             read_u64(path, &v) == 0)
        u->cpu_us = v / 1000; /* nanoseconds */
    else
        u->cpu_us = 0;

    if (!(cg_file(path, sizeof(path), cm->v2, pc->v2, id, "pids.current") &&
          read_u64(path, &u->pids) == 0) &&
        !(cg_file(path, sizeof(path), cm->pids, pc->pids, id, "pids.current") &&
          read_u64(path, &u->pids) == 0))
        u->pids = 0;

    /* v2 with the io controller: io.stat (writeback included); else the processes' own */
    bool procs = u->source == MODULE_USAGE_CGROUP_V2
                     ? cg_file(path, sizeof(path), cm->v2, pc->v2, id, "cgroup.procs")
                     : cg_file(path, sizeof(path), cm->memory, pc->memory, id, "cgroup.procs");
    char io[PATH_MAX];
    if ((cg_file(io, sizeof(io), cm->v2, pc->v2, id, "io.stat") &&
         io_stat_v2(io, &u->disk_read_bytes, &u->disk_write_bytes) == 0) ||
        (procs && procs_io(proc, path, &u->disk_read_bytes, &u->disk_write_bytes) == 0))
        u->has_disk = true;
    return 0;
}

/* Bytes in and out of the pid's network namespace, over its interfaces but lo, when it is not
 * ledged's own (a process module or a host-network container shares the host's: its numbers
 * would be the host's). */
static int net_usage(const char *proc, int pid, struct module_usage *u)
{
    char path[PATH_MAX], mine[64], theirs[64], buf[16384];
    snprintf(path, sizeof(path), "%s/self/ns/net", proc);
    ssize_t a = readlink(path, mine, sizeof(mine) - 1);
    snprintf(path, sizeof(path), "%s/%d/ns/net", proc, pid);
    ssize_t b = readlink(path, theirs, sizeof(theirs) - 1);
    if (a <= 0 || b <= 0)
        return -ENOENT;
    mine[a] = theirs[b] = '\0';
    if (strcmp(mine, theirs) == 0)
        return -EEXIST;
    snprintf(path, sizeof(path), "%s/%d/net/dev", proc, pid);
    if (read_small(path, buf, sizeof(buf)) < 0)
        return -ENOENT;
    uint64_t rx = 0, tx = 0;
    for (char *line = buf; line && *line;) {
        char *next = strchr(line, '\n');
        if (next)
            *next = '\0';
        char *colon = strchr(line, ':');
        if (colon) {
            *colon = '\0';
            const char *name = line + strspn(line, " ");
            unsigned long long f[9];
            /* rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes ... */
            if (strcmp(name, "lo") != 0 &&
                sscanf(colon + 1, "%llu %llu %llu %llu %llu %llu %llu %llu %llu", &f[0], &f[1],
                       &f[2], &f[3], &f[4], &f[5], &f[6], &f[7], &f[8]) == 9) {
                rx += f[0];
                tx += f[8];
            }
        }
        line = next ? next + 1 : NULL;
    }
    u->net_in_bytes = rx;
    u->net_out_bytes = tx;
    u->has_net = true;
    return 0;
}

static int process_usage(const char *proc, int pid, struct module_usage *u)
{
    char path[PATH_MAX], buf[1024];
    snprintf(path, sizeof(path), "%s/%d/statm", proc, pid);
    if (read_small(path, buf, sizeof(buf)) < 0)
        return -ENOENT;
    unsigned long long size = 0, resident = 0;
    if (sscanf(buf, "%llu %llu", &size, &resident) != 2)
        return -EINVAL;
    long page = sysconf(_SC_PAGESIZE);
    u->memory_bytes = resident * (uint64_t)(page > 0 ? page : 4096);
    snprintf(path, sizeof(path), "%s/%d/stat", proc, pid);
    if (read_small(path, buf, sizeof(buf)) < 0)
        return -ENOENT;
    /* after the command's closing parenthesis: state is field 3, utime 14, stime 15,
     * num_threads 20 */
    const char *p = strrchr(buf, ')');
    if (!p)
        return -EINVAL;
    unsigned long long utime = 0, stime = 0;
    long long threads = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %lld",
               &utime, &stime, &threads) != 3)
        return -EINVAL;
    long hz = sysconf(_SC_CLK_TCK);
    u->cpu_us = (utime + stime) * 1000000ull / (uint64_t)(hz > 0 ? hz : 100);
    u->pids = threads > 0 ? (uint64_t)threads : 0;
    u->memory_limit = 0;
    u->source = MODULE_USAGE_PROCESS;
    /* the bytes the program had read from and written to the storage layer */
    snprintf(path, sizeof(path), "%s/%d/io", proc, pid);
    if (read_keyed(path, "read_bytes", &u->disk_read_bytes) == 0 &&
        read_keyed(path, "write_bytes", &u->disk_write_bytes) == 0)
        u->has_disk = true;
    return 0;
}

int hoststats_module(const struct cgroup_mounts *cm, const char *proc, int pid,
                     const char *container_id, uint64_t host_mem, struct module_usage *ret)
{
    if (pid <= 0)
        return -ENOENT;
    struct module_usage u = {0};
    struct pid_cgroups pc;
    int r = -ENOENT;
    if (cm && container_id && container_id[0] && pid_cgroups(proc, pid, &pc) == 0)
        r = cgroup_usage(cm, proc, &pc, container_id, host_mem, &u);
    if (r < 0 && (r = process_usage(proc, pid, &u)) < 0)
        return r;
    net_usage(proc, pid, &u);
    *ret = u;
    return 0;
}

const char *hoststats_usage_source(enum module_usage_source s)
{
    switch (s) {
    case MODULE_USAGE_CGROUP_V2:
        return "cgroup_v2";
    case MODULE_USAGE_CGROUP_V1:
        return "cgroup_v1";
    case MODULE_USAGE_PROCESS:
        return "process";
    }
    return "unknown";
}
