/* plan.c — desired vs. actual → steps (see plan.h). */
#include "plan.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/macro.h"

const char *plan_action_name(enum plan_action a)
{
    switch (a) {
    case PLAN_KEEP:
        return "keep";
    case PLAN_CREATE:
        return "create";
    case PLAN_RECREATE:
        return "recreate";
    case PLAN_START:
        return "start";
    case PLAN_STOP:
        return "stop";
    case PLAN_REMOVE:
        return "remove";
    }
    return "?";
}

static bool is_running(enum ctr_state s)
{
    return s == CTR_RUNNING || s == CTR_RESTARTING;
}

static int push(struct plan *p, size_t *cap, const struct plan_step *s)
{
    if (p->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        struct plan_step *v = realloc(p->steps, ncap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        p->steps = v;
        *cap = ncap;
    }
    p->steps[p->n++] = *s;
    return 0;
}

static int step_rank(const struct plan_step *s)
{
    /* stops and removals first, then everything else by startup order */
    return (s->action == PLAN_STOP || s->action == PLAN_REMOVE) ? 0 : 1;
}

static int step_cmp(const void *a, const void *b)
{
    const struct plan_step *x = a, *y = b;
    int rx = step_rank(x), ry = step_rank(y);
    if (rx != ry)
        return rx - ry;
    if (rx == 1 && x->order != y->order)
        return x->order < y->order ? -1 : 1;
    return strcmp(x->module, y->module);
}

static bool engine_up(const struct plan_engines *pe, int i)
{
    return i >= 0 && (size_t)i < pe->n && pe->available[i];
}

int plan_compute(const struct deployment *d, const struct plan_actual *actual, size_t n_actual,
                 const struct plan_engines *pe, struct plan *ret)
{
    struct plan p = {0};
    size_t cap = 0;
    bool *claimed = calloc(n_actual ? n_actual : 1, sizeof(bool));
    if (!claimed)
        return -ENOMEM;
    int r = 0;
    for (size_t i = 0; i < d->n_modules && r == 0; i++) {
        const struct module_spec *m = &d->modules[i];
        const struct plan_actual *a = NULL;
        int eng = pe->for_type[m->type];
        if (!engine_up(pe, eng)) {
            /* left alone, and so is what it runs as now (moving engines waits for the new one) */
            for (size_t k = 0; k < n_actual; k++)
                if (!claimed[k] && strcmp(actual[k].name, m->name) == 0) {
                    claimed[k] = true;
                    break;
                }
            continue;
        }
        for (size_t k = 0; k < n_actual; k++)
            if (!claimed[k] && strcmp(actual[k].name, m->name) == 0) {
                a = &actual[k];
                claimed[k] = true;
                break;
            }
        struct plan_step s = {.module = m->name, .spec = m, .order = m->startup_order};
        if (!a) {
            s.action = PLAN_CREATE;
            snprintf(s.reason, sizeof(s.reason), "new module");
        } else {
            s.container_id = a->id;
            s.old_engine = a->engine;
            bool running = is_running(a->state);
            if (a->engine != eng) {
                s.action = PLAN_RECREATE;
                snprintf(s.reason, sizeof(s.reason), "moves from the %s engine to the %s engine",
                         engine_up(pe, a->engine) ? pe->names[a->engine] : "?", pe->names[eng]);
            } else if (!a->config_hash || strcmp(a->config_hash, m->config_hash) != 0) {
                s.action = PLAN_RECREATE;
                snprintf(s.reason, sizeof(s.reason), "desired config changed");
            } else if (m->status == MODULE_STATUS_STOPPED && running) {
                s.action = PLAN_STOP;
                snprintf(s.reason, sizeof(s.reason), "desired status is stopped");
            } else if (m->status == MODULE_STATUS_RUNNING && a->user_stopped && running) {
                s.action = PLAN_STOP;
                snprintf(s.reason, sizeof(s.reason), "stopped by request");
            } else if (m->status == MODULE_STATUS_RUNNING && !running && !a->user_stopped &&
                       a->may_start) {
                s.action = PLAN_START;
                snprintf(s.reason, sizeof(s.reason), "desired status is running");
            } else {
                s.action = PLAN_KEEP;
                snprintf(s.reason, sizeof(s.reason), "unchanged");
            }
        }
        r = push(&p, &cap, &s);
    }
    /* Anything ledge owns that the deployment no longer names goes. */
    for (size_t k = 0; k < n_actual && r == 0; k++) {
        if (claimed[k] || !engine_up(pe, actual[k].engine))
            continue;
        struct plan_step s = {.action = PLAN_REMOVE,
                              .module = actual[k].name,
                              .container_id = actual[k].id,
                              .old_engine = actual[k].engine};
        snprintf(s.reason, sizeof(s.reason), "not in the deployment");
        r = push(&p, &cap, &s);
    }
    free(claimed);
    if (r < 0) {
        plan_free(&p);
        return r;
    }
    if (p.n)
        qsort(p.steps, p.n, sizeof(*p.steps), step_cmp);
    *ret = p;
    return 0;
}

void plan_free(struct plan *p)
{
    free(p->steps);
    p->steps = NULL;
    p->n = 0;
}

size_t plan_count_changes(const struct plan *p)
{
    size_t n = 0;
    for (size_t i = 0; i < p->n; i++)
        n += p->steps[i].action != PLAN_KEEP;
    return n;
}

json_t *plan_to_json(const struct plan *p, bool include_keep)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < p->n; i++) {
        const struct plan_step *s = &p->steps[i];
        if (s->action == PLAN_KEEP && !include_keep)
            continue;
        json_t *o = json_pack("{s:s, s:s, s:s}", "module", s->module, "action",
                              plan_action_name(s->action), "reason", s->reason);
        if (o && s->spec)
            json_object_set_new(o, "startupOrder", json_integer(s->order));
        json_array_append_new(arr, o);
    }
    return arr;
}

/* ------------------------------------------------------------------ deployment changes */

const char *plan_change_name(enum plan_change c)
{
    static const char *const names[] = {"unchanged", "added",   "changed",
                                        "started",   "stopped", "removed"};
    return (size_t)c < ARRAY_SIZE(names) ? names[c] : "?";
}

int plan_changes_compute(const struct deployment *prev, const struct deployment *next,
                         struct plan_changes *ret)
{
    size_t cap = next->n_modules + (prev ? prev->n_modules : 0);
    struct plan_changes c = {.v = calloc(cap ? cap : 1, sizeof(*c.v))};
    if (!c.v)
        return -ENOMEM;
    for (size_t i = 0; i < next->n_modules; i++) {
        const struct module_spec *m = &next->modules[i];
        const struct module_spec *o = prev ? deployment_find(prev, m->name) : NULL;
        enum plan_change ch = !o                                       ? PLAN_CHANGE_ADDED
                              : o->type != m->type                     ? PLAN_CHANGE_CHANGED
                              : strcmp(o->config_hash, m->config_hash) ? PLAN_CHANGE_CHANGED
                              : o->status == m->status                 ? PLAN_CHANGE_NONE
                              : m->status == MODULE_STATUS_RUNNING     ? PLAN_CHANGE_STARTED
                                                                       : PLAN_CHANGE_STOPPED;
        c.v[c.n++] = (struct plan_change_entry){
            .module = m->name,
            .change = ch,
            .watch =
                m->status == MODULE_STATUS_RUNNING &&
                (ch == PLAN_CHANGE_ADDED || ch == PLAN_CHANGE_CHANGED || ch == PLAN_CHANGE_STARTED),
        };
    }
    for (size_t i = 0; prev && i < prev->n_modules; i++)
        if (!deployment_find(next, prev->modules[i].name))
            c.v[c.n++] = (struct plan_change_entry){.module = prev->modules[i].name,
                                                    .change = PLAN_CHANGE_REMOVED};
    *ret = c;
    return 0;
}

void plan_changes_free(struct plan_changes *c)
{
    free(c->v);
    c->v = NULL;
    c->n = 0;
}

const struct plan_change_entry *plan_changes_find(const struct plan_changes *c, const char *module)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->v[i].module, module) == 0)
            return &c->v[i];
    return NULL;
}
