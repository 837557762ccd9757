/* bench-mqtt.c — timing loops for the hub's hot path (decode, classify, bag, delivery header and
 * topic, matching). Prints ns per operation; numbers are never asserted. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "mqtt/codec.h"
#include "mqtt/iothub.h"
#include "mqtt/topic.h"

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts); /* CPU time: robust on a busy host */
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static volatile size_t sink;

#define BENCH(name, iters, body)                                                                   \
    do {                                                                                           \
        double t0 = now_ns();                                                                      \
        for (long i_ = 0; i_ < (iters); i_++) {                                                    \
            body;                                                                                  \
        }                                                                                          \
        printf("%-44s %8.1f ns/op\n", name, (now_ns() - t0) / (double)(iters));                    \
    } while (0)

int main(void)
{
    const long N = 5 * 1000 * 1000;
    static uint8_t payload[256];
    memset(payload, 'x', sizeof(payload));
    const char *topic = "devices/edge1/modules/sensor/messages/events/"
                        "%24.on=output1&%24.mid=6f1c2e4a-8b1d-4c2e-9f3a-1b2c3d4e5f60"
                        "&%24.ct=application%2Fjson&%24.ce=utf-8&temperatureAlert=true";
    struct lbuf pkt = LBUF_INIT;
    struct mqtt_publish pub = {.qos = 1,
                               .packet_id = 7,
                               .topic = mqtt_str_c(topic),
                               .payload = payload,
                               .payload_len = sizeof(payload)};
    if (mqtt_encode_publish(&pkt, &pub) < 0)
        return 1;
    const uint8_t *buf = (const uint8_t *)pkt.data;
    printf("PUBLISH: %zu bytes, topic %zu bytes, payload %zu bytes\n", pkt.len, strlen(topic),
           sizeof(payload));

    struct mqtt_packet p;
    BENCH("mqtt_frame + mqtt_decode (PUBLISH QoS 1)", N, {
        size_t n;
        mqtt_frame(buf, pkt.len, 1 << 20, &n);
        mqtt_decode(buf, n, &p, NULL);
        sink += p.publish.payload_len;
    });

    struct iothub_topic t;
    BENCH("iothub_topic_parse (module events)", N, {
        iothub_topic_parse(p.publish.topic.ptr, p.publish.topic.len, &t, NULL);
        sink += t.propbag.len;
    });

    static char scratch[1024];
    struct iothub_props props;
    BENCH("iothub_props_parse (4 system + 1 app)", N, {
        iothub_props_parse(t.propbag.ptr, t.propbag.len, scratch, sizeof(scratch), &props, NULL);
        sink += props.n_app;
    });

    static uint8_t hdr[MQTT_PUBLISH_HEADER_MAX];
    const char *in_topic = "devices/edge1/modules/filter/inputs/input1/"
                           "%24.mid=6f1c2e4a-8b1d-4c2e-9f3a-1b2c3d4e5f60&%24.ct=application%2Fjson"
                           "&%24.ce=utf-8&%24.cdid=edge1&%24.cmid=sensor&temperatureAlert=true";
    size_t in_len = strlen(in_topic);
    BENCH("mqtt_encode_publish_header", N, {
        sink += (size_t)mqtt_encode_publish_header(hdr, in_topic, in_len, 1, false, false, 9,
                                                   sizeof(payload));
    });

    struct lbuf out = LBUF_INIT;
    props.sys[IOTHUB_PROP_CONNECTION_DEVICE_ID] = mqtt_str_c("edge1");
    props.sys[IOTHUB_PROP_CONNECTION_MODULE_ID] = mqtt_str_c("sensor");
    BENCH("iothub_topic_module_input (6 props)", N, {
        out.len = 0;
        iothub_topic_module_input(&out, mqtt_str_c("edge1"), mqtt_str_c("filter"),
                                  mqtt_str_c("input1"), &props);
        sink += out.len;
    });

    const char *filter = "devices/edge1/modules/filter/#";
    size_t fl = strlen(filter);
    BENCH("mqtt_topic_match (module inputs filter)", N,
          { sink += mqtt_topic_match(filter, fl, out.data, out.len); });

    BENCH("full hub inbound path (frame+decode+parse+bag)", N, {
        size_t n;
        mqtt_frame(buf, pkt.len, 1 << 20, &n);
        mqtt_decode(buf, n, &p, NULL);
        iothub_topic_parse(p.publish.topic.ptr, p.publish.topic.len, &t, NULL);
        iothub_props_parse(t.propbag.ptr, t.propbag.len, scratch, sizeof(scratch), &props, NULL);
        sink += props.n_app;
    });
    lbuf_free(&out);
    lbuf_free(&pkt);
    return 0;
}
