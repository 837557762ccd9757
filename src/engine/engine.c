/* engine.c — what all backends share: the registry of backends by name, allocation through the
 * ops table, container records. */
#include "engine/engine.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/macro.h"

/* Every backend of this build; a new engine is one more line. */
static const struct engine_ops *const registered[] = {
    &engine_docker_ops,
    &engine_process_ops,
    &engine_oci_ops,
};

const struct engine_ops *engine_ops_find(const char *name)
{
    for (size_t i = 0; name && i < ARRAY_SIZE(registered); i++)
        if (strcmp(registered[i]->name, name) == 0)
            return registered[i];
    return NULL;
}

size_t engine_ops_count(void)
{
    return ARRAY_SIZE(registered);
}

const struct engine_ops *engine_ops_at(size_t i)
{
    return i < ARRAY_SIZE(registered) ? registered[i] : NULL;
}

int engine_new(const struct engine_ops *ops, struct event_base *base,
               const struct engine_config *cfg, struct engine **ret)
{
    struct engine *e = calloc(1, sizeof(*e));
    if (!e)
        return -ENOMEM;
    e->ops = ops;
    e->base = base;
    e->on_event = cfg->on_event;
    e->event_ud = cfg->event_ud;
    if (ops->priv_size && !(e->priv = calloc(1, ops->priv_size))) {
        free(e);
        return -ENOMEM;
    }
    int r = ops->init(e, cfg);
    if (r < 0) {
        free(e->priv);
        free(e);
        return r;
    }
    *ret = e;
    return 0;
}

void engine_set_event_handler(struct engine *e, engine_event_fn fn, void *ud)
{
    e->on_event = fn;
    e->event_ud = fn ? ud : NULL;
}

int engine_wait(struct engine *e, const bool *done)
{
    while (!*done) {
        /* 1: no events are pending, so nothing can complete the call any more */
        if (event_base_loop(e->base, EVLOOP_ONCE) != 0)
            return -EIO;
    }
    return 0;
}

void engine_free(struct engine *e)
{
    if (!e)
        return;
    e->ops->stop(e);
    e->ops->fini(e);
    free(e->priv);
    free(e);
}

void engine_container_clear(struct engine_container *c)
{
    free(c->id);
    free(c->name);
    free(c->image);
    free(c->error);
    json_decref(c->labels);
    memset(c, 0, sizeof(*c));
}

void engine_containers_free(struct engine_container *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        engine_container_clear(&v[i]);
    free(v);
}

const char *engine_label(const struct engine_container *c, const char *key)
{
    return json_string_value(json_object_get(c->labels, key));
}

const char *ctr_state_name(enum ctr_state s)
{
    static const char *const names[] = {"unknown",    "created", "running", "paused",
                                        "restarting", "exited",  "dead",    "removing"};
    return (size_t)s < sizeof(names) / sizeof(names[0]) ? names[s] : "unknown";
}

const char *ctr_health_name(enum ctr_health h)
{
    static const char *const names[] = {"none", "starting", "healthy", "unhealthy"};
    return (size_t)h < sizeof(names) / sizeof(names[0]) ? names[h] : "none";
}

int engine_api_compare(const char *a, const char *b)
{
    unsigned amaj = 0, amin = 0, bmaj = 0, bmin = 0;
    sscanf(a ? a : "0.0", "%u.%u", &amaj, &amin);
    sscanf(b ? b : "0.0", "%u.%u", &bmaj, &bmin);
    if (amaj != bmaj)
        return amaj < bmaj ? -1 : 1;
    if (amin != bmin)
        return amin < bmin ? -1 : 1;
    return 0;
}
