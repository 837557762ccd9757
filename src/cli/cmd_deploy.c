/* cmd_deploy.c — `ledge deploy FILE`: sends a manifest, prints the plan, pull progress while the
 * deployment runs, and each module's outcome. `--dry-run` prints the plan only. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "commands.h"

struct deploy_out {
    struct lbuf line;
    bool ok;
    bool got_result;
};

static void print_plan(const json_t *plan)
{
    if (json_array_size(plan) == 0) {
        printf("Plan: nothing to change.\n");
        return;
    }
    printf("Plan:\n");
    size_t i;
    json_t *s;
    json_array_foreach (plan, i, s)
        printf("  %-9s %-24s %s\n", ljson_str(s, "action"), ljson_str(s, "module"),
               ljson_str(s, "reason") ?: "");
}

/* Accepted but worth knowing (createOptions fields passed through unchecked, keys ignored). */
static void print_warnings(const json_t *warnings)
{
    size_t i;
    json_t *w;
    json_array_foreach (warnings, i, w)
        printf("warning: %s\n", json_string_value(w) ?: "");
}

static void print_outcome(const json_t *outcome)
{
    if (json_array_size(outcome) == 0)
        return;
    printf("Outcome:\n");
    size_t i;
    json_t *s;
    json_array_foreach (outcome, i, s) {
        const char *msg = ljson_str(s, "message"), *warning = ljson_str(s, "warning");
        printf("  %-24s %-9s %s%s%s\n", ljson_str(s, "module"), ljson_str(s, "action"),
               ljson_str(s, "result"), msg ? ": " : "", msg ? msg : "");
        if (warning)
            printf("  %-24s warning: %s\n", "", warning);
    }
}

static void handle_event(struct deploy_out *o, json_t *ev)
{
    const char *kind = ljson_str(ev, "event");
    if (lstr_eq(kind, "plan")) {
        print_warnings(json_object_get(ev, "warnings"));
        print_plan(json_object_get(ev, "plan"));
    } else if (lstr_eq(kind, "progress")) {
        /* ledged summarises pulls (a line per layer event, bytes once a second): few enough
         * for logs and pipes too. */
        printf("  %s: %s\n", ljson_str(ev, "module"), ljson_str(ev, "line"));
    } else if (lstr_eq(kind, "result")) {
        o->got_result = true;
        o->ok = ljson_bool(ev, "ok", false);
        print_outcome(json_object_get(ev, "outcome"));
    }
    fflush(stdout);
}

static int deploy_data(void *ud, const char *data, size_t n)
{
    struct deploy_out *o = ud;
    if (lbuf_append(&o->line, data, n) < 0)
        return -ENOMEM;
    char *nl;
    while (o->line.len && (nl = memchr(o->line.data, '\n', o->line.len))) {
        size_t len = (size_t)(nl - o->line.data);
        json_t *ev = json_loadb(o->line.data, len, 0, NULL);
        if (ev) {
            handle_event(o, ev);
            json_decref(ev);
        }
        lbuf_consume(&o->line, len + 1);
    }
    return 0;
}

int cmd_deploy(struct cli *c, int argc, char **argv)
{
    static const struct option opts[] = {
        {"dry-run", no_argument, NULL, 'n'},
        {"no-wait", no_argument, NULL, 'W'},
        {0},
    };
    bool dry = false, nowait = false;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "n", opts, NULL)) != -1) {
        if (opt == 'n')
            dry = true;
        else if (opt == 'W')
            nowait = true;
        else
            return cli_usage_error("deploy", "unknown option");
    }
    if (optind != argc - 1)
        return cli_usage_error("deploy", "expected exactly one FILE (use - for stdin)");
    const char *file = argv[optind];
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    if (strcmp(file, "-") == 0) {
        struct lbuf b = LBUF_INIT;
        char buf[65536];
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), stdin)) > 0)
            if (lbuf_append(&b, buf, n) < 0)
                return cli_fail("deployment too large");
        len = b.len;
        text = lbuf_steal(&b);
    } else {
        int r = lfs_read_file(file, 16 << 20, &text, &len);
        if (r < 0)
            return cli_fail("%s: %s", file, strerror(-r));
    }
    if (dry || nowait) {
        long status;
        json_t *body = NULL;
        if (cli_call(c, "POST", dry ? "/deployment?dryRun=1" : "/deployment", text, len, &status,
                     &body) < 0)
            return 1;
        int rc = 0;
        if (status != 200) {
            rc = cli_report_error(status, body);
        } else {
            print_warnings(json_object_get(body, "warnings"));
            print_plan(json_object_get(body, "plan"));
            if (dry)
                printf("(dry run: nothing was changed)\n");
            else
                printf("Deployment accepted; `ledge list` shows progress.\n");
        }
        json_decref(body);
        return rc;
    }
    struct deploy_out o = {.line = LBUF_INIT};
    struct lbuf err = LBUF_INIT;
    long status = 0;
    int r = cli_stream(c, "POST", "/deployment?wait=1", text, len, &status, deploy_data, &o, &err);
    int rc = 0;
    if (r < 0) {
        rc = 1;
    } else if (status >= 300) {
        json_t *j = err.len ? json_loadb(err.data, err.len, 0, NULL) : NULL;
        rc = cli_report_error(status, j);
        json_decref(j);
    } else if (!o.got_result) {
        rc = cli_fail("the connection to ledged ended before the deployment finished; "
                      "`ledge list` shows where it is");
    } else if (!o.ok) {
        rc = cli_fail("the deployment was applied but some modules failed (see above)");
    } else {
        printf("Deployment applied.\n");
    }
    lbuf_free(&o.line);
    lbuf_free(&err);
    return rc;
}
