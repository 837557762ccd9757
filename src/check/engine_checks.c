/* engine_checks.c — checks of the container engine and of the deployment against it: reachable,
 * API version, which engine it is, container log rotation, and every module's image platform
 * against the host's (the host/guest family rule, engine/platform.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/macro.h"
#include "base/json.h"
#include "base/str.h"
#include "check-internal.h"

#define SKIP_UNREACHABLE "the container engine is not reachable (see engine)"

void check_engine(struct check_ctx *ctx, struct check_report *rep)
{
    if (check_engine_ask(ctx) < 0) {
        check_report_set(rep, CHECK_ERROR, ctx->engine_fix, "%s", ctx->engine_err.msg);
        return;
    }
    const struct engine_version *v = &ctx->version;
    if (v->builtin) {
        check_report_ok(rep, "%s %s (engine.type %s: no daemon, runs containers itself)",
                        v->product, v->version, ctx->cfg->engine.type);
        return;
    }
    check_report_ok(rep, "%s %s (API %s, %s/%s) at %s", v->product, v->version, v->api_version,
                    v->os[0] ? v->os : "?", v->arch[0] ? v->arch : "?", ctx->cfg->engine.uri);
}

/* "v1.25" / "1.25" → "1.25"; NULL unless it is MAJOR.MINOR. */
static const char *api_version_text(const char *s)
{
    if (!s)
        return NULL;
    if (s[0] == 'v' || s[0] == 'V')
        s++;
    unsigned a, b;
    char tail;
    return sscanf(s, "%u.%u%c", &a, &b, &tail) == 2 ? s : NULL;
}

void check_engine_version(struct check_ctx *ctx, struct check_report *rep)
{
    if (check_engine_ask(ctx) < 0) {
        check_report_skip(rep, SKIP_UNREACHABLE);
        return;
    }
    const char *api = ctx->version.api_version;
    if (ctx->version.builtin) {
        check_report_ok(rep, "ledge's own engine speaks no Engine API: ledge's minimum and the "
                             "deployment's minDockerVersion do not apply");
        return;
    }
    if (engine_api_compare(api, CHECK_ENGINE_MIN_API) < 0) {
        check_report_set(rep, CHECK_ERROR,
                         "upgrade the engine (Debian 12's docker.io, Moby 20.10, speaks API 1.41)",
                         "the engine speaks API %s; ledge needs %s or newer", api,
                         CHECK_ENGINE_MIN_API);
        return;
    }
    const struct check_deployment *d = ctx->in->deployment;
    if (!d || !d->min_docker_version) {
        check_report_ok(rep, "API %s (ledge needs %s; %s)", api, CHECK_ENGINE_MIN_API,
                        d ? "the deployment sets no minDockerVersion" : "no deployment to compare");
        return;
    }
    const char *min = api_version_text(d->min_docker_version);
    if (!min) {
        check_report_set(
            rep, CHECK_WARNING, "write minDockerVersion as an engine API version, e.g. \"v1.25\"",
            "the deployment's minDockerVersion \"%.40s\" is not an API version; API %s "
            "meets ledge's minimum %s",
            d->min_docker_version, api, CHECK_ENGINE_MIN_API);
        return;
    }
    if (engine_api_compare(api, min) < 0) {
        check_report_set(
            rep, CHECK_ERROR,
            "upgrade the engine, or lower runtime.settings.minDockerVersion if the "
            "modules do not need it",
            "the engine speaks API %s, older than the deployment's minDockerVersion %s "
            "(%s)",
            api, d->min_docker_version, d->source);
        return;
    }
    check_report_ok(rep, "API %s meets ledge's minimum %s and the deployment's minDockerVersion %s",
                    api, CHECK_ENGINE_MIN_API, d->min_docker_version);
}

void check_engine_product(struct check_ctx *ctx, struct check_report *rep)
{
    if (check_engine_ask(ctx) < 0) {
        check_report_skip(rep, SKIP_UNREACHABLE);
        return;
    }
    const char *p = ctx->version.product, *v = ctx->version.version;
    static const char fix[] = "for production use Moby (Debian's docker.io package)";
    if (ctx->version.builtin) {
        check_report_ok(rep,
                        "%s %s: ledge's own engine, no dockerd, containerd or shims "
                        "(docs/engine-oci.md; its requirements: oci-runtime, oci-kernel, "
                        "oci-network)",
                        p, v);
        return;
    }
    if (strcmp(p, "Moby") == 0) {
        check_report_ok(rep, "Moby %s: the recommended engine", v);
        return;
    }
    if (lstr_startswith(p, "Docker")) {
        check_report_set(
            rep, CHECK_WARNING, fix,
            "%s %s: compatible (built from Moby, same API) and supported on a best-effort "
            "basis; fixes to the engine itself come from Docker, not from ledge",
            p, v);
        return;
    }
    if (strcmp(p, "Podman") == 0) {
        check_report_set(rep, CHECK_WARNING, fix,
                         "Podman %s through its Docker-compatible API: supported; log rotation "
                         "and health checks differ from Moby (docs/support.md, Podman)",
                         v);
        return;
    }
    check_report_set(rep, CHECK_WARNING, fix, "%s %s: not an engine ledge is tested with", p, v);
}

/* ------------------------------------------------------------------ log rotation */

/* Drivers that keep no log files of their own (the receiver rotates) or rotate by default. */
static bool driver_rotates_itself(const char *type)
{
    static const char *const drivers[] = {"local",   "journald",   "syslog",  "fluentd",
                                          "gelf",    "awslogs",    "gcplogs", "splunk",
                                          "etwlogs", "logentries", "none"};
    for (size_t i = 0; i < ARRAY_SIZE(drivers); i++)
        if (strcmp(type, drivers[i]) == 0)
            return true;
    return false;
}

static bool max_size_set(const json_t *opts)
{
    const char *s = ljson_str(opts, "max-size");
    return s && *s && strcmp(s, "-1") != 0;
}

struct engine_logging {
    const char *driver;  /* the engine's default driver */
    const json_t *opts;  /* its default log-opts (from its config file), or NULL */
    json_t *config_file; /* parsed engine config, owned */
};

/* Does a container with LogConfig {type, opts} rotate on this engine? Like Moby: an empty type
 * is the default driver, and the default driver's options fill keys the container left out. */
static bool log_config_rotates(const struct engine_logging *el, const char *type,
                               const json_t *opts)
{
    if (lstr_empty(type))
        type = el->driver;
    if (driver_rotates_itself(type))
        return true;
    if (strcmp(type, "json-file") != 0)
        return true; /* a plugin: its own business */
    if (max_size_set(opts))
        return true;
    return strcmp(type, el->driver) == 0 && max_size_set(el->opts);
}

static void engine_logging(struct check_ctx *ctx, struct engine_logging *el)
{
    memset(el, 0, sizeof(*el));
    el->driver = ctx->version.default_log_driver;
    if (lstr_empty(el->driver))
        el->driver = "json-file";
    _cleanup_free_ char *text = NULL;
    size_t n;
    if (check_read_host_file(ctx->cfg->check.engine_config, &text, &n) == 0 &&
        ljson_parse(text, n, &el->config_file, NULL) == 0) {
        const char *d = ljson_str(el->config_file, "log-driver");
        /* Options written for another driver than the running one do not apply. */
        if (!d || strcmp(d, el->driver) == 0)
            el->opts = json_object_get(el->config_file, "log-opts");
    }
}

void check_log_rotation(struct check_ctx *ctx, struct check_report *rep)
{
    if (check_engine_ask(ctx) < 0) {
        check_report_skip(rep, SKIP_UNREACHABLE);
        return;
    }
    struct engine_logging el;
    engine_logging(ctx, &el);
    bool engine_rotates = log_config_rotates(&el, el.driver, NULL);
    const struct check_deployment *d = ctx->in->deployment;
    _cleanup_json_ json_t *deploy_lc = NULL;
    if (d && d->logging_options && *d->logging_options &&
        (ljson_parse(d->logging_options, strlen(d->logging_options), &deploy_lc, NULL) < 0 ||
         !json_is_object(deploy_lc))) {
        json_decref(deploy_lc);
        deploy_lc = NULL;
    }
    _cleanup_lbuf_ struct lbuf bad = LBUF_INIT;
    size_t n_containers = 0, n_bad = 0;
    for (size_t i = 0; d && i < d->n_modules; i++) {
        const struct check_module *m = &d->modules[i];
        if (!m->image)
            continue;
        n_containers++;
        const json_t *lc =
            json_object_get(json_object_get(m->create_options, "HostConfig"), "LogConfig");
        const char *from = "its createOptions";
        if (!json_is_object(lc) || lstr_empty(ljson_str(lc, "Type"))) {
            lc = deploy_lc;
            from = "the deployment's loggingOptions";
        }
        if (!lc)
            continue; /* ledge's default: json-file with max-size */
        const char *type = ljson_str(lc, "Type");
        if (log_config_rotates(&el, type, json_object_get(lc, "Config")))
            continue;
        n_bad++;
        lbuf_printf(&bad, "\n  %s: %s without max-size (from %s)", m->name,
                    lstr_empty(type) ? el.driver : type, from);
    }
    char size[32];
    snprintf(size, sizeof(size), "%llu", (unsigned long long)ctx->cfg->engine.log_max_size);
    if (n_bad) {
        check_report_set(
            rep, CHECK_WARNING,
            "give these modules a rotating LogConfig (e.g. \"LogConfig\": {\"Type\": "
            "\"json-file\", \"Config\": {\"max-size\": \"10m\", \"max-file\": \"3\"}}), "
            "or drop theirs to get ledge's default, or set log-opts max-size in the "
            "engine's daemon.json",
            "%zu of %zu container modules write logs that grow without bound:%s", n_bad,
            n_containers, bad.data ? bad.data : "");
    } else {
        check_report_ok(
            rep,
            "%s%zu container modules rotate their logs; ledge gives modules without a log "
            "config json-file with max-size %s bytes and max-file %d (the engine's own "
            "default, %s, %s)",
            d ? "" : "no deployment; ", n_containers, size, ctx->cfg->engine.log_max_files,
            el.driver, engine_rotates ? "rotates too" : "does not rotate");
    }
    json_decref(el.config_file);
}

/* ------------------------------------------------------------------ module platforms */

enum verdict { V_MATCH, V_COMPAT, V_UNKNOWN, V_MISMATCH };

static void format_platform(struct lbuf *line, const struct check_platform *p)
{
    lbuf_printf(line, "%s/%s%s%s", p->os[0] ? p->os : "?", p->arch[0] ? p->arch : "?",
                p->variant[0] ? "/" : "", p->variant);
}

/* Not pulled yet: the engine asks the registry which platforms the reference offers. */
static enum verdict check_remote(struct check_ctx *ctx, const struct check_module *m,
                                 struct lbuf *line, struct lerr *err)
{
    struct engine_registry_auth auth = {.username = m->registry_username,
                                        .password = m->registry_password,
                                        .server = m->registry_server};
    struct check_platform plats[32];
    size_t n = 0;
    struct lerr why = {0};
    if (check_engine_registry_platforms(ctx, m->image, m->registry_username ? &auth : NULL, plats,
                                        ARRAY_SIZE(plats), &n, &why) < 0) {
        lbuf_printf(line, "not pulled, and the registry could not be asked (%s)", lerr_str(&why));
        return V_UNKNOWN;
    }
    enum verdict best = V_MISMATCH;
    _cleanup_lbuf_ struct lbuf offered = LBUF_INIT;
    struct lerr first = {0};
    for (size_t i = 0; i < n; i++) {
        const struct check_platform *p = &plats[i];
        if (i)
            lbuf_puts(&offered, ", ");
        format_platform(&offered, p);
        struct lerr e = {0};
        int c =
            platform_check_module(&ctx->host, m->name, m->image, p->os, p->arch, p->variant, &e);
        if (c == PLATFORM_MATCH)
            best = V_MATCH;
        else if ((c == PLATFORM_COMPAT_32 || c == PLATFORM_UNDECLARED) && best != V_MATCH)
            best = V_COMPAT;
        else if (c < 0 && !first.code)
            first = e;
    }
    if (best == V_MISMATCH) {
        *err = first;
        lbuf_printf(line, "not pulled; the registry offers only %s", offered.data);
    } else {
        lbuf_printf(line, "not pulled; the registry offers %s: %s", offered.data,
                    best == V_MATCH ? "one matches" : "only a 32-bit one runs (if the CPU can)");
    }
    return best;
}

static enum verdict check_one_module(struct check_ctx *ctx, const struct check_module *m,
                                     struct lbuf *line, struct lerr *err)
{
    struct check_platform p;
    struct lerr why = {0};
    int r = check_engine_image_platform(ctx, m->image, &p, &why);
    if (r == -ENOENT)
        return check_remote(ctx, m, line, err);
    if (r < 0) {
        lbuf_printf(line, "cannot inspect the image (%s)", lerr_str(&why));
        return V_UNKNOWN;
    }
    int c = platform_check_module(&ctx->host, m->name, m->image, p.os, p.arch, p.variant, err);
    format_platform(line, &p);
    switch (c) {
    case PLATFORM_MATCH:
        return V_MATCH;
    case PLATFORM_COMPAT_32:
        lbuf_puts(line, ": a 32-bit image, runs only if the CPU and kernel support 32-bit code");
        return V_COMPAT;
    case PLATFORM_UNDECLARED:
        lbuf_puts(line, ": the image declares no platform");
        return V_COMPAT;
    default:
        return V_MISMATCH;
    }
}

void check_module_platforms(struct check_ctx *ctx, struct check_report *rep)
{
    const struct check_deployment *d = ctx->in->deployment;
    if (!d) {
        check_report_skip(rep, "%s",
                          ctx->in->no_deployment ? ctx->in->no_deployment : "no deployment");
        return;
    }
    size_t n_img = 0;
    for (size_t i = 0; i < d->n_modules; i++)
        n_img += d->modules[i].image != NULL;
    if (n_img == 0) {
        check_report_skip(rep, "the deployment (%s) has no container modules", d->source);
        return;
    }
    if (ctx->host_r < 0) {
        check_report_skip(rep, "this host's platform is unknown: %s", strerror(-ctx->host_r));
        return;
    }
    if (check_engine_ask(ctx) < 0) {
        check_report_skip(rep, SKIP_UNREACHABLE);
        return;
    }
    char hp[PLATFORM_STR_MAX];
    platform_format(&ctx->host, hp);
    _cleanup_lbuf_ struct lbuf lines = LBUF_INIT, errors = LBUF_INIT;
    enum verdict worst = V_MATCH;
    for (size_t i = 0; i < d->n_modules; i++) {
        const struct check_module *m = &d->modules[i];
        if (!m->image)
            continue;
        _cleanup_lbuf_ struct lbuf line = LBUF_INIT;
        struct lerr err = {0};
        enum verdict v = check_one_module(ctx, m, &line, &err);
        if (v > worst)
            worst = v;
        lbuf_printf(&lines, "\n  %s (%s): %s", m->name, m->image, line.data ? line.data : "");
        if (v == V_MISMATCH)
            lbuf_printf(&errors, "%s%s", errors.len ? "\n" : "", err.msg);
    }
    const char *body = lines.data ? lines.data : "";
    switch (worst) {
    case V_MISMATCH:
        check_report_set(rep, CHECK_ERROR,
                         "deploy images built for this host's platform (or multi-platform images "
                         "that include it); `ledge deploy` refuses these modules",
                         "%s\nthis host: %s%s", errors.data ? errors.data : "", hp, body);
        return;
    case V_UNKNOWN:
    case V_COMPAT:
        check_report_set(rep, CHECK_WARNING,
                         "pull the images (or make the registry reachable) and check again; prefer "
                         "images built for this host's own architecture",
                         "this host: %s; some images could not be confirmed:%s", hp, body);
        return;
    case V_MATCH:
        check_report_ok(rep, "this host: %s; every image matches:%s", hp, body);
        return;
    }
}

/* ------------------------------------------------------------------ images through the parent */

/* "$upstream:PORT/..." images (docs/registry-proxy.md): they need upstream.parent; the oci engine
 * trusts the parent with upstream.ca_file, dockerd only with certs.d/<parent>:<port>/ca.crt beside
 * its daemon.json, which the operator installs (ledged does not write dockerd's configuration). */
void check_upstream_registry(struct check_ctx *ctx, struct check_report *rep)
{
    const struct check_deployment *d = ctx->in->deployment;
    if (!d) {
        check_report_skip(rep, "%s",
                          ctx->in->no_deployment ? ctx->in->no_deployment : "no deployment");
        return;
    }
    const struct ledge_config *cfg = ctx->cfg;
    _cleanup_lbuf_ struct lbuf mods = LBUF_INIT, missing = LBUF_INIT, fix = LBUF_INIT;
    size_t n = 0, n_missing = 0;
    char seen[16][ENGINE_IMAGE_MAX];
    size_t n_seen = 0;
    for (size_t i = 0; i < d->n_modules; i++) {
        const char *img = d->modules[i].image;
        if (!engine_names_upstream(img))
            continue;
        lbuf_printf(&mods, "%s%s", n++ ? ", " : "", d->modules[i].name);
        char resolved[ENGINE_IMAGE_MAX];
        /* dockerd takes 127.0.0.0/8 as an insecure registry and checks no certificate there */
        const char *par = cfg->upstream.parent;
        if (par &&
            (strncmp(par, "127.", 4) == 0 || lstr_eq(par, "localhost") || lstr_eq(par, "::1")))
            continue;
        if (!cfg->upstream.parent ||
            engine_upstream_resolve(cfg->upstream.parent, img, resolved, sizeof(resolved), NULL) <
                0 ||
            !lstr_eq(cfg->engine.type, "docker"))
            continue;
        /* the registry part: "<parent>:PORT" */
        resolved[strcspn(resolved, "/")] = 0;
        bool dup = false;
        for (size_t k = 0; k < n_seen && !dup; k++)
            dup = strcmp(seen[k], resolved) == 0;
        if (dup || n_seen == ARRAY_SIZE(seen))
            continue;
        snprintf(seen[n_seen++], sizeof(seen[0]), "%s", resolved);
        char dir[PATH_MAX], ca[PATH_MAX + ENGINE_IMAGE_MAX + 32];
        if (lfs_dirname(cfg->check.engine_config, dir, sizeof(dir)) < 0)
            snprintf(dir, sizeof(dir), "/etc/docker");
        snprintf(ca, sizeof(ca), "%s/certs.d/%s/ca.crt", dir, resolved);
        if (access(ca, R_OK) == 0)
            continue;
        n_missing++;
        lbuf_printf(&missing, "\n  %s", ca);
        lbuf_printf(&fix, "%ssudo mkdir -p %s/certs.d/%s && sudo cp %s %s",
                    n_missing > 1 ? "; " : "", dir, resolved,
                    cfg->upstream.ca_file ? cfg->upstream.ca_file : "<the parent's CA>", ca);
    }
    if (n == 0) {
        check_report_ok(rep, "no module of the deployment (%s) names $upstream", d->source);
        return;
    }
    if (!cfg->upstream.parent) {
        check_report_set(rep, CHECK_ERROR,
                         "set upstream.parent to the parent ledge's host name (docs/nested.md)",
                         "modules %s name the parent's registry ($upstream) and upstream.parent "
                         "is not set",
                         mods.data);
        return;
    }
    if (n_missing) {
        check_report_set(rep, CHECK_WARNING, fix.data,
                         "modules %s pull from the parent %s through dockerd, which verifies it "
                         "only with a CA it does not find (ledged does not write dockerd's "
                         "configuration):%s",
                         mods.data, cfg->upstream.parent, missing.data);
        return;
    }
    check_report_ok(rep, "modules %s pull from the parent %s%s", mods.data, cfg->upstream.parent,
                    lstr_eq(cfg->engine.type, "docker")
                        ? ", whose CA dockerd finds in certs.d (none is needed on loopback: "
                          "dockerd checks no certificate there)"
                        : ", verified with upstream.ca_file (the oci engine)");
}
