/* test-prom.c — unit tests for the Prometheus exposition writer: names, escaping of label
 * values and help text, float spelling, whole families with common labels, sticky errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <string.h>

#include "base/prom.h"

static void test_names(void **state)
{
    assert_true(prom_metric_name_valid("edgehub_messages_received_total"));
    assert_true(prom_metric_name_valid("edgeAgent_used_memory_bytes"));
    assert_true(prom_metric_name_valid("a:b_c9"));
    assert_true(prom_metric_name_valid("_x"));
    assert_false(prom_metric_name_valid(""));
    assert_false(prom_metric_name_valid(NULL));
    assert_false(prom_metric_name_valid("9lives"));
    assert_false(prom_metric_name_valid("a-b"));
    assert_false(prom_metric_name_valid("a b"));
    assert_false(prom_metric_name_valid("caf\xc3\xa9"));

    assert_true(prom_label_name_valid("module_name"));
    assert_true(prom_label_name_valid("_x"));
    assert_false(prom_label_name_valid("__name__"));
    assert_false(prom_label_name_valid("a:b"));
    assert_false(prom_label_name_valid("0a"));
    assert_false(prom_label_name_valid(""));
}

static void test_escaping(void **state)
{
    struct lbuf b = LBUF_INIT;
    assert_int_equal(prom_escape_label_value(&b, "a\\b\"c\nd\te"), 0);
    assert_string_equal(b.data, "a\\\\b\\\"c\\nd\te");
    lbuf_reset(&b);
    assert_int_equal(prom_escape_help(&b, "say \"hi\"\\\n"), 0);
    assert_string_equal(b.data, "say \"hi\"\\\\\\n");
    lbuf_reset(&b);
    assert_int_equal(prom_escape_label_value(&b, NULL), 0);
    assert_int_equal(b.len, 0);
    /* UTF-8 passes through untouched */
    assert_int_equal(prom_escape_label_value(&b, "\xc3\xa9t\xc3\xa9"), 0);
    assert_string_equal(b.data, "\xc3\xa9t\xc3\xa9");
    lbuf_free(&b);
}

static void test_values(void **state)
{
    char buf[40];
    assert_string_equal(prom_format_value(0, buf, sizeof(buf)), "0");
    assert_string_equal(prom_format_value(42, buf, sizeof(buf)), "42");
    assert_string_equal(prom_format_value(-3, buf, sizeof(buf)), "-3");
    assert_string_equal(prom_format_value(18446744073709551615.0, buf, sizeof(buf)),
                        "1.8446744073709552e+19");
    assert_string_equal(prom_format_value(9007199254740991.0, buf, sizeof(buf)),
                        "9007199254740991");
    assert_string_equal(prom_format_value(0.25, buf, sizeof(buf)), "0.25");
    assert_string_equal(prom_format_value(NAN, buf, sizeof(buf)), "NaN");
    assert_string_equal(prom_format_value(INFINITY, buf, sizeof(buf)), "+Inf");
    assert_string_equal(prom_format_value(-INFINITY, buf, sizeof(buf)), "-Inf");
}

static void test_family(void **state)
{
    struct lbuf b = LBUF_INIT;
    struct prom_writer w;
    const struct prom_label common[] = {{"iothub", "h.azure-devices.net"}, {"edge_device", "d1"}};
    prom_writer_init(&w, &b, common, 2);
    prom_family(&w, "edgehub_messages_received_total", PROM_COUNTER, "Messages\nreceived \\ all");
    const struct prom_label l1[] = {{"id", "d1/sensor"}, {"route_output", "out\"1\""}};
    prom_sample(&w, "", l1, 2, 5);
    const struct prom_label l2[] = {{"id", "d1/other"}, {"route_output", NULL}};
    prom_sample(&w, NULL, l2, 2, 0);
    prom_family(&w, "ledge_up", PROM_GAUGE, NULL);
    prom_sample(&w, "", NULL, 0, 1);
    assert_int_equal(prom_writer_error(&w), 0);
    assert_string_equal(b.data,
                        "# HELP edgehub_messages_received_total Messages\\nreceived \\\\ all\n"
                        "# TYPE edgehub_messages_received_total counter\n"
                        "edgehub_messages_received_total{iothub=\"h.azure-devices.net\","
                        "edge_device=\"d1\",id=\"d1/sensor\",route_output=\"out\\\"1\\\"\"} 5\n"
                        "edgehub_messages_received_total{iothub=\"h.azure-devices.net\","
                        "edge_device=\"d1\",id=\"d1/other\",route_output=\"\"} 0\n"
                        "# TYPE ledge_up gauge\n"
                        "ledge_up{iothub=\"h.azure-devices.net\",edge_device=\"d1\"} 1\n");

    /* no labels at all: no braces */
    struct lbuf c = LBUF_INIT;
    prom_writer_init(&w, &c, NULL, 0);
    prom_family(&w, "x_seconds", PROM_SUMMARY, "h");
    prom_sample(&w, "_sum", NULL, 0, 1.5);
    prom_sample(&w, "_count", NULL, 0, 2);
    assert_string_equal(c.data, "# HELP x_seconds h\n# TYPE x_seconds summary\n"
                                "x_seconds_sum 1.5\nx_seconds_count 2\n");

    /* quantile samples: quantile="phi" after the labels, NaN for an empty window */
    struct lbuf d = LBUF_INIT;
    prom_writer_init(&w, &d, common, 1);
    prom_family(&w, "x_seconds", PROM_SUMMARY, NULL);
    const double phis[] = {0.5, 0.9999}, values[] = {0.25, NAN};
    prom_quantiles(&w, l1, 1, phis, values, 2);
    prom_quantiles(&w, NULL, 0, phis, values, 1);
    assert_int_equal(prom_writer_error(&w), 0);
    assert_string_equal(d.data,
                        "# TYPE x_seconds summary\n"
                        "x_seconds{iothub=\"h.azure-devices.net\",id=\"d1/sensor\","
                        "quantile=\"0.5\"} 0.25\n"
                        "x_seconds{iothub=\"h.azure-devices.net\",id=\"d1/sensor\","
                        "quantile=\"0.9999\"} NaN\n"
                        "x_seconds{iothub=\"h.azure-devices.net\",quantile=\"0.5\"} 0.25\n");
    lbuf_free(&d);
    lbuf_free(&b);
    lbuf_free(&c);
}

static void test_errors_stick(void **state)
{
    struct lbuf b = LBUF_INIT;
    struct prom_writer w;
    prom_writer_init(&w, &b, NULL, 0);
    prom_sample(&w, "", NULL, 0, 1); /* no family yet */
    assert_int_equal(prom_writer_error(&w), -EINVAL);

    prom_writer_init(&w, &b, NULL, 0);
    prom_family(&w, "bad-name", PROM_GAUGE, NULL);
    assert_int_equal(prom_writer_error(&w), -EINVAL);
    prom_family(&w, "good", PROM_GAUGE, NULL); /* ignored once failed */
    assert_int_equal(b.len, 0);

    lbuf_reset(&b);
    prom_writer_init(&w, &b, NULL, 0);
    prom_family(&w, "good", PROM_GAUGE, NULL);
    const struct prom_label bad[] = {{"__reserved", "v"}};
    prom_sample(&w, "", bad, 1, 1);
    assert_int_equal(prom_writer_error(&w), -EINVAL);

    const struct prom_label bad_common[] = {{"a-b", "v"}};
    prom_writer_init(&w, &b, bad_common, 1);
    assert_int_equal(prom_writer_error(&w), -EINVAL);

    /* a bounded buffer's E2BIG sticks */
    struct lbuf small = LBUF_INIT;
    small.max = 16;
    prom_writer_init(&w, &small, NULL, 0);
    prom_family(&w, "a_rather_long_metric_name", PROM_GAUGE, NULL);
    prom_sample(&w, "", NULL, 0, 1);
    assert_int_equal(prom_writer_error(&w), -E2BIG);
    lbuf_free(&small);
    lbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_values),       cmocka_unit_test(test_family),
        cmocka_unit_test(test_errors_stick),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
