/* store.c — the store: options, the directory lock, loading and salvaging queues at start-up,
 * creating and removing queues, group commit (store_sync) and periodic maintenance
 * (store_tick). Queue operations live in queue.c, the record format in record.c. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fs.h"
#include "store-private.h"

static void closedirp_(DIR **d)
{
    if (*d)
        closedir(*d);
}

/* ---- accounted heap ---- */

void *store_mem_alloc(struct store *s, size_t n)
{
    void *p = calloc(1, n);
    if (p)
        s->mem += n;
    return p;
}

void *store_mem_realloc(struct store *s, void *p, size_t old_n, size_t n)
{
    void *np = realloc(p, n);
    if (np)
        s->mem = s->mem - old_n + n;
    return np;
}

void store_mem_free(struct store *s, void *p, size_t n)
{
    if (p) {
        s->mem -= n;
        free(p);
    }
}

char *store_mem_strdup(struct store *s, const char *str)
{
    size_t n = strlen(str) + 1;
    char *p = store_mem_alloc(s, n);
    if (p)
        memcpy(p, str, n);
    return p;
}

void store_mem_strfree(struct store *s, char *str)
{
    if (str)
        store_mem_free(s, str, strlen(str) + 1);
}

/* ---- options ---- */

void store_options_init(struct store_options *o)
{
    *o = (struct store_options){
        .segment_bytes = STORE_SEGMENT_DEFAULT,
        .max_message_bytes = STORE_MESSAGE_MAX_DEFAULT,
        .max_queues = STORE_QUEUES_DEFAULT,
        .inflight_max = STORE_INFLIGHT_DEFAULT,
        .sync = STORE_SYNC_ALWAYS,
        .sync_interval_ms = STORE_SYNC_INTERVAL_DEFAULT,
        .checkpoint_interval_ms = STORE_CHECKPOINT_INTERVAL_DEFAULT,
    };
}

int store_sync_policy_from_string(const char *s, enum store_sync_policy *ret)
{
    if (lstr_eq(s, "always"))
        *ret = STORE_SYNC_ALWAYS;
    else if (lstr_eq(s, "interval"))
        *ret = STORE_SYNC_INTERVAL;
    else
        return -EINVAL;
    return 0;
}

const char *store_sync_policy_to_string(enum store_sync_policy p)
{
    return p == STORE_SYNC_INTERVAL ? "interval" : "always";
}

static int options_normalize(const struct store_options *in, struct store_options *o,
                             struct lerr *e)
{
    struct store_options d;
    store_options_init(&d);
    *o = in ? *in : d;
    if (o->sync != STORE_SYNC_ALWAYS && o->sync != STORE_SYNC_INTERVAL)
        return lerr_set(e, -EINVAL, "store: unknown sync policy %d", (int)o->sync);
    if (!o->segment_bytes)
        o->segment_bytes = d.segment_bytes;
    o->segment_bytes =
        MAX(MIN(o->segment_bytes, (uint64_t)STORE_SEGMENT_MAX), (uint64_t)STORE_SEGMENT_MIN);
    if (!o->max_message_bytes)
        o->max_message_bytes = d.max_message_bytes;
    if (o->max_message_bytes > STORE_MESSAGE_MAX_LIMIT)
        return lerr_set(e, -EINVAL, "store: max_message_bytes %" PRIu32 " exceeds %u",
                        o->max_message_bytes, STORE_MESSAGE_MAX_LIMIT);
    if (!o->max_queues)
        o->max_queues = d.max_queues;
    if (!o->inflight_max)
        o->inflight_max = d.inflight_max;
    o->inflight_max = MIN(o->inflight_max, STORE_INFLIGHT_LIMIT);
    if (!o->sync_interval_ms)
        o->sync_interval_ms = d.sync_interval_ms;
    if (!o->checkpoint_interval_ms)
        o->checkpoint_interval_ms = d.checkpoint_interval_ms;
    return 0;
}

/* ---- report ---- */

void store_report_free(struct store_report *r)
{
    if (r)
        lstrv_free(&r->notes);
}

bool store_report_has_findings(const struct store_report *r)
{
    return r->truncated_bytes || r->corrupt_bytes || r->files_removed || r->files_ignored ||
           r->checkpoints_lost || r->queues_failed;
}

_printf_(2, 3) static void note(struct store_report *r, const char *fmt, ...)
{
    if (!r)
        return;
    if (r->notes.n >= STORE_REPORT_NOTES_MAX) {
        r->notes_dropped++;
        return;
    }
    struct lbuf b = LBUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    int k = lbuf_vprintf(&b, fmt, ap);
    va_end(ap);
    if (k < 0 || lstrv_push_take(&r->notes, lbuf_steal(&b)) < 0)
        r->notes_dropped++;
}

/* ---- queue names <-> directory names ----
 * A queue directory is the name with every byte outside [A-Za-z0-9_-] (and a leading '.')
 * written %XX, upper-case hex: one path component, never hidden, and the mapping is a
 * bijection (a directory whose name is not the canonical escape of its decoding is ignored). */

static bool name_keep(unsigned char c, size_t i)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || (c == '.' && i > 0);
}

static int name_escape(const char *name, char *out, size_t size)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; name[i]; i++) {
        unsigned char c = (unsigned char)name[i];
        if (name_keep(c, i)) {
            if (o + 1 >= size)
                return -ENAMETOOLONG;
            out[o++] = (char)c;
        } else {
            if (o + 3 >= size)
                return -ENAMETOOLONG;
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = 0;
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int name_unescape(const char *esc, char *out, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; esc[i]; i++) {
        int c = (unsigned char)esc[i];
        if (c == '%') {
            int hi = hexval(esc[i + 1]), lo = hi < 0 ? -1 : hexval(esc[i + 2]);
            if (hi < 0 || lo < 0)
                return -EINVAL;
            c = hi << 4 | lo;
            i += 2;
        }
        if (c == 0 || o + 1 >= size)
            return -EINVAL;
        out[o++] = (char)c;
    }
    out[o] = 0;
    char again[NAME_MAX + 1];
    if (o == 0 || o > STORE_NAME_MAX || name_escape(out, again, sizeof(again)) < 0 ||
        strcmp(again, esc) != 0)
        return -EINVAL;
    return 0;
}

/* ---- queue objects ---- */

static int store_register(struct store *s, struct queue *q)
{
    if (s->nqueues == s->capqueues) {
        size_t ncap = s->capqueues ? s->capqueues * 2 : 16;
        struct queue **nq =
            store_mem_realloc(s, s->queues, s->capqueues * sizeof(*nq), ncap * sizeof(*nq));
        if (!nq)
            return -ENOMEM;
        s->queues = nq;
        struct queue **nd =
            store_mem_realloc(s, s->dirty, s->capqueues * sizeof(*nd), ncap * sizeof(*nd));
        if (!nd)
            return -ENOMEM; /* s->queues grew: harmless, capqueues unchanged */
        s->dirty = nd;
        s->capqueues = ncap;
    }
    q->idx = s->nqueues;
    s->queues[s->nqueues++] = q;
    return 0;
}

static struct queue *queue_new(struct store *s, const char *name, const char *esc)
{
    struct queue *q = store_mem_alloc(s, sizeof(*q));
    if (!q)
        return NULL;
    q->store = s;
    q->wfd = q->rfd = -1;
    q->next_seq = 1;
    q->ckpt_at = INT64_MIN; /* none written by this process yet: the first is due at once */
    q->name = store_mem_strdup(s, name);
    _cleanup_free_ char *dir = lstr_printf("%s/%s", s->root, esc);
    q->dir = dir ? store_mem_strdup(s, dir) : NULL;
    if (!q->name || !q->dir) {
        queue_free(q);
        return NULL;
    }
    return q;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* List the segment files of q->dir (sorted), removing stale temp files and noting strangers. */
static int queue_list_dir(struct queue *q, struct store_report *rep, uint64_t **ret, size_t *ret_n)
{
    _cleanup_(closedirp_) DIR *d = opendir(q->dir);
    if (!d)
        return neg_errno();
    _cleanup_free_ uint64_t *v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d))) {
        const char *nm = de->d_name;
        uint64_t first;
        if (lstr_eq(nm, ".") || lstr_eq(nm, "..") || lstr_eq(nm, "checkpoint"))
            continue;
        if (seg_parse_name(nm, &first)) {
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                uint64_t *nv = realloc(v, ncap * sizeof(*nv));
                if (!nv)
                    return -ENOMEM;
                v = nv;
                cap = ncap;
            }
            v[n++] = first;
        } else if (lstr_eq(nm, "checkpoint.tmp")) {
            /* A checkpoint write interrupted before its rename: the old one stands. */
            if (unlinkat(dirfd(d), nm, 0) == 0 && rep)
                rep->files_removed++;
        } else {
            if (rep)
                rep->files_ignored++;
            note(rep, "queue %s: %s: unknown file, left alone", q->name, nm);
        }
        errno = 0;
    }
    if (errno)
        return neg_errno();
    if (n)
        qsort(v, n, sizeof(*v), cmp_u64);
    *ret = TAKE_PTR(v);
    *ret_n = n;
    return 0;
}

/* Load q's segments and checkpoint, repairing what a crash or a bad disk left: torn tails are
 * cut, corrupt regions noted (the reader skips them), segments without any valid record
 * removed. Positions the cursor on the first record above the ack floor. */
static int queue_salvage(struct queue *q, struct store_report *rep)
{
    struct store *s = q->store;
    _cleanup_free_ uint64_t *firsts = NULL;
    size_t nfirst = 0;
    int r = queue_list_dir(q, rep, &firsts, &nfirst);
    if (r < 0)
        return r;

    uint64_t floor = 0;
    r = queue_checkpoint_read(q->dir, &floor);
    if (r < 0) {
        floor = 0;
        q->ckpt_force = true;
        if (rep)
            rep->checkpoints_lost++;
        note(rep, "queue %s: checkpoint %s (%s): delivering again from its oldest record", q->name,
             r == -ENOENT ? "missing" : "unreadable",
             r == -EBADMSG ? "invalid content" : strerror(-r));
    }

    uint64_t prev = 0, total = 0;
    bool have_cursor = false;
    /* Where the first record of all is, should the floor turn out to be impossible. */
    size_t first_seg = 0;
    uint64_t first_off = 0;
    bool have_first = false;
    q->segs = store_mem_alloc(s, MAX(nfirst, (size_t)1) * sizeof(*q->segs));
    if (!q->segs)
        return -ENOMEM;
    q->capsegs = MAX(nfirst, (size_t)1);

    for (size_t i = 0; i < nfirst; i++) {
        char path[PATH_MAX];
        uint64_t first = MAX(firsts[i], prev + 1);
        bool last = i + 1 == nfirst;
        if ((r = seg_path(q, firsts[i], path, sizeof(path))) < 0)
            return r;
        const char *base = strrchr(path, '/') + 1;
        _cleanup_close_ int fd = open(path, O_RDWR | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0) {
            if (rep)
                rep->files_ignored++;
            note(rep, "queue %s: %s: cannot open (%s), left alone", q->name, base, strerror(errno));
            continue;
        }
        struct seg g = {
            .name_seq = firsts[i],
            .first_seq = first,
            .last_seq = first - 1,
            .uid = s->next_uid++,
            .max_expiry = INT64_MIN,
        };
        uint64_t size = (uint64_t)st.st_size, off = 0;
        bool io_error = false;
        for (;;) {
            struct rec_view v;
            r = rec_read(s, fd, g.uid, size, off, MAX(first, prev + 1), SEQ_LIMIT - 1, &v);
            if (r < 0) {
                io_error = true;
                note(rep,
                     "queue %s: %s: read error at offset %" PRIu64 " (%s): the rest is "
                     "skipped",
                     q->name, base, off, strerror(-r));
                break;
            }
            if (r == 0)
                break;
            if (v.start > off) {
                if (rep) {
                    rep->corrupt_bytes += v.start - off;
                    rep->corrupt_regions++;
                }
                note(rep, "queue %s: %s: %" PRIu64 " corrupt bytes at offset %" PRIu64 " skipped",
                     q->name, base, v.start - off, off);
            }
            if (!have_first) {
                have_first = true;
                first_seg = q->nsegs;
                first_off = v.start;
            }
            if (v.seq > floor) {
                g.live++;
                if (!have_cursor) {
                    have_cursor = true;
                    q->cseg = q->nsegs;
                    q->coff = v.start;
                    q->cprev = prev;
                }
            }
            g.records++;
            g.last_seq = v.seq;
            g.max_expiry = MAX(g.max_expiry, v.expiry_ms ? v.expiry_ms : INT64_MAX);
            prev = v.seq;
            off = v.end;
        }
        if (g.records == 0 && !last) {
            if (unlink(path) == 0) {
                if (rep)
                    rep->files_removed++;
                note(rep, "queue %s: %s: %s, removed", q->name, base,
                     size ? "no valid record" : "empty segment");
                rec_cache_forget(s, g.uid);
                continue;
            }
        }
        if (off < size && !io_error) {
            /* Everything after the last valid record is a torn or corrupt tail. */
            if (ftruncate(fd, (off_t)off) == 0) {
                if (rep)
                    rep->truncated_bytes += size - off;
                note(rep,
                     "queue %s: %s: invalid tail of %" PRIu64 " bytes at offset %" PRIu64
                     " truncated",
                     q->name, base, size - off, off);
            } else {
                note(rep, "queue %s: %s: cannot truncate invalid tail (%s)", q->name, base,
                     strerror(errno));
                if (last)
                    q->seal_write = true;
            }
            rec_cache_forget(s, g.uid);
        }
        if (io_error && last)
            q->seal_write = true;
        g.size = off;
        total += g.records;
        q->segs[q->nsegs++] = g;
        q->st.bytes += g.size;
        q->st.depth += g.live;
    }

    /* The highest seq this queue ever gave out: its last record, or below the name of its last
     * segment file (named after the next seq when it was created, records or not). A valid
     * checkpoint can only hold a floor up to there; one beyond it is damage (or a forgery) and
     * trusting it would count every stored record as delivered. Deliver them all again. */
    uint64_t held = MAX(prev, nfirst ? firsts[nfirst - 1] - 1 : 0);
    if (floor > held) {
        if (rep)
            rep->checkpoints_lost++;
        note(rep,
             "queue %s: checkpoint floor %" PRIu64 " is beyond the last seq %" PRIu64
             " the queue held (damaged checkpoint): ignored, delivering again from its oldest "
             "record (%" PRIu64 " stored)",
             q->name, floor, held, total);
        floor = 0;
        q->ckpt_force = true;
        q->st.depth = 0;
        for (size_t i = 0; i < q->nsegs; i++) {
            q->segs[i].live = q->segs[i].records;
            q->st.depth += q->segs[i].records;
        }
        have_cursor = have_first;
        q->cseg = first_seg;
        q->coff = first_off;
        q->cprev = 0;
    }

    struct seg *w = q->nsegs ? &q->segs[q->nsegs - 1] : NULL;
    if (!have_cursor) {
        q->cseg = w ? q->nsegs - 1 : 0;
        q->coff = w ? w->size : 0;
        q->cprev = prev;
    }
    q->consumed_hi = floor;
    q->ckpt_floor = floor;
    q->next_seq = MAX(MAX(prev + 1, floor + 1), w ? w->first_seq : 1);
    q->st.segments = q->nsegs;
    s->bytes += q->st.bytes;
    if (rep) {
        rep->queues++;
        rep->segments += (uint32_t)q->nsegs;
        rep->records += total;
        rep->pending += q->st.depth;
    }
    return 0;
}

static int queue_load(struct store *s, const char *name, const char *esc, struct store_report *rep,
                      struct queue **ret)
{
    struct queue *q = queue_new(s, name, esc);
    if (!q)
        return -ENOMEM;
    int r = queue_salvage(q, rep);
    if (r >= 0)
        r = store_register(s, q);
    if (r < 0) {
        s->bytes -= MIN(s->bytes, q->st.bytes);
        queue_free(q);
        return r;
    }
    if (ret)
        *ret = q;
    return 0;
}

/* ---- open / close ---- */

/* Release everything without touching the disk. */
static void store_free(struct store *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nqueues; i++)
        queue_free(s->queues[i]);
    store_mem_free(s, s->queues, s->capqueues * sizeof(*s->queues));
    store_mem_free(s, s->dirty, s->capqueues * sizeof(*s->dirty));
    store_mem_free(s, s->rbuf, s->rcap);
    store_mem_strfree(s, s->root);
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    free(s);
}
DEFINE_CLEANUP(struct store *, store_free)

static int store_load_all(struct store *s, struct store_report *rep)
{
    _cleanup_(closedirp_) DIR *d = opendir(s->root);
    if (!d)
        return neg_errno();
    _cleanup_lstrv_ struct lstrv names = LSTRV_INIT;
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d))) {
        if (de->d_name[0] != '.' && lstrv_push(&names, de->d_name) < 0)
            return -ENOMEM;
        errno = 0;
    }
    if (errno)
        return neg_errno();
    for (size_t i = 0; i < names.n; i++) {
        const char *esc = names.v[i];
        char name[STORE_NAME_MAX + 1];
        struct stat st;
        if (fstatat(dirfd(d), esc, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode) ||
            name_unescape(esc, name, sizeof(name)) < 0) {
            if (rep)
                rep->files_ignored++;
            note(rep, "%s: not a queue directory, left alone", esc);
            continue;
        }
        int r = queue_load(s, name, esc, rep, NULL);
        if (r == -ENOMEM)
            return r;
        if (r < 0) {
            if (rep)
                rep->queues_failed++;
            note(rep, "queue %s: cannot load (%s), left alone", name, strerror(-r));
        }
    }
    return 0;
}

int store_open(const char *dir, const struct store_options *opts, struct store **ret,
               struct store_report *report)
{
    struct lerr *e = NULL;
    if (report) {
        *report = (struct store_report){.notes = LSTRV_INIT};
        e = &report->error;
    }
    if (lstr_empty(dir))
        return lerr_set(e, -EINVAL, "store: no directory given");

    struct store_options o;
    int r = options_normalize(opts, &o, e);
    if (r < 0)
        return r;
    _cleanup_(store_freep) struct store *s = calloc(1, sizeof(*s));
    if (!s)
        return lerr_set(e, -ENOMEM, "store: out of memory");
    s->mem = sizeof(*s);
    s->lock_fd = -1;
    s->next_uid = 1;
    s->last_sync_at = INT64_MIN;
    s->opt = o;
    /* Space comes back a whole segment at a time: keep segments small against the cap. */
    s->seg_bytes = o.segment_bytes;
    if (o.max_bytes)
        s->seg_bytes = MIN(s->seg_bytes, MAX(o.max_bytes / 4, (uint64_t)STORE_SEGMENT_MIN));
    s->st.max_bytes = o.max_bytes;
    s->root = store_mem_strdup(s, dir);
    if (!s->root)
        return lerr_set(e, -ENOMEM, "store: out of memory");

    if ((r = lfs_mkdir_p(dir, 0700)) < 0)
        return lerr_set(e, r, "store %s: cannot create: %s", dir, strerror(-r));
    char path[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/.lock", dir) >= (int)sizeof(path))
        return lerr_set(e, -ENAMETOOLONG, "store %s: path too long", dir);
    s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (s->lock_fd < 0)
        return lerr_set(e, neg_errno(), "store %s: cannot open lock: %s", dir, strerror(errno));
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno == EWOULDBLOCK)
            return lerr_set(e, -EBUSY, "store %s: in use by another process", dir);
        return lerr_set(e, neg_errno(), "store %s: cannot lock: %s", dir, strerror(errno));
    }
    if ((r = store_load_all(s, report)) < 0)
        return lerr_set(e, r, "store %s: cannot load: %s", dir, strerror(-r));
    *ret = TAKE_PTR(s);
    return 0;
}

int store_close(struct store *s)
{
    if (!s)
        return 0;
    int ret = 0, r;
    for (size_t i = 0; i < s->nqueues; i++) {
        struct queue *q = s->queues[i];
        uint64_t floor = queue_floor(q);
        if (floor != q->ckpt_floor || q->ckpt_force) {
            if ((r = queue_checkpoint_write(q, floor)) < 0 && !ret)
                ret = r;
        }
    }
    if ((r = store_sync(s)) < 0 && !ret)
        ret = r;
    store_free(s);
    return ret;
}

/* ---- queues ---- */

struct queue *store_queue_find(struct store *s, const char *name)
{
    for (size_t i = 0; i < s->nqueues; i++)
        if (strcmp(s->queues[i]->name, name) == 0)
            return s->queues[i];
    return NULL;
}

size_t store_queue_count(const struct store *s)
{
    return s->nqueues;
}

struct queue *store_queue_at(const struct store *s, size_t i)
{
    return i < s->nqueues ? s->queues[i] : NULL;
}

int store_queue(struct store *s, const char *name, struct queue **ret)
{
    if (lstr_empty(name))
        return -EINVAL;
    if (strlen(name) > STORE_NAME_MAX)
        return -ENAMETOOLONG;
    struct queue *q = store_queue_find(s, name);
    if (q) {
        *ret = q;
        return 0;
    }
    if (s->nqueues >= s->opt.max_queues)
        return -EMFILE;
    char esc[NAME_MAX + 1];
    int r = name_escape(name, esc, sizeof(esc));
    if (r < 0)
        return r;
    _cleanup_free_ char *dir = lstr_printf("%s/%s", s->root, esc);
    if (!dir)
        return -ENOMEM;
    if (mkdir(dir, 0700) < 0) {
        if (errno != EEXIST)
            return neg_errno();
        /* Left over from a load that failed: try again, it may have been transient. */
        return queue_load(s, name, esc, NULL, ret);
    }
    q = queue_new(s, name, esc);
    if (!q) {
        rmdir(dir);
        return -ENOMEM;
    }
    /* A checkpoint from birth: a missing one at start-up then always means damage. */
    r = queue_checkpoint_write(q, 0);
    if (r >= 0) {
        s->st.syncs++;
        r = lfs_fsync_dir(s->root);
    }
    if (r >= 0)
        r = store_register(s, q);
    if (r < 0) {
        char ck[PATH_MAX];
        if (snprintf(ck, sizeof(ck), "%s/checkpoint", dir) < (int)sizeof(ck))
            unlink(ck);
        rmdir(dir);
        queue_free(q);
        return r;
    }
    *ret = q;
    return 0;
}

static void dirty_remove(struct store *s, struct queue *q)
{
    for (size_t i = 0; i < s->ndirty; i++)
        if (s->dirty[i] == q) {
            s->dirty[i] = s->dirty[--s->ndirty];
            break;
        }
    q->dirty = false;
}

int store_queue_remove(struct store *s, struct queue *q)
{
    char path[PATH_MAX];
    int ret = 0;
    for (size_t i = 0; i < q->nsegs; i++) {
        if (seg_path(q, q->segs[i].name_seq, path, sizeof(path)) == 0 && unlink(path) < 0 &&
            errno != ENOENT && !ret)
            ret = neg_errno();
    }
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "%s/%s", q->dir, i ? "checkpoint.tmp" : "checkpoint");
        if (unlink(path) < 0 && errno != ENOENT && !ret)
            ret = neg_errno();
    }
    if (rmdir(q->dir) < 0 && !ret)
        ret = neg_errno();
    s->st.syncs++;
    int r = lfs_fsync_dir(s->root);
    if (r < 0 && !ret)
        ret = r;

    s->bytes -= MIN(s->bytes, q->st.bytes);
    if (q->dirty)
        dirty_remove(s, q);
    s->queues[q->idx] = s->queues[--s->nqueues];
    s->queues[q->idx]->idx = q->idx;
    queue_free(q);
    return ret;
}

/* ---- durability ---- */

int store_sync(struct store *s)
{
    int ret = 0;
    size_t keep = 0;
    /* Several files to sync: start writeback of all of them first, so that the first
     * fdatasync's journal commit carries every file's new size and the later ones find
     * their data on disk already (one commit instead of one per queue on ext4). */
    if (s->ndirty > 1)
        for (size_t i = 0; i < s->ndirty; i++)
            if (s->dirty[i]->wfd >= 0)
                sync_file_range(s->dirty[i]->wfd, 0, 0, SYNC_FILE_RANGE_WRITE);
    for (size_t i = 0; i < s->ndirty; i++) {
        struct queue *q = s->dirty[i];
        int r = q->pending_err;
        q->pending_err = 0;
        if (q->wfd >= 0) {
            s->st.syncs++;
            if (fdatasync(q->wfd) < 0) {
                /* The kernel may have dropped the dirty pages: a retried fsync could
                 * succeed without them ever reaching the disk. Never write here again. */
                r = r ? r : neg_errno();
                q->seal_write = true;
                s->st.sync_errors++;
            }
        }
        if (q->dir_dirty) {
            s->st.syncs++;
            int rd = lfs_fsync_dir(q->dir);
            if (rd < 0) {
                r = r ? r : rd;
                s->st.sync_errors++;
            } else {
                q->dir_dirty = false;
            }
        }
        if (r < 0 && !ret)
            ret = r;
        if (q->dir_dirty)
            s->dirty[keep++] = q; /* retry the directory next time */
        else
            q->dirty = false;
    }
    s->ndirty = keep;
    return ret;
}

struct sync_entry {
    char *queue; /* name, to find it again at finish (it may have been removed meanwhile) */
    int fd;      /* dup of the write segment, or -1 */
    char *dir;   /* the queue directory when it gained a file, or NULL */
    int err;     /* pending or fsync error */
    int dir_err;
};

struct store_sync_batch {
    struct sync_entry *e;
    size_t n;
};

int store_sync_prepare(struct store *s, struct store_sync_batch **ret)
{
    struct store_sync_batch *b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    if (s->ndirty && !(b->e = calloc(s->ndirty, sizeof(*b->e)))) {
        free(b);
        return -ENOMEM;
    }
    for (size_t i = 0; i < s->ndirty; i++) {
        struct queue *q = s->dirty[i];
        struct sync_entry *e = &b->e[b->n++];
        e->fd = -1;
        e->queue = strdup(q->name);
        e->err = q->pending_err;
        q->pending_err = 0;
        if (q->wfd >= 0 && (e->fd = fcntl(q->wfd, F_DUPFD_CLOEXEC, 0)) < 0 && !e->err)
            e->err = neg_errno();
        if (q->dir_dirty) {
            e->dir = strdup(q->dir);
            q->dir_dirty = false;
        }
        q->dirty = false;
    }
    s->ndirty = 0;
    *ret = b;
    return 0;
}

void store_sync_run(struct store_sync_batch *b)
{
    if (b->n > 1)
        for (size_t i = 0; i < b->n; i++)
            if (b->e[i].fd >= 0)
                sync_file_range(b->e[i].fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    for (size_t i = 0; i < b->n; i++) {
        struct sync_entry *e = &b->e[i];
        if (e->fd >= 0 && fdatasync(e->fd) < 0 && !e->err)
            e->err = neg_errno();
        if (e->dir)
            e->dir_err = lfs_fsync_dir(e->dir);
    }
}

int store_sync_finish(struct store *s, struct store_sync_batch *b)
{
    int ret = 0;
    for (size_t i = 0; i < b->n; i++) {
        struct sync_entry *e = &b->e[i];
        struct queue *q = e->queue ? store_queue_find(s, e->queue) : NULL;
        s->st.syncs += (e->fd >= 0) + (e->dir != NULL);
        if (e->err < 0) {
            s->st.sync_errors++;
            if (q)
                q->seal_write = true; /* never write to that segment again (see store_sync) */
            if (!ret)
                ret = e->err;
        }
        if (e->dir_err < 0) {
            s->st.sync_errors++;
            if (!ret)
                ret = e->dir_err;
            if (q && !q->dir_dirty) {
                q->dir_dirty = true; /* retry the directory with the next batch */
                queue_mark_dirty(q);
            }
        }
        if (e->fd >= 0)
            close(e->fd);
        free(e->queue);
        free(e->dir);
    }
    free(b->e);
    free(b);
    return ret;
}

int store_tick(struct store *s, int64_t now_ms)
{
    int ret = 0, r;
    for (size_t i = 0; i < s->nqueues; i++) {
        struct queue *q = s->queues[i];
        if ((r = queue_reclaim(q, now_ms)) < 0 && !ret)
            ret = r;
        uint64_t floor = queue_floor(q);
        if ((floor != q->ckpt_floor || q->ckpt_force) &&
            (q->ckpt_at == INT64_MIN || now_ms < q->ckpt_at ||
             (uint64_t)now_ms - (uint64_t)q->ckpt_at >= s->opt.checkpoint_interval_ms)) {
            if ((r = queue_checkpoint_write(q, floor)) < 0) {
                if (!ret)
                    ret = r;
            } else {
                q->ckpt_floor = floor;
                q->ckpt_force = false;
                q->ckpt_at = now_ms;
            }
        }
    }
    if (s->opt.sync == STORE_SYNC_INTERVAL && s->ndirty &&
        (s->last_sync_at == INT64_MIN || now_ms < s->last_sync_at ||
         (uint64_t)now_ms - (uint64_t)s->last_sync_at >= s->opt.sync_interval_ms)) {
        s->last_sync_at = now_ms;
        if ((r = store_sync(s)) < 0 && !ret)
            ret = r;
    }
    return ret;
}

void store_set_max_bytes(struct store *s, uint64_t max_bytes)
{
    s->opt.max_bytes = max_bytes;
    s->st.max_bytes = max_bytes;
    /* Same rule as store_open(); segments already written keep their size. */
    s->seg_bytes = s->opt.segment_bytes;
    if (max_bytes)
        s->seg_bytes = MIN(s->seg_bytes, MAX(max_bytes / 4, (uint64_t)STORE_SEGMENT_MIN));
}

void store_get_stats(const struct store *s, struct store_stats *ret)
{
    *ret = s->st;
    ret->bytes = s->bytes;
    ret->max_bytes = s->opt.max_bytes;
    ret->segment_bytes = s->seg_bytes;
    ret->mem_bytes = s->mem;
    ret->queues = (uint32_t)s->nqueues;
    ret->sync = s->opt.sync;
}
