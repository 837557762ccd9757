/* later.c — answers given on the next turn of the loop, for backends that know them at once
 * (later.h). */
#include <errno.h>
#include <stdlib.h>

#include <event2/event.h>

#include "base/str.h"
#include "later.h"

#define LATER_ID_MAX 256

struct later {
    struct engine *e;
    const struct engine_records *records;
    engine_done_fn done;
    engine_create_fn created;
    engine_inspect_fn inspected;
    engine_list_fn listed;
    void *ud;
    int result;
    struct lerr err;
    char id[LATER_ID_MAX];
};

static void answer_records(struct later *l)
{
    const struct engine_records *r = l->records;
    struct lerr err;
    if (l->listed) {
        size_t max = r->count(l->e);
        struct engine_container *v = calloc(max ? max : 1, sizeof(*v));
        if (!v) {
            lerr_set(&err, -ENOMEM, "list: out of memory");
            l->listed(l->ud, -ENOMEM, NULL, 0, &err);
            return;
        }
        size_t n = r->fill_all(l->e, v, max);
        l->listed(l->ud, 0, v, n, NULL);
        engine_containers_free(v, n);
        return;
    }
    struct engine_container c;
    if (!r->fill_one(l->e, l->id, &c)) {
        lerr_set(&err, -ENOENT, "inspect %s: no such %s", l->id, r->noun);
        l->inspected(l->ud, -ENOENT, NULL, &err);
        return;
    }
    l->inspected(l->ud, 0, &c, NULL);
    engine_container_clear(&c);
}

static void later_cb(evutil_socket_t fd, short what, void *arg)
{
    struct later *l = arg;
    const struct lerr *err = l->result < 0 ? &l->err : NULL;
    if (l->done)
        l->done(l->ud, l->result, err);
    else if (l->created)
        l->created(l->ud, l->result, l->result == 0 ? l->id : NULL, err);
    else
        answer_records(l);
    free(l);
}

static int schedule(struct engine *e, struct later *proto)
{
    struct later *l = malloc(sizeof(*l));
    if (!l)
        return -ENOMEM;
    *l = *proto;
    struct timeval tv = {0, 0};
    if (event_base_once(e->base, -1, EV_TIMEOUT, later_cb, l, &tv) < 0) {
        free(l);
        return -ENOMEM;
    }
    return 0;
}

int engine_later_done(struct engine *e, engine_done_fn cb, void *ud, int result,
                      const struct lerr *err)
{
    struct later l = {.e = e, .done = cb, .ud = ud, .result = result};
    if (err && result < 0)
        l.err = *err;
    return schedule(e, &l);
}

int engine_later_created(struct engine *e, engine_create_fn cb, void *ud, int result,
                         const char *id, const struct lerr *err)
{
    struct later l = {.e = e, .created = cb, .ud = ud, .result = result};
    if (id)
        lstr_copy(l.id, sizeof(l.id), id);
    if (err && result < 0)
        l.err = *err;
    return schedule(e, &l);
}

int engine_later_inspect(struct engine *e, const struct engine_records *r, const char *id,
                         engine_inspect_fn cb, void *ud)
{
    struct later l = {.e = e, .records = r, .inspected = cb, .ud = ud};
    lstr_copy(l.id, sizeof(l.id), id ? id : "");
    return schedule(e, &l);
}

int engine_later_list(struct engine *e, const struct engine_records *r, engine_list_fn cb, void *ud)
{
    struct later l = {.e = e, .records = r, .listed = cb, .ud = ud};
    return schedule(e, &l);
}
