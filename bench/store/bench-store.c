/* bench-store.c — micro-benchmark of the durable queue store: append + store_sync (group
 * commit) in batches of 1, 10 and 100 messages of 200 bytes, one queue and a fan-out to three;
 * the interval policy; and the raw write+fdatasync cost of the disk for reference.
 * Usage: bench-store [dir] [seconds per case]   (dir must be on the disk to measure) */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/timeutil.h"
#include "store/store.h"

#define MSG_LEN 200

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

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

static void die(const char *what, int r)
{
    fprintf(stderr, "bench-store: %s: %s\n", what, strerror(-r));
    exit(1);
}

/* A consumer that keeps up, so the store stays small as it would in a healthy hub. */
static void consume(struct queue *q)
{
    struct queue_record rec;
    while (queue_next(q, 0, &rec) == 1)
        queue_ack(q, rec.seq);
}

static void run_case(const char *dir, enum store_sync_policy pol, int batch, int fanout,
                     double secs)
{
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    struct store_options o;
    store_options_init(&o);
    o.sync = pol;
    struct store *s = NULL;
    int r = store_open(dir, &o, &s, NULL);
    if (r < 0)
        die("store_open", r);
    struct queue *q[3];
    const char *names[3] = {"upstream/p0", "modules/a/inputs/in/p0", "modules/b/inputs/in/p0"};
    for (int i = 0; i < fanout; i++)
        if ((r = store_queue(s, names[i], &q[i])) < 0)
            die("store_queue", r);
    char msg[MSG_LEN];
    memset(msg, 'x', sizeof(msg));

    struct store_stats a, b;
    store_get_stats(s, &a);
    uint64_t msgs = 0;
    double t0 = now_s(), t = t0, last_tick = t0;
    while (t - t0 < secs) {
        for (int i = 0; i < batch; i++)
            for (int k = 0; k < fanout; k++)
                if ((r = queue_append(q[k], msg, sizeof(msg), 0, 0, NULL)) < 0)
                    die("queue_append", r);
        if (pol == STORE_SYNC_ALWAYS && (r = store_sync(s)) < 0)
            die("store_sync", r);
        msgs += (uint64_t)batch;
        for (int k = 0; k < fanout; k++)
            consume(q[k]);
        t = now_s();
        if (t - last_tick >= 0.1) { /* the hub's maintenance timer */
            if ((r = store_tick(s, (int64_t)(t * 1000))) < 0)
                die("store_tick", r);
            last_tick = t;
        }
    }
    double el = now_s() - t0;
    store_get_stats(s, &b);
    printf("%-8s  batch %3d  queues %d  %9.0f msg/s  %8.0f fsync/s  %6.1f us/msg\n",
           store_sync_policy_to_string(pol), batch, fanout, (double)msgs / el,
           (double)(b.syncs - a.syncs) / el, el * 1e6 / (double)msgs);
    store_close(s);
}

static void raw_fdatasync(const char *dir, double secs)
{
    char p[PATH_MAX];
    PJ(p, "%s/raw", dir);
    int fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        die("open", -errno);
    char msg[MSG_LEN + 40];
    memset(msg, 'x', sizeof(msg));
    uint64_t n = 0;
    double t0 = now_s();
    while (now_s() - t0 < secs) {
        if (write(fd, msg, sizeof(msg)) != (ssize_t)sizeof(msg) || fdatasync(fd) < 0)
            die("write/fdatasync", -errno);
        n++;
    }
    double el = now_s() - t0;
    printf("raw write(240 B)+fdatasync: %.0f/s (%.3f ms each)\n", (double)n / el,
           el * 1e3 / (double)n);
    close(fd);
    unlink(p);
}

int main(int argc, char **argv)
{
    char dir[PATH_MAX];
    if (argc > 1) {
        PJ(dir, "%s", argv[1]);
    } else {
        PJ(dir, "/var/tmp/ledge-bench-store-XXXXXX");
        if (!mkdtemp(dir))
            die("mkdtemp", -errno);
    }
    double secs = argc > 2 ? atof(argv[2]) : 2.0;
    mkdir(dir, 0700);
    char sdir[PATH_MAX];
    PJ(sdir, "%s/store", dir);

    printf("store bench in %s, %d-byte messages, %.1f s per case\n", dir, MSG_LEN, secs);
    raw_fdatasync(dir, secs);
    static const int batches[] = {1, 10, 100};
    for (size_t i = 0; i < 3; i++)
        run_case(sdir, STORE_SYNC_ALWAYS, batches[i], 1, secs);
    for (size_t i = 0; i < 3; i++)
        run_case(sdir, STORE_SYNC_ALWAYS, batches[i], 3, secs);
    run_case(sdir, STORE_SYNC_INTERVAL, 100, 1, secs);
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
