/* workload_server.c — one workload API socket per module (contract §7). Each module gets a
 * directory <workload.dir>/<module>/ holding workload.sock; a container gets that directory
 * bind-mounted at /var/run/iotedge (so a recreated socket after a restart of ledged is still the
 * one it sees), and nothing else can reach it: <workload.dir> itself is 0700 root. A process module
 * reaches its socket on the host, and is checked by the peer credentials of the connection: the
 * caller must be in the session the module's program leads. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/str.h"
#include "ledged.h"
#include "identity/workload.h"
#include "log/log.h"

#define COMP "workload"

struct workload_module {
    struct ledged *d;
    char *name;
    char *path; /* socket path */
    char *dir;
    struct workload_module *next;
};

struct workload_server {
    struct hs_server *srv;
    struct workload_ctx *ctx;
    struct workload_module *mods;
};

static void h_workload(struct hs_request *r, void *ud)
{
    struct workload_module *m = hs_request_listener_data(r);
    struct ledged *d = m->d;
    const struct module_spec *spec = deployment_find(agent_deployment(d->agent), m->name);
    if (!spec) {
        hs_reply_error(r, 404, "module %s is not in the deployment", m->name);
        return;
    }
    if (spec->type == MODULE_TYPE_PROCESS) {
        /* The socket is on the host: only the module's own processes may use it. */
        const struct ucred *peer = hs_request_peer(r);
        int pid = agent_module_pid(d->agent, m->name);
        if (!peer || pid <= 0 || getsid(peer->pid) != pid) {
            hs_reply_error(r, 403, "this socket serves module %s only", m->name);
            return;
        }
    }
    const char *gen = agent_module_generation(d->agent, m->name);
    struct workload_caller caller = {.module_id = m->name, .generation_id = gen ? gen : ""};
    size_t len;
    const char *body = hs_request_body(r, &len);
    struct workload_reply reply = {0};
    if (workload_handle(d->workload->ctx, &caller, hs_request_method(r), hs_request_target(r), body,
                        len, &reply) < 0) {
        hs_reply_error(r, 500, "out of memory");
        return;
    }
    if (reply.status >= 400)
        log_debug(COMP, "%s: %s %.256s -> %d", m->name, hs_request_method(r), hs_request_path(r),
                  reply.status);
    hs_reply(r, reply.status, reply.content_type, reply.body, reply.body_len);
    workload_reply_done(&reply);
}

static const struct hs_route routes[] = {
    {"GET", "/**", h_workload},
    {"POST", "/**", h_workload},
    {"PUT", "/**", h_workload},
    {"DELETE", "/**", h_workload},
};

static struct workload_module *find(struct workload_server *w, const char *name)
{
    for (struct workload_module *m = w->mods; m; m = m->next)
        if (strcmp(m->name, name) == 0)
            return m;
    return NULL;
}

int workload_server_start(struct ledged *d)
{
    struct workload_server *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    d->workload = w;
    int r = lfs_mkdir_p(d->cfg.workload.dir, 0700);
    if (r == 0 && chmod(d->cfg.workload.dir, 0700) < 0)
        r = neg_errno();
    if (r < 0) {
        log_error(COMP, "%s: %s", d->cfg.workload.dir, strerror(-r));
        return r;
    }
    const char *reserved[] = {d->cfg.device.gateway_hostname};
    struct workload_config wc = {
        .iothub_hostname = d->cfg.device.iothub_hostname,
        .device_id = d->cfg.device.id,
        .hub_module_id = "edgeHub",
        .reserved_server_names = reserved,
        .n_reserved_server_names = 1,
        .identity_cert_lifetime_s = d->cfg.certificates.cert_lifetime_ms / 1000,
        .server_cert_lifetime_s = d->cfg.certificates.cert_lifetime_ms / 1000,
        .max_body = d->cfg.workload.max_body,
    };
    if ((r = workload_ctx_new(&wc, d->keys, d->ca, &w->ctx)) < 0)
        return r;
    return hs_server_new(d->base, routes, ARRAY_SIZE(routes), d, &w->srv);
}

int workload_server_add(struct ledged *d, const char *module, const char **ret_dir)
{
    struct workload_server *w = d->workload;
    struct workload_module *m = find(w, module);
    if (m) {
        if (ret_dir)
            *ret_dir = m->dir;
        return 0;
    }
    m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->d = d;
    m->name = strdup(module);
    m->dir = lstr_printf("%s/%s", d->cfg.workload.dir, module);
    m->path = lstr_printf("%s/%s/workload.sock", d->cfg.workload.dir, module);
    int r = (!m->name || !m->dir || !m->path) ? -ENOMEM : lfs_mkdir_p(m->dir, 0755);
    struct hs_limits l = HS_LIMITS_DEFAULT;
    l.max_connections = 32;
    l.max_inflight = (size_t)d->cfg.workload.max_concurrent;
    l.max_body = d->cfg.workload.max_body;
    l.max_header_bytes = 8192;
    l.request_timeout_ms = 10000;
    /* Reachable by any user inside the module's container (0666); on the host the 0700
     * workload directory keeps everyone but root out. */
    if (r == 0)
        r = hs_server_listen_unix(w->srv, m->path, 0666, (gid_t)-1, &l, m);
    if (r < 0) {
        log_error(COMP, "%s: cannot listen on %s: %s", module, m->path ? m->path : "",
                  strerror(-r));
        free(m->name);
        free(m->dir);
        free(m->path);
        free(m);
        return r;
    }
    m->next = w->mods;
    w->mods = m;
    if (ret_dir)
        *ret_dir = m->dir;
    return 0;
}

void workload_server_remove(struct ledged *d, const char *module)
{
    struct workload_server *w = d->workload;
    for (struct workload_module **pp = &w->mods; *pp; pp = &(*pp)->next) {
        struct workload_module *m = *pp;
        if (strcmp(m->name, module) != 0)
            continue;
        *pp = m->next;
        hs_server_unlisten(w->srv, m->path);
        rmdir(m->dir);
        free(m->name);
        free(m->dir);
        free(m->path);
        free(m);
        return;
    }
}

void workload_server_stop(struct ledged *d)
{
    struct workload_server *w = d->workload;
    if (!w)
        return;
    hs_server_free(w->srv);
    while (w->mods) {
        struct workload_module *m = w->mods;
        w->mods = m->next;
        free(m->name);
        free(m->dir);
        free(m->path);
        free(m);
    }
    workload_ctx_free(w->ctx);
    free(w);
    d->workload = NULL;
}
