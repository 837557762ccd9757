/* fuzz-c2d.c — a cloud-to-device message as IoT Hub's topic carries it (an arbitrary property bag,
 * then a body after the first newline) through cloud_c2d_message() into the stored form, which
 * must decode again with the bag's properties. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloud.h"
#include "message.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t blen = nl ? (size_t)(nl - data) : size;
    char *scratch = malloc(blen + 1);
    if (!scratch)
        return 0;
    struct iothub_props props;
    if (iothub_props_parse((const char *)data, blen, scratch, blen + 1, &props, NULL) == 0) {
        struct lbuf rec = LBUF_INIT;
        int64_t expiry = -1;
        const uint8_t *body = nl ? nl + 1 : (const uint8_t *)"";
        size_t len = nl ? size - blen - 1 : 0;
        if (cloud_c2d_message(&props, body, len, 1, &rec, &expiry) == 0) {
            struct hub_message m;
            if (hub_message_decode(rec.data, rec.len, &m, NULL) != 0 || m.body_len != len ||
                expiry < 0 ||
                m.n_app != (props.n_app < HUB_MESSAGE_MAX_APP ? props.n_app : HUB_MESSAGE_MAX_APP))
                __builtin_trap();
            for (int i = 0; i < IOTHUB_PROP_COUNT; i++)
                if ((props.sys[i].ptr != NULL) != (m.sys[i] != NULL))
                    __builtin_trap();
        }
        lbuf_free(&rec);
    }
    free(scratch);
    return 0;
}
