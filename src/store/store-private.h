/* store-private.h — what store.c, queue.c and record.c share: the record format, the in-memory
 * state of a store and its queues, and the invariants that tie them together. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "store/store.h"

/* ---- record format (README "On-disk format") ----
 * 0  magic "LQR1"          16 seq       u64 LE
 * 4  crc32 u32 LE          24 enqueue   i64 LE (ms)
 * 8  len   u32 LE          32 expiry    i64 LE (ms, 0 = never)
 * 12 flags u32 LE (0)      40 payload   len bytes
 * crc32 (zlib) covers bytes 8..39 and the payload. */
#define REC_MAGIC "LQR1"
#define REC_HDR 40u
/* Seqs start at 1 and stay below this, so seq + window arithmetic can never overflow. */
#define SEQ_LIMIT (UINT64_C(1) << 62)

static inline void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}
static inline uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

struct rec_view {
    uint64_t seq;
    int64_t enqueue_ms, expiry_ms;
    const uint8_t *data; /* into the store's read buffer */
    uint32_t len;
    uint64_t start, end; /* file offsets of the record */
};

/* Encode the header for payload into hdr. */
void rec_encode(uint8_t hdr[REC_HDR], uint64_t seq, int64_t enqueue_ms, int64_t expiry_ms,
                const void *payload, uint32_t len);

static inline bool rec_expired(int64_t expiry_ms, int64_t now_ms)
{
    return expiry_ms != 0 && expiry_ms <= now_ms;
}

/* ---- in-memory state ---- */

struct seg {
    uint64_t name_seq; /* the file is <name_seq>.seg */
    /* Lower bound of its records: max(name_seq, previous segment's last_seq + 1). So the
     * ranges [first_seq, last_seq] of the segments are disjoint and increasing, whatever the
     * names of damaged files were. */
    uint64_t first_seq;
    uint64_t last_seq; /* highest record seq; first_seq - 1 while empty */
    uint64_t uid;      /* store-unique, keys the read cache */
    uint64_t size;     /* committed bytes; nothing beyond is ever read */
    uint64_t records;
    uint64_t live;      /* records neither acked nor expired */
    int64_t max_expiry; /* latest expiry of its records: INT64_MAX if one never expires,
                         * INT64_MIN while empty */
};

/* A delivered record awaiting its ack. The ring holds them in seq order. */
struct inflight {
    uint64_t seq;
    uint32_t off; /* record offset in its segment (segments are < 4 GiB) */
    uint32_t acked;
};

struct queue {
    struct store *store;
    char *name;
    char *dir;  /* path of the queue directory */
    size_t idx; /* position in store->queues */

    /* Segments in seq order; the last one is the write segment. */
    struct seg *segs;
    size_t nsegs, capsegs;
    int wfd; /* write segment, O_RDWR, opened on demand */
    int rfd; /* a sealed segment being read, or -1 */
    uint64_t rfd_uid;
    bool seal_write; /* the write segment had an error: next append rolls */
    bool dirty;      /* appended since the last sync (is on store->dirty) */
    bool dir_dirty;  /* gained a segment file since the last sync */
    int pending_err; /* a sync error seen outside store_sync(), reported by it */

    /* Delivery cursor: the next record to read is at or after (cseg, coff); cprev is the seq
     * of the record before it, so seqs are checked to increase strictly. */
    size_t cseg;
    uint64_t coff;
    uint64_t cprev;
    /* Highest seq the cursor has ever passed (delivered or skipped). Every seq <= consumed_hi
     * that is not in the ring is done. */
    uint64_t consumed_hi;

    /* In-flight ring, seq order. ring_redo = how many entries (from the head) the cursor has
     * passed: ring_len normally, less after queue_rewind_inflight(). */
    struct inflight *ring;
    size_t ring_cap, ring_head, ring_len, ring_redo;

    uint64_t next_seq;
    uint64_t ckpt_floor; /* ack floor last persisted */
    int64_t ckpt_at;     /* now_ms of that write */
    bool ckpt_force;     /* write at the next tick even if unchanged (it was missing) */

    struct queue_stats st; /* counters; depth/bytes/segments maintained live */
};

struct store {
    char *root;
    int lock_fd;
    struct store_options opt; /* normalised */
    uint64_t seg_bytes;       /* effective segment size */

    struct queue **queues;
    size_t nqueues, capqueues;
    struct queue **dirty; /* capacity capqueues */
    size_t ndirty;

    uint64_t bytes; /* sum of segment sizes */
    uint64_t mem;   /* heap accounted by store_mem_* */
    uint64_t next_uid;
    int64_t last_sync_at;

    /* One read buffer for the whole store: a window [rb_off, rb_off + rb_len) of segment
     * rb_uid. Committed bytes never change, so it stays valid until that segment shrinks. */
    uint8_t *rbuf;
    size_t rcap;
    uint64_t rb_uid, rb_off;
    size_t rb_len;

    struct store_stats st;
};

/* Heap owned by the store, accounted in store->mem (the test for "memory does not grow with
 * depth" reads it). */
void *store_mem_alloc(struct store *s, size_t n);
void *store_mem_realloc(struct store *s, void *p, size_t old_n, size_t n);
void store_mem_free(struct store *s, void *p, size_t n);
char *store_mem_strdup(struct store *s, const char *str);
void store_mem_strfree(struct store *s, char *str);

/* Find the first valid record at or after off and before limit, whose seq lies in
 * [min_seq, max_seq]. Returns 1 (ret filled; ret->start - off bytes were skipped), 0 when
 * there is none (limit - off bytes are invalid), -errno on a read error. */
int rec_read(struct store *s, int fd, uint64_t uid, uint64_t limit, uint64_t off, uint64_t min_seq,
             uint64_t max_seq, struct rec_view *ret);
void rec_cache_forget(struct store *s, uint64_t uid);

/* Segment file path: <dir>/<name_seq as 20 digits>.seg */
#define SEG_NAME_LEN 24
int seg_path(const struct queue *q, uint64_t name_seq, char *buf, size_t size);
bool seg_parse_name(const char *name, uint64_t *ret_first_seq);

/* queue.c */
uint64_t queue_floor(const struct queue *q);
int queue_fd(struct queue *q, size_t i);
void queue_mark_dirty(struct queue *q);
int queue_reclaim(struct queue *q, int64_t now_ms);
int queue_checkpoint_write(struct queue *q, uint64_t floor);
int queue_checkpoint_read(const char *dir, uint64_t *ret_floor);
void queue_free(struct queue *q);
