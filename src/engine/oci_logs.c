/* oci_logs.c — `ledge logs` for the oci engine: the log files ledge-keeper writes (one CRI line
 * per record, rotated as <log>.1 … <log>.N-1), read oldest first with --tail (counted from the
 * newest file backwards), --since (by each record's own timestamp), --timestamps, and --follow
 * (inotify on the directory, so a rotation is followed into the new file). Reading is done in
 * slices from the event loop, never all at once. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/macro.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "oci-internal.h"

#define SLICE (64u << 10)
#define LINE_MAX_KEEP (64u << 10)

static int digits(const char *s, size_t n, long *ret)
{
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *ret = v;
    return 0;
}

/* days since the epoch of a civil date (Howard Hinnant's algorithm) */
static int64_t days_from_civil(long y, long m, long d)
{
    y -= m <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    long yoe = y - era * 400;
    long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return (int64_t)era * 146097 + doe - 719468;
}

int oci_log_parse(const char *line, size_t n, struct oci_log_rec *r)
{
    /* 2024-01-02T03:04:05.123456789Z stdout F text */
    memset(r, 0, sizeof(*r));
    const char *sp = memchr(line, ' ', n);
    if (!sp)
        return -EINVAL;
    size_t tl = (size_t)(sp - line);
    long Y, M, D, h, m, s, frac = 0;
    if (tl < 20 || line[4] != '-' || line[7] != '-' || line[10] != 'T' || line[13] != ':' ||
        line[16] != ':' || line[tl - 1] != 'Z' || digits(line, 4, &Y) || digits(line + 5, 2, &M) ||
        digits(line + 8, 2, &D) || digits(line + 11, 2, &h) || digits(line + 14, 2, &m) ||
        digits(line + 17, 2, &s) || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 ||
        s > 60)
        return -EINVAL;
    if (tl > 20) {
        size_t fl = tl - 21;
        if (line[19] != '.' || fl == 0 || fl > 9 || digits(line + 20, fl, &frac))
            return -EINVAL;
        for (size_t i = fl; i < 9; i++)
            frac *= 10;
    }
    r->time_ns = ((days_from_civil(Y, M, D) * 86400 + h * 3600 + m * 60 + s) * 1000000000LL) + frac;
    r->ts = line;
    r->ts_len = tl;
    const char *p = sp + 1, *end = line + n;
    if ((size_t)(end - p) >= 7 && memcmp(p, "stdout ", 7) == 0)
        r->stream = 1;
    else if ((size_t)(end - p) >= 7 && memcmp(p, "stderr ", 7) == 0)
        r->stream = 2;
    else
        return -EINVAL;
    p += 7;
    if (end - p < 1 || (*p != 'F' && *p != 'P'))
        return -EINVAL;
    r->partial = *p == 'P';
    p++;
    if (p < end) {
        if (*p != ' ')
            return -EINVAL;
        p++;
    }
    r->text = p;
    r->len = (size_t)(end - p);
    return 0;
}

struct engine_logs {
    struct event_base *base;
    char *path;
    int max_files;
    struct engine_logs_options o;
    engine_log_fn on_data;
    engine_done_fn cb;
    void *ud;
    int file; /* the file being read: max_files-1 .. 1 are rotated ones, 0 the current */
    int fd;
    ino_t ino;
    off_t pos;
    struct lbuf line; /* a record read in part */
    struct lbuf out;  /* a line being joined from P records */
    int out_stream;
    char out_ts[40];
    int ino_fd;
    struct event *ino_ev, *slice;
    bool done;
};

static void file_name(struct engine_logs *l, int i, char *buf, size_t n)
{
    if (i == 0)
        snprintf(buf, n, "%s", l->path);
    else
        snprintf(buf, n, "%s.%d", l->path, i);
}

static void logs_free(struct engine_logs *l)
{
    if (l->slice)
        event_free(l->slice);
    if (l->ino_ev)
        event_free(l->ino_ev);
    if (l->ino_fd >= 0)
        close(l->ino_fd);
    if (l->fd >= 0)
        close(l->fd);
    lbuf_free(&l->line);
    lbuf_free(&l->out);
    free(l->path);
    free(l);
}

static void finish(struct engine_logs *l, int r)
{
    engine_done_fn cb = l->cb;
    void *ud = l->ud;
    logs_free(l);
    cb(ud, r == -ECANCELED ? 0 : r, NULL);
}

static int open_file(struct engine_logs *l, int i)
{
    if (l->fd >= 0)
        close(l->fd);
    char p[PATH_MAX];
    file_name(l, i, p, sizeof(p));
    l->fd = open(p, O_RDONLY | O_CLOEXEC);
    l->file = i;
    l->pos = 0;
    struct stat st;
    l->ino = l->fd >= 0 && fstat(l->fd, &st) == 0 ? st.st_ino : 0;
    return l->fd >= 0 ? 0 : -errno;
}

/* One record: whole lines (P records joined) to the consumer. */
static int deliver(struct engine_logs *l, const char *rec, size_t n)
{
    struct oci_log_rec r;
    if (oci_log_parse(rec, n, &r) < 0)
        return 0; /* not ours: skipped */
    if (l->o.since_ms > 0 && r.time_ns / 1000000 < l->o.since_ms)
        return 0;
    if (l->out.len == 0) {
        l->out_stream = r.stream;
        snprintf(l->out_ts, sizeof(l->out_ts), "%.*s", (int)MIN(r.ts_len, 39), r.ts);
    }
    if (l->out.len < LINE_MAX_KEEP)
        lbuf_append(&l->out, r.text, MIN(r.len, LINE_MAX_KEEP - l->out.len));
    if (r.partial)
        return 0;
    struct lbuf b = LBUF_INIT;
    if (l->o.timestamps)
        lbuf_printf(&b, "%s ", l->out_ts);
    lbuf_append(&b, l->out.data ? l->out.data : "", l->out.len);
    lbuf_putc(&b, '\n');
    int rr = b.data ? l->on_data(l->ud, l->out_stream, b.data, b.len) : -ENOMEM;
    lbuf_free(&b);
    lbuf_reset(&l->out);
    return rr < 0 ? -ECANCELED : 0;
}

/* Read a slice of the current file. 1: more to read now, 0: at its end, < 0: stop. */
static int read_slice(struct engine_logs *l)
{
    if (l->fd < 0)
        return 0;
    char buf[SLICE];
    ssize_t n = pread(l->fd, buf, sizeof(buf), l->pos);
    if (n < 0)
        return -errno;
    if (n == 0)
        return 0;
    l->pos += n;
    size_t start = 0;
    for (size_t i = 0; i < (size_t)n; i++) {
        if (buf[i] != '\n')
            continue;
        int r;
        if (l->line.len) {
            lbuf_append(&l->line, buf + start, i - start);
            r = deliver(l, l->line.data, l->line.len);
            lbuf_reset(&l->line);
        } else {
            r = deliver(l, buf + start, i - start);
        }
        if (r < 0)
            return r;
        start = i + 1;
    }
    if (start < (size_t)n && l->line.len < LINE_MAX_KEEP)
        lbuf_append(&l->line, buf + start, (size_t)n - start);
    return 1;
}

/* Has the current file been rotated away (its name now another inode)? */
static bool rotated(struct engine_logs *l)
{
    char p[PATH_MAX];
    file_name(l, 0, p, sizeof(p));
    struct stat st;
    return l->file == 0 && stat(p, &st) == 0 && st.st_ino != l->ino;
}

static void pump(struct engine_logs *l)
{
    for (;;) {
        int r = read_slice(l);
        if (r < 0)
            return finish(l, r);
        if (r == 1) {
            /* more: the next slice from the loop, so others get their turn */
            struct timeval tv = {0, 0};
            evtimer_add(l->slice, &tv);
            return;
        }
        if (l->file > 0) {
            open_file(l, l->file - 1);
            continue;
        }
        if (rotated(l)) {
            open_file(l, 0);
            continue;
        }
        if (!l->o.follow)
            return finish(l, 0);
        return; /* wait for inotify */
    }
}

static void slice_cb(evutil_socket_t fd, short what, void *arg)
{
    pump(arg);
}

static void ino_cb(evutil_socket_t fd, short what, void *arg)
{
    struct engine_logs *l = arg;
    char buf[4096];
    while (read(l->ino_fd, buf, sizeof(buf)) > 0)
        ;
    if (!evtimer_pending(l->slice, NULL))
        pump(l);
}

/* Where the last `tail` records start: (file, offset), counted back from the newest file. */
static void seek_tail(struct engine_logs *l, long tail)
{
    long lines = 0;
    for (int i = 0; i < l->max_files; i++) {
        char p[PATH_MAX];
        file_name(l, i, p, sizeof(p));
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            break;
        struct stat st;
        off_t end = fstat(fd, &st) == 0 ? st.st_size : 0, pos = end;
        char buf[8192];
        while (pos > 0) {
            size_t chunk = (size_t)MIN((off_t)sizeof(buf), pos);
            pos -= (off_t)chunk;
            if (pread(fd, buf, chunk, pos) != (ssize_t)chunk)
                break;
            for (size_t k = chunk; k-- > 0;) {
                off_t at = pos + (off_t)k;
                if (buf[k] != '\n' || at == end - 1)
                    continue;
                /* a record that is not the last of a P chain ends a line */
                if (++lines == tail) {
                    close(fd);
                    open_file(l, i);
                    l->pos = at + 1;
                    return;
                }
            }
        }
        close(fd);
        if (end > 0)
            lines++; /* the file's first record */
        if (lines >= tail) {
            open_file(l, i);
            return;
        }
    }
    /* fewer records than asked for: everything */
    for (int i = l->max_files - 1; i >= 0; i--) {
        char p[PATH_MAX];
        file_name(l, i, p, sizeof(p));
        if (access(p, F_OK) == 0 || i == 0) {
            open_file(l, i);
            return;
        }
    }
}

struct engine_logs *oci_logs_open(struct event_base *base, const char *path, int max_files,
                                  const struct engine_logs_options *o, engine_log_fn on_data,
                                  engine_done_fn cb, void *ud)
{
    struct engine_logs *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->base = base;
    l->path = strdup(path);
    l->max_files = max_files > 0 ? max_files : 1;
    l->o = *o;
    l->on_data = on_data;
    l->cb = cb;
    l->ud = ud;
    l->fd = l->ino_fd = -1;
    l->slice = evtimer_new(base, slice_cb, l);
    if (!l->path || !l->slice) {
        logs_free(l);
        return NULL;
    }
    if (o->tail == 0) {
        open_file(l, 0);
        struct stat st;
        if (l->fd >= 0 && fstat(l->fd, &st) == 0)
            l->pos = st.st_size;
    } else if (o->tail > 0) {
        seek_tail(l, o->tail);
    } else {
        seek_tail(l, LONG_MAX);
    }
    if (o->follow) {
        char dir[PATH_MAX];
        lfs_dirname(path, dir, sizeof(dir));
        l->ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (l->ino_fd < 0 ||
            inotify_add_watch(l->ino_fd, dir, IN_MODIFY | IN_CREATE | IN_MOVED_TO) < 0) {
            logs_free(l);
            return NULL;
        }
        l->ino_ev = event_new(base, l->ino_fd, EV_READ | EV_PERSIST, ino_cb, l);
        if (!l->ino_ev) {
            logs_free(l);
            return NULL;
        }
        event_add(l->ino_ev, NULL);
    }
    struct timeval tv = {0, 0};
    evtimer_add(l->slice, &tv);
    return l;
}

void oci_logs_cancel(struct engine_logs *l)
{
    if (l)
        logs_free(l);
}
