/* vm.c — the vm group: what running ledge's VMs needs from this host (docs/vm.md
 * "Requirements"): QEMU for the guests' architectures, KVM or software emulation (from the
 * cached probe), memory and disk for the VMs, and for building images debootstrap and, for a
 * foreign architecture, qemu-user through binfmt_misc. The VMs are those defined under the VMs'
 * directory, or the one `ledge vm check NAME` names; with none the group is skipped, except for
 * `ledge vm check`, which asks about the host's architecture and the default sizes. */
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
#include "check-internal.h"
#include "vm/def.h"
#include "vm/paths.h"
#include "vm/qemu.h"

/* Free space in the image cache below this: a warning (a build needs about this much). */
#define VM_CACHE_MIN_FREE (4ull << 30)
/* Below this in the VMs' directory a shortfall is an error, above it a warning (disks are
 * sparse: they fill up only as the guests write). */
#define VM_DISK_ERROR_FREE (2ull << 30)
/* What QEMU itself takes beside a guest's memory. */
#define VM_QEMU_OVERHEAD (256ull << 20)

static const char *vm_dir(const struct check_ctx *ctx)
{
    if (ctx->in->vm_dir)
        return ctx->in->vm_dir;
    return ctx->cfg->vm.dir ? ctx->cfg->vm.dir : vm_dir_default();
}

static const char *vm_cache(const struct check_ctx *ctx)
{
    return ctx->in->vm_cache ? ctx->in->vm_cache : vm_cache_dir_default();
}

/* The VMs in question, read once per run: the one asked about, or every one defined. */
static void vms_load(struct check_ctx *ctx)
{
    if (ctx->vms_loaded)
        return;
    ctx->vms_loaded = true;
    if (ctx->in->vm_def) {
        ctx->vms = ctx->in->vm_def; /* borrowed */
        ctx->n_vms = 1;
        return;
    }
    struct vm_def *list = calloc(CHECK_VMS_MAX, sizeof(*list));
    if (!list)
        return;
    ctx->owned_vms = list;
    ctx->vms = list;
    DIR *dir = opendir(vm_dir(ctx));
    struct dirent *e;
    while (dir && (e = readdir(dir)) && ctx->n_vms < CHECK_VMS_MAX) {
        char p[PATH_MAX];
        if (vm_name_check(e->d_name, NULL) < 0 ||
            vm_path(p, sizeof(p), vm_dir(ctx), e->d_name, VM_FILE_DEF) < 0)
            continue;
        if (vm_def_load(p, &list[ctx->n_vms], NULL) == 0)
            ctx->n_vms++;
    }
    if (dir)
        closedir(dir);
}

void check_vms_free(struct check_ctx *ctx)
{
    for (size_t i = 0; ctx->owned_vms && i < ctx->n_vms; i++)
        vm_def_free(&ctx->owned_vms[i]);
    free(ctx->owned_vms);
    ctx->owned_vms = NULL;
    ctx->vms = NULL;
    ctx->n_vms = 0;
}

bool check_vms_apply(struct check_ctx *ctx, struct check_report *rep)
{
    vms_load(ctx);
    if (ctx->n_vms || ctx->in->vm_always)
        return true;
    check_report_skip(rep, "no VMs are defined in %s (`ledge vm create`)", vm_dir(ctx));
    return false;
}

/* Which architectures the VMs use (the host's when there is none). */
static void archs_needed(struct check_ctx *ctx, bool need[2], enum vm_arch *ret_host)
{
    enum vm_arch host = VM_ARCH_AMD64;
    vm_arch_host(&host);
    need[0] = need[1] = false;
    if (ctx->n_vms == 0)
        need[host] = true;
    for (size_t i = 0; i < ctx->n_vms; i++)
        need[ctx->vms[i].arch] = true;
    *ret_host = host;
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

static const char *search_path(const struct check_ctx *ctx)
{
    return ctx->in->path ? ctx->in->path : getenv("PATH");
}

void check_vm_qemu(struct check_ctx *ctx, struct check_report *rep)
{
    bool need[2];
    enum vm_arch host;
    archs_needed(ctx, need, &host);
    _cleanup_lbuf_ struct lbuf found = LBUF_INIT, missing = LBUF_INIT, fix = LBUF_INIT;
    for (int arch = 0; arch < 2; arch++) {
        if (!need[arch])
            continue;
        const char *bin = vm_qemu_binary((enum vm_arch)arch);
        if (in_path(search_path(ctx), bin)) {
            lbuf_printf(&found, "%s%s", found.len ? ", " : "", bin);
            continue;
        }
        lbuf_printf(&missing, "%s%s is not installed: %s guests cannot run",
                    missing.len ? "; " : "", bin, vm_arch_name((enum vm_arch)arch));
        lbuf_printf(&fix, "%sapt-get install %s", fix.len ? "; " : "",
                    arch == VM_ARCH_ARM64 ? "qemu-system-arm" : "qemu-system-x86");
    }
    if (missing.len)
        check_report_set(rep, CHECK_ERROR, fix.data, "%s", missing.data);
    else
        check_report_ok(rep, "%s %s installed", found.data ? found.data : "QEMU",
                        strchr(found.data ? found.data : "", ',') ? "are" : "is");
}

void check_vm_accel(struct check_ctx *ctx, struct check_report *rep)
{
    bool need[2];
    enum vm_arch host;
    archs_needed(ctx, need, &host);
    const char *kvm = ctx->cfg->check.kvm_device;
    char cache[PATH_MAX];
    snprintf(cache, sizeof(cache), "%s/kvm-probe-%s.json", vm_dir(ctx), vm_arch_name(host));
    _cleanup_free_ char *probe_text = NULL;
    _cleanup_json_ json_t *probe = NULL;
    if (access(kvm, F_OK) < 0) {
        check_report_set(
            rep, CHECK_WARNING,
            "enable virtualisation (VT-x/AMD-V) in the firmware, or nested virtualisation for a "
            "VM host; guests still run under emulation",
            "no %s: guests run under software emulation (TCG), several times slower", kvm);
    } else if (lfs_read_file(cache, 65536, &probe_text, NULL) == 0 &&
               ljson_parse(probe_text, strlen(probe_text), &probe, NULL) == 0) {
        if (ljson_bool(probe, "usable", false))
            check_report_ok(rep, "KVM works: %s", ljson_str(probe, "detail") ?: "");
        else
            check_report_set(rep, CHECK_WARNING,
                             "guests run under emulation; `ledge vm set NAME --accel kvm` forces "
                             "KVM",
                             "KVM is not usable here (%s): guests run under software emulation",
                             ljson_str(probe, "detail") ?: "?");
    } else {
        check_report_ok(rep,
                        "%s exists; the first `ledge vm start` probes whether KVM guests "
                        "actually run (nested KVM may hang) and falls back to emulation",
                        kvm);
    }
}

void check_vm_memory(struct check_ctx *ctx, struct check_report *rep)
{
    uint64_t want = ctx->n_vms ? 0 : VM_DEFAULT_MEMORY;
    for (size_t i = 0; i < ctx->n_vms; i++)
        want += ctx->vms[i].memory;
    uint64_t avail;
    char a[32], b[32];
    if (check_mem_available(ctx, &avail) < 0)
        check_report_set(rep, CHECK_WARNING, NULL, "cannot read the available memory");
    else if (avail < want + VM_QEMU_OVERHEAD)
        check_report_set(rep, CHECK_ERROR, "free memory, or lower the VMs' --memory",
                         "%s available; the VMs need %s (plus ~256 MiB for QEMU each)",
                         vm_size_format(avail, a, sizeof(a)), vm_size_format(want, b, sizeof(b)));
    else
        check_report_ok(rep, "%s available for VMs needing %s", vm_size_format(avail, a, sizeof(a)),
                        vm_size_format(want, b, sizeof(b)));
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

void check_vm_disk(struct check_ctx *ctx, struct check_report *rep)
{
    uint64_t want = ctx->n_vms ? 0 : VM_DEFAULT_DISK;
    for (size_t i = 0; i < ctx->n_vms; i++)
        want += ctx->vms[i].disk;
    uint64_t vfree = free_bytes(vm_dir(ctx));
    char a[32], b[32];
    if (vfree < want)
        check_report_set(rep, vfree < VM_DISK_ERROR_FREE ? CHECK_ERROR : CHECK_WARNING,
                         "free space, or give the VMs smaller disks",
                         "%s free in %s; the VMs' disks may grow to %s",
                         vm_size_format(vfree, a, sizeof(a)), vm_dir(ctx),
                         vm_size_format(want, b, sizeof(b)));
    else
        check_report_ok(rep, "%s free in %s for VM disks of up to %s",
                        vm_size_format(vfree, a, sizeof(a)), vm_dir(ctx),
                        vm_size_format(want, b, sizeof(b)));
}

void check_vm_build(struct check_ctx *ctx, struct check_report *rep)
{
    const char *path = search_path(ctx);
    if (in_path(path, "debootstrap") && in_path(path, "mkfs.ext4") && in_path(path, "cpio"))
        check_report_ok(rep, "debootstrap, mkfs.ext4 and cpio are installed (images can be built)");
    else
        check_report_set(rep, CHECK_WARNING, "apt-get install debootstrap e2fsprogs cpio xz-utils",
                         "building guest images needs debootstrap, mkfs.ext4 and cpio "
                         "(importing a built image with `ledge vm image import` does not)");
}

void check_vm_build_foreign(struct check_ctx *ctx, struct check_report *rep)
{
    bool need[2];
    enum vm_arch host;
    archs_needed(ctx, need, &host);
    if (!need[VM_ARCH_ARM64] || host == VM_ARCH_ARM64) {
        check_report_skip(rep, "no VM here is of another architecture than this %s host",
                          vm_arch_name(host));
        return;
    }
    char entry[PATH_MAX];
    snprintf(entry, sizeof(entry), "%s/qemu-aarch64",
             ctx->in->binfmt_dir ? ctx->in->binfmt_dir : "/proc/sys/fs/binfmt_misc");
    if (access(entry, F_OK) == 0 || access("/usr/lib/binfmt.d/qemu-aarch64.conf", F_OK) == 0)
        check_report_ok(rep, "qemu-user for arm64 is available (arm64 images can be built)");
    else
        check_report_set(rep, CHECK_WARNING, "apt-get install qemu-user-static",
                         "building arm64 images needs qemu-user-static (binfmt_misc)");
}

void check_vm_cache(struct check_ctx *ctx, struct check_report *rep)
{
    uint64_t cfree = free_bytes(vm_cache(ctx));
    char a[32];
    if (cfree < VM_CACHE_MIN_FREE)
        check_report_set(rep, CHECK_WARNING, "free space in the image cache",
                         "%s free in %s; building an image needs about 4 GiB",
                         vm_size_format(cfree, a, sizeof(a)), vm_cache(ctx));
    else
        check_report_ok(rep, "%s free in %s for building images",
                        vm_size_format(cfree, a, sizeof(a)), vm_cache(ctx));
}
