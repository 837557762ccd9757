/* fuzz-store.c — libFuzzer target: the input becomes one queue's segment files and checkpoint
 * on disk; the store must open and salvage them, deliver, ack, rewind, append, reclaim, close
 * and reopen without crashing, and keep its accounting consistent (a full drain leaves depth 0,
 * a checkpoint's floor is taken only when it lies within the seqs the files held).
 *
 * Input: [flags][now][checkpoint: 8 bytes if flags & 1] then up to 4 segments, each
 * [name step][len u16 LE][len bytes] (the last one may be short). flags: bit 0 checkpoint,
 * bit 1 rewind while draining, bits 2-4 in-flight window, bit 5 small cap, bit 6 re-seal: fix
 * the CRC of every record-shaped chunk, so mutations reach seq order, lengths and expiries
 * instead of stopping at the checksum; bit 7 ack in reverse order. */
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "base/fs.h"
#include "store/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* snprintf into an array; a truncated path is skipped */
#define PJ(buf, ...)                                                                               \
    do {                                                                                           \
        if (snprintf(buf, sizeof(buf), __VA_ARGS__) >= (int)sizeof(buf))                           \
            abort();                                                                               \
    } while (0)

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void check(bool ok)
{
    if (!ok)
        __builtin_trap();
}

/* A valid checkpoint (the format of queue.c) holding floor. */
static void write_checkpoint(const char *qdir, uint64_t floor)
{
    uint8_t buf[24] = "LQCKPT1\n";
    for (int i = 0; i < 8; i++)
        buf[8 + i] = (uint8_t)(floor >> (8 * i));
    uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), buf, 16);
    for (int i = 0; i < 4; i++)
        buf[16 + i] = (uint8_t)(crc >> (8 * i));
    char p[PATH_MAX];
    PJ(p, "%s/checkpoint", qdir);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
        lfs_write_all(fd, buf, sizeof(buf));
        close(fd);
    }
}

/* Recompute the CRC of each record found walking data (format of record.c). */
static void reseal(uint8_t *data, size_t len)
{
    size_t off = 0;
    while (off + 40 <= len) {
        if (memcmp(data + off, "LQR1", 4) == 0) {
            size_t plen = (size_t)data[off + 8] | (size_t)data[off + 9] << 8 |
                          (size_t)data[off + 10] << 16 | (size_t)data[off + 11] << 24;
            if (plen <= len - off - 40) {
                uLong c = crc32(crc32(0L, Z_NULL, 0), data + off + 8, 32);
                c = crc32(c, data + off + 40, (uInt)plen);
                for (int i = 0; i < 4; i++)
                    data[off + 4 + i] = (uint8_t)(c >> (8 * i));
                off += 40 + plen;
                continue;
            }
        }
        off++;
    }
}

/* Ack a burst of delivered seqs: mode 0 forward but every fifth lost, 1 in reverse, 2 forward. */
static void ack_burst(struct queue *q, const uint64_t *seqs, int n, int mode)
{
    for (int k = 0; k < n; k++) {
        uint64_t seq = mode == 1 ? seqs[n - 1 - k] : seqs[k];
        if (mode == 0 && seq % 5 == 0)
            continue;
        check(queue_ack(q, seq) == 0);
    }
}

/* Deliver up to limit records, acking them in bursts of up to 16. */
static void drain(struct queue *q, int64_t now, bool rewind, int mode, int limit)
{
    struct queue_record r;
    uint64_t prev = 0, burst[16];
    int n = 0;
    for (int i = 0; i < limit; i++) {
        int rc = queue_next(q, now, &r);
        check(rc >= 0);
        if (rc == 0) {
            if (n == 0)
                break;
            ack_burst(q, burst, n, mode); /* the window may be full: free it */
            n = 0;
            continue;
        }
        check(r.len <= STORE_MESSAGE_MAX_LIMIT);
        /* touch every byte: ASan catches a record that overruns the read buffer */
        uint8_t sum = 0;
        for (size_t k = 0; k < r.len; k++)
            sum += ((const uint8_t *)r.data)[k];
        __asm__ volatile("" : : "r"(sum));
        check(r.redelivery || r.seq > prev);
        if (!r.redelivery)
            prev = r.seq;
        burst[n++] = r.seq;
        if (n == 16) {
            ack_burst(q, burst, n, mode);
            n = 0;
        }
        if (rewind && i == 7) {
            queue_rewind_inflight(q); /* the burst's acks are lost with the subscriber */
            n = 0;
        }
    }
    ack_burst(q, burst, n, mode);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t flags = data[0];
    int64_t now = (int64_t)data[1] * 1000;
    size_t pos = 2;

    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    char root[PATH_MAX], store[PATH_MAX], qdir[PATH_MAX];
    PJ(root, "%s/fuzz-store-XXXXXX", base);
    if (!mkdtemp(root))
        return 0;
    PJ(store, "%s/s", root);
    PJ(qdir, "%s/q", store);
    if (lfs_mkdir_p(qdir, 0700) < 0)
        goto out;

    uint64_t floor = 0;
    bool have_floor = false;
    if (flags & 1) {
        if (size - pos < 8)
            goto out;
        for (int i = 0; i < 8; i++)
            floor |= (uint64_t)data[pos + i] << (8 * i);
        floor &= (UINT64_C(1) << 40) - 1;
        have_floor = true;
        pos += 8;
    }
    uint64_t name = 0;
    for (int seg = 0; seg < 4 && pos < size; seg++) {
        name += 1 + (uint64_t)data[pos++] * 4;
        size_t len = 0;
        if (pos + 2 <= size) {
            len = (size_t)data[pos] | (size_t)data[pos + 1] << 8;
            pos += 2;
        }
        len = len < size - pos ? len : size - pos;
        char p[PATH_MAX];
        PJ(p, "%s/%020" PRIu64 ".seg", qdir, name);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
            goto out;
        if (flags & 0x40) {
            uint8_t *copy = malloc(len ? len : 1);
            if (!copy) {
                close(fd);
                goto out;
            }
            memcpy(copy, data + pos, len);
            reseal(copy, len);
            lfs_write_all(fd, copy, len);
            free(copy);
        } else {
            lfs_write_all(fd, data + pos, len);
        }
        close(fd);
        pos += len;
    }

    struct store_options o;
    store_options_init(&o);
    o.sync = STORE_SYNC_INTERVAL;
    o.segment_bytes = STORE_SEGMENT_MIN;
    o.inflight_max = 1 + ((flags >> 2) & 7) * 3;
    if (flags & 0x20)
        o.max_bytes = 128 * 1024;

    /* The highest seq the files hold, from an open without a checkpoint (salvage changes the
     * same files the same way whatever the floor): a floor up to it must be taken as it is, one
     * beyond it must not count any stored record as delivered. */
    uint64_t held = 0;
    if (have_floor) {
        struct store *s = NULL;
        struct store_report rep;
        int r = store_open(store, &o, &s, &rep);
        store_report_free(&rep);
        if (r < 0)
            goto out;
        struct queue *q = store_queue_find(s, "q");
        if (q) {
            struct queue_stats st;
            queue_get_stats(q, &st);
            held = st.next_seq - 1;
        }
        store_close(s);
        if (!q)
            goto out;
        write_checkpoint(qdir, floor);
    }

    for (int round = 0; round < 2; round++) {
        struct store *s = NULL;
        struct store_report rep;
        int r = store_open(store, &o, &s, &rep);
        store_report_free(&rep);
        if (r < 0)
            break;
        struct queue *q = store_queue_find(s, "q");
        if (!q) {
            store_close(s);
            break;
        }
        if (round == 0) {
            if (have_floor) {
                struct queue_stats st;
                queue_get_stats(q, &st);
                check(st.acked_seq == (floor <= held ? floor : 0));
            }
            drain(q, now, flags & 2, (flags >> 7) & 1, 300);
            for (int i = 0; i < 3; i++) {
                char msg[64];
                memset(msg, 'a' + i, sizeof(msg));
                int rc = queue_append(q, msg, sizeof(msg), now, i == 1 ? now + 500 : 0, NULL);
                check(rc == 0 || rc == -ENOSPC);
            }
            store_tick(s, now);
            queue_rewind_inflight(q); /* redelivery one second later: some have expired */
            drain(q, now + 1000, false, 0, 50);
            store_tick(s, now + 2000);
        } else {
            /* everything delivered and acked: nothing may be left pending */
            queue_rewind_inflight(q);
            drain(q, now + 1000, false, 2, 100000);
            struct queue_stats st;
            queue_get_stats(q, &st);
            check(st.inflight == 0);
            check(st.depth == 0);
            store_tick(s, now + 3000);
            queue_get_stats(q, &st);
            check(st.segments <= 1);
        }
        store_close(s);
    }
out:
    nftw(root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
