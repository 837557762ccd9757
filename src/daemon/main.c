/* main.c — ledged: load the configuration, open the state database, start the engines, the agent
 * and the APIs, and run the event loop until SIGTERM/SIGINT. Stopping ledged never stops the
 * modules: containers and process modules keep running and are adopted on the next start. */
#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "ledged.h"
#include "log/log.h"
#include "update/update.h"
#include "vm/autostart.h"

#define COMP "ledged"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: ledged [--config FILE] [--check-config] [--version] [--help]\n"
            "\n"
            "The ledge daemon: keeps the modules of the applied IoT Edge deployment running,\n"
            "serves the management API (%s by default) and the modules' workload API.\n"
            "\n"
            "  -c, --config FILE   configuration file (default %s)\n"
            "      --check-config  validate the configuration and exit\n"
            "  -V, --version       print the version and exit\n"
            "  -h, --help          this help\n",
            "/run/ledge/mgmt.sock", CONFIG_DEFAULT_PATH);
}

/* Which engine runs each manifest module type: container modules the configured one
 * (engine.type), process modules the process supervisor. */
static const char *engine_name_for(const struct ledge_config *cfg, enum module_type t)
{
    return t == MODULE_TYPE_PROCESS ? "process" : cfg->engine.type;
}

static enum engine_runs engine_runs_for(enum module_type t)
{
    return t == MODULE_TYPE_PROCESS ? ENGINE_RUNS_PROGRAMS : ENGINE_RUNS_IMAGES;
}

/* engine.type must name an engine of this build that runs images. */
static int check_engine_type(const struct ledge_config *cfg)
{
    const struct engine_ops *ops = engine_ops_find(cfg->engine.type);
    if (ops && ops->runs == ENGINE_RUNS_IMAGES)
        return 0;
    char names[256] = "";
    for (size_t i = 0; i < engine_ops_count(); i++) {
        const struct engine_ops *o = engine_ops_at(i);
        if (o->runs != ENGINE_RUNS_IMAGES)
            continue;
        size_t n = strlen(names);
        snprintf(names + n, sizeof(names) - n, "%s%s", n ? ", " : "", o->name);
    }
    fprintf(stderr, "ledged: engine.type: \"%s\" is not a container engine of this ledged (%s)\n",
            cfg->engine.type, names);
    return -EINVAL;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct ledged *d = arg;
    log_info(COMP, "received %s; shutting down (modules keep running)", strsignal((int)sig));
    event_base_loopbreak(d->base);
}

/* VMs with autostart come back when ledged starts (after a host reboot, say); running ones are
 * left to their supervisors, which ledged never stops (docs/vm.md). */
static void on_vm_autostart(void *ud, const char *name, int result, const char *msg)
{
    if (result == 0)
        log_info(COMP, "VM %s: autostart: supervisor started", name);
    else if (result == 1)
        log_info(COMP, "VM %s: already running", name);
    else
        log_warn(COMP, "VM %s: autostart failed: %s", name, msg && *msg ? msg : strerror(-result));
}

static bool executable(const char *path)
{
    return path && access(path, X_OK) == 0;
}

/* The hub binary: the configured one, else next to ledged (installed layout), else the build
 * tree's layout (src/daemon/ledged beside src/hub/ledge-hub). */
static char *resolve_hub_program(const char *configured)
{
    if (executable(configured))
        return strdup(configured);
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = 0;
        char dir[PATH_MAX];
        if (lfs_dirname(self, dir, sizeof(dir)) == 0) {
            const char *candidates[] = {"/ledge-hub", "/../hub/ledge-hub",
                                        "/../lib/ledge/ledge-hub"};
            for (size_t i = 0; i < ARRAY_SIZE(candidates); i++) {
                char *p = lstr_printf("%s%s", dir, candidates[i]);
                char real[PATH_MAX];
                if (p && executable(p) && realpath(p, real)) {
                    free(p);
                    return strdup(real);
                }
                free(p);
            }
        }
    }
    return strdup(configured ? configured : "/usr/lib/ledge/ledge-hub");
}

/* An update a crash interrupted (docs/update.md) is finished by `ledge update --resume`, which
 * restarts ledged itself: started detached, outside our process group and service cgroup. */
static void resume_update(struct ledged *d)
{
    if (!upd_resume_needed(d->cfg.state_dir))
        return;
    char self[PATH_MAX], dir[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return;
    self[n] = 0;
    if (lstr_endswith(self, " (deleted)"))
        self[strlen(self) - strlen(" (deleted)")] = 0;
    if (lfs_dirname(self, dir, sizeof(dir)) < 0)
        return;
    const char *candidates[] = {"/../bin/ledge", "/../cli/ledge", "/ledge"};
    for (size_t i = 0; i < ARRAY_SIZE(candidates); i++) {
        _cleanup_free_ char *cli = lstr_printf("%s%s", dir, candidates[i]);
        char real[PATH_MAX];
        if (!cli || !executable(cli) || !realpath(cli, real))
            continue;
        char updates[PATH_MAX];
        upd_dir(d->cfg.state_dir, updates, sizeof(updates));
        _cleanup_free_ char *log = lstr_printf("%s/resume.log", updates);
        char *argv[] = {real,
                        "-H",
                        d->cfg.management.socket,
                        "update",
                        "--resume",
                        "--config",
                        (char *)(d->config_path ? d->config_path : CONFIG_DEFAULT_PATH),
                        NULL};
        int pid = upd_spawn_detached(argv, log);
        if (pid > 0)
            log_warn(COMP,
                     "an update was interrupted: `ledge update --resume` (pid %d) finishes "
                     "it, output in %s",
                     pid, log);
        else
            log_error(COMP, "an update was interrupted, and %s cannot be started to finish it: %s",
                      real, strerror(-pid));
        return;
    }
    log_error(COMP,
              "an update was interrupted, and no ledge CLI beside %s can finish it: run "
              "`ledge update --resume`",
              self);
}

static void container_version_cb(void *ud, int result, const struct engine_version *v,
                                 const struct lerr *err)
{
    struct ledged *d = ud;
    if (result == 0 || v) {
        d->container_version = *v;
        d->container_version_known = true;
        log_info(COMP, "container engine: %s %s (API %s)", v->product, v->version, v->api_version);
    } else {
        log_warn(COMP, "container engine: %s", lerr_str(err));
    }
}

static int load_config(struct ledged *d, const char *path)
{
    struct lstrv errors = LSTRV_INIT;
    int r = config_load_file_or_defaults(path, &d->cfg, &errors);
    if (r < 0) {
        for (size_t i = 0; i < errors.n; i++)
            fprintf(stderr, "ledged: %s\n", errors.v[i]);
        if (errors.n == 0)
            fprintf(stderr, "ledged: %s: %s\n", path, strerror(-r));
        lstrv_free(&errors);
        return r;
    }
    lstrv_free(&errors);
    if (r == 1)
        log_info(COMP, "%s not found; using defaults", path);
    return check_engine_type(&d->cfg);
}

static void ledged_free(struct ledged *d)
{
    charts_stop(d);
    metrics_stop(d);
    dashboard_stop(d);
    registry_proxy_stop(d);
    mgmt_stop(d);
    cloud_stop(d);
    workload_server_stop(d);
    agent_free(d->agent);
    for (size_t i = 0; i < d->n_engines; i++)
        engine_free(d->engines[i]);
    devices_stop(d);
    state_close(d->db);
    identity_stop(d);
    config_free(&d->cfg);
    free(d->config_path);
    free(d->hub_program);
    if (d->base)
        event_base_free(d->base);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 'C'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    const char *config_path = getenv("LEDGE_CONFIG") ? getenv("LEDGE_CONFIG") : CONFIG_DEFAULT_PATH;
    bool check_only = false;
    int c;
    while ((c = getopt_long(argc, argv, "c:Vh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config_path = optarg;
            break;
        case 'C':
            check_only = true;
            break;
        case 'V':
            printf("ledged %s\n", LEDGE_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ledged: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    struct ledged d = {0};
    log_set_ident("ledged");
    if (load_config(&d, config_path) < 0)
        return 1;
    if (check_only) {
        printf("%s: ok\n", config_path);
        config_free(&d.cfg);
        return 0;
    }
    char real[PATH_MAX];
    d.config_path = strdup(realpath(config_path, real) ? real : config_path);
    log_set_level((enum log_level)d.cfg.log_level);
    signal(SIGPIPE, SIG_IGN);
    umask(0022);

    int rc = 1;
    struct lerr err = {0};
    int r;
    d.base = event_base_new();
    if (!d.base) {
        log_error(COMP, "cannot create the event loop");
        goto out;
    }
    if ((r = lfs_mkdir_p(d.cfg.state_dir, 0700)) < 0 ||
        (r = lfs_mkdir_p(d.cfg.run_dir, 0755)) < 0) {
        log_error(COMP, "cannot create %s or %s: %s", d.cfg.state_dir, d.cfg.run_dir, strerror(-r));
        goto out;
    }
    if ((r = state_open(d.cfg.state_dir, &d.db, &err)) < 0) {
        log_error(COMP, "%s", lerr_str(&err));
        goto out;
    }
    if (state_open_report(d.db)->damaged) {
        /* Once; the agent says what it means for the modules, `ledge system status` shows it. */
        _cleanup_free_ char *what = ldb_report_summary(state_open_report(d.db));
        log_warn(COMP, "state database %s/ledged.db was damaged and salvaged: %s", d.cfg.state_dir,
                 what ? what : "out of memory");
    }
    d.hub_program = resolve_hub_program(d.cfg.agent.hub_program);
    if ((r = identity_start(&d)) < 0 || (r = devices_start(&d)) < 0 ||
        (r = workload_server_start(&d)) < 0)
        goto out;

    /* One engine per backend in use; every engine gets the whole config and reads its part.
     * Events are routed to the agent, which agent_new() wires up. */
    struct lerr init_err = {0};
    struct engine_config ec = {
        .uri = d.cfg.engine.uri,
        .instance = d.cfg.device.id,
        .state_dir = d.cfg.state_dir,
        .run_dir = d.cfg.run_dir,
        .runtime = d.cfg.engine.runtime,
        .network = d.cfg.engine.network,
        .subnet = d.cfg.engine.subnet,
        .cni_path = d.cfg.engine.cni_path,
        .userns = d.cfg.engine.userns,
        .image_gc_after_ms = d.cfg.engine.image_gc_after_ms,
        .request_timeout_ms = 30000,
        .pull_timeout_ms = d.cfg.engine.pull_timeout_ms,
        .upstream_parent = d.cfg.upstream.parent,
        .upstream_ca_file = d.cfg.upstream.ca_file,
        .log_max_size = d.cfg.engine.log_max_size,
        .log_max_files = d.cfg.engine.log_max_files,
        .init_error = &init_err,
    };
    struct agent_engine engines[LEDGED_MAX_ENGINES];
    struct engine *container_engine = NULL;
    for (int t = 0; t < MODULE_TYPE_COUNT; t++) {
        const struct engine_ops *ops = engine_ops_find(engine_name_for(&d.cfg, t));
        if (!ops || ops->runs != engine_runs_for(t)) {
            log_error(COMP, "no engine runs %s modules", module_type_name(t));
            goto out;
        }
        size_t i = 0;
        while (i < d.n_engines && d.engines[i]->ops != ops)
            i++;
        if (i == d.n_engines) {
            if ((r = engine_new(ops, d.base, &ec, &d.engines[i])) < 0) {
                if (init_err.msg[0]) /* the engine said why (oci: no runtime, ...) */
                    log_error(COMP, "engine %s: %s", ops->name, init_err.msg);
                else if (ops->runs == ENGINE_RUNS_IMAGES)
                    log_error(COMP, "engine %s at %s: %s", ops->name, d.cfg.engine.uri,
                              r == -EINVAL ? "use unix:///path or http://host:port" : strerror(-r));
                else
                    log_error(COMP, "engine %s: %s", ops->name, strerror(-r));
                goto out;
            }
            engines[i] = (struct agent_engine){.engine = d.engines[i]};
            d.n_engines++;
        }
        engines[i].module_types |= 1u << t;
        if (t == MODULE_TYPE_DOCKER)
            container_engine = d.engines[i];
    }

    char logsize[32];
    snprintf(logsize, sizeof(logsize), "%llu", (unsigned long long)d.cfg.engine.log_max_size);
    char logfiles[16];
    snprintf(logfiles, sizeof(logfiles), "%d", d.cfg.engine.log_max_files);
    json_t *logc = json_pack("{s:s, s:{s:s, s:s}}", "Type", "json-file", "Config", "max-size",
                             logsize, "max-file", logfiles);
    struct agent_options ao = {
        .engines = engines,
        .n_engines = d.n_engines,
        .network = d.cfg.engine.network,
        .instance = d.cfg.device.id,
        .gateway_hostname = d.cfg.device.gateway_hostname,
        .default_log_config = logc,
        .stop_timeout_s = (int)(d.cfg.engine.stop_timeout_ms / 1000),
        .restart =
            {
                .backoff_base_ms = d.cfg.agent.backoff_base_ms,
                .backoff_max_ms = d.cfg.agent.backoff_max_ms,
                .max_restarts =
                    d.cfg.agent.max_restarts > 0 ? (unsigned)d.cfg.agent.max_restarts : UINT32_MAX,
                .reset_after_ms = d.cfg.agent.reset_after_ms,
            },
        .hub_program = d.hub_program,
        .boot_id_path = getenv("LEDGE_BOOT_ID_PATH"),
        .deploy_timeout_ms = d.cfg.agent.deploy_timeout_ms,
        .deploy_settle_ms = d.cfg.agent.deploy_settle_ms,
    };
    modules_hooks(&d, &ao.hooks);
    r = agent_new(d.base, d.db, &ao, &d.agent);
    json_decref(logc);
    if (r < 0) {
        log_error(COMP, "agent: %s", strerror(-r));
        goto out;
    }
    if ((r = mgmt_start(&d)) < 0 || (r = dashboard_start(&d)) < 0 ||
        (r = registry_proxy_start(&d)) < 0)
        goto out;
    if ((r = agent_start(d.agent, &err)) < 0) {
        log_error(COMP, "%s", lerr_str(&err));
        goto out;
    }
    for (size_t i = 0; i < d.n_engines; i++)
        d.engines[i]->ops->start(d.engines[i]);
    if ((r = cloud_start(&d)) < 0 || (r = metrics_start(&d)) < 0 || (r = charts_start(&d)) < 0)
        goto out;
    container_engine->ops->version(container_engine, container_version_cb, &d);

    struct event *sigterm = evsignal_new(d.base, SIGTERM, on_signal, &d);
    struct event *sigint = evsignal_new(d.base, SIGINT, on_signal, &d);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);
    log_info(COMP, "ledged %s ready: device %s, management API on %s", LEDGE_VERSION,
             d.cfg.device.id, d.cfg.management.socket);
    vm_autostart(d.cfg.vm.dir, on_vm_autostart, &d);
    resume_update(&d);
    event_base_dispatch(d.base);
    event_free(sigterm);
    event_free(sigint);
    rc = 0;
out:
    ledged_free(&d);
    return rc;
}
