/* record.c — the segment record format: encoding, validation, and the reader that finds the
 * next valid record in a segment file (resynchronising past corrupt bytes) through the store's
 * one read buffer. Used alike by start-up salvage and by delivery. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "store-private.h"

/* Reads are done in windows of this size so that delivering small records costs one pread per
 * window, not two per record. */
#define READ_CHUNK (64u * 1024)

static uint32_t rec_crc(const uint8_t *hdr, const void *payload, uint32_t len)
{
    uLong c = crc32(0L, Z_NULL, 0);
    c = crc32(c, hdr + 8, REC_HDR - 8);
    if (len)
        c = crc32(c, payload, len);
    return (uint32_t)c;
}

void rec_encode(uint8_t hdr[REC_HDR], uint64_t seq, int64_t enqueue_ms, int64_t expiry_ms,
                const void *payload, uint32_t len)
{
    memcpy(hdr, REC_MAGIC, 4);
    put_u32(hdr + 8, len);
    put_u32(hdr + 12, 0);
    put_u64(hdr + 16, seq);
    put_u64(hdr + 24, (uint64_t)enqueue_ms);
    put_u64(hdr + 32, (uint64_t)expiry_ms);
    put_u32(hdr + 4, rec_crc(hdr, payload, len));
}

void rec_cache_forget(struct store *s, uint64_t uid)
{
    if (s->rb_uid == uid) {
        s->rb_uid = 0;
        s->rb_len = 0;
    }
}

/* Make bytes [off, off + need) of segment uid available in the read buffer, or as many of them
 * as lie before limit. *ret_p points at off; *ret_avail is how many bytes follow it. */
static int rbuf_get(struct store *s, int fd, uint64_t uid, uint64_t limit, uint64_t off,
                    size_t need, const uint8_t **ret_p, size_t *ret_avail)
{
    uint64_t left = limit > off ? limit - off : 0;
    size_t want = (size_t)MIN((uint64_t)need, left);

    if (s->rb_uid == uid && off >= s->rb_off && off - s->rb_off <= s->rb_len &&
        s->rb_len - (off - s->rb_off) >= want) {
        size_t at = (size_t)(off - s->rb_off);
        *ret_p = s->rbuf + at;
        *ret_avail = (size_t)MIN((uint64_t)(s->rb_len - at), left);
        return 0;
    }

    size_t len = (size_t)MIN((uint64_t)MAX(want, (size_t)READ_CHUNK), left);
    if (len > s->rcap) {
        uint8_t *nb = store_mem_realloc(s, s->rbuf, s->rcap, len);
        if (!nb)
            return -ENOMEM;
        s->rbuf = nb;
        s->rcap = len;
    }
    s->rb_uid = 0; /* invalid while being refilled */
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, s->rbuf + got, len - got, (off_t)(off + got));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return neg_errno();
        }
        if (n == 0)
            break; /* the file is shorter than we were told: the rest is missing */
        got += (size_t)n;
    }
    s->rb_uid = uid;
    s->rb_off = off;
    s->rb_len = got;
    *ret_p = s->rbuf;
    *ret_avail = got;
    return 0;
}

/* Is there a valid record at off? 1 yes (ret filled), 0 no, -errno on read error. */
static int rec_try(struct store *s, int fd, uint64_t uid, uint64_t limit, uint64_t off,
                   uint64_t min_seq, uint64_t max_seq, struct rec_view *ret)
{
    const uint8_t *p;
    size_t avail;
    int r = rbuf_get(s, fd, uid, limit, off, REC_HDR, &p, &avail);
    if (r < 0)
        return r;
    if (avail < REC_HDR || memcmp(p, REC_MAGIC, 4) != 0)
        return 0;
    uint32_t len = get_u32(p + 8);
    uint64_t seq = get_u64(p + 16);
    if (len > STORE_MESSAGE_MAX_LIMIT || get_u32(p + 12) != 0 || seq < min_seq || seq > max_seq)
        return 0;
    if (avail < REC_HDR + (size_t)len) {
        r = rbuf_get(s, fd, uid, limit, off, REC_HDR + (size_t)len, &p, &avail);
        if (r < 0)
            return r;
        if (avail < REC_HDR + (size_t)len)
            return 0; /* torn: the payload runs past the end */
    }
    if (get_u32(p + 4) != rec_crc(p, p + REC_HDR, len))
        return 0;
    *ret = (struct rec_view){
        .seq = seq,
        .enqueue_ms = (int64_t)get_u64(p + 24),
        .expiry_ms = (int64_t)get_u64(p + 32),
        .data = p + REC_HDR,
        .len = len,
        .start = off,
        .end = off + REC_HDR + len,
    };
    return 1;
}

int rec_read(struct store *s, int fd, uint64_t uid, uint64_t limit, uint64_t off, uint64_t min_seq,
             uint64_t max_seq, struct rec_view *ret)
{
    if (min_seq > max_seq)
        return 0;
    while (off < limit) {
        int r = rec_try(s, fd, uid, limit, off, min_seq, max_seq, ret);
        if (r != 0)
            return r;
        /* Corrupt or torn: look for the next magic. A false match inside a payload is
         * rejected by the CRC and the seq order, so scanning byte by byte is safe. */
        uint64_t from = off + 1;
        for (;;) {
            const uint8_t *p;
            size_t avail;
            if (from >= limit)
                return 0;
            r = rbuf_get(s, fd, uid, limit, from, READ_CHUNK, &p, &avail);
            if (r < 0)
                return r;
            if (avail < 4)
                return 0;
            const uint8_t *m = memmem(p, avail, REC_MAGIC, 4);
            if (m) {
                off = from + (uint64_t)(m - p);
                break;
            }
            from += avail - 3; /* the magic may straddle the window edge */
        }
    }
    return 0;
}

int seg_path(const struct queue *q, uint64_t name_seq, char *buf, size_t size)
{
    int n = snprintf(buf, size, "%s/%020" PRIu64 ".seg", q->dir, name_seq);
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

bool seg_parse_name(const char *name, uint64_t *ret_first_seq)
{
    if (strlen(name) != SEG_NAME_LEN || strcmp(name + 20, ".seg") != 0)
        return false;
    uint64_t v = 0;
    for (int i = 0; i < 20; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
        unsigned d = (unsigned)(name[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (v == 0 || v >= SEQ_LIMIT)
        return false;
    *ret_first_seq = v;
    return true;
}
