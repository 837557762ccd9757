/* docker_json.c — Docker Engine API documents in and out (see docker_json.h). */
#include "docker_json.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "engine/createopts.h"

/* ------------------------------------------------------------------ create body */

static int env_key_len(const char *kv)
{
    const char *eq = strchr(kv, '=');
    return eq ? (int)(eq - kv) : (int)strlen(kv);
}

/* Env on the typed form (an array of strings): the user's entries whose names ledge does not set,
 * then ledge's (manifest env merged under identity env). */
static int merge_env(json_t *body, const json_t *env)
{
    const json_t *user = createopts_get(body, "Env");
    _cleanup_json_ json_t *out = json_array();
    if (!out)
        return -ENOMEM;
    size_t i;
    json_t *v;
    json_array_foreach (user, i, v) {
        const char *kv = json_string_value(v);
        char key[256];
        snprintf(key, sizeof(key), "%.*s", env_key_len(kv), kv);
        if (env && json_object_get(env, key))
            continue; /* replaced below */
        if (json_array_append(out, v) < 0)
            return -ENOMEM;
    }
    const char *k;
    json_object_foreach ((json_t *)env, k, v) {
        const char *val = json_string_value(v);
        _cleanup_free_ char *kv = lstr_printf("%s=%s", k, val ? val : "");
        if (!kv || json_array_append_new(out, json_string(kv)) < 0)
            return -ENOMEM;
    }
    return createopts_set(body, "Env", TAKE_PTR(out));
}

/* The gateway host name leads to the host as the module's network sees it: the module network's
 * own gateway address when the module joins it (more precise than docker's "host-gateway", which
 * is docker0's address), loopback for host networking, and host-gateway for a network of the
 * user's choosing. */
static int add_gateway_host(json_t *body, const struct engine_create_spec *spec,
                            const char *network_gateway)
{
    if (lstr_empty(spec->gateway_hostname))
        return 0;
    const char *mode = createopts_string(body, "HostConfig.NetworkMode");
    bool module_network = lstr_empty(mode) || lstr_eq(mode, "default") ||
                          (spec->network && lstr_eq(mode, spec->network));
    const char *addr = "host-gateway";
    if (lstr_eq(mode, "host"))
        addr = "127.0.0.1";
    else if (module_network && network_gateway)
        addr = network_gateway;
    _cleanup_free_ char *entry = lstr_printf("%s:%s", spec->gateway_hostname, addr);
    _cleanup_json_ json_t *add = entry ? json_pack("[s]", entry) : NULL;
    if (!add)
        return -ENOMEM;
    return createopts_append(body, "HostConfig.ExtraHosts", add);
}

/* A published port is exposed (as `docker run -p` does): through the API, PortBindings alone
 * publish nothing for a port the image does not EXPOSE. */
static int expose_published(json_t *body)
{
    const json_t *bindings = createopts_get(body, "HostConfig.PortBindings");
    if (json_object_size(bindings) == 0)
        return 0;
    json_t *exposed = createopts_object(body, "ExposedPorts");
    if (!exposed)
        return -ENOMEM;
    const char *port;
    json_t *v;
    json_object_foreach ((json_t *)bindings, port, v) {
        if (!json_object_get(exposed, port) &&
            json_object_set_new(exposed, port, json_object()) < 0)
            return -ENOMEM;
    }
    return 0;
}

/* The first error the normaliser reports, for the engine's own message. */
static void first_error(void *ud, bool error, const char *path, const char *msg)
{
    struct lerr *err = ud;
    if (error && !err->msg[0])
        lerr_set(err, -EINVAL, "%s: %s", path, msg);
}

int docker_build_create_body(const struct engine_create_spec *spec, const char *network_gateway,
                             json_t **ret, struct lerr *err)
{
    int r = 0;
    _cleanup_json_ json_t *body = NULL;
    /* The typed form: the manifest parser normalised it already; a fixed point if so. */
    if (spec->create_options) {
        struct lerr first = {0};
        r = createopts_normalize(spec->create_options, "createOptions", first_error, &first, &body);
        if (r == -EINVAL)
            return lerr_set(err, -EINVAL, "%s",
                            first.msg[0] ? first.msg : "createOptions: invalid");
        if (r < 0)
            return r;
    } else if (!(body = json_object())) {
        return -ENOMEM;
    }
    if ((r = createopts_set(body, "Image", json_string(spec->image))) < 0)
        return r;

    json_t *labels = createopts_object(body, "Labels");
    if (!labels || (spec->labels && json_object_update(labels, (json_t *)spec->labels) < 0))
        return -ENOMEM;

    if ((r = merge_env(body, spec->env)) < 0 ||
        (r = createopts_append(body, "HostConfig.Binds", spec->binds)) < 0 ||
        (r = add_gateway_host(body, spec, network_gateway)) < 0 || (r = expose_published(body)) < 0)
        return r;
    if ((r = createopts_set(body, "HostConfig.RestartPolicy", json_pack("{s:s}", "Name", "no"))) <
        0)
        return r;

    const char *mode = createopts_string(body, "HostConfig.NetworkMode");
    if (spec->network && (lstr_empty(mode) || lstr_eq(mode, "default"))) {
        if ((r = createopts_set(body, "HostConfig.NetworkMode", json_string(spec->network))) < 0)
            return r;
        json_t *eps = createopts_object(body, "NetworkingConfig.EndpointsConfig");
        if (!eps)
            return -ENOMEM;
        if (!json_object_get(eps, spec->network)) {
            json_t *ep = json_pack("{s:[s]}", "Aliases", spec->name);
            if (!ep || json_object_set_new(eps, spec->network, ep) < 0)
                return -ENOMEM;
        }
    }

    bool user_log = !lstr_empty(createopts_string(body, "HostConfig.LogConfig.Type"));
    if (!user_log && spec->default_log_config &&
        (r = createopts_set(body, "HostConfig.LogConfig",
                            json_deep_copy(spec->default_log_config))) < 0)
        return r;
    *ret = TAKE_PTR(body);
    return 0;
}

/* ------------------------------------------------------------------ reading documents */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

int docker_parse_version(const json_t *j, struct engine_version *v)
{
    if (!json_is_object(j) || !ljson_str(j, "ApiVersion"))
        return -EPROTO;
    memset(v, 0, sizeof(*v));
    lstr_copy(v->version, sizeof(v->version), ljson_str(j, "Version") ?: "");
    lstr_copy(v->api_version, sizeof(v->api_version), ljson_str(j, "ApiVersion"));
    lstr_copy(v->min_api_version, sizeof(v->min_api_version), ljson_str(j, "MinAPIVersion") ?: "");
    lstr_copy(v->os, sizeof(v->os), ljson_str(j, "Os") ?: "");
    lstr_copy(v->arch, sizeof(v->arch), ljson_str(j, "Arch") ?: "");
    lstr_copy(v->kernel, sizeof(v->kernel), ljson_str(j, "KernelVersion") ?: "");
    const char *platform = ljson_str(json_object_get(j, "Platform"), "Name");
    const char *product = "Moby";
    size_t i;
    json_t *comp;
    json_array_foreach (json_object_get(j, "Components"), i, comp) {
        const char *name = ljson_str(comp, "Name");
        if (name && strcasestr(name, "podman"))
            product = "Podman";
    }
    if (strcmp(product, "Podman") != 0 && platform && *platform) {
        if (strcasestr(platform, "community"))
            product = "Docker CE";
        else if (strcasestr(platform, "enterprise") || strcasestr(platform, "mirantis"))
            product = "Docker EE";
        else if (strcasestr(platform, "desktop"))
            product = "Docker Desktop";
        else if (strcasestr(platform, "podman"))
            product = "Podman";
    }
    lstr_copy(v->product, sizeof(v->product), product);
    return 0;
}

enum ctr_state docker_state_from_string(const char *s);
enum ctr_state docker_state_from_string(const char *s)
{
    static const struct {
        const char *name;
        enum ctr_state st;
    } map[] = {
        {"created", CTR_CREATED},       {"running", CTR_RUNNING}, {"paused", CTR_PAUSED},
        {"restarting", CTR_RESTARTING}, {"exited", CTR_EXITED},   {"dead", CTR_DEAD},
        {"removing", CTR_REMOVING},     {"stopped", CTR_EXITED},  {"configured", CTR_CREATED},
    };
    for (size_t i = 0; s && i < ARRAY_SIZE(map); i++)
        if (strcasecmp(s, map[i].name) == 0)
            return map[i].st;
    return CTR_UNKNOWN;
}

enum ctr_health docker_health_from_string(const char *s)
{
    if (!s)
        return HEALTH_NONE;
    if (strcmp(s, "healthy") == 0)
        return HEALTH_HEALTHY;
    if (strcmp(s, "unhealthy") == 0)
        return HEALTH_UNHEALTHY;
    if (strcmp(s, "starting") == 0)
        return HEALTH_STARTING;
    return HEALTH_NONE;
}

static int64_t parse_time(const char *s)
{
    int64_t ms;
    if (!s || strncmp(s, "0001-01-01", 10) == 0 || ltime_parse_rfc3339(s, &ms) < 0)
        return 0;
    return ms;
}

int docker_parse_inspect(const json_t *j, struct engine_container *c)
{
    const char *id = ljson_str(j, "Id");
    json_t *state = json_object_get(j, "State");
    json_t *config = json_object_get(j, "Config");
    if (!id || !json_is_object(state))
        return -EPROTO;
    memset(c, 0, sizeof(*c));
    c->id = strdup(id);
    const char *name = ljson_str(j, "Name");
    c->name = dup_or_null(name && name[0] == '/' ? name + 1 : name);
    c->image = dup_or_null(ljson_str(config, "Image"));
    json_t *labels = json_object_get(config, "Labels");
    c->labels = json_is_object(labels) ? json_incref(labels) : json_object();
    c->state = docker_state_from_string(ljson_str(state, "Status"));
    c->exit_code = (int)ljson_int(state, "ExitCode", -1);
    c->pid = (int)ljson_int(state, "Pid", 0);
    c->started_ms = parse_time(ljson_str(state, "StartedAt"));
    c->finished_ms = parse_time(ljson_str(state, "FinishedAt"));
    c->health = docker_health_from_string(ljson_str(json_object_get(state, "Health"), "Status"));
    const char *error = ljson_str(state, "Error");
    c->error = error && *error ? strdup(error) : NULL;
    c->tty = ljson_bool(config, "Tty", false);
    if (!c->id || !c->labels) {
        engine_container_clear(c);
        return -ENOMEM;
    }
    return 0;
}

int docker_parse_list(const json_t *j, struct engine_container **ret, size_t *ret_n)
{
    if (!json_is_array(j))
        return -EPROTO;
    size_t n = json_array_size(j);
    struct engine_container *v = calloc(n ? n : 1, sizeof(*v));
    if (!v)
        return -ENOMEM;
    size_t k = 0, i;
    json_t *e;
    json_array_foreach (j, i, e) {
        const char *id = ljson_str(e, "Id");
        if (!id)
            continue;
        struct engine_container *c = &v[k++];
        c->id = strdup(id);
        const char *name = json_string_value(json_array_get(json_object_get(e, "Names"), 0));
        c->name = dup_or_null(name && name[0] == '/' ? name + 1 : name);
        c->image = dup_or_null(ljson_str(e, "Image"));
        json_t *labels = json_object_get(e, "Labels");
        c->labels = json_is_object(labels) ? json_incref(labels) : json_object();
        c->state = docker_state_from_string(ljson_str(e, "State"));
        c->exit_code = -1;
        /* "Up 5 minutes (unhealthy)" is all the list says about health (Podman: "Up 5
         * minutes ago (starting)" where Moby says "(health: starting)"). */
        const char *status = ljson_str(e, "Status");
        if (status && strstr(status, "(unhealthy)"))
            c->health = HEALTH_UNHEALTHY;
        else if (status && strstr(status, "(healthy)"))
            c->health = HEALTH_HEALTHY;
        else if (status && (strstr(status, "(health: starting)") || strstr(status, "(starting)")))
            c->health = HEALTH_STARTING;
        if (status && c->state == CTR_EXITED) {
            int code;
            if (sscanf(status, "Exited (%d)", &code) == 1)
                c->exit_code = code;
        }
    }
    *ret = v;
    *ret_n = k;
    return 0;
}

int docker_parse_event(const json_t *j, struct engine_event *ev)
{
    const char *type = ljson_str(j, "Type");
    const char *action = ljson_str(j, "Action");
    json_t *actor = json_object_get(j, "Actor");
    json_t *attrs = json_object_get(actor, "Attributes");
    if (!type || strcmp(type, "container") != 0 || !action)
        return -ENOENT;
    memset(ev, 0, sizeof(*ev));
    ev->id = ljson_str(actor, "ID");
    ev->name = ljson_str(attrs, "name");
    long long nano = ljson_int(j, "timeNano", 0);
    ev->time_ms = nano ? nano / 1000000 : ljson_int(j, "time", 0) * 1000;
    if (strcmp(action, "start") == 0) {
        ev->kind = ENGINE_EVENT_START;
    } else if (strcmp(action, "die") == 0) {
        ev->kind = ENGINE_EVENT_DIE;
        const char *code = ljson_str(attrs, "exitCode");
        ev->exit_code = code ? atoi(code) : -1;
    } else if (strcmp(action, "destroy") == 0 || strcmp(action, "remove") == 0) {
        /* Podman says "remove" */
        ev->kind = ENGINE_EVENT_DESTROY;
    } else if (strcmp(action, "oom") == 0) {
        ev->kind = ENGINE_EVENT_OOM;
    } else if (lstr_startswith(action, "health_status")) {
        ev->kind = ENGINE_EVENT_HEALTH;
        /* Moby: "health_status: healthy"; Podman: "health_status", the status an attribute */
        const char *s = strchr(action, ':');
        s = s ? s + 1 : ljson_str(attrs, "health_status") ?: "";
        while (*s == ' ')
            s++;
        ev->health = docker_health_from_string(s);
    } else {
        return -ENOENT;
    }
    return ev->id ? 0 : -ENOENT;
}

/* ------------------------------------------------------------------ pulls */

static bool has_any(const char *msg, const char *const *words)
{
    for (; *words; words++)
        if (strcasestr(msg, *words))
            return true;
    return false;
}

int docker_pull_error_code(const char *msg, int fallback)
{
    /* Order matters: Docker Hub's "pull access denied for x, repository does not exist or may
     * require 'docker login'" is about a missing repository as much as about access. */
    static const char *const missing[] = {"manifest unknown", "not found",     "does not exist",
                                          "name unknown",     "no such image", NULL};
    static const char *const access[] = {
        "unauthorized", "authentication required",        "no basic auth credentials",
        "denied",       "incorrect username or password", NULL};
    static const char *const tls[] = {"x509:", "certificate", "tls: ", NULL};
    static const char *const unreachable[] = {"connection refused",
                                              "no such host",
                                              "i/o timeout",
                                              "network is unreachable",
                                              "no route to host",
                                              "connection reset",
                                              "deadline exceeded",
                                              "client.timeout",
                                              "server misbehaving",
                                              "handshake timeout",
                                              "timeout awaiting",
                                              "dial tcp",
                                              "pinging container registry",
                                              NULL};
    if (!msg)
        return fallback;
    if (has_any(msg, missing))
        return -ENOENT;
    if (has_any(msg, access))
        return -EACCES;
    if (has_any(msg, tls))
        return -EPROTO;
    if (has_any(msg, unreachable))
        return -EHOSTUNREACH;
    return fallback;
}

static struct docker_pull_layer *pull_layer(struct docker_pull_progress *p, const char *id)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->layers[i].id, id) == 0)
            return &p->layers[i];
    if (p->n == DOCKER_PULL_LAYERS_MAX || strlen(id) >= sizeof(p->layers[0].id))
        return NULL;
    struct docker_pull_layer *l = &p->layers[p->n++];
    memset(l, 0, sizeof(*l));
    snprintf(l->id, sizeof(l->id), "%s", id);
    return l;
}

int docker_pull_progress_feed(struct docker_pull_progress *p, const json_t *line, int64_t now_ms,
                              char *out, size_t size)
{
    const char *status = ljson_str(line, "status"), *id = ljson_str(line, "id");
    if (!status || ljson_str(line, "error"))
        return 0;
    bool bytes = strcmp(status, "Downloading") == 0 || strcmp(status, "Extracting") == 0;
    bool quiet =
        bytes || strcmp(status, "Waiting") == 0 || strcmp(status, "Verifying Checksum") == 0;
    bool ends = strcmp(status, "Download complete") == 0 || strcmp(status, "Already exists") == 0 ||
                strcmp(status, "Pull complete") == 0;
    /* A layer's lines; "Pulling from NAME" carries the tag as its id and is no layer. */
    bool layer = quiet || ends || strcmp(status, "Pulling fs layer") == 0;
    struct docker_pull_layer *l = id && layer ? pull_layer(p, id) : NULL;
    if (l && strcmp(status, "Downloading") == 0) {
        const json_t *d = json_object_get(line, "progressDetail");
        long long cur = ljson_int(d, "current", 0), tot = ljson_int(d, "total", 0);
        if (cur >= 0 && tot >= 0 && (cur != l->current || tot != l->total)) {
            l->current = cur;
            l->total = tot;
            p->changed = true;
        }
    } else if (l && ends) {
        if (!l->done)
            p->changed = true;
        l->done = true;
        if (l->total > 0)
            l->current = l->total;
    } else if (bytes) {
        p->changed = true; /* extraction moves on */
    }
    if (!quiet) {
        snprintf(out, size, "%s%s%s", id ? id : "", id ? ": " : "", status);
        return 1;
    }
    if (!p->changed || (p->last_ms && now_ms - p->last_ms < DOCKER_PULL_PROGRESS_MS))
        return 0;
    long long cur = 0, tot = 0;
    size_t done = 0;
    for (size_t i = 0; i < p->n; i++) {
        cur += p->layers[i].current;
        tot += p->layers[i].total;
        done += p->layers[i].done;
    }
    p->last_ms = now_ms ? now_ms : 1;
    p->changed = false;
    if (tot > 0)
        snprintf(out, size, "downloading %.1f of %.1f MB, %zu of %zu layers done",
                 (double)cur / 1e6, (double)tot / 1e6, done, p->n);
    else
        snprintf(out, size, "%s, %zu of %zu layers done",
                 strcmp(status, "Extracting") == 0 ? "extracting" : "downloading", done, p->n);
    return 1;
}

int docker_split_reference(const char *image, char **ret_repo, char **ret_tag)
{
    if (strchr(image, '@')) {
        *ret_repo = strdup(image);
        *ret_tag = NULL;
        return *ret_repo ? 0 : -ENOMEM;
    }
    const char *slash = strrchr(image, '/');
    const char *colon = strrchr(slash ? slash : image, ':');
    if (!colon) {
        *ret_repo = strdup(image);
        *ret_tag = strdup("latest");
    } else {
        *ret_repo = strndup(image, (size_t)(colon - image));
        *ret_tag = strdup(colon + 1);
    }
    return *ret_repo && *ret_tag ? 0 : -ENOMEM;
}

/* ------------------------------------------------------------------ log stream */

int docker_demux_feed(struct docker_demux *m, const char *data, size_t n, engine_log_fn out,
                      void *ud)
{
    while (n > 0) {
        if (m->remaining == 0) {
            size_t take = MIN(n, 8 - m->hdr_len);
            memcpy(m->hdr + m->hdr_len, data, take);
            m->hdr_len += take;
            data += take;
            n -= take;
            if (m->hdr_len < 8)
                return 0;
            m->stream = m->hdr[0] == 2 ? 2 : 1;
            m->remaining = ((size_t)m->hdr[4] << 24) | ((size_t)m->hdr[5] << 16) |
                           ((size_t)m->hdr[6] << 8) | m->hdr[7];
            m->hdr_len = 0;
            continue;
        }
        size_t take = MIN(n, m->remaining);
        if (out(ud, m->stream, data, take) < 0)
            return -ECANCELED;
        data += take;
        n -= take;
        m->remaining -= take;
    }
    return 0;
}

void docker_demux_free(struct docker_demux *m)
{
    memset(m, 0, sizeof(*m));
}
