/* cmd_system.c — `ledge system status` and `ledge system info`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/str.h"
#include "commands.h"

static int print_json_or(struct cli *c, const char *path, void (*pretty)(json_t *))
{
    long status;
    json_t *body = NULL;
    if (cli_call(c, "GET", path, NULL, 0, &status, &body) < 0)
        return 1;
    int rc = 0;
    if (status != 200) {
        rc = cli_report_error(status, body);
    } else if (c->json || !pretty) {
        char *s = json_dumps(body, JSON_INDENT(2));
        printf("%s\n", s ? s : "{}");
        free(s);
    } else {
        pretty(body);
    }
    json_decref(body);
    return rc;
}

static const char *str_or_unknown(const json_t *o, const char *key)
{
    const char *v = ljson_str(o, key);
    return v ? v : "?";
}

static void pretty_status(json_t *s)
{
    printf("ledged %s on device %s\n", ljson_str(s, "version"), ljson_str(s, "deviceId"));
    printf("  container engine: %s\n",
           ljson_bool(s, "containerEngineConnected", false) ? "connected" : "UNREACHABLE");
    printf("  deployed modules: %lld%s\n", ljson_int(s, "deployedModules", 0),
           ljson_bool(s, "reconciling", false) ? " (reconciling)" : "");
    const char *k;
    json_t *v;
    json_object_foreach (json_object_get(s, "modules"), k, v)
        printf("    %-10s %lld\n", k, (long long)json_integer_value(v));
    json_t *sdb = json_object_get(s, "stateDatabase");
    if (ljson_bool(sdb, "damaged", false)) {
        printf("  state database: DAMAGED, salvaged at %s (%s)\n",
               str_or_unknown(sdb, "salvagedAt"), str_or_unknown(sdb, "problem"));
        printf("    damaged file kept as %s\n", str_or_unknown(sdb, "damagedPath"));
        printf("    %lld rows recovered; deployment %s\n", ljson_int(sdb, "rowsRecovered", 0),
               ljson_bool(sdb, "deploymentRecovered", false) ? "recovered" : "NOT recovered");
    }
    if (ljson_str(s, "holding"))
        printf("  HOLDING: %s\n", ljson_str(s, "holding"));
}

int cmd_system(struct cli *c, int argc, char **argv)
{
    const char *sub = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            c->json = true;
        else if (!sub)
            sub = argv[i];
        else
            return cli_usage_error("system", "unexpected argument \"%s\"", argv[i]);
    }
    if (lstr_eq(sub, "status"))
        return print_json_or(c, "/status", pretty_status);
    if (lstr_eq(sub, "info"))
        return print_json_or(c, "/systeminfo", NULL);
    return cli_usage_error("system", "expected status or info");
}
