/* frame.c — encoding and resynchronising decoding of the host⇄guest channel's frames (frame.h). */
#include <errno.h>
#include <string.h>
#include <zlib.h>

#include "frame.h"

static const char *const type_names[] = {
    [VM_FRAME_HELLO] = "HELLO",   [VM_FRAME_OPEN] = "OPEN",     [VM_FRAME_DATA] = "DATA",
    [VM_FRAME_STDERR] = "STDERR", [VM_FRAME_EOF] = "EOF",       [VM_FRAME_CLOSE] = "CLOSE",
    [VM_FRAME_EXIT] = "EXIT",     [VM_FRAME_WINDOW] = "WINDOW", [VM_FRAME_EVENT] = "EVENT",
    [VM_FRAME_PING] = "PING",     [VM_FRAME_PONG] = "PONG",     [VM_FRAME_RESIZE] = "RESIZE",
};

const char *vm_frame_type_name(int type)
{
    if (type <= 0 || type > VM_FRAME_TYPE_MAX)
        return "?";
    return type_names[type];
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t crc(const void *p, size_t n)
{
    return (uint32_t)crc32(crc32(0L, Z_NULL, 0), (const Bytef *)p, (uInt)n);
}

int vm_frame_encode(struct lbuf *out, uint8_t type, uint32_t conn, const void *payload, size_t len)
{
    if (type == 0 || type > VM_FRAME_TYPE_MAX)
        return -EINVAL;
    if (len > VM_FRAME_MAX_PAYLOAD)
        return -E2BIG;
    uint8_t h[VM_FRAME_HEADER];
    h[0] = (uint8_t)(VM_FRAME_MAGIC >> 8);
    h[1] = (uint8_t)VM_FRAME_MAGIC;
    h[2] = VM_FRAME_VERSION;
    h[3] = type;
    put32(h + 4, conn);
    put32(h + 8, (uint32_t)len);
    put32(h + 12, crc(payload, len));
    put32(h + 16, crc(h, 16));
    int r = lbuf_reserve(out, sizeof(h) + len);
    if (r < 0)
        return r;
    lbuf_append(out, h, sizeof(h));
    if (len)
        lbuf_append(out, payload, len);
    return 0;
}

int vm_frame_encode_window(struct lbuf *out, uint32_t conn, uint32_t credit)
{
    uint8_t p[4];
    put32(p, credit);
    return vm_frame_encode(out, VM_FRAME_WINDOW, conn, p, sizeof(p));
}

int vm_frame_window_credit(const struct vm_frame *f, uint32_t *ret)
{
    if (f->type != VM_FRAME_WINDOW || f->len != 4)
        return -EINVAL;
    uint32_t v = get32(f->payload);
    if (v == 0)
        return -EINVAL;
    *ret = v;
    return 0;
}

int vm_frame_decode(const uint8_t *buf, size_t len, struct vm_frame *ret, size_t *ret_used,
                    size_t *ret_skipped)
{
    size_t i = 0, skipped = 0;
    int found = 0;
    while (i < len) {
        const uint8_t *p = buf + i;
        size_t avail = len - i;
        /* Check as much of the header as has arrived; a mismatch anywhere skips one byte. */
        if (p[0] != (uint8_t)(VM_FRAME_MAGIC >> 8) ||
            (avail >= 2 && p[1] != (uint8_t)VM_FRAME_MAGIC) ||
            (avail >= 3 && p[2] != VM_FRAME_VERSION)) {
            i++, skipped++;
            continue;
        }
        if (avail < VM_FRAME_HEADER)
            break;
        uint32_t plen = get32(p + 8);
        if (get32(p + 16) != crc(p, 16) || p[3] == 0 || p[3] > VM_FRAME_TYPE_MAX ||
            plen > VM_FRAME_MAX_PAYLOAD) {
            i++, skipped++;
            continue;
        }
        if (avail - VM_FRAME_HEADER < plen)
            break;
        if (get32(p + 12) != crc(p + VM_FRAME_HEADER, plen)) {
            i++, skipped++;
            continue;
        }
        ret->type = p[3];
        ret->conn = get32(p + 4);
        ret->payload = p + VM_FRAME_HEADER;
        ret->len = plen;
        i += VM_FRAME_HEADER + plen;
        found = 1;
        break;
    }
    *ret_used = i;
    if (ret_skipped)
        *ret_skipped = skipped;
    return found;
}
