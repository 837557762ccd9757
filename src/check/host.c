/* host.c — checks of the configuration and the host: config file, state directory, host names,
 * operating system and its tier, architecture, memory, disk, virtualisation, KVM and cgroups.
 * Host facts come from files named in the config's `check` section, so tests can inject them. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/str.h"
#include "check-internal.h"

/* The two KVM ioctls used, from the stable KVM API; 32-bit ARM no longer ships linux/kvm.h. */
#if __has_include(<linux/kvm.h>)
#include <linux/kvm.h>
#else
#define KVMIO 0xAE
#define KVM_API_VERSION 12
#define KVM_GET_API_VERSION _IO(KVMIO, 0x00)
#define KVM_CREATE_VM _IO(KVMIO, 0x01)
#endif

static void format_size(uint64_t bytes, char buf[static 32])
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)bytes;
    size_t u = 0;
    while (v >= 1024 && u + 1 < ARRAY_SIZE(units)) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, 32, "%" PRIu64 " B", bytes);
    else
        snprintf(buf, 32, "%.1f %s", v, units[u]);
}

/* ------------------------------------------------------------------ parsers */

/* Copy an os-release value: strip matching quotes, undo backslash escapes inside them. */
static void os_release_value(const char *v, size_t n, char *dst, size_t size)
{
    size_t o = 0;
    char q = 0;
    if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) {
        q = v[0];
        v++;
        n -= 2;
    }
    for (size_t i = 0; i < n && o + 1 < size; i++) {
        if (q == '"' && v[i] == '\\' && i + 1 < n)
            i++;
        dst[o++] = v[i];
    }
    dst[o] = 0;
}

int check_parse_os_release(const char *text, size_t n, struct check_os *ret)
{
    struct check_os os = {{0}};
    const char *p = text, *end = text + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        while (p < le && isspace((unsigned char)*p))
            p++;
        const char *eq = memchr(p, '=', (size_t)(le - p));
        if (eq && *p != '#') {
            size_t klen = (size_t)(eq - p);
            const char *v = eq + 1;
            size_t vlen = (size_t)(le - v);
            while (vlen > 0 && isspace((unsigned char)v[vlen - 1]))
                vlen--;
            struct {
                const char *key;
                char *dst;
                size_t size;
            } keys[] = {
                {"ID", os.id, sizeof(os.id)},
                {"ID_LIKE", os.id_like, sizeof(os.id_like)},
                {"VERSION_ID", os.version_id, sizeof(os.version_id)},
                {"PRETTY_NAME", os.pretty, sizeof(os.pretty)},
            };
            for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
                if (strlen(keys[i].key) == klen && memcmp(p, keys[i].key, klen) == 0)
                    os_release_value(v, vlen, keys[i].dst, keys[i].size);
        }
        p = le + 1;
    }
    if (!os.id[0] && !os.pretty[0])
        return -EINVAL;
    if (!os.id[0])
        strcpy(os.id, "linux"); /* os-release(5): the default ID */
    *ret = os;
    return 0;
}

int check_parse_meminfo(const char *text, size_t n, uint64_t *ret_bytes)
{
    static const char key[] = "MemAvailable:";
    const char *p = text, *end = text + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        if ((size_t)(le - p) >= sizeof(key) - 1 && memcmp(p, key, sizeof(key) - 1) == 0) {
            const char *q = p + sizeof(key) - 1;
            while (q < le && *q == ' ')
                q++;
            uint64_t kib = 0;
            bool digits = false;
            for (; q < le && isdigit((unsigned char)*q); q++) {
                if (kib > (UINT64_MAX / 1024 - 9) / 10)
                    return -ERANGE;
                kib = kib * 10 + (uint64_t)(*q - '0');
                digits = true;
            }
            if (!digits)
                return -EINVAL;
            *ret_bytes = kib * 1024;
            return 0;
        }
        p = le + 1;
    }
    return -ENOENT;
}

bool check_cpuinfo_has_flag(const char *text, size_t n, const char *flag)
{
    size_t flen = strlen(flag);
    const char *p = text, *end = text + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        bool x86 = (size_t)(le - p) >= 5 && memcmp(p, "flags", 5) == 0;
        bool arm = (size_t)(le - p) >= 8 && memcmp(p, "Features", 8) == 0;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if ((x86 || arm) && colon) {
            /* the first CPU's line is enough: all CPUs share the virtualisation flags */
            for (const char *w = colon + 1; w < le;) {
                while (w < le && isspace((unsigned char)*w))
                    w++;
                const char *we = w;
                while (we < le && !isspace((unsigned char)*we))
                    we++;
                if ((size_t)(we - w) == flen && memcmp(w, flag, flen) == 0)
                    return true;
                w = we;
            }
            return false;
        }
        p = le + 1;
    }
    return false;
}

int check_hostname_valid(const char *name, struct lerr *why)
{
    size_t n = strlen(name);
    if (n == 0)
        return lerr_set(why, -EINVAL, "is empty");
    if (n > CHECK_HOSTNAME_MAX)
        return lerr_set(why, -EINVAL, "is %zu characters long (at most %d)", n, CHECK_HOSTNAME_MAX);
    size_t label = 0;
    for (size_t i = 0; i <= n; i++) {
        char c = name[i];
        if (c == '.' || c == 0) {
            if (label == 0)
                return lerr_set(why, -EINVAL, "has an empty label");
            if (name[i - 1] == '-')
                return lerr_set(why, -EINVAL, "has a label ending with '-'");
            label = 0;
            continue;
        }
        if (c == '-' && label == 0)
            return lerr_set(why, -EINVAL, "has a label starting with '-'");
        if (!isalnum((unsigned char)c) && c != '-')
            return lerr_set(why, -EINVAL,
                            "contains '%c' (only letters, digits, '-' and '.' are allowed)", c);
        if (++label > 63)
            return lerr_set(why, -EINVAL, "has a label longer than 63 characters");
    }
    return 0;
}

/* ------------------------------------------------------------------ configuration */

void check_config_file(struct check_ctx *ctx, struct check_report *rep)
{
    const struct check_inputs *in = ctx->in;
    const char *path = in->config_path ? in->config_path : CONFIG_DEFAULT_PATH;
    if (in->config_status == 0) {
        check_report_ok(rep, "%s is valid", path);
        return;
    }
    if (in->config_status == 1) {
        check_report_set(
            rep, CHECK_WARNING,
            "create it from the template (the ledge package installs one; "
            "examples/config.yaml in the source); docs/configuration.md lists every key",
            "%s does not exist: ledged runs with the defaults", path);
        return;
    }
    _cleanup_free_ char *all =
        in->config_errors && in->config_errors->n ? lstrv_join(in->config_errors, "\n") : NULL;
    check_report_set(rep, CHECK_ERROR,
                     "correct what the messages name (file, line and key); docs/configuration.md "
                     "describes every key",
                     "%s", all ? all : strerror(-in->config_status));
}

/* Nearest existing ancestor of path (path itself when it exists) into dst. */
static int existing_ancestor(const char *path, char *dst, size_t size)
{
    if (lstr_copy(dst, size, path) < 0)
        return -ENAMETOOLONG;
    struct stat st;
    while (stat(dst, &st) < 0) {
        if (errno != ENOENT)
            return neg_errno();
        char *slash = strrchr(dst, '/');
        if (!slash)
            return -ENOENT;
        if (slash == dst)
            slash[1] = 0;
        else
            *slash = 0;
    }
    return 0;
}

/* Create and remove a file in dir: the one sure test that it takes writes. */
static int probe_write(const char *dir)
{
    char path[4200];
    if (snprintf(path, sizeof(path), "%s/.ledge-check-XXXXXX", dir) >= (int)sizeof(path))
        return -ENAMETOOLONG;
    int fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0)
        return neg_errno();
    close(fd);
    unlink(path);
    return 0;
}

void check_state_dir(struct check_ctx *ctx, struct check_report *rep)
{
    const char *dir = ctx->cfg->state_dir;
    static const char fix_access[] =
        "run `ledge check` as root (ledged runs as root), or give the directory to the user "
        "ledged runs as (chown, chmod 0700)";
    struct stat st;
    if (stat(dir, &st) < 0) {
        int r = neg_errno();
        char anc[4096];
        if (r != -ENOENT || existing_ancestor(dir, anc, sizeof(anc)) < 0) {
            check_report_set(rep, CHECK_ERROR, "correct state_dir", "%s: %s", dir, strerror(-r));
            return;
        }
        struct stat ast;
        if (stat(anc, &ast) < 0 || !S_ISDIR(ast.st_mode)) {
            check_report_set(rep, CHECK_ERROR, "correct state_dir",
                             "%s cannot be created: %s is not a directory", dir, anc);
            return;
        }
        if (access(anc, W_OK | X_OK) < 0) {
            check_report_set(rep, CHECK_ERROR, fix_access,
                             "%s does not exist and cannot be created: %s is not writable (%s)",
                             dir, anc, strerror(errno));
            return;
        }
        check_report_set(rep, CHECK_WARNING,
                         "start ledged once (it creates the directory, mode 0700)",
                         "%s does not exist yet; ledged creates it when it first starts", dir);
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        check_report_set(rep, CHECK_ERROR, "remove the file or point state_dir elsewhere",
                         "%s is not a directory", dir);
        return;
    }
    if (access(dir, W_OK | X_OK) < 0) {
        check_report_set(rep, CHECK_ERROR, fix_access, "%s is not writable by uid %u: %s", dir,
                         (unsigned)geteuid(), strerror(errno));
        return;
    }
    struct statvfs vfs;
    if (statvfs(dir, &vfs) == 0 && (vfs.f_flag & ST_RDONLY)) {
        check_report_set(rep, CHECK_ERROR, "remount the file system read-write or move state_dir",
                         "%s is on a read-only file system", dir);
        return;
    }
    int r = probe_write(dir);
    if (r < 0) {
        check_report_set(rep, CHECK_ERROR,
                         r == -ENOSPC ? "free space on that file system" : "see the message",
                         "cannot create a file in %s: %s", dir, strerror(-r));
        return;
    }
    if (st.st_mode & 077) {
        check_report_set(rep, CHECK_WARNING, "chmod 0700 the directory",
                         "%s is writable but its mode is %04o: it holds the device's keys, so only "
                         "its owner should have access",
                         dir, (unsigned)(st.st_mode & 07777));
        return;
    }
    char free_s[32] = "?";
    if (statvfs(dir, &vfs) == 0)
        format_size((uint64_t)vfs.f_bavail * vfs.f_frsize, free_s);
    check_report_ok(rep, "%s is writable (%s free)", dir, free_s);
}

void check_hostname(struct check_ctx *ctx, struct check_report *rep)
{
    char host[256];
    const char *name = ctx->in->hostname;
    if (!name) {
        if (gethostname(host, sizeof(host)) < 0) {
            check_report_set(rep, CHECK_ERROR, "set a host name (hostnamectl set-hostname NAME)",
                             "cannot read the host name: %s", strerror(errno));
            return;
        }
        host[sizeof(host) - 1] = 0;
        name = host;
    }
    struct lerr why = {0};
    if (check_hostname_valid(name, &why) < 0) {
        check_report_set(rep, CHECK_ERROR,
                         "give the machine a valid name (`hostnamectl set-hostname NAME`); modules "
                         "and leaf devices reach the device by it",
                         "the host name \"%.80s\" %s", name, why.msg);
        return;
    }
    const char *gw = ctx->cfg->device.gateway_hostname;
    if (gw && check_hostname_valid(gw, &why) < 0) {
        check_report_set(rep, CHECK_ERROR,
                         "set device.gateway_hostname to a DNS name of at most 64 characters",
                         "device.gateway_hostname \"%.80s\" %s", gw, why.msg);
        return;
    }
    if (gw && strcmp(gw, name) != 0)
        check_report_ok(rep, "host name \"%s\" and device.gateway_hostname \"%s\" are valid", name,
                        gw);
    else
        check_report_ok(rep, "host name \"%s\" is valid", name);
}

/* ------------------------------------------------------------------ operating system */

/* The systems ledge states support for (docs/support.md keeps the same table). */
static const struct tier_row {
    const char *id;
    const char *version_id;
    const char *arch; /* normalised; "arm" means arm/v7 or newer */
    int tier;
    const char *how;
} tiers[] = {
    {"debian", "12", "amd64", 1,
     "unit, fuzz, system and package-install tests in CI; .deb packages"},
    {"debian", "12", "arm64", 2, ".deb packages; unit tests under qemu-user in CI"},
    {"debian", "12", "arm", 2, ".deb packages (armhf, ARMv7); unit tests under qemu-user in CI"},
    {"raspbian", "12", "arm", 2, "Debian's armhf .deb (ARMv7: Raspberry Pi 2 and newer)"},
};

void check_os(struct check_ctx *ctx, struct check_report *rep)
{
    static const char fix[] = "use a tier 1 or tier 2 system (docs/support.md), or build ledge "
                              "from source and test it on this one";
    const char *path = ctx->cfg->check.os_release;
    _cleanup_free_ char *text = NULL;
    size_t n;
    int r = check_read_host_file(path, &text, &n);
    struct check_os os;
    if (r < 0 || check_parse_os_release(text, n, &os) < 0) {
        check_report_set(rep, CHECK_WARNING, fix, "cannot identify the operating system: %s %s",
                         path, r < 0 ? strerror(-r) : "names no ID");
        return;
    }
    const char *name = os.pretty[0] ? os.pretty : os.id;
    char plat[PLATFORM_STR_MAX] = "unknown";
    if (ctx->host_r == 0)
        platform_format(&ctx->host, plat);
    for (size_t i = 0; i < ARRAY_SIZE(tiers); i++) {
        const struct tier_row *t = &tiers[i];
        if (!lstr_eq(os.id, t->id) || strcmp(os.version_id, t->version_id) != 0 ||
            ctx->host_r < 0 || strcmp(ctx->host.arch, t->arch) != 0)
            continue;
        if (strcmp(t->arch, "arm") == 0 &&
            (lstr_eq(ctx->host.variant, "v6") || lstr_eq(ctx->host.variant, "v5")))
            continue;
        check_report_ok(rep, "%s on %s: tier %d (%s)", name, plat, t->tier, t->how);
        return;
    }
    bool debian_like = lstr_eq(os.id, "debian") || strstr(os.id_like, "debian");
    check_report_set(rep, CHECK_WARNING, fix,
                     "%s on %s is not a supported system%s; tier 1 is Debian 12 on amd64, tier 2 "
                     "Debian 12 on arm64 and armhf",
                     name, plat,
                     debian_like ? " (Debian-based: ledge's packages need Debian 12's libraries)"
                                 : "");
}

void check_architecture(struct check_ctx *ctx, struct check_report *rep)
{
    if (ctx->host_r < 0) {
        check_report_set(rep, CHECK_WARNING, NULL, "cannot tell this machine's architecture: %s",
                         strerror(-ctx->host_r));
        return;
    }
    char plat[PLATFORM_STR_MAX];
    platform_format(&ctx->host, plat);
    const char *a = ctx->host.arch, *v = ctx->host.variant;
    if (strcmp(a, "amd64") == 0 || strcmp(a, "arm64") == 0) {
        check_report_ok(rep, "%s: ledge is built and packaged for it", plat);
        return;
    }
    if (strcmp(a, "arm") == 0 && (strcmp(v, "v7") == 0 || strcmp(v, "v8") == 0 || !v[0])) {
        check_report_ok(rep, "%s: ledge is built and packaged for it (armhf)", plat);
        return;
    }
    if (strcmp(a, "arm") == 0) {
        check_report_set(
            rep, CHECK_WARNING,
            "use an ARMv7 or newer device (Raspberry Pi 2 and later), or build ledge for "
            "this CPU yourself",
            "%s: ledge's armhf packages need ARMv7 (Debian's armhf baseline); this CPU "
            "is older",
            plat);
        return;
    }
    check_report_set(rep, CHECK_WARNING,
                     "use amd64, arm64 or armhf hardware for a supported setup (docs/support.md)",
                     "%s: ledge is not built or tested for this architecture (supported: amd64, "
                     "arm64, arm/v7)",
                     plat);
}

/* ------------------------------------------------------------------ memory and disk */

int check_mem_available(struct check_ctx *ctx, uint64_t *ret_bytes)
{
    _cleanup_free_ char *text = NULL;
    size_t n;
    int r = check_read_host_file(ctx->cfg->check.meminfo, &text, &n);
    return r < 0 ? r : check_parse_meminfo(text, n, ret_bytes);
}

void check_memory(struct check_ctx *ctx, struct check_report *rep)
{
    const char *path = ctx->cfg->check.meminfo;
    uint64_t min = ctx->cfg->check.min_free_memory, avail;
    int r = check_mem_available(ctx, &avail);
    if (r < 0) {
        check_report_set(rep, CHECK_WARNING, NULL, "cannot read MemAvailable from %s: %s", path,
                         strerror(-r));
        return;
    }
    char a[32], m[32];
    format_size(avail, a);
    format_size(min, m);
    if (avail < min) {
        check_report_set(rep, CHECK_WARNING,
                         "free memory (stop what else runs here) or use a device with more; the "
                         "threshold is check.min_free_memory",
                         "%s of memory available, less than the %s minimum: the engine and modules "
                         "may be killed for lack of memory",
                         a, m);
        return;
    }
    check_report_ok(rep, "%s of memory available (minimum %s)", a, m);
}

struct fs_seen {
    dev_t dev;
    const char *what;
};

static void disk_one(struct lbuf *msg, struct fs_seen *seen, size_t *nseen, const char *what,
                     const char *path, uint64_t min, bool *low)
{
    char anc[4096];
    struct stat st;
    struct statvfs vfs;
    if (existing_ancestor(path, anc, sizeof(anc)) < 0 || stat(anc, &st) < 0 ||
        statvfs(anc, &vfs) < 0) {
        lbuf_printf(msg, "%s%s (%s): cannot read free space: %s", msg->len ? "\n" : "", what, path,
                    strerror(errno));
        *low = true;
        return;
    }
    for (size_t i = 0; i < *nseen; i++)
        if (seen[i].dev == st.st_dev) {
            lbuf_printf(msg, "%s%s (%s): same file system as the %s", msg->len ? "\n" : "", what,
                        path, seen[i].what);
            return;
        }
    seen[(*nseen)++] = (struct fs_seen){st.st_dev, what};
    uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    char a[32], m[32];
    format_size(avail, a);
    format_size(min, m);
    if (avail < min)
        *low = true;
    lbuf_printf(msg, "%s%s (%s): %s free%s%s", msg->len ? "\n" : "", what, path, a,
                avail < min ? ", less than the minimum " : "", avail < min ? m : "");
}

void check_disk(struct check_ctx *ctx, struct check_report *rep)
{
    uint64_t min = ctx->cfg->check.min_free_disk;
    _cleanup_lbuf_ struct lbuf msg = LBUF_INIT;
    struct fs_seen seen[2];
    size_t nseen = 0;
    bool low = false;
    disk_one(&msg, seen, &nseen, "state", ctx->cfg->state_dir, min, &low);
    const char *root =
        check_engine_ask(ctx) == 0 && ctx->version.data_root[0] ? ctx->version.data_root : NULL;
    struct stat st;
    if (root && root[0] == '/' && stat(root, &st) == 0)
        disk_one(&msg, seen, &nseen, "engine data", root, min, &low);
    else if (root)
        lbuf_printf(&msg, "\nengine data (%s): not visible from here (a remote engine?)", root);
    else
        lbuf_printf(&msg, "\nengine data: unknown (%s)",
                    ctx->engine_r < 0 ? "the engine is not reachable" : "the engine did not say");
    if (!msg.data) {
        check_report_set(rep, CHECK_ERROR, NULL, "out of memory");
        return;
    }
    if (low)
        check_report_set(
            rep, CHECK_WARNING,
            "free space (`docker system prune` removes unused images) or move state_dir "
            "or the engine's data-root to a larger file system; the threshold is "
            "check.min_free_disk",
            "%s", msg.data);
    else
        check_report_ok(rep, "%s", msg.data);
}

/* ------------------------------------------------------------------ virtualisation */

static void read_trimmed(const char *dir, const char *name, char *dst, size_t size)
{
    char path[4200];
    dst[0] = 0;
    if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
        return;
    _cleanup_free_ char *text = NULL;
    size_t n;
    if (check_read_host_file(path, &text, &n) < 0)
        return;
    while (n > 0 && isspace((unsigned char)text[n - 1]))
        n--;
    text[n] = 0;
    lstr_copy(dst, size, text);
}

/* The hypervisor's name from DMI, or NULL when DMI names none (bare metal, or none readable). */
static const char *dmi_hypervisor(const char *dmi_dir)
{
    static const struct {
        const char *needle;
        const char *name;
    } known[] = {
        {"QEMU", "QEMU/KVM"},
        {"KVM", "KVM"},
        {"VMware", "VMware"},
        {"VirtualBox", "VirtualBox"},
        {"innotek", "VirtualBox"},
        {"Xen", "Xen"},
        {"Virtual Machine", "Hyper-V"},
        {"Amazon EC2", "Amazon EC2"},
        {"Google Compute", "Google Compute Engine"},
        {"Parallels", "Parallels"},
        {"Bochs", "Bochs"},
        {"BHYVE", "bhyve"},
        {"OpenStack", "OpenStack"},
    };
    char vendor[128], product[128];
    read_trimmed(dmi_dir, "sys_vendor", vendor, sizeof(vendor));
    read_trimmed(dmi_dir, "product_name", product, sizeof(product));
    for (size_t i = 0; i < ARRAY_SIZE(known); i++)
        if (strstr(vendor, known[i].needle) || strstr(product, known[i].needle))
            return known[i].name;
    return NULL;
}

/* Is this a VM? *ret_name names the hypervisor when known. */
static bool in_vm(struct check_ctx *ctx, const char **ret_name)
{
    *ret_name = dmi_hypervisor(ctx->cfg->check.dmi_dir);
    if (*ret_name)
        return true;
    _cleanup_free_ char *cpu = NULL;
    size_t n;
    return check_read_host_file(ctx->cfg->check.cpuinfo, &cpu, &n) == 0 &&
           check_cpuinfo_has_flag(cpu, n, "hypervisor");
}

static const char *container_kind(struct check_ctx *ctx)
{
    if (ctx->in->container_marker)
        return access(ctx->in->container_marker, F_OK) == 0 ? "a container" : NULL;
    if (access("/run/.containerenv", F_OK) == 0)
        return "a Podman container";
    if (access("/.dockerenv", F_OK) == 0)
        return "a Docker container";
    _cleanup_free_ char *text = NULL;
    size_t n;
    if (check_read_host_file("/run/systemd/container", &text, &n) == 0 && n > 0)
        return "a container (systemd says so)";
    return NULL;
}

void check_virtualization(struct check_ctx *ctx, struct check_report *rep)
{
    const char *hv;
    bool vm = in_vm(ctx, &hv);
    const char *ctr = container_kind(ctx);
    const char *family = ctx->host_r == 0 ? ctx->host.os : "linux";
    if (ctr) {
        check_report_set(rep, CHECK_WARNING,
                         "run ledge on the host (or in a virtual machine) itself",
                         "running inside %s%s%s%s: untested; ledged needs the host's container "
                         "engine, and the paths it gives modules (workload sockets) must be host "
                         "paths",
                         ctr, vm ? " in a virtual machine" : "", hv ? " on " : "", hv ? hv : "");
        return;
    }
    if (vm) {
        check_report_ok(
            rep,
            "a virtual machine%s%s: supported like bare metal; modules must still match "
            "this VM's OS family (%s), not the physical host's",
            hv ? " on " : "", hv ? hv : "", family);
        return;
    }
    check_report_ok(rep, "no hypervisor detected (bare metal)");
}

/* 0 when /dev/kvm answers the KVM API and lets us create a VM. */
static int kvm_usable(const char *dev, struct lerr *why)
{
    _cleanup_close_ int fd = open(dev, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return lerr_set(why, neg_errno(), "%s: %s", dev, strerror(errno));
    int v = ioctl(fd, KVM_GET_API_VERSION, 0);
    if (v != KVM_API_VERSION)
        return lerr_set(why, -ENOTTY, "%s does not speak the KVM API (%s)", dev,
                        v < 0 ? strerror(errno) : "unexpected version");
    _cleanup_close_ int vm = ioctl(fd, KVM_CREATE_VM, 0);
    if (vm < 0)
        return lerr_set(why, neg_errno(), "%s cannot create a virtual machine: %s", dev,
                        strerror(errno));
    return 0;
}

void check_kvm(struct check_ctx *ctx, struct check_report *rep)
{
    const char *dev = ctx->cfg->check.kvm_device;
    const char *hv;
    bool vm = in_vm(ctx, &hv);
    static const char fix_nested[] =
        "enable nested virtualisation on the hypervisor (Hyper-V: Set-VMProcessor "
        "-ExposeVirtualizationExtensions $true; VMware: expose hardware-assisted "
        "virtualisation to the guest; KVM: load kvm_intel/kvm_amd with nested=1 and give the "
        "guest the host's CPU model)";
    static const char fix_host[] = "enable VT-x/AMD-V (or the ARM virtualisation extensions) in "
                                   "the firmware and load the kvm module";
    if (access(dev, F_OK) < 0) {
        check_report_set(
            rep, CHECK_SKIPPED, vm ? fix_nested : fix_host,
            "no %s: only `ledge vm` needs KVM (without it guests run emulated, many "
            "times slower)%s",
            dev, vm ? "; in a virtual machine that means nested virtualisation is off" : "");
        return;
    }
    struct lerr why = {0};
    int r = kvm_usable(dev, &why);
    if (r == -EACCES || r == -EPERM) {
        check_report_set(rep, CHECK_WARNING,
                         "run ledge as root, or add the user to the kvm group (`sudo adduser USER "
                         "kvm`)",
                         "%s exists but this user may not use it: %s", dev, why.msg);
        return;
    }
    if (r < 0) {
        check_report_set(rep, CHECK_WARNING, vm ? fix_nested : fix_host,
                         "%s exists but KVM is not usable: %s", dev, why.msg);
        return;
    }
    if (vm)
        check_report_ok(
            rep, "KVM is usable inside this virtual machine%s%s: nested virtualisation works",
            hv ? " on " : "", hv ? hv : "");
    else
        check_report_ok(rep, "KVM is usable (%s)", dev);
}

/* ------------------------------------------------------------------ cgroups */

static bool word_in(const char *text, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = text; (p = strstr(p, word)); p += n)
        if ((p == text || isspace((unsigned char)p[-1])) &&
            (p[n] == 0 || isspace((unsigned char)p[n])))
            return true;
    return false;
}

static bool is_dir(const char *base, const char *name)
{
    char path[4200];
    struct stat st;
    return snprintf(path, sizeof(path), "%s/%s", base, name) < (int)sizeof(path) &&
           stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

void check_cgroups(struct check_ctx *ctx, struct check_report *rep)
{
    const char *dir = ctx->cfg->check.cgroup_dir;
    static const char fix_memory[] =
        "enable the memory controller on the kernel command line (Raspberry Pi: add "
        "`cgroup_enable=memory cgroup_memory=1` to /boot/firmware/cmdline.txt) and reboot";
    char path[4200];
    snprintf(path, sizeof(path), "%s/cgroup.controllers", dir);
    _cleanup_free_ char *ctl = NULL;
    size_t n;
    if (check_read_host_file(path, &ctl, &n) == 0) {
        if (!word_in(ctl, "memory")) {
            check_report_set(rep, CHECK_WARNING, fix_memory,
                             "cgroup v2, but the memory controller is not available: module memory "
                             "limits are ignored and the engine cannot account memory");
            return;
        }
        check_report_ok(rep, "cgroup v2 (unified hierarchy) with the memory controller");
        return;
    }
    bool hybrid = is_dir(dir, "unified");
    bool v1 = is_dir(dir, "memory") || is_dir(dir, "cpu") || is_dir(dir, "pids") ||
              is_dir(dir, "systemd");
    if (!v1 && !hybrid) {
        check_report_set(
            rep, CHECK_ERROR,
            "mount the cgroup file system (systemd does this at boot; elsewhere: `mount "
            "-t cgroup2 none /sys/fs/cgroup`)",
            "no cgroup hierarchy at %s: the container engine cannot run containers", dir);
        return;
    }
    if (!is_dir(dir, "memory")) {
        check_report_set(
            rep, CHECK_WARNING, fix_memory,
            "cgroup v1%s without the memory controller: module memory limits are ignored",
            hybrid ? " (hybrid)" : "");
        return;
    }
    check_report_set(
        rep, CHECK_WARNING,
        "boot with the unified hierarchy: remove systemd.unified_cgroup_hierarchy=0 from "
        "the kernel command line (Debian 12 uses cgroup v2 by default)",
        "cgroup v1%s: works, but the engines and systemd are retiring it",
        hybrid ? " (hybrid)" : "");
}
