/* image_helper.c — ledge-image-helper: what the oci engine does with images outside ledged's
 * event loop and address space (registry pulls, untrusted layers unpacked, archives loaded,
 * garbage collection), one command per run. It prints JSON lines on stdout: {"progress": TEXT}
 * while it works, then {"ok": true, ...} or {"ok": false, "error": TEXT, "errno": N}.
 *   ledge-image-helper pull STORE REF     stdin: {"username", "password", "caFile", "insecure"}
 *   ledge-image-helper load STORE FILE [NAME]
 *   ledge-image-helper rm STORE NAME...   (untag; then collect)
 *   ledge-image-helper gc STORE */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/json.h"
#include "image/load.h"
#include "image/registry.h"
#include "image/store.h"

static void emit(json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (s)
        printf("%s\n", s);
    fflush(stdout);
    free(s);
    json_decref(j);
}

static int fail(const struct lerr *e)
{
    emit(json_pack("{s:b, s:s, s:i}", "ok", 0, "error", lerr_str(e), "errno",
                   e->code < 0 ? -e->code : EIO));
    return 1;
}

static json_t *image_json(const struct img_image *im)
{
    json_t *layers = json_array();
    for (size_t i = 0; layers && i < im->layers.n; i++)
        json_array_append_new(layers, json_string(im->layers.v[i]));
    return json_pack("{s:s, s:s, s:s, s:s, s:o}", "name", im->name, "manifest", im->manifest,
                     "config", im->config, "platform", im->platform, "layers", layers);
}

/* One line per blob, when it is complete (libcurl reports the end more than once). */
static void progress(void *ud, const char *what, uint64_t done, uint64_t total)
{
    static char last[128];
    if (done != total || strcmp(last, what) == 0)
        return;
    snprintf(last, sizeof(last), "%s", what);
    char line[256];
    snprintf(line, sizeof(line), "%s: %llu bytes", what, (unsigned long long)total);
    emit(json_pack("{s:s}", "progress", line));
}

static int gc(struct img_store *s, struct lerr *e, json_t *out)
{
    struct img_gc_stats st = {0};
    int r = img_store_gc(s, &st, e);
    if (r < 0 && r != -EBUSY)
        return r;
    json_object_set_new(out, "gc",
                        json_pack("{s:b, s:i, s:i, s:i}", "busy", r == -EBUSY, "blobsRemoved",
                                  st.blobs_removed, "layersRemoved", st.layers_removed,
                                  "ingestRemoved", st.ingest_removed));
    return 0;
}

int main(int argc, char **argv)
{
    struct lerr e = {0};
    if (argc < 3) {
        fprintf(stderr, "usage: ledge-image-helper pull|load|rm|gc STORE ...\n");
        return 2;
    }
    const char *cmd = argv[1], *dir = argv[2];
    _cleanup_img_store_ struct img_store *s = NULL;
    if (img_store_open(dir, &s, &e) < 0)
        return fail(&e);
    if (strcmp(cmd, "pull") == 0 && argc == 4) {
        /* the credentials, if any, on stdin: never in argv, where ps shows them */
        char buf[16384];
        size_t n = fread(buf, 1, sizeof(buf) - 1, stdin);
        buf[n] = 0;
        _cleanup_json_ json_t *in = NULL;
        if (n && ljson_parse(buf, n, &in, &e) < 0)
            return fail(&e);
        explicit_bzero(buf, sizeof(buf));
        const char *insecure[2] = {ljson_str(in, "insecure"), NULL};
        struct img_pull_opts po = {
            .username = ljson_str(in, "username"),
            .password = ljson_str(in, "password"),
            .ca_file = ljson_str(in, "caFile"),
            .insecure = insecure[0] ? insecure : NULL,
            .progress = progress,
        };
        struct img_image im = {0};
        if (img_pull(s, argv[3], &po, &im, &e) < 0)
            return fail(&e);
        emit(json_pack("{s:b, s:o}", "ok", 1, "image", image_json(&im)));
        img_image_clear(&im);
        return 0;
    }
    if (strcmp(cmd, "load") == 0 && (argc == 4 || argc == 5)) {
        struct img_load_opts lo = {.name = argc == 5 ? argv[4] : NULL};
        struct lstrv names = LSTRV_INIT;
        if (img_load_archive(s, argv[3], &lo, &names, &e) < 0)
            return fail(&e);
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < names.n; i++)
            json_array_append_new(arr, json_string(names.v[i]));
        lstrv_free(&names);
        emit(json_pack("{s:b, s:o}", "ok", 1, "images", arr));
        return 0;
    }
    if (strcmp(cmd, "rm") == 0 && argc >= 4) {
        for (int i = 3; i < argc; i++)
            if (img_store_untag(s, argv[i], &e) < 0 && e.code != -ENOENT)
                return fail(&e);
        json_t *out = json_pack("{s:b}", "ok", 1);
        if (gc(s, &e, out) < 0) {
            json_decref(out);
            return fail(&e);
        }
        emit(out);
        return 0;
    }
    if (strcmp(cmd, "gc") == 0 && argc == 3) {
        json_t *out = json_pack("{s:b}", "ok", 1);
        if (gc(s, &e, out) < 0) {
            json_decref(out);
            return fail(&e);
        }
        emit(out);
        return 0;
    }
    fprintf(stderr, "usage: ledge-image-helper pull|load|rm|gc STORE ...\n");
    return 2;
}
