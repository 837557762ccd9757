/* cmd_check.c — `ledge check` and `ledge check-list`: run the checks of src/check locally against
 * the config file and the deployment (from ledged's management API, or --deployment FILE) and
 * print them as text or JSON. Exit code 0 only when nothing is an error (or a warning, with
 * --warnings-as-errors). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/manifest.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "check/check.h"
#include "commands.h"
#include "config/config.h"

/* Any absolute path will do: the checks only need to know the hub module is there. */
#define HUB_PROGRAM "/usr/lib/ledge/ledge-hub"

static void print_errors(const char *what, const struct lstrv *errors)
{
    fprintf(stderr, "ledge check: %s:\n", what);
    for (size_t i = 0; i < errors->n; i++)
        fprintf(stderr, "  %s\n", errors->v[i]);
}

/* The deployment from --deployment FILE (an invalid file is the user's error: exit 1), else
 * from ledged when it answers. On return either *ret is set or *ret_reason says why not. */
static int load_deployment(struct cli *c, const struct cli_check_opts *o,
                           const struct ledge_config *cfg, struct deployment **ret,
                           char **ret_source, char **ret_reason)
{
    _cleanup_lstrv_ struct lstrv errors = LSTRV_INIT;
    if (o->deployment_path) {
        _cleanup_free_ char *text = NULL;
        size_t n;
        int r = lfs_read_file(o->deployment_path, MANIFEST_MAX_SIZE, &text, &n);
        if (r < 0)
            return cli_fail("check: %s: %s", o->deployment_path, strerror(-r));
        if (manifest_parse(text, n, HUB_PROGRAM, ret, &errors) < 0) {
            print_errors(o->deployment_path, &errors);
            return 1;
        }
        *ret_source = lstr_printf("file %s", o->deployment_path);
        return 0;
    }
    /* The config's socket, unless -H or LEDGE_HOST chose another. */
    if (lstr_eq(c->socket, LEDGE_DEFAULT_HOST) && cfg->management.socket)
        c->socket = cfg->management.socket;
    long status = 0;
    json_t *body = NULL;
    c->quiet = true;
    int r = cli_call(c, "GET", "/deployment", NULL, 0, &status, &body);
    c->quiet = false;
    if (r < 0) {
        *ret_reason = lstr_printf("ledged is not reachable at %s (use --deployment FILE to check "
                                  "a manifest)",
                                  c->socket);
    } else if (status == 404) {
        *ret_reason = lstr_printf("no deployment has been applied (ledged at %s)", c->socket);
    } else if (status != 200 || !body) {
        *ret_reason =
            lstr_printf("ledged at %s answered %ld for its deployment", c->socket, status);
    } else {
        _cleanup_free_ char *text = json_dumps(body, JSON_COMPACT);
        if (text && manifest_parse(text, strlen(text), HUB_PROGRAM, ret, &errors) == 0)
            *ret_source = lstr_printf("ledged at %s", c->socket);
        else
            *ret_reason = lstr_printf("ledged's deployment could not be read%s%s",
                                      errors.n ? ": " : "", errors.n ? errors.v[0] : "");
    }
    json_decref(body);
    return 0;
}

#define TEXT_INDENT 13
#define TEXT_WIDTH 100

/* Print text under a check, indented, wrapped at spaces to TEXT_WIDTH columns; label ("fix: ")
 * starts the first line. */
static void print_indented(const char *label, const char *text)
{
    const char *p = text;
    bool first = true;
    size_t width = TEXT_WIDTH - TEXT_INDENT;
    while (p && *p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        size_t lead = first ? strlen(label) : 0;
        if (lead + len > width) {
            size_t cut = width > lead ? width - lead : 1;
            while (cut > 0 && p[cut] != ' ')
                cut--;
            if (cut > 0) {
                len = cut;
                nl = p + cut;
            }
        }
        printf("%*s%s%.*s\n", TEXT_INDENT, "", first ? label : "", (int)len, p);
        first = false;
        p = nl ? nl + 1 : NULL;
    }
}

/* The result column of the text output, by enum check_result. */
static const char *const result_tags[] = {"  ok   ", "warning", " ERROR ", "skipped"};

static void print_text(const struct check_results *res, bool verbose)
{
    const char *group = NULL;
    for (size_t i = 0; i < res->n; i++) {
        const struct check_def *d = res->defs[i];
        const struct check_report *r = &res->reports[i];
        if (!lstr_eq(group, d->group)) {
            group = d->group;
            printf("%s%s\n", i ? "\n" : "", group);
        }
        printf("  %s  %-17s %s\n", result_tags[r->result], d->id, d->description);
        bool bad = r->result == CHECK_WARNING || r->result == CHECK_ERROR;
        if (verbose || bad || r->result == CHECK_SKIPPED)
            print_indented("", r->message);
        if (r->fix && (verbose || bad))
            print_indented("fix: ", r->fix);
    }
    printf("\n%zu ok, %zu warning%s, %zu error%s, %zu skipped\n", res->count[CHECK_OK],
           res->count[CHECK_WARNING], res->count[CHECK_WARNING] == 1 ? "" : "s",
           res->count[CHECK_ERROR], res->count[CHECK_ERROR] == 1 ? "" : "s",
           res->count[CHECK_SKIPPED]);
}

int cli_check_run(struct cli *c, const struct cli_check_opts *o)
{
    struct ledge_config cfg = {0};
    _cleanup_lstrv_ struct lstrv cfg_errors = LSTRV_INIT;
    const char *cfg_path = o->config_path ? o->config_path : CONFIG_DEFAULT_PATH;
    int cfg_status = o->config_path ? config_load_file(cfg_path, &cfg, &cfg_errors)
                                    : config_load_file_or_defaults(cfg_path, &cfg, &cfg_errors);
    if (cfg_status == -ENOMEM)
        return cli_fail("check: out of memory");
    if (cfg_status < 0 && config_defaults(&cfg) < 0)
        return cli_fail("check: out of memory");

    /* A run of one group (`ledge vm check`) looks at no deployment. */
    struct deployment *dep = NULL;
    _cleanup_free_ char *source = NULL, *reason = NULL;
    int rc = o->group ? 0 : load_deployment(c, o, &cfg, &dep, &source, &reason);
    struct check_deployment_view view = {0};
    if (rc == 0 && dep && check_deployment_view(dep, source ? source : "?", &view) < 0)
        rc = cli_fail("check: out of memory");
    struct check_inputs in = {
        .config = &cfg,
        .config_path = cfg_path,
        .config_status = cfg_status,
        .config_errors = &cfg_errors,
        .deployment = dep ? &view.d : NULL,
        .no_deployment = reason,
        .vm_dir = o->vm_dir,
        .vm_def = o->vm_def,
        .vm_always = o->vm_always,
    };
    struct check_results res = {0};
    if (rc == 0 && check_run_all(&in, o->group, &res) < 0)
        rc = cli_fail("check: out of memory");
    if (rc == 0 && o->json) {
        _cleanup_json_ json_t *out =
            check_results_json(&res, cfg_path, source, o->warnings_as_errors);
        _cleanup_free_ char *text = out ? json_dumps(out, JSON_INDENT(2)) : NULL;
        printf("%s\n", text ? text : "{}");
    } else if (rc == 0) {
        if (!o->group)
            printf("ledge check: config %s%s; deployment: %s\n\n", cfg_path,
                   cfg_status == 1 ? " (absent: defaults)" : "", source ? source : reason);
        print_text(&res, o->verbose);
    }
    if (rc == 0)
        rc = check_results_exit_code(&res, o->warnings_as_errors);
    check_results_clear(&res);
    check_deployment_view_clear(&view);
    deployment_free(dep);
    config_free(&cfg);
    return rc;
}

static int parse_output(const char *cmd, const char *v, bool *json)
{
    if (lstr_eq(v, "json"))
        *json = true;
    else if (lstr_eq(v, "text"))
        *json = false;
    else
        return cli_usage_error(cmd, "--output must be text or json");
    return 0;
}

/* "--name VALUE" or "--name=VALUE": the value, advancing *i; NULL when argv[*i] is not it. */
static const char *opt_value(int argc, char **argv, int *i, const char *name, bool *missing)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0)
        return NULL;
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (argv[*i][n] != 0)
        return NULL;
    if (*i + 1 >= argc) {
        *missing = true;
        return NULL;
    }
    return argv[++*i];
}

int cmd_check(struct cli *c, int argc, char **argv)
{
    struct cli_check_opts o = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        bool missing = false;
        if ((v = opt_value(argc, argv, &i, "--output", &missing))) {
            if (parse_output("check", v, &o.json))
                return 2;
        } else if ((v = opt_value(argc, argv, &i, "--config", &missing))) {
            o.config_path = v;
        } else if ((v = opt_value(argc, argv, &i, "--deployment", &missing))) {
            o.deployment_path = v;
        } else if (missing) {
            return cli_usage_error("check", "%s needs a value", a);
        } else if (strcmp(a, "--json") == 0) {
            o.json = true;
        } else if (strcmp(a, "--verbose") == 0 || strcmp(a, "-v") == 0) {
            o.verbose = true;
        } else if (strcmp(a, "--warnings-as-errors") == 0) {
            o.warnings_as_errors = true;
        } else {
            return cli_usage_error("check", "unexpected argument \"%s\"", a);
        }
    }
    return cli_check_run(c, &o);
}

int cmd_check_list(struct cli *c, int argc, char **argv)
{
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *v;
        bool missing = false;
        if ((v = opt_value(argc, argv, &i, "--output", &missing))) {
            if (parse_output("check-list", v, &json))
                return 2;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else {
            return cli_usage_error("check-list", "%s \"%s\"",
                                   missing ? "a value is needed after" : "unexpected argument",
                                   argv[i]);
        }
    }
    size_t n;
    const struct check_def *defs = check_table(&n);
    if (json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(arr,
                                  json_pack("{s:s, s:s, s:s}", "id", defs[i].id, "group",
                                            defs[i].group, "description", defs[i].description));
        char *s = json_dumps(arr, JSON_INDENT(2));
        printf("%s\n", s ? s : "[]");
        free(s);
        json_decref(arr);
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        printf("%-17s %-14s %s\n", defs[i].id, defs[i].group, defs[i].description);
    return 0;
}
