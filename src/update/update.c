/* update.c — `ledge update` (update.h): keep both packages, journal each step, install with
 * dpkg, restart ledged (systemctl, or by hand as it was started) and the hub, compare the new
 * runtime with the baseline, roll back when it falls short, and resume after a crash. */
#include "update/update.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/deb.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/macro.h"
#include "base/proc.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "net/http_client.h"
#include "update/apt.h"
#include "update/journal.h"

#define HUB_MODULE "edgeHub"
#define API_TIMEOUT_MS 5000
#define DPKG_TIMEOUT_MS (10 * 60 * 1000)
#define STOP_TIMEOUT_MS 30000
#define PACKAGE_MAX (512u * 1024 * 1024)

void upd_dir(const char *state_dir, char *buf, size_t size)
{
    snprintf(buf, size, "%s/updates", state_dir);
}

void upd_journal_path(const char *state_dir, char *buf, size_t size)
{
    snprintf(buf, size, "%s/updates/journal.json", state_dir);
}

static void say(const struct upd_options *o, const char *fmt, ...) _printf_(2, 3);
static void say(const struct upd_options *o, const char *fmt, ...)
{
    if (!o->say)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    o->say(o->ud, line);
}

/* The test hook: a power cut right after step s was journaled. */
static void stop_hook(const struct upd_options *o, enum upd_step s)
{
    if (o->stop_at == (int)s) {
        say(o, "LEDGE_UPDATE_STOP_AT=%d: stopping dead after journaling \"%s\"", o->stop_at,
            upd_step_name(s));
        raise(SIGKILL);
    }
}

/* ------------------------------------------------------------------ programs */

/* Run argv; 0 with its stdout in out (when given) for exit status 0, else -EIO with what it said
 * (the last lines of stdout and stderr) in err. */
static int run_tool(char *const argv[], long timeout_ms, struct lbuf *out, struct lerr *err)
{
    _cleanup_lbuf_ struct lbuf all = {.max = 64 * 1024};
    struct lproc p = {
        .argv = argv, .in_fd = -1, .out = out ? out : &all, .err = &all, .timeout_ms = timeout_ms};
    int status = 0;
    int r = lproc_run_ok(&p, &status);
    if (r < 0) {
        char st[64];
        const char *said = all.data ? all.data : "";
        size_t n = strlen(said);
        if (n > 300)
            said += n - 300;
        while (*said == '\n')
            said++;
        if (r == -ENOENT)
            return lerr_set(err, r, "%s: not found", argv[0]);
        return lerr_set(err, r, "%s %s: %s%s%s", argv[0], argv[1] ? argv[1] : "",
                        r == -ETIMEDOUT ? "timed out" : lproc_status_str(status, st, sizeof(st)),
                        *said ? ": " : "", said);
    }
    return 0;
}

/* One control field of a .deb. */
static int deb_field(const char *deb, const char *field, char **ret, struct lerr *err)
{
    return ldeb_field(deb, field, ret, err);
}

/* The installed ledge's version and architecture ("install ok installed" only). */
static int installed_version(char **ret_version, char **ret_arch, struct lerr *err)
{
    return ldeb_installed("ledge", ret_version, ret_arch, err);
}

static int dpkg_install(const char *deb, struct lerr *err)
{
    char *argv[] = {"env",
                    "DEBIAN_FRONTEND=noninteractive",
                    "dpkg",
                    "--force-confold",
                    "--force-confdef",
                    "--force-downgrade",
                    "-i",
                    (char *)deb,
                    NULL};
    int r = run_tool(argv, DPKG_TIMEOUT_MS, NULL, err);
    if (r < 0) {
        /* A dpkg run cut short leaves its database wanting --configure; then once more. */
        char *conf[] = {"env", "DEBIAN_FRONTEND=noninteractive", "dpkg", "--configure", "-a", NULL};
        struct lerr ignored = {0};
        run_tool(conf, DPKG_TIMEOUT_MS, NULL, &ignored);
        lerr_clear(err);
        r = run_tool(argv, DPKG_TIMEOUT_MS, NULL, err);
    }
    if (r < 0)
        lerr_prefix(err, "installing %s", deb);
    return r;
}

/* ------------------------------------------------------------------ management API */

static int api(const struct upd_options *o, const char *method, const char *path, long timeout_ms,
               long *ret_status, json_t **ret)
{
    char url[1024];
    snprintf(url, sizeof(url), "http://localhost%s", path);
    _cleanup_lbuf_ struct lbuf body = {.max = 16 * 1024 * 1024};
    struct hc_request req = {.method = method,
                             .unix_socket = o->mgmt_socket,
                             .url = url,
                             .timeout_ms = timeout_ms,
                             .connect_timeout_ms = timeout_ms};
    long status = 0;
    int r = hc_request_sync(&req, &status, &body);
    if (r < 0)
        return r;
    json_t *j = NULL;
    if (body.len)
        j = json_loadb(body.data, body.len, 0, NULL);
    *ret_status = status;
    if (ret)
        *ret = j;
    else
        json_decref(j);
    return 0;
}

static long long ledged_pid(const struct upd_options *o)
{
    long status = 0;
    _cleanup_json_ json_t *s = NULL;
    if (api(o, "GET", "/status", 2000, &status, &s) < 0 || status != 200)
        return -1;
    return ljson_int(s, "pid", -1);
}

/* ------------------------------------------------------------------ processes */

static bool pid_alive(long long pid)
{
    return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

static int read_link(const char *path, char *buf, size_t size)
{
    ssize_t n = readlink(path, buf, size - 1);
    if (n < 0)
        return neg_errno();
    buf[n] = 0;
    return 0;
}

/* The program a process runs; *ret_replaced when its file was replaced since (" (deleted)"). */
static int process_exe(long long pid, char *buf, size_t size, bool *ret_replaced)
{
    char p[64];
    snprintf(p, sizeof(p), "/proc/%lld/exe", pid);
    int r = read_link(p, buf, size);
    if (r < 0)
        return r;
    bool replaced = lstr_endswith(buf, " (deleted)");
    if (replaced)
        buf[strlen(buf) - strlen(" (deleted)")] = 0;
    if (ret_replaced)
        *ret_replaced = replaced;
    return 0;
}

static bool is_ledged(long long pid)
{
    char exe[4096];
    if (!pid_alive(pid) || process_exe(pid, exe, sizeof(exe), NULL) < 0)
        return false;
    const char *base = strrchr(exe, '/');
    return lstr_startswith(base ? base + 1 : exe, "ledged");
}

static bool systemd_runs(void)
{
    struct stat st;
    return stat("/run/systemd/system", &st) == 0 && S_ISDIR(st.st_mode);
}

/* Is pid in ledged.service's cgroup (so systemd restarts it)? */
static bool in_ledged_service(long long pid)
{
    char p[64];
    snprintf(p, sizeof(p), "/proc/%lld/cgroup", pid);
    _cleanup_free_ char *text = NULL;
    if (lfs_read_file(p, 65536, &text, NULL) < 0)
        return false;
    return strstr(text, "/ledged.service") != NULL;
}

/* SIGTERM, and SIGKILL when it is still there after STOP_TIMEOUT_MS; waits through a pidfd. */
static int stop_process(long long pid)
{
    if (!pid_alive(pid))
        return 0;
    int fd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
    if (fd < 0)
        return errno == ESRCH ? 0 : neg_errno();
    _cleanup_close_ int pidfd = fd;
    if (kill((pid_t)pid, SIGTERM) < 0 && errno == ESRCH)
        return 0;
    struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
    int r;
    while ((r = poll(&pfd, 1, STOP_TIMEOUT_MS)) < 0 && errno == EINTR) {
    }
    if (r == 0) {
        kill((pid_t)pid, SIGKILL);
        while (poll(&pfd, 1, 5000) < 0 && errno == EINTR) {
        }
    }
    /* An exited process that is not our child is reaped by its parent soon after. */
    for (int i = 0; i < 100 && pid_alive(pid); i++) {
        char st[64], *text = NULL;
        snprintf(st, sizeof(st), "/proc/%lld/stat", pid);
        bool zombie = lfs_read_file(st, 4096, &text, NULL) == 0 && strstr(text, ") Z ");
        free(text);
        if (zombie)
            break;
        ltime_sleep_ms(20);
    }
    return 0;
}

int upd_spawn_detached(char *const argv[], const char *log_path)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return neg_errno();
    bool scope = systemd_runs() && access("/usr/bin/systemd-run", X_OK) == 0;
    pid_t child = fork();
    if (child < 0) {
        int r = neg_errno();
        close(p[0]);
        close(p[1]);
        return r;
    }
    if (child == 0) {
        setsid();
        pid_t grandchild = fork();
        if (grandchild != 0) {
            (void)!write(p[1], &grandchild, sizeof(grandchild));
            _exit(0);
        }
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
        int out = open(log_path ? log_path : "/dev/null", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                       0600);
        if (in >= 0)
            dup2(in, STDIN_FILENO);
        if (out >= 0) {
            dup2(out, STDOUT_FILENO);
            dup2(out, STDERR_FILENO);
        }
        if (scope) {
            /* A scope of its own: out of the cgroup of whoever started us (ledged.service). */
            size_t n = 0;
            while (argv[n])
                n++;
            char unit[64];
            snprintf(unit, sizeof(unit), "--unit=ledge-update-%d", (int)getpid());
            char **sv = calloc(n + 6, sizeof(char *));
            if (sv) {
                size_t k = 0;
                sv[k++] = "systemd-run";
                sv[k++] = "--scope";
                sv[k++] = "--quiet";
                sv[k++] = unit;
                sv[k++] = "--";
                for (size_t i = 0; i < n; i++)
                    sv[k++] = argv[i];
                execv("/usr/bin/systemd-run", sv);
            }
        }
        execv(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    pid_t grandchild = -1;
    ssize_t k;
    while ((k = read(p[0], &grandchild, sizeof(grandchild))) < 0 && errno == EINTR) {
    }
    close(p[0]);
    while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {
    }
    return k == (ssize_t)sizeof(grandchild) && grandchild > 0 ? (int)grandchild : -ECHILD;
}

/* ------------------------------------------------------------------ the baseline */

/* ledged's pid, how it was started and where it logs; the modules and their containers; the hub;
 * the errors of `ledge check`. */
static int take_baseline(const struct upd_options *o, json_t **ret, struct lerr *err)
{
    long status = 0;
    _cleanup_json_ json_t *st = NULL;
    int r = api(o, "GET", "/status", API_TIMEOUT_MS, &status, &st);
    if (r < 0 || status != 200)
        return lerr_set(err, r < 0 ? r : -EIO,
                        "ledged does not answer on %s (%s): an update starts from a running "
                        "runtime, whose health the new one is held to",
                        o->mgmt_socket, r < 0 ? strerror(-r) : "an error status");
    long long pid = ljson_int(st, "pid", -1);
    if (pid <= 0)
        return lerr_set(err, -EINVAL, "ledged's /status has no pid (ledged too old?)");
    _cleanup_json_ json_t *b = json_object();
    json_object_set_new(b, "ledgedPid", json_integer(pid));
    json_object_set_new(b, "systemd", json_boolean(systemd_runs() && in_ledged_service(pid)));
    char exe[4096];
    if ((r = process_exe(pid, exe, sizeof(exe), NULL)) < 0)
        return lerr_set(err, r, "cannot see ledged's program (/proc/%lld/exe): %s", pid,
                        strerror(-r));
    json_object_set_new(b, "ledgedExe", json_string(exe));
    char p[64];
    snprintf(p, sizeof(p), "/proc/%lld/cmdline", pid);
    _cleanup_free_ char *cmdline = NULL;
    size_t n = 0;
    if ((r = lfs_read_file(p, 65536, &cmdline, &n)) < 0)
        return lerr_set(err, r, "cannot read %s: %s", p, strerror(-r));
    json_t *argv = json_array();
    for (size_t i = 0; i < n; i += strlen(cmdline + i) + 1)
        json_array_append_new(argv, json_string(cmdline + i));
    json_object_set_new(b, "ledgedArgv", argv);
    /* Where its stderr went, when that is a file (a ledged started by hand or by a script). */
    char log[4096];
    snprintf(p, sizeof(p), "/proc/%lld/fd/2", pid);
    struct stat lst;
    if (read_link(p, log, sizeof(log)) == 0 && log[0] == '/' && stat(log, &lst) == 0 &&
        S_ISREG(lst.st_mode))
        json_object_set_new(b, "ledgedLog", json_string(log));

    _cleanup_json_ json_t *mods = NULL;
    r = api(o, "GET", "/modules", API_TIMEOUT_MS, &status, &mods);
    if (r < 0 || status != 200)
        return lerr_set(err, r < 0 ? r : -EIO, "ledged's /modules did not answer");
    json_t *m = json_object();
    json_object_set_new(b, "modules", m);
    size_t i;
    json_t *v;
    bool hub = false;
    json_array_foreach (json_object_get(mods, "modules"), i, v) {
        const char *name = ljson_str(v, "name");
        const char *id = ljson_str(v, "containerId");
        if (!name || !id)
            continue; /* never created: nothing to keep */
        json_object_set_new(m, name,
                            json_pack("{s:s, s:b}", "containerId", id, "running",
                                      lstr_eq(ljson_str(v, "runtimeStatus"), "running")));
        if (lstr_eq(name, HUB_MODULE))
            hub = true;
    }
    json_object_set_new(b, "hub", json_boolean(hub));
    if (hub) {
        _cleanup_json_ json_t *hs = NULL;
        if (api(o, "GET", "/hub/status", API_TIMEOUT_MS, &status, &hs) == 0 && status == 200)
            json_object_set_new(b, "hubPid", json_integer(ljson_int(hs, "pid", -1)));
        else
            return lerr_set(err, -EIO, "the hub does not report its status before the update");
    }
    *ret = json_incref(b);
    return 0;
}

/* The ids of the checks `ledge check` reports as errors, as a JSON array. */
static int check_errors(const struct upd_options *o, json_t **ret, struct lerr *err)
{
    _cleanup_lbuf_ struct lbuf out = {.max = 4 * 1024 * 1024};
    _cleanup_lbuf_ struct lbuf errb = {.max = 4096};
    char *argv[] = {(char *)o->ledge_program,
                    "-H",
                    (char *)o->mgmt_socket,
                    "check",
                    "--output",
                    "json",
                    "--config",
                    (char *)o->config_path,
                    NULL};
    struct lproc p = {.argv = argv, .in_fd = -1, .out = &out, .err = &errb, .timeout_ms = 120000};
    int status = 0;
    int r = lproc_run(&p, &status);
    if (r < 0)
        return lerr_set(err, r, "%s check: %s", o->ledge_program, strerror(-r));
    _cleanup_json_ json_t *j = out.len ? json_loadb(out.data, out.len, 0, NULL) : NULL;
    if (!json_is_array(json_object_get(j, "checks"))) {
        char st[64];
        return lerr_set(err, -EIO, "%s check (%s) printed no result: %.200s", o->ledge_program,
                        lproc_status_str(status, st, sizeof(st)), errb.data ? errb.data : "");
    }
    json_t *ids = json_array();
    size_t i;
    json_t *c;
    json_array_foreach (json_object_get(j, "checks"), i, c)
        if (lstr_eq(ljson_str(c, "result"), "error") && ljson_str(c, "id"))
            json_array_append_new(ids, json_string(ljson_str(c, "id")));
    *ret = ids;
    return 0;
}

/* ------------------------------------------------------------------ packages */

static int copy_file_durably(const char *src, const char *dst)
{
    _cleanup_free_ char *data = NULL;
    size_t n = 0;
    int r = lfs_read_file(src, PACKAGE_MAX, &data, &n);
    if (r < 0)
        return r;
    return lfs_write_atomic(dst, data, n, 0600);
}

/* A .deb of the installed version, kept in dir: one an earlier `ledge update` kept, apt's
 * cache's, or the installed files packed again by dpkg-repack. */
static int keep_installed(const struct upd_options *o, const char *dir, const char *version,
                          const char *arch, char **ret, struct lerr *err)
{
    enum ldeb_origin origin;
    int r = ldeb_recover("ledge", version, arch, dir, NULL, ret, &origin, err);
    if (r < 0)
        return lerr_prefix(err, "to roll back to");
    if (origin == LDEB_APT)
        say(o, "kept apt's copy of ledge %s for a rollback: %s", version, *ret);
    else if (origin == LDEB_REPACKED)
        say(o, "packed the installed ledge %s again with dpkg-repack for a rollback: %s", version,
            *ret);
    return 0;
}

/* Every ledge_*.deb in dir but the two the last update used. */
static void prune_packages(const char *dir, const char *keep1, const char *keep2)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!lstr_startswith(e->d_name, "ledge_") || !lstr_endswith(e->d_name, ".deb"))
            continue;
        _cleanup_free_ char *p = lstr_printf("%s/%s", dir, e->d_name);
        if (p && !lstr_eq(p, keep1) && !lstr_eq(p, keep2))
            unlink(p);
    }
    closedir(d);
}

/* ------------------------------------------------------------------ the lock */

static int take_lock(const char *dir, int *ret_fd, struct lerr *err)
{
    _cleanup_free_ char *path = lstr_printf("%s/lock", dir);
    if (!path)
        return -ENOMEM;
    _cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return lerr_set(err, neg_errno(), "%s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) < 0)
        return lerr_set(err, errno == EWOULDBLOCK ? -EBUSY : neg_errno(),
                        "another `ledge update` is running (it holds %s)", path);
    *ret_fd = TAKE_FD(fd);
    return 0;
}

bool upd_resume_needed(const char *state_dir)
{
    char path[4096], dir[4096];
    upd_journal_path(state_dir, path, sizeof(path));
    upd_dir(state_dir, dir, sizeof(dir));
    struct upd_journal j = {0};
    if (upd_journal_load(path, &j, NULL) < 0)
        return false;
    bool unfinished = upd_step_unfinished(j.step);
    upd_journal_clear(&j);
    if (!unfinished)
        return false;
    int fd = -1;
    if (take_lock(dir, &fd, NULL) < 0)
        return false; /* an updater is at work */
    close(fd);
    return true;
}

/* ------------------------------------------------------------------ restarting and health */

static int save(const struct upd_options *o, const char *jpath, struct upd_journal *j,
                enum upd_step s, struct lerr *err)
{
    int r = upd_journal_save(jpath, j, s);
    if (r < 0)
        return lerr_set(err, r, "cannot write the update journal %s: %s", jpath, strerror(-r));
    stop_hook(o, s);
    return 0;
}

/* Restart ledged on what is installed now: through systemd when systemd runs it, else stop every
 * ledged we know of (the one answering, the journal's) and start the installed program with the
 * arguments and log the old one had. *ret_spawned: the pid started by hand, or -1. */
static int restart_ledged(const struct upd_options *o, const char *jpath, struct upd_journal *j,
                          long long *ret_spawned, struct lerr *err)
{
    json_t *b = j->baseline;
    *ret_spawned = -1;
    if (ljson_bool(b, "systemd", false)) {
        char *argv[] = {"systemctl", "restart", "ledged.service", NULL};
        return run_tool(argv, STOP_TIMEOUT_MS * 2, NULL, err);
    }
    long long pids[] = {ledged_pid(o), ljson_int(b, "ledgedPid", -1),
                        ljson_int(b, "spawnedPid", -1)};
    for (size_t i = 0; i < ARRAY_SIZE(pids); i++)
        if (is_ledged(pids[i]))
            stop_process(pids[i]);
    json_t *args = json_object_get(b, "ledgedArgv");
    const char *exe = ljson_str(b, "ledgedExe");
    size_t n = json_array_size(args);
    if (!exe || n == 0 || n > 256)
        return lerr_set(err, -EINVAL, "the journal does not say how ledged was started");
    char *argv[258];
    argv[0] = (char *)exe;
    for (size_t i = 1; i < n; i++)
        argv[i] = (char *)json_string_value(json_array_get(args, i));
    argv[n] = NULL;
    for (size_t i = 1; i < n; i++)
        if (!argv[i])
            return lerr_set(err, -EINVAL, "the journal's ledgedArgv is not strings");
    char dir[4096];
    upd_dir(o->state_dir, dir, sizeof(dir));
    _cleanup_free_ char *fallback = lstr_printf("%s/ledged.log", dir);
    const char *log = ljson_str(b, "ledgedLog") ?: fallback;
    int pid = upd_spawn_detached(argv, log);
    if (pid < 0)
        return lerr_set(err, pid, "cannot start %s: %s", exe, strerror(-pid));
    *ret_spawned = pid;
    json_object_set_new(b, "spawnedPid", json_integer(pid));
    return save(o, jpath, j, j->step, err);
}

static const char *ledged_log(const struct upd_options *o, const struct upd_journal *j)
{
    const char *log = ljson_str(j->baseline, "ledgedLog");
    if (log)
        return log;
    return ljson_bool(j->baseline, "systemd", false) ? "journalctl -u ledged" : "its log";
}

/* One look at the restarted runtime: 0 when healthy, else -EAGAIN with what is not yet right in
 * reason. *hub_pre is the hub pid before its restart (0: not restarted yet). */
static int look(const struct upd_options *o, const struct upd_journal *j, long long not_pid,
                long long spawned, long long *hub_pre, char *reason, size_t size)
{
    json_t *b = j->baseline;
    long status = 0;
    _cleanup_json_ json_t *st = NULL;
    int r = api(o, "GET", "/status", 2000, &status, &st);
    if (r < 0 || status != 200) {
        if (spawned > 0 && !pid_alive(spawned)) {
            snprintf(reason, size, "ledged exited at start (see %s)", ledged_log(o, j));
            return -ECHILD;
        }
        snprintf(reason, size, "ledged does not answer on %s", o->mgmt_socket);
        return -EAGAIN;
    }
    long long pid = ljson_int(st, "pid", -1);
    if (pid == not_pid || (spawned > 0 && pid != spawned)) {
        snprintf(reason, size, "the ledged answering (pid %lld) is not the restarted one", pid);
        return -EAGAIN;
    }
    char exe[4096];
    bool replaced = false;
    if (process_exe(pid, exe, sizeof(exe), &replaced) == 0 && replaced) {
        snprintf(reason, size, "ledged (pid %lld) runs a program that was replaced since", pid);
        return -EAGAIN;
    }
    if (ljson_bool(b, "hub", false)) {
        _cleanup_json_ json_t *hs = NULL;
        bool answers =
            api(o, "GET", "/hub/status", API_TIMEOUT_MS, &status, &hs) == 0 && status == 200;
        long long hpid = answers ? ljson_int(hs, "pid", -1) : -1;
        if (*hub_pre == 0) {
            /* the hub ledged adopted still runs the replaced program: restart it */
            long rs = 0;
            if (api(o, "POST", "/modules/" HUB_MODULE "/restart", 60000, &rs, NULL) < 0 ||
                rs / 100 != 2) {
                snprintf(reason, size, "ledged did not restart the hub (status %ld)", rs);
                return -EAGAIN;
            }
            *hub_pre = hpid > 0 ? hpid : -1;
            snprintf(reason, size, "the hub was restarted");
            return -EAGAIN;
        }
        if (!answers) {
            snprintf(reason, size, "the hub does not report its status (GET /hub/status: %ld)",
                     status);
            return -EAGAIN;
        }
        if (hpid > 0 && hpid == *hub_pre) {
            snprintf(reason, size, "the hub (pid %lld) was not restarted", hpid);
            return -EAGAIN;
        }
        if (hpid > 0 && process_exe(hpid, exe, sizeof(exe), &replaced) == 0 && replaced) {
            snprintf(reason, size, "the hub (pid %lld) runs a program that was replaced", hpid);
            return -EAGAIN;
        }
    }
    _cleanup_json_ json_t *mods = NULL;
    if (api(o, "GET", "/modules", API_TIMEOUT_MS, &status, &mods) < 0 || status != 200) {
        snprintf(reason, size, "ledged's /modules does not answer");
        return -EAGAIN;
    }
    const char *name;
    json_t *want;
    json_object_foreach (json_object_get(b, "modules"), name, want) {
        json_t *now = NULL, *v;
        size_t i;
        json_array_foreach (json_object_get(mods, "modules"), i, v)
            if (lstr_eq(ljson_str(v, "name"), name))
                now = v;
        const char *id = ljson_str(want, "containerId");
        if (!now) {
            snprintf(reason, size, "module %s is gone", name);
            return -EAGAIN;
        }
        if (!lstr_eq(ljson_str(now, "containerId"), id)) {
            snprintf(reason, size, "module %s was recreated (container %.12s, was %.12s)", name,
                     ljson_str(now, "containerId") ?: "none", id);
            return -EAGAIN;
        }
        if (ljson_bool(want, "running", false) &&
            !lstr_eq(ljson_str(now, "runtimeStatus"), "running")) {
            snprintf(reason, size, "module %s is %s, not running", name,
                     ljson_str(now, "runtimeStatus") ?: "?");
            return -EAGAIN;
        }
    }
    return 0;
}

/* Look until healthy or the deadline: 0, or < 0 with the last thing not right in reason. */
static int wait_healthy(const struct upd_options *o, const struct upd_journal *j, long long not_pid,
                        long long spawned, char *reason, size_t size)
{
    int64_t end = ltime_mono_ms() + o->deadline_ms;
    long long hub_pre = 0;
    for (;;) {
        int r = look(o, j, not_pid, spawned, &hub_pre, reason, size);
        if (r != -EAGAIN)
            return r;
        if (ltime_mono_ms() >= end) {
            size_t n = strlen(reason);
            snprintf(reason + n, size - n, " after %llds", (long long)(o->deadline_ms / 1000));
            return -ETIMEDOUT;
        }
        ltime_sleep_ms(200);
    }
}

/* New errors of `ledge check` (ids in now and not in before) into reason; 0 when none. */
static int check_not_worse(const struct upd_options *o, const json_t *before, char *reason,
                           size_t size)
{
    _cleanup_json_ json_t *now = NULL;
    struct lerr e = {0};
    if (check_errors(o, &now, &e) < 0) {
        snprintf(reason, size, "%s", lerr_str(&e));
        return -EIO;
    }
    struct lbuf worse = {.max = 512};
    size_t i, k;
    json_t *v, *w;
    json_array_foreach (now, i, v) {
        bool old = false;
        json_array_foreach (before, k, w)
            old = old || json_equal(v, w);
        if (!old)
            lbuf_printf(&worse, "%s%s", worse.len ? ", " : "", json_string_value(v));
    }
    int r = 0;
    if (worse.len) {
        snprintf(reason, size, "ledge check reports new errors: %s", worse.data);
        r = -EIO;
    }
    lbuf_free(&worse);
    return r;
}

/* ------------------------------------------------------------------ rollback, update, resume */

static int rollback(const struct upd_options *o, const char *jpath, struct upd_journal *j,
                    const char *reason, struct lerr *err)
{
    if (reason && !lstr_eq(reason, j->reason)) {
        free(j->reason);
        j->reason = strdup(reason);
    }
    int r = save(o, jpath, j, UPD_ROLLING_BACK, err);
    if (r < 0)
        return r;
    say(o, "rolling back to ledge %s: %s", j->from_version, j->reason ?: "?");
    if ((r = dpkg_install(j->from_deb, err)) < 0) {
        lerr_prefix(err, "the rollback failed (ledge update --resume tries again)");
        return r;
    }
    long long before = ledged_pid(o), spawned = -1;
    if ((r = restart_ledged(o, jpath, j, &spawned, err)) < 0) {
        lerr_prefix(err, "the rollback failed (ledge update --resume tries again)");
        return r;
    }
    char why[512] = "";
    r = wait_healthy(o, j, before, spawned, why, sizeof(why));
    if ((r = save(o, jpath, j, UPD_ROLLED_BACK, err)) < 0)
        return r;
    if (why[0] && r < 0)
        return lerr_set(err, -EIO, "%s; rolled back to ledge %s, which is not healthy either: %s",
                        j->reason, j->from_version, why);
    return lerr_set(err, -ECANCELED, "%s; rolled back to ledge %s", j->reason ?: "?",
                    j->from_version);
}

/* The updates folder made and its lock taken (into *ret_lock). */
static int lock_updates(const struct upd_options *o, char *dir, size_t size, int *ret_lock,
                        struct lerr *err)
{
    upd_dir(o->state_dir, dir, size);
    int r = lfs_mkdir_p(dir, 0700);
    if (r < 0)
        return lerr_set(err, r, "%s: %s", dir, strerror(-r));
    return take_lock(dir, ret_lock, err);
}

/* upd_update() with the lock held. */
static int update_locked(const struct upd_options *o, const char *dir, const char *deb,
                         struct lerr *err)
{
    char jpath[4200];
    upd_journal_path(o->state_dir, jpath, sizeof(jpath));
    int r;
    struct upd_journal old = {0};
    if (upd_journal_load(jpath, &old, NULL) == 0) {
        bool unfinished = upd_step_unfinished(old.step);
        upd_journal_clear(&old);
        if (unfinished)
            return lerr_set(err, -EBUSY,
                            "an earlier update was interrupted and is not finished: run "
                            "`ledge update --resume` first");
    }
    _cleanup_free_ char *pkg = NULL, *to_version = NULL, *to_arch = NULL;
    _cleanup_free_ char *from_version = NULL, *arch = NULL;
    if ((r = deb_field(deb, "Package", &pkg, err)) < 0 ||
        (r = deb_field(deb, "Version", &to_version, err)) < 0 ||
        (r = deb_field(deb, "Architecture", &to_arch, err)) < 0)
        return r;
    if (!lstr_eq(pkg, "ledge"))
        return lerr_set(err, -EINVAL, "%s is a package of %s, not of ledge", deb, pkg);
    if ((r = installed_version(&from_version, &arch, err)) < 0)
        return r;
    if (!lstr_eq(to_arch, arch))
        return lerr_set(err, -EINVAL, "%s is for %s; this ledge is %s", deb, to_arch, arch);
    if (lstr_eq(to_version, from_version))
        return lerr_set(err, -EALREADY, "ledge %s is installed already", to_version);

    _cleanup_free_ char *to_name = NULL;
    struct upd_journal j = {0};
    j.started_ms = ltime_now_ms();
    j.id = lstr_printf("%lld-%d", (long long)j.started_ms, (int)getpid());
    j.from_version = strdup(from_version);
    j.to_version = strdup(to_version);
    if ((r = take_baseline(o, &j.baseline, err)) < 0)
        goto out;
    json_t *errors = NULL;
    if ((r = check_errors(o, &errors, err)) < 0) {
        lerr_prefix(err, "`ledge check` before the update");
        goto out;
    }
    json_object_set_new(j.baseline, "checkErrors", errors);
    if ((r = keep_installed(o, dir, from_version, arch, &j.from_deb, err)) < 0)
        goto out;
    j.to_deb = lstr_printf("%s/%s", dir, strrchr(deb, '/') ? strrchr(deb, '/') + 1 : deb);
    to_name = lstr_printf("%s/ledge_%s_%s.deb", dir, to_version, arch);
    if (to_name && !strchr(to_version, ':')) {
        free(j.to_deb);
        j.to_deb = TAKE_PTR(to_name);
    }
    if (!j.id || !j.from_version || !j.to_version || !j.to_deb) {
        r = lerr_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    if ((r = copy_file_durably(deb, j.to_deb)) < 0) {
        r = lerr_set(err, r, "cannot keep %s as %s: %s", deb, j.to_deb, strerror(-r));
        goto out;
    }
    if ((r = save(o, jpath, &j, UPD_PREPARED, err)) < 0)
        goto out;
    say(o, "updating ledge %s to %s (journal %s)", from_version, to_version, jpath);

    char why[512] = "";
    if ((r = save(o, jpath, &j, UPD_INSTALLING, err)) < 0)
        goto out;
    struct lerr e = {0};
    if (dpkg_install(j.to_deb, &e) < 0) {
        r = rollback(o, jpath, &j, lerr_str(&e), err);
        goto out;
    }
    if ((r = save(o, jpath, &j, UPD_INSTALLED, err)) < 0 ||
        (r = save(o, jpath, &j, UPD_RESTARTING, err)) < 0)
        goto out;
    say(o, "installed ledge %s; restarting ledged and the hub", to_version);
    long long before = ljson_int(j.baseline, "ledgedPid", -1), spawned = -1;
    if (restart_ledged(o, jpath, &j, &spawned, &e) < 0) {
        r = rollback(o, jpath, &j, lerr_str(&e), err);
        goto out;
    }
    if ((r = save(o, jpath, &j, UPD_CHECKING, err)) < 0)
        goto out;
    say(o, "checking the new runtime's health (deadline %llds)",
        (long long)(o->deadline_ms / 1000));
    if (wait_healthy(o, &j, before, spawned, why, sizeof(why)) < 0 ||
        check_not_worse(o, json_object_get(j.baseline, "checkErrors"), why, sizeof(why)) < 0) {
        r = rollback(o, jpath, &j, why, err);
        goto out;
    }
    if ((r = save(o, jpath, &j, UPD_DONE, err)) < 0)
        goto out;
    prune_packages(dir, j.from_deb, j.to_deb);
    say(o,
        "ledge %s is installed and healthy: ledged and the hub restarted, %zu modules kept "
        "their containers",
        to_version, json_object_size(json_object_get(j.baseline, "modules")));
    r = 0;
out:
    upd_journal_clear(&j);
    return r;
}

int upd_update(const struct upd_options *o, const char *deb, struct lerr *err)
{
    char dir[4096];
    _cleanup_close_ int lock = -1;
    int r = lock_updates(o, dir, sizeof(dir), &lock, err);
    if (r < 0)
        return r;
    return update_locked(o, dir, deb, err);
}

/* ------------------------------------------------------------------ from apt */

/* Run an apt tool in the C locale: 0 with its stdout in out, else < 0 with what it said. */
static int run_apt(const char *tool, char *const args[], const char *cwd, long timeout_ms,
                   struct lbuf *out, struct lerr *err)
{
    char *argv[16] = {"env", "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive", (char *)tool};
    size_t n = 4;
    for (size_t i = 0; args[i] && n + 1 < ARRAY_SIZE(argv); i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    char path[64];
    snprintf(path, sizeof(path), "/usr/bin/%s", tool);
    if (access(path, X_OK) < 0)
        return lerr_set(err, -ENOENT,
                        "apt is not installed (%s: not found): `ledge update --apt` asks apt "
                        "for the package; give a FILE.deb instead",
                        path);
    _cleanup_lbuf_ struct lbuf all = {.max = 64 * 1024};
    struct lproc p = {.argv = argv,
                      .in_fd = -1,
                      .out = out ? out : &all,
                      .err = &all,
                      .timeout_ms = timeout_ms,
                      .cwd = cwd};
    int status = 0;
    int r = lproc_run_ok(&p, &status);
    if (r < 0) {
        char st[64];
        const char *said = all.data ? all.data : "";
        /* apt's own errors ("E: ...") say it best; else the end of what it said */
        _cleanup_lbuf_ struct lbuf errors = {.max = 400};
        for (const char *l = said; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
            if (lstr_startswith(l, "E: "))
                lbuf_printf(&errors, "%.*s\n", (int)strcspn(l, "\n"), l);
        if (errors.data)
            said = errors.data;
        size_t len = strlen(said);
        if (len > 400)
            said += len - 400;
        while (*said == '\n')
            said++;
        _cleanup_free_ char *msg = strdup(said);
        if (msg) {
            size_t m = strlen(msg);
            while (m && msg[m - 1] == '\n')
                msg[--m] = 0;
            for (char *c = msg; *c; c++)
                if (*c == '\n')
                    *c = ' ';
        }
        return lerr_set(err, r, "%s: %s%s%s", tool,
                        r == -ETIMEDOUT ? "timed out" : lproc_status_str(status, st, sizeof(st)),
                        msg && *msg ? ": " : "", msg ? msg : "");
    }
    return 0;
}

/* Is version a newer than b (dpkg --compare-versions a gt b)? 1, 0, or < 0 with err. */
static int version_newer(const char *a, const char *b, struct lerr *err)
{
    char *argv[] = {"dpkg", "--compare-versions", (char *)a, "gt", (char *)b, NULL};
    _cleanup_lbuf_ struct lbuf said = {.max = 4096};
    struct lproc p = {.argv = argv, .in_fd = -1, .err = &said, .timeout_ms = 30000};
    int status = 0;
    int r = lproc_run(&p, &status);
    if (r < 0)
        return lerr_set(err, r, "dpkg --compare-versions %s gt %s: %s", a, b, strerror(-r));
    if (WIFEXITED(status) && WEXITSTATUS(status) <= 1)
        return WEXITSTATUS(status) == 0;
    char st[64];
    return lerr_set(err, -EINVAL, "dpkg --compare-versions %s gt %s: %s: %.200s", a, b,
                    lproc_status_str(status, st, sizeof(st)), said.data ? said.data : "");
}

/* Remove the download folder and what apt left in it (files and its partial/ folder). */
static void remove_download_dir(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (lstr_eq(e->d_name, ".") || lstr_eq(e->d_name, ".."))
                continue;
            _cleanup_free_ char *p = lstr_printf("%s/%s", path, e->d_name);
            if (p && unlink(p) < 0 && (errno == EISDIR || errno == EPERM))
                remove_download_dir(p);
        }
        closedir(d);
    }
    rmdir(path);
}

/* The one .deb apt-get download left in dir (it names it pkg_version_arch.deb, an epoch's colon
 * as %3a): its path in *ret. -ENOENT when there is none, -EEXIST when there are several. */
static int downloaded_deb(const char *dir, char **ret)
{
    DIR *d = opendir(dir);
    if (!d)
        return neg_errno();
    _cleanup_free_ char *found = NULL;
    int r = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!lstr_endswith(e->d_name, ".deb") || e->d_name[0] == '.')
            continue;
        if (found) {
            r = -EEXIST;
            break;
        }
        if (!(found = lstr_printf("%s/%s", dir, e->d_name))) {
            r = -ENOMEM;
            break;
        }
    }
    closedir(d);
    if (r == 0 && !found)
        r = -ENOENT;
    if (r == 0)
        *ret = TAKE_PTR(found);
    return r;
}

int upd_update_apt(const struct upd_options *o, struct lerr *err)
{
    char dir[4096];
    _cleanup_close_ int lock = -1;
    int r = lock_updates(o, dir, sizeof(dir), &lock, err);
    if (r < 0)
        return r;
    _cleanup_free_ char *installed = NULL, *arch = NULL, *deb = NULL;
    if ((r = installed_version(&installed, &arch, err)) < 0)
        return r;

    _cleanup_lbuf_ struct lbuf out = {.max = 1024 * 1024};
    char *policy_args[] = {"policy", UPD_APT_PACKAGE, NULL};
    if ((r = run_apt("apt-cache", policy_args, NULL, 120000, &out, err)) < 0)
        return r;
    struct upd_apt_policy pol = {0};
    r = upd_apt_policy_parse(out.data, UPD_APT_PACKAGE, &pol, err);
    if (r == -ENOENT || (r == 0 && (!pol.offered || !pol.candidate))) {
        upd_apt_policy_clear(&pol);
        return lerr_set(err, -ENOENT,
                        "no apt repository offers the package " UPD_APT_PACKAGE
                        " (apt-cache policy " UPD_APT_PACKAGE
                        " lists none): add one to /etc/apt/sources.list.d/ and run apt-get "
                        "update, or give a FILE.deb");
    }
    if (r < 0)
        return r;
    _cleanup_free_ char *candidate = TAKE_PTR(pol.candidate);
    upd_apt_policy_clear(&pol);
    if ((r = version_newer(candidate, installed, err)) < 0)
        return r;
    if (r == 0) {
        say(o, "ledge %s is up to date (apt's candidate is %s)", installed, candidate);
        return 1;
    }

    /* Bounded before anything is downloaded: apt's record says the package's size. */
    _cleanup_free_ char *spec = lstr_printf(UPD_APT_PACKAGE "=%s", candidate);
    if (!spec)
        return -ENOMEM;
    lbuf_free(&out);
    out = (struct lbuf){.max = 1024 * 1024};
    char *show_args[] = {"show", "--no-all-versions", spec, NULL};
    unsigned long long size = 0;
    if ((r = run_apt("apt-cache", show_args, NULL, 120000, &out, err)) < 0) {
        lerr_prefix(err, "the package %s", spec);
        return r;
    }
    if (upd_apt_size_parse(out.data, &size) == 0 && size > PACKAGE_MAX)
        return lerr_set(err, -EFBIG,
                        "the package %s is %llu bytes, more than the %u a package "
                        "may have",
                        spec, size, PACKAGE_MAX);

    _cleanup_free_ char *down = lstr_printf("%s/apt", dir);
    if (!down)
        return -ENOMEM;
    remove_download_dir(down); /* what an interrupted run left */
    if (mkdir(down, 0700) < 0)
        return lerr_set(err, neg_errno(), "%s: %s", down, strerror(errno));
    say(o, "downloading ledge %s with apt-get into %s", candidate, down);
    char *download_args[] = {"download", spec, NULL};
    if ((r = run_apt("apt-get", download_args, down, DPKG_TIMEOUT_MS, NULL, err)) < 0) {
        lerr_prefix(err, "downloading the package %s failed", spec);
        goto out;
    }
    if ((r = downloaded_deb(down, &deb)) < 0) {
        r = lerr_set(err, r, "apt-get download %s left no .deb in %s", spec, down);
        goto out;
    }
    struct stat st;
    if (stat(deb, &st) < 0 || !S_ISREG(st.st_mode)) {
        r = lerr_set(err, -ENOENT, "%s: not a file", deb);
        goto out;
    }
    if ((unsigned long long)st.st_size > PACKAGE_MAX) {
        r = lerr_set(err, -EFBIG, "%s is more than %u bytes", deb, PACKAGE_MAX);
        goto out;
    }
    r = update_locked(o, dir, deb, err);
out:
    remove_download_dir(down);
    return r;
}

int upd_resume(const struct upd_options *o, const char **ret_what, struct lerr *err)
{
    char dir[4096], jpath[4200];
    upd_dir(o->state_dir, dir, sizeof(dir));
    upd_journal_path(o->state_dir, jpath, sizeof(jpath));
    _cleanup_close_ int lock = -1;
    struct stat st;
    if (stat(dir, &st) < 0) {
        *ret_what = "nothing";
        return 0;
    }
    int r = take_lock(dir, &lock, err);
    if (r < 0)
        return r;
    struct upd_journal j = {0};
    r = upd_journal_load(jpath, &j, err);
    if (r == -ENOENT) {
        *ret_what = "nothing";
        return 0;
    }
    if (r < 0)
        return r;
    switch (upd_resume_action(j.step)) {
    case UPD_RESUME_NOTHING:
        *ret_what = "nothing";
        break;
    case UPD_RESUME_ABANDON:
        free(j.reason);
        j.reason = strdup("interrupted before anything was installed");
        if ((r = save(o, jpath, &j, UPD_ROLLED_BACK, err)) < 0)
            break;
        say(o,
            "the update to ledge %s was interrupted before anything was installed: "
            "ledge %s stays",
            j.to_version, j.from_version);
        *ret_what = "abandoned";
        break;
    case UPD_RESUME_ROLLBACK: {
        char why[600];
        if (j.step == UPD_ROLLING_BACK && j.reason)
            snprintf(why, sizeof(why), "%s", j.reason);
        else
            snprintf(why, sizeof(why), "the update to ledge %s was interrupted at \"%s\"",
                     j.to_version, upd_step_name(j.step));
        r = rollback(o, jpath, &j, why, err);
        if (r == -ECANCELED) {
            say(o, "%s", lerr_str(err));
            lerr_clear(err);
            r = 0;
            *ret_what = "rolled-back";
        }
        break;
    }
    }
    upd_journal_clear(&j);
    return r;
}
