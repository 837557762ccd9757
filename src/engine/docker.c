/* docker.c — the `docker` engine backend: the Docker Engine API (>= 1.41) over its unix socket (or
 * TCP) with the asynchronous libcurl client. Moby is the reference; Docker CE and Podman's
 * compatible socket speak the same API. Container exits are learned from the engine's event
 * stream, which reconnects with back-off when the engine goes away. */
#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/crypto.h"
#include "base/json.h"
#include "base/list.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "docker_json.h"
#include "engine/engine.h"
#include "image/creds.h"
#include "net/http_client.h"

#define DOCKER_MIN_API ENGINE_DOCKER_MIN_API
#define DOCKER_MAX_API "1.43"

struct docker {
    struct engine *e;
    struct hc_client *http;
    char *uri;
    char *socket_path; /* NULL for TCP */
    char *origin;      /* "http://localhost" or "http://host:port" */
    char api[16];      /* negotiated, "" until /version answered */
    char *instance;    /* device label value, or NULL */
    long timeout_ms, pull_timeout_ms;
    struct hc_transfer *events;
    struct event *reconnect;
    int backoff_ms;
    bool connected;
    bool running; /* between start and stop */
    struct lbuf evline;
    struct netctx *net_pending;   /* network checks in flight, shared by concurrent callers */
    char *net_name, *net_gateway; /* the module network's gateway address, once known */
    struct dcall *calls;          /* every call in flight, freed by fini if still there */
    /* Podman (from /version and /info): health checks run by the backend where Podman has no
     * systemd to run them (see "Podman's health checks" below) */
    bool podman, podman_systemd;
    struct llist checks; /* struct pcheck */
};

/* One API call in flight: the generic completion decodes JSON and maps errors, then the
 * operation-specific finisher reports to the caller. */
struct dcall {
    struct docker *d;
    void (*finish)(struct dcall *c, int result, long status, json_t *body, const struct lerr *err);
    union {
        engine_done_fn done;
        engine_create_fn create;
        engine_inspect_fn inspect;
        engine_list_fn list;
        engine_version_fn version;
    } cb;
    void *ud;
    engine_progress_fn progress;
    struct docker_pull_progress *pull; /* pulls with a progress callback */
    int result;                        /* the transfer's own result, before error mapping */
    struct lbuf stream;                /* pull progress: partial line */
    long status;         /* streaming calls: the answer's status, known before its body */
    struct lbuf errbody; /* streaming calls: the body of an error answer */
    struct lerr stream_err;
    bool stream_failed;
    char *what; /* for messages: "create tempSensor" */
    engine_platform_fn plat_cb;
    engine_platforms_fn plats_cb;
    struct engine_version version; /* a version call, between /version and /info */
    int version_r;
    struct lerr version_err;
    char *check_id;            /* Podman's health checks: the container */
    struct dcall *prev, *next; /* d->calls */
};

static struct docker *D(struct engine *e)
{
    return e->priv;
}

/* An API path naming an image reference: prefix, the reference URL-encoded, "/json". */
static char *image_path(const char *prefix, const char *image)
{
    _cleanup_lbuf_ struct lbuf enc = LBUF_INIT;
    if (lstr_url_encode(image, strlen(image), &enc) < 0 || !enc.data)
        return NULL;
    return lstr_printf("%s%s/json", prefix, enc.data);
}

/* Free a string that held a secret (a registry credential), wiping it first. */
static void header_wipe_free(char *s)
{
    if (s) {
        lcrypto_wipe(s, strlen(s));
        free(s);
    }
}

static void dcall_free(struct dcall *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else if (c->d && c->d->calls == c)
        c->d->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    lbuf_free(&c->stream);
    lbuf_free(&c->errbody);
    free(c->pull);
    free(c->what);
    free(c->check_id);
    free(c);
}

static struct dcall *dcall_new(struct docker *d, const char *what)
{
    struct dcall *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->d = d;
    c->what = strdup(what ? what : "");
    c->next = d->calls;
    if (d->calls)
        d->calls->prev = c;
    d->calls = c;
    return c;
}

/* Map an HTTP answer to the error convention with the engine's own message. */
static int docker_error(struct docker *d, const char *what, int result, long status, json_t *body,
                        struct lerr *err)
{
    if (result < 0 || status == 0) {
        int code = result < 0 ? result : -EIO;
        /* No socket at the path: "unreachable", never "no such container" (-ENOENT). */
        return lerr_set(err, code == -ENOENT ? -EHOSTDOWN : code,
                        "%s: container engine unreachable at %s (%s)", what, d->uri,
                        strerror(-code));
    }
    const char *msg = json_string_value(json_object_get(body, "message"));
    int code;
    switch (status) {
    case 400:
        code = -EINVAL;
        break;
    case 401:
    case 403:
        code = -EACCES;
        break;
    case 404:
        code = -ENOENT;
        break;
    case 409:
        code = -EEXIST;
        break;
    case 500:
        code = -EIO;
        break;
    default:
        code = -EPROTO;
        break;
    }
    return lerr_set(err, code, "%s: engine answered %ld: %s", what, status,
                    msg ? msg : "no message");
}

static void dcall_done(void *ud, int result, long status, struct lbuf *body)
{
    struct dcall *c = ud;
    struct lerr err = {0};
    json_t *j = NULL;
    struct lbuf *text = body->len ? body : &c->errbody;
    c->result = result;
    if (result == 0 && text->len > 0) {
        json_error_t je;
        j = json_loadb(text->data, text->len, JSON_DECODE_ANY, &je);
    }
    int r = 0;
    if (c->stream_failed) {
        err = c->stream_err;
        r = err.code;
    } else if (result < 0 || status >= 400 || status == 0) {
        r = docker_error(c->d, c->what, result, status, j, &err);
    }
    c->finish(c, r, status, j, r < 0 ? &err : NULL);
    json_decref(j);
    dcall_free(c);
}

static void dcall_status(void *ud, long status)
{
    struct dcall *c = ud;
    c->status = status;
}

static int dcall_start(struct dcall *c, const char *method, const char *path, json_t *body,
                       long timeout_ms, const char *const *headers, hc_data_fn on_data)
{
    struct docker *d = c->d;
    char url[2048];
    if (d->api[0] && path[0] == '/')
        snprintf(url, sizeof(url), "%s/v%s%s", d->origin, d->api, path);
    else
        snprintf(url, sizeof(url), "%s%s", d->origin, path);
    _cleanup_free_ char *text = body ? ljson_dump(body) : NULL;
    struct hc_request req = {
        .method = method,
        .unix_socket = d->socket_path,
        .url = url,
        .body = text,
        .body_len = text ? strlen(text) : 0,
        .headers = headers,
        .timeout_ms = timeout_ms,
        .on_data = on_data,
        .on_status = on_data ? dcall_status : NULL,
        .on_done = dcall_done,
        .ud = c,
    };
    if (!hc_request(d->http, &req)) {
        dcall_free(c);
        return -ENOMEM;
    }
    return 0;
}

/* The filters document for what this instance owns: {"label": [owner, device], "type": [...]}. */
static char *label_filter(struct docker *d, const char *type)
{
    json_t *labels = json_pack("[s]", ENGINE_LABEL_OWNER "=" ENGINE_LABEL_OWNER_VALUE);
    if (labels && d->instance) {
        char *l = lstr_printf("%s=%s", ENGINE_LABEL_DEVICE, d->instance);
        json_array_append_new(labels, json_string(l ? l : ""));
        free(l);
    }
    json_t *f = json_pack("{s:o}", "label", labels);
    if (f && type)
        json_object_set_new(f, "type", json_pack("[s]", type));
    char *text = f ? ljson_dump(f) : NULL;
    json_decref(f);
    return text;
}

/* ------------------------------------------------------------------ version / network / image */

/* /info completes a version call: the defaults containers get and where the engine keeps its
 * data. A failure here leaves them unknown; the version stands. */
static void finish_info(struct dcall *c, int r, long status, json_t *body, const struct lerr *err)
{
    if (r == 0) {
        lstr_copy(c->version.default_log_driver, sizeof(c->version.default_log_driver),
                  ljson_str(body, "LoggingDriver") ?: "");
        lstr_copy(c->version.data_root, sizeof(c->version.data_root),
                  ljson_str(body, "DockerRootDir") ?: "");
        c->d->podman_systemd = lstr_eq(ljson_str(body, "CgroupDriver"), "systemd");
    }
    c->cb.version(c->ud, c->version_r, &c->version, c->version_r < 0 ? &c->version_err : NULL);
}

static void finish_version(struct dcall *c, int r, long status, json_t *body,
                           const struct lerr *err)
{
    if (r < 0) {
        c->cb.version(c->ud, r, NULL, err);
        return;
    }
    struct engine_version *v = &c->version;
    if ((r = docker_parse_version(body, v)) < 0) {
        struct lerr e2;
        lerr_set(&e2, r, "engine version: %s answered, but not as a Docker Engine API", c->d->uri);
        c->cb.version(c->ud, r, NULL, &e2);
        return;
    }
    if (engine_api_compare(v->api_version, DOCKER_MIN_API) < 0) {
        c->version_r = lerr_set(&c->version_err, -EPROTONOSUPPORT,
                                "engine API %s is older than the %s ledge needs", v->api_version,
                                DOCKER_MIN_API);
    } else {
        /* Speak the engine's version, capped at the newest we are written against. */
        lstr_copy(c->d->api, sizeof(c->d->api),
                  engine_api_compare(v->api_version, DOCKER_MAX_API) > 0 ? DOCKER_MAX_API
                                                                         : v->api_version);
    }
    struct dcall *info = dcall_new(c->d, "engine info");
    if (!info) {
        c->cb.version(c->ud, c->version_r, v, c->version_r < 0 ? &c->version_err : NULL);
        return;
    }
    info->finish = finish_info;
    info->cb.version = c->cb.version;
    info->ud = c->ud;
    info->version = *v;
    info->version_r = c->version_r;
    info->version_err = c->version_err;
    if (dcall_start(info, "GET", "/info", NULL, c->d->timeout_ms, NULL, NULL) < 0)
        c->cb.version(c->ud, c->version_r, v, c->version_r < 0 ? &c->version_err : NULL);
}

/* The engine's version, then its /info (default log driver, data root); API versions older
 * than DOCKER_MIN_API are -EPROTONOSUPPORT with the version filled in. */
static int docker_version(struct engine *e, engine_version_fn cb, void *ud)
{
    struct dcall *c = dcall_new(D(e), "engine version");
    if (!c)
        return -ENOMEM;
    c->finish = finish_version;
    c->cb.version = cb;
    c->ud = ud;
    return dcall_start(c, "GET", "/version", NULL, D(e)->timeout_ms, NULL, NULL);
}

static void finish_done(struct dcall *c, int r, long status, json_t *body, const struct lerr *err)
{
    c->cb.done(c->ud, r, err);
}

/* 304 "not modified" (already started / already stopped) and 404 on remove are successes. */
static void finish_done_tolerant(struct dcall *c, int r, long status, json_t *body,
                                 const struct lerr *err)
{
    if (status == 304 || (status == 404 && strncmp(c->what, "remove", 6) == 0))
        r = 0, err = NULL;
    c->cb.done(c->ud, r, err);
}

/* Concurrent creates each make sure the network exists; they share one check (docker allows two
 * networks of one name, and a race would make the name ambiguous). */
struct netwaiter {
    engine_done_fn cb;
    void *ud;
    struct netwaiter *next;
};

struct netctx {
    struct docker *d;
    bool created;
    char *name;
    engine_done_fn cb;
    void *ud;
    struct netwaiter *waiters;
    struct netctx *next;
};

static void net_complete(struct netctx *n, int r, const struct lerr *err)
{
    struct docker *d = n->d;
    for (struct netctx **pp = &d->net_pending; *pp; pp = &(*pp)->next)
        if (*pp == n) {
            *pp = n->next;
            break;
        }
    n->cb(n->ud, r, err);
    while (n->waiters) {
        struct netwaiter *w = n->waiters;
        n->waiters = w->next;
        w->cb(w->ud, r, err);
        free(w);
    }
    free(n->name);
    free(n);
}

static int start_network_inspect(struct netctx *n);

static void finish_network_create(struct dcall *c, int r, long status, json_t *body,
                                  const struct lerr *err)
{
    struct netctx *n = c->ud;
    if (status == 409) /* created concurrently */
        r = 0, err = NULL;
    if (r < 0) {
        net_complete(n, r, err);
        return;
    }
    /* Inspect it again: that answer has the gateway address the modules reach the host by. */
    n->created = true;
    int rr = start_network_inspect(n);
    if (rr < 0) {
        struct lerr e2;
        lerr_set(&e2, rr, "inspect network: cannot start request");
        net_complete(n, rr, &e2);
    }
}

static void finish_network_inspect(struct dcall *c, int r, long status, json_t *body,
                                   const struct lerr *err)
{
    struct netctx *n = c->ud;
    if (r == 0) {
        const char *gw = ljson_str(
            json_array_get(json_object_get(json_object_get(body, "IPAM"), "Config"), 0), "Gateway");
        free(n->d->net_gateway);
        n->d->net_gateway = gw && *gw ? strdup(gw) : NULL;
        free(n->d->net_name);
        n->d->net_name = strdup(n->name);
    }
    if (r == 0 || status != 404 || n->created) {
        net_complete(n, r, err);
        return;
    }
    struct dcall *c2 = dcall_new(n->d, "create network");
    if (!c2) {
        struct lerr e2;
        lerr_set(&e2, -ENOMEM, "create network: out of memory");
        net_complete(n, -ENOMEM, &e2);
        return;
    }
    c2->finish = finish_network_create;
    c2->ud = n;
    json_t *req =
        json_pack("{s:s, s:s, s:b, s:{s:s}}", "Name", n->name, "Driver", "bridge", "CheckDuplicate",
                  1, "Labels", ENGINE_LABEL_OWNER, ENGINE_LABEL_OWNER_VALUE);
    int rr = dcall_start(c2, "POST", "/networks/create", req, n->d->timeout_ms, NULL, NULL);
    json_decref(req);
    if (rr < 0) {
        struct lerr e2;
        lerr_set(&e2, rr, "create network: cannot start request");
        net_complete(n, rr, &e2);
    }
}

static int start_network_inspect(struct netctx *n)
{
    struct dcall *c = dcall_new(n->d, "inspect network");
    if (!c)
        return -ENOMEM;
    c->finish = finish_network_inspect;
    c->ud = n;
    _cleanup_lbuf_ struct lbuf path = LBUF_INIT, enc = LBUF_INIT;
    lstr_url_encode(n->name, strlen(n->name), &enc);
    lbuf_printf(&path, "/networks/%s", enc.data);
    return dcall_start(c, "GET", path.data, NULL, n->d->timeout_ms, NULL, NULL);
}

/* The host's address on that network (its gateway), once ensure_network() learned it. */
static const char *network_gateway(struct docker *d, const char *name)
{
    return name && d->net_name && strcmp(d->net_name, name) == 0 ? d->net_gateway : NULL;
}

static int docker_ensure_network(struct engine *e, const char *name, engine_done_fn cb, void *ud)
{
    for (struct netctx *p = D(e)->net_pending; p; p = p->next)
        if (strcmp(p->name, name) == 0) {
            struct netwaiter *w = calloc(1, sizeof(*w));
            if (!w)
                return -ENOMEM;
            w->cb = cb;
            w->ud = ud;
            w->next = p->waiters;
            p->waiters = w;
            return 0;
        }
    struct netctx *n = calloc(1, sizeof(*n));
    if (!n)
        return -ENOMEM;
    n->d = D(e);
    n->name = strdup(name);
    n->cb = cb;
    n->ud = ud;
    if (!n->name) {
        free(n);
        return -ENOMEM;
    }
    int r = start_network_inspect(n);
    if (r == 0) {
        n->next = D(e)->net_pending;
        D(e)->net_pending = n;
    } else {
        free(n->name);
        free(n);
    }
    return r;
}

static int docker_image_present(struct engine *e, const char *image, engine_done_fn cb, void *ud)
{
    char resolved[ENGINE_IMAGE_MAX];
    int rr = engine_image_resolve(e, image, resolved, sizeof(resolved), NULL);
    if (rr < 0)
        return rr;
    image = resolved;
    _cleanup_free_ char *path = image_path("/images/", image);
    struct dcall *c = path ? dcall_new(D(e), "inspect image") : NULL;
    if (!c)
        return -ENOMEM;
    c->finish = finish_done;
    c->cb.done = cb;
    c->ud = ud;
    return dcall_start(c, "GET", path, NULL, D(e)->timeout_ms, NULL, NULL);
}

static void finish_platform(struct dcall *c, int r, long status, json_t *body,
                            const struct lerr *err)
{
    if (r < 0) {
        c->plat_cb(c->ud, r, NULL, NULL, NULL, err);
        return;
    }
    c->plat_cb(c->ud, 0, ljson_str(body, "Os"), ljson_str(body, "Architecture"),
               ljson_str(body, "Variant"), NULL);
}

static int docker_image_platform(struct engine *e, const char *image, engine_platform_fn cb,
                                 void *ud)
{
    char resolved[ENGINE_IMAGE_MAX];
    int rr = engine_image_resolve(e, image, resolved, sizeof(resolved), NULL);
    if (rr < 0)
        return rr;
    image = resolved;
    _cleanup_free_ char *path = image_path("/images/", image);
    struct dcall *c = path ? dcall_new(D(e), "inspect image") : NULL;
    if (!c)
        return -ENOMEM;
    c->finish = finish_platform;
    c->plat_cb = cb;
    c->ud = ud;
    return dcall_start(c, "GET", path, NULL, D(e)->timeout_ms, NULL, NULL);
}

/* ------------------------------------------------------------------ registries */

/* "X-Registry-Auth: " and the value image/creds.h builds (base64url of {"username", "password",
 * "serveraddress"}), or NULL without credentials. A secret: never logged, wiped when freed
 * (header_wipe_free). */
static char *registry_auth_header(const struct engine_registry_auth *auth)
{
    if (!auth || !auth->username)
        return NULL;
    struct img_cred cred = {.address = auth->server,
                            .username = auth->username,
                            .password = auth->password ? auth->password : ""};
    /* Room up front, so that no copy of the secret is left behind by a reallocation. */
    struct lbuf b = LBUF_INIT;
    if (lbuf_reserve(&b, 1024) < 0 || lbuf_puts(&b, "X-Registry-Auth: ") < 0 ||
        img_creds_registry_auth(&cred, auth->server ? auth->server : "", &b) < 0) {
        if (b.data)
            lcrypto_wipe(b.data, b.len);
        lbuf_free(&b);
        return NULL;
    }
    return lbuf_steal(&b);
}

static void finish_platforms(struct dcall *c, int r, long status, json_t *body,
                             const struct lerr *err)
{
    if (r < 0) {
        c->plats_cb(c->ud, r, NULL, 0, err);
        return;
    }
    const json_t *plats = json_object_get(body, "Platforms");
    size_t n = json_array_size(plats);
    struct engine_platform v[64];
    if (n == 0 || n > ARRAY_SIZE(v)) {
        struct lerr e2;
        lerr_set(&e2, -EPROTO, "%s: %s platforms in the registry's answer", c->what,
                 n ? "too many" : "no");
        c->plats_cb(c->ud, -EPROTO, NULL, 0, &e2);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *p = json_array_get(plats, i);
        v[i] = (struct engine_platform){ljson_str(p, "os"), ljson_str(p, "architecture"),
                                        ljson_str(p, "variant")};
    }
    c->plats_cb(c->ud, 0, v, n, NULL);
}

/* A pull's image and credentials with "$upstream" resolved to the parent (engine_image_resolve):
 * *image points at resolved, and credentials for "$upstream:PORT" go to the parent's registry
 * under its own name (*auth at a2, its server in server). Both buffers ENGINE_IMAGE_MAX. */
static int resolve_pull(struct engine *e, const char **image, char *resolved,
                        const struct engine_registry_auth **auth, char *server,
                        struct engine_registry_auth *a2)
{
    int rr = engine_image_resolve(e, *image, resolved, ENGINE_IMAGE_MAX, NULL);
    if (rr < 0)
        return rr;
    *image = resolved;
    const struct engine_registry_auth *a = *auth;
    if (a && a->server && engine_image_resolve(e, a->server, server, ENGINE_IMAGE_MAX, NULL) == 1) {
        *a2 = *a;
        a2->server = server;
        *auth = a2;
    }
    return 0;
}

/* GET /distribution/{name}/json: the engine asks the registry (with the credentials) which
 * platforms the reference offers, without pulling. */
static int docker_registry_platforms(struct engine *e, const char *image,
                                     const struct engine_registry_auth *auth,
                                     engine_platforms_fn cb, void *ud)
{
    char resolved[ENGINE_IMAGE_MAX], server[ENGINE_IMAGE_MAX];
    struct engine_registry_auth a2;
    int rr = resolve_pull(e, &image, resolved, &auth, server, &a2);
    if (rr < 0)
        return rr;
    _cleanup_free_ char *what = lstr_printf("registry platforms of %s", image),
                        *path = image_path("/distribution/", image);
    struct dcall *c = what && path ? dcall_new(D(e), what) : NULL;
    if (!c)
        return -ENOMEM;
    c->finish = finish_platforms;
    c->plats_cb = cb;
    c->ud = ud;
    char *hdr = registry_auth_header(auth);
    const char *headers[] = {hdr, NULL};
    int r = dcall_start(c, "GET", path, NULL, D(e)->timeout_ms, hdr ? headers : NULL, NULL);
    header_wipe_free(hdr);
    return r;
}

/* ------------------------------------------------------------------ pull */

static int pull_data(void *ud, const char *data, size_t n)
{
    struct dcall *c = ud;
    if (c->status >= 400)
        return c->errbody.len + n > (64u << 10) ? -E2BIG : lbuf_append(&c->errbody, data, n);
    if (lbuf_append(&c->stream, data, n) < 0)
        return -ENOMEM;
    char *nl;
    while ((nl = memchr(c->stream.data, '\n', c->stream.len))) {
        size_t len = (size_t)(nl - c->stream.data);
        json_error_t je;
        json_t *j = json_loadb(c->stream.data, len, 0, &je);
        if (j) {
            /* Podman reports a failed pull as an {"error"} line in a 200 answer. */
            const char *error = ljson_str(j, "error");
            char line[512];
            if (error && !c->stream_failed) {
                c->stream_failed = true;
                lerr_set(&c->stream_err, docker_pull_error_code(error, -EIO), "%s", error);
            } else if (c->progress && c->pull &&
                       docker_pull_progress_feed(c->pull, j, ltime_now_ms(), line, sizeof(line))) {
                c->progress(c->ud, line);
            }
            json_decref(j);
        }
        lbuf_consume(&c->stream, len + 1);
    }
    if (c->stream.len > 1 << 20)
        return -E2BIG;
    return 0;
}

/* A pull's failure in the registry's words (the engine's message alone, without "engine
 * answered"), its code by what it means (docker_pull_error_code). */
static void finish_pull(struct dcall *c, int r, long status, json_t *body, const struct lerr *err)
{
    struct lerr e2;
    if (r < 0 && !c->stream_failed) {
        const char *msg = ljson_str(body, "message");
        if (c->result == -ETIMEDOUT && status > 0 && status < 400) {
            r = lerr_set(&e2, -ETIMEDOUT,
                         "the pull did not finish within engine.pull_timeout (%lds)",
                         c->d->pull_timeout_ms / 1000);
            err = &e2;
        } else if (status >= 400 && msg) {
            r = lerr_set(&e2, docker_pull_error_code(msg, status == 404 ? -ENOENT : -EIO), "%s",
                         msg);
            err = &e2;
        }
    }
    c->cb.done(c->ud, r, err);
}

static int docker_pull(struct engine *e, const char *image, const struct engine_registry_auth *auth,
                       engine_progress_fn progress, engine_done_fn cb, void *ud)
{
    struct docker *d = D(e);
    char resolved[ENGINE_IMAGE_MAX], server[ENGINE_IMAGE_MAX];
    struct engine_registry_auth a2;
    int rr = resolve_pull(e, &image, resolved, &auth, server, &a2);
    if (rr < 0)
        return rr;
    _cleanup_free_ char *what = lstr_printf("pull %s", image);
    struct dcall *c = dcall_new(d, what);
    if (!c)
        return -ENOMEM;
    c->finish = finish_pull;
    c->cb.done = cb;
    c->ud = ud;
    c->progress = progress;
    if (progress && !(c->pull = calloc(1, sizeof(*c->pull)))) {
        dcall_free(c);
        return -ENOMEM;
    }
    _cleanup_free_ char *repo = NULL, *tag = NULL;
    docker_split_reference(image, &repo, &tag);
    _cleanup_lbuf_ struct lbuf path = LBUF_INIT, r_enc = LBUF_INIT, t_enc = LBUF_INIT;
    lstr_url_encode(repo ? repo : image, strlen(repo ? repo : image), &r_enc);
    lbuf_printf(&path, "/images/create?fromImage=%s", r_enc.data);
    if (tag) {
        lstr_url_encode(tag, strlen(tag), &t_enc);
        lbuf_printf(&path, "&tag=%s", t_enc.data);
    }
    char *hdr = registry_auth_header(auth);
    const char *headers[] = {hdr, NULL};
    int r = dcall_start(c, "POST", path.data, NULL, d->pull_timeout_ms, hdr ? headers : NULL,
                        pull_data);
    header_wipe_free(hdr);
    return r;
}

/* ------------------------------------------------------------------ containers */

static void finish_create(struct dcall *c, int r, long status, json_t *body, const struct lerr *err)
{
    c->cb.create(c->ud, r, r == 0 ? ljson_str(body, "Id") : NULL, err);
}

static int docker_create(struct engine *e, const struct engine_create_spec *spec,
                         engine_create_fn cb, void *ud)
{
    struct docker *d = D(e);
    struct lerr err = {0};
    char resolved[ENGINE_IMAGE_MAX];
    struct engine_create_spec rspec;
    if (spec->image) {
        int rr = engine_image_resolve(e, spec->image, resolved, sizeof(resolved), NULL);
        if (rr < 0)
            return rr;
        rspec = *spec;
        rspec.image = resolved;
        spec = &rspec;
    }
    _cleanup_json_ json_t *body = NULL;
    int r = docker_build_create_body(spec, network_gateway(d, spec->network), &body, &err);
    if (r < 0)
        return r;
    _cleanup_free_ char *what = lstr_printf("create %s", spec->name);
    struct dcall *c = dcall_new(d, what);
    if (!c)
        return -ENOMEM;
    c->finish = finish_create;
    c->cb.create = cb;
    c->ud = ud;
    _cleanup_lbuf_ struct lbuf path = LBUF_INIT, enc = LBUF_INIT;
    lstr_url_encode(spec->name, strlen(spec->name), &enc);
    lbuf_printf(&path, "/containers/create?name=%s", enc.data);
    return dcall_start(c, "POST", path.data, body, d->timeout_ms, NULL, NULL);
}

/* A call whose answer is just success or failure. verb: "start", "stop", "remove". */
static int simple_call(struct engine *e, const char *verb, const char *id, const char *method,
                       const char *suffix, long timeout_ms, engine_done_fn cb, void *ud)
{
    struct docker *d = D(e);
    char what[256];
    snprintf(what, sizeof(what), "%s %s", verb, id);
    struct dcall *c = dcall_new(d, what);
    if (!c)
        return -ENOMEM;
    c->finish = finish_done_tolerant;
    c->cb.done = cb;
    c->ud = ud;
    _cleanup_lbuf_ struct lbuf enc = LBUF_INIT, path = LBUF_INIT;
    lstr_url_encode(id, strlen(id), &enc);
    lbuf_printf(&path, "/containers/%s%s", enc.data, suffix);
    return dcall_start(c, method, path.data, NULL, timeout_ms, NULL, NULL);
}

static int docker_start_container(struct engine *e, const char *id, engine_done_fn cb, void *ud)
{
    return simple_call(e, "start", id, "POST", "/start", D(e)->timeout_ms, cb, ud);
}

static int docker_stop_container(struct engine *e, const char *id, int timeout_s, engine_done_fn cb,
                                 void *ud)
{
    char suffix[32];
    snprintf(suffix, sizeof(suffix), "/stop?t=%d", timeout_s);
    return simple_call(e, "stop", id, "POST", suffix, D(e)->timeout_ms + timeout_s * 1000L, cb, ud);
}

static int docker_remove(struct engine *e, const char *id, engine_done_fn cb, void *ud)
{
    return simple_call(e, "remove", id, "DELETE", "?force=1&v=1", D(e)->timeout_ms + 10000, cb, ud);
}

static void finish_inspect(struct dcall *c, int r, long status, json_t *body,
                           const struct lerr *err)
{
    if (r < 0) {
        c->cb.inspect(c->ud, r, NULL, err);
        return;
    }
    struct engine_container ctr = {0};
    r = docker_parse_inspect(body, &ctr);
    if (r < 0) {
        struct lerr e2;
        lerr_set(&e2, r, "%s: unexpected answer from the engine", c->what);
        c->cb.inspect(c->ud, r, NULL, &e2);
        return;
    }
    c->cb.inspect(c->ud, 0, &ctr, NULL);
    engine_container_clear(&ctr);
}

static int docker_inspect(struct engine *e, const char *id, engine_inspect_fn cb, void *ud)
{
    struct docker *d = D(e);
    _cleanup_free_ char *what = lstr_printf("inspect %s", id);
    struct dcall *c = dcall_new(d, what);
    if (!c)
        return -ENOMEM;
    c->finish = finish_inspect;
    c->cb.inspect = cb;
    c->ud = ud;
    _cleanup_lbuf_ struct lbuf path = LBUF_INIT, enc = LBUF_INIT;
    lstr_url_encode(id, strlen(id), &enc);
    lbuf_printf(&path, "/containers/%s/json", enc.data);
    return dcall_start(c, "GET", path.data, NULL, d->timeout_ms, NULL, NULL);
}

static void finish_list(struct dcall *c, int r, long status, json_t *body, const struct lerr *err)
{
    if (r < 0) {
        c->cb.list(c->ud, r, NULL, 0, err);
        return;
    }
    struct engine_container *v = NULL;
    size_t n = 0;
    r = docker_parse_list(body, &v, &n);
    if (r < 0) {
        struct lerr e2;
        lerr_set(&e2, r, "list containers: unexpected answer from the engine");
        c->cb.list(c->ud, r, NULL, 0, &e2);
        return;
    }
    c->cb.list(c->ud, 0, v, n, NULL);
    engine_containers_free(v, n);
}

static int docker_list(struct engine *e, engine_list_fn cb, void *ud)
{
    struct docker *d = D(e);
    struct dcall *c = dcall_new(d, "list containers");
    if (!c)
        return -ENOMEM;
    c->finish = finish_list;
    c->cb.list = cb;
    c->ud = ud;
    _cleanup_lbuf_ struct lbuf path = LBUF_INIT, enc = LBUF_INIT;
    _cleanup_free_ char *filter = label_filter(d, NULL);
    if (!filter)
        return -ENOMEM;
    lstr_url_encode(filter, strlen(filter), &enc);
    lbuf_printf(&path, "/containers/json?all=1&filters=%s", enc.data);
    return dcall_start(c, "GET", path.data, NULL, d->timeout_ms, NULL, NULL);
}

/* ------------------------------------------------------------------ logs */

struct engine_logs {
    struct docker *d;
    struct hc_transfer *t;
    struct engine_logs_options o;
    char *id;
    engine_log_fn on_data;
    engine_done_fn cb;
    void *ud;
    struct docker_demux demux;
    bool tty;
    bool cancelled;
    bool inspecting;
};

static void logs_free(struct engine_logs *l)
{
    free(l->id);
    docker_demux_free(&l->demux);
    free(l);
}

static int logs_data(void *ud, const char *data, size_t n)
{
    struct engine_logs *l = ud;
    if (l->tty)
        return l->on_data(l->ud, 1, data, n);
    return docker_demux_feed(&l->demux, data, n, l->on_data, l->ud);
}

static void logs_done(void *ud, int result, long status, struct lbuf *body)
{
    struct engine_logs *l = ud;
    struct lerr err = {0};
    int r = 0;
    if (result == -ECANCELED) {
        r = 0; /* the consumer stopped reading */
    } else if (result < 0 || status >= 400) {
        json_t *j = body->len ? json_loadb(body->data, body->len, 0, NULL) : NULL;
        r = docker_error(l->d, "logs", result, status, j, &err);
        json_decref(j);
    }
    l->t = NULL;
    l->cb(l->ud, r, r < 0 ? &err : NULL);
    logs_free(l);
}

static void logs_inspected(void *ud, int result, const struct engine_container *c,
                           const struct lerr *err)
{
    struct engine_logs *l = ud;
    l->inspecting = false;
    if (l->cancelled) {
        logs_free(l);
        return;
    }
    if (result < 0) {
        l->cb(l->ud, result, err);
        logs_free(l);
        return;
    }
    l->tty = c->tty;
    struct docker *d = l->d;
    _cleanup_lbuf_ struct lbuf url = LBUF_INIT, enc = LBUF_INIT;
    lstr_url_encode(c->id, strlen(c->id), &enc);
    lbuf_printf(&url, "%s/v%s/containers/%s/logs?stdout=1&stderr=1&follow=%d&timestamps=%d",
                d->origin, d->api[0] ? d->api : DOCKER_MIN_API, enc.data, l->o.follow ? 1 : 0,
                l->o.timestamps ? 1 : 0);
    if (l->o.tail >= 0)
        lbuf_printf(&url, "&tail=%ld", l->o.tail);
    if (l->o.since_ms > 0)
        lbuf_printf(&url, "&since=%lld.%03lld", (long long)(l->o.since_ms / 1000),
                    (long long)(l->o.since_ms % 1000));
    struct hc_request req = {
        .unix_socket = d->socket_path,
        .url = url.data,
        .timeout_ms = l->o.follow ? 0 : d->timeout_ms * 6,
        .on_data = logs_data,
        .on_done = logs_done,
        .ud = l,
    };
    l->t = hc_request(d->http, &req);
    if (!l->t) {
        struct lerr e2;
        lerr_set(&e2, -ENOMEM, "logs: cannot start request");
        l->cb(l->ud, -ENOMEM, &e2);
        logs_free(l);
    }
}

static struct engine_logs *docker_logs(struct engine *e, const char *id,
                                       const struct engine_logs_options *o, engine_log_fn on_data,
                                       engine_done_fn cb, void *ud)
{
    struct engine_logs *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->d = D(e);
    l->o = *o;
    l->id = strdup(id);
    l->on_data = on_data;
    l->cb = cb;
    l->ud = ud;
    l->inspecting = true;
    /* Whether the stream is multiplexed depends on the container's TTY setting. */
    if (docker_inspect(e, id, logs_inspected, l) < 0) {
        logs_free(l);
        return NULL;
    }
    return l;
}

static void docker_logs_cancel(struct engine_logs *l)
{
    if (!l)
        return;
    if (l->inspecting) {
        l->cancelled = true; /* freed when the inspect answers */
        return;
    }
    hc_cancel(l->t);
    logs_free(l);
}

/* ------------------------------------------------------------------ events */

static void events_connect(struct docker *d);

static void emit(struct docker *d, const struct engine_event *ev)
{
    if (d->e->on_event)
        d->e->on_event(d->e->event_ud, ev);
}

/* ------------------------------------------------------------------ Podman's health checks */

/* Podman runs a container's HEALTHCHECK from a systemd timer; where it has no systemd (its
 * cgroup driver is then cgroupfs) no check ever runs and the status stays "starting". There the
 * backend runs them: every Interval of a running container's check it asks Podman's
 * /libpod/containers/ID/healthcheck, which runs the check once and keeps the failing streak and
 * the status as its timer would, and reports that status as a health event. With systemd,
 * Podman's own health_status events carry no status (4.3): an inspect reads it. One pcheck per
 * running container of ours that has a check; gone on die, remove or a lost connection. Events
 * arrive inside libcurl's callbacks, where no transfer may start: a pcheck's first step (the
 * inspect) runs from its timer. */
#define PODMAN_CHECK_MIN_MS 100

struct pcheck {
    struct llist node; /* d->checks */
    struct docker *d;
    char *id;
    struct event *timer;
    long interval_ms;
    bool busy;     /* a call in flight */
    bool inspect;  /* next step: inspect (the check's interval, or the status to report) */
    bool one_shot; /* podman_systemd: report the inspected status, then go */
};

static struct pcheck *pcheck_find(struct docker *d, const char *id)
{
    struct pcheck *p;
    llist_foreach (p, &d->checks, node)
        if (lstr_eq(p->id, id))
            return p;
    return NULL;
}

static void pcheck_free(struct pcheck *p)
{
    if (!p)
        return;
    llist_remove(&p->node);
    if (p->timer)
        event_free(p->timer);
    free(p->id);
    free(p);
}

static void pchecks_clear(struct docker *d)
{
    struct pcheck *p;
    while ((p = llist_first(&d->checks, struct pcheck, node)))
        pcheck_free(p);
}

static void pcheck_arm(struct pcheck *p)
{
    struct timeval tv = {p->interval_ms / 1000, (p->interval_ms % 1000) * 1000};
    evtimer_add(p->timer, &tv);
}

/* A GET of prefix, the container's id URL-encoded, suffix for a pcheck, finished by finish
 * with the pcheck's id; busy while in flight. < 0 when it could not start (the caller retries or
 * drops the pcheck). */
static int pcheck_call(struct pcheck *p, const char *label, const char *prefix, const char *suffix,
                       void (*finish)(struct dcall *, int, long, json_t *, const struct lerr *))
{
    struct docker *d = p->d;
    struct dcall *c = dcall_new(d, label ? label : "health check");
    if (!c || !(c->check_id = strdup(p->id))) {
        if (c)
            dcall_free(c);
        return -ENOMEM;
    }
    c->finish = finish;
    _cleanup_lbuf_ struct lbuf path = LBUF_INIT, enc = LBUF_INIT;
    lstr_url_encode(p->id, strlen(p->id), &enc);
    lbuf_printf(&path, "%s%s%s", prefix, enc.data, suffix);
    p->busy = true;
    int r = dcall_start(c, "GET", path.data, NULL, d->timeout_ms, NULL, NULL);
    if (r < 0)
        p->busy = false;
    return r;
}

/* The pcheck a call was for, no longer busy; NULL when it went meanwhile. */
static struct pcheck *pcheck_answered(struct dcall *c)
{
    struct pcheck *p = pcheck_find(c->d, c->check_id);
    if (p)
        p->busy = false;
    return p;
}

static void finish_healthcheck(struct dcall *c, int r, long status, json_t *body,
                               const struct lerr *err)
{
    struct docker *d = c->d;
    struct pcheck *p = pcheck_answered(c);
    if (!p)
        return;
    if (r < 0) {
        /* 409: not running or no check any more; 404: gone. Anything else: try again later. */
        if (status == 404 || status == 409)
            pcheck_free(p);
        else
            pcheck_arm(p);
        return;
    }
    pcheck_arm(p);
    struct engine_event ev = {.kind = ENGINE_EVENT_HEALTH,
                              .id = c->check_id,
                              .time_ms = ltime_now_ms(),
                              .health = docker_health_from_string(ljson_str(body, "Status"))};
    if (ev.health != HEALTH_NONE)
        emit(d, &ev);
}

static void pcheck_inspect(struct pcheck *p);

static void pcheck_fire(evutil_socket_t fd, short what, void *arg)
{
    struct pcheck *p = arg;
    if (p->inspect) {
        pcheck_inspect(p);
        return;
    }
    _cleanup_free_ char *label = lstr_printf("health check %.12s", p->id);
    if (pcheck_call(p, label, "/libpod/containers/", "/healthcheck", finish_healthcheck) < 0)
        pcheck_arm(p);
}

/* An inspect for a container's check: watch it (no systemd) or report its status (systemd). */
static void finish_check_inspect(struct dcall *c, int r, long status, json_t *body,
                                 const struct lerr *err)
{
    struct docker *d = c->d;
    struct pcheck *p = pcheck_answered(c);
    if (!p)
        return;
    if (r < 0) {
        pcheck_free(p);
        return;
    }
    json_t *state = json_object_get(body, "State");
    if (p->one_shot) {
        struct engine_event ev = {.kind = ENGINE_EVENT_HEALTH,
                                  .id = c->check_id,
                                  .time_ms = ltime_now_ms(),
                                  .health = docker_health_from_string(
                                      ljson_str(json_object_get(state, "Health"), "Status"))};
        pcheck_free(p);
        if (ev.health != HEALTH_NONE)
            emit(d, &ev);
        return;
    }
    json_t *hc = json_object_get(json_object_get(body, "Config"), "Healthcheck");
    const char *test0 = json_string_value(json_array_get(json_object_get(hc, "Test"), 0));
    if (!ljson_bool(state, "Running", false) || !test0 || lstr_eq(test0, "NONE")) {
        pcheck_free(p);
        return;
    }
    long long ns = ljson_int(hc, "Interval", 0);
    p->interval_ms = ns > 0 ? (long)MAX(ns / 1000000, PODMAN_CHECK_MIN_MS) : 30000;
    p->inspect = false;
    pcheck_arm(p);
}

static void pcheck_inspect(struct pcheck *p)
{
    if (pcheck_call(p, "inspect for a health check", "/containers/", "/json",
                    finish_check_inspect) < 0)
        pcheck_free(p);
}

/* A pcheck for a container whose first step, an inspect, runs at once from its timer. */
static void pcheck_add(struct docker *d, const char *id, bool one_shot)
{
    if (pcheck_find(d, id))
        return;
    struct pcheck *p = calloc(1, sizeof(*p));
    if (!p || !(p->id = strdup(id)) || !(p->timer = evtimer_new(d->e->base, pcheck_fire, p))) {
        if (p)
            free(p->id);
        free(p);
        return;
    }
    p->d = d;
    p->inspect = true;
    p->one_shot = one_shot;
    llist_add_tail(&d->checks, &p->node);
    pcheck_arm(p); /* interval 0 */
}

/* At (re)connection: the running containers of ours, each inspected for its check. */
static void finish_check_list(struct dcall *c, int r, long status, json_t *body,
                              const struct lerr *err)
{
    size_t i;
    json_t *e;
    if (r < 0 || !c->d->running)
        return;
    json_array_foreach (body, i, e) {
        const char *id = ljson_str(e, "Id");
        if (id && lstr_eq(ljson_str(e, "State"), "running"))
            pcheck_add(c->d, id, false);
    }
}

static void pchecks_resync(struct docker *d)
{
    pchecks_clear(d);
    struct dcall *c = dcall_new(d, "list containers for health checks");
    _cleanup_free_ char *filter = label_filter(d, NULL);
    if (!c || !filter) {
        if (c)
            dcall_free(c);
        return;
    }
    c->finish = finish_check_list;
    _cleanup_lbuf_ struct lbuf path = LBUF_INIT, enc = LBUF_INIT;
    lstr_url_encode(filter, strlen(filter), &enc);
    lbuf_printf(&path, "/containers/json?filters=%s", enc.data);
    dcall_start(c, "GET", path.data, NULL, d->timeout_ms, NULL, NULL);
}

/* Podman's side of an event from the stream; true when it is not to be passed on. */
static bool podman_event(struct docker *d, const struct engine_event *ev)
{
    switch (ev->kind) {
    case ENGINE_EVENT_START:
        if (!d->podman_systemd)
            pcheck_add(d, ev->id, false);
        return false;
    case ENGINE_EVENT_DIE:
    case ENGINE_EVENT_DESTROY:
        pcheck_free(pcheck_find(d, ev->id));
        return false;
    case ENGINE_EVENT_HEALTH:
        /* the status is not in Podman's event: an inspect reads it (with systemd), or it is
         * the answer of the check the backend ran */
        if (ev->health != HEALTH_NONE)
            return false;
        if (d->podman_systemd)
            pcheck_add(d, ev->id, true);
        return true;
    default:
        return false;
    }
}

static void schedule_reconnect(struct docker *d)
{
    if (!d->running)
        return;
    pchecks_clear(d);
    if (d->connected) {
        d->connected = false;
        struct engine_event ev = {.kind = ENGINE_EVENT_DISCONNECTED, .time_ms = ltime_now_ms()};
        emit(d, &ev);
    }
    d->backoff_ms = d->backoff_ms ? MIN(d->backoff_ms * 2, 30000) : 500;
    struct timeval tv = {d->backoff_ms / 1000, (d->backoff_ms % 1000) * 1000};
    evtimer_add(d->reconnect, &tv);
}

static int events_data(void *ud, const char *data, size_t n)
{
    struct docker *d = ud;
    if (lbuf_append(&d->evline, data, n) < 0)
        return -ENOMEM;
    char *nl;
    while ((nl = memchr(d->evline.data, '\n', d->evline.len))) {
        size_t len = (size_t)(nl - d->evline.data);
        json_t *j = json_loadb(d->evline.data, len, 0, NULL);
        if (j) {
            struct engine_event ev;
            if (docker_parse_event(j, &ev) == 0 && !(d->podman && podman_event(d, &ev)))
                emit(d, &ev);
            json_decref(j);
        }
        lbuf_consume(&d->evline, len + 1);
    }
    if (d->evline.len > 1 << 20)
        return -E2BIG;
    return 0;
}

static void events_done(void *ud, int result, long status, struct lbuf *body)
{
    struct docker *d = ud;
    d->events = NULL;
    lbuf_reset(&d->evline);
    schedule_reconnect(d);
}

static void events_version_cb(void *ud, int result, const struct engine_version *v,
                              const struct lerr *err)
{
    struct docker *d = ud;
    if (!d->running)
        return;
    if (result < 0) {
        if (d->events) {
            hc_cancel(d->events);
            d->events = NULL;
        }
        schedule_reconnect(d);
        return;
    }
    /* The event stream was requested before this answer, so anything that changes after the
     * agent's resynchronising list is seen as an event. */
    d->backoff_ms = 0;
    d->connected = true;
    d->podman = lstr_eq(v->product, "Podman");
    if (d->podman && !d->podman_systemd)
        pchecks_resync(d);
    struct engine_event ev = {.kind = ENGINE_EVENT_CONNECTED, .time_ms = ltime_now_ms()};
    emit(d, &ev);
}

static void events_connect(struct docker *d)
{
    if (!d->running)
        return;
    _cleanup_lbuf_ struct lbuf url = LBUF_INIT, enc = LBUF_INIT;
    _cleanup_free_ char *filter = label_filter(d, "container");
    if (!filter) {
        schedule_reconnect(d);
        return;
    }
    lstr_url_encode(filter, strlen(filter), &enc);
    /* Replay a little history so nothing between a disconnect and now is missed. */
    lbuf_printf(&url, "%s/v%s/events?since=%lld&filters=%s", d->origin,
                d->api[0] ? d->api : DOCKER_MIN_API, (long long)(ltime_now_ms() / 1000 - 2),
                enc.data);
    struct hc_request req = {
        .unix_socket = d->socket_path,
        .url = url.data,
        .timeout_ms = 0,
        .on_data = events_data,
        .on_done = events_done,
        .ud = d,
    };
    d->events = hc_request(d->http, &req);
    if (!d->events || docker_version(d->e, events_version_cb, d) < 0) {
        if (d->events) {
            hc_cancel(d->events);
            d->events = NULL;
        }
        schedule_reconnect(d);
    }
}

static void reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
    events_connect(arg);
}

/* ------------------------------------------------------------------ lifecycle */

static int docker_init(struct engine *e, const struct engine_config *cfg)
{
    struct docker *d = D(e);
    d->e = e;
    d->uri = strdup(cfg->uri ? cfg->uri : "unix:///var/run/docker.sock");
    d->instance = cfg->instance ? strdup(cfg->instance) : NULL;
    d->timeout_ms = cfg->request_timeout_ms ? cfg->request_timeout_ms : 30000;
    d->pull_timeout_ms = cfg->pull_timeout_ms ? cfg->pull_timeout_ms : 600000;
    if (!d->uri)
        return -ENOMEM;
    if (lstr_startswith(d->uri, "unix://")) {
        d->socket_path = strdup(d->uri + 7);
        d->origin = strdup("http://localhost");
    } else if (lstr_startswith(d->uri, "http://") || lstr_startswith(d->uri, "tcp://")) {
        const char *hostport = strstr(d->uri, "://") + 3;
        d->origin = lstr_printf("http://%s", hostport);
        size_t n = strlen(d->origin);
        if (n && d->origin[n - 1] == '/')
            d->origin[n - 1] = 0;
    } else {
        free(d->uri);
        return -EINVAL;
    }
    llist_init(&d->checks);
    int r = hc_client_new(e->base, &d->http);
    if (r < 0)
        return r;
    d->reconnect = evtimer_new(e->base, reconnect_cb, d);
    return d->reconnect && d->origin ? 0 : -ENOMEM;
}

static int docker_start(struct engine *e)
{
    struct docker *d = D(e);
    if (d->running)
        return 0;
    d->running = true;
    /* The first connection result is reported like a reconnection: DISCONNECTED is only sent
     * after a CONNECTED, so start as "connected" to report a missing engine at once. */
    d->connected = true;
    events_connect(d);
    return 0;
}

static void docker_stop(struct engine *e)
{
    struct docker *d = D(e);
    d->running = false;
    if (d->events) {
        hc_cancel(d->events);
        d->events = NULL;
    }
    if (d->reconnect)
        evtimer_del(d->reconnect);
    pchecks_clear(d);
}

static void docker_fini(struct engine *e)
{
    struct docker *d = D(e);
    hc_client_free(d->http); /* drops the transfers in flight without calling back */
    while (d->calls)
        dcall_free(d->calls);
    while (d->net_pending) {
        struct netctx *n = d->net_pending;
        d->net_pending = n->next;
        while (n->waiters) {
            struct netwaiter *w = n->waiters;
            n->waiters = w->next;
            free(w);
        }
        free(n->name);
        free(n);
    }
    if (d->reconnect)
        event_free(d->reconnect);
    if (d->checks.next) /* init may have failed before the list was made */
        pchecks_clear(d);
    lbuf_free(&d->evline);
    free(d->uri);
    free(d->net_name);
    free(d->net_gateway);
    free(d->instance);
    free(d->socket_path);
    free(d->origin);
}

const struct engine_ops engine_docker_ops = {
    .name = "docker",
    .runs = ENGINE_RUNS_IMAGES,
    .priv_size = sizeof(struct docker),
    .init = docker_init,
    .start = docker_start,
    .stop = docker_stop,
    .fini = docker_fini,
    .version = docker_version,
    .ensure_network = docker_ensure_network,
    .image_present = docker_image_present,
    .pull = docker_pull,
    .create = docker_create,
    .start_container = docker_start_container,
    .stop_container = docker_stop_container,
    .remove = docker_remove,
    .inspect = docker_inspect,
    .list = docker_list,
    .logs = docker_logs,
    .logs_cancel = docker_logs_cancel,
    .image_platform = docker_image_platform,
    .registry_platforms = docker_registry_platforms,
};
