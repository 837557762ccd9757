/* test-mqtt.c — unit tests: MQTT framing, exact encodings, round trips, every decode error, topics,
 * and the IoT Hub conventions, including how the C and Node SDKs read our property bags back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mqtt/codec.h"
#include "mqtt/iothub.h"
#include "mqtt/topic.h"

#define BYTES(lit) (const uint8_t *)(lit), sizeof(lit) - 1

static void assert_span(struct mqtt_str s, const char *lit)
{
    size_t n = strlen(lit);
    if (s.len != n || (n && memcmp(s.ptr, lit, n) != 0)) {
        print_error("span '%.*s' != '%s'\n", (int)s.len, s.ptr ? s.ptr : "", lit);
        fail();
    }
}

static void assert_buf(const struct lbuf *b, const uint8_t *exp, size_t n)
{
    assert_int_equal(b->len, n);
    assert_memory_equal(b->data, exp, n);
}

/* ---- framing ---- */

static void test_frame_basic(void **state)
{
    size_t n = 0;
    assert_int_equal(mqtt_frame(NULL, 0, 0, &n), 0);
    assert_int_equal(mqtt_frame(BYTES("\xc0"), 0, &n), 0);
    assert_int_equal(mqtt_frame(BYTES("\xc0\x00"), 0, &n), 1);
    assert_int_equal(n, 2);
    /* two packets back to back: only the first is framed */
    assert_int_equal(mqtt_frame(BYTES("\x40\x02\x00\x01\xc0\x00"), 0, &n), 1);
    assert_int_equal(n, 4);
}

static void test_frame_split(void **state)
{
    static const uint8_t pkt[] = "\x32\x09\x00\x03"
                                 "a/b\x00\x0ahi";
    size_t total = sizeof(pkt) - 1, n = 0;
    for (size_t have = 0; have < total; have++) {
        n = 12345;
        assert_int_equal(mqtt_frame(pkt, have, 0, &n), 0);
        assert_int_equal(n, 12345); /* untouched until complete */
    }
    assert_int_equal(mqtt_frame(pkt, total, 0, &n), 1);
    assert_int_equal(n, total);

    /* a 3-byte length arriving one byte at a time */
    uint8_t big[3 + 16384 + 1] = {0x30, 0x80, 0x80, 0x01};
    assert_int_equal(mqtt_frame(big, 1, 0, &n), 0);
    assert_int_equal(mqtt_frame(big, 2, 0, &n), 0);
    assert_int_equal(mqtt_frame(big, 3, 0, &n), 0);
    assert_int_equal(mqtt_frame(big, 4, 0, &n), 0);
    assert_int_equal(mqtt_frame(big, 4 + 16383, 0, &n), 0);
    assert_int_equal(mqtt_frame(big, 4 + 16384, 0, &n), 1);
    assert_int_equal(n, 4 + 16384);
}

static void test_frame_errors(void **state)
{
    size_t n = 0;
    /* a 5th length byte */
    assert_int_equal(mqtt_frame(BYTES("\x30\xff\xff\xff\xff\x01"), 0, &n), MQTT_EMALFORMED);
    assert_int_equal(mqtt_frame(BYTES("\x30\xff\xff\xff\xff"), 0, &n), MQTT_EMALFORMED);
    /* four continuation-marked bytes seen so far: malformed only once the 5th would be needed */
    assert_int_equal(mqtt_frame(BYTES("\x30\xff\xff\xff"), 0, &n), 0);
    /* the maximum remaining length is fine with no limit, and waits for its bytes */
    assert_int_equal(mqtt_frame(BYTES("\x30\xff\xff\xff\x7f"), 0, &n), 0);
    /* over the limit as soon as the length is known */
    assert_int_equal(mqtt_frame(BYTES("\x30\xc8\x01"), 100, &n), -EMSGSIZE); /* 3 + 200 */
    assert_int_equal(mqtt_frame(BYTES("\x30\xff\xff\xff\x7f"), 1 << 20, &n), -EMSGSIZE);
    /* exactly at the limit */
    uint8_t pkt[102] = {0x30, 100};
    assert_int_equal(mqtt_frame(pkt, sizeof(pkt), 102, &n), 1);
    assert_int_equal(n, 102);
    assert_int_equal(mqtt_frame(pkt, sizeof(pkt), 101, &n), -EMSGSIZE);
}

/* The length is known from the fixed header alone, before the packet's bytes arrive. */
static void test_frame_length(void **state)
{
    size_t n = 12345;
    assert_int_equal(mqtt_frame_length(NULL, 0, 0, &n), 0);
    assert_int_equal(mqtt_frame_length(BYTES("\x30"), 0, &n), 0);
    assert_int_equal(n, 12345); /* untouched without a length */
    assert_int_equal(mqtt_frame_length(BYTES("\x30\x09"), 0, &n), 1);
    assert_int_equal(n, 11);
    /* a 3-byte length: known at its last byte, whatever follows */
    static const uint8_t big[] = {0x30, 0x80, 0x80, 0x01};
    assert_int_equal(mqtt_frame_length(big, 2, 0, &n), 0);
    assert_int_equal(mqtt_frame_length(big, 3, 0, &n), 0);
    assert_int_equal(mqtt_frame_length(big, 4, 0, &n), 1);
    assert_int_equal(n, 4 + 16384);
    /* the protocol maximum, from MQTT_FIXED_HEADER_MAX bytes */
    assert_int_equal(mqtt_frame_length(BYTES("\x30\xff\xff\xff\x7f"), 0, &n), 1);
    assert_int_equal(n, MQTT_MAX_PACKET);
    assert_int_equal(mqtt_frame_length(BYTES("\x30\xff\xff\xff\xff"), 0, &n), MQTT_EMALFORMED);
    assert_int_equal(mqtt_frame_length(BYTES("\x30\xc8\x01"), 100, &n), -EMSGSIZE);
    assert_int_equal(mqtt_frame_length(BYTES("\x30\x64"), 102, &n), 1);
    assert_int_equal(n, 102);
    assert_int_equal(mqtt_frame_length(BYTES("\x30\x64"), 101, &n), -EMSGSIZE);
    /* mqtt_frame agrees once the bytes are there */
    uint8_t pkt[102] = {0x30, 100};
    assert_int_equal(mqtt_frame(pkt, 101, 0, &n), 0);
    assert_int_equal(mqtt_frame(pkt, 102, 0, &n), 1);
    assert_int_equal(n, 102);
}

/* ---- byte-exact encodings ---- */

static void test_encode_exact(void **state)
{
    _cleanup_lbuf_ struct lbuf b = LBUF_INIT;

    /* §3.1.2.10's variable header (flags 0xCE, keep alive 10) with a full payload */
    struct mqtt_connect c = {
        .clean_session = true,
        .keep_alive = 10,
        .client_id = mqtt_str_c("id"),
        .will = true,
        .will_qos = 1,
        .will_topic = mqtt_str_c("w/t"),
        .will_payload = (const uint8_t *)"bye",
        .will_payload_len = 3,
        .has_username = true,
        .username = mqtt_str_c("u"),
        .has_password = true,
        .password = (const uint8_t *)"p",
        .password_len = 1,
    };
    assert_int_equal(mqtt_encode_connect(&b, &c), 0);
    assert_buf(&b, BYTES("\x10\x1e\x00\x04MQTT\x04\xce\x00\x0a"
                         "\x00\x02id\x00\x03w/t\x00\x03"
                         "bye\x00\x01u\x00\x01p"));

#define EXACT(call, lit)                                                                           \
    do {                                                                                           \
        lbuf_reset(&b);                                                                            \
        assert_int_equal(call, 0);                                                                 \
        assert_buf(&b, BYTES(lit));                                                                \
    } while (0)

    EXACT(mqtt_encode_connack(&b, false, MQTT_CONNACK_ACCEPTED), "\x20\x02\x00\x00");
    EXACT(mqtt_encode_connack(&b, true, MQTT_CONNACK_ACCEPTED), "\x20\x02\x01\x00");
    EXACT(mqtt_encode_connack(&b, false, MQTT_CONNACK_NOT_AUTHORIZED), "\x20\x02\x00\x05");
    struct mqtt_publish pub = {.qos = 1,
                               .packet_id = 10,
                               .topic = mqtt_str_c("a/b"),
                               .payload = (const uint8_t *)"hi",
                               .payload_len = 2};
    EXACT(mqtt_encode_publish(&b, &pub), "\x32\x09\x00\x03"
                                         "a/b\x00\x0ahi");
    pub = (struct mqtt_publish){.qos = 0, .retain = true, .topic = mqtt_str_c("t")};
    EXACT(mqtt_encode_publish(&b, &pub), "\x31\x03\x00\x01t");
    pub =
        (struct mqtt_publish){.qos = 2, .dup = true, .packet_id = 0x1234, .topic = mqtt_str_c("t")};
    EXACT(mqtt_encode_publish(&b, &pub), "\x3c\x05\x00\x01t\x12\x34");
    EXACT(mqtt_encode_ack(&b, MQTT_PUBACK, 10), "\x40\x02\x00\x0a");
    EXACT(mqtt_encode_ack(&b, MQTT_PUBREC, 10), "\x50\x02\x00\x0a");
    EXACT(mqtt_encode_ack(&b, MQTT_PUBREL, 10), "\x62\x02\x00\x0a");
    EXACT(mqtt_encode_ack(&b, MQTT_PUBCOMP, 10), "\x70\x02\x00\x0a");
    EXACT(mqtt_encode_ack(&b, MQTT_UNSUBACK, 1), "\xb0\x02\x00\x01");
    /* the same four bytes without a buffer */
    uint8_t ack[MQTT_ACK_LEN];
    assert_int_equal(mqtt_encode_ack_bytes(ack, MQTT_PUBACK, 0x1234), MQTT_ACK_LEN);
    assert_memory_equal(ack, "\x40\x02\x12\x34", MQTT_ACK_LEN);
    assert_int_equal(mqtt_encode_ack_bytes(ack, MQTT_PUBREL, 1), MQTT_ACK_LEN);
    assert_memory_equal(ack, "\x62\x02\x00\x01", MQTT_ACK_LEN);
    assert_int_equal(mqtt_encode_ack_bytes(ack, MQTT_PUBACK, 0), -EINVAL);
    assert_int_equal(mqtt_encode_ack_bytes(ack, MQTT_SUBACK, 1), -EINVAL);
    struct mqtt_subscription subs[] = {{mqtt_str_c("a/#"), 1}, {mqtt_str_c("+"), 2}};
    EXACT(mqtt_encode_subscribe(&b, 1, subs, 1), "\x82\x08\x00\x01\x00\x03"
                                                 "a/#\x01");
    EXACT(mqtt_encode_subscribe(&b, 2, subs, 2), "\x82\x0c\x00\x02\x00\x03"
                                                 "a/#\x01\x00\x01+\x02");
    const uint8_t codes[] = {0x00, 0x01, 0x02, 0x80};
    EXACT(mqtt_encode_suback(&b, 1, codes, 4), "\x90\x06\x00\x01\x00\x01\x02\x80");
    struct mqtt_str filters[] = {mqtt_str_c("a/#")};
    EXACT(mqtt_encode_unsubscribe(&b, 1, filters, 1), "\xa2\x07\x00\x01\x00\x03"
                                                      "a/#");
    EXACT(mqtt_encode_empty(&b, MQTT_PINGREQ), "\xc0\x00");
    EXACT(mqtt_encode_empty(&b, MQTT_PINGRESP), "\xd0\x00");
    EXACT(mqtt_encode_empty(&b, MQTT_DISCONNECT), "\xe0\x00");
#undef EXACT
}

/* The remaining-length varint at every size boundary (§2.2.3), through the hot-path encoder. */
static void test_publish_header_varint(void **state)
{
    static uint8_t out[MQTT_PUBLISH_HEADER_MAX];
    struct {
        size_t rl;
        const char *bytes;
        size_t n;
    } cases[] = {
        {0x00 + 3, "\x03", 1},
        {127, "\x7f", 1},
        {128, "\x80\x01", 2},
        {321, "\xc1\x02", 2},
        {16383, "\xff\x7f", 2},
        {16384, "\x80\x80\x01", 3},
        {2097151, "\xff\xff\x7f", 3},
        {2097152, "\x80\x80\x80\x01", 4},
        {268435455, "\xff\xff\xff\x7f", 4},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        /* topic "t", QoS 0: rl = 2 + 1 + payload */
        int n = mqtt_encode_publish_header(out, "t", 1, 0, false, false, 0, cases[i].rl - 3);
        assert_int_equal(n, 1 + cases[i].n + 3);
        assert_int_equal(out[0], 0x30);
        assert_memory_equal(out + 1, cases[i].bytes, cases[i].n);
        assert_memory_equal(out + 1 + cases[i].n, "\x00\x01t", 3);
        /* and framing reads the same length back */
        size_t plen;
        assert_int_equal(mqtt_frame(out, (size_t)n, 0, &plen), cases[i].rl == 3 ? 1 : 0);
    }
    /* QoS 1 with flags: header then payload sent separately decodes as one packet */
    int n = mqtt_encode_publish_header(out, "x/y", 3, 1, true, true, 7, 5);
    assert_int_equal(n, 2 + 2 + 3 + 2);
    uint8_t whole[64];
    memcpy(whole, out, (size_t)n);
    memcpy(whole + n, "hello", 5);
    struct mqtt_packet p;
    assert_int_equal(mqtt_decode(whole, (size_t)n + 5, &p, NULL), 0);
    assert_int_equal(p.type, MQTT_PUBLISH);
    assert_true(p.publish.retain && p.publish.dup);
    assert_int_equal(p.publish.qos, 1);
    assert_int_equal(p.publish.packet_id, 7);
    assert_span(p.publish.topic, "x/y");
    assert_int_equal(p.publish.payload_len, 5);
    assert_memory_equal(p.publish.payload, "hello", 5);

    assert_int_equal(mqtt_encode_publish_header(out, "t", 1, 3, false, false, 1, 0), -EINVAL);
    assert_int_equal(mqtt_encode_publish_header(out, "t", 1, 1, false, false, 0, 0), -EINVAL);
    assert_int_equal(mqtt_encode_publish_header(out, "t", 1, 0, false, true, 0, 0), -EINVAL);
    assert_int_equal(mqtt_encode_publish_header(out, "", 0, 0, false, false, 0, 0), -EINVAL);
    assert_int_equal(mqtt_encode_publish_header(out, "t", 1, 0, false, false, 0, 268435455 - 2),
                     -EMSGSIZE);
    assert_int_equal(mqtt_encode_publish_header(out, "t", 1, 0, false, false, 0, SIZE_MAX),
                     -EMSGSIZE);
}

/* ---- round trips: encode -> decode -> compare -> encode again, byte-identical ---- */

static void roundtrip(const struct lbuf *b, struct mqtt_packet *ret)
{
    size_t n;
    assert_int_equal(mqtt_frame((const uint8_t *)b->data, b->len, 0, &n), 1);
    assert_int_equal(n, b->len);
    struct lerr e = {0};
    int r = mqtt_decode((const uint8_t *)b->data, b->len, ret, &e);
    if (r != 0)
        print_error("decode: %s\n", lerr_str(&e));
    assert_int_equal(r, 0);
    _cleanup_lbuf_ struct lbuf again = LBUF_INIT;
    assert_int_equal(mqtt_encode(&again, ret), 0);
    assert_int_equal(again.len, b->len);
    assert_memory_equal(again.data, b->data, b->len);
}

static void test_roundtrip_all(void **state)
{
    _cleanup_lbuf_ struct lbuf b = LBUF_INIT;
    struct mqtt_packet p;

    struct mqtt_connect c = {.clean_session = false,
                             .keep_alive = 180,
                             .client_id = mqtt_str_c("dev1/mod1"),
                             .has_username = true,
                             .username = mqtt_str_c("h/dev1/mod1/?api-version=2021-04-12"),
                             .has_password = true,
                             .password = (const uint8_t *)"\x00\xffSAS",
                             .password_len = 5};
    assert_int_equal(mqtt_encode_connect(&b, &c), 0);
    roundtrip(&b, &p);
    assert_int_equal(p.type, MQTT_CONNECT);
    assert_int_equal(p.connect.protocol_level, 4);
    assert_false(p.connect.clean_session);
    assert_int_equal(p.connect.keep_alive, 180);
    assert_span(p.connect.client_id, "dev1/mod1");
    assert_false(p.connect.will);
    assert_true(p.connect.has_username);
    assert_span(p.connect.username, "h/dev1/mod1/?api-version=2021-04-12");
    assert_int_equal(p.connect.password_len, 5);
    assert_memory_equal(p.connect.password, "\x00\xffSAS", 5);
    /* zero-copy: the client id points into the packet */
    assert_ptr_equal(p.connect.client_id.ptr, b.data + 2 + 10 + 2);

    lbuf_reset(&b);
    c = (struct mqtt_connect){.clean_session = true,
                              .client_id = mqtt_str_c(""),
                              .will = true,
                              .will_qos = 2,
                              .will_retain = true,
                              .will_topic = mqtt_str_c("lw"),
                              .will_payload = (const uint8_t *)"",
                              .will_payload_len = 0};
    assert_int_equal(mqtt_encode_connect(&b, &c), 0);
    roundtrip(&b, &p);
    assert_true(p.connect.will && p.connect.will_retain);
    assert_int_equal(p.connect.will_qos, 2);
    assert_span(p.connect.will_topic, "lw");
    assert_int_equal(p.connect.will_payload_len, 0);
    assert_span(p.connect.client_id, "");
    assert_false(p.connect.has_username || p.connect.has_password);

    for (uint8_t rc = 0; rc <= 5; rc++) {
        lbuf_reset(&b);
        assert_int_equal(mqtt_encode_connack(&b, rc == 0, rc), 0);
        roundtrip(&b, &p);
        assert_int_equal(p.type, MQTT_CONNACK);
        assert_int_equal(p.connack.return_code, rc);
        assert_int_equal(p.connack.session_present, rc == 0);
    }

    static uint8_t payload[70000];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)(i * 7);
    for (uint8_t qos = 0; qos <= 2; qos++) {
        lbuf_reset(&b);
        struct mqtt_publish pub = {.qos = qos,
                                   .retain = qos == 1,
                                   .dup = qos == 2,
                                   .packet_id = qos ? 65535 : 0,
                                   .topic = mqtt_str_c("devices/d/modules/m/messages/events/"),
                                   .payload = payload,
                                   .payload_len = sizeof(payload)};
        assert_int_equal(mqtt_encode_publish(&b, &pub), 0);
        roundtrip(&b, &p);
        assert_int_equal(p.publish.qos, qos);
        assert_int_equal(p.publish.retain, qos == 1);
        assert_int_equal(p.publish.dup, qos == 2);
        assert_int_equal(p.publish.packet_id, qos ? 65535 : 0);
        assert_span(p.publish.topic, "devices/d/modules/m/messages/events/");
        assert_int_equal(p.publish.payload_len, sizeof(payload));
        assert_memory_equal(p.publish.payload, payload, sizeof(payload));
        /* zero-copy */
        assert_ptr_equal(p.publish.payload, (const uint8_t *)b.data + b.len - sizeof(payload));
    }
    /* empty payload */
    lbuf_reset(&b);
    struct mqtt_publish pub0 = {.topic = mqtt_str_c("t")};
    assert_int_equal(mqtt_encode_publish(&b, &pub0), 0);
    roundtrip(&b, &p);
    assert_int_equal(p.publish.payload_len, 0);

    const enum mqtt_type acks[] = {MQTT_PUBACK, MQTT_PUBREC, MQTT_PUBREL, MQTT_PUBCOMP,
                                   MQTT_UNSUBACK};
    for (size_t i = 0; i < ARRAY_SIZE(acks); i++) {
        lbuf_reset(&b);
        assert_int_equal(mqtt_encode_ack(&b, acks[i], 4242), 0);
        roundtrip(&b, &p);
        assert_int_equal(p.type, acks[i]);
        assert_int_equal(p.ack.packet_id, 4242);
    }

    lbuf_reset(&b);
    struct mqtt_subscription subs[] = {{mqtt_str_c("$iothub/methods/POST/#"), 0},
                                       {mqtt_str_c("devices/d/modules/m/#"), 1},
                                       {mqtt_str_c("+/x/+"), 2}};
    assert_int_equal(mqtt_encode_subscribe(&b, 9, subs, 3), 0);
    roundtrip(&b, &p);
    assert_int_equal(p.type, MQTT_SUBSCRIBE);
    assert_int_equal(p.subscribe.packet_id, 9);
    assert_int_equal(p.subscribe.count, 3);
    struct mqtt_filter_iter it;
    struct mqtt_str f;
    uint8_t qos;
    mqtt_filter_iter_init(&it, &p);
    for (size_t i = 0; i < 3; i++) {
        assert_true(mqtt_filter_iter_next(&it, &f, &qos));
        assert_span(f, subs[i].filter.ptr);
        assert_int_equal(qos, subs[i].qos);
    }
    assert_false(mqtt_filter_iter_next(&it, &f, &qos));

    lbuf_reset(&b);
    const uint8_t codes[] = {MQTT_SUBACK_QOS0, MQTT_SUBACK_FAILURE, MQTT_SUBACK_QOS2};
    assert_int_equal(mqtt_encode_suback(&b, 9, codes, 3), 0);
    roundtrip(&b, &p);
    assert_int_equal(p.type, MQTT_SUBACK);
    assert_int_equal(p.suback.packet_id, 9);
    assert_int_equal(p.suback.count, 3);
    assert_memory_equal(p.suback.codes, codes, 3);

    lbuf_reset(&b);
    struct mqtt_str uf[] = {mqtt_str_c("a/b"), mqtt_str_c("#")};
    assert_int_equal(mqtt_encode_unsubscribe(&b, 10, uf, 2), 0);
    roundtrip(&b, &p);
    assert_int_equal(p.type, MQTT_UNSUBSCRIBE);
    assert_int_equal(p.unsubscribe.packet_id, 10);
    assert_int_equal(p.unsubscribe.count, 2);
    mqtt_filter_iter_init(&it, &p);
    assert_true(mqtt_filter_iter_next(&it, &f, NULL));
    assert_span(f, "a/b");
    assert_true(mqtt_filter_iter_next(&it, &f, &qos));
    assert_span(f, "#");
    assert_int_equal(qos, 0);
    assert_false(mqtt_filter_iter_next(&it, &f, &qos));

    const enum mqtt_type empties[] = {MQTT_PINGREQ, MQTT_PINGRESP, MQTT_DISCONNECT};
    for (size_t i = 0; i < ARRAY_SIZE(empties); i++) {
        lbuf_reset(&b);
        assert_int_equal(mqtt_encode_empty(&b, empties[i]), 0);
        roundtrip(&b, &p);
        assert_int_equal(p.type, empties[i]);
    }
}

static void test_decode_utf8_ok(void **state)
{
    /* 2-, 3- and 4-byte sequences at their boundaries are valid topic names */
    const char *ok[] = {"\xc2\x80",      "\xdf\xbf",     "\xe0\xa0\x80",     "\xed\x9f\xbf",
                        "\xee\x80\x80",  "\xef\xbf\xbf", "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf",
                        "caf\xc3\xa9/x", "\x01\x7f"};
    for (size_t i = 0; i < ARRAY_SIZE(ok); i++)
        assert_int_equal(mqtt_topic_name_check(ok[i], strlen(ok[i]), NULL), 0);
}

/* ---- every validation error, with its message ---- */

struct bad_case {
    const char *bytes;
    size_t len;
    int err;
    const char *msg;
};

#define BAD_CASE(lit, err, msg)                                                                    \
    {                                                                                              \
        lit, sizeof(lit) - 1, err, msg                                                             \
    }
#define CONNECT_HDR(rl, flags) "\x10" rl "\x00\x04MQTT\x04" flags "\x00\x3c"

static const struct bad_case bad_cases[] = {
    /* fixed header */
    BAD_CASE("\x00\x00", MQTT_EMALFORMED, "packet type 0 is reserved"),
    BAD_CASE("\xf0\x00", MQTT_EMALFORMED, "packet type 15 is reserved"),
    BAD_CASE("\x30\xff\xff\xff\xff\x01", MQTT_EMALFORMED, "remaining length longer than 4 bytes"),
    BAD_CASE("\x30\x05\x00\x01t", MQTT_EMALFORMED,
             "packet of 5 bytes does not match its fixed header"),
    BAD_CASE("\x30\x01\x00\x01t", MQTT_EMALFORMED,
             "packet of 5 bytes does not match its fixed header"),
    BAD_CASE("\x30", MQTT_EMALFORMED, "packet of 1 bytes does not match its fixed header"),
    BAD_CASE("\x11\x00", MQTT_EMALFORMED, "CONNECT: invalid fixed header flags 0x1"),
    BAD_CASE("\x28\x02\x00\x00", MQTT_EMALFORMED, "CONNACK: invalid fixed header flags 0x8"),
    BAD_CASE("\x41\x02\x00\x01", MQTT_EMALFORMED, "PUBACK: invalid fixed header flags 0x1"),
    BAD_CASE("\x52\x02\x00\x01", MQTT_EMALFORMED, "PUBREC: invalid fixed header flags 0x2"),
    BAD_CASE("\x60\x02\x00\x01", MQTT_EMALFORMED, "PUBREL: invalid fixed header flags 0x0"),
    BAD_CASE("\x72\x02\x00\x01", MQTT_EMALFORMED, "PUBCOMP: invalid fixed header flags 0x2"),
    BAD_CASE("\x80\x06\x00\x01\x00\x01t\x00", MQTT_EMALFORMED,
             "SUBSCRIBE: invalid fixed header flags 0x0"),
    BAD_CASE("\x92\x03\x00\x01\x00", MQTT_EMALFORMED, "SUBACK: invalid fixed header flags 0x2"),
    BAD_CASE("\xa0\x05\x00\x01\x00\x01t", MQTT_EMALFORMED,
             "UNSUBSCRIBE: invalid fixed header flags 0x0"),
    BAD_CASE("\xb2\x02\x00\x01", MQTT_EMALFORMED, "UNSUBACK: invalid fixed header flags 0x2"),
    BAD_CASE("\xc1\x00", MQTT_EMALFORMED, "PINGREQ: invalid fixed header flags 0x1"),
    BAD_CASE("\xd8\x00", MQTT_EMALFORMED, "PINGRESP: invalid fixed header flags 0x8"),
    BAD_CASE("\xe1\x00", MQTT_EMALFORMED, "DISCONNECT: invalid fixed header flags 0x1"),

    /* CONNECT */
    BAD_CASE("\x10\x01\x00", MQTT_EMALFORMED, "CONNECT: truncated protocol name"),
    BAD_CASE("\x10\x06\x00\x04MQTT", MQTT_EMALFORMED, "CONNECT: truncated protocol level"),
    BAD_CASE("\x10\x0d\x00\x04MQTT\x03\x02\x00\x3c\x00\x01"
             "c",
             MQTT_EPROTOCOL_VERSION, "CONNECT: unsupported protocol level 3 (only 4, MQTT 3.1.1)"),
    BAD_CASE("\x10\x0d\x00\x04MQTT\x05\x02\x00\x3c\x00\x01"
             "c",
             MQTT_EPROTOCOL_VERSION, "CONNECT: unsupported protocol level 5 (only 4, MQTT 3.1.1)"),
    BAD_CASE("\x10\x0f\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x01"
             "c",
             MQTT_EPROTOCOL_VERSION, "CONNECT: unsupported protocol MQIsdp level 3 (MQTT 3.1)"),
    BAD_CASE("\x10\x0d\x00\x04MQTX\x04\x02\x00\x3c\x00\x01"
             "c",
             MQTT_EMALFORMED, "CONNECT: unknown protocol name 'MQTX'"),
    BAD_CASE("\x10\x0d\x00\x04\x01QTT\x04\x02\x00\x3c\x00\x01"
             "c",
             MQTT_EMALFORMED, "CONNECT: unknown protocol name '?QTT'"),
    BAD_CASE("\x10\x1d\x00\x1a"
             "ABCDEFGHIJKLMNOPQRSTUVWXYZ\x04",
             MQTT_EMALFORMED, "CONNECT: unknown protocol name 'ABCDEFGHIJKLMNOPQRST..'"),
    BAD_CASE("\x10\x07\x00\x04MQTT\x04", MQTT_EMALFORMED, "CONNECT: truncated connect flags"),
    BAD_CASE(CONNECT_HDR("\x0d", "\x03") "\x00\x01"
                                         "c",
             MQTT_EMALFORMED, "CONNECT: reserved flag set"),
    BAD_CASE(CONNECT_HDR("\x0d", "\x0a") "\x00\x01"
                                         "c",
             MQTT_EMALFORMED, "CONNECT: will QoS or retain set without the will flag"),
    BAD_CASE(CONNECT_HDR("\x0d", "\x22") "\x00\x01"
                                         "c",
             MQTT_EMALFORMED, "CONNECT: will QoS or retain set without the will flag"),
    BAD_CASE(CONNECT_HDR("\x0d", "\x1e") "\x00\x01"
                                         "c",
             MQTT_EMALFORMED, "CONNECT: will QoS 3 is invalid"),
    BAD_CASE(CONNECT_HDR("\x0d", "\x42") "\x00\x01"
                                         "c",
             MQTT_EMALFORMED, "CONNECT: password flag set without the user name flag"),
    BAD_CASE("\x10\x09\x00\x04MQTT\x04\x02\x00", MQTT_EMALFORMED, "CONNECT: truncated keep alive"),
    BAD_CASE(CONNECT_HDR("\x0b", "\x02") "\x00", MQTT_EMALFORMED, "CONNECT: truncated client id"),
    BAD_CASE(CONNECT_HDR("\x0d", "\x02") "\x00\x02"
                                         "c",
             MQTT_EMALFORMED, "CONNECT: truncated client id"),
    BAD_CASE(CONNECT_HDR("\x0d", "\x02") "\x00\x01\xff", MQTT_EMALFORMED,
             "CONNECT: client id: invalid UTF-8 at offset 0"),
    BAD_CASE(CONNECT_HDR("\x0d", "\x02") "\x00\x01\x00", MQTT_EMALFORMED,
             "CONNECT: client id: U+0000 at offset 0"),
    BAD_CASE(CONNECT_HDR("\x0d", "\x06") "\x00\x01"
                                         "c",
             MQTT_EMALFORMED, "CONNECT: truncated will topic"),
    BAD_CASE(CONNECT_HDR("\x14", "\x06") "\x00\x01"
                                         "c\x00\x03"
                                         "a/#\x00\x00",
             MQTT_EMALFORMED, "CONNECT: will: wildcard '#' in topic name"),
    BAD_CASE(CONNECT_HDR("\x11", "\x06") "\x00\x01"
                                         "c\x00\x00\x00\x00",
             MQTT_EMALFORMED, "CONNECT: will: empty topic name"),
    BAD_CASE(CONNECT_HDR("\x10", "\x06") "\x00\x01"
                                         "c\x00\x01t",
             MQTT_EMALFORMED, "CONNECT: truncated will message"),
    BAD_CASE(CONNECT_HDR("\x12", "\x06") "\x00\x01"
                                         "c\x00\x01t\x00\x05",
             MQTT_EMALFORMED, "CONNECT: truncated will message"),
    BAD_CASE(CONNECT_HDR("\x0d", "\x82") "\x00\x01"
                                         "c",
             MQTT_EMALFORMED, "CONNECT: truncated user name"),
    BAD_CASE(CONNECT_HDR("\x10", "\x82") "\x00\x01"
                                         "c\x00\x01\xff",
             MQTT_EMALFORMED, "CONNECT: user name: invalid UTF-8 at offset 0"),
    BAD_CASE(CONNECT_HDR("\x10", "\xc2") "\x00\x01"
                                         "c\x00\x01u",
             MQTT_EMALFORMED, "CONNECT: truncated password"),
    BAD_CASE(CONNECT_HDR("\x13", "\xc2") "\x00\x01"
                                         "c\x00\x01u\x00\x05p",
             MQTT_EMALFORMED, "CONNECT: truncated password"),
    BAD_CASE(CONNECT_HDR("\x0e", "\x02") "\x00\x01"
                                         "c\x00",
             MQTT_EMALFORMED, "CONNECT: 1 trailing byte(s)"),
    BAD_CASE(CONNECT_HDR("\x0c", "\x00") "\x00\x00", MQTT_EIDENTIFIER,
             "CONNECT: an empty client id requires clean session"),

    /* CONNACK */
    BAD_CASE("\x20\x01\x00", MQTT_EMALFORMED, "CONNACK: truncated"),
    BAD_CASE("\x20\x02\x02\x00", MQTT_EMALFORMED, "CONNACK: reserved acknowledge flags 0x02"),
    BAD_CASE("\x20\x02\x00\x06", MQTT_EMALFORMED, "CONNACK: return code 6 is invalid"),
    BAD_CASE("\x20\x02\x01\x05", MQTT_EMALFORMED, "CONNACK: session present with return code 5"),
    BAD_CASE("\x20\x03\x00\x00\x00", MQTT_EMALFORMED, "CONNACK: 1 trailing byte(s)"),

    /* PUBLISH */
    BAD_CASE("\x36\x05\x00\x01t\x00\x01", MQTT_EMALFORMED, "PUBLISH: QoS 3 is invalid"),
    BAD_CASE("\x38\x03\x00\x01t", MQTT_EMALFORMED, "PUBLISH: DUP set on a QoS 0 message"),
    BAD_CASE("\x30\x00", MQTT_EMALFORMED, "PUBLISH: truncated topic name"),
    BAD_CASE("\x30\x03\x00\x05t", MQTT_EMALFORMED, "PUBLISH: truncated topic name"),
    BAD_CASE("\x30\x02\x00\x00", MQTT_EMALFORMED, "PUBLISH: empty topic name"),
    BAD_CASE("\x30\x05\x00\x03"
             "a/+",
             MQTT_EMALFORMED, "PUBLISH: wildcard '+' in topic name"),
    BAD_CASE("\x30\x03\x00\x01#", MQTT_EMALFORMED, "PUBLISH: wildcard '#' in topic name"),
    BAD_CASE("\x30\x05\x00\x03"
             "a\x00"
             "b",
             MQTT_EMALFORMED, "PUBLISH: topic name: U+0000 at offset 1"),
    BAD_CASE("\x30\x04\x00\x02"
             "a\xff",
             MQTT_EMALFORMED, "PUBLISH: topic name: invalid UTF-8 at offset 1"),
    BAD_CASE("\x30\x04\x00\x02\xc0\xaf", MQTT_EMALFORMED,
             "PUBLISH: topic name: invalid UTF-8 at offset 0"), /* overlong '/' */
    BAD_CASE("\x30\x05\x00\x03\xe0\x80\xaf", MQTT_EMALFORMED,
             "PUBLISH: topic name: invalid UTF-8 at offset 0"), /* overlong 3-byte */
    BAD_CASE("\x30\x06\x00\x04\xf0\x80\x80\xaf", MQTT_EMALFORMED,
             "PUBLISH: topic name: invalid UTF-8 at offset 0"), /* overlong 4-byte */
    BAD_CASE("\x30\x05\x00\x03\xed\xa0\x80", MQTT_EMALFORMED,
             "PUBLISH: topic name: invalid UTF-8 at offset 0"), /* U+D800 */
    BAD_CASE("\x30\x06\x00\x04\xf4\x90\x80\x80", MQTT_EMALFORMED,
             "PUBLISH: topic name: invalid UTF-8 at offset 0"), /* U+110000 */
    BAD_CASE("\x30\x06\x00\x04"
             "a\xf0\x90\x80",
             MQTT_EMALFORMED, "PUBLISH: topic name: invalid UTF-8 at offset 1"), /* truncated */
    BAD_CASE("\x30\x07\x00\x05"
             "a\xf0\x90\x80"
             "a",
             MQTT_EMALFORMED, "PUBLISH: topic name: invalid UTF-8 at offset 1"), /* bad cont. */
    BAD_CASE("\x30\x05\x00\x03"
             "a\xe2\x82",
             MQTT_EMALFORMED, "PUBLISH: topic name: invalid UTF-8 at offset 1"), /* truncated */
    BAD_CASE("\x30\x05\x00\x03"
             "ab\x80",
             MQTT_EMALFORMED, "PUBLISH: topic name: invalid UTF-8 at offset 2"), /* stray cont. */
    BAD_CASE("\x30\x05\x00\x03\xc3"
             "ab",
             MQTT_EMALFORMED, "PUBLISH: topic name: invalid UTF-8 at offset 0"), /* bad cont. */
    BAD_CASE("\x32\x04\x00\x01t\x00", MQTT_EMALFORMED, "PUBLISH: truncated packet id"),
    BAD_CASE("\x32\x05\x00\x01t\x00\x00", MQTT_EMALFORMED, "PUBLISH: packet id 0 with QoS 1"),
    BAD_CASE("\x34\x05\x00\x01t\x00\x00", MQTT_EMALFORMED, "PUBLISH: packet id 0 with QoS 2"),

    /* acknowledgements */
    BAD_CASE("\x40\x01\x00", MQTT_EMALFORMED, "PUBACK: truncated packet id"),
    BAD_CASE("\x40\x02\x00\x00", MQTT_EMALFORMED, "PUBACK: packet id 0"),
    BAD_CASE("\x40\x03\x00\x01\x00", MQTT_EMALFORMED, "PUBACK: 1 trailing byte(s)"),
    BAD_CASE("\x50\x02\x00\x00", MQTT_EMALFORMED, "PUBREC: packet id 0"),
    BAD_CASE("\x62\x00", MQTT_EMALFORMED, "PUBREL: truncated packet id"),
    BAD_CASE("\x70\x04\x00\x01\x00\x00", MQTT_EMALFORMED, "PUBCOMP: 2 trailing byte(s)"),
    BAD_CASE("\xb0\x02\x00\x00", MQTT_EMALFORMED, "UNSUBACK: packet id 0"),

    /* SUBSCRIBE */
    BAD_CASE("\x82\x01\x00", MQTT_EMALFORMED, "SUBSCRIBE: truncated packet id"),
    BAD_CASE("\x82\x06\x00\x00\x00\x01t\x00", MQTT_EMALFORMED, "SUBSCRIBE: packet id 0"),
    BAD_CASE("\x82\x02\x00\x01", MQTT_EMALFORMED, "SUBSCRIBE: no topic filters"),
    BAD_CASE("\x82\x05\x00\x01\x00\x00\x00", MQTT_EMALFORMED, "SUBSCRIBE: empty topic filter"),
    BAD_CASE("\x82\x05\x00\x01\x00\x05t", MQTT_EMALFORMED, "SUBSCRIBE: truncated topic filter"),
    BAD_CASE("\x82\x03\x00\x01\x00", MQTT_EMALFORMED, "SUBSCRIBE: truncated topic filter"),
    BAD_CASE("\x82\x05\x00\x01\x00\x01t", MQTT_EMALFORMED, "SUBSCRIBE: missing requested QoS"),
    BAD_CASE("\x82\x06\x00\x01\x00\x01t\x03", MQTT_EMALFORMED,
             "SUBSCRIBE: requested QoS 3 is invalid"),
    BAD_CASE("\x82\x06\x00\x01\x00\x01t\x41", MQTT_EMALFORMED,
             "SUBSCRIBE: reserved bits set in requested QoS 0x41"),
    BAD_CASE("\x82\x08\x00\x01\x00\x03"
             "a#b\x00",
             MQTT_EMALFORMED,
             "SUBSCRIBE: topic filter: '#' must be the last level (alone or after '/')"),
    BAD_CASE("\x82\x08\x00\x01\x00\x03"
             "#/a\x00",
             MQTT_EMALFORMED,
             "SUBSCRIBE: topic filter: '#' must be the last level (alone or after '/')"),
    BAD_CASE("\x82\x07\x00\x01\x00\x02"
             "a+\x00",
             MQTT_EMALFORMED, "SUBSCRIBE: topic filter: '+' must fill a whole level"),
    BAD_CASE("\x82\x07\x00\x01\x00\x02+a\x00", MQTT_EMALFORMED,
             "SUBSCRIBE: topic filter: '+' must fill a whole level"),
    BAD_CASE("\x82\x06\x00\x01\x00\x01\x00\x00", MQTT_EMALFORMED,
             "SUBSCRIBE: topic filter: U+0000 at offset 0"),
    BAD_CASE("\x82\x07\x00\x01\x00\x02"
             "a\xfe\x00",
             MQTT_EMALFORMED, "SUBSCRIBE: topic filter: invalid UTF-8 at offset 1"),
    /* the second filter is the bad one */
    BAD_CASE("\x82\x0a\x00\x01\x00\x01t\x00\x00\x01t\x03", MQTT_EMALFORMED,
             "SUBSCRIBE: requested QoS 3 is invalid"),

    /* SUBACK */
    BAD_CASE("\x90\x01\x00", MQTT_EMALFORMED, "SUBACK: truncated packet id"),
    BAD_CASE("\x90\x03\x00\x00\x00", MQTT_EMALFORMED, "SUBACK: packet id 0"),
    BAD_CASE("\x90\x02\x00\x01", MQTT_EMALFORMED, "SUBACK: no return codes"),
    BAD_CASE("\x90\x04\x00\x01\x00\x03", MQTT_EMALFORMED, "SUBACK: invalid return code 0x03"),
    BAD_CASE("\x90\x03\x00\x01\x81", MQTT_EMALFORMED, "SUBACK: invalid return code 0x81"),

    /* UNSUBSCRIBE */
    BAD_CASE("\xa2\x00", MQTT_EMALFORMED, "UNSUBSCRIBE: truncated packet id"),
    BAD_CASE("\xa2\x05\x00\x00\x00\x01t", MQTT_EMALFORMED, "UNSUBSCRIBE: packet id 0"),
    BAD_CASE("\xa2\x02\x00\x01", MQTT_EMALFORMED, "UNSUBSCRIBE: no topic filters"),
    BAD_CASE("\xa2\x04\x00\x01\x00\x00", MQTT_EMALFORMED, "UNSUBSCRIBE: empty topic filter"),
    BAD_CASE("\xa2\x09\x00\x01\x00\x05"
             "a/#/b",
             MQTT_EMALFORMED,
             "UNSUBSCRIBE: topic filter: '#' must be the last level (alone or after '/')"),
    BAD_CASE("\xa2\x05\x00\x01\x00\x02t", MQTT_EMALFORMED, "UNSUBSCRIBE: truncated topic filter"),

    /* no-body packets */
    BAD_CASE("\xc0\x01\x00", MQTT_EMALFORMED, "PINGREQ: 1 trailing byte(s)"),
    BAD_CASE("\xd0\x01\x00", MQTT_EMALFORMED, "PINGRESP: 1 trailing byte(s)"),
    BAD_CASE("\xe0\x02\x00\x00", MQTT_EMALFORMED, "DISCONNECT: 2 trailing byte(s)"),
};

static void test_decode_errors(void **state)
{
    for (size_t i = 0; i < ARRAY_SIZE(bad_cases); i++) {
        const struct bad_case *c = &bad_cases[i];
        struct mqtt_packet p;
        memset(&p, 0xa5, sizeof(p));
        struct mqtt_packet untouched = p;
        struct lerr e = {0};
        /* an exactly-sized copy so ASan sees reads past the packet */
        uint8_t *copy = malloc(c->len ? c->len : 1);
        memcpy(copy, c->bytes, c->len);
        int r = mqtt_decode(copy, c->len, &p, &e);
        free(copy);
        if (r != c->err || strcmp(e.msg, c->msg) != 0) {
            print_error("case %zu: got %d '%s', want %d '%s'\n", i, r, e.msg, c->err, c->msg);
            fail();
        }
        assert_int_equal(e.code, c->err);
        assert_memory_equal(&p, &untouched, sizeof(p)); /* ret written only on success */
        /* without an lerr too */
        assert_int_equal(mqtt_decode((const uint8_t *)c->bytes, c->len, &p, NULL), c->err);
    }
}

static void test_connack_for_error(void **state)
{
    assert_int_equal(mqtt_connack_code_for_error(MQTT_EPROTOCOL_VERSION),
                     MQTT_CONNACK_UNACCEPTABLE_PROTOCOL);
    assert_int_equal(mqtt_connack_code_for_error(MQTT_EIDENTIFIER),
                     MQTT_CONNACK_IDENTIFIER_REJECTED);
    assert_int_equal(mqtt_connack_code_for_error(MQTT_EMALFORMED), -1);
    assert_int_equal(mqtt_connack_code_for_error(-ENOMEM), -1);
}

static void test_types(void **state)
{
    assert_string_equal(mqtt_type_name(MQTT_PUBLISH), "PUBLISH");
    assert_string_equal(mqtt_type_name((enum mqtt_type)0), "reserved");
    assert_string_equal(mqtt_type_name((enum mqtt_type)15), "reserved");
    assert_string_equal(mqtt_type_name((enum mqtt_type)99), "reserved");
    const enum mqtt_type client[] = {MQTT_CONNECT, MQTT_PUBLISH,   MQTT_PUBACK,    MQTT_PUBREC,
                                     MQTT_PUBREL,  MQTT_PUBCOMP,   MQTT_SUBSCRIBE, MQTT_UNSUBSCRIBE,
                                     MQTT_PINGREQ, MQTT_DISCONNECT};
    const enum mqtt_type server[] = {MQTT_CONNACK, MQTT_PUBLISH,  MQTT_PUBACK,
                                     MQTT_PUBREC,  MQTT_PUBREL,   MQTT_PUBCOMP,
                                     MQTT_SUBACK,  MQTT_UNSUBACK, MQTT_PINGRESP};
    size_t nc = 0, ns = 0;
    for (int t = 0; t < 16; t++) {
        nc += mqtt_type_from_client((enum mqtt_type)t);
        ns += mqtt_type_from_server((enum mqtt_type)t);
    }
    assert_int_equal(nc, ARRAY_SIZE(client));
    assert_int_equal(ns, ARRAY_SIZE(server));
    for (size_t i = 0; i < ARRAY_SIZE(client); i++)
        assert_true(mqtt_type_from_client(client[i]));
    for (size_t i = 0; i < ARRAY_SIZE(server); i++)
        assert_true(mqtt_type_from_server(server[i]));
}

static void test_encode_errors(void **state)
{
    _cleanup_lbuf_ struct lbuf b = LBUF_INIT;
    assert_int_equal(lbuf_puts(&b, "keep"), 0);
    struct mqtt_publish pub = {.qos = 3, .packet_id = 1, .topic = mqtt_str_c("t")};
    assert_int_equal(mqtt_encode_publish(&b, &pub), -EINVAL);
    pub = (struct mqtt_publish){.qos = 1, .topic = mqtt_str_c("t")};
    assert_int_equal(mqtt_encode_publish(&b, &pub), -EINVAL);
    pub = (struct mqtt_publish){.dup = true, .topic = mqtt_str_c("t")};
    assert_int_equal(mqtt_encode_publish(&b, &pub), -EINVAL);
    pub = (struct mqtt_publish){.topic = mqtt_str_c("")};
    assert_int_equal(mqtt_encode_publish(&b, &pub), -EINVAL);
    static char longtopic[MQTT_TOPIC_MAX + 1];
    memset(longtopic, 'a', sizeof(longtopic));
    pub = (struct mqtt_publish){.topic = {longtopic, sizeof(longtopic)}};
    assert_int_equal(mqtt_encode_publish(&b, &pub), -EINVAL);
    pub = (struct mqtt_publish){.topic = mqtt_str_c("t"), .payload_len = MQTT_MAX_REMAINING_LENGTH};
    assert_int_equal(mqtt_encode_publish(&b, &pub), -EMSGSIZE);

    assert_int_equal(mqtt_encode_connack(&b, false, 6), -EINVAL);
    assert_int_equal(mqtt_encode_connack(&b, true, 1), -EINVAL);
    assert_int_equal(mqtt_encode_ack(&b, MQTT_PUBACK, 0), -EINVAL);
    assert_int_equal(mqtt_encode_ack(&b, MQTT_PUBLISH, 1), -EINVAL);
    assert_int_equal(mqtt_encode_ack(&b, MQTT_SUBACK, 1), -EINVAL);
    assert_int_equal(mqtt_encode_empty(&b, MQTT_CONNECT), -EINVAL);
    struct mqtt_subscription s = {mqtt_str_c("a"), 3};
    assert_int_equal(mqtt_encode_subscribe(&b, 1, &s, 1), -EINVAL);
    s.qos = 0;
    assert_int_equal(mqtt_encode_subscribe(&b, 0, &s, 1), -EINVAL);
    assert_int_equal(mqtt_encode_subscribe(&b, 1, &s, 0), -EINVAL);
    s.filter = mqtt_str_c("");
    assert_int_equal(mqtt_encode_subscribe(&b, 1, &s, 1), -EINVAL);
    struct mqtt_str f = mqtt_str_c("");
    assert_int_equal(mqtt_encode_unsubscribe(&b, 1, &f, 1), -EINVAL);
    f = mqtt_str_c("a");
    assert_int_equal(mqtt_encode_unsubscribe(&b, 0, &f, 1), -EINVAL);
    assert_int_equal(mqtt_encode_unsubscribe(&b, 1, &f, 0), -EINVAL);
    uint8_t code = 0x03;
    assert_int_equal(mqtt_encode_suback(&b, 1, &code, 1), -EINVAL);
    code = 0;
    assert_int_equal(mqtt_encode_suback(&b, 0, &code, 1), -EINVAL);
    assert_int_equal(mqtt_encode_suback(&b, 1, &code, 0), -EINVAL);

    struct mqtt_connect c = {.client_id = mqtt_str_c("c"), .has_password = true};
    assert_int_equal(mqtt_encode_connect(&b, &c), -EINVAL);
    c = (struct mqtt_connect){.client_id = mqtt_str_c("c"), .will_qos = 1};
    assert_int_equal(mqtt_encode_connect(&b, &c), -EINVAL);
    c = (struct mqtt_connect){
        .client_id = mqtt_str_c("c"), .will = true, .will_qos = 3, .will_topic = mqtt_str_c("t")};
    assert_int_equal(mqtt_encode_connect(&b, &c), -EINVAL);
    c = (struct mqtt_connect){.client_id = mqtt_str_c("c"), .will = true};
    assert_int_equal(mqtt_encode_connect(&b, &c), -EINVAL);
    c = (struct mqtt_connect){.client_id = {longtopic, sizeof(longtopic)}};
    assert_int_equal(mqtt_encode_connect(&b, &c), -EINVAL);
    c = (struct mqtt_connect){.client_id = mqtt_str_c("c"),
                              .has_username = true,
                              .username = {longtopic, sizeof(longtopic)}};
    assert_int_equal(mqtt_encode_connect(&b, &c), -EINVAL);
    c = (struct mqtt_connect){.client_id = mqtt_str_c("c"),
                              .has_username = true,
                              .has_password = true,
                              .password_len = sizeof(longtopic)};
    assert_int_equal(mqtt_encode_connect(&b, &c), -EINVAL);
    c = (struct mqtt_connect){.client_id = mqtt_str_c("c"),
                              .will = true,
                              .will_topic = mqtt_str_c("t"),
                              .will_payload_len = sizeof(longtopic)};
    assert_int_equal(mqtt_encode_connect(&b, &c), -EINVAL);

    struct mqtt_packet p = {.type = (enum mqtt_type)0};
    assert_int_equal(mqtt_encode(&b, &p), -EINVAL);
    p = (struct mqtt_packet){.type = MQTT_SUBSCRIBE};
    assert_int_equal(mqtt_encode(&b, &p), -EINVAL);

    /* nothing was appended by any of the failures */
    assert_int_equal(b.len, 4);
    assert_string_equal(b.data, "keep");

    /* a bounded buffer: the packet does not fit, the buffer is unchanged */
    struct lbuf small = {.max = 8};
    assert_int_equal(lbuf_puts(&small, "abc"), 0);
    pub = (struct mqtt_publish){.topic = mqtt_str_c("topic")};
    assert_int_equal(mqtt_encode_publish(&small, &pub), -E2BIG);
    assert_int_equal(small.len, 3);
    assert_string_equal(small.data, "abc");
    lbuf_free(&small);
}

static void test_filter_iter_guards(void **state)
{
    /* a hand-built list that lies about its lengths ends the walk instead of overrunning */
    static const uint8_t list[] = {0x00, 0x05, 'a', 'b'};
    struct mqtt_packet p = {.type = MQTT_SUBSCRIBE};
    p.subscribe = (struct mqtt_subscribe){1, 1, list, sizeof(list)};
    struct mqtt_filter_iter it;
    struct mqtt_str f;
    mqtt_filter_iter_init(&it, &p);
    assert_false(mqtt_filter_iter_next(&it, &f, NULL));
    p.subscribe = (struct mqtt_subscribe){1, 0, NULL, 0};
    mqtt_filter_iter_init(&it, &p);
    assert_false(mqtt_filter_iter_next(&it, &f, NULL));
}

/* ---- topics ---- */

static void test_topic_filters(void **state)
{
    const char *ok[] = {
        "#",          "+",      "a/+/b", "+/+", "/",  "a//b",       "sport/#",
        "+/tennis/#", "$SYS/#", "a/b/c", "/+",  "+/", "\xc3\xa9/+", "$iothub/methods/POST/#"};
    for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
        struct lerr e = {0};
        if (mqtt_topic_filter_check(ok[i], strlen(ok[i]), &e) != 0) {
            print_error("'%s': %s\n", ok[i], e.msg);
            fail();
        }
        assert_int_equal(mqtt_topic_filter_has_wildcards(ok[i], strlen(ok[i])),
                         strpbrk(ok[i], "+#") != NULL);
    }
    struct {
        const char *f;
        int err;
        const char *msg;
    } bad[] = {
        {"", -EINVAL, "empty topic filter"},
        {"a#", -EINVAL, "topic filter: '#' must be the last level (alone or after '/')"},
        {"a/#/b", -EINVAL, "topic filter: '#' must be the last level (alone or after '/')"},
        {"##", -EINVAL, "topic filter: '#' must be the last level (alone or after '/')"},
        {"#/", -EINVAL, "topic filter: '#' must be the last level (alone or after '/')"},
        {"a+", -EINVAL, "topic filter: '+' must fill a whole level"},
        {"+a", -EINVAL, "topic filter: '+' must fill a whole level"},
        {"a/b+/c", -EINVAL, "topic filter: '+' must fill a whole level"},
        {"++", -EINVAL, "topic filter: '+' must fill a whole level"},
        {"a/\xff", -EILSEQ, "topic filter: invalid UTF-8 at offset 2"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        struct lerr e = {0};
        assert_int_equal(mqtt_topic_filter_check(bad[i].f, strlen(bad[i].f), &e), bad[i].err);
        assert_string_equal(e.msg, bad[i].msg);
    }
    static char big[MQTT_TOPIC_MAX + 1];
    memset(big, 'a', sizeof(big));
    struct lerr e = {0};
    assert_int_equal(mqtt_topic_filter_check(big, sizeof(big), &e), -EINVAL);
    assert_string_equal(e.msg, "topic filter longer than 65535 bytes");
    assert_int_equal(mqtt_topic_filter_check(big, sizeof(big) - 1, &e), 0);
    assert_int_equal(mqtt_topic_name_check(big, sizeof(big), &e), -EINVAL);
    assert_string_equal(e.msg, "topic name longer than 65535 bytes");
    assert_int_equal(mqtt_topic_name_check(big, sizeof(big) - 1, &e), 0);
    assert_int_equal(mqtt_utf8_check("", 0, &e), 0);
}

static void test_topic_match(void **state)
{
    struct {
        const char *filter, *topic;
        bool match;
    } cases[] = {
        /* §4.7.1 examples */
        {"sport/tennis/player1/#", "sport/tennis/player1", true},
        {"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
        {"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
        {"sport/#", "sport", true},
        {"#", "anything/at/all", true},
        {"#", "/", true},
        {"sport/tennis/+", "sport/tennis/player1", true},
        {"sport/tennis/+", "sport/tennis/player2", true},
        {"sport/tennis/+", "sport/tennis/player1/ranking", false},
        {"sport/+", "sport", false},
        {"sport/+", "sport/", true},
        {"+/+", "/finance", true},
        {"/+", "/finance", true},
        {"+", "/finance", false},
        {"+", "finance", true},
        /* §4.7.2 topics starting with '$' */
        {"#", "$SYS/foo", false},
        {"+/monitor/Clients", "$SYS/monitor/Clients", false},
        {"$SYS/#", "$SYS/monitor/Clients", true},
        {"$SYS/monitor/+", "$SYS/monitor/Clients", true},
        {"+", "$iothub", false},
        {"$iothub/methods/POST/#", "$iothub/methods/POST/reboot/?$rid=1", true},
        {"$iothub/twin/res/#", "$iothub/twin/res/200/?$rid=1", true},
        {"$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/?$version=2", false},
        /* plain levels */
        {"a/b", "a/b", true},
        {"a/b", "a/bc", false},
        {"a/bc", "a/b", false},
        {"a/b/", "a/b", false},
        {"a/b", "a/b/", false},
        {"+/+/+", "a/b", false},
        {"a/+/c", "a//c", true},
        {"a/#", "ab", false},
        {"a/#", "a/", true},
        {"a/+", "a/b/c", false},
        {"+/#", "a", true},
        {"/#", "/", true},
        {"/#", "a", false},
        /* IoT Edge shapes */
        {"devices/d/modules/m/#", "devices/d/modules/m/inputs/in1/%24.mid=1", true},
        {"devices/d/modules/m/inputs/#", "devices/d/modules/m/inputs/in1/", true},
        {"devices/d/modules/m/inputs/#", "devices/d/modules/m2/inputs/in1/", false},
        {"devices/+/modules/+/inputs/+/#", "devices/d/modules/m/inputs/in1/", true},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        const char *f = cases[i].filter, *t = cases[i].topic;
        assert_int_equal(mqtt_topic_filter_check(f, strlen(f), NULL), 0);
        assert_int_equal(mqtt_topic_name_check(t, strlen(t), NULL), 0);
        if (mqtt_topic_match(f, strlen(f), t, strlen(t)) != cases[i].match) {
            print_error("'%s' vs '%s': want %d\n", f, t, cases[i].match);
            fail();
        }
    }
}

/* ---- IoT Hub: user name ---- */

static void test_username(void **state)
{
    struct iothub_username u;
    struct lerr e = {0};
    const char *s = "myhub.azure-devices.net/dev1/mod1/?api-version=2021-04-12"
                    "&DeviceClientType=azure-iot-device%2F1.17.2%20(node)";
    assert_int_equal(iothub_username_parse(s, strlen(s), &u, &e), 0);
    assert_span(u.host, "myhub.azure-devices.net");
    assert_span(u.device_id, "dev1");
    assert_span(u.module_id, "mod1");
    assert_span(u.api_version, "2021-04-12");
    assert_int_equal(u.n_params, 2);
    struct mqtt_str v;
    assert_true(iothub_username_param(&u, "DeviceClientType", &v));
    assert_span(v, "azure-iot-device%2F1.17.2%20(node)");
    assert_false(iothub_username_param(&u, "model-id", &v));

    /* device form; sdk-c's product info and PnP model id */
    s = "h/dev1/?api-version=2020-09-30&DeviceClientType=iothubclient%2F1.2.3&model-id=dtmi%3Ax%"
        "3B1";
    assert_int_equal(iothub_username_parse(s, strlen(s), &u, &e), 0);
    assert_span(u.host, "h");
    assert_span(u.device_id, "dev1");
    assert_int_equal(u.module_id.len, 0);
    assert_true(iothub_username_param(&u, "model-id", &v));
    assert_span(v, "dtmi%3Ax%3B1");

    /* without the '/' before '?', and with empty pairs */
    s = "h/d/m?&api-version=1&&x";
    assert_int_equal(iothub_username_parse(s, strlen(s), &u, &e), 0);
    assert_span(u.module_id, "m");
    assert_span(u.api_version, "1");
    assert_int_equal(u.n_params, 2);
    assert_true(iothub_username_param(&u, "x", &v));
    assert_int_equal(v.len, 0);

    struct {
        const char *s;
        int err;
        const char *msg;
    } bad[] = {
        {"h/d/m/", -EINVAL,
         "user name: no query, expected <host>/<deviceId>[/<moduleId>]/?api-version=<v>"},
        {"h/d/?DeviceClientType=x", -EINVAL, "user name: api-version is required"},
        {"h/d/?api-version=", -EINVAL, "user name: api-version is required"},
        {"h//m/?api-version=1", -EINVAL,
         "user name: empty path level, expected <host>/<deviceId>[/<moduleId>]/?api-version=<v>"},
        {"/d/m/?api-version=1", -EINVAL,
         "user name: empty path level, expected <host>/<deviceId>[/<moduleId>]/?api-version=<v>"},
        {"h/a/b/c/?api-version=1", -EINVAL,
         "user name: too many path levels, expected <host>/<deviceId>[/<moduleId>]/"
         "?api-version=<v>"},
        {"h/?api-version=1", -EINVAL,
         "user name: expected <host>/<deviceId>[/<moduleId>]/?api-version=<v>"},
        {"?api-version=1", -EINVAL,
         "user name: expected <host>/<deviceId>[/<moduleId>]/?api-version=<v>"},
        {"h/d/?=x&api-version=1", -EINVAL, "user name: query parameter without a name"},
        {"h/d/?api-version=1&a&b&c&d&e&f&g&h&i&j&k&l&m&n&o&p", -E2BIG,
         "user name: more than 16 query parameters"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        assert_int_equal(iothub_username_parse(bad[i].s, strlen(bad[i].s), &u, &e), bad[i].err);
        assert_string_equal(e.msg, bad[i].msg);
    }

    /* what the module client sends parses back */
    _cleanup_lbuf_ struct lbuf b = LBUF_INIT;
    assert_int_equal(iothub_username_build(&b, mqtt_str_c("gw.local"), mqtt_str_c("edge1"),
                                           mqtt_str_c("filter"), mqtt_str_c("2021-04-12"),
                                           mqtt_str_c("ledge/0.1 (linux)")),
                     0);
    assert_string_equal(b.data, "gw.local/edge1/filter/?api-version=2021-04-12"
                                "&DeviceClientType=ledge%2F0.1%20%28linux%29");
    assert_int_equal(iothub_username_parse(b.data, b.len, &u, &e), 0);
    assert_span(u.module_id, "filter");
    lbuf_reset(&b);
    assert_int_equal(iothub_username_build(&b, mqtt_str_c("h"), mqtt_str_c("d"), mqtt_str_c(""),
                                           mqtt_str_c("1"), mqtt_str_c("")),
                     0);
    assert_string_equal(b.data, "h/d/?api-version=1");
    assert_int_equal(iothub_username_build(&b, mqtt_str_c("h"), mqtt_str_c("d/x"), mqtt_str_c(""),
                                           mqtt_str_c("1"), mqtt_str_c("")),
                     -EINVAL);
    assert_int_equal(iothub_username_build(&b, mqtt_str_c("h"), mqtt_str_c("d"), mqtt_str_c(""),
                                           mqtt_str_c(""), mqtt_str_c("")),
                     -EINVAL);
    assert_string_equal(b.data, "h/d/?api-version=1");
    static char huge[40000];
    memset(huge, ' ', sizeof(huge) - 1);
    assert_int_equal(iothub_username_build(&b, mqtt_str_c("h"), mqtt_str_c("d"), mqtt_str_c(""),
                                           mqtt_str_c("1"), mqtt_str_c(huge)),
                     -E2BIG);
    assert_string_equal(b.data, "h/d/?api-version=1");
}

/* ---- IoT Hub: topics ---- */

static struct iothub_topic classify(const char *t)
{
    struct iothub_topic r;
    struct lerr e = {0};
    int ret = iothub_topic_parse(t, strlen(t), &r, &e);
    if (ret != 0) {
        print_error("'%s': %s\n", t, e.msg);
        fail();
    }
    return r;
}

static void test_topic_classify(void **state)
{
    struct iothub_topic t;

    t = classify("devices/d/modules/m/messages/events/");
    assert_int_equal(t.kind, IOTHUB_TOPIC_MODULE_EVENTS);
    assert_span(t.device_id, "d");
    assert_span(t.module_id, "m");
    assert_span(t.propbag, "");
    t = classify("devices/d/modules/m/messages/events");
    assert_int_equal(t.kind, IOTHUB_TOPIC_MODULE_EVENTS);
    assert_span(t.propbag, "");
    /* Node's sendOutputEvent ends the topic with '/' */
    t = classify("devices/d/modules/m/messages/events/%24.on=out1&%24.mid=abc/");
    assert_int_equal(t.kind, IOTHUB_TOPIC_MODULE_EVENTS);
    assert_span(t.propbag, "%24.on=out1&%24.mid=abc");
    /* sdk-c without URL encoding puts raw '/' in values */
    t = classify("devices/d/modules/m/messages/events/%24.ct=application/json&%24.on=o");
    assert_span(t.propbag, "%24.ct=application/json&%24.on=o");
    t = classify("devices/dev-1/messages/events/a=b");
    assert_int_equal(t.kind, IOTHUB_TOPIC_DEVICE_EVENTS);
    assert_span(t.device_id, "dev-1");
    assert_int_equal(t.module_id.len, 0);
    assert_span(t.propbag, "a=b");

    t = classify("devices/d/modules/m/inputs/in1/%24.mid=1&k=v");
    assert_int_equal(t.kind, IOTHUB_TOPIC_MODULE_INPUT);
    assert_span(t.input, "in1");
    assert_span(t.propbag, "%24.mid=1&k=v");
    t = classify("devices/d/modules/m/inputs/in1/");
    assert_int_equal(t.kind, IOTHUB_TOPIC_MODULE_INPUT);
    assert_span(t.propbag, "");
    t = classify("devices/d/modules/m/inputs/in1/k=v/");
    assert_span(t.propbag, "k=v");
    t = classify("devices/d/modules/m/inputs/in1");
    assert_int_equal(t.kind, IOTHUB_TOPIC_MODULE_INPUT);
    assert_span(t.propbag, "");

    t = classify("$iothub/twin/GET/?$rid=42");
    assert_int_equal(t.kind, IOTHUB_TOPIC_TWIN_GET);
    assert_span(t.rid, "42");
    assert_false(t.has_version);
    t = classify("$iothub/twin/GET/?$rid=0b3a6c5e-9d4f-4f5e-8a8e-3c1d2b9f7e61");
    assert_span(t.rid, "0b3a6c5e-9d4f-4f5e-8a8e-3c1d2b9f7e61");
    t = classify("$iothub/twin/PATCH/properties/reported/?$rid=7");
    assert_int_equal(t.kind, IOTHUB_TOPIC_TWIN_REPORTED);
    assert_span(t.rid, "7");
    assert_false(t.has_version);
    t = classify("$iothub/twin/PATCH/properties/reported/?$rid=7&$version=3");
    assert_true(t.has_version);
    assert_int_equal(t.version, 3);
    t = classify("$iothub/methods/res/200/?$rid=abc");
    assert_int_equal(t.kind, IOTHUB_TOPIC_METHOD_RESPONSE);
    assert_int_equal(t.status, 200);
    assert_span(t.rid, "abc");
    t = classify("$iothub/methods/res/-1/?$rid=1");
    assert_int_equal(t.status, -1);
    t = classify("$iothub/methods/POST/reboot/?$rid=5");
    assert_int_equal(t.kind, IOTHUB_TOPIC_METHOD_REQUEST);
    assert_span(t.method, "reboot");
    assert_span(t.rid, "5");
    t = classify("$iothub/twin/res/204/?$rid=9&$version=12");
    assert_int_equal(t.kind, IOTHUB_TOPIC_TWIN_RESPONSE);
    assert_int_equal(t.status, 204);
    assert_span(t.rid, "9");
    assert_true(t.has_version);
    assert_int_equal(t.version, 12);
    t = classify("$iothub/twin/PATCH/properties/desired/?$version=18446744073709551615");
    assert_int_equal(t.kind, IOTHUB_TOPIC_TWIN_DESIRED);
    assert_int_equal(t.version, UINT64_MAX);
    /* '/' before '?' optional, unknown parameters ignored, last $rid wins */
    t = classify("$iothub/twin/GET?$rid=1&foo=bar&$rid=2");
    assert_int_equal(t.kind, IOTHUB_TOPIC_TWIN_GET);
    assert_span(t.rid, "2");

    const char *unknown[] = {"devices/d/messages/eventsX",
                             "devices//messages/events/",
                             "devices/d",
                             "devices/d/",
                             "devices/d/modules//messages/events",
                             "devices/d/modules/m/inputs/",
                             "devices/d/modules/m/outputs/o",
                             "devices/d/messages/deviceboundX/",
                             "devices/d/modules/m/messages/devicebound/",
                             "$iothub/other",
                             "$iothub/twin/GETX?$rid=1",
                             "$iothub/twin/res/",
                             "$iothub/methods/POST/",
                             "$iothub/methods/PUT/x/?$rid=1",
                             "foo/bar",
                             "$iothub"};
    for (size_t i = 0; i < ARRAY_SIZE(unknown); i++) {
        t = classify(unknown[i]);
        if (t.kind != IOTHUB_TOPIC_UNKNOWN) {
            print_error("'%s' classified as %s\n", unknown[i], iothub_topic_kind_name(t.kind));
            fail();
        }
    }

    struct {
        const char *t, *msg;
    } bad[] = {
        {"$iothub/twin/GET/?$rid=", "$iothub/twin/GET: missing $rid"},
        {"$iothub/twin/GET/", "$iothub/twin/GET: missing $rid"},
        {"$iothub/twin/GET", "$iothub/twin/GET: missing $rid"},
        {"$iothub/twin/PATCH/properties/reported/?$version=1",
         "$iothub/twin/PATCH/properties/reported: missing $rid"},
        {"$iothub/twin/PATCH/properties/reported/?$rid=7&$version=x",
         "$iothub/twin/PATCH/properties/reported: $version is not a number"},
        {"$iothub/twin/PATCH/properties/desired/?$version=18446744073709551616",
         "$iothub/twin/PATCH/properties/desired: $version is not a number"},
        {"$iothub/twin/PATCH/properties/desired/?$version=123456789012345678901",
         "$iothub/twin/PATCH/properties/desired: $version is not a number"},
        {"$iothub/twin/PATCH/properties/desired/", "$iothub/twin/PATCH/properties/desired: "
                                                   "missing $version"},
        {"$iothub/methods/res/OK/?$rid=1", "$iothub/methods/res: status is not a number"},
        {"$iothub/methods/res/1234567890/?$rid=1", "$iothub/methods/res: status is not a number"},
        {"$iothub/methods/res/-/?$rid=1", "$iothub/methods/res: status is not a number"},
        {"$iothub/methods/res/200/", "$iothub/methods/res: missing $rid"},
        {"$iothub/methods/POST/m/?x=1", "$iothub/methods/POST: missing $rid"},
        {"$iothub/twin/res/2x0/?$rid=1", "$iothub/twin/res: status is not a number"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        struct lerr e = {0};
        t.kind = IOTHUB_TOPIC_MODULE_INPUT;
        assert_int_equal(iothub_topic_parse(bad[i].t, strlen(bad[i].t), &t, &e), -EINVAL);
        assert_string_equal(e.msg, bad[i].msg);
        assert_int_equal(t.kind, IOTHUB_TOPIC_MODULE_INPUT); /* untouched */
    }
    assert_string_equal(iothub_topic_kind_name(IOTHUB_TOPIC_TWIN_GET), "twin get");
    assert_string_equal(iothub_topic_kind_name((enum iothub_topic_kind)99), "unknown");
}

/* ---- IoT Hub: property bags ---- */

static struct iothub_props parse_bag(const char *bag, char *scratch)
{
    struct iothub_props p;
    struct lerr e = {0};
    int r = iothub_props_parse(bag, strlen(bag), scratch, strlen(bag), &p, &e);
    if (r != 0) {
        print_error("'%s': %s\n", bag, e.msg);
        fail();
    }
    return p;
}

static void test_props_parse(void **state)
{
    char scratch[1024];
    /* what the Node SDK sends: querystring-escaped system keys, encodeURIComponent app props */
    struct iothub_props p =
        parse_bag("%24.on=output1&%24.mid=m%201&%24.cid=c1&%24.ct=application%2Fjson&%24.ce=utf-8"
                  "&%24.uid=u&%24.exp=2030-01-01T00%3A00%3A00.000Z&%24.to=%2Fdevices%2Fd"
                  "&temp=21.5&na%20me=v%26x%3Dy&%24.ifid=urn%3Ax",
                  scratch);
    assert_span(p.sys[IOTHUB_PROP_OUTPUT_NAME], "output1");
    assert_span(p.sys[IOTHUB_PROP_MESSAGE_ID], "m 1");
    assert_span(p.sys[IOTHUB_PROP_CORRELATION_ID], "c1");
    assert_span(p.sys[IOTHUB_PROP_CONTENT_TYPE], "application/json");
    assert_span(p.sys[IOTHUB_PROP_CONTENT_ENCODING], "utf-8");
    assert_span(p.sys[IOTHUB_PROP_USER_ID], "u");
    assert_span(p.sys[IOTHUB_PROP_EXPIRY_TIME_UTC], "2030-01-01T00:00:00.000Z");
    assert_span(p.sys[IOTHUB_PROP_TO], "/devices/d");
    assert_span(p.sys[IOTHUB_PROP_INTERFACE_ID], "urn:x");
    assert_null(p.sys[IOTHUB_PROP_CONNECTION_DEVICE_ID].ptr);
    assert_int_equal(p.n_app, 2);
    assert_span(p.app[0].key, "temp");
    assert_span(p.app[0].value, "21.5");
    assert_span(p.app[1].key, "na me");
    assert_span(p.app[1].value, "v&x=y");

    /* what sdk-c sends with URL encoding off (its default): raw values, '%24.' keys */
    p = parse_bag("k1=v1&%24.cid=corr&%24.mid=mid1&%24.ct=application/json&%24.ce=utf-8"
                  "&%24.ctime=2020-01-01T00:00:00Z&%24.on=out&%24.sub=comp&%24.diagid=d1"
                  "&%24.diagctx=creationtimeutc%3D1&%24.schema=s1",
                  scratch);
    assert_span(p.sys[IOTHUB_PROP_CONTENT_TYPE], "application/json");
    assert_span(p.sys[IOTHUB_PROP_CREATION_TIME_UTC], "2020-01-01T00:00:00Z");
    assert_span(p.sys[IOTHUB_PROP_COMPONENT_NAME], "comp");
    assert_span(p.sys[IOTHUB_PROP_DIAG_ID], "d1");
    assert_span(p.sys[IOTHUB_PROP_DIAG_CONTEXT], "creationtimeutc=1");
    assert_span(p.sys[IOTHUB_PROP_MESSAGE_SCHEMA], "s1");
    assert_int_equal(p.n_app, 1);

    /* raw '$' keys, UTF-8, lenient '%', '+' kept */
    p = parse_bag("$.mid=abc&%24.cdid=d&$.cmid=m&k=50%&k2=%zz&k3=%4&k4=a+b&k5=caf%C3%A9&k6=%e2%82%"
                  "ac",
                  scratch);
    assert_span(p.sys[IOTHUB_PROP_MESSAGE_ID], "abc");
    assert_span(p.sys[IOTHUB_PROP_CONNECTION_DEVICE_ID], "d");
    assert_span(p.sys[IOTHUB_PROP_CONNECTION_MODULE_ID], "m");
    assert_int_equal(p.n_app, 6);
    assert_span(p.app[0].value, "50%");
    assert_span(p.app[1].value, "%zz");
    assert_span(p.app[2].value, "%4");
    assert_span(p.app[3].value, "a+b");
    assert_span(p.app[4].value, "caf\xc3\xa9");
    assert_span(p.app[5].value, "\xe2\x82\xac");

    /* duplicates: last wins, first position kept; empty pairs skipped; bare key */
    p = parse_bag("&&k=1&x=0&k=2&&$.mid=1&%24.mid=2&flag&", scratch);
    assert_int_equal(p.n_app, 3);
    assert_span(p.app[0].key, "k");
    assert_span(p.app[0].value, "2");
    assert_span(p.app[1].key, "x");
    assert_span(p.app[2].key, "flag");
    assert_span(p.app[2].value, "");
    assert_span(p.sys[IOTHUB_PROP_MESSAGE_ID], "2");
    /* unknown "$." keys are application properties; so is "$.mi" */
    p = parse_bag("$.foo=1&%24.mi=2&%24.=3", scratch);
    assert_int_equal(p.n_app, 3);
    assert_span(p.app[0].key, "$.foo");
    assert_span(p.app[1].key, "$.mi");
    p = parse_bag("", scratch);
    assert_int_equal(p.n_app, 0);
    for (int i = 0; i < IOTHUB_PROP_COUNT; i++)
        assert_null(p.sys[i].ptr);
    /* a value may contain '=' once decoded, or raw after the first '=' */
    p = parse_bag("k=a=b", scratch);
    assert_span(p.app[0].value, "a=b");
}

static void test_props_parse_errors(void **state)
{
    char scratch[70000];
    struct {
        const char *bag;
        int err;
        const char *msg;
    } bad[] = {
        {"=v", -EINVAL, "property bag: property 1 has an empty name"},
        {"a=1&%80=", -EILSEQ, "property bag: name of property 2: invalid UTF-8 at offset 0"},
        {"a=1&=", -EINVAL, "property bag: property 2 has an empty name"},
        {"k=a%00b", -EILSEQ, "property bag: value of property 1: U+0000 at offset 1"},
        {"k=%ff", -EILSEQ, "property bag: value of property 1: invalid UTF-8 at offset 0"},
        {"k%00=1", -EILSEQ, "property bag: name of property 1: U+0000 at offset 1"},
        {"k=%C3", -EILSEQ, "property bag: value of property 1: invalid UTF-8 at offset 0"},
    };
    struct iothub_props p;
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        struct lerr e = {0};
        p.n_app = 999;
        assert_int_equal(
            iothub_props_parse(bad[i].bag, strlen(bad[i].bag), scratch, sizeof(scratch), &p, &e),
            bad[i].err);
        assert_string_equal(e.msg, bad[i].msg);
        assert_int_equal(p.n_app, 999);
    }
    /* bounded count */
    _cleanup_lbuf_ struct lbuf b = LBUF_INIT;
    for (int i = 0; i < IOTHUB_APP_PROPS_MAX; i++)
        lbuf_printf(&b, "%sk%d=%d", i ? "&" : "", i, i);
    struct lerr e = {0};
    assert_int_equal(iothub_props_parse(b.data, b.len, scratch, sizeof(scratch), &p, &e), 0);
    assert_int_equal(p.n_app, IOTHUB_APP_PROPS_MAX);
    /* repeating a key is not a new property */
    lbuf_puts(&b, "&k0=again");
    assert_int_equal(iothub_props_parse(b.data, b.len, scratch, sizeof(scratch), &p, &e), 0);
    assert_span(p.app[0].value, "again");
    lbuf_puts(&b, "&one=more");
    assert_int_equal(iothub_props_parse(b.data, b.len, scratch, sizeof(scratch), &p, &e), -E2BIG);
    assert_string_equal(e.msg, "property bag: more than 64 application properties");
    /* bounded length */
    static char big[MQTT_TOPIC_MAX + 1];
    memset(big, 'a', sizeof(big));
    assert_int_equal(iothub_props_parse(big, sizeof(big), scratch, sizeof(scratch), &p, &e),
                     -E2BIG);
    assert_string_equal(e.msg, "property bag: longer than 65535 bytes");
    assert_int_equal(iothub_props_parse("k=v", 3, scratch, 2, &p, &e), -EINVAL);
    assert_string_equal(e.msg, "property bag: scratch buffer too small");
}

/* A delivered message as the property set the hub routes (system + application). */
static struct iothub_props sample_props(void)
{
    struct iothub_props p = {0};
    p.sys[IOTHUB_PROP_MESSAGE_ID] = mqtt_str_c("msg 1");
    p.sys[IOTHUB_PROP_CORRELATION_ID] = mqtt_str_c("corr/2");
    p.sys[IOTHUB_PROP_USER_ID] = mqtt_str_c("user");
    p.sys[IOTHUB_PROP_CONTENT_TYPE] = mqtt_str_c("application/json");
    p.sys[IOTHUB_PROP_CONTENT_ENCODING] = mqtt_str_c("utf-8");
    p.sys[IOTHUB_PROP_CONNECTION_DEVICE_ID] = mqtt_str_c("edge1");
    p.sys[IOTHUB_PROP_CONNECTION_MODULE_ID] = mqtt_str_c("sensor");
    p.sys[IOTHUB_PROP_OUTPUT_NAME] = mqtt_str_c("out1");
    p.app[0] = (struct iothub_kv){mqtt_str_c("temp"), mqtt_str_c("21.5")};
    p.app[1] = (struct iothub_kv){mqtt_str_c("a b"), mqtt_str_c("c&d=e/f+g#h~\xc3\xa9")};
    p.app[2] = (struct iothub_kv){mqtt_str_c("empty"), mqtt_str_c("")};
    p.n_app = 3;
    return p;
}

static bool span_eq(struct mqtt_str a, struct mqtt_str b)
{
    if (!a.ptr || !b.ptr)
        return !a.ptr && !b.ptr;
    return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0;
}

static void test_props_encode(void **state)
{
    _cleanup_lbuf_ struct lbuf b = LBUF_INIT;
    struct iothub_props p = sample_props();
    assert_int_equal(iothub_props_encode(&b, &p), 0);
    assert_string_equal(b.data, "%24.mid=msg%201&%24.cid=corr%2F2&%24.uid=user"
                                "&%24.ct=application%2Fjson&%24.ce=utf-8&%24.on=out1"
                                "&%24.cdid=edge1&%24.cmid=sensor&temp=21.5"
                                "&a%20b=c%26d%3De%2Ff%2Bg%23h%7E%C3%A9&empty=");
    /* lossless: parse(encode(p)) == p */
    char scratch[1024];
    struct iothub_props q;
    assert_int_equal(iothub_props_parse(b.data, b.len, scratch, sizeof(scratch), &q, NULL), 0);
    for (int i = 0; i < IOTHUB_PROP_COUNT; i++)
        assert_true(span_eq(p.sys[i], q.sys[i]));
    assert_int_equal(q.n_app, p.n_app);
    for (size_t i = 0; i < p.n_app; i++) {
        assert_true(span_eq(p.app[i].key, q.app[i].key));
        assert_true(span_eq(p.app[i].value, q.app[i].value));
    }
    assert_string_equal(iothub_sysprop_key(IOTHUB_PROP_CONNECTION_MODULE_ID), "$.cmid");
    assert_null(iothub_sysprop_key(IOTHUB_PROP_COUNT));
    /* empty bag */
    lbuf_reset(&b);
    struct iothub_props none = {0};
    assert_int_equal(iothub_props_encode(&b, &none), 0);
    assert_int_equal(b.len, 0);
}

/* How the SDKs read an input topic back. Node (device/transport/mqtt/src/mqtt.ts _onInputMessage):
 * split('/'), [5] is the input, [6] the bag; split('&'), split('='), decodeURIComponent both;
 * $.mid/$.cid/$.uid/$.to/$.exp/$.ct/$.ce are system properties, everything else a property.
 * sdk-c (iothubtransport_mqtt_common.c extractMqttProperties): the input is the level after
 * "inputs/" and must be followed by '/'; the rest is tokenised on '&'; pairs without '=' or with
 * an empty value are skipped; raw keys are matched against "%24.mid" ... ("%24.cdid", "%24.cmid");
 * values are URL-decoded only with OPTION_AUTO_URL_ENCODE_DECODE, by a decoder that accepts only
 * [A-Za-z0-9!()*._-] raw and %XX below 0x80. */
struct sdk_view {
    char input[64];
    char sys[IOTHUB_PROP_COUNT][128];
    bool has_sys[IOTHUB_PROP_COUNT];
    char app_key[8][64], app_val[8][128];
    int n_app;
};

static bool node_decode(const char *in, size_t n, char *out)
{
    /* decodeURIComponent: every '%' must start a valid escape (else URIError) */
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == '%') {
            if (i + 2 >= n)
                return false;
            char hx[3] = {in[i + 1], in[i + 2], 0};
            char *end;
            long v = strtol(hx, &end, 16);
            if (*end)
                return false;
            out[k++] = (char)v;
            i += 2;
        } else {
            out[k++] = in[i];
        }
    }
    out[k] = 0;
    return mqtt_utf8_check(out, k, NULL) == 0;
}

static int node_sys(const char *k)
{
    static const enum iothub_sysprop known[] = {
        IOTHUB_PROP_MESSAGE_ID,      IOTHUB_PROP_TO,      IOTHUB_PROP_EXPIRY_TIME_UTC,
        IOTHUB_PROP_CORRELATION_ID,  IOTHUB_PROP_USER_ID, IOTHUB_PROP_CONTENT_TYPE,
        IOTHUB_PROP_CONTENT_ENCODING};
    for (size_t i = 0; i < ARRAY_SIZE(known); i++)
        if (strcmp(k, iothub_sysprop_key(known[i])) == 0)
            return (int)known[i];
    return -1;
}

static void node_view(const char *topic, struct sdk_view *v)
{
    memset(v, 0, sizeof(*v));
    char copy[2048];
    snprintf(copy, sizeof(copy), "%s", topic);
    char *parts[16];
    int np = 0;
    for (char *s = copy, *slash; np < 16; s = slash + 1) {
        parts[np++] = s;
        slash = strchr(s, '/');
        if (!slash)
            break;
        *slash = 0;
    }
    assert_true(np >= 7);
    snprintf(v->input, sizeof(v->input), "%s", parts[5]);
    if (!parts[6][0])
        return;
    for (char *pair = strtok(parts[6], "&"); pair; pair = strtok(NULL, "&")) {
        char *eq = strchr(pair, '=');
        assert_non_null(eq); /* Node would decode "undefined" */
        *eq = 0;
        char key[64], val[128];
        assert_true(node_decode(pair, strlen(pair), key));
        assert_true(node_decode(eq + 1, strlen(eq + 1), val));
        int sp = node_sys(key);
        if (sp >= 0) {
            snprintf(v->sys[sp], sizeof(v->sys[sp]), "%s", val);
            v->has_sys[sp] = true;
        } else {
            snprintf(v->app_key[v->n_app], 64, "%s", key);
            snprintf(v->app_val[v->n_app++], 128, "%s", val);
        }
    }
}

static bool c_sdk_decode(const char *in, char *out)
{
    size_t k = 0;
    for (size_t i = 0; in[i]; i++) {
        char c = in[i];
        if (c == '%') {
            if (!in[i + 1] || !in[i + 2] || !strchr("01234567", in[i + 1]) ||
                !strchr("0123456789abcdefABCDEF", in[i + 2]))
                return false;
            char hx[3] = {in[i + 1], in[i + 2], 0};
            out[k++] = (char)strtol(hx, NULL, 16);
            i += 2;
        } else if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                   strchr("!()*-._", c)) {
            out[k++] = c;
        } else {
            return false;
        }
    }
    out[k] = 0;
    return true;
}

static void c_sdk_view(const char *topic, const char *dev, const char *mod, bool auto_decode,
                       struct sdk_view *v)
{
    static const struct {
        const char *wire;
        enum iothub_sysprop p;
    } known[] = {
        {"%24.mid", IOTHUB_PROP_MESSAGE_ID},
        {"%24.uid", IOTHUB_PROP_USER_ID},
        {"%24.cid", IOTHUB_PROP_CORRELATION_ID},
        {"%24.ct", IOTHUB_PROP_CONTENT_TYPE},
        {"%24.ce", IOTHUB_PROP_CONTENT_ENCODING},
        {"%24.cdid", IOTHUB_PROP_CONNECTION_DEVICE_ID},
        {"%24.cmid", IOTHUB_PROP_CONNECTION_MODULE_ID},
        {"%24.ctime", IOTHUB_PROP_CREATION_TIME_UTC},
    };
    static const char *ignored[] = {"%24.on", "%24.exp", "%24.to"};
    memset(v, 0, sizeof(*v));
    char prefix[256];
    snprintf(prefix, sizeof(prefix), "devices/%s/modules/%s/", dev, mod);
    assert_true(strncmp(topic, prefix, strlen(prefix)) == 0);
    const char *rest = topic + strlen(prefix);
    const char *in_start = strchr(rest, '/');
    assert_non_null(in_start);
    in_start++;
    const char *in_end = strchr(in_start, '/');
    assert_non_null(in_end); /* "Cannot find '/' after input name" */
    snprintf(v->input, sizeof(v->input), "%.*s", (int)(in_end - in_start), in_start);
    char bag[2048];
    snprintf(bag, sizeof(bag), "%s", in_end + 1);
    for (char *pair = strtok(bag, "&"); pair; pair = strtok(NULL, "&")) {
        char *eq = strchr(pair, '=');
        if (!eq || !eq[1])
            continue;
        *eq = 0;
        const char *val = eq + 1;
        char dec[128], deckey[64];
        int sp = -1;
        bool ignore = false;
        for (size_t i = 0; i < ARRAY_SIZE(known); i++)
            if (strcmp(pair, known[i].wire) == 0)
                sp = (int)known[i].p;
        for (size_t i = 0; i < ARRAY_SIZE(ignored); i++)
            ignore |= strcmp(pair, ignored[i]) == 0;
        if (ignore)
            continue;
        if (auto_decode) {
            assert_true(c_sdk_decode(val, dec));
            val = dec;
        }
        if (sp >= 0) {
            snprintf(v->sys[sp], sizeof(v->sys[sp]), "%s", val);
            v->has_sys[sp] = true;
        } else {
            const char *key = pair;
            if (auto_decode) {
                assert_true(c_sdk_decode(pair, deckey));
                key = deckey;
            }
            snprintf(v->app_key[v->n_app], 64, "%s", key);
            snprintf(v->app_val[v->n_app++], 128, "%s", val);
        }
    }
}

static void test_input_topic_sdks(void **state)
{
    _cleanup_lbuf_ struct lbuf b = LBUF_INIT;
    struct iothub_props p = sample_props();
    p.app[1].value = mqtt_str_c("c&d=e/f g"); /* sdk-c's decoder is ASCII-only */
    assert_int_equal(iothub_topic_module_input(&b, mqtt_str_c("edge1"), mqtt_str_c("filter"),
                                               mqtt_str_c("input1"), &p),
                     0);
    /* $.on is not delivered */
    assert_string_equal(b.data, "devices/edge1/modules/filter/inputs/input1/"
                                "%24.mid=msg%201&%24.cid=corr%2F2&%24.uid=user"
                                "&%24.ct=application%2Fjson&%24.ce=utf-8"
                                "&%24.cdid=edge1&%24.cmid=sensor&temp=21.5"
                                "&a%20b=c%26d%3De%2Ff%20g&empty=");
    assert_int_equal(mqtt_topic_name_check(b.data, b.len, NULL), 0);

    struct sdk_view v;
    node_view(b.data, &v);
    assert_string_equal(v.input, "input1");
    assert_string_equal(v.sys[IOTHUB_PROP_MESSAGE_ID], "msg 1");
    assert_string_equal(v.sys[IOTHUB_PROP_CORRELATION_ID], "corr/2");
    assert_string_equal(v.sys[IOTHUB_PROP_USER_ID], "user");
    assert_string_equal(v.sys[IOTHUB_PROP_CONTENT_TYPE], "application/json");
    assert_string_equal(v.sys[IOTHUB_PROP_CONTENT_ENCODING], "utf-8");
    /* Node has no accessor for these: they arrive as properties, as from IoT Edge */
    assert_int_equal(v.n_app, 5);
    assert_string_equal(v.app_key[0], "$.cdid");
    assert_string_equal(v.app_val[0], "edge1");
    assert_string_equal(v.app_key[1], "$.cmid");
    assert_string_equal(v.app_val[1], "sensor");
    assert_string_equal(v.app_key[2], "temp");
    assert_string_equal(v.app_key[3], "a b");
    assert_string_equal(v.app_val[3], "c&d=e/f g");
    assert_string_equal(v.app_key[4], "empty");
    assert_string_equal(v.app_val[4], "");

    c_sdk_view(b.data, "edge1", "filter", true, &v);
    assert_string_equal(v.input, "input1");
    assert_string_equal(v.sys[IOTHUB_PROP_MESSAGE_ID], "msg 1");
    assert_string_equal(v.sys[IOTHUB_PROP_CORRELATION_ID], "corr/2");
    assert_string_equal(v.sys[IOTHUB_PROP_USER_ID], "user");
    assert_string_equal(v.sys[IOTHUB_PROP_CONTENT_TYPE], "application/json");
    assert_string_equal(v.sys[IOTHUB_PROP_CONTENT_ENCODING], "utf-8");
    assert_string_equal(v.sys[IOTHUB_PROP_CONNECTION_DEVICE_ID], "edge1");
    assert_string_equal(v.sys[IOTHUB_PROP_CONNECTION_MODULE_ID], "sensor");
    assert_int_equal(v.n_app, 2); /* "empty=" is skipped by sdk-c */
    assert_string_equal(v.app_key[1], "a b");
    assert_string_equal(v.app_val[1], "c&d=e/f g");
    /* sdk-c's default (no URL decoding) still finds every system property; values that needed
     * escaping arrive escaped, exactly as from IoT Edge */
    c_sdk_view(b.data, "edge1", "filter", false, &v);
    assert_string_equal(v.sys[IOTHUB_PROP_MESSAGE_ID], "msg%201");
    assert_string_equal(v.sys[IOTHUB_PROP_CONNECTION_DEVICE_ID], "edge1");
    assert_string_equal(v.sys[IOTHUB_PROP_CONNECTION_MODULE_ID], "sensor");
    assert_string_equal(v.sys[IOTHUB_PROP_CONTENT_ENCODING], "utf-8");

    /* no properties: both still need the '/' after the input name */
    lbuf_reset(&b);
    assert_int_equal(
        iothub_topic_module_input(&b, mqtt_str_c("d"), mqtt_str_c("m"), mqtt_str_c("in"), NULL), 0);
    assert_string_equal(b.data, "devices/d/modules/m/inputs/in/");
    node_view(b.data, &v);
    assert_string_equal(v.input, "in");
    assert_int_equal(v.n_app, 0);
    c_sdk_view(b.data, "d", "m", true, &v);
    assert_string_equal(v.input, "in");
    assert_int_equal(v.n_app, 0);
    /* and our own classifier reads it back */
    struct iothub_topic t = classify(b.data);
    assert_int_equal(t.kind, IOTHUB_TOPIC_MODULE_INPUT);
    assert_span(t.input, "in");
}

static void test_topic_builders(void **state)
{
    _cleanup_lbuf_ struct lbuf b = LBUF_INIT;
    struct iothub_topic t;

#define BUILT(call, want)                                                                          \
    do {                                                                                           \
        lbuf_reset(&b);                                                                            \
        assert_int_equal(call, 0);                                                                 \
        assert_string_equal(b.data, want);                                                         \
        t = classify(b.data);                                                                      \
    } while (0)

    BUILT(iothub_topic_twin_response(&b, 200, mqtt_str_c("abc"), false, 0),
          "$iothub/twin/res/200/?$rid=abc");
    assert_int_equal(t.kind, IOTHUB_TOPIC_TWIN_RESPONSE);
    assert_int_equal(t.status, 200);
    assert_span(t.rid, "abc");
    BUILT(iothub_topic_twin_response(&b, 204, mqtt_str_c("7"), true, 42),
          "$iothub/twin/res/204/?$rid=7&$version=42");
    assert_true(t.has_version);
    assert_int_equal(t.version, 42);
    BUILT(iothub_topic_twin_desired(&b, 5), "$iothub/twin/PATCH/properties/desired/?$version=5");
    assert_int_equal(t.kind, IOTHUB_TOPIC_TWIN_DESIRED);
    assert_int_equal(t.version, 5);
    BUILT(iothub_topic_method_request(&b, mqtt_str_c("reboot"), mqtt_str_c("1")),
          "$iothub/methods/POST/reboot/?$rid=1");
    assert_int_equal(t.kind, IOTHUB_TOPIC_METHOD_REQUEST);
    assert_span(t.method, "reboot");
    BUILT(iothub_topic_twin_get(&b, mqtt_str_c("r1")), "$iothub/twin/GET/?$rid=r1");
    assert_int_equal(t.kind, IOTHUB_TOPIC_TWIN_GET);
    BUILT(iothub_topic_twin_reported(&b, mqtt_str_c("r2")),
          "$iothub/twin/PATCH/properties/reported/?$rid=r2");
    assert_int_equal(t.kind, IOTHUB_TOPIC_TWIN_REPORTED);
    BUILT(iothub_topic_method_response(&b, 500, mqtt_str_c("r3")),
          "$iothub/methods/res/500/?$rid=r3");
    assert_int_equal(t.kind, IOTHUB_TOPIC_METHOD_RESPONSE);
    assert_int_equal(t.status, 500);
    BUILT(iothub_topic_events(&b, mqtt_str_c("d"), mqtt_str_c("m"), NULL),
          "devices/d/modules/m/messages/events/");
    assert_int_equal(t.kind, IOTHUB_TOPIC_MODULE_EVENTS);
    BUILT(iothub_topic_events(&b, mqtt_str_c("d"), mqtt_str_c(""), NULL),
          "devices/d/messages/events/");
    assert_int_equal(t.kind, IOTHUB_TOPIC_DEVICE_EVENTS);
    struct iothub_props p = {0};
    p.sys[IOTHUB_PROP_MESSAGE_ID] = mqtt_str_c("m 1");
    p.sys[IOTHUB_PROP_TO] = mqtt_str_c("/devices/leaf1/messages/deviceBound");
    p.app[p.n_app++] = (struct iothub_kv){mqtt_str_c("iothub-ack"), mqtt_str_c("full")};
    BUILT(iothub_topic_devicebound(&b, mqtt_str_c("leaf1"), &p),
          "devices/leaf1/messages/devicebound/"
          "%24.mid=m%201&%24.to=%2Fdevices%2Fleaf1%2Fmessages%2FdeviceBound&iothub-ack=full");
    assert_int_equal(t.kind, IOTHUB_TOPIC_DEVICEBOUND);
    assert_span(t.device_id, "leaf1");
    assert_span(t.propbag,
                "%24.mid=m%201&%24.to=%2Fdevices%2Fleaf1%2Fmessages%2FdeviceBound&iothub-ack=full");
    BUILT(iothub_topic_devicebound(&b, mqtt_str_c("leaf1"), NULL),
          "devices/leaf1/messages/devicebound/");
    assert_int_equal(t.kind, IOTHUB_TOPIC_DEVICEBOUND);
    assert_int_equal(t.propbag.len, 0);
    p = (struct iothub_props){0};
    p.sys[IOTHUB_PROP_OUTPUT_NAME] = mqtt_str_c("out 1");
    BUILT(iothub_topic_events(&b, mqtt_str_c("d"), mqtt_str_c("m"), &p),
          "devices/d/modules/m/messages/events/%24.on=out%201");
    assert_span(t.propbag, "%24.on=out%201");
#undef BUILT

    /* invalid parts leave the buffer unchanged */
    lbuf_reset(&b);
    lbuf_puts(&b, "x");
    assert_int_equal(iothub_topic_twin_response(&b, 200, mqtt_str_c("a&b"), false, 0), -EINVAL);
    assert_int_equal(iothub_topic_twin_response(&b, 200, mqtt_str_c(""), false, 0), -EINVAL);
    assert_int_equal(iothub_topic_twin_get(&b, mqtt_str_c("a/b")), -EINVAL);
    assert_int_equal(iothub_topic_devicebound(&b, mqtt_str_c("a/b"), NULL), -EINVAL);
    assert_int_equal(iothub_topic_devicebound(&b, mqtt_str_c(""), NULL), -EINVAL);
    assert_int_equal(iothub_topic_twin_reported(&b, mqtt_str_c("a#")), -EINVAL);
    assert_int_equal(iothub_topic_method_response(&b, 200, mqtt_str_c("a+")), -EINVAL);
    assert_int_equal(iothub_topic_method_request(&b, mqtt_str_c("a/b"), mqtt_str_c("1")), -EINVAL);
    assert_int_equal(iothub_topic_method_request(&b, mqtt_str_c("a?b"), mqtt_str_c("1")), -EINVAL);
    assert_int_equal(iothub_topic_method_request(&b, mqtt_str_c("m"), mqtt_str_c("")), -EINVAL);
    assert_int_equal(
        iothub_topic_module_input(&b, mqtt_str_c("d/x"), mqtt_str_c("m"), mqtt_str_c("i"), NULL),
        -EINVAL);
    assert_int_equal(
        iothub_topic_module_input(&b, mqtt_str_c("d"), mqtt_str_c(""), mqtt_str_c("i"), NULL),
        -EINVAL);
    assert_int_equal(
        iothub_topic_module_input(&b, mqtt_str_c("d"), mqtt_str_c("m"), mqtt_str_c("i+"), NULL),
        -EINVAL);
    assert_int_equal(iothub_topic_events(&b, mqtt_str_c(""), mqtt_str_c("m"), NULL), -EINVAL);
    assert_int_equal(iothub_topic_events(&b, mqtt_str_c("d"), mqtt_str_c("m#"), NULL), -EINVAL);
    /* invalid UTF-8 in an id: caught by the final topic check */
    assert_int_equal(
        iothub_topic_module_input(&b, mqtt_str_c("d\xff"), mqtt_str_c("m"), mqtt_str_c("i"), NULL),
        -EINVAL);
    assert_int_equal(iothub_topic_events(&b, mqtt_str_c("\xc3"), mqtt_str_c(""), NULL), -EINVAL);
    /* too long for a topic */
    static char longval[30000];
    memset(longval, ' ', sizeof(longval) - 1);
    p = (struct iothub_props){0};
    p.app[0] = (struct iothub_kv){mqtt_str_c("k"), mqtt_str_c(longval)};
    p.n_app = 1;
    assert_int_equal(
        iothub_topic_module_input(&b, mqtt_str_c("d"), mqtt_str_c("m"), mqtt_str_c("i"), &p),
        -E2BIG);
    assert_int_equal(iothub_topic_events(&b, mqtt_str_c("d"), mqtt_str_c("m"), &p), -E2BIG);
    assert_string_equal(b.data, "x");
    assert_int_equal(b.len, 1);
    /* a bounded buffer that fills up mid-topic also rolls back */
    struct lbuf small = {.max = 20};
    lbuf_puts(&small, "x");
    assert_int_equal(iothub_topic_twin_desired(&small, 1), -E2BIG);
    assert_int_equal(iothub_props_encode(&small, &p), -E2BIG);
    assert_string_equal(small.data, "x");
    assert_int_equal(small.len, 1);
    lbuf_free(&small);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_basic),
        cmocka_unit_test(test_frame_split),
        cmocka_unit_test(test_frame_errors),
        cmocka_unit_test(test_frame_length),
        cmocka_unit_test(test_encode_exact),
        cmocka_unit_test(test_publish_header_varint),
        cmocka_unit_test(test_roundtrip_all),
        cmocka_unit_test(test_decode_utf8_ok),
        cmocka_unit_test(test_decode_errors),
        cmocka_unit_test(test_connack_for_error),
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_encode_errors),
        cmocka_unit_test(test_filter_iter_guards),
        cmocka_unit_test(test_topic_filters),
        cmocka_unit_test(test_topic_match),
        cmocka_unit_test(test_username),
        cmocka_unit_test(test_topic_classify),
        cmocka_unit_test(test_props_parse),
        cmocka_unit_test(test_props_parse_errors),
        cmocka_unit_test(test_props_encode),
        cmocka_unit_test(test_input_topic_sdks),
        cmocka_unit_test(test_topic_builders),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
