/* test-agent.c — the planner and restart policy (pure), and the reconciler end to end on the real
 * process engine (real programs, a real state database): create, status-only change keeps the
 * module's id, config change recreates, removal, startupOrder, back-off then failure, and a restart
 * of the agent that recreates nothing. The docker engine is exercised by the system tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/agent.h"
#include "plan.h"
#include "agent/restart.h"
#include "agent/state.h"
#include "base/buf.h"
#include "base/json.h"
#include "base/quantile.h"
#include "base/str.h"
#include "base/timeutil.h"

/* ------------------------------------------------------------------ restart policy */

static void test_backoff_math(void **state)
{
    struct restart_tunables t = RESTART_TUNABLES_DEFAULT;
    assert_int_equal(restart_backoff_ms(&t, 0), 10000);
    assert_int_equal(restart_backoff_ms(&t, 1), 20000);
    assert_int_equal(restart_backoff_ms(&t, 4), 160000);
    assert_int_equal(restart_backoff_ms(&t, 5), 300000);
    assert_int_equal(restart_backoff_ms(&t, 19), 300000);
    assert_int_equal(restart_backoff_ms(&t, 1000), 300000);

    int64_t at = 0;
    assert_int_equal(restart_decide(&t, RESTART_NEVER, 1, false, 0, 0, 0, &at), RESTART_NO);
    assert_int_equal(restart_decide(&t, RESTART_ON_FAILURE, 0, false, 0, 0, 0, &at), RESTART_NO);
    assert_int_equal(restart_decide(&t, RESTART_ON_FAILURE, 2, false, 0, 1000, 1000, &at),
                     RESTART_LATER);
    assert_int_equal(at, 11000);
    assert_int_equal(restart_decide(&t, RESTART_ON_FAILURE, 2, false, 3, 1000, 81000, &at),
                     RESTART_NOW);
    assert_int_equal(restart_decide(&t, RESTART_ALWAYS, 0, false, 0, 0, 20000, &at), RESTART_NOW);
    assert_int_equal(restart_decide(&t, RESTART_ALWAYS, 0, false, 20, 0, 1 << 30, &at),
                     RESTART_GIVE_UP);
    assert_int_equal(restart_decide(&t, RESTART_ON_UNHEALTHY, 0, true, 0, 0, 0, &at),
                     RESTART_LATER);
    assert_int_equal(restart_decide(&t, RESTART_ON_FAILURE, 0, true, 0, 0, 0, &at), RESTART_NO);
    /* ten minutes of running resets the count */
    assert_int_equal(restart_effective_count(&t, 7, 1000, 1000 + 600000), 0);
    assert_int_equal(restart_effective_count(&t, 7, 1000, 1000 + 599999), 7);
    assert_int_equal(restart_effective_count(&t, 7, 0, 700000), 7);
}

/* ------------------------------------------------------------------ planner */

static struct deployment *parse(const char *text)
{
    struct deployment *d = NULL;
    struct lstrv errors = LSTRV_INIT;
    int r = manifest_parse(text, strlen(text), "/usr/lib/ledge/ledge-hub", &d, &errors);
    if (r < 0)
        for (size_t i = 0; i < errors.n; i++)
            fprintf(stderr, "manifest: %s\n", errors.v[i]);
    assert_int_equal(r, 0);
    lstrv_free(&errors);
    return d;
}

static char *manifest(const char *modules)
{
    return lstr_printf(
        "{\"modulesContent\":{\"$edgeAgent\":{\"properties.desired\":{"
        "\"schemaVersion\":\"1.1\",\"runtime\":{\"type\":\"docker\",\"settings\":{}},"
        "\"systemModules\":{\"edgeAgent\":{\"type\":\"docker\",\"settings\":{"
        "\"image\":\"x\"}}},\"modules\":{%s}}},\"$edgeHub\":{\"properties.desired\":{"
        "\"schemaVersion\":\"1.1\",\"routes\":{},\"storeAndForwardConfiguration\":{"
        "\"timeToLiveSecs\":7200}}}}}",
        modules);
}

static enum plan_action action_of(const struct plan *p, const char *name)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->steps[i].module, name) == 0)
            return p->steps[i].action;
    fail_msg("no step for %s", name);
    return PLAN_KEEP;
}

static void test_planner(void **state)
{
    char *text = manifest(
        "\"ma\":{\"type\":\"docker\",\"status\":\"running\",\"startupOrder\":2,\"settings\":"
        "{\"image\":\"img/a\"}},"
        "\"mb\":{\"type\":\"docker\",\"status\":\"stopped\",\"startupOrder\":1,\"settings\":"
        "{\"image\":\"img/b\"}},"
        "\"mc\":{\"type\":\"docker\",\"status\":\"running\",\"settings\":{\"image\":\"img/c\"}},"
        "\"md\":{\"type\":\"docker\",\"status\":\"running\",\"settings\":{\"image\":\"img/d\"}},"
        "\"me\":{\"type\":\"docker\",\"status\":\"running\",\"startupOrder\":0,\"settings\":"
        "{\"image\":\"img/e\"}}");
    struct deployment *d = parse(text);
    const struct module_spec *b = deployment_find(d, "mb");
    const struct module_spec *c = deployment_find(d, "mc");
    const struct module_spec *e = deployment_find(d, "me");
    struct plan_actual actual[] = {
        /* b: same config, running, desired stopped → stop */
        {.name = "mb", .id = "B", .config_hash = b->config_hash, .state = CTR_RUNNING},
        /* c: config changed → recreate */
        {.name = "mc", .id = "C", .config_hash = "old", .state = CTR_RUNNING},
        /* e: same config, exited, start allowed → start */
        {.name = "me",
         .id = "E",
         .config_hash = e->config_hash,
         .state = CTR_EXITED,
         .may_start = true},
        /* orphan with the owner label → remove */
        {.name = "gone", .id = "G", .config_hash = "x", .state = CTR_RUNNING},
        /* d: same config, exited, the restart policy has not allowed a start → keep */
        {.name = "md",
         .id = "D",
         .config_hash = deployment_find(d, "md")->config_hash,
         .state = CTR_EXITED},
    };
    struct plan p;
    const char *names[] = {"docker", "process"};
    bool avail[2] = {true, true};
    int for_type[MODULE_TYPE_COUNT] = {[MODULE_TYPE_DOCKER] = 0, [MODULE_TYPE_PROCESS] = 1};
    struct plan_engines pe = {.n = 2, .names = names, .available = avail, .for_type = for_type};
    assert_int_equal(plan_compute(d, actual, ARRAY_SIZE(actual), &pe, &p), 0);
    assert_int_equal(action_of(&p, "ma"), PLAN_CREATE);
    assert_int_equal(action_of(&p, "mb"), PLAN_STOP);
    assert_int_equal(action_of(&p, "mc"), PLAN_RECREATE);
    assert_int_equal(action_of(&p, "me"), PLAN_START);
    assert_int_equal(action_of(&p, "gone"), PLAN_REMOVE);
    assert_int_equal(action_of(&p, "md"), PLAN_KEEP);
    assert_int_equal(plan_count_changes(&p), 5);
    /* order: stop/remove first, then startupOrder 0 (e), 2 (a), default (c, d) */
    assert_true(p.steps[0].action == PLAN_REMOVE || p.steps[0].action == PLAN_STOP);
    assert_true(p.steps[1].action == PLAN_REMOVE || p.steps[1].action == PLAN_STOP);
    assert_string_equal(p.steps[2].module, "me");
    assert_string_equal(p.steps[3].module, "ma");
    json_t *j = plan_to_json(&p, false);
    assert_int_equal(json_array_size(j), 5);
    json_decref(j);
    plan_free(&p);
    (void)c;

    /* A module on another engine than its type now runs on is recreated. */
    actual[0].engine = 1;
    assert_int_equal(plan_compute(d, actual, ARRAY_SIZE(actual), &pe, &p), 0);
    assert_int_equal(action_of(&p, "mb"), PLAN_RECREATE);
    for (size_t i = 0; i < p.n; i++)
        if (strcmp(p.steps[i].module, "mb") == 0) {
            assert_string_equal(p.steps[i].reason,
                                "moves from the process engine to the docker engine");
            assert_int_equal(p.steps[i].old_engine, 1);
        }
    plan_free(&p);
    actual[0].engine = 0;

    /* An unreachable engine: its modules are neither created nor removed. */
    avail[0] = false;
    assert_int_equal(plan_compute(d, actual, ARRAY_SIZE(actual), &pe, &p), 0);
    assert_int_equal(plan_count_changes(&p), 0);
    plan_free(&p);
    /* No engine for a type: its modules are left out as well, and so are their containers;
     * only the orphan goes. */
    avail[0] = true;
    for_type[MODULE_TYPE_DOCKER] = -1;
    assert_int_equal(plan_compute(d, actual, ARRAY_SIZE(actual), &pe, &p), 0);
    assert_int_equal(plan_count_changes(&p), 1);
    assert_int_equal(action_of(&p, "gone"), PLAN_REMOVE);
    plan_free(&p);
    deployment_free(d);
    free(text);
}

/* ------------------------------------------------------------------ reconciler on processes */

struct fix {
    struct event_base *base;
    struct engine *proc;
    struct engine *docker; /* pointed at a socket nobody serves */
    struct state_db *db;
    struct agent *agent;
    char dir[64];
    char bootfile[128];
    int done;
    int result;
    json_t *report;
    int planned;
    int plan_result;
    struct lstrv errors;
    struct restart_tunables rt;
    const struct engine_ops *proc_ops; /* NULL: engine_process_ops */
    bool rollback;                     /* apply() with rollback (atomic deployments) */
    int64_t settle_ms;
};

static void start_agent(struct fix *f)
{
    char uri[128];
    snprintf(uri, sizeof(uri), "unix://%s/no-docker.sock", f->dir);
    struct engine_config pc = {.state_dir = f->dir};
    struct engine_config dc = {.uri = uri};
    assert_int_equal(
        engine_new(f->proc_ops ? f->proc_ops : &engine_process_ops, f->base, &pc, &f->proc), 0);
    assert_int_equal(engine_new(&engine_docker_ops, f->base, &dc, &f->docker), 0);
    struct lerr err = {0};
    assert_int_equal(state_open(f->dir, &f->db, &err), 0);
    struct agent_engine engines[] = {
        {.engine = f->docker, .module_types = 1u << MODULE_TYPE_DOCKER},
        {.engine = f->proc, .module_types = 1u << MODULE_TYPE_PROCESS},
    };
    struct agent_options o = {.engines = engines,
                              .n_engines = ARRAY_SIZE(engines),
                              .network = "ledge",
                              .stop_timeout_s = 1,
                              .restart = f->rt,
                              .hub_program = "/bin/true",
                              .boot_id_path = f->bootfile,
                              .deploy_timeout_ms = 3000,
                              .deploy_settle_ms = f->settle_ms};
    assert_int_equal(agent_new(f->base, f->db, &o, &f->agent), 0);
    assert_int_equal(agent_start(f->agent, &err), 0);
    f->proc->ops->start(f->proc);
    f->docker->ops->start(f->docker);
}

static void stop_agent(struct fix *f)
{
    agent_free(f->agent);
    f->agent = NULL;
    engine_free(f->proc);
    engine_free(f->docker);
    state_close(f->db);
}

static int setup(void **state)
{
    signal(SIGPIPE, SIG_IGN);
    struct fix *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/ledge-test-agent-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->bootfile, sizeof(f->bootfile), "%s/boot_id", f->dir);
    FILE *b = fopen(f->bootfile, "w");
    fputs("boot-1\n", b);
    fclose(b);
    f->base = event_base_new();
    f->rt = (struct restart_tunables){
        .backoff_base_ms = 100, .backoff_max_ms = 400, .max_restarts = 3, .reset_after_ms = 600000};
    start_agent(f);
    *state = f;
    return 0;
}

static void kill_all(struct fix *f)
{
    /* Programs outlive the agent by design; the test cleans up after itself. */
    char cmd[512];
    /* Each program is a shell (with this run's marker in its argv) in a session of its own: the
     * whole session goes, its sleep included; other runs' programs are not this run's business. */
    snprintf(cmd, sizeof(cmd),
             "for p in $(pgrep -f 'ledge-agent-test-[m]arker %s'); do pkill -KILL -s \"$p\"; "
             "done; true",
             f->dir);
    assert_int_equal(system(cmd), 0);
}

static int teardown(void **state)
{
    struct fix *f = *state;
    stop_agent(f);
    kill_all(f);
    json_decref(f->report);
    lstrv_free(&f->errors);
    event_base_free(f->base);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void apply_cb(void *ud, int result, const json_t *report)
{
    struct fix *f = ud;
    f->done++;
    f->result = result;
    json_decref(f->report);
    f->report = json_deep_copy(report);
}

static void planned_cb(void *ud, int result, const json_t *report, const struct lstrv *errors)
{
    struct fix *f = ud;
    f->planned++;
    f->plan_result = result;
    for (size_t i = 0; errors && i < errors->n; i++)
        lstrv_push(&f->errors, errors->v[i]);
}

static const struct agent_apply_cb apply_cbs = {.planned = planned_cb, .done = apply_cb};
static const struct agent_apply_options wait_opts = {.wait = true};

static void spin(struct fix *f, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(f->base, &tv);
    event_base_dispatch(f->base);
}

/* The modules with this run's marker (@RUN@ becomes the fixture's directory). */
static char *with_run_marker(struct fix *f, const char *modules)
{
    struct lbuf b = LBUF_INIT;
    for (const char *p = modules; *p;) {
        const char *at = strstr(p, "@RUN@");
        size_t n = at ? (size_t)(at - p) : strlen(p);
        assert_int_equal(lbuf_append(&b, p, n), 0);
        if (!at)
            break;
        assert_int_equal(lbuf_puts(&b, f->dir), 0);
        p = at + 5;
    }
    return lbuf_steal(&b);
}

/* Start applying (f->rollback: as a transaction); the callbacks come later. */
static void apply_start(struct fix *f, const char *modules)
{
    char *marked = with_run_marker(f, modules);
    char *text = manifest(marked);
    free(marked);
    f->done = 0;
    f->planned = 0;
    lstrv_free(&f->errors);
    const struct agent_apply_options o = {.wait = true, .no_rollback = !f->rollback};
    assert_int_equal(agent_apply(f->agent, text, strlen(text), &o, &apply_cbs, f), 0);
    free(text);
}

static void apply(struct fix *f, const char *modules)
{
    apply_start(f, modules);
    for (int i = 0; i < 1000 && !f->done; i++)
        spin(f, 10);
    for (size_t i = 0; i < f->errors.n; i++)
        fprintf(stderr, "apply: %s\n", f->errors.v[i]);
    assert_int_equal(f->planned, 1);
    assert_int_equal(f->plan_result, 0);
    assert_int_equal(f->done, 1);
}

static json_t *module(struct fix *f, const char *name)
{
    json_t *m = agent_module_json(f->agent, name);
    assert_non_null(m);
    return m;
}

static const char *status_of(struct fix *f, const char *name, char *buf, size_t n)
{
    json_t *m = module(f, name);
    snprintf(buf, n, "%s", ljson_str(m, "runtimeStatus"));
    json_decref(m);
    return buf;
}

static char *container_of(struct fix *f, const char *name)
{
    json_t *m = module(f, name);
    char *id = ljson_str(m, "containerId") ? strdup(ljson_str(m, "containerId")) : NULL;
    json_decref(m);
    return id;
}

static void wait_status(struct fix *f, const char *name, const char *want)
{
    char buf[32];
    for (int i = 0; i < 500; i++) {
        if (strcmp(status_of(f, name, buf, sizeof(buf)), want) == 0)
            return;
        spin(f, 10);
    }
    json_t *m = module(f, name);
    char *s = ljson_dump(m);
    fail_msg("%s never became %s: %s", name, want, s);
    free(s);
}

#define SLEEPER(name, order, status, extra)                                                        \
    "\"" name "\":{\"type\":\"process\",\"status\":\"" status                                      \
    "\",\"restartPolicy\":\"on-failure\","                                                         \
    "\"startupOrder\":" #order ",\"settings\":{\"path\":\"/bin/sh\",\"args\":[\"-c\","             \
    "\"sleep 1000; true # ledge-agent-test-marker @RUN@ " extra "\"]}}"

static void test_reconcile_processes(void **state)
{
    struct fix *f = *state;
    char buf[32];
    apply(f, SLEEPER("one", 1, "running", "") "," SLEEPER("two", 2, "running", "") "," SLEEPER(
                 "three", 3, "running", ""));
    assert_int_equal(f->result, 0);
    wait_status(f, "one", "running");
    wait_status(f, "two", "running");
    wait_status(f, "three", "running");
    assert_int_equal(json_array_size(json_object_get(f->report, "outcome")), 3);
    /* startupOrder: one started before two before three */
    json_t *m1 = module(f, "one"), *m3 = module(f, "three");
    assert_true(strcmp(ljson_str(m1, "lastStartTimeUtc"), ljson_str(m3, "lastStartTimeUtc")) <= 0);
    json_decref(m1);
    json_decref(m3);

    /* status-only change: same container, stopped */
    char *id_two = container_of(f, "two");
    apply(f, SLEEPER("one", 1, "running", "") "," SLEEPER("two", 2, "stopped", "") "," SLEEPER(
                 "three", 3, "running", ""));
    wait_status(f, "two", "stopped");
    char *id_two_b = container_of(f, "two");
    assert_string_equal(id_two, id_two_b);
    free(id_two_b);
    /* back to running: same container again */
    apply(f, SLEEPER("one", 1, "running", "") "," SLEEPER("two", 2, "running", "") "," SLEEPER(
                 "three", 3, "running", ""));
    wait_status(f, "two", "running");
    id_two_b = container_of(f, "two");
    assert_string_equal(id_two, id_two_b);
    free(id_two_b);

    /* config change: recreated (new id), others untouched */
    char *id_one = container_of(f, "one");
    apply(f, SLEEPER("one", 1, "running", "") "," SLEEPER("two", 2, "running", "v2") "," SLEEPER(
                 "three", 3, "running", ""));
    wait_status(f, "two", "running");
    id_two_b = container_of(f, "two");
    assert_string_not_equal(id_two, id_two_b);
    char *id_one_b = container_of(f, "one");
    assert_string_equal(id_one, id_one_b);
    free(id_one_b);

    /* the agent restarts (same boot): nothing is recreated, everything still runs */
    stop_agent(f);
    start_agent(f);
    for (int i = 0; i < 30; i++)
        spin(f, 10);
    wait_status(f, "two", "running");
    id_one_b = container_of(f, "one");
    assert_string_equal(id_one, id_one_b);
    free(id_one_b);
    char *id_two_c = container_of(f, "two");
    assert_string_equal(id_two_b, id_two_c);
    free(id_two_c);

    /* removal */
    apply(f, SLEEPER("one", 1, "running", ""));
    assert_null(agent_module_json(f->agent, "two"));
    assert_string_equal(status_of(f, "one", buf, sizeof(buf)), "running");
    free(id_one);
    free(id_two);
    free(id_two_b);
}

/* A process engine whose listing is answered, then, before the agent sees that answer, the
 * module's exit arrives as an event: the agent must keep the newer state, not the listing's. */
static struct fix *stale_fix;
static char *stale_inject_id; /* the module whose exit is injected into the next listing */
struct stale_ctx {
    engine_list_fn cb;
    void *ud;
};

static void stale_list_cb(void *ud, int result, const struct engine_container *v, size_t n,
                          const struct lerr *err)
{
    struct stale_ctx *c = ud;
    if (stale_inject_id && result == 0) {
        struct engine_event ev = {.kind = ENGINE_EVENT_DIE,
                                  .id = stale_inject_id,
                                  .exit_code = 9,
                                  .time_ms = ltime_now_ms()};
        agent_on_engine_event(stale_fix->agent, stale_fix->proc, &ev);
        free(stale_inject_id);
        stale_inject_id = NULL;
    }
    c->cb(c->ud, result, v, n, err);
    free(c);
}

static int stale_list(struct engine *e, engine_list_fn cb, void *ud)
{
    struct stale_ctx *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->cb = cb;
    c->ud = ud;
    int r = engine_process_ops.list(e, stale_list_cb, c);
    if (r < 0)
        free(c);
    return r;
}

static void test_event_newer_than_listing(void **state)
{
    struct fix *f = *state;
    static struct engine_ops stale_ops;
    stale_ops = engine_process_ops;
    stale_ops.list = stale_list;
    stop_agent(f);
    f->proc_ops = &stale_ops;
    stale_fix = f;
    start_agent(f);
    const char *victim =
        "\"victim\":{\"type\":\"process\",\"status\":\"running\",\"restartPolicy\":\"never\","
        "\"settings\":{\"path\":\"/bin/sh\",\"args\":[\"-c\",\"sleep 1000; true # "
        "ledge-agent-test-marker @RUN@\"]}}";
    apply(f, victim);
    wait_status(f, "victim", "running");
    /* the next pass lists it running; its exit (code 9) arrives before that answer is used */
    stale_inject_id = container_of(f, "victim");
    apply(f, victim);
    assert_null(stale_inject_id);
    char buf[32];
    json_t *m = module(f, "victim");
    assert_string_equal(status_of(f, "victim", buf, sizeof(buf)), "failed");
    assert_int_equal(ljson_int(m, "exitCode", -1), 9);
    json_decref(m);
}

/* IoT Edge's semantics: a deployment that applied is not failed by a step the restart policy
 * takes in the same pass for a module the deployment did not change. The pass that applies
 * "steady"'s env change also restarts "victim" (its exit is injected into that pass's listing,
 * with no back-off), and victim's start fails: the deployment's result is still 0, while victim's
 * failure shows in the outcome. */
static struct fix *unrelated_fix;
static char *unrelated_victim; /* container id: exit injected, then its start refused */
static bool unrelated_armed;
static bool unrelated_refused;

static void unrelated_list_cb(void *ud, int result, const struct engine_container *v, size_t n,
                              const struct lerr *err)
{
    struct stale_ctx *c = ud;
    if (unrelated_armed && result == 0) {
        struct engine_event ev = {.kind = ENGINE_EVENT_DIE,
                                  .id = unrelated_victim,
                                  .exit_code = 1,
                                  .time_ms = ltime_now_ms()};
        agent_on_engine_event(unrelated_fix->agent, unrelated_fix->proc, &ev);
    }
    c->cb(c->ud, result, v, n, err);
    free(c);
}

static int unrelated_list(struct engine *e, engine_list_fn cb, void *ud)
{
    struct stale_ctx *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->cb = cb;
    c->ud = ud;
    int r = engine_process_ops.list(e, unrelated_list_cb, c);
    if (r < 0)
        free(c);
    return r;
}

static int unrelated_start(struct engine *e, const char *id, engine_done_fn cb, void *ud)
{
    if (unrelated_armed && lstr_eq(id, unrelated_victim)) {
        unrelated_armed = false;
        unrelated_refused = true;
        return -EIO;
    }
    return engine_process_ops.start_container(e, id, cb, ud);
}

static void test_unrelated_failure_keeps_deployment_ok(void **state)
{
    struct fix *f = *state;
    static struct engine_ops ops;
    ops = engine_process_ops;
    ops.list = unrelated_list;
    ops.start_container = unrelated_start;
    stop_agent(f);
    f->proc_ops = &ops;
    f->rt.backoff_base_ms = 0; /* the injected exit restarts at once, in the same pass */
    unrelated_fix = f;
    start_agent(f);
    const char *victim = SLEEPER("victim", 1, "running", "v");
    apply(f, SLEEPER("steady", 1, "running", "") "," SLEEPER("victim", 1, "running", "v"));
    assert_int_equal(f->result, 0);
    wait_status(f, "victim", "running");
    unrelated_victim = container_of(f, "victim");
    unrelated_armed = true;
    char *both = lstr_printf("%s,%s", SLEEPER("steady", 1, "running", "env2"), victim);
    apply(f, both);
    free(both);
    assert_true(unrelated_refused);
    /* the outcome tells about victim's failed restart; the deployment applied all the same */
    bool victim_failed = false;
    size_t i;
    json_t *o;
    json_array_foreach (json_object_get(f->report, "outcome"), i, o) {
        if (lstr_eq(ljson_str(o, "module"), "victim") && lstr_eq(ljson_str(o, "result"), "error"))
            victim_failed = true;
    }
    assert_true(victim_failed);
    assert_int_equal(f->result, 0);
    free(unrelated_victim);
    unrelated_victim = NULL;
}

static json_t *metrics_of(struct fix *f, const char *name)
{
    json_t *am = agent_metrics_json(f->agent);
    json_t *found = NULL, *m;
    size_t i;
    json_array_foreach (json_object_get(am, "modules"), i, m)
        if (lstr_eq(ljson_str(m, "name"), name))
            found = json_incref(m);
    json_decref(am);
    assert_non_null(found);
    return found;
}

static uint64_t command_count(struct fix *f, const char *command)
{
    json_t *am = agent_metrics_json(f->agent), *c;
    size_t i;
    uint64_t n = 0;
    json_array_foreach (json_object_get(am, "commands"), i, c)
        if (lstr_eq(ljson_str(c, "command"), command))
            n = (uint64_t)ljson_int(c, "count", 0);
    json_decref(am);
    return n;
}

/* The quantiles of command's latency: IoT Edge's four objectives, each within [0, the sum of the
 * latencies] (every one is >= 0), or null when none was answered in the window. */
static void check_command_quantiles(struct fix *f, const char *command)
{
    json_t *am = agent_metrics_json(f->agent), *c, *q;
    size_t i, k;
    json_array_foreach (json_object_get(am, "commands"), i, c) {
        if (!lstr_eq(ljson_str(c, "command"), command))
            continue;
        double sum = json_real_value(json_object_get(c, "sumSeconds"));
        json_t *qs = json_object_get(c, "quantiles");
        assert_int_equal(json_array_size(qs), AGENT_LATENCY_OBJECTIVES);
        json_array_foreach (qs, k, q) {
            assert_true(json_real_value(json_object_get(q, "quantile")) ==
                        agent_latency_objectives[k]);
            json_t *v = json_object_get(q, "value");
            if (ljson_int(c, "count", 0) == 0) {
                assert_true(json_is_null(v));
                continue;
            }
            assert_true(json_is_real(v));
            assert_true(json_real_value(v) >= 0);
            assert_true(json_real_value(v) <= sum * (1 + LQUANT_ALPHA) + 1e-9);
        }
    }
    json_decref(am);
}

static void test_crash_backoff_then_failed(void **state)
{
    struct fix *f = *state;
    apply(f, "\"crasher\":{\"type\":\"process\",\"status\":\"running\",\"restartPolicy\":"
             "\"always\",\"settings\":{\"path\":\"/bin/sh\",\"args\":[\"-c\",\"exit 7\"]}}");
    /* 3 restarts with 100, 200, 400 ms back-off, then failed; never "failed" before it gave up
     * (between a back-off's end and the restart, it is still backing off) */
    bool failed = false;
    for (int i = 0; i < 500 && !failed; i++) {
        json_t *m = module(f, "crasher");
        failed = lstr_eq(ljson_str(m, "runtimeStatus"), "failed");
        if (failed && ljson_int(m, "restartCount", -1) != 3)
            fail_msg("failed after %d restarts: %s", (int)ljson_int(m, "restartCount", -1),
                     ljson_str(m, "statusDescription"));
        json_decref(m);
        if (!failed)
            spin(f, 2);
    }
    assert_true(failed);
    json_t *m = module(f, "crasher");
    assert_int_equal(ljson_int(m, "restartCount", -1), 3);
    assert_int_equal(ljson_int(m, "exitCode", -1), 7);
    assert_non_null(strstr(ljson_str(m, "statusDescription"), "gave up"));
    json_decref(m);
    m = metrics_of(f, "crasher"); /* the first start and its 3 restarts */
    assert_int_equal(ljson_int(m, "starts", -1), 4);
    json_decref(m);
    /* a user start gives it another chance */
    struct lerr err = {0};
    f->done = 0;
    assert_int_equal(agent_module_command(f->agent, "crasher", "start", apply_cb, f, &err), 0);
    for (int i = 0; i < 100 && !f->done; i++)
        spin(f, 10);
    char buf[32];
    status_of(f, "crasher", buf, sizeof(buf));
    assert_true(strcmp(buf, "backoff") == 0 || strcmp(buf, "running") == 0 ||
                strcmp(buf, "failed") == 0);
    assert_int_equal(agent_module_command(f->agent, "nope", "start", apply_cb, f, &err), -ENOENT);
    assert_string_equal(err.msg, "no module named \"nope\" in the deployment");
}

/* edgeAgent_*: the starts and stops asked of the engine, a crash restarted by the policy, and
 * the time expected running and running correctly. */
static void test_metrics_counts(void **state)
{
    struct fix *f = *state;
    apply(f, SLEEPER("one", 1, "running", ""));
    assert_int_equal(f->result, 0);
    wait_status(f, "one", "running");
    for (int i = 0; i < 30; i++)
        spin(f, 10);
    json_t *m = metrics_of(f, "one");
    assert_int_equal(ljson_int(m, "starts", -1), 1);
    assert_int_equal(ljson_int(m, "stops", -1), 0);
    double expected = json_real_value(json_object_get(m, "expectedRunningSeconds"));
    double running = json_real_value(json_object_get(m, "runningCorrectlySeconds"));
    assert_true(running > 0.2 && running <= expected);
    json_int_t pid1 = json_integer_value(json_object_get(m, "pid"));
    assert_true(pid1 > 0);
    json_decref(m);
    assert_true(command_count(f, "create") >= 1);
    assert_true(command_count(f, "start") >= 1);
    check_command_quantiles(f, "start");
    check_command_quantiles(f, "remove");

    struct lerr err = {0};
    f->done = 0;
    assert_int_equal(agent_module_command(f->agent, "one", "restart", apply_cb, f, &err), 0);
    for (int i = 0; i < 300 && !f->done; i++)
        spin(f, 10);
    wait_status(f, "one", "running");
    m = metrics_of(f, "one");
    assert_int_equal(ljson_int(m, "starts", -1), 2);
    assert_int_equal(ljson_int(m, "stops", -1), 1);
    /* the new run's pid, not the last one's (the metrics read its resources from it) */
    json_int_t pid2 = json_integer_value(json_object_get(m, "pid"));
    assert_true(pid2 > 0 && pid2 != pid1);
    json_decref(m);

    /* stopped by its desired status: expected no more, so neither total grows */
    apply(f, SLEEPER("one", 1, "stopped", ""));
    wait_status(f, "one", "stopped");
    m = metrics_of(f, "one");
    expected = json_real_value(json_object_get(m, "expectedRunningSeconds"));
    running = json_real_value(json_object_get(m, "runningCorrectlySeconds"));
    assert_int_equal(ljson_int(m, "stops", -1), 2);
    json_decref(m);
    for (int i = 0; i < 20; i++)
        spin(f, 10);
    m = metrics_of(f, "one");
    assert_true(json_real_value(json_object_get(m, "expectedRunningSeconds")) == expected);
    assert_true(json_real_value(json_object_get(m, "runningCorrectlySeconds")) == running);
    json_decref(m);
}

static void test_boot_starts_and_user_stop(void **state)
{
    struct fix *f = *state;
    apply(f, "\"once\":{\"type\":\"process\",\"status\":\"running\",\"restartPolicy\":\"never\","
             "\"settings\":{\"path\":\"/bin/sh\",\"args\":[\"-c\",\"exit 0\"]}}," SLEEPER(
                 "svc", 1, "running", ""));
    wait_status(f, "once", "stopped");
    /* user stop: stays stopped, restart policy does not bring it back */
    struct lerr err = {0};
    f->done = 0;
    assert_int_equal(agent_module_command(f->agent, "svc", "stop", apply_cb, f, &err), 0);
    wait_status(f, "svc", "stopped");
    spin(f, 300);
    char buf[32];
    assert_string_equal(status_of(f, "svc", buf, sizeof(buf)), "stopped");

    /* a reboot (new boot id): modules that should run are started again, even "never" ones */
    stop_agent(f);
    kill_all(f);
    FILE *b = fopen(f->bootfile, "w");
    fputs("boot-2\n", b);
    fclose(b);
    start_agent(f);
    wait_status(f, "once", "stopped"); /* ran again and exited 0 */
    json_t *m = module(f, "once");
    assert_non_null(ljson_str(m, "lastStartTimeUtc"));
    json_decref(m);
    /* stopped by a user before the reboot: still stopped */
    assert_string_equal(status_of(f, "svc", buf, sizeof(buf)), "stopped");
}

/* An engine that cannot be listed (not reachable yet after a boot). */
static int unreachable_list(struct engine *e, engine_list_fn cb, void *ud)
{
    struct lerr err;
    lerr_set(&err, -EIO, "engine not reachable (test)");
    cb(ud, -EIO, NULL, 0, &err);
    return 0;
}

static int runs_of(struct fix *f)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/runs", f->dir);
    FILE *fp = fopen(path, "r");
    int n = 0;
    for (int c; fp && (c = fgetc(fp)) != EOF;)
        n += c == '\n';
    if (fp)
        fclose(fp);
    return n;
}

/* A boot is recorded only once the engine's modules were started for it: ledged stopped after a
 * reboot before its engine answered still boots the modules on its next start (a "never"
 * module, which nothing else would start), and a restart after that boot starts nothing. */
static void test_boot_kept_until_engine_listed(void **state)
{
    struct fix *f = *state;
    const char *once =
        "\"once\":{\"type\":\"process\",\"status\":\"running\",\"restartPolicy\":\"never\","
        "\"settings\":{\"path\":\"/bin/sh\",\"args\":[\"-c\",\"echo run >> @RUN@/runs # "
        "ledge-agent-test-marker @RUN@\"]}}";
    apply(f, once);
    wait_status(f, "once", "stopped");
    assert_int_equal(runs_of(f), 1);

    /* the reboot; the engine does not answer its listing during this first start */
    stop_agent(f);
    kill_all(f);
    FILE *b = fopen(f->bootfile, "w");
    fputs("boot-2\n", b);
    fclose(b);
    static struct engine_ops ops;
    ops = engine_process_ops;
    ops.list = unreachable_list;
    f->proc_ops = &ops;
    start_agent(f);
    spin(f, 300);
    assert_int_equal(runs_of(f), 1);

    /* ledged restarted, same boot, the engine answers: the boot's start happens now */
    stop_agent(f);
    f->proc_ops = NULL;
    start_agent(f);
    for (int i = 0; i < 300 && runs_of(f) < 2; i++)
        spin(f, 10);
    assert_int_equal(runs_of(f), 2);
    wait_status(f, "once", "stopped");

    /* and once it is done, a restart of ledged in the same boot starts nothing */
    stop_agent(f);
    start_agent(f);
    spin(f, 300);
    assert_int_equal(runs_of(f), 2);
}

static void test_invalid_manifest_changes_nothing(void **state)
{
    struct fix *f = *state;
    apply(f, SLEEPER("keep", 1, "running", ""));
    char *id = container_of(f, "keep");
    const char *bad = "{\"modulesContent\":{\"$edgeAgent\":{\"properties.desired\":{"
                      "\"schemaVersion\":\"9.9\",\"modules\":{\"x\":{\"type\":\"docker\"}}}}}}";
    f->planned = f->done = 0;
    assert_int_equal(agent_apply(f->agent, bad, strlen(bad), &wait_opts, &apply_cbs, f), 0);
    assert_int_equal(f->planned, 1); /* invalid: the verdict comes at once */
    assert_int_equal(f->plan_result, -EINVAL);
    assert_true(f->errors.n >= 2);
    spin(f, 100);
    assert_int_equal(f->done, 0);
    /* A body with a NUL byte inside is read for exactly its length (not to the NUL). */
    static const char nul[] = "{\"modulesContent\":\0{}}";
    f->planned = 0;
    lstrv_free(&f->errors);
    assert_int_equal(agent_apply(f->agent, nul, sizeof(nul) - 1, &wait_opts, &apply_cbs, f), 0);
    assert_int_equal(f->planned, 1);
    assert_int_equal(f->plan_result, -EINVAL);
    char *id2 = container_of(f, "keep");
    assert_string_equal(id, id2);
    assert_non_null(strstr(agent_deployment_text(f->agent), "keep"));
    free(id);
    free(id2);
}

/* A "$upstream:PORT/..." image without upstream.parent is refused at deploy time, naming the
 * module and the field; nothing changes. */
static void test_upstream_image_needs_parent(void **state)
{
    struct fix *f = *state;
    apply(f, SLEEPER("keep", 1, "running", ""));
    char *id = container_of(f, "keep");
    char *marked = with_run_marker(
        f, SLEEPER("keep", 1, "running", "") ",\"child\":{\"type\":"
                                             "\"docker\",\"status\":\"running\",\"restartPolicy\":"
                                             "\"always\",\"settings\":{\"image\":"
                                             "\"$upstream:443/app:1\"}}");
    char *text = manifest(marked);
    free(marked);
    f->planned = f->done = 0;
    lstrv_free(&f->errors);
    assert_int_equal(agent_apply(f->agent, text, strlen(text), &wait_opts, &apply_cbs, f), 0);
    free(text);
    for (int i = 0; i < 100 && !f->planned; i++)
        spin(f, 10);
    assert_int_equal(f->planned, 1);
    assert_int_equal(f->plan_result, -EINVAL);
    bool found = false;
    for (size_t i = 0; i < f->errors.n; i++)
        found |= strcmp(f->errors.v[i],
                        "modules.child.settings.image: $upstream:443/app:1 names the parent "
                        "device's registry ($upstream) and upstream.parent is not set in this "
                        "device's config") == 0;
    if (!found)
        fail_msg("no $upstream error among %zu: %s", f->errors.n,
                 f->errors.n ? f->errors.v[0] : "");
    spin(f, 100);
    assert_int_equal(f->done, 0);
    char *id2 = container_of(f, "keep");
    assert_string_equal(id, id2);
    free(id);
    free(id2);
}

/* ------------------------------------------------------------------ a damaged state database */

/* Overwrite with garbage pages of table in the (closed) database at path: every page of it
 * (which == -2), or only its leaf at index which in key order (-1 = the last). Returns how many. */
static int damage_table(const char *path, const char *table, int which)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT pageno FROM dbstat WHERE name = ?1 AND (?2 OR "
                                        "pagetype = 'leaf') ORDER BY path",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, which == -2);
    int64_t pages[64];
    int n = 0;
    while (sqlite3_step(st) == SQLITE_ROW && n < 64)
        pages[n++] = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    assert_true(n > 0);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    char junk[4096];
    memset(junk, 0x5a, sizeof(junk));
    int done = 0;
    for (int i = 0; i < n; i++) {
        if (which != -2 && i != (which == -1 ? n - 1 : which))
            continue;
        assert_int_equal(pwrite(fd, junk, sizeof(junk), (off_t)(pages[i] - 1) * 4096),
                         (ssize_t)sizeof(junk));
        done++;
    }
    close(fd);
    return done;
}

static json_t *state_report(struct fix *f)
{
    json_t *s = agent_status_json(f->agent);
    json_t *sdb = json_incref(json_object_get(s, "stateDatabase"));
    json_decref(s);
    assert_non_null(sdb);
    return sdb;
}

/* Issue 11: ledged.db garbage between two runs. Nothing comes back, so nothing is known to be
 * wanted: the agent keeps what it finds (an empty deployment would remove it all) and says so,
 * until a deployment is applied; then it reconciles as usual and recreates nothing. */
static void test_state_garbage_keeps_modules(void **state)
{
    struct fix *f = *state;
    apply(f, SLEEPER("one", 1, "running", "") "," SLEEPER("two", 2, "running", ""));
    wait_status(f, "one", "running");
    wait_status(f, "two", "running");
    char *id1 = container_of(f, "one"), *id2 = container_of(f, "two");
    stop_agent(f);

    char path[128], junk[8192];
    snprintf(path, sizeof(path), "%s/ledged.db", f->dir);
    memset(junk, 0x33, sizeof(junk));
    FILE *w = fopen(path, "w");
    assert_non_null(w);
    assert_int_equal(fwrite(junk, 1, sizeof(junk), w), sizeof(junk));
    fclose(w);

    start_agent(f);
    json_t *sdb = state_report(f);
    assert_true(json_is_true(json_object_get(sdb, "damaged")));
    assert_false(json_is_true(json_object_get(sdb, "deploymentRecovered")));
    assert_non_null(strstr(ljson_str(sdb, "problem"), "not a database"));
    assert_int_equal(access(ljson_str(sdb, "damagedPath"), F_OK), 0);
    json_decref(sdb);
    json_t *s = agent_status_json(f->agent);
    assert_non_null(strstr(ljson_str(s, "holding"), "no deployment came back"));
    json_decref(s);
    /* several passes: both keep running, untouched */
    for (int i = 0; i < 100; i++)
        spin(f, 10);
    char buf[32];
    assert_string_equal(status_of(f, "one", buf, sizeof(buf)), "running");
    assert_string_equal(status_of(f, "two", buf, sizeof(buf)), "running");
    char *b1 = container_of(f, "one"), *b2 = container_of(f, "two");
    assert_string_equal(id1, b1);
    assert_string_equal(id2, b2);
    free(b1);
    free(b2);

    /* the same deployment again: reconciling resumes, nothing recreated */
    apply(f, SLEEPER("one", 1, "running", "") "," SLEEPER("two", 2, "running", ""));
    assert_int_equal(f->result, 0);
    s = agent_status_json(f->agent);
    assert_null(json_object_get(s, "holding"));
    json_decref(s);
    wait_status(f, "two", "running");
    b1 = container_of(f, "one");
    b2 = container_of(f, "two");
    assert_string_equal(id1, b1);
    assert_string_equal(id2, b2);
    free(b1);
    free(b2);
    free(id1);
    free(id2);
}

/* The module records destroyed, the deployment intact: ledged comes up from the stored
 * deployment as after any restart, recreating nothing. */
static void test_state_damaged_deployment_recovered(void **state)
{
    struct fix *f = *state;
    apply(f, SLEEPER("one", 1, "running", "") "," SLEEPER("two", 2, "running", ""));
    wait_status(f, "two", "running");
    char *id1 = container_of(f, "one");
    stop_agent(f);
    char path[128];
    snprintf(path, sizeof(path), "%s/ledged.db", f->dir);
    assert_true(damage_table(path, "modules", -2) > 0);

    start_agent(f);
    json_t *sdb = state_report(f);
    assert_true(json_is_true(json_object_get(sdb, "damaged")));
    assert_true(json_is_true(json_object_get(sdb, "deploymentRecovered")));
    json_decref(sdb);
    json_t *s = agent_status_json(f->agent);
    assert_null(json_object_get(s, "holding"));
    assert_int_equal(ljson_int(s, "deployedModules", 0), 2);
    json_decref(s);
    wait_status(f, "one", "running");
    wait_status(f, "two", "running");
    char *b1 = container_of(f, "one");
    assert_string_equal(id1, b1);
    free(b1);
    free(id1);
}

/* state_load_deployment after a salvage: the newest row lost, an older one back, is -ESTALE (an
 * older deployment would recreate modules with outdated settings); the oldest lost, the newest
 * back with the id recorded beside it, is the deployment. */
static void test_state_newest_deployment_lost(void **state)
{
    struct fix *f = *state;
    char dir[128], path[160];
    snprintf(dir, sizeof(dir), "%s/state-only", f->dir); /* beside the running agent's */
    snprintf(path, sizeof(path), "%s/ledged.db", dir);
    for (int lost = 0; lost < 2; lost++) {
        unlink(path);
        struct state_db *db = NULL;
        struct lerr err = {0};
        assert_int_equal(state_open(dir, &db, &err), 0);
        assert_false(state_open_report(db)->damaged);
        char text[3000];
        for (int i = 1; i <= 4; i++) { /* one leaf page each */
            memset(text, 'a' + i, sizeof(text) - 1);
            text[sizeof(text) - 1] = 0;
            assert_int_equal(state_save_deployment(db, text, i), 0);
        }
        state_close(db);
        assert_int_equal(damage_table(path, "deployments", lost ? -1 : 0), 1);
        assert_int_equal(state_open(dir, &db, &err), 0);
        const struct ldb_report *rep = state_open_report(db);
        assert_true(rep->damaged);
        assert_true(ldb_report_table(rep, "deployments")->incomplete);
        assert_int_equal(ldb_report_table(rep, "deployments")->rows, 3);
        char *got = NULL;
        int64_t at = 0;
        if (lost) {
            assert_int_equal(state_load_deployment(db, &got, &at), -ESTALE);
        } else {
            assert_int_equal(state_load_deployment(db, &got, &at), 0);
            assert_int_equal(at, 4);
            assert_int_equal(got[0], 'a' + 4);
            free(got);
        }
        state_close(db);
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "rm -f %s/ledged.db.damaged-*", dir);
        assert_int_equal(system(cmd), 0);
    }
}

static void collect(void *ud, const char *id, const char *record)
{
    char *all = ud;
    strcat(all, id);
    strcat(all, "=");
    strcat(all, record);
    strcat(all, ";");
}

/* Records by id (leaf devices, device CAs): put replaces, remove says when there was none, the
 * tables are separate, and they survive a reopen. */
static void test_state_records(void **state)
{
    struct fix *f = *state;
    char dir[128];
    snprintf(dir, sizeof(dir), "%s/state-records", f->dir);
    struct state_db *db = NULL;
    struct lerr err = {0};
    assert_int_equal(state_open(dir, &db, &err), 0);
    assert_int_equal(state_put(db, STATE_LEAF_DEVICES, "b", "{\"v\":1}"), 0);
    assert_int_equal(state_put(db, STATE_LEAF_DEVICES, "a", "{\"v\":2}"), 0);
    assert_int_equal(state_put(db, STATE_LEAF_DEVICES, "b", "{\"v\":3}"), 0);
    assert_int_equal(state_put(db, STATE_DEVICE_CAS, "a", "PEM"), 0);
    state_close(db);
    assert_int_equal(state_open(dir, &db, &err), 0);
    char all[256] = "";
    assert_int_equal(state_load_all(db, STATE_LEAF_DEVICES, collect, all), 0);
    assert_string_equal(all, "a={\"v\":2};b={\"v\":3};");
    assert_int_equal(state_remove(db, STATE_LEAF_DEVICES, "a"), 0);
    assert_int_equal(state_remove(db, STATE_LEAF_DEVICES, "a"), -ENOENT);
    all[0] = 0;
    assert_int_equal(state_load_all(db, STATE_DEVICE_CAS, collect, all), 0);
    assert_string_equal(all, "a=PEM;");
    state_close(db);
}

/* ------------------------------------------------------------------ atomic deployments */

static const struct plan_change_entry *change_of(const struct plan_changes *c, const char *name)
{
    const struct plan_change_entry *e = plan_changes_find(c, name);
    if (!e)
        fail_msg("no change entry for %s", name);
    return e;
}

/* What a deployment changes against the one before it, and which modules it watches. */
static void test_plan_changes(void **state)
{
    char *t1 = manifest(
        "\"same\":{\"type\":\"docker\",\"status\":\"running\",\"settings\":{\"image\":\"a\"}},"
        "\"env\":{\"type\":\"docker\",\"status\":\"running\",\"settings\":{\"image\":\"b\"}},"
        "\"up\":{\"type\":\"docker\",\"status\":\"stopped\",\"settings\":{\"image\":\"c\"}},"
        "\"down\":{\"type\":\"docker\",\"status\":\"running\",\"settings\":{\"image\":\"d\"}},"
        "\"gone\":{\"type\":\"docker\",\"status\":\"running\",\"settings\":{\"image\":\"e\"}},"
        "\"stays\":{\"type\":\"docker\",\"status\":\"stopped\",\"settings\":{\"image\":\"f\"}}");
    char *t2 = manifest(
        "\"same\":{\"type\":\"docker\",\"status\":\"running\",\"settings\":{\"image\":\"a\"}},"
        "\"env\":{\"type\":\"docker\",\"status\":\"running\",\"settings\":{\"image\":\"b\"},"
        "\"env\":{\"X\":{\"value\":\"1\"}}},"
        "\"up\":{\"type\":\"docker\",\"status\":\"running\",\"settings\":{\"image\":\"c\"}},"
        "\"down\":{\"type\":\"docker\",\"status\":\"stopped\",\"settings\":{\"image\":\"d\"}},"
        "\"new\":{\"type\":\"docker\",\"status\":\"running\",\"settings\":{\"image\":\"g\"}},"
        "\"newstopped\":{\"type\":\"docker\",\"status\":\"stopped\",\"settings\":{\"image\":\"h\"}}"
        ","
        "\"stays\":{\"type\":\"docker\",\"status\":\"stopped\",\"settings\":{\"image\":\"f2\"}}");
    struct deployment *d1 = parse(t1), *d2 = parse(t2);
    struct plan_changes c;
    assert_int_equal(plan_changes_compute(d1, d2, &c), 0);
    assert_int_equal(c.n, 8);
    assert_int_equal(change_of(&c, "same")->change, PLAN_CHANGE_NONE);
    assert_false(change_of(&c, "same")->watch);
    assert_int_equal(change_of(&c, "env")->change, PLAN_CHANGE_CHANGED);
    assert_true(change_of(&c, "env")->watch);
    assert_int_equal(change_of(&c, "up")->change, PLAN_CHANGE_STARTED);
    assert_true(change_of(&c, "up")->watch);
    assert_int_equal(change_of(&c, "down")->change, PLAN_CHANGE_STOPPED);
    assert_false(change_of(&c, "down")->watch);
    assert_int_equal(change_of(&c, "new")->change, PLAN_CHANGE_ADDED);
    assert_true(change_of(&c, "new")->watch);
    assert_int_equal(change_of(&c, "newstopped")->change, PLAN_CHANGE_ADDED);
    assert_false(change_of(&c, "newstopped")->watch); /* desired stopped: nothing to run */
    assert_int_equal(change_of(&c, "stays")->change, PLAN_CHANGE_CHANGED);
    assert_false(change_of(&c, "stays")->watch);
    assert_int_equal(change_of(&c, "gone")->change, PLAN_CHANGE_REMOVED);
    assert_false(change_of(&c, "gone")->watch);
    assert_string_equal(plan_change_name(PLAN_CHANGE_STARTED), "started");
    plan_changes_free(&c);
    /* nothing before: everything is new */
    assert_int_equal(plan_changes_compute(NULL, d1, &c), 0);
    assert_int_equal(c.n, 6);
    for (size_t i = 0; i < c.n; i++)
        assert_int_equal(c.v[i].change, PLAN_CHANGE_ADDED);
    assert_true(change_of(&c, "same")->watch);
    assert_false(change_of(&c, "up")->watch);
    plan_changes_free(&c);
    deployment_free(d1);
    deployment_free(d2);
    free(t1);
    free(t2);
}

static bool count_history(void *ud, const struct state_history_entry *e)
{
    json_t *arr = ud;
    json_array_append_new(arr,
                          json_pack("{s:I, s:s, s:s, s:s?, s:I, s:b, s:b}", "id", (json_int_t)e->id,
                                    "kind", e->kind, "outcome", e->outcome, "reason", e->reason,
                                    "previous", (json_int_t)e->previous_id, "finished",
                                    e->finished_ms != 0, "rollback", e->rollback));
    return true;
}

/* The stored transaction: begun with its deployment in force, a rollback puts the previous one
 * back in force, the end records the outcome; all of it survives a reopen; old manifests are
 * trimmed but the ones in force, previous and being rolled back to are kept. */
static void test_state_tx(void **state)
{
    struct fix *f = *state;
    char dir[128];
    snprintf(dir, sizeof(dir), "%s/state-tx", f->dir);
    struct state_db *db = NULL;
    struct lerr err = {0};
    assert_int_equal(state_open(dir, &db, &err), 0);
    struct state_tx st = {.kind = "deploy", .rollback = true, .timeout_ms = 5000};
    int64_t id1 = 0, id2 = 0;
    assert_int_equal(state_begin_deployment(db, "{\"d\":1}", &st, 100, &id1), 0);
    st.id = id1;
    assert_int_equal(state_finish_deployment(db, &st, STATE_OUTCOME_APPLIED, NULL, NULL, 200), 0);
    assert_int_equal(state_meta_id(db, "previous_deployment_id"), 0);
    struct state_tx got;
    assert_int_equal(state_load_tx(db, &got), -ENOENT);

    st = (struct state_tx){.kind = "deploy",
                           .previous_id = id1,
                           .rollback = true,
                           .timeout_ms = 7000,
                           .user_stopped = "[\"x\"]"};
    assert_int_equal(state_begin_deployment(db, "{\"d\":2}", &st, 300, &id2), 0);
    st.id = id2;
    state_close(db);
    /* ledged stops here: the transaction and the new deployment in force come back */
    assert_int_equal(state_open(dir, &db, &err), 0);
    assert_int_equal(state_load_tx(db, &got), 0);
    assert_int_equal(got.id, id2);
    assert_int_equal(got.previous_id, id1);
    assert_true(got.rollback);
    assert_false(got.rolling_back);
    assert_int_equal(got.timeout_ms, 7000);
    assert_string_equal(got.user_stopped, "[\"x\"]");
    state_tx_clear(&got);
    char *text = NULL;
    assert_int_equal(state_load_deployment(db, &text, NULL), 0);
    assert_string_equal(text, "{\"d\":2}");
    free(text);

    /* it fails: the previous one is in force again, the transaction says rolling back */
    assert_int_equal(state_rollback_deployment(db, &st, "module b: exited",
                                               "[{\"module\":\"b\",\"reason\":\"exited\"}]"),
                     0);
    state_close(db);
    assert_int_equal(state_open(dir, &db, &err), 0);
    assert_int_equal(state_load_tx(db, &got), 0);
    assert_true(got.rolling_back);
    state_tx_clear(&got);
    assert_int_equal(state_load_deployment(db, &text, NULL), 0);
    assert_string_equal(text, "{\"d\":1}");
    free(text);
    assert_int_equal(state_finish_deployment(db, &st, STATE_OUTCOME_ROLLED_BACK, "module b: exited",
                                             "[{\"module\":\"b\",\"reason\":\"exited\"}]", 400),
                     0);
    assert_int_equal(state_load_tx(db, &got), -ENOENT);
    /* rolled back: the previous deployment is still the one before id1 (none) */
    assert_int_equal(state_meta_id(db, "previous_deployment_id"), 0);
    assert_int_equal(state_meta_id(db, "deployment_id"), id1);

    json_t *h = json_array();
    assert_int_equal(state_history(db, count_history, h), 0);
    assert_int_equal(json_array_size(h), 2);
    json_t *e = json_array_get(h, 0); /* newest first */
    assert_int_equal(ljson_int(e, "id", 0), id2);
    assert_string_equal(ljson_str(e, "outcome"), "rolled-back");
    assert_string_equal(ljson_str(e, "reason"), "module b: exited");
    assert_int_equal(ljson_int(e, "previous", -1), id1);
    assert_true(ljson_bool(e, "finished", false));
    assert_string_equal(ljson_str(json_array_get(h, 1), "outcome"), "applied");
    json_decref(h);

    /* many more: manifests are trimmed, but id1 (in force until the last one applied, then
     * the previous one) is kept; the history keeps STATE_HISTORY_MAX */
    int64_t last = 0;
    for (int i = 0; i < STATE_HISTORY_MAX + 5; i++) {
        int64_t in_force = state_meta_id(db, "deployment_id");
        st = (struct state_tx){.kind = "deploy", .previous_id = in_force, .rollback = true};
        char body[32];
        snprintf(body, sizeof(body), "{\"n\":%d}", i);
        assert_int_equal(state_begin_deployment(db, body, &st, 500 + i, &last), 0);
        st.id = last;
        /* each fails and is rolled back: id1 stays in force all along */
        assert_int_equal(state_rollback_deployment(db, &st, "r", NULL), 0);
        assert_int_equal(state_finish_deployment(db, &st, STATE_OUTCOME_ROLLED_BACK, "r", NULL, 1),
                         0);
    }
    assert_int_equal(state_deployment_text(db, id1, &text), 0);
    assert_string_equal(text, "{\"d\":1}");
    free(text);
    assert_int_equal(state_deployment_text(db, id2, &text), -ENOENT);
    assert_int_equal(state_load_deployment(db, &text, NULL), 0);
    assert_string_equal(text, "{\"d\":1}");
    free(text);
    h = json_array();
    assert_int_equal(state_history(db, count_history, h), 0);
    assert_int_equal(json_array_size(h), STATE_HISTORY_MAX);
    json_decref(h);
    /* an applied one makes id1 the previous deployment */
    st = (struct state_tx){.kind = "deploy", .previous_id = id1, .rollback = true};
    assert_int_equal(state_begin_deployment(db, "{\"d\":3}", &st, 900, &last), 0);
    st.id = last;
    assert_int_equal(state_finish_deployment(db, &st, STATE_OUTCOME_APPLIED, NULL, NULL, 901), 0);
    assert_int_equal(state_meta_id(db, "previous_deployment_id"), id1);
    state_close(db);
}

static const char *report_outcome(struct fix *f)
{
    return ljson_str(json_object_get(f->report, "deployment"), "outcome");
}

static bool history_has(struct fix *f, const char *outcome, const char *reason_part)
{
    json_t *h = agent_deployments_json(f->agent);
    bool found = false;
    size_t i;
    json_t *e;
    json_array_foreach (json_object_get(h, "deployments"), i, e) {
        if (lstr_eq(ljson_str(e, "outcome"), outcome) &&
            (!reason_part ||
             (ljson_str(e, "reason") && strstr(ljson_str(e, "reason"), reason_part))))
            found = true;
    }
    json_decref(h);
    return found;
}

#define CRASHER(name, extra)                                                                       \
    "\"" name "\":{\"type\":\"process\",\"status\":\"running\",\"restartPolicy\":\"always\","      \
    "\"settings\":{\"path\":\"/bin/sh\",\"args\":[\"-c\",\"sleep 0.2; exit 3 # "                   \
    "ledge-agent-test-marker @RUN@ " extra "\"]}}"

/* A new deployment whose changed module exits at once: the previous deployment is restored —
 * the untouched module keeps its process, the replaced one runs its previous config again (a
 * new process), the added one is gone — and the result says rolled back, naming the module. */
static void test_rollback_on_exit(void **state)
{
    struct fix *f = *state;
    stop_agent(f);
    f->rollback = true;
    f->settle_ms = 600;
    start_agent(f);
    apply(f, SLEEPER("one", 1, "running", "") "," SLEEPER("two", 2, "running", ""));
    assert_int_equal(f->result, 0);
    assert_string_equal(report_outcome(f), "applied");
    char *id1 = container_of(f, "one"), *id2 = container_of(f, "two");
    const char *before = agent_deployment_text(f->agent);
    char *text_before = strdup(before);

    apply(f, SLEEPER("one", 1, "running", "") "," CRASHER("two", "v2") "," SLEEPER("three", 3,
                                                                                   "running", ""));
    assert_int_equal(f->result, -ECANCELED);
    assert_string_equal(report_outcome(f), "rolled-back");
    json_t *dj = json_object_get(f->report, "deployment");
    assert_non_null(strstr(ljson_str(dj, "reason"), "module two: exited with code 3"));
    assert_string_equal(ljson_str(json_array_get(json_object_get(dj, "modules"), 0), "module"),
                        "two");
    assert_non_null(json_object_get(f->report, "rollback"));
    /* the previous deployment, exactly */
    assert_string_equal(agent_deployment_text(f->agent), text_before);
    wait_status(f, "two", "running");
    char *b1 = container_of(f, "one"), *b2 = container_of(f, "two");
    assert_string_equal(b1, id1);
    assert_string_not_equal(b2, id2); /* recreated from the previous config */
    json_t *m = module(f, "two");
    assert_int_equal(ljson_int(m, "restartCount", -1), 0);
    json_decref(m);
    assert_null(agent_module_json(f->agent, "three"));
    assert_true(history_has(f, "rolled-back", "module two"));
    json_t *h = agent_deployments_json(f->agent);
    assert_int_equal(ljson_int(h, "current", 0),
                     ljson_int(json_array_get(json_object_get(h, "deployments"), 1), "id", -1));
    assert_true(json_is_null(json_object_get(h, "inProgress")));
    json_decref(h);
    free(b1);
    free(b2);

    /* the same with --no-rollback: left as it is, and the steps alone decide (applied) */
    f->rollback = false;
    apply(f, SLEEPER("one", 1, "running", "") "," CRASHER("two", "v2"));
    assert_int_equal(f->result, 0);
    assert_string_equal(report_outcome(f), "applied");
    assert_string_not_equal(agent_deployment_text(f->agent), text_before);
    free(id1);
    free(id2);
    free(text_before);
}

/* A changed module that does not become ready before the deadline (here: it cannot have run
 * deploy_settle before deploy_timeout) rolls back with that reason; the first deployment ever
 * rolled back removes what it created. */
static void test_rollback_on_deadline_and_first(void **state)
{
    struct fix *f = *state;
    stop_agent(f);
    f->rollback = true;
    f->settle_ms = 5000; /* longer than the fixture's 3 s deadline */
    start_agent(f);
    apply(f, SLEEPER("slow", 1, "running", ""));
    assert_int_equal(f->result, -ECANCELED);
    json_t *dj = json_object_get(f->report, "deployment");
    assert_non_null(strstr(ljson_str(dj, "reason"), "did not reach running within 3s"));
    assert_true(json_is_null(json_object_get(dj, "previous")));
    assert_null(agent_deployment_text(f->agent));
    for (int i = 0; i < 50 && agent_module_json(f->agent, "slow"); i++)
        spin(f, 10);
    json_t *m = agent_module_json(f->agent, "slow");
    assert_null(m);
}

/* `ledge deploy --rollback`: the previous deployment again, as a deployment of its own. */
static void test_explicit_rollback(void **state)
{
    struct fix *f = *state;
    stop_agent(f);
    f->rollback = true;
    f->settle_ms = 100;
    start_agent(f);
    struct lerr err = {0};
    const struct agent_apply_options o = {.wait = true};
    assert_int_equal(agent_rollback(f->agent, 0, &o, &apply_cbs, f, &err), -ENOENT);
    apply(f, SLEEPER("one", 1, "running", "a"));
    char *first = strdup(agent_deployment_text(f->agent));
    assert_int_equal(agent_rollback(f->agent, 0, &o, &apply_cbs, f, &err), -ENOENT);
    apply(f, SLEEPER("one", 1, "running", "b"));
    f->done = 0;
    assert_int_equal(agent_rollback(f->agent, 0, &o, &apply_cbs, f, &err), 0);
    for (int i = 0; i < 500 && !f->done; i++)
        spin(f, 10);
    assert_int_equal(f->result, 0);
    assert_string_equal(agent_deployment_text(f->agent), first);
    json_t *h = agent_deployments_json(f->agent);
    json_t *newest = json_array_get(json_object_get(h, "deployments"), 0);
    assert_string_equal(ljson_str(newest, "kind"), "rollback");
    assert_string_equal(ljson_str(newest, "outcome"), "applied");
    json_decref(h);
    free(first);
}

/* `ledge deploy --rollback N`: any deployment of the history again, not only the previous one;
 * an id the history does not have is refused with a message naming it. */
static void test_rollback_to_id(void **state)
{
    struct fix *f = *state;
    stop_agent(f);
    f->rollback = true;
    f->settle_ms = 100;
    start_agent(f);
    struct lerr err = {0};
    const struct agent_apply_options o = {.wait = true};
    apply(f, SLEEPER("one", 1, "running", "a"));
    char *first = strdup(agent_deployment_text(f->agent));
    json_t *h = agent_deployments_json(f->agent);
    json_int_t first_id = ljson_int(h, "current", 0);
    json_decref(h);
    apply(f, SLEEPER("one", 1, "running", "b"));
    apply(f, SLEEPER("one", 1, "running", "c"));

    char *text = NULL;
    assert_int_equal(agent_deployment_text_of(f->agent, first_id, &text), 0);
    assert_string_equal(text, first);
    free(text);
    assert_int_equal(agent_deployment_text_of(f->agent, 999, &text), -ENOENT);
    assert_int_equal(agent_rollback(f->agent, 999, &o, &apply_cbs, f, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "no deployment 999 in the history"));
    assert_int_equal(agent_rollback(f->agent, -1, &o, &apply_cbs, f, &err), -EINVAL);

    f->done = 0;
    assert_int_equal(agent_rollback(f->agent, first_id, &o, &apply_cbs, f, &err), 0);
    for (int i = 0; i < 500 && !f->done; i++)
        spin(f, 10);
    assert_int_equal(f->result, 0);
    assert_string_equal(agent_deployment_text(f->agent), first);
    h = agent_deployments_json(f->agent);
    json_t *list = json_object_get(h, "deployments");
    assert_int_equal(json_array_size(list), 4);
    json_t *newest = json_array_get(list, 0);
    assert_string_equal(ljson_str(newest, "kind"), "rollback");
    assert_string_equal(ljson_str(newest, "outcome"), "applied");
    for (size_t i = 0; i < json_array_size(list); i++)
        assert_true(json_is_true(json_object_get(json_array_get(list, i), "canApply")));
    json_decref(h);
    free(first);
}

/* ledged stops mid-deployment (while its modules are watched): the next start finishes it —
 * committed when the modules run, rolled back when one fails. */
static void test_recovery_mid_deployment(void **state)
{
    struct fix *f = *state;
    stop_agent(f);
    f->rollback = true;
    f->settle_ms = 1500;
    start_agent(f);
    apply(f, SLEEPER("one", 1, "running", ""));
    char *id1 = container_of(f, "one");
    char *text_before = strdup(agent_deployment_text(f->agent));

    /* a good one, interrupted */
    apply_start(f, SLEEPER("one", 1, "running", "") "," SLEEPER("two", 2, "running", ""));
    for (int i = 0; i < 50; i++)
        spin(f, 10);
    assert_int_equal(f->done, 0);
    json_t *s = agent_status_json(f->agent);
    assert_string_equal(ljson_str(json_object_get(s, "deploying"), "phase"), "watching");
    json_decref(s);
    stop_agent(f); /* the waiter is gone with it */
    start_agent(f);
    for (int i = 0; i < 300 && !history_has(f, "applied", NULL); i++)
        spin(f, 10);
    for (int i = 0; i < 300; i++) {
        json_t *h = agent_deployments_json(f->agent);
        bool done = json_is_null(json_object_get(h, "inProgress"));
        json_decref(h);
        if (done)
            break;
        spin(f, 10);
    }
    json_t *h = agent_deployments_json(f->agent);
    assert_true(json_is_null(json_object_get(h, "inProgress")));
    assert_string_equal(ljson_str(json_array_get(json_object_get(h, "deployments"), 0), "outcome"),
                        "applied");
    json_decref(h);
    wait_status(f, "two", "running");
    char *b1 = container_of(f, "one");
    assert_string_equal(b1, id1);
    free(b1);

    /* a bad one, interrupted before its module fails: rolled back after the restart */
    free(text_before);
    text_before = strdup(agent_deployment_text(f->agent));
    char *id2 = container_of(f, "two");
    apply_start(
        f,
        SLEEPER("one", 1, "running",
                "") ","
                    "\"two\":{\"type\":\"process\",\"status\":\"running\",\"restartPolicy\":"
                    "\"always\",\"settings\":{\"path\":\"/bin/sh\",\"args\":[\"-c\",\"sleep 0.8; "
                    "exit 4 # ledge-agent-test-marker @RUN@ late\"]}}");
    for (int i = 0; i < 40; i++)
        spin(f, 10);
    assert_int_equal(f->done, 0);
    stop_agent(f);
    start_agent(f);
    for (int i = 0; i < 500; i++) {
        h = agent_deployments_json(f->agent);
        bool done = json_is_null(json_object_get(h, "inProgress"));
        json_decref(h);
        if (done)
            break;
        spin(f, 10);
    }
    h = agent_deployments_json(f->agent);
    json_t *newest = json_array_get(json_object_get(h, "deployments"), 0);
    assert_string_equal(ljson_str(newest, "outcome"), "rolled-back");
    assert_non_null(strstr(ljson_str(newest, "reason"), "module two: exited"));
    json_decref(h);
    assert_string_equal(agent_deployment_text(f->agent), text_before);
    wait_status(f, "two", "running");
    char *b2 = container_of(f, "two");
    assert_string_not_equal(b2, id2);
    b1 = container_of(f, "one");
    assert_string_equal(b1, id1);
    free(b1);
    free(b2);
    free(id2);
    free(id1);
    free(text_before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_math),
        cmocka_unit_test(test_planner),
        cmocka_unit_test(test_plan_changes),
        cmocka_unit_test_setup_teardown(test_state_tx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback_on_exit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback_on_deadline_and_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_explicit_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback_to_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recovery_mid_deployment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconcile_processes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_backoff_then_failed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_newer_than_listing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unrelated_failure_keeps_deployment_ok, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_boot_starts_and_user_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_boot_kept_until_engine_listed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_manifest_changes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_image_needs_parent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_garbage_keeps_modules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_damaged_deployment_recovered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_newest_deployment_lost, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
