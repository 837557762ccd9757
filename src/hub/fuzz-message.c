/* fuzz-message.c — the stored message decoder on arbitrary bytes (a corrupt queue record), and
 * re-encoding whatever decodes. */
#include <stdint.h>
#include <string.h>

#include "message.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct hub_message m;
    struct lerr e = {0};
    if (hub_message_decode(data, size, &m, &e) == 0) {
        struct lbuf b = LBUF_INIT;
        if (hub_message_encode(&m, &b) == 0 && (b.len != size || memcmp(b.data, data, size) != 0)) {
            /* decode(encode(x)) must be x for canonical inputs; sys order may differ, so only
             * check that the re-encoding decodes too */
            struct hub_message again;
            if (hub_message_decode(b.data, b.len, &again, &e) != 0)
                __builtin_trap();
        }
        lbuf_free(&b);
        struct route_prop sys[HUB_SYS_COUNT], app[HUB_MESSAGE_MAX_APP];
        struct route_message rm;
        hub_message_route_view(&m, sys, app, &rm);
    }
    return 0;
}
