/* bundle.c — support bundles (bundle.h). First everything that holds secrets is read and its
 * secrets learned (the configuration, the hub's runtime file, the deployment), then every entry
 * is collected, redacted and written one at a time, so a secret learned from any of them is
 * redacted in all (logs included) and memory stays bounded by one log. */
#include "support/bundle.h"

#include <archive.h>
#include <archive_entry.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/proc.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "agent/state.h"
#include "check/check.h"
#include "config/config.h"
#include "engine/engine.h"
#include "net/http_client.h"
#include "redact.h"
#include "vm/host.h"
#include "vm/paths.h"

struct bundle {
    struct archive *a;
    char prefix[160];
    int64_t now_ms;
    size_t max_log;
    int64_t since_ms;
    struct redactor red;
    json_t *entries, *missing;
    struct ledge_config cfg;
    const char *mgmt; /* the management socket */
    bool mgmt_up;
    json_t *status; /* GET /status, when it answered */
    int write_err;
    struct lerr werr;
};

/* ------------------------------------------------------------------ entries */

static void missing(struct bundle *b, const char *name, const char *fmt, ...) _printf_(3, 4);
static void missing(struct bundle *b, const char *name, const char *fmt, ...)
{
    char why[LERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    /* Reasons can quote what a peer said: they go through the rule too. */
    _cleanup_lbuf_ struct lbuf clean = LBUF_INIT;
    redact_text(&b->red, why, strlen(why), &clean);
    json_array_append_new(
        b->missing, json_pack("{s:s, s:s}", "name", name, "reason", clean.data ? clean.data : why));
}

static int write_raw(struct bundle *b, const char *name, const char *data, size_t len)
{
    if (b->write_err)
        return b->write_err;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", b->prefix, name);
    struct archive_entry *e = archive_entry_new();
    if (!e)
        return b->write_err = -ENOMEM;
    archive_entry_set_pathname(e, path);
    archive_entry_set_size(e, (la_int64_t)len);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0600);
    archive_entry_set_mtime(e, (time_t)(b->now_ms / 1000), 0);
    int r = archive_write_header(b->a, e);
    archive_entry_free(e);
    if (r != ARCHIVE_OK) {
        lerr_set(&b->werr, -EIO, "writing the archive: %s", archive_error_string(b->a));
        return b->write_err = -EIO;
    }
    size_t off = 0;
    while (off < len) {
        la_ssize_t w = archive_write_data(b->a, data + off, len - off);
        if (w <= 0) {
            lerr_set(&b->werr, -EIO, "writing the archive: %s", archive_error_string(b->a));
            return b->write_err = -EIO;
        }
        off += (size_t)w;
    }
    return 0;
}

/* Every entry goes through the text rule on its way into the archive. */
static int add_text(struct bundle *b, const char *name, const char *data, size_t len,
                    const char *source)
{
    _cleanup_lbuf_ struct lbuf clean = LBUF_INIT;
    if (redact_text(&b->red, data ? data : "", data ? len : 0, &clean) < 0)
        return b->write_err = -ENOMEM;
    int r = write_raw(b, name, clean.data ? clean.data : "", clean.len);
    if (r == 0)
        json_array_append_new(b->entries, json_pack("{s:s, s:s, s:I}", "name", name, "source",
                                                    source, "bytes", (json_int_t)clean.len));
    return r;
}

/* Takes doc. */
static int add_json(struct bundle *b, const char *name, json_t *doc, const char *source)
{
    if (!doc) {
        missing(b, name, "out of memory");
        return 0;
    }
    redact_json(&b->red, doc);
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    json_decref(doc);
    if (!text)
        return b->write_err = -ENOMEM;
    int r = add_text(b, name, text, strlen(text), source);
    free(text);
    return r;
}

/* ------------------------------------------------------------------ bounded tails */

struct tail {
    struct lbuf buf;
    size_t max;
    uint64_t dropped;
};

static int tail_append(struct tail *t, const char *data, size_t n)
{
    if (lbuf_append(&t->buf, data, n) < 0)
        return -ENOMEM;
    if (t->buf.len > 2 * t->max) {
        size_t cut = t->buf.len - t->max;
        t->dropped += cut;
        lbuf_consume(&t->buf, cut);
    }
    return 0;
}

/* The last max bytes, from a line start, with a first line saying what was left out. */
static void tail_finish(struct tail *t)
{
    if (t->buf.len > t->max) {
        size_t cut = t->buf.len - t->max;
        t->dropped += cut;
        lbuf_consume(&t->buf, cut);
    }
    if (t->dropped && t->buf.len) {
        const char *nl = memchr(t->buf.data, '\n', t->buf.len);
        if (nl && (size_t)(nl - t->buf.data) + 1 < t->buf.len) {
            size_t skip = (size_t)(nl - t->buf.data) + 1;
            t->dropped += skip;
            lbuf_consume(&t->buf, skip);
        }
        _cleanup_lbuf_ struct lbuf o = LBUF_INIT;
        lbuf_printf(&o, "[ledge support-bundle: the first %llu bytes are left out]\n",
                    (unsigned long long)t->dropped);
        lbuf_append(&o, t->buf.data, t->buf.len);
        lbuf_free(&t->buf);
        t->buf = o;
        o = (struct lbuf)LBUF_INIT;
    }
}

/* The last max bytes of an open file. */
static int tail_fd(int fd, size_t max, struct tail *t)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return neg_errno();
    off_t start = st.st_size > (off_t)max ? st.st_size - (off_t)max : 0;
    t->dropped = (uint64_t)start;
    char buf[65536];
    for (off_t off = start;;) {
        ssize_t k = pread(fd, buf, sizeof(buf), off);
        if (k < 0)
            return neg_errno();
        if (k == 0)
            break;
        if (tail_append(t, buf, (size_t)k) < 0)
            return -ENOMEM;
        off += k;
    }
    tail_finish(t);
    return 0;
}

static int tail_file(const char *path, size_t max, struct tail *t)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return neg_errno();
    return tail_fd(fd, max, t);
}

/* ------------------------------------------------------------------ the management API */

static int mgmt_call(struct bundle *b, const char *path, long timeout_ms, long *ret_status,
                     struct lbuf *ret_body)
{
    char url[2048];
    snprintf(url, sizeof(url), "http://localhost%s", path);
    struct hc_request req = {
        .method = "GET",
        .unix_socket = b->mgmt,
        .url = url,
        .timeout_ms = timeout_ms,
        .connect_timeout_ms = 3000,
        .max_response = 64u << 20,
    };
    return hc_request_sync(&req, ret_status, ret_body);
}

static const char *api_message(const struct lbuf *body, char *buf, size_t size)
{
    _cleanup_json_ json_t *j = NULL;
    if (body->len && ljson_parse(body->data, body->len, &j, NULL) == 0 && ljson_str(j, "message"))
        snprintf(buf, size, "%s", ljson_str(j, "message"));
    else
        snprintf(buf, size, "%.200s", body->len ? body->data : "(no body)");
    return buf;
}

/* GET path as JSON: 0 with *ret, else a reason in why. */
static int mgmt_json(struct bundle *b, const char *path, long timeout_ms, json_t **ret, char *why,
                     size_t size)
{
    long status = 0;
    _cleanup_lbuf_ struct lbuf body = LBUF_INIT;
    int r = mgmt_call(b, path, timeout_ms, &status, &body);
    if (r < 0) {
        snprintf(why, size, "GET %s: %s", path, strerror(-r));
        return r;
    }
    if (status != 200) {
        char msg[512];
        snprintf(why, size, "GET %s: %ld %s", path, status, api_message(&body, msg, sizeof(msg)));
        return status == 404 ? -ENOENT : -EIO;
    }
    if (ljson_parse(body.data ? body.data : "", body.len, ret, NULL) < 0) {
        snprintf(why, size, "GET %s: the answer is not JSON", path);
        return -EBADMSG;
    }
    return 0;
}

static void add_mgmt_json(struct bundle *b, const char *name, const char *path, long timeout_ms)
{
    json_t *doc = NULL;
    char why[600];
    if (mgmt_json(b, path, timeout_ms, &doc, why, sizeof(why)) < 0)
        missing(b, name, "%s", why);
    else
        add_json(b, name, doc, path);
}

/* ------------------------------------------------------------------ learning secrets */

/* createOptions split into createOptions01.. chunks is joined back, so that the rule sees one
 * JSON document (a secret could be cut in two by a chunk boundary). */
static void join_create_options(json_t *settings)
{
    if (!json_is_object(settings))
        return;
    const char *first = ljson_str(settings, "createOptions");
    if (!first)
        return;
    _cleanup_lbuf_ struct lbuf all = LBUF_INIT;
    lbuf_puts(&all, first);
    for (int i = 1; i < 100; i++) {
        char k[32];
        snprintf(k, sizeof(k), "createOptions%02d", i);
        const char *chunk = ljson_str(settings, k);
        if (!chunk)
            break;
        lbuf_puts(&all, chunk);
        json_object_del(settings, k);
    }
    json_object_set_new(settings, "createOptions", json_string(all.data ? all.data : ""));
}

static void join_all_create_options(json_t *j, int depth)
{
    if (depth > 32)
        return;
    const char *k;
    json_t *v;
    if (json_is_object(j)) {
        json_object_foreach (j, k, v) {
            if (strcmp(k, "settings") == 0)
                join_create_options(v);
            join_all_create_options(v, depth + 1);
        }
    }
}

/* The hub's runtime file carries the device's and every module's key: read only to learn them
 * (it is never part of the bundle). */
static void learn_runtime(struct bundle *b)
{
    _cleanup_free_ char *path = lstr_printf("%s/hub/runtime.json", b->cfg.run_dir);
    _cleanup_free_ char *text = NULL;
    size_t len;
    if (!path || lfs_read_file(path, 16u << 20, &text, &len) < 0)
        return;
    _cleanup_json_ json_t *j = NULL;
    if (ljson_parse(text, len, &j, NULL) == 0)
        redact_json(&b->red, j);
    explicit_bzero(text, len);
}

/* Every deployment ledged.db keeps (the one in force and the few before it) holds secrets that
 * may have reached the logs: learn them all; the newest is kept for when ledged does not answer. */
struct learn_deployments {
    struct bundle *b;
    json_t *newest;
    int64_t newest_ms;
};

static bool learn_deployment_cb(void *ud, const char *text, int64_t applied_ms)
{
    struct learn_deployments *l = ud;
    json_t *j = NULL;
    if (ljson_parse(text, strlen(text), &j, NULL) < 0)
        return true;
    join_all_create_options(j, 0);
    redact_json(&l->b->red, j);
    if (!l->newest) {
        l->newest = j;
        l->newest_ms = applied_ms;
    } else {
        json_decref(j);
    }
    return true;
}

/* ------------------------------------------------------------------ collectors */

static void add_host(struct bundle *b)
{
    json_t *h = json_object();
    struct utsname u;
    if (uname(&u) == 0)
        json_object_set_new(h, "uname",
                            json_pack("{s:s, s:s, s:s, s:s}", "sysname", u.sysname, "release",
                                      u.release, "version", u.version, "machine", u.machine));
    _cleanup_free_ char *osr = NULL;
    if (lfs_read_file(b->cfg.check.os_release ? b->cfg.check.os_release : "/etc/os-release", 65536,
                      &osr, NULL) == 0)
        json_object_set_new(h, "osRelease", json_string(osr));
    _cleanup_free_ char *mem = NULL;
    if (lfs_read_file("/proc/meminfo", 65536, &mem, NULL) == 0) {
        /* the first lines: totals, free, available, swap */
        char *p = mem;
        for (int i = 0; i < 16 && p && *p; i++) {
            p = strchr(p, '\n');
            if (p)
                p++;
        }
        if (p)
            *p = 0;
        json_object_set_new(h, "meminfo", json_string(mem));
    }
    _cleanup_free_ char *up = NULL, *load = NULL;
    if (lfs_read_file("/proc/uptime", 256, &up, NULL) == 0)
        json_object_set_new(h, "uptime", json_string(up));
    if (lfs_read_file("/proc/loadavg", 256, &load, NULL) == 0)
        json_object_set_new(h, "loadavg", json_string(load));
    json_t *disks = json_object();
    const char *paths[] = {b->cfg.state_dir, b->cfg.run_dir, "/var/lib/docker", "/tmp"};
    for (size_t i = 0; i < ARRAY_SIZE(paths); i++) {
        struct statvfs sv;
        if (paths[i] && statvfs(paths[i], &sv) == 0)
            json_object_set_new(disks, paths[i],
                                json_pack("{s:I, s:I, s:I}", "totalBytes",
                                          (json_int_t)((uint64_t)sv.f_blocks * sv.f_frsize),
                                          "availableBytes",
                                          (json_int_t)((uint64_t)sv.f_bavail * sv.f_frsize),
                                          "freeInodes", (json_int_t)sv.f_favail));
    }
    json_object_set_new(h, "disks", disks);
    json_object_set_new(h, "ledgeVersion", json_string(LEDGE_VERSION));
    /* The installed packages that matter, when this is a Debian system. */
    char *argv[] = {"dpkg-query",
                    "-W",
                    "-f",
                    "${Package} ${Version} ${db:Status-Abbrev}\\n",
                    "ledge",
                    "docker.io",
                    "docker-ce",
                    "moby-engine",
                    "containerd",
                    "qemu-system-x86",
                    "qemu-system-arm",
                    NULL};
    struct lbuf out = LBUF_INIT;
    out.max = 65536;
    int st;
    if (lproc_run(&(struct lproc){.argv = argv, .in_fd = -1, .out = &out, .timeout_ms = 10000},
                  &st) == 0 &&
        out.len)
        json_object_set_new(h, "packages", json_string(out.data));
    lbuf_free(&out);
    add_json(b, "host.json", h, "the host");
}

static void add_config(struct bundle *b, int load_status, const char *path,
                       const struct lstrv *errors)
{
    json_t *doc = config_to_json(&b->cfg, true);
    if (!doc) {
        missing(b, "config.json", "out of memory");
        return;
    }
    json_object_set_new(doc, "_file", json_string(path));
    json_object_set_new(doc, "_loaded",
                        json_string(load_status == 0   ? "from the file"
                                    : load_status == 1 ? "defaults (no file)"
                                                       : "defaults (the file did not load)"));
    if (load_status < 0) {
        json_t *errs = json_array();
        for (size_t i = 0; errors && i < errors->n; i++)
            json_array_append_new(errs, json_string(errors->v[i]));
        json_object_set_new(doc, "_errors", errs);
        _cleanup_free_ char *text = NULL;
        size_t len;
        if (lfs_read_file(path, 1u << 20, &text, &len) == 0)
            add_text(b, "config.yaml", text, len, path);
    }
    add_json(b, "config.json", doc, path);
}

/* ledged's own log: the file its stderr is, else the journal. */
static int journal_tail(struct bundle *b, const char *unit, struct tail *t, char *why, size_t size)
{
    if (access("/run/systemd/system", F_OK) < 0 && access("/var/log/journal", F_OK) < 0) {
        snprintf(why, size, "no journal on this system (systemd is not running)");
        return -ENOENT;
    }
    _cleanup_close_ int mfd = memfd_create("ledge-journal", MFD_CLOEXEC);
    if (mfd < 0) {
        snprintf(why, size, "memfd_create: %s", strerror(errno));
        return neg_errno();
    }
    char since[32] = "";
    if (b->since_ms > 0)
        snprintf(since, sizeof(since), "@%lld", (long long)(b->since_ms / 1000));
    char *argv[16];
    int n = 0;
    argv[n++] = "journalctl";
    argv[n++] = "--no-pager";
    argv[n++] = "-q";
    argv[n++] = "-o";
    argv[n++] = "short-iso-precise";
    argv[n++] = "-u";
    argv[n++] = (char *)unit;
    if (*since) {
        argv[n++] = "--since";
        argv[n++] = since;
    }
    argv[n] = NULL;
    struct lbuf err = LBUF_INIT;
    err.max = 4096;
    int st = 0;
    int r = lproc_run_ok(
        &(struct lproc){.argv = argv, .in_fd = -1, .out_fd = mfd, .err = &err, .timeout_ms = 60000},
        &st);
    if (r < 0) {
        char s[64];
        snprintf(why, size, "journalctl -u %s: %s%s%s", unit,
                 r == -ENOENT ? "not installed" : lproc_status_str(st, s, sizeof(s)),
                 err.len ? ": " : "", err.len ? err.data : "");
        lbuf_free(&err);
        return r;
    }
    lbuf_free(&err);
    return tail_fd(mfd, b->max_log, t);
}

static void add_ledged_log(struct bundle *b, int stderr_fd)
{
    struct tail t = {.max = b->max_log};
    char why[600] = "";
    char source[PATH_MAX + 32] = "";
    int r = -ENOENT;
    /* ledged's stderr, through /proc: opened anew for reading (ledged's own descriptor is
     * write-only), which works for a file deleted since too. */
    char link[64] = "";
    if (stderr_fd >= 0)
        snprintf(link, sizeof(link), "/proc/self/fd/%d", stderr_fd);
    else if (b->status && ljson_int(b->status, "pid", 0) > 0)
        snprintf(link, sizeof(link), "/proc/%lld/fd/2", ljson_int(b->status, "pid", 0));
    if (*link) {
        char target[PATH_MAX];
        struct stat st;
        ssize_t k = readlink(link, target, sizeof(target) - 1);
        if (k > 0) {
            target[k] = 0;
            if (stat(link, &st) == 0 && S_ISREG(st.st_mode)) {
                _cleanup_close_ int fd = open(link, O_RDONLY | O_CLOEXEC);
                r = fd < 0 ? neg_errno() : tail_fd(fd, b->max_log, &t);
                snprintf(source, sizeof(source), "%s (ledged's stderr)", target);
                if (r < 0)
                    snprintf(why, sizeof(why), "%.400s: %s", target, strerror(-r));
            }
        } else if (errno == EACCES || errno == EPERM) {
            snprintf(why, sizeof(why), "%s: %s (run as root); ", link, strerror(errno));
        }
    }
    if (r < 0 && !*source) {
        size_t used = strlen(why);
        r = journal_tail(b, "ledged.service", &t, why + used, sizeof(why) - used);
        snprintf(source, sizeof(source), "journalctl -u ledged.service");
    }
    if (r < 0)
        missing(b, "ledged.log", "%s", *why ? why : strerror(-r));
    else
        add_text(b, "ledged.log", t.buf.data, t.buf.len, source);
    lbuf_free(&t.buf);
}

struct logs_stream {
    struct tail t;
};

static int logs_on_data(void *ud, const char *data, size_t n)
{
    struct logs_stream *s = ud;
    return tail_append(&s->t, data, n);
}

/* Module names come from the engine or the API: keep them to what names a file. */
static bool safe_name(const char *name)
{
    if (!name || !*name || strlen(name) > 128 || name[0] == '.')
        return false;
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.' && *p != '$')
            return false;
    return true;
}

static void add_module_logs_api(struct bundle *b, const json_t *modules)
{
    size_t i, done = 0;
    json_t *m;
    json_array_foreach (modules, i, m) {
        const char *name = ljson_str(m, "name");
        char entry[256];
        if (!safe_name(name))
            continue;
        snprintf(entry, sizeof(entry), "modules/%s.log", name);
        if (++done > SUPPORT_MAX_MODULES) {
            missing(b, entry, "more than %d modules", SUPPORT_MAX_MODULES);
            break;
        }
        _cleanup_lbuf_ struct lbuf enc = LBUF_INIT;
        lstr_url_encode(name, strlen(name), &enc);
        char path[512];
        if (b->since_ms > 0)
            snprintf(path, sizeof(path), "/modules/%s/logs?timestamps=true&since=%lld", enc.data,
                     (long long)(b->since_ms / 1000));
        else
            snprintf(path, sizeof(path), "/modules/%s/logs?timestamps=true", enc.data);
        char url[600];
        snprintf(url, sizeof(url), "http://localhost%s", path);
        struct logs_stream s = {.t = {.max = b->max_log}};
        struct hc_request req = {
            .method = "GET",
            .unix_socket = b->mgmt,
            .url = url,
            .timeout_ms = SUPPORT_LOGS_TIMEOUT_MS,
            .connect_timeout_ms = 3000,
            .on_data = logs_on_data,
            .ud = &s,
        };
        long status = 0;
        int r = hc_request_sync(&req, &status, NULL);
        tail_finish(&s.t);
        if (r < 0 && !(r == -ETIMEDOUT && s.t.buf.len))
            missing(b, entry, "GET %s: %s", path, strerror(-r));
        else if (status != 200)
            missing(b, entry, "GET %s: %ld %s", path, status,
                    s.t.buf.len ? s.t.buf.data : "(no body)");
        else
            add_text(b, entry, s.t.buf.data, s.t.buf.len, path);
        lbuf_free(&s.t.buf);
    }
}

/* ---- the engine layer directly (ledged not answering) ---- */

struct eng_call {
    bool done;
    int r;
    struct lerr err;
    struct engine_version v;
    struct engine_container *list;
    size_t n;
    struct tail *t;
};

static void eng_version_cb(void *ud, int result, const struct engine_version *v,
                           const struct lerr *err)
{
    struct eng_call *c = ud;
    c->done = true;
    c->r = result;
    if (result >= 0 && v)
        c->v = *v;
    else if (err)
        c->err = *err;
}

static void eng_list_cb(void *ud, int result, const struct engine_container *v, size_t n,
                        const struct lerr *err)
{
    struct eng_call *c = ud;
    c->done = true;
    c->r = result;
    if (result < 0) {
        if (err)
            c->err = *err;
        return;
    }
    c->list = calloc(n ? n : 1, sizeof(*c->list));
    for (size_t i = 0; c->list && i < n; i++) {
        c->list[i].id = v[i].id ? strdup(v[i].id) : NULL;
        c->list[i].name = v[i].name ? strdup(v[i].name) : NULL;
        c->list[i].labels = json_deep_copy(v[i].labels);
        c->list[i].state = v[i].state;
    }
    c->n = c->list ? n : 0;
}

static int eng_log_data(void *ud, int stream, const char *data, size_t n)
{
    struct eng_call *c = ud;
    return tail_append(c->t, data, n);
}

static void eng_done_cb(void *ud, int result, const struct lerr *err)
{
    struct eng_call *c = ud;
    c->done = true;
    c->r = result;
    if (result < 0 && err)
        c->err = *err;
}

static json_t *engine_version_json(const struct engine_version *v)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:s, s:s}", "product", v->product,
                     "version", v->version, "apiVersion", v->api_version, "minApiVersion",
                     v->min_api_version, "os", v->os, "arch", v->arch, "kernel", v->kernel,
                     "logRotationDefault", v->log_rotation_default, "defaultLogDriver",
                     v->default_log_driver, "dataRoot", v->data_root);
}

/* The container engine's facts, and (when ledged does not answer) its modules' logs. */
static void add_engine(struct bundle *b, bool module_logs)
{
    const struct engine_ops *ops = engine_ops_find(b->cfg.engine.type);
    if (!ops || ops->runs != ENGINE_RUNS_IMAGES) {
        missing(b, "engine.json", "engine.type \"%s\" is not a container engine of this ledge",
                b->cfg.engine.type);
        return;
    }
    struct event_base *base = event_base_new();
    struct engine *e = NULL;
    struct engine_config ec = {
        .uri = b->cfg.engine.uri,
        .instance = b->cfg.device.id,
        .state_dir = b->cfg.state_dir,
        .request_timeout_ms = SUPPORT_CALL_TIMEOUT_MS,
        .pull_timeout_ms = SUPPORT_CALL_TIMEOUT_MS,
    };
    if (!base || engine_new(ops, base, &ec, &e) < 0) {
        missing(b, "engine.json", "cannot set up the %s engine client", ops->name);
        goto out;
    }
    struct eng_call vc = {0};
    int r = ops->version(e, eng_version_cb, &vc);
    if (r == 0)
        r = engine_wait(e, &vc.done);
    if (r < 0 || vc.r < 0) {
        missing(b, "engine.json", "%s at %s: %s", ops->name, b->cfg.engine.uri,
                r < 0 ? strerror(-r) : lerr_str(&vc.err));
        goto out;
    }
    json_t *doc = engine_version_json(&vc.v);
    if (doc) {
        json_object_set_new(doc, "engine", json_string(ops->name));
        json_object_set_new(doc, "uri", json_string(b->cfg.engine.uri));
    }
    add_json(b, "engine.json", doc, "the engine's version and info");
    if (!module_logs)
        goto out;
    struct eng_call lc = {0};
    r = ops->list(e, eng_list_cb, &lc);
    if (r == 0)
        r = engine_wait(e, &lc.done);
    if (r < 0 || lc.r < 0) {
        missing(b, "modules/", "listing the engine's modules: %s",
                r < 0 ? strerror(-r) : lerr_str(&lc.err));
        engine_containers_free(lc.list, lc.n);
        goto out;
    }
    for (size_t i = 0; i < lc.n && i < SUPPORT_MAX_MODULES; i++) {
        const char *name = engine_label(&lc.list[i], ENGINE_LABEL_MODULE);
        if (!safe_name(name) || !lc.list[i].id)
            continue;
        char entry[256];
        snprintf(entry, sizeof(entry), "modules/%s.log", name);
        struct tail t = {.max = b->max_log};
        struct eng_call gc = {.t = &t};
        struct engine_logs_options lo = {.tail = -1, .timestamps = true, .since_ms = b->since_ms};
        struct engine_logs *l = ops->logs(e, lc.list[i].id, &lo, eng_log_data, eng_done_cb, &gc);
        r = l ? engine_wait(e, &gc.done) : -EIO;
        tail_finish(&t);
        if (r < 0 || gc.r < 0)
            missing(b, entry, "the engine's logs: %s", r < 0 ? strerror(-r) : lerr_str(&gc.err));
        else
            add_text(b, entry, t.buf.data, t.buf.len, "the engine (ledged not answering)");
        lbuf_free(&t.buf);
    }
    engine_containers_free(lc.list, lc.n);
out:
    engine_free(e);
    if (base)
        event_base_free(base);
}

/* Process modules' log files (the hub's among them), read directly when ledged does not
 * answer: the current file and the rotated ones, oldest first, whole (since is not applied). */
static void add_process_logs_files(struct bundle *b)
{
    _cleanup_free_ char *dir = lstr_printf("%s/process", b->cfg.state_dir);
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len < 5 || strcmp(de->d_name + len - 4, ".log") != 0 || de->d_name[0] == '.')
            continue;
        char name[256];
        snprintf(name, sizeof(name), "%.*s", (int)(len - 4), de->d_name);
        if (!safe_name(name))
            continue;
        struct tail t = {.max = b->max_log};
        for (int k = 9; k >= 0; k--) {
            char p[PATH_MAX];
            if (k)
                snprintf(p, sizeof(p), "%s/%s.%d", dir, de->d_name, k);
            else
                snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
            struct tail one = {.max = b->max_log};
            if (tail_file(p, b->max_log, &one) == 0)
                tail_append(&t, one.buf.data ? one.buf.data : "", one.buf.len);
            lbuf_free(&one.buf);
        }
        tail_finish(&t);
        char entry[300], source[PATH_MAX];
        snprintf(entry, sizeof(entry), "modules/%s.log", name);
        snprintf(source, sizeof(source), "%s/%s* (ledged not answering)", dir, de->d_name);
        add_text(b, entry, t.buf.data, t.buf.len, source);
        lbuf_free(&t.buf);
    }
    closedir(d);
}

static void add_hub_status_direct(struct bundle *b)
{
    const char *sock = b->cfg.hub.control_socket;
    struct hc_request req = {
        .method = "GET",
        .unix_socket = sock,
        .url = "http://localhost/status",
        .timeout_ms = SUPPORT_CALL_TIMEOUT_MS,
        .connect_timeout_ms = 3000,
    };
    long status = 0;
    _cleanup_lbuf_ struct lbuf body = LBUF_INIT;
    json_t *doc = NULL;
    int r = sock ? hc_request_sync(&req, &status, &body) : -ENOENT;
    if (r < 0 || status != 200 || ljson_parse(body.data ? body.data : "", body.len, &doc, NULL) < 0)
        missing(b, "hub-status.json", "the hub's control socket %s: %s", sock ? sock : "(none)",
                r < 0           ? strerror(-r)
                : status != 200 ? "not 200"
                                : "not JSON");
    else
        add_json(b, "hub-status.json", doc, sock);
}

static void add_check_local(struct bundle *b, int config_status, const char *config_path,
                            const struct lstrv *errors)
{
    struct check_inputs in = {
        .config = &b->cfg,
        .config_path = config_path,
        .config_status = config_status,
        .config_errors = errors,
        .no_deployment = "ledged is not answering",
    };
    struct check_results res;
    if (check_run_all(&in, NULL, &res) < 0) {
        missing(b, "check.json", "out of memory");
        return;
    }
    json_t *doc = check_results_json(&res, config_path, NULL, false);
    check_results_clear(&res);
    add_json(b, "check.json", doc, "the check table, run here (ledged not answering)");
}

static void add_vms(struct bundle *b, const char *vm_dir, const char *vm_cache)
{
    struct vm_host h = {.root = vm_dir, .cache = vm_cache};
    struct vm_info *v = NULL;
    size_t n = 0;
    struct lerr err = {0};
    if (access(vm_dir, F_OK) < 0)
        return; /* no VMs on this host */
    if (vm_host_list(&h, &v, &n, &err) < 0) {
        missing(b, "vms/", "%s", lerr_str(&err));
        return;
    }
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, vm_info_json(&v[i]));
    add_json(b, "vms/list.json", list, vm_dir);
    for (size_t i = 0; i < n && i < SUPPORT_MAX_MODULES; i++) {
        static const char *const files[] = {VM_FILE_CONSOLE, VM_FILE_VMM_LOG};
        for (size_t f = 0; f < ARRAY_SIZE(files); f++) {
            char entry[256], source[PATH_MAX];
            snprintf(entry, sizeof(entry), "vms/%s/%s", v[i].def.name, files[f]);
            snprintf(source, sizeof(source), "%s/%s/%s", vm_dir, v[i].def.name, files[f]);
            struct tail t = {.max = b->max_log};
            int r = tail_file(source, b->max_log, &t);
            if (r < 0 && r != -ENOENT)
                missing(b, entry, "%s: %s", source, strerror(-r));
            else if (r == 0)
                add_text(b, entry, t.buf.data, t.buf.len, source);
            lbuf_free(&t.buf);
        }
    }
    vm_infos_free(v, n);
}

static void add_update_files(struct bundle *b)
{
    static const char *const files[] = {"journal.json", "history.log"};
    for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
        char path[PATH_MAX], entry[64];
        snprintf(path, sizeof(path), "%s/update/%s", b->cfg.state_dir, files[i]);
        snprintf(entry, sizeof(entry), "update/%s", files[i]);
        struct tail t = {.max = b->max_log};
        if (tail_file(path, b->max_log, &t) == 0)
            add_text(b, entry, t.buf.data, t.buf.len, path);
        lbuf_free(&t.buf);
    }
}

/* ------------------------------------------------------------------ the bundle */

static la_ssize_t fd_write_cb(struct archive *a, void *ud, const void *buf, size_t n)
{
    int fd = *(int *)ud;
    return lfs_write_all(fd, buf, n) == 0 ? (la_ssize_t)n : -1;
}

int support_bundle_write(const struct support_options *o, int fd, json_t **ret_index,
                         struct lerr *err)
{
    struct bundle B = {0}, *b = &B;
    redactor_init(&b->red);
    b->now_ms = o->now_ms ? o->now_ms : ltime_now_ms();
    b->since_ms = o->since_ms;
    b->max_log =
        o->max_log_bytes ? MIN(o->max_log_bytes, SUPPORT_LOG_MAX_LIMIT) : SUPPORT_LOG_MAX_DEFAULT;
    b->entries = json_array();
    b->missing = json_array();
    int r = 0;
    struct learn_deployments saved = {.b = b};
    int saved_r = 0;
    json_t *deployment = NULL;
    char ledged_config[PATH_MAX] = "";
    const char *config_path = o->config_path;
    if (!config_path && o->mgmt_socket) {
        /* Without a configuration file named, the one ledged runs with (when it answers). */
        b->mgmt = o->mgmt_socket;
        json_t *si = NULL;
        char ignored[600];
        if (mgmt_json(b, "/systeminfo", SUPPORT_CALL_TIMEOUT_MS, &si, ignored, sizeof(ignored)) ==
                0 &&
            ljson_str(si, "configFile") && *ljson_str(si, "configFile"))
            snprintf(ledged_config, sizeof(ledged_config), "%s", ljson_str(si, "configFile"));
        json_decref(si);
        if (*ledged_config)
            config_path = ledged_config;
    }
    if (!config_path)
        config_path = CONFIG_DEFAULT_PATH;
    _cleanup_lstrv_ struct lstrv cfg_errors = LSTRV_INIT;
    int cfg_status = config_load_file_or_defaults(config_path, &b->cfg, &cfg_errors);
    if (cfg_status < 0 && config_defaults(&b->cfg) < 0) {
        r = lerr_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    if (!b->entries || !b->missing) {
        r = lerr_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    b->mgmt = o->mgmt_socket ? o->mgmt_socket : b->cfg.management.socket;

    /* 1. Learn every secret before anything is written. */
    if (b->cfg.device.key)
        redactor_learn(&b->red, b->cfg.device.key);
    learn_runtime(b);
    saved_r = state_read_deployments(b->cfg.state_dir, learn_deployment_cb, &saved);
    char why[600] = "";
    json_t *status = NULL;
    int sr = mgmt_json(b, "/status", SUPPORT_CALL_TIMEOUT_MS, &status, why, sizeof(why));
    b->mgmt_up = sr == 0;
    b->status = status;
    char ledged_state[700];
    snprintf(ledged_state, sizeof(ledged_state), "%s%s",
             b->mgmt_up ? "answered" : "not answering: ", b->mgmt_up ? "" : why);
    char dep_why[600] = "";
    if (b->mgmt_up && mgmt_json(b, "/deployment", SUPPORT_CALL_TIMEOUT_MS, &deployment, dep_why,
                                sizeof(dep_why)) == 0) {
        join_all_create_options(deployment, 0);
        redact_json(&b->red, deployment); /* learns; written below */
    }

    /* 2. The archive. */
    b->a = archive_write_new();
    if (!b->a || archive_write_add_filter_gzip(b->a) != ARCHIVE_OK ||
        archive_write_set_format_pax_restricted(b->a) != ARCHIVE_OK ||
        archive_write_set_bytes_in_last_block(b->a, 1) != ARCHIVE_OK ||
        archive_write_open(b->a, &fd, NULL, fd_write_cb, NULL) != ARCHIVE_OK) {
        r = lerr_set(err, -EIO, "cannot start the archive: %s",
                     b->a ? archive_error_string(b->a) : "out of memory");
        json_decref(deployment);
        goto out;
    }
    char ts[32];
    time_t secs = (time_t)(b->now_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(ts, sizeof(ts), "%Y%m%dT%H%M%SZ", &tm);
    const char *dev = b->cfg.device.id ? b->cfg.device.id : "device";
    if (ljson_str(status, "deviceId"))
        dev = ljson_str(status, "deviceId");
    snprintf(b->prefix, sizeof(b->prefix), "ledge-support-%.64s-%s",
             safe_name(dev) ? dev : "device", ts);

    /* 3. The entries. */
    add_host(b);
    add_config(b, cfg_status, config_path, &cfg_errors);
    if (b->mgmt_up) {
        add_json(b, "status.json", json_incref(status), "/status");
        add_mgmt_json(b, "systeminfo.json", "/systeminfo", SUPPORT_CALL_TIMEOUT_MS);
        if (deployment)
            add_json(b, "deployment.json", deployment, "/deployment (createOptions chunks joined)");
        else
            missing(b, "deployment.json", "%s", dep_why);
        deployment = NULL;
        json_t *modules = NULL;
        if (mgmt_json(b, "/modules", SUPPORT_CALL_TIMEOUT_MS, &modules, why, sizeof(why)) == 0) {
            json_t *list = json_object_get(modules, "modules");
            add_module_logs_api(b, list);
            add_json(b, "modules.json", modules, "/modules");
        } else {
            missing(b, "modules.json", "%s", why);
        }
        add_mgmt_json(b, "check.json", "/check", SUPPORT_CHECK_TIMEOUT_MS);
        add_mgmt_json(b, "hub-status.json", "/hub/status", SUPPORT_CALL_TIMEOUT_MS);
        add_engine(b, false);
    } else {
        missing(b, "status.json", "%s", ledged_state);
        if (saved.newest) {
            add_json(b, "deployment.json", saved.newest,
                     "the newest deployment in ledged.db (ledged not answering)");
            saved.newest = NULL;
        } else {
            missing(b, "deployment.json", "ledged is not answering and %s/ledged.db: %s",
                    b->cfg.state_dir, saved_r < 0 ? strerror(-saved_r) : "no deployment");
        }
        add_check_local(b, cfg_status, config_path, &cfg_errors);
        add_hub_status_direct(b);
        add_engine(b, true);
        add_process_logs_files(b);
    }
    add_ledged_log(b, o->ledged_stderr_fd);
    const char *vm_dir = o->vm_dir ? o->vm_dir : b->cfg.vm.dir ? b->cfg.vm.dir : vm_dir_default();
    add_vms(b, vm_dir, o->vm_cache ? o->vm_cache : vm_cache_dir_default());
    add_update_files(b);

    /* 4. The index, last: it knows what went missing. */
    char created[LTIME_RFC3339_MAX], since[LTIME_RFC3339_MAX];
    json_t *index =
        json_pack("{s:s, s:s?, s:s, s:s, s:s, s:O, s:O, s:I, s:s}", "created",
                  ltime_format_rfc3339(b->now_ms, created), "since",
                  b->since_ms > 0 ? ltime_format_rfc3339(b->since_ms, since) : NULL, "device", dev,
                  "version", LEDGE_VERSION, "ledged", ledged_state, "entries", b->entries,
                  "missing", b->missing, "redactions", (json_int_t)b->red.count, "rule",
                  "docs/support-bundle.md \"What is redacted\"");
    json_t *index_copy = json_deep_copy(index);
    add_json(b, "index.json", index, "this bundle");
    if (b->write_err) {
        json_decref(index_copy);
        r = b->write_err == -ENOMEM ? lerr_set(err, -ENOMEM, "out of memory")
                                    : lerr_set(err, b->write_err, "%s", lerr_str(&b->werr));
        goto out;
    }
    if (archive_write_close(b->a) != ARCHIVE_OK) {
        json_decref(index_copy);
        r = lerr_set(err, -EIO, "finishing the archive: %s", archive_error_string(b->a));
        goto out;
    }
    if (ret_index)
        *ret_index = index_copy;
    else
        json_decref(index_copy);
out:
    json_decref(saved.newest);
    json_decref(deployment);
    if (b->a)
        archive_write_free(b->a);
    json_decref(b->status);
    json_decref(b->entries);
    json_decref(b->missing);
    config_free(&b->cfg);
    redactor_clear(&b->red);
    return r;
}
