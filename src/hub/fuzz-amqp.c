/* fuzz-amqp.c — what the AMQP head adds on top of Qpid Proton (amqp_map.h) on arbitrary bytes.
 * The first byte picks the parser: 0 a link address, 1 a put-token audience, 2 a request id back
 * to an AMQP id (which must come back the same), anything else an encoded AMQP message through
 * every mapping (put-token, twin request, method answer, the hub's message and back, its ids as
 * request ids and back). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "amqp_map.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void rid_round_trip(pn_msgid_t id)
{
    char rid[600], storage[600];
    int n = amqp_rid_from_msgid(id, rid, sizeof(rid));
    if (n < 0)
        return;
    pn_msgid_t back;
    if (amqp_msgid_from_rid(rid, (size_t)n, storage, &back) != 0 || back.type != id.type)
        __builtin_trap();
    char again[600];
    if (amqp_rid_from_msgid(back, again, sizeof(again)) != n || memcmp(rid, again, (size_t)n) != 0)
        __builtin_trap();
    char text[600];
    amqp_msgid_string(id, text, sizeof(text));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    switch (data[0]) {
    case 0: {
        struct amqp_addr a;
        amqp_addr_parse(p, n, &a);
        if (a.kind != AMQP_ADDR_UNKNOWN && a.kind != AMQP_ADDR_CBS &&
            (!a.device.len || a.device.ptr < p || a.device.ptr + a.device.len > p + n))
            __builtin_trap();
        return 0;
    }
    case 1: {
        char *scratch = malloc(n + 2);
        struct amqp_addr a;
        if (scratch && amqp_audience_parse(p, n, scratch, n + 2, &a) == 0 && !a.device.len)
            __builtin_trap();
        free(scratch);
        return 0;
    }
    case 2: {
        char *storage = malloc(n + 1);
        pn_msgid_t id;
        if (storage && amqp_msgid_from_rid(p, n, storage, &id) == 0)
            rid_round_trip(id);
        free(storage);
        return 0;
    }
    default:
        break;
    }
    pn_message_t *msg = pn_message();
    if (!msg)
        return 0;
    /* As head_amqp.c: nothing empty reaches the decoder (it asserts on size 0). */
    if (n > 0 && pn_message_decode(msg, p, n) == 0) {
        struct amqp_put_token pt;
        struct lerr err = {0};
        if (amqp_put_token_parse(msg, &pt, &err) == 0) {
            char *scratch = malloc(pt.audience.len + 2);
            struct amqp_addr a;
            if (scratch)
                amqp_audience_parse(pt.audience.ptr, pt.audience.len, scratch, pt.audience.len + 2,
                                    &a);
            free(scratch);
        }
        struct amqp_twin_request tr;
        amqp_twin_request_parse(msg, &tr);
        int status;
        amqp_method_status(msg, &status);
        struct mqtt_str body;
        amqp_message_body(msg, &body);
        rid_round_trip(pn_message_get_id(msg));
        rid_round_trip(pn_message_get_correlation_id(msg));
        struct hub_message m;
        struct lstrv keep = LSTRV_INIT;
        if (amqp_message_to_hub(msg, &m, &keep, &err) == 0) {
            pn_message_t *out = pn_message();
            if (out && amqp_message_from_hub(&m, "input1", out) == 0) {
                char buf[1 << 16];
                size_t len = sizeof(buf);
                pn_message_encode(out, buf, &len);
            }
            if (out)
                pn_message_free(out);
            struct lbuf enc = LBUF_INIT;
            hub_message_encode(&m, &enc);
            lbuf_free(&enc);
        }
        lstrv_free(&keep);
    }
    pn_message_free(msg);
    return 0;
}
