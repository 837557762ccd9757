/* oci.c — the `oci` engine backend: modules run with an OCI runtime (crun or runc) directly, with
 * no dockerd, containerd or shims (docs/engine-oci.md). Images come from src/image's content
 * store (pulls run in ledge-image-helper, out of this loop and this address space); a container
 * is a bundle under <state>/oci/containers/<id>/ (config.json, an overlayfs rootfs over the
 * image's layers, its upper and work directories, /etc/hosts, resolv.conf, hostname) and a record
 * (record.json, rewritten atomically on every change). ledge-keeper (keeper.c) is the parent of
 * every container: it runs the runtime, learns exits, writes the logs; this file talks to it and
 * re-adopts everything from the records and the keeper's table when ledged starts again. */
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/crypto.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/list.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "engine/engine.h"
#include "engine/oci.h"
#include "keeper_proto.h"
#include "later.h"
#include "oci-internal.h"
#include "image/manifest.h"
#include "image/ref.h"
#include "image/store.h"
#include "net/unix.h"

#define OCI_MAX_CONTAINERS KEEPER_CONTAINERS_MAX
#define OCI_ID_LEN 32
#define OCI_RECORD_MAX (1u << 20)
#define OCI_HOSTS_MAX (256u << 10)
#define KEEPER_RECONNECT_MS 1000

enum runtime_kind { RT_RUNC, RT_CRUN };

struct octr;
struct kreq;

struct oci {
    struct engine *e;
    char *dir;     /* <state>/oci */
    char *run;     /* <run>/oci */
    char *store;   /* <state>/oci/images */
    char *network; /* engine.network */
    char *instance;
    char *runtime; /* the runtime binary */
    enum runtime_kind rt;
    char *runtime_root;
    char *keeper_bin, *image_helper;
    bool userns;
    struct oci_net *net;
    struct llist ctrs; /* struct octr */
    size_t n_ctrs;
    bool running; /* between start and stop */
    /* the keeper */
    int kfd;
    struct event *kev, *kretry;
    bool kconnected; /* hello answered and the table reconciled */
    int64_t kseq;
    struct llist kreqs; /* requests sent, waiting for their answer, oldest first */
    pid_t kpid;         /* the keeper we started (our child until we exit) */
    int kpidfd;
    struct event *kpid_ev;
    struct llist ops; /* operations in flight (struct opctx), freed by fini if still there */
    json_t *unused;   /* image name -> when we first saw no container use it (ms) */
    int64_t image_gc_after_ms;
    struct event *gc_timer;
};

struct octr {
    struct oci *o;
    char id[OCI_ID_LEN + 1];
    char *name, *image;
    json_t *labels;
    enum ctr_state state;
    int exit_code;
    int64_t created_ms, started_ms, finished_ms;
    int pid;
    enum oci_netmode netmode;
    char ip[64];
    json_t *ports;     /* CNI portMappings */
    json_t *aliases;   /* extra names on the module network */
    char *extra_hosts; /* "addr\tname\n" lines */
    int stop_signal;
    int64_t log_max;
    int log_files;
    bool log_none;
    json_t *layers; /* diff_ids, bottom first */
    char *error;    /* the runtime's message for the last failed start */
    /* the health check (docker's HEALTHCHECK semantics), run with the runtime's exec */
    json_t *health_test;
    int64_t health_interval_ms, health_timeout_ms, health_start_ms;
    int health_retries, health_failures;
    enum ctr_health health;
    struct event *health_timer;
    struct oci_exec *health_x;
    /* in flight */
    bool starting, removing;
    struct event *kill_timer;
    engine_done_fn stop_cb;
    void *stop_ud;
    struct llist node; /* in oci.ctrs */
};

static struct oci *O(struct engine *e)
{
    return e->priv;
}

/* ------------------------------------------------------------------ small helpers */

static void emit(struct oci *o, enum engine_event_kind kind, struct octr *c)
{
    if (!o->running || !o->e->on_event)
        return;
    struct engine_event ev = {.kind = kind, .time_ms = ltime_now_ms()};
    if (c) {
        ev.id = c->id;
        ev.name = c->name;
        ev.exit_code = c->exit_code;
        ev.pid = c->pid;
        if (kind == ENGINE_EVENT_DIE && c->finished_ms)
            ev.time_ms = c->finished_ms;
        if (kind == ENGINE_EVENT_START && c->started_ms)
            ev.time_ms = c->started_ms;
    }
    o->e->on_event(o->e->event_ud, &ev);
}

static void ctr_path(const struct octr *c, const char *leaf, char *buf, size_t n)
{
    snprintf(buf, n, "%s/containers/%s%s%s", c->o->dir, c->id, leaf ? "/" : "", leaf ? leaf : "");
}

static void log_path(const struct octr *c, char *buf, size_t n)
{
    snprintf(buf, n, "%s/logs/%s.log", c->o->dir, c->id);
}

static struct octr *find(struct oci *o, const char *id_or_name)
{
    struct octr *c;
    llist_foreach (c, &o->ctrs, node)
        if (strcmp(c->id, id_or_name) == 0 || lstr_eq(c->name, id_or_name))
            return c;
    /* docker accepts a unique id prefix; so do we (12 characters, as `docker ps` shows) */
    size_t n = strlen(id_or_name);
    struct octr *hit = NULL;
    if (n >= 12)
        llist_foreach (c, &o->ctrs, node)
            if (strncmp(c->id, id_or_name, n) == 0) {
                if (hit)
                    return NULL;
                hit = c;
            }
    return hit;
}

static int rm_rf_at(int dfd, const char *name)
{
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOTDIR || errno == ELOOP)
            return unlinkat(dfd, name, 0) < 0 && errno != ENOENT ? neg_errno() : 0;
        return errno == ENOENT ? 0 : neg_errno();
    }
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return neg_errno();
    }
    struct dirent *de;
    int r = 0;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        int rr = rm_rf_at(dirfd(d), de->d_name);
        if (rr < 0)
            r = rr;
    }
    closedir(d);
    if (unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        r = neg_errno();
    return r;
}

static int rm_rf(const char *path)
{
    return rm_rf_at(AT_FDCWD, path);
}

static bool is_mountpoint(const char *path)
{
    struct stat a, b;
    char parent[PATH_MAX];
    snprintf(parent, sizeof(parent), "%s/..", path);
    return stat(path, &a) == 0 && stat(parent, &b) == 0 && a.st_dev != b.st_dev;
}

static bool executable(const char *p)
{
    return p && access(p, X_OK) == 0;
}

/* A helper program of ledge: beside ledged (installed), or in the build tree's layout. */
static char *find_helper(const char *name)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = 0;
        char dir[PATH_MAX];
        if (lfs_dirname(self, dir, sizeof(dir)) == 0) {
            const char *where[] = {"", "/../engine", "/../src/engine", "/../../src/engine",
                                   "/../lib/ledge"};
            for (size_t i = 0; i < ARRAY_SIZE(where); i++) {
                char p[PATH_MAX + 64], real[PATH_MAX];
                snprintf(p, sizeof(p), "%s%s/%s", dir, where[i], name);
                if (executable(p) && realpath(p, real))
                    return strdup(real);
            }
        }
    }
    char *p = lstr_printf("/usr/lib/ledge/%s", name);
    return p;
}

static char *find_in_path(const char *name)
{
    const char *dirs[] = {"/usr/local/sbin", "/usr/local/bin", "/usr/sbin",
                          "/usr/bin",        "/sbin",          "/bin"};
    for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
        char *p = lstr_printf("%s/%s", dirs[i], name);
        if (executable(p))
            return p;
        free(p);
    }
    return NULL;
}

static void read_controllers(const char *path, char *buf, size_t size)
{
    _cleanup_free_ char *text = NULL;
    size_t n = 0;
    if (!size)
        return;
    buf[0] = 0;
    if (lfs_read_file(path, 4096, &text, &n) == 0) {
        lstr_copy(buf, size, text);
        buf[strcspn(buf, "\n")] = 0;
    }
}

enum oci_cgroups oci_cgroups_mode(char *v2_controllers, size_t size)
{
    struct statfs s;
    if (size)
        v2_controllers[0] = 0;
    if (statfs("/sys/fs/cgroup", &s) < 0)
        return OCI_CGROUPS_NONE;
    if (s.f_type == CGROUP2_SUPER_MAGIC) {
        read_controllers("/sys/fs/cgroup/cgroup.controllers", v2_controllers, size);
        return OCI_CGROUPS_UNIFIED;
    }
    if (s.f_type != TMPFS_MAGIC)
        return OCI_CGROUPS_NONE;
    if (statfs("/sys/fs/cgroup/unified", &s) == 0 && s.f_type == CGROUP2_SUPER_MAGIC) {
        read_controllers("/sys/fs/cgroup/unified/cgroup.controllers", v2_controllers, size);
        return OCI_CGROUPS_HYBRID;
    }
    return OCI_CGROUPS_V1;
}

const char *oci_cgroups_name(enum oci_cgroups m)
{
    static const char *const names[] = {"none", "v1", "hybrid", "v2"};
    return (unsigned)m < ARRAY_SIZE(names) ? names[m] : "?";
}

bool oci_crun_fits(enum oci_cgroups m, const char *v2_controllers)
{
    return m == OCI_CGROUPS_UNIFIED || m == OCI_CGROUPS_V1 ||
           (m == OCI_CGROUPS_HYBRID && !(v2_controllers && *v2_controllers));
}

/* engine.runtime (docs/engine-oci.md "Runtime"). */
int oci_runtime_resolve(const char *want, char **ret_path, struct lerr *e)
{
    if (want && want[0] == '/') {
        if (!executable(want))
            return lerr_set(e, -ENOENT, "engine.runtime: %s is not an executable", want);
        *ret_path = strdup(want);
        return *ret_path ? 0 : -ENOMEM;
    }
    if (want && *want && strcmp(want, "auto")) {
        if (strcmp(want, "crun") && strcmp(want, "runc"))
            return lerr_set(e, -EINVAL, "engine.runtime: \"%s\" is not crun, runc, auto or a path",
                            want);
        if (!(*ret_path = find_in_path(want)))
            return lerr_set(e, -ENOENT,
                            "engine.runtime: the OCI runtime %s is not installed (apt install %s)",
                            want, want);
        return 0;
    }
    char v2[256];
    enum oci_cgroups m = oci_cgroups_mode(v2, sizeof(v2));
    bool fits = oci_crun_fits(m, v2);
    char *p = fits ? find_in_path("crun") : NULL;
    if (!p)
        p = find_in_path("runc");
    if (p) {
        *ret_path = p;
        return 0;
    }
    _cleanup_free_ char *crun = find_in_path("crun");
    if (crun)
        return lerr_set(e, -ENOENT,
                        "engine.runtime auto: crun cannot run on this host's cgroups (hybrid, "
                        "with %s in the v2 hierarchy) and runc is not installed (apt install runc)",
                        v2);
    return lerr_set(e, -ENOENT,
                    "engine.runtime auto: no OCI runtime is installed (apt install crun; runc on "
                    "hosts whose cgroups crun cannot use)");
}

/* ------------------------------------------------------------------ records */

static int persist(struct octr *c)
{
    json_t *j = json_pack(
        "{s:s, s:s, s:s, s:O, s:s, s:i, s:I, s:I, s:I, s:s, s:s, s:i, s:I, s:i, s:b, s:O?, s:O?, "
        "s:O?, s:s?, s:s?}",
        "id", c->id, "name", c->name, "image", c->image, "labels", c->labels, "state",
        ctr_state_name(c->state), "exitCode", c->exit_code, "createdMs", (json_int_t)c->created_ms,
        "startedMs", (json_int_t)c->started_ms, "finishedMs", (json_int_t)c->finished_ms, "netmode",
        c->netmode == OCI_NET_HOST   ? "host"
        : c->netmode == OCI_NET_NONE ? "none"
                                     : "bridge",
        "ip", c->ip, "stopSignal", c->stop_signal, "logMax", (json_int_t)c->log_max, "logFiles",
        c->log_files, "logNone", c->log_none, "layers", c->layers, "ports", c->ports, "aliases",
        c->aliases, "extraHosts", c->extra_hosts, "error", c->error);
    if (!j)
        return -ENOMEM;
    if (c->health_test)
        json_object_set_new(j, "health",
                            json_pack("{s:O, s:I, s:I, s:I, s:i}", "test", c->health_test,
                                      "intervalMs", (json_int_t)c->health_interval_ms, "timeoutMs",
                                      (json_int_t)c->health_timeout_ms, "startPeriodMs",
                                      (json_int_t)c->health_start_ms, "retries",
                                      c->health_retries));
    _cleanup_free_ char *text = ljson_dump(j);
    json_decref(j);
    if (!text)
        return -ENOMEM;
    char path[PATH_MAX];
    ctr_path(c, "record.json", path, sizeof(path));
    return lfs_write_atomic(path, text, strlen(text), 0600);
}

static void ctr_free(struct octr *c)
{
    if (c->kill_timer)
        event_free(c->kill_timer);
    if (c->health_timer)
        event_free(c->health_timer);
    oci_exec_cancel(c->health_x);
    json_decref(c->health_test);
    free(c->name);
    free(c->image);
    free(c->extra_hosts);
    free(c->error);
    json_decref(c->labels);
    json_decref(c->layers);
    json_decref(c->ports);
    json_decref(c->aliases);
    free(c);
}

static void ctr_unlink(struct oci *o, struct octr *c)
{
    if (llist_linked(&c->node)) {
        llist_remove(&c->node);
        o->n_ctrs--;
    }
}

static struct octr *ctr_new(struct oci *o)
{
    struct octr *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->o = o;
    c->exit_code = -1;
    c->stop_signal = SIGTERM;
    c->log_files = 1;
    return c;
}

static void ctr_link(struct oci *o, struct octr *c)
{
    llist_add_tail(&o->ctrs, &c->node);
    o->n_ctrs++;
}

/* j (a new reference), or a new empty array when j is NULL and want_array. */
static json_t *json_or(json_t *j, bool want_array)
{
    return j ? json_incref(j) : want_array ? json_array() : NULL;
}

static int load_record(struct oci *o, const char *id)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/containers/%s/record.json", o->dir, id);
    _cleanup_free_ char *text = NULL;
    size_t n;
    int r = lfs_read_file(path, OCI_RECORD_MAX, &text, &n);
    if (r < 0)
        return r;
    _cleanup_json_ json_t *j = NULL;
    if (ljson_parse(text, n, &j, NULL) < 0 || !lstr_eq(ljson_str(j, "id"), id) ||
        !ljson_str(j, "name") || !ljson_str(j, "image") || strlen(id) != OCI_ID_LEN)
        return -EINVAL;
    struct octr *c = ctr_new(o);
    if (!c)
        return -ENOMEM;
    lstr_copy(c->id, sizeof(c->id), id);
    c->name = strdup(ljson_str(j, "name"));
    c->image = strdup(ljson_str(j, "image"));
    json_t *labels = json_object_get(j, "labels");
    c->labels = json_is_object(labels) ? json_incref(labels) : json_object();
    const char *st = ljson_str(j, "state");
    c->state = lstr_eq(st, "running")   ? CTR_RUNNING
               : lstr_eq(st, "created") ? CTR_CREATED
                                        : CTR_EXITED;
    c->exit_code = (int)ljson_int(j, "exitCode", -1);
    c->created_ms = ljson_int(j, "createdMs", 0);
    c->started_ms = ljson_int(j, "startedMs", 0);
    c->finished_ms = ljson_int(j, "finishedMs", 0);
    const char *nm = ljson_str(j, "netmode");
    c->netmode = lstr_eq(nm, "host")   ? OCI_NET_HOST
                 : lstr_eq(nm, "none") ? OCI_NET_NONE
                                       : OCI_NET_BRIDGE;
    lstr_copy(c->ip, sizeof(c->ip), ljson_str(j, "ip") ?: "");
    c->stop_signal = (int)ljson_int(j, "stopSignal", SIGTERM);
    c->log_max = ljson_int(j, "logMax", 0);
    c->log_files = (int)ljson_int(j, "logFiles", 1);
    c->log_none = ljson_bool(j, "logNone", false);
    c->layers = json_or(json_object_get(j, "layers"), true);
    c->ports = json_or(json_object_get(j, "ports"), false);
    c->aliases = json_or(json_object_get(j, "aliases"), false);
    const char *eh = ljson_str(j, "extraHosts"), *err = ljson_str(j, "error");
    c->extra_hosts = eh ? strdup(eh) : NULL;
    c->error = err ? strdup(err) : NULL;
    json_t *h = json_object_get(j, "health");
    if (json_is_array(json_object_get(h, "test"))) {
        c->health_test = json_incref(json_object_get(h, "test"));
        c->health_interval_ms = MAX(ljson_int(h, "intervalMs", 30000), 1);
        c->health_timeout_ms = MAX(ljson_int(h, "timeoutMs", 30000), 1);
        c->health_start_ms = ljson_int(h, "startPeriodMs", 0);
        c->health_retries = (int)MAX(ljson_int(h, "retries", 3), 1);
    }
    if (!c->name || !c->image || !c->labels || !c->layers) {
        ctr_free(c);
        return -ENOMEM;
    }
    ctr_link(o, c);
    return 0;
}

/* ------------------------------------------------------------------ the keeper */

typedef void (*kreq_fn)(struct oci *o, void *ud, const struct keeper_msg *m, const struct lerr *e);

struct kreq {
    int64_t seq;
    kreq_fn cb;
    void *ud;
    struct llist node; /* in oci.kreqs */
};

static void keeper_lost(struct oci *o, const char *why);
static void keeper_connect(struct oci *o);
static void health_start(struct octr *c);

static int keeper_send(struct oci *o, struct keeper_request *r, kreq_fn cb, void *ud)
{
    if (o->kfd < 0)
        return -ENOTCONN;
    struct kreq *q = calloc(1, sizeof(*q));
    if (!q)
        return -ENOMEM;
    r->seq = ++o->kseq;
    json_t *j = keeper_request_json(r);
    _cleanup_free_ char *text = j ? ljson_dump(j) : NULL;
    json_decref(j);
    if (!text || strlen(text) > KEEPER_MSG_MAX) {
        free(q);
        return text ? -E2BIG : -ENOMEM;
    }
    if (send(o->kfd, text, strlen(text), MSG_NOSIGNAL) < 0) {
        int rr = neg_errno();
        free(q);
        return rr;
    }
    q->seq = r->seq;
    q->cb = cb;
    q->ud = ud;
    llist_add_tail(&o->kreqs, &q->node);
    return 0;
}

static void on_keeper_exit(struct oci *o, const struct keeper_container *k);

static void keeper_readable(evutil_socket_t fd, short what, void *arg)
{
    struct oci *o = arg;
    static char buf[KEEPER_MSG_MAX + 1];
    ssize_t n = recv(o->kfd, buf, sizeof(buf) - 1, MSG_DONTWAIT | MSG_TRUNC);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0 || (size_t)n >= sizeof(buf)) {
        keeper_lost(o, n == 0 ? "it closed the connection" : "a bad message");
        return;
    }
    _cleanup_json_ json_t *j = NULL;
    struct keeper_msg m;
    struct lerr e = {0};
    if (ljson_parse(buf, (size_t)n, &j, &e) < 0 || keeper_msg_parse(j, &m, &e) < 0) {
        keeper_lost(o, lerr_str(&e));
        return;
    }
    if (m.kind == KEEPER_MSG_EXIT) {
        on_keeper_exit(o, &m.exit);
        return;
    }
    struct kreq *q = NULL, *p;
    llist_foreach (p, &o->kreqs, node)
        if (p->seq == m.seq) {
            q = p;
            break;
        }
    if (!q)
        return; /* an answer for a request of a connection before this one */
    llist_remove(&q->node);
    struct lerr ke = {0};
    if (!m.ok)
        lerr_set(&ke, -m.err_code, "keeper: %s", m.error ? m.error : strerror(m.err_code));
    q->cb(o, q->ud, &m, m.ok ? NULL : &ke);
    free(q);
}

static void fail_kreqs(struct oci *o)
{
    struct lerr e;
    lerr_set(&e, -EIO, "the container supervisor (ledge-keeper) went away");
    struct kreq *q;
    while ((q = llist_first(&o->kreqs, struct kreq, node))) {
        llist_remove(&q->node);
        q->cb(o, q->ud, NULL, &e);
        free(q);
    }
}

static void keeper_disconnect(struct oci *o)
{
    if (o->kev) {
        event_free(o->kev);
        o->kev = NULL;
    }
    if (o->kfd >= 0) {
        close(o->kfd);
        o->kfd = -1;
    }
}

static void keeper_lost(struct oci *o, const char *why)
{
    keeper_disconnect(o);
    bool was = o->kconnected;
    o->kconnected = false;
    fail_kreqs(o);
    if (was)
        emit(o, ENGINE_EVENT_DISCONNECTED, NULL);
    (void)why;
    if (o->running) {
        struct timeval tv = {KEEPER_RECONNECT_MS / 1000, (KEEPER_RECONNECT_MS % 1000) * 1000};
        evtimer_add(o->kretry, &tv);
    }
}

/* The keeper's table against our records: what ended while ledged was away. */
static void keeper_listed(struct oci *o, void *ud, const struct keeper_msg *m, const struct lerr *e)
{
    if (e) {
        keeper_lost(o, lerr_str(e));
        return;
    }
    struct octr *c;
    llist_foreach (c, &o->ctrs, node) {
        if (c->state != CTR_RUNNING || c->starting)
            continue;
        struct keeper_container kc = {0};
        bool known = false;
        size_t i;
        json_t *v;
        json_array_foreach (m->containers, i, v) {
            if (keeper_container_parse(v, &kc, NULL) == 0 && strcmp(kc.id, c->id) == 0) {
                known = true;
                break;
            }
        }
        if (known && kc.running) {
            c->pid = kc.pid;
            health_start(c);
            continue;
        }
        /* ended while we were away (known: with its status; else the keeper is new, a reboot or
         * a keeper that was killed, and how it ended is unknown) */
        c->state = CTR_EXITED;
        c->exit_code = known ? kc.exit_code : -1;
        c->finished_ms = known && kc.finished_ms ? kc.finished_ms : ltime_now_ms();
        c->pid = 0;
        persist(c);
    }
    o->kconnected = true;
    emit(o, ENGINE_EVENT_CONNECTED, NULL);
}

static void keeper_helloed(struct oci *o, void *ud, const struct keeper_msg *m,
                           const struct lerr *e)
{
    if (e || m->version != KEEPER_PROTO_VERSION) {
        keeper_lost(o, e ? lerr_str(e) : "a keeper of another version");
        return;
    }
    struct keeper_request r = {.op = KEEPER_OP_LIST};
    if (keeper_send(o, &r, keeper_listed, NULL) < 0)
        keeper_lost(o, "cannot ask for its table");
}

static void keeper_child_exited(evutil_socket_t fd, short what, void *arg)
{
    struct oci *o = arg;
    siginfo_t si = {0};
    waitid((idtype_t)P_PIDFD, (id_t)o->kpidfd, &si, WEXITED | WNOHANG);
    event_free(o->kpid_ev);
    o->kpid_ev = NULL;
    close(o->kpidfd);
    o->kpidfd = -1;
    o->kpid = 0;
}

/* Start a keeper on a listening socket we made (so connecting never races its start). */
static int keeper_spawn(struct oci *o, const char *sock)
{
    int lfd = net_unix_listen(sock, SOCK_SEQPACKET, 0600, (gid_t)-1, 4);
    if (lfd < 0)
        return lfd;
    char state[PATH_MAX], logp[PATH_MAX];
    snprintf(state, sizeof(state), "%s/keeper.json", o->run);
    snprintf(logp, sizeof(logp), "%s/keeper.log", o->run);
    int logfd = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    pid_t pid = fork();
    if (pid < 0) {
        int r = neg_errno();
        close(lfd);
        if (logfd >= 0)
            close(logfd);
        return r;
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        for (int s = 1; s < 32; s++)
            if (s != SIGKILL && s != SIGSTOP)
                signal(s, SIG_DFL);
        setsid();
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, 0);
        dup2(logfd >= 0 ? logfd : devnull, 1);
        dup2(logfd >= 0 ? logfd : devnull, 2);
        dup2(lfd, 3);
        if (close_range(4, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
            /* ours are O_CLOEXEC anyway */
        }
        if (chdir("/") < 0) {
            /* "/" exists */
        }
        execl(o->keeper_bin, o->keeper_bin, "--state", state, (char *)NULL);
        dprintf(2, "ledged: cannot execute %s: %s\n", o->keeper_bin, strerror(errno));
        _exit(127);
    }
    close(lfd);
    if (logfd >= 0)
        close(logfd);
    o->kpid = pid;
    o->kpidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (o->kpidfd >= 0) {
        fcntl(o->kpidfd, F_SETFD, FD_CLOEXEC);
        o->kpid_ev = event_new(o->e->base, o->kpidfd, EV_READ, keeper_child_exited, o);
        if (o->kpid_ev)
            event_add(o->kpid_ev, NULL);
    }
    return 0;
}

static int keeper_try_connect(const char *sock)
{
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return neg_errno();
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    lstr_copy(a.sun_path, sizeof(a.sun_path), sock);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        int r = neg_errno();
        close(fd);
        return r;
    }
    return fd;
}

static void keeper_connect(struct oci *o)
{
    if (!o->running || o->kfd >= 0)
        return;
    char sock[PATH_MAX];
    snprintf(sock, sizeof(sock), "%s/keeper.sock", o->run);
    int fd = keeper_try_connect(sock);
    if (fd == -ECONNREFUSED || fd == -ENOENT) {
        /* no keeper: the first start, a reboot, or one that died; start one */
        if (keeper_spawn(o, sock) == 0)
            fd = keeper_try_connect(sock);
    }
    if (fd < 0) {
        keeper_lost(o, strerror(-fd));
        return;
    }
    o->kfd = fd;
    o->kev = event_new(o->e->base, fd, EV_READ | EV_PERSIST, keeper_readable, o);
    struct keeper_request r = {.op = KEEPER_OP_HELLO};
    if (!o->kev || event_add(o->kev, NULL) < 0 || keeper_send(o, &r, keeper_helloed, NULL) < 0)
        keeper_lost(o, "cannot talk to it");
}

static void kretry_cb(evutil_socket_t fd, short what, void *arg)
{
    keeper_connect(arg);
}

/* ------------------------------------------------------------------ operations in flight */

/* An operation of several asynchronous steps (create, start, stop, remove). */
struct opctx {
    struct oci *o;
    struct octr *c;
    int stage;
    engine_done_fn done;
    engine_create_fn created;
    void *ud;
    struct lerr err;
    struct oci_exec *x;
    bool dead;         /* fini ran: nothing may call back */
    struct llist node; /* in oci.ops */
};

static struct opctx *op_new(struct oci *o, struct octr *c)
{
    struct opctx *op = calloc(1, sizeof(*op));
    if (!op)
        return NULL;
    op->o = o;
    op->c = c;
    llist_add_tail(&o->ops, &op->node);
    return op;
}

static void op_free(struct opctx *op)
{
    llist_remove(&op->node);
    free(op);
}

/* ------------------------------------------------------------------ rootfs */

/* overlayfs over the image's layers (top first) with this container's upper and work. */
static int mount_rootfs(struct octr *c, struct lerr *e)
{
    char root[PATH_MAX], upper[PATH_MAX], work[PATH_MAX];
    ctr_path(c, "rootfs", root, sizeof(root));
    if (is_mountpoint(root))
        return 0;
    ctr_path(c, "upper", upper, sizeof(upper));
    ctr_path(c, "work", work, sizeof(work));
    struct lbuf opts = LBUF_INIT;
    lbuf_puts(&opts, "lowerdir=");
    size_t n = json_array_size(c->layers);
    for (size_t i = n; i-- > 0;) {
        const char *d = json_string_value(json_array_get(c->layers, i));
        const char *hex = d && lstr_startswith(d, "sha256:") ? d + 7 : NULL;
        if (!hex || strspn(hex, "0123456789abcdef") != 64) {
            lbuf_free(&opts);
            return lerr_set(e, -EINVAL, "image %s: bad layer id", c->image);
        }
        lbuf_printf(&opts, "%s%s/layers/sha256/%s", i + 1 < n ? ":" : "", c->o->store, hex);
    }
    if (n == 0) {
        /* an image without layers (FROM scratch, nothing added): an empty lower */
        char empty[PATH_MAX];
        ctr_path(c, "empty", empty, sizeof(empty));
        mkdir(empty, 0755);
        lbuf_puts(&opts, empty);
    }
    lbuf_printf(&opts, ",upperdir=%s,workdir=%s", upper, work);
    if (opts.len >= 4096) {
        lbuf_free(&opts);
        return lerr_set(e, -E2BIG,
                        "image %s: %zu layers make the overlay's options longer than a page",
                        c->image, n);
    }
    int r = mount("overlay", root, "overlay", 0, opts.data);
    int err = errno;
    lbuf_free(&opts);
    if (r < 0)
        return lerr_set(e, -err, "%s: cannot mount its root filesystem (overlay): %s", c->name,
                        strerror(err));
    return 0;
}

static void umount_rootfs(struct octr *c)
{
    char root[PATH_MAX];
    ctr_path(c, "rootfs", root, sizeof(root));
    if (is_mountpoint(root))
        umount2(root, MNT_DETACH);
}

/* ------------------------------------------------------------------ users, devices */

/* A file of the container's root, resolved inside it (its symlinks cannot lead out). */
static int read_in_root(const char *root, const char *path, char **ret)
{
    _cleanup_close_ int dfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return neg_errno();
    struct open_how how = {.flags = O_RDONLY | O_CLOEXEC,
                           .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
    int fd = (int)syscall(SYS_openat2, dfd, path, &how, sizeof(how));
    if (fd < 0)
        return neg_errno();
    struct lbuf b = LBUF_INIT;
    char buf[8192];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0 && b.len < (4u << 20))
        lbuf_append(&b, buf, (size_t)n);
    close(fd);
    lbuf_putc(&b, 0);
    *ret = lbuf_steal(&b);
    return *ret ? 0 : -ENOMEM;
}

/* name:x:uid:gid:... lines; field 2 and 3 (passwd) or field 2 (group). */
static bool lookup_db(const char *text, const char *name, unsigned long *id, unsigned long *gid)
{
    size_t nl = strlen(name);
    for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
        if (strncmp(l, name, nl) != 0 || l[nl] != ':')
            continue;
        const char *f = strchr(l + nl + 1, ':');
        if (!f)
            return false;
        char *end;
        *id = strtoul(f + 1, &end, 10);
        if (gid && *end == ':')
            *gid = strtoul(end + 1, NULL, 10);
        return true;
    }
    return false;
}

static bool group_has_member(const char *line_end_members, const char *user)
{
    size_t ul = strlen(user);
    const char *p = line_end_members;
    while (*p && *p != '\n') {
        if (strncmp(p, user, ul) == 0 && (p[ul] == ',' || p[ul] == '\n' || p[ul] == 0))
            return true;
        p = strpbrk(p, ",\n");
        if (!p || *p == '\n')
            break;
        p++;
    }
    return false;
}

static bool all_digits(const char *s)
{
    return *s && strspn(s, "0123456789") == strlen(s);
}

static int resolve_user(void *ud, const char *spec, struct oci_user *ret, struct lerr *e)
{
    struct octr *c = ud;
    char root[PATH_MAX];
    ctr_path(c, "rootfs", root, sizeof(root));
    char user[256], group[256] = "";
    const char *colon = strchr(spec, ':');
    snprintf(user, sizeof(user), "%.*s", (int)(colon ? colon - spec : (long)strlen(spec)), spec);
    if (colon)
        snprintf(group, sizeof(group), "%s", colon + 1);
    _cleanup_free_ char *passwd = NULL, *groups = NULL;
    read_in_root(root, "/etc/passwd", &passwd);
    read_in_root(root, "/etc/group", &groups);
    memset(ret, 0, sizeof(*ret));
    unsigned long uid = 0, gid = 0;
    bool have_gid = false;
    if (all_digits(user)) {
        uid = strtoul(user, NULL, 10);
        /* a numeric user takes its passwd entry's group when there is one */
        for (const char *l = passwd; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
            const char *f1 = strchr(l, ':'), *f2 = f1 ? strchr(f1 + 1, ':') : NULL;
            if (f2 && strtoul(f2 + 1, NULL, 10) == uid && f2[1] != ':') {
                const char *f3 = strchr(f2 + 1, ':');
                if (f3) {
                    gid = strtoul(f3 + 1, NULL, 10);
                    have_gid = true;
                }
                break;
            }
        }
    } else if (!passwd || !lookup_db(passwd, user, &uid, &gid)) {
        return lerr_set(e, -ENOENT, "User: no user \"%.60s\" in the image's /etc/passwd", user);
    } else {
        have_gid = true;
    }
    if (group[0]) {
        if (all_digits(group))
            gid = strtoul(group, NULL, 10);
        else if (!groups || !lookup_db(groups, group, &gid, NULL))
            return lerr_set(e, -ENOENT, "User: no group \"%.60s\" in the image's /etc/group",
                            group);
    } else if (!have_gid) {
        gid = 0;
    }
    if (uid > UINT32_MAX - 1 || gid > UINT32_MAX - 1)
        return lerr_set(e, -EINVAL, "User: \"%.60s\" is out of range", spec);
    ret->uid = (uint32_t)uid;
    ret->gid = (uint32_t)gid;
    /* supplementary groups: every group that lists the user by name */
    if (!all_digits(user) && groups) {
        for (const char *l = groups; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
            const char *f1 = strchr(l, ':'), *f2 = f1 ? strchr(f1 + 1, ':') : NULL;
            const char *f3 = f2 ? strchr(f2 + 1, ':') : NULL;
            if (!f3 || !group_has_member(f3 + 1, user))
                continue;
            uint32_t g = (uint32_t)strtoul(f2 + 1, NULL, 10);
            if (g != ret->gid && ret->n_groups < ARRAY_SIZE(ret->groups))
                ret->groups[ret->n_groups++] = g;
        }
    }
    return 0;
}

static int stat_device(void *ud, const char *path, struct oci_device *ret, struct lerr *e)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return lerr_set(e, -errno, "%s: %s", path, strerror(errno));
    if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode))
        return lerr_set(e, -EINVAL, "%s is not a device node", path);
    ret->type = S_ISCHR(st.st_mode) ? 'c' : 'b';
    ret->major = major(st.st_rdev);
    ret->minor = minor(st.st_rdev);
    ret->mode = st.st_mode;
    return 0;
}

/* ------------------------------------------------------------------ name resolution */

/* /etc/hosts of one container: itself, every container on the module network by name (and
 * alias), the user's ExtraHosts. Written in place (the file is bind-mounted: a rename would
 * leave the container with the old one). */
static void write_hosts(struct oci *o, struct octr *c)
{
    if (c->netmode == OCI_NET_HOST)
        return;
    struct lbuf b = LBUF_INIT;
    lbuf_puts(&b, "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    char host[32];
    snprintf(host, sizeof(host), "%.12s", c->id);
    if (c->ip[0])
        lbuf_printf(&b, "%s\t%s %s\n", c->ip, host, c->name);
    else
        lbuf_printf(&b, "127.0.1.1\t%s %s\n", host, c->name);
    if (c->netmode == OCI_NET_BRIDGE) {
        struct octr *p;
        llist_foreach (p, &o->ctrs, node) {
            if (p == c || p->netmode != OCI_NET_BRIDGE || !p->ip[0] || b.len > OCI_HOSTS_MAX)
                continue;
            lbuf_printf(&b, "%s\t%s", p->ip, p->name);
            size_t i;
            json_t *a;
            json_array_foreach (p->aliases, i, a)
                if (json_is_string(a) && !lstr_eq(json_string_value(a), p->name))
                    lbuf_printf(&b, " %s", json_string_value(a));
            lbuf_putc(&b, '\n');
        }
    }
    if (c->extra_hosts)
        lbuf_puts(&b, c->extra_hosts);
    char path[PATH_MAX];
    ctr_path(c, "hosts", path, sizeof(path));
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd >= 0) {
        if (lfs_write_all(fd, b.data, b.len) == 0 && ftruncate(fd, (off_t)b.len) < 0) {
            /* a shorter file than before keeps a tail; harmless and rare */
        }
        close(fd);
    }
    lbuf_free(&b);
}

static void write_all_hosts(struct oci *o)
{
    struct octr *c;
    llist_foreach (c, &o->ctrs, node)
        if (!c->removing)
            write_hosts(o, c);
}

/* resolv.conf: the host's, without loopback name servers (they do not answer inside the
 * container's network namespace: systemd-resolved's stub, for one, is 127.0.0.53 — its real
 * servers are in /run/systemd/resolve/resolv.conf, as docker reads them); Dns, DnsSearch,
 * DnsOptions replace the host's. */
static int write_resolv(struct octr *c, const json_t *co, struct lerr *e)
{
    const json_t *hc = json_object_get(co, "HostConfig");
    const char *src = "/etc/resolv.conf";
    _cleanup_free_ char *text = NULL;
    if (lfs_read_file(src, 64u << 10, &text, NULL) == 0 && strstr(text, "127.0.0.53") &&
        access("/run/systemd/resolve/resolv.conf", R_OK) == 0) {
        free(text);
        text = NULL;
        lfs_read_file("/run/systemd/resolve/resolv.conf", 64u << 10, &text, NULL);
    }
    struct lbuf b = LBUF_INIT;
    const json_t *dns = json_object_get(hc, "Dns"), *search = json_object_get(hc, "DnsSearch"),
                 *opts = json_object_get(hc, "DnsOptions");
    for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
        const char *end = strchr(l, '\n');
        int len = (int)(end ? end - l : (long)strlen(l));
        if (strncmp(l, "nameserver", 10) == 0) {
            if (json_array_size(dns))
                continue;
            const char *a = l + 10;
            while (*a == ' ' || *a == '\t')
                a++;
            if (strncmp(a, "127.", 4) == 0 || strncmp(a, "::1", 3) == 0)
                continue;
        } else if ((strncmp(l, "search", 6) == 0 || strncmp(l, "domain", 6) == 0) &&
                   json_array_size(search)) {
            continue;
        } else if (strncmp(l, "options", 7) == 0 && json_array_size(opts)) {
            continue;
        }
        lbuf_printf(&b, "%.*s\n", len, l);
    }
    size_t i;
    json_t *v;
    json_array_foreach (dns, i, v)
        if (json_is_string(v))
            lbuf_printf(&b, "nameserver %s\n", json_string_value(v));
    if (json_array_size(search)) {
        lbuf_puts(&b, "search");
        json_array_foreach (search, i, v)
            if (json_is_string(v))
                lbuf_printf(&b, " %s", json_string_value(v));
        lbuf_putc(&b, '\n');
    }
    if (json_array_size(opts)) {
        lbuf_puts(&b, "options");
        json_array_foreach (opts, i, v)
            if (json_is_string(v))
                lbuf_printf(&b, " %s", json_string_value(v));
        lbuf_putc(&b, '\n');
    }
    char path[PATH_MAX];
    ctr_path(c, "resolv.conf", path, sizeof(path));
    int r = lfs_write_atomic(path, b.data ? b.data : "", b.len, 0644);
    lbuf_free(&b);
    return r < 0 ? lerr_set(e, r, "%s: cannot write resolv.conf: %s", c->name, strerror(-r)) : 0;
}

/* ------------------------------------------------------------------ images */

static int open_store(struct oci *o, struct img_store **ret, struct lerr *e)
{
    return img_store_open(o->store, ret, e);
}

static int load_image(struct oci *o, const char *image, struct img_image *im, json_t **ret_config,
                      struct lerr *e)
{
    _cleanup_img_store_ struct img_store *s = NULL;
    int r = open_store(o, &s, e);
    if (r < 0)
        return r;
    if ((r = img_store_get(s, image, im, e)) < 0)
        return r;
    if (!ret_config)
        return 0;
    _cleanup_free_ char *text = NULL;
    size_t n;
    if ((r = img_store_read_blob(s, im->config, IMG_CONFIG_MAX, &text, &n, e)) < 0)
        return r;
    return ljson_parse(text, n, ret_config, e);
}

static int oci_image_present(struct engine *e, const char *image, engine_done_fn cb, void *ud)
{
    struct oci *o = O(e);
    struct img_image im = {0};
    struct lerr err = {0};
    char resolved[ENGINE_IMAGE_MAX];
    if (engine_image_resolve(e, image, resolved, sizeof(resolved), &err) < 0)
        return engine_later_done(o->e, cb, ud, -EINVAL, &err);
    image = resolved;
    int r = load_image(o, image, &im, NULL, &err);
    img_image_clear(&im);
    if (r == -ENOENT)
        lerr_set(&err, -ENOENT, "image %s is not in the oci engine's store", image);
    return engine_later_done(o->e, cb, ud, r, r < 0 ? &err : NULL);
}

struct plat_later {
    engine_platform_fn cb;
    void *ud;
    int result;
    struct lerr err;
    struct img_platform p;
};

static void plat_later_cb(evutil_socket_t fd, short what, void *arg)
{
    struct plat_later *l = arg;
    if (l->result < 0)
        l->cb(l->ud, l->result, NULL, NULL, NULL, &l->err);
    else
        l->cb(l->ud, 0, l->p.os, l->p.architecture, l->p.variant[0] ? l->p.variant : NULL, NULL);
    free(l);
}

static int oci_image_platform(struct engine *e, const char *image, engine_platform_fn cb, void *ud)
{
    struct oci *o = O(e);
    char resolved[ENGINE_IMAGE_MAX];
    int rr = engine_image_resolve(e, image, resolved, sizeof(resolved), NULL);
    if (rr < 0)
        return rr;
    image = resolved;
    struct plat_later *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    l->cb = cb;
    l->ud = ud;
    struct img_image im = {0};
    l->result = load_image(o, image, &im, NULL, &l->err);
    if (l->result == 0 && (l->result = img_platform_parse(im.platform, &l->p, &l->err)) < 0)
        lerr_prefix(&l->err, "image %s", image);
    img_image_clear(&im);
    struct timeval tv = {0, 0};
    if (event_base_once(e->base, -1, EV_TIMEOUT, plat_later_cb, l, &tv) < 0) {
        free(l);
        return -ENOMEM;
    }
    return 0;
}

/* A pull runs in ledge-image-helper: JSON lines on its stdout (progress, then the result);
 * credentials go in on its stdin, never in its argv. */
struct pull {
    struct opctx *op;
    engine_progress_fn progress;
    char *image;
    json_t *result;
};

static void pull_line(void *ud, const char *line)
{
    struct pull *p = ud;
    _cleanup_json_ json_t *j = NULL;
    if (ljson_parse(line, strlen(line), &j, NULL) < 0 || !json_is_object(j))
        return;
    const char *pg = ljson_str(j, "progress");
    if (pg) {
        if (p->progress)
            p->progress(p->op->ud, pg);
        return;
    }
    if (json_object_get(j, "ok")) {
        json_decref(p->result);
        p->result = json_incref(j);
    }
}

static void pull_done(void *ud, const struct oci_exec_result *res)
{
    struct pull *p = ud;
    struct opctx *op = p->op;
    op->x = NULL;
    int r = 0;
    struct lerr err = {0};
    if (!p->result) {
        r = lerr_set(&err, -EIO, "pulling %s: the image helper exited with %d: %.300s", p->image,
                     res->status, res->err_len ? res->err : "no message");
    } else if (!ljson_bool(p->result, "ok", false)) {
        long long code = ljson_int(p->result, "errno", EIO);
        r = lerr_set(&err, -(int)(code > 0 && code < 4096 ? code : EIO), "%s",
                     ljson_str(p->result, "error") ?: "pull failed");
    }
    engine_done_fn cb = op->done;
    void *cud = op->ud;
    json_decref(p->result);
    free(p->image);
    free(p);
    op_free(op);
    cb(cud, r, r < 0 ? &err : NULL);
}

static int oci_pull(struct engine *e, const char *image, const struct engine_registry_auth *auth,
                    engine_progress_fn progress, engine_done_fn cb, void *ud)
{
    struct oci *o = O(e);
    char resolved[ENGINE_IMAGE_MAX];
    int upstream = engine_image_resolve(e, image, resolved, sizeof(resolved), NULL);
    if (upstream < 0)
        return upstream;
    image = resolved;
    struct opctx *op = op_new(o, NULL);
    struct pull *p = calloc(1, sizeof(*p));
    if (!op || !p) {
        free(p);
        if (op)
            op_free(op);
        return -ENOMEM;
    }
    op->done = cb;
    op->ud = ud;
    p->op = op;
    p->progress = progress;
    p->image = strdup(image);
    json_t *in = json_object();
    /* a private registry's CA where docker keeps it (certs.d/HOST:PORT/ca.crt) */
    struct img_ref ref;
    if (upstream == 1 && e->upstream_ca_file) {
        /* the parent's registry proxy presents the parent's server certificate: the CA the
         * child trusts its parent with (upstream.ca_file) */
        if (in)
            json_object_set_new(in, "caFile", json_string(e->upstream_ca_file));
    } else if (img_ref_parse(image, &ref, NULL) == 0) {
        const char *dirs[] = {"/etc/docker/certs.d", "/etc/containers/certs.d"};
        for (size_t i = 0; in && i < ARRAY_SIZE(dirs); i++) {
            char ca[PATH_MAX];
            snprintf(ca, sizeof(ca), "%s/%s/ca.crt", dirs[i], ref.registry);
            if (access(ca, R_OK) == 0) {
                json_object_set_new(in, "caFile", json_string(ca));
                break;
            }
        }
    }
    if (auth && auth->username)
        json_object_set_new(in, "username", json_string(auth->username));
    if (auth && auth->password)
        json_object_set_new(in, "password", json_string(auth->password));
    _cleanup_free_ char *input = in ? ljson_dump(in) : NULL;
    json_decref(in);
    const char *argv[] = {o->image_helper, "pull", o->store, image, NULL};
    struct oci_exec_opts xo = {.argv = argv,
                               .input = input,
                               .input_len = input ? strlen(input) : 0,
                               .on_line = pull_line,
                               .out_max = 1u << 20,
                               .done = pull_done,
                               .ud = p};
    int r = input && p->image ? oci_exec_start(e->base, &xo, &op->x) : -ENOMEM;
    if (input)
        explicit_bzero(input, strlen(input));
    if (r < 0) {
        free(p->image);
        free(p);
        op_free(op);
    }
    return r;
}

/* ------------------------------------------------------------------ create */

/* Where named volumes live (docker's /var/lib/docker/volumes/<name>/_data). */
static void volumes_dir(struct oci *o, char *buf, size_t n)
{
    snprintf(buf, n, "%s/volumes", o->dir);
}

static void ctr_destroy_files(struct octr *c)
{
    umount_rootfs(c);
    char path[PATH_MAX];
    ctr_path(c, NULL, path, sizeof(path));
    rm_rf(path);
    log_path(c, path, sizeof(path));
    unlink(path);
    for (int i = 1; i < 100; i++) {
        char p2[PATH_MAX + 8];
        snprintf(p2, sizeof(p2), "%s.%d", path, i);
        if (unlink(p2) < 0 && errno == ENOENT && i >= c->log_files)
            break;
    }
}

enum { CR_NET, CR_DONE };

static void create_fail(struct opctx *op, int r, const struct lerr *err)
{
    struct octr *c = op->c;
    struct oci *o = op->o;
    engine_create_fn cb = op->created;
    void *ud = op->ud;
    struct lerr e2 = err ? *err : (struct lerr){0};
    if (!err)
        lerr_set(&e2, r, "create %s: %s", c->name, strerror(-r));
    ctr_unlink(o, c);
    ctr_destroy_files(c);
    ctr_free(c);
    op_free(op);
    cb(ud, r, NULL, &e2);
}

static void create_finish(struct opctx *op)
{
    struct octr *c = op->c;
    struct oci *o = op->o;
    struct lerr err = {0};
    int r = persist(c);
    if (r < 0) {
        lerr_set(&err, r, "create %s: cannot write its record: %s", c->name, strerror(-r));
        return create_fail(op, r, &err);
    }
    write_all_hosts(o);
    engine_create_fn cb = op->created;
    void *ud = op->ud;
    op_free(op);
    cb(ud, 0, c->id, NULL);
}

static void create_net_done(void *ud, int result, const char *ip, const struct lerr *e)
{
    struct opctx *op = ud;
    if (op->dead) {
        op_free(op);
        return;
    }
    if (result < 0) {
        struct lerr e2 = e ? *e : (struct lerr){0};
        lerr_prefix(&e2, "create %s: network", op->c->name);
        return create_fail(op, result, &e2);
    }
    lstr_copy(op->c->ip, sizeof(op->c->ip), ip ? ip : "");
    create_finish(op);
}

static int mkdirs_for(const struct lstrv *dirs)
{
    for (size_t i = 0; i < dirs->n; i++) {
        struct stat st;
        if (stat(dirs->v[i], &st) == 0)
            continue;
        int r = lfs_mkdir_p(dirs->v[i], 0755);
        if (r < 0)
            return r;
    }
    return 0;
}

/* The synchronous part of create: files, rootfs, config.json. */
static int create_bundle(struct oci *o, struct octr *c, const struct engine_create_spec *spec,
                         struct lerr *err)
{
    const json_t *co = spec->create_options;
    struct img_image im = {0};
    _cleanup_json_ json_t *config = NULL;
    int r = load_image(o, spec->image, &im, &config, err);
    if (r == -ENOENT)
        r = lerr_set(err, -ENOENT, "create %s: image %s is not present", spec->name, spec->image);
    if (r < 0)
        return r;
    c->layers = json_array();
    for (size_t i = 0; c->layers && i < im.layers.n; i++)
        json_array_append_new(c->layers, json_string(im.layers.v[i]));
    img_image_clear(&im);
    if (!c->layers)
        return -ENOMEM;
    char dir[PATH_MAX], sub[PATH_MAX];
    ctr_path(c, NULL, dir, sizeof(dir));
    const char *subs[] = {"rootfs", "upper", "work"};
    if ((r = lfs_mkdir_p(dir, 0700)) < 0)
        return lerr_set(err, r, "create %s: %s: %s", spec->name, dir, strerror(-r));
    for (size_t i = 0; i < ARRAY_SIZE(subs); i++) {
        ctr_path(c, subs[i], sub, sizeof(sub));
        if (mkdir(sub, 0755) < 0 && errno != EEXIST)
            return lerr_set(err, -errno, "create %s: %s: %m", spec->name, sub);
    }
    if ((r = mount_rootfs(c, err)) < 0)
        return r;
    char hosts[PATH_MAX], resolv[PATH_MAX], hostname[PATH_MAX], netns[PATH_MAX], vols[PATH_MAX];
    ctr_path(c, "hosts", hosts, sizeof(hosts));
    ctr_path(c, "resolv.conf", resolv, sizeof(resolv));
    ctr_path(c, "hostname", hostname, sizeof(hostname));
    oci_net_netns_path(o->net, c->id, netns, sizeof(netns));
    volumes_dir(o, vols, sizeof(vols));
    char host[64];
    const char *user_host = ljson_str(co, "Hostname");
    if (c->netmode == OCI_NET_HOST && !(user_host && *user_host))
        gethostname(host, sizeof(host));
    else
        snprintf(host, sizeof(host), "%.12s", c->id);
    host[sizeof(host) - 1] = 0;
    char cgroup[256];
    snprintf(cgroup, sizeof(cgroup), "/ledge/%s", c->id);
    struct oci_spec_input in = {
        .name = c->name,
        .create_options = co,
        .image_config = config,
        .env = spec->env,
        .binds = spec->binds,
        .hostname = host,
        .netmode = c->netmode,
        .netns = c->netmode == OCI_NET_HOST ? NULL : netns,
        .hosts_file = c->netmode == OCI_NET_HOST ? "/etc/hosts" : hosts,
        .resolv_file = c->netmode == OCI_NET_HOST ? "/etc/resolv.conf" : resolv,
        .hostname_file = hostname,
        .volumes_dir = vols,
        .cgroups_path = cgroup,
        .seccomp_arch = oci_seccomp_arch(),
        .userns = o->userns,
        .userns_base = 100000,
        .userns_size = 65536,
    };
    struct oci_spec_env env = {.resolve_user = resolve_user, .stat_device = stat_device, .ud = c};
    _cleanup_json_ json_t *cfg = NULL;
    _cleanup_lstrv_ struct lstrv dirs = LSTRV_INIT;
    if ((r = oci_spec_build(&in, &env, &cfg, &dirs, err)) < 0)
        return lerr_prefix(err, "createOptions"), lerr_prefix(err, "create %s", spec->name), r;
    if ((r = mkdirs_for(&dirs)) < 0)
        return lerr_set(err, r, "create %s: cannot create a volume or bind source: %s", spec->name,
                        strerror(-r));
    c->stop_signal = oci_spec_stop_signal(co, config);
    struct oci_health h;
    if ((r = oci_spec_health(co, config, &h)) < 0)
        return r;
    if (r > 0) {
        c->health_test = h.test;
        c->health_interval_ms = h.interval_ms;
        c->health_timeout_ms = h.timeout_ms;
        c->health_start_ms = h.start_period_ms;
        c->health_retries = h.retries;
    }
    /* the log's rotation: the user's LogConfig, else the agent's default */
    const json_t *lc = json_object_get(json_object_get(co, "HostConfig"), "LogConfig");
    if (!ljson_str(lc, "Type"))
        lc = spec->default_log_config;
    c->log_none = lstr_eq(ljson_str(lc, "Type"), "none");
    const json_t *lcc = json_object_get(lc, "Config");
    const char *ms = ljson_str(lcc, "max-size"), *mf = ljson_str(lcc, "max-file");
    if (ms) {
        /* docker's units: k, m, g (1000s? no: 1024s, as go-units RAMInBytes) */
        char *end;
        double v = strtod(ms, &end);
        int64_t mul = 1;
        switch (*end | 0x20) {
        case 'k':
            mul = 1024;
            break;
        case 'm':
            mul = 1024 * 1024;
            break;
        case 'g':
            mul = 1024 * 1024 * 1024;
            break;
        }
        c->log_max = v > 0 ? (int64_t)(v * (double)mul) : 0;
    }
    c->log_files = mf ? (int)strtol(mf, NULL, 10) : 1;
    if (c->log_files < 1 || c->log_files > 100)
        c->log_files = 1;
    /* files of the bundle */
    if ((r = write_resolv(c, co, err)) < 0)
        return r;
    struct lbuf hb = LBUF_INIT;
    lbuf_printf(&hb, "%s\n", host);
    r = lfs_write_atomic(hostname, hb.data, hb.len, 0644);
    lbuf_free(&hb);
    struct lbuf extra = LBUF_INIT;
    if (r == 0)
        r = oci_spec_extra_hosts(co, oci_net_gateway(o->net), &extra, err);
    if (r == 0 && spec->gateway_hostname && *spec->gateway_hostname)
        lbuf_printf(&extra, "%s\t%s\n",
                    c->netmode == OCI_NET_BRIDGE ? oci_net_gateway(o->net) : "127.0.0.1",
                    spec->gateway_hostname);
    c->extra_hosts = lbuf_steal(&extra);
    if (r < 0)
        return r;
    _cleanup_free_ char *text = json_dumps(cfg, JSON_INDENT(1));
    char cfgp[PATH_MAX];
    ctr_path(c, "config.json", cfgp, sizeof(cfgp));
    if (!text || (r = lfs_write_atomic(cfgp, text, strlen(text), 0600)) < 0)
        return lerr_set(err, text ? r : -ENOMEM, "create %s: cannot write config.json", spec->name);
    return 0;
}

static int oci_create(struct engine *e, const struct engine_create_spec *spec, engine_create_fn cb,
                      void *ud)
{
    struct oci *o = O(e);
    struct lerr err = {0};
    char resolved[ENGINE_IMAGE_MAX];
    struct engine_create_spec rspec;
    if (spec->image) {
        if (engine_image_resolve(e, spec->image, resolved, sizeof(resolved), &err) < 0)
            return engine_later_created(o->e, cb, ud, -EINVAL, NULL, &err);
        rspec = *spec;
        rspec.image = resolved;
        spec = &rspec;
    }
    if (find(o, spec->name))
        return engine_later_created(
            o->e, cb, ud,
            lerr_set(&err, -EEXIST, "create %s: a container of that name exists", spec->name), NULL,
            &err);
    if (o->n_ctrs >= OCI_MAX_CONTAINERS)
        return engine_later_created(o->e, cb, ud,
                                    lerr_set(&err, -ENOSPC, "create %s: at most %d containers",
                                             spec->name, OCI_MAX_CONTAINERS),
                                    NULL, &err);
    const json_t *co = spec->create_options;
    _cleanup_lstrv_ struct lstrv problems = LSTRV_INIT;
    if (oci_spec_check(co, "createOptions", &problems) > 0) {
        _cleanup_free_ char *all = lstrv_join(&problems, "; ");
        return engine_later_created(
            o->e, cb, ud, lerr_set(&err, -EINVAL, "create %s: %s", spec->name, all ? all : ""),
            NULL, &err);
    }
    struct octr *c = ctr_new(o);
    if (!c)
        return -ENOMEM;
    uint8_t rnd[OCI_ID_LEN / 2];
    if (lcrypto_random(rnd, sizeof(rnd)) < 0) {
        ctr_free(c);
        return -EIO;
    }
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(c->id + 2 * i, 3, "%02x", rnd[i]);
    c->name = strdup(spec->name);
    c->image = strdup(spec->image);
    c->labels = json_object();
    c->state = CTR_CREATED;
    c->created_ms = ltime_now_ms();
    if (!c->name || !c->image || !c->labels) {
        ctr_free(c);
        return -ENOMEM;
    }
    json_object_update(c->labels, json_object_get(co, "Labels"));
    if (spec->labels)
        json_object_update(c->labels, (json_t *)spec->labels);
    int r = oci_spec_netmode(co, o->network, &c->netmode, &err);
    if (r == 0 && c->netmode == OCI_NET_BRIDGE)
        r = oci_spec_port_mappings(co, &c->ports, &err);
    if (r == 0 && json_array_size(c->ports) == 0) {
        json_decref(c->ports);
        c->ports = NULL;
    }
    if (r == 0) {
        const json_t *ep = json_object_get(
            json_object_get(json_object_get(co, "NetworkingConfig"), "EndpointsConfig"),
            o->network);
        const json_t *al = json_object_get(ep, "Aliases");
        if (json_array_size(al))
            c->aliases = json_deep_copy(al);
    }
    if (r < 0) {
        lerr_prefix(&err, "create %s: createOptions", spec->name);
        ctr_free(c);
        return engine_later_created(o->e, cb, ud, r, NULL, &err);
    }
    struct opctx *op = op_new(o, c);
    if (!op) {
        ctr_free(c);
        return -ENOMEM;
    }
    op->created = cb;
    op->ud = ud;
    ctr_link(o, c);
    if ((r = create_bundle(o, c, spec, &err)) < 0) {
        /* from the loop, as every completion */
        ctr_unlink(o, c);
        ctr_destroy_files(c);
        ctr_free(c);
        op_free(op);
        return engine_later_created(o->e, cb, ud, r, NULL, &err);
    }
    if (c->netmode == OCI_NET_HOST) {
        struct timeval tv = {0, 0};
        /* complete from the loop */
        r = oci_net_attach(o->net, c->id, OCI_NET_HOST, NULL, create_net_done, op);
        (void)tv;
    } else {
        r = oci_net_attach(o->net, c->id, c->netmode, c->ports, create_net_done, op);
    }
    if (r < 0) {
        ctr_unlink(o, c);
        ctr_destroy_files(c);
        ctr_free(c);
        op_free(op);
        lerr_set(&err, r, "create %s: network: %s", spec->name, strerror(-r));
        return engine_later_created(o->e, cb, ud, r, NULL, &err);
    }
    return 0;
}

/* ------------------------------------------------------------------ start */

enum { ST_NET, ST_DELETE, ST_RUN };

static void start_next(struct opctx *op);

static void start_finish(struct opctx *op, int r, const struct lerr *err)
{
    struct octr *c = op->c;
    c->starting = false;
    engine_done_fn cb = op->done;
    void *ud = op->ud;
    struct lerr e2 = err ? *err : (struct lerr){0};
    if (r < 0) {
        c->state = CTR_EXITED;
        c->exit_code = 127;
        c->finished_ms = ltime_now_ms();
        free(c->error);
        c->error = strdup(e2.msg);
    } else {
        free(c->error);
        c->error = NULL;
    }
    persist(c);
    op_free(op);
    if (r == 0) {
        health_start(c);
        emit(c->o, ENGINE_EVENT_START, c);
    }
    cb(ud, r, r < 0 ? &e2 : NULL);
}

/* The runtime's own account of a failed start: the last "error" record of its log (JSON lines
 * written with --log-format json), cleaned of its "runc run failed:" framing. */
static void runtime_error(struct octr *c, char *buf, size_t n)
{
    char path[PATH_MAX];
    ctr_path(c, "runtime.log", path, sizeof(path));
    _cleanup_free_ char *text = NULL;
    buf[0] = 0;
    if (lfs_read_file(path, 1u << 20, &text, NULL) < 0)
        return;
    for (char *l = text; l && *l;) {
        char *nl = strchr(l, '\n');
        if (nl)
            *nl = 0;
        _cleanup_json_ json_t *j = NULL;
        if (ljson_parse(l, strlen(l), &j, NULL) == 0 &&
            (lstr_eq(ljson_str(j, "level"), "error") || lstr_eq(ljson_str(j, "level"), "fatal")))
            snprintf(buf, n, "%s", ljson_str(j, "msg") ?: "");
        l = nl ? nl + 1 : NULL;
    }
}

static void start_ran(struct oci *o, void *ud, const struct keeper_msg *m, const struct lerr *e)
{
    struct opctx *op = ud;
    struct octr *c = op->c;
    if (op->dead) {
        op_free(op);
        return;
    }
    if (e)
        return start_finish(op, e->code, e);
    if (m->status != 0 || m->ctr_pid <= 0) {
        char why[400];
        runtime_error(c, why, sizeof(why));
        struct lerr err;
        lerr_set(&err, -EIO, "start %s: the OCI runtime failed (exit %d): %s", c->name, m->status,
                 why[0] ? why : "see its log");
        return start_finish(op, -EIO, &err);
    }
    c->state = CTR_RUNNING;
    c->pid = m->ctr_pid;
    c->started_ms = m->started_ms ? m->started_ms : ltime_now_ms();
    c->exit_code = 0;
    c->finished_ms = 0;
    start_finish(op, 0, NULL);
}

static void start_net_done(void *ud, int result, const char *ip, const struct lerr *e)
{
    struct opctx *op = ud;
    if (op->dead) {
        op_free(op);
        return;
    }
    if (result < 0) {
        struct lerr e2 = e ? *e : (struct lerr){0};
        lerr_prefix(&e2, "start %s: network", op->c->name);
        return start_finish(op, result, &e2);
    }
    if (ip && *ip && strcmp(ip, op->c->ip) != 0) {
        lstr_copy(op->c->ip, sizeof(op->c->ip), ip);
        persist(op->c);
        write_all_hosts(op->o);
    }
    op->stage = ST_DELETE;
    start_next(op);
}

static void start_net_detached(void *ud, int result, const char *ip, const struct lerr *e)
{
    struct opctx *op = ud;
    struct lerr err = {0};
    int r = oci_net_attach(op->o->net, op->c->id, op->c->netmode, op->c->ports, start_net_done, op);
    if (r < 0) {
        lerr_set(&err, r, "start %s: network: %s", op->c->name, strerror(-r));
        start_finish(op, r, &err);
    }
}

static void start_deleted(void *ud, const struct oci_exec_result *res)
{
    struct opctx *op = ud;
    op->x = NULL;
    op->stage = ST_RUN;
    start_next(op);
}

static void runtime_argv_base(struct oci *o, const char **argv, size_t *n, const char *logp)
{
    static char logopt[PATH_MAX + 16];
    argv[(*n)++] = o->runtime;
    argv[(*n)++] = "--root";
    argv[(*n)++] = o->runtime_root;
    if (logp) {
        if (o->rt == RT_CRUN) {
            snprintf(logopt, sizeof(logopt), "--log=file:%s", logp);
            argv[(*n)++] = logopt;
        } else {
            argv[(*n)++] = "--log";
            argv[(*n)++] = logp;
        }
        argv[(*n)++] = "--log-format";
        argv[(*n)++] = "json";
    }
}

static void start_next(struct opctx *op)
{
    struct oci *o = op->o;
    struct octr *c = op->c;
    struct lerr err = {0};
    int r = 0;
    switch (op->stage) {
    case ST_NET:
        if ((r = mount_rootfs(c, &err)) < 0)
            return start_finish(op, r, &err);
        if (c->netmode != OCI_NET_HOST && !oci_net_netns_exists(o->net, c->id)) {
            /* a reboot took the namespace (and the address): whatever is left of the old
             * attachment goes, then attach again */
            r = oci_net_detach(o->net, c->id, c->ports, start_net_detached, op);
            if (r < 0) {
                lerr_set(&err, r, "start %s: network: %s", c->name, strerror(-r));
                return start_finish(op, r, &err);
            }
            return;
        }
        op->stage = ST_DELETE;
        /* fall through */
    case ST_DELETE: {
        /* the runtime's state of a previous run goes first */
        char st[PATH_MAX];
        snprintf(st, sizeof(st), "%s/%s", o->runtime_root, c->id);
        if (access(st, F_OK) == 0) {
            const char *argv[16];
            size_t n = 0;
            runtime_argv_base(o, argv, &n, NULL);
            argv[n++] = "delete";
            argv[n++] = "--force";
            argv[n++] = c->id;
            argv[n] = NULL;
            struct oci_exec_opts xo = {
                .argv = argv, .timeout_ms = 30000, .done = start_deleted, .ud = op};
            if ((r = oci_exec_start(o->e->base, &xo, &op->x)) == 0)
                return;
        }
        op->stage = ST_RUN;
    }
        /* fall through */
    case ST_RUN: {
        char bundle[PATH_MAX], pidfile[PATH_MAX], rlog[PATH_MAX], logp[PATH_MAX];
        ctr_path(c, NULL, bundle, sizeof(bundle));
        ctr_path(c, "pid", pidfile, sizeof(pidfile));
        ctr_path(c, "runtime.log", rlog, sizeof(rlog));
        unlink(rlog);
        if (c->log_none)
            snprintf(logp, sizeof(logp), "/dev/null");
        else
            log_path(c, logp, sizeof(logp));
        struct keeper_request kr = {.op = KEEPER_OP_RUN,
                                    .id = c->id,
                                    .pidfile = pidfile,
                                    .log = {.path = logp,
                                            .max_size = c->log_none ? 0 : c->log_max,
                                            .max_files = c->log_files}};
        size_t n = 0;
        runtime_argv_base(o, kr.argv, &n, rlog);
        kr.argv[n++] = "run";
        kr.argv[n++] = "--detach";
        kr.argv[n++] = "--pid-file";
        kr.argv[n++] = pidfile;
        kr.argv[n++] = "--bundle";
        kr.argv[n++] = bundle;
        kr.argv[n++] = c->id;
        kr.argv[n] = NULL;
        if ((r = keeper_send(o, &kr, start_ran, op)) < 0) {
            lerr_set(&err, r, "start %s: the container supervisor is not reachable", c->name);
            return start_finish(op, r, &err);
        }
        return;
    }
    }
}

static int oci_start_container(struct engine *e, const char *id, engine_done_fn cb, void *ud)
{
    struct oci *o = O(e);
    struct lerr err = {0};
    struct octr *c = find(o, id);
    if (!c)
        return engine_later_done(o->e, cb, ud,
                                 lerr_set(&err, -ENOENT, "start %s: no such container", id), &err);
    if (c->state == CTR_RUNNING)
        return engine_later_done(o->e, cb, ud, 0, NULL);
    if (c->starting || c->removing)
        return engine_later_done(o->e, cb, ud, lerr_set(&err, -EBUSY, "start %s: busy", c->name),
                                 &err);
    if (!o->kconnected)
        return engine_later_done(o->e, cb, ud,
                                 lerr_set(&err, -EHOSTDOWN,
                                          "start %s: the container supervisor is not connected",
                                          c->name),
                                 &err);
    struct opctx *op = op_new(o, c);
    if (!op)
        return -ENOMEM;
    op->done = cb;
    op->ud = ud;
    op->stage = ST_NET;
    c->starting = true;
    start_next(op);
    return 0;
}

/* ------------------------------------------------------------------ health checks */

static void health_schedule(struct octr *c);

static void health_set(struct octr *c, enum ctr_health h)
{
    if (c->health == h)
        return;
    c->health = h;
    struct oci *o = c->o;
    if (!o->running || !o->e->on_event)
        return;
    struct engine_event ev = {.kind = ENGINE_EVENT_HEALTH,
                              .id = c->id,
                              .name = c->name,
                              .health = h,
                              .time_ms = ltime_now_ms()};
    o->e->on_event(o->e->event_ud, &ev);
}

static void health_done(void *ud, const struct oci_exec_result *res)
{
    struct octr *c = ud;
    c->health_x = NULL;
    if (c->state != CTR_RUNNING)
        return;
    bool in_start = ltime_now_ms() - c->started_ms < c->health_start_ms;
    if (res->status == 0) {
        c->health_failures = 0;
        health_set(c, HEALTH_HEALTHY);
    } else if (!in_start && ++c->health_failures >= c->health_retries) {
        health_set(c, HEALTH_UNHEALTHY);
    }
    health_schedule(c);
}

static void health_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct octr *c = arg;
    struct oci *o = c->o;
    if (c->state != CTR_RUNNING || c->health_x)
        return;
    const char *argv[KEEPER_ARGV_MAX + 16];
    size_t n = 0;
    runtime_argv_base(o, argv, &n, NULL);
    argv[n++] = "exec";
    argv[n++] = c->id;
    const char *kind = json_string_value(json_array_get(c->health_test, 0));
    if (lstr_eq(kind, "CMD-SHELL")) {
        argv[n++] = "/bin/sh";
        argv[n++] = "-c";
        argv[n++] = json_string_value(json_array_get(c->health_test, 1));
    } else {
        for (size_t i = 1; i < json_array_size(c->health_test) && n < ARRAY_SIZE(argv) - 1; i++)
            argv[n++] = json_string_value(json_array_get(c->health_test, i));
    }
    argv[n] = NULL;
    for (size_t i = 0; i < n; i++)
        if (!argv[i])
            return;
    struct oci_exec_opts xo = {.argv = argv,
                               .timeout_ms = c->health_timeout_ms,
                               .out_max = 4096,
                               .err_max = 4096,
                               .done = health_done,
                               .ud = c};
    if (oci_exec_start(o->e->base, &xo, &c->health_x) < 0)
        health_schedule(c);
}

static void health_schedule(struct octr *c)
{
    if (!c->health_test || c->state != CTR_RUNNING)
        return;
    if (!c->health_timer && !(c->health_timer = evtimer_new(c->o->e->base, health_timer_cb, c)))
        return;
    struct timeval tv = {c->health_interval_ms / 1000, (c->health_interval_ms % 1000) * 1000};
    evtimer_add(c->health_timer, &tv);
}

static void health_start(struct octr *c)
{
    if (!c->health_test)
        return;
    c->health_failures = 0;
    c->health = HEALTH_STARTING;
    health_schedule(c);
}

static void health_stop(struct octr *c)
{
    if (c->health_timer)
        evtimer_del(c->health_timer);
    oci_exec_cancel(c->health_x);
    c->health_x = NULL;
    c->health = c->health_test ? HEALTH_NONE : HEALTH_NONE;
}

/* ------------------------------------------------------------------ exits, stop */

static void runtime_delete(struct oci *o, struct octr *c);
static void remove_continue(struct octr *c);

static void on_keeper_exit(struct oci *o, const struct keeper_container *k)
{
    struct octr *c = find(o, k->id);
    if (!c || strcmp(c->id, k->id) != 0 || c->state != CTR_RUNNING)
        return;
    c->state = CTR_EXITED;
    c->exit_code = k->exit_code;
    c->finished_ms = k->finished_ms ? k->finished_ms : ltime_now_ms();
    c->pid = 0;
    if (c->kill_timer)
        evtimer_del(c->kill_timer);
    health_stop(c);
    persist(c);
    emit(o, ENGINE_EVENT_DIE, c);
    runtime_delete(o, c);
    engine_done_fn cb = c->stop_cb;
    void *ud = c->stop_ud;
    c->stop_cb = NULL;
    if (c->removing)
        remove_continue(c);
    else if (cb)
        cb(ud, 0, NULL);
}

static void deleted_cb(void *ud, const struct oci_exec_result *res)
{
    struct opctx *op = ud;
    op_free(op);
}

/* After an exit: the runtime's state and the container's cgroups go (the namespace stays for
 * the next start). */
static void runtime_delete(struct oci *o, struct octr *c)
{
    struct opctx *op = op_new(o, NULL);
    if (!op)
        return;
    const char *argv[16];
    size_t n = 0;
    runtime_argv_base(o, argv, &n, NULL);
    argv[n++] = "delete";
    argv[n++] = "--force";
    argv[n++] = c->id;
    argv[n] = NULL;
    struct oci_exec_opts xo = {.argv = argv, .timeout_ms = 30000, .done = deleted_cb, .ud = op};
    if (oci_exec_start(o->e->base, &xo, &op->x) < 0)
        op_free(op);
}

static void killed_cb(struct oci *o, void *ud, const struct keeper_msg *m, const struct lerr *e)
{
    /* ESRCH: it exited meanwhile, and its exit event says so */
}

static int send_kill(struct oci *o, struct octr *c, int sig)
{
    struct keeper_request r = {.op = KEEPER_OP_KILL, .id = c->id, .signal = sig};
    return keeper_send(o, &r, killed_cb, NULL);
}

static void kill_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct octr *c = arg;
    if (c->state == CTR_RUNNING)
        send_kill(c->o, c, SIGKILL);
}

static int oci_stop_container(struct engine *e, const char *id, int timeout_s, engine_done_fn cb,
                              void *ud)
{
    struct oci *o = O(e);
    struct lerr err = {0};
    struct octr *c = find(o, id);
    if (!c)
        return engine_later_done(o->e, cb, ud,
                                 lerr_set(&err, -ENOENT, "stop %s: no such container", id), &err);
    if (c->state != CTR_RUNNING)
        return engine_later_done(o->e, cb, ud, 0, NULL);
    if (c->stop_cb || c->removing)
        return engine_later_done(
            o->e, cb, ud, lerr_set(&err, -EBUSY, "stop %s: already stopping", c->name), &err);
    if (!o->kconnected)
        return engine_later_done(o->e, cb, ud,
                                 lerr_set(&err, -EHOSTDOWN,
                                          "stop %s: the container supervisor is not connected",
                                          c->name),
                                 &err);
    if (!c->kill_timer && !(c->kill_timer = evtimer_new(e->base, kill_timer_cb, c)))
        return -ENOMEM;
    int r = send_kill(o, c, timeout_s > 0 ? c->stop_signal : SIGKILL);
    if (r < 0)
        return engine_later_done(o->e, cb, ud,
                                 lerr_set(&err, r, "stop %s: %s", c->name, strerror(-r)), &err);
    c->stop_cb = cb;
    c->stop_ud = ud;
    struct timeval tv = {timeout_s, 0};
    evtimer_add(c->kill_timer, &tv);
    return 0;
}

/* ------------------------------------------------------------------ remove */

static void forgot_cb(struct oci *o, void *ud, const struct keeper_msg *m, const struct lerr *e) {}

static void remove_net_done(void *ud, int result, const char *ip, const struct lerr *e)
{
    struct opctx *op = ud;
    struct oci *o = op->o;
    struct octr *c = op->c;
    if (op->dead) {
        op_free(op);
        return;
    }
    /* a failed CNI DEL leaves an address leased in host-local; the container goes anyway */
    struct keeper_request kr = {.op = KEEPER_OP_FORGET, .id = c->id};
    keeper_send(o, &kr, forgot_cb, NULL);
    ctr_unlink(o, c);
    ctr_destroy_files(c);
    emit(o, ENGINE_EVENT_DESTROY, c);
    engine_done_fn cb = c->stop_cb;
    void *cud = c->stop_ud;
    ctr_free(c);
    op_free(op);
    write_all_hosts(o);
    if (cb)
        cb(cud, 0, NULL);
}

static void remove_deleted(void *ud, const struct oci_exec_result *res)
{
    struct opctx *op = ud;
    op->x = NULL;
    if (oci_net_detach(op->o->net, op->c->id, op->c->ports, remove_net_done, op) < 0)
        remove_net_done(op, 0, NULL, NULL);
}

static void remove_continue(struct octr *c)
{
    struct oci *o = c->o;
    struct opctx *op = op_new(o, c);
    if (!op)
        return;
    const char *argv[16];
    size_t n = 0;
    runtime_argv_base(o, argv, &n, NULL);
    argv[n++] = "delete";
    argv[n++] = "--force";
    argv[n++] = c->id;
    argv[n] = NULL;
    struct oci_exec_opts xo = {.argv = argv, .timeout_ms = 30000, .done = remove_deleted, .ud = op};
    if (oci_exec_start(o->e->base, &xo, &op->x) < 0)
        remove_deleted(op, NULL);
}

static int oci_remove(struct engine *e, const char *id, engine_done_fn cb, void *ud)
{
    struct oci *o = O(e);
    struct lerr err = {0};
    struct octr *c = find(o, id);
    if (!c)
        return engine_later_done(o->e, cb, ud, 0, NULL);
    if (c->removing || c->starting)
        return engine_later_done(o->e, cb, ud, lerr_set(&err, -EBUSY, "remove %s: busy", c->name),
                                 &err);
    if (c->state == CTR_RUNNING) {
        if (!o->kconnected)
            return engine_later_done(
                o->e, cb, ud,
                lerr_set(&err, -EHOSTDOWN, "remove %s: the container supervisor is not connected",
                         c->name),
                &err);
        /* a stop in progress is overtaken: its caller hears of it now */
        if (c->stop_cb) {
            engine_done_fn scb = c->stop_cb;
            void *sud = c->stop_ud;
            c->stop_cb = NULL;
            engine_later_done(o->e, scb, sud, 0, NULL);
        }
        c->removing = true;
        c->stop_cb = cb;
        c->stop_ud = ud;
        send_kill(o, c, SIGKILL);
        return 0;
    }
    c->removing = true;
    c->stop_cb = cb;
    c->stop_ud = ud;
    remove_continue(c);
    return 0;
}

/* ------------------------------------------------------------------ inspect, list */

static void fill(const struct octr *c, struct engine_container *out)
{
    memset(out, 0, sizeof(*out));
    out->id = strdup(c->id);
    out->name = strdup(c->name);
    out->image = strdup(c->image);
    out->labels = json_incref(c->labels);
    out->state = c->state;
    out->exit_code = c->exit_code;
    out->started_ms = c->started_ms;
    out->finished_ms = c->finished_ms;
    out->pid = c->pid;
    out->health = c->state == CTR_RUNNING ? c->health : HEALTH_NONE;
    out->error = c->error && c->state != CTR_RUNNING ? strdup(c->error) : NULL;
}

static size_t records_count(struct engine *e)
{
    return O(e)->n_ctrs;
}

/* What a listing shows: not the containers on their way out, unless they still run. */
static size_t records_fill_all(struct engine *e, struct engine_container *v, size_t max)
{
    size_t n = 0;
    struct octr *c;
    llist_foreach (c, &O(e)->ctrs, node) {
        if (n == max)
            break;
        if (!c->removing || c->state == CTR_RUNNING)
            fill(c, &v[n++]);
    }
    return n;
}

static bool records_fill_one(struct engine *e, const char *id, struct engine_container *ret)
{
    struct octr *c = find(O(e), id);
    if (c)
        fill(c, ret);
    return c != NULL;
}

static const struct engine_records records = {
    .count = records_count,
    .fill_all = records_fill_all,
    .fill_one = records_fill_one,
    .noun = "container",
};

static int oci_inspect(struct engine *e, const char *id, engine_inspect_fn cb, void *ud)
{
    return engine_later_inspect(e, &records, id, cb, ud);
}

static int oci_list(struct engine *e, engine_list_fn cb, void *ud)
{
    return engine_later_list(e, &records, cb, ud);
}

/* ------------------------------------------------------------------ logs */

static struct engine_logs *oci_logs(struct engine *e, const char *id,
                                    const struct engine_logs_options *opts, engine_log_fn on_data,
                                    engine_done_fn cb, void *ud)
{
    struct oci *o = O(e);
    struct octr *c = find(o, id);
    if (!c)
        return NULL;
    char path[PATH_MAX];
    log_path(c, path, sizeof(path));
    return oci_logs_open(e->base, path, c->log_files, opts, on_data, cb, ud);
}

/* ------------------------------------------------------------------ ledge image, GC */

/* The image names (normalised) some container of ours uses. */
static bool image_used(struct oci *o, const char *name, const char **ret_module)
{
    struct octr *c;
    llist_foreach (c, &o->ctrs, node) {
        struct img_ref r;
        char norm[IMG_NAME_MAX + 1];
        if (img_ref_parse(c->image, &r, NULL) < 0 || img_ref_format(&r, norm, sizeof(norm)) < 0)
            continue;
        if (strcmp(norm, name) == 0) {
            if (ret_module)
                *ret_module = c->name;
            return true;
        }
    }
    return false;
}

/* The modules whose containers use image name (a JSON array of names). */
static json_t *modules_using(struct oci *o, const char *name)
{
    json_t *users = json_array();
    struct octr *c;
    llist_foreach (c, &o->ctrs, node) {
        if (!users)
            break;
        struct img_ref r;
        char norm[IMG_NAME_MAX + 1];
        if (img_ref_parse(c->image, &r, NULL) == 0 && img_ref_format(&r, norm, sizeof(norm)) == 0 &&
            strcmp(norm, name) == 0)
            json_array_append_new(users, json_string(c->name));
    }
    return users;
}

struct helper_call {
    struct opctx *op;
    engine_json_fn cb;
    void *ud;
    json_t *result;
    json_t *removed; /* prune: the names it removes, the answer */
    char what[64];
};

static void helper_line(void *ud, const char *line)
{
    struct helper_call *h = ud;
    json_t *j = NULL;
    if (ljson_parse(line, strlen(line), &j, NULL) == 0 && json_object_get(j, "ok")) {
        json_decref(h->result);
        h->result = j;
    } else {
        json_decref(j);
    }
}

static void helper_done(void *ud, const struct oci_exec_result *res)
{
    struct helper_call *h = ud;
    h->op->x = NULL;
    struct lerr err = {0};
    int r = 0;
    if (!h->result)
        r = lerr_set(&err, -EIO, "%s: the image helper exited with %d: %.300s", h->what,
                     res->status, res->err_len ? res->err : "no message");
    else if (!ljson_bool(h->result, "ok", false)) {
        long long code = ljson_int(h->result, "errno", EIO);
        r = lerr_set(&err, -(int)(code > 0 && code < 4096 ? code : EIO), "%s: %s", h->what,
                     ljson_str(h->result, "error") ?: "failed");
    }
    if (r == 0 && h->removed)
        json_object_set(h->result, "removed", h->removed);
    if (h->cb)
        h->cb(h->ud, r, r == 0 ? h->result : NULL, r < 0 ? &err : NULL);
    json_decref(h->result);
    json_decref(h->removed);
    op_free(h->op);
    free(h);
}

static int run_helper(struct oci *o, const char *what, const char *const *argv, engine_json_fn cb,
                      void *ud, json_t *removed)
{
    struct opctx *op = op_new(o, NULL);
    struct helper_call *h = calloc(1, sizeof(*h));
    if (!op || !h) {
        free(h);
        if (op)
            op_free(op);
        return -ENOMEM;
    }
    h->op = op;
    h->cb = cb;
    h->ud = ud;
    h->removed = removed;
    lstr_copy(h->what, sizeof(h->what), what);
    struct oci_exec_opts xo = {.argv = argv, .on_line = helper_line, .done = helper_done, .ud = h};
    int r = oci_exec_start(o->e->base, &xo, &op->x);
    if (r < 0) {
        free(h);
        op_free(op);
    }
    return r;
}

struct json_later {
    engine_json_fn cb;
    void *ud;
    int r;
    struct lerr err;
    json_t *doc;
};

static void json_later_cb(evutil_socket_t fd, short what, void *arg)
{
    struct json_later *l = arg;
    l->cb(l->ud, l->r, l->doc, l->r < 0 ? &l->err : NULL);
    json_decref(l->doc);
    free(l);
}

static int defer_json(struct oci *o, engine_json_fn cb, void *ud, int r, json_t *doc,
                      const struct lerr *err)
{
    struct json_later *l = calloc(1, sizeof(*l));
    if (!l) {
        json_decref(doc);
        return -ENOMEM;
    }
    *l = (struct json_later){.cb = cb, .ud = ud, .r = r, .doc = doc};
    if (err)
        l->err = *err;
    struct timeval tv = {0, 0};
    if (event_base_once(o->e->base, -1, EV_TIMEOUT, json_later_cb, l, &tv) < 0) {
        json_decref(doc);
        free(l);
        return -ENOMEM;
    }
    return 0;
}

static int oci_image_list(struct engine *e, engine_json_fn cb, void *ud)
{
    struct oci *o = O(e);
    struct lerr err = {0};
    _cleanup_img_store_ struct img_store *s = NULL;
    json_t *idx = NULL;
    int r = open_store(o, &s, &err);
    if (r == 0)
        r = img_store_list(s, &idx, &err);
    if (r < 0)
        return defer_json(o, cb, ud, r, NULL, &err);
    json_t *arr = json_array();
    const char *name;
    json_t *im;
    json_object_foreach (json_object_get(idx, "images"), name, im) {
        json_t *users = modules_using(o, name);
        json_t *entry = json_deep_copy(im);
        if (entry) {
            json_object_set_new(entry, "name", json_string(name));
            json_object_set_new(entry, "usedBy", users);
            json_array_append_new(arr, entry);
        } else {
            json_decref(users);
        }
    }
    json_decref(idx);
    return defer_json(o, cb, ud, 0, json_pack("{s:o}", "images", arr), NULL);
}

static int oci_image_load(struct engine *e, const char *path, const char *name, engine_json_fn cb,
                          void *ud)
{
    struct oci *o = O(e);
    const char *argv[] = {o->image_helper, "load", o->store, path, name, NULL};
    return run_helper(o, "load", argv, cb, ud, NULL);
}

static int oci_image_remove(struct engine *e, const char *image, engine_json_fn cb, void *ud)
{
    struct oci *o = O(e);
    struct lerr err = {0};
    struct img_ref r;
    char norm[IMG_NAME_MAX + 1];
    if (img_ref_parse(image, &r, &err) < 0 || img_ref_format(&r, norm, sizeof(norm)) < 0)
        return defer_json(o, cb, ud, -EINVAL, NULL, &err);
    const char *mod = NULL;
    if (image_used(o, norm, &mod)) {
        lerr_set(&err, -EBUSY, "image %s is used by module %s", norm, mod);
        return defer_json(o, cb, ud, -EBUSY, NULL, &err);
    }
    struct img_image im = {0};
    int rr = load_image(o, norm, &im, NULL, &err);
    img_image_clear(&im);
    if (rr < 0)
        return defer_json(o, cb, ud, rr, NULL, &err);
    const char *argv[] = {o->image_helper, "rm", o->store, norm, NULL};
    return run_helper(o, "rm", argv, cb, ud, NULL);
}

/* Every image no container uses (older than min_unused_ms as far as we have watched it). */
static int prune(struct oci *o, int64_t min_unused_ms, engine_json_fn cb, void *ud)
{
    struct lerr err = {0};
    _cleanup_img_store_ struct img_store *s = NULL;
    _cleanup_json_ json_t *idx = NULL;
    int r = open_store(o, &s, &err);
    if (r == 0)
        r = img_store_list(s, &idx, &err);
    if (r < 0)
        return cb ? defer_json(o, cb, ud, r, NULL, &err) : r;
    const char *argv[IMG_INDEX_MAX + 8];
    size_t n = 0;
    argv[n++] = o->image_helper;
    argv[n++] = "rm";
    argv[n++] = o->store;
    json_t *removed = json_array();
    int64_t now = ltime_now_ms();
    const char *name;
    json_t *im;
    json_object_foreach (json_object_get(idx, "images"), name, im) {
        if (image_used(o, name, NULL)) {
            json_object_del(o->unused, name);
            continue;
        }
        json_t *since = json_object_get(o->unused, name);
        if (!since) {
            json_object_set_new(o->unused, name, json_integer(now));
            if (min_unused_ms > 0)
                continue;
        } else if (now - json_integer_value(since) < min_unused_ms) {
            continue;
        }
        if (n < ARRAY_SIZE(argv) - 1) {
            argv[n++] = name;
            json_array_append_new(removed, json_string(name));
        }
    }
    argv[n] = NULL;
    if (json_array_size(removed) == 0) {
        if (!cb) {
            json_decref(removed);
            return 0;
        }
        return defer_json(o, cb, ud, 0, json_pack("{s:o}", "removed", removed), NULL);
    }
    r = run_helper(o, "prune", argv, cb, ud, removed);
    if (r < 0)
        json_decref(removed);
    return r;
}

static int oci_image_prune(struct engine *e, engine_json_fn cb, void *ud)
{
    return prune(O(e), 0, cb, ud);
}

/* Images no container has used for engine.image_gc_after go, checked every 10 minutes. */
static void gc_cb(evutil_socket_t fd, short what, void *arg)
{
    struct oci *o = arg;
    if (o->image_gc_after_ms > 0)
        prune(o, o->image_gc_after_ms, NULL, NULL);
    struct timeval tv = {600, 0};
    evtimer_add(o->gc_timer, &tv);
}

/* ------------------------------------------------------------------ version, validation */

static int oci_version(struct engine *e, engine_version_fn cb, void *ud)
{
    struct oci *o = O(e);
    struct engine_version v = {0};
    const char *rt = strrchr(o->runtime, '/');
    snprintf(v.product, sizeof(v.product), "ledge oci engine (%s, cgroup %s)",
             rt ? rt + 1 : o->runtime, oci_cgroups_name(oci_cgroups_mode(NULL, 0)));
    lstr_copy(v.version, sizeof(v.version), LEDGE_VERSION);
    lstr_copy(v.os, sizeof(v.os), "linux");
    v.log_rotation_default = true;
    v.builtin = true;
    lstr_copy(v.default_log_driver, sizeof(v.default_log_driver), "local");
    cb(ud, 0, &v, NULL);
    return 0;
}

static void oci_check_create_options(struct engine *e, const json_t *co, const char *prefix,
                                     struct lstrv *errors)
{
    struct oci *o = O(e);
    oci_spec_check(co, prefix, errors);
    struct lerr err = {0};
    enum oci_netmode nm;
    _cleanup_json_ json_t *ports = NULL;
    _cleanup_lbuf_ struct lbuf hosts = LBUF_INIT;
    if (oci_spec_netmode(co, o->network, &nm, &err) < 0 ||
        oci_spec_port_mappings(co, &ports, &err) < 0 ||
        oci_spec_extra_hosts(co, "0.0.0.0", &hosts, &err) < 0)
        lstrv_printf(errors, "%s.%s", prefix, err.msg);
}

/* ------------------------------------------------------------------ lifecycle */

static void oci_fini(struct engine *e);

static int oci_init_parts(struct engine *e, const struct engine_config *cfg, struct lerr *ret_err)
{
    struct oci *o = O(e);
    struct lerr err = {0};
    o->e = e;
    o->kfd = o->kpidfd = -1;
    llist_init(&o->ctrs);
    llist_init(&o->kreqs);
    llist_init(&o->ops);
    const char *state = cfg->state_dir ? cfg->state_dir : "/var/lib/ledge";
    const char *run = cfg->run_dir ? cfg->run_dir : "/run/ledge";
    o->dir = lstr_printf("%s/oci", state);
    o->run = lstr_printf("%s/oci", run);
    o->store = lstr_printf("%s/oci/images", state);
    o->runtime_root = lstr_printf("%s/oci/runtime", run);
    o->network = strdup(cfg->network ? cfg->network : "ledge");
    o->instance = cfg->instance ? strdup(cfg->instance) : NULL;
    o->keeper_bin = find_helper("ledge-keeper");
    o->image_helper = find_helper("ledge-image-helper");
    o->userns = cfg->userns;
    if (!o->dir || !o->run || !o->store || !o->runtime_root || !o->network || !o->keeper_bin ||
        !o->image_helper)
        return -ENOMEM;
    int r = oci_runtime_resolve(cfg->runtime, &o->runtime, &err);
    if (r < 0) {
        *ret_err = err;
        return r;
    }
    const char *base = strrchr(o->runtime, '/');
    o->rt = base && strstr(base, "crun") ? RT_CRUN : RT_RUNC;
    const char *mk[] = {o->dir, o->run, o->runtime_root};
    for (size_t i = 0; i < ARRAY_SIZE(mk); i++)
        if ((r = lfs_mkdir_p(mk[i], 0700)) < 0)
            return r;
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/containers", o->dir);
    if ((r = lfs_mkdir_p(p, 0700)) < 0)
        return r;
    snprintf(p, sizeof(p), "%s/logs", o->dir);
    if ((r = lfs_mkdir_p(p, 0700)) < 0)
        return r;
    char netns[PATH_MAX], cni[PATH_MAX];
    snprintf(netns, sizeof(netns), "%s/netns", o->run);
    /* host-local's leases and the CNI results live as long as the namespaces: to the reboot */
    snprintf(cni, sizeof(cni), "%s/cni", o->run);
    struct oci_net_config nc = {.network = o->network,
                                .subnet = cfg->subnet,
                                .cni_path = cfg->cni_path,
                                .state_dir = cni,
                                .netns_dir = netns};
    if ((r = oci_net_new(e->base, &nc, &o->net, &err)) < 0) {
        *ret_err = err;
        return r;
    }
    snprintf(p, sizeof(p), "%s/containers", o->dir);
    DIR *d = opendir(p);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)))
            if (de->d_name[0] != '.')
                load_record(o, de->d_name); /* an unreadable record is skipped, not fatal */
        closedir(d);
    }
    o->kretry = evtimer_new(e->base, kretry_cb, o);
    o->gc_timer = evtimer_new(e->base, gc_cb, o);
    o->unused = json_object();
    o->image_gc_after_ms = cfg->image_gc_after_ms;
    return o->kretry && o->gc_timer && o->unused ? 0 : -ENOMEM;
}

/* A failed init leaves nothing behind (engine_new frees only the private part) and says why in
 * cfg->init_error when it can. */
static int oci_init(struct engine *e, const struct engine_config *cfg)
{
    struct lerr err = {0};
    int r = oci_init_parts(e, cfg, &err);
    if (r < 0) {
        if (cfg->init_error) {
            if (!err.msg[0])
                lerr_set(&err, r, "%s", strerror(-r));
            *cfg->init_error = err;
        }
        oci_fini(e);
    }
    return r;
}

static int oci_start(struct engine *e)
{
    struct oci *o = O(e);
    if (o->running)
        return 0;
    o->running = true;
    keeper_connect(o);
    struct timeval tv = {60, 0};
    evtimer_add(o->gc_timer, &tv);
    return 0;
}

static void oci_stop(struct engine *e)
{
    struct oci *o = O(e);
    o->running = false;
    if (o->kretry)
        evtimer_del(o->kretry);
    if (o->gc_timer)
        evtimer_del(o->gc_timer);
}

static void oci_fini(struct engine *e)
{
    struct oci *o = O(e);
    keeper_disconnect(o);
    struct kreq *q, *qtmp;
    llist_foreach_safe (q, qtmp, &o->kreqs, node)
        free(q);
    llist_init(&o->kreqs);
    /* Operations in flight: their helper programs are killed, their callers not called. */
    struct opctx *op, *optmp;
    llist_foreach_safe (op, optmp, &o->ops, node) {
        oci_exec_cancel(op->x);
        op->x = NULL;
        op_free(op);
    }
    struct octr *c, *ctmp;
    llist_foreach_safe (c, ctmp, &o->ctrs, node) {
        llist_remove(&c->node);
        ctr_free(c); /* running containers keep running: the keeper has them */
    }
    oci_net_free(o->net);
    if (o->kretry)
        event_free(o->kretry);
    if (o->gc_timer)
        event_free(o->gc_timer);
    json_decref(o->unused);
    if (o->kpid_ev)
        event_free(o->kpid_ev);
    if (o->kpidfd >= 0)
        close(o->kpidfd);
    free(o->dir);
    free(o->run);
    free(o->store);
    free(o->runtime_root);
    free(o->network);
    free(o->instance);
    free(o->runtime);
    free(o->keeper_bin);
    free(o->image_helper);
}

const struct engine_ops engine_oci_ops = {
    .name = "oci",
    .runs = ENGINE_RUNS_IMAGES,
    .priv_size = sizeof(struct oci),
    .init = oci_init,
    .start = oci_start,
    .stop = oci_stop,
    .fini = oci_fini,
    .version = oci_version,
    .image_present = oci_image_present,
    .pull = oci_pull,
    .create = oci_create,
    .start_container = oci_start_container,
    .stop_container = oci_stop_container,
    .remove = oci_remove,
    .inspect = oci_inspect,
    .list = oci_list,
    .logs = oci_logs,
    .logs_cancel = oci_logs_cancel,
    .image_platform = oci_image_platform,
    .check_create_options = oci_check_create_options,
    .image_list = oci_image_list,
    .image_load = oci_image_load,
    .image_remove = oci_image_remove,
    .image_prune = oci_image_prune,
};
