/* test-message.c — the hub's stored message form: round trip, route view, and every malformed
 * input the decoder must refuse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "message.h"

static void test_round_trip(void **state)
{
    struct hub_message m = {0};
    m.source = "/messages/modules/sensor/outputs/out1";
    m.sys[IOTHUB_PROP_MESSAGE_ID] = "m-1";
    m.sys[IOTHUB_PROP_CONTENT_TYPE] = "application/json";
    m.sys[IOTHUB_PROP_CONTENT_ENCODING] = "utf-8";
    m.sys[HUB_SYS_ENQUEUED_TIME] = "2026-01-01T00:00:00.000Z";
    m.app_key[0] = "temp";
    m.app_value[0] = "21.5";
    m.app_key[1] = "empty";
    m.app_value[1] = "";
    m.n_app = 2;
    m.body = (const uint8_t *)"{\"t\":21.5}";
    m.body_len = 10;
    m.enqueued_ms = 1767225600000LL;
    struct lbuf b = LBUF_INIT;
    assert_int_equal(hub_message_encode(&m, &b), 0);
    struct hub_message d;
    struct lerr e = {0};
    assert_int_equal(hub_message_decode(b.data, b.len, &d, &e), 0);
    assert_string_equal(d.source, m.source);
    assert_string_equal(d.sys[IOTHUB_PROP_MESSAGE_ID], "m-1");
    assert_null(d.sys[IOTHUB_PROP_USER_ID]);
    assert_int_equal(d.n_app, 2);
    assert_string_equal(d.app_key[1], "empty");
    assert_string_equal(d.app_value[1], "");
    assert_int_equal(d.body_len, 10);
    assert_memory_equal(d.body, "{\"t\":21.5}", 10);
    assert_int_equal(d.enqueued_ms, m.enqueued_ms);

    struct route_prop sys[HUB_SYS_COUNT], app[HUB_MESSAGE_MAX_APP];
    struct route_message rm;
    hub_message_route_view(&d, sys, app, &rm);
    assert_string_equal(rm.source, m.source);
    assert_int_equal(rm.n_sys, 4);
    assert_string_equal(rm.sys[0].name, "messageId");
    assert_int_equal(rm.n_app, 2);

    struct iothub_props props;
    hub_message_props(&d, &props);
    assert_true(mqtt_str_eq(props.sys[IOTHUB_PROP_MESSAGE_ID], "m-1"));
    assert_int_equal(props.n_app, 2);

    /* every truncation is refused */
    for (size_t n = 0; n < b.len; n++)
        assert_int_equal(hub_message_decode(b.data, n, &d, &e), -EBADMSG);
    /* a flipped version byte */
    b.data[0] = 9;
    assert_int_equal(hub_message_decode(b.data, b.len, &d, &e), -EBADMSG);
    assert_non_null(strstr(e.msg, "unknown version"));
    lbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_round_trip)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
