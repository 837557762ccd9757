/* fuzz-mqtt.c — libFuzzer target: a byte stream through framing (mqtt_frame_length and
 * mqtt_frame against a reference decoding of the fixed header) and decoding with round-trip
 * invariants, and the IoT Hub parsers on decoded topics, bags and user names and on raw input. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mqtt/codec.h"
#include "mqtt/iothub.h"
#include "mqtt/topic.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)

static size_t header_len(const uint8_t *pkt)
{
    size_t i = 1;
    while (pkt[i] & 0x80)
        i++;
    return i + 1;
}

#define FUZZ_MAX_PACKET (1u << 20)

/* Framing at a packet boundary: the two framing calls agree with each other and with a plain
 * reading of the remaining-length varint, and the length is known from the header alone. */
static void fuzz_framing(const uint8_t *buf, size_t len)
{
    size_t n = 0, whole = 0;
    int r = mqtt_frame_length(buf, len, FUZZ_MAX_PACKET, &n);
    int f = mqtt_frame(buf, len, FUZZ_MAX_PACKET, &whole);
    /* the reference: up to four 7-bit groups after the type byte */
    size_t rl = 0, hdr = 0;
    int want = 0;
    for (size_t i = 1; i <= 4; i++) {
        if (i >= len)
            break;
        rl |= (size_t)(buf[i] & 0x7f) << (7 * (i - 1));
        if (!(buf[i] & 0x80)) {
            hdr = i + 1;
            want = hdr + rl > FUZZ_MAX_PACKET ? -EMSGSIZE : 1;
            break;
        }
        if (i == 4)
            want = MQTT_EMALFORMED;
    }
    CHECK(r == want);
    if (r <= 0) {
        CHECK(f == r);
        return;
    }
    CHECK(n == hdr + rl && n >= 2 && n <= FUZZ_MAX_PACKET);
    CHECK(f == (len >= n ? 1 : 0));
    if (f == 1)
        CHECK(whole == n);
    /* any prefix short of the header needs more; the header alone is enough */
    size_t m = 0;
    for (size_t k = 0; k < hdr; k++)
        CHECK(mqtt_frame_length(buf, k, FUZZ_MAX_PACKET, &m) == 0);
    CHECK(mqtt_frame_length(buf, hdr, FUZZ_MAX_PACKET, &m) == 1 && m == n);
    /* a smaller limit refuses it as soon as the length is known */
    if (n > 2)
        CHECK(mqtt_frame_length(buf, hdr, n - 1, &m) == -EMSGSIZE);
}

static bool span_eq(struct mqtt_str a, struct mqtt_str b)
{
    if (!a.ptr || !b.ptr)
        return !a.ptr && !b.ptr;
    return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0;
}

static bool props_eq(const struct iothub_props *a, const struct iothub_props *b, unsigned skip)
{
    for (int i = 0; i < IOTHUB_PROP_COUNT; i++)
        if (!(skip & (1u << i)) && !span_eq(a->sys[i], b->sys[i]))
            return false;
    if (a->n_app != b->n_app)
        return false;
    for (size_t i = 0; i < a->n_app; i++)
        if (!span_eq(a->app[i].key, b->app[i].key) || !span_eq(a->app[i].value, b->app[i].value))
            return false;
    return true;
}

/* Parse a bag; re-encode it (also as an input topic) and check that nothing is lost. */
static void fuzz_propbag(struct mqtt_str bag, struct mqtt_str device, struct mqtt_str module)
{
    char *scratch = malloc(bag.len + 1);
    if (!scratch)
        return;
    struct iothub_props p;
    struct lerr e;
    if (iothub_props_parse(bag.ptr, bag.len, scratch, bag.len, &p, &e) == 0) {
        struct lbuf b = LBUF_INIT;
        if (iothub_props_encode(&b, &p) == 0 && b.len > 0) {
            char *scratch2 = malloc(b.len);
            struct iothub_props q;
            CHECK(scratch2);
            int r = iothub_props_parse(b.data, b.len, scratch2, b.len, &q, &e);
            CHECK(r == 0 || r == -E2BIG); /* encoding may triple the length */
            if (r == 0)
                CHECK(props_eq(&p, &q, 0));
            free(scratch2);
        }
        lbuf_reset(&b);
        /* a device: the same bag on its cloud-to-device topic comes back whole */
        if (device.len && !module.len && iothub_topic_devicebound(&b, device, &p) == 0) {
            struct iothub_topic t;
            CHECK(mqtt_topic_name_check(b.data, b.len, NULL) == 0);
            CHECK(iothub_topic_parse(b.data, b.len, &t, NULL) == 0);
            CHECK(t.kind == IOTHUB_TOPIC_DEVICEBOUND && span_eq(t.device_id, device));
            char *scratch3 = malloc(t.propbag.len + 1);
            struct iothub_props q;
            CHECK(scratch3);
            CHECK(iothub_props_parse(t.propbag.ptr, t.propbag.len, scratch3, t.propbag.len, &q,
                                     NULL) == 0);
            CHECK(props_eq(&p, &q, 0));
            free(scratch3);
        }
        lbuf_reset(&b);
        if (device.len && module.len &&
            iothub_topic_module_input(&b, device, module, mqtt_str_c("in"), &p) == 0) {
            struct iothub_topic t;
            CHECK(mqtt_topic_name_check(b.data, b.len, NULL) == 0);
            CHECK(iothub_topic_parse(b.data, b.len, &t, NULL) == 0);
            CHECK(t.kind == IOTHUB_TOPIC_MODULE_INPUT);
            CHECK(span_eq(t.device_id, device) && span_eq(t.module_id, module));
            char *scratch3 = malloc(t.propbag.len + 1);
            struct iothub_props q;
            CHECK(scratch3);
            CHECK(iothub_props_parse(t.propbag.ptr, t.propbag.len, scratch3, t.propbag.len, &q,
                                     NULL) == 0);
            CHECK(props_eq(&p, &q, 1u << IOTHUB_PROP_OUTPUT_NAME));
            CHECK(q.sys[IOTHUB_PROP_OUTPUT_NAME].ptr == NULL);
            free(scratch3);
        }
        lbuf_free(&b);
    }
    free(scratch);
}

static void fuzz_topic(const char *s, size_t n)
{
    struct iothub_topic t;
    struct lerr e;
    if (iothub_topic_parse(s, n, &t, &e) != 0)
        return;
    switch (t.kind) {
    case IOTHUB_TOPIC_DEVICE_EVENTS:
    case IOTHUB_TOPIC_MODULE_EVENTS:
    case IOTHUB_TOPIC_MODULE_INPUT:
    case IOTHUB_TOPIC_DEVICEBOUND:
        fuzz_propbag(t.propbag, t.device_id, t.module_id);
        break;
    case IOTHUB_TOPIC_TWIN_GET: {
        struct lbuf b = LBUF_INIT;
        if (iothub_topic_twin_response(&b, 200, t.rid, true, 1) == 0) {
            struct iothub_topic r;
            CHECK(iothub_topic_parse(b.data, b.len, &r, NULL) == 0);
            CHECK(r.kind == IOTHUB_TOPIC_TWIN_RESPONSE && span_eq(r.rid, t.rid));
        }
        lbuf_free(&b);
        break;
    }
    default:
        break;
    }
}

static void fuzz_packet(const uint8_t *pkt, size_t len)
{
    struct mqtt_packet p;
    struct lerr e;
    if (mqtt_decode(pkt, len, &p, &e) != 0)
        return;

    /* round trip: the same body (the length varint may have been non-minimal) */
    struct lbuf b = LBUF_INIT;
    CHECK(mqtt_encode(&b, &p) == 0);
    size_t h1 = header_len(pkt), h2 = header_len((const uint8_t *)b.data);
    CHECK(b.data[0] == (char)pkt[0]);
    CHECK(b.len - h2 == len - h1);
    CHECK(memcmp(b.data + h2, pkt + h1, len - h1) == 0);
    lbuf_free(&b);

    struct mqtt_filter_iter it;
    struct mqtt_str f;
    uint8_t qos;
    size_t n = 0;
    switch (p.type) {
    case MQTT_PUBLISH:
        fuzz_topic(p.publish.topic.ptr, p.publish.topic.len);
        {
            static uint8_t hdr[MQTT_PUBLISH_HEADER_MAX];
            int hl = mqtt_encode_publish_header(hdr, p.publish.topic.ptr, p.publish.topic.len,
                                                p.publish.qos, p.publish.retain, p.publish.dup,
                                                p.publish.packet_id, p.publish.payload_len);
            CHECK(hl > 0 && (size_t)hl + p.publish.payload_len <= len);
            CHECK(memcmp(hdr + header_len(hdr), pkt + h1, (size_t)hl - header_len(hdr)) == 0);
        }
        break;
    case MQTT_CONNECT:
        if (p.connect.has_username) {
            struct iothub_username u;
            iothub_username_parse(p.connect.username.ptr, p.connect.username.len, &u, &e);
        }
        break;
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE:
        mqtt_filter_iter_init(&it, &p);
        while (mqtt_filter_iter_next(&it, &f, &qos)) {
            CHECK(mqtt_topic_filter_check(f.ptr, f.len, NULL) == 0);
            CHECK(qos <= 2);
            /* a filter matches itself when it has no wildcards */
            if (!mqtt_topic_filter_has_wildcards(f.ptr, f.len))
                CHECK(mqtt_topic_match(f.ptr, f.len, f.ptr, f.len));
            n++;
        }
        CHECK(n == p.subscribe.count);
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0, plen;
    for (;;) {
        const uint8_t *at = off ? data + off : data; /* data may be NULL when size is 0 */
        fuzz_framing(at, size - off);
        if (off >= size || mqtt_frame(at, size - off, FUZZ_MAX_PACKET, &plen) != 1)
            break;
        /* an exactly-sized copy so reads past the packet are caught */
        uint8_t *pkt = malloc(plen);
        if (!pkt)
            break;
        memcpy(pkt, data + off, plen);
        fuzz_packet(pkt, plen);
        free(pkt);
        off += plen;
    }

    /* The IoT Hub parsers on the raw bytes too (they see only decoded strings in the server,
     * but must be safe on anything). */
    if (size <= MQTT_TOPIC_MAX) {
        const char *s = (const char *)data;
        fuzz_topic(s, size);
        struct iothub_username u;
        struct lerr e;
        if (iothub_username_parse(s, size, &u, &e) == 0) {
            struct mqtt_str v;
            iothub_username_param(&u, "DeviceClientType", &v);
        }
        if (size > 0 && mqtt_topic_name_check(s, size, NULL) == 0) {
            /* matching against a few fixed filters exercises the matcher on valid topics */
            static const char *filters[] = {"#",         "+/#", "devices/+/modules/+/#",
                                            "$iothub/#", "+/+", "a/+/c"};
            for (size_t i = 0; i < sizeof(filters) / sizeof(filters[0]); i++)
                mqtt_topic_match(filters[i], strlen(filters[i]), s, size);
        }
    }
    return 0;
}
