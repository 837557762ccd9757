/* agent.h — the agent: keeps the modules in the state the applied deployment asks for. It owns the
 * desired state (manifest model), the runtime view of every module (from the engines' lists,
 * inspections and event streams), the restart policy timers, and reconcile passes that plan
 * (plan.h) and execute steps through the engines, group by startupOrder group. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "agent/manifest.h"
#include "agent/restart.h"
#include "agent/state.h"
#include "base/errors.h"
#include "base/str.h"
#include "engine/engine.h"

struct event_base;
struct agent;

struct agent_hooks {
    /* Before a module is created: set up its identity (workload socket, keys) and add what the
     * module gets to env (object, already holding the manifest's env: identity wins) and binds
     * (array of "host:container[:opts]"). */
    int (*prepare_module)(void *ud, const struct module_spec *m, const char *generation_id,
                          json_t *env, json_t *binds, struct lerr *err);
    /* A module's container was created (its generation id is now the current one). */
    void (*module_created)(void *ud, const char *name);
    /* A module's container is gone for good (removed from the deployment). */
    void (*module_removed)(void *ud, const char *name);
    /* A new deployment is stored (e.g. hand $edgeHub and the module twins to the hub). */
    void (*deployment_applied)(void *ud, const struct deployment *d);
    /* Progress of a long step (image pulls), one line at a time. */
    void (*progress)(void *ud, const char *module, const char *line);
    void *ud;
};

/* An engine the agent drives and the module types it runs. Each module type is run by at most
 * one engine; the agent asks the engine's ops table what it can do, never its name. */
struct agent_engine {
    struct engine *engine;
    unsigned module_types; /* bits (1u << MODULE_TYPE_*) */
};

struct agent_options {
    const struct agent_engine *engines;
    size_t n_engines;
    const char *network;          /* network modules join ("ledge"), on engines that have them */
    const char *instance;         /* the device id: labels every container (dev.ledge.device) */
    const char *gateway_hostname; /* reachable from modules via host-gateway */
    const json_t
        *default_log_config; /* LogConfig when neither the module nor the manifest set one */
    int stop_timeout_s;
    struct restart_tunables restart;
    const char *hub_program;  /* what systemModules.edgeHub maps to */
    const char *boot_id_path; /* /proc/sys/kernel/random/boot_id */
    /* Atomic deployments (docs/deployments.md): how long the modules a deployment changes have,
     * after its last step, to run (0: 60 s), and how long each must have run to count. */
    int64_t deploy_timeout_ms;
    int64_t deploy_settle_ms;
    struct agent_hooks hooks;
};

/* The engines' events are routed to the agent from here on (engine_set_event_handler). -EINVAL
 * when two engines claim one module type. */
int agent_new(struct event_base *base, struct state_db *db, const struct agent_options *o,
              struct agent **ret);
/* Load the stored deployment and start reconciling (works offline, on every boot). */
int agent_start(struct agent *a, struct lerr *err);
/* Before the engines are freed. */
void agent_free(struct agent *a);

/* Where the engines' events lead (agent_new routes them; tests inject events here). */
void agent_on_engine_event(struct agent *a, struct engine *e, const struct engine_event *ev);

/* Completion of an apply or a module command: result 0 or -errno; report is a JSON object the
 * callee keeps ownership of (copy what you need). */
typedef void (*agent_done_fn)(void *ud, int result, const json_t *report);

/* The one deploy-time validation, for ledged's API, the CLI's dry run and whatever else asks:
 * the manifest (manifest_parse: structure, createOptions), the routes, an engine for every
 * module type, and the host/guest platform rule for the images the engines already have (images
 * not present yet are checked when they are pulled). cb is called exactly once, possibly before
 * this returns: 0 with the validated deployment (handed over: the callee frees it) and its
 * warnings, or -EINVAL with every problem in errors, each starting with its JSON path. Returns
 * < 0 (and never calls cb) only when the validation could not start. */
typedef void (*agent_validate_fn)(void *ud, int result, struct deployment *d,
                                  const struct lstrv *errors);
int agent_validate(struct agent *a, const char *text, size_t len, agent_validate_fn cb, void *ud);

struct agent_apply_cb {
    /* Called once with the validation's verdict: -EINVAL with every problem in errors (nothing
     * changed), -EBUSY while another deployment is being applied, or 0 with report {"plan":
     * [...], "warnings": [...], "deployment": {"id", "rollback", "timeoutMs", "previous"}} (with
     * "dryRun": true and no "deployment" for a dry run). For a dry run or without wait it is the
     * last call. */
    void (*planned)(void *ud, int result, const json_t *report, const struct lstrv *errors);
    /* wait only: when the deployment has ended (applied, failed, or rolled back), report
     * {"plan": [...], "outcome": [...], "deployment": {"id", "outcome", "reason", "modules":
     * [{"module", "reason"}], "previous"}, "rollback"?: {"outcome": [...]}}; result 0 when
     * applied, -ECANCELED when rolled back, -EIO when it (or its rollback) failed. */
    agent_done_fn done;
};

struct agent_apply_options {
    bool dry_run;
    bool wait;
    bool no_rollback;   /* a failed deployment is left as it is (before atomic deployments) */
    int64_t timeout_ms; /* 0: agent_options.deploy_timeout_ms */
};

/* Validate (agent_validate) and apply a manifest as one transaction (docs/deployments.md): if a
 * module it changes cannot be created or started, or does not run within the deadline, the
 * previous deployment is restored. The callbacks may run before this returns. A client gone
 * before they ran must call agent_cancel_waiter(a, ud). Returns < 0 (and calls nothing) only
 * when it could not start. */
int agent_apply(struct agent *a, const char *text, size_t len, const struct agent_apply_options *o,
                const struct agent_apply_cb *cb, void *ud);
/* `ledge deploy --rollback [N]`: apply deployment `to` of the history again (0: the previous one,
 * in force before the current one was applied), as agent_apply does, as a deployment of its own
 * (kind "rollback"). -ENOENT (err says why) when there is none or `to` is not kept, -EINVAL for a
 * negative `to`, -EBUSY while a deployment is being applied. */
int agent_rollback(struct agent *a, int64_t to, const struct agent_apply_options *o,
                   const struct agent_apply_cb *cb, void *ud, struct lerr *err);
/* {"current", "previous", "inProgress", "deployments": [{"id", "kind", "startedAt",
 * "finishedAt", "outcome", "reason", "modules", "previous", "rollback", "canApply"}]}, newest
 * first; canApply: its manifest is kept (agent_rollback can apply it again). */
json_t *agent_deployments_json(struct agent *a);
/* No callback reaches ud after this: validations, plans and waits for it are dropped. */
void agent_cancel_waiter(struct agent *a, void *ud);

/* "start", "stop" or "restart" a module by name. */
int agent_module_command(struct agent *a, const char *name, const char *verb, agent_done_fn cb,
                         void *ud, struct lerr *err);

json_t *agent_modules_json(struct agent *a);
json_t *agent_module_json(struct agent *a, const char *name); /* NULL when unknown */
json_t *agent_status_json(struct agent *a);
/* Is the event stream of the engine running that module type up (the agent creates and removes
 * nothing on it otherwise)? false when no engine runs that type. */
bool agent_engine_connected(struct agent *a, enum module_type type);
/* The engine running that module type, or NULL. */
struct engine *agent_engine_for(struct agent *a, enum module_type type);
const char *agent_deployment_text(struct agent *a); /* NULL when none */
/* The manifest of deployment id of the history (the caller frees it); -ENOENT when it is not
 * kept (canApply false in agent_deployments_json). */
int agent_deployment_text_of(struct agent *a, int64_t id, char **ret_text);
const struct deployment *agent_deployment(struct agent *a); /* NULL when none */
/* A module's generation id: new whenever its container is recreated; NULL before its first
 * creation. Kept in the module's record, so known at once after a restart of ledged. */
const char *agent_module_generation(struct agent *a, const char *name);

/* A running process module's pid (its session id: its children share it); 0 otherwise. */
int agent_module_pid(struct agent *a, const char *name);

struct agent_logs;
/* Stream a module's logs; NULL with err set when the module or its container is unknown. */
struct agent_logs *agent_logs(struct agent *a, const char *name,
                              const struct engine_logs_options *o, engine_log_fn on_data,
                              engine_done_fn cb, void *ud, struct lerr *err);
/* Only before cb was called. */
void agent_logs_cancel(struct agent_logs *l);

/* The engine commands whose latency the agent measures (edgeAgent_command_latency_seconds). */
enum agent_command {
    AGENT_COMMAND_CREATE,
    AGENT_COMMAND_REMOVE,
    AGENT_COMMAND_START,
    AGENT_COMMAND_STOP,
    AGENT_COMMAND_COUNT,
};

/* IoT Edge's edgeAgent_* counters since the agent was made (docs/metrics.md): {"modules":
 * [{"name", "version" (the manifest's, "" when none), "starts", "stops" (engine start and stop
 * commands asked for it), "expectedRunningSeconds" (time in the deployment with desired status
 * running), "runningCorrectlySeconds" (of that time, running), "containerId" (absent when none),
 * "pid" (its process on the host while running, 0 when not known), "inDeployment"}],
 * "commands": [{"command", "count", "sumSeconds", "quantiles": [{"quantile", "value"}]}]}: each
 * engine command answered, the time its answers took, and the quantiles of that time over the
 * last 10 minutes (base/quantile.h) at agent_latency_objectives ("value" null when none was
 * answered then). */
json_t *agent_metrics_json(struct agent *a);
/* IoT Edge's objectives for edgeAgent_command_latency_seconds (a duration: prometheus-net's
 * summaries through edge-util's MetricsDuration), its window prometheus-net's default. */
#define AGENT_LATENCY_OBJECTIVES 4
#define AGENT_LATENCY_MAX_AGE_MS (10 * 60 * 1000)
extern const double agent_latency_objectives[AGENT_LATENCY_OBJECTIVES];

/* Runtime status names as IoT Edge reports them. */
enum runtime_status {
    RS_UNKNOWN,
    RS_RUNNING,
    RS_STOPPED,
    RS_FAILED,
    RS_BACKOFF,
    RS_UNHEALTHY,
    RS_DEAD,
};
const char *runtime_status_name(enum runtime_status s);
