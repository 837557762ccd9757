/* plan.h — the planner: desired deployment vs. the modules the engines actually have → an
 * ordered list of steps. Pure: the agent gathers the inputs and executes the result.
 *
 * Rules (IoT Edge's, docs/architecture.md): a module missing is created; any change of its
 * desired config (the config hash) recreates it; a change of status alone starts or stops it;
 * modules dropped from the deployment, and orphans carrying ledge's owner label, are removed;
 * containers without the label never appear here. Stops and removals come first; then creates
 * and starts in ascending startupOrder groups (same order = same group, run together). */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "agent/manifest.h"
#include "engine/engine.h"

enum plan_action {
    PLAN_KEEP,
    PLAN_CREATE,
    PLAN_RECREATE,
    PLAN_START,
    PLAN_STOP,
    PLAN_REMOVE,
};

/* The engines modules run on, by index (the agent's order). */
struct plan_engines {
    size_t n;
    const char *const *names; /* [n], for the reasons */
    const bool *available;    /* [n]: an unreachable engine's modules are left out entirely */
    const int *for_type;      /* [MODULE_TYPE_COUNT]: the engine running that type, -1 none */
};

/* One module as an engine has it. */
struct plan_actual {
    const char *name; /* module label (or container name) */
    const char *id;
    const char *config_hash; /* label; NULL when absent */
    int engine;              /* which engine holds it (index) */
    enum ctr_state state;
    bool may_start;    /* decided by the agent: a start is due (status change, boot,
                          restart policy, user request, never started) */
    bool user_stopped; /* stopped by a user: stays stopped until started or redeployed */
};

struct plan_step {
    enum plan_action action;
    const char *module;             /* borrowed from the inputs */
    const char *container_id;       /* existing container, or NULL */
    int old_engine;                 /* engine holding container_id (index) */
    const struct module_spec *spec; /* desired, NULL for PLAN_REMOVE */
    uint32_t order;                 /* startupOrder group */
    char reason[160];
};

struct plan {
    struct plan_step *steps;
    size_t n;
};

/* Modules whose engine is unreachable (or that no engine runs) are left out entirely, neither
 * created nor removed, until it is back. */
int plan_compute(const struct deployment *d, const struct plan_actual *actual, size_t n_actual,
                 const struct plan_engines *engines, struct plan *ret);
void plan_free(struct plan *p);
const char *plan_action_name(enum plan_action a);
/* [{"module":..., "action":..., "reason":..., "startupOrder":...}] without KEEP steps unless
 * include_keep. */
json_t *plan_to_json(const struct plan *p, bool include_keep);
size_t plan_count_changes(const struct plan *p);

/* What a deployment changes against the one before it, module by module: the unit of an atomic
 * deployment (docs/deployments.md). A module is watched (must reach running, and stay running,
 * before the deployment counts as applied) when the new deployment wants it running and it is
 * new, its desired config changed, or it was stopped before. Unchanged modules are not: their
 * crashes are their runtime status, as before, and rolling back would not cure them. */
enum plan_change {
    PLAN_CHANGE_NONE,
    PLAN_CHANGE_ADDED,
    PLAN_CHANGE_CHANGED, /* config hash or module type (engine) */
    PLAN_CHANGE_STARTED, /* desired status stopped → running */
    PLAN_CHANGE_STOPPED, /* desired status running → stopped */
    PLAN_CHANGE_REMOVED,
};

struct plan_change_entry {
    const char *module; /* borrowed from the deployments */
    enum plan_change change;
    bool watch;
};

struct plan_changes {
    struct plan_change_entry *v;
    size_t n;
};

/* prev may be NULL (no deployment before). Every module of either deployment gets an entry. */
int plan_changes_compute(const struct deployment *prev, const struct deployment *next,
                         struct plan_changes *ret);
void plan_changes_free(struct plan_changes *c);
const struct plan_change_entry *plan_changes_find(const struct plan_changes *c, const char *module);
const char *plan_change_name(enum plan_change c);
