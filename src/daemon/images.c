/* images.c — the management API's /images calls (`ledge image list|load|rm|prune`), answered by
 * the container engine's image ops when it has them (the oci engine; docker keeps its own
 * images: `docker image ...`). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/str.h"
#include "ledged.h"
#include "log/log.h"

#define COMP "mgmt"

struct image_call {
    struct hs_request *req; /* NULL once the client went away */
    char what[32];
};

static void image_call_abort(struct hs_request *r, void *ud)
{
    struct image_call *c = ud;
    c->req = NULL; /* the engine's answer still comes, and frees c */
}

static int status_for(int err)
{
    switch (err) {
    case -ENOENT:
        return 404;
    case -EINVAL:
        return 400;
    case -EBUSY:
        return 409;
    case -EACCES:
    case -EPERM:
        return 403;
    default:
        return 500;
    }
}

static void image_done(void *ud, int result, const json_t *doc, const struct lerr *err)
{
    struct image_call *c = ud;
    if (result < 0)
        log_warn(COMP, "image %s: %s", c->what, lerr_str(err));
    else if (strcmp(c->what, "list") != 0)
        log_info(COMP, "image %s: done", c->what);
    if (c->req) {
        hs_request_on_abort(c->req, NULL, NULL);
        if (result < 0)
            hs_reply_error(c->req, status_for(result), "%s", lerr_str(err));
        else
            hs_reply_json(c->req, 200, doc ? json_deep_copy(doc) : json_object());
    }
    free(c);
}

static struct engine *image_engine(struct hs_request *r, struct ledged *d)
{
    struct engine *e = agent_engine_for(d->agent, MODULE_TYPE_DOCKER);
    if (!e || !e->ops->image_list) {
        hs_reply_error(r, 501,
                       "the %s engine keeps its own images: use its tools (docker image ls, "
                       "docker load)",
                       e ? e->ops->name : "container");
        return NULL;
    }
    return e;
}

static struct image_call *call_new(struct hs_request *r, const char *what)
{
    struct image_call *c = calloc(1, sizeof(*c));
    if (!c) {
        hs_reply_error(r, 500, "out of memory");
        return NULL;
    }
    c->req = r;
    lstr_copy(c->what, sizeof(c->what), what);
    hs_request_on_abort(r, image_call_abort, c);
    return c;
}

static void call_failed(struct hs_request *r, struct image_call *c, int res)
{
    hs_request_on_abort(r, NULL, NULL);
    hs_reply_error(r, 500, "image %s: %s", c->what, strerror(-res));
    free(c);
}

void mgmt_images(struct hs_request *r, void *ud)
{
    struct engine *e = image_engine(r, ud);
    struct image_call *c = e ? call_new(r, "list") : NULL;
    int res;
    if (c && (res = e->ops->image_list(e, image_done, c)) < 0)
        call_failed(r, c, res);
}

/* POST /images/load {"path": "/abs/archive.tar", "name": "optional/name:tag"}: ledged reads the
 * archive from this host's file system (it runs as root; the caller is root or in the ledge
 * group). */
void mgmt_image_load(struct hs_request *r, void *ud)
{
    struct engine *e = image_engine(r, ud);
    if (!e)
        return;
    _cleanup_json_ json_t *body = NULL;
    if (hs_request_body_json(r, false, &body) < 0)
        return;
    const char *path = ljson_str(body, "path"), *name = ljson_str(body, "name");
    if (!path || path[0] != '/') {
        hs_reply_error(r, 400, "path: an absolute path to a docker save or OCI layout archive");
        return;
    }
    struct image_call *c = call_new(r, "load");
    int res;
    if (c && (res = e->ops->image_load(e, path, name, image_done, c)) < 0)
        call_failed(r, c, res);
}

/* POST /images/remove {"name": "..."} (names have slashes: not a path segment) */
void mgmt_image_remove(struct hs_request *r, void *ud)
{
    struct engine *e = image_engine(r, ud);
    if (!e)
        return;
    _cleanup_json_ json_t *body = NULL;
    if (hs_request_body_json(r, false, &body) < 0)
        return;
    const char *name = ljson_str(body, "name");
    if (!name || !*name) {
        hs_reply_error(r, 400, "name: the image to remove");
        return;
    }
    struct image_call *c = call_new(r, "rm");
    int res;
    if (c && (res = e->ops->image_remove(e, name, image_done, c)) < 0)
        call_failed(r, c, res);
}

void mgmt_image_prune(struct hs_request *r, void *ud)
{
    struct engine *e = image_engine(r, ud);
    struct image_call *c = e ? call_new(r, "prune") : NULL;
    int res;
    if (c && (res = e->ops->image_prune(e, image_done, c)) < 0)
        call_failed(r, c, res);
}
