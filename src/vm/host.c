/* host.c — managing the VMs of this host (host.h): definitions on disk, the supervisor's control
 * API over its unix socket, shares and logs. */
#include "vm/host.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "net/http_client.h"
#include "vm/image.h"
#include "vm/paths.h"
#include "spawn.h"

/* Control API calls that answer at once; waits and stops get their own timeout plus this. */
#define CTL_TIMEOUT_MS 10000
#define CTL_CONNECT_TIMEOUT_MS 5000
#define CTL_STOP_SLACK_MS 30000
/* After a stop, how long the supervisor may take to let go of the VM. */
#define SUPERVISOR_EXIT_TIMEOUT_MS 10000
/* Logs are read whole up to this size to find their last lines. */
#define LOG_READ_MAX (64u << 20)

/* ------------------------------------------------------------------ definitions */

static int def_path(const struct vm_host *h, const char *name, char *path, size_t size,
                    struct lerr *err)
{
    int r = vm_name_check(name, err);
    if (r < 0)
        return r;
    if (vm_path(path, size, h->root, name, VM_FILE_DEF) < 0)
        return lerr_set(err, -ENAMETOOLONG, "VM directory path too long");
    return 0;
}

int vm_host_load(const struct vm_host *h, const char *name, struct vm_def *ret, struct lerr *err)
{
    char path[PATH_MAX];
    int r = def_path(h, name, path, sizeof(path), err);
    if (r < 0)
        return r;
    if (access(path, F_OK) < 0)
        return lerr_set(err, -ENOENT, "no VM named %s (in %s; `ledge vm list`)", name, h->root);
    return vm_def_load(path, ret, err);
}

int vm_host_save(const struct vm_host *h, const struct vm_def *d, struct lerr *err)
{
    char path[PATH_MAX];
    int r = def_path(h, d->name, path, sizeof(path), err);
    if (r < 0)
        return r;
    r = vm_def_save(path, d);
    return r < 0 ? lerr_set(err, r, "%s: %s", path, strerror(-r)) : 0;
}

void vm_info_clear(struct vm_info *i)
{
    if (!i)
        return;
    vm_def_free(&i->def);
    json_decref(i->status);
    i->status = NULL;
}

void vm_infos_free(struct vm_info *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        vm_info_clear(&v[i]);
    free(v);
}

const char *vm_info_state(const struct vm_info *i)
{
    const char *s = ljson_str(i->status, "state");
    return s ? s : "stopped";
}

json_t *vm_info_json(const struct vm_info *i)
{
    json_t *o = vm_def_to_json(&i->def);
    if (!o)
        return NULL;
    json_object_set_new(o, "state", json_string(vm_info_state(i)));
    if (i->status)
        json_object_set(o, "status", i->status);
    return o;
}

int vm_host_info(const struct vm_host *h, const char *name, struct vm_info *ret, struct lerr *err)
{
    struct vm_info i = {0};
    int r = vm_host_load(h, name, &i.def, err);
    if (r < 0)
        return r;
    if (vm_host_status(h, name, &i.status, NULL) < 0)
        i.status = NULL;
    *ret = i;
    return 0;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

int vm_host_list(const struct vm_host *h, struct vm_info **ret, size_t *ret_n, struct lerr *err)
{
    typedef char vm_name[VM_NAME_MAX + 1];
    _cleanup_free_ vm_name *names = calloc(VM_HOST_LIST_MAX, sizeof(*names));
    if (!names)
        return lerr_set(err, -ENOMEM, "out of memory");
    size_t n = 0;
    DIR *dir = opendir(h->root);
    struct dirent *e;
    while (dir && (e = readdir(dir)) && n < VM_HOST_LIST_MAX) {
        char p[PATH_MAX];
        if (vm_name_check(e->d_name, NULL) < 0 ||
            vm_path(p, sizeof(p), h->root, e->d_name, VM_FILE_DEF) < 0 || access(p, F_OK) < 0)
            continue;
        lstr_copy(names[n++], sizeof(names[0]), e->d_name);
    }
    if (dir)
        closedir(dir);
    qsort(names, n, sizeof(names[0]), name_cmp);
    struct vm_info *v = calloc(n ? n : 1, sizeof(*v));
    if (!v)
        return lerr_set(err, -ENOMEM, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (vm_host_info(h, names[i], &v[k], NULL) == 0)
            k++;
    *ret = v;
    *ret_n = k;
    return 0;
}

/* ------------------------------------------------------------------ the supervisor */

/* The supervisor's answer for a status that is not 2xx, as an error. */
static int ctl_error(const char *name, long status, const json_t *body, struct lerr *err)
{
    const char *msg = ljson_str(body, "message");
    int code = status == 400 ? -EINVAL : status == 404 ? -ENOENT : status == 409 ? -EEXIST : -EIO;
    if (msg)
        return lerr_set(err, code, "%s", msg);
    return lerr_set(err, code, "the supervisor of %s answered HTTP %ld", name, status);
}

/* A request to the VM's supervisor: 0 with its status and JSON body (NULL when empty), or
 * -ENOTCONN when no supervisor answers. */
static int ctl_call(const struct vm_host *h, const char *name, const char *method, const char *path,
                    const char *body, long timeout_ms, long *ret_status, json_t **ret,
                    struct lerr *err)
{
    char sock[128];
    int r = vm_sock_path(sock, sizeof(sock), h->root, name, VM_SOCK_CTL, err);
    if (r < 0)
        return r;
    if (access(sock, F_OK) < 0)
        return lerr_set(err, -ENOTCONN, "%s is not running", name);
    char url[1024];
    snprintf(url, sizeof(url), "http://localhost%s", path);
    struct hc_request req = {
        .method = method,
        .unix_socket = sock,
        .url = url,
        .body = body,
        .body_len = body ? strlen(body) : 0,
        .timeout_ms = timeout_ms,
        .connect_timeout_ms = CTL_CONNECT_TIMEOUT_MS,
    };
    _cleanup_lbuf_ struct lbuf out = LBUF_INIT;
    long status = 0;
    r = hc_request_sync(&req, &status, &out);
    if (r < 0)
        return lerr_set(err, -ENOTCONN, "%s is not running (its supervisor does not answer: %s)",
                        name, strerror(-r));
    json_t *j = NULL;
    if (out.len && ljson_parse(out.data, out.len, &j, NULL) < 0 && status < 300)
        return lerr_set(err, -EPROTO, "the supervisor of %s answered something that is not JSON",
                        name);
    *ret_status = status;
    *ret = j;
    return 0;
}

/* ctl_call() that expects status want: the body in *ret (when ret is non-NULL), or the
 * supervisor's refusal as an error. */
static int ctl_expect(const struct vm_host *h, const char *name, const char *method,
                      const char *path, const char *body, long timeout_ms, long want, json_t **ret,
                      struct lerr *err)
{
    long st;
    json_t *j = NULL;
    int r = ctl_call(h, name, method, path, body, timeout_ms, &st, &j, err);
    if (r < 0)
        return r;
    if (st != want) {
        r = ctl_error(name, st, j, err);
        json_decref(j);
        return r;
    }
    if (ret)
        *ret = j;
    else
        json_decref(j);
    return 0;
}

int vm_host_status(const struct vm_host *h, const char *name, json_t **ret, struct lerr *err)
{
    return ctl_expect(h, name, "GET", "/status", NULL, CTL_TIMEOUT_MS, 200, ret, err);
}

bool vm_host_running(const struct vm_host *h, const char *name)
{
    _cleanup_json_ json_t *s = NULL;
    if (vm_host_status(h, name, &s, NULL) < 0)
        return false;
    const char *st = ljson_str(s, "state");
    return !lstr_eq(st, "stopped") && !lstr_eq(st, "failed");
}

int vm_host_start(const struct vm_host *h, const char *name, struct lerr *err)
{
    struct vm_def d;
    int r = vm_host_load(h, name, &d, err);
    if (r < 0)
        return r;
    vm_def_free(&d);
    r = vm_supervisor_spawn(h->root, name, err);
    return r < 0 ? r : 0;
}

int vm_host_wait(const struct vm_host *h, const char *name, const char *state, int timeout_s,
                 json_t **ret, struct lerr *err)
{
    char path[128];
    snprintf(path, sizeof(path), "/status?wait=%s&timeout=%d", state, timeout_s);
    long st;
    json_t *j = NULL;
    int r = ctl_call(h, name, "GET", path, NULL, (long)timeout_s * 1000 + CTL_TIMEOUT_MS, &st, &j,
                     NULL);
    if (r < 0 || st != 200) {
        json_decref(j);
        return lerr_set(err, r < 0 ? r : -EIO, "the supervisor of %s went away (see %s/%s/%s)",
                        name, h->root, name, VM_FILE_VMM_LOG);
    }
    *ret = j;
    return 0;
}

/* Once the VM is down its supervisor still answers the last requests, then exits and lets go of
 * the VM (its lock); wait for that (bounded) so what follows (set, delete, ledged's autostart)
 * sees it stopped. */
static void wait_supervisor_exit(int pid)
{
    if (pid <= 0)
        return;
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0)
        return; /* gone already (or no pidfds: the lock is released at exit anyway) */
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    while (poll(&pf, 1, SUPERVISOR_EXIT_TIMEOUT_MS) < 0 && errno == EINTR)
        ;
    close(fd);
}

int vm_host_stop(const struct vm_host *h, const char *name, int timeout_s, json_t **ret,
                 struct lerr *err)
{
    _cleanup_json_ json_t *before = NULL;
    int pid = 0;
    if (vm_host_status(h, name, &before, NULL) == 0)
        pid = (int)ljson_int(before, "supervisorPid", 0);
    char path[64];
    snprintf(path, sizeof(path), "/stop?timeout=%d", timeout_s);
    int r = ctl_expect(h, name, "POST", path, NULL, (long)timeout_s * 1000 + CTL_STOP_SLACK_MS, 200,
                       ret, err);
    if (r == 0)
        wait_supervisor_exit(pid);
    return r;
}

int vm_host_reboot(const struct vm_host *h, const char *name, struct lerr *err)
{
    return ctl_expect(h, name, "POST", "/reboot", NULL, CTL_TIMEOUT_MS, 202, NULL, err);
}

/* ------------------------------------------------------------------ create, change, delete */

/* The newest complete image of arch and engine in the cache. */
static int newest_image(const struct vm_host *h, enum vm_arch arch, enum vm_engine engine,
                        char *key, size_t size, struct lerr *err)
{
    _cleanup_json_ json_t *list = vm_image_list(h->cache);
    size_t i;
    json_t *m;
    enum vm_engine e;
    json_array_foreach (list, i, m)
        if (lstr_eq(ljson_str(m, "arch"), vm_arch_name(arch)) && vm_image_engine(m, &e) == 0 &&
            e == engine)
            return lstr_copy(key, size, ljson_str(m, "key"));
    return lerr_set(err, -ENOENT,
                    "no %s guest image with the %s engine in %s: give --deb "
                    "ledge_VERSION_%s.deb (from scripts/build-deb) to build one, or `ledge vm "
                    "image import FILE`",
                    vm_arch_name(arch), vm_engine_name(engine), h->cache, vm_arch_name(arch));
}

int vm_host_create(const struct vm_host *h, struct vm_def *d, const char *image, const char *deb,
                   bool arch_given, bool engine_given, struct lerr *err)
{
    int r = vm_def_validate(d, err);
    if (r < 0)
        return r;
    char dir[PATH_MAX];
    if (vm_path(dir, sizeof(dir), h->root, d->name, NULL) < 0)
        return lerr_set(err, -ENAMETOOLONG, "VM directory path too long");
    if (access(dir, F_OK) == 0)
        return lerr_set(err, -EEXIST, "a VM named %s exists (%s)", d->name, dir);
    char key[128] = "";
    if (image) {
        if ((r = vm_image_key_check(image, err)) < 0)
            return r;
        lstr_copy(key, sizeof(key), image);
        if (!arch_given && lstr_startswith(image, "arm64-"))
            d->arch = VM_ARCH_ARM64;
        else if (!arch_given && lstr_startswith(image, "amd64-"))
            d->arch = VM_ARCH_AMD64;
        _cleanup_json_ json_t *m = NULL;
        if (!engine_given && vm_image_manifest(h->cache, image, &m, NULL) == 0)
            vm_image_engine(m, &d->engine); /* vm_create names an unknown one */
    } else if (deb && *deb) {
        char arch_opt[] = "--arch", deb_opt[] = "--deb", engine_opt[] = "--engine";
        char *args[] = {arch_opt,   (char *)vm_arch_name(d->arch),    deb_opt, (char *)deb,
                        engine_opt, (char *)vm_engine_name(d->engine)};
        if ((r = vm_image_build(h->cache, args, ARRAY_SIZE(args), key, sizeof(key), NULL, err)) < 0)
            return r;
    } else if ((r = newest_image(h, d->arch, d->engine, key, sizeof(key), err)) < 0) {
        return r;
    }
    char *k = strdup(key);
    if (!k)
        return lerr_set(err, -ENOMEM, "out of memory");
    free(d->image);
    d->image = k;
    return vm_create(h->root, h->cache, d, err);
}

int vm_host_delete(const struct vm_host *h, const char *name, bool force, struct lerr *err)
{
    struct vm_def d;
    int r = vm_host_load(h, name, &d, err);
    if (r < 0)
        return r;
    vm_def_free(&d);
    if (vm_host_running(h, name)) {
        if (!force)
            return lerr_set(err, -EBUSY, "%s is running: stop it first, or delete --force", name);
        if ((r = vm_host_stop(h, name, 60, NULL, err)) < 0 && r != -ENOTCONN)
            return r;
    }
    return vm_delete_dir(h->root, name, err);
}

int vm_host_set(const struct vm_host *h, const struct vm_def *d, struct lerr *err)
{
    struct vm_def saved;
    int r = vm_host_load(h, d->name, &saved, err);
    if (r < 0)
        return r;
    uint64_t disk = saved.disk;
    vm_def_free(&saved);
    if (vm_host_running(h, d->name))
        return lerr_set(err, -EBUSY,
                        "%s is running: stop it first (ledge vm stop %s); resources change while "
                        "stopped, and keep the guest and its deployment as they are",
                        d->name, d->name);
    if ((r = vm_def_validate(d, err)) < 0)
        return r;
    if (d->disk != disk && (r = vm_resize_disk(h->root, d->name, d->disk, err)) < 0)
        return r;
    return vm_host_save(h, d, err);
}

/* ------------------------------------------------------------------ ports and shares */

int vm_host_ports(const struct vm_host *h, const char *name, json_t **ret, struct lerr *err)
{
    return ctl_expect(h, name, "GET", "/ports", NULL, CTL_TIMEOUT_MS, 200, ret, err);
}

static int port_change(const struct vm_host *h, const char *name, const char *spec, bool add,
                       struct vm_port *ret_port, bool *ret_live, struct lerr *err)
{
    struct vm_def d;
    int r = vm_host_load(h, name, &d, err);
    if (r < 0)
        return r;
    struct vm_port p;
    bool live = vm_host_running(h, name);
    if ((r = vm_port_parse(spec, &p, err)) < 0)
        goto out;
    if (live) {
        /* The supervisor changes QEMU's forwards and the definition together. */
        _cleanup_json_ json_t *body = json_pack("{s:s}", "spec", spec);
        _cleanup_free_ char *text = body ? ljson_dump(body) : NULL;
        _cleanup_lbuf_ struct lbuf path = LBUF_INIT;
        if (!text || lbuf_puts(&path, "/ports?spec=") < 0 ||
            lstr_url_encode(spec, strlen(spec), &path) < 0) {
            r = lerr_set(err, -ENOMEM, "out of memory");
            goto out;
        }
        r = add ? ctl_expect(h, name, "POST", "/ports", text, CTL_TIMEOUT_MS, 201, NULL, err)
                : ctl_expect(h, name, "DELETE", path.data, NULL, CTL_TIMEOUT_MS, 204, NULL, err);
    } else {
        r = add ? vm_def_add_port(&d, &p, err) : vm_def_remove_port(&d, &p, err);
        if (r == 0)
            r = vm_host_save(h, &d, err);
    }
    if (r == 0) {
        if (ret_port)
            *ret_port = p;
        if (ret_live)
            *ret_live = live;
    }
out:
    vm_def_free(&d);
    return r;
}

int vm_host_port_add(const struct vm_host *h, const char *name, const char *spec,
                     struct vm_port *ret_port, bool *ret_live, struct lerr *err)
{
    return port_change(h, name, spec, true, ret_port, ret_live, err);
}

int vm_host_port_remove(const struct vm_host *h, const char *name, const char *spec,
                        struct vm_port *ret_port, bool *ret_live, struct lerr *err)
{
    return port_change(h, name, spec, false, ret_port, ret_live, err);
}

int vm_host_share_add(const struct vm_host *h, const char *name, const char *host_dir,
                      const char *guest_dir, bool read_only, char *ret_real, size_t size,
                      bool *ret_running, struct lerr *err)
{
    struct vm_def d;
    int r = vm_host_load(h, name, &d, err);
    if (r < 0)
        return r;
    char real[PATH_MAX];
    if (!realpath(host_dir, real))
        r = lerr_set(err, neg_errno(), "%s: %s", host_dir, strerror(errno));
    else if ((r = vm_def_add_share(&d, real, guest_dir, read_only, err)) == 0)
        r = vm_host_save(h, &d, err);
    vm_def_free(&d);
    if (r < 0)
        return r;
    if (ret_real)
        lstr_copy(ret_real, size, real);
    if (ret_running)
        *ret_running = vm_host_running(h, name);
    return 0;
}

int vm_host_share_remove(const struct vm_host *h, const char *name, const char *dir,
                         const char *guest_dir, bool *ret_running, struct lerr *err)
{
    if (!dir)
        return lerr_set(err, -EINVAL, "which share (GUESTDIR, or HOSTDIR GUESTDIR)?");
    struct vm_def d;
    int r = vm_host_load(h, name, &d, err);
    if (r < 0)
        return r;
    char real[PATH_MAX];
    const char *host_real = realpath(dir, real) ? real : dir;
    if (guest_dir) {
        r = vm_def_remove_share(&d, host_real, guest_dir, err);
    } else {
        /* One directory: the guest's, or failing that the host's. */
        r = vm_def_remove_share(&d, NULL, dir, err);
        if (r == -ENOENT)
            r = vm_def_remove_share(&d, host_real, NULL, err);
    }
    if (r == 0)
        r = vm_host_save(h, &d, err);
    vm_def_free(&d);
    if (r == 0 && ret_running)
        *ret_running = vm_host_running(h, name);
    return r;
}

/* ------------------------------------------------------------------ logs */

int vm_host_log_tail(const struct vm_host *h, const char *name, const char *file, size_t lines,
                     char **ret, size_t *ret_len, struct lerr *err)
{
    char p[PATH_MAX];
    int r = vm_name_check(name, err);
    if (r < 0)
        return r;
    if (vm_path(p, sizeof(p), h->root, name, file) < 0)
        return lerr_set(err, -ENAMETOOLONG, "VM directory path too long");
    _cleanup_free_ char *text = NULL;
    size_t n;
    if ((r = lfs_read_file(p, LOG_READ_MAX, &text, &n)) < 0)
        return lerr_set(err, r, "%s: %s", p, strerror(-r));
    size_t from = n, seen = 0;
    while (from > 0 && seen <= lines)
        if (text[--from] == '\n')
            seen++;
    if (seen > lines)
        from++;
    memmove(text, text + from, n - from + 1);
    *ret_len = n - from;
    *ret = TAKE_PTR(text);
    return 0;
}
