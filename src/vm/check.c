/* check.c — host requirements of ledge's VMs (check.h). */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "vm/check.h"
#include "vm/qemu.h"

static void add(json_t *out, const char *id, const char *result, const char *fix, const char *fmt,
                ...) _printf_(5, 6);
static void add(json_t *out, const char *id, const char *result, const char *fix, const char *fmt,
                ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *o = json_pack("{s:s, s:s, s:s}", "id", id, "result", result, "message", msg);
    if (o && fix)
        json_object_set_new(o, "fix", json_string(fix));
    json_array_append_new(out, o);
}

static bool in_path(const char *path, const char *prog)
{
    _cleanup_free_ char *copy = strdup(path ? path : "/usr/sbin:/usr/bin:/sbin:/bin");
    for (char *s = copy, *dir; s && (dir = strsep(&s, ":"));) {
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/%s", *dir ? dir : ".", prog);
        if (access(p, X_OK) == 0)
            return true;
    }
    return false;
}

static long long meminfo_kib(const char *path, const char *key)
{
    _cleanup_free_ char *text = NULL;
    if (lfs_read_file(path, 1 << 20, &text, NULL) < 0)
        return -1;
    size_t n = strlen(key);
    for (char *s = text, *line; (line = strsep(&s, "\n"));)
        if (strncmp(line, key, n) == 0 && line[n] == ':')
            return strtoll(line + n + 1, NULL, 10);
    return -1;
}

static uint64_t free_bytes(const char *dir)
{
    char probe[PATH_MAX];
    lstr_copy(probe, sizeof(probe), dir);
    /* The directory may not exist yet: ask its nearest existing parent. */
    for (;;) {
        struct statvfs st;
        if (statvfs(probe, &st) == 0)
            return (uint64_t)st.f_bavail * st.f_frsize;
        char *slash = strrchr(probe, '/');
        if (!slash || slash == probe)
            return statvfs("/", &st) == 0 ? (uint64_t)st.f_bavail * st.f_frsize : 0;
        *slash = 0;
    }
}

/* The defined VMs (or just d). */
static size_t vms(const struct vm_check_env *env, const struct vm_def *d, struct vm_def *out,
                  size_t max)
{
    if (d) {
        out[0] = *d;
        out[0].image = NULL;
        out[0].n_shares = 0;
        return 1;
    }
    size_t n = 0;
    DIR *dir = opendir(env->vmroot);
    if (!dir)
        return 0;
    struct dirent *e;
    while ((e = readdir(dir)) && n < max) {
        char p[PATH_MAX];
        if (vm_name_check(e->d_name, NULL) < 0 ||
            snprintf(p, sizeof(p), "%s/%s/%s", env->vmroot, e->d_name, VM_FILE_DEF) >=
                (int)sizeof(p))
            continue;
        if (vm_def_load(p, &out[n], NULL) == 0)
            n++;
    }
    closedir(dir);
    return n;
}

size_t vm_defined_count(const struct vm_check_env *env)
{
    _cleanup_free_ struct vm_def *list = calloc(64, sizeof(*list));
    return list ? vms(env, NULL, list, 64) : 0;
}

json_t *vm_host_checks(const struct vm_check_env *env, const struct vm_def *d)
{
    json_t *out = json_array();
    if (!out)
        return NULL;
    _cleanup_free_ struct vm_def *list = calloc(64, sizeof(*list));
    if (!list) {
        json_decref(out);
        return NULL;
    }
    size_t n = vms(env, d, list, 64);
    const char *path = env->path ? env->path : getenv("PATH");
    char a[32], b[32];

    /* QEMU for each architecture in use (the host's when there is no VM yet). */
    bool need[2] = {false, false};
    enum vm_arch host = VM_ARCH_AMD64;
    vm_arch_host(&host);
    if (n == 0)
        need[host] = true;
    for (size_t i = 0; i < n; i++)
        need[list[i].arch] = true;
    for (int arch = 0; arch < 2; arch++) {
        if (!need[arch])
            continue;
        const char *bin = vm_qemu_binary((enum vm_arch)arch);
        if (in_path(path, bin))
            add(out, "vm-qemu", "ok", NULL, "%s is installed", bin);
        else
            add(out, "vm-qemu", "error",
                arch == VM_ARCH_ARM64 ? "apt-get install qemu-system-arm"
                                      : "apt-get install qemu-system-x86",
                "%s is not installed: %s guests cannot run", bin, vm_arch_name((enum vm_arch)arch));
    }

    /* Accelerator: KVM per the probe, otherwise emulation (works, slower). */
    const char *kvm = env->kvm_device ? env->kvm_device : "/dev/kvm";
    char cache[PATH_MAX];
    snprintf(cache, sizeof(cache), "%s/kvm-probe-%s.json", env->vmroot, vm_arch_name(host));
    _cleanup_free_ char *probe_text = NULL;
    _cleanup_json_ json_t *probe = NULL;
    if (access(kvm, F_OK) < 0) {
        add(out, "vm-accel", "warning",
            "enable virtualisation (VT-x/AMD-V) in the firmware, or nested virtualisation for a "
            "VM host; guests still run under emulation",
            "no %s: guests run under software emulation (TCG), several times slower", kvm);
    } else if (lfs_read_file(cache, 65536, &probe_text, NULL) == 0 &&
               ljson_parse(probe_text, strlen(probe_text), &probe, NULL) == 0) {
        if (ljson_bool(probe, "usable", false))
            add(out, "vm-accel", "ok", NULL, "KVM works: %s", ljson_str(probe, "detail") ?: "");
        else
            add(out, "vm-accel", "warning",
                "guests run under emulation; `ledge vm set NAME --accel kvm` forces KVM",
                "KVM is not usable here (%s): guests run under software emulation",
                ljson_str(probe, "detail") ?: "?");
    } else {
        add(out, "vm-accel", "ok", NULL,
            "%s exists; the first `ledge vm start` probes whether KVM guests actually run "
            "(nested KVM may hang) and falls back to emulation",
            kvm);
    }

    /* Memory: what the VMs ask for against what is available. */
    uint64_t want_mem = 0, want_disk = 0;
    for (size_t i = 0; i < n; i++) {
        want_mem += list[i].memory;
        want_disk += list[i].disk;
    }
    long long avail = meminfo_kib(env->meminfo ? env->meminfo : "/proc/meminfo", "MemAvailable");
    if (n == 0) {
        want_mem = VM_DEFAULT_MEMORY;
        want_disk = VM_DEFAULT_DISK;
    }
    if (avail < 0) {
        add(out, "vm-memory", "warning", NULL, "cannot read the available memory");
    } else if ((uint64_t)avail * 1024 < want_mem + (256ull << 20)) {
        add(out, "vm-memory", "error", "free memory, or lower the VMs' --memory",
            "%s available; the VMs need %s (plus ~256 MiB for QEMU each)",
            vm_size_format((uint64_t)avail * 1024, a, sizeof(a)),
            vm_size_format(want_mem, b, sizeof(b)));
    } else {
        add(out, "vm-memory", "ok", NULL, "%s available for VMs needing %s",
            vm_size_format((uint64_t)avail * 1024, a, sizeof(a)),
            vm_size_format(want_mem, b, sizeof(b)));
    }

    /* Disk: VM disks are sparse but may fill up to their size. */
    uint64_t vfree = free_bytes(env->vmroot);
    if (vfree < want_disk)
        add(out, "vm-disk", vfree < (2ull << 30) ? "error" : "warning",
            "free space, or give the VMs smaller disks",
            "%s free in %s; the VMs' disks may grow to %s", vm_size_format(vfree, a, sizeof(a)),
            env->vmroot, vm_size_format(want_disk, b, sizeof(b)));
    else
        add(out, "vm-disk", "ok", NULL, "%s free in %s for VM disks of up to %s",
            vm_size_format(vfree, a, sizeof(a)), env->vmroot,
            vm_size_format(want_disk, b, sizeof(b)));

    /* Building images. */
    if (in_path(path, "debootstrap") && in_path(path, "mkfs.ext4") && in_path(path, "cpio"))
        add(out, "vm-build", "ok", NULL,
            "debootstrap, mkfs.ext4 and cpio are installed (images can be built)");
    else
        add(out, "vm-build", "warning", "apt-get install debootstrap e2fsprogs cpio xz-utils",
            "building guest images needs debootstrap, mkfs.ext4 and cpio (importing a built "
            "image with `ledge vm image import` does not)");
    if (need[VM_ARCH_ARM64] && host != VM_ARCH_ARM64) {
        char entry[PATH_MAX];
        snprintf(entry, sizeof(entry), "%s/qemu-aarch64",
                 env->binfmt_dir ? env->binfmt_dir : "/proc/sys/fs/binfmt_misc");
        if (access(entry, F_OK) == 0 || access("/usr/lib/binfmt.d/qemu-aarch64.conf", F_OK) == 0)
            add(out, "vm-build-foreign", "ok", NULL,
                "qemu-user for arm64 is available (arm64 images can be built)");
        else
            add(out, "vm-build-foreign", "warning", "apt-get install qemu-user-static",
                "building arm64 images needs qemu-user-static (binfmt_misc)");
    }
    uint64_t cfree = free_bytes(env->cache);
    if (cfree < (4ull << 30))
        add(out, "vm-cache", "warning", "free space in the image cache",
            "%s free in %s; building an image needs about 4 GiB",
            vm_size_format(cfree, a, sizeof(a)), env->cache);
    for (size_t i = 0; d == NULL && i < n; i++)
        vm_def_free(&list[i]);
    return out;
}
