/* oci_checks.c — what the oci engine (engine.type oci, docs/engine-oci.md) needs of the host: an
 * OCI runtime that can run on its cgroups, the kernel's overlayfs, cgroups and namespaces, and
 * the CNI plugins of the module network; each with its fix. Skipped for the other engines. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/proc.h"
#include "base/str.h"
#include "check-internal.h"
#include "engine/oci.h"

#define RUNTIME_VERSION_TIMEOUT_MS 5000

/* False (rep skipped) unless container modules run on the oci engine. */
static bool oci_applies(struct check_ctx *ctx, struct check_report *rep)
{
    const char *type = ctx->cfg->engine.type;
    if (lstr_eq(type, "oci"))
        return true;
    check_report_skip(rep, "engine.type is %s: these are the oci engine's requirements",
                      type ? type : "docker");
    return false;
}

/* The first line of `RUNTIME --version` ("crun version 1.8.1"), or "" when it says nothing. */
static void runtime_version(const char *path, char *buf, size_t size)
{
    struct lbuf out = LBUF_INIT;
    out.max = 4096;
    char *argv[] = {(char *)path, "--version", NULL};
    struct lproc p = {
        .argv = argv, .in_fd = -1, .out = &out, .timeout_ms = RUNTIME_VERSION_TIMEOUT_MS};
    int status;
    buf[0] = 0;
    if (lproc_run_ok(&p, &status) == 0 && out.len) {
        size_t n = strcspn(out.data, "\n");
        snprintf(buf, size, "%.*s", (int)MIN(n, (size_t)120), out.data);
    }
    lbuf_free(&out);
}

void check_oci_runtime(struct check_ctx *ctx, struct check_report *rep)
{
    if (!oci_applies(ctx, rep))
        return;
    const char *want = ctx->cfg->engine.runtime ? ctx->cfg->engine.runtime : "auto";
    char v2[256];
    enum oci_cgroups mode = oci_cgroups_mode(v2, sizeof(v2));
    _cleanup_free_ char *path = NULL;
    struct lerr err = {0};
    if (oci_runtime_resolve(want, &path, &err) < 0) {
        check_report_set(rep, CHECK_ERROR,
                         "install one: `sudo apt install crun` (runc where crun cannot use the "
                         "host's cgroups: `sudo apt install runc`), or set engine.runtime to the "
                         "runtime's path",
                         "%s", err.msg);
        return;
    }
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char version[128];
    runtime_version(path, version, sizeof(version));
    if (strstr(base, "crun") && !oci_crun_fits(mode, v2)) {
        check_report_set(rep, CHECK_ERROR,
                         "set engine.runtime: runc (`sudo apt install runc`), or boot with one "
                         "unified cgroup hierarchy (systemd.unified_cgroup_hierarchy=1 on the "
                         "kernel command line)",
                         "%s (%s) cannot run containers on this host: its cgroups are hybrid "
                         "with %s in the v2 hierarchy, which crun 1.8 refuses",
                         version[0] ? version : base, path, v2);
        return;
    }
    if (!version[0]) {
        check_report_set(rep, CHECK_ERROR,
                         "reinstall the runtime (`sudo apt install --reinstall crun`), or point "
                         "engine.runtime at a working crun or runc",
                         "%s (engine.runtime %s) does not answer --version", path, want);
        return;
    }
    check_report_ok(rep, "%s (%s; engine.runtime %s), cgroup %s", version, path, want,
                    oci_cgroups_name(mode));
}

/* overlayfs in /proc/filesystems, or as a module the first mount loads. */
static bool have_overlayfs(void)
{
    _cleanup_free_ char *fs = NULL;
    size_t n;
    if (check_read_host_file("/proc/filesystems", &fs, &n) == 0 && strstr(fs, "\toverlay\n"))
        return true;
    struct utsname u;
    if (uname(&u) < 0)
        return false;
    static const char *const names[] = {"overlay.ko", "overlay.ko.xz", "overlay.ko.zst"};
    for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
        char p[512];
        snprintf(p, sizeof(p), "/lib/modules/%s/kernel/fs/overlayfs/%s", u.release, names[i]);
        if (access(p, R_OK) == 0)
            return true;
    }
    return false;
}

static long read_long(const char *path, long dflt)
{
    _cleanup_free_ char *text = NULL;
    size_t n;
    if (check_read_host_file(path, &text, &n) < 0)
        return dflt;
    return strtol(text, NULL, 10);
}

void check_oci_kernel(struct check_ctx *ctx, struct check_report *rep)
{
    if (!oci_applies(ctx, rep))
        return;
    if (!have_overlayfs()) {
        check_report_set(rep, CHECK_ERROR,
                         "load it: `sudo modprobe overlay` (Debian's kernels have it as a module; "
                         "add overlay to /etc/modules to load it at boot)",
                         "no overlayfs in this kernel: the oci engine mounts each container's "
                         "root file system with it");
        return;
    }
    char v2[256];
    enum oci_cgroups mode = oci_cgroups_mode(v2, sizeof(v2));
    if (mode == OCI_CGROUPS_NONE) {
        check_report_set(rep, CHECK_ERROR,
                         "mount the cgroup file system (systemd does this at boot; elsewhere: "
                         "`mount -t cgroup2 none /sys/fs/cgroup`)",
                         "no cgroup hierarchy at /sys/fs/cgroup: the runtime cannot run "
                         "containers");
        return;
    }
    if (access("/proc/self/ns/net", F_OK) < 0 || access("/proc/self/ns/mnt", F_OK) < 0) {
        check_report_set(rep, CHECK_ERROR, "boot a kernel with namespaces (CONFIG_NAMESPACES)",
                         "this kernel has no network or mount namespaces");
        return;
    }
    const char *userns = "not used (engine.userns false)";
    if (ctx->cfg->engine.userns) {
        if (access("/proc/self/ns/user", F_OK) < 0 ||
            read_long("/proc/sys/user/max_user_namespaces", 1) <= 0) {
            check_report_set(rep, CHECK_ERROR,
                             "allow them: `sudo sysctl -w user.max_user_namespaces=15000` (and in "
                             "/etc/sysctl.d/), or set engine.userns: false",
                             "engine.userns is true, but this kernel allows no user namespaces");
            return;
        }
        userns = "available (engine.userns true)";
    }
    if (mode == OCI_CGROUPS_UNIFIED) {
        static const char *const want[] = {"memory", "cpu", "pids"};
        char missing[64] = "";
        for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
            bool found = false;
            for (const char *p = v2; (p = strstr(p, want[i])); p++)
                if ((p == v2 || p[-1] == ' ') &&
                    (p[strlen(want[i])] == 0 || p[strlen(want[i])] == ' ')) {
                    found = true;
                    break;
                }
            if (!found)
                snprintf(missing + strlen(missing), sizeof(missing) - strlen(missing), "%s%s",
                         missing[0] ? ", " : "", want[i]);
        }
        if (missing[0]) {
            check_report_set(rep, CHECK_WARNING,
                             "enable the controllers on the kernel command line (Raspberry Pi: "
                             "`cgroup_enable=memory cgroup_memory=1`) and reboot",
                             "overlayfs, namespaces; cgroup v2 without %s: modules' limits for "
                             "them are not applied; user namespaces %s",
                             missing, userns);
            return;
        }
    }
    check_report_ok(rep,
                    "overlayfs, network and mount namespaces, cgroup %s%s%s; user namespaces %s",
                    oci_cgroups_name(mode), mode == OCI_CGROUPS_UNIFIED ? " with " : "",
                    mode == OCI_CGROUPS_UNIFIED ? v2 : "", userns);
}

void check_oci_network(struct check_ctx *ctx, struct check_report *rep)
{
    if (!oci_applies(ctx, rep))
        return;
    const char *dir = ctx->cfg->engine.cni_path ? ctx->cfg->engine.cni_path : "/usr/lib/cni";
    static const char *const plugins[] = {"loopback", "bridge", "host-local", "portmap",
                                          "firewall"};
    char missing[128] = "";
    for (size_t i = 0; i < ARRAY_SIZE(plugins); i++) {
        char p[4200];
        snprintf(p, sizeof(p), "%s/%s", dir, plugins[i]);
        if (access(p, X_OK) < 0)
            snprintf(missing + strlen(missing), sizeof(missing) - strlen(missing), "%s%s",
                     missing[0] ? ", " : "", plugins[i]);
    }
    if (missing[0]) {
        check_report_set(rep, CHECK_ERROR,
                         "`sudo apt install containernetworking-plugins`, or point "
                         "engine.cni_path at the directory that has them",
                         "the module network's CNI plugins are missing from %s: %s", dir, missing);
        return;
    }
    static const char *const iptables[] = {"/usr/sbin/iptables", "/sbin/iptables"};
    for (size_t i = 0; i < ARRAY_SIZE(iptables); i++)
        if (access(iptables[i], X_OK) == 0) {
            check_report_ok(rep,
                            "CNI plugins in %s (loopback, bridge, host-local, portmap, "
                            "firewall) and %s",
                            dir, iptables[i]);
            return;
        }
    check_report_set(rep, CHECK_ERROR, "`sudo apt install iptables`",
                     "no iptables: the CNI plugins need it for NAT and published ports");
}
