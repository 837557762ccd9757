/* quantile.h — quantiles of the observations of a sliding time window, in bounded memory: the
 * summaries' quantile samples (docs/metrics.md "Quantiles"). A log-bucketed histogram (bin i
 * counts the values in (γ^(i-1), γ^i], γ = (1+α)/(1-α)) per age bucket; LQUANT_AGE_BUCKETS of
 * them rotate, one every max_age / LQUANT_AGE_BUCKETS, so a quantile covers the observations of
 * the last max_age × (1 - 1/LQUANT_AGE_BUCKETS) to max_age (prometheus-net's window: 8 to 10
 * minutes of 10). A quantile's value is within LQUANT_ALPHA of the exact one, relatively (the
 * observation of rank ⌊φ(n-1)⌋ in the window), as long as it is within LQUANT_MAX_BINS bins
 * (LQUANT_MAX_BINS × ln γ: 4.4 decades) of the largest value the bins span; smaller ones are
 * counted in the lowest bin. Values at or below LQUANT_MIN_VALUE, negative ones included, count as
 * 0. The caller passes the time (a monotonic clock, ms), so nothing here reads a clock. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define LQUANT_ALPHA 0.02
#define LQUANT_MAX_BINS 256
#define LQUANT_AGE_BUCKETS 5
#define LQUANT_MIN_VALUE 1e-9

struct lquant {
    int64_t width_ms;                  /* one age bucket: max_age / LQUANT_AGE_BUCKETS */
    int64_t head_start_ms;             /* when the current age bucket began */
    uint32_t *bins;                    /* [LQUANT_AGE_BUCKETS][len], row per age bucket */
    int32_t base;                      /* the bin index of column 0 */
    uint16_t len;                      /* columns, at most LQUANT_MAX_BINS */
    uint8_t head;                      /* the age bucket observations go to */
    uint8_t started;                   /* head_start_ms is set */
    uint32_t zero[LQUANT_AGE_BUCKETS]; /* values counted as 0 */
    uint32_t n[LQUANT_AGE_BUCKETS];    /* observations per age bucket */
};

/* An empty window of max_age_ms (> 0; at least LQUANT_AGE_BUCKETS ms). Allocates nothing. */
void lquant_init(struct lquant *q, int64_t max_age_ms);
void lquant_fini(struct lquant *q);
/* One observation x at now_ms. 0; -EINVAL (x is NaN or infinite: not counted); -ENOMEM (the
 * bins could not grow to x: not counted). Allocates only when x is outside the span the bins
 * cover (at most LQUANT_MAX_BINS columns). */
int lquant_observe(struct lquant *q, double x, int64_t now_ms);
/* The quantiles phis[0..n) (ascending, each in [0, 1]) of the window at now_ms, into ret
 * (NaN for each when the window is empty). 0, or -EINVAL (phis not ascending or out of range).
 * One pass over the bins: LQUANT_AGE_BUCKETS × len additions. */
int lquant_quantiles(struct lquant *q, int64_t now_ms, const double *phis, size_t n, double *ret);
/* Observations in the window at now_ms. */
uint64_t lquant_count(struct lquant *q, int64_t now_ms);
/* Bytes held besides the struct itself. */
size_t lquant_bytes(const struct lquant *q);
