/* cmd_child.c — `ledge --device CHILD deploy|list|twin|invoke`: a child edge device managed from
 * its parent (nested edge, docs/nested.md), through the twins of the child's module identities
 * on this device's hub: the deployment is $edgeAgent's and $edgeHub's desired properties, what
 * runs is $edgeAgent's reported properties. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "commands.h"

/* "/devices/<child>/modules/<module><suffix>", both encoded. */
static char *child_path(const struct cli *c, const char *module, const char *suffix)
{
    struct lbuf p = LBUF_INIT;
    lbuf_puts(&p, "/devices/");
    lstr_url_encode(c->device, strlen(c->device), &p);
    lbuf_puts(&p, "/modules/");
    lstr_url_encode(module, strlen(module), &p);
    lbuf_puts(&p, suffix);
    return lbuf_steal(&p);
}

static int call_json(struct cli *c, const char *method, const char *path, const char *body,
                     size_t len, json_t **ret)
{
    long status;
    json_t *reply = NULL;
    if (cli_call(c, method, path, body, len, &status, &reply) < 0)
        return 1;
    if (status >= 300) {
        int rc = cli_report_error(status, reply);
        json_decref(reply);
        return rc;
    }
    *ret = reply;
    return 0;
}

static void print_json(const json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_ENCODE_ANY);
    printf("%s\n", s ? s : "null");
    free(s);
}

/* $edgeAgent's twin of the child: {"desired", "reported"}. */
static int agent_twin(struct cli *c, json_t **ret)
{
    _cleanup_free_ char *p = child_path(c, "$edgeAgent", "/twin");
    return call_json(c, "GET", p, NULL, 0, ret);
}

static void print_modules(const struct cli *c, const json_t *twin)
{
    const json_t *rep = json_object_get(twin, "reported");
    const json_t *st = json_object_get(rep, "lastDesiredStatus");
    printf("device %s: desired version %lld, applied %lld (%lld%s%s)\n", c->device,
           ljson_int(json_object_get(twin, "desired"), "$version", 0),
           ljson_int(rep, "lastDesiredVersion", 0), ljson_int(st, "code", 0),
           ljson_str(st, "description") ? ": " : "", ljson_str(st, "description") ?: "");
    printf("%-24s  %-10s  %-8s  %s\n", "NAME", "STATUS", "RESTARTS", "DESCRIPTION");
    static const char *const groups[] = {"systemModules", "modules"};
    for (size_t g = 0; g < ARRAY_SIZE(groups); g++) {
        const char *name;
        json_t *m;
        json_object_foreach (json_object_get(rep, groups[g]), name, m)
            printf("%-24s  %-10s  %-8lld  %.60s\n", name, ljson_str(m, "runtimeStatus") ?: "-",
                   ljson_int(m, "restartCount", 0), ljson_str(m, "statusDescription") ?: "");
    }
}

static int child_list(struct cli *c, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            c->json = true;
        else
            return cli_usage_error("list", "unexpected argument \"%s\"", argv[i]);
    }
    json_t *twin = NULL;
    int rc = agent_twin(c, &twin);
    if (rc)
        return rc;
    if (c->json) {
        json_t *rep = json_object_get(twin, "reported");
        json_t *out =
            json_pack("{s:s, s:O, s:O, s:O, s:O}", "deviceId", c->device, "desiredVersion",
                      json_object_get(json_object_get(twin, "desired"), "$version") ?: json_null(),
                      "lastDesiredStatus", json_object_get(rep, "lastDesiredStatus") ?: json_null(),
                      "systemModules", json_object_get(rep, "systemModules") ?: json_null(),
                      "modules", json_object_get(rep, "modules") ?: json_null());
        json_object_set(out, "lastDesiredVersion",
                        json_object_get(rep, "lastDesiredVersion") ?: json_null());
        print_json(out);
        json_decref(out);
    } else {
        print_modules(c, twin);
    }
    json_decref(twin);
    return 0;
}

static int child_deploy(struct cli *c, int argc, char **argv)
{
    static const struct option opts[] = {
        {"no-wait", no_argument, NULL, 'W'},
        {"timeout", required_argument, NULL, 't'},
        {0},
    };
    bool nowait = false;
    const char *timeout = "60s";
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (o == 'W')
            nowait = true;
        else if (o == 't')
            timeout = optarg;
        else
            return cli_usage_error("deploy", "unknown option (with --device: --no-wait, "
                                             "--timeout)");
    }
    if (optind != argc - 1)
        return cli_usage_error("deploy", "expected exactly one FILE");
    int64_t timeout_ms = 0;
    if (ltime_parse_duration_ms(timeout, &timeout_ms) < 0 || timeout_ms < 1000)
        return cli_usage_error("deploy", "--timeout: expected a duration of 1s or more (e.g. 90s)");
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    int r = lfs_read_file(argv[optind], 16 << 20, &text, &len);
    if (r < 0)
        return cli_fail("%s: %s", argv[optind], strerror(-r));
    struct lbuf p = LBUF_INIT;
    lbuf_puts(&p, "/devices/");
    lstr_url_encode(c->device, strlen(c->device), &p);
    lbuf_puts(&p, "/deployment");
    json_t *reply = NULL;
    int rc = call_json(c, "POST", p.data, text, len, &reply);
    lbuf_free(&p);
    if (rc)
        return rc;
    long long v = ljson_int(json_object_get(reply, "desiredVersions"), "$edgeAgent", 0);
    json_decref(reply);
    printf("deployment for %s written ($edgeAgent desired version %lld)\n", c->device, v);
    if (nowait)
        return 0;
    /* The child reports what it made of it in $edgeAgent's reported properties. */
    int64_t end = ltime_now_ms() + timeout_ms;
    for (;;) {
        json_t *twin = NULL;
        if ((rc = agent_twin(c, &twin)))
            return rc;
        json_t *rep = json_object_get(twin, "reported");
        json_t *st = json_object_get(rep, "lastDesiredStatus");
        if (ljson_int(rep, "lastDesiredVersion", 0) == v && st) {
            long long code = ljson_int(st, "code", 0);
            if (code == 200)
                print_modules(c, twin);
            else
                fprintf(stderr, "ledge: %s did not apply it (%lld): %s\n", c->device, code,
                        ljson_str(st, "description") ?: "");
            json_decref(twin);
            return code == 200 ? 0 : 1;
        }
        json_decref(twin);
        if (ltime_now_ms() >= end)
            return cli_fail("%s has not reported version %lld within %s (offline?); it applies it "
                            "when it connects (`ledge --device %s list`)",
                            c->device, v, timeout, c->device);
        ltime_sleep_ms(500);
    }
}

static int child_twin(struct cli *c, int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "get") == 0) {
        _cleanup_free_ char *p = child_path(c, argv[2], "/twin");
        json_t *t = NULL;
        int rc = call_json(c, "GET", p, NULL, 0, &t);
        if (!rc)
            print_json(t);
        json_decref(t);
        return rc;
    }
    if (argc == 4 && strcmp(argv[1], "set") == 0) {
        json_t *j = json_loads(argv[3], 0, NULL);
        bool ok = json_is_object(j);
        json_decref(j);
        if (!ok)
            return cli_usage_error("twin", "JSON: expected an object of desired properties");
        _cleanup_free_ char *p = child_path(c, argv[2], "/twin");
        json_t *t = NULL;
        int rc = call_json(c, "PATCH", p, argv[3], strlen(argv[3]), &t);
        if (!rc)
            print_json(t);
        json_decref(t);
        return rc;
    }
    return cli_usage_error("twin", "with --device: expected get MODULE or set MODULE JSON");
}

static int child_invoke(struct cli *c, int argc, char **argv)
{
    static const struct option opts[] = {
        {"payload", required_argument, NULL, 'p'},
        {"timeout", required_argument, NULL, 't'},
        {0},
    };
    const char *payload = NULL, *timeout = "30";
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "p:t:", opts, NULL)) != -1) {
        if (o == 'p')
            payload = optarg;
        else if (o == 't')
            timeout = optarg;
        else
            return cli_usage_error("invoke", "unknown option");
    }
    if (optind != argc - 2)
        return cli_usage_error("invoke", "with --device: expected MODULE METHOD");
    if (payload) {
        json_t *j = json_loads(payload, JSON_DECODE_ANY, NULL);
        if (!j)
            return cli_usage_error("invoke", "--payload: not valid JSON");
        json_decref(j);
    }
    struct lbuf s = LBUF_INIT;
    lbuf_puts(&s, "/methods/");
    lstr_url_encode(argv[optind + 1], strlen(argv[optind + 1]), &s);
    lbuf_puts(&s, "?timeout=");
    lstr_url_encode(timeout, strlen(timeout), &s);
    _cleanup_free_ char *p = child_path(c, argv[optind], s.data);
    lbuf_free(&s);
    json_t *reply = NULL;
    int rc = call_json(c, "POST", p, payload, payload ? strlen(payload) : 0, &reply);
    if (!rc)
        print_json(reply);
    json_decref(reply);
    return rc;
}

int cli_child_run(struct cli *c, const char *verb, int argc, char **argv)
{
    if (strcmp(verb, "deploy") == 0)
        return child_deploy(c, argc, argv);
    if (strcmp(verb, "list") == 0)
        return child_list(c, argc, argv);
    if (strcmp(verb, "twin") == 0)
        return child_twin(c, argc, argv);
    if (strcmp(verb, "invoke") == 0)
        return child_invoke(c, argc, argv);
    fprintf(stderr,
            "ledge: --device works with deploy, list, twin and invoke (a child edge "
            "device's), not %s\n",
            verb);
    return 2;
}
