/* queue.c — one durable queue: appending records to its write segment, delivering them in seq
 * order through a bounded in-flight window, acks in any order, rewind, TTL, reclaiming whole
 * segments, and its checkpoint file (the persisted ack floor). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zlib.h>

#include "base/fs.h"
#include "store-private.h"

#define CKPT_MAGIC "LQCKPT1\n"
#define CKPT_SIZE 24
#define RING_MIN 16

static struct inflight *ring_at(const struct queue *q, size_t i)
{
    return &q->ring[(q->ring_head + i) % q->ring_cap];
}

/* Every seq <= the floor is acked or expired; the oldest unacked delivery is floor + 1. */
uint64_t queue_floor(const struct queue *q)
{
    return q->ring_len ? ring_at(q, 0)->seq - 1 : q->consumed_hi;
}

const char *queue_name(const struct queue *q)
{
    return q->name;
}

/* Index of the segment that holds seq, or q->nsegs. */
static size_t seg_index(const struct queue *q, uint64_t seq)
{
    size_t lo = 0, hi = q->nsegs;
    while (lo < hi) { /* first segment whose first_seq > seq */
        size_t mid = lo + (hi - lo) / 2;
        if (q->segs[mid].first_seq <= seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0 || seq > q->segs[lo - 1].last_seq)
        return q->nsegs;
    return lo - 1;
}

/* A stored record left the live set (acked, expired, or lost). */
static void record_done(struct queue *q, uint64_t seq)
{
    if (q->st.depth)
        q->st.depth--;
    size_t i = seg_index(q, seq);
    if (i < q->nsegs && q->segs[i].live)
        q->segs[i].live--;
}

static int ring_push(struct queue *q, uint64_t seq, uint32_t off)
{
    struct store *s = q->store;
    if (q->ring_len == q->ring_cap) {
        size_t ncap = q->ring_cap ? q->ring_cap * 2 : RING_MIN;
        ncap = MAX(MIN(ncap, (size_t)s->opt.inflight_max), q->ring_len + 1);
        struct inflight *nr = store_mem_alloc(s, ncap * sizeof(*nr));
        if (!nr)
            return -ENOMEM;
        for (size_t i = 0; i < q->ring_len; i++)
            nr[i] = *ring_at(q, i);
        store_mem_free(s, q->ring, q->ring_cap * sizeof(*q->ring));
        q->ring = nr;
        q->ring_cap = ncap;
        q->ring_head = 0;
    }
    *ring_at(q, q->ring_len) = (struct inflight){.seq = seq, .off = off};
    q->ring_len++;
    return 0;
}

static void ring_pop_head(struct queue *q)
{
    q->ring_head = (q->ring_head + 1) % q->ring_cap;
    q->ring_len--;
    if (q->ring_redo)
        q->ring_redo--;
}

static void ring_pop_acked(struct queue *q)
{
    while (q->ring_len && ring_at(q, 0)->acked)
        ring_pop_head(q);
}

static struct inflight *ring_find(const struct queue *q, uint64_t seq)
{
    size_t lo = 0, hi = q->ring_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        struct inflight *e = ring_at(q, mid);
        if (e->seq == seq)
            return e;
        if (e->seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

void queue_mark_dirty(struct queue *q)
{
    if (!q->dirty) {
        q->dirty = true;
        q->store->dirty[q->store->ndirty++] = q;
    }
}

/* The fd to read segment i with: the write fd for the last segment, else the one cached
 * read fd. At most two fds per queue. */
int queue_fd(struct queue *q, size_t i)
{
    char path[PATH_MAX];
    struct seg *g = &q->segs[i];
    int r;

    if (i == q->nsegs - 1) {
        if (q->wfd < 0) {
            if ((r = seg_path(q, g->name_seq, path, sizeof(path))) < 0)
                return r;
            q->wfd = open(path, O_RDWR | O_CLOEXEC);
            if (q->wfd < 0)
                return neg_errno();
        }
        return q->wfd;
    }
    if (q->rfd >= 0 && q->rfd_uid == g->uid)
        return q->rfd;
    if (q->rfd >= 0) {
        close(q->rfd);
        q->rfd = -1;
    }
    if ((r = seg_path(q, g->name_seq, path, sizeof(path))) < 0)
        return r;
    q->rfd = open(path, O_RDONLY | O_CLOEXEC);
    if (q->rfd < 0)
        return neg_errno();
    q->rfd_uid = g->uid;
    return q->rfd;
}

/* Start a new write segment named after next_seq. sync_old: make the old write segment durable
 * first (it is no longer on the dirty list's fd once replaced). */
static int queue_roll(struct queue *q, bool sync_old)
{
    struct store *s = q->store;
    char path[PATH_MAX];
    int r;

    if (q->nsegs == q->capsegs) {
        size_t ncap = q->capsegs ? q->capsegs * 2 : 4;
        struct seg *ns =
            store_mem_realloc(s, q->segs, q->capsegs * sizeof(*ns), ncap * sizeof(*ns));
        if (!ns)
            return -ENOMEM;
        q->segs = ns;
        q->capsegs = ncap;
    }
    if (q->nsegs && q->segs[q->nsegs - 1].size == 0) {
        /* Nothing in the write segment (so nothing an error could have lost): keep using it
         * rather than leave an empty sealed one behind; a new one would get its name. */
        q->seal_write = false;
        return 0;
    }
    if ((r = seg_path(q, q->next_seq, path, sizeof(path))) < 0)
        return r;
    /* Every tracked name is below next_seq, so a file of that name is a stray. */
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) {
        if (unlink(path) == 0)
            fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    }
    if (fd < 0)
        return neg_errno();

    if (q->wfd >= 0) {
        if (sync_old && q->dirty) {
            s->st.syncs++;
            if (fdatasync(q->wfd) < 0 && !q->pending_err) {
                q->pending_err = neg_errno();
                s->st.sync_errors++;
            }
        }
        if (q->cseg == q->nsegs - 1) {
            /* The reader is in the old write segment: its fd becomes the read fd. */
            if (q->rfd >= 0)
                close(q->rfd);
            q->rfd = q->wfd;
            q->rfd_uid = q->segs[q->nsegs - 1].uid;
        } else {
            close(q->wfd);
        }
    }
    q->wfd = fd;
    q->segs[q->nsegs++] = (struct seg){
        .name_seq = q->next_seq,
        .first_seq = q->next_seq,
        .last_seq = q->next_seq - 1,
        .uid = s->next_uid++,
        .max_expiry = INT64_MIN,
    };
    q->st.segments = q->nsegs;
    q->seal_write = false;
    q->dir_dirty = true;
    queue_mark_dirty(q);
    return 0;
}

int queue_append(struct queue *q, const void *msg, size_t len, int64_t enqueue_ms,
                 int64_t expiry_ms, uint64_t *ret_seq)
{
    if (!q || (!msg && len))
        return -EINVAL;
    struct store *s = q->store;
    if (len > s->opt.max_message_bytes)
        return -EMSGSIZE;
    if (q->next_seq >= SEQ_LIMIT)
        return -EOVERFLOW;

    uint64_t n = REC_HDR + len;
    if (s->opt.max_bytes && s->bytes + n > s->opt.max_bytes) {
        q->st.refused++;
        return -ENOSPC;
    }
    int r;
    struct seg *w = q->nsegs ? &q->segs[q->nsegs - 1] : NULL;
    if (!w || q->seal_write || (w->size > 0 && w->size + n > s->seg_bytes)) {
        if ((r = queue_roll(q, true)) < 0) {
            if (r == -EDQUOT || r == -EFBIG)
                r = -ENOSPC;
            if (r == -ENOSPC)
                q->st.refused++;
            return r;
        }
        w = &q->segs[q->nsegs - 1];
    }
    int fd = queue_fd(q, q->nsegs - 1);
    if (fd < 0)
        return fd;

    uint64_t seq = q->next_seq;
    uint8_t hdr[REC_HDR];
    rec_encode(hdr, seq, enqueue_ms, expiry_ms, msg, (uint32_t)len);

    /* One pwritev per record: the record is in the page cache when we return, so a crash of
     * the process cannot lose it (README "Durability"). */
    size_t done = 0;
    while (done < n) {
        struct iovec iov[2];
        int cnt = 0;
        if (done < REC_HDR)
            iov[cnt++] = (struct iovec){hdr + done, REC_HDR - done};
        if (len) {
            size_t poff = done > REC_HDR ? done - REC_HDR : 0;
            iov[cnt++] = (struct iovec){(uint8_t *)msg + poff, len - poff};
        }
        ssize_t k = pwritev(fd, iov, cnt, (off_t)(w->size + done));
        if (k < 0) {
            if (errno == EINTR)
                continue;
            r = neg_errno();
            goto fail;
        }
        if (k == 0) {
            r = -ENOSPC;
            goto fail;
        }
        done += (size_t)k;
    }

    w->size += n;
    w->records++;
    w->live++;
    w->last_seq = seq;
    w->max_expiry = MAX(w->max_expiry, expiry_ms ? expiry_ms : INT64_MAX);
    q->st.bytes += n;
    s->bytes += n;
    q->st.depth++;
    q->st.appended++;
    q->next_seq++;
    queue_mark_dirty(q);
    if (ret_seq)
        *ret_seq = seq;
    return 0;

fail:
    /* Leave the file as it was: a partial record must not precede the next append. */
    if (done && ftruncate(fd, (off_t)w->size) < 0)
        q->seal_write = true;
    rec_cache_forget(s, w->uid);
    if (r == -EDQUOT || r == -EFBIG)
        r = -ENOSPC;
    if (r == -ENOSPC)
        q->st.refused++;
    else
        q->seal_write = true; /* EIO and friends: stop writing to this file */
    return r;
}

static void fill_record(struct queue_record *ret, const struct rec_view *v, bool redelivery)
{
    *ret = (struct queue_record){
        .seq = v->seq,
        .enqueue_ms = v->enqueue_ms,
        .expiry_ms = v->expiry_ms,
        .data = v->data,
        .len = v->len,
        .redelivery = redelivery,
    };
}

int queue_next(struct queue *q, int64_t now_ms, struct queue_record *ret)
{
    struct store *s = q->store;

    for (;;) {
        if (q->ring_redo == q->ring_len && q->ring_len >= s->opt.inflight_max)
            return 0; /* window full: wait for acks */
        if (q->cseg >= q->nsegs)
            return 0;
        struct seg *g = &q->segs[q->cseg];
        if (q->coff >= g->size) {
            if (q->cseg + 1 < q->nsegs) {
                q->cseg++;
                q->coff = 0;
                continue;
            }
            return 0; /* drained */
        }
        int fd = queue_fd(q, q->cseg);
        if (fd < 0)
            return fd;
        uint64_t max_seq =
            q->cseg + 1 < q->nsegs ? q->segs[q->cseg + 1].first_seq - 1 : SEQ_LIMIT - 1;
        struct rec_view v;
        int r =
            rec_read(s, fd, g->uid, g->size, q->coff, MAX(g->first_seq, q->cprev + 1), max_seq, &v);
        if (r < 0)
            return r;
        if (r == 0) { /* the rest of this segment went bad after start-up */
            q->st.corrupt_bytes += g->size - q->coff;
            q->coff = g->size;
            continue;
        }
        q->st.corrupt_bytes += v.start - q->coff;
        uint64_t prev = q->cprev;
        q->coff = v.end;
        q->cprev = v.seq;

        /* Redelivery after a rewind: walk the ring alongside the records. */
        while (q->ring_redo < q->ring_len && ring_at(q, q->ring_redo)->seq < v.seq) {
            struct inflight *e = ring_at(q, q->ring_redo++);
            if (!e->acked) { /* its record vanished (corrupted since): count it done */
                e->acked = 1;
                record_done(q, e->seq);
            }
        }
        if (q->ring_redo < q->ring_len && ring_at(q, q->ring_redo)->seq == v.seq) {
            struct inflight *e = ring_at(q, q->ring_redo++);
            if (e->acked)
                continue;
            if (rec_expired(v.expiry_ms, now_ms)) {
                e->acked = 1;
                record_done(q, v.seq);
                q->st.expired++;
                ring_pop_acked(q);
                continue;
            }
            fill_record(ret, &v, true);
            q->st.delivered++;
            q->st.redelivered++;
            return 1;
        }
        ring_pop_acked(q);
        if (v.seq <= q->consumed_hi)
            continue; /* acked or expired before */

        if (rec_expired(v.expiry_ms, now_ms)) {
            q->consumed_hi = v.seq;
            record_done(q, v.seq);
            q->st.expired++;
            continue;
        }
        if (q->ring_len >= s->opt.inflight_max ||
            (r = ring_push(q, v.seq, (uint32_t)v.start)) < 0) {
            q->coff = v.start; /* not consumed: read it again next time */
            q->cprev = prev;
            return r < 0 ? r : 0;
        }
        q->ring_redo = q->ring_len;
        q->consumed_hi = v.seq;
        fill_record(ret, &v, false);
        q->st.delivered++;
        return 1;
    }
}

int queue_ack(struct queue *q, uint64_t seq)
{
    if (seq <= queue_floor(q))
        return 0;
    if (seq > q->consumed_hi)
        return -EINVAL;
    struct inflight *e = ring_find(q, seq);
    if (!e || e->acked)
        return 0; /* skipped as expired, or a duplicate ack */
    e->acked = 1;
    record_done(q, seq);
    q->st.acked++;
    ring_pop_acked(q);
    return 0;
}

void queue_rewind_inflight(struct queue *q)
{
    ring_pop_acked(q);
    if (!q->ring_len)
        return;
    struct inflight *e = ring_at(q, 0);
    size_t i = seg_index(q, e->seq);
    if (i == q->nsegs)
        return;
    q->cseg = i;
    q->coff = e->off;
    q->cprev = e->seq - 1;
    q->ring_redo = 0;
}

/* Delete the oldest segment (all its records are done, or expired when by_expiry). */
static int seg_drop_head(struct queue *q, bool by_expiry)
{
    struct store *s = q->store;
    struct seg g = q->segs[0];
    char path[PATH_MAX];
    int r;

    if ((r = seg_path(q, g.name_seq, path, sizeof(path))) < 0)
        return r;
    if (unlink(path) < 0 && errno != ENOENT)
        return neg_errno();
    if (q->rfd >= 0 && q->rfd_uid == g.uid) {
        close(q->rfd);
        q->rfd = -1;
    }
    rec_cache_forget(s, g.uid);

    if (by_expiry)
        q->st.expired += g.live;
    q->st.depth -= MIN(q->st.depth, g.live);
    q->st.bytes -= g.size;
    s->bytes -= g.size;
    while (q->ring_len && ring_at(q, 0)->seq <= g.last_seq)
        ring_pop_head(q);
    q->consumed_hi = MAX(q->consumed_hi, g.last_seq);
    if (q->cseg == 0) {
        q->coff = 0;
        q->cprev = MAX(q->cprev, g.last_seq);
    } else {
        q->cseg--;
    }
    memmove(q->segs, q->segs + 1, (q->nsegs - 1) * sizeof(*q->segs));
    q->nsegs--;
    q->st.segments = q->nsegs;
    return 0;
}

/* Reclaim space in seq order: the oldest segment goes once every record in it is acked or
 * expired. A done write segment is first replaced by an empty one (named after next_seq, so
 * the seq counter survives a restart). Segments behind an undone one wait their turn. */
int queue_reclaim(struct queue *q, int64_t now_ms)
{
    while (q->nsegs) {
        struct seg *g = &q->segs[0];
        bool expired = g->records && g->max_expiry <= now_ms;
        if (!(g->live == 0 || queue_floor(q) >= g->last_seq || expired))
            return 0;
        if (q->nsegs == 1) {
            if (g->size == 0)
                return 0;
            int r = queue_roll(q, false);
            if (r < 0)
                return r;
            continue;
        }
        int r = seg_drop_head(q, expired && g->live);
        if (r < 0)
            return r;
    }
    return 0;
}

static void ckpt_encode(uint8_t buf[CKPT_SIZE], uint64_t floor)
{
    memset(buf, 0, CKPT_SIZE);
    memcpy(buf, CKPT_MAGIC, 8);
    put_u64(buf + 8, floor);
    put_u32(buf + 16, (uint32_t)crc32(crc32(0L, Z_NULL, 0), buf, 16));
}

int queue_checkpoint_write(struct queue *q, uint64_t floor)
{
    char path[PATH_MAX];
    uint8_t buf[CKPT_SIZE];
    if (snprintf(path, sizeof(path), "%s/checkpoint", q->dir) >= (int)sizeof(path))
        return -ENAMETOOLONG;
    ckpt_encode(buf, floor);
    /* temp, fsync, rename, fsync dir: 3 syncs, hence written lazily (store_tick). */
    q->store->st.syncs += 3;
    int r = lfs_write_atomic(path, buf, sizeof(buf), 0600);
    if (r < 0)
        return r;
    q->store->st.checkpoints++;
    return 0;
}

/* -ENOENT: none; -EBADMSG: not a valid checkpoint. */
int queue_checkpoint_read(const char *dir, uint64_t *ret_floor)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/checkpoint", dir) >= (int)sizeof(path))
        return -ENAMETOOLONG;
    _cleanup_free_ char *data = NULL;
    size_t len = 0;
    int r = lfs_read_file(path, 64, &data, &len);
    if (r == -EFBIG)
        return -EBADMSG;
    if (r < 0)
        return r;
    const uint8_t *p = (const uint8_t *)data;
    if (len != CKPT_SIZE || memcmp(p, CKPT_MAGIC, 8) != 0 || get_u32(p + 20) != 0 ||
        get_u32(p + 16) != (uint32_t)crc32(crc32(0L, Z_NULL, 0), p, 16))
        return -EBADMSG;
    uint64_t floor = get_u64(p + 8);
    if (floor >= SEQ_LIMIT - 1)
        return -EBADMSG;
    *ret_floor = floor;
    return 0;
}

void queue_get_stats(const struct queue *q, struct queue_stats *ret)
{
    *ret = q->st;
    uint64_t unacked = 0;
    for (size_t i = 0; i < q->ring_len; i++)
        unacked += !ring_at(q, i)->acked;
    ret->inflight = unacked;
    ret->acked_seq = queue_floor(q);
    ret->next_seq = q->next_seq;
    ret->segments = q->nsegs;
}

void queue_free(struct queue *q)
{
    if (!q)
        return;
    struct store *s = q->store;
    if (q->wfd >= 0)
        close(q->wfd);
    if (q->rfd >= 0)
        close(q->rfd);
    for (size_t i = 0; i < q->nsegs; i++)
        rec_cache_forget(s, q->segs[i].uid);
    store_mem_free(s, q->ring, q->ring_cap * sizeof(*q->ring));
    store_mem_free(s, q->segs, q->capsegs * sizeof(*q->segs));
    store_mem_strfree(s, q->name);
    store_mem_strfree(s, q->dir);
    store_mem_free(s, q, sizeof(*q));
}
