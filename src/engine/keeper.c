/* keeper.c — ledge-keeper: the one process that stays the parent of every container of the oci
 * engine, so that no shim per container is needed and containers outlive ledged (a restart, an
 * upgrade, a crash). It is a child subreaper: it runs the OCI runtime's `run --detach`, the
 * container's init is reparented to it, and it learns the init's exit status from waitpid() —
 * the one thing nobody else can learn once the parent is gone. It also holds the read ends of
 * the containers' stdout/stderr pipes and writes them to per-container log files (CRI lines:
 * "<RFC 3339 nano> stdout|stderr F|P <text>"), rotated by size.
 *
 * ledged talks to it over a SOCK_SEQPACKET socket (keeper_proto.h) that ledged created and hands
 * over as fd 3, so connecting never races the keeper's start. The table of containers is kept in
 * --state (rewritten on each change) so that a keeper that was killed re-adopts the running
 * containers (watched by pidfd: their exit codes and further output are lost then, as said in
 * docs/engine-oci.md). One event loop (epoll); nothing blocks but the runtime's fork/exec.
 *
 *   ledge-keeper --state FILE   (the listening socket on fd 3) */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/json.h"
#include "base/list.h"
#include "base/proc.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "keeper_proto.h"

#define LINE_MAX_BYTES (16u << 10) /* a longer line is written in parts ("P" records) */
#define REAPED_MAX 256             /* exits of pids not (yet) known as containers */

enum {
    TAG_LISTEN = 1,
    TAG_CLIENT,
    TAG_SIGNAL,
    TAG_OUT,   /* ptr: struct stream */
    TAG_PIDFD, /* ptr: struct ctr (adopted) */
};

struct ctr;

struct stream {
    struct ctr *c;
    int fd;
    const char *name; /* "stdout", "stderr" */
    char buf[LINE_MAX_BYTES];
    size_t len;
};

struct ctr {
    char id[KEEPER_ID_MAX + 1];
    pid_t pid;                    /* the container's init while running */
    unsigned long long starttime; /* /proc/<pid>/stat field 22, to recognise it after a restart */
    bool running, child;          /* child: ours to waitpid(); else adopted (pidfd) */
    int pidfd;
    int exit_code;
    int64_t started_ms, finished_ms;
    /* the run in progress */
    pid_t runner;
    int64_t run_seq;
    char *pidfile;
    /* the log */
    char *log_path;
    int64_t log_max;
    int log_files;
    int log_fd;
    int64_t log_size;
    struct stream out, err;
    bool dead; /* freed at the end of the current batch of events, which may still name it */
    struct llist node; /* in K.ctrs, or in K.dead once freed */
};

struct reaped {
    pid_t pid;
    int code;
    int64_t ms;
};

static struct {
    int ep, listen_fd, client, sigfd;
    const char *state;
    struct llist ctrs, dead;
    size_t n_ctrs;
    struct reaped reaped[REAPED_MAX];
    size_t n_reaped, reaped_next;
} K = {.ep = -1,
       .listen_fd = 3,
       .client = -1,
       .sigfd = -1,
       .ctrs = LLIST_INIT(K.ctrs),
       .dead = LLIST_INIT(K.dead)};

/* ------------------------------------------------------------------ helpers */

static void ep_add(int fd, uint32_t tag, void *ptr)
{
    struct epoll_event ev = {.events = EPOLLIN};
    /* tag in the low bits of u64 does not fit a pointer: keep both in a small struct-less
     * encoding: the pointer is aligned, so its low 3 bits carry the tag. */
    ev.data.u64 = (uint64_t)(uintptr_t)ptr | tag;
    epoll_ctl(K.ep, EPOLL_CTL_ADD, fd, &ev);
}

static void ep_del(int fd)
{
    epoll_ctl(K.ep, EPOLL_CTL_DEL, fd, NULL);
}

static struct ctr *ctr_find(const char *id)
{
    struct ctr *c;
    llist_foreach (c, &K.ctrs, node)
        if (strcmp(c->id, id) == 0)
            return c;
    return NULL;
}

static void send_json(json_t *j)
{
    if (!j)
        return;
    _cleanup_free_ char *text = ljson_dump(j);
    json_decref(j);
    if (K.client < 0 || !text)
        return;
    /* A client that does not read is dropped rather than blocking everyone (MSG_DONTWAIT). */
    if (send(K.client, text, strlen(text), MSG_DONTWAIT | MSG_NOSIGNAL) < 0 && errno != EINTR) {
        ep_del(K.client);
        close(K.client);
        K.client = -1;
    }
}

static void reply_error(int64_t seq, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void reply_error(int64_t seq, int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    send_json(json_pack("{s:I, s:b, s:s, s:i}", "seq", (json_int_t)seq, "ok", 0, "error", msg,
                        "errno", code));
}

/* ------------------------------------------------------------------ the table on disk */

static void save_state(void)
{
    json_t *arr = json_array();
    struct ctr *c;
    llist_foreach (c, &K.ctrs, node) {
        if (!arr)
            break;
        struct keeper_container kc = {.id = c->id,
                                      .pid = c->running ? c->pid : 0,
                                      .running = c->running,
                                      .exit_code = c->exit_code,
                                      .started_ms = c->started_ms,
                                      .finished_ms = c->finished_ms};
        json_t *j = keeper_container_json(&kc);
        if (j) {
            json_object_set_new(j, "starttime", json_integer((json_int_t)c->starttime));
            if (c->log_path)
                json_object_set_new(j, "log", json_string(c->log_path));
        }
        json_array_append_new(arr, j);
    }
    json_t *doc = json_pack("{s:i, s:o}", "version", KEEPER_PROTO_VERSION, "containers", arr);
    _cleanup_free_ char *text = doc ? ljson_dump(doc) : NULL;
    json_decref(doc);
    if (text)
        lfs_write_atomic(K.state, text, strlen(text), 0600);
}

static struct ctr *ctr_new(const char *id)
{
    if (K.n_ctrs >= KEEPER_CONTAINERS_MAX)
        return NULL;
    struct ctr *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    lstr_copy(c->id, sizeof(c->id), id);
    c->pidfd = c->log_fd = c->out.fd = c->err.fd = -1;
    c->exit_code = -1;
    c->out.c = c->err.c = c;
    c->out.name = "stdout";
    c->err.name = "stderr";
    llist_add_tail(&K.ctrs, &c->node);
    K.n_ctrs++;
    return c;
}

static void stream_close(struct stream *s);

static void ctr_free(struct ctr *c)
{
    llist_remove(&c->node);
    K.n_ctrs--;
    stream_close(&c->out);
    stream_close(&c->err);
    if (c->pidfd >= 0) {
        ep_del(c->pidfd);
        close(c->pidfd);
    }
    if (c->log_fd >= 0)
        close(c->log_fd);
    free(c->pidfile);
    c->pidfile = NULL;
    free(c->log_path);
    c->log_path = NULL;
    c->dead = true;
    llist_add_tail(&K.dead, &c->node);
}

static void watch_adopted(struct ctr *c)
{
    c->pidfd = (int)syscall(SYS_pidfd_open, c->pid, 0);
    if (c->pidfd < 0) {
        c->running = false;
        c->finished_ms = ltime_now_ms();
        return;
    }
    fcntl(c->pidfd, F_SETFD, FD_CLOEXEC);
    ep_add(c->pidfd, TAG_PIDFD, c);
}

static void load_state(void)
{
    _cleanup_free_ char *text = NULL;
    size_t n;
    if (lfs_read_file(K.state, 4u << 20, &text, &n) < 0)
        return;
    _cleanup_json_ json_t *doc = NULL;
    if (ljson_parse(text, n, &doc, NULL) < 0)
        return;
    size_t i;
    json_t *j;
    json_array_foreach (json_object_get(doc, "containers"), i, j) {
        struct keeper_container kc;
        if (keeper_container_parse(j, &kc, NULL) < 0 || ctr_find(kc.id))
            continue;
        struct ctr *c = ctr_new(kc.id);
        if (!c)
            break;
        c->exit_code = kc.exit_code;
        c->started_ms = kc.started_ms;
        c->finished_ms = kc.finished_ms;
        const char *log = ljson_str(j, "log");
        c->log_path = log ? strdup(log) : NULL;
        unsigned long long st = (unsigned long long)ljson_int(j, "starttime", 0), now_st;
        if (kc.running && kc.pid > 0 && lproc_starttime(kc.pid, &now_st) == 0 && now_st == st) {
            c->pid = kc.pid;
            c->starttime = st;
            c->running = true;
            watch_adopted(c);
        } else if (kc.running) {
            /* It ended while no keeper was there to see how. */
            c->exit_code = -1;
            c->finished_ms = ltime_now_ms();
        }
    }
    save_state();
}

/* ------------------------------------------------------------------ logs */

static void log_open(struct ctr *c)
{
    if (c->log_fd >= 0 || !c->log_path)
        return;
    c->log_fd = open(c->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    struct stat st;
    c->log_size = c->log_fd >= 0 && fstat(c->log_fd, &st) == 0 ? st.st_size : 0;
}

/* log → log.1 → … → log.(max_files-1); the oldest falls off. */
static void log_rotate(struct ctr *c)
{
    if (c->log_fd >= 0)
        close(c->log_fd);
    c->log_fd = -1;
    char from[4200], to[4200];
    for (int i = c->log_files - 1; i >= 1; i--) {
        if (i == 1)
            snprintf(from, sizeof(from), "%s", c->log_path);
        else
            snprintf(from, sizeof(from), "%s.%d", c->log_path, i - 1);
        snprintf(to, sizeof(to), "%s.%d", c->log_path, i);
        rename(from, to);
    }
    if (c->log_files <= 1 && truncate(c->log_path, 0) < 0) {
        /* nothing to keep and nothing to do about it */
    }
    log_open(c);
}

static void log_record(struct ctr *c, const char *stream, bool partial, const char *data, size_t n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char head[80];
    int hn = snprintf(head, sizeof(head), "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ %s %c ",
                      tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                      tm.tm_sec, ts.tv_nsec, stream, partial ? 'P' : 'F');
    log_open(c);
    if (c->log_fd < 0)
        return;
    int64_t rec = hn + (int64_t)n + 1;
    if (c->log_max > 0 && c->log_size > 0 && c->log_size + rec > c->log_max)
        log_rotate(c);
    if (c->log_fd < 0)
        return;
    struct iovec iov[3] = {{head, (size_t)hn}, {(void *)data, n}, {"\n", 1}};
    ssize_t w = writev(c->log_fd, iov, 3);
    if (w > 0)
        c->log_size += w;
}

static void stream_flush(struct stream *s, bool eof)
{
    size_t start = 0;
    for (size_t i = 0; i < s->len; i++)
        if (s->buf[i] == '\n') {
            log_record(s->c, s->name, false, s->buf + start, i - start);
            start = i + 1;
        }
    if (start < s->len && (eof || (start == 0 && s->len == sizeof(s->buf)))) {
        /* a line longer than the buffer goes in parts; the last piece at EOF ends it */
        log_record(s->c, s->name, !eof, s->buf + start, s->len - start);
        start = s->len;
    }
    memmove(s->buf, s->buf + start, s->len - start);
    s->len -= start;
}

static void stream_close(struct stream *s)
{
    if (s->fd < 0)
        return;
    stream_flush(s, true);
    ep_del(s->fd);
    close(s->fd);
    s->fd = -1;
}

static void stream_readable(struct stream *s)
{
    for (;;) {
        ssize_t n = read(s->fd, s->buf + s->len, sizeof(s->buf) - s->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            stream_close(s);
            return;
        }
        s->len += (size_t)n;
        stream_flush(s, false);
        return; /* level-triggered: the loop comes back for the rest */
    }
}

/* ------------------------------------------------------------------ exits */

static void ctr_exited(struct ctr *c, int code, int64_t ms)
{
    c->running = false;
    c->exit_code = code;
    c->finished_ms = ms;
    c->child = false;
    if (c->pidfd >= 0) {
        ep_del(c->pidfd);
        close(c->pidfd);
        c->pidfd = -1;
    }
    save_state();
    struct keeper_container kc = {.id = c->id,
                                  .pid = c->pid,
                                  .exit_code = code,
                                  .started_ms = c->started_ms,
                                  .finished_ms = ms};
    json_t *j = keeper_container_json(&kc);
    if (j)
        json_object_set_new(j, "event", json_string("exit"));
    send_json(j);
}

static void remember_reaped(pid_t pid, int code)
{
    K.reaped[K.reaped_next] = (struct reaped){pid, code, ltime_now_ms()};
    K.reaped_next = (K.reaped_next + 1) % REAPED_MAX;
    if (K.n_reaped < REAPED_MAX)
        K.n_reaped++;
}

static bool take_reaped(pid_t pid, struct reaped *ret)
{
    for (size_t i = 0; i < K.n_reaped; i++)
        if (K.reaped[i].pid == pid) {
            *ret = K.reaped[i];
            K.reaped[i].pid = 0;
            return true;
        }
    return false;
}

/* The runtime's `run --detach` has exited: the container runs (its pid in the pidfile) or not. */
static void run_finished(struct ctr *c, int status)
{
    int code = keeper_exit_code(status);
    int64_t seq = c->run_seq;
    c->runner = 0;
    _cleanup_free_ char *text = NULL;
    long pid = 0;
    if (code == 0 && lfs_read_file(c->pidfile, 64, &text, NULL) == 0)
        pid = strtol(text, NULL, 10);
    if (code != 0 || pid <= 0) {
        /* the pipes' write ends went with the runtime: drain what it said and close them */
        stream_close(&c->out);
        stream_close(&c->err);
        c->running = false;
        c->exit_code = code == 0 ? -1 : code;
        c->finished_ms = ltime_now_ms();
        save_state();
        send_json(json_pack("{s:I, s:b, s:i, s:i}", "seq", (json_int_t)seq, "ok", 1, "status",
                            code == 0 ? -1 : code, "containerPid", 0));
        return;
    }
    c->pid = (pid_t)pid;
    c->running = true;
    c->child = true;
    c->started_ms = ltime_now_ms();
    lproc_starttime(c->pid, &c->starttime);
    save_state();
    send_json(json_pack("{s:I, s:b, s:i, s:i, s:I}", "seq", (json_int_t)seq, "ok", 1, "status", 0,
                        "containerPid", (int)pid, "startedMs", (json_int_t)c->started_ms));
    struct reaped rp;
    if (take_reaped(c->pid, &rp)) /* it exited before the runtime did */
        ctr_exited(c, rp.code, rp.ms);
}

static void reap(void)
{
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0)
            return;
        bool known = false;
        struct ctr *c;
        llist_foreach (c, &K.ctrs, node) {
            if (c->runner == pid) {
                run_finished(c, status);
                known = true;
                break;
            }
            if (c->running && c->child && c->pid == pid) {
                ctr_exited(c, keeper_exit_code(status), ltime_now_ms());
                known = true;
                break;
            }
        }
        if (!known)
            remember_reaped(pid, keeper_exit_code(status));
    }
}

/* ------------------------------------------------------------------ requests */

static void op_run(const struct keeper_request *r)
{
    struct ctr *c = ctr_find(r->id);
    if (c && (c->running || c->runner))
        return reply_error(r->seq, EBUSY, "container %s is running", r->id);
    if (c)
        ctr_free(c);
    c = ctr_new(r->id);
    if (!c)
        return reply_error(r->seq, ENOSPC, "at most %d containers", KEEPER_CONTAINERS_MAX);
    c->pidfile = strdup(r->pidfile);
    c->log_path = strdup(r->log.path);
    c->log_max = r->log.max_size;
    c->log_files = r->log.max_files;
    int out[2] = {-1, -1}, err[2] = {-1, -1};
    if (!c->pidfile || !c->log_path || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
        int e = errno ? errno : ENOMEM;
        for (int i = 0; i < 2; i++) {
            if (out[i] >= 0)
                close(out[i]);
            if (err[i] >= 0)
                close(err[i]);
        }
        ctr_free(c);
        return reply_error(r->seq, e, "pipe: %s", strerror(e));
    }
    unlink(c->pidfile);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(out[0]), close(out[1]), close(err[0]), close(err[1]);
        ctr_free(c);
        return reply_error(r->seq, e, "fork: %s", strerror(e));
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        execv(r->argv[0], (char *const *)r->argv);
        dprintf(2, "ledge-keeper: cannot execute %s: %s\n", r->argv[0], strerror(errno));
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    fcntl(err[0], F_SETFL, O_NONBLOCK);
    c->out.fd = out[0];
    c->err.fd = err[0];
    ep_add(c->out.fd, TAG_OUT, &c->out);
    ep_add(c->err.fd, TAG_OUT, &c->err);
    c->runner = pid;
    c->run_seq = r->seq;
}

static void handle_request(const char *text, size_t n)
{
    _cleanup_json_ json_t *j = NULL;
    struct lerr e = {0};
    struct keeper_request r;
    if (ljson_parse(text, n, &j, &e) < 0 || keeper_request_parse(j, &r, &e) < 0) {
        json_t *seq = json_object_get(j, "seq");
        reply_error(json_is_integer(seq) ? json_integer_value(seq) : -1, EINVAL, "%s",
                    lerr_str(&e));
        return;
    }
    switch (r.op) {
    case KEEPER_OP_HELLO:
        send_json(json_pack("{s:I, s:b, s:i, s:i}", "seq", (json_int_t)r.seq, "ok", 1, "version",
                            KEEPER_PROTO_VERSION, "pid", (int)getpid()));
        return;
    case KEEPER_OP_RUN:
        op_run(&r);
        return;
    case KEEPER_OP_KILL: {
        struct ctr *c = ctr_find(r.id);
        if (!c || !c->running)
            return reply_error(r.seq, ESRCH, "container %s is not running", r.id);
        /* A child cannot be reaped (and its pid reused) before we waitpid() it; an adopted one is
         * signalled through its pidfd. */
        int rc = c->pidfd >= 0 ? (int)syscall(SYS_pidfd_send_signal, c->pidfd, r.signal, NULL, 0)
                               : kill(c->pid, r.signal);
        if (rc < 0)
            return reply_error(r.seq, errno, "kill %s: %s", r.id, strerror(errno));
        send_json(json_pack("{s:I, s:b}", "seq", (json_int_t)r.seq, "ok", 1));
        return;
    }
    case KEEPER_OP_LIST: {
        json_t *arr = json_array();
        struct ctr *c;
        llist_foreach (c, &K.ctrs, node) {
            if (!arr)
                break;
            if (c->runner)
                continue; /* not started yet: its run answer says how it went */
            struct keeper_container kc = {.id = c->id,
                                          .pid = c->running ? c->pid : 0,
                                          .running = c->running,
                                          .exit_code = c->exit_code,
                                          .started_ms = c->started_ms,
                                          .finished_ms = c->finished_ms};
            json_array_append_new(arr, keeper_container_json(&kc));
        }
        send_json(
            json_pack("{s:I, s:b, s:o}", "seq", (json_int_t)r.seq, "ok", 1, "containers", arr));
        return;
    }
    case KEEPER_OP_FORGET: {
        struct ctr *c = ctr_find(r.id);
        if (c && (c->running || c->runner))
            return reply_error(r.seq, EBUSY, "container %s is running", r.id);
        if (c) {
            ctr_free(c);
            save_state();
        }
        send_json(json_pack("{s:I, s:b}", "seq", (json_int_t)r.seq, "ok", 1));
        return;
    }
    }
}

static void client_readable(void)
{
    static char buf[KEEPER_MSG_MAX + 1];
    ssize_t n = recv(K.client, buf, sizeof(buf), MSG_TRUNC);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0 || (size_t)n > KEEPER_MSG_MAX) {
        ep_del(K.client);
        close(K.client);
        K.client = -1;
        return;
    }
    handle_request(buf, (size_t)n);
}

static void accept_client(void)
{
    int fd = accept4(K.listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0)
        return;
    /* One ledged at a time: a new connection is a ledged that replaced the old one. */
    if (K.client >= 0) {
        ep_del(K.client);
        close(K.client);
    }
    K.client = fd;
    ep_add(fd, TAG_CLIENT, NULL);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"state", required_argument, NULL, 's'}, {0}};
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (o != 's') {
            fprintf(stderr, "usage: ledge-keeper --state FILE (listening socket on fd 3)\n");
            return 2;
        }
        K.state = optarg;
    }
    struct stat st;
    if (!K.state || fstat(K.listen_fd, &st) < 0 || !S_ISSOCK(st.st_mode)) {
        fprintf(stderr, "ledge-keeper: needs --state FILE and a listening socket on fd 3\n");
        return 2;
    }
    fcntl(K.listen_fd, F_SETFD, FD_CLOEXEC);
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) {
        fprintf(stderr, "ledge-keeper: PR_SET_CHILD_SUBREAPER: %s\n", strerror(errno));
        return 1;
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    K.sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    K.ep = epoll_create1(EPOLL_CLOEXEC);
    if (K.sigfd < 0 || K.ep < 0) {
        fprintf(stderr, "ledge-keeper: %s\n", strerror(errno));
        return 1;
    }
    ep_add(K.listen_fd, TAG_LISTEN, NULL);
    ep_add(K.sigfd, TAG_SIGNAL, NULL);
    load_state();
    reap(); /* anything that ended before the signalfd existed */
    for (;;) {
        struct epoll_event evs[32];
        int n = epoll_wait(K.ep, evs, 32, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return 1;
        for (int i = 0; i < n; i++) {
            uint64_t u = evs[i].data.u64;
            unsigned tag = (unsigned)(u & 7);
            void *ptr = (void *)(uintptr_t)(u & ~(uint64_t)7);
            switch (tag) {
            case TAG_LISTEN:
                accept_client();
                break;
            case TAG_CLIENT:
                if (K.client >= 0)
                    client_readable();
                break;
            case TAG_SIGNAL: {
                struct signalfd_siginfo si;
                while (read(K.sigfd, &si, sizeof(si)) == sizeof(si))
                    ;
                reap();
                break;
            }
            case TAG_OUT: {
                struct stream *s = ptr;
                if (!s->c->dead && s->fd >= 0)
                    stream_readable(s);
                break;
            }
            case TAG_PIDFD: {
                struct ctr *c = ptr;
                if (!c->dead && c->running && c->pidfd >= 0)
                    ctr_exited(c, -1, ltime_now_ms());
                break;
            }
            }
        }
        struct ctr *c, *tmp;
        llist_foreach_safe (c, tmp, &K.dead, node)
            free(c);
        llist_init(&K.dead);
    }
}
