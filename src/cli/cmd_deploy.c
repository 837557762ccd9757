/* cmd_deploy.c — `ledge deploy FILE`: sends a manifest, prints the plan, pull progress while the
 * deployment runs, each module's outcome, and whether it applied or was rolled back (atomic
 * deployments, docs/deployments.md). `--dry-run` prints the plan only; `--rollback` goes back to
 * the previous deployment; `ledge deployments` prints the history. */
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
#include "base/timeutil.h"
#include "commands.h"

struct deploy_out {
    struct lbuf line;
    bool ok;
    bool got_result;
    json_t *deployment; /* the result's "deployment" */
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
        json_decref(o->deployment);
        o->deployment = json_incref(json_object_get(ev, "deployment"));
        json_t *modules = json_object_get(o->deployment, "modules");
        if (json_array_size(modules)) {
            printf("Failed:\n");
            size_t i;
            json_t *m;
            json_array_foreach (modules, i, m)
                printf("  %-24s %s\n", ljson_str(m, "module") ?: "", ljson_str(m, "reason") ?: "");
        }
        json_t *rb = json_object_get(json_object_get(ev, "rollback"), "outcome");
        if (rb) {
            printf("Rollback:\n");
            if (json_array_size(rb) == 0)
                printf("  nothing to change\n");
            size_t i;
            json_t *s;
            json_array_foreach (rb, i, s) {
                const char *msg = ljson_str(s, "message");
                printf("  %-24s %-9s %s%s%s\n", ljson_str(s, "module"), ljson_str(s, "action"),
                       ljson_str(s, "result"), msg ? ": " : "", msg ? msg : "");
            }
        }
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

/* The result's last word, and the exit code: 0 only when it applied. */
static int deploy_verdict(const struct deploy_out *o)
{
    const json_t *d = o->deployment;
    long long id = (long long)ljson_int(d, "id", 0);
    const char *outcome = ljson_str(d, "outcome");
    const char *reason = ljson_str(d, "reason");
    char prev[32] = "the previous deployment";
    if (json_is_integer(json_object_get(d, "previous")))
        snprintf(prev, sizeof(prev), "deployment %lld", (long long)ljson_int(d, "previous", 0));
    if (o->ok) {
        printf("Deployment applied (id %lld).\n", id);
        return 0;
    }
    if (lstr_eq(outcome, "rolled-back")) {
        if (json_is_null(json_object_get(d, "previous")))
            return cli_fail("deployment %lld failed and was rolled back (nothing was deployed "
                            "before it, so what it created is removed): %s",
                            id, reason ?: "see above");
        return cli_fail("deployment %lld failed and was rolled back to %s: %s", id, prev,
                        reason ?: "see above");
    }
    if (lstr_eq(outcome, "rollback-failed"))
        return cli_fail("deployment %lld failed, and restoring %s failed too: %s", id, prev,
                        reason ?: "see above");
    if (outcome)
        return cli_fail("deployment %lld failed and is left as it is (no rollback): %s", id,
                        reason ?: "see above");
    return cli_fail("the deployment was applied but some modules failed (see above)");
}

int cmd_deploy(struct cli *c, int argc, char **argv)
{
    static const struct option opts[] = {
        {"dry-run", no_argument, NULL, 'n'},       {"no-wait", no_argument, NULL, 'W'},
        {"no-rollback", no_argument, NULL, 'R'},   {"rollback", no_argument, NULL, 'b'},
        {"timeout", required_argument, NULL, 't'}, {0},
    };
    bool dry = false, nowait = false, no_rollback = false, rollback = false;
    const char *timeout = NULL;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "n", opts, NULL)) != -1) {
        if (opt == 'n')
            dry = true;
        else if (opt == 'W')
            nowait = true;
        else if (opt == 'R')
            no_rollback = true;
        else if (opt == 'b')
            rollback = true;
        else if (opt == 't')
            timeout = optarg;
        else
            return cli_usage_error("deploy", "unknown option");
    }
    long long to = 0;
    if (rollback && optind == argc - 1 && (lstr_to_i64(argv[optind], &to) < 0 || to <= 0))
        return cli_usage_error("deploy", "--rollback takes no FILE, only the id of a deployment "
                                         "of the history (`ledge deployments` lists them)");
    if (rollback ? optind < argc - 1 : optind != argc - 1)
        return cli_usage_error("deploy", rollback ? "--rollback takes at most one deployment id"
                                                  : "expected exactly one FILE (use - for stdin)");
    int64_t timeout_ms = 0;
    if (timeout && (ltime_parse_duration_ms(timeout, &timeout_ms) < 0 || timeout_ms < 1000))
        return cli_usage_error("deploy", "--timeout: expected a duration of 1s or more (e.g. 90s)");
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    if (rollback) {
        /* no body: ledged has the previous deployment */
    } else if (strcmp(argv[optind], "-") == 0) {
        struct lbuf b = LBUF_INIT;
        char buf[65536];
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), stdin)) > 0)
            if (lbuf_append(&b, buf, n) < 0)
                return cli_fail("deployment too large");
        len = b.len;
        text = lbuf_steal(&b);
    } else {
        const char *file = argv[optind];
        int r = lfs_read_file(file, 16 << 20, &text, &len);
        if (r < 0)
            return cli_fail("%s: %s", file, strerror(-r));
    }
    char query[160];
    snprintf(query, sizeof(query), "%s?%s%s", rollback ? "/deployment/rollback" : "/deployment",
             dry      ? "dryRun=1"
             : nowait ? "wait=0"
                      : "wait=1",
             no_rollback ? "&rollback=0" : "");
    if (to) {
        size_t n = strlen(query);
        snprintf(query + n, sizeof(query) - n, "&to=%lld", to);
    }
    if (timeout) {
        size_t n = strlen(query);
        snprintf(query + n, sizeof(query) - n, "&timeout=%lldms", (long long)timeout_ms);
    }
    if (dry || nowait) {
        long status;
        json_t *body = NULL;
        if (cli_call(c, "POST", query, text, len, &status, &body) < 0)
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
                printf("Deployment %lld accepted; `ledge list` and `ledge deployments` show "
                       "progress.\n",
                       (long long)ljson_int(json_object_get(body, "deployment"), "id", 0));
        }
        json_decref(body);
        return rc;
    }
    struct deploy_out o = {.line = LBUF_INIT};
    struct lbuf err = LBUF_INIT;
    long status = 0;
    int r = cli_stream(c, "POST", query, text, len, &status, deploy_data, &o, &err);
    int rc = 0;
    if (r < 0) {
        rc = 1;
    } else if (status >= 300) {
        json_t *j = err.len ? json_loadb(err.data, err.len, 0, NULL) : NULL;
        rc = cli_report_error(status, j);
        json_decref(j);
    } else if (!o.got_result) {
        rc = cli_fail("the connection to ledged ended before the deployment finished; "
                      "`ledge deployments` shows where it is");
    } else {
        rc = deploy_verdict(&o);
    }
    json_decref(o.deployment);
    lbuf_free(&o.line);
    lbuf_free(&err);
    return rc;
}

/* `ledge deployments [--json]`: the last deployments, newest first. */
int cmd_deployments(struct cli *c, int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'}, {0}};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == 'j')
            c->json = true;
        else
            return cli_usage_error("deployments", "unknown option");
    }
    long status;
    json_t *body = NULL;
    if (cli_call(c, "GET", "/deployments", NULL, 0, &status, &body) < 0)
        return 1;
    int rc = 0;
    if (status != 200) {
        rc = cli_report_error(status, body);
    } else if (c->json) {
        char *s = json_dumps(body, JSON_INDENT(2));
        printf("%s\n", s ? s : "");
        free(s);
    } else {
        long long cur = (long long)ljson_int(body, "current", 0);
        printf("%-5s %-20s %-8s %-15s %s\n", "ID", "STARTED", "KIND", "OUTCOME", "REASON");
        size_t i;
        json_t *e;
        json_array_foreach (json_object_get(body, "deployments"), i, e) {
            long long id = (long long)ljson_int(e, "id", 0);
            printf("%-5lld %-20.20s %-8s %-15s %s%s\n", id, ljson_str(e, "startedAt") ?: "-",
                   ljson_str(e, "kind") ?: "-", ljson_str(e, "outcome") ?: "-",
                   id == cur ? "(in force) " : "", ljson_str(e, "reason") ?: "");
        }
    }
    json_decref(body);
    return rc;
}
