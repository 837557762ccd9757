/* test-store.c — unit tests of the durable queue store: order, acks, windows, restart,
 * checkpoints, TTL, the size cap, salvage of damaged files, rollover, a full disk, kill -9
 * crash recovery, and flat memory at depth. Each test runs in its own temp directory. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "base/fs.h"
#include "store-private.h"
#include "store/store.h"

/* snprintf into an array, failing the test on truncation */
#define PJ(buf, ...) assert_true(snprintf(buf, sizeof(buf), __VA_ARGS__) < (int)sizeof(buf))

struct ctx {
    char dir[PATH_MAX];   /* the test's temp dir */
    char store[PATH_MAX]; /* the store inside it */
    char mnt[PATH_MAX];   /* a tmpfs mounted by the test, if any */
};

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return -1;
    PJ(c->dir, "/tmp/ledge-test-store-XXXXXX");
    if (!mkdtemp(c->dir))
        return -1;
    PJ(c->store, "%s/store", c->dir);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct ctx *c = *state;
    if (c->mnt[0])
        umount2(c->mnt, MNT_DETACH);
    nftw(c->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(c);
    return 0;
}

/* Deterministic payload of seq: "m<seq>:" then letters, 16..315 bytes. */
static size_t payload(uint64_t seq, char *buf, size_t size)
{
    size_t len = 16 + seq % 300;
    assert_true(len <= size);
    int n = snprintf(buf, size, "m%" PRIu64 ":", seq);
    for (size_t i = (size_t)n; i < len; i++)
        buf[i] = (char)('a' + (seq + i) % 26);
    return len;
}

static bool payload_ok(const struct queue_record *r)
{
    char buf[512];
    size_t len = payload(r->seq, buf, sizeof(buf));
    return r->len == len && memcmp(r->data, buf, len) == 0;
}

static uint64_t append_n(struct queue *q, uint64_t n, int64_t expiry)
{
    uint64_t seq = 0;
    for (uint64_t i = 0; i < n; i++) {
        char buf[512];
        struct queue_stats st;
        queue_get_stats(q, &st);
        size_t len = payload(st.next_seq, buf, sizeof(buf));
        assert_int_equal(queue_append(q, buf, len, 1000, expiry, &seq), 0);
        assert_int_equal(seq, st.next_seq);
    }
    return seq;
}

static struct store *open_store(const char *dir, const struct store_options *o,
                                struct store_report *rep)
{
    struct store *s = NULL;
    struct store_report local;
    struct store_report *r = rep ? rep : &local;
    int rc = store_open(dir, o, &s, r);
    if (rc < 0)
        fail_msg("store_open: %s", lerr_str(&r->error));
    if (!rep)
        store_report_free(&local);
    return s;
}

static struct queue *get_queue(struct store *s, const char *name)
{
    struct queue *q = NULL;
    assert_int_equal(store_queue(s, name, &q), 0);
    assert_non_null(q);
    return q;
}

static struct queue_stats qstats(const struct queue *q)
{
    struct queue_stats st;
    queue_get_stats(q, &st);
    return st;
}

static int count_files(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (lstr_endswith(de->d_name, suffix))
            n++;
    closedir(d);
    return n;
}

/* Path of the idx-th segment file (sorted) of queue directory qdir. */
static void seg_file(const char *qdir, int idx, char *out, size_t size)
{
    struct dirent **names;
    int n = scandir(qdir, &names, NULL, alphasort);
    assert_true(n > 0);
    int k = 0;
    out[0] = 0;
    for (int i = 0; i < n; i++) {
        if (lstr_endswith(names[i]->d_name, ".seg") && k++ == idx)
            assert_true(snprintf(out, size, "%s/%s", qdir, names[i]->d_name) < (int)size);
        free(names[i]);
    }
    free(names);
    assert_true(out[0] != 0);
}

static void drain_ack(struct queue *q, int64_t now, uint64_t expect_first, uint64_t expect_last)
{
    struct queue_record r;
    uint64_t want = expect_first;
    int rc;
    while ((rc = queue_next(q, now, &r)) == 1) {
        assert_int_equal(r.seq, want);
        assert_true(payload_ok(&r));
        assert_int_equal(queue_ack(q, r.seq), 0);
        want++;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(want, expect_last + 1);
}

/* ---- basics ---- */

static void test_append_next_ack_order(void **state)
{
    struct ctx *c = *state;
    struct store *s = open_store(c->store, NULL, NULL);
    struct queue *q = get_queue(s, "upstream/p0");
    assert_string_equal(queue_name(q), "upstream/p0");
    assert_int_equal(append_n(q, 10, 0), 10);
    assert_int_equal(qstats(q).depth, 10);
    assert_int_equal(qstats(q).appended, 10);

    struct queue_record r;
    for (uint64_t i = 1; i <= 10; i++) {
        assert_int_equal(queue_next(q, 0, &r), 1);
        assert_int_equal(r.seq, i);
        assert_int_equal(r.enqueue_ms, 1000);
        assert_int_equal(r.expiry_ms, 0);
        assert_false(r.redelivery);
        assert_true(payload_ok(&r));
    }
    assert_int_equal(queue_next(q, 0, &r), 0);
    assert_int_equal(qstats(q).inflight, 10);
    for (uint64_t i = 1; i <= 10; i++)
        assert_int_equal(queue_ack(q, i), 0);
    struct queue_stats st = qstats(q);
    assert_int_equal(st.depth, 0);
    assert_int_equal(st.inflight, 0);
    assert_int_equal(st.acked, 10);
    assert_int_equal(st.delivered, 10);
    assert_int_equal(st.acked_seq, 10);
    assert_int_equal(queue_ack(q, 3), 0);        /* duplicate: no-op */
    assert_int_equal(queue_ack(q, 11), -EINVAL); /* never delivered */
    assert_int_equal(qstats(q).acked, 10);

    /* a zero-length message is a message */
    uint64_t seq;
    assert_int_equal(queue_append(q, NULL, 0, 1, 0, &seq), 0);
    assert_int_equal(queue_next(q, 0, &r), 1);
    assert_int_equal(r.seq, seq);
    assert_int_equal(r.len, 0);
    assert_int_equal(store_close(s), 0);
}

static void test_window_out_of_order_and_rewind(void **state)
{
    struct ctx *c = *state;
    struct store_options o;
    store_options_init(&o);
    o.inflight_max = 4;
    struct store *s = open_store(c->store, &o, NULL);
    struct queue *q = get_queue(s, "modules/filter/inputs/input1/p3");
    append_n(q, 10, 0);

    struct queue_record r;
    for (uint64_t i = 1; i <= 4; i++) {
        assert_int_equal(queue_next(q, 0, &r), 1);
        assert_int_equal(r.seq, i);
    }
    assert_int_equal(queue_next(q, 0, &r), 0); /* window full */
    assert_int_equal(queue_ack(q, 3), 0);
    assert_int_equal(queue_ack(q, 2), 0);
    assert_int_equal(queue_next(q, 0, &r), 0); /* 1 still holds the window */
    assert_int_equal(qstats(q).acked_seq, 0);
    assert_int_equal(queue_ack(q, 1), 0);
    assert_int_equal(qstats(q).acked_seq, 3);
    assert_int_equal(qstats(q).inflight, 1);
    assert_int_equal(queue_next(q, 0, &r), 1);
    assert_int_equal(r.seq, 5);
    assert_int_equal(queue_next(q, 0, &r), 1);
    assert_int_equal(r.seq, 6);
    assert_int_equal(queue_ack(q, 6), 0);

    /* subscriber gone: 4 and 5 come again, in order, then new ones */
    queue_rewind_inflight(q);
    assert_int_equal(queue_next(q, 0, &r), 1);
    assert_int_equal(r.seq, 4);
    assert_true(r.redelivery);
    assert_true(payload_ok(&r));
    assert_int_equal(queue_ack(q, 5), 0); /* acked before its redelivery: skipped */
    assert_int_equal(queue_next(q, 0, &r), 1);
    assert_int_equal(r.seq, 7);
    assert_false(r.redelivery);
    struct queue_stats st = qstats(q);
    assert_int_equal(st.redelivered, 1);
    assert_int_equal(st.acked_seq, 3);
    assert_int_equal(queue_ack(q, 4), 0);
    assert_int_equal(queue_ack(q, 7), 0);
    assert_int_equal(qstats(q).acked_seq, 7);
    drain_ack(q, 0, 8, 10);
    queue_rewind_inflight(q); /* nothing in flight: no-op */
    assert_int_equal(queue_next(q, 0, &r), 0);
    assert_int_equal(qstats(q).depth, 0);
    assert_int_equal(store_close(s), 0);
}

static void test_names_and_priorities(void **state)
{
    struct ctx *c = *state;
    static const char *names[] = {
        "upstream/p0",
        "upstream/p1",
        "upstream/p9",
        "upstream/none",
        "modules/filter/inputs/input1/p3",
        "..",
        ".hidden",
        "a%2F",
        "sp ace/\xc3\xa9",
        "lock",
        "checkpoint",
    };
    struct store *s = open_store(c->store, NULL, NULL);
    for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
        struct queue *q = get_queue(s, names[i]);
        append_n(q, i + 1, 0);
        assert_ptr_equal(get_queue(s, names[i]), q); /* same queue again */
    }
    assert_int_equal(store_queue_count(s), ARRAY_SIZE(names));
    assert_int_equal(store_close(s), 0);

    /* every directory is one hidden-free component */
    char p[PATH_MAX];
    PJ(p, "%s/upstream%%2Fp0", c->store);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    PJ(p, "%s/%%2E.", c->store);
    assert_int_equal(stat(p, &st), 0);

    struct store_report rep;
    s = open_store(c->store, NULL, &rep);
    assert_int_equal(rep.queues, ARRAY_SIZE(names));
    assert_false(store_report_has_findings(&rep));
    store_report_free(&rep);
    for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
        struct queue *q = store_queue_find(s, names[i]);
        assert_non_null(q);
        assert_int_equal(qstats(q).depth, i + 1); /* separate queues */
        drain_ack(q, 0, 1, i + 1);
    }
    assert_null(store_queue_find(s, "upstream/p2"));

    struct queue *q = NULL;
    assert_int_equal(store_queue(s, "", &q), -EINVAL);
    char longname[STORE_NAME_MAX + 2];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = 0;
    assert_int_equal(store_queue(s, longname, &q), -ENAMETOOLONG);
    memset(longname, '/', 100); /* 100 escapes = 300 bytes > NAME_MAX */
    longname[100] = 0;
    assert_int_equal(store_queue(s, longname, &q), -ENAMETOOLONG);
    assert_null(q);
    assert_int_equal(store_close(s), 0);

    struct store_options o;
    store_options_init(&o);
    o.max_queues = ARRAY_SIZE(names);
    s = open_store(c->store, &o, NULL);
    assert_int_equal(store_queue(s, "one-too-many", &q), -EMFILE);
    assert_int_equal(store_close(s), 0);
}

static void test_restart_persistence(void **state)
{
    struct ctx *c = *state;
    struct store *s = open_store(c->store, NULL, NULL);
    struct queue *q = get_queue(s, "upstream/p0");
    append_n(q, 20, 0);
    struct queue_record r;
    for (int i = 1; i <= 10; i++)
        assert_int_equal(queue_next(q, 0, &r), 1);
    for (uint64_t i = 1; i <= 5; i++)
        assert_int_equal(queue_ack(q, i), 0);
    assert_int_equal(queue_ack(q, 8), 0); /* above the floor: not persisted */
    assert_int_equal(store_close(s), 0);

    struct store_report rep;
    s = open_store(c->store, NULL, &rep);
    assert_int_equal(rep.queues, 1);
    assert_int_equal(rep.records, 20);
    assert_int_equal(rep.pending, 15);
    assert_false(store_report_has_findings(&rep));
    store_report_free(&rep);
    q = store_queue_find(s, "upstream/p0");
    assert_non_null(q);
    assert_int_equal(qstats(q).depth, 15);
    assert_int_equal(qstats(q).acked_seq, 5);
    drain_ack(q, 0, 6, 20); /* 6..10 again (8 included: at-least-once) */
    assert_int_equal(append_n(q, 1, 0), 21);
    assert_int_equal(store_close(s), 0);

    /* a second process cannot open the same store */
    s = open_store(c->store, NULL, NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct store *s2 = NULL;
        struct store_report rep2;
        int rc = store_open(c->store, NULL, &s2, &rep2);
        _exit(rc == -EBUSY && strstr(rep2.error.msg, "in use") ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(store_close(s), 0);
}

/* Run fn in a child that dies without store_close(): what a crash leaves on disk. */
static void in_crashing_child(void (*fn)(const char *dir), const char *dir)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fn(dir);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void child_ckpt(const char *dir, int64_t second_tick)
{
    struct store_options o;
    store_options_init(&o);
    o.checkpoint_interval_ms = 1000;
    struct store *s = NULL;
    if (store_open(dir, &o, &s, NULL) < 0)
        _exit(2);
    struct queue *q = NULL;
    if (store_queue(s, "upstream/p0", &q) < 0)
        _exit(3);
    char buf[512];
    for (uint64_t i = 1; i <= 100; i++)
        if (queue_append(q, buf, payload(i, buf, sizeof(buf)), 1, 0, NULL) < 0)
            _exit(4);
    store_sync(s);
    struct queue_record r;
    for (int i = 1; i <= 80; i++)
        if (queue_next(q, 0, &r) != 1 || queue_ack(q, r.seq) < 0)
            _exit(5);
        else if (i == 50 && store_tick(s, 1000) < 0) /* checkpoint: floor 50 */
            _exit(6);
    if (store_tick(s, second_tick) < 0)
        _exit(7);
    _exit(0); /* crash: no store_close() */
}
static void child_ckpt_early(const char *dir)
{
    child_ckpt(dir, 1500);
}
static void child_ckpt_due(const char *dir)
{
    child_ckpt(dir, 2000);
}

static void test_checkpoint_lazy_bound(void **state)
{
    struct ctx *c = *state;
    struct store_options o;
    store_options_init(&o);
    o.checkpoint_interval_ms = 1000;

    /* Acks 51..80 came within one checkpoint interval of the last checkpoint: after a crash
     * they are delivered again, and nothing older is. */
    in_crashing_child(child_ckpt_early, c->store);
    struct store *s = open_store(c->store, &o, NULL);
    struct queue *q = store_queue_find(s, "upstream/p0");
    assert_non_null(q);
    assert_int_equal(qstats(q).acked_seq, 50);
    drain_ack(q, 0, 51, 100);
    assert_int_equal(store_close(s), 0);
    nftw(c->store, rm_cb, 16, FTW_DEPTH | FTW_PHYS);

    /* The next tick one interval later persisted them. */
    in_crashing_child(child_ckpt_due, c->store);
    s = open_store(c->store, &o, NULL);
    q = store_queue_find(s, "upstream/p0");
    assert_int_equal(qstats(q).acked_seq, 80);
    drain_ack(q, 0, 81, 100);
    struct store_stats ss;
    store_get_stats(s, &ss);
    assert_int_equal(ss.checkpoints, 0);
    assert_int_equal(store_tick(s, 10), 0); /* first tick after open: due */
    store_get_stats(s, &ss);
    assert_int_equal(ss.checkpoints, 1);
    assert_int_equal(store_close(s), 0);
}

static void test_ttl_expiry(void **state)
{
    struct ctx *c = *state;
    struct store_options o;
    store_options_init(&o);
    o.segment_bytes = STORE_SEGMENT_MIN;
    struct store *s = open_store(c->store, &o, NULL);
    struct queue *q = get_queue(s, "upstream/p1");

    /* interleaved: odd seqs expire at t=5000, even ones never */
    char buf[512];
    for (uint64_t i = 1; i <= 10; i++)
        assert_int_equal(
            queue_append(q, buf, payload(i, buf, sizeof(buf)), 1000, i % 2 ? 5000 : 0, NULL), 0);
    struct queue_record r;
    assert_int_equal(queue_next(q, 4999, &r), 1); /* not yet expired */
    assert_int_equal(r.seq, 1);
    assert_int_equal(r.expiry_ms, 5000);
    for (uint64_t want = 2; want <= 10; want += 2) {
        assert_int_equal(queue_next(q, 6000, &r), 1);
        assert_int_equal(r.seq, want);
        assert_true(payload_ok(&r));
    }
    assert_int_equal(queue_next(q, 6000, &r), 0);
    struct queue_stats st = qstats(q);
    assert_int_equal(st.expired, 4);
    assert_int_equal(st.depth, 6); /* 1 in flight + 5 even */

    /* in flight, then expired before its redelivery */
    queue_rewind_inflight(q);
    assert_int_equal(queue_next(q, 6000, &r), 1);
    assert_int_equal(r.seq, 2);
    assert_true(r.redelivery);
    st = qstats(q);
    assert_int_equal(st.expired, 5);
    assert_int_equal(st.depth, 5);
    assert_int_equal(store_close(s), 0);

    /* Nobody consumes: whole segments of expired records are reclaimed by store_tick. */
    nftw(c->store, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    s = open_store(c->store, &o, NULL);
    q = get_queue(s, "upstream/p2");
    char big[1024] = {0};
    for (int i = 0; i < 300; i++)
        assert_int_equal(queue_append(q, big, sizeof(big), 1000, 5000, NULL), 0);
    assert_int_equal(queue_append(q, big, sizeof(big), 1000, 0, NULL), 0); /* keeps its seg */
    st = qstats(q);
    assert_true(st.segments >= 4);
    uint64_t bytes_before = st.bytes;
    assert_int_equal(store_tick(s, 4000), 0); /* not yet */
    assert_int_equal(qstats(q).segments, st.segments);
    assert_int_equal(store_tick(s, 5000), 0);
    st = qstats(q);
    assert_int_equal(st.segments, 1);
    assert_true(st.bytes < bytes_before / 3);
    assert_true(st.expired > 200);
    struct store_stats ss;
    store_get_stats(s, &ss);
    assert_int_equal(ss.bytes, st.bytes);
    char qdir[PATH_MAX];
    PJ(qdir, "%s/upstream%%2Fp2", c->store);
    assert_int_equal(count_files(qdir, ".seg"), 1);
    /* the rest of the last segment's expired records are skipped on delivery */
    assert_int_equal(queue_next(q, 5000, &r), 1);
    assert_int_equal(r.seq, 301);
    assert_int_equal(qstats(q).expired, 300);
    assert_int_equal(qstats(q).depth, 1);
    assert_int_equal(store_close(s), 0);
}

static void test_max_bytes_refusal_and_recovery(void **state)
{
    struct ctx *c = *state;
    struct store_options o;
    store_options_init(&o);
    o.max_bytes = 256 * 1024;
    struct store *s = open_store(c->store, &o, NULL);
    struct store_stats ss;
    store_get_stats(s, &ss);
    assert_int_equal(ss.segment_bytes, 64 * 1024); /* clamped to a quarter of the cap */
    struct queue *q = get_queue(s, "upstream/p0");
    struct queue *q2 = get_queue(s, "upstream/p5");

    char msg[1000] = {0};
    int n = 0, rc;
    while ((rc = queue_append(q, msg, sizeof(msg), 1, 0, NULL)) == 0)
        n++;
    assert_int_equal(rc, -ENOSPC);
    assert_int_equal(queue_append(q2, msg, sizeof(msg), 1, 0, NULL), -ENOSPC); /* store-wide */
    assert_int_equal(n, 256 * 1024 / (sizeof(msg) + REC_HDR));
    store_get_stats(s, &ss);
    assert_true(ss.bytes <= o.max_bytes);
    assert_int_equal(qstats(q).refused, 1);
    assert_int_equal(qstats(q2).refused, 1);
    assert_int_equal(qstats(q).depth, (uint64_t)n);
    assert_int_equal(store_sync(s), 0);

    /* Acks alone do not free space: whole segments are deleted at the next tick. */
    struct queue_record r;
    for (int i = 0; i < n / 2; i++) {
        assert_int_equal(queue_next(q, 0, &r), 1);
        assert_int_equal(queue_ack(q, r.seq), 0);
    }
    assert_int_equal(queue_append(q, msg, sizeof(msg), 1, 0, NULL), -ENOSPC);
    assert_int_equal(store_tick(s, 1), 0);
    store_get_stats(s, &ss);
    assert_true(ss.bytes <= o.max_bytes / 2 + 64 * 1024);
    assert_int_equal(queue_append(q, msg, sizeof(msg), 1, 0, NULL), 0);
    assert_int_equal(queue_append(q2, msg, sizeof(msg), 1, 0, NULL), 0);

    /* drain everything: the store shrinks to empty write segments */
    while (queue_next(q, 0, &r) == 1)
        assert_int_equal(queue_ack(q, r.seq), 0);
    assert_int_equal(store_tick(s, 2), 0);
    assert_int_equal(qstats(q).bytes, 0);
    assert_int_equal(qstats(q).depth, 0);
    assert_int_equal(store_close(s), 0);
}

/* ---- salvage ---- */

static void corrupt_at(const char *path, off_t off, const void *bytes, size_t n)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, bytes, n, off), (ssize_t)n);
    close(fd);
}

static void make_queue(const char *store, const char *name, uint64_t n, uint64_t seg_bytes)
{
    struct store_options o;
    store_options_init(&o);
    o.segment_bytes = seg_bytes;
    struct store *s = open_store(store, &o, NULL);
    struct queue *q = get_queue(s, name);
    append_n(q, n, 0);
    assert_int_equal(store_close(s), 0);
}

static void test_salvage_truncated_tail(void **state)
{
    struct ctx *c = *state;
    make_queue(c->store, "q", 10, 0);
    char seg[PATH_MAX], qdir[PATH_MAX];
    PJ(qdir, "%s/q", c->store);
    seg_file(qdir, 0, seg, sizeof(seg));
    struct stat st;
    assert_int_equal(stat(seg, &st), 0);
    assert_int_equal(truncate(seg, st.st_size - 7), 0); /* a torn last write */

    struct store_report rep;
    struct store *s = open_store(c->store, NULL, &rep);
    assert_true(store_report_has_findings(&rep));
    assert_int_equal(rep.records, 9);
    char buf[512];
    uint64_t last_len = payload(10, buf, sizeof(buf)) + REC_HDR;
    assert_int_equal(rep.truncated_bytes, last_len - 7);
    assert_int_equal(rep.notes.n, 1);
    assert_non_null(strstr(rep.notes.v[0], "truncated"));
    assert_non_null(strstr(rep.notes.v[0], "queue q"));
    store_report_free(&rep);
    assert_int_equal(stat(seg, &st), 0);
    assert_int_equal((uint64_t)st.st_size, qstats(store_queue_find(s, "q")).bytes);
    struct queue *q = store_queue_find(s, "q");
    drain_ack(q, 0, 1, 9);
    assert_int_equal(append_n(q, 1, 0), 10); /* the torn one was never acknowledged */
    assert_int_equal(store_close(s), 0);
    s = open_store(c->store, NULL, &rep);
    assert_false(store_report_has_findings(&rep));
    store_report_free(&rep);
    drain_ack(store_queue_find(s, "q"), 0, 10, 10);
    assert_int_equal(store_close(s), 0);
}

static void test_salvage_flipped_bytes(void **state)
{
    struct ctx *c = *state;
    make_queue(c->store, "q", 10, 0);
    char seg[PATH_MAX], qdir[PATH_MAX];
    PJ(qdir, "%s/q", c->store);
    seg_file(qdir, 0, seg, sizeof(seg));
    /* record 5 starts after records 1..4 */
    char buf[512];
    off_t off = 0;
    for (uint64_t i = 1; i < 5; i++)
        off += (off_t)(payload(i, buf, sizeof(buf)) + REC_HDR);
    corrupt_at(seg, off + REC_HDR + 3, "XYZ", 3); /* payload: CRC mismatch */
    /* record 8: destroy its header (magic and length) */
    off_t off8 = off;
    for (uint64_t i = 5; i < 8; i++)
        off8 += (off_t)(payload(i, buf, sizeof(buf)) + REC_HDR);
    corrupt_at(seg, off8, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 12);

    struct store_report rep;
    struct store *s = open_store(c->store, NULL, &rep);
    assert_int_equal(rep.records, 8);
    assert_int_equal(rep.corrupt_regions, 2);
    assert_int_equal(rep.corrupt_bytes,
                     payload(5, buf, sizeof(buf)) + payload(8, buf, sizeof(buf)) + 2 * REC_HDR);
    assert_int_equal(rep.truncated_bytes, 0);
    store_report_free(&rep);
    struct queue *q = store_queue_find(s, "q");
    struct queue_record r;
    uint64_t want[] = {1, 2, 3, 4, 6, 7, 9, 10};
    for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
        assert_int_equal(queue_next(q, 0, &r), 1);
        assert_int_equal(r.seq, want[i]);
        assert_true(payload_ok(&r));
        assert_int_equal(queue_ack(q, r.seq), 0);
    }
    assert_int_equal(queue_next(q, 0, &r), 0);
    assert_true(qstats(q).corrupt_bytes > 0); /* the reader skipped them too */
    assert_int_equal(qstats(q).depth, 0);
    assert_int_equal(store_close(s), 0);
}

static void test_salvage_files(void **state)
{
    struct ctx *c = *state;
    make_queue(c->store, "q", 400, STORE_SEGMENT_MIN); /* several segments */
    char qdir[PATH_MAX], p[PATH_MAX];
    PJ(qdir, "%s/q", c->store);
    int nseg = count_files(qdir, ".seg");
    assert_true(nseg >= 2);

    /* a zero-length segment in the middle, garbage named like a segment, a stranger file,
     * a non-canonical queue directory, a stale checkpoint temp file */
    PJ(p, "%s/%020d.seg", qdir, 2);
    int fd = open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    close(fd);
    PJ(p, "%s/%020d.seg", qdir, 3);
    fd = open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    char garbage[5000];
    for (size_t i = 0; i < sizeof(garbage); i++)
        garbage[i] = (char)(i * 7 + 3);
    memcpy(garbage + 100, REC_MAGIC, 4); /* a fake record start too */
    assert_int_equal(write(fd, garbage, sizeof(garbage)), (ssize_t)sizeof(garbage));
    close(fd);
    PJ(p, "%s/notes.txt", qdir);
    assert_int_equal(lfs_write_atomic(p, "hi", 2, 0600), 0);
    PJ(p, "%s/checkpoint.tmp", qdir);
    assert_int_equal(lfs_write_atomic(p, "xx", 2, 0600), 0);
    PJ(p, "%s/lower%%2f", c->store);
    assert_int_equal(mkdir(p, 0700), 0);
    PJ(p, "%s/plainfile", c->store);
    assert_int_equal(lfs_write_atomic(p, "x", 1, 0600), 0);
    /* the last segment gets a garbage tail */
    char last[PATH_MAX];
    seg_file(qdir, nseg + 1, last, sizeof(last));
    fd = open(last, O_WRONLY | O_APPEND | O_CLOEXEC);
    assert_int_equal(write(fd, garbage, 1000), 1000);
    close(fd);

    struct store_report rep;
    struct store *s = open_store(c->store, NULL, &rep);
    assert_int_equal(rep.queues, 1);
    assert_int_equal(rep.records, 400);
    assert_int_equal(rep.pending, 400);
    assert_int_equal(rep.files_removed, 3); /* empty, garbage, checkpoint.tmp */
    assert_int_equal(rep.files_ignored, 3); /* notes.txt, lower%2f, plainfile */
    assert_int_equal(rep.truncated_bytes, 1000);
    assert_int_equal(rep.checkpoints_lost, 0);
    assert_true(rep.notes.n >= 6);
    bool saw_removed = false, saw_unknown = false;
    for (size_t i = 0; i < rep.notes.n; i++) {
        saw_removed |= strstr(rep.notes.v[i], "no valid record, removed") != NULL;
        saw_unknown |= strstr(rep.notes.v[i], "notes.txt: unknown file") != NULL;
    }
    assert_true(saw_removed && saw_unknown);
    store_report_free(&rep);
    assert_int_equal(count_files(qdir, ".seg"), nseg);
    PJ(p, "%s/notes.txt", qdir);
    assert_int_equal(access(p, F_OK), 0); /* strangers are left alone */
    drain_ack(store_queue_find(s, "q"), 0, 1, 400);
    assert_int_equal(store_close(s), 0);
}

static void test_salvage_checkpoint(void **state)
{
    struct ctx *c = *state;
    struct store *s = open_store(c->store, NULL, NULL);
    struct queue *q = get_queue(s, "q");
    append_n(q, 10, 0);
    struct queue_record r;
    for (int i = 0; i < 6; i++) {
        assert_int_equal(queue_next(q, 0, &r), 1);
        assert_int_equal(queue_ack(q, r.seq), 0);
    }
    assert_int_equal(store_close(s), 0);

    char ck[PATH_MAX];
    PJ(ck, "%s/q/checkpoint", c->store);
    corrupt_at(ck, 9, "\x01", 1); /* bad CRC */
    struct store_report rep;
    s = open_store(c->store, NULL, &rep);
    assert_int_equal(rep.checkpoints_lost, 1);
    assert_non_null(strstr(rep.notes.v[0], "checkpoint unreadable (invalid content)"));
    store_report_free(&rep);
    assert_int_equal(qstats(store_queue_find(s, "q")).depth, 10);
    assert_int_equal(store_close(s), 0); /* rewrites it (forced) */

    assert_int_equal(unlink(ck), 0);
    s = open_store(c->store, NULL, &rep);
    assert_int_equal(rep.checkpoints_lost, 1);
    assert_non_null(strstr(rep.notes.v[0], "checkpoint missing"));
    store_report_free(&rep);
    q = store_queue_find(s, "q");
    drain_ack(q, 0, 1, 10); /* everything again: at-least-once */
    assert_int_equal(store_tick(s, 1), 0);
    assert_int_equal(access(ck, F_OK), 0);
    assert_int_equal(store_close(s), 0);

    /* a checkpoint of the wrong size */
    assert_int_equal(lfs_write_atomic(ck, "short", 5, 0600), 0);
    s = open_store(c->store, NULL, &rep);
    assert_int_equal(rep.checkpoints_lost, 1);
    store_report_free(&rep);
    assert_int_equal(store_close(s), 0);
}

/* A checkpoint as queue.c writes it (valid magic and CRC), holding floor. */
static void write_checkpoint(const char *path, uint64_t floor)
{
    uint8_t buf[24] = "LQCKPT1\n";
    put_u64(buf + 8, floor);
    put_u32(buf + 16, (uint32_t)crc32(crc32(0L, Z_NULL, 0), buf, 16));
    assert_int_equal(lfs_write_atomic(path, buf, sizeof(buf), 0600), 0);
}

/* Issue 11: a checkpoint with a valid CRC whose floor lies above every seq the queue ever held
 * made 300 pending messages count as delivered, silently. It is damage: reported, ignored, and
 * every stored record is delivered again. A floor up to what the queue held stands. */
static void test_salvage_checkpoint_floor_beyond_queue(void **state)
{
    struct ctx *c = *state;
    struct store *s = open_store(c->store, NULL, NULL);
    struct queue *q = get_queue(s, "upstream/p0");
    append_n(q, 300, 0);
    struct queue_record r;
    for (int i = 0; i < 20; i++) { /* nothing acked, 20 delivered: in flight at the crash */
        assert_int_equal(queue_next(q, 0, &r), 1);
        assert_int_equal(r.seq, (uint64_t)i + 1);
    }
    assert_int_equal(store_close(s), 0);

    char ck[PATH_MAX];
    PJ(ck, "%s/upstream%%2Fp0/checkpoint", c->store);
    write_checkpoint(ck, 1000000);
    struct store_report rep;
    s = open_store(c->store, NULL, &rep);
    assert_true(store_report_has_findings(&rep));
    assert_int_equal(rep.checkpoints_lost, 1);
    assert_int_equal(rep.pending, 300);
    assert_int_equal(rep.notes.n, 1);
    assert_non_null(strstr(rep.notes.v[0], "queue upstream/p0: checkpoint floor 1000000 is beyond "
                                           "the last seq 300 the queue held"));
    store_report_free(&rep);
    q = store_queue_find(s, "upstream/p0");
    assert_int_equal(qstats(q).depth, 300);
    assert_int_equal(qstats(q).acked_seq, 0);
    assert_int_equal(qstats(q).next_seq, 301); /* not floor + 1 */
    drain_ack(q, 0, 1, 300);
    assert_int_equal(append_n(q, 1, 0), 301);
    assert_int_equal(store_close(s), 0); /* the forced checkpoint: floor 300 */

    /* The floor at the last record (everything acked, nothing reclaimed yet) is sound. */
    s = open_store(c->store, NULL, &rep);
    assert_false(store_report_has_findings(&rep));
    store_report_free(&rep);
    q = store_queue_find(s, "upstream/p0");
    assert_int_equal(qstats(q).acked_seq, 300);
    drain_ack(q, 0, 301, 301);
    /* Reclaimed: an empty write segment named 302 is all that is left, the floor is 301. */
    assert_int_equal(store_tick(s, 1), 0);
    assert_int_equal(store_close(s), 0);
    char qdir[PATH_MAX];
    PJ(qdir, "%s/upstream%%2Fp0", c->store);
    assert_int_equal(count_files(qdir, ".seg"), 1);
    s = open_store(c->store, NULL, &rep);
    assert_false(store_report_has_findings(&rep));
    assert_int_equal(rep.pending, 0);
    store_report_free(&rep);
    q = store_queue_find(s, "upstream/p0");
    assert_int_equal(qstats(q).acked_seq, 301);
    assert_int_equal(append_n(q, 1, 0), 302);
    assert_int_equal(store_close(s), 0);

    /* One past the empty segment's name is beyond it again. */
    s = open_store(c->store, NULL, NULL);
    drain_ack(store_queue_find(s, "upstream/p0"), 0, 302, 302);
    assert_int_equal(store_tick(s, 1), 0);
    assert_int_equal(store_close(s), 0); /* floor 302, empty segment 303 */
    write_checkpoint(ck, 303);
    s = open_store(c->store, NULL, &rep);
    assert_int_equal(rep.checkpoints_lost, 1);
    assert_int_equal(rep.pending, 0);
    store_report_free(&rep);
    assert_int_equal(append_n(store_queue_find(s, "upstream/p0"), 1, 0), 303);
    assert_int_equal(store_close(s), 0);
}

static void test_rollover_and_deletion(void **state)
{
    struct ctx *c = *state;
    struct store_options o;
    store_options_init(&o);
    o.segment_bytes = STORE_SEGMENT_MIN;
    struct store *s = open_store(c->store, &o, NULL);
    struct queue *q = get_queue(s, "upstream/p0");
    char qdir[PATH_MAX];
    PJ(qdir, "%s/upstream%%2Fp0", c->store);
    char msg[1024] = {0};
    for (int i = 0; i < 200; i++)
        assert_int_equal(queue_append(q, msg, sizeof(msg), 1, 0, NULL), 0);
    int per_seg = (int)(STORE_SEGMENT_MIN / (sizeof(msg) + REC_HDR));
    int nseg = (200 + per_seg - 1) / per_seg;
    assert_int_equal(qstats(q).segments, nseg);
    assert_int_equal(count_files(qdir, ".seg"), nseg);
    /* the group commit syncs the write segment and the directory that gained files (the
     * sealed ones were synced as they rolled) */
    struct store_stats a, b;
    store_get_stats(s, &a);
    assert_int_equal(store_sync(s), 0);
    store_get_stats(s, &b);
    assert_int_equal(b.syncs - a.syncs, 2);
    assert_int_equal(store_sync(s), 0); /* nothing new: nothing to do */
    store_get_stats(s, &a);
    assert_int_equal(a.syncs, b.syncs);

    /* first file is named after its first seq, the second after seq per_seg + 1 */
    char p[PATH_MAX];
    PJ(p, "%s/%020d.seg", qdir, per_seg + 1);
    assert_int_equal(access(p, F_OK), 0);

    struct queue_record r;
    for (int i = 0; i < per_seg + 5; i++) {
        assert_int_equal(queue_next(q, 0, &r), 1);
        if (i != 2)
            assert_int_equal(queue_ack(q, r.seq), 0);
    }
    assert_int_equal(store_tick(s, 1), 0);
    assert_int_equal(count_files(qdir, ".seg"), nseg); /* seq 3 unacked holds the 1st */
    assert_int_equal(queue_ack(q, 3), 0);
    assert_int_equal(store_tick(s, 2), 0);
    assert_int_equal(count_files(qdir, ".seg"), nseg - 1);
    assert_int_equal(qstats(q).segments, nseg - 1);

    /* a reader in a sealed segment, a rewind across the deletion, then a restart */
    queue_rewind_inflight(q);
    while (queue_next(q, 0, &r) == 1)
        assert_int_equal(queue_ack(q, r.seq), 0);
    assert_int_equal(r.seq, 200);
    assert_int_equal(store_tick(s, 3), 0);
    assert_int_equal(count_files(qdir, ".seg"), 1);
    assert_int_equal(qstats(q).bytes, 0); /* rolled to an empty write segment */
    PJ(p, "%s/%020d.seg", qdir, 201);
    assert_int_equal(access(p, F_OK), 0);
    assert_int_equal(store_close(s), 0);

    s = open_store(c->store, &o, NULL);
    q = store_queue_find(s, "upstream/p0");
    assert_int_equal(qstats(q).depth, 0);
    uint64_t seq;
    assert_int_equal(queue_append(q, msg, 10, 1, 0, &seq), 0);
    assert_int_equal(seq, 201); /* seqs continue across restarts */
    assert_int_equal(store_close(s), 0);
}

static void test_sync_policies_and_errors(void **state)
{
    struct ctx *c = *state;
    enum store_sync_policy p;
    assert_int_equal(store_sync_policy_from_string("always", &p), 0);
    assert_int_equal(p, STORE_SYNC_ALWAYS);
    assert_int_equal(store_sync_policy_from_string("interval", &p), 0);
    assert_int_equal(p, STORE_SYNC_INTERVAL);
    assert_int_equal(store_sync_policy_from_string("sometimes", &p), -EINVAL);
    assert_string_equal(store_sync_policy_to_string(STORE_SYNC_INTERVAL), "interval");

    struct store_options o;
    store_options_init(&o);
    o.sync = STORE_SYNC_INTERVAL;
    o.sync_interval_ms = 100;
    struct store *s = open_store(c->store, &o, NULL);
    struct queue *q = get_queue(s, "q");
    struct store_stats a, b;
    append_n(q, 3, 0);
    store_get_stats(s, &a);
    assert_int_equal(store_tick(s, 1000), 0); /* due: first tick */
    store_get_stats(s, &b);
    assert_true(b.syncs > a.syncs);
    append_n(q, 3, 0);
    assert_int_equal(store_tick(s, 1050), 0);
    store_get_stats(s, &a);
    assert_int_equal(a.syncs, b.syncs); /* within the interval: no sync */
    assert_int_equal(store_tick(s, 1100), 0);
    store_get_stats(s, &b);
    assert_true(b.syncs > a.syncs);
    assert_int_equal(b.sync, STORE_SYNC_INTERVAL);
    assert_true(b.mem_bytes > 0);

    /* A failed fdatasync: reported, the segment is retired, writing goes on in a new one. */
    append_n(q, 1, 0);
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    int saved = q->wfd;
    q->wfd = pfd[0]; /* fdatasync on a pipe fails with EINVAL */
    assert_int_equal(store_sync(s), -EINVAL);
    store_get_stats(s, &a);
    assert_int_equal(a.sync_errors, 1);
    q->wfd = saved;
    close(pfd[0]);
    close(pfd[1]);
    uint64_t segs = qstats(q).segments;
    append_n(q, 1, 0);
    assert_int_equal(qstats(q).segments, segs + 1);
    assert_int_equal(store_sync(s), 0);
    drain_ack(q, 0, 1, 8);

    /* message too big */
    store_options_init(&o);
    assert_int_equal(store_close(s), 0);
    o.max_message_bytes = 100;
    s = open_store(c->store, &o, NULL);
    q = store_queue_find(s, "q");
    char big[101] = {0};
    assert_int_equal(queue_append(q, big, 101, 1, 0, NULL), -EMSGSIZE);
    assert_int_equal(queue_append(q, big, 100, 1, 0, NULL), 0);
    assert_int_equal(store_close(s), 0);

    /* bad options and a bad directory come back with a message */
    struct store_report rep;
    o.max_message_bytes = STORE_MESSAGE_MAX_LIMIT + 1;
    assert_int_equal(store_open(c->store, &o, &s, &rep), -EINVAL);
    assert_non_null(strstr(rep.error.msg, "max_message_bytes"));
    store_report_free(&rep);
    char file[PATH_MAX];
    PJ(file, "%s/afile", c->dir);
    assert_int_equal(lfs_write_atomic(file, "x", 1, 0600), 0);
    assert_true(store_open(file, NULL, &s, &rep) < 0);
    assert_non_null(strstr(rep.error.msg, "afile"));
    store_report_free(&rep);
    assert_int_equal(store_open("", NULL, &s, NULL), -EINVAL);
    assert_int_equal(store_close(NULL), 0);
}

static void test_queue_remove(void **state)
{
    struct ctx *c = *state;
    struct store *s = open_store(c->store, NULL, NULL);
    struct queue *a = get_queue(s, "a");
    struct queue *b = get_queue(s, "b");
    append_n(a, 5, 0);
    append_n(b, 7, 0);
    struct store_stats ss;
    store_get_stats(s, &ss);
    uint64_t bytes_b = qstats(b).bytes;
    assert_int_equal(store_queue_remove(s, a), 0);
    store_get_stats(s, &ss);
    assert_int_equal(ss.bytes, bytes_b);
    assert_int_equal(store_queue_count(s), 1);
    assert_ptr_equal(store_queue_at(s, 0), b);
    assert_null(store_queue_at(s, 1));
    assert_null(store_queue_find(s, "a"));
    char p[PATH_MAX];
    PJ(p, "%s/a", c->store);
    assert_int_equal(access(p, F_OK), -1);
    assert_int_equal(store_sync(s), 0);
    assert_int_equal(store_close(s), 0);
    s = open_store(c->store, NULL, NULL);
    assert_int_equal(store_queue_count(s), 1);
    assert_int_equal(store_close(s), 0);
}

/* ---- a full disk ---- */

static void fill_until_refused(struct queue *q, size_t msg_len, int *ret_n)
{
    static char msg[8192];
    int n = 0, rc;
    while ((rc = queue_append(q, msg, msg_len, 1, 0, NULL)) == 0)
        n++;
    assert_int_equal(rc, -ENOSPC);
    *ret_n = n;
}

static void check_full_disk_recovers(const char *store, const struct store_options *o)
{
    struct store *s = open_store(store, o, NULL);
    struct queue *q = get_queue(s, "upstream/p0");
    int n;
    fill_until_refused(q, 4000, &n);
    assert_true(n > 10);
    assert_int_equal(qstats(q).refused, 1);
    assert_int_equal(store_sync(s), 0);
    uint64_t depth = qstats(q).depth;
    assert_int_equal(store_close(s), 0);

    /* the files are consistent: nothing to salvage, every record is there */
    struct store_report rep;
    s = open_store(store, o, &rep);
    assert_false(store_report_has_findings(&rep));
    assert_int_equal(rep.records, depth);
    store_report_free(&rep);
    q = store_queue_find(s, "upstream/p0");
    static char msg[4000];
    assert_int_equal(queue_append(q, msg, sizeof(msg), 1, 0, NULL), -ENOSPC);

    /* space returns when the consumer catches up */
    struct queue_record r;
    uint64_t got = 0;
    while (queue_next(q, 0, &r) == 1) {
        assert_int_equal(queue_ack(q, r.seq), 0);
        got++;
    }
    assert_int_equal(got, depth);
    store_tick(s, 1); /* reclaims first; the checkpoint may fail while full */
    store_tick(s, 2000);
    for (int i = 0; i < 10; i++)
        assert_int_equal(queue_append(q, msg, sizeof(msg), 1, 0, NULL), 0);
    assert_int_equal(store_sync(s), 0);
    assert_int_equal(store_close(s), 0);
}

static void test_full_disk_tmpfs(void **state)
{
    struct ctx *c = *state;
    PJ(c->mnt, "%s/mnt", c->dir);
    assert_int_equal(mkdir(c->mnt, 0700), 0);
    if (mount("tmpfs", c->mnt, "tmpfs", 0, "size=1m") < 0) {
        int e = errno;
        c->mnt[0] = 0;
        print_message("skipped: cannot mount a tmpfs (%s): need root\n", strerror(e));
        skip();
    }
    char store[PATH_MAX];
    PJ(store, "%s/store", c->mnt);
    struct store_options o;
    store_options_init(&o);
    o.segment_bytes = STORE_SEGMENT_MIN;
    check_full_disk_recovers(store, &o);
}

static void test_full_disk_rlimit(void **state)
{
    struct ctx *c = *state;
    struct store_options o;
    store_options_init(&o);
    o.segment_bytes = 256 * 1024;
    struct store *s = open_store(c->store, &o, NULL);
    struct queue *q = get_queue(s, "upstream/p0");

    /* No file may grow beyond 100 KiB: writes past it fail with EFBIG (and SIGXFSZ). */
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 100 * 1024;
    void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int n;
    fill_until_refused(q, 3000, &n);
    assert_int_equal(n, 100 * 1024 / (3000 + REC_HDR));
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, oldsig);

    char seg[PATH_MAX], qdir[PATH_MAX];
    PJ(qdir, "%s/upstream%%2Fp0", c->store);
    seg_file(qdir, 0, seg, sizeof(seg));
    struct stat st;
    assert_int_equal(stat(seg, &st), 0);
    assert_int_equal((uint64_t)st.st_size, (uint64_t)n * (3000 + REC_HDR)); /* no partial */

    char msg[3000] = {0};
    assert_int_equal(queue_append(q, msg, sizeof(msg), 1, 0, NULL), 0); /* recovered */
    assert_int_equal(qstats(q).depth, (uint64_t)n + 1);
    assert_int_equal(store_close(s), 0);
    struct store_report rep;
    s = open_store(c->store, &o, &rep);
    assert_false(store_report_has_findings(&rep));
    assert_int_equal(rep.records, (uint64_t)n + 1);
    store_report_free(&rep);
    assert_int_equal(store_close(s), 0);
}

/* ---- kill -9 ---- */

struct crash_msg {
    uint64_t kind; /* 1: synced up to seq; 2: about to ack up to seq */
    uint64_t seq;
};

static void crash_child(const char *dir, int wfd, unsigned seed)
{
    srand(seed);
    struct store_options o;
    store_options_init(&o);
    o.segment_bytes = STORE_SEGMENT_MIN;
    o.checkpoint_interval_ms = 50;
    struct store *s = NULL;
    if (store_open(dir, &o, &s, NULL) < 0)
        _exit(2);
    struct queue *q = NULL, *q2 = NULL;
    if (store_queue(s, "upstream/p0", &q) < 0 || store_queue(s, "modules/m/inputs/i/p1", &q2))
        _exit(3);
    int64_t now = 0;
    for (;;) {
        int batch = 1 + rand() % 20;
        uint64_t seq = 0;
        for (int i = 0; i < batch; i++) {
            char buf[512];
            struct queue_stats st;
            queue_get_stats(q, &st);
            if (queue_append(q, buf, payload(st.next_seq, buf, sizeof(buf)), now, 0, &seq) < 0 ||
                queue_append(q2, buf, 16, now, 0, NULL) < 0)
                _exit(4);
        }
        if (store_sync(s) < 0)
            _exit(5);
        struct crash_msg m = {1, seq};
        if (write(wfd, &m, sizeof(m)) != sizeof(m))
            _exit(6);
        /* a consumer that lags behind, acks out of order and sometimes reconnects */
        struct queue_record r;
        uint64_t got[64];
        int n = 0, want = rand() % 30;
        while (n < want && queue_next(q, now, &r) == 1)
            got[n++] = r.seq;
        for (int i = n - 1; i >= 0; i--) {
            if (rand() % 8 == 0)
                continue; /* lost ack */
            m = (struct crash_msg){2, got[i]};
            if (write(wfd, &m, sizeof(m)) != sizeof(m))
                _exit(7);
            queue_ack(q, got[i]);
        }
        if (rand() % 10 == 0)
            queue_rewind_inflight(q);
        while (queue_next(q2, now, &r) == 1)
            queue_ack(q2, r.seq);
        now += 10;
        if (store_tick(s, now) < 0)
            _exit(8);
    }
}

static void test_crash_kill9(void **state)
{
    struct ctx *c = *state;
    for (unsigned iter = 0; iter < 20; iter++) {
        int pfd[2];
        assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(pfd[0]);
            crash_child(c->store, pfd[1], iter + 1);
            _exit(9);
        }
        close(pfd[1]);

        /* let it run for a random number of synced batches (across restarts: the store
         * persists between iterations), then kill it wherever it is */
        uint64_t synced = 0, acked = 0;
        int reports = 0, target = 5 + (int)(((unsigned)rand()) % 100);
        struct crash_msg m;
        bool killed = false;
        for (;;) {
            ssize_t k = read(pfd[0], &m, sizeof(m));
            if (k == (ssize_t)sizeof(m)) {
                if (m.kind == 1) {
                    synced = MAX(synced, m.seq);
                    if (++reports == target && !killed) {
                        kill(pid, SIGKILL);
                        killed = true;
                    }
                } else {
                    acked = MAX(acked, m.seq);
                }
                continue;
            }
            break; /* EOF (or a torn last report) */
        }
        close(pfd[0]);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

        /* Every synced seq above the highest ack ever sent must be there, in order, intact.
         * Nothing is acked here (the next round recovers a non-empty store), so the window
         * must hold everything. */
        struct store_options o;
        store_options_init(&o);
        o.inflight_max = STORE_INFLIGHT_LIMIT;
        struct store *s = open_store(c->store, &o, NULL);
        struct queue *q = store_queue_find(s, "upstream/p0");
        assert_non_null(q);
        struct queue_record r;
        uint64_t prev = 0, want = acked + 1;
        int rc;
        while ((rc = queue_next(q, 0, &r)) == 1) {
            assert_true(r.seq > prev);
            assert_true(payload_ok(&r));
            if (r.seq > acked && r.seq <= synced) {
                if (r.seq != want)
                    fail_msg("iteration %u: seq %" PRIu64 " missing (synced %" PRIu64
                             ", acked %" PRIu64 ")",
                             iter, want, synced, acked);
                want++;
            }
            prev = r.seq;
        }
        assert_int_equal(rc, 0);
        if (synced > acked)
            assert_int_equal(want, synced + 1);
        assert_int_equal(store_close(s), 0);
    }
}

/* ---- memory ---- */

/* The split group commit: a batch covers exactly the appends before it was prepared; appends
 * while it runs (e.g. on another thread) go to the next batch; a queue removed while its batch
 * is in flight is fine. */
static void test_sync_split(void **state)
{
    struct ctx *c = *state;
    struct store *s = open_store(c->store, NULL, NULL);
    struct queue *a = get_queue(s, "a/p0"), *b = get_queue(s, "b/p0");
    append_n(a, 10, 0);
    append_n(b, 3, 0);
    struct store_stats before;
    store_get_stats(s, &before);
    struct store_sync_batch *batch = NULL;
    assert_int_equal(store_sync_prepare(s, &batch), 0);
    append_n(a, 5, 0); /* lands in the next batch */
    store_sync_run(batch);
    assert_int_equal(store_sync_finish(s, batch), 0);
    struct store_stats after;
    store_get_stats(s, &after);
    assert_true(after.syncs >= before.syncs + 2);
    /* the second batch holds only queue a */
    assert_int_equal(store_sync_prepare(s, &batch), 0);
    assert_int_equal(store_queue_remove(s, b), 0);
    store_sync_run(batch);
    assert_int_equal(store_sync_finish(s, batch), 0);
    store_get_stats(s, &before);
    assert_true(before.syncs >= after.syncs + 1); /* queue a, plus what removing b synced */
    /* nothing dirty: an empty batch */
    assert_int_equal(store_sync_prepare(s, &batch), 0);
    store_sync_run(batch);
    assert_int_equal(store_sync_finish(s, batch), 0);
    store_get_stats(s, &after);
    assert_int_equal(after.syncs, before.syncs);
    assert_int_equal(qstats(a).depth, 15);
    assert_int_equal(store_close(s), 0);
    /* everything synced survives a reopen */
    s = open_store(c->store, NULL, NULL);
    a = store_queue_find(s, "a/p0");
    assert_non_null(a);
    assert_int_equal(qstats(a).depth, 15);
    assert_null(store_queue_find(s, "b/p0"));
    assert_int_equal(store_close(s), 0);
}

static void test_memory_flat_with_depth(void **state)
{
    struct ctx *c = *state;
    struct store_options o;
    store_options_init(&o);
    o.sync = STORE_SYNC_INTERVAL;
    struct store *s = open_store(c->store, &o, NULL);
    struct queue *q = get_queue(s, "upstream/p0");
    char msg[200];
    memset(msg, 'm', sizeof(msg));

    for (int i = 0; i < 1000; i++)
        assert_int_equal(queue_append(q, msg, sizeof(msg), 1, 0, NULL), 0);
    struct store_stats a, b;
    store_get_stats(s, &a);
    size_t heap_a = mallinfo2().uordblks;
    for (int i = 0; i < 99000; i++)
        assert_int_equal(queue_append(q, msg, sizeof(msg), 1, 0, NULL), 0);
    store_get_stats(s, &b);
    size_t heap_b = mallinfo2().uordblks;
    assert_int_equal(qstats(q).depth, 100000);
    assert_true(b.bytes >= 100000 * sizeof(msg));
    print_message("store memory: %" PRIu64 " bytes at depth 1000, %" PRIu64
                  " at depth 100000 (%" PRIu64 " bytes on disk); heap delta %zd\n",
                  a.mem_bytes, b.mem_bytes, b.bytes, (ssize_t)(heap_b - heap_a));
    assert_true(b.mem_bytes - a.mem_bytes < 1024); /* a few segment entries at most */
    if (heap_a) /* 0 under ASan, whose allocator glibc does not see */
        assert_true(heap_b < heap_a + 64 * 1024);

    /* deliver everything through the window: still bounded */
    struct queue_record r;
    uint64_t n = 0;
    while (queue_next(q, 0, &r) == 1) {
        assert_int_equal(queue_ack(q, r.seq), 0);
        n++;
    }
    assert_int_equal(n, 100000);
    store_get_stats(s, &b);
    assert_true(b.mem_bytes < a.mem_bytes + 64 * 1024 + STORE_INFLIGHT_DEFAULT * 16);
    assert_int_equal(store_tick(s, 1), 0);
    store_get_stats(s, &b);
    assert_int_equal(b.bytes, 0);
    assert_int_equal(store_close(s), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_append_next_ack_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_window_out_of_order_and_rewind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_names_and_priorities, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_persistence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_lazy_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ttl_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_bytes_refusal_and_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_salvage_truncated_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_salvage_flipped_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_salvage_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_salvage_checkpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_salvage_checkpoint_floor_beyond_queue, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rollover_and_deletion, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_policies_and_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_remove, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_disk_tmpfs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_disk_rlimit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_kill9, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_split, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memory_flat_with_depth, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
