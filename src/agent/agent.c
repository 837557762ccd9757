/* agent.c — the reconciler (see agent.h).
 *
 * Everything runs on the daemon's event loop. Mutations of the engines happen in reconcile
 * passes, one at a time: a trigger while a pass runs marks it dirty and a new pass follows.
 * A pass: (1) list every reachable engine and inspect what ledge owns, (2) make pending restart
 * decisions, (3) plan, (4) run stops/removals together, then each startupOrder group together,
 * a group only after the previous one finished. The engines are slots, each running some module
 * types; what an engine can do (networks, images, platforms) is asked of its ops table. Module
 * commands (restart) and unhealthy restarts run outside passes; a module with an operation in
 * flight is "busy" and passes leave it alone.
 *
 * Invariants: a module's runtime entry (mod_rt) lives while the deployment names it or a
 * container of it exists; an entry is freed only by the removal that ends its last container.
 * The deployment a pass works from is reference-counted, so applying a new one mid-pass is safe.
 *
 * Atomic deployments (struct tx, docs/deployments.md): a deployment is stored with the one it
 * replaces before anything changes, then goes APPLYING (the first pass working from it: a step
 * of a module it changes that fails ends it, and no later startupOrder group starts) → WATCHING
 * (every module it changed that should run must be running, healthy where it has a health
 * check, for deploy_settle, before deploy_timeout) → applied; or, on a failure, ROLLING_BACK
 * (the previous deployment in force again, the first pass working from it restores it) →
 * rolled back. One at a time; ledged restarted mid-way resumes from the stored phase. */
#include "agent/agent.h"

#include <assert.h>
#include <errno.h>
#include <event2/event.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "plan.h"
#include "engine/platform.h"
#include "image/ref.h"
#include "route/route.h"
#include "base/crypto.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/quantile.h"
#include "base/timeutil.h"
#include "log/log.h"

#define COMP "agent"
#define AGENT_MAX_ENGINES 8

struct depref {
    struct deployment *d;
    char *text;
    int refs;
};

struct mod_rt {
    struct agent *a;
    char *name;
    int eng; /* slot of the engine holding container_id */
    char *container_id;
    char *config_hash;
    enum ctr_state state;
    enum ctr_health health;
    int exit_code;
    int64_t started_ms, finished_ms;
    int pid; /* process modules: the program's pid while running */
    struct module_record rec;
    bool restart_due; /* restart policy: start it now */
    bool force_start; /* status change, redeploy, user start */
    bool busy;
    bool seen;
    struct event *restart_timer;
    int64_t restart_at_ms;
    int64_t decided_exit_ms;
    char *last_error;   /* last failed step, cleared by a successful start */
    uint64_t state_gen; /* a->state_gen when an event or an operation last set state */
    /* IoT Edge's edgeAgent_* counters (agent_metrics_json), since ledged started: the engine
     * asked to start and to stop it, and the time it was expected to run (in the deployment
     * with desired status running) and ran while expected, accounted up to clock_ms. */
    uint64_t starts, stops;
    int64_t clock_ms, expected_ms, running_ms;
    struct mod_rt *next;
};

struct waiter {
    agent_done_fn cb;
    void *ud;
    json_t *plan;
    struct waiter *next;
};

struct tx;
struct pass;

/* What an engine request answers with, for requests whose context is a plain allocation that
 * begins with this link: on a->inflight until answered, freed by agent_free() otherwise (the
 * engines drop unanswered requests silently when they are freed). */
struct inflight {
    struct inflight *prev, *next;
};

/* One engine's listing for a pass; owned by the pass, so a listing the engine drops at shutdown
 * without answering leaks nothing. */
struct list_ctx {
    struct pass *p;
    int eng;
};

struct pass {
    struct agent *a;
    struct list_ctx *lists; /* one per slot */
    struct tx *tx;          /* the pass applying or restoring a deployment transaction */
    bool abort;             /* its transaction failed: no further group starts */
    struct depref *dep;
    struct waiter *waiters;
    int pending;
    struct plan plan;
    size_t next;
    json_t *outcome;
    uint64_t state_gen; /* a->state_gen when the listing started */
    bool planned;       /* the plan was made (and run): a boot listed by this pass is done */
};

/* An engine the agent drives. */
struct slot {
    struct agent *a;
    struct engine *e;
    unsigned module_types; /* bits (1u << MODULE_TYPE_*) */
    bool up;               /* its event stream is connected */
    bool network_ok;       /* ensure_network() done since it (re)connected */
    bool boot_pending;     /* its modules not started yet since the boot */
    bool boot_listed;      /* the running pass lists it for its boot */
};

/* A validation in flight (agent_validate): waiting for image platforms. */
struct validation {
    struct agent *a;
    struct deployment *d;
    struct lstrv errors;
    int outstanding;
    agent_validate_fn cb;
    void *ud;
    void *owner;               /* what agent_cancel_waiter() matches */
    void (*free_ud)(void *ud); /* when dropped without a verdict */
    bool cancelled;
    struct validation *next;
};

struct agent {
    struct event_base *base;
    struct slot *slots;
    size_t n_slots;
    int slot_for[MODULE_TYPE_COUNT]; /* -1: no engine runs that type */
    struct state_db *db;
    struct agent_options o;
    json_t *default_log_config;
    struct depref *dep;
    struct mod_rt *mods;
    struct pass *pass;
    bool pass_dirty;
    uint64_t state_gen; /* counts what events and operations told about module states */
    struct event *pass_ev;
    struct waiter *waiters;
    struct validation *validations;
    bool started;
    char *boot_id; /* the kernel's boot id, while some engine's boot is not done */
    /* Set when the state database was salvaged without the deployment in force: what the
     * engines hold is kept as it is (nothing created, started, stopped or removed) until a
     * deployment is applied. The reason, for the log and the status document. */
    char *holding;
    bool deployment_recovered; /* the state database was salvaged and its deployment kept */
    struct tx *tx;             /* the deployment being applied, at most one */
    struct op *ops;            /* module operations in flight */
    struct inflight *inflight; /* other request contexts in flight */
    struct {
        uint64_t count;
        int64_t sum_us;
        struct lquant q;            /* the last 10 minutes' quantiles */
    } latency[AGENT_COMMAND_COUNT]; /* engine commands answered, and their time */
};

static void inflight_add(struct agent *a, struct inflight *l)
{
    l->prev = NULL;
    l->next = a->inflight;
    if (a->inflight)
        a->inflight->prev = l;
    a->inflight = l;
}

/* Unlinks and frees the context l begins. */
static void inflight_free(struct agent *a, struct inflight *l)
{
    if (l->prev)
        l->prev->next = l->next;
    else if (a->inflight == l)
        a->inflight = l->next;
    if (l->next)
        l->next->prev = l->prev;
    free(l);
}

/* A module of a deployment transaction (parallel to tx->changes.v). */
struct tx_module {
    bool armed; /* its container of this deployment was started: its exits count */
    bool ok;
    int64_t ready_since_ms;
    bool failed;
};

enum tx_phase { TX_APPLYING, TX_WATCHING, TX_ROLLING_BACK };

struct tx {
    struct agent *a;
    struct state_tx st; /* as stored */
    enum tx_phase phase;
    struct depref *dep;  /* the deployment being applied */
    struct depref *prev; /* what a rollback restores; NULL: no deployment before */
    struct plan_changes changes;
    struct tx_module *mods;
    json_t *plan;    /* the plan shown when it was applied (NULL after a restart of ledged) */
    json_t *outcome; /* the steps of the pass that applied it */
    json_t *restore; /* the steps of the pass that restored the previous one */
    json_t *reasons; /* [{"module", "reason"}] of what failed */
    bool failed;
    bool pass_seen; /* the pass of the current phase has started */
    int64_t deadline_ms;
    struct event *timer;
    struct waiter *waiters;
};

static void trigger(struct agent *a);
static void pass_step_done(struct pass *p);
static void validation_drop(struct validation *v);
static json_t *time_or_null(int64_t ms);
static void tx_module_failed(struct tx *tx, const char *module, const char *reason);
static bool tx_counts(const struct tx *tx, const char *module);
static struct tx_module *tx_watched(struct tx *tx, const char *module);
static void tx_evaluate(struct agent *a);
static void tx_pass_done(struct tx *tx, json_t *outcome);
static void tx_free(struct tx *tx);
static void tx_recover(struct agent *a, struct state_tx *st);

/* State learnt from an event or from an operation's result: newer than any listing or inspect
 * answer already on its way, which must not overwrite it (an exit seen in an event would
 * otherwise turn back into "running" from a listing made just before it). */
static void rt_set_state(struct mod_rt *rt, enum ctr_state st)
{
    rt->state = st;
    rt->state_gen = ++rt->a->state_gen;
}

/* May an observation made by pass p (listing, inspect) set rt's state? */
static bool rt_observation_current(const struct pass *p, const struct mod_rt *rt)
{
    return rt->state_gen <= p->state_gen;
}

/* ------------------------------------------------------------------ metrics */

static const struct module_spec *spec_of(struct agent *a, const char *name);
static enum runtime_status rt_status(struct agent *a, const struct mod_rt *rt, char *desc,
                                     size_t n);

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Account the time since the last tick to each module's expected and running-correctly totals
 * under the state the agent held until now: called before anything that may change a module's
 * state or the deployment, and at each read, so every interval is counted under the state it
 * was spent in. */
static void clocks_tick(struct agent *a)
{
    int64_t now = ltime_mono_ms();
    for (struct mod_rt *rt = a->mods; rt; rt = rt->next) {
        int64_t dt = rt->clock_ms ? now - rt->clock_ms : 0;
        rt->clock_ms = now;
        const struct module_spec *spec = spec_of(a, rt->name);
        if (dt <= 0 || !spec || spec->status != MODULE_STATUS_RUNNING)
            continue;
        rt->expected_ms += dt;
        char desc[256];
        if (rt_status(a, rt, desc, sizeof(desc)) == RS_RUNNING)
            rt->running_ms += dt;
    }
}

static const char *const command_names[AGENT_COMMAND_COUNT] = {
    [AGENT_COMMAND_CREATE] = "create",
    [AGENT_COMMAND_REMOVE] = "remove",
    [AGENT_COMMAND_START] = "start",
    [AGENT_COMMAND_STOP] = "stop",
};

json_t *agent_metrics_json(struct agent *a)
{
    clocks_tick(a);
    json_t *mods = json_array();
    for (struct mod_rt *rt = a->mods; rt; rt = rt->next) {
        const struct module_spec *spec = spec_of(a, rt->name);
        char desc[256];
        enum runtime_status st = rt_status(a, rt, desc, sizeof(desc));
        json_array_append_new(
            mods,
            json_pack("{s:s, s:s, s:I, s:I, s:f, s:f, s:s?, s:i, s:b}", "name", rt->name, "version",
                      spec && spec->version ? spec->version : "", "starts", (json_int_t)rt->starts,
                      "stops", (json_int_t)rt->stops, "expectedRunningSeconds",
                      (double)rt->expected_ms / 1000.0, "runningCorrectlySeconds",
                      (double)rt->running_ms / 1000.0, "containerId", rt->container_id, "pid",
                      st == RS_RUNNING || st == RS_UNHEALTHY ? rt->pid : 0, "inDeployment",
                      spec != NULL));
    }
    json_t *cmds = json_array();
    int64_t now_ms = mono_us() / 1000;
    for (int i = 0; i < AGENT_COMMAND_COUNT; i++) {
        double v[AGENT_LATENCY_OBJECTIVES];
        json_t *qs = json_array();
        if (lquant_quantiles(&a->latency[i].q, now_ms, agent_latency_objectives,
                             AGENT_LATENCY_OBJECTIVES, v) == 0)
            for (size_t k = 0; k < AGENT_LATENCY_OBJECTIVES; k++)
                json_array_append_new(qs, json_pack("{s:f, s:o}", "quantile",
                                                    agent_latency_objectives[k], "value",
                                                    isnan(v[k]) ? json_null() : json_real(v[k])));
        json_array_append_new(cmds,
                              json_pack("{s:s, s:I, s:f, s:o}", "command", command_names[i],
                                        "count", (json_int_t)a->latency[i].count, "sumSeconds",
                                        (double)a->latency[i].sum_us / 1000000.0, "quantiles", qs));
    }
    return json_pack("{s:o, s:o}", "modules", mods, "commands", cmds);
}

const double agent_latency_objectives[AGENT_LATENCY_OBJECTIVES] = {0.1, 0.5, 0.9, 0.99};

/* ------------------------------------------------------------------ small helpers */

static struct slot *slot_at(struct agent *a, int i)
{
    return i >= 0 && (size_t)i < a->n_slots ? &a->slots[i] : NULL;
}

/* The engine of a slot the caller knows exists (an op's or a module's recorded engine). */
static struct engine *slot_engine(struct agent *a, int i)
{
    struct slot *s = slot_at(a, i);
    assert(s);
    return s->e;
}

static int slot_index_for(struct agent *a, enum module_type t)
{
    return (unsigned)t < MODULE_TYPE_COUNT ? a->slot_for[t] : -1;
}

static struct slot *slot_for(struct agent *a, enum module_type t)
{
    return slot_at(a, slot_index_for(a, t));
}

static struct slot *slot_of_engine(struct agent *a, const struct engine *e)
{
    for (size_t i = 0; i < a->n_slots; i++)
        if (a->slots[i].e == e)
            return &a->slots[i];
    return NULL;
}

static const char *slot_name(const struct slot *sl)
{
    return sl ? sl->e->ops->name : "?";
}

/* What people call the engine in messages: by what it runs, not by its name. */
static const char *slot_noun(const struct slot *sl)
{
    return sl && sl->e->ops->runs == ENGINE_RUNS_PROGRAMS ? "process" : "container";
}

/* The engines as the planner sees them. */
struct plan_view {
    const char *names[AGENT_MAX_ENGINES];
    bool available[AGENT_MAX_ENGINES];
    struct plan_engines engines;
};

static const struct plan_engines *plan_view(struct agent *a, struct plan_view *pv)
{
    for (size_t i = 0; i < a->n_slots; i++) {
        pv->names[i] = slot_name(&a->slots[i]);
        pv->available[i] = a->slots[i].up;
    }
    pv->engines = (struct plan_engines){
        .n = a->n_slots, .names = pv->names, .available = pv->available, .for_type = a->slot_for};
    return &pv->engines;
}

const char *runtime_status_name(enum runtime_status s)
{
    static const char *const names[] = {"unknown", "running",   "stopped", "failed",
                                        "backoff", "unhealthy", "dead"};
    return (size_t)s < ARRAY_SIZE(names) ? names[s] : "unknown";
}

static void depref_put(struct depref *r)
{
    if (r && --r->refs == 0) {
        deployment_free(r->d);
        free(r->text);
        free(r);
    }
}

static struct depref *depref_get(struct depref *r)
{
    if (r)
        r->refs++;
    return r;
}

static const struct module_spec *spec_of(struct agent *a, const char *name)
{
    return a->dep ? deployment_find(a->dep->d, name) : NULL;
}

static struct mod_rt *rt_find(struct agent *a, const char *name)
{
    for (struct mod_rt *rt = a->mods; rt; rt = rt->next)
        if (strcmp(rt->name, name) == 0)
            return rt;
    return NULL;
}

static struct mod_rt *rt_find_id(struct agent *a, const char *id)
{
    for (struct mod_rt *rt = a->mods; rt && id; rt = rt->next)
        if (rt->container_id && strcmp(rt->container_id, id) == 0)
            return rt;
    return NULL;
}

static void restart_timer_cb(evutil_socket_t fd, short what, void *arg);

static struct mod_rt *rt_get(struct agent *a, const char *name)
{
    struct mod_rt *rt = rt_find(a, name);
    if (rt)
        return rt;
    rt = calloc(1, sizeof(*rt));
    if (!rt)
        return NULL;
    rt->a = a;
    rt->name = strdup(name);
    rt->rec.name = strdup(name);
    rt->eng = -1;
    rt->exit_code = -1;
    rt->restart_timer = evtimer_new(a->base, restart_timer_cb, rt);
    if (!rt->name || !rt->rec.name || !rt->restart_timer) {
        free(rt->name);
        free(rt->rec.name);
        if (rt->restart_timer)
            event_free(rt->restart_timer);
        free(rt);
        return NULL;
    }
    rt->next = a->mods;
    a->mods = rt;
    return rt;
}

static void rt_free(struct mod_rt *rt)
{
    event_free(rt->restart_timer);
    free(rt->name);
    free(rt->container_id);
    free(rt->config_hash);
    free(rt->last_error);
    module_record_clear(&rt->rec);
    free(rt);
}

static void rt_unlink_free(struct agent *a, struct mod_rt *rt)
{
    for (struct mod_rt **pp = &a->mods; *pp; pp = &(*pp)->next)
        if (*pp == rt) {
            *pp = rt->next;
            break;
        }
    rt_free(rt);
}

static void set_str(char **dst, const char *src)
{
    if (*dst && src && strcmp(*dst, src) == 0)
        return;
    free(*dst);
    *dst = src ? strdup(src) : NULL;
}

static bool timer_pending(const struct mod_rt *rt)
{
    return evtimer_pending(rt->restart_timer, NULL);
}

/* The engine a module lives on: its container's, else the one its desired type runs on. */
static struct slot *rt_slot(struct agent *a, const struct mod_rt *rt)
{
    if (rt->container_id)
        return slot_at(a, rt->eng);
    const struct module_spec *spec = spec_of(a, rt->name);
    return spec ? slot_for(a, spec->type) : NULL;
}

static enum runtime_status rt_status(struct agent *a, const struct mod_rt *rt, char *desc, size_t n)
{
    const struct module_spec *spec = spec_of(a, rt->name);
    const struct slot *sl = rt_slot(a, rt);
    if (sl && !sl->up) {
        snprintf(desc, n, "%s engine unreachable; state unknown", slot_noun(sl));
        return RS_UNKNOWN;
    }
    if (!rt->container_id) {
        if (rt->last_error) {
            snprintf(desc, n, "%s", rt->last_error);
            return RS_FAILED;
        }
        snprintf(desc, n, "%s", spec ? "not created yet" : "removed");
        return RS_UNKNOWN;
    }
    switch (rt->state) {
    case CTR_RUNNING:
        if (rt->health == HEALTH_UNHEALTHY) {
            snprintf(desc, n, "running, health check failing");
            return RS_UNHEALTHY;
        }
        snprintf(desc, n, "running");
        return RS_RUNNING;
    case CTR_EXITED:
        if (rt->restart_due && !timer_pending(rt)) {
            /* the back-off is over and the restart is on its way */
            snprintf(desc, n, "exited with code %d; restarting (restart %u/%u)", rt->exit_code,
                     rt->rec.restart_count + 1, a->o.restart.max_restarts);
            return RS_BACKOFF;
        }
        if (timer_pending(rt)) {
            int64_t left = rt->restart_at_ms - ltime_now_ms();
            snprintf(desc, n, "exited with code %d; restart %u/%u in %llds", rt->exit_code,
                     rt->rec.restart_count + 1, a->o.restart.max_restarts,
                     (long long)((left > 0 ? left : 0) + 999) / 1000);
            return RS_BACKOFF;
        }
        if (rt->rec.gave_up) {
            snprintf(desc, n, "failed: gave up after %u restarts (last exit code %d)",
                     rt->rec.restart_count, rt->exit_code);
            return RS_FAILED;
        }
        if (rt->rec.user_stopped) {
            snprintf(desc, n, "stopped by request");
            return RS_STOPPED;
        }
        if (rt->last_error) {
            snprintf(desc, n, "%s", rt->last_error);
            return RS_FAILED;
        }
        if (spec && spec->status == MODULE_STATUS_STOPPED) {
            snprintf(desc, n, "stopped (desired status stopped)");
            return RS_STOPPED;
        }
        if (rt->exit_code == 0) {
            snprintf(desc, n, "exited with code 0");
            return RS_STOPPED;
        }
        if (rt->exit_code < 0)
            snprintf(desc, n, "exited (exit code unknown)");
        else
            snprintf(desc, n, "exited with code %d", rt->exit_code);
        return RS_FAILED;
    case CTR_CREATED:
    case CTR_PAUSED:
    case CTR_RESTARTING:
        if (rt->last_error) {
            snprintf(desc, n, "%s", rt->last_error);
            return RS_FAILED;
        }
        snprintf(desc, n, "%s", ctr_state_name(rt->state));
        return RS_STOPPED;
    case CTR_DEAD:
        snprintf(desc, n, "container is dead");
        return RS_DEAD;
    default:
        snprintf(desc, n, "state unknown");
        return RS_UNKNOWN;
    }
}

static void rt_persist(struct agent *a, struct mod_rt *rt)
{
    char desc[256];
    rt_status(a, rt, desc, sizeof(desc));
    set_str(&rt->rec.description, desc);
    rt->rec.exit_code = rt->exit_code;
    if (state_save_record(a->db, &rt->rec) < 0)
        log_error(COMP, "%s: cannot save the module record", rt->name);
}

static void rt_fail(struct agent *a, struct mod_rt *rt, const struct lerr *err, const char *what)
{
    char msg[LERR_MSG_MAX + 64];
    snprintf(msg, sizeof(msg), "%s", err && err->msg[0] ? err->msg : what);
    set_str(&rt->last_error, msg);
    log_error(COMP, "%s: %s", rt->name, msg);
    rt_persist(a, rt);
}

/* ------------------------------------------------------------------ restart policy */

static void restart_op_start(struct agent *a, struct mod_rt *rt, bool counts_as_restart);

static void evaluate_restart(struct agent *a, struct mod_rt *rt, bool unhealthy)
{
    const struct module_spec *spec = spec_of(a, rt->name);
    if (!spec || spec->status != MODULE_STATUS_RUNNING || rt->rec.user_stopped || rt->rec.gave_up ||
        rt->busy || timer_pending(rt)) {
        rt_persist(a, rt);
        return;
    }
    int64_t now = ltime_now_ms();
    int64_t exited = rt->finished_ms ? rt->finished_ms : now;
    unsigned count =
        restart_effective_count(&a->o.restart, rt->rec.restart_count, rt->started_ms, exited);
    if (count != rt->rec.restart_count) {
        log_info(COMP, "%s: ran %llds without failing; restart count reset", rt->name,
                 (long long)(exited - rt->started_ms) / 1000);
        rt->rec.restart_count = count;
    }
    int64_t at = 0;
    enum restart_verdict v =
        restart_decide(&a->o.restart, spec->restart_policy, unhealthy ? 1 : rt->exit_code,
                       unhealthy, count, unhealthy ? now : exited, now, &at);
    rt->decided_exit_ms = rt->finished_ms;
    switch (v) {
    case RESTART_NO:
        log_info(COMP, "%s: exited with code %d; restart policy %s does not restart it", rt->name,
                 rt->exit_code, restart_policy_name(spec->restart_policy));
        break;
    case RESTART_NOW:
        if (unhealthy) {
            restart_op_start(a, rt, true);
        } else {
            rt->restart_due = true;
            trigger(a);
        }
        break;
    case RESTART_LATER: {
        rt->restart_at_ms = at;
        int64_t wait = at - now;
        struct timeval tv = {wait / 1000, (wait % 1000) * 1000};
        evtimer_add(rt->restart_timer, &tv);
        log_info(COMP, "%s: %s; restart %u/%u in %lld ms", rt->name,
                 unhealthy ? "unhealthy" : "exited", count + 1, a->o.restart.max_restarts,
                 (long long)wait);
        break;
    }
    case RESTART_GIVE_UP:
        rt->rec.gave_up = true;
        log_warn(COMP, "%s: failed %u times; giving up (restart policy %s)", rt->name, count,
                 restart_policy_name(spec->restart_policy));
        break;
    }
    rt_persist(a, rt);
}

static void restart_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mod_rt *rt = arg;
    struct agent *a = rt->a;
    if (rt->state == CTR_RUNNING && rt->health == HEALTH_UNHEALTHY) {
        restart_op_start(a, rt, true);
        return;
    }
    rt->restart_due = true;
    trigger(a);
}

/* ------------------------------------------------------------------ step operations */

/* A create or recreate gets its image first (pulled, or the local one), checks its platform,
 * and only then stops and removes the module's previous container: a pull that fails leaves the
 * previous container running. A removal is ST_STOP_OLD, ST_REMOVE_OLD. */
enum stage {
    ST_IMAGE,
    ST_PULL,
    ST_PRESENT,
    ST_PLATFORM,
    ST_STOP_OLD,
    ST_REMOVE_OLD,
    ST_PREPARE,
    ST_NETWORK,
    ST_CREATE,
    ST_START,
    ST_PID, /* the engine's start event gave no pid (docker's does not): inspect for it */
    ST_STOP,
    ST_DONE,
};

struct op {
    struct agent *a;
    struct pass *pass; /* NULL for commands */
    struct mod_rt *rt;
    enum plan_action action;
    bool restart; /* a command restart (stop then start) */
    bool counts_as_restart;
    const struct module_spec *spec;
    struct depref *dep; /* keeps spec alive */
    int old_eng;        /* slot holding old_id */
    char *old_id;
    enum stage stage;
    char *genid;
    bool pull_failed;
    struct lerr pull_err;
    char *warning; /* for the outcome: done, but not as asked (a pull failed, the local image) */
    struct lerr err;
    int result;
    agent_done_fn cb;
    void *ud;
    int64_t sent_us;        /* when the engine command in flight (command) was sent */
    int command;            /* enum agent_command, or -1 for a request that is not one */
    struct op *prev, *next; /* a->ops: what agent_free() drops when the engine never answers */
};

static void op_next(struct op *op);

/* An engine command of this op is sent (the module's starts and stops count what was asked). */
static void op_sent(struct op *op, enum agent_command c)
{
    op->command = (int)c;
    op->sent_us = mono_us();
    if (c == AGENT_COMMAND_START)
        op->rt->starts++;
    else if (c == AGENT_COMMAND_STOP)
        op->rt->stops++;
}

/* The engine answered this op's request: its latency, if it was a command; and the time up to
 * now counted under the state before the answer changes it. */
static void op_answered(struct op *op)
{
    struct agent *a = op->a;
    if (op->command >= 0 && op->command < AGENT_COMMAND_COUNT) {
        int64_t now = mono_us();
        a->latency[op->command].count++;
        a->latency[op->command].sum_us += now - op->sent_us;
        (void)lquant_observe(&a->latency[op->command].q, (double)(now - op->sent_us) / 1e6,
                             now / 1000);
    }
    op->command = -1;
    clocks_tick(a);
}

static void op_release(struct op *op)
{
    struct agent *a = op->a;
    if (op->prev)
        op->prev->next = op->next;
    else if (a->ops == op)
        a->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    depref_put(op->dep);
    free(op->old_id);
    free(op->genid);
    free(op->warning);
    free(op);
}

/* The engine the desired module runs on. */
static struct slot *op_slot(struct op *op)
{
    return op->spec ? slot_for(op->a, op->spec->type) : slot_at(op->a, op->old_eng);
}

static struct engine *op_engine(struct op *op)
{
    return op_slot(op)->e;
}

/* The engine holding the module's current container. */
static struct engine *rt_engine(struct op *op)
{
    return slot_engine(op->a, op->rt->eng);
}

static void op_finish(struct op *op)
{
    struct agent *a = op->a;
    struct mod_rt *rt = op->rt;
    rt->busy = false;
    json_t *entry = json_pack("{s:s, s:s, s:s}", "module", rt->name, "action",
                              op->restart ? "restart" : plan_action_name(op->action), "result",
                              op->result < 0 ? "error" : "ok");
    if (entry && op->result < 0)
        json_object_set_new(entry, "message", json_string(lerr_str(&op->err)));
    else if (entry && op->warning)
        json_object_set_new(entry, "warning", json_string(op->warning));
    /* A step of a module the deployment changes failed: the deployment failed. */
    struct tx *tx = op->pass ? op->pass->tx : NULL;
    if (tx && op->result < 0 && tx->phase == TX_APPLYING && tx_counts(tx, rt->name))
        tx_module_failed(tx, rt->name, lerr_str(&op->err));
    if (op->result < 0)
        rt_fail(a, rt, &op->err, "failed");
    else
        rt_persist(a, rt);

    if (op->action == PLAN_REMOVE && op->result == 0 && !spec_of(a, rt->name)) {
        if (a->o.hooks.module_removed)
            a->o.hooks.module_removed(a->o.hooks.ud, rt->name);
        state_delete_record(a->db, rt->name);
        rt_unlink_free(a, rt);
    }
    struct pass *p = op->pass;
    if (p) {
        json_array_append_new(p->outcome, entry);
    } else {
        if (op->cb)
            op->cb(op->ud, op->result, entry);
        json_decref(entry);
    }
    op_release(op);
    if (p)
        pass_step_done(p);
    else
        trigger(a); /* a command may have changed what the plan should be */
}

static void op_fail(struct op *op, int r, const struct lerr *err, const char *fallback)
{
    op->result = r < 0 ? r : -EIO;
    if (err && err->msg[0])
        op->err = *err;
    else
        lerr_set(&op->err, op->result, "%s: %s", op->rt->name, fallback);
    op->stage = ST_DONE;
    op_finish(op);
}

/* The registry an image reference names (docker.io for Docker Hub's short names), for the
 * engine's X-Registry-Auth and for messages; the reference's first component when it is none
 * Docker's grammar knows (IoT Edge's "$upstream:443/..."). */
static void image_registry(const char *image, char *dst, size_t size)
{
    struct img_ref ref;
    if (image && img_ref_parse(image, &ref, NULL) == 0)
        snprintf(dst, size, "%s", ref.registry);
    else
        snprintf(dst, size, "%.*s", image ? (int)strcspn(image, "/") : 0, image ? image : "");
}

/* A failed pull said for people: the image, its registry, what the failure means, the engine's
 * words, and what became of the module (then: the local image was used; else the previous
 * container keeps running, or nothing was created). */
static void op_pull_message(struct op *op, struct lerr *e, const char *then)
{
    char registry[IMG_REF_MAX + 1];
    image_registry(op->spec->image, registry, sizeof(registry));
    const struct registry_credential *c = deployment_credential_for(op->dep->d, op->spec->image);
    char why[160];
    switch (op->pull_err.code) {
    case -EACCES:
        if (c)
            snprintf(why, sizeof(why),
                     "the registry refused the credentials of registryCredentials.%.60s", c->name);
        else
            snprintf(why, sizeof(why),
                     "the registry wants credentials and no registryCredentials entry "
                     "matches %.60s",
                     registry);
        break;
    case -ENOENT:
        snprintf(why, sizeof(why), "the registry has no such image");
        break;
    case -EHOSTUNREACH:
        snprintf(why, sizeof(why), "the registry cannot be reached");
        break;
    case -EPROTO:
        snprintf(why, sizeof(why), "TLS with the registry failed");
        break;
    case -ETIMEDOUT:
        snprintf(why, sizeof(why), "it took too long");
        break;
    default:
        snprintf(why, sizeof(why), "the engine says why");
        break;
    }
    char fate[160];
    if (then)
        snprintf(fate, sizeof(fate), "%s", then);
    else if (op->old_id)
        snprintf(fate, sizeof(fate), "module %s keeps its previous container", op->rt->name);
    else
        snprintf(fate, sizeof(fate), "module %s is not created (the image is not present either)",
                 op->rt->name);
    lerr_set(e,
             then                ? 0
             : op->pull_err.code ? op->pull_err.code
                                 : -EIO,
             "cannot pull %.160s from registry %.80s: %s: %.200s; %s", op->spec->image, registry,
             why, op->pull_err.msg, fate);
}

static void op_done_cb(void *ud, int result, const struct lerr *err)
{
    struct op *op = ud;
    struct mod_rt *rt = op->rt;
    op_answered(op);
    switch (op->stage) {
    case ST_STOP_OLD:
        /* A container that is already gone is fine; other failures still try the removal. */
        if (result < 0 && result != -ENOENT)
            log_warn(COMP, "%s: stop failed: %s", rt->name, lerr_str(err));
        op->stage = ST_REMOVE_OLD;
        break;
    case ST_REMOVE_OLD:
        if (result < 0 && result != -ENOENT)
            return op_fail(op, result, err, "remove failed");
        free(rt->container_id);
        rt->container_id = NULL;
        rt->state = CTR_UNKNOWN;
        op->stage = op->action == PLAN_REMOVE ? ST_DONE : ST_PREPARE;
        break;
    case ST_NETWORK:
        if (result < 0)
            return op_fail(op, result, err, "cannot create the module network");
        op_slot(op)->network_ok = true;
        op->stage = ST_CREATE;
        break;
    case ST_PULL:
        if (result < 0) {
            /* Offline devices keep working from the local image: is there one? */
            op->pull_failed = true;
            lerr_set(&op->pull_err, result, "%s",
                     err && err->msg[0] ? err->msg : strerror(-result));
            op->stage = ST_PRESENT;
        } else {
            op->stage = ST_PLATFORM;
        }
        break;
    case ST_PRESENT:
        if (result < 0 && result != -ENOENT && !op->pull_failed)
            return op_fail(op, result, err, "cannot inspect the image");
        if (result < 0) {
            struct lerr e2;
            if (op->pull_failed)
                op_pull_message(op, &e2, NULL);
            else
                lerr_set(&e2, -ENOENT, "image %s is not present and imagePullPolicy is \"never\"%s",
                         op->spec->image,
                         op->old_id ? "; the previous container keeps running" : "");
            return op_fail(op, e2.code, &e2, "image missing");
        }
        if (op->pull_failed) {
            /* Said once, where it happened: the log and this step's outcome. */
            struct lerr e2;
            op_pull_message(op, &e2, "created from the local image");
            log_warn(COMP, "%s: %s", rt->name, e2.msg);
            free(op->warning);
            op->warning = strdup(e2.msg);
        }
        op->stage = ST_PLATFORM;
        break;
    case ST_START:
        if (result < 0) {
            /* A start that fails counts as a failed run for the restart policy. */
            rt_set_state(rt, rt->container_id ? CTR_CREATED : CTR_UNKNOWN);
            rt->exit_code = -1;
            rt->finished_ms = ltime_now_ms();
            op->result = result;
            op->err = err ? *err : op->err;
            if (err)
                lerr_set(&op->err, result, "%s", err->msg);
            op->stage = ST_DONE;
            struct mod_rt *r2 = rt;
            struct agent *a = op->a;
            op_finish(op);
            evaluate_restart(a, r2, false);
            return;
        }
        {
            int64_t now = ltime_now_ms();
            if (rt->state != CTR_RUNNING || rt->started_ms < now - 5000)
                rt->started_ms = now;
            rt_set_state(rt, CTR_RUNNING);
            rt->health = HEALTH_NONE;
            rt->rec.last_start_ms = now;
            if (op->counts_as_restart || rt->restart_due) {
                rt->rec.restart_count++;
                rt->rec.last_restart_ms = now;
            }
            rt->restart_due = false;
            rt->force_start = false;
            free(rt->last_error);
            rt->last_error = NULL;
            evtimer_del(rt->restart_timer);
            /* from here on its exits count against the deployment that started it */
            struct tx_module *tm = tx_watched(op->a->tx, rt->name);
            if (tm && op->a->tx->phase != TX_ROLLING_BACK) {
                tm->armed = true;
                tm->ready_since_ms = 0;
            }
        }
        /* the metrics endpoint reads the module's resources from its pid */
        op->stage = rt->pid ? ST_DONE : ST_PID;
        break;
    case ST_STOP:
        if (result < 0 && result != -ENOENT)
            return op_fail(op, result, err, "stop failed");
        if (rt->state == CTR_RUNNING)
            rt_set_state(rt, CTR_EXITED);
        if (op->restart) {
            op->stage = ST_START;
            rt->finished_ms = ltime_now_ms();
        } else {
            op->stage = ST_DONE;
        }
        break;
    default:
        op->stage = ST_DONE;
        break;
    }
    op_next(op);
}

/* ST_PID's answer: the running container's pid, when it is still the one just started. */
static void op_pid_cb(void *ud, int result, const struct engine_container *c,
                      const struct lerr *err)
{
    struct op *op = ud;
    struct mod_rt *rt = op->rt;
    if (result == 0 && c && c->pid > 0 && c->state == CTR_RUNNING && rt->container_id && c->id &&
        strcmp(c->id, rt->container_id) == 0 && !rt->pid)
        rt->pid = c->pid;
    op->stage = ST_DONE;
    op_next(op);
}

/* The host/guest rule: an image for another OS family or architecture fails its module with the
 * rule explained (and where a VM would run it), before anything is created. */
static void op_platform_cb(void *ud, int result, const char *os, const char *arch,
                           const char *variant, const struct lerr *err)
{
    struct op *op = ud;
    if (result == 0) {
        struct platform host;
        struct lerr perr = {0};
        if (platform_host(&host) == 0 &&
            platform_check_module(&host, op->spec->name, op->spec->image, os, arch, variant,
                                  &perr) < 0)
            return op_fail(op, -ENOEXEC, &perr, "image platform mismatch");
    }
    /* an inspect failure here only means we cannot tell: create reports real problems */
    op->stage = ST_STOP_OLD;
    op_next(op);
}

static void op_create_cb(void *ud, int result, const char *id, const struct lerr *err)
{
    struct op *op = ud;
    struct mod_rt *rt = op->rt;
    op_answered(op);
    if (result < 0)
        return op_fail(op, result, err, "create failed");
    set_str(&rt->container_id, id);
    set_str(&rt->config_hash, op->spec->config_hash);
    rt->eng = slot_index_for(op->a, op->spec->type);
    rt_set_state(rt, CTR_CREATED);
    rt->exit_code = 0;
    rt->started_ms = rt->finished_ms = 0;
    rt->health = HEALTH_NONE;
    set_str(&rt->rec.generation_id, op->genid);
    rt->rec.restart_count = 0;
    rt->rec.gave_up = false;
    rt->restart_due = false;
    free(rt->last_error);
    rt->last_error = NULL;
    evtimer_del(rt->restart_timer);
    state_save_record(op->a->db, &rt->rec);
    if (op->a->o.hooks.module_created)
        op->a->o.hooks.module_created(op->a->o.hooks.ud, rt->name);
    bool start = op->spec->status == MODULE_STATUS_RUNNING && !rt->rec.user_stopped;
    op->stage = start ? ST_START : ST_DONE;
    op_next(op);
}

static void op_progress(void *ud, const char *line)
{
    struct op *op = ud;
    log_debug(COMP, "%s: pull: %s", op->rt->name, line);
    if (op->a->o.hooks.progress)
        op->a->o.hooks.progress(op->a->o.hooks.ud, op->rt->name, line);
}

static int op_create(struct op *op)
{
    struct agent *a = op->a;
    const struct module_spec *m = op->spec;
    /* A new generation id (128 random bits, hex) for every container created: module keys
     * derive from it, so a recreated module never reuses its predecessor's credentials. */
    uint8_t rnd[16];
    if (lcrypto_random(rnd, sizeof(rnd)) < 0)
        return -EIO;
    free(op->genid);
    op->genid = malloc(2 * sizeof(rnd) + 1);
    if (!op->genid)
        return -ENOMEM;
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(op->genid + 2 * i, 3, "%02x", rnd[i]);
    _cleanup_json_ json_t *env = m->env ? json_deep_copy(m->env) : json_object();
    _cleanup_json_ json_t *binds = json_array();
    _cleanup_json_ json_t *labels = json_pack(
        "{s:s, s:s, s:s, s:s, s:s}", ENGINE_LABEL_OWNER, ENGINE_LABEL_OWNER_VALUE,
        ENGINE_LABEL_MODULE, m->name, ENGINE_LABEL_HASH, m->config_hash, ENGINE_LABEL_IMAGE,
        m->image ? m->image : m->path, ENGINE_LABEL_GENERATION, op->genid);
    if (!op->genid || !env || !binds || !labels)
        return -ENOMEM;
    if (m->version)
        json_object_set_new(labels, ENGINE_LABEL_VERSION, json_string(m->version));
    if (a->o.instance)
        json_object_set_new(labels, ENGINE_LABEL_DEVICE, json_string(a->o.instance));
    if (a->o.hooks.prepare_module) {
        int r = a->o.hooks.prepare_module(a->o.hooks.ud, m, op->genid, env, binds, &op->err);
        if (r < 0)
            return r;
    }
    /* runtime.settings.loggingOptions (a LogConfig document) beats ledge's default. */
    _cleanup_json_ json_t *manifest_logc = NULL;
    const char *lo = op->dep ? op->dep->d->logging_options : NULL;
    if (lo && *lo && ljson_parse(lo, strlen(lo), &manifest_logc, NULL) == 0 &&
        !json_is_object(manifest_logc)) {
        json_decref(manifest_logc);
        manifest_logc = NULL;
    }
    const json_t *logc = manifest_logc ? manifest_logc : a->default_log_config;
    struct engine_create_spec spec = {
        .name = m->name,
        .image = m->image,
        .create_options = m->create_options,
        .labels = labels,
        .env = env,
        .binds = binds,
        .gateway_hostname = a->o.gateway_hostname,
        .network = a->o.network,
        .default_log_config = logc,
        .path = m->path,
        .args = m->args,
    };
    struct engine *e = op_engine(op);
    return e->ops->create(e, &spec, op_create_cb, op);
}

static void op_next(struct op *op)
{
    struct agent *a = op->a;
    struct mod_rt *rt = op->rt;
    int r = 0;
    for (;;) {
        switch (op->stage) {
        case ST_STOP_OLD: {
            struct engine *e = slot_engine(a, op->old_eng);
            if (!op->old_id) {
                op->stage = op->action == PLAN_REMOVE ? ST_DONE : ST_PREPARE;
                continue;
            }
            op_sent(op, AGENT_COMMAND_STOP);
            r = e->ops->stop_container(e, op->old_id, a->o.stop_timeout_s, op_done_cb, op);
            break;
        }
        case ST_REMOVE_OLD: {
            struct engine *e = slot_engine(a, op->old_eng);
            op_sent(op, AGENT_COMMAND_REMOVE);
            r = e->ops->remove(e, op->old_id, op_done_cb, op);
            break;
        }
        case ST_PREPARE: {
            struct slot *sl = op_slot(op);
            op->stage = sl->e->ops->ensure_network && !sl->network_ok ? ST_NETWORK : ST_CREATE;
            continue;
        }
        case ST_NETWORK: {
            struct engine *e = op_engine(op);
            r = e->ops->ensure_network(e, a->o.network, op_done_cb, op);
            break;
        }
        case ST_IMAGE: {
            /* Engines that keep images pull them (or insist on the local one); others create. */
            const struct engine_ops *ops = op_engine(op)->ops;
            op->stage = !op->spec->image || !ops->pull || !ops->image_present ? ST_PLATFORM
                        : op->spec->pull_policy == PULL_NEVER                 ? ST_PRESENT
                                                                              : ST_PULL;
            continue;
        }
        case ST_PULL: {
            struct engine *e = op_engine(op);
            char resolved[ENGINE_IMAGE_MAX];
            if (engine_image_resolve(e, op->spec->image, resolved, sizeof(resolved), &op->err) <
                0) {
                r = -EINVAL;
                break;
            }
            const struct registry_credential *c =
                deployment_credential_for(op->dep->d, op->spec->image);
            char registry[IMG_REF_MAX + 1];
            image_registry(op->spec->image, registry, sizeof(registry));
            struct engine_registry_auth auth = {c ? c->username : NULL, c ? c->password : NULL,
                                                registry};
            r = e->ops->pull(e, op->spec->image, c ? &auth : NULL, op_progress, op_done_cb, op);
            break;
        }
        case ST_PRESENT: {
            struct engine *e = op_engine(op);
            r = e->ops->image_present(e, op->spec->image, op_done_cb, op);
            break;
        }
        case ST_PLATFORM: {
            struct engine *e = op_engine(op);
            if (!e->ops->image_platform) {
                op->stage = ST_STOP_OLD;
                continue;
            }
            r = e->ops->image_platform(e, op->spec->image, op_platform_cb, op);
            break;
        }
        case ST_CREATE:
            op_sent(op, AGENT_COMMAND_CREATE);
            r = op_create(op);
            break;
        case ST_START: {
            struct engine *e = rt_engine(op);
            op_sent(op, AGENT_COMMAND_START);
            rt->pid = 0; /* the last run's; the start event or ST_PID gives the new one */
            r = e->ops->start_container(e, rt->container_id, op_done_cb, op);
            break;
        }
        case ST_PID: {
            struct engine *e = rt_engine(op);
            if (!rt->container_id || e->ops->inspect(e, rt->container_id, op_pid_cb, op) < 0) {
                op->stage = ST_DONE; /* no pid: no resource numbers until the next pass */
                continue;
            }
            r = 0;
            break;
        }
        case ST_STOP: {
            struct engine *e = rt_engine(op);
            op_sent(op, AGENT_COMMAND_STOP);
            r = e->ops->stop_container(e, rt->container_id, a->o.stop_timeout_s, op_done_cb, op);
            break;
        }
        case ST_DONE:
            op_finish(op);
            return;
        }
        break;
    }
    if (r < 0)
        op_fail(op, r, op->err.msg[0] ? &op->err : NULL, "cannot start the engine request");
}

static struct op *op_new(struct agent *a, struct mod_rt *rt, enum plan_action action)
{
    struct op *op = calloc(1, sizeof(*op));
    if (!op)
        return NULL;
    op->a = a;
    op->rt = rt;
    op->action = action;
    op->command = -1;
    op->dep = depref_get(a->dep);
    op->next = a->ops;
    if (a->ops)
        a->ops->prev = op;
    a->ops = op;
    rt->busy = true;
    return op;
}

static void restart_op_start(struct agent *a, struct mod_rt *rt, bool counts_as_restart)
{
    if (rt->busy || !rt->container_id)
        return;
    struct op *op = op_new(a, rt, PLAN_START);
    if (!op)
        return;
    op->restart = true;
    op->counts_as_restart = counts_as_restart;
    op->stage = ST_STOP;
    log_info(COMP, "%s: restarting", rt->name);
    op_next(op);
}

/* ------------------------------------------------------------------ passes */

/* Did the deployment apply? Only the steps of its own plan decide: a restart the restart policy
 * makes in the same pass (a crashing module unchanged by the deployment) is the module's runtime
 * status, not the deployment's result (IoT Edge's semantics: docs/agent.md). */
static int waiter_result(const struct waiter *w, const json_t *outcome)
{
    size_t i, k;
    json_t *o, *step;
    json_array_foreach (outcome, i, o) {
        if (!lstr_eq(ljson_str(o, "result"), "error"))
            continue;
        json_array_foreach (w->plan, k, step) {
            if (lstr_eq(ljson_str(step, "module"), ljson_str(o, "module")))
                return -EIO;
        }
    }
    return 0;
}

/* The meta key holding the boot an engine's modules were last booted in. */
static void boot_key(const struct slot *sl, char *dst, size_t size)
{
    snprintf(dst, size, "boot_id:%s", slot_name(sl));
}

/* An engine's boot is done once a pass that listed it for the boot has started what should run:
 * only then is the boot recorded, so a ledged stopped before that (the engine not reachable
 * yet, or ledged stopped mid-pass) boots the engine's modules on its next start. */
static void boot_done(struct agent *a, struct slot *sl)
{
    if (!a->boot_id)
        return;
    char key[64];
    boot_key(sl, key, sizeof(key));
    if (state_set_meta(a->db, key, a->boot_id) < 0)
        log_warn(COMP, "cannot record the boot of the %s engine", slot_name(sl));
}

static void pass_finish(struct pass *p)
{
    struct agent *a = p->a;
    struct tx *tx = p->tx;
    json_t *tx_outcome = tx ? json_incref(p->outcome) : NULL;
    for (struct waiter *w = p->waiters; w;) {
        struct waiter *next = w->next;
        json_t *report = json_pack("{s:O, s:O}", "plan", w->plan, "outcome", p->outcome);
        int result = waiter_result(w, p->outcome);
        w->cb(w->ud, result, report);
        json_decref(report);
        json_decref(w->plan);
        free(w);
        w = next;
    }
    plan_free(&p->plan);
    json_decref(p->outcome);
    depref_put(p->dep);
    for (size_t i = 0; i < a->n_slots; i++) {
        struct slot *sl = &a->slots[i];
        if (sl->boot_listed) {
            if (p->planned)
                boot_done(a, sl);
            else
                sl->boot_pending = true; /* nothing was started for it: the next pass boots it */
        }
        sl->boot_listed = false;
    }
    a->pass = NULL;
    free(p->lists);
    free(p);
    if (tx)
        tx_pass_done(tx, tx_outcome); /* may end tx */
    json_decref(tx_outcome);
    if (a->pass_dirty) {
        a->pass_dirty = false;
        trigger(a);
    }
}

static void pass_run_group(struct pass *p);

static void pass_step_done(struct pass *p)
{
    if (--p->pending == 0)
        pass_run_group(p);
}

static bool is_stop_rank(enum plan_action a)
{
    return a == PLAN_STOP || a == PLAN_REMOVE;
}

/* Start every step of the next group: all stops/removals, or one startupOrder value. */
static void pass_run_group(struct pass *p)
{
    struct agent *a = p->a;
    while (p->next < p->plan.n && !p->abort) {
        size_t first = p->next;
        const struct plan_step *s0 = &p->plan.steps[first];
        size_t end = first;
        while (end < p->plan.n) {
            const struct plan_step *s = &p->plan.steps[end];
            if (is_stop_rank(s0->action) ? !is_stop_rank(s->action)
                                         : (is_stop_rank(s->action) || s->order != s0->order))
                break;
            end++;
        }
        p->next = end;
        p->pending = 1; /* guard: the group cannot finish while we are still starting it */
        for (size_t i = first; i < end; i++) {
            const struct plan_step *s = &p->plan.steps[i];
            if (s->action == PLAN_KEEP)
                continue;
            struct mod_rt *rt = rt_get(a, s->module);
            if (!rt || rt->busy)
                continue;
            struct op *op = op_new(a, rt, s->action);
            if (!op)
                continue;
            op->pass = p;
            op->spec = s->spec;
            op->old_eng = s->old_engine;
            op->old_id = s->container_id ? strdup(s->container_id) : NULL;
            switch (s->action) {
            case PLAN_CREATE:
            case PLAN_RECREATE:
                op->stage = ST_IMAGE;
                break;
            case PLAN_REMOVE:
                op->stage = ST_STOP_OLD;
                break;
            case PLAN_START:
                op->stage = ST_START;
                break;
            case PLAN_STOP:
                op->stage = ST_STOP;
                break;
            default:
                op->stage = ST_DONE;
            }
            log_info(COMP, "%s: %s (%s)", s->module, plan_action_name(s->action), s->reason);
            p->pending++;
            op_next(op);
        }
        if (--p->pending > 0)
            return; /* resumes from pass_step_done */
    }
    pass_finish(p);
}

static void pass_plan(struct pass *p)
{
    struct agent *a = p->a;
    if (a->holding && !p->dep) {
        /* No deployment to reconcile against after a damaged state database: an empty one
         * would remove every module (docs/agent.md "A damaged state database"). */
        pass_finish(p);
        return;
    }
    /* Restart decisions for exits not yet decided (e.g. a crash while ledged was away). */
    for (struct mod_rt *rt = a->mods; rt; rt = rt->next) {
        struct slot *sl = slot_at(a, rt->eng);
        if (!rt->container_id || !sl || sl->boot_listed || rt->busy || !sl->up)
            continue;
        bool exited = rt->state == CTR_EXITED || (rt->state == CTR_CREATED && rt->last_error);
        if (exited && rt->decided_exit_ms != rt->finished_ms && !rt->restart_due &&
            !rt->force_start)
            evaluate_restart(a, rt, false);
        else if (rt->state == CTR_RUNNING && rt->health == HEALTH_UNHEALTHY && !timer_pending(rt) &&
                 rt->decided_exit_ms != -1)
            evaluate_restart(a, rt, true);
    }
    size_t n = 0;
    for (struct mod_rt *rt = a->mods; rt; rt = rt->next)
        n++;
    struct plan_actual *actual = calloc(n ? n : 1, sizeof(*actual));
    if (!actual) {
        pass_finish(p);
        return;
    }
    size_t k = 0;
    for (struct mod_rt *rt = a->mods; rt; rt = rt->next) {
        struct slot *sl = slot_at(a, rt->eng);
        if (!rt->container_id || rt->busy || !sl)
            continue;
        actual[k++] = (struct plan_actual){
            .name = rt->name,
            .id = rt->container_id,
            .config_hash = rt->config_hash,
            .engine = rt->eng,
            .state = rt->state,
            .may_start = sl->boot_listed || rt->restart_due || rt->force_start ||
                         (rt->state == CTR_CREATED && !rt->last_error),
            .user_stopped = rt->rec.user_stopped,
        };
    }
    /* Busy modules are left out of the plan entirely, not recreated. */
    struct deployment view;
    struct module_spec *mods = NULL;
    const struct deployment *d = p->dep ? p->dep->d : NULL;
    struct deployment empty = {0};
    if (!d)
        d = &empty;
    view = *d;
    if (d->n_modules) {
        mods = calloc(d->n_modules, sizeof(*mods));
        size_t m = 0;
        for (size_t i = 0; mods && i < d->n_modules; i++) {
            struct mod_rt *rt = rt_find(a, d->modules[i].name);
            if (rt && rt->busy)
                continue;
            mods[m++] = d->modules[i];
        }
        view.modules = mods;
        view.n_modules = mods ? m : 0;
    }
    struct plan_view pv;
    int r = plan_compute(&view, actual, k, plan_view(a, &pv), &p->plan);
    free(actual);
    p->planned = r == 0;
    /* Steps point at the view's copies; point them back at the deployment's own specs. */
    for (size_t i = 0; r == 0 && i < p->plan.n; i++)
        if (p->plan.steps[i].spec)
            p->plan.steps[i].spec = deployment_find(d, p->plan.steps[i].module);
    free(mods);
    if (r < 0) {
        log_error(COMP, "planning failed: %s", strerror(-r));
        pass_finish(p);
        return;
    }
    if (plan_count_changes(&p->plan) == 0) {
        pass_finish(p);
        return;
    }
    pass_run_group(p);
}

/* Listing: both engines, then inspect every owned container for exit codes and times. */
static void pass_inspect_cb(void *ud, int result, const struct engine_container *c,
                            const struct lerr *err)
{
    struct pass *p = ud;
    struct agent *a = p->a;
    clocks_tick(a);
    if (result == 0) {
        struct mod_rt *rt = rt_find_id(a, c->id);
        if (rt && !rt->busy && rt_observation_current(p, rt)) {
            rt->state = c->state;
            rt->health = c->health;
            rt->exit_code = c->exit_code;
            rt->pid = c->pid;
            if (c->started_ms)
                rt->started_ms = c->started_ms;
            if (c->finished_ms)
                rt->finished_ms = c->finished_ms;
            if (c->error && rt->state != CTR_RUNNING)
                set_str(&rt->last_error, c->error);
        }
    }
    if (--p->pending == 0)
        pass_plan(p);
}

static void pass_list_cb_slot(struct pass *p, int eng, int result, const struct engine_container *v,
                              size_t n)
{
    struct agent *a = p->a;
    struct slot *sl = slot_at(a, eng);
    if (result < 0) {
        /* The engine failed between its event stream and now: leave its modules alone. */
        sl->up = false;
        sl->boot_listed = false;
        return;
    }
    if (sl->boot_listed)
        sl->boot_pending = false; /* this listing is the boot's */
    for (struct mod_rt *rt = a->mods; rt; rt = rt->next)
        if (rt->eng == eng)
            rt->seen = false;
    for (size_t i = 0; i < n; i++) {
        const char *name = engine_label(&v[i], ENGINE_LABEL_MODULE);
        if (!name)
            name = v[i].name;
        if (!name)
            continue;
        struct mod_rt *rt = rt_get(a, name);
        if (!rt || rt->busy) {
            if (rt)
                rt->seen = true;
            continue;
        }
        if (rt->container_id && rt->seen && rt->eng == eng &&
            strcmp(rt->container_id, v[i].id) != 0)
            continue; /* a duplicate: the planner removes the one it does not keep */
        rt->seen = true;
        rt->eng = eng;
        set_str(&rt->container_id, v[i].id);
        set_str(&rt->config_hash, engine_label(&v[i], ENGINE_LABEL_HASH));
        if (rt_observation_current(p, rt)) {
            rt->state = v[i].state;
            rt->health = v[i].health;
        }
        const char *gen = engine_label(&v[i], ENGINE_LABEL_GENERATION);
        if (gen)
            set_str(&rt->rec.generation_id, gen);
    }
    for (struct mod_rt *rt = a->mods; rt; rt = rt->next)
        if (rt->eng == eng && !rt->seen && !rt->busy && rt->container_id) {
            free(rt->container_id);
            rt->container_id = NULL;
            rt->state = CTR_UNKNOWN;
        }
}

static void pass_list_cb(void *ud, int result, const struct engine_container *v, size_t n,
                         const struct lerr *err)
{
    struct list_ctx *lc = ud;
    struct pass *p = lc->p;
    clocks_tick(p->a);
    pass_list_cb_slot(p, lc->eng, result, v, n);
    if (result < 0)
        log_warn(COMP, "%s", lerr_str(err));
    if (--p->pending > 0)
        return;
    /* Inspect what we own for exit codes and times. */
    struct agent *a = p->a;
    p->pending = 1;
    for (struct mod_rt *rt = a->mods; rt; rt = rt->next) {
        struct slot *sl = slot_at(a, rt->eng);
        if (!rt->container_id || rt->busy || !sl || !sl->up)
            continue;
        struct engine *e = sl->e;
        p->pending++;
        if (e->ops->inspect(e, rt->container_id, pass_inspect_cb, p) < 0)
            p->pending--;
    }
    if (--p->pending == 0)
        pass_plan(p);
}

static void pass_start(struct agent *a)
{
    struct pass *p = calloc(1, sizeof(*p));
    if (!p)
        return;
    p->a = a;
    p->lists = calloc(a->n_slots ? a->n_slots : 1, sizeof(*p->lists));
    if (!p->lists) {
        free(p);
        return;
    }
    p->dep = depref_get(a->dep);
    p->outcome = json_array();
    p->waiters = a->waiters;
    a->waiters = NULL;
    p->state_gen = a->state_gen;
    a->pass = p;
    /* The first pass working from a transaction's deployment (the new one, or the previous one
     * while rolling back) is the one that applies or restores it. */
    struct tx *tx = a->tx;
    if (tx && !tx->pass_seen && tx->phase != TX_WATCHING &&
        p->dep == (tx->phase == TX_ROLLING_BACK ? tx->prev : tx->dep)) {
        p->tx = tx;
        tx->pass_seen = true;
    }
    p->pending = 1;
    /* The first listing of an engine since the boot starts all its modules that should run;
     * an engine still unreachable keeps its boot for the pass that first reaches it. */
    for (size_t i = 0; i < a->n_slots; i++) {
        struct slot *sl = &a->slots[i];
        if (!sl->up)
            continue;
        struct list_ctx *lc = &p->lists[i];
        lc->p = p;
        lc->eng = (int)i;
        sl->boot_listed = sl->boot_pending;
        p->pending++;
        if (sl->e->ops->list(sl->e, pass_list_cb, lc) < 0) {
            sl->boot_listed = false;
            p->pending--;
        }
    }
    if (--p->pending == 0) {
        /* nothing reachable */
        pass_plan(p);
    }
}

static void pass_ev_cb(evutil_socket_t fd, short what, void *arg)
{
    struct agent *a = arg;
    if (a->pass) {
        a->pass_dirty = true;
        return;
    }
    pass_start(a);
}

static void trigger(struct agent *a)
{
    if (!a->started)
        return;
    if (a->pass)
        a->pass_dirty = true;
    else
        event_active(a->pass_ev, 0, 0);
}

/* ------------------------------------------------------------------ events */

void agent_on_engine_event(struct agent *a, struct engine *e, const struct engine_event *ev)
{
    struct slot *sl = slot_of_engine(a, e);
    if (!sl)
        return;
    clocks_tick(a);
    struct mod_rt *rt = rt_find_id(a, ev->id);
    if (rt && rt->eng != (int)(sl - a->slots))
        rt = NULL; /* another engine's container */
    switch (ev->kind) {
    case ENGINE_EVENT_CONNECTED:
        if (!sl->up)
            log_info(COMP, "%s engine connected", slot_noun(sl));
        sl->up = true;
        sl->network_ok = false; /* the engine may have been reset */
        trigger(a);
        return;
    case ENGINE_EVENT_DISCONNECTED:
        if (sl->up)
            log_warn(COMP,
                     "%s engine unreachable; modules are in an unknown state until it "
                     "returns",
                     slot_noun(sl));
        sl->up = false;
        return;
    case ENGINE_EVENT_START:
        if (!rt)
            return;
        rt_set_state(rt, CTR_RUNNING);
        if (ev->time_ms > rt->started_ms)
            rt->started_ms = ev->time_ms;
        if (ev->pid)
            rt->pid = ev->pid;
        tx_evaluate(a);
        return;
    case ENGINE_EVENT_DIE:
        if (!rt)
            return;
        if (rt->state == CTR_RUNNING && ev->time_ms && ev->time_ms < rt->started_ms)
            return; /* an exit from before the latest start */
        rt_set_state(rt, CTR_EXITED);
        rt->exit_code = ev->exit_code;
        rt->finished_ms = ev->time_ms ? ev->time_ms : ltime_now_ms();
        rt->rec.last_exit_ms = rt->finished_ms;
        if (!rt->busy) {
            log_info(COMP, "%s: exited with code %d", rt->name, ev->exit_code);
            /* started by the deployment being applied: its failure is the deployment's */
            struct tx_module *tm = tx_watched(a->tx, rt->name);
            if (tm && tm->armed && ev->exit_code != 0 && a->tx->phase != TX_ROLLING_BACK) {
                char why[96];
                snprintf(why, sizeof(why), "exited with code %d after it started", ev->exit_code);
                tx_module_failed(a->tx, rt->name, why);
            }
            evaluate_restart(a, rt, false);
            tx_evaluate(a);
        }
        return;
    case ENGINE_EVENT_HEALTH:
        if (!rt)
            return;
        rt->health = ev->health;
        if (ev->health == HEALTH_UNHEALTHY && !rt->busy) {
            const struct module_spec *spec = spec_of(a, rt->name);
            log_warn(COMP, "%s: health check failing", rt->name);
            if (spec && spec->restart_policy == RESTART_ON_UNHEALTHY)
                evaluate_restart(a, rt, true);
            else
                rt_persist(a, rt);
        }
        tx_evaluate(a);
        return;
    case ENGINE_EVENT_DESTROY:
        if (!rt || rt->busy)
            return;
        log_warn(COMP, "%s: its container was removed outside ledge", rt->name);
        free(rt->container_id);
        rt->container_id = NULL;
        rt->state = CTR_UNKNOWN;
        trigger(a);
        return;
    case ENGINE_EVENT_OOM:
        if (rt)
            log_warn(COMP, "%s: out of memory", rt->name);
        return;
    }
}

/* ------------------------------------------------------------------ public API */

static void slot_event_cb(void *ud, const struct engine_event *ev)
{
    struct slot *sl = ud;
    agent_on_engine_event(sl->a, sl->e, ev);
}

int agent_new(struct event_base *base, struct state_db *db, const struct agent_options *o,
              struct agent **ret)
{
    if (o->n_engines > AGENT_MAX_ENGINES)
        return -E2BIG;
    int slot_for[MODULE_TYPE_COUNT];
    for (int t = 0; t < MODULE_TYPE_COUNT; t++) {
        slot_for[t] = -1;
        for (size_t i = 0; i < o->n_engines; i++) {
            if (!(o->engines[i].module_types & (1u << t)))
                continue;
            if (slot_for[t] >= 0 || !o->engines[i].engine)
                return -EINVAL;
            slot_for[t] = (int)i;
        }
    }
    struct agent *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->base = base;
    for (int i = 0; i < AGENT_COMMAND_COUNT; i++)
        lquant_init(&a->latency[i].q, AGENT_LATENCY_MAX_AGE_MS);
    memcpy(a->slot_for, slot_for, sizeof(slot_for));
    a->slots = calloc(o->n_engines ? o->n_engines : 1, sizeof(*a->slots));
    if (!a->slots) {
        free(a);
        return -ENOMEM;
    }
    a->n_slots = o->n_engines;
    for (size_t i = 0; i < o->n_engines; i++)
        a->slots[i] = (struct slot){
            .a = a, .e = o->engines[i].engine, .module_types = o->engines[i].module_types};
    a->db = db;
    a->o = *o;
    a->o.engines = NULL;
    a->o.n_engines = 0;
    a->o.network = strdup(o->network ? o->network : "ledge");
    a->o.gateway_hostname = o->gateway_hostname ? strdup(o->gateway_hostname) : NULL;
    a->o.instance = o->instance ? strdup(o->instance) : NULL;
    a->o.hub_program = o->hub_program ? strdup(o->hub_program) : NULL;
    a->o.boot_id_path =
        strdup(o->boot_id_path ? o->boot_id_path : "/proc/sys/kernel/random/boot_id");
    a->default_log_config = o->default_log_config ? json_deep_copy(o->default_log_config) : NULL;
    a->o.default_log_config = NULL;
    if (a->o.deploy_timeout_ms <= 0)
        a->o.deploy_timeout_ms = 60000;
    if (a->o.deploy_settle_ms < 0)
        a->o.deploy_settle_ms = 0;
    a->pass_ev = event_new(base, -1, 0, pass_ev_cb, a);
    if (!a->o.network || !a->o.boot_id_path || !a->pass_ev) {
        agent_free(a);
        return -ENOMEM;
    }
    for (size_t i = 0; i < a->n_slots; i++)
        engine_set_event_handler(a->slots[i].e, slot_event_cb, &a->slots[i]);
    *ret = a;
    return 0;
}

void agent_free(struct agent *a)
{
    if (!a)
        return;
    for (int i = 0; i < AGENT_COMMAND_COUNT; i++)
        lquant_fini(&a->latency[i].q);
    /* In-flight engine requests die with the engines, which the caller frees after us, without
     * answering: what the agent gave them to answer with is freed here. */
    while (a->ops)
        op_release(a->ops);
    while (a->inflight)
        inflight_free(a, a->inflight);
    while (a->mods) {
        struct mod_rt *rt = a->mods;
        a->mods = rt->next;
        rt_free(rt);
    }
    for (struct waiter *w = a->waiters; w;) {
        struct waiter *n = w->next;
        json_decref(w->plan);
        free(w);
        w = n;
    }
    if (a->pass) {
        for (struct waiter *w = a->pass->waiters; w;) {
            struct waiter *n = w->next;
            json_decref(w->plan);
            free(w);
            w = n;
        }
        free(a->pass->lists);
        plan_free(&a->pass->plan);
        json_decref(a->pass->outcome);
        depref_put(a->pass->dep);
        free(a->pass);
    }
    while (a->validations) {
        struct validation *v = a->validations;
        a->validations = v->next;
        validation_drop(v);
    }
    tx_free(a->tx);
    a->tx = NULL;
    for (size_t i = 0; i < a->n_slots; i++)
        engine_set_event_handler(a->slots[i].e, NULL, NULL);
    free(a->slots);
    depref_put(a->dep);
    json_decref(a->default_log_config);
    if (a->pass_ev)
        event_free(a->pass_ev);
    free((char *)a->o.network);
    free((char *)a->o.gateway_hostname);
    free((char *)a->o.instance);
    free((char *)a->o.hub_program);
    free((char *)a->o.boot_id_path);
    free(a->boot_id);
    free(a->holding);
    free(a);
}

static void load_record_cb(void *ud, const struct module_record *rec)
{
    struct agent *a = ud;
    struct mod_rt *rt = rt_get(a, rec->name);
    if (!rt)
        return;
    set_str(&rt->rec.generation_id, rec->generation_id);
    rt->rec.restart_count = rec->restart_count;
    rt->rec.last_start_ms = rec->last_start_ms;
    rt->rec.last_exit_ms = rec->last_exit_ms;
    rt->rec.last_restart_ms = rec->last_restart_ms;
    rt->rec.exit_code = rec->exit_code;
    rt->rec.gave_up = rec->gave_up;
    rt->rec.user_stopped = rec->user_stopped;
    set_str(&rt->rec.description, rec->description);
    rt->exit_code = rec->exit_code;
    rt->started_ms = rec->last_start_ms;
    rt->finished_ms = rec->last_exit_ms;
    /* Decided before ledged stopped, unless the exit happened while it was away. */
    rt->decided_exit_ms = rec->last_exit_ms;
}

int agent_start(struct agent *a, struct lerr *err)
{
    _cleanup_free_ char *text = NULL;
    int r = state_load_deployment(a->db, &text, NULL);
    const int loaded = r;
    if (r == 0) {
        struct lstrv errors = LSTRV_INIT;
        struct deployment *d = NULL;
        r = manifest_parse(text, strlen(text), a->o.hub_program, &d, &errors);
        if (r < 0) {
            /* Stored deployments were valid when applied; a newer ledge may be stricter. */
            char *all = lstrv_join(&errors, "; ");
            log_error(COMP, "the stored deployment no longer validates: %s", all ? all : "");
            free(all);
        } else {
            struct depref *ref = calloc(1, sizeof(*ref));
            if (ref) {
                ref->d = d;
                ref->text = TAKE_PTR(text);
                ref->refs = 1;
                a->dep = ref;
                if (a->o.hooks.deployment_applied)
                    a->o.hooks.deployment_applied(a->o.hooks.ud, d);
            } else {
                deployment_free(d);
            }
        }
        lstrv_free(&errors);
    } else if (r != -ENOENT && r != -ESTALE) {
        return lerr_set(err, r, "cannot read the stored deployment");
    }
    state_load_records(a->db, load_record_cb, a);

    const struct ldb_report *sr = state_open_report(a->db);
    a->deployment_recovered = sr->damaged && a->dep;
    if (sr->damaged && !a->dep) {
        a->holding = strdup(
            loaded == -ESTALE
                ? "the state database was damaged and the newest deployment that came "
                  "back may not be the one in force: every module is kept as it is "
                  "(not created, started, stopped or removed) until a deployment is "
                  "applied"
            : loaded == 0 ? "the state database was damaged and the deployment that came back "
                            "does not validate: every module is kept as it is (not created, "
                            "started, stopped or removed) until a deployment is applied"
                          : "the state database was damaged and no deployment came back: every "
                            "module is kept as it is (not created, started, stopped or removed) "
                            "until a deployment is applied");
        if (!a->holding)
            return -ENOMEM;
        log_warn(COMP, "%s", a->holding);
    } else if (sr->damaged) {
        log_warn(COMP, "the state database was damaged; the deployment in force came back and is "
                       "reconciled from it");
    }

    /* A deployment interrupted by a stop of ledged (a crash, a power cut) is finished. */
    struct state_tx st;
    if (!a->holding && state_load_tx(a->db, &st) == 0) {
        tx_recover(a, &st);
        state_tx_clear(&st);
    }

    /* A new boot: every module that should run is started (in startupOrder), whatever its
     * last exit was; restart policies only govern exits while the device is up. Each engine
     * records the boot once its modules were started (boot_done), so a boot is never lost to a
     * ledged that stops before the engine answered (a state database of an earlier ledge has
     * one "boot_id" for all engines, recorded at start). */
    _cleanup_free_ char *boot = NULL;
    if (lfs_read_file(a->o.boot_id_path, 256, &boot, NULL) == 0) {
        for (char *p = boot; *p; p++)
            if (*p == '\n')
                *p = 0;
        bool any = false;
        for (size_t i = 0; i < a->n_slots; i++) {
            char key[64];
            boot_key(&a->slots[i], key, sizeof(key));
            _cleanup_free_ char *stored = NULL;
            if (state_get_meta(a->db, key, &stored) < 0)
                state_get_meta(a->db, "boot_id", &stored);
            if (!stored || strcmp(stored, boot) != 0)
                a->slots[i].boot_pending = any = true;
        }
        if (any) {
            a->boot_id = TAKE_PTR(boot);
            log_info(COMP, "first start since boot: starting every module that should run");
        }
    }
    a->started = true;
    return 0;
}

/* ------------------------------------------------------------------ validation */

static void validation_unlink(struct agent *a, struct validation *v)
{
    for (struct validation **pp = &a->validations; *pp; pp = &(*pp)->next)
        if (*pp == v) {
            *pp = v->next;
            return;
        }
}

/* A validation dropped before its verdict (cancelled, or the agent freed). */
static void validation_drop(struct validation *v)
{
    if (v->free_ud)
        v->free_ud(v->ud);
    deployment_free(v->d);
    lstrv_free(&v->errors);
    free(v);
}

static void validation_finish(struct validation *v)
{
    validation_unlink(v->a, v);
    if (v->cancelled) {
        validation_drop(v);
        return;
    }
    if (v->errors.n) {
        deployment_free(v->d);
        v->d = NULL;
        v->cb(v->ud, -EINVAL, NULL, &v->errors);
    } else {
        struct deployment *d = TAKE_PTR(v->d);
        v->cb(v->ud, 0, d, &v->errors);
    }
    lstrv_free(&v->errors);
    free(v);
}

struct platform_probe {
    struct inflight link; /* first */
    struct validation *v;
    const struct module_spec *m;
};

static void validate_platform_cb(void *ud, int result, const char *os, const char *arch,
                                 const char *variant, const struct lerr *err)
{
    struct platform_probe *pp = ud;
    struct validation *v = pp->v;
    struct platform host;
    struct lerr perr = {0};
    /* an image the engine cannot inspect is checked when it is pulled */
    if (result == 0 && platform_host(&host) == 0 &&
        platform_check_module(&host, pp->m->name, pp->m->image, os, arch, variant, &perr) < 0)
        lstrv_printf(&v->errors,
                     "modules.%s.settings.image: %s — to run it on this host, run ledge in a "
                     "virtual machine of that architecture: `ledge vm create NAME --arch %s`, then "
                     "`ledge --vm NAME deploy FILE`",
                     pp->m->name, perr.msg, arch ? arch : "ARCH");
    inflight_free(v->a, &pp->link);
    if (--v->outstanding == 0)
        validation_finish(v);
}

/* imagePullPolicy "never": the image must be on the engine before anything is touched. */
static void validate_present_cb(void *ud, int result, const struct lerr *err)
{
    struct platform_probe *pp = ud;
    struct validation *v = pp->v;
    if (result == -ENOENT)
        lstrv_printf(&v->errors,
                     "%s.%s.settings.image: %s is not present on the engine and imagePullPolicy is "
                     "\"never\" (load or pull the image first, or use \"on-create\")",
                     pp->m->system ? "systemModules" : "modules", pp->m->name, pp->m->image);
    /* other failures (the engine went away): the create step says what it finds */
    inflight_free(v->a, &pp->link);
    if (--v->outstanding == 0)
        validation_finish(v);
}

/* Whether applying m would create a container: none yet, or one of another config. */
static bool validation_creates(struct agent *a, const struct module_spec *m)
{
    const struct mod_rt *rt = rt_find(a, m->name);
    return !rt || !rt->container_id || !rt->config_hash ||
           strcmp(rt->config_hash, m->config_hash) != 0 || rt->eng != slot_index_for(a, m->type);
}

/* Routes are the hub's, but a route that does not parse rejects the whole deployment here,
 * before anything changes: "$edgeHub.routes.r1: column 23: expected INTO". */
static int validate_routes(const struct deployment *d, struct lstrv *errors)
{
    if (!d->edge_hub)
        return 0;
    struct route_table *t = NULL;
    struct lstrv rerr = LSTRV_INIT;
    int r = route_table_new(d->edge_hub, &t, &rerr);
    if (r == -ENOMEM) {
        lstrv_free(&rerr);
        return r;
    }
    if (r < 0) {
        for (size_t i = 0; i < rerr.n; i++)
            lstrv_printf(errors, "$edgeHub.%s", rerr.v[i]);
        if (rerr.n == 0)
            lstrv_push(errors, "$edgeHub: the route table is invalid");
    }
    route_table_free(t);
    lstrv_free(&rerr);
    return 0;
}

static int validation_start(struct agent *a, const char *text, size_t len, agent_validate_fn cb,
                            void *ud, void *owner, void (*free_ud)(void *ud))
{
    struct validation *v = calloc(1, sizeof(*v));
    if (!v)
        return -ENOMEM;
    *v = (struct validation){
        .a = a, .errors = LSTRV_INIT, .cb = cb, .ud = ud, .owner = owner, .free_ud = free_ud};
    int r = manifest_parse(text, len, a->o.hub_program, &v->d, &v->errors);
    if (r == -ENOMEM) {
        lstrv_free(&v->errors);
        free(v);
        return r;
    }
    if (r < 0 && v->errors.n == 0)
        lstrv_push(&v->errors, "invalid deployment manifest"); /* never without a verdict */
    v->next = a->validations;
    a->validations = v;
    v->outstanding = 1; /* guard: the verdict waits until every probe is started */
    if (r == 0 && validate_routes(v->d, &v->errors) < 0)
        lstrv_push(&v->errors, "out of memory while checking the routes");
    for (size_t i = 0; r == 0 && i < v->d->n_modules; i++) {
        const struct module_spec *m = &v->d->modules[i];
        struct slot *sl = slot_for(a, m->type);
        if (!sl) {
            lstrv_printf(&v->errors, "%s.%s.type: no engine of this ledged runs \"%s\" modules",
                         m->system ? "systemModules" : "modules", m->name,
                         module_type_name(m->type));
            continue;
        }
        /* What this engine cannot honour of the module's createOptions (ledge ignores those
         * of system modules). */
        if (!m->system && sl->e->ops->check_create_options) {
            char prefix[320];
            snprintf(prefix, sizeof(prefix), "modules.%s.settings.createOptions", m->name);
            sl->e->ops->check_create_options(sl->e, m->create_options, prefix, &v->errors);
        }
        /* "$upstream:PORT/..." needs the parent's host name (upstream.parent) */
        if (m->image && engine_names_upstream(m->image)) {
            char resolved[ENGINE_IMAGE_MAX];
            struct lerr uerr = {0};
            if (engine_image_resolve(sl->e, m->image, resolved, sizeof(resolved), &uerr) < 0) {
                lstrv_printf(&v->errors, "%s.%s.settings.image: %s",
                             m->system ? "systemModules" : "modules", m->name, uerr.msg);
                continue;
            }
        }
        if (m->image && sl->up && m->pull_policy == PULL_NEVER && sl->e->ops->image_present &&
            validation_creates(a, m)) {
            struct platform_probe *pp = calloc(1, sizeof(*pp));
            if (!pp)
                break;
            *pp = (struct platform_probe){.v = v, .m = m};
            inflight_add(a, &pp->link);
            v->outstanding++;
            if (sl->e->ops->image_present(sl->e, m->image, validate_present_cb, pp) < 0) {
                v->outstanding--;
                inflight_free(a, &pp->link);
            }
        }
        /* The host/guest rule for images the engine already has (others: when pulled). */
        if (!m->image || !sl->up || !sl->e->ops->image_platform)
            continue;
        struct platform_probe *pp = calloc(1, sizeof(*pp));
        if (!pp)
            break;
        pp->v = v;
        pp->m = m;
        inflight_add(a, &pp->link);
        v->outstanding++;
        if (sl->e->ops->image_platform(sl->e, m->image, validate_platform_cb, pp) < 0) {
            v->outstanding--;
            inflight_free(a, &pp->link);
        }
    }
    if (--v->outstanding == 0)
        validation_finish(v);
    return 0;
}

int agent_validate(struct agent *a, const char *text, size_t len, agent_validate_fn cb, void *ud)
{
    return validation_start(a, text, len, cb, ud, ud, NULL);
}

/* ------------------------------------------------------------------ atomic deployments */

static const struct deployment no_deployment;

static struct depref *depref_parse(struct agent *a, const char *text)
{
    struct lstrv errors = LSTRV_INIT;
    struct deployment *d = NULL;
    int r = manifest_parse(text, strlen(text), a->o.hub_program, &d, &errors);
    lstrv_free(&errors);
    if (r < 0)
        return NULL;
    struct depref *ref = calloc(1, sizeof(*ref));
    if (ref)
        ref->text = strdup(text);
    if (!ref || !ref->text) {
        free(ref);
        deployment_free(d);
        return NULL;
    }
    ref->d = d;
    ref->refs = 1;
    return ref;
}

static struct tx_module *tx_watched(struct tx *tx, const char *module)
{
    for (size_t i = 0; tx && i < tx->changes.n; i++)
        if (tx->changes.v[i].watch && strcmp(tx->changes.v[i].module, module) == 0)
            return &tx->mods[i];
    return NULL;
}

/* Does a failed step of this module fail the deployment? It is one the deployment changes, or
 * one its plan had a step for (a failed module it starts again). */
static bool tx_counts(const struct tx *tx, const char *module)
{
    const struct plan_change_entry *c = plan_changes_find(&tx->changes, module);
    if (c && c->change != PLAN_CHANGE_NONE)
        return true;
    size_t i;
    json_t *step;
    json_array_foreach (tx->plan, i, step)
        if (lstr_eq(ljson_str(step, "module"), module))
            return true;
    return false;
}

static void tx_module_failed(struct tx *tx, const char *module, const char *reason)
{
    size_t i;
    json_t *o;
    json_array_foreach (tx->reasons, i, o)
        if (lstr_eq(ljson_str(o, "module"), module))
            return; /* the first reason is the one that counts */
    json_array_append_new(tx->reasons, json_pack("{s:s, s:s}", "module", module, "reason", reason));
    for (i = 0; i < tx->changes.n; i++)
        if (strcmp(tx->changes.v[i].module, module) == 0)
            tx->mods[i].failed = true;
    tx->failed = true;
    log_warn(COMP, "deployment %lld: %s: %s", (long long)tx->st.id, module, reason);
    /* no later startupOrder group of it starts (with --no-rollback they do, as before) */
    struct pass *p = tx->a->pass;
    if (p && p->tx == tx && tx->st.rollback)
        p->abort = true;
}

/* "module b: exited with code 1; module c: ..." */
static char *tx_reason_text(const struct tx *tx)
{
    struct lbuf b = LBUF_INIT;
    size_t i;
    json_t *o;
    json_array_foreach (tx->reasons, i, o)
        lbuf_printf(&b, "%smodule %s: %s", i ? "; " : "", ljson_str(o, "module"),
                    ljson_str(o, "reason"));
    return b.len ? lbuf_steal(&b) : (lbuf_free(&b), NULL);
}

static void tx_free(struct tx *tx)
{
    if (!tx)
        return;
    for (struct waiter *w = tx->waiters; w;) {
        struct waiter *n = w->next;
        json_decref(w->plan);
        free(w);
        w = n;
    }
    if (tx->timer)
        event_free(tx->timer);
    plan_changes_free(&tx->changes);
    free(tx->mods);
    depref_put(tx->dep);
    depref_put(tx->prev);
    json_decref(tx->plan);
    json_decref(tx->outcome);
    json_decref(tx->restore);
    json_decref(tx->reasons);
    state_tx_clear(&tx->st);
    free(tx);
}

static void tx_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    tx_evaluate(arg);
}

/* dep and prev are handed over. */
static struct tx *tx_new(struct agent *a, const struct state_tx *st, struct depref *dep,
                         struct depref *prev)
{
    struct tx *tx = calloc(1, sizeof(*tx));
    if (!tx) {
        depref_put(dep);
        depref_put(prev);
        return NULL;
    }
    tx->a = a;
    tx->st = *st;
    tx->st.kind = strdup(st->kind ? st->kind : "deploy");
    tx->st.user_stopped = st->user_stopped ? strdup(st->user_stopped) : NULL;
    tx->dep = dep;
    tx->prev = prev;
    tx->reasons = json_array();
    tx->timer = evtimer_new(a->base, tx_timer_cb, a);
    if (!tx->st.kind || !tx->reasons || !tx->timer ||
        plan_changes_compute(prev ? prev->d : NULL, dep ? dep->d : &no_deployment, &tx->changes) <
            0 ||
        !(tx->mods = calloc(tx->changes.n ? tx->changes.n : 1, sizeof(*tx->mods)))) {
        tx_free(tx);
        return NULL;
    }
    return tx;
}

static json_t *id_or_null(int64_t id)
{
    return id > 0 ? json_integer(id) : json_null();
}

/* It ended: stored, told, gone. */
static void tx_finish(struct tx *tx, enum state_outcome outcome)
{
    struct agent *a = tx->a;
    evtimer_del(tx->timer);
    _cleanup_free_ char *reason = tx_reason_text(tx);
    _cleanup_free_ char *modules = json_array_size(tx->reasons) ? ljson_dump(tx->reasons) : NULL;
    if (state_finish_deployment(a->db, &tx->st, outcome, reason, modules, ltime_now_ms()) < 0)
        log_error(COMP, "deployment %lld: state database: cannot store its outcome",
                  (long long)tx->st.id);
    if (outcome == STATE_OUTCOME_APPLIED)
        log_info(COMP, "deployment %lld applied", (long long)tx->st.id);
    else
        log_warn(COMP, "deployment %lld: %s%s%s", (long long)tx->st.id, state_outcome_name(outcome),
                 reason ? ": " : "", reason ? reason : "");
    a->tx = NULL;
    int result = outcome == STATE_OUTCOME_APPLIED       ? 0
                 : outcome == STATE_OUTCOME_ROLLED_BACK ? -ECANCELED
                                                        : -EIO;
    for (struct waiter *w = tx->waiters; w; w = w->next) {
        json_t *dj =
            json_pack("{s:I, s:s, s:s, s:s?, s:O, s:o}", "id", (json_int_t)tx->st.id, "kind",
                      tx->st.kind, "outcome", state_outcome_name(outcome), "reason", reason,
                      "modules", tx->reasons, "previous", id_or_null(tx->st.previous_id));
        json_t *report =
            json_pack("{s:O, s:o, s:o}", "plan", w->plan, "outcome",
                      tx->outcome ? json_incref(tx->outcome) : json_array(), "deployment", dj);
        if (report && tx->restore)
            json_object_set_new(report, "rollback", json_pack("{s:O}", "outcome", tx->restore));
        w->cb(w->ud, result, report);
        json_decref(report);
    }
    tx_free(tx);
}

/* The modules stopped by request before the deployment are so again. */
static void tx_restore_user_stopped(struct tx *tx)
{
    struct agent *a = tx->a;
    _cleanup_json_ json_t *names = NULL;
    if (tx->st.user_stopped)
        ljson_parse(tx->st.user_stopped, strlen(tx->st.user_stopped), &names, NULL);
    for (struct mod_rt *rt = a->mods; rt; rt = rt->next) {
        bool want = false;
        size_t i;
        json_t *n;
        json_array_foreach (names, i, n)
            if (lstr_eq(json_string_value(n), rt->name))
                want = true;
        if (rt->rec.user_stopped != want) {
            rt->rec.user_stopped = want;
            rt_persist(a, rt);
        }
    }
}

/* The previous deployment in force again; the next pass restores it. */
static void tx_install_previous(struct tx *tx)
{
    struct agent *a = tx->a;
    const struct deployment *cur = a->dep ? a->dep->d : NULL;
    const struct deployment *prev = tx->prev ? tx->prev->d : NULL;
    for (size_t i = 0; prev && i < prev->n_modules; i++) {
        const struct module_spec *m = &prev->modules[i];
        const struct module_spec *now = cur ? deployment_find(cur, m->name) : NULL;
        struct mod_rt *rt = rt_get(a, m->name);
        /* stopped by the failed deployment: started again (same container) */
        if (rt && m->status == MODULE_STATUS_RUNNING && now && now->status == MODULE_STATUS_STOPPED)
            rt->force_start = true;
    }
    tx_restore_user_stopped(tx);
    clocks_tick(a);
    depref_put(a->dep);
    a->dep = depref_get(tx->prev);
    if (prev && a->o.hooks.deployment_applied)
        a->o.hooks.deployment_applied(a->o.hooks.ud, prev);
}

/* It failed: roll back, or (--no-rollback) leave it as it is. */
static void tx_fail(struct tx *tx)
{
    struct agent *a = tx->a;
    evtimer_del(tx->timer);
    if (!tx->st.rollback) {
        tx_finish(tx, STATE_OUTCOME_FAILED);
        return;
    }
    _cleanup_free_ char *reason = tx_reason_text(tx);
    _cleanup_free_ char *modules = ljson_dump(tx->reasons);
    if (state_rollback_deployment(a->db, &tx->st, reason, modules) < 0) {
        json_array_append_new(tx->reasons,
                              json_pack("{s:s, s:s}", "module", "", "reason",
                                        "state database: cannot store the rollback; the "
                                        "deployment is left as it is"));
        tx_finish(tx, STATE_OUTCOME_ROLLBACK_FAILED);
        return;
    }
    if (tx->st.previous_id)
        log_warn(COMP, "deployment %lld failed; restoring deployment %lld", (long long)tx->st.id,
                 (long long)tx->st.previous_id);
    else
        log_warn(COMP, "deployment %lld failed; removing what it created (no deployment before it)",
                 (long long)tx->st.id);
    tx->phase = TX_ROLLING_BACK;
    tx->pass_seen = false;
    tx_install_previous(tx);
    trigger(a);
}

/* WATCHING: has every module it changed run long enough, did one fail, is the time up? Called
 * on the modules' events and from the timer. */
static void tx_evaluate(struct agent *a)
{
    struct tx *tx = a->tx;
    if (!tx || tx->phase != TX_WATCHING)
        return;
    int64_t now = ltime_now_ms(), next = tx->deadline_ms;
    bool pending = false;
    for (size_t i = 0; i < tx->changes.n; i++) {
        struct tx_module *tm = &tx->mods[i];
        const char *name = tx->changes.v[i].module;
        if (!tx->changes.v[i].watch || tm->ok || tm->failed)
            continue;
        struct mod_rt *rt = rt_find(a, name);
        if (rt && rt->rec.user_stopped) {
            tm->ok = true; /* stopped by request meanwhile */
            continue;
        }
        bool ready = false;
        if (rt && rt->container_id && !rt->busy) {
            if (rt->state == CTR_EXITED && rt->exit_code == 0) {
                tm->ok = true; /* ran and finished: its restart policy decides what follows */
                continue;
            }
            if (rt->state == CTR_EXITED || rt->state == CTR_DEAD) {
                char why[96];
                snprintf(why, sizeof(why), "exited with code %d after it started", rt->exit_code);
                tx_module_failed(tx, name, why);
                continue;
            }
            if (rt->state == CTR_RUNNING && rt->health == HEALTH_UNHEALTHY) {
                tx_module_failed(tx, name, "running, but its health check fails");
                continue;
            }
            ready = rt->state == CTR_RUNNING && rt->health != HEALTH_STARTING;
        }
        if (!ready) {
            tm->ready_since_ms = 0;
        } else {
            if (!tm->ready_since_ms)
                tm->ready_since_ms = now;
            if (now - tm->ready_since_ms >= a->o.deploy_settle_ms) {
                tm->ok = true;
                continue;
            }
            if (tm->ready_since_ms + a->o.deploy_settle_ms < next)
                next = tm->ready_since_ms + a->o.deploy_settle_ms;
        }
        pending = true;
    }
    if (tx->failed) {
        tx_fail(tx);
        return;
    }
    if (!pending) {
        tx_finish(tx, STATE_OUTCOME_APPLIED);
        return;
    }
    if (now >= tx->deadline_ms) {
        for (size_t i = 0; i < tx->changes.n; i++) {
            struct tx_module *tm = &tx->mods[i];
            if (!tx->changes.v[i].watch || tm->ok || tm->failed)
                continue;
            struct mod_rt *rt = rt_find(a, tx->changes.v[i].module);
            char desc[256] = "no container";
            if (rt)
                rt_status(a, rt, desc, sizeof(desc));
            if (rt && rt->state == CTR_RUNNING && rt->health == HEALTH_STARTING)
                snprintf(desc, sizeof(desc), "running, health check still starting");
            else if (rt && rt->state == CTR_RUNNING && tm->ready_since_ms)
                snprintf(desc, sizeof(desc), "running, but not yet for the %llds it must run",
                         (long long)(a->o.deploy_settle_ms + 999) / 1000);
            char why[400];
            snprintf(why, sizeof(why), "did not reach running within %llds (%s)",
                     (long long)(tx->st.timeout_ms + 999) / 1000, desc);
            tx_module_failed(tx, tx->changes.v[i].module, why);
        }
        tx_fail(tx);
        return;
    }
    int64_t wait = next - now;
    struct timeval tv = {wait / 1000, (wait % 1000) * 1000};
    evtimer_add(tx->timer, &tv);
}

struct tx_inspect {
    struct inflight link; /* first */
    struct agent *a;
    int64_t id;
};

/* Whether a watched container has a health check (still starting): the start does not say. */
static void tx_inspect_cb(void *ud, int result, const struct engine_container *c,
                          const struct lerr *err)
{
    struct tx_inspect *ti = ud;
    struct agent *a = ti->a;
    bool current = a->tx && a->tx->st.id == ti->id;
    inflight_free(a, &ti->link);
    if (!current || result < 0)
        return;
    struct mod_rt *rt = rt_find_id(a, c->id);
    if (rt && rt->health == HEALTH_NONE && rt->state == CTR_RUNNING && c->state == CTR_RUNNING)
        rt->health = c->health;
    tx_evaluate(a);
}

/* The pass of its current phase finished. */
static void tx_pass_done(struct tx *tx, json_t *outcome)
{
    struct agent *a = tx->a;
    if (tx->phase == TX_ROLLING_BACK) {
        tx->restore = json_incref(outcome);
        bool ok = true;
        size_t i;
        json_t *o;
        json_array_foreach (outcome, i, o) {
            if (!lstr_eq(ljson_str(o, "result"), "error"))
                continue;
            ok = false;
            char why[LERR_MSG_MAX + 32];
            snprintf(why, sizeof(why), "restoring the previous deployment: %s",
                     ljson_str(o, "message") ?: "failed");
            json_array_append_new(tx->reasons, json_pack("{s:s, s:s}", "module",
                                                         ljson_str(o, "module"), "reason", why));
        }
        tx_finish(tx, ok ? STATE_OUTCOME_ROLLED_BACK : STATE_OUTCOME_ROLLBACK_FAILED);
        return;
    }
    json_decref(tx->outcome);
    tx->outcome = json_incref(outcome);
    if (tx->failed) {
        tx_fail(tx);
        return;
    }
    if (!tx->st.rollback) {
        tx_finish(tx, STATE_OUTCOME_APPLIED); /* --no-rollback: the steps are the result */
        return;
    }
    tx->phase = TX_WATCHING;
    tx->deadline_ms = ltime_now_ms() + tx->st.timeout_ms;
    for (size_t i = 0; i < tx->changes.n; i++) {
        if (!tx->changes.v[i].watch)
            continue;
        tx->mods[i].armed = true;
        struct mod_rt *rt = rt_find(a, tx->changes.v[i].module);
        struct slot *sl = rt ? slot_at(a, rt->eng) : NULL;
        if (!rt || !rt->container_id || rt->busy || !sl || !sl->up)
            continue;
        struct tx_inspect *ti = calloc(1, sizeof(*ti));
        if (!ti)
            continue;
        *ti = (struct tx_inspect){.a = a, .id = tx->st.id};
        inflight_add(a, &ti->link);
        if (sl->e->ops->inspect(sl->e, rt->container_id, tx_inspect_cb, ti) < 0)
            inflight_free(a, &ti->link);
    }
    tx_evaluate(a); /* may end tx */
}

/* ledged stopped mid-deployment: carry on from the stored phase. */
static void tx_recover(struct agent *a, struct state_tx *st)
{
    struct depref *prev = NULL, *dep = NULL;
    if (st->rolling_back) {
        prev = depref_get(a->dep); /* in force again: the previous one */
        _cleanup_free_ char *text = NULL;
        if (state_deployment_text(a->db, st->id, &text) == 0)
            dep = depref_parse(a, text);
    } else {
        dep = depref_get(a->dep);
        _cleanup_free_ char *text = NULL;
        if (st->previous_id && state_deployment_text(a->db, st->previous_id, &text) == 0)
            prev = depref_parse(a, text);
        if (st->previous_id && !prev && st->rollback) {
            log_warn(COMP,
                     "deployment %lld: the deployment before it is gone; it cannot be "
                     "rolled back",
                     (long long)st->id);
            st->rollback = false;
        }
    }
    if (!st->rolling_back && (!dep || state_meta_id(a->db, "deployment_id") != st->id)) {
        depref_put(dep);
        depref_put(prev);
        state_finish_deployment(a->db, st, STATE_OUTCOME_FAILED,
                                "ledged restarted while it was applied and it no longer validates",
                                NULL, ltime_now_ms());
        return;
    }
    struct tx *tx = tx_new(a, st, dep, prev);
    if (!tx) {
        log_error(COMP, "deployment %lld: out of memory", (long long)st->id);
        return;
    }
    tx->phase = st->rolling_back ? TX_ROLLING_BACK : TX_APPLYING;
    if (st->rolling_back)
        tx_restore_user_stopped(tx);
    a->tx = tx;
    log_warn(COMP, "deployment %lld was interrupted by a restart of ledged: %s", (long long)st->id,
             st->rolling_back ? "finishing its rollback" : "finishing it (and its checks)");
}

/* ------------------------------------------------------------------ apply */

struct apply_ctx {
    struct agent *a;
    char *text;
    size_t len;
    bool dry_run, wait, no_rollback;
    int64_t timeout_ms;
    const char *kind; /* "deploy" or "rollback" */
    struct agent_apply_cb cb;
    void *ud;
};

static void apply_ctx_free(void *p)
{
    struct apply_ctx *c = p;
    free(c->text);
    free(c);
}

static json_t *warnings_json(const struct deployment *d)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < d->warnings.n; i++)
        json_array_append_new(arr, json_string(d->warnings.v[i]));
    return arr;
}

/* The modules stopped by request, as a JSON array text (a rollback stops them again). */
static char *user_stopped_json(struct agent *a)
{
    json_t *stopped = json_array();
    for (struct mod_rt *rt = a->mods; stopped && rt; rt = rt->next)
        if (rt->rec.user_stopped)
            json_array_append_new(stopped, json_string(rt->name));
    char *text = stopped ? ljson_dump(stopped) : NULL;
    json_decref(stopped);
    return text;
}

/* An engine the deployment's modules (or those running now) need that is not connected: the
 * plan was made against what the agent last knew of it, so say so (a dry run would otherwise
 * read "nothing to change" for a module that may be gone). */
static void add_unreachable_warnings(struct agent *a, const struct deployment *d, json_t *warnings)
{
    for (size_t i = 0; i < a->n_slots; i++) {
        const struct slot *sl = slot_at(a, (int)i);
        if (!sl || sl->up)
            continue;
        bool used = false;
        for (size_t m = 0; !used && m < d->n_modules; m++)
            used = slot_for(a, d->modules[m].type) == sl;
        for (struct mod_rt *rt = a->mods; !used && rt; rt = rt->next)
            used = rt_slot(a, rt) == sl;
        if (used)
            json_array_append_new(
                warnings, json_sprintf("the %s engine is unreachable: this plan is against "
                                       "what ledged last knew of its modules, whose state is "
                                       "unknown until it answers again",
                                       slot_noun(sl)));
    }
}

/* The validated deployment: plan it against what the engines have now (the pass re-plans
 * against fresh engine state), then store and install it unless this is a dry run. */
static void apply_deployment(struct apply_ctx *c, struct deployment *d)
{
    struct agent *a = c->a;
    struct lstrv errors = LSTRV_INIT;
    int r = -ENOMEM;
    size_t n = 0;
    for (struct mod_rt *rt = a->mods; rt; rt = rt->next)
        n++;
    struct plan_actual *actual = calloc(n ? n : 1, sizeof(*actual));
    if (!actual) {
        lstrv_push(&errors, "out of memory");
        goto fail;
    }
    size_t k = 0;
    for (struct mod_rt *rt = a->mods; rt; rt = rt->next) {
        if (!rt->container_id || !slot_at(a, rt->eng))
            continue;
        const struct module_spec *old = spec_of(a, rt->name);
        const struct module_spec *nw = deployment_find(d, rt->name);
        bool status_change = nw && nw->status == MODULE_STATUS_RUNNING &&
                             (!old || old->status == MODULE_STATUS_STOPPED);
        actual[k++] = (struct plan_actual){
            .name = rt->name,
            .id = rt->container_id,
            .config_hash = rt->config_hash,
            .engine = rt->eng,
            .state = rt->state,
            .may_start = status_change || rt->rec.gave_up || rt->rec.user_stopped ||
                         rt->state == CTR_CREATED,
        };
    }
    struct plan plan;
    struct plan_view pv;
    r = plan_compute(d, actual, k, plan_view(a, &pv), &plan);
    free(actual);
    if (r < 0) {
        lstrv_push(&errors, "out of memory while planning");
        goto fail;
    }
    json_t *plan_json = plan_to_json(&plan, false);
    plan_free(&plan);
    json_t *report = json_pack("{s:o, s:o}", "plan", plan_json, "warnings", warnings_json(d));
    if (!report) {
        lstrv_push(&errors, "out of memory");
        goto fail;
    }
    add_unreachable_warnings(a, d, json_object_get(report, "warnings"));
    if (c->dry_run) {
        json_object_set_new(report, "dryRun", json_true());
        deployment_free(d);
        c->cb.planned(c->ud, 0, report, NULL);
        json_decref(report);
        return;
    }
    if (a->tx) {
        json_decref(report);
        lstrv_printf(&errors,
                     "deployment %lld is still being applied (%s); try again when it has ended "
                     "(`ledge deployments`)",
                     (long long)a->tx->st.id,
                     a->tx->phase == TX_ROLLING_BACK ? "rolling back"
                     : a->tx->phase == TX_WATCHING   ? "waiting for its modules to run"
                                                     : "applying its steps");
        r = -EBUSY;
        goto fail;
    }
    /* The transaction, stored with the deployment before anything changes: what a rollback
     * restores (the one in force, and who was stopped by request) and how. */
    struct state_tx st = {
        .previous_id = a->dep ? state_meta_id(a->db, "deployment_id") : 0,
        .kind = (char *)c->kind,
        .rollback = !c->no_rollback,
        .timeout_ms = c->timeout_ms > 0 ? c->timeout_ms : a->o.deploy_timeout_ms,
    };
    if (a->holding && st.rollback) {
        /* What runs now is not known to be any deployment: nothing to go back to. */
        st.rollback = false;
        json_array_append_new(json_object_get(report, "warnings"),
                              json_string("no rollback: the deployment in force was lost with the "
                                          "damaged state database, so there is nothing to go "
                                          "back to"));
    }
    /* (no cleanup attributes here: the gotos below jump past them) */
    char *stopped_text = user_stopped_json(a);
    st.user_stopped = stopped_text;
    int64_t id = 0;
    if (state_begin_deployment(a->db, c->text, &st, ltime_now_ms(), &id) < 0) {
        free(stopped_text);
        json_decref(report);
        lstrv_push(&errors, "state database: cannot store the deployment");
        r = -EIO;
        goto fail;
    }
    st.id = id;
    /* (out of memory from here on: stored, not started; ledged's next start finishes it) */
    struct depref *ref = calloc(1, sizeof(*ref));
    struct waiter *w = c->wait ? calloc(1, sizeof(*w)) : NULL;
    struct tx *tx = NULL;
    if (ref && (w || !c->wait)) {
        ref->d = d;
        ref->refs = 2; /* a->dep and tx->dep */
        tx = tx_new(a, &st, ref, depref_get(a->dep));
        if (!tx)
            ref->d = NULL; /* d goes below */
    }
    free(stopped_text); /* tx has its copy */
    if (!tx) {
        free(ref);
        free(w);
        json_decref(report);
        lstrv_push(&errors, "out of memory");
        r = -ENOMEM;
        goto fail;
    }
    json_object_set_new(report, "deployment",
                        json_pack("{s:I, s:s, s:b, s:I, s:o}", "id", (json_int_t)id, "kind",
                                  c->kind, "rollback", st.rollback, "timeoutMs",
                                  (json_int_t)st.timeout_ms, "previous",
                                  id_or_null(st.previous_id)));
    tx->plan = json_incref(json_object_get(report, "plan"));
    /* A redeploy gives stopped and failed modules a fresh start. */
    for (size_t i = 0; i < d->n_modules; i++) {
        const struct module_spec *m = &d->modules[i];
        struct mod_rt *rt = rt_get(a, m->name);
        if (!rt)
            continue;
        const struct module_spec *old = spec_of(a, m->name);
        bool was_stopped =
            !old || old->status == MODULE_STATUS_STOPPED || rt->rec.user_stopped || rt->rec.gave_up;
        if (m->status == MODULE_STATUS_RUNNING && was_stopped)
            rt->force_start = true;
        rt->rec.user_stopped = false;
        if (rt->rec.gave_up) {
            rt->rec.gave_up = false;
            rt->rec.restart_count = 0;
        }
    }
    ref->text = TAKE_PTR(c->text);
    clocks_tick(a);
    depref_put(a->dep);
    a->dep = ref;
    a->tx = tx;
    if (a->holding) {
        free(a->holding);
        a->holding = NULL;
        log_info(COMP, "a deployment is applied again: reconciling resumes");
    }
    log_info(COMP, "deployment %lld: %zu modules; %s", (long long)id, d->n_modules,
             st.rollback ? "rolled back if a module it changes fails" : "no rollback");
    for (size_t i = 0; i < d->warnings.n; i++)
        log_warn(COMP, "deployment: %s", d->warnings.v[i]);
    if (a->o.hooks.deployment_applied)
        a->o.hooks.deployment_applied(a->o.hooks.ud, d);
    if (w) {
        w->cb = c->cb.done;
        w->ud = c->ud;
        w->plan = json_incref(json_object_get(report, "plan"));
        w->next = tx->waiters;
        tx->waiters = w;
    }
    c->cb.planned(c->ud, 0, report, NULL);
    json_decref(report);
    trigger(a); /* the pass runs from the event loop, after this returns */
    return;
fail:
    deployment_free(d);
    c->cb.planned(c->ud, r < 0 ? r : -ENOMEM, NULL, &errors);
    lstrv_free(&errors);
}

static void apply_validated(void *ud, int result, struct deployment *d, const struct lstrv *errors)
{
    struct apply_ctx *c = ud;
    if (result < 0)
        c->cb.planned(c->ud, result, NULL, errors);
    else
        apply_deployment(c, d);
    apply_ctx_free(c);
}

static int apply_kind(struct agent *a, const char *text, size_t len,
                      const struct agent_apply_options *o, const char *kind,
                      const struct agent_apply_cb *cb, void *ud)
{
    struct apply_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    *c = (struct apply_ctx){.a = a,
                            .len = len,
                            .dry_run = o->dry_run,
                            .wait = o->wait && !o->dry_run,
                            .no_rollback = o->no_rollback,
                            .timeout_ms = o->timeout_ms,
                            .kind = kind,
                            .cb = *cb,
                            .ud = ud};
    c->text = lstr_ndup(text, len); /* a body may hold NUL bytes: exactly len of them */
    if (!c->text) {
        free(c);
        return -ENOMEM;
    }
    int r = validation_start(a, c->text, len, apply_validated, c, ud, apply_ctx_free);
    if (r < 0)
        apply_ctx_free(c);
    return r;
}

int agent_apply(struct agent *a, const char *text, size_t len, const struct agent_apply_options *o,
                const struct agent_apply_cb *cb, void *ud)
{
    return apply_kind(a, text, len, o, "deploy", cb, ud);
}

int agent_rollback(struct agent *a, int64_t to, const struct agent_apply_options *o,
                   const struct agent_apply_cb *cb, void *ud, struct lerr *err)
{
    if (a->tx)
        return lerr_set(err, -EBUSY,
                        "deployment %lld is still being applied; try again when it has ended",
                        (long long)a->tx->st.id);
    if (to < 0)
        return lerr_set(err, -EINVAL, "expected a deployment id (a positive number), got %lld",
                        (long long)to);
    int64_t id = to;
    if (!id) {
        id = state_meta_id(a->db, "previous_deployment_id");
        if (!id)
            return lerr_set(err, -ENOENT,
                            "no previous deployment to roll back to (none was applied before the "
                            "one in force)");
    }
    _cleanup_free_ char *text = NULL;
    int r = state_deployment_text(a->db, id, &text);
    if (r == -ENOENT && to)
        return lerr_set(err, -ENOENT,
                        "no deployment %lld in the history (`ledge deployments` lists the ones "
                        "that can be applied again)",
                        (long long)id);
    if (r < 0)
        return lerr_set(err, r == -ENOENT ? -ENOENT : -EIO,
                        "deployment %lld cannot be read from the state database", (long long)id);
    log_info(COMP, "rollback requested: applying deployment %lld again", (long long)id);
    r = apply_kind(a, text, strlen(text), o, "rollback", cb, ud);
    return r < 0 ? lerr_set(err, r, "%s", strerror(-r)) : 0;
}

struct history_ctx {
    json_t *arr;
};

static bool history_cb(void *ud, const struct state_history_entry *e)
{
    struct history_ctx *h = ud;
    json_t *modules = NULL;
    if (e->modules)
        ljson_parse(e->modules, strlen(e->modules), &modules, NULL);
    json_t *o = json_pack("{s:I, s:s, s:o, s:o, s:s, s:s?, s:o, s:o, s:b, s:b}", "id",
                          (json_int_t)e->id, "kind", e->kind ? e->kind : "deploy", "startedAt",
                          time_or_null(e->started_ms), "finishedAt", time_or_null(e->finished_ms),
                          "outcome", e->outcome ? e->outcome : "?", "reason", e->reason, "modules",
                          modules ? modules : json_array(), "previous", id_or_null(e->previous_id),
                          "rollback", e->rollback, "canApply", e->has_manifest);
    json_array_append_new(h->arr, o);
    return true;
}

json_t *agent_deployments_json(struct agent *a)
{
    struct history_ctx h = {.arr = json_array()};
    if (state_history(a->db, history_cb, &h) < 0)
        log_warn(COMP, "state database: cannot read the deployment history");
    int64_t cur = a->dep ? state_meta_id(a->db, "deployment_id") : 0;
    return json_pack("{s:o, s:o, s:o, s:o}", "current", id_or_null(cur), "previous",
                     id_or_null(state_meta_id(a->db, "previous_deployment_id")), "inProgress",
                     id_or_null(a->tx ? a->tx->st.id : 0), "deployments", h.arr);
}

void agent_cancel_waiter(struct agent *a, void *ud)
{
    for (struct validation *v = a->validations; v; v = v->next)
        if (v->owner == ud)
            v->cancelled = true; /* dropped when its probes answer */
    struct waiter **lists[3] = {&a->waiters, a->pass ? &a->pass->waiters : NULL,
                                a->tx ? &a->tx->waiters : NULL};
    for (int i = 0; i < 3; i++) {
        if (!lists[i])
            continue;
        for (struct waiter **pp = lists[i]; *pp;) {
            if ((*pp)->ud == ud) {
                struct waiter *w = *pp;
                *pp = w->next;
                json_decref(w->plan);
                free(w);
            } else {
                pp = &(*pp)->next;
            }
        }
    }
}

int agent_module_command(struct agent *a, const char *name, const char *verb, agent_done_fn cb,
                         void *ud, struct lerr *err)
{
    struct mod_rt *rt = rt_find(a, name);
    const struct module_spec *spec = spec_of(a, name);
    if (!rt || !spec)
        return lerr_set(err, -ENOENT, "no module named \"%s\" in the deployment", name);
    if (!rt->container_id)
        return lerr_set(err, -ENOENT, "module \"%s\" has no container yet", name);
    struct slot *sl = slot_at(a, rt->eng);
    if (!sl || !sl->up)
        return lerr_set(err, -EHOSTDOWN, "the %s engine is unreachable", slot_noun(sl));
    if (rt->busy)
        return lerr_set(err, -EBUSY, "module \"%s\" is busy; try again", name);
    struct op *op = op_new(a, rt, PLAN_KEEP);
    if (!op)
        return -ENOMEM;
    op->cb = cb;
    op->ud = ud;
    evtimer_del(rt->restart_timer);
    if (strcmp(verb, "start") == 0) {
        rt->rec.user_stopped = false;
        rt->rec.gave_up = false;
        rt->rec.restart_count = 0;
        op->action = PLAN_START;
        op->stage = ST_START;
    } else if (strcmp(verb, "stop") == 0) {
        rt->rec.user_stopped = true;
        op->action = PLAN_STOP;
        op->stage = ST_STOP;
    } else if (strcmp(verb, "restart") == 0) {
        rt->rec.user_stopped = false;
        rt->rec.gave_up = false;
        op->action = PLAN_START;
        op->restart = true;
        op->stage = ST_STOP;
    } else {
        rt->busy = false;
        op_release(op);
        return lerr_set(err, -EINVAL, "unknown command \"%s\"", verb);
    }
    log_info(COMP, "%s: %s requested", name, verb);
    op_next(op);
    return 0;
}

static json_t *time_or_null(int64_t ms)
{
    char buf[LTIME_RFC3339_MAX];
    return ms > 0 ? json_string(ltime_format_rfc3339(ms, buf)) : json_null();
}

/* The module type of a leftover container (no longer in the deployment): its engine's first. */
static enum module_type rt_leftover_type(struct agent *a, const struct mod_rt *rt)
{
    const struct slot *sl = slot_at(a, rt->eng);
    for (int t = 0; sl && t < MODULE_TYPE_COUNT; t++)
        if (sl->module_types & (1u << t))
            return (enum module_type)t;
    return MODULE_TYPE_DOCKER;
}

static json_t *rt_json(struct agent *a, struct mod_rt *rt)
{
    const struct module_spec *spec = spec_of(a, rt->name);
    char desc[300];
    enum runtime_status st = rt_status(a, rt, desc, sizeof(desc));
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:s, s:i, s:o, s:o, s:i, s:o, s:s?, s:s?, s:s}", "name", rt->name, "type",
        module_type_name(spec ? spec->type : rt_leftover_type(a, rt)), "runtimeStatus",
        runtime_status_name(st), "statusDescription", desc, "exitCode", rt->exit_code,
        "lastStartTimeUtc", time_or_null(rt->started_ms ? rt->started_ms : rt->rec.last_start_ms),
        "lastExitTimeUtc", time_or_null(rt->finished_ms), "restartCount",
        (int)rt->rec.restart_count, "lastRestartTimeUtc", time_or_null(rt->rec.last_restart_ms),
        "containerId", rt->container_id, "generationId", rt->rec.generation_id, "health",
        ctr_health_name(rt->health));
    if (!o)
        return NULL;
    if (spec) {
        json_object_set_new(o, "status", json_string(module_status_name(spec->status)));
        json_object_set_new(o, "restartPolicy",
                            json_string(restart_policy_name(spec->restart_policy)));
        json_object_set_new(o, "startupOrder", json_integer(spec->startup_order));
        json_object_set_new(o, "image", json_string(spec->image ? spec->image : spec->path));
        if (spec->version)
            json_object_set_new(o, "version", json_string(spec->version));
        json_object_set_new(o, "system", json_boolean(spec->system));
    } else {
        json_object_set_new(o, "status", json_string("removed"));
    }
    return o;
}

json_t *agent_modules_json(struct agent *a)
{
    json_t *arr = json_array();
    /* deployment order first, then leftovers */
    const struct deployment *d = a->dep ? a->dep->d : NULL;
    for (size_t i = 0; d && i < d->n_modules; i++) {
        struct mod_rt *rt = rt_find(a, d->modules[i].name);
        if (!rt)
            rt = rt_get(a, d->modules[i].name);
        if (rt)
            json_array_append_new(arr, rt_json(a, rt));
    }
    for (struct mod_rt *rt = a->mods; rt; rt = rt->next)
        if (!spec_of(a, rt->name) && rt->container_id)
            json_array_append_new(arr, rt_json(a, rt));
    return arr;
}

json_t *agent_module_json(struct agent *a, const char *name)
{
    struct mod_rt *rt = rt_find(a, name);
    if (!rt && spec_of(a, name))
        rt = rt_get(a, name);
    return rt && (spec_of(a, name) || rt->container_id) ? rt_json(a, rt) : NULL;
}

json_t *agent_status_json(struct agent *a)
{
    size_t counts[RS_DEAD + 1] = {0};
    for (struct mod_rt *rt = a->mods; rt; rt = rt->next) {
        char desc[8];
        if (spec_of(a, rt->name))
            counts[rt_status(a, rt, desc, sizeof(desc))]++;
    }
    json_t *c = json_object();
    for (int i = 0; i <= RS_DEAD; i++)
        if (counts[i])
            json_object_set_new(c, runtime_status_name(i), json_integer((json_int_t)counts[i]));
    json_t *engines = json_array();
    for (size_t i = 0; engines && i < a->n_slots; i++) {
        json_t *types = json_array();
        for (int t = 0; types && t < MODULE_TYPE_COUNT; t++)
            if (a->slots[i].module_types & (1u << t))
                json_array_append_new(types, json_string(module_type_name((enum module_type)t)));
        json_array_append_new(engines,
                              json_pack("{s:s, s:b, s:o}", "name", slot_name(&a->slots[i]),
                                        "connected", a->slots[i].up, "moduleTypes", types));
    }
    json_t *sdb = ldb_report_json(state_open_report(a->db));
    if (sdb && json_is_true(json_object_get(sdb, "damaged")))
        json_object_set_new(sdb, "deploymentRecovered", json_boolean(a->deployment_recovered));
    json_t *o = json_pack("{s:b, s:b, s:o, s:b, s:o, s:i, s:o?}", "containerEngineConnected",
                          agent_engine_connected(a, MODULE_TYPE_DOCKER), "processEngineConnected",
                          agent_engine_connected(a, MODULE_TYPE_PROCESS), "engines", engines,
                          "reconciling", a->pass != NULL, "modules", c, "deployedModules",
                          a->dep ? (int)a->dep->d->n_modules : 0, "stateDatabase", sdb);
    if (o && a->holding)
        json_object_set_new(o, "holding", json_string(a->holding));
    if (o && a->dep)
        json_object_set_new(o, "deploymentId", json_integer(state_meta_id(a->db, "deployment_id")));
    if (o && a->tx)
        json_object_set_new(o, "deploying",
                            json_pack("{s:I, s:s}", "id", (json_int_t)a->tx->st.id, "phase",
                                      a->tx->phase == TX_ROLLING_BACK ? "rolling-back"
                                      : a->tx->phase == TX_WATCHING   ? "watching"
                                                                      : "applying"));
    return o;
}

bool agent_engine_connected(struct agent *a, enum module_type type)
{
    const struct slot *sl = slot_for(a, type);
    return sl && sl->up;
}

struct engine *agent_engine_for(struct agent *a, enum module_type type)
{
    struct slot *sl = slot_for(a, type);
    return sl ? sl->e : NULL;
}

const char *agent_deployment_text(struct agent *a)
{
    return a->dep ? a->dep->text : NULL;
}
int agent_deployment_text_of(struct agent *a, int64_t id, char **ret_text)
{
    if (id <= 0)
        return -ENOENT;
    return state_deployment_text(a->db, id, ret_text);
}

const struct deployment *agent_deployment(struct agent *a)
{
    return a->dep ? a->dep->d : NULL;
}

int agent_module_pid(struct agent *a, const char *name)
{
    struct mod_rt *rt = rt_find(a, name);
    return rt && rt->state == CTR_RUNNING ? rt->pid : 0;
}

const char *agent_module_generation(struct agent *a, const char *name)
{
    struct mod_rt *rt = rt_find(a, name);
    return rt ? rt->rec.generation_id : NULL;
}

struct agent_logs {
    struct engine *e;
    struct engine_logs *l;
    engine_log_fn on_data;
    engine_done_fn cb;
    void *ud;
};

static int logs_data(void *ud, int stream, const char *data, size_t n)
{
    struct agent_logs *h = ud;
    return h->on_data(h->ud, stream, data, n);
}

static void logs_done(void *ud, int result, const struct lerr *err)
{
    struct agent_logs *h = ud;
    engine_done_fn cb = h->cb;
    void *cud = h->ud;
    free(h);
    cb(cud, result, err);
}

struct agent_logs *agent_logs(struct agent *a, const char *name,
                              const struct engine_logs_options *o, engine_log_fn on_data,
                              engine_done_fn cb, void *ud, struct lerr *err)
{
    struct mod_rt *rt = rt_find(a, name);
    if (!rt || (!rt->container_id && !spec_of(a, name))) {
        lerr_set(err, -ENOENT, "no module named \"%s\"", name);
        return NULL;
    }
    if (!rt->container_id) {
        lerr_set(err, -ENOENT, "module \"%s\" has no container yet", name);
        return NULL;
    }
    struct slot *sl = slot_at(a, rt->eng);
    if (!sl || !sl->up) {
        lerr_set(err, -EHOSTDOWN, "the %s engine is unreachable", slot_noun(sl));
        return NULL;
    }
    struct agent_logs *h = calloc(1, sizeof(*h));
    if (!h) {
        lerr_set(err, -ENOMEM, "out of memory");
        return NULL;
    }
    h->e = sl->e;
    h->on_data = on_data;
    h->cb = cb;
    h->ud = ud;
    h->l = h->e->ops->logs(h->e, rt->container_id, o, logs_data, logs_done, h);
    if (!h->l) {
        free(h);
        lerr_set(err, -EIO, "cannot read the logs of \"%s\"", name);
        return NULL;
    }
    return h;
}

void agent_logs_cancel(struct agent_logs *l)
{
    if (!l)
        return;
    l->e->ops->logs_cancel(l->l);
    free(l);
}
