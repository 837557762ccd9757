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
    if ((cfg->upstream_parent && cfg->upstream_parent[0] &&
         !(e->upstream_parent = strdup(cfg->upstream_parent))) ||
        (cfg->upstream_ca_file && cfg->upstream_ca_file[0] &&
         !(e->upstream_ca_file = strdup(cfg->upstream_ca_file))) ||
        (ops->priv_size && !(e->priv = calloc(1, ops->priv_size)))) {
        free(e->upstream_parent);
        free(e->upstream_ca_file);
        free(e);
        return -ENOMEM;
    }
    int r = ops->init(e, cfg);
    if (r < 0) {
        free(e->priv);
        free(e->upstream_parent);
        free(e->upstream_ca_file);
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
    free(e->upstream_parent);
    free(e->upstream_ca_file);
    free(e);
}

bool engine_names_upstream(const char *image)
{
    size_t n = strlen(ENGINE_UPSTREAM_REGISTRY);
    return image && strncmp(image, ENGINE_UPSTREAM_REGISTRY, n) == 0 &&
           (image[n] == ':' || image[n] == '/' || image[n] == '\0');
}

int engine_upstream_resolve(const char *parent, const char *image, char *dst, size_t size,
                            struct lerr *err)
{
    if (!engine_names_upstream(image)) {
        if ((size_t)snprintf(dst, size, "%s", image) >= size)
            return lerr_set(err, -ENAMETOOLONG, "image reference too long");
        return 0;
    }
    /* "$upstream:" PORT, then "/" and the rest or nothing (a registry address) */
    const char *port = image + strlen(ENGINE_UPSTREAM_REGISTRY);
    size_t digits = *port == ':' ? strspn(port + 1, "0123456789") : 0;
    const char *rest = port + 1 + digits;
    long v = digits && digits <= 5 ? strtol(port + 1, NULL, 10) : 0;
    if (v < 1 || v > 65535 || port[1] == '0' || (*rest != '/' && *rest != '\0'))
        return lerr_set(err, -EINVAL,
                        "%.160s: $upstream needs a port, as in $upstream:443/repo:tag", image);
    if (!parent || !parent[0])
        return lerr_set(err, -EINVAL,
                        "%.160s names the parent device's registry ($upstream) and upstream.parent "
                        "is not set in this device's config",
                        image);
    bool v6 = strchr(parent, ':') != NULL && parent[0] != '[';
    int n = snprintf(dst, size, "%s%s%s:%ld%s", v6 ? "[" : "", parent, v6 ? "]" : "", v, rest);
    if (n < 0 || (size_t)n >= size)
        return lerr_set(err, -ENAMETOOLONG, "%.160s: too long once $upstream is %.80s", image,
                        parent);
    return 1;
}

int engine_image_resolve(const struct engine *e, const char *image, char *dst, size_t size,
                         struct lerr *err)
{
    return engine_upstream_resolve(e->upstream_parent, image, dst, size, err);
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
