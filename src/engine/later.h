/* later.h — a backend's answer on the next turn of the event loop: an engine call never calls its
 * callback from inside the call (engine.h). The process and oci backends know most answers at once
 * (from their own records) and give them through these; private to src/engine. */
#pragma once

#include <stddef.h>

#include "engine/engine.h"

/* cb(ud, result, err) on the next loop turn; err (copied) only when result < 0. 0 or -ENOMEM. */
int engine_later_done(struct engine *e, engine_done_fn cb, void *ud, int result,
                      const struct lerr *err);
/* cb(ud, result, id, err): id when result is 0, err when result < 0. */
int engine_later_created(struct engine *e, engine_create_fn cb, void *ud, int result,
                         const char *id, const struct lerr *err);

/* How a backend answers inspect and list from its own records. */
struct engine_records {
    size_t (*count)(struct engine *e); /* an upper bound of what fill_all writes */
    /* Writes at most max containers into v (what a listing shows), returns how many. */
    size_t (*fill_all)(struct engine *e, struct engine_container *v, size_t max);
    /* The container of that id or name into ret; false when there is none. */
    bool (*fill_one)(struct engine *e, const char *id, struct engine_container *ret);
    const char *noun; /* "container", "module": "inspect ID: no such container" */
};

/* inspect: cb with the container, or -ENOENT "inspect ID: no such <noun>"; from the records as they
 * are on the next loop turn. */
int engine_later_inspect(struct engine *e, const struct engine_records *r, const char *id,
                         engine_inspect_fn cb, void *ud);
int engine_later_list(struct engine *e, const struct engine_records *r, engine_list_fn cb,
                      void *ud);
