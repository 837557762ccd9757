/* cmd_dashboard.c — `ledge dashboard token [--expires D] [--json]`, `ledge dashboard token
 * --revoke [ID|--all]`, `ledge dashboard tokens`: the web dashboard's login tokens (ledged keeps
 * only their hashes; the token is printed once, here). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/str.h"
#include "commands.h"

static int call(struct cli *c, const char *method, const char *path, const char *body, json_t **ret)
{
    long status;
    json_t *reply = NULL;
    if (cli_call(c, method, path, body, body ? strlen(body) : 0, &status, &reply) < 0)
        return 1;
    if (status >= 300) {
        int rc = cli_report_error(status, reply);
        json_decref(reply);
        return rc;
    }
    *ret = reply;
    return 0;
}

static int print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_ENCODE_ANY);
    printf("%s\n", s ? s : "null");
    free(s);
    json_decref(j);
    return 0;
}

static int token_new(struct cli *c, const char *expires)
{
    _cleanup_json_ json_t *body = json_object();
    if (expires)
        json_object_set_new(body, "expires", json_string(expires));
    _cleanup_free_ char *text = ljson_dump(body);
    json_t *reply = NULL;
    int rc = call(c, "POST", "/dashboard/tokens", text, &reply);
    if (rc)
        return rc;
    if (c->json)
        return print_json(reply);
    printf("%s\n", ljson_str(reply, "token"));
    fprintf(stderr, "token %s for %s, expires %s%s\n", ljson_str(reply, "id"),
            ljson_str(reply, "url"), ljson_str(reply, "expiresAt"),
            ljson_bool(reply, "enabled", true) ? "" : " (the dashboard is off: dashboard.enabled)");
    json_decref(reply);
    return 0;
}

static int token_revoke(struct cli *c, const char *id)
{
    _cleanup_lbuf_ struct lbuf p = LBUF_INIT;
    lbuf_puts(&p, "/dashboard/tokens");
    if (id) {
        lbuf_putc(&p, '/');
        lstr_url_encode(id, strlen(id), &p);
    }
    json_t *reply = NULL;
    int rc = call(c, "DELETE", p.data, NULL, &reply);
    if (rc)
        return rc;
    if (c->json)
        return print_json(reply);
    printf("revoked %lld token(s), %lld session(s) ended\n", ljson_int(reply, "revoked", 0),
           ljson_int(reply, "sessionsEnded", 0));
    json_decref(reply);
    return 0;
}

static int tokens_list(struct cli *c)
{
    json_t *reply = NULL;
    int rc = call(c, "GET", "/dashboard/tokens", NULL, &reply);
    if (rc)
        return rc;
    if (c->json)
        return print_json(reply);
    printf("%-10s %-26s %-26s\n", "ID", "CREATED", "EXPIRES");
    size_t i;
    json_t *t;
    json_array_foreach (json_object_get(reply, "tokens"), i, t)
        printf("%-10s %-26s %-26s%s\n", ljson_str(t, "id"), ljson_str(t, "createdAt"),
               ljson_str(t, "expiresAt"), ljson_bool(t, "expired", false) ? " (expired)" : "");
    json_decref(reply);
    return 0;
}

int cmd_dashboard(struct cli *c, int argc, char **argv)
{
    bool list = argc >= 2 && lstr_eq(argv[1], "tokens");
    if (argc < 2 || (!list && !lstr_eq(argv[1], "token")))
        return cli_usage_error("dashboard",
                               "expected token [--expires D] | token --revoke ID|--all | tokens");
    static const struct option opts[] = {
        {"expires", required_argument, NULL, 'e'},
        {"revoke", no_argument, NULL, 'r'},
        {"all", no_argument, NULL, 'a'},
        {"json", no_argument, NULL, 'j'},
        {0},
    };
    const char *expires = NULL;
    bool revoke = false, all = false;
    int o;
    optind = 1;
    argc--;
    argv++;
    while ((o = getopt_long(argc, argv, "e:", opts, NULL)) != -1) {
        if (o == 'e')
            expires = optarg;
        else if (o == 'r')
            revoke = true;
        else if (o == 'a')
            all = true;
        else if (o == 'j')
            c->json = true;
        else
            return cli_usage_error("dashboard", "unknown option");
    }
    if (list) {
        if (optind != argc || all || revoke || expires)
            return cli_usage_error("dashboard", "tokens takes no arguments but --json");
        return tokens_list(c);
    }
    if (!revoke) {
        if (optind != argc || all)
            return cli_usage_error("dashboard", "token takes no arguments without --revoke");
        return token_new(c, expires);
    }
    if (all == (optind < argc) || argc - optind > 1)
        return cli_usage_error("dashboard", "--revoke takes a token id or --all");
    return token_revoke(c, all ? NULL : argv[optind]);
}
