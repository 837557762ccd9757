/* update.c — A/B updates of a guest: prepare, switch, boot, hold to the baseline, roll back
 * (update.h, docs/vm.md "Updates"). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "net/http_client.h"
#include "vm/exec.h"
#include "vm/image.h"
#include "vm/paths.h"
#include "vm/update.h"

#define API_TIMEOUT_MS 10000
#define STOP_TIMEOUT_S 120
#define HUB_MODULE "edgeHub"
#define CHECK_OUTPUT_MAX (4u << 20)

static void say(const struct vmu_options *o, const char *fmt, ...) _printf_(2, 3);
static void say(const struct vmu_options *o, const char *fmt, ...)
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

/* Journal step s (durably), then, for the tests, die there when asked. */
static int journal(const struct vmu_options *o, const char *dir, struct vmu_journal *j,
                   enum vmu_step s, struct lerr *err)
{
    j->step = s;
    int r = vmu_journal_save(dir, j, err);
    if (r < 0)
        return r;
    if (o->stop_at != VMU_NONE && o->stop_at == s)
        raise(SIGKILL);
    return 0;
}

/* ------------------------------------------------------------------ the guest */

/* A request to the guest's ledged through the VM's api.sock. */
static int api(const struct vm_host *h, const char *name, const char *method, const char *path,
               long timeout_ms, long *ret_status, json_t **ret)
{
    char sock[128];
    if (vm_sock_path(sock, sizeof(sock), h->root, name, VM_SOCK_API, NULL) < 0)
        return -ENAMETOOLONG;
    char url[512];
    snprintf(url, sizeof(url), "http://localhost%s", path);
    struct hc_request req = {.method = method,
                             .unix_socket = sock,
                             .url = url,
                             .timeout_ms = timeout_ms,
                             .connect_timeout_ms = 5000};
    _cleanup_lbuf_ struct lbuf out = LBUF_INIT;
    out.max = 4u << 20;
    int r = hc_request_sync(&req, ret_status, &out);
    if (r < 0)
        return r;
    if (ret && (!out.len || ljson_parse(out.data, out.len, ret, NULL) < 0))
        *ret = NULL;
    return 0;
}

/* Run argv in the guest: its stdout in *out (NUL-terminated), its exit code in *code. */
static int guest_run(const struct vm_host *h, const char *name, char *const *argv, size_t argc,
                     char **out, int *code, struct lerr *err)
{
    int fd = memfd_create("vm-update", MFD_CLOEXEC);
    if (fd < 0)
        return lerr_set(err, neg_errno(), "memfd_create: %s", strerror(errno));
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    struct vm_exec_request req = {.argv = argv, .argc = argc};
    struct vm_exec_io io = {.in_fd = -1, .out_fd = fd, .err_fd = devnull >= 0 ? devnull : fd};
    int r = vm_exec(h, name, &req, &io, code, err);
    if (devnull >= 0)
        close(devnull);
    if (r < 0) {
        close(fd);
        return r;
    }
    off_t n = lseek(fd, 0, SEEK_END);
    if (n < 0 || (uint64_t)n > CHECK_OUTPUT_MAX) {
        close(fd);
        return lerr_set(err, -EFBIG, "%s printed too much", argv[0]);
    }
    char *buf = malloc((size_t)n + 1);
    if (!buf || pread(fd, buf, (size_t)n, 0) != n) {
        free(buf);
        close(fd);
        return lerr_set(err, -EIO, "reading what %s printed", argv[0]);
    }
    buf[n] = 0;
    close(fd);
    *out = buf;
    return 0;
}

/* The ids of the checks the guest's `ledge check` reports as errors. */
static int check_errors(const struct vm_host *h, const char *name, json_t **ret, struct lerr *err)
{
    char *argv[] = {"ledge", "check", "--output", "json"};
    _cleanup_free_ char *out = NULL;
    int code = 0;
    int r = guest_run(h, name, argv, ARRAY_SIZE(argv), &out, &code, err);
    if (r < 0)
        return lerr_prefix(err, "the guest's ledge check");
    _cleanup_json_ json_t *j = json_loads(out, 0, NULL);
    if (!json_is_array(json_object_get(j, "checks")))
        return lerr_set(err, -EIO, "the guest's ledge check (exit code %d) printed no result",
                        code);
    json_t *ids = json_array();
    size_t i;
    json_t *c;
    json_array_foreach (json_object_get(j, "checks"), i, c)
        if (lstr_eq(ljson_str(c, "result"), "error") && ljson_str(c, "id"))
            json_array_append_new(ids, json_string(ljson_str(c, "id")));
    *ret = ids;
    return 0;
}

/* The guest's ledge package version. */
static int guest_ledge_version(const struct vm_host *h, const char *name, char **ret,
                               struct lerr *err)
{
    char *argv[] = {"dpkg-query", "-W", "-f", "${Version}", "ledge"};
    int code = 0;
    int r = guest_run(h, name, argv, ARRAY_SIZE(argv), ret, &code, err);
    if (r == 0 && code != 0) {
        free(*ret);
        *ret = NULL;
        return lerr_set(err, -EIO, "dpkg-query in the guest exited %d", code);
    }
    return r;
}

/* What the new image is held to: the modules and their containers, the hub, the check errors. */
static int take_baseline(const struct vm_host *h, const char *name, json_t **ret, struct lerr *err)
{
    long status = 0;
    _cleanup_json_ json_t *st = NULL, *mods = NULL;
    int r = api(h, name, "GET", "/status", API_TIMEOUT_MS, &status, &st);
    if (r < 0 || status != 200)
        return lerr_set(err, r < 0 ? r : -EIO,
                        "the guest's ledged does not answer (%s): an update starts from a running "
                        "VM, whose health the new image is held to",
                        r < 0 ? strerror(-r) : "an error status");
    r = api(h, name, "GET", "/modules", API_TIMEOUT_MS, &status, &mods);
    if (r < 0 || status != 200)
        return lerr_set(err, r < 0 ? r : -EIO, "the guest's /modules did not answer");
    _cleanup_json_ json_t *b = json_object();
    json_t *m = json_object();
    json_object_set_new(b, "modules", m);
    size_t i;
    json_t *v;
    bool hub = false;
    json_array_foreach (json_object_get(mods, "modules"), i, v) {
        const char *mn = ljson_str(v, "name"), *id = ljson_str(v, "containerId");
        if (!mn || !id)
            continue; /* never created: nothing to keep */
        json_object_set_new(m, mn,
                            json_pack("{s:s, s:b, s:s}", "containerId", id, "running",
                                      lstr_eq(ljson_str(v, "runtimeStatus"), "running"), "type",
                                      ljson_str(v, "type") ?: "docker"));
        hub = hub || lstr_eq(mn, HUB_MODULE);
    }
    json_object_set_new(b, "hub", json_boolean(hub));
    if (hub &&
        (api(h, name, "GET", "/hub/status", API_TIMEOUT_MS, &status, NULL) < 0 || status != 200))
        return lerr_set(err, -EIO, "the guest's hub does not report its status before the update");
    json_t *ce = NULL;
    if ((r = check_errors(h, name, &ce, err)) < 0)
        return r;
    json_object_set_new(b, "checkErrors", ce);
    *ret = json_incref(b);
    return 0;
}

/* Is the guest on the new image as healthy as the baseline? 0, -EAGAIN (not yet: reason says
 * what), or another < 0 (it cannot become so). */
static int look(const struct vm_host *h, const char *name, const struct vmu_journal *j,
                char *reason, size_t size)
{
    long status = 0;
    int r = api(h, name, "GET", "/status", 3000, &status, NULL);
    if (r < 0 || status != 200) {
        snprintf(reason, size, "the guest's ledged does not answer (%s)",
                 r < 0           ? strerror(-r)
                 : status == 503 ? "the VM is booting"
                                 : "an error status");
        return -EAGAIN;
    }
    json_t *b = j->baseline;
    if (ljson_bool(b, "hub", false) &&
        (api(h, name, "GET", "/hub/status", API_TIMEOUT_MS, &status, NULL) < 0 || status != 200)) {
        snprintf(reason, size, "the guest's hub does not report its status (%ld)", status);
        return -EAGAIN;
    }
    _cleanup_json_ json_t *mods = NULL;
    if (api(h, name, "GET", "/modules", API_TIMEOUT_MS, &status, &mods) < 0 || status != 200) {
        snprintf(reason, size, "the guest's /modules does not answer");
        return -EAGAIN;
    }
    const char *mn;
    json_t *want;
    json_object_foreach (json_object_get(b, "modules"), mn, want) {
        json_t *now = NULL, *v;
        size_t i;
        json_array_foreach (json_object_get(mods, "modules"), i, v)
            if (lstr_eq(ljson_str(v, "name"), mn))
                now = v;
        const char *id = ljson_str(want, "containerId");
        if (!now) {
            snprintf(reason, size, "module %s is gone", mn);
            return -EAGAIN;
        }
        /* A container survives the reboot and must be adopted, not recreated; a process
         * module is a new process after any boot, and the hub is ledge's own (/hub/status). */
        bool container = (!ljson_str(want, "type") || lstr_eq(ljson_str(want, "type"), "docker")) &&
                         !lstr_eq(mn, HUB_MODULE);
        if (container && !lstr_eq(ljson_str(now, "containerId"), id)) {
            snprintf(reason, size, "module %s was recreated (container %.12s, was %.12s)", mn,
                     ljson_str(now, "containerId") ?: "none", id);
            return -EAGAIN;
        }
        if (ljson_bool(want, "running", false) &&
            !lstr_eq(ljson_str(now, "runtimeStatus"), "running")) {
            snprintf(reason, size, "module %s is %s, not running", mn,
                     ljson_str(now, "runtimeStatus") ?: "?");
            return -EAGAIN;
        }
    }
    return 0;
}

/* New errors of the guest's `ledge check` and the guest's ledge version: 0 when all is well. */
static int final_checks(const struct vm_host *h, const char *name, const struct vmu_journal *j,
                        char *reason, size_t size)
{
    struct lerr e = {0};
    _cleanup_free_ char *v = NULL;
    if (guest_ledge_version(h, name, &v, &e) < 0) {
        snprintf(reason, size, "%s", lerr_str(&e));
        return -EIO;
    }
    if (j->to_ledge && !lstr_eq(v, j->to_ledge)) {
        snprintf(reason, size, "the guest runs ledge %s, not the new image's %s", v, j->to_ledge);
        return -EIO;
    }
    _cleanup_json_ json_t *now = NULL;
    if (check_errors(h, name, &now, &e) < 0) {
        snprintf(reason, size, "%s", lerr_str(&e));
        return -EIO;
    }
    const json_t *before = json_object_get(j->baseline, "checkErrors");
    _cleanup_lbuf_ struct lbuf worse = LBUF_INIT;
    worse.max = 512;
    size_t i, k;
    json_t *x, *y;
    json_array_foreach (now, i, x) {
        bool old = false;
        json_array_foreach (before, k, y)
            old = old || json_equal(x, y);
        if (!old)
            lbuf_printf(&worse, "%s%s", worse.len ? ", " : "", json_string_value(x));
    }
    if (worse.len) {
        snprintf(reason, size, "the guest's ledge check reports new errors: %s", worse.data);
        return -EIO;
    }
    return 0;
}

/* Boot the VM and wait (at most timeout_s in all) until it is as healthy as the baseline. */
static int boot_healthy(const struct vm_host *h, const char *name, const struct vmu_journal *j,
                        int timeout_s, char *reason, size_t size)
{
    int64_t end = ltime_mono_ms() + (int64_t)timeout_s * 1000;
    struct lerr e = {0};
    if (vm_host_start(h, name, &e) < 0) {
        snprintf(reason, size, "the VM did not start: %s", lerr_str(&e));
        return -EIO;
    }
    _cleanup_json_ json_t *st = NULL;
    if (vm_host_wait(h, name, "running", MIN(timeout_s, 3600), &st, &e) < 0) {
        snprintf(reason, size, "%s", lerr_str(&e));
        return -EIO;
    }
    snprintf(reason, size, "the guest's ledged does not answer");
    for (;;) {
        int r = look(h, name, j, reason, size);
        if (r == 0)
            return final_checks(h, name, j, reason, size);
        if (r != -EAGAIN)
            return r;
        if (ltime_mono_ms() >= end) {
            size_t n = strlen(reason);
            snprintf(reason + n, size - n, " after %ds", timeout_s);
            return -ETIMEDOUT;
        }
        ltime_sleep_ms(1000);
    }
}

/* ------------------------------------------------------------------ switch, roll back */

static int set_image(const struct vm_host *h, const char *name, const char *key, struct lerr *err)
{
    struct vm_def d;
    int r = vm_host_load(h, name, &d, err);
    if (r < 0)
        return r;
    char *k = strdup(key);
    if (!k) {
        vm_def_free(&d);
        return -ENOMEM;
    }
    free(d.image);
    d.image = k;
    r = vm_host_save(h, &d, err);
    vm_def_free(&d);
    return r;
}

static int stop_vm(const struct vm_host *h, const char *name, struct lerr *err)
{
    int r = vm_host_stop(h, name, STOP_TIMEOUT_S, NULL, err);
    return r == -ENOTCONN ? 0 : r;
}

/* Put the previous image back and boot it; -ECANCELED with the reason in err, or the error of a
 * rollback that could not be done. */
static int rollback(const struct vm_host *h, const char *name, const char *dir,
                    struct vmu_journal *j, const struct vmu_options *o, const char *reason,
                    struct lerr *err)
{
    if (reason && !j->reason)
        j->reason = strdup(reason);
    int r = journal(o, dir, j, VMU_ROLLING_BACK, err);
    if (r < 0)
        return r;
    say(o, "rolling back to image %s: %s", j->from_image, j->reason ? j->reason : "");
    if ((r = stop_vm(h, name, err)) < 0 || (r = vmu_slots_restore(dir, err)) < 0 ||
        (r = set_image(h, name, j->from_image, err)) < 0)
        return lerr_prefix(err, "rolling back (the VM is stopped; ledge vm update %s --resume)",
                           name);
    struct lerr e = {0};
    _cleanup_json_ json_t *st = NULL;
    if ((r = vm_host_start(h, name, &e)) < 0 ||
        (r = vm_host_wait(h, name, "running", MIN(o->timeout_s, 3600), &st, &e)) < 0 ||
        !lstr_eq(ljson_str(st, "state"), "running"))
        say(o, "the previous image does not answer yet either: %s",
            r < 0 ? lerr_str(&e) : ljson_str(st, "state") ?: "?");
    if ((r = journal(o, dir, j, VMU_ROLLED_BACK, err)) < 0)
        return r;
    return lerr_set(err, -ECANCELED, "the VM runs image %s again: %s", j->from_image,
                    j->reason ? j->reason : "the update failed");
}

/* ------------------------------------------------------------------ update, resume */

static int take_lock(const char *dir, int *ret_fd, struct lerr *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, VMU_LOCK);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return lerr_set(err, neg_errno(), "%s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        close(fd);
        return lerr_set(err, -EBUSY, "another ledge vm update works on this VM");
    }
    *ret_fd = fd;
    return 0;
}

static int vm_dir(const struct vm_host *h, const char *name, char *dir, size_t size,
                  struct lerr *err)
{
    int r = vm_name_check(name, err);
    if (r < 0)
        return r;
    if (vm_path(dir, size, h->root, name, NULL) < 0)
        return lerr_set(err, -ENAMETOOLONG, "VM directory path too long");
    return 0;
}

int vm_update(const struct vm_host *h, const char *name, const char *key,
              const struct vmu_options *o, struct lerr *err)
{
    char dir[PATH_MAX];
    int r = vm_dir(h, name, dir, sizeof(dir), err);
    if (r < 0)
        return r;
    struct vm_def d;
    if ((r = vm_host_load(h, name, &d, err)) < 0)
        return r;
    bool data = d.data_disk;
    uint64_t disk = d.disk;
    enum vm_arch arch = d.arch;
    enum vm_engine engine = d.engine, to_engine;
    _cleanup_free_ char *from = d.image ? strdup(d.image) : NULL;
    vm_def_free(&d);
    if (!data)
        return lerr_set(err, -ENOTSUP,
                        "%s keeps its state on its root disk (it was made before VMs had a data "
                        "disk): replacing the root would lose it; make a new VM (ledge vm create) "
                        "to update in place",
                        name);
    if (!from)
        return lerr_set(err, -EINVAL, "%s's definition names no image", name);
    _cleanup_json_ json_t *to_m = NULL, *from_m = NULL;
    if ((r = vm_image_manifest(h->cache, key, &to_m, err)) < 0)
        return r;
    if (!lstr_eq(ljson_str(to_m, "arch"), vm_arch_name(arch)))
        return lerr_set(err, -EINVAL, "image %s is for %s, the VM is %s", key,
                        ljson_str(to_m, "arch") ?: "?", vm_arch_name(arch));
    /* Another engine would recreate every container (the health check fails on that anyway). */
    if (vm_image_engine(to_m, &to_engine) < 0 || to_engine != engine)
        return lerr_set(err, -EINVAL,
                        "image %s runs the %s engine and %s runs %s: modules' containers do "
                        "not carry over between engines; make a new VM for it (ledge vm create "
                        "NAME --engine %s)",
                        key, ljson_str(to_m, "engine") ?: "docker", name, vm_engine_name(engine),
                        ljson_str(to_m, "engine") ?: "docker");
    if (lstr_eq(from, key))
        return lerr_set(err, -EALREADY, "%s runs image %s already", name, key);
    vm_image_manifest(h->cache, from, &from_m, NULL);
    _cleanup_close_ int lock = -1;
    if ((r = take_lock(dir, &lock, err)) < 0)
        return r;
    struct vmu_journal j = {0};
    if (vmu_journal_load(dir, &j, NULL) == 0 && !vmu_step_final(j.step)) {
        vmu_journal_clear(&j);
        return lerr_set(err, -EBUSY,
                        "an update of %s was cut short: finish it first (ledge vm update %s "
                        "--resume)",
                        name, name);
    }
    vmu_journal_clear(&j);
    if (!vm_host_running(h, name))
        return lerr_set(err, -ENOTCONN,
                        "%s is not running: an update starts from a running VM, whose health the "
                        "new image is held to (ledge vm start %s)",
                        name, name);
    char prev[PATH_MAX + 8];
    snprintf(prev, sizeof(prev), "%s/%s", dir, VMU_PREV);
    vm_rm_rf(prev); /* what a finished update left */

    char ts[LTIME_RFC3339_MAX];
    j.from_image = strdup(from);
    j.to_image = strdup(key);
    j.to_ledge = ljson_str(to_m, "ledge") ? strdup(ljson_str(to_m, "ledge")) : NULL;
    /* the guest's own word (the cache may have pruned the running image) */
    if (guest_ledge_version(h, name, &j.from_ledge, NULL) < 0)
        j.from_ledge = ljson_str(from_m, "ledge") ? strdup(ljson_str(from_m, "ledge")) : NULL;
    j.started = strdup(ltime_format_rfc3339(ltime_now_ms(), ts));
    say(o, "taking the baseline of %s (image %s, ledge %s)", name, from,
        j.from_ledge ? j.from_ledge : "?");
    if ((r = take_baseline(h, name, &j.baseline, err)) < 0)
        goto out;
    if ((r = journal(o, dir, &j, VMU_PREPARING, err)) < 0)
        goto out;
    say(o, "preparing image %s (ledge %s) beside the running one", key,
        j.to_ledge ? j.to_ledge : "?");
    if ((r = vmu_slots_prepare(dir, h->cache, key, disk, err)) < 0) {
        free(j.reason);
        j.reason = strdup(lerr_str(err));
        journal(o, dir, &j, VMU_ABANDONED, NULL);
        goto out;
    }
    if ((r = journal(o, dir, &j, VMU_PREPARED, err)) < 0 ||
        (r = journal(o, dir, &j, VMU_SWITCHING, err)) < 0)
        goto out;
    say(o, "stopping %s and switching to the new image", name);
    if ((r = stop_vm(h, name, err)) < 0) {
        /* still on the old image, maybe still running: nothing switched */
        free(j.reason);
        j.reason = strdup(lerr_str(err));
        vmu_slots_restore(dir, NULL);
        journal(o, dir, &j, VMU_ABANDONED, NULL);
        goto out;
    }
    char reason[1024] = "";
    if ((r = vmu_slots_switch(dir, err)) < 0 || (r = set_image(h, name, key, err)) < 0) {
        r = rollback(h, name, dir, &j, o, lerr_str(err), err);
        goto out;
    }
    if ((r = journal(o, dir, &j, VMU_SWITCHED, err)) < 0 ||
        (r = journal(o, dir, &j, VMU_CHECKING, err)) < 0)
        goto out;
    say(o, "booting image %s and holding it to the baseline (at most %ds)", key, o->timeout_s);
    if (boot_healthy(h, name, &j, o->timeout_s, reason, sizeof(reason)) < 0) {
        say(o, "image %s is not healthy: %s", key, reason);
        r = rollback(h, name, dir, &j, o, reason, err);
        goto out;
    }
    if ((r = journal(o, dir, &j, VMU_DONE, err)) < 0)
        goto out;
    vm_rm_rf(prev);
    say(o,
        "%s runs image %s (ledge %s): ledged answers, the modules were adopted with their "
        "containers, ledge check is no worse",
        name, key, j.to_ledge ? j.to_ledge : "?");
    r = 0;
out:
    vmu_journal_clear(&j);
    return r;
}

int vm_update_resume(const struct vm_host *h, const char *name, const struct vmu_options *o,
                     const char **ret_what, struct lerr *err)
{
    char dir[PATH_MAX];
    int r = vm_dir(h, name, dir, sizeof(dir), err);
    if (r < 0)
        return r;
    _cleanup_close_ int lock = -1;
    if ((r = take_lock(dir, &lock, err)) < 0)
        return r;
    struct vmu_journal j = {0};
    r = vmu_journal_load(dir, &j, err);
    if (r == -ENOENT || (r == 0 && vmu_step_final(j.step))) {
        vmu_journal_clear(&j);
        *ret_what = "nothing";
        return 0;
    }
    if (r < 0)
        return r;
    switch (j.step) {
    case VMU_PREPARING:
    case VMU_PREPARED: {
        /* nothing was switched: the VM runs (or ran) the old image */
        char next[PATH_MAX + 8];
        snprintf(next, sizeof(next), "%s/%s", dir, VMU_NEXT);
        vm_rm_rf(next);
        free(j.reason);
        j.reason = strdup("the updater was stopped before the switch");
        r = journal(o, dir, &j, VMU_ABANDONED, err);
        say(o, "the update to %s was stopped before the switch: abandoned, %s keeps image %s",
            j.to_image, name, j.from_image);
        *ret_what = "abandoned";
        break;
    }
    default: {
        /* switching, switched, checking or rolling back: the new image's health is unknown */
        r = rollback(h, name, dir, &j, o,
                     "the updater was stopped before the new image was "
                     "found healthy",
                     err);
        if (r == -ECANCELED) {
            say(o, "%s", lerr_str(err));
            r = 0;
        }
        *ret_what = "rolled-back";
        break;
    }
    }
    vmu_journal_clear(&j);
    return r;
}

int vm_update_status(const struct vm_host *h, const char *name, json_t **ret, struct lerr *err)
{
    char dir[PATH_MAX];
    int r = vm_dir(h, name, dir, sizeof(dir), err);
    if (r < 0)
        return r;
    struct vmu_journal j = {0};
    if ((r = vmu_journal_load(dir, &j, err)) < 0)
        return r == -ENOENT ? lerr_set(err, r, "%s was never updated", name) : r;
    *ret = vmu_journal_to_json(&j);
    vmu_journal_clear(&j);
    return *ret ? 0 : -ENOMEM;
}

int vm_update_recover_stopped(const struct vm_host *h, const char *name, const char **ret_what,
                              struct lerr *err)
{
    *ret_what = "nothing";
    char dir[PATH_MAX];
    int r = vm_dir(h, name, dir, sizeof(dir), err);
    if (r < 0)
        return r;
    struct vmu_journal j = {0};
    if (vmu_journal_load(dir, &j, NULL) < 0 || vmu_step_final(j.step)) {
        vmu_journal_clear(&j);
        return 0;
    }
    vmu_journal_clear(&j);
    _cleanup_close_ int lock = -1;
    if ((r = take_lock(dir, &lock, err)) < 0)
        return r; /* an updater is at work: it boots the VM itself */
    if ((r = vmu_journal_load(dir, &j, err)) < 0)
        return r;
    struct vmu_options quiet = {0};
    if (j.step == VMU_PREPARING || j.step == VMU_PREPARED) {
        char next[PATH_MAX + 8];
        snprintf(next, sizeof(next), "%s/%s", dir, VMU_NEXT);
        vm_rm_rf(next);
        free(j.reason);
        j.reason = strdup("the update was cut short before the switch");
        r = journal(&quiet, dir, &j, VMU_ABANDONED, err);
        *ret_what = "abandoned";
    } else if (!vmu_step_final(j.step)) {
        free(j.reason);
        j.reason = strdup("the update was cut short before the new image was found healthy");
        if ((r = journal(&quiet, dir, &j, VMU_ROLLING_BACK, err)) == 0 &&
            (r = vmu_slots_restore(dir, err)) == 0 &&
            (r = set_image(h, name, j.from_image, err)) == 0)
            r = journal(&quiet, dir, &j, VMU_ROLLED_BACK, err);
        *ret_what = "rolled-back";
    }
    vmu_journal_clear(&j);
    return r;
}
