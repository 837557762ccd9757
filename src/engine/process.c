/* process.c — the `process` engine backend: native programs supervised like containers (same
 * create/start/stop/remove/inspect/list/logs/events contract). ledge's own hub runs this way, and
 * so can modules on devices without a container engine.
 *
 * Each "container" is a record in <state>/process/<name>.json (written atomically on every state
 * change) plus a log file. Programs run in their own session and survive a restart of ledged, as
 * containers survive a restart of it: on start the backend re-adopts a recorded pid when the
 * kernel's start time of that pid still matches, and watches it through a pidfd (the exit code
 * of an adopted process is unknown: reported as -1). Our own children are reaped on SIGCHLD. */
#include <ctype.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/crypto.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/list.h"
#include "base/proc.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "engine/engine.h"
#include "later.h"

#define PROC_MAX 64
/* How often the logs' sizes are looked at by default: a log can pass its bound by what its
 * program writes in this time. */
#define PROC_ROTATE_CHECK_MS 5000
/* Rotated logs beyond this many are never looked for. */
#define PROC_LOG_FILES_MAX 100

struct proc {
    struct pengine *pe;
    char id[40];
    char *name;
    json_t *labels;
    char *path;
    json_t *args;
    json_t *env;
    enum ctr_state state;
    int exit_code;
    int64_t started_ms, finished_ms;
    pid_t pid;
    unsigned long long starttime; /* /proc/<pid>/stat field 22: identifies this pid's process */
    bool child;                   /* ours to waitpid(); otherwise adopted and watched by pidfd */
    int pidfd;
    struct event *pidfd_ev;
    /* a pending stop */
    struct event *kill_timer;
    engine_done_fn stop_cb;
    void *stop_ud;
    bool removing;
    struct llist node; /* in pengine.procs */
};

struct pengine {
    struct engine *e;
    char *dir;
    struct llist procs; /* struct proc */
    size_t n_procs;
    struct event *sigchld;
    struct event *rotate;
    uint64_t log_max_size; /* rotate at this size */
    int log_max_files;     /* files kept: the log and log_max_files - 1 rotated ones */
    long log_check_ms;
    bool running;
};

static struct pengine *P(struct engine *e)
{
    return e->priv;
}

static inline void closedirp(DIR **d)
{
    if (*d)
        closedir(*d);
}

static struct proc *find(struct pengine *pe, const char *id_or_name)
{
    struct proc *p;
    llist_foreach (p, &pe->procs, node)
        if (strcmp(p->id, id_or_name) == 0 || strcmp(p->name, id_or_name) == 0)
            return p;
    return NULL;
}

static void record_path(struct pengine *pe, const struct proc *p, const char *suffix, char *out,
                        size_t n)
{
    snprintf(out, n, "%s/%s%s", pe->dir, p->name, suffix);
}

/* The log's path: generation 0 is the live file, N its Nth rotated copy (".log.N"). */
static void log_path(struct pengine *pe, const struct proc *p, int gen, char *out, size_t n)
{
    if (gen == 0)
        snprintf(out, n, "%s/%s.log", pe->dir, p->name);
    else
        snprintf(out, n, "%s/%s.log.%d", pe->dir, p->name, gen);
}

static void remove_logs(struct pengine *pe, const struct proc *p)
{
    for (int g = 0; g < PROC_LOG_FILES_MAX; g++) {
        char path[4096];
        log_path(pe, p, g, path, sizeof(path));
        if (unlink(path) < 0 && errno == ENOENT && g > 0)
            break;
    }
}

static int persist(struct proc *p)
{
    json_t *j =
        json_pack("{s:s, s:s, s:O, s:s, s:O?, s:O?, s:s, s:i, s:I, s:I, s:i, s:I}", "id", p->id,
                  "name", p->name, "labels", p->labels, "path", p->path, "args", p->args, "env",
                  p->env, "state", ctr_state_name(p->state), "exitCode", p->exit_code, "startedMs",
                  (json_int_t)p->started_ms, "finishedMs", (json_int_t)p->finished_ms, "pid",
                  (int)p->pid, "starttime", (json_int_t)p->starttime);
    if (!j)
        return -ENOMEM;
    _cleanup_free_ char *text = ljson_dump(j);
    json_decref(j);
    if (!text)
        return -ENOMEM;
    char path[4096];
    record_path(p->pe, p, ".json", path, sizeof(path));
    return lfs_write_atomic(path, text, strlen(text), 0600);
}

static void proc_free(struct proc *p)
{
    if (p->pidfd_ev)
        event_free(p->pidfd_ev);
    if (p->pidfd >= 0)
        close(p->pidfd);
    if (p->kill_timer)
        event_free(p->kill_timer);
    free(p->name);
    free(p->path);
    json_decref(p->labels);
    json_decref(p->args);
    json_decref(p->env);
    free(p);
}

static void unlink_proc(struct pengine *pe, struct proc *p)
{
    if (llist_linked(&p->node)) {
        llist_remove(&p->node);
        pe->n_procs--;
    }
}

static void emit(struct pengine *pe, enum engine_event_kind kind, struct proc *p)
{
    if (!pe->running || !pe->e->on_event)
        return;
    struct engine_event ev = {.kind = kind,
                              .id = p->id,
                              .name = p->name,
                              .exit_code = p->exit_code,
                              .time_ms = ltime_now_ms(),
                              .pid = p->pid};
    pe->e->on_event(pe->e->event_ud, &ev);
}

/* ------------------------------------------------------------------ exits */

static void on_exit_observed(struct proc *p, int exit_code)
{
    struct pengine *pe = p->pe;
    p->state = CTR_EXITED;
    p->exit_code = exit_code;
    p->finished_ms = ltime_now_ms();
    p->pid = 0;
    p->child = false;
    if (p->pidfd_ev) {
        event_free(p->pidfd_ev);
        p->pidfd_ev = NULL;
    }
    if (p->pidfd >= 0) {
        close(p->pidfd);
        p->pidfd = -1;
    }
    if (p->kill_timer)
        evtimer_del(p->kill_timer);
    /* The stop/remove callback runs last: it may remove this very record. */
    engine_done_fn cb = p->stop_cb;
    void *ud = p->stop_ud;
    p->stop_cb = NULL;
    persist(p);
    emit(pe, ENGINE_EVENT_DIE, p);
    if (p->removing) {
        char path[4096];
        record_path(pe, p, ".json", path, sizeof(path));
        unlink(path);
        remove_logs(pe, p);
        unlink_proc(pe, p);
        emit(pe, ENGINE_EVENT_DESTROY, p);
        proc_free(p);
    }
    if (cb)
        cb(ud, 0, NULL);
}

static void sigchld_cb(evutil_socket_t sig, short what, void *arg)
{
    struct pengine *pe = arg;
    bool again = true;
    /* Only our own children: other parts of the program may have children of their own. */
    while (again) {
        again = false;
        struct proc *p;
        llist_foreach (p, &pe->procs, node) {
            if (!p->child || p->pid <= 0)
                continue;
            int status;
            pid_t r = waitpid(p->pid, &status, WNOHANG);
            if (r == p->pid) {
                int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                on_exit_observed(p, code);
                again = true; /* the list may have changed */
                break;
            }
        }
    }
}

static void pidfd_cb(evutil_socket_t fd, short what, void *arg)
{
    on_exit_observed(arg, -1);
}

static int watch_adopted(struct proc *p)
{
    int fd = (int)syscall(SYS_pidfd_open, p->pid, 0);
    if (fd < 0)
        return neg_errno();
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    p->pidfd = fd;
    p->pidfd_ev = event_new(p->pe->e->base, fd, EV_READ, pidfd_cb, p);
    if (!p->pidfd_ev)
        return -ENOMEM;
    event_add(p->pidfd_ev, NULL);
    return 0;
}

/* ------------------------------------------------------------------ loading records */

static int load_record(struct pengine *pe, const char *file)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", pe->dir, file);
    _cleanup_free_ char *text = NULL;
    int r = lfs_read_file(path, 1 << 20, &text, NULL);
    if (r < 0)
        return r;
    _cleanup_json_ json_t *j = NULL;
    if (ljson_parse(text, strlen(text), &j, NULL) < 0 || !ljson_str(j, "id") ||
        !ljson_str(j, "name") || !ljson_str(j, "path"))
        return -EINVAL;
    struct proc *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->pe = pe;
    p->pidfd = -1;
    lstr_copy(p->id, sizeof(p->id), ljson_str(j, "id"));
    p->name = strdup(ljson_str(j, "name"));
    p->path = strdup(ljson_str(j, "path"));
    json_t *labels = json_object_get(j, "labels");
    p->labels = json_is_object(labels) ? json_incref(labels) : json_object();
    json_t *args = json_object_get(j, "args");
    p->args = json_is_array(args) ? json_incref(args) : NULL;
    json_t *env = json_object_get(j, "env");
    p->env = json_is_object(env) ? json_incref(env) : NULL;
    p->exit_code = (int)ljson_int(j, "exitCode", -1);
    p->started_ms = ljson_int(j, "startedMs", 0);
    p->finished_ms = ljson_int(j, "finishedMs", 0);
    const char *state = ljson_str(j, "state");
    p->state = lstr_eq(state, "running")   ? CTR_RUNNING
               : lstr_eq(state, "created") ? CTR_CREATED
                                           : CTR_EXITED;
    p->kill_timer = NULL;
    if (!p->name || !p->path) {
        proc_free(p);
        return -ENOMEM;
    }
    if (p->state == CTR_RUNNING) {
        pid_t pid = (pid_t)ljson_int(j, "pid", 0);
        unsigned long long st = (unsigned long long)ljson_int(j, "starttime", 0), now_st;
        if (pid > 0 && lproc_starttime(pid, &now_st) == 0 && now_st == st) {
            p->pid = pid;
            p->starttime = st;
            if (watch_adopted(p) < 0)
                p->state = CTR_EXITED;
        } else {
            /* It ended while ledged was away (or the machine rebooted). */
            p->state = CTR_EXITED;
            p->exit_code = -1;
            p->finished_ms = ltime_now_ms();
        }
        if (p->state == CTR_EXITED)
            persist(p);
    }
    llist_add_tail(&pe->procs, &p->node);
    pe->n_procs++;
    return 0;
}

/* Like Docker's json-file max-size/max-file: at log_max_size the log becomes .log.1 (older
 * copies move up, the oldest beyond log_max_files goes). copytruncate: programs hold O_APPEND
 * descriptors, so the truncated file goes on at its new end; lines written between the copy
 * and the truncation are lost (docs/agent.md "The process engine"). */
static void rotate_one(struct pengine *pe, struct proc *p)
{
    char log[4096];
    log_path(pe, p, 0, log, sizeof(log));
    struct stat st;
    if (stat(log, &st) < 0 || (uint64_t)st.st_size < pe->log_max_size)
        return;
    if (pe->log_max_files > 1) {
        char from[4096], to[4096];
        log_path(pe, p, pe->log_max_files - 1, to, sizeof(to));
        unlink(to);
        for (int g = pe->log_max_files - 2; g >= 1; g--) {
            log_path(pe, p, g, from, sizeof(from));
            log_path(pe, p, g + 1, to, sizeof(to));
            rename(from, to);
        }
        log_path(pe, p, 1, to, sizeof(to));
        char tmp[4200];
        snprintf(tmp, sizeof(tmp), "%s.tmp", to);
        _cleanup_close_ int in = open(log, O_RDONLY | O_CLOEXEC);
        _cleanup_close_ int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (in < 0 || out < 0)
            return;
        char buf[65536];
        ssize_t n;
        while ((n = read(in, buf, sizeof(buf))) > 0)
            if (lfs_write_all(out, buf, (size_t)n) < 0)
                return;
        struct timespec times[2] = {st.st_atim, st.st_mtim};
        futimens(out, times); /* the copy keeps the time of its last line (logs --since) */
        if (rename(tmp, to) < 0)
            return;
    }
    if (truncate(log, 0) < 0)
        return;
}

static void rotate_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pengine *pe = arg;
    struct proc *p;
    llist_foreach (p, &pe->procs, node)
        rotate_one(pe, p);
}

/* ------------------------------------------------------------------ ops */

static int pe_init(struct engine *e, const struct engine_config *cfg)
{
    struct pengine *pe = P(e);
    pe->e = e;
    llist_init(&pe->procs);
    pe->dir = lstr_printf("%s/process", cfg->state_dir ? cfg->state_dir : "/var/lib/ledge");
    if (!pe->dir)
        return -ENOMEM;
    pe->log_max_size = cfg->log_max_size ? cfg->log_max_size : ENGINE_LOG_MAX_SIZE_DEFAULT;
    pe->log_max_files = cfg->log_max_files > 0 ? MIN(cfg->log_max_files, PROC_LOG_FILES_MAX)
                                               : ENGINE_LOG_MAX_FILES_DEFAULT;
    pe->log_check_ms = cfg->log_check_ms > 0 ? cfg->log_check_ms : PROC_ROTATE_CHECK_MS;
    int r = lfs_mkdir_p(pe->dir, 0700);
    if (r < 0)
        return r;
    _cleanup_(closedirp) DIR *d = opendir(pe->dir);
    if (!d)
        return neg_errno();
    struct dirent *de;
    while ((de = readdir(d)))
        if (lstr_endswith(de->d_name, ".json") && de->d_name[0] != '.')
            load_record(pe, de->d_name); /* unreadable records are skipped, not fatal */
    pe->sigchld = evsignal_new(e->base, SIGCHLD, sigchld_cb, pe);
    pe->rotate = event_new(e->base, -1, EV_PERSIST, rotate_cb, pe);
    if (!pe->sigchld || !pe->rotate)
        return -ENOMEM;
    return 0;
}

static int pe_start(struct engine *e)
{
    struct pengine *pe = P(e);
    pe->running = true;
    struct timeval tv = {pe->log_check_ms / 1000, (pe->log_check_ms % 1000) * 1000};
    event_add(pe->sigchld, NULL);
    event_add(pe->rotate, &tv);
    struct engine_event ev = {.kind = ENGINE_EVENT_CONNECTED, .time_ms = ltime_now_ms()};
    if (e->on_event)
        e->on_event(e->event_ud, &ev);
    return 0;
}

static void pe_stop(struct engine *e)
{
    struct pengine *pe = P(e);
    pe->running = false;
    if (pe->sigchld)
        event_del(pe->sigchld);
    if (pe->rotate)
        event_del(pe->rotate);
}

static void pe_fini(struct engine *e)
{
    struct pengine *pe = P(e);
    struct proc *p, *tmp;
    llist_foreach_safe (p, tmp, &pe->procs, node) {
        llist_remove(&p->node);
        proc_free(p); /* running programs keep running: they are adopted next time */
    }
    if (pe->sigchld)
        event_free(pe->sigchld);
    if (pe->rotate)
        event_free(pe->rotate);
    free(pe->dir);
}

static int pe_version(struct engine *e, engine_version_fn cb, void *ud)
{
    struct engine_version v = {0};
    lstr_copy(v.product, sizeof(v.product), "ledge process supervisor");
    lstr_copy(v.version, sizeof(v.version), LEDGE_VERSION);
    lstr_copy(v.os, sizeof(v.os), "linux");
    v.log_rotation_default = true;
    cb(ud, 0, &v, NULL);
    return 0;
}

static int pe_create(struct engine *e, const struct engine_create_spec *spec, engine_create_fn cb,
                     void *ud)
{
    struct pengine *pe = P(e);
    struct lerr err = {0};
    int result = 0;
    char id[sizeof(((struct proc *)0)->id)] = "";
    if (find(pe, spec->name)) {
        result =
            lerr_set(&err, -EEXIST, "create %s: a process module of that name exists", spec->name);
    } else if (!spec->path || spec->path[0] != '/') {
        result = lerr_set(&err, -EINVAL, "create %s: program path must be absolute", spec->name);
    } else if (pe->n_procs >= PROC_MAX) {
        result =
            lerr_set(&err, -ENOSPC, "create %s: at most %d process modules", spec->name, PROC_MAX);
    } else {
        struct proc *p = calloc(1, sizeof(*p));
        uint8_t rnd[8];
        if (!p || lcrypto_random(rnd, sizeof(rnd)) < 0) {
            free(p);
            return -ENOMEM;
        }
        p->pe = pe;
        p->pidfd = -1;
        snprintf(p->id, sizeof(p->id), "proc-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1],
                 rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
        p->name = strdup(spec->name);
        p->path = strdup(spec->path);
        p->labels = spec->labels ? json_deep_copy(spec->labels) : json_object();
        p->args = spec->args ? json_deep_copy(spec->args) : NULL;
        p->env = spec->env ? json_deep_copy(spec->env) : NULL;
        p->state = CTR_CREATED;
        p->exit_code = 0;
        if (!p->name || !p->path || !p->labels) {
            proc_free(p);
            return -ENOMEM;
        }
        int r = persist(p);
        if (r < 0) {
            result = lerr_set(&err, r, "create %s: cannot write its record: %s", spec->name,
                              strerror(-r));
            proc_free(p);
        } else {
            llist_add_tail(&pe->procs, &p->node);
            pe->n_procs++;
            lstr_copy(id, sizeof(id), p->id);
        }
    }
    return engine_later_created(e, cb, ud, result, id, &err);
}

/* Build argv/envp, fork, exec. A CLOEXEC pipe reports an exec failure back to the parent. */
static int spawn(struct proc *p, struct lerr *err)
{
    char log[4096];
    record_path(p->pe, p, ".log", log, sizeof(log));
    _cleanup_lstrv_ struct lstrv argv = LSTRV_INIT, envp = LSTRV_INIT;
    lstrv_push(&argv, p->path);
    size_t i;
    json_t *v;
    json_array_foreach (p->args, i, v) {
        if (json_is_string(v))
            lstrv_push(&argv, json_string_value(v));
    }
    lstrv_push(&envp, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    const char *k;
    json_object_foreach (p->env, k, v) {
        if (json_is_string(v))
            lstrv_printf(&envp, "%s=%s", k, json_string_value(v));
    }
    int logfd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (logfd < 0)
        return lerr_set(err, neg_errno(), "start %s: cannot open %s: %m", p->name, log);
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        close(logfd);
        return lerr_set(err, neg_errno(), "start %s: pipe: %m", p->name);
    }
    pid_t pid = fork();
    if (pid < 0) {
        int r = neg_errno();
        close(logfd);
        close(pipefd[0]);
        close(pipefd[1]);
        return lerr_set(err, r, "start %s: fork: %s", p->name, strerror(-r));
    }
    if (pid == 0) {
        /* Child: only async-signal-safe calls from here on. */
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        for (int s = 1; s < 32; s++)
            if (s != SIGKILL && s != SIGSTOP)
                signal(s, SIG_DFL);
        setsid();
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        /* Nothing of ledged's reaches the module but 0-2: whatever fd someone above ledged left
         * without O_CLOEXEC (a lock file's, a socket's) would otherwise live as long as the
         * module does. Close-on-exec rather than close: the exec-error pipe is needed until the
         * exec. */
        if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
            for (int fd = 3; fd < 65536; fd++)
                if (fd != pipefd[1])
                    close(fd);
        if (chdir("/") < 0) {
            /* keep going: "/" always exists */
        }
        execve(p->path, argv.v, envp.v);
        int e = errno;
        (void)!write(pipefd[1], &e, sizeof(e));
        _exit(127);
    }
    close(logfd);
    close(pipefd[1]);
    int child_errno = 0;
    ssize_t n;
    do
        n = read(pipefd[0], &child_errno, sizeof(child_errno));
    while (n < 0 && errno == EINTR);
    close(pipefd[0]);
    if (n == sizeof(child_errno)) {
        waitpid(pid, NULL, 0);
        return lerr_set(err, -child_errno, "start %s: cannot execute %s: %s", p->name, p->path,
                        strerror(child_errno));
    }
    p->pid = pid;
    p->child = true;
    lproc_starttime(pid, &p->starttime);
    return 0;
}

static int pe_start_container(struct engine *e, const char *id, engine_done_fn cb, void *ud)
{
    struct pengine *pe = P(e);
    struct lerr err = {0};
    struct proc *p = find(pe, id);
    if (!p)
        return engine_later_done(e, cb, ud, lerr_set(&err, -ENOENT, "start %s: no such module", id),
                                 &err);
    if (p->state == CTR_RUNNING)
        return engine_later_done(e, cb, ud, 0, NULL);
    int r = spawn(p, &err);
    if (r < 0) {
        p->state = CTR_EXITED;
        p->exit_code = 127;
        p->finished_ms = ltime_now_ms();
        persist(p);
        return engine_later_done(e, cb, ud, r, &err);
    }
    p->state = CTR_RUNNING;
    p->started_ms = ltime_now_ms();
    p->exit_code = 0;
    persist(p);
    emit(pe, ENGINE_EVENT_START, p);
    return engine_later_done(e, cb, ud, 0, NULL);
}

static void kill_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct proc *p = arg;
    if (p->state == CTR_RUNNING && p->pid > 0 && kill(-p->pid, SIGKILL) < 0)
        kill(p->pid, SIGKILL);
}

static int pe_stop_container(struct engine *e, const char *id, int timeout_s, engine_done_fn cb,
                             void *ud)
{
    struct pengine *pe = P(e);
    struct lerr err = {0};
    struct proc *p = find(pe, id);
    if (!p)
        return engine_later_done(e, cb, ud, lerr_set(&err, -ENOENT, "stop %s: no such module", id),
                                 &err);
    if (p->state != CTR_RUNNING || p->pid <= 0)
        return engine_later_done(e, cb, ud, 0, NULL);
    if (p->stop_cb)
        return engine_later_done(e, cb, ud, lerr_set(&err, -EBUSY, "stop %s: already stopping", id),
                                 &err);
    p->stop_cb = cb;
    p->stop_ud = ud;
    if (!p->kill_timer)
        p->kill_timer = evtimer_new(e->base, kill_timer_cb, p);
    struct timeval tv = {timeout_s, 0};
    evtimer_add(p->kill_timer, &tv);
    /* The program leads its own session: signal the whole group. */
    if (kill(-p->pid, SIGTERM) < 0)
        kill(p->pid, SIGTERM);
    return 0;
}

static int pe_remove(struct engine *e, const char *id, engine_done_fn cb, void *ud)
{
    struct pengine *pe = P(e);
    struct proc *p = find(pe, id);
    if (!p)
        return engine_later_done(e, cb, ud, 0, NULL);
    char path[4096];
    if (p->state == CTR_RUNNING && p->pid > 0) {
        p->removing = true;
        p->stop_cb = cb;
        p->stop_ud = ud;
        if (kill(-p->pid, SIGKILL) < 0)
            kill(p->pid, SIGKILL);
        return 0;
    }
    record_path(pe, p, ".json", path, sizeof(path));
    unlink(path);
    remove_logs(pe, p);
    unlink_proc(pe, p);
    emit(pe, ENGINE_EVENT_DESTROY, p);
    proc_free(p);
    return engine_later_done(e, cb, ud, 0, NULL);
}

static void fill(const struct proc *p, struct engine_container *c)
{
    memset(c, 0, sizeof(*c));
    c->id = strdup(p->id);
    c->name = strdup(p->name);
    c->image = strdup(p->path);
    c->labels = json_incref(p->labels);
    c->state = p->state;
    c->exit_code = p->exit_code;
    c->started_ms = p->started_ms;
    c->finished_ms = p->finished_ms;
    c->pid = p->pid;
}

static size_t records_count(struct engine *e)
{
    return P(e)->n_procs;
}

static size_t records_fill_all(struct engine *e, struct engine_container *v, size_t max)
{
    size_t n = 0;
    struct proc *p;
    llist_foreach (p, &P(e)->procs, node) {
        if (n == max)
            break;
        fill(p, &v[n++]);
    }
    return n;
}

static bool records_fill_one(struct engine *e, const char *id, struct engine_container *ret)
{
    struct proc *p = find(P(e), id);
    if (p)
        fill(p, ret);
    return p != NULL;
}

static const struct engine_records records = {
    .count = records_count,
    .fill_all = records_fill_all,
    .fill_one = records_fill_one,
    .noun = "module",
};

static int pe_inspect(struct engine *e, const char *id, engine_inspect_fn cb, void *ud)
{
    return engine_later_inspect(e, &records, id, cb, ud);
}

static int pe_list(struct engine *e, engine_list_fn cb, void *ud)
{
    return engine_later_list(e, &records, cb, ud);
}

/* ------------------------------------------------------------------ logs */

/* A logs request reads the rotated copies (oldest first) and then the live file; with follow it
 * then watches the live file (inotify). tail counts lines across the files; since drops the
 * lines older than it: a line that starts with an RFC 3339 time (the hub's, most programs')
 * carries its own, other lines take the one before them, and a file whose last write is older
 * than since is skipped whole. Programs' output carries no other time: timestamps are not
 * added (docs/agent.md "The process engine"). */
struct engine_logs {
    struct engine *e;
    int fd;  /* the live log file */
    int ino; /* inotify fd when following */
    struct event *ev;
    struct event *first; /* the first pass runs from the loop, not inside pe_logs() */
    bool follow;
    engine_log_fn on_data;
    engine_done_fn cb;
    void *ud;
    off_t pos;
    /* the first pass */
    int old_fds[PROC_LOG_FILES_MAX]; /* rotated copies to read first, oldest first */
    off_t old_start[PROC_LOG_FILES_MAX];
    int n_old;
    int64_t since_ms;
    int64_t line_ms;  /* the time of the last line with one (since filtering) */
    struct lbuf line; /* a partial line while filtering */
};

static void plogs_free(struct engine_logs *l)
{
    if (l->ev)
        event_free(l->ev);
    if (l->first)
        event_free(l->first);
    if (l->ino >= 0)
        close(l->ino);
    if (l->fd >= 0)
        close(l->fd);
    for (int i = 0; i < l->n_old; i++)
        if (l->old_fds[i] >= 0)
            close(l->old_fds[i]);
    lbuf_free(&l->line);
    free(l);
}

/* The time a log line starts with ("2024-05-01T10:00:00.123Z ..."), or -1. */
static int64_t line_time(const char *s, size_t n)
{
    char ts[LTIME_RFC3339_MAX];
    size_t k = 0;
    while (k < n && k + 1 < sizeof(ts) && s[k] != ' ' && s[k] != '\t' && s[k] != '\n') {
        ts[k] = s[k];
        k++;
    }
    ts[k] = 0;
    int64_t ms;
    if (k < 20 || !isdigit((unsigned char)ts[0]) || ltime_parse_rfc3339(ts, &ms) < 0)
        return -1;
    return ms;
}

/* Pass data on, dropping whole lines older than since (while the first pass filters). */
static int plogs_emit(struct engine_logs *l, const char *data, size_t n, bool filter)
{
    if (!filter || l->since_ms <= 0)
        return l->on_data(l->ud, 1, data, n);
    if (lbuf_append(&l->line, data, n) < 0)
        return -ENOMEM;
    size_t done = 0;
    for (;;) {
        const char *nl = memchr(l->line.data + done, '\n', l->line.len - done);
        if (!nl)
            break;
        size_t len = (size_t)(nl - (l->line.data + done)) + 1;
        int64_t t = line_time(l->line.data + done, len);
        if (t >= 0)
            l->line_ms = t;
        if (l->line_ms >= l->since_ms && l->on_data(l->ud, 1, l->line.data + done, len) < 0)
            return -ECANCELED;
        done += len;
    }
    lbuf_consume(&l->line, done);
    return 0;
}

/* The rest of a partial last line once a file is done. */
static int plogs_flush_line(struct engine_logs *l)
{
    if (!l->line.len)
        return 0;
    int r = l->line_ms >= l->since_ms ? l->on_data(l->ud, 1, l->line.data, l->line.len) : 0;
    lbuf_reset(&l->line);
    return r < 0 ? -ECANCELED : 0;
}

static int plogs_pump(struct engine_logs *l, bool filter)
{
    char buf[16384];
    for (;;) {
        struct stat st;
        if (fstat(l->fd, &st) == 0 && st.st_size < l->pos)
            l->pos = 0; /* truncated by rotation */
        ssize_t n = pread(l->fd, buf, sizeof(buf), l->pos);
        if (n < 0)
            return neg_errno();
        if (n == 0)
            return filter ? plogs_flush_line(l) : 0;
        l->pos += n;
        int r = plogs_emit(l, buf, (size_t)n, filter);
        if (r < 0)
            return r == -ECANCELED ? r : -ECANCELED;
    }
}

static int plogs_old(struct engine_logs *l)
{
    char buf[16384];
    for (int i = 0; i < l->n_old; i++) {
        for (off_t off = l->old_start[i];;) {
            ssize_t n = pread(l->old_fds[i], buf, sizeof(buf), off);
            if (n < 0)
                return neg_errno();
            if (n == 0)
                break;
            off += n;
            if (plogs_emit(l, buf, (size_t)n, true) < 0)
                return -ECANCELED;
        }
        if (plogs_flush_line(l) < 0)
            return -ECANCELED;
        close(l->old_fds[i]);
        l->old_fds[i] = -1;
    }
    return 0;
}

static void plogs_finish(struct engine_logs *l, int r)
{
    engine_done_fn cb = l->cb;
    void *ud = l->ud;
    plogs_free(l);
    cb(ud, r == -ECANCELED ? 0 : r, NULL);
}

static void plogs_inotify_cb(evutil_socket_t fd, short what, void *arg)
{
    struct engine_logs *l = arg;
    char evbuf[4096];
    while (read(l->ino, evbuf, sizeof(evbuf)) > 0)
        ;
    int r = plogs_pump(l, false);
    if (r < 0)
        plogs_finish(l, r);
}

static void plogs_first(evutil_socket_t fd, short what, void *arg)
{
    struct engine_logs *l = arg;
    int r = plogs_old(l);
    if (r == 0)
        r = plogs_pump(l, true);
    if (r < 0 || !l->follow)
        plogs_finish(l, r);
}

/* Offset in fd where its last `want` lines start, counting the lines found into *found (a final
 * newline does not start a line); 0 and fewer found when the file has fewer. */
static off_t tail_offset(int fd, long want, long *found)
{
    struct stat st;
    *found = 0;
    if (fstat(fd, &st) < 0)
        return 0;
    off_t end = st.st_size;
    if (want == 0)
        return end;
    off_t pos = end;
    long lines = 0;
    char buf[4096];
    while (pos > 0) {
        size_t chunk = (size_t)MIN((off_t)sizeof(buf), pos);
        pos -= (off_t)chunk;
        if (pread(fd, buf, chunk, pos) != (ssize_t)chunk)
            return 0;
        for (size_t i = chunk; i-- > 0;) {
            off_t at = pos + (off_t)i;
            if (buf[i] != '\n' || at == end - 1)
                continue;
            if (++lines == want) {
                *found = lines;
                return at + 1;
            }
        }
    }
    *found = end > 0 ? lines + 1 : 0;
    return 0;
}

static struct engine_logs *pe_logs(struct engine *e, const char *id,
                                   const struct engine_logs_options *o, engine_log_fn on_data,
                                   engine_done_fn cb, void *ud)
{
    struct pengine *pe = P(e);
    struct proc *p = find(pe, id);
    if (!p)
        return NULL;
    struct engine_logs *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->e = e;
    l->ino = -1;
    l->on_data = on_data;
    l->cb = cb;
    l->ud = ud;
    l->follow = o->follow;
    l->since_ms = o->since_ms;
    char log[4096];
    log_path(pe, p, 0, log, sizeof(log));
    l->fd = open(log, O_RDONLY | O_CLOEXEC | O_CREAT, 0600);
    l->first = evtimer_new(e->base, plogs_first, l);
    if (l->fd < 0 || !l->first) {
        plogs_free(l);
        return NULL;
    }
    /* The live file, then as many rotated copies as tail (and since) reach into, newest first;
     * kept oldest first for reading. */
    long found = 0;
    long want = o->tail;
    l->pos = want >= 0 ? tail_offset(l->fd, want, &found) : 0;
    if (want >= 0)
        want -= found;
    int fds[PROC_LOG_FILES_MAX];
    off_t starts[PROC_LOG_FILES_MAX];
    int n = 0;
    bool more = o->tail < 0 || want > 0;
    for (int g = 1; more && g < pe->log_max_files && g < PROC_LOG_FILES_MAX; g++) {
        char path[4096];
        log_path(pe, p, g, path, sizeof(path));
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
            break;
        struct stat st;
        if (o->since_ms > 0 && fstat(fd, &st) == 0 &&
            (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000 < o->since_ms) {
            close(fd); /* its last line is older than since, and so are those before it */
            break;
        }
        off_t start = 0;
        if (o->tail >= 0) {
            start = tail_offset(fd, want, &found);
            want -= found;
        }
        fds[n] = fd;
        starts[n] = start;
        n++;
        more = o->tail < 0 || want > 0;
    }
    for (int i = 0; i < n; i++) {
        l->old_fds[i] = fds[n - 1 - i];
        l->old_start[i] = starts[n - 1 - i];
    }
    l->n_old = n;
    if (o->follow) {
        l->ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (l->ino < 0 || inotify_add_watch(l->ino, log, IN_MODIFY) < 0) {
            plogs_free(l);
            return NULL;
        }
        l->ev = event_new(e->base, l->ino, EV_READ | EV_PERSIST, plogs_inotify_cb, l);
        event_add(l->ev, NULL);
    }
    struct timeval tv = {0, 0};
    evtimer_add(l->first, &tv);
    return l;
}

static void pe_logs_cancel(struct engine_logs *l)
{
    if (l)
        plogs_free(l);
}

const struct engine_ops engine_process_ops = {
    .name = "process",
    .runs = ENGINE_RUNS_PROGRAMS,
    .priv_size = sizeof(struct pengine),
    .init = pe_init,
    .start = pe_start,
    .stop = pe_stop,
    .fini = pe_fini,
    .version = pe_version,
    .create = pe_create,
    .start_container = pe_start_container,
    .stop_container = pe_stop_container,
    .remove = pe_remove,
    .inspect = pe_inspect,
    .list = pe_list,
    .logs = pe_logs,
    .logs_cancel = pe_logs_cancel,
};
