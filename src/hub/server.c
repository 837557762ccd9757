/* hub.c — the hub's lifecycle: configuration and runtime file, route table, durable store, TLS
 * context and listeners, periodic maintenance, reload on SIGHUP (a new deployment reaches the
 * running hub without a restart and without disturbing messages in flight), orderly shutdown. */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/str.h"
#include "base/timeutil.h"
#include "hub/hub.h"
#include "log/log.h"

#define COMP "hub"
#define TICK_MS 200

void hub_log_once(struct hub *h, const char *key, const char *fmt, ...)
{
    if (lstrv_contains(&h->logged_once, key))
        return;
    if (h->logged_once.n < 4096)
        lstrv_push(&h->logged_once, key);
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_warn(COMP, "%s (logged once; see `ledge hub status` for counts)", msg);
}

/* ------------------------------------------------------------------ TLS */

static SSL_CTX *tls_context(const struct hub_runtime *rt, struct lerr *err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        lerr_set(err, -ENOMEM, "TLS: cannot create a context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (!rt->server_cert || !rt->server_key ||
        SSL_CTX_use_certificate_chain_file(ctx, rt->server_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, rt->server_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        char buf[256];
        ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
        lerr_set(err, -EINVAL, "TLS: server certificate %s / key %s: %s",
                 rt->server_cert ? rt->server_cert : "(none)",
                 rt->server_key ? rt->server_key : "(none)", buf);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* ------------------------------------------------------------------ runtime and routes */

/* storeLimits.maxSizeBytes of the deployment, else hub.max_queued_bytes: one cap for the
 * whole store, as IoT Edge applies storeLimits. */
static uint64_t store_cap(const struct hub *h)
{
    return h->routes && h->routes->max_size_bytes > 0 ? (uint64_t)h->routes->max_size_bytes
                                                      : h->cfg.hub.max_queued_bytes;
}

int hub_load_runtime(struct hub *h, struct lerr *err)
{
    struct hub_runtime rt = {0};
    int r = hub_runtime_load(h->runtime_path, &rt, err);
    if (r < 0)
        return r;
    struct lstrv errors = LSTRV_INIT;
    struct route_table *routes = NULL;
    if (rt.edge_hub) {
        r = route_table_new(rt.edge_hub, &routes, &errors);
        if (r < 0) {
            char *all = lstrv_join(&errors, "; ");
            lerr_set(err, r, "$edgeHub: %s", all ? all : "invalid");
            free(all);
            lstrv_free(&errors);
            hub_runtime_clear(&rt);
            return r;
        }
    }
    lstrv_free(&errors);
    SSL_CTX *ctx = tls_context(&rt, err);
    if (!ctx && h->cfg.hub.tls_port) {
        route_table_free(routes);
        hub_runtime_clear(&rt);
        return -EINVAL;
    }
    /* Swap in. Existing connections keep their TLS session (SSL objects hold their context). */
    if (ctx) {
        SSL_CTX_free(h->ssl_ctx);
        h->ssl_ctx = ctx;
    }
    hub_runtime_clear(&h->rt);
    h->rt = rt;
    route_table_free(h->routes);
    h->routes = routes;
    if (h->store) {
        struct store_stats ss;
        store_get_stats(h->store, &ss);
        if (ss.max_bytes != store_cap(h)) {
            log_info(COMP, "store cap: %llu bytes (was %llu)", (unsigned long long)store_cap(h),
                     (unsigned long long)ss.max_bytes);
            store_set_max_bytes(h->store, store_cap(h));
        }
        int rr = endpoints_sync(h, h->routes, err);
        if (rr < 0)
            return rr;
    }
    twins_runtime_changed(h);
    log_info(COMP, "configuration loaded: %zu routes, %zu endpoints, %zu module identities",
             h->routes ? h->routes->n_routes : 0, h->routes ? h->routes->n_sinks : 0,
             h->rt.n_modules);
    return 0;
}

/* ------------------------------------------------------------------ listeners */

static void accept_tls(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                       void *arg)
{
    conn_accept(arg, fd, true);
}

static void accept_plain(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                         void *arg)
{
    conn_accept(arg, fd, false);
}

static struct evconnlistener *listen_on(struct hub *h, const char *addr, int port, bool tls,
                                        struct lerr *err)
{
    struct sockaddr_storage ss = {0};
    socklen_t len;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, addr, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        len = sizeof(*a4);
    } else if (inet_pton(AF_INET6, addr, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        len = sizeof(*a6);
    } else {
        lerr_set(err, -EINVAL, "hub.bind: \"%s\" is not an IP address", addr);
        return NULL;
    }
    struct evconnlistener *l =
        evconnlistener_new_bind(h->base, tls ? accept_tls : accept_plain, h,
                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE,
                                512, (struct sockaddr *)&ss, (int)len);
    if (!l)
        lerr_set(err, neg_errno(), "cannot listen on %s:%d: %s", addr, port, strerror(errno));
    return l;
}

/* ------------------------------------------------------------------ periodic work */

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct hub *h = arg;
    int64_t now = ltime_now_ms();
    int r = store_tick(h->store, now);
    if (r < 0)
        log_warn(COMP, "store maintenance: %s", strerror(-r));
    if (now - h->last_prune_ms > 5000) {
        h->last_prune_ms = now;
        endpoints_prune(h);
    }
    /* Interval syncs make queued acknowledgements true too. */
    if (h->n_acks)
        router_schedule_commit(h);
    endpoints_deliver_all(h);
}

static void sighup_cb(evutil_socket_t fd, short what, void *arg)
{
    struct hub *h = arg;
    struct lerr err = {0};
    if (hub_load_runtime(h, &err) < 0)
        log_error(COMP, "reload: %s; keeping the previous configuration", lerr_str(&err));
}

static void sigterm_cb(evutil_socket_t fd, short what, void *arg)
{
    struct hub *h = arg;
    log_info(COMP, "shutting down");
    event_base_loopbreak(h->base);
}

/* ------------------------------------------------------------------ lifecycle */

int hub_start(struct hub *h, struct lerr *err)
{
    h->started_ms = ltime_now_ms();
    h->max_packet = h->cfg.hub.max_packet_size + HUB_MAX_PACKET_OVERHEAD;
    h->runtime_path = lstr_printf("%s/hub/runtime.json", h->cfg.run_dir);
    /* The queues get a directory of their own: twins.db and its WAL sit beside it. */
    h->queue_dir = lstr_printf("%s/queues", h->cfg.hub.store_dir);
    if (!h->runtime_path || !h->queue_dir)
        return -ENOMEM;
    int r = hub_load_runtime(h, err);
    if (r < 0)
        return r;

    struct store_options so;
    store_options_init(&so);
    so.max_bytes = store_cap(h);
    so.max_message_bytes = (uint32_t)h->max_packet;
    so.inflight_max = (uint32_t)MAX(h->cfg.hub.max_inflight, 1) * 4;
    so.sync = h->cfg.hub.fsync == CONFIG_FSYNC_ALWAYS ? STORE_SYNC_ALWAYS : STORE_SYNC_INTERVAL;
    so.sync_interval_ms = (uint32_t)h->cfg.hub.fsync_interval_ms;
    struct store_report rep;
    r = store_open(h->queue_dir, &so, &h->store, &rep);
    if (r < 0) {
        lerr_set(err, r, "%s", lerr_str(&rep.error));
        store_report_free(&rep);
        return r;
    }
    if (store_report_has_findings(&rep)) {
        log_warn(COMP,
                 "store salvage: %llu truncated bytes, %llu corrupt bytes in %u regions, %u "
                 "files removed, %u checkpoints lost, %u queues unreadable",
                 (unsigned long long)rep.truncated_bytes, (unsigned long long)rep.corrupt_bytes,
                 rep.corrupt_regions, rep.files_removed, rep.checkpoints_lost, rep.queues_failed);
        for (size_t i = 0; i < rep.notes.n; i++)
            log_warn(COMP, "store salvage: %s", rep.notes.v[i]);
        if (rep.notes_dropped)
            log_warn(COMP, "store salvage: %u more findings not listed", rep.notes_dropped);
    }
    log_info(COMP, "store %s: %u queues, %llu messages pending", h->queue_dir, rep.queues,
             (unsigned long long)rep.pending);
    store_report_free(&rep);
    if ((r = endpoints_sync(h, h->routes, err)) < 0)
        return r;
    if ((r = commit_start(h)) < 0)
        return lerr_set(err, r, "group commit: %s", strerror(-r));
    if ((r = twins_start(h, err)) < 0 || (r = methods_start(h)) < 0)
        return r;
    int n_sessions = sessions_load(h);
    if (n_sessions < 0)
        log_warn(COMP, "persistent sessions: cannot read them: %s", strerror(-n_sessions));
    else if (n_sessions > 0)
        log_info(COMP, "%d persistent sessions restored", n_sessions);

    if (h->cfg.hub.tls_port) {
        h->tls_listener = listen_on(h, h->cfg.hub.bind, h->cfg.hub.tls_port, true, err);
        if (!h->tls_listener)
            return err->code ? err->code : -EIO;
    }
    if (h->cfg.hub.plain_port) {
        /* Debugging and conformance tools only: never beyond this machine. */
        h->plain_listener = listen_on(h, "127.0.0.1", h->cfg.hub.plain_port, false, err);
        if (!h->plain_listener)
            return err->code ? err->code : -EIO;
    }
    if ((r = control_start(h)) < 0)
        return lerr_set(err, r, "control socket %s: %s", h->cfg.hub.control_socket, strerror(-r));
    if ((r = upstream_start(h)) < 0)
        return lerr_set(err, r, "upstream: %s", strerror(-r));

    h->tick_ev = event_new(h->base, -1, EV_PERSIST, tick_cb, h);
    h->sighup_ev = evsignal_new(h->base, SIGHUP, sighup_cb, h);
    h->sigterm_ev = evsignal_new(h->base, SIGTERM, sigterm_cb, h);
    h->sigint_ev = evsignal_new(h->base, SIGINT, sigterm_cb, h);
    if (!h->tick_ev || !h->sighup_ev || !h->sigterm_ev || !h->sigint_ev)
        return -ENOMEM;
    /* Under fsync: interval the tick is what syncs: as often as hub.fsync_interval asks. */
    int64_t tick_ms = TICK_MS;
    if (h->cfg.hub.fsync == CONFIG_FSYNC_INTERVAL)
        tick_ms = MAX(MIN(tick_ms, h->cfg.hub.fsync_interval_ms), 5);
    struct timeval tv = {0, (suseconds_t)tick_ms * 1000};
    event_add(h->tick_ev, &tv);
    event_add(h->sighup_ev, NULL);
    event_add(h->sigterm_ev, NULL);
    event_add(h->sigint_ev, NULL);
    char tls[300] = "no TLS listener", plain[48] = "";
    if (h->cfg.hub.tls_port)
        snprintf(tls, sizeof(tls), "MQTT over TLS on %s:%d", h->cfg.hub.bind, h->cfg.hub.tls_port);
    if (h->cfg.hub.plain_port)
        snprintf(plain, sizeof(plain), ", plain MQTT on 127.0.0.1:%d", h->cfg.hub.plain_port);
    log_info(COMP, "ledge-hub %s ready: %s%s, device %s", LEDGE_VERSION, tls, plain,
             h->rt.device_id);
    return 0;
}

void hub_stop(struct hub *h)
{
    h->stopping = true;
    if (h->tls_listener)
        evconnlistener_free(h->tls_listener);
    if (h->plain_listener)
        evconnlistener_free(h->plain_listener);
    h->tls_listener = h->plain_listener = NULL;
    /* What was accepted gets its acknowledgement before the store closes. */
    if (h->store) {
        router_commit(h);
        commit_stop(h);
        router_commit(h); /* what was left after the last batch (synchronously now) */
    }
    control_stop(h);
    upstream_stop(h);
    methods_stop(h);
    conn_free_all(h);
    session_free_all(h);
    twins_stop(h);
    endpoints_free(h);
    if (h->store) {
        int r = store_close(h->store);
        if (r < 0)
            log_error(COMP, "closing the store: %s", strerror(-r));
        h->store = NULL;
    }
    route_table_free(h->routes);
    h->routes = NULL;
    hub_runtime_clear(&h->rt);
    SSL_CTX_free(h->ssl_ctx);
    h->ssl_ctx = NULL;
    struct event *evs[] = {h->tick_ev,   h->sighup_ev, h->sigterm_ev,
                           h->sigint_ev, h->commit_ev, h->deliver_ev};
    for (size_t i = 0; i < ARRAY_SIZE(evs); i++)
        if (evs[i])
            event_free(evs[i]);
    h->tick_ev = h->sighup_ev = h->sigterm_ev = h->sigint_ev = h->commit_ev = h->deliver_ev = NULL;
    free(h->acks);
    h->acks = NULL;
    free(h->matches);
    h->matches = NULL;
    h->cap_matches = 0;
    h->n_acks = h->cap_acks = 0;
    lbuf_free(&h->scratch_props);
    lbuf_free(&h->scratch_msg);
    lbuf_free(&h->scratch_topic);
    lstrv_free(&h->logged_once);
    free(h->runtime_path);
    h->runtime_path = NULL;
    free(h->queue_dir);
    h->queue_dir = NULL;
}

json_t *hub_status_json(struct hub *h)
{
    struct store_stats ss;
    store_get_stats(h->store, &ss);
    size_t connected = 0;
    json_t *mods = json_array();
    for (struct session *s = h->sessions; s; s = s->next) {
        connected += s->conn != NULL;
        json_array_append_new(mods, json_pack("{s:s, s:b, s:b, s:i}", "clientId", s->client_id,
                                              "connected", s->conn != NULL, "persistent", !s->clean,
                                              "subscriptions", (int)s->n_subs));
    }
    uint64_t expired = h->n.expired;
    for (size_t i = 0; i < store_queue_count(h->store); i++) {
        struct queue_stats qs;
        queue_get_stats(store_queue_at(h->store, i), &qs);
        expired += qs.expired;
    }
    const struct hub_counters *n = &h->n;
    const struct {
        const char *name;
        uint64_t v;
    } counters[] = {
        {"received", n->received},
        {"routed", n->routed},
        {"unrouted", n->unrouted},
        {"delivered", n->delivered},
        {"acked", n->acked},
        {"direct", n->direct},
        {"expired", expired},
        {"refused", n->refused},
        {"unauthorized", n->unauthorized},
        {"authFailures", n->auth_failures},
        {"malformed", n->malformed},
        {"oversized", n->oversized},
        {"qos2Refused", n->qos2_refused},
        {"subscriptionsRefused", n->subscriptions_refused},
        {"connectionsRefused", n->connections_refused},
        {"connectionsEvicted", n->connections_evicted},
        {"connectionsTotal", n->connections_total},
    };
    json_t *cj = json_object();
    for (size_t i = 0; i < ARRAY_SIZE(counters); i++)
        json_object_set_new(cj, counters[i].name, json_integer((json_int_t)counters[i].v));
    return json_pack(
        "{s:s, s:I, s:{s:I, s:I, s:I, s:I}, s:o, s:o, s:o, s:{s:I, s:I, s:I, s:I, s:s}, s:o}",
        "version", LEDGE_VERSION, "uptimeSeconds",
        (json_int_t)((ltime_now_ms() - h->started_ms) / 1000), "connections", "open",
        (json_int_t)(h->n_conns - h->n_closing), "max", (json_int_t)h->cfg.hub.max_connections,
        "modules", (json_int_t)connected, "sessions", (json_int_t)h->n_sessions, "sessions", mods,
        "counters", cj, "endpoints", endpoints_status(h), "store", "bytes", (json_int_t)ss.bytes,
        "maxBytes", (json_int_t)ss.max_bytes, "syncs", (json_int_t)ss.syncs, "syncErrors",
        (json_int_t)ss.sync_errors, "fsync", store_sync_policy_to_string(ss.sync), "upstream",
        upstream_status(h));
}
