/* check.c — the table of checks, the run context, and the one place the checks talk to the
 * container engine (the Docker Engine API over engine.uri, asked once per run). Adding a check
 * is a row here and a function in the file of its group. */
#include "check/check.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "check/check-internal.h"
#include "engine/docker_json.h"
#include "net/http_client.h"

#define ENGINE_TIMEOUT_MS 10000
#define ENGINE_MAX_RESPONSE (4u << 20)
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
    {"module-platforms", "deployment",
     "every module's image matches the host's OS family and architecture", check_module_platforms,
     CHECK_NEEDS_CONFIG},
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
    json_decref(ctx->info);
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

/* engine.uri is validated by the config loader: unix:///path or http://host:port. */
static int engine_endpoint(const char *uri, const char **ret_socket, char *origin, size_t size)
{
    if (lstr_startswith(uri, "unix://")) {
        *ret_socket = uri + strlen("unix://");
        snprintf(origin, size, "http://localhost");
        return 0;
    }
    *ret_socket = NULL;
    return lstr_copy(origin, size, uri);
}

int check_engine_get(struct check_ctx *ctx, const char *path, const char *const *headers,
                     long *ret_status, json_t **ret)
{
    const char *sock;
    char url[2048];
    if (engine_endpoint(ctx->cfg->engine.uri, &sock, url, sizeof(url) / 2) < 0)
        return -EINVAL;
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
        url[--n] = 0;
    if (lstr_copy(url + n, sizeof(url) - n, path) < 0)
        return -ENAMETOOLONG;
    struct hc_request req = {
        .method = "GET",
        .unix_socket = sock,
        .url = url,
        .headers = headers,
        .timeout_ms =
            ctx->in->engine_timeout_ms > 0 ? ctx->in->engine_timeout_ms : ENGINE_TIMEOUT_MS,
        .connect_timeout_ms = 5000,
        .max_response = ENGINE_MAX_RESPONSE,
    };
    _cleanup_lbuf_ struct lbuf body = LBUF_INIT;
    long status = 0;
    int r = hc_request_sync(&req, &status, &body);
    if (r < 0)
        return r;
    json_t *j = NULL;
    if (body.len > 0 && ljson_parse(body.data, body.len, &j, NULL) < 0)
        j = NULL; /* not JSON: the status says enough */
    *ret_status = status;
    *ret = j;
    return 0;
}

/* curl folds every connect failure into one code; a direct connect() says which it was. */
static int unix_connect_errno(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (lstr_copy(sa.sun_path, sizeof(sa.sun_path), path) < 0)
        return -ENAMETOOLONG;
    _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return neg_errno();
    return connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ? neg_errno() : 0;
}

static void engine_unreachable(struct check_ctx *ctx, int r)
{
    const char *uri = ctx->cfg->engine.uri;
    const char *sock;
    char origin[256];
    engine_endpoint(uri, &sock, origin, sizeof(origin));
    if (sock && r == -ECONNREFUSED) {
        int c = unix_connect_errno(sock);
        if (c < 0)
            r = c;
    }
    const char *fix;
    switch (r) {
    case -ENOENT:
        lerr_set(&ctx->engine_err, r, "no container engine socket at %s", sock);
        fix = "start the engine (Debian: `sudo apt install docker.io` installs Moby, then "
              "`sudo systemctl enable --now docker`), or point engine.uri at it";
        break;
    case -EACCES:
    case -EPERM:
        lerr_set(&ctx->engine_err, r, "permission denied on %s", sock);
        fix = "run `ledge check` as root (ledged runs as root), or as a member of the engine's "
              "socket group (docker)";
        break;
    case -ETIMEDOUT:
        lerr_set(&ctx->engine_err, r, "the container engine at %s did not answer in time", uri);
        fix = "see the engine's log (`journalctl -u docker`); restart it if it hangs";
        break;
    default:
        lerr_set(&ctx->engine_err, r, "cannot reach the container engine at %s: %s", uri,
                 strerror(-r));
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
    long status;
    _cleanup_json_ json_t *v = NULL;
    int r = check_engine_get(ctx, "/version", NULL, &status, &v);
    if (r < 0) {
        engine_unreachable(ctx, r);
        return ctx->engine_r = r;
    }
    if (status != 200 || docker_parse_version(v, &ctx->version) < 0) {
        lerr_set(&ctx->engine_err, -EPROTO,
                 "%s answered GET /version with %ld%s: not a Docker Engine API",
                 ctx->cfg->engine.uri, status, status == 200 ? " but no ApiVersion" : "");
        ctx->engine_fix = "point engine.uri at a Moby, Docker or Podman API socket";
        return ctx->engine_r = -EPROTO;
    }
    json_t *info = NULL;
    if (check_engine_get(ctx, "/info", NULL, &status, &info) == 0 && status == 200 &&
        json_is_object(info))
        ctx->info = info;
    else
        json_decref(info);
    return ctx->engine_r = 0;
}
