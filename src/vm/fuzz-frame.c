/* fuzz-frame.c — libFuzzer target for the channel's frame decoder: arbitrary bytes, decoded the
 * way the multiplexer reads its link (resynchronising past garbage), must never read out of
 * bounds, loop forever or yield a frame that does not re-encode to the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Copy so reads past the end are caught even when the harness pads its buffer. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    size_t off = 0;
    while (off < size) {
        struct vm_frame f;
        size_t used = 0, skipped = 0;
        int found = vm_frame_decode(buf + off, size - off, &f, &used, &skipped);
        if (used > size - off || skipped > used)
            abort();
        if (!found) {
            if (used == 0)
                break; /* needs more bytes */
            off += used;
            continue;
        }
        struct lbuf re = LBUF_INIT;
        if (vm_frame_encode(&re, f.type, f.conn, f.payload, f.len) != 0 ||
            re.len != VM_FRAME_HEADER + f.len ||
            memcmp(re.data, buf + off + used - re.len, re.len) != 0)
            abort();
        uint32_t credit;
        if (f.type == VM_FRAME_WINDOW)
            (void)vm_frame_window_credit(&f, &credit);
        lbuf_free(&re);
        if (used == 0)
            abort();
        off += used;
    }
    free(buf);
    return 0;
}
