/* server.c — the hub's lifecycle (server.h): configuration and runtime file, route table,
 * durable store, periodic maintenance, reload on SIGHUP (a new deployment reaches the running hub
 * without a restart and without disturbing messages in flight), orderly shutdown. The one unit
 * that knows every other: it wires the heads and sinks into struct hub. */
#include "server.h"

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/str.h"
#include "base/timeutil.h"
#include "auth.h"
#include "clients.h"
#include "cloud.h"
#include "commit.h"
#include "control.h"
#include "database.h"
#include "endpoint.h"
#include "head_https.h"
#include "head_amqp.h"
#include "head_mqtt.h"
#include "head_ws.h"
#include "input.h"
#include "listener.h"
#include "methods.h"
#include "metrics.h"
#include "router.h"
#include "twin.h"
#include "upstream.h"
#include "log/log.h"
#include "route/route.h"
#include "store/store.h"

#define COMP "hub"
#define TICK_MS 200

struct server {
    struct event *tick_ev;
    struct event *sighup_ev, *sigterm_ev, *sigint_ev;
    int64_t last_prune_ms;
};

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
    SSL_CTX *ctx = listener_tls_context(&rt, err);
    if (!ctx && (h->cfg.hub.tls_port || h->cfg.hub.websocket_port || h->cfg.hub.amqp_port)) {
        route_table_free(routes);
        hub_runtime_clear(&rt);
        return -EINVAL;
    }
    /* Swap in; identities that changed lose their sessions. */
    if (ctx)
        listener_set_tls(h, ctx);
    struct hub_runtime old = h->rt;
    h->rt = rt;
    auth_identities_changed(h, &old);
    hub_runtime_clear(&old);
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
    for (size_t i = 0; i < HUB_SINK_COUNT; i++)
        if (h->sinks[i] && h->sinks[i]->reload)
            h->sinks[i]->reload(h);
    for (size_t i = 0; i < h->n_heads; i++)
        if (h->heads[i]->reload)
            h->heads[i]->reload(h);
    log_info(COMP, "configuration loaded: %zu routes, %zu endpoints, %zu module identities",
             h->routes ? h->routes->n_routes : 0, h->routes ? h->routes->n_sinks : 0,
             h->rt.n_modules);
    return 0;
}

/* ------------------------------------------------------------------ periodic work */

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct hub *h = arg;
    int64_t now = ltime_now_ms();
    int r = store_tick(h->store, now);
    if (r < 0)
        log_warn(COMP, "store maintenance: %s", strerror(-r));
    if (now - h->server->last_prune_ms > 5000) {
        h->server->last_prune_ms = now;
        endpoints_prune(h);
    }
    /* Interval syncs make queued acknowledgements true too. */
    commit_tick(h);
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

static int open_store(struct hub *h, struct lerr *err)
{
    struct store_options so;
    store_options_init(&so);
    so.max_bytes = store_cap(h);
    so.max_message_bytes = (uint32_t)h->max_packet;
    so.inflight_max = (uint32_t)MAX(h->cfg.hub.max_inflight, 1) * 4;
    so.sync = h->cfg.hub.fsync == CONFIG_FSYNC_ALWAYS ? STORE_SYNC_ALWAYS : STORE_SYNC_INTERVAL;
    so.sync_interval_ms = (uint32_t)h->cfg.hub.fsync_interval_ms;
    struct store_report rep;
    int r = store_open(h->queue_dir, &so, &h->store, &rep);
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
    return 0;
}

int hub_start(struct hub *h, struct lerr *err)
{
    h->started_ms = ltime_now_ms();
    h->max_packet = h->cfg.hub.max_packet_size + HUB_MAX_PACKET_OVERHEAD;
    h->runtime_path = lstr_printf("%s/hub/runtime.json", h->cfg.run_dir);
    /* The queues get a directory of their own: twins.db and its WAL sit beside it. */
    h->queue_dir = lstr_printf("%s/queues", h->cfg.hub.store_dir);
    h->server = calloc(1, sizeof(*h->server));
    if (!h->runtime_path || !h->queue_dir || !h->server)
        return -ENOMEM;
    /* The pipeline: the MQTT head (and MQTT over WebSockets, which hands its connections to
     * it once upgraded, or to the AMQP head for AMQPWSB10), the HTTPS API, AMQP, six sinks. */
    h->heads[h->n_heads++] = &mqtt_head_ops;
    h->heads[h->n_heads++] = &ws_head_ops;
    h->heads[h->n_heads++] =
        &https_head_ops; /* the requests of the WebSocket port that are no upgrade */
    h->heads[h->n_heads++] = &amqp_head_ops;
    h->sinks[HUB_SINK_INPUT] = &input_sink_ops;
    h->sinks[HUB_SINK_UPSTREAM] = &upstream_sink_ops;
    h->sinks[HUB_SINK_TWINS] = &twins_sink_ops;
    h->sinks[HUB_SINK_METHODS] = &methods_sink_ops;
    h->sinks[HUB_SINK_C2D] = &c2d_sink_ops;
    h->sinks[HUB_SINK_CLOUD] = &cloud_sink_ops;
    int r;
    if ((r = listener_start(h)) < 0 || (r = clients_start(h)) < 0 || (r = endpoints_start(h)) < 0 ||
        (r = router_start(h)) < 0 || (r = hub_metrics_start(h)) < 0)
        return lerr_set(err, r, "out of memory");
    if ((r = hub_load_runtime(h, err)) < 0)
        return r;
    if ((r = open_store(h, err)) < 0)
        return r;
    if ((r = endpoints_sync(h, h->routes, err)) < 0)
        return r;
    if ((r = commit_start(h)) < 0)
        return lerr_set(err, r, "group commit: %s", strerror(-r));
    if ((r = database_open(h)) < 0)
        return lerr_set(err, r, "twins database: %s", strerror(-r));
    for (size_t i = 0; i < HUB_SINK_COUNT; i++)
        if (h->sinks[i]->start && (r = h->sinks[i]->start(h, err)) < 0)
            return r;
    for (size_t i = 0; i < h->n_heads; i++)
        if ((r = h->heads[i]->start(h, err)) < 0)
            return r;
    if ((r = control_start(h)) < 0)
        return lerr_set(err, r, "control socket %s: %s", h->cfg.hub.control_socket, strerror(-r));

    struct server *sv = h->server;
    sv->tick_ev = event_new(h->base, -1, EV_PERSIST, tick_cb, h);
    sv->sighup_ev = evsignal_new(h->base, SIGHUP, sighup_cb, h);
    sv->sigterm_ev = evsignal_new(h->base, SIGTERM, sigterm_cb, h);
    sv->sigint_ev = evsignal_new(h->base, SIGINT, sigterm_cb, h);
    if (!sv->tick_ev || !sv->sighup_ev || !sv->sigterm_ev || !sv->sigint_ev)
        return -ENOMEM;
    /* Under fsync: interval the tick is what syncs: as often as hub.fsync_interval asks. */
    int64_t tick_ms = TICK_MS;
    if (h->cfg.hub.fsync == CONFIG_FSYNC_INTERVAL)
        tick_ms = MAX(MIN(tick_ms, h->cfg.hub.fsync_interval_ms), 5);
    struct timeval tv = {0, (suseconds_t)tick_ms * 1000};
    event_add(sv->tick_ev, &tv);
    event_add(sv->sighup_ev, NULL);
    event_add(sv->sigterm_ev, NULL);
    event_add(sv->sigint_ev, NULL);
    char tls[300] = "no TLS listener", plain[48] = "", ws[340] = "", amqp[300] = "";
    if (h->cfg.hub.tls_port)
        snprintf(tls, sizeof(tls), "MQTT over TLS on %s:%d", h->cfg.hub.bind, h->cfg.hub.tls_port);
    if (h->cfg.hub.plain_port)
        snprintf(plain, sizeof(plain), ", plain MQTT on 127.0.0.1:%d", h->cfg.hub.plain_port);
    if (h->cfg.hub.websocket_port)
        snprintf(ws, sizeof(ws), ", MQTT over WebSockets on wss://%s:%d%s", h->cfg.hub.bind,
                 h->cfg.hub.websocket_port, WS_PATH);
    if (h->cfg.hub.amqp_port)
        snprintf(amqp, sizeof(amqp), ", AMQP over TLS on %s:%d", h->cfg.hub.bind,
                 h->cfg.hub.amqp_port);
    log_info(COMP, "ledge-hub %s ready: %s%s%s%s, device %s", LEDGE_VERSION, tls, plain, ws, amqp,
             h->rt.device_id);
    return 0;
}

void hub_stop(struct hub *h)
{
    h->stopping = true;
    listener_close_all(h);
    /* What was accepted gets its acknowledgement before the store closes. */
    commit_stop(h);
    control_stop(h);
    for (size_t i = HUB_SINK_COUNT; i-- > 0;)
        if (h->sinks[i] && h->sinks[i]->stop)
            h->sinks[i]->stop(h);
    for (size_t i = h->n_heads; i-- > 0;)
        h->heads[i]->stop(h);
    h->n_heads = 0;
    database_close(h);
    endpoints_stop(h);
    if (h->store) {
        int r = store_close(h->store);
        if (r < 0)
            log_error(COMP, "closing the store: %s", strerror(-r));
        h->store = NULL;
    }
    router_stop(h);
    hub_metrics_stop(h);
    clients_stop(h);
    listener_stop(h);
    route_table_free(h->routes);
    h->routes = NULL;
    hub_runtime_clear(&h->rt);
    struct server *sv = h->server;
    if (sv) {
        struct event *evs[] = {sv->tick_ev, sv->sighup_ev, sv->sigterm_ev, sv->sigint_ev};
        for (size_t i = 0; i < ARRAY_SIZE(evs); i++)
            if (evs[i])
                event_free(evs[i]);
        free(sv);
        h->server = NULL;
    }
    hub_logs_free(h);
    free(h->runtime_path);
    h->runtime_path = NULL;
    free(h->queue_dir);
    h->queue_dir = NULL;
}
