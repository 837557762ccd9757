/* ledge-image.c — a test and debug tool over src/image until the oci engine and `ledge image`
 * exist: pull, load, inspect, list, rm, gc on a content store, and unpack one layer.
 *   ledge-image pull STORE REF [--ca FILE] [--user U --password P] [--creds MANIFEST]
 *                              [--platform P] [--insecure HOST:PORT]
 *   ledge-image load STORE ARCHIVE [--name REF] [--platform P]
 *   ledge-image inspect|rm STORE REF      ledge-image list|gc STORE
 *   ledge-image layer-path STORE DIFF_ID  ledge-image unpack DIR LAYER [--no-openat2]
 * --creds reads a deployment manifest and uses the registryCredentials entry that matches the
 * image's registry. Errors go to stderr, prefixed "ledge-image: "; exit 1. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/json.h"
#include "image/creds.h"
#include "image/load.h"
#include "image/registry.h"

static int die(const struct lerr *e)
{
    fprintf(stderr, "ledge-image: %s\n", lerr_str(e));
    return 1;
}

/* One line per blob, when it is complete (libcurl reports the end more than once). */
static void progress(void *ud, const char *what, uint64_t done, uint64_t total)
{
    static char last[80];
    (void)ud;
    if (done != total || strcmp(last, what) == 0)
        return;
    snprintf(last, sizeof(last), "%s", what);
    fprintf(stderr, "ledge-image: %s: %llu bytes\n", what, (unsigned long long)total);
}

static void print_image(const struct img_image *im)
{
    json_t *layers = json_array();
    for (size_t i = 0; i < im->layers.n; i++)
        json_array_append_new(layers, json_string(im->layers.v[i]));
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "name", im->name, "manifest",
                          im->manifest, "index", im->index, "config", im->config, "platform",
                          im->platform, "layers", layers);
    char *s = json_dumps(j, JSON_INDENT(2));
    printf("%s\n", s);
    free(s);
    json_decref(j);
}

/* The registryCredentials of a deployment manifest file. */
static int creds_from_manifest(const char *path, const char *ref, json_t **ret_doc,
                               struct img_cred *ret, struct lerr *e)
{
    _cleanup_free_ char *text = NULL;
    size_t n;
    int r = lfs_read_file(path, 1 << 20, &text, &n);
    if (r < 0)
        return lerr_set(e, r, "%s: %s", path, strerror(-r));
    json_t *doc;
    if ((r = ljson_parse(text, n, &doc, e)) < 0)
        return (lerr_prefix(e, "%s", path), r);
    json_t *settings = json_object_get(
        json_object_get(
            json_object_get(json_object_get(json_object_get(doc, "modulesContent"), "$edgeAgent"),
                            "properties.desired"),
            "runtime"),
        "settings");
    struct img_ref ir;
    if ((r = img_ref_parse(ref, &ir, e)) < 0) {
        json_decref(doc);
        return r;
    }
    r = img_creds_lookup(json_object_get(settings, "registryCredentials"), ir.registry, ret, e);
    if (r < 0) {
        json_decref(doc);
        return r == -ENOENT
                   ? lerr_set(e, r, "%s: no registryCredentials entry for %s", path, ir.registry)
                   : r;
    }
    *ret_doc = doc;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"ca", required_argument, NULL, 'c'},
        {"user", required_argument, NULL, 'u'},
        {"password", required_argument, NULL, 'p'},
        {"creds", required_argument, NULL, 'C'},
        {"platform", required_argument, NULL, 'P'},
        {"name", required_argument, NULL, 'n'},
        {"insecure", required_argument, NULL, 'i'},
        {"no-openat2", no_argument, NULL, 'N'},
        {NULL, 0, NULL, 0},
    };
    struct img_pull_opts po = {.progress = progress};
    struct img_load_opts lo = {0};
    const char *creds_file = NULL, *insecure[2] = {NULL, NULL};
    bool no_openat2 = false;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            po.ca_file = optarg;
            break;
        case 'u':
            po.username = optarg;
            break;
        case 'p':
            po.password = optarg;
            break;
        case 'C':
            creds_file = optarg;
            break;
        case 'P':
            po.platform = lo.platform = optarg;
            break;
        case 'n':
            lo.name = optarg;
            break;
        case 'i':
            insecure[0] = optarg;
            po.insecure = insecure;
            break;
        case 'N':
            no_openat2 = true;
            break;
        default:
            return 2;
        }
    }
    po.unpack.no_openat2 = lo.unpack.no_openat2 = no_openat2;
    if (argc - optind < 2) {
        fprintf(stderr, "usage: ledge-image pull|load|inspect|rm|list|gc|layer-path|unpack …\n");
        return 2;
    }
    const char *cmd = argv[optind], *dir = argv[optind + 1];
    const char *arg = argc - optind > 2 ? argv[optind + 2] : NULL;
    struct lerr e = {0};

    if (strcmp(cmd, "unpack") == 0) {
        if (!arg)
            return 2;
        if (lfs_mkdir_p(dir, 0755) < 0)
            return 1;
        _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        _cleanup_close_ int fd = open(arg, O_RDONLY | O_CLOEXEC);
        if (dfd < 0 || fd < 0) {
            perror("ledge-image: open");
            return 1;
        }
        struct img_unpack_opts o = {.no_openat2 = no_openat2};
        struct img_unpack_stats st;
        if (img_unpack_layer(fd, dfd, &o, &st, &e) < 0)
            return die(&e);
        printf("%s entries=%llu whiteouts=%u opaques=%u openat2=%d\n", st.diff_id,
               (unsigned long long)st.entries, st.whiteouts, st.opaques, st.openat2);
        return 0;
    }

    _cleanup_img_store_ struct img_store *s = NULL;
    if (img_store_open(dir, &s, &e) < 0)
        return die(&e);
    if (strcmp(cmd, "pull") == 0 && arg) {
        json_t *doc = NULL;
        struct img_cred cred;
        if (creds_file) {
            if (creds_from_manifest(creds_file, arg, &doc, &cred, &e) < 0)
                return die(&e);
            po.username = cred.username;
            po.password = cred.password;
        }
        struct img_image im;
        int r = img_pull(s, arg, &po, &im, &e);
        json_decref(doc);
        if (r < 0)
            return die(&e);
        print_image(&im);
        img_image_clear(&im);
    } else if (strcmp(cmd, "load") == 0 && arg) {
        _cleanup_lstrv_ struct lstrv names = LSTRV_INIT;
        if (img_load_archive(s, arg, &lo, &names, &e) < 0)
            return die(&e);
        for (size_t i = 0; i < names.n; i++)
            printf("%s\n", names.v[i]);
    } else if (strcmp(cmd, "inspect") == 0 && arg) {
        struct img_image im;
        if (img_store_get(s, arg, &im, &e) < 0)
            return die(&e);
        print_image(&im);
        img_image_clear(&im);
    } else if (strcmp(cmd, "rm") == 0 && arg) {
        if (img_store_untag(s, arg, &e) < 0)
            return die(&e);
    } else if (strcmp(cmd, "layer-path") == 0 && arg) {
        char p[4096];
        if (img_store_layer_path(s, arg, p, sizeof(p)) < 0)
            return 1;
        printf("%s\n", p);
    } else if (strcmp(cmd, "list") == 0) {
        json_t *j;
        if (img_store_list(s, &j, &e) < 0)
            return die(&e);
        char *t = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
        printf("%s\n", t);
        free(t);
        json_decref(j);
    } else if (strcmp(cmd, "gc") == 0) {
        struct img_gc_stats st;
        if (img_store_gc(s, &st, &e) < 0)
            return die(&e);
        printf("blobs_removed=%u layers_removed=%u ingest_removed=%u blobs_kept=%u "
               "layers_kept=%u\n",
               st.blobs_removed, st.layers_removed, st.ingest_removed, st.blobs_kept,
               st.layers_kept);
    } else {
        fprintf(stderr, "ledge-image: unknown command or missing argument: %s\n", cmd);
        return 2;
    }
    return 0;
}
