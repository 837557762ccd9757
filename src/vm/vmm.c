/* vmm.c — ledge-vmm, the supervisor of one VM (docs/vm.md "Supervision"). It runs QEMU in its
 * own session, drives it through QMP (port forwards, reset, quit), carries the host end of the
 * channel (the guest's management API, Docker socket and exec sessions as host unix sockets),
 * detects hung boots, restarts a crashed QEMU, forwards the ports deployed modules publish, and
 * answers `ledge vm` on a small control API. A supervisor that goes away leaves QEMU running;
 * the next one adopts it (pid + start time + command line), as ledged adopts process modules.
 *
 * States: starting (QEMU launched, no agent yet) → booting (agent greeted, runtime not answering)
 * → running (the guest's ledged answers) → stopping → stopped; failed when boots keep hanging or
 * QEMU keeps crashing. A guest reboot resets QEMU in place (RESET event): back to starting. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/json.h"
#include "base/list.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "log/log.h"
#include "net/http_client.h"
#include "net/http_server.h"
#include "net/unix.h"
#include "vm/def.h"
#include "spawn.h"
#include "frame.h"
#include "mux.h"
#include "vm/paths.h"
#include "vm/qemu.h"

#define COMP "vmm"
#define MAX_FWDS (VM_MAX_PORTS * 2 + 1)
#define MAX_HUNG_BOOTS 3
#define MAX_CRASHES 5
#define CRASH_WINDOW_MS (10 * 60 * 1000)
#define PROBE_TIMEOUT_MS_DEFAULT 20000
#define PORTS_REFRESH_MS 15000
#define LINK_CONNECT_TRIES 200 /* 100 ms apart */

enum vm_state {
    ST_STARTING,
    ST_BOOTING,
    ST_RUNNING,
    ST_STOPPING,
    ST_STOPPED,
    ST_FAILED,
};

static const char *const state_names[] = {"starting", "booting", "running",
                                          "stopping", "stopped", "failed"};

enum fwd_src { FWD_HUB, FWD_MANUAL, FWD_AUTO };
enum fwd_state { FWD_PENDING, FWD_ACTIVE, FWD_FAILED };

struct fwd {
    struct vm_port p;
    enum fwd_src src;
    enum fwd_state state;
    char module[64];
    char error[160];
    bool keep; /* mark for the auto-forward diff */
};

typedef struct vmm_s vmm;

struct qmp_cmd {
    long id;
    void (*cb)(vmm *v, void *ud, const struct vm_qmp_msg *m);
    void *ud;
    struct llist node; /* in vmm.qmp_cmds */
};

struct waiter { /* a control request waiting for a state */
    struct hs_request *req;
    enum vm_state until;
    struct event *timeout;
    struct vmm_s *v;
    struct llist node; /* in vmm.waiters */
};

struct vmm_s {
    struct event_base *base;
    char vmroot[PATH_MAX];
    char name[VM_NAME_MAX + 1];
    char dir[PATH_MAX];
    char rundir[PATH_MAX];
    char sock_ctl[108], sock_api[108], sock_docker[108], sock_exec[108], sock_qmp[108],
        sock_chan[108];
    struct vm_def def;
    int lock_fd;

    enum vm_state state;
    int64_t state_since;
    char last_error[LERR_MSG_MAX];
    bool kvm;
    char accel_detail[384];

    pid_t qemu_pid;
    unsigned long long qemu_start;
    bool qemu_child;
    int qemu_pidfd;
    struct event *qemu_ev;
    bool adopted;
    int boots;
    int hung_boots;
    int crashes;
    int64_t crash_window_start;
    struct event *relaunch_ev;

    struct bufferevent *qmp;
    bool qmp_ok;
    long qmp_next_id;
    struct llist qmp_cmds; /* commands waiting for their answer */
    struct event *connect_ev;
    int connect_tries;
    bool guest_poweroff;

    struct vm_mux *mux;
    bool guest_hello;
    json_t *guest;
    struct event *hello_ev;
    struct event *boot_ev;
    int64_t boot_start_ms;
    int64_t agent_ms, runtime_ms, engine_ms; /* since boot_start, -1 until reached */
    struct event *ready_ev;
    struct hc_client *hc;
    struct hc_transfer *ready_t;

    struct evconnlistener *l_api, *l_docker, *l_exec;
    struct hs_server *ctl;

    struct fwd fwds[MAX_FWDS];
    size_t n_fwds;
    struct event *ports_ev;
    struct hc_transfer *ports_t;

    bool stop_requested;
    int stop_stage;
    int stop_timeout_s;
    struct event *stop_ev;
    struct llist waiters;
    bool detach;
    int exit_code;
};

static void set_state(vmm *v, enum vm_state s);
static void launch_qemu(vmm *v);
static void qemu_gone(vmm *v);
static void fwd_apply_all(vmm *v);
static void ports_schedule(vmm *v, int ms);

/* ------------------------------------------------------------------ helpers */

static void set_error(vmm *v, const char *fmt, ...) _printf_(2, 3);
static void set_error(vmm *v, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->last_error, sizeof(v->last_error), fmt, ap);
    va_end(ap);
    log_warn(COMP, "%s", v->last_error);
}

static void timer_in(struct event *ev, int64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    event_add(ev, &tv);
}

/* A boot (first, after a crash, or a guest reboot) begins: its milestones are timed from now and
 * the hung-boot timer runs. */
static void boot_clock_start(vmm *v)
{
    v->boots++;
    v->boot_start_ms = ltime_mono_ms();
    v->agent_ms = v->runtime_ms = v->engine_ms = -1;
    timer_in(v->boot_ev, (int64_t)v->def.boot_timeout_s * 1000);
}

static unsigned long long proc_starttime(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    _cleanup_free_ char *text = NULL;
    if (lfs_read_file(path, 4096, &text, NULL) < 0)
        return 0;
    /* Field 22, counted after the ')' that ends the command name. */
    char *p = strrchr(text, ')');
    if (!p)
        return 0;
    int field = 2;
    for (; *p && field < 22; p++)
        if (*p == ' ')
            field++;
    return strtoull(p, NULL, 10);
}

static bool proc_cmdline_has(pid_t pid, const char *needle)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    _cleanup_free_ char *text = NULL;
    size_t n;
    if (lfs_read_file(path, 256 * 1024, &text, &n) < 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!text[i])
            text[i] = ' ';
    return strstr(text, needle) != NULL;
}

static json_t *fwd_json(const struct fwd *f)
{
    static const char *const srcs[] = {"hub", "manual", "auto"};
    static const char *const sts[] = {"pending", "active", "failed"};
    char spec[96];
    json_t *o =
        json_pack("{s:s, s:s, s:i, s:i, s:s, s:s, s:s}", "proto", f->p.proto, "hostAddr", f->p.addr,
                  "hostPort", f->p.host_port, "guestPort", f->p.guest_port, "source", srcs[f->src],
                  "state", sts[f->state], "spec", vm_port_format(&f->p, spec, sizeof(spec)));
    if (o && f->module[0])
        json_object_set_new(o, "module", json_string(f->module));
    if (o && f->error[0])
        json_object_set_new(o, "error", json_string(f->error));
    return o;
}

static json_t *status_json(vmm *v)
{
    json_t *ports = json_array();
    for (size_t i = 0; i < v->n_fwds; i++)
        json_array_append_new(ports, fwd_json(&v->fwds[i]));
    char since[LTIME_RFC3339_MAX];
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:I, s:i, s:I, s:b, s:i, s:i, s:i, s:o, s:o}", "name",
        v->name, "state", state_names[v->state], "since",
        ltime_format_rfc3339(v->state_since, since), "accel", v->kvm ? "kvm" : "tcg", "accelDetail",
        v->accel_detail, "supervisorPid", (int)getpid(), "qemuPid", (int)v->qemu_pid, "memory",
        (json_int_t)v->def.memory, "cpus", v->def.cpus, "disk", (json_int_t)v->def.disk, "adopted",
        v->adopted, "boots", v->boots, "hungBoots", v->hung_boots, "crashes", v->crashes, "ports",
        ports, "shares", vm_def_shares_json(&v->def));
    if (!o)
        return NULL;
    json_object_set_new(o, "arch", json_string(vm_arch_name(v->def.arch)));
    json_object_set_new(o, "engine", json_string(vm_engine_name(v->def.engine)));
    json_object_set_new(o, "address", json_string(VM_GUEST_ADDR));
    json_object_set_new(o, "hostAlias", json_string(VM_HOST_ALIAS));
    json_object_set_new(o, "autostart", json_boolean(v->def.autostart));
    json_t *sockets = json_pack("{s:s, s:s, s:s, s:s}", "api", v->sock_api, "docker",
                                v->sock_docker, "exec", v->sock_exec, "control", v->sock_ctl);
    json_object_set_new(o, "sockets", sockets);
    json_t *boot = json_object();
    if (v->agent_ms >= 0)
        json_object_set_new(boot, "agentMs", json_integer(v->agent_ms));
    if (v->runtime_ms >= 0)
        json_object_set_new(boot, "runtimeMs", json_integer(v->runtime_ms));
    if (v->engine_ms >= 0)
        json_object_set_new(boot, "engineMs", json_integer(v->engine_ms));
    json_object_set_new(o, "boot", boot);
    if (v->last_error[0])
        json_object_set_new(o, "lastError", json_string(v->last_error));
    if (v->guest)
        json_object_set_new(o, "guest", json_incref(v->guest));
    const struct vm_mux_stats *st = v->mux ? vm_mux_stats(v->mux) : NULL;
    if (st)
        json_object_set_new(
            o, "channel",
            json_pack("{s:b, s:i, s:I, s:I, s:I}", "connected", vm_mux_has_link(v->mux),
                      "connections", (int)vm_mux_conn_count(v->mux), "framesIn",
                      (json_int_t)st->frames_in, "framesOut", (json_int_t)st->frames_out,
                      "skippedBytes", (json_int_t)st->skipped));
    return o;
}

static void write_state(vmm *v)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/%s", v->dir, VM_FILE_STATE);
    _cleanup_json_ json_t *o = status_json(v);
    json_object_set_new(o, "qemuStartTime", json_integer((json_int_t)v->qemu_start));
    _cleanup_free_ char *s = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
    if (s)
        lfs_write_atomic(path, s, strlen(s), 0644);
}

/* ------------------------------------------------------------------ control waiters */

static bool state_reached(vmm *v, enum vm_state until)
{
    if (v->state == ST_FAILED || v->state == ST_STOPPED)
        return true;
    return v->state >= until;
}

static void waiter_done(struct waiter *w)
{
    vmm *v = w->v;
    llist_remove(&w->node);
    if (w->timeout)
        event_free(w->timeout);
    if (w->req)
        hs_reply_json(w->req, 200, status_json(v));
    free(w);
}

static void waiters_check(vmm *v)
{
    struct waiter *w, *tmp;
    llist_foreach_safe (w, tmp, &v->waiters, node) {
        if (state_reached(v, w->until))
            waiter_done(w);
    }
}

static void waiter_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    waiter_done(arg);
}

static void waiter_abort(struct hs_request *r, void *ud)
{
    struct waiter *w = ud;
    w->req = NULL;
    waiter_done(w);
}

/* Answer r with the status once the VM reaches until, or after timeout_ms. */
static void waiter_add(vmm *v, struct hs_request *r, enum vm_state until, int64_t timeout_ms)
{
    struct waiter *w = calloc(1, sizeof(*w));
    if (!w) {
        hs_reply_error(r, 500, "out of memory");
        return;
    }
    w->req = r;
    w->v = v;
    w->until = until;
    w->timeout = evtimer_new(v->base, waiter_timeout_cb, w);
    llist_add_tail(&v->waiters, &w->node);
    timer_in(w->timeout, timeout_ms);
    hs_request_on_abort(r, waiter_abort, w);
}

static void set_state(vmm *v, enum vm_state s)
{
    if (v->state != s) {
        log_info(COMP, "%s: %s -> %s", v->name, state_names[v->state], state_names[s]);
        v->state = s;
        v->state_since = ltime_now_ms();
    }
    write_state(v);
    waiters_check(v);
    if (s == ST_STOPPED || s == ST_FAILED) {
        /* Nothing to relay to any more: the guest sockets go now, the control socket once
         * everyone has been answered and the loop ends. */
        struct evconnlistener **ls[] = {&v->l_api, &v->l_docker, &v->l_exec};
        const char *paths[] = {v->sock_api, v->sock_docker, v->sock_exec};
        for (size_t i = 0; i < ARRAY_SIZE(ls); i++) {
            if (*ls[i]) {
                evconnlistener_free(*ls[i]);
                *ls[i] = NULL;
            }
            unlink(paths[i]);
        }
        struct timeval tv = {0, 200 * 1000};
        event_base_loopexit(v->base, &tv);
    }
}

/* ------------------------------------------------------------------ QMP */

static void qmp_send(vmm *v, const char *cmd, json_t *args,
                     void (*cb)(vmm *v, void *ud, const struct vm_qmp_msg *m), void *ud)
{
    if (!v->qmp || !v->qmp_ok) {
        json_decref(args);
        return;
    }
    long id = ++v->qmp_next_id;
    char *line = vm_qmp_command(cmd, args, id);
    if (!line)
        return;
    bufferevent_write(v->qmp, line, strlen(line));
    free(line);
    if (cb) {
        struct qmp_cmd *c = calloc(1, sizeof(*c));
        if (!c)
            return;
        c->id = id;
        c->cb = cb;
        c->ud = ud;
        llist_add_tail(&v->qmp_cmds, &c->node);
    }
}

static void qmp_hmp(vmm *v, const char *line,
                    void (*cb)(vmm *v, void *ud, const struct vm_qmp_msg *m), void *ud)
{
    qmp_send(v, "human-monitor-command", json_pack("{s:s}", "command-line", line), cb, ud);
}

static void qmp_drop(vmm *v)
{
    if (v->qmp)
        bufferevent_free(v->qmp);
    v->qmp = NULL;
    v->qmp_ok = false;
    struct qmp_cmd *c, *tmp;
    llist_foreach_safe (c, tmp, &v->qmp_cmds, node) {
        llist_remove(&c->node);
        free(c);
    }
}

static void on_qmp_event(vmm *v, const struct vm_qmp_msg *m)
{
    if (lstr_eq(m->event, "SHUTDOWN")) {
        const char *reason = ljson_str(m->data, "reason");
        log_info(COMP, "QEMU: shutdown (%s)", reason ? reason : "?");
        if (lstr_eq(reason, "guest-shutdown"))
            v->guest_poweroff = true;
    } else if (lstr_eq(m->event, "RESET")) {
        /* The guest rebooted (or we reset a hung boot): same QEMU, fresh kernel. */
        log_info(COMP, "QEMU: reset; the guest is booting again");
        v->guest_hello = false;
        if (v->mux)
            vm_mux_reset(v->mux);
        if (v->state != ST_STOPPING) {
            boot_clock_start(v);
            timer_in(v->hello_ev, 500);
            set_state(v, ST_STARTING);
        }
    }
}

static void qmp_read_cb(struct bufferevent *bev, void *arg)
{
    vmm *v = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        size_t n;
        char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
        if (!line) {
            if (evbuffer_get_length(in) > 1024 * 1024) {
                log_warn(COMP, "QMP: oversized message; reconnecting");
                qmp_drop(v);
            }
            return;
        }
        _cleanup_json_ json_t *j = NULL;
        struct vm_qmp_msg m;
        if (ljson_parse(line, n, &j, NULL) < 0 || vm_qmp_parse(j, &m) < 0) {
            free(line);
            continue;
        }
        free(line);
        switch (m.kind) {
        case VM_QMP_GREETING:
            v->qmp_ok = true;
            qmp_send(v, "qmp_capabilities", NULL, NULL, NULL);
            fwd_apply_all(v);
            break;
        case VM_QMP_EVENT:
            on_qmp_event(v, &m);
            break;
        case VM_QMP_RETURN:
        case VM_QMP_ERROR:
            struct qmp_cmd *c;
            llist_foreach (c, &v->qmp_cmds, node) {
                if (c->id != m.id)
                    continue;
                llist_remove(&c->node);
                c->cb(v, c->ud, &m);
                free(c);
                break;
            }
            if (m.kind == VM_QMP_ERROR)
                log_debug(COMP, "QMP error: %s", m.error);
            break;
        }
        if (!v->qmp)
            return;
    }
}

static void qmp_event_cb(struct bufferevent *bev, short what, void *arg)
{
    vmm *v = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        log_debug(COMP, "QMP connection closed");
        qmp_drop(v);
    }
}

/* ------------------------------------------------------------------ port forwards */

static void fwd_add_cb(vmm *v, void *ud, const struct vm_qmp_msg *m)
{
    /* ud is an index hint; the forward may have moved: find it by its text. */
    char *spec = ud;
    for (size_t i = 0; i < v->n_fwds; i++) {
        struct fwd *f = &v->fwds[i];
        char s[96];
        if (!lstr_eq(vm_port_format(&f->p, s, sizeof(s)), spec))
            continue;
        /* HMP reports failure as text in a successful return. */
        const char *text = m->kind == VM_QMP_RETURN && json_is_string(m->data)
                               ? json_string_value(m->data)
                               : m->error;
        if (m->kind == VM_QMP_RETURN && (!text || !*text)) {
            f->state = FWD_ACTIVE;
            f->error[0] = 0;
            log_info(COMP, "forwarding %s", spec);
        } else {
            f->state = FWD_FAILED;
            snprintf(f->error, sizeof(f->error), "%s", text ? text : "failed");
            f->error[strcspn(f->error, "\r\n")] = 0;
            log_warn(COMP, "forward %s: %s", spec, f->error);
        }
        break;
    }
    free(spec);
    write_state(v);
}

static void fwd_add(vmm *v, struct fwd *f)
{
    char spec[96];
    vm_port_format(&f->p, spec, sizeof(spec));
    f->state = FWD_PENDING;
    _cleanup_free_ char *line = vm_qemu_hostfwd_add(&f->p);
    char *ud = strdup(spec);
    if (!line || !ud) {
        free(ud);
        return;
    }
    qmp_hmp(v, line, fwd_add_cb, ud);
}

static void fwd_remove(vmm *v, const struct vm_port *p)
{
    _cleanup_free_ char *line = vm_qemu_hostfwd_remove(p);
    if (line)
        qmp_hmp(v, line, NULL, NULL);
}

static struct fwd *fwd_push(vmm *v, const struct vm_port *p, enum fwd_src src, const char *module)
{
    if (v->n_fwds >= MAX_FWDS)
        return NULL;
    struct fwd *f = &v->fwds[v->n_fwds++];
    memset(f, 0, sizeof(*f));
    f->p = *p;
    f->src = src;
    if (module)
        lstr_copy(f->module, sizeof(f->module), module);
    return f;
}

static void fwd_drop(vmm *v, size_t i)
{
    memmove(&v->fwds[i], &v->fwds[i + 1], (v->n_fwds - i - 1) * sizeof(v->fwds[0]));
    v->n_fwds--;
}

/* Parse "info usernet" to remove every host forward QEMU has (an adopted QEMU may carry a
 * previous supervisor's), then add ours. */
static void usernet_cb(vmm *v, void *ud, const struct vm_qmp_msg *m)
{
    const char *text = json_is_string(m->data) ? json_string_value(m->data) : "";
    _cleanup_free_ char *copy = strdup(text);
    for (char *s = copy, *line; s && (line = strsep(&s, "\n"));) {
        char proto[16], addr[64];
        unsigned fd, port;
        /* "  TCP[HOST_FORWARD]  13   127.0.0.1  8080  10.0.2.15    80     0     0" */
        if (sscanf(line, " %15[A-Z][HOST_FORWARD] %u %63s %u", proto, &fd, addr, &port) != 4)
            continue;
        struct vm_port p = {.host_port = (uint16_t)port};
        lstr_copy(p.proto, sizeof(p.proto), lstr_eq(proto, "UDP") ? "udp" : "tcp");
        lstr_copy(p.addr, sizeof(p.addr), addr);
        fwd_remove(v, &p);
    }
    for (size_t i = 0; i < v->n_fwds; i++)
        fwd_add(v, &v->fwds[i]);
}

static void fwd_apply_all(vmm *v)
{
    qmp_hmp(v, "info usernet", usernet_cb, NULL);
}

static void fwds_init(vmm *v)
{
    v->n_fwds = 0;
    if (v->def.hub_port) {
        struct vm_port hub = {
            .proto = "tcp", .addr = "127.0.0.1", .host_port = v->def.hub_port, .guest_port = 8883};
        fwd_push(v, &hub, FWD_HUB, NULL);
    }
    for (size_t i = 0; i < v->def.n_ports; i++)
        fwd_push(v, &v->def.ports[i], FWD_MANUAL, NULL);
}

static bool fwd_host_taken(vmm *v, const struct vm_port *p, enum fwd_src except)
{
    for (size_t i = 0; i < v->n_fwds; i++)
        if (v->fwds[i].src != except && vm_port_same_host_side(&v->fwds[i].p, p))
            return true;
    return false;
}

/* The deployment's PortBindings become forwards (host port → the same guest port, where the
 * guest's Docker publishes it); gone bindings are removed. Manual forwards win conflicts. */
static void ports_done(void *ud, int result, long status, struct lbuf *body)
{
    vmm *v = ud;
    v->ports_t = NULL;
    ports_schedule(v, PORTS_REFRESH_MS);
    if (result < 0 || (status != 200 && status != 404))
        return;
    struct vm_auto_port autos[VM_MAX_PORTS];
    size_t n = 0;
    if (status == 200) {
        _cleanup_json_ json_t *j = NULL;
        if (ljson_parse(body->data, body->len, &j, NULL) < 0)
            return;
        n = vm_deployment_ports(j, autos, ARRAY_SIZE(autos));
    }
    for (size_t i = 0; i < v->n_fwds; i++)
        v->fwds[i].keep = v->fwds[i].src != FWD_AUTO;
    for (size_t k = 0; k < n; k++) {
        bool found = false;
        for (size_t i = 0; i < v->n_fwds && !found; i++) {
            struct fwd *f = &v->fwds[i];
            if (f->src == FWD_AUTO && vm_port_same_host_side(&f->p, &autos[k].port) &&
                f->p.guest_port == autos[k].port.guest_port) {
                f->keep = true;
                found = true;
            }
        }
        if (found)
            continue;
        if (fwd_host_taken(v, &autos[k].port, FWD_AUTO)) {
            log_debug(COMP, "module %s: host port %u is already forwarded", autos[k].module,
                      autos[k].port.host_port);
            continue;
        }
        struct fwd *f = fwd_push(v, &autos[k].port, FWD_AUTO, autos[k].module);
        if (f) {
            f->keep = true;
            log_info(COMP, "module %s publishes %u/%s: forwarding it", autos[k].module,
                     autos[k].port.host_port, autos[k].port.proto);
            fwd_add(v, f);
        }
    }
    for (size_t i = v->n_fwds; i-- > 0;) {
        if (v->fwds[i].keep)
            continue;
        log_info(COMP, "module %s no longer publishes %u: removing its forward", v->fwds[i].module,
                 v->fwds[i].p.host_port);
        fwd_remove(v, &v->fwds[i].p);
        fwd_drop(v, i);
    }
    write_state(v);
}

static void ports_cb(evutil_socket_t fd, short what, void *arg)
{
    vmm *v = arg;
    if (v->ports_t || v->state != ST_RUNNING)
        return;
    struct hc_request rq = {
        .unix_socket = v->sock_api,
        .url = "http://localhost/deployment",
        .timeout_ms = 20000,
        .on_done = ports_done,
        .ud = v,
    };
    v->ports_t = hc_request(v->hc, &rq);
    if (!v->ports_t)
        ports_schedule(v, PORTS_REFRESH_MS);
}

static void ports_schedule(vmm *v, int ms)
{
    timer_in(v->ports_ev, ms);
}

/* ------------------------------------------------------------------ readiness */

static void ready_done(void *ud, int result, long status, struct lbuf *body)
{
    vmm *v = ud;
    v->ready_t = NULL;
    if (v->state != ST_BOOTING && v->state != ST_RUNNING)
        return;
    if (result == 0 && status == 200) {
        int64_t now = ltime_mono_ms() - v->boot_start_ms;
        if (v->runtime_ms < 0) {
            v->runtime_ms = now;
            log_info(COMP, "the guest runtime answers %.1f s after boot start", now / 1000.0);
            set_state(v, ST_RUNNING);
            ports_schedule(v, 0);
        }
        _cleanup_json_ json_t *j = NULL;
        if (ljson_parse(body->data, body->len, &j, NULL) == 0 &&
            json_is_true(json_object_get(j, "containerEngineConnected"))) {
            v->engine_ms = now;
            log_info(COMP, "the guest container engine is connected %.1f s after boot start",
                     now / 1000.0);
            write_state(v);
            return;
        }
        if (now > 300000)
            return; /* stop asking; status shows the engine is not there */
    }
    timer_in(v->ready_ev, v->runtime_ms < 0 ? 250 : 1000);
}

static void ready_cb(evutil_socket_t fd, short what, void *arg)
{
    vmm *v = arg;
    if (v->ready_t || !v->guest_hello)
        return;
    struct hc_request rq = {
        .unix_socket = v->sock_api,
        .url = "http://localhost/status",
        .timeout_ms = 10000,
        .on_done = ready_done,
        .ud = v,
    };
    v->ready_t = hc_request(v->hc, &rq);
    if (!v->ready_t)
        timer_in(v->ready_ev, 1000);
}

/* ------------------------------------------------------------------ channel */

static json_t *host_hello(vmm *v, bool reset)
{
    return json_pack("{s:b, s:s, s:s, s:s, s:s, s:s, s:o}", "reset", reset, "role", "host", "name",
                     v->name, "hostAlias", VM_HOST_ALIAS, "hostAddress", VM_HOST_ADDR, "supervisor",
                     LEDGE_VERSION, "shares", vm_def_shares_json(&v->def));
}

static void on_hello(void *ud, const json_t *hello)
{
    vmm *v = ud;
    if (!lstr_eq(ljson_str(hello, "role"), "guest"))
        return;
    bool reset = json_is_true(json_object_get(hello, "reset"));
    json_decref(v->guest);
    v->guest = json_deep_copy(hello);
    json_object_del(v->guest, "reset");
    json_object_del(v->guest, "role");
    if (reset) /* the agent (re)started: it wants our configuration */
        vm_mux_send_hello(v->mux, host_hello(v, false));
    if (!v->guest_hello) {
        v->guest_hello = true;
        event_del(v->hello_ev);
        event_del(v->boot_ev);
        if (v->agent_ms < 0)
            v->agent_ms = ltime_mono_ms() - v->boot_start_ms;
        log_info(COMP, "guest agent %s up (kernel %s) %.1f s after boot start",
                 ljson_str(hello, "agent") ?: "?", ljson_str(hello, "kernel") ?: "?",
                 v->agent_ms / 1000.0);
        v->hung_boots = 0;
        if (v->state == ST_STARTING)
            set_state(v, ST_BOOTING);
        timer_in(v->ready_ev, 0);
    } else if (reset) {
        log_info(COMP, "guest agent restarted");
    }
}

static void on_event(void *ud, const json_t *ev)
{
    if (lstr_eq(ljson_str(ev, "event"), "shutdown"))
        log_info(COMP, "the guest agent is shutting down");
}

static void on_link_down(void *ud, int err)
{
    vmm *v = ud;
    log_debug(COMP, "channel link down: %s", strerror(-err));
    v->guest_hello = false;
    if (v->qemu_pid > 0 && v->state != ST_STOPPING) {
        v->connect_tries = 0;
        timer_in(v->connect_ev, 200);
    }
}

/* Internal connections (our own readiness and port requests) don't trigger a port refresh. */
static uint32_t internal_ids[8];

static void on_conn_closed(void *ud, uint32_t id)
{
    vmm *v = ud;
    for (size_t i = 0; i < ARRAY_SIZE(internal_ids); i++)
        if (internal_ids[i] == id) {
            internal_ids[i] = 0;
            return;
        }
    /* A client of the guest API finished (maybe a deploy): look at the published ports soon. */
    if (v->state == ST_RUNNING && !v->ports_t)
        ports_schedule(v, 1000);
}

static void hello_cb(evutil_socket_t fd, short what, void *arg)
{
    vmm *v = arg;
    if (v->guest_hello || !vm_mux_has_link(v->mux))
        return;
    /* Until the agent runs, QEMU holds what we send; a slow resend keeps that short. */
    vm_mux_send_hello(v->mux, host_hello(v, true));
    timer_in(v->hello_ev, 5000);
}

static void boot_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    vmm *v = arg;
    if (v->guest_hello || v->state == ST_STOPPING)
        return;
    v->hung_boots++;
    set_error(v, "boot hung: no guest agent %d s after boot start (attempt %d of %d); see %s/%s",
              v->def.boot_timeout_s, v->hung_boots, MAX_HUNG_BOOTS, v->dir, VM_FILE_CONSOLE);
    if (v->hung_boots < MAX_HUNG_BOOTS && v->qmp_ok) {
        log_info(COMP, "resetting the VM");
        qmp_send(v, "system_reset", NULL, NULL, NULL);
        v->boot_start_ms = ltime_mono_ms();
        timer_in(v->boot_ev, (int64_t)v->def.boot_timeout_s * 1000);
        return;
    }
    if (v->hung_boots < MAX_HUNG_BOOTS + 1) {
        log_info(COMP, "restarting QEMU");
        if (v->qemu_pid > 0)
            kill(v->qemu_pid, SIGKILL);
        return;
    }
    set_error(v, "boot hung %d times; giving up (see %s/%s)", v->hung_boots, v->dir,
              VM_FILE_CONSOLE);
    v->stop_requested = true;
    if (v->qemu_pid > 0)
        kill(v->qemu_pid, SIGKILL);
    else
        set_state(v, ST_FAILED);
}

static void connect_cb(evutil_socket_t fd, short what, void *arg)
{
    vmm *v = arg;
    if (v->qemu_pid <= 0)
        return;
    if (!v->qmp) {
        int q = vm_unix_connect(v->sock_qmp, SOCK_NONBLOCK);
        if (q >= 0) {
            v->qmp = bufferevent_socket_new(v->base, q, BEV_OPT_CLOSE_ON_FREE);
            bufferevent_setcb(v->qmp, qmp_read_cb, NULL, qmp_event_cb, v);
            bufferevent_enable(v->qmp, EV_READ | EV_WRITE);
        }
    }
    if (!vm_mux_has_link(v->mux)) {
        int c = vm_unix_connect(v->sock_chan, SOCK_NONBLOCK);
        if (c >= 0 && vm_mux_set_link(v->mux, c) == 0) {
            v->guest_hello = false;
            timer_in(v->hello_ev, 0);
        }
    }
    if ((!v->qmp || !vm_mux_has_link(v->mux)) && ++v->connect_tries < LINK_CONNECT_TRIES)
        timer_in(v->connect_ev, 100);
    else if (!v->qmp || !vm_mux_has_link(v->mux))
        set_error(v, "cannot connect to QEMU's sockets in %s", v->rundir);
}

/* ------------------------------------------------------------------ host sockets */

static bool peer_is_self(int fd)
{
    struct ucred uc;
    socklen_t len = sizeof(uc);
    return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) == 0 && uc.pid == getpid();
}

static void accept_stream(vmm *v, int fd, const char *kind)
{
    if (!v->guest_hello) {
        /* Booting: nothing to relay to yet. */
        static const char body[] = "{\"message\":\"the VM is booting; try again soon\"}";
        char msg[256];
        int n = snprintf(msg, sizeof(msg),
                         "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                         "Connection: close\r\nContent-Length: %zu\r\n\r\n%s",
                         sizeof(body) - 1, body);
        (void)!write(fd, msg, (size_t)n);
        close(fd);
        return;
    }
    bool self = peer_is_self(fd);
    uint32_t id;
    if (vm_mux_open_stream(v->mux, fd, json_pack("{s:s}", "kind", kind), &id) == 0 && self)
        for (size_t i = 0; i < ARRAY_SIZE(internal_ids); i++)
            if (!internal_ids[i]) {
                internal_ids[i] = id;
                break;
            }
}

static void api_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                          int len, void *arg)
{
    accept_stream(arg, fd, "mgmt");
}

static void docker_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                             int len, void *arg)
{
    accept_stream(arg, fd, "docker");
}

static void exec_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                           int len, void *arg)
{
    vmm *v = arg;
    if (!v->guest_hello) {
        struct lbuf b = LBUF_INIT;
        const char *e = "{\"error\":\"the VM is booting; try again soon\"}";
        if (vm_frame_encode(&b, VM_FRAME_CLOSE, 1, e, strlen(e)) == 0)
            (void)!write(fd, b.data, b.len);
        lbuf_free(&b);
        close(fd);
        return;
    }
    vm_mux_add_relay(v->mux, fd);
}

static struct evconnlistener *listen_unix(vmm *v, const char *path, evconnlistener_cb cb,
                                          mode_t mode)
{
    int fd = net_unix_listen(path, SOCK_STREAM | SOCK_NONBLOCK, mode, (gid_t)-1, 64);
    if (fd < 0) {
        log_error(COMP, "%s: %s", path, strerror(-fd));
        return NULL;
    }
    return evconnlistener_new(v->base, cb, v, LEV_OPT_CLOSE_ON_FREE, -1, fd);
}

/* ------------------------------------------------------------------ control API */

static vmm *V(void *ud)
{
    return ud;
}

static void h_status(struct hs_request *r, void *ud)
{
    vmm *v = V(ud);
    const char *wait = hs_request_query(r, "wait");
    if (!wait) {
        hs_reply_json(r, 200, status_json(v));
        return;
    }
    enum vm_state until = ST_RUNNING;
    for (size_t i = 0; i < ARRAY_SIZE(state_names); i++)
        if (lstr_eq(wait, state_names[i]))
            until = (enum vm_state)i;
    if (state_reached(v, until)) {
        hs_reply_json(r, 200, status_json(v));
        return;
    }
    long long secs = 600;
    const char *t = hs_request_query(r, "timeout");
    if (t)
        lstr_to_i64(t, &secs);
    waiter_add(v, r, until, secs * 1000);
}

static void stop_escalate_cb(evutil_socket_t fd, short what, void *arg)
{
    vmm *v = arg;
    if (v->qemu_pid <= 0)
        return;
    v->stop_stage++;
    if (v->stop_stage == 1) {
        log_info(COMP, "the guest did not power off; pressing the ACPI power button");
        qmp_send(v, "system_powerdown", NULL, NULL, NULL);
        timer_in(v->stop_ev, (int64_t)v->stop_timeout_s * 500);
    } else if (v->stop_stage == 2) {
        log_warn(COMP, "the guest is still running; quitting QEMU");
        qmp_send(v, "quit", NULL, NULL, NULL);
        kill(v->qemu_pid, SIGTERM);
        timer_in(v->stop_ev, 5000);
    } else {
        kill(v->qemu_pid, SIGKILL);
    }
}

static void begin_stop(vmm *v, int timeout_s)
{
    if (v->stop_requested)
        return;
    v->stop_requested = true;
    v->stop_timeout_s = timeout_s > 0 ? timeout_s : 90;
    event_del(v->boot_ev);
    if (v->qemu_pid <= 0) {
        set_state(v, ST_STOPPED);
        return;
    }
    set_state(v, ST_STOPPING);
    /* A clean shutdown through the agent (systemd's poweroff), which works on every machine
     * type without ACPI daemons in the guest; then ACPI, then quit. */
    v->stop_stage = 0;
    if (v->guest_hello && vm_mux_send_event(v->mux, json_pack("{s:s}", "event", "poweroff")) == 0)
        timer_in(v->stop_ev, (int64_t)v->stop_timeout_s * 500);
    else
        stop_escalate_cb(-1, 0, v);
}

static void h_stop(struct hs_request *r, void *ud)
{
    vmm *v = V(ud);
    long long secs = 90;
    const char *t = hs_request_query(r, "timeout");
    if (t && (lstr_to_i64(t, &secs) < 0 || secs < 1 || secs > 3600)) {
        hs_reply_error(r, 400, "timeout: seconds from 1 to 3600");
        return;
    }
    begin_stop(v, (int)secs);
    if (v->state == ST_STOPPED) {
        hs_reply_json(r, 200, status_json(v));
        return;
    }
    waiter_add(v, r, ST_STOPPED, (secs + 15) * 1000);
}

static void h_reboot(struct hs_request *r, void *ud)
{
    vmm *v = V(ud);
    if (!v->guest_hello) {
        hs_reply_error(r, 409, "the guest is not up (state %s)", state_names[v->state]);
        return;
    }
    vm_mux_send_event(v->mux, json_pack("{s:s}", "event", "reboot"));
    hs_reply_json(r, 202, json_pack("{s:s}", "message", "rebooting the guest"));
}

static void h_detach(struct hs_request *r, void *ud)
{
    vmm *v = V(ud);
    v->detach = true;
    hs_reply_json(r, 200, json_pack("{s:s}", "message", "supervisor leaving; QEMU keeps running"));
    struct timeval tv = {0, 100 * 1000};
    event_base_loopexit(v->base, &tv);
}

static int save_def(vmm *v, struct lerr *err)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/%s", v->dir, VM_FILE_DEF);
    int r = vm_def_save(path, &v->def);
    if (r < 0)
        return lerr_set(err, r, "%s: %s", path, strerror(-r));
    return 0;
}

static void h_ports_get(struct hs_request *r, void *ud)
{
    vmm *v = V(ud);
    json_t *a = json_array();
    for (size_t i = 0; i < v->n_fwds; i++)
        json_array_append_new(a, fwd_json(&v->fwds[i]));
    hs_reply_json(r, 200, a);
}

static void h_ports_add(struct hs_request *r, void *ud)
{
    vmm *v = V(ud);
    json_t *body;
    if (hs_request_body_json(r, false, &body) < 0)
        return;
    struct vm_port p;
    struct lerr err = {0};
    int rc = vm_port_parse(ljson_str(body, "spec"), &p, &err);
    json_decref(body);
    if (rc < 0) {
        hs_reply_error(r, 400, "%s", lerr_str(&err));
        return;
    }
    for (size_t i = 0; i < v->n_fwds; i++)
        if (v->fwds[i].src == FWD_AUTO && vm_port_same_host_side(&v->fwds[i].p, &p)) {
            /* A manual forward replaces the automatic one on the same host port. */
            fwd_remove(v, &v->fwds[i].p);
            fwd_drop(v, i);
            break;
        }
    if ((rc = vm_def_add_port(&v->def, &p, &err)) < 0 || (rc = save_def(v, &err)) < 0) {
        hs_reply_error(r, rc == -EEXIST ? 409 : 400, "%s", lerr_str(&err));
        return;
    }
    struct fwd *f = fwd_push(v, &p, FWD_MANUAL, NULL);
    if (f)
        fwd_add(v, f);
    hs_reply_json(r, 201, f ? fwd_json(f) : json_object());
}

static void h_ports_remove(struct hs_request *r, void *ud)
{
    vmm *v = V(ud);
    struct vm_port p;
    struct lerr err = {0};
    int rc = vm_port_parse(hs_request_query(r, "spec"), &p, &err);
    if (rc < 0) {
        hs_reply_error(r, 400, "%s", lerr_str(&err));
        return;
    }
    if ((rc = vm_def_remove_port(&v->def, &p, &err)) < 0 || (rc = save_def(v, &err)) < 0) {
        hs_reply_error(r, rc == -ENOENT ? 404 : 500, "%s", lerr_str(&err));
        return;
    }
    for (size_t i = 0; i < v->n_fwds; i++)
        if (v->fwds[i].src == FWD_MANUAL && v->fwds[i].p.host_port == p.host_port &&
            lstr_eq(v->fwds[i].p.proto, p.proto) && lstr_eq(v->fwds[i].p.addr, p.addr)) {
            fwd_remove(v, &v->fwds[i].p);
            fwd_drop(v, i);
            break;
        }
    hs_reply_empty(r, 204);
}

static const struct hs_route ctl_routes[] = {
    {"GET", "/status", h_status},         {"POST", "/stop", h_stop},
    {"POST", "/reboot", h_reboot},        {"POST", "/detach", h_detach},
    {"GET", "/ports", h_ports_get},       {"POST", "/ports", h_ports_add},
    {"DELETE", "/ports", h_ports_remove},
};

/* ------------------------------------------------------------------ QEMU process */

static void qemu_exit_cb(evutil_socket_t fd, short what, void *arg)
{
    vmm *v = arg;
    int st = 0;
    if (v->qemu_child) {
        pid_t p = waitpid(v->qemu_pid, &st, WNOHANG);
        if (p == 0)
            return;
    }
    if (WIFSIGNALED(st))
        log_info(COMP, "QEMU (pid %d) killed by signal %d", (int)v->qemu_pid, WTERMSIG(st));
    else
        log_info(COMP, "QEMU (pid %d) exited with %d", (int)v->qemu_pid, WEXITSTATUS(st));
    bool clean = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    qemu_gone(v);
    if (v->stop_requested) {
        set_state(v, v->hung_boots > MAX_HUNG_BOOTS ? ST_FAILED : ST_STOPPED);
        return;
    }
    if (v->guest_poweroff && clean) {
        log_info(COMP, "the guest powered itself off");
        set_state(v, ST_STOPPED);
        return;
    }
    int64_t now = ltime_mono_ms();
    if (now - v->crash_window_start > CRASH_WINDOW_MS) {
        v->crash_window_start = now;
        v->crashes = 0;
    }
    if (v->hung_boots == 0 || v->hung_boots > MAX_HUNG_BOOTS)
        v->crashes++;
    if (v->crashes > MAX_CRASHES) {
        set_error(v,
                  "QEMU stopped unexpectedly %d times in 10 minutes; giving up (see %s/qemu.log)",
                  v->crashes, v->dir);
        set_state(v, ST_FAILED);
        return;
    }
    int delay = v->hung_boots ? 0 : 1000 << MIN(v->crashes - 1, 4);
    if (!v->hung_boots)
        set_error(v, "QEMU stopped unexpectedly; restarting it in %d s", delay / 1000);
    set_state(v, ST_STARTING);
    timer_in(v->relaunch_ev, delay);
}

static void qemu_gone(vmm *v)
{
    if (v->qemu_ev) {
        event_free(v->qemu_ev);
        v->qemu_ev = NULL;
    }
    if (v->qemu_pidfd >= 0)
        close(v->qemu_pidfd);
    v->qemu_pidfd = -1;
    v->qemu_pid = 0;
    v->qemu_start = 0;
    v->guest_hello = false;
    qmp_drop(v);
    vm_mux_drop_link(v->mux);
    event_del(v->boot_ev);
    event_del(v->hello_ev);
    event_del(v->connect_ev);
    event_del(v->ready_ev);
    if (v->ready_t) {
        hc_cancel(v->ready_t);
        v->ready_t = NULL;
    }
    if (v->ports_t) {
        hc_cancel(v->ports_t);
        v->ports_t = NULL;
    }
    for (size_t i = 0; i < v->n_fwds; i++)
        v->fwds[i].state = FWD_PENDING;
}

static int watch_qemu(vmm *v)
{
    v->qemu_pidfd = (int)syscall(SYS_pidfd_open, v->qemu_pid, 0);
    if (v->qemu_pidfd < 0)
        return neg_errno();
    fcntl(v->qemu_pidfd, F_SETFD, FD_CLOEXEC);
    v->qemu_ev = event_new(v->base, v->qemu_pidfd, EV_READ | EV_PERSIST, qemu_exit_cb, v);
    if (!v->qemu_ev)
        return -ENOMEM;
    event_add(v->qemu_ev, NULL);
    v->qemu_start = proc_starttime(v->qemu_pid);
    return 0;
}

static void begin_boot(vmm *v)
{
    boot_clock_start(v);
    v->guest_hello = false;
    v->connect_tries = 0;
    timer_in(v->connect_ev, 0);
}

static void rotate_console(vmm *v)
{
    char a[PATH_MAX + 32], b[PATH_MAX + 32];
    snprintf(a, sizeof(a), "%s/%s", v->dir, VM_FILE_CONSOLE);
    snprintf(b, sizeof(b), "%s/%s.1", v->dir, VM_FILE_CONSOLE);
    rename(a, b);
}

static void launch_qemu(vmm *v)
{
    struct vm_qemu_paths paths = {.dir = v->dir, .run_dir = v->rundir};
    _cleanup_lstrv_ struct lstrv argv = LSTRV_INIT;
    struct lerr err = {0};
    if (vm_qemu_argv(&v->def, &paths, v->kvm, false, &argv, &err) < 0) {
        set_error(v, "%s", lerr_str(&err));
        set_state(v, ST_FAILED);
        return;
    }
    for (size_t i = 0; i < v->def.n_shares; i++) {
        struct stat st;
        if (stat(v->def.shares[i].host_dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
            set_error(v, "shared folder %s: %s", v->def.shares[i].host_dir,
                      errno ? strerror(errno) : "not a directory");
            set_state(v, ST_FAILED);
            return;
        }
    }
    rotate_console(v);
    char qlog[PATH_MAX + 32];
    snprintf(qlog, sizeof(qlog), "%s/qemu.log", v->dir);
    _cleanup_free_ char *cmd = lstrv_join(&argv, " ");
    log_info(COMP, "starting %s", cmd ? cmd : "qemu");
    pid_t pid = fork();
    if (pid < 0) {
        set_error(v, "fork: %s", strerror(errno));
        set_state(v, ST_FAILED);
        return;
    }
    if (pid == 0) {
        /* Its own session: QEMU outlives this supervisor, which any later one adopts. */
        setsid();
        int devnull = open("/dev/null", O_RDWR);
        int logfd = open(qlog, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (devnull >= 0)
            dup2(devnull, 0);
        if (logfd >= 0) {
            dup2(logfd, 1);
            dup2(logfd, 2);
        }
        signal(SIGPIPE, SIG_DFL);
        execvp(argv.v[0], argv.v);
        fprintf(stderr, "ledge-vmm: %s: %s\n", argv.v[0], strerror(errno));
        _exit(127);
    }
    v->qemu_pid = pid;
    v->qemu_child = true;
    v->adopted = false;
    v->guest_poweroff = false;
    if (watch_qemu(v) < 0) {
        set_error(v, "pidfd_open: %s", strerror(errno));
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        v->qemu_pid = 0;
        set_state(v, ST_FAILED);
        return;
    }
    set_state(v, ST_STARTING);
    begin_boot(v);
}

static void relaunch_cb(evutil_socket_t fd, short what, void *arg)
{
    vmm *v = arg;
    if (v->qemu_pid > 0 || v->stop_requested)
        return;
    launch_qemu(v);
}

/* A QEMU left by an earlier supervisor: same pid, same start time, our VM's name and dir. */
static bool adopt_qemu(vmm *v)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/qemu.pid", v->rundir);
    _cleanup_free_ char *text = NULL;
    if (lfs_read_file(path, 64, &text, NULL) < 0)
        return false;
    long long pid;
    text[strcspn(text, "\n")] = 0;
    if (lstr_to_i64(text, &pid) < 0 || pid <= 1)
        return false;
    char needle[PATH_MAX + 64];
    snprintf(needle, sizeof(needle), "ledge-vm-%s,", v->name);
    if (kill((pid_t)pid, 0) < 0 || !proc_cmdline_has((pid_t)pid, needle) ||
        !proc_cmdline_has((pid_t)pid, v->rundir))
        return false;
    /* The state file recorded the start time; a recycled pid would differ. */
    snprintf(path, sizeof(path), "%s/%s", v->dir, VM_FILE_STATE);
    _cleanup_free_ char *st = NULL;
    _cleanup_json_ json_t *j = NULL;
    if (lfs_read_file(path, 1 << 20, &st, NULL) == 0 &&
        ljson_parse(st, strlen(st), &j, NULL) == 0) {
        long long rec = ljson_int(j, "qemuStartTime", 0);
        if (rec && (unsigned long long)rec != proc_starttime((pid_t)pid))
            return false;
        /* Keep the accelerator the running QEMU was started with. */
        if (lstr_eq(ljson_str(j, "accel"), "kvm"))
            v->kvm = true;
        else if (lstr_eq(ljson_str(j, "accel"), "tcg"))
            v->kvm = false;
    }
    v->qemu_pid = (pid_t)pid;
    v->qemu_child = false;
    v->adopted = true;
    if (watch_qemu(v) < 0) {
        v->qemu_pid = 0;
        return false;
    }
    log_info(COMP, "adopted the running QEMU (pid %d)", (int)v->qemu_pid);
    set_state(v, ST_STARTING);
    /* The guest is probably up already: the agent answers our HELLO at once. */
    begin_boot(v);
    return true;
}

/* ------------------------------------------------------------------ accelerator */

static void probe_kvm(vmm *v)
{
    enum vm_arch host;
    v->kvm = false;
    if (v->def.accel == VM_ACCEL_TCG) {
        snprintf(v->accel_detail, sizeof(v->accel_detail), "software emulation (configured)");
        return;
    }
    if (vm_arch_host(&host) < 0 || host != v->def.arch) {
        snprintf(v->accel_detail, sizeof(v->accel_detail),
                 "software emulation: an %s guest on an %s host", vm_arch_name(v->def.arch),
                 vm_arch_name(host));
        return;
    }
    struct vm_kvm_probe pr;
    struct vm_qemu_paths paths = {.dir = v->dir, .run_dir = v->rundir};
    const char *t = getenv("LEDGE_VM_PROBE_TIMEOUT_MS");
    long long timeout = PROBE_TIMEOUT_MS_DEFAULT;
    if (t)
        lstr_to_i64(t, &timeout);
    vm_kvm_probe(v->vmroot, &v->def, &paths, (int)timeout, &pr);
    if (pr.usable) {
        v->kvm = true;
        snprintf(v->accel_detail, sizeof(v->accel_detail), "KVM (%s)", pr.detail);
    } else if (v->def.accel == VM_ACCEL_KVM) {
        /* Asked for KVM explicitly: try it anyway, the user knows better than the probe. */
        v->kvm = true;
        snprintf(v->accel_detail, sizeof(v->accel_detail), "KVM (configured; probe: %s)",
                 pr.detail);
    } else {
        snprintf(v->accel_detail, sizeof(v->accel_detail), "software emulation: %s", pr.detail);
    }
}

/* ------------------------------------------------------------------ main */

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    vmm *v = arg;
    if (sig == SIGUSR1) {
        log_info(COMP, "detaching: QEMU keeps running");
        v->detach = true;
        event_base_loopbreak(v->base);
        return;
    }
    log_info(COMP, "%s: stopping the VM", strsignal((int)sig));
    begin_stop(v, 60);
}

static int lock_vm(vmm *v)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/%s", v->dir, VM_FILE_LOCK);
    v->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (v->lock_fd < 0)
        return neg_errno();
    if (flock(v->lock_fd, LOCK_EX | LOCK_NB) < 0)
        return errno == EWOULDBLOCK ? -EBUSY : neg_errno();
    return 0;
}

static void usage(FILE *out)
{
    fprintf(out, "Usage: ledge-vmm --vm-dir DIR --name NAME [--foreground]\n"
                 "Supervises one ledge VM (see docs/vm.md); started by `ledge vm start`.\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"vm-dir", required_argument, NULL, 'd'},
        {"name", required_argument, NULL, 'n'},
        {"foreground", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    static vmm v = {.lock_fd = -1,
                    .qemu_pidfd = -1,
                    .exit_code = 0,
                    .qmp_cmds = LLIST_INIT(v.qmp_cmds),
                    .waiters = LLIST_INIT(v.waiters)};
    bool foreground = false;
    const char *vmroot = NULL, *name = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            vmroot = optarg;
            break;
        case 'n':
            name = optarg;
            break;
        case 'f':
            foreground = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    struct lerr err = {0};
    if (!vmroot || !name || vm_name_check(name, &err) < 0) {
        fprintf(stderr, "ledge-vmm: %s\n", err.msg[0] ? err.msg : "--vm-dir and --name are needed");
        return 2;
    }
    log_set_ident("ledge-vmm");
    lstr_copy(v.vmroot, sizeof(v.vmroot), vmroot);
    lstr_copy(v.name, sizeof(v.name), name);
    if (vm_path(v.dir, sizeof(v.dir), vmroot, name, NULL) < 0 ||
        vm_path(v.rundir, sizeof(v.rundir), vmroot, name, VM_RUN_SUBDIR) < 0 ||
        vm_sock_path(v.sock_ctl, sizeof(v.sock_ctl), vmroot, name, VM_SOCK_CTL, &err) < 0 ||
        vm_sock_path(v.sock_api, sizeof(v.sock_api), vmroot, name, VM_SOCK_API, &err) < 0 ||
        vm_sock_path(v.sock_docker, sizeof(v.sock_docker), vmroot, name, VM_SOCK_DOCKER, &err) <
            0 ||
        vm_sock_path(v.sock_exec, sizeof(v.sock_exec), vmroot, name, VM_SOCK_EXEC, &err) < 0 ||
        vm_sock_path(v.sock_qmp, sizeof(v.sock_qmp), vmroot, name, VM_SOCK_QMP, &err) < 0 ||
        vm_sock_path(v.sock_chan, sizeof(v.sock_chan), vmroot, name, VM_SOCK_CHAN, &err) < 0) {
        fprintf(stderr, "ledge-vmm: %s\n", err.msg[0] ? err.msg : "path too long");
        return 2;
    }
    char defpath[PATH_MAX + 32];
    snprintf(defpath, sizeof(defpath), "%s/%s", v.dir, VM_FILE_DEF);
    if (vm_def_load(defpath, &v.def, &err) < 0) {
        fprintf(stderr, "ledge-vmm: %s\n", lerr_str(&err));
        return 1;
    }
    int r = lock_vm(&v);
    if (r < 0) {
        fprintf(stderr, "ledge-vmm: %s: %s\n", v.name,
                r == -EBUSY ? "already supervised" : strerror(-r));
        return r == -EBUSY ? VM_SUPERVISOR_EXIT_BUSY : 1;
    }
    lfs_mkdir_p(v.rundir, 0700);
    int ready_fd = -1;
    if (!foreground) {
        /* Detach. The caller (ledge vm start, ledged's autostart) waits for the child to be
         * listening on its sockets, then gets its answer: "ok" or why not. */
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0) {
            fprintf(stderr, "ledge-vmm: pipe: %s\n", strerror(errno));
            return 1;
        }
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "ledge-vmm: fork: %s\n", strerror(errno));
            return 1;
        }
        if (pid > 0) {
            close(p[1]);
            char msg[512];
            ssize_t n, len = 0;
            while (len < (ssize_t)sizeof(msg) - 1 &&
                   (n = read(p[0], msg + len, sizeof(msg) - 1 - (size_t)len)) > 0)
                len += n;
            msg[len] = 0;
            if (lstr_eq(msg, "ok"))
                _exit(0);
            fprintf(stderr, "ledge-vmm: %s\n", len ? msg : "the supervisor exited at start");
            _exit(1);
        }
        close(p[0]);
        ready_fd = p[1];
        setsid();
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0)
            dup2(devnull, 0);
    }
    signal(SIGPIPE, SIG_IGN);
    v.state = ST_STARTING;
    v.state_since = ltime_now_ms();
    v.agent_ms = v.runtime_ms = v.engine_ms = -1;
    v.base = event_base_new();
    static const struct vm_mux_ops mux_ops = {
        .on_hello = on_hello,
        .on_event = on_event,
        .on_link_down = on_link_down,
        .on_conn_closed = on_conn_closed,
    };
    if (!v.base || vm_mux_new(v.base, VM_MUX_HOST, NULL, &mux_ops, &v, &v.mux) < 0 ||
        hc_client_new(v.base, &v.hc) < 0 ||
        hs_server_new(v.base, ctl_routes, ARRAY_SIZE(ctl_routes), &v, &v.ctl) < 0) {
        log_error(COMP, "out of memory");
        return 1;
    }
    v.boot_ev = evtimer_new(v.base, boot_timeout_cb, &v);
    v.hello_ev = evtimer_new(v.base, hello_cb, &v);
    v.connect_ev = evtimer_new(v.base, connect_cb, &v);
    v.ready_ev = evtimer_new(v.base, ready_cb, &v);
    v.ports_ev = evtimer_new(v.base, ports_cb, &v);
    v.relaunch_ev = evtimer_new(v.base, relaunch_cb, &v);
    v.stop_ev = evtimer_new(v.base, stop_escalate_cb, &v);
    struct event *sigs[3] = {
        evsignal_new(v.base, SIGTERM, on_signal, &v),
        evsignal_new(v.base, SIGINT, on_signal, &v),
        evsignal_new(v.base, SIGUSR1, on_signal, &v),
    };
    for (size_t i = 0; i < ARRAY_SIZE(sigs); i++)
        event_add(sigs[i], NULL);
    signal(SIGHUP, SIG_IGN);

    struct hs_limits lim = HS_LIMITS_DEFAULT;
    lim.max_body = 64 * 1024;
    if (hs_server_listen_unix(v.ctl, v.sock_ctl, 0600, (gid_t)-1, &lim, NULL) < 0 ||
        !(v.l_api = listen_unix(&v, v.sock_api, api_accept_cb, 0660)) ||
        !(v.l_docker = listen_unix(&v, v.sock_docker, docker_accept_cb, 0660)) ||
        !(v.l_exec = listen_unix(&v, v.sock_exec, exec_accept_cb, 0600))) {
        log_error(COMP, "cannot listen in %s", v.rundir);
        if (ready_fd >= 0)
            dprintf(ready_fd, "cannot listen in %s", v.rundir);
        return 1;
    }
    if (ready_fd >= 0) {
        (void)!write(ready_fd, "ok", 2);
        close(ready_fd);
    }
    fwds_init(&v);
    if (!adopt_qemu(&v)) {
        probe_kvm(&v);
        log_info(COMP, "%s: %s, %s, %d vCPU, accelerator: %s", v.name, vm_arch_name(v.def.arch),
                 vm_size_format(v.def.memory, (char[32]){0}, 32), v.def.cpus, v.accel_detail);
        launch_qemu(&v);
    } else {
        snprintf(v.accel_detail, sizeof(v.accel_detail), "%s (adopted)",
                 v.kvm ? "KVM" : "software emulation");
    }
    event_base_dispatch(v.base);

    /* Leaving: either the VM is down, or we detach and a later supervisor adopts QEMU. */
    if (!v.detach && v.qemu_pid > 0) {
        kill(v.qemu_pid, SIGKILL);
    }
    while (!llist_empty(&v.waiters))
        waiter_done(llist_first(&v.waiters, struct waiter, node));
    int rc = v.state == ST_FAILED ? 1 : 0;
    if (!v.detach)
        write_state(&v);
    hs_server_free(v.ctl);
    if (v.l_api)
        evconnlistener_free(v.l_api);
    if (v.l_docker)
        evconnlistener_free(v.l_docker);
    if (v.l_exec)
        evconnlistener_free(v.l_exec);
    unlink(v.sock_ctl);
    unlink(v.sock_api);
    unlink(v.sock_docker);
    unlink(v.sock_exec);
    qmp_drop(&v);
    vm_mux_free(v.mux);
    hc_client_free(v.hc);
    for (size_t i = 0; i < ARRAY_SIZE(sigs); i++)
        event_free(sigs[i]);
    event_free(v.boot_ev);
    event_free(v.hello_ev);
    event_free(v.connect_ev);
    event_free(v.ready_ev);
    event_free(v.ports_ev);
    event_free(v.relaunch_ev);
    event_free(v.stop_ev);
    if (v.qemu_ev)
        event_free(v.qemu_ev);
    if (v.qemu_pidfd >= 0)
        close(v.qemu_pidfd);
    json_decref(v.guest);
    vm_def_free(&v.def);
    event_base_free(v.base);
    close(v.lock_fd);
    log_info(COMP, "%s: supervisor exits (%s)", v.name,
             v.detach ? "detached" : state_names[v.state]);
    return rc;
}
