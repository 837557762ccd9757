/* check.c — the table of checks, the run context, and the one place the checks talk to the
 * container engine (engine.type's backend through the engine layer, asked once per run). Adding
 * a check is a row here and a function in the file of its group. */
#include "check/check.h"

#include <errno.h>
#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "check-internal.h"

#define ENGINE_TIMEOUT_MS 10000
#define HOST_FILE_MAX (1u << 20)

static const struct check_def checks[] = {
    {"config-file", "configuration", "the configuration file is well-formed", check_config_file, 0},
    {"state-dir", "configuration", "the state directory is writable", check_state_dir,
     CHECK_NEEDS_CONFIG},
    {"hostname", "configuration", "host names are valid (RFC 1123, at most 64 characters)",
     check_hostname, 0},
    {"os", "host", "the operating system is supported (tier)", check_os, 0},
    {"architecture", "host", "the CPU architecture is supported", check_architecture, 0},
    {"memory", "host", "enough memory is available", check_memory, 0},
    {"disk", "host", "enough disk space is free for the state and the engine", check_disk,
     CHECK_NEEDS_CONFIG},
    {"virtualization", "host", "bare metal, virtual machine or container", check_virtualization, 0},
    {"kvm", "host", "KVM is usable (for ledge vm), nested virtualisation", check_kvm, 0},
    {"cgroups", "host", "cgroup version and memory controller", check_cgroups, 0},
    {"clock", "host", "the clock agrees with an NTP server", check_clock, 0},
    {"engine", "engine", "the container engine is reachable", check_engine, CHECK_NEEDS_CONFIG},
    {"engine-version", "engine",
     "the engine's API version meets ledge's minimum and the deployment's minDockerVersion",
     check_engine_version, CHECK_NEEDS_CONFIG},
    {"engine-product", "engine", "the engine is Moby (recommended), Docker or Podman",
     check_engine_product, CHECK_NEEDS_CONFIG},
    {"log-rotation", "engine", "container logs are rotated", check_log_rotation,
     CHECK_NEEDS_CONFIG},
    {"oci-runtime", "engine",
     "the oci engine's OCI runtime (crun or runc) is installed and fits the host's cgroups",
     check_oci_runtime, CHECK_NEEDS_CONFIG},
    {"oci-kernel", "engine",
     "the kernel has what the oci engine uses: overlayfs, cgroups, namespaces (user namespaces "
     "with engine.userns)",
     check_oci_kernel, CHECK_NEEDS_CONFIG},
    {"oci-network", "engine", "the CNI plugins and iptables of the oci engine's module network",
     check_oci_network, CHECK_NEEDS_CONFIG},
    {"module-platforms", "deployment",
     "every module's image matches the host's OS family and architecture", check_module_platforms,
     CHECK_NEEDS_CONFIG},
    {"upstream-registry", "deployment",
     "images named $upstream reach the parent's registry proxy (upstream.parent, trust)",
     check_upstream_registry, CHECK_NEEDS_CONFIG},
    {"edge-ca", "certificates", "the edge CA certificate is valid and not about to expire",
     check_edge_ca, CHECK_NEEDS_CONFIG},
    {"hub-server-cert", "certificates",
     "the hub's server certificate is valid and not about to expire", check_hub_cert,
     CHECK_NEEDS_CONFIG},
    {"hub-ports", "connectivity", "the hub's ports are free or held by the hub", check_hub_ports,
     CHECK_NEEDS_CONFIG},
    {"upstream", "connectivity", "the upstream IoT Hub is reachable (TCP and TLS)", check_upstream,
     CHECK_NEEDS_CONFIG},
    {"vm-qemu", "vm", "QEMU is installed for the VMs' architectures", check_vm_qemu,
     CHECK_NEEDS_VMS},
    {"vm-accel", "vm", "KVM, or software emulation, for the VMs", check_vm_accel, CHECK_NEEDS_VMS},
    {"vm-memory", "vm", "enough memory is available for the VMs", check_vm_memory, CHECK_NEEDS_VMS},
    {"vm-disk", "vm", "enough disk space is free for the VMs' disks", check_vm_disk,
     CHECK_NEEDS_VMS},
    {"vm-build", "vm", "guest images can be built (debootstrap, mkfs.ext4, cpio)", check_vm_build,
     CHECK_NEEDS_VMS},
    {"vm-build-foreign", "vm", "images of another architecture can be built (qemu-user)",
     check_vm_build_foreign, CHECK_NEEDS_VMS},
    {"vm-cache", "vm", "the image cache has room to build an image", check_vm_cache,
     CHECK_NEEDS_VMS},
};

const struct check_def *check_table(size_t *ret_n)
{
    *ret_n = ARRAY_SIZE(checks);
    return checks;
}

const struct check_def *check_find(const char *id)
{
    for (size_t i = 0; i < ARRAY_SIZE(checks); i++)
        if (lstr_eq(checks[i].id, id))
            return &checks[i];
    return NULL;
}

const char *check_result_name(enum check_result r)
{
    static const char *const names[] = {"ok", "warning", "error", "skipped"};
    return (unsigned)r < ARRAY_SIZE(names) ? names[r] : "?";
}

/* ------------------------------------------------------------------ reports */

void check_report_clear(struct check_report *rep)
{
    free(rep->message);
    free(rep->fix);
    memset(rep, 0, sizeof(*rep));
}

void check_report_set(struct check_report *rep, enum check_result result, const char *fix,
                      const char *fmt, ...)
{
    check_report_clear(rep);
    rep->result = result;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&rep->message, fmt, ap) < 0)
        rep->message = NULL;
    va_end(ap);
    rep->fix = fix ? strdup(fix) : NULL;
}

json_t *check_report_json(const struct check_def *def, const struct check_report *rep)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s?, s:s?}", "id", def->id, "group", def->group,
                     "description", def->description, "result", check_result_name(rep->result),
                     "message", rep->message, "fix", rep->fix);
}

int check_read_host_file(const char *path, char **ret, size_t *ret_len)
{
    return lfs_read_file(path, HOST_FILE_MAX, ret, ret_len);
}

/* ------------------------------------------------------------------ context and runner */

int check_ctx_new(const struct check_inputs *in, struct check_ctx **ret)
{
    struct check_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return -ENOMEM;
    ctx->in = in;
    ctx->cfg = in->config;
    ctx->host_r = in->machine ? platform_normalize("linux", in->machine, NULL, &ctx->host)
                              : platform_host(&ctx->host);
    *ret = ctx;
    return 0;
}

void check_ctx_free(struct check_ctx *ctx)
{
    if (!ctx)
        return;
    engine_free(ctx->engine);
    if (ctx->engine_base)
        event_base_free(ctx->engine_base);
    check_vms_free(ctx);
    free(ctx);
}

void check_run(struct check_ctx *ctx, const struct check_def *def, struct check_report *rep)
{
    memset(rep, 0, sizeof(*rep));
    if ((def->flags & CHECK_NEEDS_CONFIG) && ctx->in->config_status < 0) {
        check_report_skip(rep, "the configuration file is not valid (see config-file)");
        return;
    }
    if ((def->flags & CHECK_NEEDS_VMS) && !check_vms_apply(ctx, rep))
        return;
    def->run(ctx, rep);
    if (!rep->message) /* out of memory while reporting */
        check_report_set(rep, CHECK_ERROR, NULL, "out of memory");
}

/* ------------------------------------------------------------------ whole runs */

int check_run_all(const struct check_inputs *in, const char *group, struct check_results *ret)
{
    struct check_results r = {0};
    r.defs = calloc(ARRAY_SIZE(checks), sizeof(*r.defs));
    r.reports = calloc(ARRAY_SIZE(checks), sizeof(*r.reports));
    _cleanup_(check_ctx_freep) struct check_ctx *ctx = NULL;
    if (!r.defs || !r.reports || check_ctx_new(in, &ctx) < 0) {
        check_results_clear(&r);
        return -ENOMEM;
    }
    for (size_t i = 0; i < ARRAY_SIZE(checks); i++) {
        if (group && !lstr_eq(checks[i].group, group))
            continue;
        r.defs[r.n] = &checks[i];
        check_run(ctx, &checks[i], &r.reports[r.n]);
        r.count[r.reports[r.n].result]++;
        r.n++;
    }
    *ret = r;
    return 0;
}

void check_results_clear(struct check_results *r)
{
    if (!r)
        return;
    for (size_t i = 0; r->reports && i < r->n; i++)
        check_report_clear(&r->reports[i]);
    free(r->reports);
    free(r->defs);
    memset(r, 0, sizeof(*r));
}

int check_results_exit_code(const struct check_results *r, bool warnings_as_errors)
{
    return r->count[CHECK_ERROR] || (warnings_as_errors && r->count[CHECK_WARNING]) ? 1 : 0;
}

json_t *check_results_json(const struct check_results *r, const char *config_path,
                           const char *deployment, bool warnings_as_errors)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < r->n; i++)
        json_array_append_new(arr, check_report_json(r->defs[i], &r->reports[i]));
    return json_pack(
        "{s:s, s:s, s:s?, s:o, s:{s:I, s:I, s:I, s:I}, s:i}", "version", LEDGE_VERSION, "config",
        config_path, "deployment", deployment, "checks", arr, "summary", "ok",
        (json_int_t)r->count[CHECK_OK], "warning", (json_int_t)r->count[CHECK_WARNING], "error",
        (json_int_t)r->count[CHECK_ERROR], "skipped", (json_int_t)r->count[CHECK_SKIPPED],
        "exitCode", check_results_exit_code(r, warnings_as_errors));
}

/* ------------------------------------------------------------------ the engine */

/* The checks ask the engine that runs container modules (engine.type) through the engine
 * layer, on a private event loop run until each call completes (engine_wait): one engine per
 * run, made on first use. */

struct version_call {
    bool done;
    int r;
    bool have_version;
    struct engine_version v;
    struct lerr err;
};

static void version_cb(void *ud, int result, const struct engine_version *v, const struct lerr *err)
{
    struct version_call *c = ud;
    c->r = result;
    if (v) {
        c->v = *v;
        c->have_version = true;
    }
    if (err)
        c->err = *err;
    c->done = true;
}

/* Why the engine is not there, for the engine check: the message and how to fix it. */
static void engine_unreachable(struct check_ctx *ctx, const struct lerr *err)
{
    const char *uri = ctx->cfg->engine.uri;
    int r = err->code ? err->code : -EIO;
    const char *fix;
    switch (r) {
    case -EHOSTDOWN: /* no socket at the path */
        lerr_set(&ctx->engine_err, r, "no container engine socket at %s", uri);
        fix = "start the engine (Debian: `sudo apt install docker.io` installs Moby, then "
              "`sudo systemctl enable --now docker`), or point engine.uri at it";
        break;
    case -EACCES:
    case -EPERM:
        lerr_set(&ctx->engine_err, r, "permission denied on %s", uri);
        fix = "run `ledge check` as root (ledged runs as root), or as a member of the engine's "
              "socket group (docker)";
        break;
    case -ETIMEDOUT:
        lerr_set(&ctx->engine_err, r, "the container engine at %s did not answer in time", uri);
        fix = "see the engine's log (`journalctl -u docker`); restart it if it hangs";
        break;
    case -EPROTO:
        lerr_set(&ctx->engine_err, r, "%s answered GET /version, but not as a Docker Engine API",
                 uri);
        fix = "point engine.uri at a Moby, Docker or Podman API socket";
        break;
    case -EIO: /* it answered with a server error */
        lerr_set(&ctx->engine_err, r, "the container engine at %s failed: %s", uri, lerr_str(err));
        fix = "see the engine's log (`journalctl -u docker`)";
        break;
    default:
        lerr_set(&ctx->engine_err, r, "cannot reach the container engine at %s: %s", uri,
                 lerr_str(err));
        fix = "start the engine (`sudo systemctl start docker`) or correct engine.uri";
        break;
    }
    ctx->engine_fix = fix;
}

int check_engine_ask(struct check_ctx *ctx)
{
    if (ctx->engine_asked)
        return ctx->engine_r;
    ctx->engine_asked = true;
    const struct ledge_config *cfg = ctx->cfg;
    const struct engine_ops *ops = engine_ops_find(cfg->engine.type);
    if (!ops || ops->runs != ENGINE_RUNS_IMAGES) {
        lerr_set(&ctx->engine_err, -EINVAL,
                 "engine.type \"%s\" is not a container engine of this ledge", cfg->engine.type);
        ctx->engine_fix = "set engine.type to docker";
        return ctx->engine_r = -EINVAL;
    }
    long timeout = ctx->in->engine_timeout_ms > 0 ? ctx->in->engine_timeout_ms : ENGINE_TIMEOUT_MS;
    struct lerr init_err = {0};
    struct engine_config ec = {
        .uri = cfg->engine.uri,
        .instance = cfg->device.id,
        .state_dir = cfg->state_dir,
        .run_dir = cfg->run_dir,
        .runtime = cfg->engine.runtime,
        .network = cfg->engine.network,
        .subnet = cfg->engine.subnet,
        .cni_path = cfg->engine.cni_path,
        .userns = cfg->engine.userns,
        .request_timeout_ms = timeout,
        .pull_timeout_ms = timeout,
        .init_error = &init_err,
    };
    struct version_call vc = {0};
    int r;
    if (!(ctx->engine_base = event_base_new())) {
        lerr_set(&ctx->engine_err, -ENOMEM, "out of memory");
        return ctx->engine_r = -ENOMEM;
    }
    if ((r = engine_new(ops, ctx->engine_base, &ec, &ctx->engine)) < 0) {
        /* An engine of ledge's own that cannot start here (oci: no runtime): its checks say
         * what to do. */
        lerr_set(&ctx->engine_err, r, "the %s engine cannot start: %s", cfg->engine.type,
                 init_err.msg[0] ? init_err.msg : strerror(-r));
        ctx->engine_fix = "see the oci-runtime, oci-kernel and oci-network checks";
        return ctx->engine_r = r;
    }
    r = ops->version(ctx->engine, version_cb, &vc);
    if (r == 0)
        r = engine_wait(ctx->engine, &vc.done);
    if (r < 0)
        lerr_set(&vc.err, r, "the engine call did not complete: %s", strerror(-r));
    /* An engine too old for ledge is still there: engine-version says what is wrong. */
    if (r < 0 || !vc.have_version) {
        engine_unreachable(ctx, &vc.err);
        return ctx->engine_r = ctx->engine_err.code;
    }
    ctx->version = vc.v;
    return ctx->engine_r = 0;
}

struct platform_call {
    bool done;
    int r;
    struct lerr err;
    struct check_platform *v;
    size_t max, n;
};

static void copy_platform(struct check_platform *p, const char *os, const char *arch,
                          const char *variant)
{
    lstr_copy(p->os, sizeof(p->os), os ? os : "");
    lstr_copy(p->arch, sizeof(p->arch), arch ? arch : "");
    lstr_copy(p->variant, sizeof(p->variant), variant ? variant : "");
}

static void platform_cb(void *ud, int result, const char *os, const char *arch, const char *variant,
                        const struct lerr *err)
{
    struct platform_call *c = ud;
    c->r = result;
    if (result == 0) {
        copy_platform(&c->v[0], os, arch, variant);
        c->n = 1;
    } else if (err) {
        c->err = *err;
    }
    c->done = true;
}

static void platforms_cb(void *ud, int result, const struct engine_platform *v, size_t n,
                         const struct lerr *err)
{
    struct platform_call *c = ud;
    c->r = result;
    for (size_t i = 0; result == 0 && i < n && c->n < c->max; i++)
        copy_platform(&c->v[c->n++], v[i].os, v[i].arch, v[i].variant);
    if (result < 0 && err)
        c->err = *err;
    c->done = true;
}

/* Wait for a call that started with r (its callback fills c). */
static int platform_wait(struct check_ctx *ctx, struct platform_call *c, int r, struct lerr *err)
{
    if (r == 0)
        r = engine_wait(ctx->engine, &c->done);
    if (r < 0)
        return lerr_set(err, r, "the engine call did not complete: %s", strerror(-r));
    if (c->r < 0) {
        *err = c->err;
        return c->r;
    }
    return 0;
}

int check_engine_image_platform(struct check_ctx *ctx, const char *image,
                                struct check_platform *ret, struct lerr *err)
{
    if (!ctx->engine->ops->image_platform)
        return lerr_set(err, -EOPNOTSUPP, "the engine does not tell images' platforms");
    struct platform_call c = {.v = ret, .max = 1};
    int r = ctx->engine->ops->image_platform(ctx->engine, image, platform_cb, &c);
    return platform_wait(ctx, &c, r, err);
}

int check_engine_registry_platforms(struct check_ctx *ctx, const char *image,
                                    const struct engine_registry_auth *auth,
                                    struct check_platform *ret, size_t max, size_t *ret_n,
                                    struct lerr *err)
{
    if (!ctx->engine->ops->registry_platforms)
        return lerr_set(err, -EOPNOTSUPP, "the engine cannot ask registries");
    struct platform_call c = {.v = ret, .max = max};
    int r = ctx->engine->ops->registry_platforms(ctx->engine, image, auth, platforms_cb, &c);
    if ((r = platform_wait(ctx, &c, r, err)) < 0)
        return r;
    *ret_n = c.n;
    return 0;
}
