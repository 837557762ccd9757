/* vms.c — the management API's VM routes (GET /vms, start, stop, resources, port forwards,
 * shares, console log, create, restart, reboot, delete: docs/vm.md "The VM library"), for the
 * dashboard's VM page. The VM library's calls block with bounded waits (a stop waits for the guest
 * to shut down), so each request runs in a child process — a fork that makes one call, writes its
 * status and JSON to a pipe and exits — while the loop goes on, as GET /check does. At most
 * VM_JOBS_MAX at once; a job that overstays VM_JOB_TIMEOUT_MS is killed. A client that goes away
 * does not stop its job (a stop half done would help no one); its answer is dropped. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/str.h"
#include "child_job.h"
#include "ledged.h"
#include "log/log.h"
#include "vm/def.h"
#include "vm/host.h"
#include "vm/paths.h"

#define COMP "vm"
#define VM_JOBS_MAX 8
#define VM_JOB_TIMEOUT_MS (10 * 60 * 1000) /* a stop's timeout (at most 300 s) plus its waits */
#define VM_JOB_MAX_OUTPUT (8u << 20)
#define CONSOLE_LINES_MAX 5000

/* What a job computes: an HTTP status and a JSON body (owned by the caller). */
typedef int (*vm_call_fn)(struct ledged *d, struct hs_request *r, const struct vm_host *h,
                          json_t **ret_body, struct lerr *err);

struct vm_job {
    struct ledged *d;
    struct hs_request *req;
    vm_call_fn fn;
    struct child_job child;
    struct lbuf out;
    struct vm_job *next;
};

static int status_for(int err)
{
    switch (err) {
    case -ENOENT:
        return 404;
    case -EINVAL:
    case -ERANGE:
        return 400;
    case -EEXIST:
    case -EBUSY:
    case -ENOTCONN:
        return 409;
    case -ETIMEDOUT:
        return 504;
    default:
        return 500;
    }
}

/* ------------------------------------------------------------------ the calls (in the child) */

static const char *name_of(struct hs_request *r)
{
    return hs_request_param(r, 0);
}

static int call_list(struct ledged *d, struct hs_request *r, const struct vm_host *h, json_t **ret,
                     struct lerr *err)
{
    (void)d;
    (void)r;
    struct vm_info *v = NULL;
    size_t n = 0;
    int res = vm_host_list(h, &v, &n, err);
    if (res == -ENOENT) { /* no VMs' directory yet: no VMs */
        *ret = json_pack("{s:[]}", "vms");
        return 0;
    }
    if (res < 0)
        return res;
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, vm_info_json(&v[i]));
    vm_infos_free(v, n);
    *ret = json_pack("{s:o}", "vms", a);
    return 0;
}

static int call_info(struct ledged *d, struct hs_request *r, const struct vm_host *h, json_t **ret,
                     struct lerr *err)
{
    (void)d;
    struct vm_info i;
    int res = vm_host_info(h, name_of(r), &i, err);
    if (res < 0)
        return res;
    *ret = vm_info_json(&i);
    vm_info_clear(&i);
    return 0;
}

/* ?timeout=S of a start (until running) or a stop (until the guest shut down, then forced). */
static int timeout_of(struct hs_request *r, int dflt, struct lerr *err)
{
    const char *t = hs_request_query(r, "timeout");
    long long s = dflt;
    if (t && (lstr_to_i64(t, &s) < 0 || s < 1 || s > 300))
        return lerr_set(err, -EINVAL, "timeout: expected whole seconds 1-300, got \"%s\"", t);
    return (int)s;
}

/* The answer of a call that ends with the VM's status: {"name", "status"} (the status, taken
 * over, may be NULL), or nothing when the call failed (res < 0; the status is dropped). */
static int status_answer(int res, struct hs_request *r, json_t *st, json_t **ret)
{
    if (res < 0) {
        json_decref(st);
        return res;
    }
    *ret = json_pack("{s:s, s:o}", "name", name_of(r), "status", st ? st : json_null());
    return 0;
}

static int call_start(struct ledged *d, struct hs_request *r, const struct vm_host *h, json_t **ret,
                      struct lerr *err)
{
    (void)d;
    int t = timeout_of(r, 120, err);
    if (t < 0)
        return t;
    int res = vm_host_start(h, name_of(r), err);
    if (res < 0)
        return res;
    json_t *st = NULL;
    const char *w = hs_request_query(r, "wait");
    if (w && (!*w || lstr_eq(w, "1") || lstr_eq(w, "true")))
        res = vm_host_wait(h, name_of(r), "running", t, &st, err);
    return status_answer(res, r, st, ret);
}

static int call_stop(struct ledged *d, struct hs_request *r, const struct vm_host *h, json_t **ret,
                     struct lerr *err)
{
    (void)d;
    int t = timeout_of(r, 60, err);
    if (t < 0)
        return t;
    json_t *st = NULL;
    int res = vm_host_stop(h, name_of(r), t, &st, err);
    return status_answer(res, r, st, ret);
}

/* POST /vms/{name}/restart[?timeout=S]: stopped cleanly (forced after S, 60) when it runs, then
 * started and waited for until running (120 s), as `ledge vm restart` does. */
static int call_restart(struct ledged *d, struct hs_request *r, const struct vm_host *h,
                        json_t **ret, struct lerr *err)
{
    (void)d;
    int t = timeout_of(r, 60, err);
    if (t < 0)
        return t;
    int res = vm_host_stop(h, name_of(r), t, NULL, err);
    if (res < 0 && res != -ENOTCONN)
        return res;
    *err = (struct lerr){0};
    if ((res = vm_host_start(h, name_of(r), err)) < 0)
        return res;
    json_t *st = NULL;
    res = vm_host_wait(h, name_of(r), "running", 120, &st, err);
    return status_answer(res, r, st, ret);
}

/* POST /vms/{name}/reboot: the guest reboots from inside; its supervisor stays. */
static int call_reboot(struct ledged *d, struct hs_request *r, const struct vm_host *h,
                       json_t **ret, struct lerr *err)
{
    (void)d;
    int res = vm_host_reboot(h, name_of(r), err);
    if (res < 0)
        return res;
    *ret = json_pack("{s:s, s:b}", "name", name_of(r), "rebooting", 1);
    return 0;
}

/* DELETE /vms/{name}[?force=1]: the VM and its disk; a running one only with force (stopped
 * first, forced after 60 s), else 409. */
static int call_delete(struct ledged *d, struct hs_request *r, const struct vm_host *h,
                       json_t **ret, struct lerr *err)
{
    (void)d;
    const char *f = hs_request_query(r, "force");
    bool force = f && (!*f || lstr_eq(f, "1") || lstr_eq(f, "true"));
    int res = vm_host_delete(h, name_of(r), force, err);
    if (res < 0)
        return res;
    *ret = json_pack("{s:s, s:b}", "name", name_of(r), "deleted", 1);
    return 0;
}

static int call_ports(struct ledged *d, struct hs_request *r, const struct vm_host *h, json_t **ret,
                      struct lerr *err)
{
    (void)d;
    return vm_host_ports(h, name_of(r), ret, err);
}

/* The request's JSON object body, or -EINVAL with err saying why. */
static int body_object(struct hs_request *r, json_t **ret, struct lerr *err)
{
    size_t n = 0;
    const char *b = hs_request_body(r, &n);
    json_t *j = NULL;
    if (!n || ljson_parse(b, n, &j, NULL) < 0 || !json_is_object(j)) {
        json_decref(j);
        return lerr_set(err, -EINVAL, "expected a JSON object in the request body");
    }
    *ret = j;
    return 0;
}

/* POST /vms/{name}/ports {"spec": "[ADDR:]HOST:GUEST[/udp]"}, POST .../ports/remove likewise. */
static int port_change(struct hs_request *r, const struct vm_host *h, bool add, json_t **ret,
                       struct lerr *err)
{
    _cleanup_json_ json_t *b = NULL;
    int res = body_object(r, &b, err);
    if (res < 0)
        return res;
    const char *spec = ljson_str(b, "spec");
    if (!spec)
        return lerr_set(err, -EINVAL, "spec: expected a port forward ([ADDR:]HOST:GUEST[/udp])");
    struct vm_port p;
    bool live = false;
    res = add ? vm_host_port_add(h, name_of(r), spec, &p, &live, err)
              : vm_host_port_remove(h, name_of(r), spec, &p, &live, err);
    if (res < 0)
        return res;
    char text[128];
    *ret = json_pack("{s:s, s:b}", "port", vm_port_format(&p, text, sizeof(text)), "live", live);
    return 0;
}

static int call_port_add(struct ledged *d, struct hs_request *r, const struct vm_host *h,
                         json_t **ret, struct lerr *err)
{
    (void)d;
    return port_change(r, h, true, ret, err);
}

static int call_port_remove(struct ledged *d, struct hs_request *r, const struct vm_host *h,
                            json_t **ret, struct lerr *err)
{
    (void)d;
    return port_change(r, h, false, ret, err);
}

/* POST /vms/{name}/shares {"hostDir", "guestDir", "readOnly"}; .../shares/remove {"guestDir"
 * and/or "hostDir"}. */
static int call_share_add(struct ledged *d, struct hs_request *r, const struct vm_host *h,
                          json_t **ret, struct lerr *err)
{
    (void)d;
    _cleanup_json_ json_t *b = NULL;
    int res = body_object(r, &b, err);
    if (res < 0)
        return res;
    const char *host_dir = ljson_str(b, "hostDir"), *guest_dir = ljson_str(b, "guestDir");
    if (!host_dir || !guest_dir)
        return lerr_set(err, -EINVAL, "expected hostDir and guestDir (absolute paths)");
    char real[4096];
    bool running = false;
    res = vm_host_share_add(h, name_of(r), host_dir, guest_dir,
                            json_is_true(json_object_get(b, "readOnly")), real, sizeof(real),
                            &running, err);
    if (res < 0)
        return res;
    *ret = json_pack("{s:s, s:s, s:b}", "hostDir", real, "guestDir", guest_dir, "restartNeeded",
                     running);
    return 0;
}

static int call_share_remove(struct ledged *d, struct hs_request *r, const struct vm_host *h,
                             json_t **ret, struct lerr *err)
{
    (void)d;
    _cleanup_json_ json_t *b = NULL;
    int res = body_object(r, &b, err);
    if (res < 0)
        return res;
    const char *host_dir = ljson_str(b, "hostDir"), *guest_dir = ljson_str(b, "guestDir");
    if (!host_dir && !guest_dir)
        return lerr_set(err, -EINVAL, "expected guestDir or hostDir");
    bool running = false;
    res = vm_host_share_remove(h, name_of(r), host_dir, guest_dir, &running, err);
    if (res < 0)
        return res;
    *ret = json_pack("{s:b}", "restartNeeded", running);
    return 0;
}

/* A size in the body: a number of bytes or text vm_size_parse reads ("2G"). */
static int body_size(const json_t *b, const char *key, uint64_t *v, struct lerr *err)
{
    json_t *j = json_object_get(b, key);
    if (!j)
        return 0;
    if (json_is_integer(j) && json_integer_value(j) > 0) {
        *v = (uint64_t)json_integer_value(j);
        return 0;
    }
    if (json_is_string(j) && vm_size_parse(json_string_value(j), v) == 0)
        return 0;
    return lerr_set(err, -EINVAL, "%s: expected a size (bytes, or e.g. \"2G\")", key);
}

/* POST /vms/{name}/resources {"cpus", "memory", "disk", "autostart"}: a stopped VM's. */
static int call_resources(struct ledged *d, struct hs_request *r, const struct vm_host *h,
                          json_t **ret, struct lerr *err)
{
    (void)d;
    _cleanup_json_ json_t *b = NULL;
    int res = body_object(r, &b, err);
    if (res < 0)
        return res;
    struct vm_def def;
    if ((res = vm_host_load(h, name_of(r), &def, err)) < 0)
        return res;
    json_t *cpus = json_object_get(b, "cpus");
    if (cpus && (!json_is_integer(cpus) || json_integer_value(cpus) < 1 ||
                 json_integer_value(cpus) > VM_MAX_CPUS))
        res = lerr_set(err, -EINVAL, "cpus: expected 1-%d", VM_MAX_CPUS);
    else if (cpus)
        def.cpus = (int)json_integer_value(cpus);
    if (res == 0)
        res = body_size(b, "memory", &def.memory, err);
    if (res == 0)
        res = body_size(b, "disk", &def.disk, err);
    json_t *as = json_object_get(b, "autostart");
    if (res == 0 && as)
        def.autostart = json_is_true(as);
    if (res == 0)
        res = vm_host_set(h, &def, err);
    if (res == 0)
        *ret = vm_def_to_json(&def);
    vm_def_free(&def);
    return res;
}

static int call_console(struct ledged *d, struct hs_request *r, const struct vm_host *h,
                        json_t **ret, struct lerr *err)
{
    (void)d;
    const char *l = hs_request_query(r, "lines");
    long long lines = 200;
    if (l && (lstr_to_i64(l, &lines) < 0 || lines < 1 || lines > CONSOLE_LINES_MAX))
        return lerr_set(err, -EINVAL, "lines: expected 1-%d, got \"%s\"", CONSOLE_LINES_MAX, l);
    const char *file =
        lstr_eq(hs_request_query(r, "file"), "vmm") ? VM_FILE_VMM_LOG : VM_FILE_CONSOLE;
    char *text = NULL;
    size_t len = 0;
    int res = vm_host_log_tail(h, name_of(r), file, (size_t)lines, &text, &len, err);
    if (res == -ENOENT) {
        struct vm_def def;
        if (vm_host_load(h, name_of(r), &def, err) < 0)
            return -ENOENT;
        vm_def_free(&def);
        *ret = json_pack("{s:s, s:s}", "file", file, "text", ""); /* never booted */
        return 0;
    }
    if (res < 0)
        return res;
    /* a console carries whatever the guest wrote: what JSON cannot hold becomes '?' */
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)text[i];
        if (ch >= 0x80 || (ch < 0x20 && ch != '\n' && ch != '\t'))
            text[i] = '?';
    }
    *ret = json_pack("{s:s, s:s%}", "file", file, "text", text, len);
    free(text);
    return *ret ? 0 : -ENOMEM;
}

/* POST /vms {"name", "image" (a cached image's key), "engine" ("docker" or "oci": without an
 * image the newest cached one of that engine; without it the image's own, else docker), "cpus",
 * "memory", "disk", "autostart"}: from a cached image only (building one takes minutes:
 * `ledge vm create`). */
static int call_create(struct ledged *d, struct hs_request *r, const struct vm_host *h,
                       json_t **ret, struct lerr *err)
{
    (void)d;
    _cleanup_json_ json_t *b = NULL;
    int res = body_object(r, &b, err);
    if (res < 0)
        return res;
    const char *name = ljson_str(b, "name"), *image = ljson_str(b, "image");
    if (!name)
        return lerr_set(err, -EINVAL, "name: expected the new VM's name");
    struct vm_def def;
    if ((res = vm_def_init(&def, name, err)) < 0)
        return res;
    json_t *cpus = json_object_get(b, "cpus");
    if (cpus && json_is_integer(cpus))
        def.cpus = (int)json_integer_value(cpus);
    else if (cpus)
        res = lerr_set(err, -EINVAL, "cpus: expected a number");
    if (res == 0)
        res = body_size(b, "memory", &def.memory, err);
    if (res == 0)
        res = body_size(b, "disk", &def.disk, err);
    def.autostart = json_is_true(json_object_get(b, "autostart"));
    const char *engine = ljson_str(b, "engine");
    if (res == 0 && engine && vm_engine_parse(engine, &def.engine) < 0)
        res = lerr_set(err, -EINVAL, "engine: docker or oci");
    if (res == 0)
        res = vm_host_create(h, &def, image && *image ? image : NULL, NULL, false, engine != NULL,
                             err);
    if (res == 0)
        *ret = vm_def_to_json(&def);
    vm_def_free(&def);
    return res;
}

/* ------------------------------------------------------------------ the job */

static int child_run(int fd, void *arg)
{
    struct vm_job *j = arg;
    struct ledged *d = j->d;
    struct vm_host h = {.root = d->cfg.vm.dir, .cache = vm_cache_dir_default()};
    struct lerr err = {0};
    json_t *body = NULL;
    int res = j->fn(d, j->req, &h, &body, &err);
    int status = 200;
    if (res < 0) {
        status = status_for(res);
        json_decref(body);
        body = json_pack("{s:s}", "message", err.msg[0] ? err.msg : strerror(-res));
    }
    char *text = body ? ljson_dump(body) : NULL;
    FILE *f = fdopen(fd, "w");
    if (f) {
        fprintf(f, "%d\n%s", text ? status : 500, text ? text : "{\"message\": \"out of memory\"}");
        fflush(f);
    }
    return 0;
}

static void job_free(struct vm_job *j)
{
    for (struct vm_job **pp = &j->d->vm_jobs; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            j->d->n_vm_jobs--;
            break;
        }
    if (j->req)
        hs_request_on_abort(j->req, NULL, NULL);
    child_job_release(&j->child);
    lbuf_free(&j->out);
    free(j);
}

static void job_reply(struct vm_job *j)
{
    if (!j->req)
        return;
    struct hs_request *r = j->req;
    hs_request_on_abort(r, NULL, NULL);
    j->req = NULL;
    char *nl = j->out.data ? memchr(j->out.data, '\n', j->out.len) : NULL;
    long long status = 0;
    if (nl) {
        *nl = 0;
        if (lstr_to_i64(j->out.data, &status) < 0)
            status = 0;
    }
    if (status < 200 || status > 599) {
        hs_reply_error(r, 500, "the VM call ended without an answer");
        return;
    }
    const char *body = nl + 1;
    hs_reply(r, (int)status, "application/json", body, j->out.len - (size_t)(body - j->out.data));
}

static int on_output(void *ud, const char *data, size_t n)
{
    struct vm_job *j = ud;
    if (j->out.len + n <= VM_JOB_MAX_OUTPUT)
        lbuf_append(&j->out, data, n); /* beyond: the answer is what came */
    return 0;
}

static void on_done(void *ud, int status)
{
    (void)status; /* the answer says how the call went */
    struct vm_job *j = ud;
    job_reply(j);
    job_free(j);
}

static void on_timeout(void *ud)
{
    struct vm_job *j = ud;
    log_warn(COMP, "a VM call took longer than %d s; killed", VM_JOB_TIMEOUT_MS / 1000);
    if (j->req) {
        hs_request_on_abort(j->req, NULL, NULL);
        hs_reply_error(j->req, 504, "the VM call did not finish in time");
        j->req = NULL;
    }
    job_free(j);
}

static const struct child_job_ops job_ops = {on_output, on_done, on_timeout};

static void job_abort(struct hs_request *r, void *ud)
{
    (void)r;
    struct vm_job *j = ud;
    j->req = NULL; /* the job runs to its end; nobody hears it */
}

static void vm_job(struct hs_request *r, void *ud, vm_call_fn fn)
{
    struct ledged *d = ud;
    if (d->n_vm_jobs >= VM_JOBS_MAX) {
        hs_reply_error(r, 503, "%d VM calls are running; try again when one has ended",
                       VM_JOBS_MAX);
        return;
    }
    struct vm_job *j = calloc(1, sizeof(*j));
    if (!j) {
        hs_reply_error(r, 500, "cannot start the VM call: out of memory");
        return;
    }
    *j = (struct vm_job){.d = d, .req = r, .fn = fn, .out = LBUF_INIT};
    int e = child_job_start(&j->child, d->base, VM_JOB_TIMEOUT_MS, true, child_run, j, &job_ops, j);
    if (e < 0) {
        free(j);
        hs_reply_error(r, 500, "cannot start the VM call: %s", strerror(-e));
        return;
    }
    j->next = d->vm_jobs;
    d->vm_jobs = j;
    d->n_vm_jobs++;
    hs_request_on_abort(r, job_abort, j);
}

void vms_stop(struct ledged *d)
{
    while (d->vm_jobs)
        job_free(d->vm_jobs);
}

#define VM_ROUTE(fn, call)                                                                         \
    void fn(struct hs_request *r, void *ud)                                                        \
    {                                                                                              \
        vm_job(r, ud, call);                                                                       \
    }
VM_ROUTE(mgmt_vms_list, call_list)
VM_ROUTE(mgmt_vm_create, call_create)
VM_ROUTE(mgmt_vm_get, call_info)
VM_ROUTE(mgmt_vm_start, call_start)
VM_ROUTE(mgmt_vm_stop, call_stop)
VM_ROUTE(mgmt_vm_restart, call_restart)
VM_ROUTE(mgmt_vm_reboot, call_reboot)
VM_ROUTE(mgmt_vm_delete, call_delete)
VM_ROUTE(mgmt_vm_ports, call_ports)
VM_ROUTE(mgmt_vm_port_add, call_port_add)
VM_ROUTE(mgmt_vm_port_remove, call_port_remove)
VM_ROUTE(mgmt_vm_share_add, call_share_add)
VM_ROUTE(mgmt_vm_share_remove, call_share_remove)
VM_ROUTE(mgmt_vm_resources, call_resources)
VM_ROUTE(mgmt_vm_console, call_console)
