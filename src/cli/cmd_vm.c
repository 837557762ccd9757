/* cmd_vm.c — `ledge vm ...` (VMs that run the runtime: create, start/stop, exec, ports, shares,
 * images; docs/vm.md), `ledge --vm NAME image load`, and running CLI-side verbs (`check`) inside
 * a guest: argument parsing and printing over the VM library (vm/host.h, vm/exec.h, vm/image.h),
 * which does the work. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "commands.h"
#include "config/config.h"
#include "vm/def.h"
#include "vm/exec.h"
#include "vm/host.h"
#include "vm/image.h"
#include "vm/paths.h"
#include "vm/self.h"
#include "vm/update.h"

struct vmctx {
    struct cli *c;
    struct vm_host h; /* the VMs' directory and the image cache */
};

/* ------------------------------------------------------------------ helpers */

static int vm_usage(const char *fmt, ...) _printf_(1, 2);
static int vm_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ledge vm: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fputs("see `ledge vm help`\n", stderr);
    return 2;
}

static int fail(const struct lerr *err)
{
    return cli_fail("%s", lerr_str(err));
}

static void print_json(const json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    printf("%s\n", s ? s : "null");
    free(s);
}

/* Parse "--opt VALUE" or "--opt=VALUE"; advances *i. */
static const char *opt_value(int argc, char **argv, int *i, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) == 0 && argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (strcmp(argv[*i], name) == 0 && *i + 1 < argc)
        return argv[++*i];
    return NULL;
}

/* ------------------------------------------------------------------ exec sessions */

static volatile sig_atomic_t winch;
static void on_winch(int sig)
{
    winch = 1;
}

static bool terminal_resized(void *ud, unsigned *rows, unsigned *cols)
{
    struct winsize ws;
    if (!winch)
        return false;
    winch = 0;
    if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) < 0)
        return false;
    *rows = ws.ws_row;
    *cols = ws.ws_col;
    return true;
}

/* Run argv in the guest with our stdout and stderr (and in_fd as its stdin, -1 for none); with
 * tty, in a pty sized like our terminal, which is raw meanwhile. The command's exit code, or 1
 * when the session failed (message printed). */
static int run_in_guest(struct vmctx *x, const char *name, char **argv, size_t argc, bool tty,
                        int in_fd)
{
    struct vm_exec_request req = {.argv = argv, .argc = argc, .tty = tty};
    struct vm_exec_io io = {.in_fd = in_fd, .out_fd = STDOUT_FILENO, .err_fd = STDERR_FILENO};
    struct termios saved;
    bool raw = false;
    if (tty) {
        struct winsize ws;
        if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0) {
            req.rows = ws.ws_row;
            req.cols = ws.ws_col;
        }
        req.term = getenv("TERM");
        if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0) {
            struct termios t = saved;
            cfmakeraw(&t);
            raw = tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0;
            signal(SIGWINCH, on_winch);
            io.resized = terminal_resized;
        }
    }
    struct lerr err = {0};
    int code = 1;
    int r = vm_exec(&x->h, name, &req, &io, &code, &err);
    if (raw)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    return r < 0 ? fail(&err) : code;
}

/* ------------------------------------------------------------------ printing */

static void print_status_line(const json_t *s)
{
    const json_t *boot = json_object_get(s, "boot");
    printf("%s: %s", ljson_str(s, "name"), ljson_str(s, "state"));
    if (json_object_get(boot, "runtimeMs"))
        printf(" (guest runtime answered %.1f s after boot start",
               (double)ljson_int(boot, "runtimeMs", 0) / 1000);
    if (json_object_get(boot, "engineMs"))
        printf(", engine %.1f s", (double)ljson_int(boot, "engineMs", 0) / 1000);
    if (json_object_get(boot, "runtimeMs"))
        printf(")");
    printf("; %s\n", ljson_str(s, "accelDetail") ?: ljson_str(s, "accel"));
    if (ljson_str(s, "lastError"))
        printf("  last error: %s\n", ljson_str(s, "lastError"));
}

/* One forward as the supervisor reports it (GET /ports, status "ports"). */
static void print_port(const char *indent, const json_t *p)
{
    printf("%s%-28s %-7s %s", indent, ljson_str(p, "spec"), ljson_str(p, "source"),
           ljson_str(p, "state"));
    if (ljson_str(p, "module"))
        printf(" (module %s)", ljson_str(p, "module"));
    if (ljson_str(p, "error"))
        printf(": %s", ljson_str(p, "error"));
    printf("\n");
}

static void print_shares(const char *indent, const struct vm_def *d)
{
    for (size_t i = 0; i < d->n_shares; i++)
        printf("%s%s -> %s%s\n", indent, d->shares[i].host_dir, d->shares[i].guest_dir,
               d->shares[i].read_only ? " (read-only)" : "");
}

static void print_status(const struct vm_def *d, const json_t *s)
{
    char a[32], b[32];
    const char *state = s ? ljson_str(s, "state") : "stopped";
    printf("%s: %s\n", d->name, state);
    printf("  %s, %d vCPU, %s memory, %s disk, accelerator %s%s%s\n", vm_arch_name(d->arch),
           d->cpus, vm_size_format(d->memory, a, sizeof(a)), vm_size_format(d->disk, b, sizeof(b)),
           vm_accel_name(d->accel), s ? ": " : "", s ? ljson_str(s, "accelDetail") : "");
    printf("  autostart %s, image %s, engine %s\n", d->autostart ? "on" : "off",
           d->image ? d->image : "?", vm_engine_name(d->engine));
    if (s) {
        const json_t *boot = json_object_get(s, "boot");
        printf("  address %s; the host is %s (10.0.2.2) from the guest and its modules\n",
               ljson_str(s, "address"), ljson_str(s, "hostAlias"));
        if (json_object_size(boot)) {
            printf("  boot: agent %.1f s, runtime %.1f s", ljson_int(boot, "agentMs", -1) / 1000.0,
                   ljson_int(boot, "runtimeMs", -1) / 1000.0);
            if (json_object_get(boot, "engineMs"))
                printf(", engine %.1f s", ljson_int(boot, "engineMs", -1) / 1000.0);
            else
                printf(", engine not connected yet");
            printf(" (boot #%lld)\n", ljson_int(s, "boots", 0));
        }
        const json_t *socks = json_object_get(s, "sockets");
        printf("  runtime API: %s  (ledge --vm %s ..., or LEDGE_HOST)\n", ljson_str(socks, "api"),
               d->name);
        if (d->engine == VM_ENGINE_DOCKER)
            printf("  Docker API:  %s  (docker -H unix://...)\n", ljson_str(socks, "docker"));
        printf("  supervisor pid %lld, QEMU pid %lld%s\n", ljson_int(s, "supervisorPid", 0),
               ljson_int(s, "qemuPid", 0), ljson_bool(s, "adopted", false) ? " (adopted)" : "");
        if (ljson_str(s, "lastError"))
            printf("  last error: %s\n", ljson_str(s, "lastError"));
    }
    printf("  ports:");
    if (s) {
        const json_t *ports = json_object_get(s, "ports");
        size_t i;
        const json_t *p;
        if (!json_array_size(ports))
            printf(" none");
        printf("\n");
        json_array_foreach (ports, i, p)
            print_port("    ", p);
    } else {
        printf("%s\n", d->n_ports || d->hub_port ? "" : " none");
        char buf[96];
        if (d->hub_port)
            printf("    127.0.0.1:%u->8883/tcp       hub\n", d->hub_port);
        for (size_t i = 0; i < d->n_ports; i++)
            printf("    %s\n", vm_port_format(&d->ports[i], buf, sizeof(buf)));
    }
    printf("  shares:%s\n", d->n_shares ? "" : " none");
    print_shares("    ", d);
}

/* ------------------------------------------------------------------ verbs */

static int vm_start_cmd(struct vmctx *x, int argc, char **argv);

/* This ledge's own package for a guest of arch (self.h): its path in deb; -ENOENT when there is
 * none to make (err says why), other < 0 when making it failed. Progress on stderr. */
static int self_deb_find(struct vmctx *x, enum vm_arch arch, char *deb, size_t size,
                         struct lerr *err)
{
    struct vm_self s;
    int r = vm_self_find(NULL, arch, &s, err);
    if (r < 0)
        return r;
    fprintf(stderr, "ledge vm: building the guest image from %s\n", s.what);
    if ((r = vm_self_deb(&s, x->h.cache, NULL, deb, size, err)) < 0)
        return r == -ENOENT ? -EIO : r;
    fprintf(stderr, "ledge vm: ledge's package: %s\n", deb);
    return 0;
}

static int vm_create_cmd(struct vmctx *x, int argc, char **argv)
{
    const char *name = NULL, *deb = getenv("LEDGE_VM_DEB"), *image = NULL, *v;
    struct vm_def d;
    struct lerr err = {0};
    bool start = false, have_arch = false, have_engine = false;
    enum vm_arch arch = VM_ARCH_AMD64;
    enum vm_engine engine = VM_ENGINE_DOCKER;
    vm_arch_host(&arch);
    uint64_t mem = VM_DEFAULT_MEMORY, disk = VM_DEFAULT_DISK;
    long long cpus = VM_DEFAULT_CPUS, hub = VM_DEFAULT_HUB_PORT, boot = VM_DEFAULT_BOOT_TIMEOUT_S;
    enum vm_accel accel = VM_ACCEL_AUTO;
    bool autostart = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if ((v = opt_value(argc, argv, &i, "--memory"))) {
            if (vm_size_parse(v, &mem) < 0)
                return vm_usage("--memory %s: a size such as 1024M or 2G", v);
        } else if ((v = opt_value(argc, argv, &i, "--disk"))) {
            if (vm_size_parse(v, &disk) < 0)
                return vm_usage("--disk %s: a size such as 10G", v);
        } else if ((v = opt_value(argc, argv, &i, "--cpus"))) {
            if (lstr_to_i64(v, &cpus) < 0)
                return vm_usage("--cpus %s: a number", v);
        } else if ((v = opt_value(argc, argv, &i, "--arch"))) {
            if (vm_arch_parse(v, &arch) < 0)
                return vm_usage("--arch %s: amd64 or arm64", v);
            have_arch = true;
        } else if ((v = opt_value(argc, argv, &i, "--engine"))) {
            if (vm_engine_parse(v, &engine) < 0)
                return vm_usage("--engine %s: docker (Moby in the guest) or oci (crun, no "
                                "dockerd)",
                                v);
            have_engine = true;
        } else if ((v = opt_value(argc, argv, &i, "--accel"))) {
            if (vm_accel_parse(v, &accel) < 0)
                return vm_usage("--accel %s: auto, kvm or tcg", v);
        } else if ((v = opt_value(argc, argv, &i, "--hub-port"))) {
            if (lstr_to_i64(v, &hub) < 0 || hub < 0 || hub > 65535)
                return vm_usage("--hub-port %s: 0 (none) to 65535", v);
        } else if ((v = opt_value(argc, argv, &i, "--boot-timeout"))) {
            if (lstr_to_i64(v, &boot) < 0)
                return vm_usage("--boot-timeout %s: seconds", v);
        } else if ((v = opt_value(argc, argv, &i, "--deb"))) {
            deb = v;
        } else if ((v = opt_value(argc, argv, &i, "--image"))) {
            image = v;
        } else if (strcmp(a, "--autostart") == 0) {
            autostart = true;
        } else if (strcmp(a, "--start") == 0) {
            start = true;
        } else if (a[0] == '-' || name) {
            return vm_usage("create: unexpected \"%s\"", a);
        } else {
            name = a;
        }
    }
    if (!name)
        return vm_usage("create: which NAME?");
    if (vm_def_init(&d, name, &err) < 0)
        return fail(&err);
    d.arch = arch;
    d.engine = engine;
    d.memory = mem;
    d.disk = disk;
    d.cpus = (int)MIN(cpus, (long long)INT32_MAX);
    d.accel = accel;
    d.hub_port = (uint16_t)hub;
    d.boot_timeout_s = (int)MIN(boot, 100000LL);
    d.autostart = autostart;
    char self_deb[PATH_MAX];
    struct lerr self_err = {0};
    bool from_self = false;
    if (!image && !(deb && *deb)) {
        /* Neither given: the guest runs this ledge (its build tree's package, or the installed
         * package), else the newest cached image (an imported one) when there is one. */
        int k = self_deb_find(x, d.arch, self_deb, sizeof(self_deb), &self_err);
        if (k == 0)
            deb = self_deb;
        else if (k == -ENOENT)
            from_self = true;
        else {
            vm_def_free(&d);
            return fail(&self_err);
        }
    }
    int r = vm_host_create(&x->h, &d, image, deb, have_arch, have_engine, &err);
    if (r < 0) {
        vm_def_free(&d);
        return from_self && r == -ENOENT ? fail(&self_err) : fail(&err);
    }
    if (from_self)
        fprintf(stderr, "ledge vm: %s; used the newest cached image\n", lerr_str(&self_err));
    char a[32], b[32];
    printf("created VM %s: %s, %d vCPU, %s memory, %s disk, image %s, engine %s\n", name,
           vm_arch_name(d.arch), d.cpus, vm_size_format(d.memory, a, sizeof(a)),
           vm_size_format(d.disk, b, sizeof(b)), d.image, vm_engine_name(d.engine));
    vm_def_free(&d);
    if (!start) {
        printf("start it with: ledge vm start %s\n", name);
        return 0;
    }
    char *sargv[] = {"start", (char *)name, NULL};
    return vm_start_cmd(x, 2, sargv);
}

/* Start the VM's supervisor; when it could not, say why with the end of its log. */
static int start_supervisor(struct vmctx *x, const char *name)
{
    struct lerr err = {0};
    if (vm_host_start(&x->h, name, &err) == 0)
        return 0;
    fail(&err);
    _cleanup_free_ char *tail = NULL;
    size_t n;
    if (err.code == -EIO &&
        vm_host_log_tail(&x->h, name, VM_FILE_VMM_LOG, 20, &tail, &n, NULL) == 0 && n)
        fprintf(stderr, "its log ends with:\n%s", tail);
    return 1;
}

static int vm_start_cmd(struct vmctx *x, int argc, char **argv)
{
    const char *name = NULL, *v;
    bool wait = true;
    long long timeout = 600;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--no-wait") == 0)
            wait = false;
        else if ((v = opt_value(argc, argv, &i, "--timeout"))) {
            if (lstr_to_i64(v, &timeout) < 0 || timeout < 1)
                return vm_usage("--timeout %s: seconds", v);
        } else if (argv[i][0] == '-' || name)
            return vm_usage("start: unexpected \"%s\"", argv[i]);
        else
            name = argv[i];
    }
    if (!name)
        return vm_usage("start: which NAME?");
    int64_t t0 = ltime_mono_ms();
    if (start_supervisor(x, name) != 0)
        return 1;
    if (!wait) {
        printf("%s: starting\n", name);
        return 0;
    }
    struct lerr err = {0};
    _cleanup_json_ json_t *s = NULL;
    if (vm_host_wait(&x->h, name, "running", (int)MIN(timeout, 86400LL), &s, &err) < 0)
        return fail(&err);
    int rc = lstr_eq(ljson_str(s, "state"), "running") ? 0 : 1;
    print_status_line(s);
    if (rc == 0)
        printf("  ready %.1f s after `ledge vm start`; use it with: ledge --vm %s list\n",
               (ltime_mono_ms() - t0) / 1000.0, name);
    else
        fprintf(stderr, "ledge: %s did not come up (console: %s/%s/%s)\n", name, x->h.root, name,
                VM_FILE_CONSOLE);
    return rc;
}

static int one_name(int argc, char **argv, const char *verb, const char **ret, long long *timeout)
{
    const char *v;
    *ret = NULL;
    for (int i = 1; i < argc; i++) {
        if (timeout && (v = opt_value(argc, argv, &i, "--timeout"))) {
            if (lstr_to_i64(v, timeout) < 0 || *timeout < 1)
                return vm_usage("--timeout %s: seconds", v);
        } else if (argv[i][0] == '-' || *ret) {
            return vm_usage("%s: unexpected \"%s\"", verb, argv[i]);
        } else {
            *ret = argv[i];
        }
    }
    if (!*ret)
        return vm_usage("%s: which NAME?", verb);
    return 0;
}

/* Fails (message printed) unless name is a defined VM. */
static int require_vm(struct vmctx *x, const char *name)
{
    struct vm_def d;
    struct lerr err = {0};
    if (vm_host_load(&x->h, name, &d, &err) < 0)
        return fail(&err);
    vm_def_free(&d);
    return 0;
}

static int do_stop(struct vmctx *x, const char *name, long long timeout, bool quiet_if_stopped)
{
    struct lerr err = {0};
    _cleanup_json_ json_t *j = NULL;
    int r = vm_host_stop(&x->h, name, (int)timeout, &j, &err);
    if (r == -ENOTCONN) {
        if (!quiet_if_stopped)
            printf("%s is not running\n", name);
        return 0;
    }
    if (r < 0)
        return fail(&err);
    printf("%s: %s\n", name, ljson_str(j, "state"));
    return 0;
}

static int vm_stop_cmd(struct vmctx *x, int argc, char **argv)
{
    const char *name;
    long long timeout = 90;
    int r = one_name(argc, argv, "stop", &name, &timeout);
    if (r)
        return r;
    if (require_vm(x, name))
        return 1;
    return do_stop(x, name, MIN(timeout, 3600LL), false);
}

static int vm_restart_cmd(struct vmctx *x, int argc, char **argv)
{
    const char *name;
    long long timeout = 90;
    int r = one_name(argc, argv, "restart", &name, &timeout);
    if (r)
        return r;
    if (require_vm(x, name))
        return 1;
    if ((r = do_stop(x, name, MIN(timeout, 3600LL), true)) != 0)
        return r;
    char *sargv[] = {"start", (char *)name, NULL};
    return vm_start_cmd(x, 2, sargv);
}

static int vm_reboot_cmd(struct vmctx *x, int argc, char **argv)
{
    const char *name;
    int r = one_name(argc, argv, "reboot", &name, NULL);
    if (r)
        return r;
    struct lerr err = {0};
    if (vm_host_reboot(&x->h, name, &err) < 0)
        return fail(&err);
    printf("%s: rebooting the guest\n", name);
    return 0;
}

static int vm_status_cmd(struct vmctx *x, int argc, char **argv)
{
    const char *name = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            x->c->json = true;
        else if (argv[i][0] == '-' || name)
            return vm_usage("status: unexpected \"%s\"", argv[i]);
        else
            name = argv[i];
    }
    if (!name)
        return vm_usage("status: which NAME?");
    struct vm_info info;
    struct lerr err = {0};
    if (vm_host_info(&x->h, name, &info, &err) < 0)
        return fail(&err);
    if (x->c->json) {
        json_t *o = info.status ? json_incref(info.status)
                                : json_pack("{s:s, s:s}", "name", name, "state", "stopped");
        json_object_set_new(o, "definition", vm_def_to_json(&info.def));
        print_json(o);
        json_decref(o);
    } else {
        print_status(&info.def, info.status);
    }
    vm_info_clear(&info);
    return 0;
}

static int vm_list_cmd(struct vmctx *x, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            x->c->json = true;
        else
            return vm_usage("list: unexpected \"%s\"", argv[i]);
    }
    struct vm_info *v = NULL;
    size_t n = 0;
    struct lerr err = {0};
    if (vm_host_list(&x->h, &v, &n, &err) < 0)
        return fail(&err);
    if (x->c->json) {
        json_t *out = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(out, vm_info_json(&v[i]));
        print_json(out);
        json_decref(out);
    } else {
        printf("%-20s %-9s %-6s %-5s %-9s %-9s %-24s %s\n", "NAME", "STATE", "ARCH", "CPUS",
               "MEMORY", "DISK", "ACCEL", "AUTOSTART");
        for (size_t i = 0; i < n; i++) {
            const struct vm_def *d = &v[i].def;
            const char *accel = v[i].status ? ljson_str(v[i].status, "accel") : NULL;
            char a[32], b[32];
            printf("%-20s %-9s %-6s %-5d %-9s %-9s %-24s %s\n", d->name, vm_info_state(&v[i]),
                   vm_arch_name(d->arch), d->cpus, vm_size_format(d->memory, a, sizeof(a)),
                   vm_size_format(d->disk, b, sizeof(b)), accel ? accel : vm_accel_name(d->accel),
                   d->autostart ? "on" : "off");
        }
    }
    vm_infos_free(v, n);
    return 0;
}

static int vm_delete_cmd(struct vmctx *x, int argc, char **argv)
{
    const char *name = NULL;
    bool force = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--force") == 0 || strcmp(argv[i], "-f") == 0)
            force = true;
        else if (argv[i][0] == '-' || name)
            return vm_usage("delete: unexpected \"%s\"", argv[i]);
        else
            name = argv[i];
    }
    if (!name)
        return vm_usage("delete: which NAME?");
    if (require_vm(x, name))
        return 1;
    if (force && vm_host_running(&x->h, name) && do_stop(x, name, 60, true) != 0)
        return 1;
    struct lerr err = {0};
    if (vm_host_delete(&x->h, name, force, &err) < 0)
        return fail(&err);
    printf("deleted VM %s\n", name);
    return 0;
}

/* set NAME --OPTION VALUE...: the options applied to d; 0, or the exit code of a usage error. */
static int set_options(struct vm_def *d, int argc, char **argv)
{
    const char *v;
    int changes = 0;
    for (int i = 2; i < argc; i++) {
        long long n;
        if ((v = opt_value(argc, argv, &i, "--memory"))) {
            if (vm_size_parse(v, &d->memory) < 0)
                return vm_usage("--memory %s: a size such as 2G", v);
        } else if ((v = opt_value(argc, argv, &i, "--cpus"))) {
            if (lstr_to_i64(v, &n) < 0 || n < 1 || n > VM_MAX_CPUS)
                return vm_usage("--cpus %s: 1 to %d", v, VM_MAX_CPUS);
            d->cpus = (int)n;
        } else if ((v = opt_value(argc, argv, &i, "--disk"))) {
            if (vm_size_parse(v, &d->disk) < 0)
                return vm_usage("--disk %s: a size such as 20G", v);
        } else if ((v = opt_value(argc, argv, &i, "--accel"))) {
            if (vm_accel_parse(v, &d->accel) < 0)
                return vm_usage("--accel %s: auto, kvm or tcg", v);
        } else if ((v = opt_value(argc, argv, &i, "--autostart"))) {
            if (!lstr_eq(v, "on") && !lstr_eq(v, "off"))
                return vm_usage("--autostart %s: on or off", v);
            d->autostart = lstr_eq(v, "on");
        } else if ((v = opt_value(argc, argv, &i, "--hub-port"))) {
            if (lstr_to_i64(v, &n) < 0 || n < 0 || n > 65535)
                return vm_usage("--hub-port %s: 0 to 65535", v);
            d->hub_port = (uint16_t)n;
        } else if ((v = opt_value(argc, argv, &i, "--boot-timeout"))) {
            if (lstr_to_i64(v, &n) < 0)
                return vm_usage("--boot-timeout %s: seconds", v);
            d->boot_timeout_s = (int)MIN(n, 100000LL);
        } else {
            return vm_usage("set: unexpected \"%s\"", argv[i]);
        }
        changes++;
    }
    if (!changes)
        return vm_usage("set: nothing to change (--memory, --cpus, --disk, --accel, --autostart, "
                        "--hub-port, --boot-timeout)");
    return 0;
}

static int vm_set_cmd(struct vmctx *x, int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-')
        return vm_usage("set: usage: ledge vm set NAME [--memory M] [--cpus N] [--disk D] ...");
    const char *name = argv[1];
    struct vm_def d;
    struct lerr err = {0};
    if (vm_host_load(&x->h, name, &d, &err) < 0)
        return fail(&err);
    int rc = set_options(&d, argc, argv);
    if (rc == 0 && vm_host_set(&x->h, &d, &err) < 0)
        rc = fail(&err);
    if (rc == 0) {
        char a[32], b[32];
        printf("%s: %d vCPU, %s memory, %s disk, accelerator %s, autostart %s (from the next "
               "start)\n",
               name, d.cpus, vm_size_format(d.memory, a, sizeof(a)),
               vm_size_format(d.disk, b, sizeof(b)), vm_accel_name(d.accel),
               d.autostart ? "on" : "off");
    }
    vm_def_free(&d);
    return rc;
}

static int vm_exec_cmd(struct vmctx *x, int argc, char **argv)
{
    const char *name = NULL;
    bool tty = false;
    int i = 1;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        }
        if (strcmp(argv[i], "-t") == 0 || strcmp(argv[i], "--tty") == 0)
            tty = true;
        else if (argv[i][0] == '-')
            return vm_usage("exec: unexpected \"%s\"", argv[i]);
        else if (!name)
            name = argv[i];
        else
            break; /* the command, without "--" */
    }
    if (!name || i >= argc)
        return vm_usage("exec: usage: ledge vm exec NAME [-t] -- COMMAND [ARGS...]");
    return run_in_guest(x, name, argv + i, (size_t)(argc - i), tty, STDIN_FILENO);
}

static int vm_shell_cmd(struct vmctx *x, int argc, char **argv)
{
    const char *name;
    int r = one_name(argc, argv, "shell", &name, NULL);
    if (r)
        return r;
    char *sh[] = {"/bin/bash", "-l"};
    return run_in_guest(x, name, sh, 2, isatty(STDIN_FILENO), STDIN_FILENO);
}

static int vm_logs_cmd(struct vmctx *x, int argc, char **argv)
{
    const char *name = NULL, *v;
    bool console = true, runtime = true, follow = false;
    long long lines = 200;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--console") == 0)
            runtime = false;
        else if (strcmp(argv[i], "--runtime") == 0)
            console = false;
        else if (strcmp(argv[i], "-f") == 0 || strcmp(argv[i], "--follow") == 0)
            follow = true;
        else if ((v = opt_value(argc, argv, &i, "--tail")) ||
                 (v = opt_value(argc, argv, &i, "-n"))) {
            if (lstr_to_i64(v, &lines) < 0 || lines < 1)
                return vm_usage("--tail %s: a number of lines", v);
        } else if (argv[i][0] == '-' || name)
            return vm_usage("logs: unexpected \"%s\"", argv[i]);
        else
            name = argv[i];
    }
    if (!name)
        return vm_usage("logs: which NAME?");
    if (require_vm(x, name))
        return 1;
    if (console) {
        const char *files[] = {VM_FILE_VMM_LOG, VM_FILE_CONSOLE};
        for (size_t k = 0; k < ARRAY_SIZE(files); k++) {
            char p[PATH_MAX];
            _cleanup_free_ char *text = NULL;
            size_t n;
            if (vm_host_log_tail(&x->h, name, files[k], (size_t)lines, &text, &n, NULL) < 0)
                continue;
            vm_path(p, sizeof(p), x->h.root, name, files[k]);
            printf("==> %s <==\n%s", p, text);
            if (n && text[n - 1] != '\n')
                printf("\n");
        }
    }
    if (runtime) {
        if (!vm_host_running(&x->h, name)) {
            printf("==> the guest's ledged: %s is not running <==\n", name);
            return 0;
        }
        printf("==> the guest's ledged (journalctl -u ledged) <==\n");
        fflush(stdout);
        char nbuf[32];
        snprintf(nbuf, sizeof(nbuf), "%lld", lines);
        char *jargv[] = {
            "journalctl",     "--no-pager", "-o", "short-precise",     "-u", "ledged", "-u",
            "ledge-vm-agent", "-n",         nbuf, follow ? "-f" : NULL};
        return run_in_guest(x, name, jargv, follow ? 11 : 10, false, -1);
    }
    return 0;
}

/* port add|remove|list NAME [SPEC] */
static int vm_port_cmd(struct vmctx *x, int argc, char **argv)
{
    if (argc < 3)
        return vm_usage("port: add|remove|list NAME [[ADDR:]HOSTPORT:GUESTPORT[/udp]]");
    const char *op = argv[1], *name = argv[2], *spec = argc > 3 ? argv[3] : NULL;
    struct lerr err = {0};
    char buf[96];
    if (lstr_eq(op, "list")) {
        struct vm_def d;
        if (vm_host_load(&x->h, name, &d, &err) < 0)
            return fail(&err);
        _cleanup_json_ json_t *j = NULL;
        if (vm_host_running(&x->h, name) && vm_host_ports(&x->h, name, &j, NULL) == 0) {
            size_t i;
            const json_t *p;
            if (x->c->json)
                print_json(j);
            else
                json_array_foreach (j, i, p)
                    print_port("", p);
        } else {
            if (d.hub_port)
                printf("127.0.0.1:%u->8883/tcp       hub\n", d.hub_port);
            for (size_t i = 0; i < d.n_ports; i++)
                printf("%-28s manual\n", vm_port_format(&d.ports[i], buf, sizeof(buf)));
        }
        vm_def_free(&d);
        return 0;
    }
    bool add = lstr_eq(op, "add");
    if (!add && !lstr_eq(op, "remove"))
        return vm_usage("port: add, remove or list");
    if (require_vm(x, name))
        return 1;
    if (!spec)
        return vm_usage("port %s: which [ADDR:]HOSTPORT:GUESTPORT?", op);
    struct vm_port p;
    bool live = false;
    int r = add ? vm_host_port_add(&x->h, name, spec, &p, &live, &err)
                : vm_host_port_remove(&x->h, name, spec, &p, &live, &err);
    if (r < 0)
        return fail(&err);
    if (live)
        printf("%s %s\n", add ? "forwarding" : "removed", vm_port_format(&p, buf, sizeof(buf)));
    else
        printf("%s %s (from the next start)\n", add ? "added" : "removed",
               vm_port_format(&p, buf, sizeof(buf)));
    return 0;
}

/* share add|remove|list NAME [HOSTDIR GUESTDIR] [--ro] */
static int vm_share_cmd(struct vmctx *x, int argc, char **argv)
{
    if (argc < 3)
        return vm_usage("share: add|remove|list NAME [HOSTDIR GUESTDIR] [--ro]");
    const char *op = argv[1], *name = argv[2], *host = NULL, *guest = NULL;
    bool ro = false;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--ro") == 0 || strcmp(argv[i], "--read-only") == 0)
            ro = true;
        else if (!host)
            host = argv[i];
        else if (!guest)
            guest = argv[i];
        else
            return vm_usage("share: unexpected \"%s\"", argv[i]);
    }
    struct lerr err = {0};
    bool running = false;
    if (lstr_eq(op, "list")) {
        struct vm_def d;
        if (vm_host_load(&x->h, name, &d, &err) < 0)
            return fail(&err);
        print_shares("", &d);
        vm_def_free(&d);
        return 0;
    }
    if (lstr_eq(op, "add")) {
        if (require_vm(x, name))
            return 1;
        if (!host || !guest)
            return vm_usage("share add NAME HOSTDIR GUESTDIR [--ro]");
        char real[PATH_MAX];
        if (vm_host_share_add(&x->h, name, host, guest, ro, real, sizeof(real), &running, &err) < 0)
            return fail(&err);
        printf("sharing %s as %s in %s%s\n", real, guest, name,
               running ? " from the next start (ledge vm restart)" : "");
        return 0;
    }
    if (lstr_eq(op, "remove")) {
        if (require_vm(x, name))
            return 1;
        if (!host)
            return vm_usage("share remove NAME GUESTDIR (or HOSTDIR GUESTDIR)");
        if (vm_host_share_remove(&x->h, name, host, guest, &running, &err) < 0)
            return fail(&err);
        printf("removed the share%s\n", running ? " (from the next start)" : "");
        return 0;
    }
    return vm_usage("share: add, remove or list");
}

/* image build|list|export|import|rm */
static int vm_image_cmd(struct vmctx *x, int argc, char **argv)
{
    const char *op = argc > 1 ? argv[1] : NULL;
    const char *cache = x->h.cache;
    struct lerr err = {0};
    if (lstr_eq(op, "list")) {
        _cleanup_json_ json_t *list = vm_image_list(cache);
        if (x->c->json || (argc > 2 && strcmp(argv[2], "--json") == 0)) {
            print_json(list);
            return 0;
        }
        printf("%-24s %-6s %-6s %-22s %-12s %s\n", "KEY", "ARCH", "ENGINE", "BUILT", "LEDGE",
               "KERNEL");
        size_t i;
        const json_t *m;
        json_array_foreach (list, i, m)
            printf("%-24s %-6s %-6s %-22s %-12s %s\n", ljson_str(m, "key"), ljson_str(m, "arch"),
                   ljson_str(m, "engine") ?: "docker", ljson_str(m, "built") ?: "",
                   ljson_str(m, "ledge") ?: "", ljson_str(m, "kernel") ?: "");
        return 0;
    }
    if (lstr_eq(op, "build")) {
        char key[128];
        _cleanup_lbuf_ struct lbuf out = LBUF_INIT;
        if (vm_image_build(cache, argv + 2, (size_t)(argc - 2), key, sizeof(key), &out, &err) < 0)
            return fail(&err);
        fwrite(out.data ? out.data : "", 1, out.len, stdout);
        return 0;
    }
    if (lstr_eq(op, "export")) {
        if (argc != 4)
            return vm_usage("image export KEY FILE (a .tar; FILE - for stdout)");
        if (vm_image_export(cache, argv[2], argv[3], &err) < 0)
            return fail(&err);
        if (strcmp(argv[3], "-") != 0)
            fprintf(stderr, "exported image %s to %s\n", argv[2], argv[3]);
        return 0;
    }
    if (lstr_eq(op, "import")) {
        if (argc != 3)
            return vm_usage("image import FILE (made by `ledge vm image export`)");
        char key[128];
        _cleanup_json_ json_t *m = NULL;
        if (vm_image_import(cache, argv[2], key, sizeof(key), &err) < 0 ||
            vm_image_manifest(cache, key, &m, &err) < 0)
            return fail(&err);
        printf("imported image %s (%s, ledge %s)\n", key, ljson_str(m, "arch"),
               ljson_str(m, "ledge") ?: "?");
        return 0;
    }
    if (lstr_eq(op, "rm")) {
        if (argc != 3)
            return vm_usage("image rm KEY");
        if (vm_image_remove(cache, argv[2], &err) < 0)
            return fail(&err);
        printf("removed image %s\n", argv[2]);
        return 0;
    }
    return vm_usage(
        "image: build [--arch A] [--engine E] --deb FILE | list | export KEY FILE | import FILE | "
        "rm KEY");
}

/* check [NAME] [--json]: the vm group of `ledge check` (src/check/vm.c). */
static int vm_check_cmd(struct vmctx *x, int argc, char **argv)
{
    struct vm_def d;
    struct lerr err = {0};
    bool have = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            x->c->json = true;
        } else if (!have && argv[i][0] != '-') {
            if (vm_host_load(&x->h, argv[i], &d, &err) < 0)
                return fail(&err);
            have = true;
        } else {
            if (have)
                vm_def_free(&d);
            return vm_usage("check: unexpected \"%s\"", argv[i]);
        }
    }
    const char *config = getenv("LEDGE_CONFIG");
    struct cli_check_opts o = {
        .config_path = config && *config ? config : NULL,
        .json = x->c->json,
        .verbose = true,
        .group = "vm",
        .vm_dir = x->h.root,
        .vm_def = have ? &d : NULL,
        .vm_always = true,
    };
    int rc = cli_check_run(x->c, &o);
    if (have)
        vm_def_free(&d);
    return rc;
}

static void say_line(void *ud, const char *line)
{
    (void)ud;
    fprintf(stderr, "ledge vm update: %s\n", line);
}

static int vm_update_cmd(struct vmctx *x, int argc, char **argv)
{
    const char *name = NULL, *deb = NULL, *image = NULL, *v;
    bool resume = false, status = false;
    long long timeout = 600;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if ((v = opt_value(argc, argv, &i, "--deb"))) {
            deb = v;
        } else if ((v = opt_value(argc, argv, &i, "--image"))) {
            image = v;
        } else if ((v = opt_value(argc, argv, &i, "--timeout"))) {
            if (lstr_to_i64(v, &timeout) < 0 || timeout < 10 || timeout > 86400)
                return vm_usage("--timeout %s: seconds (10 to 86400)", v);
        } else if (strcmp(a, "--resume") == 0) {
            resume = true;
        } else if (strcmp(a, "--status") == 0) {
            status = true;
        } else if (strcmp(a, "--json") == 0) {
            x->c->json = true;
        } else if (a[0] == '-' || name) {
            return vm_usage("update: unexpected \"%s\"", a);
        } else {
            name = a;
        }
    }
    if (!name)
        return vm_usage("update: which NAME?");
    if ((deb && image) || ((resume || status) && (deb || image)) || (resume && status))
        return vm_usage("update: one of --deb FILE, --image KEY, --resume, --status");
    struct lerr err = {0};
    struct vmu_options o = {.timeout_s = (int)timeout, .say = say_line};
    const char *stop = getenv("LEDGE_VM_UPDATE_STOP_AT");
    if (stop && *stop && vmu_step_parse(stop, &o.stop_at) < 0)
        return vm_usage("LEDGE_VM_UPDATE_STOP_AT=%s: not a step", stop);
    if (status) {
        _cleanup_json_ json_t *j = NULL;
        if (vm_update_status(&x->h, name, &j, &err) < 0)
            return fail(&err);
        if (x->c->json) {
            print_json(j);
            return 0;
        }
        printf("%s: %s, image %s (ledge %s) -> %s (ledge %s), started %s\n", name,
               ljson_str(j, "step") ?: "?", ljson_str(j, "fromImage") ?: "?",
               ljson_str(j, "fromLedge") ?: "?", ljson_str(j, "toImage") ?: "?",
               ljson_str(j, "toLedge") ?: "?", ljson_str(j, "started") ?: "?");
        if (ljson_str(j, "reason"))
            printf("  why: %s\n", ljson_str(j, "reason"));
        return 0;
    }
    if (resume) {
        const char *what = "nothing";
        if (vm_update_resume(&x->h, name, &o, &what, &err) < 0)
            return fail(&err);
        printf("%s: %s\n", name, lstr_eq(what, "nothing") ? "no unfinished update" : what);
        return 0;
    }
    struct vm_def d;
    if (vm_host_load(&x->h, name, &d, &err) < 0)
        return fail(&err);
    enum vm_arch arch = d.arch;
    enum vm_engine engine = d.engine;
    vm_def_free(&d);
    char key[128] = "", self_deb[PATH_MAX];
    if (image) {
        if (lstr_copy(key, sizeof(key), image) < 0)
            return vm_usage("--image %s: too long", image);
    } else {
        if (!deb) {
            if (self_deb_find(x, arch, self_deb, sizeof(self_deb), &err) < 0)
                return fail(&err);
            deb = self_deb;
        }
        char arch_opt[] = "--arch", deb_opt[] = "--deb", engine_opt[] = "--engine";
        char *args[] = {arch_opt,   (char *)vm_arch_name(arch),    deb_opt, (char *)deb,
                        engine_opt, (char *)vm_engine_name(engine)};
        if (vm_image_build(x->h.cache, args, ARRAY_SIZE(args), key, sizeof(key), NULL, &err) < 0)
            return fail(&err);
    }
    int r = vm_update(&x->h, name, key, &o, &err);
    if (r == -ECANCELED) {
        fprintf(stderr, "ledge vm update: rolled back: %s\n", lerr_str(&err));
        return 1;
    }
    if (r < 0)
        return fail(&err);
    printf("%s: updated to image %s\n", name, key);
    return 0;
}

static int vm_help(struct vmctx *x, int argc, char **argv);

static const struct {
    const char *name;
    const char *args;
    const char *summary;
    int (*run)(struct vmctx *x, int argc, char **argv);
} vm_verbs[] = {
    {"create",
     "NAME [--memory 1024M] [--cpus 1] [--disk 10G] [--arch amd64|arm64] [--engine docker|oci] "
     "[--deb FILE | --image KEY] [--accel auto|kvm|tcg] [--autostart] [--hub-port 8883] "
     "[--start]",
     "build (or reuse) a guest image and define a VM", vm_create_cmd},
    {"update", "NAME [--deb FILE | --image KEY] [--timeout S] | NAME --resume | NAME --status",
     "A/B update of the guest: boot the new image, keep it if healthy, else boot the old again",
     vm_update_cmd},
    {"start", "NAME [--no-wait] [--timeout S]", "start a VM and wait for its runtime",
     vm_start_cmd},
    {"stop", "NAME [--timeout S]", "shut a VM down cleanly", vm_stop_cmd},
    {"restart", "NAME", "stop and start (applies changed settings)", vm_restart_cmd},
    {"reboot", "NAME", "reboot the guest from inside (the VM keeps its supervisor)", vm_reboot_cmd},
    {"status", "NAME [--json]", "state, accelerator, address, forwards and shares", vm_status_cmd},
    {"list", "[--json]", "every VM and its state", vm_list_cmd},
    {"delete", "NAME [--force]", "remove a VM and its disk", vm_delete_cmd},
    {"set",
     "NAME [--memory M] [--cpus N] [--disk D] [--accel A] [--autostart on|off] "
     "[--hub-port P] [--boot-timeout S]",
     "change a stopped VM", vm_set_cmd},
    {"exec", "NAME [-t] -- COMMAND [ARGS...]", "run a command in the guest", vm_exec_cmd},
    {"shell", "NAME", "an interactive shell in the guest", vm_shell_cmd},
    {"logs", "NAME [--console|--runtime] [--tail N] [-f]",
     "the supervisor's log, the console, the guest's ledged", vm_logs_cmd},
    {"port", "add|remove|list NAME [[ADDR:]HOSTPORT:GUESTPORT[/udp]]",
     "host ports forwarded to the guest (live)", vm_port_cmd},
    {"share", "add|remove|list NAME [HOSTDIR GUESTDIR] [--ro]",
     "host folders mounted in the guest (9p)", vm_share_cmd},
    {"image", "build|list|export|import|rm ...", "guest images in the cache", vm_image_cmd},
    {"check", "[NAME] [--json]", "what this host offers VMs (QEMU, KVM, memory, disk)",
     vm_check_cmd},
    {"help", "", "this help", vm_help},
};

static int vm_help(struct vmctx *x, int argc, char **argv)
{
    printf("Usage: ledge vm COMMAND ...   (VMs in %s, images in %s)\n\n", x->h.root, x->h.cache);
    for (size_t i = 0; i < ARRAY_SIZE(vm_verbs); i++)
        printf("  ledge vm %s %s\n      %s\n", vm_verbs[i].name, vm_verbs[i].args,
               vm_verbs[i].summary);
    printf("\n  ledge --vm NAME COMMAND ...      any ledge command against the VM's runtime\n"
           "  ledge --vm NAME image load IMAGE|FILE   copy an image from this host's engine "
           "(or a docker-save archive) into the VM's\n");
    return 0;
}

/* The VMs' directory: $LEDGE_VM_DIR, else the configuration's vm.dir (what ledged's autostart
 * uses), else the default. */
static const char *vm_root(void)
{
    static char root[PATH_MAX];
    const char *env = getenv("LEDGE_VM_DIR");
    if (env && *env)
        return env;
    if (root[0])
        return root;
    const char *path = getenv("LEDGE_CONFIG");
    struct ledge_config cfg = {0};
    if (config_load_file_or_defaults(path && *path ? path : CONFIG_DEFAULT_PATH, &cfg, NULL) >= 0 &&
        cfg.vm.dir)
        lstr_copy(root, sizeof(root), cfg.vm.dir);
    else
        lstr_copy(root, sizeof(root), vm_dir_default());
    config_free(&cfg);
    return root;
}

static void vmctx_init(struct vmctx *x, struct cli *c)
{
    x->c = c;
    x->h.root = vm_root();
    x->h.cache = vm_cache_dir_default();
}

void cli_vm_host(struct vm_host *ret)
{
    ret->root = vm_root();
    ret->cache = vm_cache_dir_default();
}

int cmd_vm(struct cli *c, int argc, char **argv)
{
    struct vmctx x;
    vmctx_init(&x, c);
    if (argc < 2)
        return vm_help(&x, argc, argv);
    for (size_t i = 0; i < ARRAY_SIZE(vm_verbs); i++)
        if (strcmp(vm_verbs[i].name, argv[1]) == 0)
            return vm_verbs[i].run(&x, argc - 1, argv + 1);
    return vm_usage("no command \"%s\"", argv[1]);
}

/* ------------------------------------------------------------------ --vm NAME */

int cli_vm_select(struct cli *c, const char *name)
{
    struct vmctx x;
    vmctx_init(&x, c);
    if (require_vm(&x, name))
        return -ENOENT;
    static char sock[128];
    struct lerr err = {0};
    if (vm_sock_path(sock, sizeof(sock), x.h.root, name, VM_SOCK_API, &err) < 0) {
        fail(&err);
        return -ENAMETOOLONG;
    }
    c->socket = sock;
    c->vm = name;
    return 0;
}

int cli_vm_run_inside(struct cli *c, int argc, char **argv)
{
    struct vmctx x;
    vmctx_init(&x, c);
    char **av = calloc((size_t)argc + 2, sizeof(char *));
    if (!av)
        return cli_fail("out of memory");
    av[0] = "ledge";
    for (int i = 0; i < argc; i++)
        av[i + 1] = argv[i];
    int code = run_in_guest(&x, c->vm, av, (size_t)argc + 1, false, -1);
    free(av);
    return code;
}

/* ledge --vm NAME image load IMAGE|FILE: from this host into the guest's engine; the other verbs
 * (list, rm, prune: an oci guest's store) go to the guest's ledged as any command does. */
int cmd_image(struct cli *c, int argc, char **argv)
{
    if (!c->vm || (argc > 1 && strcmp(argv[1], "load") != 0))
        return cmd_image_local(c, argc, argv);
    if (argc != 3)
        return cli_usage_error("image", "expected: load IMAGE|FILE");
    struct vmctx x;
    vmctx_init(&x, c);
    struct lerr err = {0};
    if (vm_image_load(&x.h, c->vm, argv[2], STDOUT_FILENO, STDERR_FILENO, &err) < 0)
        return fail(&err);
    return 0;
}
