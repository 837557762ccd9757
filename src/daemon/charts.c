/* charts.c — the samples behind the dashboard's charts (docs/dashboard.md "Charts"): every
 * dashboard.chart_interval (10 s) ledged takes one from what it already reads for /metrics —
 * each running module's memory (hoststats), the hub's message counters, connections and queue
 * depths (the hub's GET /status on its control socket) — into a ring of an hour
 * (dashboard/samples.h), served as GET /metrics/history. Nothing when the dashboard is off. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "base/json.h"
#include "base/timeutil.h"
#include "dashboard/samples.h"
#include "hoststats.h"
#include "ledged.h"
#include "log/log.h"
#include "net/http_client.h"

#define COMP "charts"
#define HOUR_MS (3600 * 1000)
#define MAX_SAMPLES 3600
#define HUB_TIMEOUT_MS 3000

struct charts {
    struct ledged *d;
    struct dash_samples *ring;
    struct event *timer;
    struct hc_client *hub;
    struct hc_transfer *t; /* the hub's status for the current sample, while asked */
    int64_t interval_ms;
    struct cgroup_mounts cgroups; /* as the metrics endpoint reads them */
    uint64_t host_mem;
};

static void put(struct charts *c, const char *prefix, const char *name, enum dash_series_kind k,
                double v)
{
    char key[DASH_SAMPLES_NAME_MAX + 1];
    if ((size_t)snprintf(key, sizeof(key), "%s%s", prefix, name) < sizeof(key))
        dash_samples_put(c->ring, key, k, v); /* beyond the series limit: counted, not charted */
}

static void hub_done(void *ud, int result, long status, struct lbuf *body)
{
    struct charts *c = ud;
    c->t = NULL;
    json_t *st = NULL;
    if (result < 0 || status != 200 || !body->data ||
        ljson_parse(body->data, body->len, &st, NULL) < 0)
        return; /* no hub (not deployed, restarting): a gap in its series */
    json_t *n = json_object_get(st, "counters");
    put(c, "hub.", "received", DASH_SERIES_COUNTER,
        (double)json_integer_value(json_object_get(n, "received")));
    put(c, "hub.", "delivered", DASH_SERIES_COUNTER,
        (double)json_integer_value(json_object_get(n, "delivered")));
    put(c, "hub.", "connections", DASH_SERIES_GAUGE,
        (double)json_integer_value(json_object_get(json_object_get(st, "connections"), "open")));
    size_t i;
    json_t *ep;
    json_int_t total = 0;
    json_array_foreach (json_object_get(st, "endpoints"), i, ep) {
        json_int_t depth = json_integer_value(json_object_get(ep, "depth"));
        total += depth;
        put(c, "queue.", ljson_str(ep, "endpoint") ?: "?", DASH_SERIES_GAUGE, (double)depth);
    }
    put(c, "hub.", "queued", DASH_SERIES_GAUGE, (double)total);
    json_decref(st);
}

static void take_sample(struct charts *c)
{
    struct ledged *d = c->d;
    hc_cancel(c->t); /* an answer later than the interval belongs to no sample */
    c->t = NULL;
    dash_samples_begin(c->ring, ltime_now_ms());
    json_t *am = agent_metrics_json(d->agent);
    size_t i;
    json_t *mod;
    json_array_foreach (json_object_get(am, "modules"), i, mod) {
        struct module_usage u;
        const char *name = ljson_str(mod, "name");
        if (name && hoststats_module(&c->cgroups, "/proc",
                                     (int)json_integer_value(json_object_get(mod, "pid")),
                                     ljson_str(mod, "containerId"), c->host_mem, &u) == 0)
            put(c, "memory.", name, DASH_SERIES_GAUGE, (double)u.memory_bytes);
    }
    json_decref(am);
    struct hc_request req = {
        .method = "GET",
        .unix_socket = d->cfg.hub.control_socket,
        .url = "http://localhost/status",
        .timeout_ms = HUB_TIMEOUT_MS < c->interval_ms ? HUB_TIMEOUT_MS : c->interval_ms / 2,
        .connect_timeout_ms = 1000,
        .max_response = 16u << 20,
        .on_done = hub_done,
        .ud = c,
    };
    c->t = hc_request(c->hub, &req);
}

static void on_timer(evutil_socket_t fd, short what, void *ud)
{
    (void)fd;
    (void)what;
    take_sample(ud);
}

int charts_start(struct ledged *d)
{
    if (!d->cfg.dashboard.enabled)
        return 0;
    struct charts *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->d = d;
    c->interval_ms = d->cfg.dashboard.chart_interval_ms;
    hoststats_cgroup_mounts("/proc/self/mountinfo", &c->cgroups);
    hoststats_memory_total(&c->host_mem);
    size_t n = (size_t)(HOUR_MS / c->interval_ms);
    if (n > MAX_SAMPLES)
        n = MAX_SAMPLES;
    int r = dash_samples_new(n ? n : 1, &c->ring);
    if (r < 0 || (r = hc_client_new(d->base, &c->hub)) < 0 ||
        !(c->timer = event_new(d->base, -1, EV_PERSIST, on_timer, c))) {
        dash_samples_free(c->ring);
        hc_client_free(c->hub);
        free(c);
        return r < 0 ? r : -ENOMEM;
    }
    struct timeval tv = {.tv_sec = c->interval_ms / 1000,
                         .tv_usec = (c->interval_ms % 1000) * 1000};
    event_add(c->timer, &tv);
    d->charts = c;
    take_sample(c);
    return 0;
}

void charts_stop(struct ledged *d)
{
    struct charts *c = d->charts;
    if (!c)
        return;
    event_free(c->timer);
    hc_cancel(c->t);
    hc_client_free(c->hub);
    dash_samples_free(c->ring);
    free(c);
    d->charts = NULL;
}

/* GET /metrics/history[?series=PREFIX]: the last hour of samples (dash_samples_json), with the
 * interval. */
void mgmt_metrics_history(struct hs_request *r, void *ud)
{
    struct ledged *d = ud;
    if (!d->charts) {
        hs_reply_error(r, 404, "no chart samples: the dashboard is off (dashboard.enabled)");
        return;
    }
    json_t *o = dash_samples_json(d->charts->ring, hs_request_query(r, "series"));
    json_object_set_new(o, "intervalSeconds", json_real((double)d->charts->interval_ms / 1000.0));
    hs_reply_json(r, 200, o);
}
