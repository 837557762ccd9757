/* guest_agent.c — ledge-vm-agent, the guest end of the host⇄guest channel (docs/vm.md): it opens
 * the virtio-serial port, greets the host, mounts the shared folders the host announces, and serves
 * the host's connections: the guest's management API, its Docker socket, and exec sessions
 * (pipes or a pty). Runs as a systemd notify service that ledged is ordered after, so shares are
 * mounted before modules start. */
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "log/log.h"
#include "mux.h"
#include "vm/paths.h"
#include "vm/qemu.h"

#define COMP "vm-agent"
#define MAX_ARGV 256
#define MAX_ENV 256

struct vm_guest_agent {
    struct event_base *base;
    struct vm_mux *mux;
    const char *port_name;
    const char *mgmt_socket;
    const char *docker_socket;
    const char *sysfs;
    struct event *retry_ev;
    struct event *notify_ev;
    bool notified;
    bool link_up;
    int link_errors;
};

/* ------------------------------------------------------------------ systemd notification */

static void sd_notify_ready(struct vm_guest_agent *a, const char *why)
{
    if (a->notified)
        return;
    a->notified = true;
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path)
        return;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    if (n >= sizeof(sa.sun_path))
        return;
    memcpy(sa.sun_path, path, n);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = 0;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    const char msg[] = "READY=1";
    sendto(fd, msg, sizeof(msg) - 1, MSG_NOSIGNAL, (struct sockaddr *)&sa,
           (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n));
    close(fd);
    log_info(COMP, "ready (%s)", why);
}

static void notify_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    sd_notify_ready(arg, "no host greeting yet; shares will be mounted when it comes");
}

/* ------------------------------------------------------------------ shares */

/* Is dir a mount point already (the host greets again after reconnecting)? mountinfo field 5,
 * with the kernel's octal escapes for space, tab, newline and backslash. */
static bool mounted_on(const char *dir)
{
    char esc[PATH_MAX * 4];
    size_t n = 0;
    for (const char *p = dir; *p && n + 5 < sizeof(esc); p++) {
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\\')
            n += (size_t)snprintf(esc + n, sizeof(esc) - n, "\\%03o", (unsigned char)*p);
        else
            esc[n++] = *p;
    }
    esc[n] = 0;
    _cleanup_free_ char *text = NULL;
    if (lfs_read_file("/proc/self/mountinfo", 4u << 20, &text, NULL) < 0)
        return false;
    for (char *s = text, *line; (line = strsep(&s, "\n"));) {
        char *f = line;
        for (int i = 0; i < 4 && f; i++) {
            f = strchr(f, ' ');
            if (f)
                f++;
        }
        if (!f)
            continue;
        size_t len = strcspn(f, " ");
        if (len == strlen(esc) && strncmp(f, esc, len) == 0)
            return true;
    }
    return false;
}

static void mount_share(const json_t *s)
{
    const char *tag = ljson_str(s, "tag"), *dir = ljson_str(s, "guestDir");
    bool ro = ljson_bool(s, "readOnly", false);
    if (!tag || !dir || dir[0] != '/' || strstr(dir, "/../") || lstr_endswith(dir, "/..")) {
        log_warn(COMP, "ignoring a malformed share");
        return;
    }
    if (mounted_on(dir))
        return; /* from an earlier greeting */
    int r = lfs_mkdir_p(dir, 0755);
    if (r < 0) {
        log_warn(COMP, "share %s: cannot create %s: %s", tag, dir, strerror(-r));
        return;
    }
    /* msize: larger messages make 9p much faster; cache=none keeps host edits visible at once.
     * ENOENT right after boot: the virtio 9p channel is not probed yet; it comes within ms. */
    int tries = 0;
    while (mount(tag, dir, "9p", ro ? MS_RDONLY : 0,
                 "trans=virtio,version=9p2000.L,msize=262144,access=any,cache=none") < 0) {
        if (errno == EBUSY)
            return; /* already mounted (the host reconnected) */
        if (errno == ENOENT && ++tries < 20) {
            usleep(100 * 1000);
            continue;
        }
        log_warn(COMP, "share %s: mount on %s: %s", tag, dir, strerror(errno));
        return;
    }
    log_info(COMP, "share %s mounted on %s%s", tag, dir, ro ? " (read-only)" : "");
}

/* ------------------------------------------------------------------ greeting */

static json_t *guest_facts(bool reset)
{
    struct utsname u;
    uname(&u);
    _cleanup_free_ char *boot_id = NULL;
    if (lfs_read_file("/proc/sys/kernel/random/boot_id", 128, &boot_id, NULL) == 0)
        boot_id[strcspn(boot_id, "\n")] = 0;
    return json_pack("{s:b, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "reset", reset, "role", "guest",
                     "agent", LEDGE_VERSION, "bootId", boot_id ? boot_id : "", "hostname",
                     u.nodename, "kernel", u.release, "arch", u.machine, "address", VM_GUEST_ADDR);
}

static void on_hello(void *ud, const json_t *hello)
{
    struct vm_guest_agent *a = ud;
    if (!lstr_eq(ljson_str(hello, "role"), "host"))
        return;
    log_info(COMP, "host %s greeted us", ljson_str(hello, "name") ?: "?");
    const json_t *shares = json_object_get(hello, "shares");
    size_t i;
    const json_t *s;
    json_array_foreach (shares, i, s)
        mount_share(s);
    if (json_is_true(json_object_get(hello, "reset")))
        vm_mux_send_hello(a->mux, guest_facts(false));
    sd_notify_ready(a, "host greeted");
}

/* The host asks for a clean power-off or reboot: systemd (PID 1) starts poweroff.target on
 * SIGRTMIN+4 and reboot.target on SIGRTMIN+5, no D-Bus or logind needed. */
static void on_event(void *ud, const json_t *ev)
{
    const char *what = ljson_str(ev, "event");
    int sig = lstr_eq(what, "poweroff") ? SIGRTMIN + 4 : lstr_eq(what, "reboot") ? SIGRTMIN + 5 : 0;
    if (!sig) {
        log_debug(COMP, "ignoring event %s", what ? what : "?");
        return;
    }
    log_info(COMP, "the host asks for %s", what);
    if (kill(1, sig) < 0)
        log_warn(COMP, "cannot signal init: %s", strerror(errno));
}

/* ------------------------------------------------------------------ connections */

/* argv/env of an exec request, bounded. */
static int exec_vectors(const json_t *req, struct lstrv *argv, struct lstrv *env, bool tty,
                        struct lerr *err)
{
    const json_t *av = json_object_get(req, "argv");
    if (!json_is_array(av) || json_array_size(av) == 0 || json_array_size(av) > MAX_ARGV)
        return lerr_set(err, -EINVAL, "exec: argv must be an array of 1 to %d strings", MAX_ARGV);
    size_t i;
    const json_t *v;
    json_array_foreach (av, i, v) {
        if (!json_is_string(v))
            return lerr_set(err, -EINVAL, "exec: argv[%zu] must be a string", i);
        if (lstrv_push(argv, json_string_value(v)) < 0)
            return -ENOMEM;
    }
    int r = 0;
    r |= lstrv_push(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    r |= lstrv_push(env, "HOME=/root");
    r |= lstrv_push(env, "LANG=C.UTF-8");
    r |= lstrv_push(env, "LEDGE_HOST=/run/ledge/mgmt.sock");
    if (tty)
        r |= lstrv_printf(env, "TERM=%s", ljson_str(req, "term") ?: "xterm");
    if (r < 0)
        return -ENOMEM;
    const json_t *e = json_object_get(req, "env");
    if (e && (!json_is_object(e) || json_object_size(e) > MAX_ENV))
        return lerr_set(err, -EINVAL, "exec: env must be an object of at most %d strings", MAX_ENV);
    const char *k;
    json_object_foreach ((json_t *)e, k, v) {
        if (!json_is_string(v) || !*k || strchr(k, '='))
            return lerr_set(err, -EINVAL, "exec: env.%s must be a string", k);
        if (lstrv_printf(env, "%s=%s", k, json_string_value(v)) < 0)
            return -ENOMEM;
    }
    return 0;
}

static int spawn_exec(struct vm_mux_conn *c, const json_t *req, struct lerr *err)
{
    bool tty = ljson_bool(req, "tty", false);
    _cleanup_lstrv_ struct lstrv argv = LSTRV_INIT, env = LSTRV_INIT;
    int r = exec_vectors(req, &argv, &env, tty, err);
    if (r < 0)
        return r;
    const char *cwd = ljson_str(req, "cwd") ?: "/";
    int in[2] = {-1, -1}, out[2] = {-1, -1}, errp[2] = {-1, -1}, master = -1, slave = -1;
    if (tty) {
        struct winsize ws = {.ws_row = (unsigned short)ljson_int(req, "rows", 24),
                             .ws_col = (unsigned short)ljson_int(req, "cols", 80)};
        if (openpty(&master, &slave, NULL, NULL, &ws) < 0)
            return lerr_set(err, neg_errno(), "exec: openpty: %s", strerror(errno));
        fcntl(master, F_SETFD, FD_CLOEXEC);
        fcntl(slave, F_SETFD, FD_CLOEXEC);
    } else if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 ||
               pipe2(errp, O_CLOEXEC) < 0) {
        r = lerr_set(err, neg_errno(), "exec: pipe: %s", strerror(errno));
        goto fail;
    }
    pid_t pid = fork();
    if (pid < 0) {
        r = lerr_set(err, neg_errno(), "exec: fork: %s", strerror(errno));
        goto fail;
    }
    if (pid == 0) {
        setsid();
        signal(SIGPIPE, SIG_DFL);
        if (tty) {
            ioctl(slave, TIOCSCTTY, 0);
            dup2(slave, 0);
            dup2(slave, 1);
            dup2(slave, 2);
        } else {
            dup2(in[0], 0);
            dup2(out[1], 1);
            dup2(errp[1], 2);
        }
        if (chdir(cwd) < 0 && chdir("/") < 0)
            _exit(126);
        execvpe(argv.v[0], argv.v, env.v);
        fprintf(stderr, "%s: %s\n", argv.v[0], strerror(errno));
        _exit(errno == ENOENT ? 127 : 126);
    }
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) {
        r = lerr_set(err, neg_errno(), "exec: pidfd_open: %s", strerror(errno));
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        goto fail;
    }
    fcntl(pidfd, F_SETFD, FD_CLOEXEC);
    log_info(COMP, "exec %u: %s (pid %d%s)", vm_mux_conn_id(c), argv.v[0], (int)pid,
             tty ? ", tty" : "");
    if (tty) {
        close(slave);
        return vm_mux_conn_attach_exec(c, pid, pidfd, master, master, -1);
    }
    close(in[0]);
    close(out[1]);
    close(errp[1]);
    return vm_mux_conn_attach_exec(c, pid, pidfd, in[1], out[0], errp[0]);
fail:
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0)
            close(in[i]);
        if (out[i] >= 0)
            close(out[i]);
        if (errp[i] >= 0)
            close(errp[i]);
    }
    if (master >= 0)
        close(master);
    if (slave >= 0)
        close(slave);
    return r;
}

static int on_open(void *ud, struct vm_mux_conn *c, const json_t *req, struct lerr *err)
{
    struct vm_guest_agent *a = ud;
    const char *kind = ljson_str(req, "kind");
    if (lstr_eq(kind, "mgmt") || lstr_eq(kind, "docker")) {
        const char *path = lstr_eq(kind, "mgmt") ? a->mgmt_socket : a->docker_socket;
        int fd = vm_unix_connect(path, 0);
        if (fd < 0)
            return lerr_set(err, fd, "%s: %s", path, strerror(-fd));
        return vm_mux_conn_attach_stream(c, fd);
    }
    if (lstr_eq(kind, "exec"))
        return spawn_exec(c, req, err);
    return lerr_set(err, -EINVAL, "unknown connection kind \"%s\" (mgmt, docker, exec)",
                    kind ? kind : "");
}

/* ------------------------------------------------------------------ the port */

/* /dev/vportNpM whose sysfs name is ours. */
static int find_port(const struct vm_guest_agent *a, char *dev, size_t size)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/class/virtio-ports", a->sysfs);
    DIR *d = opendir(dir);
    if (!d)
        return -ENOENT;
    int r = -ENOENT;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[PATH_MAX + 300];
        snprintf(path, sizeof(path), "%s/%s/name", dir, e->d_name);
        _cleanup_free_ char *name = NULL;
        if (lfs_read_file(path, 256, &name, NULL) < 0)
            continue;
        name[strcspn(name, "\n")] = 0;
        if (lstr_eq(name, a->port_name)) {
            snprintf(dev, size, "/dev/%s", e->d_name);
            r = 0;
            break;
        }
    }
    closedir(d);
    return r;
}

static void schedule_retry(struct vm_guest_agent *a, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_add(a->retry_ev, &tv);
}

static void open_link(struct vm_guest_agent *a)
{
    char dev[PATH_MAX];
    int r = find_port(a, dev, sizeof(dev));
    if (r < 0) {
        if (a->link_errors++ % 30 == 0)
            log_warn(COMP, "no virtio port named %s yet", a->port_name);
        schedule_retry(a, 1000);
        return;
    }
    int fd = open(dev, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (a->link_errors++ % 30 == 0)
            log_warn(COMP, "%s: %s", dev, strerror(errno));
        schedule_retry(a, 1000);
        return;
    }
    if (vm_mux_set_link(a->mux, fd) < 0) {
        schedule_retry(a, 1000);
        return;
    }
    a->link_up = true;
    a->link_errors = 0;
    /* Whoever was there before us is gone: announce a fresh start. */
    vm_mux_send_hello(a->mux, guest_facts(true));
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    open_link(arg);
}

static void on_link_down(void *ud, int err)
{
    struct vm_guest_agent *a = ud;
    /* The port reads EOF while no host is connected: reopen until one is. */
    if (a->link_up)
        log_info(COMP, "host side closed (%s); waiting for it", strerror(-err));
    a->link_up = false;
    schedule_retry(a, 500);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct vm_guest_agent *a = arg;
    vm_mux_send_event(a->mux, json_pack("{s:s}", "event", "shutdown"));
    event_base_loopexit(a->base, NULL);
}

static void usage(FILE *out)
{
    fprintf(out, "Usage: ledge-vm-agent [--port NAME] [--mgmt-socket PATH] [--docker-socket PATH]\n"
                 "The guest end of ledge's host-guest channel (see docs/vm.md).\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"port", required_argument, NULL, 'p'},
        {"mgmt-socket", required_argument, NULL, 'm'},
        {"docker-socket", required_argument, NULL, 'd'},
        {"sysfs", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    struct vm_guest_agent a = {
        .port_name = VM_CHANNEL_NAME,
        .mgmt_socket = "/run/ledge/mgmt.sock",
        .docker_socket = "/run/docker.sock",
        .sysfs = "/sys",
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            a.port_name = optarg;
            break;
        case 'm':
            a.mgmt_socket = optarg;
            break;
        case 'd':
            a.docker_socket = optarg;
            break;
        case 's':
            a.sysfs = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    log_set_ident("ledge-vm-agent");
    signal(SIGPIPE, SIG_IGN);
    a.base = event_base_new();
    static const struct vm_mux_ops ops = {
        .on_hello = on_hello,
        .on_open = on_open,
        .on_event = on_event,
        .on_link_down = on_link_down,
    };
    if (!a.base || vm_mux_new(a.base, VM_MUX_GUEST, NULL, &ops, &a, &a.mux) < 0) {
        log_error(COMP, "out of memory");
        return 1;
    }
    a.retry_ev = evtimer_new(a.base, retry_cb, &a);
    a.notify_ev = evtimer_new(a.base, notify_timeout_cb, &a);
    struct event *sigterm = evsignal_new(a.base, SIGTERM, on_signal, &a);
    struct event *sigint = evsignal_new(a.base, SIGINT, on_signal, &a);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);
    /* Don't hold ledged back for long when no host is listening. */
    struct timeval tv = {3, 0};
    event_add(a.notify_ev, &tv);
    open_link(&a);
    event_base_dispatch(a.base);
    vm_mux_free(a.mux);
    event_free(a.retry_ev);
    event_free(a.notify_ev);
    event_free(sigterm);
    event_free(sigint);
    event_base_free(a.base);
    return 0;
}
