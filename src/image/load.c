/* load.c — `docker save` and OCI layout archives into the store (see load.h). The archive is
 * read once: its regular files are staged (numbered, hashed) in a private directory under
 * ingest/, its symlinks (docker save links repeated layers) remembered; then the documents are
 * read from the stage and the layers unpacked from it. The stage goes when the load ends. */
#include "image/load.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/crypto.h"
#include "base/fs.h"
#include "base/json.h"
#include "image-internal.h"
#include "image/manifest.h"

#define ANNOTATION_NAME "io.containerd.image.name"
#define ANNOTATION_REF "org.opencontainers.image.ref.name"
#define SYMLINK_HOPS 8

struct staged {
    char *path;   /* normalised: "blobs/sha256/ab…", "0123…/layer.tar" */
    char *target; /* a symlink's target, else NULL */
    unsigned n;   /* the staged file's number */
    uint64_t size;
    char digest[IMG_DIGEST_LEN + 1];
};

struct loader {
    struct img_store *s;
    const struct img_load_opts *o;
    struct lerr *e;
    int stage_dir;
    char stage_name[64];
    struct staged *files;
    size_t n_files, cap;
    struct img_platform want;
    struct lstrv *names;
    unsigned loaded;
};

static void archive_freep(struct archive **a)
{
    if (*a)
        archive_read_free(*a);
}
#define _cleanup_archive_ _cleanup_(archive_freep)

/* Lexically normalise an archive path ("./a//b/../c" → "a/c"); NULL when it leaves the root. */
static char *normalize(const char *base_dir, const char *path)
{
    char buf[PATH_MAX * 2];
    if (snprintf(buf, sizeof(buf), "%s%s%s", path[0] == '/' || !base_dir ? "" : base_dir,
                 path[0] == '/' || !base_dir || !base_dir[0] ? "" : "/", path) >= (int)sizeof(buf))
        return NULL;
    char *comps[PATH_MAX / 2];
    size_t n = 0;
    for (char *save = NULL, *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
        if (strcmp(c, ".") == 0)
            continue;
        if (strcmp(c, "..") == 0) {
            if (n == 0)
                return NULL;
            n--;
            continue;
        }
        if (n == ARRAY_SIZE(comps))
            return NULL;
        comps[n++] = c;
    }
    struct lbuf out = LBUF_INIT;
    for (size_t i = 0; i < n; i++)
        if (lbuf_printf(&out, "%s%s", i ? "/" : "", comps[i]) < 0) {
            lbuf_free(&out);
            return NULL;
        }
    return lbuf_steal(&out);
}

static const struct staged *find_raw(const struct loader *l, const char *path)
{
    for (size_t i = 0; i < l->n_files; i++)
        if (strcmp(l->files[i].path, path) == 0)
            return &l->files[i];
    return NULL;
}

/* The staged file at path, through symlinks inside the archive. */
static const struct staged *find(const struct loader *l, const char *path)
{
    _cleanup_free_ char *p = normalize(NULL, path);
    for (int hop = 0; p && hop < SYMLINK_HOPS; hop++) {
        const struct staged *f = find_raw(l, p);
        if (!f || !f->target)
            return f;
        char dir[PATH_MAX];
        lfs_dirname(p, dir, sizeof(dir));
        char *next = normalize(strcmp(dir, ".") == 0 ? "" : dir, f->target);
        free(p);
        p = next;
    }
    return NULL;
}

static int stage_entry(struct loader *l, struct archive *a, struct archive_entry *ae,
                       uint64_t *total, uint64_t max)
{
    const char *path = archive_entry_pathname(ae);
    mode_t type = archive_entry_filetype(ae);
    if (!path || (type != AE_IFREG && type != AE_IFLNK) || archive_entry_hardlink(ae))
        return 0;
    _cleanup_free_ char *norm = normalize(NULL, path);
    if (!norm || !norm[0])
        return lerr_set(l->e, -EPERM, "archive entry %.300s: path leaves the archive", path);
    if (l->n_files == IMG_LOAD_FILES_MAX)
        return lerr_set(l->e, -E2BIG, "more than %u files in the archive", IMG_LOAD_FILES_MAX);
    if (l->n_files == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        struct staged *nf = realloc(l->files, nc * sizeof(*nf));
        if (!nf)
            return -ENOMEM;
        l->files = nf;
        l->cap = nc;
    }
    struct staged f = {.n = (unsigned)l->n_files};
    if (type == AE_IFLNK) {
        const char *t = archive_entry_symlink(ae);
        if (!t || !(f.target = strdup(t)))
            return t ? -ENOMEM : 0;
        f.path = TAKE_PTR(norm);
        l->files[l->n_files++] = f;
        return 0;
    }
    char name[16];
    snprintf(name, sizeof(name), "%u", f.n);
    _cleanup_close_ int fd =
        openat(l->stage_dir, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return lerr_set(l->e, neg_errno(), "staging %.300s: %s", path, strerror(errno));
    _cleanup_img_hash_ struct img_hash *h = NULL;
    int r = img_hash_new(&h);
    if (r < 0)
        return r;
    char buf[64 * 1024];
    for (;;) {
        la_ssize_t n = archive_read_data(a, buf, sizeof(buf));
        if (n == 0)
            break;
        if (n < 0)
            return lerr_set(l->e, -EIO, "archive entry %.300s: %s", path, archive_error_string(a));
        *total += (uint64_t)n;
        if (*total > max)
            return lerr_set(l->e, -EFBIG, "the archive's files exceed %llu bytes",
                            (unsigned long long)max);
        if ((r = lfs_write_all(fd, buf, (size_t)n)) < 0)
            return lerr_set(l->e, r, "staging %.300s: %s", path, strerror(-r));
        if ((r = img_hash_update(h, buf, (size_t)n)) < 0)
            return r;
        f.size += (uint64_t)n;
    }
    if ((r = img_hash_final(h, f.digest)) < 0)
        return r;
    f.path = TAKE_PTR(norm);
    l->files[l->n_files++] = f;
    return 0;
}

static int open_staged(struct loader *l, const struct staged *f)
{
    char name[16];
    snprintf(name, sizeof(name), "%u", f->n);
    int fd = openat(l->stage_dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    return fd < 0 ? lerr_set(l->e, neg_errno(), "%s: %s", f->path, strerror(errno)) : fd;
}

/* A small staged file (JSON) into memory. */
static int read_staged(struct loader *l, const struct staged *f, size_t max, char **ret,
                       size_t *ret_len)
{
    if (f->size > max)
        return lerr_set(l->e, -E2BIG, "%s: %llu bytes, at most %zu", f->path,
                        (unsigned long long)f->size, max);
    _cleanup_close_ int fd = open_staged(l, f);
    if (fd < 0)
        return fd;
    _cleanup_free_ char *buf = malloc(f->size + 1);
    if (!buf)
        return -ENOMEM;
    size_t got = 0;
    while (got < f->size) {
        ssize_t n = read(fd, buf + got, f->size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return lerr_set(l->e, -EIO, "%s: short read", f->path);
        got += (size_t)n;
    }
    buf[got] = 0;
    *ret_len = got;
    *ret = TAKE_PTR(buf);
    return 0;
}

static const struct staged *find_blob(struct loader *l, const char *digest)
{
    char p[IMG_DIGEST_LEN + 32];
    snprintf(p, sizeof(p), "blobs/sha256/%s", img_digest_hex(digest));
    const struct staged *f = find(l, p);
    if (!f)
        lerr_set(l->e, -ENOENT, "blob %s is not in the archive", digest);
    else if (strcmp(f->digest, digest) != 0) {
        lerr_set(l->e, -EBADMSG, "blob %s in the archive: digest mismatch (the content is %s)",
                 digest, f->digest);
        f = NULL;
    }
    return f;
}

static int unpack_staged(struct loader *l, const struct staged *f, const char *diff_id)
{
    if (img_store_has_layer(l->s, diff_id))
        return 0;
    _cleanup_close_ int fd = open_staged(l, f);
    if (fd < 0)
        return fd;
    int r = img_store_unpack(l->s, fd, diff_id, &l->o->unpack, NULL, l->e);
    return r < 0 ? img_prefix(r, l->e, "%s", f->path) : 0;
}

/* Store the config and name the image for each name. */
static int finish_image(struct loader *l, struct img_image *im, const char *config_text,
                        size_t config_len, const struct img_config *cfg, const struct lstrv *names)
{
    int r = img_store_put_blob(l->s, config_text, config_len, im->config, NULL, l->e);
    if (r < 0)
        return r;
    img_platform_format(&cfg->platform, im->platform, sizeof(im->platform));
    for (size_t i = 0; i < cfg->diff_ids.n; i++)
        if ((r = lstrv_push(&im->layers, cfg->diff_ids.v[i])) < 0)
            return r;
    for (size_t i = 0; i < names->n; i++) {
        struct img_ref ref;
        if ((r = img_ref_parse(names->v[i], &ref, l->e)) < 0 ||
            (r = img_ref_format(&ref, im->name, sizeof(im->name))) < 0 ||
            (r = img_store_tag(l->s, im, l->e)) < 0)
            return r;
        if (l->names && (r = lstrv_push(l->names, im->name)) < 0)
            return r;
        l->loaded++;
    }
    return 0;
}

static int config_of(struct loader *l, const struct staged *f, char **text, size_t *len,
                     struct img_config **cfg)
{
    int r = read_staged(l, f, IMG_CONFIG_MAX, text, len);
    if (r < 0)
        return r;
    r = img_config_parse(*text, *len, cfg, l->e);
    return r < 0 ? img_prefix(r, l->e, "%s", f->path) : 0;
}

/* ---- OCI layout ------------------------------------------------------------------------------ */

static int load_oci_manifest(struct loader *l, const char *digest, const char *index_digest,
                             const struct lstrv *names, int depth)
{
    const struct staged *f = find_blob(l, digest);
    if (!f)
        return l->e ? l->e->code : -ENOENT;
    _cleanup_free_ char *text = NULL;
    size_t len;
    int r = read_staged(l, f, IMG_MANIFEST_MAX, &text, &len);
    if (r < 0)
        return r;
    _cleanup_img_manifest_ struct img_manifest *m = NULL;
    if ((r = img_manifest_parse(text, len, NULL, &m, l->e)) < 0)
        return img_prefix(r, l->e, "manifest %s", digest);
    if ((r = img_store_put_blob(l->s, text, len, digest, NULL, l->e)) < 0)
        return r;
    if (m->kind == IMG_KIND_INDEX) {
        if (depth > 0)
            return lerr_set(l->e, -ENOTSUP, "manifest %s: an index inside an index", digest);
        const struct img_desc *d;
        if ((r = img_index_select(m, &l->want, &d, l->e)) < 0)
            return img_prefix(r, l->e, "index %s", digest);
        return load_oci_manifest(l, d->digest, digest, names, depth + 1);
    }
    const struct staged *cf = find_blob(l, m->config.digest);
    if (!cf)
        return l->e ? l->e->code : -ENOENT;
    _cleanup_free_ char *ctext = NULL;
    size_t clen;
    _cleanup_img_config_ struct img_config *cfg = NULL;
    if ((r = config_of(l, cf, &ctext, &clen, &cfg)) < 0)
        return r;
    if (cfg->diff_ids.n != m->n_descs)
        return lerr_set(l->e, -EINVAL, "config %s lists %zu layers, the manifest %zu",
                        m->config.digest, cfg->diff_ids.n, m->n_descs);
    for (size_t i = 0; i < m->n_descs; i++) {
        const struct staged *lf = find_blob(l, m->descs[i].digest);
        if (!lf)
            return l->e ? l->e->code : -ENOENT;
        if ((r = unpack_staged(l, lf, cfg->diff_ids.v[i])) < 0)
            return r;
    }
    struct img_image im = {0};
    memcpy(im.manifest, digest, IMG_DIGEST_LEN + 1);
    memcpy(im.config, m->config.digest, IMG_DIGEST_LEN + 1);
    if (index_digest)
        memcpy(im.index, index_digest, IMG_DIGEST_LEN + 1);
    r = finish_image(l, &im, ctext, clen, cfg, names);
    img_image_clear(&im);
    return r;
}

static int load_oci(struct loader *l, const struct staged *index)
{
    _cleanup_free_ char *text = NULL;
    size_t len;
    int r = read_staged(l, index, IMG_MANIFEST_MAX, &text, &len);
    if (r < 0)
        return r;
    _cleanup_json_ json_t *j = NULL;
    if ((r = ljson_parse(text, len, &j, l->e)) < 0)
        return img_prefix(r, l->e, "index.json");
    json_t *manifests = json_object_get(j, "manifests");
    if (!json_is_array(manifests) || json_array_size(manifests) > IMG_INDEX_MAX)
        return lerr_set(l->e, -EINVAL, "index.json: manifests must be an array of at most %d",
                        IMG_INDEX_MAX);
    size_t i;
    json_t *d;
    json_array_foreach (manifests, i, d) {
        const char *digest = ljson_str(d, "digest");
        if (!img_digest_valid(digest))
            return lerr_set(l->e, -EINVAL, "index.json: manifests[%zu].digest: not a digest", i);
        json_t *ann = json_object_get(d, "annotations");
        const char *name = ljson_str(ann, ANNOTATION_NAME);
        const char *refname = ljson_str(ann, ANNOTATION_REF);
        struct img_ref ref;
        _cleanup_lstrv_ struct lstrv names = LSTRV_INIT;
        if (name && img_ref_parse(name, &ref, NULL) == 0)
            r = lstrv_push(&names, name);
        else if (refname && strpbrk(refname, "/:") && img_ref_parse(refname, &ref, NULL) == 0)
            r = lstrv_push(&names, refname); /* a full reference, not a bare tag */
        else if (l->o->name)
            r = lstrv_push(&names, l->o->name);
        if (r < 0)
            return r;
        if (names.n == 0)
            continue;
        if ((r = load_oci_manifest(l, digest, NULL, &names, 0)) < 0)
            return r;
    }
    return 0;
}

/* ---- docker save ---------------------------------------------------------------------------- */

static int load_docker(struct loader *l, const struct staged *manifest)
{
    _cleanup_free_ char *text = NULL;
    size_t len;
    int r = read_staged(l, manifest, IMG_MANIFEST_MAX, &text, &len);
    if (r < 0)
        return r;
    _cleanup_json_ json_t *j = NULL;
    if ((r = ljson_parse(text, len, &j, l->e)) < 0)
        return img_prefix(r, l->e, "manifest.json");
    if (!json_is_array(j) || json_array_size(j) > IMG_INDEX_MAX)
        return lerr_set(l->e, -EINVAL, "manifest.json: must be an array of at most %d images",
                        IMG_INDEX_MAX);
    size_t i;
    json_t *item;
    json_array_foreach (j, i, item) {
        const char *config = ljson_str(item, "Config");
        json_t *layers = json_object_get(item, "Layers"), *tags = json_object_get(item, "RepoTags");
        if (!config || !json_is_array(layers))
            return lerr_set(l->e, -EINVAL, "manifest.json[%zu]: needs Config and Layers", i);
        _cleanup_lstrv_ struct lstrv names = LSTRV_INIT;
        size_t k;
        json_t *t;
        json_array_foreach (tags, k, t)
            if (json_string_value(t) && (r = lstrv_push(&names, json_string_value(t))) < 0)
                return r;
        if (names.n == 0 && l->o->name && (r = lstrv_push(&names, l->o->name)) < 0)
            return r;
        if (names.n == 0)
            continue;
        const struct staged *cf = find(l, config);
        if (!cf)
            return lerr_set(l->e, -ENOENT, "manifest.json[%zu]: %.200s is not in the archive", i,
                            config);
        _cleanup_free_ char *ctext = NULL;
        size_t clen;
        _cleanup_img_config_ struct img_config *cfg = NULL;
        if ((r = config_of(l, cf, &ctext, &clen, &cfg)) < 0)
            return r;
        if (cfg->diff_ids.n != json_array_size(layers))
            return lerr_set(l->e, -EINVAL, "manifest.json[%zu]: %zu layers, the config lists %zu",
                            i, json_array_size(layers), cfg->diff_ids.n);
        /* A manifest for the store, as a registry would have it: OCI, layers by diff_id. */
        _cleanup_json_ json_t *mdoc =
            json_pack("{s:i, s:s, s:{s:s, s:s, s:I}, s:[]}", "schemaVersion", 2, "mediaType",
                      IMG_MT_OCI_MANIFEST, "config", "mediaType", IMG_MT_OCI_CONFIG, "digest",
                      cf->digest, "size", (json_int_t)cf->size, "layers");
        if (!mdoc)
            return -ENOMEM;
        json_array_foreach (layers, k, t) {
            const struct staged *lf = json_string_value(t) ? find(l, json_string_value(t)) : NULL;
            if (!lf)
                return lerr_set(l->e, -ENOENT,
                                "manifest.json[%zu]: layer %.200s is not in the "
                                "archive",
                                i, json_string_value(t) ? json_string_value(t) : "(not a string)");
            if ((r = unpack_staged(l, lf, cfg->diff_ids.v[k])) < 0)
                return r;
            json_t *ld = json_pack("{s:s, s:s, s:I}", "mediaType", IMG_MT_OCI_LAYER, "digest",
                                   lf->digest, "size", (json_int_t)lf->size);
            if (!ld || json_array_append_new(json_object_get(mdoc, "layers"), ld) < 0)
                return -ENOMEM;
        }
        _cleanup_free_ char *mtext = ljson_dump(mdoc);
        if (!mtext)
            return -ENOMEM;
        struct img_image im = {0};
        memcpy(im.config, cf->digest, IMG_DIGEST_LEN + 1);
        r = img_store_put_blob(l->s, mtext, strlen(mtext), NULL, im.manifest, l->e);
        if (r >= 0)
            r = finish_image(l, &im, ctext, clen, cfg, &names);
        img_image_clear(&im);
        if (r < 0)
            return r;
    }
    return 0;
}

/* ---- the archive ---------------------------------------------------------------------------- */

static int stage_archive(struct loader *l, const char *path)
{
    _cleanup_archive_ struct archive *a = archive_read_new();
    if (!a)
        return -ENOMEM;
    if (archive_read_support_filter_gzip(a) < ARCHIVE_WARN ||
        archive_read_support_filter_zstd(a) < ARCHIVE_WARN ||
        archive_read_support_format_tar(a) != ARCHIVE_OK)
        return lerr_set(l->e, -ENOTSUP, "libarchive: %s", archive_error_string(a));
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return lerr_set(l->e, neg_errno(), "%s: %s", path, strerror(errno));
    if (archive_read_open_fd(a, fd, 64 * 1024) != ARCHIVE_OK)
        return lerr_set(l->e, -EINVAL, "%s: %s", path, archive_error_string(a));
    uint64_t total = 0, max = l->o->max_bytes ? l->o->max_bytes : 4 * IMG_LAYER_MAX;
    for (;;) {
        struct archive_entry *ae;
        int ar = archive_read_next_header(a, &ae);
        if (ar == ARCHIVE_EOF)
            return 0;
        if (ar < ARCHIVE_WARN)
            return lerr_set(l->e, -EINVAL, "%s: not a tar archive: %s", path,
                            archive_error_string(a));
        int r = stage_entry(l, a, ae, &total, max);
        if (r < 0)
            return r;
    }
}

int img_load_archive(struct img_store *s, const char *path, const struct img_load_opts *o,
                     struct lstrv *ret_names, struct lerr *e)
{
    static const struct img_load_opts dflt = {0};
    struct lerr local;
    if (!e)
        e = &local;
    struct loader l = {.s = s, .o = o ? o : &dflt, .e = e, .stage_dir = -1, .names = ret_names};
    int r =
        l.o->platform ? img_platform_parse(l.o->platform, &l.want, e) : img_platform_host(&l.want);
    if (r < 0)
        return r;
    char ingest[PATH_MAX];
    uint32_t rnd;
    if ((r = lcrypto_random(&rnd, sizeof(rnd))) < 0)
        return r;
    snprintf(l.stage_name, sizeof(l.stage_name), "load.%d.%08x", (int)getpid(), rnd);
    if (snprintf(ingest, sizeof(ingest), "%s/ingest", img_store_dir(s)) >= (int)sizeof(ingest))
        return -ENAMETOOLONG;
    _cleanup_close_ int ingest_fd = open(ingest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (ingest_fd < 0 || mkdirat(ingest_fd, l.stage_name, 0700) < 0)
        return lerr_set(e, neg_errno(), "%s: %s", ingest, strerror(errno));
    l.stage_dir = openat(ingest_fd, l.stage_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (l.stage_dir < 0)
        r = lerr_set(e, neg_errno(), "%s: %s", ingest, strerror(errno));
    else
        r = stage_archive(&l, path);
    if (r >= 0) {
        const struct staged *layout = find(&l, "oci-layout"), *index = find(&l, "index.json");
        const struct staged *manifest = find(&l, "manifest.json");
        if (layout && index)
            r = load_oci(&l, index);
        else if (manifest)
            r = load_docker(&l, manifest);
        else
            r = lerr_set(e, -EINVAL,
                         "%s: neither an OCI layout (oci-layout, index.json) nor a "
                         "docker save archive (manifest.json)",
                         path);
        if (r >= 0 && l.loaded == 0)
            r = lerr_set(e, -ENOENT, "%s: the archive names no image (give it a name)", path);
    }
    if (l.stage_dir >= 0)
        close(l.stage_dir);
    img_rm_rf_at(ingest_fd, l.stage_name);
    for (size_t i = 0; i < l.n_files; i++) {
        free(l.files[i].path);
        free(l.files[i].target);
    }
    free(l.files);
    if (r < 0)
        return img_prefix(r, e, "loading %s", path);
    return 0;
}
