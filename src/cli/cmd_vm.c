/* cmd_vm.c — `ledge vm ...` (VMs that run the runtime: create, start/stop, exec, ports, shares,
 * images; docs/vm.md), `ledge --vm NAME image load`, and running CLI-side verbs (`check`) inside
 * a guest. Lifecycle requests go to the VM's supervisor (ledge-vmm) on its control socket;
 * exec sessions speak the channel's frame protocol on its exec socket. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "cli/commands.h"
#include "config/config.h"
#include "vm/check.h"
#include "vm/def.h"
#include "vm/frame.h"
#include "vm/image.h"
#include "vm/paths.h"

#define VM_CMD "vm"

struct vmctx {
    struct cli *c;
    const char *root;  /* VMs' directory */
    const char *cache; /* image cache */
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

static int load_def(struct vmctx *x, const char *name, struct vm_def *d)
{
    struct lerr err = {0};
    char path[PATH_MAX];
    if (vm_name_check(name, &err) < 0) {
        cli_fail("%s", lerr_str(&err));
        return -EINVAL;
    }
    if (vm_path(path, sizeof(path), x->root, name, VM_FILE_DEF) < 0) {
        cli_fail("VM directory path too long");
        return -ENAMETOOLONG;
    }
    if (access(path, F_OK) < 0) {
        cli_fail("no VM named %s (in %s; `ledge vm list`)", name, x->root);
        return -ENOENT;
    }
    int r = vm_def_load(path, d, &err);
    if (r < 0)
        cli_fail("%s", lerr_str(&err));
    return r;
}

/* Fails (message printed) unless name is a defined VM. */
static int require_vm(struct vmctx *x, const char *name)
{
    struct vm_def d;
    int r = load_def(x, name, &d);
    if (r >= 0)
        vm_def_free(&d);
    return r;
}

static int save_def(struct vmctx *x, const struct vm_def *d)
{
    char path[PATH_MAX];
    vm_path(path, sizeof(path), x->root, d->name, VM_FILE_DEF);
    int r = vm_def_save(path, d);
    if (r < 0)
        cli_fail("%s: %s", path, strerror(-r));
    return r;
}

/* A request to the VM's supervisor. Returns < 0 when it is not running (quietly). */
static int ctl_call(struct vmctx *x, const char *name, const char *method, const char *path,
                    const char *body, long *ret_status, json_t **ret, bool quiet)
{
    char sock[128];
    if (vm_sock_path(sock, sizeof(sock), x->root, name, VM_SOCK_CTL, NULL) < 0 ||
        access(sock, F_OK) < 0)
        return -ENOTCONN;
    struct cli cc = *x->c;
    cc.socket = sock;
    cc.quiet = quiet;
    return cli_call(&cc, method, path, body, body ? strlen(body) : 0, ret_status, ret);
}

static json_t *vm_status(struct vmctx *x, const char *name)
{
    long st;
    json_t *j = NULL;
    if (ctl_call(x, name, "GET", "/status", NULL, &st, &j, true) < 0 || st != 200) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* Running: a supervisor answers and its VM is not (already) down. */
static bool is_running(struct vmctx *x, const char *name)
{
    json_t *j = vm_status(x, name);
    const char *st = ljson_str(j, "state");
    bool r = j && !lstr_eq(st, "stopped") && !lstr_eq(st, "failed");
    json_decref(j);
    return r;
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

/* Run argv (searched in PATH) and wait for it; with out, its stdout is collected there (up to
 * out->max bytes). Returns 0 with its wait status, or < 0 when it could not be started (message
 * printed). */
static int run_child(char *const argv[], struct lbuf *out, int *ret_status)
{
    int pipefd[2] = {-1, -1};
    if (out && pipe2(pipefd, O_CLOEXEC) < 0) {
        cli_fail("pipe: %s", strerror(errno));
        return -EPIPE;
    }
    pid_t pid = fork();
    if (pid < 0) {
        cli_fail("fork: %s", strerror(errno));
        if (out) {
            close(pipefd[0]);
            close(pipefd[1]);
        }
        return -ECHILD;
    }
    if (pid == 0) {
        if (out)
            dup2(pipefd[1], STDOUT_FILENO);
        execvp(argv[0], argv);
        fprintf(stderr, "ledge: %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    if (out) {
        close(pipefd[1]);
        char buf[4096];
        ssize_t k;
        while ((k = read(pipefd[0], buf, sizeof(buf))) > 0)
            if (lbuf_append(out, buf, (size_t)k) < 0)
                break;
        close(pipefd[0]);
    }
    while (waitpid(pid, ret_status, 0) < 0 && errno == EINTR)
        ;
    return 0;
}

/* ------------------------------------------------------------------ exec sessions */

struct exec_io {
    int in_fd; /* local stdin source, -1 for none */
    bool tty;
    bool quiet_close; /* don't print a CLOSE error */
};

static int write_frame(int fd, uint8_t type, const void *p, size_t n)
{
    struct lbuf b = LBUF_INIT;
    int r = vm_frame_encode(&b, type, 1, p, n);
    if (r == 0)
        r = lfs_write_all(fd, b.data, b.len);
    lbuf_free(&b);
    return r;
}

static volatile sig_atomic_t winch;
static void on_winch(int sig)
{
    winch = 1;
}

static void send_winsize(int sock)
{
    struct winsize ws;
    if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) < 0)
        return;
    uint8_t p[4] = {(uint8_t)(ws.ws_row >> 8), (uint8_t)ws.ws_row, (uint8_t)(ws.ws_col >> 8),
                    (uint8_t)ws.ws_col};
    write_frame(sock, VM_FRAME_RESIZE, p, sizeof(p));
}

/* Run req (an OPEN of kind exec) in the guest; stdout/stderr to ours. Returns the exit code
 * (128+signal when killed), or -1 when the session failed (message printed). */
static int exec_session(struct vmctx *x, const char *name, json_t *req, struct exec_io *io)
{
    char path[128];
    struct lerr err = {0};
    if (vm_sock_path(path, sizeof(path), x->root, name, VM_SOCK_EXEC, &err) < 0) {
        json_decref(req);
        cli_fail("%s", lerr_str(&err));
        return -1;
    }
    _cleanup_close_ int sock = vm_unix_connect(path, 0);
    if (sock < 0) {
        json_decref(req);
        cli_fail("VM %s is not running (%s: %s)", name, path, strerror(-sock));
        return -1;
    }
    _cleanup_free_ char *open_payload = ljson_dump(req);
    json_decref(req);
    if (!open_payload || write_frame(sock, VM_FRAME_OPEN, open_payload, strlen(open_payload)) < 0) {
        cli_fail("cannot talk to the VM's supervisor");
        return -1;
    }
    struct termios saved;
    bool raw = false;
    if (io->tty && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0) {
        struct termios t = saved;
        cfmakeraw(&t);
        raw = tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0;
        signal(SIGWINCH, on_winch);
    }
    int64_t credit = VM_FRAME_WINDOW_INITIAL;
    size_t unacked = 0;
    bool in_eof = io->in_fd < 0, done = false;
    int code = -1;
    struct lbuf in = LBUF_INIT;
    uint8_t *chunk = malloc(VM_FRAME_MAX_PAYLOAD);
    if (!chunk)
        done = true;
    if (in_eof && !done)
        write_frame(sock, VM_FRAME_EOF, NULL, 0);
    while (!done) {
        if (winch) {
            winch = 0;
            send_winsize(sock);
        }
        struct pollfd pf[2] = {{.fd = sock, .events = POLLIN}, {.fd = io->in_fd, .events = POLLIN}};
        nfds_t nf = (!in_eof && credit > 0) ? 2 : 1;
        int pr = poll(pf, nf, -1);
        if (pr < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (nf == 2 && (pf[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            size_t want = (size_t)MIN((int64_t)VM_FRAME_MAX_PAYLOAD, credit);
            ssize_t n = read(io->in_fd, chunk, want);
            if (n > 0) {
                credit -= n;
                if (write_frame(sock, VM_FRAME_DATA, chunk, (size_t)n) < 0)
                    break;
            } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
                in_eof = true;
                write_frame(sock, VM_FRAME_EOF, NULL, 0);
            }
        }
        if (!(pf[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        if (lbuf_reserve(&in, 65536) < 0)
            break;
        ssize_t n = read(sock, in.data + in.len, in.cap - in.len - 1);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            if (code < 0)
                cli_fail("the VM's supervisor closed the session");
            break;
        }
        in.len += (size_t)n;
        size_t off = 0;
        while (!done) {
            struct vm_frame f;
            size_t used;
            int found =
                vm_frame_decode((const uint8_t *)in.data + off, in.len - off, &f, &used, NULL);
            off += used;
            if (!found)
                break;
            uint32_t c;
            switch (f.type) {
            case VM_FRAME_DATA:
            case VM_FRAME_STDERR:
                lfs_write_all(f.type == VM_FRAME_DATA ? STDOUT_FILENO : STDERR_FILENO, f.payload,
                              f.len);
                unacked += f.len;
                if (unacked >= VM_FRAME_WINDOW_INITIAL / 4) {
                    struct lbuf w = LBUF_INIT;
                    if (vm_frame_encode_window(&w, 1, (uint32_t)unacked) == 0)
                        lfs_write_all(sock, w.data, w.len);
                    lbuf_free(&w);
                    unacked = 0;
                }
                break;
            case VM_FRAME_WINDOW:
                if (vm_frame_window_credit(&f, &c) == 0)
                    credit += c;
                break;
            case VM_FRAME_EXIT: {
                json_t *j = NULL;
                if (ljson_parse((const char *)f.payload, f.len, &j, NULL) == 0) {
                    if (json_object_get(j, "signal"))
                        code = 128 + (int)ljson_int(j, "signal", 0);
                    else
                        code = (int)ljson_int(j, "code", 1);
                }
                json_decref(j);
                break;
            }
            case VM_FRAME_CLOSE: {
                json_t *j = NULL;
                if (code < 0 && f.len &&
                    ljson_parse((const char *)f.payload, f.len, &j, NULL) == 0 &&
                    ljson_str(j, "error") && !io->quiet_close)
                    cli_fail("%s", ljson_str(j, "error"));
                json_decref(j);
                done = true;
                break;
            }
            default:
                break;
            }
        }
        lbuf_consume(&in, off);
    }
    if (raw)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    free(chunk);
    lbuf_free(&in);
    return code;
}

static json_t *exec_request(char **argv, int argc, bool tty)
{
    json_t *av = json_array();
    for (int i = 0; i < argc; i++)
        json_array_append_new(av, json_string(argv[i]));
    json_t *req = json_pack("{s:s, s:o, s:b}", "kind", "exec", "argv", av, "tty", tty);
    if (req && tty) {
        struct winsize ws;
        if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0) {
            json_object_set_new(req, "rows", json_integer(ws.ws_row));
            json_object_set_new(req, "cols", json_integer(ws.ws_col));
        }
        const char *term = getenv("TERM");
        if (term)
            json_object_set_new(req, "term", json_string(term));
    }
    return req;
}

static int exit_code(int code)
{
    return code < 0 ? 1 : code;
}

/* ------------------------------------------------------------------ supervisor */

static int spawn_supervisor(struct vmctx *x, const char *name)
{
    char prog[PATH_MAX], logpath[PATH_MAX];
    if (vm_find_program("ledge-vmm", prog, sizeof(prog)) < 0)
        return cli_fail("cannot find ledge-vmm (set LEDGE_VM_LIBDIR, or reinstall ledge)");
    vm_path(logpath, sizeof(logpath), x->root, name, VM_FILE_VMM_LOG);
    pid_t pid = fork();
    if (pid < 0)
        return cli_fail("fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        execl(prog, prog, "--vm-dir", x->root, "--name", name, (char *)NULL);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 3)
        return 0; /* already supervised: fine */
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        cli_fail("ledge-vmm could not start %s; its log (%s) ends with:", name, logpath);
        _cleanup_free_ char *log = NULL;
        size_t n;
        if (lfs_read_file(logpath, 1 << 22, &log, &n) == 0) {
            size_t from = n > 1500 ? n - 1500 : 0;
            fprintf(stderr, "%s", log + from);
        }
        return 1;
    }
    return 0;
}

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

static int wait_state(struct vmctx *x, const char *name, const char *state, int timeout_s,
                      json_t **ret)
{
    char path[128];
    snprintf(path, sizeof(path), "/status?wait=%s&timeout=%d", state, timeout_s);
    long st;
    json_t *j = NULL;
    int r = ctl_call(x, name, "GET", path, NULL, &st, &j, false);
    if (r < 0 || st != 200) {
        json_decref(j);
        return cli_fail("the supervisor of %s went away (see %s/%s/%s)", name, x->root, name,
                        VM_FILE_VMM_LOG);
    }
    *ret = j;
    return 0;
}

/* ------------------------------------------------------------------ verbs */

static int vm_start_cmd(struct vmctx *x, int argc, char **argv);

static int vm_create_cmd(struct vmctx *x, int argc, char **argv)
{
    const char *name = NULL, *deb = getenv("LEDGE_VM_DEB"), *image = NULL, *v;
    struct vm_def d;
    struct lerr err = {0};
    bool start = false, have_arch = false;
    enum vm_arch arch = VM_ARCH_AMD64;
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
        return cli_fail("%s", lerr_str(&err));
    d.arch = arch;
    d.memory = mem;
    d.disk = disk;
    d.cpus = (int)MIN(cpus, (long long)INT32_MAX);
    d.accel = accel;
    d.hub_port = (uint16_t)hub;
    d.boot_timeout_s = (int)MIN(boot, 100000LL);
    d.autostart = autostart;
    if (vm_def_validate(&d, &err) < 0)
        return cli_fail("%s", lerr_str(&err));
    char dir[PATH_MAX];
    vm_path(dir, sizeof(dir), x->root, name, NULL);
    if (access(dir, F_OK) == 0)
        return cli_fail("a VM named %s exists (%s)", name, dir);

    char key[128] = "";
    if (image) {
        if (vm_image_key_check(image, &err) < 0)
            return cli_fail("%s", lerr_str(&err));
        lstr_copy(key, sizeof(key), image);
        if (!have_arch && strncmp(image, "arm64-", 6) == 0)
            d.arch = VM_ARCH_ARM64;
        else if (!have_arch && strncmp(image, "amd64-", 6) == 0)
            d.arch = VM_ARCH_AMD64;
    } else if (deb && *deb) {
        /* Build (or find cached) the image for this .deb. */
        char prog[PATH_MAX];
        if (vm_find_program("ledge-vm-build", prog, sizeof(prog)) < 0)
            return cli_fail("cannot find ledge-vm-build (set LEDGE_VM_LIBDIR)");
        const char *bargv[] = {prog,     "--arch", vm_arch_name(d.arch), "--deb", deb, "--cache",
                               x->cache, NULL};
        struct lbuf so = LBUF_INIT;
        so.max = 4095;
        int st;
        if (run_child((char *const *)bargv, &so, &st) < 0)
            return 1;
        _cleanup_free_ char *out = lbuf_steal(&so);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            return cli_fail("building the guest image failed (see the messages above)");
        char *last = out;
        for (char *s = strtok(out, "\n"); s; s = strtok(NULL, "\n"))
            last = s;
        lstr_copy(key, sizeof(key), last);
    } else {
        /* No .deb: the newest cached (or imported) image for the architecture. */
        _cleanup_json_ json_t *list = vm_image_list(x->cache);
        size_t i;
        json_t *m;
        json_array_foreach (list, i, m) {
            if (lstr_eq(ljson_str(m, "arch"), vm_arch_name(d.arch))) {
                lstr_copy(key, sizeof(key), ljson_str(m, "key"));
                break;
            }
        }
        if (!key[0])
            return cli_fail("no %s guest image in %s: give --deb ledge_VERSION_%s.deb (from "
                            "scripts/build-deb) to build one, or `ledge vm image import FILE`",
                            vm_arch_name(d.arch), x->cache, vm_arch_name(d.arch));
    }
    d.image = strdup(key);
    int r = vm_create(x->root, x->cache, &d, &err);
    vm_def_free(&d);
    if (r < 0)
        return cli_fail("%s", lerr_str(&err));
    char a[32], b[32];
    printf("created VM %s: %s, %d vCPU, %s memory, %s disk, image %s\n", name, vm_arch_name(arch),
           (int)cpus, vm_size_format(mem, a, sizeof(a)), vm_size_format(disk, b, sizeof(b)), key);
    if (!start) {
        printf("start it with: ledge vm start %s\n", name);
        return 0;
    }
    char *sargv[] = {"start", (char *)name, NULL};
    return vm_start_cmd(x, 2, sargv);
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
    if (require_vm(x, name) < 0)
        return 1;
    int64_t t0 = ltime_mono_ms();
    if (spawn_supervisor(x, name) != 0)
        return 1;
    if (!wait) {
        printf("%s: starting\n", name);
        return 0;
    }
    json_t *s = NULL;
    if (wait_state(x, name, "running", (int)timeout, &s) != 0)
        return 1;
    int rc = lstr_eq(ljson_str(s, "state"), "running") ? 0 : 1;
    print_status_line(s);
    if (rc == 0)
        printf("  ready %.1f s after `ledge vm start`; use it with: ledge --vm %s list\n",
               (ltime_mono_ms() - t0) / 1000.0, name);
    else
        fprintf(stderr, "ledge: %s did not come up (console: %s/%s/%s)\n", name, x->root, name,
                VM_FILE_CONSOLE);
    json_decref(s);
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

static void on_alarm(int sig) {}

/* Once the VM is down its supervisor still answers the last requests; wait (bounded) until it
 * has let go of the VM (its lock), so what follows (set, delete, ledged's autostart) sees it
 * stopped. */
static void wait_supervisor_gone(struct vmctx *x, const char *name)
{
    char path[PATH_MAX];
    if (vm_path(path, sizeof(path), x->root, name, VM_FILE_LOCK) < 0)
        return;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    struct sigaction sa = {.sa_handler = on_alarm}, old;
    sigaction(SIGALRM, &sa, &old);
    alarm(10);
    if (flock(fd, LOCK_SH) == 0)
        flock(fd, LOCK_UN);
    alarm(0);
    sigaction(SIGALRM, &old, NULL);
    close(fd);
}

static int do_stop(struct vmctx *x, const char *name, long long timeout, bool quiet_if_stopped)
{
    char path[64];
    snprintf(path, sizeof(path), "/stop?timeout=%lld", timeout);
    long st;
    json_t *j = NULL;
    if (ctl_call(x, name, "POST", path, NULL, &st, &j, true) < 0) {
        if (!quiet_if_stopped)
            printf("%s is not running\n", name);
        return 0;
    }
    int rc = 0;
    if (st != 200) {
        rc = cli_report_error(st, j);
    } else {
        wait_supervisor_gone(x, name);
        printf("%s: %s\n", name, ljson_str(j, "state"));
    }
    json_decref(j);
    return rc;
}

static int vm_stop_cmd(struct vmctx *x, int argc, char **argv)
{
    const char *name;
    long long timeout = 90;
    int r = one_name(argc, argv, "stop", &name, &timeout);
    if (r)
        return r;
    if (require_vm(x, name) < 0)
        return 1;
    return do_stop(x, name, timeout, false);
}

static int vm_restart_cmd(struct vmctx *x, int argc, char **argv)
{
    const char *name;
    long long timeout = 90;
    int r = one_name(argc, argv, "restart", &name, &timeout);
    if (r)
        return r;
    if (require_vm(x, name) < 0)
        return 1;
    if ((r = do_stop(x, name, timeout, true)) != 0)
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
    long st;
    json_t *j = NULL;
    if (ctl_call(x, name, "POST", "/reboot", NULL, &st, &j, true) < 0)
        return cli_fail("%s is not running", name);
    r = st == 202 ? 0 : cli_report_error(st, j);
    if (!r)
        printf("%s: rebooting the guest\n", name);
    json_decref(j);
    return r;
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
    printf("  autostart %s, image %s\n", d->autostart ? "on" : "off", d->image ? d->image : "?");
    if (s) {
        const json_t *boot = json_object_get(s, "boot");
        printf("  address %s; the host is %s (10.0.2.2) from the guest and its modules\n",
               ljson_str(s, "address"), ljson_str(s, "hostAlias"));
        if (json_object_size(boot))
            printf("  boot: agent %.1f s, runtime %.1f s, engine %.1f s (boot #%lld)\n",
                   ljson_int(boot, "agentMs", -1) / 1000.0,
                   ljson_int(boot, "runtimeMs", -1) / 1000.0,
                   ljson_int(boot, "engineMs", -1) / 1000.0, ljson_int(s, "boots", 0));
        const json_t *socks = json_object_get(s, "sockets");
        printf("  runtime API: %s  (ledge --vm %s ..., or LEDGE_HOST)\n", ljson_str(socks, "api"),
               d->name);
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
    struct vm_def d;
    if (load_def(x, name, &d) < 0)
        return 1;
    _cleanup_json_ json_t *s = vm_status(x, name);
    if (x->c->json) {
        json_t *o = s ? json_incref(s) : json_pack("{s:s, s:s}", "name", name, "state", "stopped");
        json_object_set_new(o, "definition", vm_def_to_json(&d));
        print_json(o);
        json_decref(o);
    } else {
        print_status(&d, s);
    }
    vm_def_free(&d);
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
    json_t *out = json_array();
    DIR *dir = opendir(x->root);
    struct dirent *e;
    char names[256][VM_NAME_MAX + 1];
    size_t n = 0;
    while (dir && (e = readdir(dir)) && n < ARRAY_SIZE(names)) {
        char p[PATH_MAX];
        if (vm_name_check(e->d_name, NULL) < 0 ||
            vm_path(p, sizeof(p), x->root, e->d_name, VM_FILE_DEF) < 0 || access(p, F_OK) < 0)
            continue;
        lstr_copy(names[n++], sizeof(names[0]), e->d_name);
    }
    if (dir)
        closedir(dir);
    qsort(names, n, sizeof(names[0]), (int (*)(const void *, const void *))strcmp);
    if (!x->c->json)
        printf("%-20s %-9s %-6s %-5s %-9s %-9s %-24s %s\n", "NAME", "STATE", "ARCH", "CPUS",
               "MEMORY", "DISK", "ACCEL", "AUTOSTART");
    for (size_t i = 0; i < n; i++) {
        struct vm_def d;
        char p[PATH_MAX];
        vm_path(p, sizeof(p), x->root, names[i], VM_FILE_DEF);
        if (vm_def_load(p, &d, NULL) < 0)
            continue;
        json_t *s = vm_status(x, names[i]);
        const char *state = s ? ljson_str(s, "state") : "stopped";
        const char *accel = s ? ljson_str(s, "accel") : vm_accel_name(d.accel);
        char a[32], b[32];
        if (x->c->json) {
            json_t *o = vm_def_to_json(&d);
            json_object_set_new(o, "state", json_string(state));
            if (s)
                json_object_set(o, "status", s);
            json_array_append_new(out, o);
        } else {
            printf("%-20s %-9s %-6s %-5d %-9s %-9s %-24s %s\n", d.name, state, vm_arch_name(d.arch),
                   d.cpus, vm_size_format(d.memory, a, sizeof(a)),
                   vm_size_format(d.disk, b, sizeof(b)), accel, d.autostart ? "on" : "off");
        }
        json_decref(s);
        vm_def_free(&d);
    }
    if (x->c->json)
        print_json(out);
    json_decref(out);
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
    if (require_vm(x, name) < 0)
        return 1;
    if (is_running(x, name)) {
        if (!force)
            return cli_fail("%s is running: stop it first, or delete --force", name);
        if (do_stop(x, name, 60, true) != 0)
            return 1;
    }
    struct lerr err = {0};
    if (vm_delete_dir(x->root, name, &err) < 0)
        return cli_fail("%s", lerr_str(&err));
    printf("deleted VM %s\n", name);
    return 0;
}

static int vm_set_cmd(struct vmctx *x, int argc, char **argv)
{
    const char *name = NULL, *v;
    struct vm_def d;
    bool have_def = false;
    struct lerr err = {0};
    uint64_t disk = 0;
    int rc = 2;
    if (argc < 2 || argv[1][0] == '-')
        return vm_usage("set: usage: ledge vm set NAME [--memory M] [--cpus N] [--disk D] ...");
    name = argv[1];
    if (load_def(x, name, &d) < 0)
        return 1;
    have_def = true;
    if (is_running(x, name)) {
        rc = cli_fail("%s is running: stop it first (ledge vm stop %s); resources change while "
                      "stopped, and keep the guest and its deployment as they are",
                      name, name);
        goto out;
    }
    int changes = 0;
    for (int i = 2; i < argc; i++) {
        if ((v = opt_value(argc, argv, &i, "--memory"))) {
            if (vm_size_parse(v, &d.memory) < 0) {
                rc = vm_usage("--memory %s: a size such as 2G", v);
                goto out;
            }
        } else if ((v = opt_value(argc, argv, &i, "--cpus"))) {
            long long n;
            if (lstr_to_i64(v, &n) < 0 || n < 1 || n > VM_MAX_CPUS) {
                rc = vm_usage("--cpus %s: 1 to %d", v, VM_MAX_CPUS);
                goto out;
            }
            d.cpus = (int)n;
        } else if ((v = opt_value(argc, argv, &i, "--disk"))) {
            if (vm_size_parse(v, &disk) < 0) {
                rc = vm_usage("--disk %s: a size such as 20G", v);
                goto out;
            }
            d.disk = disk;
        } else if ((v = opt_value(argc, argv, &i, "--accel"))) {
            if (vm_accel_parse(v, &d.accel) < 0) {
                rc = vm_usage("--accel %s: auto, kvm or tcg", v);
                goto out;
            }
        } else if ((v = opt_value(argc, argv, &i, "--autostart"))) {
            if (!lstr_eq(v, "on") && !lstr_eq(v, "off")) {
                rc = vm_usage("--autostart %s: on or off", v);
                goto out;
            }
            d.autostart = lstr_eq(v, "on");
        } else if ((v = opt_value(argc, argv, &i, "--hub-port"))) {
            long long n;
            if (lstr_to_i64(v, &n) < 0 || n < 0 || n > 65535) {
                rc = vm_usage("--hub-port %s: 0 to 65535", v);
                goto out;
            }
            d.hub_port = (uint16_t)n;
        } else if ((v = opt_value(argc, argv, &i, "--boot-timeout"))) {
            long long n;
            if (lstr_to_i64(v, &n) < 0) {
                rc = vm_usage("--boot-timeout %s: seconds", v);
                goto out;
            }
            d.boot_timeout_s = (int)MIN(n, 100000LL);
        } else {
            rc = vm_usage("set: unexpected \"%s\"", argv[i]);
            goto out;
        }
        changes++;
    }
    if (!changes) {
        rc = vm_usage("set: nothing to change (--memory, --cpus, --disk, --accel, --autostart, "
                      "--hub-port, --boot-timeout)");
        goto out;
    }
    if (vm_def_validate(&d, &err) < 0) {
        rc = cli_fail("%s", lerr_str(&err));
        goto out;
    }
    if (disk && vm_resize_disk(x->root, name, disk, &err) < 0) {
        rc = cli_fail("%s", lerr_str(&err));
        goto out;
    }
    if (save_def(x, &d) < 0) {
        rc = 1;
        goto out;
    }
    char a[32], b[32];
    printf("%s: %d vCPU, %s memory, %s disk, accelerator %s, autostart %s (from the next start)\n",
           name, d.cpus, vm_size_format(d.memory, a, sizeof(a)),
           vm_size_format(d.disk, b, sizeof(b)), vm_accel_name(d.accel),
           d.autostart ? "on" : "off");
    rc = 0;
out:
    if (have_def)
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
    struct exec_io io = {.in_fd = STDIN_FILENO, .tty = tty};
    return exit_code(exec_session(x, name, exec_request(argv + i, argc - i, tty), &io));
}

static int vm_shell_cmd(struct vmctx *x, int argc, char **argv)
{
    const char *name;
    int r = one_name(argc, argv, "shell", &name, NULL);
    if (r)
        return r;
    bool tty = isatty(STDIN_FILENO);
    char *sh[] = {"/bin/bash", "-l"};
    struct exec_io io = {.in_fd = STDIN_FILENO, .tty = tty};
    return exit_code(exec_session(x, name, exec_request(sh, 2, tty), &io));
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
    if (require_vm(x, name) < 0)
        return 1;
    if (console) {
        const char *files[] = {VM_FILE_VMM_LOG, VM_FILE_CONSOLE};
        for (size_t k = 0; k < ARRAY_SIZE(files); k++) {
            char p[PATH_MAX];
            vm_path(p, sizeof(p), x->root, name, files[k]);
            _cleanup_free_ char *text = NULL;
            size_t n;
            if (lfs_read_file(p, 64u << 20, &text, &n) < 0)
                continue;
            /* The last `lines` lines. */
            size_t from = n;
            long long seen = 0;
            while (from > 0 && seen <= lines)
                if (text[--from] == '\n')
                    seen++;
            if (seen > lines)
                from++;
            printf("==> %s <==\n%s", p, text + from);
            if (n && text[n - 1] != '\n')
                printf("\n");
        }
    }
    if (runtime) {
        if (!is_running(x, name)) {
            printf("==> the guest's ledged: %s is not running <==\n", name);
            return 0;
        }
        printf("==> the guest's ledged (journalctl -u ledged) <==\n");
        fflush(stdout);
        char nbuf[32];
        snprintf(nbuf, sizeof(nbuf), "%lld", lines);
        char *jargv[] = {
            "journalctl",     "--no-pager", "-o", "short-precise",      "-u", "ledged", "-u",
            "ledge-vm-agent", "-n",         nbuf, follow ? "-f" : NULL, NULL};
        int n = follow ? 11 : 10;
        struct exec_io io = {.in_fd = -1};
        return exit_code(exec_session(x, name, exec_request(jargv, n, false), &io));
    }
    return 0;
}

/* port add|remove|list NAME [SPEC] */
static int vm_port_cmd(struct vmctx *x, int argc, char **argv)
{
    if (argc < 3)
        return vm_usage("port: add|remove|list NAME [[ADDR:]HOSTPORT:GUESTPORT[/udp]]");
    const char *op = argv[1], *name = argv[2], *spec = argc > 3 ? argv[3] : NULL;
    struct vm_def d;
    struct lerr err = {0};
    if (load_def(x, name, &d) < 0)
        return 1;
    bool running = is_running(x, name);
    int rc = 0;
    long st;
    json_t *j = NULL;
    if (lstr_eq(op, "list")) {
        if (running && ctl_call(x, name, "GET", "/ports", NULL, &st, &j, false) == 0 && st == 200) {
            size_t i;
            const json_t *p;
            if (x->c->json)
                print_json(j);
            else
                json_array_foreach (j, i, p)
                    print_port("", p);
        } else {
            char buf[96];
            if (d.hub_port)
                printf("127.0.0.1:%u->8883/tcp       hub\n", d.hub_port);
            for (size_t i = 0; i < d.n_ports; i++)
                printf("%-28s manual\n", vm_port_format(&d.ports[i], buf, sizeof(buf)));
        }
    } else if (lstr_eq(op, "add") || lstr_eq(op, "remove")) {
        struct vm_port p;
        if (!spec) {
            rc = vm_usage("port %s: which [ADDR:]HOSTPORT:GUESTPORT?", op);
        } else if (vm_port_parse(spec, &p, &err) < 0) {
            rc = cli_fail("%s", lerr_str(&err));
        } else if (running) {
            /* Live: the supervisor changes QEMU's forwards and the definition together. */
            _cleanup_json_ json_t *body = json_pack("{s:s}", "spec", spec);
            _cleanup_free_ char *text = ljson_dump(body);
            char path[256];
            struct lbuf enc = LBUF_INIT;
            lstr_url_encode(spec, strlen(spec), &enc);
            snprintf(path, sizeof(path), "/ports?spec=%s", enc.data ? enc.data : "");
            lbuf_free(&enc);
            bool add = lstr_eq(op, "add");
            if (ctl_call(x, name, add ? "POST" : "DELETE", add ? "/ports" : path, add ? text : NULL,
                         &st, &j, false) < 0)
                rc = 1;
            else if (st >= 300)
                rc = cli_report_error(st, j);
            else {
                char buf[96];
                printf("%s %s\n", add ? "forwarding" : "removed",
                       vm_port_format(&p, buf, sizeof(buf)));
            }
        } else {
            int r = lstr_eq(op, "add") ? vm_def_add_port(&d, &p, &err)
                                       : vm_def_remove_port(&d, &p, &err);
            if (r < 0)
                rc = cli_fail("%s", lerr_str(&err));
            else if (save_def(x, &d) < 0)
                rc = 1;
            else {
                char buf[96];
                printf("%s %s (from the next start)\n", lstr_eq(op, "add") ? "added" : "removed",
                       vm_port_format(&p, buf, sizeof(buf)));
            }
        }
    } else {
        rc = vm_usage("port: add, remove or list");
    }
    json_decref(j);
    vm_def_free(&d);
    return rc;
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
    struct vm_def d;
    struct lerr err = {0};
    if (load_def(x, name, &d) < 0)
        return 1;
    int rc = 0;
    char real[PATH_MAX];
    if (lstr_eq(op, "list")) {
        print_shares("", &d);
    } else if (lstr_eq(op, "add")) {
        if (!host || !guest)
            rc = vm_usage("share add NAME HOSTDIR GUESTDIR [--ro]");
        else if (!realpath(host, real))
            rc = cli_fail("%s: %s", host, strerror(errno));
        else if (vm_def_add_share(&d, real, guest, ro, &err) < 0)
            rc = cli_fail("%s", lerr_str(&err));
        else if (save_def(x, &d) < 0)
            rc = 1;
        else
            printf("sharing %s as %s in %s%s\n", real, guest, name,
                   is_running(x, name) ? " from the next start (ledge vm restart)" : "");
    } else if (lstr_eq(op, "remove")) {
        const char *hd = host && guest ? (realpath(host, real) ? real : host) : NULL;
        const char *gd = guest ? guest : host;
        /* One argument: the guest directory (or, failing that, the host directory). */
        int r = vm_def_remove_share(&d, hd, gd, &err);
        if (r == -ENOENT && host && !guest)
            r = vm_def_remove_share(&d, realpath(host, real) ? real : host, NULL, &err);
        if (!host)
            rc = vm_usage("share remove NAME GUESTDIR (or HOSTDIR GUESTDIR)");
        else if (r < 0)
            rc = cli_fail("%s", lerr_str(&err));
        else if (save_def(x, &d) < 0)
            rc = 1;
        else
            printf("removed the share%s\n", is_running(x, name) ? " (from the next start)" : "");
    } else {
        rc = vm_usage("share: add, remove or list");
    }
    vm_def_free(&d);
    return rc;
}

static int run_tool(char *const argv[])
{
    int st;
    if (run_child(argv, NULL, &st) < 0)
        return 1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}

/* image build|list|export|import|rm */
static int vm_image_cmd(struct vmctx *x, int argc, char **argv)
{
    const char *op = argc > 1 ? argv[1] : NULL;
    struct lerr err = {0};
    if (lstr_eq(op, "list")) {
        _cleanup_json_ json_t *list = vm_image_list(x->cache);
        if (x->c->json || (argc > 2 && strcmp(argv[2], "--json") == 0)) {
            print_json(list);
            return 0;
        }
        printf("%-24s %-6s %-22s %-12s %s\n", "KEY", "ARCH", "BUILT", "LEDGE", "KERNEL");
        size_t i;
        const json_t *m;
        json_array_foreach (list, i, m)
            printf("%-24s %-6s %-22s %-12s %s\n", ljson_str(m, "key"), ljson_str(m, "arch"),
                   ljson_str(m, "built") ?: "", ljson_str(m, "ledge") ?: "",
                   ljson_str(m, "kernel") ?: "");
        return 0;
    }
    if (lstr_eq(op, "build")) {
        char prog[PATH_MAX];
        if (vm_find_program("ledge-vm-build", prog, sizeof(prog)) < 0)
            return cli_fail("cannot find ledge-vm-build (set LEDGE_VM_LIBDIR)");
        char *bargv[32] = {prog, "--cache", (char *)x->cache};
        int n = 3;
        for (int i = 2; i < argc && n < 30; i++)
            bargv[n++] = argv[i];
        return run_tool(bargv);
    }
    if (lstr_eq(op, "export")) {
        if (argc != 4)
            return vm_usage("image export KEY FILE (a .tar; FILE - for stdout)");
        _cleanup_json_ json_t *m = NULL;
        if (vm_image_manifest(x->cache, argv[2], &m, &err) < 0)
            return cli_fail("%s", lerr_str(&err));
        char *targv[] = {"tar", "--sparse", "-C", (char *)x->cache, "-cf", argv[3], argv[2], NULL};
        int r = run_tool(targv);
        if (r == 0 && strcmp(argv[3], "-") != 0)
            fprintf(stderr, "exported image %s to %s\n", argv[2], argv[3]);
        return r ? 1 : 0;
    }
    if (lstr_eq(op, "import")) {
        if (argc != 3)
            return vm_usage("image import FILE (made by `ledge vm image export`)");
        /* The archive must hold one image directory and nothing else. */
        char *largv[] = {"tar", "-tf", argv[2], NULL};
        struct lbuf listing = LBUF_INIT;
        listing.max = 1 << 20;
        int st;
        if (run_child(largv, &listing, &st) < 0)
            return 1;
        char key[128] = "";
        bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0 && listing.len > 0;
        for (char *s = listing.data, *line; ok && s && (line = strsep(&s, "\n"));) {
            if (!*line)
                continue;
            char *slash = strchr(line, '/');
            if (slash)
                *slash = 0;
            if (!key[0])
                lstr_copy(key, sizeof(key), line);
            ok = lstr_eq(key, line) && (!slash || !strstr(slash + 1, ".."));
        }
        lbuf_free(&listing);
        if (!ok || vm_image_key_check(key, &err) < 0)
            return cli_fail("%s: not an image exported by `ledge vm image export`", argv[2]);
        lfs_mkdir_p(x->cache, 0755);
        char *targv[] = {"tar",   "--sparse", "--no-same-owner", "-C", (char *)x->cache, "-xf",
                         argv[2], NULL};
        if (run_tool(targv) != 0)
            return 1;
        _cleanup_json_ json_t *m = NULL;
        if (vm_image_manifest(x->cache, key, &m, &err) < 0)
            return cli_fail("%s", lerr_str(&err));
        printf("imported image %s (%s, ledge %s)\n", key, ljson_str(m, "arch"),
               ljson_str(m, "ledge") ?: "?");
        return 0;
    }
    if (lstr_eq(op, "rm")) {
        if (argc != 3)
            return vm_usage("image rm KEY");
        _cleanup_json_ json_t *m = NULL;
        if (vm_image_manifest(x->cache, argv[2], &m, &err) < 0)
            return cli_fail("%s", lerr_str(&err));
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s/%s", x->cache, argv[2]);
        int r = vm_rm_rf(dir);
        if (r < 0)
            return cli_fail("%s: %s", dir, strerror(-r));
        printf("removed image %s\n", argv[2]);
        return 0;
    }
    return vm_usage("image: build [--arch A] --deb FILE | list | export KEY FILE | import FILE | "
                    "rm KEY");
}

static int vm_check_cmd(struct vmctx *x, int argc, char **argv)
{
    struct vm_def d;
    const struct vm_def *one = NULL;
    bool have = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            x->c->json = true;
        else if (!have && argv[i][0] != '-') {
            if (load_def(x, argv[i], &d) < 0)
                return 1;
            have = true;
            one = &d;
        } else
            return vm_usage("check: unexpected \"%s\"", argv[i]);
    }
    struct vm_check_env env = {.vmroot = x->root, .cache = x->cache};
    _cleanup_json_ json_t *res = vm_host_checks(&env, one);
    if (have)
        vm_def_free(&d);
    if (!res)
        return cli_fail("out of memory");
    int rc = 0;
    size_t i;
    const json_t *r;
    if (x->c->json)
        print_json(res);
    json_array_foreach (res, i, r) {
        const char *res_s = ljson_str(r, "result");
        if (lstr_eq(res_s, "error"))
            rc = 1;
        if (x->c->json)
            continue;
        printf("%-8s %-17s %s\n",
               lstr_eq(res_s, "ok")        ? "ok"
               : lstr_eq(res_s, "warning") ? "warning"
                                           : "ERROR",
               ljson_str(r, "id"), ljson_str(r, "message"));
        if (ljson_str(r, "fix"))
            printf("%-26s fix: %s\n", "", ljson_str(r, "fix"));
    }
    return rc;
}

static int vm_help(struct vmctx *x, int argc, char **argv);

static const struct {
    const char *name;
    const char *args;
    const char *summary;
    int (*run)(struct vmctx *x, int argc, char **argv);
} vm_verbs[] = {
    {"create",
     "NAME [--memory 1024M] [--cpus 1] [--disk 10G] [--arch amd64|arm64] [--deb FILE | "
     "--image KEY] [--accel auto|kvm|tcg] [--autostart] [--hub-port 8883] [--start]",
     "build (or reuse) a guest image and define a VM", vm_create_cmd},
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
    printf("Usage: ledge vm COMMAND ...   (VMs in %s, images in %s)\n\n", x->root, x->cache);
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
    x->root = vm_root();
    x->cache = vm_cache_dir_default();
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
    if (require_vm(&x, name) < 0)
        return -ENOENT;
    static char sock[128];
    struct lerr err = {0};
    if (vm_sock_path(sock, sizeof(sock), x.root, name, VM_SOCK_API, &err) < 0) {
        cli_fail("%s", lerr_str(&err));
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
    struct exec_io io = {.in_fd = -1};
    int code = exec_session(&x, c->vm, exec_request(av, argc + 1, false), &io);
    free(av);
    return exit_code(code);
}

/* ledge --vm NAME image load IMAGE|FILE */
int cmd_image(struct cli *c, int argc, char **argv)
{
    if (!c->vm)
        return cli_usage_error("image", "needs --vm NAME: it copies images into a VM's engine");
    if (argc != 3 || strcmp(argv[1], "load") != 0)
        return cli_usage_error("image", "expected: load IMAGE|FILE");
    struct vmctx x;
    vmctx_init(&x, c);
    const char *what = argv[2];
    int in_fd = -1;
    pid_t saver = -1;
    struct stat st;
    if (stat(what, &st) == 0 && S_ISREG(st.st_mode)) {
        in_fd = open(what, O_RDONLY | O_CLOEXEC);
        if (in_fd < 0)
            return cli_fail("%s: %s", what, strerror(errno));
    } else {
        /* `docker save` from this host's engine, streamed straight into the guest's. */
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
            return cli_fail("pipe: %s", strerror(errno));
        saver = fork();
        if (saver == 0) {
            dup2(p[1], STDOUT_FILENO);
            execlp("docker", "docker", "save", what, (char *)NULL);
            fprintf(stderr, "ledge: docker: %s\n", strerror(errno));
            _exit(127);
        }
        close(p[1]);
        in_fd = p[0];
    }
    char *dl[] = {"docker", "load"};
    struct exec_io io = {.in_fd = in_fd};
    int code = exec_session(&x, c->vm, exec_request(dl, 2, false), &io);
    close(in_fd);
    if (saver > 0) {
        int s;
        waitpid(saver, &s, 0);
        if (!WIFEXITED(s) || WEXITSTATUS(s) != 0)
            return cli_fail("`docker save %s` on this host failed", what);
    }
    if (code != 0)
        return code < 0 ? 1 : cli_fail("`docker load` in %s failed (exit %d)", c->vm, code);
    return 0;
}
