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
#include "daemon/ledged.h"
#include "log/log.h"
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

static void on_docker_event(void *ud, const struct engine_event *ev)
{
    struct ledged *d = ud;
    if (d->agent)
        agent_on_engine_event(d->agent, MODULE_TYPE_DOCKER, ev);
}

static void on_process_event(void *ud, const struct engine_event *ev)
{
    struct ledged *d = ud;
    if (d->agent)
        agent_on_engine_event(d->agent, MODULE_TYPE_PROCESS, ev);
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

static void docker_version_cb(void *ud, int result, const struct engine_version *v,
                              const struct lerr *err)
{
    struct ledged *d = ud;
    if (result == 0 || v) {
        d->docker_version = *v;
        d->docker_version_known = true;
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
    return 0;
}

static void ledged_free(struct ledged *d)
{
    mgmt_stop(d);
    workload_server_stop(d);
    agent_free(d->agent);
    engine_free(d->docker);
    engine_free(d->process);
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
    d.hub_program = resolve_hub_program(d.cfg.agent.hub_program);
    if ((r = identity_start(&d)) < 0 || (r = workload_server_start(&d)) < 0)
        goto out;

    struct engine_config dc = {
        .uri = d.cfg.engine.uri,
        .instance = d.cfg.device.id,
        .state_dir = d.cfg.state_dir,
        .request_timeout_ms = 30000,
        .pull_timeout_ms = d.cfg.engine.pull_timeout_ms,
        .on_event = on_docker_event,
        .event_ud = &d,
    };
    struct engine_config pc = {
        .state_dir = d.cfg.state_dir,
        .on_event = on_process_event,
        .event_ud = &d,
    };
    if ((r = engine_new(&engine_docker_ops, d.base, &dc, &d.docker)) < 0) {
        log_error(COMP, "engine.uri %s: %s", d.cfg.engine.uri,
                  r == -EINVAL ? "use unix:///path or http://host:port" : strerror(-r));
        goto out;
    }
    if ((r = engine_new(&engine_process_ops, d.base, &pc, &d.process)) < 0) {
        log_error(COMP, "process engine: %s", strerror(-r));
        goto out;
    }

    char logsize[32];
    snprintf(logsize, sizeof(logsize), "%llu", (unsigned long long)d.cfg.engine.log_max_size);
    char logfiles[16];
    snprintf(logfiles, sizeof(logfiles), "%d", d.cfg.engine.log_max_files);
    json_t *logc = json_pack("{s:s, s:{s:s, s:s}}", "Type", "json-file", "Config", "max-size",
                             logsize, "max-file", logfiles);
    struct agent_options ao = {
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
    };
    modules_hooks(&d, &ao.hooks);
    r = agent_new(d.base, d.docker, d.process, d.db, &ao, &d.agent);
    json_decref(logc);
    if (r < 0) {
        log_error(COMP, "agent: %s", strerror(-r));
        goto out;
    }
    if ((r = mgmt_start(&d)) < 0)
        goto out;
    if ((r = agent_start(d.agent, &err)) < 0) {
        log_error(COMP, "%s", lerr_str(&err));
        goto out;
    }
    d.docker->ops->start(d.docker);
    d.process->ops->start(d.process);
    d.docker->ops->version(d.docker, docker_version_cb, &d);

    struct event *sigterm = evsignal_new(d.base, SIGTERM, on_signal, &d);
    struct event *sigint = evsignal_new(d.base, SIGINT, on_signal, &d);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);
    log_info(COMP, "ledged %s ready: device %s, management API on %s", LEDGE_VERSION,
             d.cfg.device.id, d.cfg.management.socket);
    vm_autostart(d.cfg.vm.dir, on_vm_autostart, &d);
    event_base_dispatch(d.base);
    event_free(sigterm);
    event_free(sigint);
    rc = 0;
out:
    ledged_free(&d);
    return rc;
}
