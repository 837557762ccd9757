/* samples.h — the dashboard's charts' data: a bounded ring of samples taken at a fixed interval
 * (ledged: one every 10 s for an hour), each a time and up to DASH_SAMPLES_MAX_SERIES named
 * values. A series is a gauge (charted as it is: queue depth, memory) or a counter (charted as
 * its rate per second between consecutive samples: messages). Pure: no I/O, no clock. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DASH_SAMPLES_MAX_SERIES 64
#define DASH_SAMPLES_NAME_MAX 128

enum dash_series_kind { DASH_SERIES_GAUGE, DASH_SERIES_COUNTER };

struct dash_samples;

/* A ring of capacity samples (1..100000). */
int dash_samples_new(size_t capacity, struct dash_samples **ret);
void dash_samples_free(struct dash_samples *s);

/* Start the sample taken at t_ms (older than the last one: the clock went back; the ring is
 * emptied first); the values put until the next begin belong to it. A series not put in a
 * sample has no value there (a gap). */
void dash_samples_begin(struct dash_samples *s, int64_t t_ms);
/* name's value in the current sample. A new name takes a free series, or one that has no value
 * left in the ring; -ENOSPC when none is (counted in "dropped"), -EINVAL for a name that is
 * empty or longer than DASH_SAMPLES_NAME_MAX, or with no sample begun. A name keeps the kind it
 * was first put with. */
int dash_samples_put(struct dash_samples *s, const char *name, enum dash_series_kind kind,
                     double value);

size_t dash_samples_count(const struct dash_samples *s); /* samples in the ring */

/* {"times": [ms, ...] oldest first, "series": {name: {"kind": "gauge"|"counter",
 * "values": [v|null, ...]}}, "dropped": n}: a counter's values are its rate per second since
 * the sample before (null for the first, after a gap, and when it went down: a restart). Only
 * names whose prefix is `prefix` (NULL: all). */
json_t *dash_samples_json(const struct dash_samples *s, const char *prefix);
