/* metrics.c — the hub's labelled counters and summaries (metrics.h): a fixed-size hash table of
 * series, each the metric and its label values, found without allocating on the message path; a
 * summary's series has its window of quantiles (base/quantile.h). */
#include "metrics.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/quantile.h"
#include "base/timeutil.h"

#define BUCKETS 1024

struct series {
    enum hub_metric m;
    char *values[HUB_METRICS_MAX_LABELS];
    uint64_t value;          /* a counter's value, a summary's count */
    double sum;              /* a summary's */
    struct lquant *q;        /* a summary's quantiles */
    struct series *next;     /* bucket chain */
    struct series *next_all; /* the metric's series in creation order */
};

struct hub_metrics {
    struct series *buckets[BUCKETS];
    struct series *all[HM_COUNT], **tail[HM_COUNT];
    size_t n, max;
    uint64_t dropped;
};

/* IoT Edge's objectives (edge-util's prometheus.net wrappers): its timers' and histograms'
 * (MetricsTimer, MetricsHistogram), and its durations' (MetricsDuration). */
const double hub_metrics_timer_objectives[HUB_METRICS_TIMER_OBJECTIVES] = {0.5,  0.9,   0.95,
                                                                           0.99, 0.999, 0.9999};
const double hub_metrics_duration_objectives[HUB_METRICS_DURATION_OBJECTIVES] = {0.1, 0.5, 0.9,
                                                                                 0.99};
#define TIMER hub_metrics_timer_objectives, HUB_METRICS_TIMER_OBJECTIVES
#define DURATION hub_metrics_duration_objectives, HUB_METRICS_DURATION_OBJECTIVES

static const struct {
    const char *name;
    size_t n;
    const char *labels[HUB_METRICS_MAX_LABELS];
    bool summary;
    const double *objectives;
    size_t n_objectives;
} metric_defs[HM_COUNT] = {
    [HM_MESSAGES_RECEIVED] = {"edgehub_messages_received_total", 2, {"id", "route_output"}},
    [HM_MESSAGES_SENT] = {"edgehub_messages_sent_total",
                          5,
                          {"from", "to", "from_route_output", "to_route_input", "priority"}},
    [HM_MESSAGES_DROPPED] = {"edgehub_messages_dropped_total",
                             3,
                             {"reason", "from", "from_route_output"}},
    [HM_MESSAGES_UNACK] = {"edgehub_messages_unack_total",
                           3,
                           {"reason", "from", "from_route_output"}},
    [HM_CLIENT_CONNECT_FAIL] = {"edgehub_client_connect_failed_total",
                                3,
                                {"id", "reason", "protocol"}},
    [HM_DIRECT_METHODS] = {"edgehub_direct_methods_total", 2, {"from", "to"}},
    [HM_GETTWIN] = {"edgehub_gettwin_total", 2, {"source", "id"}},
    [HM_REPORTED_PROPERTIES] = {"edgehub_reported_properties_total", 2, {"target", "id"}},
    [HM_MESSAGE_SIZE] = {"edgehub_message_size_bytes", 1, {"id"}, true, TIMER},
    [HM_MESSAGE_PROCESS_DURATION] =
        {"edgehub_message_process_duration_seconds", 3, {"from", "to", "priority"}, true, DURATION},
    [HM_MESSAGE_SEND_DURATION] = {"edgehub_message_send_duration_seconds",
                                  4,
                                  {"from", "to", "from_route_output", "to_route_input"},
                                  true,
                                  TIMER},
    [HM_GETTWIN_DURATION] = {"edgehub_gettwin_duration_seconds", 2, {"source", "id"}, true, TIMER},
    [HM_REPORTED_DURATION] =
        {"edgehub_reported_properties_update_duration_seconds", 2, {"target", "id"}, true, TIMER},
    [HM_METHOD_DURATION] =
        {"edgehub_direct_method_duration_seconds", 2, {"from", "to"}, true, TIMER},
};

static void series_free(struct series *s)
{
    for (size_t i = 0; i < HUB_METRICS_MAX_LABELS; i++)
        free(s->values[i]);
    lquant_fini(s->q);
    free(s->q);
    free(s);
}

int hub_metrics_start(struct hub *h)
{
    struct hub_metrics *hm = calloc(1, sizeof(*hm));
    if (!hm)
        return -ENOMEM;
    for (int m = 0; m < HM_COUNT; m++)
        hm->tail[m] = &hm->all[m];
    hm->max = h->cfg.metrics.max_series > 0 ? (size_t)h->cfg.metrics.max_series : 4096;
    h->metrics = hm;
    return 0;
}

void hub_metrics_stop(struct hub *h)
{
    struct hub_metrics *hm = h->metrics;
    if (!hm)
        return;
    for (int m = 0; m < HM_COUNT; m++)
        for (struct series *s = hm->all[m], *next; s; s = next) {
            next = s->next_all;
            series_free(s);
        }
    free(hm);
    h->metrics = NULL;
}

static uint64_t hash(enum hub_metric m, const char *const *values, size_t n)
{
    uint64_t x = 1469598103934665603ull ^ (uint64_t)m; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        for (const char *p = values[i] ? values[i] : ""; *p; p++)
            x = (x ^ (unsigned char)*p) * 1099511628211ull;
        x = (x ^ 0xff) * 1099511628211ull; /* separator: ("ab","") differs from ("a","b") */
    }
    return x;
}

static bool same(const struct series *s, enum hub_metric m, const char *const *values, size_t n)
{
    if (s->m != m)
        return false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(s->values[i], values[i] ? values[i] : "") != 0)
            return false;
    return true;
}

/* The series of m with these label values, made when it is new; NULL beyond the bound (or out
 * of memory), which the caller counts as dropped. */
static struct series *series_get(struct hub_metrics *hm, enum hub_metric m,
                                 const char *const *values)
{
    size_t nl = metric_defs[m].n;
    struct series **b = &hm->buckets[hash(m, values, nl) % BUCKETS];
    for (struct series *s = *b; s; s = s->next)
        if (same(s, m, values, nl))
            return s;
    struct series *s = hm->n < hm->max ? calloc(1, sizeof(*s)) : NULL;
    if (!s)
        return NULL;
    s->m = m;
    bool ok = true;
    for (size_t i = 0; i < nl; i++)
        ok = ok && (s->values[i] = strdup(values[i] ? values[i] : ""));
    if (ok && metric_defs[m].summary) {
        s->q = malloc(sizeof(*s->q));
        if (s->q)
            lquant_init(s->q, HUB_METRICS_QUANTILE_MAX_AGE_MS);
        ok = s->q != NULL;
    }
    if (!ok) {
        series_free(s);
        return NULL;
    }
    s->next = *b;
    *b = s;
    *hm->tail[m] = s;
    hm->tail[m] = &s->next_all;
    hm->n++;
    return s;
}

void hub_metrics_add(struct hub *h, enum hub_metric m, const char *const *values, uint64_t n)
{
    struct hub_metrics *hm = h->metrics;
    if (!hm || m >= HM_COUNT)
        return;
    struct series *s = series_get(hm, m, values);
    if (s)
        s->value += n;
    else
        hm->dropped += n;
}

struct hub_series *hub_metrics_summary(struct hub *h, enum hub_metric m, const char *const *values)
{
    struct hub_metrics *hm = h->metrics;
    if (!hm || m >= HM_COUNT || !metric_defs[m].summary)
        return NULL;
    return (struct hub_series *)series_get(hm, m, values);
}

void hub_metrics_observe_series(struct hub *h, struct hub_series *hs, double x)
{
    struct hub_metrics *hm = h->metrics;
    struct series *s = (struct series *)hs;
    if (!hm)
        return;
    if (!s) {
        hm->dropped++;
        return;
    }
    s->value++;
    s->sum += x;
    /* out of memory for a wider span: the count and sum have it, the quantiles not */
    (void)lquant_observe(s->q, x, ltime_mono_ms());
}

void hub_metrics_observe(struct hub *h, enum hub_metric m, const char *const *values, double x)
{
    struct hub_metrics *hm = h->metrics;
    if (!hm || m >= HM_COUNT || !metric_defs[m].summary)
        return;
    hub_metrics_observe_series(h, hub_metrics_summary(h, m, values), x);
}

int64_t hub_metrics_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

bool hub_metrics_is_summary(enum hub_metric m)
{
    return m < HM_COUNT && metric_defs[m].summary;
}

const char *hub_metrics_client_id(const char *device, const char *module, char *buf, size_t size)
{
    if (module && *module)
        snprintf(buf, size, "%s/%s", device ? device : "", module);
    else
        snprintf(buf, size, "%s", device ? device : "");
    return buf;
}

void hub_metrics_sender(const struct hub_message *m, char *id, size_t size, const char **output)
{
    hub_metrics_client_id(m->sys[IOTHUB_PROP_CONNECTION_DEVICE_ID],
                          m->sys[IOTHUB_PROP_CONNECTION_MODULE_ID], id, size);
    *output = m->sys[IOTHUB_PROP_OUTPUT_NAME] ? m->sys[IOTHUB_PROP_OUTPUT_NAME] : "";
}

struct hub_series *hub_metrics_send_series(struct hub *h, const struct hub_message *m,
                                           const char *to, const char *input)
{
    if (!h->metrics)
        return NULL;
    char from[300];
    const char *output;
    hub_metrics_sender(m, from, sizeof(from), &output);
    return hub_metrics_summary(h, HM_MESSAGE_SEND_DURATION,
                               (const char *[]){from, to, output, input ? input : ""});
}

void hub_metrics_send_done(struct hub *h, struct hub_series *s, int64_t handed_us)
{
    if (!h->metrics || handed_us <= 0)
        return;
    int64_t us = hub_metrics_now_us() - handed_us;
    hub_metrics_observe_series(h, s, (double)(us > 0 ? us : 0) / 1e6);
}

void hub_metrics_sent(struct hub *h, const struct hub_message *m, const char *to, const char *input,
                      unsigned prio)
{
    if (!h->metrics)
        return;
    char from[300], p[16];
    const char *output;
    hub_metrics_sender(m, from, sizeof(from), &output);
    hub_metrics_priority(prio, p, sizeof(p));
    hub_metrics_add(h, HM_MESSAGES_SENT, (const char *[]){from, to, output, input, p}, 1);
    /* IoT Edge's processing time: from the message's enqueuing to its hand-off */
    int64_t waited = m->enqueued_ms > 0 ? ltime_now_ms() - m->enqueued_ms : -1;
    if (waited >= 0)
        hub_metrics_observe(h, HM_MESSAGE_PROCESS_DURATION, (const char *[]){from, to, p},
                            (double)waited / 1000.0);
}

const char *hub_metrics_priority(unsigned prio, char *buf, size_t size)
{
    if (prio <= 9)
        snprintf(buf, size, "%u", prio);
    else
        snprintf(buf, size, "%s", HUB_METRICS_DEFAULT_PRIORITY);
    return buf;
}

size_t hub_metrics_series(struct hub *h)
{
    return h->metrics ? h->metrics->n : 0;
}

size_t hub_metrics_bytes(struct hub *h)
{
    struct hub_metrics *hm = h->metrics;
    if (!hm)
        return 0;
    size_t n = sizeof(*hm);
    for (int m = 0; m < HM_COUNT; m++)
        for (struct series *s = hm->all[m]; s; s = s->next_all) {
            n += sizeof(*s);
            for (size_t i = 0; i < metric_defs[m].n; i++)
                n += strlen(s->values[i]) + 1;
            if (s->q)
                n += sizeof(*s->q) + lquant_bytes(s->q);
        }
    return n;
}

uint64_t hub_metrics_dropped(struct hub *h)
{
    return h->metrics ? h->metrics->dropped : 0;
}

const char *hub_metrics_name(enum hub_metric m)
{
    return m < HM_COUNT ? metric_defs[m].name : NULL;
}

void hub_metrics_write(struct hub *h, enum hub_metric m, struct prom_writer *w,
                       const struct prom_label *extra, size_t n_extra)
{
    struct hub_metrics *hm = h->metrics;
    if (!hm || m >= HM_COUNT)
        return;
    struct prom_label labels[HUB_METRICS_MAX_LABELS + 2];
    size_t nl = metric_defs[m].n;
    if (n_extra > 2)
        n_extra = 2;
    int64_t now = ltime_mono_ms();
    for (struct series *s = hm->all[m]; s; s = s->next_all) {
        for (size_t i = 0; i < nl; i++)
            labels[i] = (struct prom_label){metric_defs[m].labels[i], s->values[i]};
        for (size_t i = 0; i < n_extra; i++)
            labels[nl + i] = extra[i];
        if (metric_defs[m].summary) {
            double v[HUB_METRICS_TIMER_OBJECTIVES];
            if (lquant_quantiles(s->q, now, metric_defs[m].objectives, metric_defs[m].n_objectives,
                                 v) == 0)
                prom_quantiles(w, labels, nl + n_extra, metric_defs[m].objectives, v,
                               metric_defs[m].n_objectives);
            prom_sample(w, "_sum", labels, nl + n_extra, s->sum);
            prom_sample(w, "_count", labels, nl + n_extra, (double)s->value);
        } else {
            prom_sample(w, NULL, labels, nl + n_extra, (double)s->value);
        }
    }
}

json_t *hub_metrics_status(struct hub *h)
{
    struct hub_metrics *hm = h->metrics;
    json_t *arr = json_array();
    for (int m = 0; hm && m < HM_COUNT; m++)
        for (struct series *s = hm->all[m]; s && arr; s = s->next_all) {
            json_t *labels = json_object();
            for (size_t i = 0; labels && i < metric_defs[s->m].n; i++)
                json_object_set_new(labels, metric_defs[s->m].labels[i], json_string(s->values[i]));
            json_t *o = json_pack("{s:s, s:o, s:I}", "name", metric_defs[s->m].name, "labels",
                                  labels, "value", (json_int_t)s->value);
            if (o && metric_defs[s->m].summary)
                json_object_set_new(o, "sum", json_real(s->sum));
            json_array_append_new(arr, o);
        }
    return json_pack("{s:o, s:I}", "series", arr, "seriesDropped",
                     (json_int_t)(hm ? hm->dropped : 0));
}
