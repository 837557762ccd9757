/* oci_spec.c — the OCI runtime config (config.json) of a container from its normalised
 * createOptions (engine/createopts.h: the API's spelling and types) over the image config's
 * defaults, with Moby's defaults for everything neither says. Pure: what the rootfs and the host
 * know comes through struct oci_spec_env. docs/engine-oci.md has the field-by-field table; every
 * field not in it is refused by oci_spec_check(), so nothing a deployment asks for is dropped
 * without a word. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/str.h"
#include "oci-internal.h"

#define DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define DEFAULT_SHM ((int64_t)64 << 20)

const char *const oci_default_caps[] = {
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
    NULL,
};

/* Every capability a kernel of today knows (capability.h, 0..40). */
static const char *const all_caps[] = {
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
    NULL,
};

static const char *const masked_paths[] = {
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    NULL,
};
static const char *const readonly_paths[] = {
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger", NULL};

/* ------------------------------------------------------------------ what is supported */

/* The fields this engine honours (or, for the ones marked so, accepts as docker does when they
 * cannot matter here); anything else with a non-empty value is refused. */
static const char *const supported_top[] = {
    "Hostname",     "Domainname",       "User",        "AttachStdin", "AttachStdout",
    "AttachStderr", "ExposedPorts",     "Env",         "Cmd",         "ArgsEscaped",
    "Image",        "Volumes",          "WorkingDir",  "Entrypoint",  "NetworkDisabled",
    "OnBuild",      "Labels",           "StopSignal",  "StopTimeout", "Shell",
    "HostConfig",   "NetworkingConfig", "Healthcheck", NULL,
};
static const char *const supported_host[] = {
    "CpuShares",
    "Memory",
    "CgroupParent",
    "BlkioWeight",
    "CpuPeriod",
    "CpuQuota",
    "CpuRealtimePeriod",
    "CpuRealtimeRuntime",
    "CpusetCpus",
    "CpusetMems",
    "Devices",
    "DeviceCgroupRules",
    "MemoryReservation",
    "MemorySwap",
    "MemorySwappiness",
    "NanoCpus",
    "OomKillDisable",
    "PidsLimit",
    "Ulimits",
    "Binds",
    "LogConfig",
    "NetworkMode",
    "PortBindings",
    "RestartPolicy",
    "Mounts",
    "ConsoleSize",
    "Annotations",
    "CapAdd",
    "CapDrop",
    "CgroupnsMode",
    "Dns",
    "DnsOptions",
    "DnsSearch",
    "ExtraHosts",
    "GroupAdd",
    "IpcMode",
    "OomScoreAdj",
    "PidMode",
    "Privileged",
    "ReadonlyRootfs",
    "SecurityOpt",
    "Tmpfs",
    "UTSMode",
    "UsernsMode",
    "ShmSize",
    "Sysctls",
    "Isolation",
    "MaskedPaths",
    "ReadonlyPaths",
    "Init",
    "VolumeDriver",
    NULL,
};

static bool in_list(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (strcmp(*list, s) == 0)
            return true;
    return false;
}

/* false, 0, "", [], {}, null: asks for nothing. */
static bool is_empty(const json_t *v)
{
    if (!v)
        return true;
    switch (json_typeof(v)) {
    case JSON_NULL:
    case JSON_FALSE:
        return true;
    case JSON_INTEGER:
        return json_integer_value(v) == 0;
    case JSON_REAL:
        return json_real_value(v) == 0;
    case JSON_STRING:
        return json_string_length(v) == 0;
    case JSON_ARRAY:
        return json_array_size(v) == 0;
    case JSON_OBJECT:
        return json_object_size(v) == 0;
    default:
        return false;
    }
}

static const json_t *hc_of(const json_t *co)
{
    return json_object_get(co, "HostConfig");
}

static const char *co_str(const json_t *o, const char *key)
{
    const char *s = ljson_str(o, key);
    return s && *s ? s : NULL;
}

static int64_t co_int(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? json_integer_value(v) : 0;
}

static bool co_bool(const json_t *o, const char *key)
{
    return json_is_true(json_object_get(o, key));
}

static void refuse(struct lstrv *errors, const char *prefix, const char *field, const char *why)
{
    lstrv_printf(errors, "%s%s%s: %s", prefix ? prefix : "", prefix && *prefix ? "." : "", field,
                 why);
}

static bool security_opt_ok(const char *s)
{
    return lstr_eq(s, "no-new-privileges") || lstr_eq(s, "no-new-privileges:true") ||
           lstr_eq(s, "no-new-privileges=true") || lstr_eq(s, "no-new-privileges:false") ||
           lstr_eq(s, "no-new-privileges=false") || lstr_eq(s, "seccomp=unconfined") ||
           lstr_eq(s, "seccomp:unconfined") || lstr_eq(s, "apparmor=unconfined") ||
           lstr_eq(s, "apparmor:unconfined") || lstr_eq(s, "label=disable") ||
           lstr_eq(s, "label:disable");
}

int oci_spec_check(const json_t *co, const char *prefix, struct lstrv *errors)
{
    size_t before = errors->n;
    if (!co)
        return 0;
    char field[256];
    const char *k;
    json_t *v;
    json_object_foreach ((json_t *)co, k, v) {
        if (is_empty(v))
            continue;
        if (!in_list(supported_top, k)) {
            refuse(errors, prefix, k, "the oci engine does not support this field");
            continue;
        }
        if (strcmp(k, "MacAddress") == 0)
            refuse(errors, prefix, k, "the oci engine does not set MAC addresses");
    }
    const json_t *hc = hc_of(co);
    json_object_foreach ((json_t *)hc, k, v) {
        if (is_empty(v))
            continue;
        snprintf(field, sizeof(field), "HostConfig.%s", k);
        if (!in_list(supported_host, k))
            refuse(errors, prefix, field, "the oci engine does not support this field");
    }
    if (co_bool(hc, "Init"))
        refuse(errors, prefix, "HostConfig.Init", "the oci engine has no init process to inject");
    const char *vd = co_str(hc, "VolumeDriver");
    if (vd && strcmp(vd, "local") != 0)
        refuse(errors, prefix, "HostConfig.VolumeDriver", "only local volumes");
    const char *iso = co_str(hc, "Isolation");
    if (iso && strcmp(iso, "default") != 0)
        refuse(errors, prefix, "HostConfig.Isolation", "only \"default\" on Linux");
    const char *modes[][2] = {{"IpcMode", "private shareable none host"},
                              {"PidMode", "host"},
                              {"UTSMode", "host"},
                              {"UsernsMode", "host"},
                              {"CgroupnsMode", "private host"}};
    for (size_t i = 0; i < ARRAY_SIZE(modes); i++) {
        const char *m = co_str(hc, modes[i][0]);
        if (!m)
            continue;
        char list[64];
        snprintf(list, sizeof(list), " %s ", modes[i][1]);
        char word[70];
        snprintf(word, sizeof(word), " %s ", m);
        if (!strstr(list, word)) {
            snprintf(field, sizeof(field), "HostConfig.%s", modes[i][0]);
            char why[160];
            snprintf(why, sizeof(why), "\"%.40s\" is not supported by the oci engine (use: %s)", m,
                     modes[i][1]);
            refuse(errors, prefix, field, why);
        }
    }
    size_t i;
    json_array_foreach (json_object_get(hc, "SecurityOpt"), i, v) {
        if (!security_opt_ok(json_string_value(v))) {
            snprintf(field, sizeof(field), "HostConfig.SecurityOpt[%zu]", i);
            refuse(errors, prefix, field,
                   "the oci engine supports no-new-privileges, seccomp=unconfined, "
                   "apparmor=unconfined and label=disable");
        }
    }
    const json_t *lc = json_object_get(hc, "LogConfig");
    const char *lt = co_str(lc, "Type");
    if (lt && strcmp(lt, "json-file") != 0 && strcmp(lt, "local") != 0 && strcmp(lt, "none") != 0)
        refuse(errors, prefix, "HostConfig.LogConfig.Type",
               "the oci engine writes its own log files (json-file, local or none)");
    json_object_foreach (json_object_get(lc, "Config"), k, v) {
        if (strcmp(k, "max-size") != 0 && strcmp(k, "max-file") != 0) {
            snprintf(field, sizeof(field), "HostConfig.LogConfig.Config.%s", k);
            refuse(errors, prefix, field, "only max-size and max-file");
        }
    }
    json_array_foreach (json_object_get(hc, "Mounts"), i, v) {
        const char *t = co_str(v, "Type");
        if (!t || (strcmp(t, "bind") && strcmp(t, "volume") && strcmp(t, "tmpfs"))) {
            snprintf(field, sizeof(field), "HostConfig.Mounts[%zu].Type", i);
            refuse(errors, prefix, field, "bind, volume or tmpfs");
        }
        const json_t *vo = json_object_get(v, "VolumeOptions");
        if (!is_empty(json_object_get(vo, "DriverConfig")) ||
            !is_empty(json_object_get(v, "ImageOptions"))) {
            snprintf(field, sizeof(field), "HostConfig.Mounts[%zu]", i);
            refuse(errors, prefix, field, "volume drivers and image mounts are not supported");
        }
    }
    const json_t *health = json_object_get(co, "Healthcheck");
    const char *t0 = json_string_value(json_array_get(json_object_get(health, "Test"), 0));
    if (t0 && !lstr_eq(t0, "NONE") && !lstr_eq(t0, "CMD") && !lstr_eq(t0, "CMD-SHELL"))
        refuse(errors, prefix, "Healthcheck.Test", "must start with NONE, CMD or CMD-SHELL");
    const json_t *eps = json_object_get(json_object_get(co, "NetworkingConfig"), "EndpointsConfig");
    json_object_foreach ((json_t *)eps, k, v) {
        const char *ek;
        json_t *ev;
        json_object_foreach (v, ek, ev) {
            if (is_empty(ev) || strcmp(ek, "Aliases") == 0)
                continue;
            snprintf(field, sizeof(field), "NetworkingConfig.EndpointsConfig.%.60s.%s", k, ek);
            refuse(errors, prefix, field, "the oci engine supports Aliases only");
        }
    }
    return (int)(errors->n - before);
}

int oci_spec_netmode(const json_t *co, const char *network, enum oci_netmode *ret, struct lerr *e)
{
    const char *m = co_str(hc_of(co), "NetworkMode");
    if (co_bool(co, "NetworkDisabled") || lstr_eq(m, "none"))
        *ret = OCI_NET_NONE;
    else if (lstr_eq(m, "host"))
        *ret = OCI_NET_HOST;
    else if (!m || lstr_eq(m, "default") || lstr_eq(m, "bridge") || lstr_eq(m, network))
        *ret = OCI_NET_BRIDGE;
    else
        return lerr_set(e, -EINVAL,
                        "HostConfig.NetworkMode: \"%.64s\" is not a network of the oci engine "
                        "(it has \"%s\" (engine.network), \"host\" and \"none\")",
                        m, network);
    return 0;
}

/* ------------------------------------------------------------------ building */

struct build {
    const struct oci_spec_input *in;
    const struct oci_spec_env *env;
    const json_t *co, *hc, *img; /* createOptions, its HostConfig, the image's "config" */
    json_t *spec, *mounts;
    struct lstrv *dirs;
    struct lerr *e;
};

static int add_mount(struct build *b, const char *dst, const char *type, const char *src,
                     const char *const *opts)
{
    json_t *o = json_array();
    for (size_t i = 0; o && opts && opts[i]; i++)
        json_array_append_new(o, json_string(opts[i]));
    json_t *m = o ? json_pack("{s:s, s:s, s:s, s:o}", "destination", dst, "type", type, "source",
                              src, "options", o)
                  : NULL;
    if (!m || json_array_append_new(b->mounts, m) < 0)
        return -ENOMEM;
    return 0;
}

/* A mount given by the user replaces a default one at the same destination. */
static void drop_mount_at(struct build *b, const char *dst)
{
    size_t i;
    json_t *m;
    json_array_foreach (b->mounts, i, m) {
        if (lstr_eq(ljson_str(m, "destination"), dst)) {
            json_array_remove(b->mounts, i);
            return;
        }
    }
}

static bool clean_abs(const char *p)
{
    return p && p[0] == '/' && !strstr(p, "/../") && !lstr_endswith(p, "/..") && strlen(p) < 4096;
}

static bool volume_name_ok(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= 128 && isalnum((unsigned char)s[0]) &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

/* Binds: "src:dst[:opts]" as docker parses them on Linux. */
static int add_bind(struct build *b, const char *text, const char *field)
{
    _cleanup_free_ char *copy = strdup(text);
    if (!copy)
        return -ENOMEM;
    char *src = copy, *dst = strchr(copy, ':'), *opts = NULL;
    if (!dst)
        return lerr_set(b->e, -EINVAL, "%s: \"%.100s\" is not src:dst[:options]", field, text);
    *dst++ = 0;
    if ((opts = strchr(dst, ':')))
        *opts++ = 0;
    if (!clean_abs(dst))
        return lerr_set(b->e, -EINVAL, "%s: the destination of \"%.100s\" must be an absolute path",
                        field, text);
    const char *mopts[8] = {"rbind"};
    size_t n = 1;
    bool ro = false;
    const char *prop = "rprivate";
    if (opts && *opts) {
        char *save = NULL;
        for (char *o = strtok_r(opts, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
            if (strcmp(o, "ro") == 0)
                ro = true;
            else if (strcmp(o, "rw") == 0)
                ro = false;
            else if (strcmp(o, "z") == 0 || strcmp(o, "Z") == 0 || strcmp(o, "consistent") == 0 ||
                     strcmp(o, "cached") == 0 || strcmp(o, "delegated") == 0 ||
                     strcmp(o, "nocopy") == 0)
                continue; /* no SELinux labels here; the others mean nothing on Linux */
            else if (strcmp(o, "private") == 0 || strcmp(o, "rprivate") == 0 ||
                     strcmp(o, "shared") == 0 || strcmp(o, "rshared") == 0 ||
                     strcmp(o, "slave") == 0 || strcmp(o, "rslave") == 0)
                prop = strcmp(o, "private") == 0 ? "rprivate" : o;
            else
                return lerr_set(b->e, -EINVAL, "%s: unknown option \"%.40s\" in \"%.100s\"", field,
                                o, text);
        }
    }
    char path[4200];
    if (src[0] == '/') {
        if (!clean_abs(src))
            return lerr_set(b->e, -EINVAL, "%s: \"%.100s\": bad source path", field, text);
        snprintf(path, sizeof(path), "%s", src);
    } else if (volume_name_ok(src)) {
        snprintf(path, sizeof(path), "%s/%s/_data", b->in->volumes_dir, src);
    } else {
        return lerr_set(b->e, -EINVAL,
                        "%s: \"%.100s\": the source must be an absolute path or a volume name",
                        field, text);
    }
    /* docker creates a missing bind source as a directory */
    if (b->dirs && lstrv_push(b->dirs, path) < 0)
        return -ENOMEM;
    mopts[n++] = ro ? "ro" : "rw";
    mopts[n++] = prop;
    mopts[n] = NULL;
    drop_mount_at(b, dst);
    return add_mount(b, dst, "bind", path, mopts);
}

static int add_tmpfs(struct build *b, const char *dst, const char *opts, const char *field)
{
    if (!clean_abs(dst))
        return lerr_set(b->e, -EINVAL, "%s: \"%.100s\" must be an absolute path", field, dst);
    _cleanup_lstrv_ struct lstrv o = LSTRV_INIT;
    lstrv_push(&o, "nosuid");
    lstrv_push(&o, "nodev");
    lstrv_push(&o, "noexec");
    if (opts && *opts) {
        _cleanup_free_ char *copy = strdup(opts);
        if (!copy)
            return -ENOMEM;
        char *save = NULL;
        for (char *p = strtok_r(copy, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
            /* a later exec/suid/dev undoes the default */
            if (strcmp(p, "exec") == 0 || strcmp(p, "suid") == 0 || strcmp(p, "dev") == 0) {
                char neg[8];
                snprintf(neg, sizeof(neg), "no%s", p);
                for (size_t i = 0; i < o.n; i++)
                    if (strcmp(o.v[i], neg) == 0)
                        o.v[i][0] = 0;
            }
            lstrv_push(&o, p);
        }
    }
    const char *arr[32];
    size_t n = 0;
    for (size_t i = 0; i < o.n && n < ARRAY_SIZE(arr) - 1; i++)
        if (o.v[i][0])
            arr[n++] = o.v[i];
    arr[n] = NULL;
    drop_mount_at(b, dst);
    return add_mount(b, dst, "tmpfs", "tmpfs", arr);
}

static int add_mounts_field(struct build *b)
{
    size_t i;
    json_t *m;
    char field[64];
    json_array_foreach (json_object_get(b->hc, "Mounts"), i, m) {
        snprintf(field, sizeof(field), "HostConfig.Mounts[%zu]", i);
        const char *type = co_str(m, "Type"), *src = co_str(m, "Source"),
                   *dst = co_str(m, "Target");
        bool ro = co_bool(m, "ReadOnly");
        if (!clean_abs(dst))
            return lerr_set(b->e, -EINVAL, "%s.Target: must be an absolute path", field);
        if (lstr_eq(type, "tmpfs")) {
            const json_t *to = json_object_get(m, "TmpfsOptions");
            char opts[128] = "";
            int64_t size = co_int(to, "SizeBytes"), mode = co_int(to, "Mode");
            int k = 0;
            if (size > 0)
                k += snprintf(opts + k, sizeof(opts) - (size_t)k, "size=%" PRId64, size);
            if (mode > 0)
                k += snprintf(opts + k, sizeof(opts) - (size_t)k, "%smode=%" PRIo64, k ? "," : "",
                              mode);
            if (ro)
                snprintf(opts + k, sizeof(opts) - (size_t)k, "%sro", k ? "," : "");
            int r = add_tmpfs(b, dst, opts, field);
            if (r < 0)
                return r;
            continue;
        }
        char path[4200];
        if (lstr_eq(type, "bind")) {
            if (!clean_abs(src))
                return lerr_set(b->e, -EINVAL, "%s.Source: must be an absolute path", field);
            snprintf(path, sizeof(path), "%s", src);
        } else {
            /* a volume: named, or anonymous (this container's) */
            if (src && !volume_name_ok(src))
                return lerr_set(b->e, -EINVAL, "%s.Source: \"%.100s\" is not a volume name", field,
                                src);
            if (src)
                snprintf(path, sizeof(path), "%s/%s/_data", b->in->volumes_dir, src);
            else
                snprintf(path, sizeof(path), "%s/%s-anon%zu/_data", b->in->volumes_dir, b->in->name,
                         i);
            if (b->dirs && lstrv_push(b->dirs, path) < 0)
                return -ENOMEM;
        }
        const json_t *bo = json_object_get(m, "BindOptions");
        const char *prop = co_str(bo, "Propagation");
        if (prop && strcmp(prop, "private") && strcmp(prop, "rprivate") && strcmp(prop, "shared") &&
            strcmp(prop, "rshared") && strcmp(prop, "slave") && strcmp(prop, "rslave"))
            return lerr_set(b->e, -EINVAL, "%s.BindOptions.Propagation: \"%.40s\" is unknown",
                            field, prop);
        const char *opts[] = {co_bool(bo, "NonRecursive") ? "bind" : "rbind", ro ? "ro" : "rw",
                              prop ? prop : "rprivate", NULL};
        drop_mount_at(b, dst);
        int r = add_mount(b, dst, "bind", path, opts);
        if (r < 0)
            return r;
    }
    /* Config.Volumes: anonymous volumes of this container */
    const char *k;
    json_t *v;
    size_t n = 0;
    json_object_foreach ((json_t *)json_object_get(b->co, "Volumes"), k, v) {
        char path[4200];
        if (!clean_abs(k))
            return lerr_set(b->e, -EINVAL, "Volumes: \"%.100s\" must be an absolute path", k);
        snprintf(path, sizeof(path), "%s/%s-vol%zu/_data", b->in->volumes_dir, b->in->name, n++);
        if (b->dirs && lstrv_push(b->dirs, path) < 0)
            return -ENOMEM;
        const char *opts[] = {"rbind", "rw", "rprivate", NULL};
        drop_mount_at(b, k);
        int r = add_mount(b, k, "bind", path, opts);
        if (r < 0)
            return r;
    }
    return 0;
}

static int default_mounts(struct build *b, bool privileged)
{
    char shm[64];
    int64_t shm_size = co_int(b->hc, "ShmSize");
    snprintf(shm, sizeof(shm), "size=%" PRId64, shm_size > 0 ? shm_size : DEFAULT_SHM);
    const char *proc[] = {"nosuid", "noexec", "nodev", NULL};
    const char *dev[] = {"nosuid", "strictatime", "mode=755", "size=65536k", NULL};
    const char *pts[] = {"nosuid",    "noexec", "newinstance", "ptmxmode=0666",
                         "mode=0620", "gid=5",  NULL};
    const char *sys[] = {"nosuid", "noexec", "nodev", privileged ? "rw" : "ro", NULL};
    const char *cg[] = {"nosuid", "noexec", "nodev", privileged ? "rw" : "ro", NULL};
    const char *mq[] = {"nosuid", "noexec", "nodev", NULL};
    const char *shmo[] = {"nosuid", "noexec", "nodev", "mode=1777", shm, NULL};
    int r;
    if ((r = add_mount(b, "/proc", "proc", "proc", proc)) < 0 ||
        (r = add_mount(b, "/dev", "tmpfs", "tmpfs", dev)) < 0 ||
        (r = add_mount(b, "/dev/pts", "devpts", "devpts", pts)) < 0 ||
        (r = add_mount(b, "/sys", "sysfs", "sysfs", sys)) < 0 ||
        (r = add_mount(b, "/sys/fs/cgroup", "cgroup", "cgroup", cg)) < 0 ||
        (r = add_mount(b, "/dev/mqueue", "mqueue", "mqueue", mq)) < 0 ||
        (r = add_mount(b, "/dev/shm", "tmpfs", "shm", shmo)) < 0)
        return r;
    const char *bind_ro[] = {"rbind", "rprivate", "rw", NULL};
    if (b->in->hosts_file &&
        (r = add_mount(b, "/etc/hosts", "bind", b->in->hosts_file, bind_ro)) < 0)
        return r;
    if (b->in->resolv_file &&
        (r = add_mount(b, "/etc/resolv.conf", "bind", b->in->resolv_file, bind_ro)) < 0)
        return r;
    if (b->in->hostname_file &&
        (r = add_mount(b, "/etc/hostname", "bind", b->in->hostname_file, bind_ro)) < 0)
        return r;
    return 0;
}

/* ---- process ---- */

static const char *env_key_end(const char *kv)
{
    const char *eq = strchr(kv, '=');
    return eq ? eq : kv + strlen(kv);
}

/* Put "K=V" into env (array), replacing an entry of the same name. */
static int env_set(json_t *env, const char *kv)
{
    size_t klen = (size_t)(env_key_end(kv) - kv);
    size_t i;
    json_t *v;
    json_array_foreach (env, i, v) {
        const char *s = json_string_value(v);
        if (s && strncmp(s, kv, klen) == 0 && (s[klen] == '=' || s[klen] == 0))
            return json_array_set_new(env, i, json_string(kv));
    }
    return json_array_append_new(env, json_string(kv));
}

static bool env_has(const json_t *env, const char *key)
{
    size_t klen = strlen(key), i;
    json_t *v;
    json_array_foreach (env, i, v) {
        const char *s = json_string_value(v);
        if (s && strncmp(s, key, klen) == 0 && s[klen] == '=')
            return true;
    }
    return false;
}

static int build_env(struct build *b, json_t *env, const char *hostname)
{
    size_t i;
    json_t *v;
    if (!json_is_array(json_object_get(b->img, "Env")) ||
        !env_has(json_object_get(b->img, "Env"), "PATH"))
        if (env_set(env, DEFAULT_PATH) < 0)
            return -ENOMEM;
    if (hostname) {
        char kv[300];
        snprintf(kv, sizeof(kv), "HOSTNAME=%s", hostname);
        env_set(env, kv);
    }
    json_array_foreach (json_object_get(b->img, "Env"), i, v)
        if (json_is_string(v) && env_set(env, json_string_value(v)) < 0)
            return -ENOMEM;
    json_array_foreach (json_object_get(b->co, "Env"), i, v)
        if (json_is_string(v) && env_set(env, json_string_value(v)) < 0)
            return -ENOMEM;
    const char *k;
    json_object_foreach ((json_t *)b->in->env, k, v) {
        _cleanup_free_ char *kv = lstr_printf("%s=%s", k, json_string_value(v) ?: "");
        if (!kv || env_set(env, kv) < 0)
            return -ENOMEM;
    }
    return 0;
}

/* docker's rule: an Entrypoint given replaces the image's and drops its Cmd; Cmd alone replaces
 * the image's Cmd. */
static int build_args(struct build *b, json_t *args)
{
    const json_t *ep = json_object_get(b->co, "Entrypoint");
    const json_t *cmd = json_object_get(b->co, "Cmd");
    const json_t *use_ep = json_is_array(ep) ? ep : json_object_get(b->img, "Entrypoint");
    const json_t *use_cmd = json_is_array(cmd)  ? cmd
                            : json_is_array(ep) ? NULL
                                                : json_object_get(b->img, "Cmd");
    size_t i;
    json_t *v;
    json_array_foreach (use_ep, i, v)
        if (json_is_string(v) && json_array_append(args, v) < 0)
            return -ENOMEM;
    json_array_foreach (use_cmd, i, v)
        if (json_is_string(v) && json_array_append(args, v) < 0)
            return -ENOMEM;
    if (json_array_size(args) == 0)
        return lerr_set(
            b->e, -EINVAL,
            "no command: neither createOptions (Entrypoint, Cmd) nor the image name one");
    return 0;
}

static const char *cap_name(const char *given, char *buf, size_t n)
{
    if (strncasecmp(given, "CAP_", 4) == 0)
        given += 4;
    snprintf(buf, n, "CAP_%s", given);
    for (char *p = buf; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    return buf;
}

static int build_caps(struct build *b, json_t *process, bool privileged)
{
    _cleanup_lstrv_ struct lstrv caps = LSTRV_INIT;
    const char *const *base = privileged ? all_caps : oci_default_caps;
    bool add_all = false, drop_all = false;
    size_t i;
    json_t *v;
    json_array_foreach (json_object_get(b->hc, "CapAdd"), i, v)
        if (lstr_eq_ci(json_string_value(v), "ALL") || lstr_eq_ci(json_string_value(v), "CAP_ALL"))
            add_all = true;
    json_array_foreach (json_object_get(b->hc, "CapDrop"), i, v)
        if (lstr_eq_ci(json_string_value(v), "ALL") || lstr_eq_ci(json_string_value(v), "CAP_ALL"))
            drop_all = true;
    if (add_all)
        base = all_caps;
    if (!drop_all)
        for (const char *const *c = base; *c; c++)
            lstrv_push(&caps, *c);
    char name[64];
    if (!add_all) {
        json_array_foreach (json_object_get(b->hc, "CapAdd"), i, v) {
            const char *s = json_string_value(v);
            if (!s)
                continue;
            cap_name(s, name, sizeof(name));
            if (!in_list(all_caps, name))
                return lerr_set(b->e, -EINVAL,
                                "HostConfig.CapAdd[%zu]: unknown capability \"%.40s\"", i, s);
            if (!lstrv_contains(&caps, name))
                lstrv_push(&caps, name);
        }
    }
    json_array_foreach (json_object_get(b->hc, "CapDrop"), i, v) {
        const char *s = json_string_value(v);
        if (!s || lstr_eq_ci(s, "ALL") || lstr_eq_ci(s, "CAP_ALL"))
            continue;
        cap_name(s, name, sizeof(name));
        if (!in_list(all_caps, name))
            return lerr_set(b->e, -EINVAL, "HostConfig.CapDrop[%zu]: unknown capability \"%.40s\"",
                            i, s);
        for (size_t k = 0; k < caps.n; k++)
            if (strcmp(caps.v[k], name) == 0)
                caps.v[k][0] = 0;
    }
    if (drop_all && !add_all) { /* CapDrop ALL then CapAdd: only what is added */
        json_array_foreach (json_object_get(b->hc, "CapAdd"), i, v) {
            const char *s = json_string_value(v);
            if (s && !lstrv_contains(&caps, cap_name(s, name, sizeof(name))))
                lstrv_push(&caps, name);
        }
    }
    json_t *set = json_array();
    for (size_t k = 0; set && k < caps.n; k++)
        if (caps.v[k][0])
            json_array_append_new(set, json_string(caps.v[k]));
    if (!set)
        return -ENOMEM;
    json_t *c = json_pack("{s:O, s:O, s:O}", "bounding", set, "effective", set, "permitted", set);
    json_decref(set);
    return c && json_object_set_new(process, "capabilities", c) == 0 ? 0 : -ENOMEM;
}

static int build_rlimits(struct build *b, json_t *process)
{
    const json_t *ul = json_object_get(b->hc, "Ulimits");
    if (json_array_size(ul) == 0)
        return 0;
    json_t *arr = json_array();
    if (!arr || json_object_set_new(process, "rlimits", arr) < 0)
        return -ENOMEM;
    static const char *const known[] = {
        "as",     "core",  "cpu", "data",   "fsize",  "locks",      "memlock", "msgqueue", "nice",
        "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack",   NULL};
    size_t i;
    json_t *v;
    json_array_foreach (ul, i, v) {
        const char *n = co_str(v, "Name");
        if (!n || !in_list(known, n))
            return lerr_set(b->e, -EINVAL, "HostConfig.Ulimits[%zu].Name: unknown limit \"%.30s\"",
                            i, n ? n : "");
        char type[40];
        snprintf(type, sizeof(type), "RLIMIT_%s", n);
        for (char *p = type; *p; p++)
            *p = (char)toupper((unsigned char)*p);
        int64_t soft = co_int(v, "Soft"), hard = co_int(v, "Hard");
        if (soft < 0 || hard < 0 || soft > hard)
            return lerr_set(b->e, -EINVAL,
                            "HostConfig.Ulimits[%zu]: Soft and Hard must be >= 0, Soft <= Hard", i);
        if (json_array_append_new(arr, json_pack("{s:s, s:I, s:I}", "type", type, "hard",
                                                 (json_int_t)hard, "soft", (json_int_t)soft)) < 0)
            return -ENOMEM;
    }
    return 0;
}

static int build_process(struct build *b, const char *hostname, bool privileged)
{
    json_t *process = json_object();
    json_t *env = json_array(), *args = json_array();
    if (!process || !env || !args || json_object_set_new(b->spec, "process", process) < 0) {
        json_decref(env);
        json_decref(args);
        return -ENOMEM;
    }
    json_object_set_new(process, "terminal", json_false());
    json_object_set_new(process, "env", env);
    json_object_set_new(process, "args", args);
    int r;
    if ((r = build_args(b, args)) < 0)
        return r;
    const char *cwd = co_str(b->co, "WorkingDir");
    if (!cwd)
        cwd = co_str(b->img, "WorkingDir");
    if (cwd && cwd[0] != '/')
        return lerr_set(b->e, -EINVAL, "WorkingDir: \"%.100s\" must be an absolute path", cwd);
    json_object_set_new(process, "cwd", json_string(cwd ? cwd : "/"));
    /* the user, with the groups /etc/group gives it and GroupAdd */
    const char *user = co_str(b->co, "User");
    if (!user)
        user = co_str(b->img, "User");
    struct oci_user u = {0};
    if (user && (r = b->env->resolve_user(b->env->ud, user, &u, b->e)) < 0)
        return r;
    size_t i;
    json_t *v;
    json_array_foreach (json_object_get(b->hc, "GroupAdd"), i, v) {
        const char *g = json_string_value(v);
        struct oci_user gu;
        char spec[300];
        snprintf(spec, sizeof(spec), "0:%s", g ? g : "");
        if (!g || (r = b->env->resolve_user(b->env->ud, spec, &gu, b->e)) < 0)
            return r < 0 ? r : -EINVAL;
        if (u.n_groups < ARRAY_SIZE(u.groups))
            u.groups[u.n_groups++] = gu.gid;
    }
    json_t *gids = json_array();
    for (size_t k = 0; gids && k < u.n_groups; k++)
        json_array_append_new(gids, json_integer(u.groups[k]));
    json_t *uj = json_pack("{s:I, s:I, s:o}", "uid", (json_int_t)u.uid, "gid", (json_int_t)u.gid,
                           "additionalGids", gids);
    if (!uj || json_object_set_new(process, "user", uj) < 0)
        return -ENOMEM;
    if ((r = build_env(b, env, hostname)) < 0)
        return r;
    if (!env_has(env, "HOME") && (r = env_set(env, u.uid == 0 ? "HOME=/root" : "HOME=/")) < 0)
        return r;
    if ((r = build_caps(b, process, privileged)) < 0 || (r = build_rlimits(b, process)) < 0)
        return r;
    json_array_foreach (json_object_get(b->hc, "SecurityOpt"), i, v) {
        const char *s = json_string_value(v);
        if (lstr_startswith(s, "no-new-privileges") && !lstr_endswith(s, "false"))
            json_object_set_new(process, "noNewPrivileges", json_true());
    }
    if (json_object_get(b->hc, "OomScoreAdj"))
        json_object_set_new(process, "oomScoreAdj",
                            json_integer((json_int_t)co_int(b->hc, "OomScoreAdj")));
    return 0;
}

/* ---- lx ---- */

static int add_device_rule(json_t *rules, bool allow, const char *type, int64_t major,
                           int64_t minor, const char *access)
{
    json_t *r = json_pack("{s:b, s:s}", "allow", allow, "access", access);
    if (!r)
        return -ENOMEM;
    if (type)
        json_object_set_new(r, "type", json_string(type));
    if (major >= 0)
        json_object_set_new(r, "major", json_integer(major));
    if (minor >= 0)
        json_object_set_new(r, "minor", json_integer(minor));
    return json_array_append_new(rules, r);
}

static bool access_ok(const char *a)
{
    return a && *a && strlen(a) <= 3 && strspn(a, "rwm") == strlen(a);
}

static int build_devices(struct build *b, json_t *lx, json_t *res, bool privileged)
{
    json_t *rules = json_array();
    json_t *devs = json_array();
    if (!rules || !devs || json_object_set_new(res, "devices", rules) < 0 ||
        json_object_set_new(lx, "devices", devs) < 0) {
        json_decref(devs);
        return -ENOMEM;
    }
    if (privileged)
        return add_device_rule(rules, true, NULL, -1, -1, "rwm");
    /* Moby's: nothing, then mknod of anything, the standard nodes, ptys and tun. */
    add_device_rule(rules, false, NULL, -1, -1, "rwm");
    add_device_rule(rules, true, "c", -1, -1, "m");
    add_device_rule(rules, true, "b", -1, -1, "m");
    static const int64_t std[][2] = {{1, 3}, {1, 5}, {1, 7}, {5, 0},   {1, 8},
                                     {1, 9}, {5, 1}, {5, 2}, {10, 200}};
    for (size_t i = 0; i < ARRAY_SIZE(std); i++)
        add_device_rule(rules, true, "c", std[i][0], std[i][1], "rwm");
    add_device_rule(rules, true, "c", 136, -1, "rwm");
    size_t i;
    json_t *v;
    json_array_foreach (json_object_get(b->hc, "Devices"), i, v) {
        const char *host = co_str(v, "PathOnHost"), *ctr = co_str(v, "PathInContainer"),
                   *perm = co_str(v, "CgroupPermissions");
        if (!host || host[0] != '/')
            return lerr_set(b->e, -EINVAL,
                            "HostConfig.Devices[%zu].PathOnHost: must be an "
                            "absolute path",
                            i);
        if (!ctr)
            ctr = host;
        if (!clean_abs(ctr))
            return lerr_set(b->e, -EINVAL,
                            "HostConfig.Devices[%zu].PathInContainer: must be an absolute path", i);
        if (!perm)
            perm = "rwm";
        if (!access_ok(perm))
            return lerr_set(b->e, -EINVAL,
                            "HostConfig.Devices[%zu].CgroupPermissions: \"%.10s\" is not r, w, m",
                            i, perm);
        struct oci_device d;
        int r = b->env->stat_device(b->env->ud, host, &d, b->e);
        if (r < 0)
            return lerr_prefix(b->e, "HostConfig.Devices[%zu]", i), r;
        char type[2] = {d.type, 0};
        json_t *dj = json_pack("{s:s, s:s, s:I, s:I, s:I, s:i, s:i}", "path", ctr, "type", type,
                               "major", (json_int_t)d.major, "minor", (json_int_t)d.minor,
                               "fileMode", (json_int_t)(d.mode & 07777), "uid", 0, "gid", 0);
        if (!dj || json_array_append_new(devs, dj) < 0 ||
            add_device_rule(rules, true, type, d.major, d.minor, perm) < 0)
            return -ENOMEM;
    }
    json_array_foreach (json_object_get(b->hc, "DeviceCgroupRules"), i, v) {
        /* "c 1:3 rwm", "a *:* rwm", "b 8:* r" */
        const char *s = json_string_value(v);
        char t, maj[16], min[16], acc[8];
        if (!s || sscanf(s, "%c %15[0-9*]:%15[0-9*] %7s", &t, maj, min, acc) != 4 ||
            (t != 'a' && t != 'b' && t != 'c') || !access_ok(acc))
            return lerr_set(b->e, -EINVAL,
                            "HostConfig.DeviceCgroupRules[%zu]: \"%.40s\" is not \"TYPE "
                            "MAJOR:MINOR ACCESS\"",
                            i, s ? s : "");
        char type[2] = {t, 0};
        if (add_device_rule(rules, true, t == 'a' ? NULL : type,
                            strcmp(maj, "*") ? strtoll(maj, NULL, 10) : -1,
                            strcmp(min, "*") ? strtoll(min, NULL, 10) : -1, acc) < 0)
            return -ENOMEM;
    }
    return 0;
}

static int build_resources(struct build *b, json_t *lx, bool privileged)
{
    json_t *res = json_object();
    if (!res || json_object_set_new(lx, "resources", res) < 0)
        return -ENOMEM;
    int r = build_devices(b, lx, res, privileged);
    if (r < 0)
        return r;
    const json_t *hc = b->hc;
    json_t *mem = json_object(), *cpu = json_object();
    if (!mem || !cpu) {
        json_decref(mem);
        json_decref(cpu);
        return -ENOMEM;
    }
    int64_t limit = co_int(hc, "Memory"), swap = co_int(hc, "MemorySwap");
    if (limit < 0 || (limit > 0 && limit < 6 * 1024 * 1024)) {
        json_decref(mem);
        json_decref(cpu);
        return lerr_set(b->e, -EINVAL, "HostConfig.Memory: at least 6 MB (docker's minimum)");
    }
    if (limit > 0) {
        json_object_set_new(mem, "limit", json_integer(limit));
        /* docker: no MemorySwap means as much swap as memory */
        json_object_set_new(mem, "swap", json_integer(swap == 0 ? 2 * limit : swap));
    } else if (swap != 0) {
        json_object_set_new(mem, "swap", json_integer(swap));
    }
    if (co_int(hc, "MemoryReservation") > 0)
        json_object_set_new(mem, "reservation", json_integer(co_int(hc, "MemoryReservation")));
    json_t *sw = json_object_get(hc, "MemorySwappiness");
    if (json_is_integer(sw) && json_integer_value(sw) >= 0) {
        if (json_integer_value(sw) > 100) {
            json_decref(mem);
            json_decref(cpu);
            return lerr_set(b->e, -EINVAL, "HostConfig.MemorySwappiness: 0..100 (or -1)");
        }
        json_object_set_new(mem, "swappiness", json_integer(json_integer_value(sw)));
    }
    if (co_bool(hc, "OomKillDisable"))
        json_object_set_new(mem, "disableOOMKiller", json_true());
    int64_t nano = co_int(hc, "NanoCpus"), quota = co_int(hc, "CpuQuota"),
            period = co_int(hc, "CpuPeriod");
    if (nano && (quota || period)) {
        json_decref(mem);
        json_decref(cpu);
        return lerr_set(b->e, -EINVAL,
                        "HostConfig.NanoCpus: cannot be combined with CpuQuota or CpuPeriod");
    }
    if (nano < 0) {
        json_decref(mem);
        json_decref(cpu);
        return lerr_set(b->e, -EINVAL, "HostConfig.NanoCpus: must be positive");
    }
    if (nano > 0) {
        period = 100000;
        quota = nano * period / 1000000000;
    }
    if (quota)
        json_object_set_new(cpu, "quota", json_integer(quota));
    if (period)
        json_object_set_new(cpu, "period", json_integer(period));
    if (co_int(hc, "CpuShares") > 0)
        json_object_set_new(cpu, "shares", json_integer(co_int(hc, "CpuShares")));
    if (co_int(hc, "CpuRealtimePeriod") > 0)
        json_object_set_new(cpu, "realtimePeriod", json_integer(co_int(hc, "CpuRealtimePeriod")));
    if (co_int(hc, "CpuRealtimeRuntime") > 0)
        json_object_set_new(cpu, "realtimeRuntime", json_integer(co_int(hc, "CpuRealtimeRuntime")));
    if (co_str(hc, "CpusetCpus"))
        json_object_set_new(cpu, "cpus", json_string(co_str(hc, "CpusetCpus")));
    if (co_str(hc, "CpusetMems"))
        json_object_set_new(cpu, "mems", json_string(co_str(hc, "CpusetMems")));
    if (json_object_size(mem))
        json_object_set_new(res, "memory", mem);
    else
        json_decref(mem);
    if (json_object_size(cpu))
        json_object_set_new(res, "cpu", cpu);
    else
        json_decref(cpu);
    int64_t pids = co_int(hc, "PidsLimit");
    if (pids > 0)
        json_object_set_new(res, "pids", json_pack("{s:I}", "limit", (json_int_t)pids));
    int64_t bw = co_int(hc, "BlkioWeight");
    if (bw) {
        if (bw < 10 || bw > 1000)
            return lerr_set(b->e, -EINVAL, "HostConfig.BlkioWeight: 10..1000");
        json_object_set_new(res, "blockIO", json_pack("{s:I}", "weight", (json_int_t)bw));
    }
    return 0;
}

static int build_linux(struct build *b, bool privileged)
{
    const struct oci_spec_input *in = b->in;
    json_t *lx = json_object(), *ns = json_array();
    if (!lx || !ns || json_object_set_new(b->spec, "linux", lx) < 0 ||
        json_object_set_new(lx, "namespaces", ns) < 0) {
        json_decref(ns);
        return -ENOMEM;
    }
    const json_t *hc = b->hc;
    json_array_append_new(ns, json_pack("{s:s}", "type", "mount"));
    if (!lstr_eq(co_str(hc, "PidMode"), "host"))
        json_array_append_new(ns, json_pack("{s:s}", "type", "pid"));
    if (!lstr_eq(co_str(hc, "IpcMode"), "host"))
        json_array_append_new(ns, json_pack("{s:s}", "type", "ipc"));
    if (!lstr_eq(co_str(hc, "UTSMode"), "host"))
        json_array_append_new(ns, json_pack("{s:s}", "type", "uts"));
    if (lstr_eq(co_str(hc, "CgroupnsMode"), "private"))
        json_array_append_new(ns, json_pack("{s:s}", "type", "cgroup"));
    if (in->netmode != OCI_NET_HOST) {
        json_t *n = json_pack("{s:s}", "type", "network");
        if (n && in->netns)
            json_object_set_new(n, "path", json_string(in->netns));
        json_array_append_new(ns, n);
    }
    bool userns = in->userns && !lstr_eq(co_str(hc, "UsernsMode"), "host") && !privileged;
    if (userns) {
        json_array_append_new(ns, json_pack("{s:s}", "type", "user"));
        json_t *map = json_pack("[{s:i, s:I, s:I}]", "containerID", 0, "hostID",
                                (json_int_t)in->userns_base, "size", (json_int_t)in->userns_size);
        json_object_set_new(lx, "uidMappings", map);
        json_object_set_new(lx, "gidMappings", json_deep_copy(map));
    }
    if (in->cgroups_path) {
        const char *parent = co_str(hc, "CgroupParent");
        char path[1024];
        if (parent) {
            if (parent[0] != '/' || strstr(parent, ".."))
                return lerr_set(b->e, -EINVAL,
                                "HostConfig.CgroupParent: \"%.100s\" must be an absolute path",
                                parent);
            const char *leaf = strrchr(in->cgroups_path, '/');
            snprintf(path, sizeof(path), "%s%s", parent, leaf ? leaf : in->cgroups_path);
        } else {
            snprintf(path, sizeof(path), "%s", in->cgroups_path);
        }
        json_object_set_new(lx, "cgroupsPath", json_string(path));
    }
    int r = build_resources(b, lx, privileged);
    if (r < 0)
        return r;
    const char *k;
    json_t *v;
    const json_t *sysctls = json_object_get(hc, "Sysctls");
    if (json_object_size(sysctls)) {
        json_t *s = json_object();
        json_object_set_new(lx, "sysctl", s);
        json_object_foreach ((json_t *)sysctls, k, v) {
            if (in->netmode == OCI_NET_HOST && lstr_startswith(k, "net."))
                return lerr_set(b->e, -EINVAL,
                                "HostConfig.Sysctls.%.60s: not with the host's network (it would "
                                "change the host's)",
                                k);
            json_object_set(s, k, v);
        }
    }
    if (!privileged) {
        const json_t *mp = json_object_get(hc, "MaskedPaths"),
                     *rp = json_object_get(hc, "ReadonlyPaths");
        json_t *m = json_is_array(mp) ? json_deep_copy(mp) : json_array();
        json_t *ro = json_is_array(rp) ? json_deep_copy(rp) : json_array();
        for (size_t i = 0; !json_is_array(mp) && masked_paths[i]; i++)
            json_array_append_new(m, json_string(masked_paths[i]));
        for (size_t i = 0; !json_is_array(rp) && readonly_paths[i]; i++)
            json_array_append_new(ro, json_string(readonly_paths[i]));
        json_object_set_new(lx, "maskedPaths", m);
        json_object_set_new(lx, "readonlyPaths", ro);
    }
    bool no_seccomp = false;
    size_t i;
    json_array_foreach (json_object_get(hc, "SecurityOpt"), i, v) {
        const char *s = json_string_value(v);
        if (lstr_eq(s, "seccomp=unconfined") || lstr_eq(s, "seccomp:unconfined"))
            no_seccomp = true;
    }
    if (!privileged && !no_seccomp && in->seccomp_arch) {
        json_t *sc = oci_seccomp_profile(
            in->seccomp_arch, json_object_get(json_object_get(b->spec, "process"), "capabilities"));
        if (!sc)
            return -ENOMEM;
        json_object_set_new(lx, "seccomp", sc);
    }
    return 0;
}

int oci_spec_build(const struct oci_spec_input *in, const struct oci_spec_env *env,
                   json_t **ret_config, struct lstrv *ret_dirs, struct lerr *e)
{
    struct build b = {.in = in,
                      .env = env,
                      .co = in->create_options,
                      .hc = hc_of(in->create_options),
                      .img = json_object_get(in->image_config, "config"),
                      .dirs = ret_dirs,
                      .e = e};
    _cleanup_json_ json_t *spec = json_pack("{s:s}", "ociVersion", "1.0.2");
    json_t *mounts = json_array();
    if (!spec || !mounts || json_object_set_new(spec, "mounts", mounts) < 0) {
        json_decref(mounts);
        return -ENOMEM;
    }
    b.spec = spec;
    b.mounts = mounts;
    bool privileged = co_bool(b.hc, "Privileged");
    const char *hostname = co_str(b.co, "Hostname");
    if (!hostname)
        hostname = in->hostname;
    if (hostname && (strlen(hostname) > 253 || strpbrk(hostname, " \t\n/")))
        return lerr_set(e, -EINVAL, "Hostname: \"%.80s\" is not a host name", hostname);
    json_object_set_new(
        spec, "root",
        json_pack("{s:s, s:b}", "path", "rootfs", "readonly", co_bool(b.hc, "ReadonlyRootfs")));
    if (hostname && !lstr_eq(co_str(b.hc, "UTSMode"), "host"))
        json_object_set_new(spec, "hostname", json_string(hostname));
    const char *domain = co_str(b.co, "Domainname");
    if (domain)
        json_object_set_new(spec, "domainname", json_string(domain));
    int r;
    if ((r = default_mounts(&b, privileged)) < 0 ||
        (r = build_process(&b, hostname, privileged)) < 0)
        return r;
    size_t i;
    json_t *v;
    char field[64];
    json_array_foreach (json_object_get(b.hc, "Binds"), i, v) {
        snprintf(field, sizeof(field), "HostConfig.Binds[%zu]", i);
        if (json_is_string(v) && (r = add_bind(&b, json_string_value(v), field)) < 0)
            return r;
    }
    if ((r = add_mounts_field(&b)) < 0)
        return r;
    const char *k;
    json_object_foreach ((json_t *)json_object_get(b.hc, "Tmpfs"), k, v) {
        snprintf(field, sizeof(field), "HostConfig.Tmpfs");
        if ((r = add_tmpfs(&b, k, json_string_value(v), field)) < 0)
            return r;
    }
    json_array_foreach (in->binds, i, v) {
        if (json_is_string(v) && (r = add_bind(&b, json_string_value(v), "binds")) < 0)
            return r;
    }
    if ((r = build_linux(&b, privileged)) < 0)
        return r;
    const json_t *ann = json_object_get(b.hc, "Annotations");
    if (json_object_size(ann))
        json_object_set(spec, "annotations", (json_t *)ann);
    *ret_config = TAKE_PTR(spec);
    return 0;
}

/* ------------------------------------------------------------------ small readers */

int oci_spec_port_mappings(const json_t *co, json_t **ret, struct lerr *e)
{
    json_t *arr = json_array();
    if (!arr)
        return -ENOMEM;
    const char *k;
    json_t *v;
    json_object_foreach ((json_t *)json_object_get(hc_of(co), "PortBindings"), k, v) {
        /* "80/tcp", "53/udp", "8080" */
        const char *proto = "tcp";
        unsigned port;
        char rest[16] = "";
        int n = sscanf(k, "%u%15s", &port, rest);
        if (n >= 2 && rest[0] == '/' &&
            (strcmp(rest, "/tcp") == 0 || strcmp(rest, "/udp") == 0 || strcmp(rest, "/sctp") == 0))
            proto = rest + 1;
        else if (n != 1 || port == 0 || port > 65535) {
            json_decref(arr);
            return lerr_set(e, -EINVAL,
                            "HostConfig.PortBindings.%.30s: not PORT or PORT/tcp|udp|sctp", k);
        }
        size_t i;
        json_t *bnd;
        json_array_foreach (v, i, bnd) {
            const char *hp = co_str(bnd, "HostPort"), *hip = co_str(bnd, "HostIp");
            unsigned long host = hp ? strtoul(hp, NULL, 10) : 0;
            if (!hp || host == 0 || host > 65535 || strspn(hp, "0123456789") != strlen(hp)) {
                json_decref(arr);
                return lerr_set(e, -EINVAL,
                                "HostConfig.PortBindings.%.30s[%zu].HostPort: the oci engine "
                                "needs a port number (1..65535; no ranges, no random ports)",
                                k, i);
            }
            json_t *m = json_pack("{s:I, s:I, s:s}", "hostPort", (json_int_t)host, "containerPort",
                                  (json_int_t)port, "protocol", proto);
            if (m && hip && strcmp(hip, "0.0.0.0") != 0)
                json_object_set_new(m, "hostIP", json_string(hip));
            if (!m || json_array_append_new(arr, m) < 0) {
                json_decref(arr);
                return -ENOMEM;
            }
        }
    }
    *ret = arr;
    return 0;
}

int oci_spec_extra_hosts(const json_t *co, const char *gateway, struct lbuf *out, struct lerr *e)
{
    size_t i;
    json_t *v;
    json_array_foreach (json_object_get(hc_of(co), "ExtraHosts"), i, v) {
        const char *s = json_string_value(v);
        /* "name:addr"; an IPv6 address has colons of its own: split at the first */
        const char *colon = s ? strchr(s, ':') : NULL;
        if (!colon || colon == s || !colon[1] || strpbrk(s, " \t\n"))
            return lerr_set(e, -EINVAL, "HostConfig.ExtraHosts[%zu]: \"%.80s\" is not name:address",
                            i, s ? s : "");
        const char *addr = colon + 1;
        if (strcmp(addr, "host-gateway") == 0) {
            if (!gateway)
                return lerr_set(e, -EINVAL,
                                "HostConfig.ExtraHosts[%zu]: host-gateway needs the module network",
                                i);
            addr = gateway;
        }
        lbuf_printf(out, "%s\t%.*s\n", addr, (int)(colon - s), s);
    }
    return 0;
}

int oci_spec_stop_signal(const json_t *co, const json_t *image_config)
{
    const char *s = co_str(co, "StopSignal");
    if (!s)
        s = co_str(json_object_get(image_config, "config"), "StopSignal");
    if (!s)
        return SIGTERM;
    if (isdigit((unsigned char)s[0])) {
        long n = strtol(s, NULL, 10);
        return n > 0 && n < 65 ? (int)n : SIGTERM;
    }
    if (strncasecmp(s, "SIG", 3) == 0)
        s += 3;
    static const struct {
        const char *name;
        int sig;
    } sigs[] = {{"TERM", SIGTERM}, {"INT", SIGINT},     {"QUIT", SIGQUIT},
                {"KILL", SIGKILL}, {"HUP", SIGHUP},     {"USR1", SIGUSR1},
                {"USR2", SIGUSR2}, {"WINCH", SIGWINCH}, {"PWR", SIGPWR}};
    for (size_t i = 0; i < ARRAY_SIZE(sigs); i++)
        if (strcasecmp(s, sigs[i].name) == 0)
            return sigs[i].sig;
    return SIGTERM;
}

/* docker's rule: the user's Healthcheck fields over the image's; durations in nanoseconds;
 * defaults 30 s, 30 s, 3 retries, no start period. */
int oci_spec_health(const json_t *co, const json_t *image_config, struct oci_health *ret)
{
    const json_t *img = json_object_get(json_object_get(image_config, "config"), "Healthcheck");
    const json_t *usr = json_object_get(co, "Healthcheck");
    memset(ret, 0, sizeof(*ret));
    const json_t *test = json_object_get(usr, "Test");
    if (json_array_size(test) == 0)
        test = json_object_get(img, "Test");
    const char *t0 = json_string_value(json_array_get(test, 0));
    if (!t0 || lstr_eq(t0, "NONE") || json_array_size(test) < 2)
        return 0;
    if (!lstr_eq(t0, "CMD") && !lstr_eq(t0, "CMD-SHELL"))
        return 0;
    ret->test = json_deep_copy(test);
    if (!ret->test)
        return -ENOMEM;
    const char *keys[] = {"Interval", "Timeout", "StartPeriod"};
    int64_t *dst[] = {&ret->interval_ms, &ret->timeout_ms, &ret->start_period_ms};
    const int64_t dflt[] = {30000, 30000, 0};
    for (size_t i = 0; i < 3; i++) {
        int64_t ns = co_int(usr, keys[i]);
        if (ns <= 0)
            ns = co_int(img, keys[i]);
        *dst[i] = ns > 0 ? MAX(ns / 1000000, 1) : dflt[i];
    }
    int64_t retries = co_int(usr, "Retries");
    if (retries <= 0)
        retries = co_int(img, "Retries");
    ret->retries = retries > 0 ? (int)MIN(retries, 1000) : 3;
    return 1;
}
