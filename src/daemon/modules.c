/* modules.c — what the daemon adds around each module through the agent's hooks: the identity
 * environment IoT Edge modules expect (contract §6), the module's workload socket (mounted into
 * its container), the hub's runtime file, and deployment progress for the CLI. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/json.h"
#include "base/str.h"
#include "ledged.h"
#include "log/log.h"

#define WORKLOAD_API_VERSION "2019-01-30"
#define WORKLOAD_CONTAINER_DIR "/var/run/iotedge"

static const char *runtime_log_level(enum config_log_level l)
{
    switch (l) {
    case CONFIG_LOG_ERROR:
        return "error";
    case CONFIG_LOG_WARN:
        return "warning";
    case CONFIG_LOG_INFO:
        return "info";
    case CONFIG_LOG_DEBUG:
        return "debug";
    case CONFIG_LOG_TRACE:
        return "verbose";
    }
    return "info";
}

static int prepare_module(void *ud, const struct module_spec *m, const char *generation_id,
                          json_t *env, json_t *binds, struct lerr *err)
{
    struct ledged *d = ud;
    const char *dir = NULL;
    int r = workload_server_add(d, m->name, &dir);
    if (r < 0)
        return lerr_set(err, r, "%s: cannot create its workload socket: %s", m->name, strerror(-r));
    char uri[4200];
    if (m->type == MODULE_TYPE_DOCKER) {
        snprintf(uri, sizeof(uri), "unix://%s/workload.sock", WORKLOAD_CONTAINER_DIR);
        char *bind = lstr_printf("%s:%s", dir, WORKLOAD_CONTAINER_DIR);
        if (!bind || json_array_append_new(binds, json_string(bind)) < 0) {
            free(bind);
            return lerr_set(err, -ENOMEM, "out of memory");
        }
        free(bind);
    } else {
        snprintf(uri, sizeof(uri), "unix://%s/workload.sock", dir);
    }
    /* Identity wins over the manifest's env for these names. */
    struct {
        const char *name, *value;
    } vars[] = {
        {"IOTEDGE_WORKLOADURI", uri},
        {"IOTEDGE_DEVICEID", d->cfg.device.id},
        {"IOTEDGE_MODULEID", m->name},
        {"IOTEDGE_MODULEGENERATIONID", generation_id},
        {"IOTEDGE_IOTHUBHOSTNAME", d->cfg.device.iothub_hostname},
        {"IOTEDGE_GATEWAYHOSTNAME", d->cfg.device.gateway_hostname},
        {"IOTEDGE_AUTHSCHEME", "sasToken"},
        {"IOTEDGE_APIVERSION", WORKLOAD_API_VERSION},
        {"RuntimeLogLevel", runtime_log_level(d->cfg.log_level)},
    };
    for (size_t i = 0; i < ARRAY_SIZE(vars); i++)
        if (json_object_set_new(env, vars[i].name,
                                json_string(vars[i].value ? vars[i].value : "")) < 0)
            return lerr_set(err, -ENOMEM, "out of memory");
    if (m->type == MODULE_TYPE_PROCESS && d->config_path)
        json_object_set_new(env, "LEDGE_CONFIG", json_string(d->config_path));
    return 0;
}

/* The module identities the hub checks depend on generation ids, which change at creation. */
static void created(void *ud, const char *name)
{
    hub_runtime_changed(ud);
}

static void removed(void *ud, const char *name)
{
    struct ledged *d = ud;
    workload_server_remove(d, name);
    hub_runtime_changed(d);
}

static void applied(void *ud, const struct deployment *dep)
{
    struct ledged *d = ud;
    /* Every module of the deployment has its socket, also after a restart of ledged. */
    for (size_t i = 0; i < dep->n_modules; i++)
        workload_server_add(d, dep->modules[i].name, NULL);
    hub_runtime_changed(d);
}

static void progress(void *ud, const char *module, const char *line)
{
    mgmt_progress(ud, module, line);
}

void modules_hooks(struct ledged *d, struct agent_hooks *hooks)
{
    hooks->prepare_module = prepare_module;
    hooks->module_created = created;
    hooks->module_removed = removed;
    hooks->deployment_applied = applied;
    hooks->progress = progress;
    hooks->ud = d;
}
