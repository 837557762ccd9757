/* cmd_image.c — `ledge image list|load|rm|prune`: the container engine's images through ledged
 * (the oci engine's store; with --vm NAME, cmd_vm.c copies images into a VM's engine instead). */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "commands.h"

static int call_json(struct cli *c, const char *method, const char *path, json_t *body,
                     json_t **ret)
{
    _cleanup_free_ char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    long status;
    json_t *answer = NULL;
    if (cli_call(c, method, path, text, text ? strlen(text) : 0, &status, &answer) < 0)
        return 1;
    if (status != 200) {
        int rc = cli_report_error(status, answer);
        json_decref(answer);
        return rc;
    }
    *ret = answer;
    return 0;
}

static void print_names(const char *verb, const json_t *arr)
{
    size_t i;
    json_t *v;
    json_array_foreach (arr, i, v)
        printf("%s %s\n", verb, json_string_value(v));
}

static int image_list(struct cli *c)
{
    json_t *doc = NULL;
    int rc = call_json(c, "GET", "/images", NULL, &doc);
    if (rc)
        return rc;
    const json_t *images = json_object_get(doc, "images");
    if (c->json) {
        char *s = json_dumps(images, JSON_INDENT(2));
        printf("%s\n", s ? s : "[]");
        free(s);
    } else {
        printf("%-60s %-14s %-7s %s\n", "IMAGE", "PLATFORM", "LAYERS", "USED BY");
        size_t i;
        json_t *im;
        json_array_foreach (images, i, im) {
            json_t *users = json_object_get(im, "usedBy");
            char used[256] = "";
            size_t k, off = 0;
            json_t *u;
            json_array_foreach (users, k, u)
                off += (size_t)snprintf(used + off, off < sizeof(used) ? sizeof(used) - off : 0,
                                        "%s%s", k ? "," : "", json_string_value(u));
            printf("%-60s %-14s %-7zu %s\n", ljson_str(im, "name") ?: "?",
                   ljson_str(im, "platform") ?: "", json_array_size(json_object_get(im, "layers")),
                   used[0] ? used : "-");
        }
    }
    json_decref(doc);
    return 0;
}

int cmd_image_local(struct cli *c, int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error("image",
                               "expected: list | load FILE [--name NAME] | rm IMAGE | prune");
    const char *verb = argv[1];
    if (strcmp(verb, "list") == 0 || strcmp(verb, "ls") == 0) {
        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "--json") == 0)
                c->json = true;
            else
                return cli_usage_error("image", "list: unknown argument \"%s\"", argv[i]);
        }
        return image_list(c);
    }
    json_t *doc = NULL;
    int rc;
    if (strcmp(verb, "load") == 0) {
        const char *file = NULL, *name = NULL;
        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "--name") == 0 && i + 1 < argc)
                name = argv[++i];
            else if (!file && argv[i][0] != '-')
                file = argv[i];
            else
                return cli_usage_error("image", "load FILE [--name NAME]");
        }
        if (!file)
            return cli_usage_error("image", "load FILE [--name NAME]");
        char abs[PATH_MAX];
        if (!realpath(file, abs))
            return cli_fail("%s: %s", file, strerror(errno));
        json_t *body = json_pack("{s:s}", "path", abs);
        if (body && name)
            json_object_set_new(body, "name", json_string(name));
        rc = call_json(c, "POST", "/images/load", body, &doc);
        json_decref(body);
        if (rc == 0)
            print_names("loaded", json_object_get(doc, "images"));
    } else if (strcmp(verb, "rm") == 0 && argc == 3) {
        json_t *body = json_pack("{s:s}", "name", argv[2]);
        rc = call_json(c, "POST", "/images/remove", body, &doc);
        json_decref(body);
        if (rc == 0)
            printf("removed %s\n", argv[2]);
    } else if (strcmp(verb, "prune") == 0 && argc == 2) {
        rc = call_json(c, "POST", "/images/prune", NULL, &doc);
        if (rc == 0) {
            print_names("removed", json_object_get(doc, "removed"));
            if (json_array_size(json_object_get(doc, "removed")) == 0)
                printf("no unused images\n");
        }
    } else {
        return cli_usage_error("image",
                               "expected: list | load FILE [--name NAME] | rm IMAGE | prune");
    }
    json_decref(doc);
    return rc;
}
