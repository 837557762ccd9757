/* test-quantile.c — unit tests for the windowed quantiles (quantile.h): estimates against the
 * exact quantiles of known distributions within the stated relative error, zeros and negative
 * values, the window's expiry and rotation, the span's bound and folding, bad arguments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/quantile.h"

#define MAX_AGE_MS (10 * 60 * 1000)
#define WIDTH_MS (MAX_AGE_MS / LQUANT_AGE_BUCKETS)

/* IoT Edge's objectives: its timers' and histograms', its durations' */
static const double objectives[] = {0, 0.001, 0.1, 0.5, 0.9, 0.95, 0.99, 0.999, 0.9999, 1};
#define N_OBJ (sizeof(objectives) / sizeof(objectives[0]))

static uint64_t rng_state;
static double uniform01(void) /* xorshift64*: the same numbers on every run */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

static double normal01(void)
{
    double u = uniform01(), v = uniform01();
    return sqrt(-2.0 * log(u > 0 ? u : 1e-300)) * cos(2 * M_PI * v);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Observe xs (all at time now), then check every objective against the sorted data. */
static void check_against_exact(double *xs, size_t n)
{
    struct lquant q;
    lquant_init(&q, MAX_AGE_MS);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(lquant_observe(&q, xs[i], 1000), 0);
    qsort(xs, n, sizeof(*xs), cmp_double);
    double got[N_OBJ];
    assert_int_equal(lquant_quantiles(&q, 1000, objectives, N_OBJ, got), 0);
    for (size_t k = 0; k < N_OBJ; k++) {
        double exact = xs[(size_t)floor(objectives[k] * (double)(n - 1))];
        double err = fabs(got[k] - exact);
        if (exact <= LQUANT_MIN_VALUE)
            assert_true(got[k] == 0);
        else if (err > LQUANT_ALPHA * exact * (1 + 1e-9))
            fail_msg("q%g: %g, exact %g (relative error %g)", objectives[k], got[k], exact,
                     err / exact);
    }
    assert_int_equal(lquant_count(&q, 1000), n);
    assert_true(lquant_bytes(&q) <= LQUANT_AGE_BUCKETS * LQUANT_MAX_BINS * sizeof(uint32_t));
    lquant_fini(&q);
}

static void test_uniform(void **state)
{
    (void)state;
    rng_state = 0x9e3779b97f4a7c15ull;
    size_t n = 20000;
    double *xs = malloc(n * sizeof(*xs));
    assert_non_null(xs);
    for (size_t i = 0; i < n; i++)
        xs[i] = 1.0 + uniform01() * 9999.0; /* 1 .. 10000: message sizes */
    check_against_exact(xs, n);
    free(xs);
}

static void test_lognormal(void **state)
{
    (void)state;
    rng_state = 42;
    size_t n = 50000;
    double *xs = malloc(n * sizeof(*xs));
    assert_non_null(xs);
    for (size_t i = 0; i < n; i++)
        xs[i] = 0.01 * exp(normal01()); /* durations around 10 ms, three decades wide */
    check_against_exact(xs, n);
    free(xs);
}

static void test_exponential_and_constant(void **state)
{
    (void)state;
    rng_state = 7;
    size_t n = 10000;
    double *xs = malloc(n * sizeof(*xs));
    assert_non_null(xs);
    for (size_t i = 0; i < n; i++)
        xs[i] = -log(1.0 - uniform01()) * 0.25 + 1e-3; /* 1 ms .. ~3 s */
    check_against_exact(xs, n);
    for (size_t i = 0; i < n; i++)
        xs[i] = 2; /* 12 messages of 2 bytes, as the system test sends */
    check_against_exact(xs, 12);
    xs[0] = 0.5;
    check_against_exact(xs, 1);
    free(xs);
}

static void test_zeros_and_negatives(void **state)
{
    (void)state;
    double xs[100];
    for (size_t i = 0; i < 100; i++)
        xs[i] = i < 30 ? 0 : i < 40 ? -1 : (double)i; /* 40 of 100 count as 0 */
    struct lquant q;
    lquant_init(&q, MAX_AGE_MS);
    for (size_t i = 0; i < 100; i++)
        assert_int_equal(lquant_observe(&q, xs[i], 5), 0);
    double phis[] = {0.1, 0.39, 0.41, 0.9}, got[4];
    assert_int_equal(lquant_quantiles(&q, 5, phis, 4, got), 0);
    assert_true(got[0] == 0);
    assert_true(got[1] == 0);
    assert_true(fabs(got[2] - 40) <= LQUANT_ALPHA * 40 * (1 + 1e-9)); /* rank 40 */
    assert_true(fabs(got[3] - 89) <= LQUANT_ALPHA * 89 * (1 + 1e-9)); /* rank 89 */
    lquant_fini(&q);
}

static void test_window_expiry(void **state)
{
    (void)state;
    struct lquant q;
    lquant_init(&q, MAX_AGE_MS);
    int64_t t0 = 1000000; /* the age buckets start here */
    double phi = 0.5, got;
    assert_int_equal(lquant_quantiles(&q, t0, &phi, 1, &got), 0);
    assert_true(isnan(got)); /* empty: NaN, as prometheus-net writes */

    for (int i = 0; i < 10; i++)
        assert_int_equal(lquant_observe(&q, 100, t0), 0);
    /* later observations, in the third age bucket */
    for (int i = 0; i < 30; i++)
        assert_int_equal(lquant_observe(&q, 1, t0 + 2 * WIDTH_MS + 5), 0);
    assert_int_equal(lquant_count(&q, t0 + 4 * WIDTH_MS), 40);
    assert_int_equal(lquant_count(&q, t0 + MAX_AGE_MS - 1), 40); /* still in the window */
    double p99 = 0.99;
    assert_int_equal(lquant_quantiles(&q, t0 + MAX_AGE_MS - 1, &p99, 1, &got), 0);
    assert_true(fabs(got - 100) <= LQUANT_ALPHA * 100 * (1 + 1e-9));
    /* max_age after the first ones, their age bucket is the oldest and goes */
    assert_int_equal(lquant_count(&q, t0 + MAX_AGE_MS), 30);
    assert_int_equal(lquant_quantiles(&q, t0 + MAX_AGE_MS, &p99, 1, &got), 0);
    assert_true(fabs(got - 1) <= LQUANT_ALPHA * (1 + 1e-9));
    /* the later ones stay until max_age after their bucket began */
    assert_int_equal(lquant_count(&q, t0 + 2 * WIDTH_MS + MAX_AGE_MS - 1), 30);
    assert_int_equal(lquant_count(&q, t0 + 2 * WIDTH_MS + MAX_AGE_MS), 0);
    assert_int_equal(lquant_quantiles(&q, t0 + 3 * MAX_AGE_MS, &phi, 1, &got), 0);
    assert_true(isnan(got));

    /* a long silence empties everything at once; new values re-centre the span without
     * allocating */
    size_t bytes = lquant_bytes(&q);
    assert_int_equal(lquant_observe(&q, 1e6, t0 + 100 * MAX_AGE_MS), 0);
    assert_int_equal(lquant_count(&q, t0 + 100 * MAX_AGE_MS), 1);
    assert_int_equal(lquant_bytes(&q), bytes);
    assert_int_equal(lquant_quantiles(&q, t0 + 100 * MAX_AGE_MS, &phi, 1, &got), 0);
    assert_true(fabs(got - 1e6) <= LQUANT_ALPHA * 1e6 * (1 + 1e-9));
    /* a clock that goes back rotates nothing */
    assert_int_equal(lquant_count(&q, 0), 1);
    lquant_fini(&q);
}

static void test_span_bound(void **state)
{
    (void)state;
    struct lquant q;
    lquant_init(&q, MAX_AGE_MS);
    /* 1e-8 .. 1e4: twelve decades, more than the bins span */
    rng_state = 99;
    size_t n = 20000;
    double *xs = malloc(n * sizeof(*xs));
    assert_non_null(xs);
    for (size_t i = 0; i < n; i++) {
        xs[i] = pow(10, -8 + 12 * uniform01());
        assert_int_equal(lquant_observe(&q, xs[i], 7), 0);
        assert_true(lquant_bytes(&q) <= LQUANT_AGE_BUCKETS * LQUANT_MAX_BINS * sizeof(uint32_t));
    }
    assert_int_equal(lquant_bytes(&q), LQUANT_AGE_BUCKETS * LQUANT_MAX_BINS * sizeof(uint32_t));
    qsort(xs, n, sizeof(*xs), cmp_double);
    /* the top 4.4 decades (1e-0.4 .. 1e4: above 0.6 of the ranks) stay within the bound; below,
     * values fold into the lowest bin, whose value is at most the exact one's */
    double phis[] = {0.1, 0.5, 0.7, 0.9, 0.99, 0.9999}, got[6];
    assert_int_equal(lquant_quantiles(&q, 7, phis, 6, got), 0);
    for (size_t k = 0; k < 6; k++) {
        double exact = xs[(size_t)floor(phis[k] * (double)(n - 1))];
        if (phis[k] >= 0.7)
            assert_true(fabs(got[k] - exact) <= LQUANT_ALPHA * exact * (1 + 1e-9));
        else
            assert_true(got[k] >= exact * (1 - LQUANT_ALPHA));
    }
    assert_int_equal(lquant_count(&q, 7), n);
    free(xs);
    lquant_fini(&q);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    struct lquant q;
    lquant_init(&q, MAX_AGE_MS);
    assert_int_equal(lquant_observe(&q, NAN, 0), -EINVAL);
    assert_int_equal(lquant_observe(&q, INFINITY, 0), -EINVAL);
    assert_int_equal(lquant_observe(&q, 1e300, 0), 0);
    assert_int_equal(lquant_observe(&q, DBL_MIN, 0), 0);
    assert_int_equal(lquant_count(&q, 0), 2);
    double got[2];
    assert_int_equal(lquant_quantiles(&q, 0, (double[]){0.9, 0.5}, 2, got), -EINVAL);
    assert_int_equal(lquant_quantiles(&q, 0, (double[]){-0.1}, 1, got), -EINVAL);
    assert_int_equal(lquant_quantiles(&q, 0, (double[]){1.5}, 1, got), -EINVAL);
    assert_int_equal(lquant_quantiles(&q, 0, (double[]){0, 1}, 2, got), 0);
    assert_true(got[0] == 0);
    assert_true(fabs(got[1] - 1e300) <= LQUANT_ALPHA * 1e300);
    lquant_fini(&q);
    lquant_fini(&q);
    lquant_fini(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uniform),
        cmocka_unit_test(test_lognormal),
        cmocka_unit_test(test_exponential_and_constant),
        cmocka_unit_test(test_zeros_and_negatives),
        cmocka_unit_test(test_window_expiry),
        cmocka_unit_test(test_span_bound),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
