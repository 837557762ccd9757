/* cmd_modules.c — `ledge list`, `logs`, `start`, `stop`, `restart`. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/str.h"
#include "commands.h"

static void print_table(json_t *modules)
{
    const char *hdr[] = {"NAME", "STATUS", "DESCRIPTION", "IMAGE"};
    const char *keys[] = {"name", "runtimeStatus", "statusDescription", "image"};
    size_t w[4];
    for (int k = 0; k < 4; k++)
        w[k] = strlen(hdr[k]);
    size_t i;
    json_t *m;
    json_array_foreach (modules, i, m) {
        for (int k = 0; k < 4; k++) {
            const char *v = ljson_str(m, keys[k]);
            size_t len = v ? strlen(v) : 1;
            if (len > w[k])
                w[k] = len;
        }
    }
    if (w[2] > 60)
        w[2] = 60;
    printf("%-*s  %-*s  %-*s  %s\n", (int)w[0], hdr[0], (int)w[1], hdr[1], (int)w[2], hdr[2],
           hdr[3]);
    json_array_foreach (modules, i, m) {
        const char *v[4];
        for (int k = 0; k < 4; k++)
            v[k] = ljson_str(m, keys[k]) ?: "-";
        printf("%-*s  %-*s  %-*.*s  %s\n", (int)w[0], v[0], (int)w[1], v[1], (int)w[2], (int)w[2],
               v[2], v[3]);
    }
}

int cmd_list(struct cli *c, int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'}, {0}};
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "j", opts, NULL)) != -1) {
        if (o == 'j')
            c->json = true;
        else
            return cli_usage_error("list", "unknown option");
    }
    if (optind < argc)
        return cli_usage_error("list", "unexpected argument \"%s\"", argv[optind]);
    long status;
    json_t *body = NULL;
    if (cli_call(c, "GET", "/modules", NULL, 0, &status, &body) < 0)
        return 1;
    int rc = 0;
    if (status != 200) {
        rc = cli_report_error(status, body);
    } else if (c->json) {
        char *s = json_dumps(json_object_get(body, "modules"), JSON_INDENT(2));
        printf("%s\n", s ? s : "[]");
        free(s);
    } else {
        print_table(json_object_get(body, "modules"));
    }
    json_decref(body);
    return rc;
}

static int write_out(void *ud, const char *data, size_t n)
{
    return fwrite(data, 1, n, stdout) == n && fflush(stdout) == 0 ? 0 : -EPIPE;
}

int cmd_logs(struct cli *c, int argc, char **argv)
{
    static const struct option opts[] = {
        {"tail", required_argument, NULL, 'n'},
        {"since", required_argument, NULL, 's'},
        {"follow", no_argument, NULL, 'f'},
        {"timestamps", no_argument, NULL, 't'},
        {0},
    };
    const char *tail = NULL, *since = NULL;
    bool follow = false, timestamps = false;
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "n:s:ft", opts, NULL)) != -1) {
        switch (o) {
        case 'n':
            tail = optarg;
            break;
        case 's':
            since = optarg;
            break;
        case 'f':
            follow = true;
            break;
        case 't':
            timestamps = true;
            break;
        default:
            return cli_usage_error("logs", "unknown option");
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("logs", "expected exactly one MODULE");
    struct lbuf path = LBUF_INIT, enc = LBUF_INIT;
    lstr_url_encode(argv[optind], strlen(argv[optind]), &enc);
    lbuf_printf(&path, "/modules/%s/logs?follow=%d&timestamps=%d", enc.data, follow, timestamps);
    if (tail) {
        lbuf_reset(&enc);
        lstr_url_encode(tail, strlen(tail), &enc);
        lbuf_printf(&path, "&tail=%s", enc.data);
    }
    if (since) {
        lbuf_reset(&enc);
        lstr_url_encode(since, strlen(since), &enc);
        lbuf_printf(&path, "&since=%s", enc.data);
    }
    long status = 0;
    struct lbuf err = LBUF_INIT;
    int r = cli_stream(c, "GET", path.data, NULL, 0, &status, write_out, NULL, &err);
    lbuf_free(&path);
    lbuf_free(&enc);
    int rc = 0;
    if (r < 0) {
        rc = 1;
    } else if (status >= 300) {
        json_t *j = err.len ? json_loadb(err.data, err.len, 0, NULL) : NULL;
        rc = cli_report_error(status, j);
        json_decref(j);
    }
    lbuf_free(&err);
    return rc;
}

static int module_command(struct cli *c, int argc, char **argv, const char *verb)
{
    if (argc != 2)
        return cli_usage_error(verb, "expected exactly one MODULE");
    struct lbuf path = LBUF_INIT, enc = LBUF_INIT;
    lstr_url_encode(argv[1], strlen(argv[1]), &enc);
    lbuf_printf(&path, "/modules/%s/%s", enc.data, verb);
    long status;
    json_t *body = NULL;
    int r = cli_call(c, "POST", path.data, NULL, 0, &status, &body);
    lbuf_free(&path);
    lbuf_free(&enc);
    if (r < 0)
        return 1;
    int rc = 0;
    if (status != 200)
        rc = cli_report_error(status, body);
    else
        printf("%s: %s\n", argv[1],
               strcmp(verb, "stop") == 0    ? "stopped"
               : strcmp(verb, "start") == 0 ? "started"
                                            : "restarted");
    json_decref(body);
    return rc;
}

int cmd_start(struct cli *c, int argc, char **argv)
{
    return module_command(c, argc, argv, "start");
}
int cmd_stop(struct cli *c, int argc, char **argv)
{
    return module_command(c, argc, argv, "stop");
}
int cmd_restart(struct cli *c, int argc, char **argv)
{
    return module_command(c, argc, argv, "restart");
}
