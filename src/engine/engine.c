/* engine.c — what all backends share: allocation through the ops table, container records. */
#include "engine/engine.h"

#include <stdlib.h>
#include <string.h>

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
