/* cmd_hub.c — `ledge hub status`, `ledge twin get|set`, `ledge invoke`, `ledge token`: the hub's
 * side of the management API. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/str.h"
#include "commands.h"

/* Append s to p, URL-encoded. */
static void put_encoded(struct lbuf *p, const char *s)
{
    lstr_url_encode(s, strlen(s), p);
}

static char *path_of(const char *prefix, const char *module, const char *suffix)
{
    struct lbuf p = LBUF_INIT;
    lbuf_puts(&p, prefix);
    put_encoded(&p, module);
    lbuf_puts(&p, suffix);
    return lbuf_steal(&p);
}

static int call_print(struct cli *c, const char *method, const char *path, const char *body,
                      void (*pretty)(json_t *))
{
    long status;
    json_t *reply = NULL;
    if (cli_call(c, method, path, body, body ? strlen(body) : 0, &status, &reply) < 0)
        return 1;
    int rc = 0;
    if (status >= 300) {
        rc = cli_report_error(status, reply);
    } else if (pretty && !c->json) {
        pretty(reply);
    } else {
        char *s = json_dumps(reply, JSON_INDENT(2) | JSON_ENCODE_ANY);
        printf("%s\n", s ? s : "null");
        free(s);
    }
    json_decref(reply);
    return rc;
}

static void pretty_hub(json_t *s)
{
    json_t *conn = json_object_get(s, "connections");
    json_t *n = json_object_get(s, "counters");
    printf("ledge-hub %s, up %llds\n", ljson_str(s, "version"),
           (long long)ljson_int(s, "uptimeSeconds", 0));
    printf("  connections: %lld open, %lld modules connected, %lld sessions\n",
           ljson_int(conn, "open", 0), ljson_int(conn, "modules", 0),
           ljson_int(conn, "sessions", 0));
    printf("  messages: received %lld, routed %lld, unrouted %lld, delivered %lld, acked %lld\n",
           ljson_int(n, "received", 0), ljson_int(n, "routed", 0), ljson_int(n, "unrouted", 0),
           ljson_int(n, "delivered", 0), ljson_int(n, "acked", 0));
    printf("  refused %lld (store full), expired %lld, unauthorized %lld, auth failures %lld\n",
           ljson_int(n, "refused", 0), ljson_int(n, "expired", 0), ljson_int(n, "unauthorized", 0),
           ljson_int(n, "authFailures", 0));
    json_t *st = json_object_get(s, "store");
    printf("  store: %lld bytes of %lld, fsync %s\n", ljson_int(st, "bytes", 0),
           ljson_int(st, "maxBytes", 0), ljson_str(st, "fsync"));
    json_t *db = json_object_get(s, "twinsDatabase");
    if (db && !ljson_bool(db, "available", true))
        printf("  twins database: UNAVAILABLE (%s): no twins, no persistent sessions\n",
               ljson_str(db, "error") ?: "cannot be opened");
    else if (ljson_bool(db, "damaged", false))
        printf("  twins database: DAMAGED at start (%s); moved to %s, %lld rows recovered\n",
               ljson_str(db, "problem") ?: "?", ljson_str(db, "damagedPath") ?: "?",
               ljson_int(db, "rowsRecovered", 0));
    printf("  %-40s %10s %12s\n", "ENDPOINT", "DEPTH", "BYTES");
    size_t i;
    json_t *e;
    json_array_foreach (json_object_get(s, "endpoints"), i, e)
        printf("  %-40s %10lld %12lld%s\n", ljson_str(e, "endpoint"), ljson_int(e, "depth", 0),
               ljson_int(e, "bytes", 0), ljson_bool(e, "inUse", true) ? "" : "  (draining)");
    json_t *up = json_object_get(s, "upstream");
    if (ljson_bool(up, "enabled", false))
        printf("  upstream %s:%lld: %s, sent %lld, acked %lld%s%s\n", ljson_str(up, "host"),
               ljson_int(up, "port", 0),
               ljson_bool(up, "connected", false) ? "connected" : "DISCONNECTED",
               ljson_int(up, "sent", 0), ljson_int(up, "acked", 0),
               ljson_str(up, "lastError") ? "; " : "", ljson_str(up, "lastError") ?: "");
}

int cmd_hub(struct cli *c, int argc, char **argv)
{
    const char *sub = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            c->json = true;
        else if (!sub)
            sub = argv[i];
        else
            return cli_usage_error("hub", "unexpected argument \"%s\"", argv[i]);
    }
    if (!lstr_eq(sub, "status"))
        return cli_usage_error("hub", "expected status");
    return call_print(c, "GET", "/hub/status", NULL, pretty_hub);
}

/* "/modules/<m>/twin" or, for a leaf device (--device), "/devices/<d>/twin". */
static char *twin_path(bool device, const char *name)
{
    return path_of(device ? "/devices/" : "/modules/", name, "/twin");
}

int cmd_twin(struct cli *c, int argc, char **argv)
{
    /* ledge twin get|set [--device] NAME [JSON]: --device names a leaf device (docs/gateway.md) */
    bool device = false;
    char *args[4];
    int n = 0;
    for (int i = 0; i < argc; i++) {
        if (i > 0 && strcmp(argv[i], "--device") == 0)
            device = true;
        else if (n < 4)
            args[n++] = argv[i];
        else
            return cli_usage_error("twin", "too many arguments");
    }
    if (n == 3 && strcmp(args[1], "get") == 0) {
        _cleanup_free_ char *p = twin_path(device, args[2]);
        return call_print(c, "GET", p, NULL, NULL);
    }
    if (n == 4 && strcmp(args[1], "set") == 0) {
        json_error_t je;
        json_t *j = json_loads(args[3], 0, &je);
        if (!json_is_object(j)) {
            json_decref(j);
            return cli_usage_error("twin", "JSON: expected an object of desired properties%s%s",
                                   j ? "" : ": ", j ? "" : je.text);
        }
        json_decref(j);
        _cleanup_free_ char *p = twin_path(device, args[2]);
        return call_print(c, "PATCH", p, args[3], NULL);
    }
    return cli_usage_error("twin", "expected get [--device] NAME or set [--device] NAME JSON");
}

int cmd_invoke(struct cli *c, int argc, char **argv)
{
    static const struct option opts[] = {
        {"payload", required_argument, NULL, 'p'},
        {"timeout", required_argument, NULL, 't'},
        {"device", required_argument, NULL, 'd'},
        {0},
    };
    const char *payload = NULL, *timeout = "30", *device = NULL;
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "p:t:", opts, NULL)) != -1) {
        if (o == 'p')
            payload = optarg;
        else if (o == 't')
            timeout = optarg;
        else if (o == 'd')
            device = optarg;
        else
            return cli_usage_error("invoke", "unknown option");
    }
    if (optind != argc - (device ? 1 : 2))
        return cli_usage_error("invoke", device ? "expected --device DEVICE METHOD"
                                                : "expected MODULE METHOD");
    if (payload) {
        json_t *j = json_loads(payload, JSON_DECODE_ANY, NULL);
        if (!j)
            return cli_usage_error("invoke", "--payload: not valid JSON");
        json_decref(j);
    }
    _cleanup_lbuf_ struct lbuf p = LBUF_INIT;
    lbuf_puts(&p, device ? "/devices/" : "/modules/");
    put_encoded(&p, device ? device : argv[optind]);
    lbuf_puts(&p, "/methods/");
    put_encoded(&p, argv[device ? optind : optind + 1]);
    lbuf_puts(&p, "?timeout=");
    put_encoded(&p, timeout);
    return call_print(c, "POST", p.data, payload, NULL);
}

static void print_token(json_t *reply)
{
    printf("%s\n", ljson_str(reply, "token"));
}

int cmd_token(struct cli *c, int argc, char **argv)
{
    static const struct option opts[] = {
        {"ttl", required_argument, NULL, 't'},
        {"host", required_argument, NULL, 'H'},
        {"json", no_argument, NULL, 'j'},
        {0},
    };
    const char *ttl = "3600", *host = NULL;
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "t:", opts, NULL)) != -1) {
        if (o == 't')
            ttl = optarg;
        else if (o == 'H')
            host = optarg;
        else if (o == 'j')
            c->json = true;
        else
            return cli_usage_error("token", "unknown option");
    }
    if (optind != argc - 1)
        return cli_usage_error("token", "expected MODULE");
    _cleanup_lbuf_ struct lbuf p = LBUF_INIT;
    lbuf_puts(&p, "/modules/");
    put_encoded(&p, argv[optind]);
    lbuf_puts(&p, "/token?ttl=");
    put_encoded(&p, ttl);
    if (host) {
        lbuf_puts(&p, "&host=");
        put_encoded(&p, host);
    }
    return call_print(c, "POST", p.data, NULL, print_token);
}
