/* twin.c — module twins, and leaf devices' twins (keyed "devices/<d>": hub_identity.address).
 * Desired properties come from the deployment (the module's `properties.desired` in modulesContent)
 * and from `ledge twin set`; reported properties from the module (twin.h). Each side has a
 * $version. Both persist in twins.db (database.c). Reported changes are routed as messages from
 * /twinChangeNotifications.
 *
 * Desired semantics: a deployment whose desired properties for a module differ from those it
 * applied last replaces the desired document (the deployment is the source of truth, as with
 * IoT Edge deployments); `ledge twin set` merges a patch on top until the next such change.
 * With the module's session to IoT Hub (cloud.c) the cloud's desired document wins
 * (twins_cloud_desired) and takes the cloud's $version. Every change is sent to a subscribed
 * module as a patch (removed keys as null). */
#include "twin.h"

#include <errno.h>
#include <event2/event.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"
#include "base/json.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "clients.h"
#include "database.h"
#include "metrics.h"
#include "router.h"

#define COMP "hub"
#define TWIN_MAX_BYTES (32 * 1024) /* IoT Hub's limit for each of desired and reported */
#define TWIN_MAX_DEPTH 10
#define TWIN_CLOUD_WAIT_MS 5000 /* a GET waits this long at most for the cloud's twin */
#define TWIN_MAX_WAITS 256      /* beyond, GETs are answered from the local twin at once */

struct twin_wait {
    struct hub *h;
    struct hub_client *c;
    char *address;
    char *rid;
    size_t rid_len;
    struct event *ev;
    int64_t started_us; /* the GET's arrival, for edgehub_gettwin_duration_seconds */
    struct twin_wait *next;
};

struct twin {
    json_t *desired;
    json_t *reported;
    long long desired_version;
    long long reported_version;
    char manifest_hash[65]; /* of the deployment's desired document last applied */
};

static void twin_clear(struct twin *t)
{
    json_decref(t->desired);
    json_decref(t->reported);
    memset(t, 0, sizeof(*t));
}

static int twin_load(struct hub *h, const char *module, struct twin *t)
{
    memset(t, 0, sizeof(*t));
    sqlite3 *db = database_handle(h);
    sqlite3_stmt *st = NULL;
    if (!db || sqlite3_prepare_v2(db,
                                  "SELECT desired, desired_version, reported, reported_version, "
                                  "manifest_hash FROM twins WHERE module = ?",
                                  -1, &st, NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_bind_text(st, 1, module, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        t->desired = json_loads((const char *)sqlite3_column_text(st, 0), 0, NULL);
        t->desired_version = sqlite3_column_int64(st, 1);
        t->reported = json_loads((const char *)sqlite3_column_text(st, 2), 0, NULL);
        t->reported_version = sqlite3_column_int64(st, 3);
        lstr_copy(t->manifest_hash, sizeof(t->manifest_hash),
                  (const char *)sqlite3_column_text(st, 4));
    }
    sqlite3_finalize(st);
    if (!t->desired)
        t->desired = json_object();
    if (!t->reported)
        t->reported = json_object();
    if (t->desired_version == 0)
        t->desired_version = 1;
    if (t->reported_version == 0)
        t->reported_version = 1;
    return r == SQLITE_ROW || r == SQLITE_DONE ? 0 : -EIO;
}

static int twin_save(struct hub *h, const char *module, const struct twin *t)
{
    _cleanup_free_ char *d = ljson_dump(t->desired), *rp = ljson_dump(t->reported);
    sqlite3 *db = database_handle(h);
    sqlite3_stmt *st = NULL;
    if (!d || !rp || !db ||
        sqlite3_prepare_v2(db,
                           "INSERT OR REPLACE INTO twins (module, desired, desired_version, "
                           "reported, reported_version, manifest_hash) VALUES (?,?,?,?,?,?)",
                           -1, &st, NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_bind_text(st, 1, module, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, d, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, t->desired_version);
    sqlite3_bind_text(st, 4, rp, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, t->reported_version);
    sqlite3_bind_text(st, 6, t->manifest_hash, -1, SQLITE_STATIC);
    int r = sqlite3_step(st) == SQLITE_DONE ? 0 : -EIO;
    sqlite3_finalize(st);
    return r;
}

/* JSON merge patch (RFC 7386): null deletes, objects merge, anything else replaces. */
static void merge_patch(json_t *target, const json_t *patch)
{
    const char *k;
    json_t *v;
    json_object_foreach ((json_t *)patch, k, v) {
        if (k[0] == '$')
            continue; /* $version and other metadata are the hub's */
        if (json_is_null(v)) {
            json_object_del(target, k);
        } else if (json_is_object(v)) {
            json_t *cur = json_object_get(target, k);
            if (!json_is_object(cur)) {
                cur = json_object();
                json_object_set_new(target, k, cur);
            }
            merge_patch(cur, v);
        } else {
            json_object_set(target, k, v);
        }
    }
}

/* The patch that turns old into new (removed keys become null). */
static json_t *diff(const json_t *old, const json_t *nw)
{
    json_t *p = json_object();
    const char *k;
    json_t *v;
    json_object_foreach ((json_t *)old, k, v) {
        if (!json_object_get(nw, k))
            json_object_set_new(p, k, json_null());
    }
    json_object_foreach ((json_t *)nw, k, v) {
        json_t *o = json_object_get(old, k);
        if (o && json_is_object(o) && json_is_object(v)) {
            json_t *d = diff(o, v);
            if (json_object_size(d))
                json_object_set_new(p, k, d);
            else
                json_decref(d);
        } else if (!o || !json_equal(o, v)) {
            json_object_set(p, k, v);
        }
    }
    return p;
}

static void notify_desired(struct hub *h, const char *module, json_t *patch, long long version)
{
    struct hub_client *c = clients_find(h, module);
    if (!c || c->ops->listens(c, HUB_STREAM_DESIRED, NULL) < 0)
        return;
    json_object_set_new(patch, "$version", json_integer(version));
    char *body = ljson_dump(patch);
    if (body)
        c->ops->desired(c, version, body);
    free(body);
}

static bool valid_document(const json_t *j, const char **why)
{
    if (!json_is_object(j)) {
        *why = "must be a JSON object";
        return false;
    }
    if (ljson_depth(j) > TWIN_MAX_DEPTH) {
        *why = "nested deeper than 10 levels";
        return false;
    }
    char *text = ljson_dump(j);
    size_t n = text ? strlen(text) : 0;
    free(text);
    if (n > TWIN_MAX_BYTES) {
        *why = "larger than 32 KiB";
        return false;
    }
    return true;
}

/* The deployment's desired documents: apply those that changed since last applied. */
static void twins_reload(struct hub *h)
{
    if (!database_handle(h))
        return;
    const char *module;
    json_t *desired;
    json_object_foreach (h->rt.twins, module, desired) {
        if (!json_is_object(desired))
            continue;
        _cleanup_free_ char *text = ljson_dump_sorted(desired);
        char hash[65];
        if (!text || lcrypto_sha256_hex(text, strlen(text), hash) < 0)
            continue;
        struct twin t;
        if (twin_load(h, module, &t) < 0)
            continue;
        if (strcmp(t.manifest_hash, hash) != 0) {
            json_t *nw = json_deep_copy(desired);
            json_object_del(nw, "$version");
            json_t *patch = diff(t.desired, nw);
            json_decref(t.desired);
            t.desired = nw;
            t.desired_version++;
            memcpy(t.manifest_hash, hash, sizeof(hash));
            if (twin_save(h, module, &t) == 0)
                notify_desired(h, module, patch, t.desired_version);
            json_decref(patch);
        }
        twin_clear(&t);
    }
}

static json_t *twin_document(const struct twin *t)
{
    json_t *d = json_deep_copy(t->desired), *r = json_deep_copy(t->reported);
    json_object_set_new(d, "$version", json_integer(t->desired_version));
    json_object_set_new(r, "$version", json_integer(t->reported_version));
    return json_pack("{s:o, s:o}", "desired", d, "reported", r);
}

/* A reported-property change as a message from /twinChangeNotifications. */
static void route_change(struct hub *h, const struct hub_identity *id, const json_t *patch,
                         long long version)
{
    json_t *body = json_pack("{s:I, s:{s:O}}", "version", (json_int_t)version, "properties",
                             "reported", patch);
    char *text = body ? ljson_dump(body) : NULL;
    json_decref(body);
    if (!text)
        return;
    char enq[LTIME_RFC3339_MAX];
    int64_t now = ltime_now_ms();
    struct hub_message m = {0};
    m.source = "/twinChangeNotifications";
    m.sys[IOTHUB_PROP_CONNECTION_DEVICE_ID] = id->device_id;
    m.sys[IOTHUB_PROP_CONNECTION_MODULE_ID] = id->module_id;
    m.sys[IOTHUB_PROP_CONTENT_TYPE] = "application/json";
    m.sys[IOTHUB_PROP_CONTENT_ENCODING] = "utf-8";
    m.sys[HUB_SYS_MESSAGE_TYPE] = "twinChangeNotification";
    m.sys[HUB_SYS_ENQUEUED_TIME] = ltime_format_rfc3339(now, enq);
    m.enqueued_ms = now;
    m.body = (const uint8_t *)text;
    m.body_len = strlen(text);
    router_inject(h, &m);
    free(text);
}

static void reply(struct hub_client *c, int status, const struct hub_twin_request *r,
                  long long version, const char *body)
{
    if (c->ops->listens(c, HUB_STREAM_TWIN_RESPONSES, NULL) < 0)
        return;
    c->ops->twin_response(c, r->rid, r->rid_len, status, version, body);
}

static void twin_wait_unlink(struct twin_wait *w)
{
    struct hub *h = w->h;
    for (struct twin_wait **pp = &h->twin_waits; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            h->n_twin_waits--;
            break;
        }
    if (w->ev)
        event_free(w->ev);
    free(w->address);
    free(w->rid);
    free(w);
}

/* The time from a twin request's arrival to its answer (IoT Edge's summaries). */
static void twin_duration(struct hub *h, struct hub_client *c, enum hub_metric m,
                          int64_t started_us)
{
    char id[300];
    hub_metrics_client_id(c->id->device_id, c->id->module_id, id, sizeof(id));
    hub_metrics_observe(h, m, (const char *[]){"edge_hub", id},
                        (double)(hub_metrics_now_us() - started_us) / 1e6);
}

static void answer_get(struct hub *h, struct hub_client *c, const struct hub_twin_request *r,
                       int64_t started_us)
{
    twin_duration(h, c, HM_GETTWIN_DURATION, started_us);
    struct twin tw;
    if (twin_load(h, c->id->address, &tw) < 0) {
        reply(c, 500, r, -1, "{\"message\":\"twin storage failed\"}");
        return;
    }
    json_t *doc = twin_document(&tw);
    char *text = ljson_dump(doc);
    json_decref(doc);
    reply(c, 200, r, -1, text);
    free(text);
    twin_clear(&tw);
}

static void twin_wait_answer(struct twin_wait *w)
{
    struct hub_twin_request r = {.op = HUB_TWIN_GET, .rid = w->rid, .rid_len = w->rid_len};
    answer_get(w->h, w->c, &r, w->started_us);
    twin_wait_unlink(w);
}

static void twin_wait_expired(evutil_socket_t fd, short what, void *ud)
{
    (void)fd;
    (void)what;
    twin_wait_answer(ud); /* the cloud is slow: the local twin, as when offline */
}

/* 1: the GET waits for the cloud's twin; 0: answer it now. */
static int twin_wait_add(struct hub *h, struct hub_client *c, const struct hub_twin_request *r,
                         int64_t started_us)
{
    if (!h->twin_syncing || !h->twin_syncing(h, c->id->address) ||
        h->n_twin_waits >= TWIN_MAX_WAITS)
        return 0;
    struct twin_wait *w = calloc(1, sizeof(*w));
    if (!w)
        return 0;
    *w = (struct twin_wait){.h = h, .c = c, .rid_len = r->rid_len, .started_us = started_us};
    w->address = strdup(c->id->address);
    w->rid = malloc(r->rid_len + 1);
    w->ev = evtimer_new(h->base, twin_wait_expired, w);
    struct timeval tv = {TWIN_CLOUD_WAIT_MS / 1000, (TWIN_CLOUD_WAIT_MS % 1000) * 1000};
    if (!w->address || !w->rid || !w->ev || evtimer_add(w->ev, &tv) < 0) {
        if (w->ev)
            event_free(w->ev);
        free(w->address);
        free(w->rid);
        free(w);
        return 0;
    }
    if (r->rid_len)
        memcpy(w->rid, r->rid, r->rid_len);
    w->rid[r->rid_len] = 0;
    w->next = h->twin_waits;
    h->twin_waits = w;
    h->n_twin_waits++;
    return 1;
}

void twins_cloud_synced(struct hub *h, const char *address)
{
    struct twin_wait *w = h->twin_waits;
    while (w) {
        struct twin_wait *next = w->next;
        if (strcmp(w->address, address) == 0)
            twin_wait_answer(w); /* unlinks w only */
        w = next;
    }
}

void twins_client_gone(struct hub *h, struct hub_client *c)
{
    struct twin_wait *w = h->twin_waits;
    while (w) {
        struct twin_wait *next = w->next;
        if (w->c == c)
            twin_wait_unlink(w);
        w = next;
    }
}

void twins_request(struct hub *h, struct hub_client *c, const struct hub_twin_request *r)
{
    int64_t started_us = hub_metrics_now_us();
    const char *module = c->id->address;
    struct twin tw;
    if (twin_load(h, module, &tw) < 0) {
        reply(c, 500, r, -1, "{\"message\":\"twin storage failed\"}");
        return;
    }
    char id[300];
    hub_metrics_client_id(c->id->device_id, c->id->module_id, id, sizeof(id));
    hub_metrics_add(h, r->op == HUB_TWIN_GET ? HM_GETTWIN : HM_REPORTED_PROPERTIES,
                    (const char *[]){"edge_hub", id}, 1);
    if (r->op == HUB_TWIN_GET) {
        twin_clear(&tw);
        if (!twin_wait_add(h, c, r, started_us))
            answer_get(h, c, r, started_us);
        return;
    }
    json_t *patch = NULL;
    const char *why = NULL;
    if (ljson_parse((const char *)r->body, r->body_len, &patch, NULL) < 0 ||
        !valid_document(patch, &why)) {
        reply(c, 400, r, -1, "{\"message\":\"reported properties must be a JSON object\"}");
    } else {
        merge_patch(tw.reported, patch);
        if (!valid_document(tw.reported, &why)) {
            reply(c, 400, r, -1, "{\"message\":\"reported properties too large\"}");
        } else {
            tw.reported_version++;
            if (twin_save(h, module, &tw) < 0) {
                reply(c, 500, r, -1, "{\"message\":\"twin storage failed\"}");
            } else {
                reply(c, 204, r, tw.reported_version, NULL);
                route_change(h, c->id, patch, tw.reported_version);
                if (h->reported_changed)
                    h->reported_changed(h, module);
            }
        }
    }
    twin_duration(h, c, HM_REPORTED_DURATION, started_us);
    json_decref(patch);
    twin_clear(&tw);
}

json_t *twins_get(struct hub *h, const char *module)
{
    struct twin t;
    if (twin_load(h, module, &t) < 0)
        return NULL;
    json_t *doc = twin_document(&t);
    twin_clear(&t);
    return doc;
}

int twins_patch_desired(struct hub *h, const char *module, const json_t *patch, json_t **ret,
                        struct lerr *err)
{
    const char *why = NULL;
    if (!valid_document(patch, &why))
        return lerr_set(err, -EINVAL, "desired properties: %s", why);
    struct twin t;
    if (twin_load(h, module, &t) < 0)
        return lerr_set(err, -EIO, "twin storage failed");
    merge_patch(t.desired, patch);
    if (!valid_document(t.desired, &why)) {
        twin_clear(&t);
        return lerr_set(err, -EINVAL, "desired properties after the patch: %s", why);
    }
    t.desired_version++;
    if (twin_save(h, module, &t) < 0) {
        twin_clear(&t);
        return lerr_set(err, -EIO, "twin storage failed");
    }
    json_t *copy = json_deep_copy(patch);
    notify_desired(h, module, copy, t.desired_version);
    json_decref(copy);
    *ret = twin_document(&t);
    twin_clear(&t);
    return 0;
}

bool twins_known(struct hub *h, const char *address)
{
    sqlite3 *db = database_handle(h);
    sqlite3_stmt *st = NULL;
    if (!db ||
        sqlite3_prepare_v2(db, "SELECT 1 FROM twins WHERE module = ?", -1, &st, NULL) != SQLITE_OK)
        return false;
    sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
    bool found = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return found;
}

int twins_child_count(struct hub *h, const char *device_id)
{
    _cleanup_free_ char *prefix =
        lstr_printf(HUB_DEVICE_ADDRESS_PREFIX "%s" HUB_CHILD_MODULES_INFIX, device_id);
    sqlite3 *db = database_handle(h);
    sqlite3_stmt *st = NULL;
    if (!prefix || !db ||
        sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM twins WHERE substr(module, 1, ?) = ?", -1, &st,
                           NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_bind_int(st, 1, (int)strlen(prefix));
    sqlite3_bind_text(st, 2, prefix, -1, SQLITE_STATIC);
    int n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : -EIO;
    sqlite3_finalize(st);
    return n;
}

void twins_forget(struct hub *h, const char *address)
{
    /* a leaf device's module identities (a child edge device's) go with it */
    _cleanup_free_ char *prefix = lstr_printf("%s" HUB_CHILD_MODULES_INFIX, address);
    sqlite3 *db = database_handle(h);
    sqlite3_stmt *st = NULL;
    if (!db || !prefix ||
        sqlite3_prepare_v2(db, "DELETE FROM twins WHERE module = ? OR substr(module, 1, ?) = ?", -1,
                           &st, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, (int)strlen(prefix));
    sqlite3_bind_text(st, 3, prefix, -1, SQLITE_STATIC);
    sqlite3_step(st);
    sqlite3_finalize(st);
}

int twins_cloud_desired(struct hub *h, const char *module, const json_t *desired, int64_t version,
                        bool complete)
{
    struct twin t;
    if (twin_load(h, module, &t) < 0)
        return -EIO;
    json_t *nw = json_deep_copy(t.desired);
    if (complete) {
        json_decref(nw);
        nw = json_deep_copy(desired);
        json_object_del(nw, "$version");
    } else {
        merge_patch(nw, desired);
    }
    const char *why = NULL;
    if (!nw || !valid_document(nw, &why)) {
        json_decref(nw);
        twin_clear(&t);
        return -EINVAL;
    }
    json_t *patch = diff(t.desired, nw);
    bool changed = json_object_size(patch) > 0 || (version > 0 && version != t.desired_version);
    int r = 0;
    if (changed) {
        json_decref(t.desired);
        t.desired = nw;
        nw = NULL;
        t.desired_version = version > 0 ? version : t.desired_version + 1;
        r = twin_save(h, module, &t);
        if (r == 0 && json_object_size(patch) > 0)
            notify_desired(h, module, patch, t.desired_version);
    }
    json_decref(nw);
    json_decref(patch);
    twin_clear(&t);
    return r;
}

/* The database is open (server.c opens it first): apply the deployment's desired documents. */
static int twins_start(struct hub *h, struct lerr *err)
{
    twins_reload(h);
    return 0;
}

static void twins_stop(struct hub *h)
{
    while (h->twin_waits)
        twin_wait_unlink(h->twin_waits);
}

const struct hub_sink_ops twins_sink_ops = {
    .name = "twins",
    .start = twins_start,
    .stop = twins_stop,
    .reload = twins_reload,
};
