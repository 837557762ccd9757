/* quantile.c — windowed quantiles from rotating log-bucketed histograms (quantile.h). The age
 * buckets share one span of bin indexes [base, base + len), so merging them at a query is a sum
 * of columns; the span grows (reallocating) towards new values up to LQUANT_MAX_BINS columns, and
 * past that its lowest columns fold into one. It is re-centred, without allocating, when a value
 * outside it arrives while the window is empty. */
#include "base/quantile.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GROW_STEP 16 /* columns added beyond what a growth needs, towards where it grew */

static double log_gamma(void)
{
    return log((1.0 + LQUANT_ALPHA) / (1.0 - LQUANT_ALPHA));
}

void lquant_init(struct lquant *q, int64_t max_age_ms)
{
    memset(q, 0, sizeof(*q));
    q->width_ms = max_age_ms / LQUANT_AGE_BUCKETS;
    if (q->width_ms < 1)
        q->width_ms = 1;
}

void lquant_fini(struct lquant *q)
{
    if (!q)
        return;
    free(q->bins);
    q->bins = NULL;
    q->len = 0;
}

static void clear_bucket(struct lquant *q, unsigned b)
{
    if (q->len)
        memset(q->bins + (size_t)b * q->len, 0, q->len * sizeof(*q->bins));
    q->zero[b] = 0;
    q->n[b] = 0;
}

/* Rotate the age buckets up to now: each width_ms the oldest is emptied and becomes the head. A
 * clock that went back (it should not: monotonic) rotates nothing. */
static void advance(struct lquant *q, int64_t now)
{
    if (!q->started) {
        q->started = 1;
        q->head_start_ms = now;
        return;
    }
    if (now - q->head_start_ms < q->width_ms)
        return;
    int64_t steps = (now - q->head_start_ms) / q->width_ms;
    if (steps >= LQUANT_AGE_BUCKETS) {
        for (unsigned b = 0; b < LQUANT_AGE_BUCKETS; b++)
            clear_bucket(q, b);
    } else {
        for (int64_t s = 0; s < steps; s++) {
            q->head = (uint8_t)((q->head + 1) % LQUANT_AGE_BUCKETS);
            clear_bucket(q, q->head);
        }
    }
    q->head_start_ms += steps * q->width_ms;
}

static uint64_t total(const struct lquant *q)
{
    uint64_t t = 0;
    for (unsigned b = 0; b < LQUANT_AGE_BUCKETS; b++)
        t += q->n[b];
    return t;
}

/* Columns [lo, lo + len) instead of the current span; old columns below lo fold into column 0
 * (the caller keeps the top within the new span). */
static int respan(struct lquant *q, int32_t lo, uint16_t len)
{
    uint32_t *v = calloc((size_t)LQUANT_AGE_BUCKETS * len, sizeof(*v));
    if (!v)
        return -ENOMEM;
    for (unsigned b = 0; b < LQUANT_AGE_BUCKETS && q->len; b++)
        for (uint16_t c = 0; c < q->len; c++) {
            int64_t col = (int64_t)q->base + c - lo;
            v[(size_t)b * len + (col < 0 ? 0 : (size_t)col)] += q->bins[(size_t)b * q->len + c];
        }
    free(q->bins);
    q->bins = v;
    q->base = lo;
    q->len = len;
    return 0;
}

/* The column of bin index i, growing or folding the span as needed. */
static int column(struct lquant *q, int32_t i, size_t *ret_col)
{
    if (q->len && i >= q->base && i < q->base + q->len) {
        *ret_col = (size_t)(i - q->base);
        return 0;
    }
    if (q->len && total(q) == 0) { /* nothing to keep: move the span over i */
        q->base = i - q->len / 2;
        *ret_col = (size_t)(i - q->base);
        return 0;
    }
    int32_t lo, hi;
    if (!q->len) {
        lo = i - GROW_STEP / 2;
        hi = i + GROW_STEP / 2 - 1;
    } else if (i < q->base) {
        lo = i - GROW_STEP;
        hi = q->base + q->len - 1;
        if (hi - lo + 1 > LQUANT_MAX_BINS) /* below the span's reach: the lowest column */
            lo = hi - LQUANT_MAX_BINS + 1;
    } else {
        lo = q->base;
        hi = i + GROW_STEP;
        if (hi - lo + 1 > LQUANT_MAX_BINS) /* fold the lowest ones */
            lo = hi - LQUANT_MAX_BINS + 1;
    }
    if (hi - lo + 1 > LQUANT_MAX_BINS)
        hi = lo + LQUANT_MAX_BINS - 1;
    int r = respan(q, lo, (uint16_t)(hi - lo + 1));
    if (r < 0)
        return r;
    *ret_col = i < lo ? 0 : (size_t)(i - lo);
    return 0;
}

int lquant_observe(struct lquant *q, double x, int64_t now_ms)
{
    if (isnan(x) || isinf(x))
        return -EINVAL;
    advance(q, now_ms);
    if (x <= LQUANT_MIN_VALUE) {
        q->zero[q->head]++;
        q->n[q->head]++;
        return 0;
    }
    /* bin i holds (γ^(i-1), γ^i]; |i| stays below 2^15 for finite doubles */
    int32_t i = (int32_t)ceil(log(x) / log_gamma());
    size_t col;
    int r = column(q, i, &col);
    if (r < 0)
        return r;
    q->bins[(size_t)q->head * q->len + col]++;
    q->n[q->head]++;
    return 0;
}

int lquant_quantiles(struct lquant *q, int64_t now_ms, const double *phis, size_t n, double *ret)
{
    for (size_t k = 0; k < n; k++)
        if (!(phis[k] >= 0 && phis[k] <= 1) || (k && phis[k] < phis[k - 1]))
            return -EINVAL;
    advance(q, now_ms);
    uint64_t t = total(q);
    size_t k = 0;
    if (t == 0) {
        for (; k < n; k++)
            ret[k] = NAN;
        return 0;
    }
    uint64_t cum = 0;
    for (unsigned b = 0; b < LQUANT_AGE_BUCKETS; b++)
        cum += q->zero[b];
    /* the observation of rank ⌊φ(t-1)⌋ (0-based) lies in the first bin whose running count
     * exceeds that rank */
    for (; k < n && (uint64_t)floor(phis[k] * (double)(t - 1)) < cum; k++)
        ret[k] = 0;
    const double lg = log_gamma(), lower = log1p(-LQUANT_ALPHA);
    for (uint16_t c = 0; c < q->len && k < n; c++) {
        uint64_t col = 0;
        for (unsigned b = 0; b < LQUANT_AGE_BUCKETS; b++)
            col += q->bins[(size_t)b * q->len + c];
        if (!col)
            continue;
        cum += col;
        /* 2γ^i/(γ+1) = (1-α)γ^i: within α of every value of the bin (γ^(i-1), γ^i] */
        double v = exp((double)(q->base + c) * lg + lower);
        for (; k < n && (uint64_t)floor(phis[k] * (double)(t - 1)) < cum; k++)
            ret[k] = v;
    }
    for (; k < n; k++) /* not reached: the bins hold t observations */
        ret[k] = NAN;
    return 0;
}

uint64_t lquant_count(struct lquant *q, int64_t now_ms)
{
    advance(q, now_ms);
    return total(q);
}

size_t lquant_bytes(const struct lquant *q)
{
    return (size_t)LQUANT_AGE_BUCKETS * q->len * sizeof(*q->bins);
}
