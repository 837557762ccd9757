/* metrics.h — the hub's counters by label (docs/metrics.md): messages received per sender and
 * output, sent per sender, target, input and priority, dropped and unacknowledged per reason and
 * sender, failed connects per client, direct methods, twin reads and reported-property updates.
 * The stems and labels are IoT Edge's built-in metrics' (edgehub_<stem>_total); `ledge hub
 * status` carries them under "metrics" and exposition.c writes them out, the summaries with the
 * quantiles of their last 10 minutes (base/quantile.h). The number of series is bounded
 * (metrics.max_series); counts for a new series beyond it are only summed in "seriesDropped".
 * Counting allocates only for a series seen for the first time, and when a summary's values
 * leave the span its bins cover (at most LQUANT_MAX_BINS). */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/prom.h"
#include "hub.h"
#include "message.h"

#define HUB_METRICS_MAX_LABELS 5
/* IoT Edge's priority label for routes without a priority (RouteFactory.DefaultPriority) */
#define HUB_METRICS_DEFAULT_PRIORITY "2000000000"

enum hub_metric {
    HM_MESSAGES_RECEIVED,   /* id, route_output */
    HM_MESSAGES_SENT,       /* from, to, from_route_output, to_route_input, priority */
    HM_MESSAGES_DROPPED,    /* reason (no_route), from, from_route_output */
    HM_MESSAGES_UNACK,      /* reason (storage_failure), from, from_route_output */
    HM_CLIENT_CONNECT_FAIL, /* id, reason, protocol */
    HM_DIRECT_METHODS,      /* from, to */
    HM_GETTWIN,             /* source (edge_hub), id */
    HM_REPORTED_PROPERTIES, /* target (edge_hub), id */
    /* summaries (_sum and _count): hub_metrics_observe() */
    HM_MESSAGE_SIZE,             /* id: a received message's body, bytes */
    HM_MESSAGE_PROCESS_DURATION, /* from, to, priority: enqueued to handed to the receiver, s */
    HM_MESSAGE_SEND_DURATION,    /* from, to, from_route_output, to_route_input: handed to the
                                    receiver to its acknowledgement, s */
    HM_GETTWIN_DURATION,         /* source (edge_hub), id: a twin read to its answer, s */
    HM_REPORTED_DURATION,        /* target (edge_hub), id: a reported patch to its answer, s */
    HM_METHOD_DURATION,          /* from, to: a direct method call to its answer or timeout, s */
    HM_COUNT
};

/* A summary's quantiles cover its last 8 to 10 minutes, as prometheus-net's defaults (MaxAge 10
 * minutes, 5 age buckets) that IoT Edge keeps. */
#define HUB_METRICS_QUANTILE_MAX_AGE_MS (10 * 60 * 1000)
#define HUB_METRICS_TIMER_OBJECTIVES 6
#define HUB_METRICS_DURATION_OBJECTIVES 4
/* IoT Edge's quantiles: its timers' and histograms' {0.5, 0.9, 0.95, 0.99, 0.999, 0.9999}, its
 * durations' {0.1, 0.5, 0.9, 0.99} */
extern const double hub_metrics_timer_objectives[HUB_METRICS_TIMER_OBJECTIVES];
extern const double hub_metrics_duration_objectives[HUB_METRICS_DURATION_OBJECTIVES];

/* One series of a summary, kept until the hub stops (so a handle stays valid that long). */
struct hub_series;

int hub_metrics_start(struct hub *h);
void hub_metrics_stop(struct hub *h);
/* Add n to the series of m with these label values (as many as m has; NULL is ""). */
void hub_metrics_add(struct hub *h, enum hub_metric m, const char *const *values, uint64_t n);
/* One observation x of the summary m: its count grows by one, its sum by x, its window of
 * quantiles takes it. */
void hub_metrics_observe(struct hub *h, enum hub_metric m, const char *const *values, double x);
/* The series of summary m with these label values (made when new), NULL beyond the bound; and
 * an observation of it (NULL: counted as dropped). */
struct hub_series *hub_metrics_summary(struct hub *h, enum hub_metric m, const char *const *values);
void hub_metrics_observe_series(struct hub *h, struct hub_series *s, double x);
/* edgehub_message_send_duration_seconds: the series of m handed to "to" (input "" upstream),
 * resolved at the hand-off and kept with the delivery in flight; at its acknowledgement, the
 * time since handed_us (hub_metrics_now_us() at the hand-off) is observed. */
struct hub_series *hub_metrics_send_series(struct hub *h, const struct hub_message *m,
                                           const char *to, const char *input);
void hub_metrics_send_done(struct hub *h, struct hub_series *s, int64_t handed_us);
/* A monotonic clock in microseconds, for the durations observed. */
int64_t hub_metrics_now_us(void);
/* Is m a summary (written as NAME_sum and NAME_count)? */
bool hub_metrics_is_summary(enum hub_metric m);
/* A message was handed to a receiver: edgehub_messages_sent_total from the message's sender and
 * output to "to" (IoT Edge's id of a client, or "upstream") and its input ("" upstream). */
void hub_metrics_sent(struct hub *h, const struct hub_message *m, const char *to, const char *input,
                      unsigned prio);
/* The sender labels of m: IoT Edge's id "<device>/<module>" (into id) and its output. */
void hub_metrics_sender(const struct hub_message *m, char *id, size_t size, const char **output);
/* IoT Edge's id of a client: "<device>/<module>", or the device id alone. Into buf. */
const char *hub_metrics_client_id(const char *device, const char *module, char *buf, size_t size);
/* The priority label of a queue index (0-9, HUB_NO_PRIORITY) */
const char *hub_metrics_priority(unsigned prio, char *buf, size_t size);
/* Series kept, and counts lost to the bound. */
size_t hub_metrics_series(struct hub *h);
/* Bytes the series table holds (series, label values, quantile windows). */
size_t hub_metrics_bytes(struct hub *h);
uint64_t hub_metrics_dropped(struct hub *h);
/* The samples of m (its family already started on w), each with its labels, then extra (the
 * trailing labels every sample of the family carries: IoT Edge's ms_telemetry). */
void hub_metrics_write(struct hub *h, enum hub_metric m, struct prom_writer *w,
                       const struct prom_label *extra, size_t n_extra);
/* edgehub_<stem>_total, or the summary's name */
const char *hub_metrics_name(enum hub_metric m);
/* {"series": [{"name", "labels": {...}, "value"}], "seriesDropped"} */
json_t *hub_metrics_status(struct hub *h);
