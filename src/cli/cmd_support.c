/* cmd_support.c — `ledge support-bundle`: one tar.gz for a support request, made by the support
 * library (support/bundle.h) here, so that it works when ledged does not; with --vm NAME the
 * guest's own `ledge support-bundle` makes it and it is copied out over the channel. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/json.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "commands.h"
#include "config/config.h"
#include "support/bundle.h"
#include "vm/def.h"
#include "vm/exec.h"

static int parse_size(const char *s, size_t *ret)
{
    uint64_t v;
    if (vm_size_parse(s, &v) < 0 || v == 0 || v > SUPPORT_LOG_MAX_LIMIT)
        return -EINVAL;
    *ret = (size_t)v;
    return 0;
}

/* The bundle goes to a temporary file beside out, renamed once complete, so a bundle that
 * failed half-way never carries the name. */
static int open_output(const char *out, char *tmp, size_t size)
{
    snprintf(tmp, size, "%s.partial-XXXXXX", out);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd >= 0)
        fchmod(fd, 0600);
    return fd;
}

static void print_missing(const json_t *index)
{
    json_t *miss = json_object_get(index, "missing");
    size_t i;
    json_t *m;
    json_array_foreach (miss, i, m)
        fprintf(stderr, "  not included: %s: %s\n", ljson_str(m, "name") ?: "?",
                ljson_str(m, "reason") ?: "?");
}

int cmd_support_bundle(struct cli *c, int argc, char **argv)
{
    struct support_options o = {.ledged_stderr_fd = -1};
    const char *out = NULL, *since = NULL, *max_log = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;
        if (strcmp(a, "--since") == 0)
            dst = &since;
        else if (strcmp(a, "-o") == 0 || strcmp(a, "--output") == 0)
            dst = &out;
        else if (strcmp(a, "--config") == 0)
            dst = &o.config_path;
        else if (strcmp(a, "--max-log-size") == 0)
            dst = &max_log;
        else
            return cli_usage_error("support-bundle", "unknown argument %s", a);
        if (++i >= argc)
            return cli_usage_error("support-bundle", "%s needs a value", a);
        *dst = argv[i];
    }
    int64_t now = ltime_now_ms();
    o.now_ms = now;
    if (since && ltime_parse_since(since, now, &o.since_ms) < 0)
        return cli_usage_error("support-bundle",
                               "--since: expected a duration like 2h, RFC 3339 or unix seconds, "
                               "got \"%s\"",
                               since);
    if (max_log && parse_size(max_log, &o.max_log_bytes) < 0)
        return cli_usage_error("support-bundle",
                               "--max-log-size: expected a size like 16M (at most 1 GiB), got "
                               "\"%s\"",
                               max_log);
    char defname[64];
    if (!out) {
        time_t secs = (time_t)(now / 1000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        strftime(defname, sizeof(defname), "ledge-support-%Y%m%dT%H%M%SZ.tar.gz", &tm);
        out = defname;
    }
    bool to_stdout = strcmp(out, "-") == 0;
    char tmp[PATH_MAX];
    int fd = to_stdout ? STDOUT_FILENO : open_output(out, tmp, sizeof(tmp));
    if (fd < 0)
        return cli_fail("cannot create %s: %s", out, strerror(errno));

    int code = 0;
    if (c->vm) {
        /* The guest makes its own bundle; only the archive crosses the channel. */
        struct vm_host h;
        cli_vm_host(&h);
        char *av[10];
        size_t n = 0;
        av[n++] = "ledge";
        av[n++] = "support-bundle";
        av[n++] = "-o";
        av[n++] = "-";
        if (since) {
            av[n++] = "--since";
            av[n++] = (char *)since;
        }
        if (max_log) {
            av[n++] = "--max-log-size";
            av[n++] = (char *)max_log;
        }
        av[n] = NULL;
        struct vm_exec_request req = {.argv = av, .argc = n};
        struct vm_exec_io io = {.in_fd = -1, .out_fd = fd, .err_fd = STDERR_FILENO};
        struct lerr err = {0};
        int rc = 1;
        if (vm_exec(&h, c->vm, &req, &io, &rc, &err) < 0) {
            fprintf(stderr, "ledge: %s\n", lerr_str(&err));
            code = 1;
        } else {
            code = rc;
        }
    } else {
        o.mgmt_socket = c->socket;
        json_t *index = NULL;
        struct lerr err = {0};
        if (support_bundle_write(&o, fd, &index, &err) < 0) {
            fprintf(stderr, "ledge: support bundle: %s\n", lerr_str(&err));
            code = 1;
        } else if (!to_stdout) {
            fprintf(stderr, "ledge: %zu files (ledged %s); %lld secrets redacted\n",
                    json_array_size(json_object_get(index, "entries")),
                    ljson_str(index, "ledged") ?: "?", ljson_int(index, "redactions", 0));
            print_missing(index);
        }
        json_decref(index);
    }
    if (to_stdout)
        return code;
    if (code == 0 && (fsync(fd) < 0 || close(fd) < 0)) {
        code = cli_fail("writing %s: %s", out, strerror(errno));
        unlink(tmp);
        return code;
    }
    if (code != 0) {
        close(fd);
        unlink(tmp);
        return code;
    }
    if (rename(tmp, out) < 0) {
        code = cli_fail("cannot rename %s to %s: %s", tmp, out, strerror(errno));
        unlink(tmp);
        return code;
    }
    printf("%s\n", out);
    return 0;
}
