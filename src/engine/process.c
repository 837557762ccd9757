/* process.c — the `process` engine backend: native programs supervised like containers (same
 * create/start/stop/remove/inspect/list/logs/events contract). ledge's own hub runs this way, and
 * so can modules on devices without a container engine.
 *
 * Each "container" is a record in <state>/process/<name>.json (written atomically on every state
 * change) plus a log file. Programs run in their own session and survive a restart of ledged, as
 * containers survive a restart of it: on start the backend re-adopts a recorded pid when the
 * kernel's start time of that pid still matches, and watches it through a pidfd (the exit code
 * of an adopted process is unknown: reported as -1). Our own children are reaped on SIGCHLD. */
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
#include "base/str.h"
#include "base/timeutil.h"
#include "engine/engine.h"

#define PROC_LOG_MAX (10 * 1024 * 1024)
#define PROC_MAX 64

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
    struct proc *next;
};

struct pengine {
    struct engine *e;
    char *dir;
    struct proc *procs;
    size_t n_procs;
    struct event *sigchld;
    struct event *rotate;
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
    for (struct proc *p = pe->procs; p; p = p->next)
        if (strcmp(p->id, id_or_name) == 0 || strcmp(p->name, id_or_name) == 0)
            return p;
    return NULL;
}

static void record_path(struct pengine *pe, const struct proc *p, const char *suffix, char *out,
                        size_t n)
{
    snprintf(out, n, "%s/%s%s", pe->dir, p->name, suffix);
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
    for (struct proc **pp = &pe->procs; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            pe->n_procs--;
            return;
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

/* Field 22 of /proc/<pid>/stat, parsed after the last ')' because comm may contain spaces. */
static int read_starttime(pid_t pid, unsigned long long *ret)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    _cleanup_free_ char *text = NULL;
    int r = lfs_read_file(path, 4096, &text, NULL);
    if (r < 0)
        return r;
    char *p = strrchr(text, ')');
    if (!p)
        return -EINVAL;
    p++;
    for (int field = 3; field < 22; field++) {
        p = strchr(p + 1, ' ');
        if (!p)
            return -EINVAL;
    }
    *ret = strtoull(p + 1, NULL, 10);
    return 0;
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
        record_path(pe, p, ".log", path, sizeof(path));
        unlink(path);
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
        for (struct proc *p = pe->procs; p; p = p->next) {
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
        if (pid > 0 && read_starttime(pid, &now_st) == 0 && now_st == st) {
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
    p->next = pe->procs;
    pe->procs = p;
    pe->n_procs++;
    return 0;
}

static void rotate_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pengine *pe = arg;
    /* copytruncate: writers hold O_APPEND descriptors, so truncation keeps them writing at the
     * new end; lines written between the copy and the truncate are lost (documented). */
    for (struct proc *p = pe->procs; p; p = p->next) {
        char log[4096], old[4200];
        record_path(pe, p, ".log", log, sizeof(log));
        struct stat st;
        if (stat(log, &st) < 0 || st.st_size < PROC_LOG_MAX)
            continue;
        snprintf(old, sizeof(old), "%s.1", log);
        _cleanup_close_ int in = open(log, O_RDONLY | O_CLOEXEC);
        _cleanup_close_ int out = open(old, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (in < 0 || out < 0)
            continue;
        char buf[65536];
        ssize_t n;
        while ((n = read(in, buf, sizeof(buf))) > 0)
            if (lfs_write_all(out, buf, (size_t)n) < 0)
                break;
        if (truncate(log, 0) < 0)
            continue;
    }
}

/* ------------------------------------------------------------------ ops */

static int pe_init(struct engine *e, const struct engine_config *cfg)
{
    struct pengine *pe = P(e);
    pe->e = e;
    pe->dir = lstr_printf("%s/process", cfg->state_dir ? cfg->state_dir : "/var/lib/ledge");
    if (!pe->dir)
        return -ENOMEM;
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
    struct timeval tv = {30, 0};
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
    while (pe->procs) {
        struct proc *p = pe->procs;
        pe->procs = p->next;
        proc_free(p); /* running programs keep running: they are adopted next time */
    }
    if (pe->sigchld)
        event_free(pe->sigchld);
    if (pe->rotate)
        event_free(pe->rotate);
    free(pe->dir);
}

/* Deferred completion so callbacks never run inside the caller's own call. */
struct later {
    engine_done_fn cb;
    engine_create_fn ccb;
    void *ud;
    int result;
    struct lerr err;
    char id[40];
};

static void later_cb(evutil_socket_t fd, short what, void *arg)
{
    struct later *l = arg;
    if (l->ccb)
        l->ccb(l->ud, l->result, l->result == 0 ? l->id : NULL, l->result < 0 ? &l->err : NULL);
    else
        l->cb(l->ud, l->result, l->result < 0 ? &l->err : NULL);
    free(l);
}

static int defer_done(struct engine *e, engine_done_fn cb, void *ud, int result, struct lerr *err)
{
    struct later *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    l->cb = cb;
    l->ud = ud;
    l->result = result;
    if (err)
        l->err = *err;
    struct timeval tv = {0, 0};
    return event_base_once(e->base, -1, EV_TIMEOUT, later_cb, l, &tv) == 0 ? 0 : -ENOMEM;
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
    struct later *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    l->ccb = cb;
    l->ud = ud;
    if (find(pe, spec->name)) {
        l->result = lerr_set(&l->err, -EEXIST, "create %s: a process module of that name exists",
                             spec->name);
    } else if (!spec->path || spec->path[0] != '/') {
        l->result =
            lerr_set(&l->err, -EINVAL, "create %s: program path must be absolute", spec->name);
    } else if (pe->n_procs >= PROC_MAX) {
        l->result = lerr_set(&l->err, -ENOSPC, "create %s: at most %d process modules", spec->name,
                             PROC_MAX);
    } else {
        struct proc *p = calloc(1, sizeof(*p));
        uint8_t rnd[8];
        if (!p || lcrypto_random(rnd, sizeof(rnd)) < 0) {
            free(p);
            free(l);
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
            free(l);
            return -ENOMEM;
        }
        int r = persist(p);
        if (r < 0) {
            l->result = lerr_set(&l->err, r, "create %s: cannot write its record: %s", spec->name,
                                 strerror(-r));
            proc_free(p);
        } else {
            p->next = pe->procs;
            pe->procs = p;
            pe->n_procs++;
            lstr_copy(l->id, sizeof(l->id), p->id);
        }
    }
    struct timeval tv = {0, 0};
    return event_base_once(e->base, -1, EV_TIMEOUT, later_cb, l, &tv) == 0 ? 0 : -ENOMEM;
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
    read_starttime(pid, &p->starttime);
    return 0;
}

static int pe_start_container(struct engine *e, const char *id, engine_done_fn cb, void *ud)
{
    struct pengine *pe = P(e);
    struct lerr err = {0};
    struct proc *p = find(pe, id);
    if (!p)
        return defer_done(e, cb, ud, lerr_set(&err, -ENOENT, "start %s: no such module", id), &err);
    if (p->state == CTR_RUNNING)
        return defer_done(e, cb, ud, 0, NULL);
    int r = spawn(p, &err);
    if (r < 0) {
        p->state = CTR_EXITED;
        p->exit_code = 127;
        p->finished_ms = ltime_now_ms();
        persist(p);
        return defer_done(e, cb, ud, r, &err);
    }
    p->state = CTR_RUNNING;
    p->started_ms = ltime_now_ms();
    p->exit_code = 0;
    persist(p);
    emit(pe, ENGINE_EVENT_START, p);
    return defer_done(e, cb, ud, 0, NULL);
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
        return defer_done(e, cb, ud, lerr_set(&err, -ENOENT, "stop %s: no such module", id), &err);
    if (p->state != CTR_RUNNING || p->pid <= 0)
        return defer_done(e, cb, ud, 0, NULL);
    if (p->stop_cb)
        return defer_done(e, cb, ud, lerr_set(&err, -EBUSY, "stop %s: already stopping", id), &err);
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
        return defer_done(e, cb, ud, 0, NULL);
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
    record_path(pe, p, ".log", path, sizeof(path));
    unlink(path);
    unlink_proc(pe, p);
    emit(pe, ENGINE_EVENT_DESTROY, p);
    proc_free(p);
    return defer_done(e, cb, ud, 0, NULL);
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

struct later_inspect {
    struct engine *e;
    char id[128];
    engine_inspect_fn cb;
    engine_list_fn lcb;
    void *ud;
};

static void inspect_later(evutil_socket_t fd, short what, void *arg)
{
    struct later_inspect *l = arg;
    struct pengine *pe = P(l->e);
    if (l->lcb) {
        size_t n = 0;
        struct engine_container *v = calloc(pe->n_procs ? pe->n_procs : 1, sizeof(*v));
        for (struct proc *p = pe->procs; v && p; p = p->next)
            fill(p, &v[n++]);
        if (!v) {
            struct lerr err;
            lerr_set(&err, -ENOMEM, "list: out of memory");
            l->lcb(l->ud, -ENOMEM, NULL, 0, &err);
        } else {
            l->lcb(l->ud, 0, v, n, NULL);
        }
        engine_containers_free(v, n);
    } else {
        struct proc *p = find(pe, l->id);
        if (!p) {
            struct lerr err;
            lerr_set(&err, -ENOENT, "inspect %s: no such module", l->id);
            l->cb(l->ud, -ENOENT, NULL, &err);
        } else {
            struct engine_container c;
            fill(p, &c);
            l->cb(l->ud, 0, &c, NULL);
            engine_container_clear(&c);
        }
    }
    free(l);
}

static int pe_inspect(struct engine *e, const char *id, engine_inspect_fn cb, void *ud)
{
    struct later_inspect *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    l->e = e;
    lstr_copy(l->id, sizeof(l->id), id);
    l->cb = cb;
    l->ud = ud;
    struct timeval tv = {0, 0};
    return event_base_once(e->base, -1, EV_TIMEOUT, inspect_later, l, &tv) == 0 ? 0 : -ENOMEM;
}

static int pe_list(struct engine *e, engine_list_fn cb, void *ud)
{
    struct later_inspect *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    l->e = e;
    l->lcb = cb;
    l->ud = ud;
    struct timeval tv = {0, 0};
    return event_base_once(e->base, -1, EV_TIMEOUT, inspect_later, l, &tv) == 0 ? 0 : -ENOMEM;
}

/* ------------------------------------------------------------------ logs */

struct engine_logs {
    struct engine *e;
    int fd;  /* the log file */
    int ino; /* inotify fd when following */
    struct event *ev;
    struct event *first; /* the first pass runs from the loop, not inside pe_logs() */
    bool follow;
    engine_log_fn on_data;
    engine_done_fn cb;
    void *ud;
    off_t pos;
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
    free(l);
}

static int plogs_pump(struct engine_logs *l)
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
            return 0;
        l->pos += n;
        if (l->on_data(l->ud, 1, buf, (size_t)n) < 0)
            return -ECANCELED;
    }
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
    int r = plogs_pump(l);
    if (r < 0)
        plogs_finish(l, r);
}

static void plogs_first(evutil_socket_t fd, short what, void *arg)
{
    struct engine_logs *l = arg;
    int r = plogs_pump(l);
    if (r < 0 || !l->follow)
        plogs_finish(l, r);
}

/* Offset where the last `tail` lines start (a final newline does not start a line). */
static off_t tail_offset(int fd, long tail)
{
    struct stat st;
    if (tail < 0 || fstat(fd, &st) < 0)
        return 0;
    off_t end = st.st_size;
    if (tail == 0)
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
            if (++lines == tail)
                return at + 1;
        }
    }
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
    char log[4096];
    record_path(pe, p, ".log", log, sizeof(log));
    l->fd = open(log, O_RDONLY | O_CLOEXEC | O_CREAT, 0600);
    l->first = evtimer_new(e->base, plogs_first, l);
    if (l->fd < 0 || !l->first) {
        plogs_free(l);
        return NULL;
    }
    l->pos = tail_offset(l->fd, o->tail);
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
