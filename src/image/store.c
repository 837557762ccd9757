/* store.c — the content store (see store.h): blob ingest with streaming verification, layer
 * unpacking into place, the atomically rewritten image index and the garbage collector. */
#include "image/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/crypto.h"
#include "base/fs.h"
#include "base/json.h"
#include "image-internal.h"

#define INDEX_VERSION 1

struct img_store {
    char *dir;
    int gc_lock; /* flock: shared while open, exclusive for the collector */
};

struct img_ingest {
    struct img_store *s;
    char tmp[PATH_MAX];
    char digest[IMG_DIGEST_LEN + 1];
    uint64_t expected_size, written;
    int fd;
    bool committed;
    struct img_hash *hash;
};

static int pathf(char *dst, size_t size, const char *fmt, ...) _printf_(3, 4);
static int pathf(char *dst, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(dst, size, fmt, ap);
    va_end(ap);
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

int img_store_open(const char *dir, struct img_store **ret, struct lerr *e)
{
    static const char *const subdirs[] = {"blobs/sha256", "layers/sha256", "ingest"};
    char p[PATH_MAX];
    for (size_t i = 0; i < ARRAY_SIZE(subdirs); i++) {
        int r = pathf(p, sizeof(p), "%s/%s", dir, subdirs[i]);
        if (r < 0 || (r = lfs_mkdir_p(p, 0700)) < 0)
            return lerr_set(e, r, "image store %s: %s: %s", dir, subdirs[i], strerror(-r));
    }
    int r = pathf(p, sizeof(p), "%s/gc.lock", dir);
    if (r < 0)
        return lerr_set(e, r, "image store %s: path too long", dir);
    _cleanup_close_ int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || flock(fd, LOCK_SH) < 0)
        return lerr_set(e, neg_errno(), "image store %s: lock: %s", dir, strerror(errno));
    struct img_store *s = calloc(1, sizeof(*s));
    if (!s || !(s->dir = strdup(dir))) {
        free(s);
        return -ENOMEM;
    }
    s->gc_lock = TAKE_FD(fd);
    *ret = s;
    return 0;
}

void img_store_close(struct img_store *s)
{
    if (!s)
        return;
    if (s->gc_lock >= 0)
        close(s->gc_lock);
    free(s->dir);
    free(s);
}

const char *img_store_dir(const struct img_store *s)
{
    return s->dir;
}

/* ---- blobs ---------------------------------------------------------------------------------- */

int img_store_blob_path(const struct img_store *s, const char *digest, char *dst, size_t size)
{
    if (!img_digest_valid(digest))
        return -EINVAL;
    return pathf(dst, size, "%s/blobs/sha256/%s", s->dir, img_digest_hex(digest));
}

bool img_store_has_blob(const struct img_store *s, const char *digest)
{
    char p[PATH_MAX];
    return img_store_blob_path(s, digest, p, sizeof(p)) == 0 && access(p, F_OK) == 0;
}

int img_store_read_blob(struct img_store *s, const char *digest, size_t max, char **ret,
                        size_t *ret_len, struct lerr *e)
{
    char p[PATH_MAX], got[IMG_DIGEST_LEN + 1];
    int r = img_store_blob_path(s, digest, p, sizeof(p));
    if (r < 0)
        return lerr_set(e, r, "blob %.80s: not a valid digest", digest);
    _cleanup_free_ char *data = NULL;
    size_t n = 0;
    r = lfs_read_file(p, max, &data, &n);
    if (r == -ENOENT)
        return lerr_set(e, r, "blob %s is not in the store", digest);
    if (r < 0)
        return lerr_set(e, r, "blob %s: %s", digest, strerror(-r));
    if ((r = img_digest_of(data, n, got)) < 0)
        return r;
    if (strcmp(got, digest) != 0)
        return lerr_set(e, -EIO, "blob %s in the store is corrupt (its content is %s)", digest,
                        got);
    if (ret_len)
        *ret_len = n;
    *ret = TAKE_PTR(data);
    return 0;
}

int img_ingest_begin(struct img_store *s, const char *expected_digest, uint64_t expected_size,
                     struct img_ingest **ret, struct lerr *e)
{
    if (!img_digest_valid(expected_digest))
        return lerr_set(e, -EINVAL, "blob %.80s: not a valid digest", expected_digest);
    _cleanup_img_ingest_ struct img_ingest *ig = calloc(1, sizeof(*ig));
    if (!ig)
        return -ENOMEM;
    ig->fd = -1;
    ig->s = s;
    ig->expected_size = expected_size;
    memcpy(ig->digest, expected_digest, IMG_DIGEST_LEN + 1);
    int r = img_hash_new(&ig->hash);
    if (r < 0)
        return r;
    uint32_t rnd;
    if ((r = lcrypto_random(&rnd, sizeof(rnd))) < 0)
        return r;
    if ((r = pathf(ig->tmp, sizeof(ig->tmp), "%s/ingest/%s.%d.%08x", s->dir,
                   img_digest_hex(expected_digest), (int)getpid(), rnd)) < 0)
        return lerr_set(e, r, "image store %s: path too long", s->dir);
    ig->fd = open(ig->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (ig->fd < 0) {
        ig->tmp[0] = 0;
        return lerr_set(e, neg_errno(), "image store %s: %s", s->dir, strerror(errno));
    }
    *ret = TAKE_PTR(ig);
    return 0;
}

int img_ingest_write(struct img_ingest *ig, const void *data, size_t n, struct lerr *e)
{
    if (ig->written + n > ig->expected_size)
        return lerr_set(e, -EFBIG, "blob %s: more than the %llu bytes its descriptor says",
                        ig->digest, (unsigned long long)ig->expected_size);
    int r = lfs_write_all(ig->fd, data, n);
    if (r < 0)
        return lerr_set(e, r, "blob %s: writing %s: %s", ig->digest, ig->tmp, strerror(-r));
    if ((r = img_hash_update(ig->hash, data, n)) < 0)
        return r;
    ig->written += n;
    return 0;
}

uint64_t img_ingest_written(const struct img_ingest *ig)
{
    return ig->written;
}

int img_ingest_verify(struct img_ingest *ig, int *ret_fd, struct lerr *e)
{
    char got[IMG_DIGEST_LEN + 1];
    if (ig->written != ig->expected_size)
        return lerr_set(e, -EIO, "blob %s: %llu bytes, its descriptor says %llu", ig->digest,
                        (unsigned long long)ig->written, (unsigned long long)ig->expected_size);
    int r = img_hash_final(ig->hash, got);
    if (r < 0)
        return r;
    if (strcmp(got, ig->digest) != 0)
        return lerr_set(e, -EBADMSG, "blob %s: digest mismatch (the content is %s)", ig->digest,
                        got);
    if (lseek(ig->fd, 0, SEEK_SET) < 0)
        return neg_errno();
    if (ret_fd)
        *ret_fd = ig->fd;
    return 0;
}

int img_ingest_commit(struct img_ingest *ig, struct lerr *e)
{
    int r = img_ingest_verify(ig, NULL, e);
    if (r < 0)
        return r;
    char dst[PATH_MAX], dir[PATH_MAX];
    if ((r = img_store_blob_path(ig->s, ig->digest, dst, sizeof(dst))) < 0 ||
        (r = lfs_dirname(dst, dir, sizeof(dir))) < 0)
        return r;
    if (fchmod(ig->fd, 0444) < 0 || fsync(ig->fd) < 0 || rename(ig->tmp, dst) < 0)
        return lerr_set(e, neg_errno(), "blob %s: storing: %s", ig->digest, strerror(errno));
    ig->committed = true;
    if ((r = lfs_fsync_dir(dir)) < 0)
        return lerr_set(e, r, "blob %s: fsync %s: %s", ig->digest, dir, strerror(-r));
    return 0;
}

void img_ingest_free(struct img_ingest *ig)
{
    if (!ig)
        return;
    if (ig->fd >= 0)
        close(ig->fd);
    if (!ig->committed && ig->tmp[0])
        unlink(ig->tmp);
    img_hash_free(ig->hash);
    free(ig);
}

int img_store_put_blob(struct img_store *s, const void *data, size_t n, const char *expected,
                       char ret_digest[IMG_DIGEST_LEN + 1], struct lerr *e)
{
    char digest[IMG_DIGEST_LEN + 1];
    int r = img_digest_of(data, n, digest);
    if (r < 0)
        return r;
    if (expected && strcmp(expected, digest) != 0)
        return lerr_set(e, -EBADMSG, "blob %.80s: digest mismatch (the content is %s)", expected,
                        digest);
    if (!img_store_has_blob(s, digest)) {
        _cleanup_img_ingest_ struct img_ingest *ig = NULL;
        if ((r = img_ingest_begin(s, digest, n, &ig, e)) < 0 ||
            (r = img_ingest_write(ig, data, n, e)) < 0 || (r = img_ingest_commit(ig, e)) < 0)
            return r;
    }
    if (ret_digest)
        memcpy(ret_digest, digest, sizeof(digest));
    return 0;
}

/* ---- layers --------------------------------------------------------------------------------- */

int img_store_layer_path(const struct img_store *s, const char *diff_id, char *dst, size_t size)
{
    if (!img_digest_valid(diff_id))
        return -EINVAL;
    return pathf(dst, size, "%s/layers/sha256/%s", s->dir, img_digest_hex(diff_id));
}

bool img_store_has_layer(const struct img_store *s, const char *diff_id)
{
    char p[PATH_MAX];
    struct stat st;
    return img_store_layer_path(s, diff_id, p, sizeof(p)) == 0 && stat(p, &st) == 0 &&
           S_ISDIR(st.st_mode);
}

/* Unpack into ingest/<name>, check the diff_id, rename into layers/sha256/. */
static int unpack_into(struct img_store *s, int ingest_fd, const char *name, int fd,
                       const char *expected_diff_id, const struct img_unpack_opts *o,
                       struct img_unpack_stats *st, struct lerr *e)
{
    char layers[PATH_MAX];
    int r = pathf(layers, sizeof(layers), "%s/layers/sha256", s->dir);
    if (r < 0)
        return r;
    _cleanup_close_ int dfd =
        openat(ingest_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return lerr_set(e, neg_errno(), "image store %s: %s", s->dir, strerror(errno));
    if ((r = img_unpack_layer(fd, dfd, o, st, e)) < 0)
        return r;
    if (expected_diff_id && strcmp(st->diff_id, expected_diff_id) != 0)
        return lerr_set(e, -EBADMSG, "layer %s: diff_id mismatch (the content is %s)",
                        expected_diff_id, st->diff_id);
    _cleanup_close_ int layers_fd = open(layers, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (layers_fd < 0)
        return lerr_set(e, neg_errno(), "image store %s: %s", s->dir, strerror(errno));
    if (renameat(ingest_fd, name, layers_fd, img_digest_hex(st->diff_id)) < 0) {
        r = neg_errno();
        /* EEXIST/ENOTEMPTY: unpacked meanwhile by another pull; the caller removes ours. */
        if (r != -EEXIST && r != -ENOTEMPTY)
            return lerr_set(e, r, "layer %s: %s", st->diff_id, strerror(-r));
    }
    if (fsync(layers_fd) < 0)
        return lerr_set(e, neg_errno(), "layer %s: fsync: %s", st->diff_id, strerror(errno));
    return 0;
}

int img_store_unpack(struct img_store *s, int fd, const char *expected_diff_id,
                     const struct img_unpack_opts *o, struct img_unpack_stats *ret_stats,
                     struct lerr *e)
{
    char ingest[PATH_MAX], name[64];
    uint32_t rnd;
    int r = lcrypto_random(&rnd, sizeof(rnd));
    if (r < 0)
        return r;
    snprintf(name, sizeof(name), "layer.%d.%08x", (int)getpid(), rnd);
    if ((r = pathf(ingest, sizeof(ingest), "%s/ingest", s->dir)) < 0)
        return r;
    _cleanup_close_ int ingest_fd = open(ingest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (ingest_fd < 0 || mkdirat(ingest_fd, name, 0755) < 0)
        return lerr_set(e, neg_errno(), "image store %s: %s", s->dir, strerror(errno));
    struct img_unpack_stats st;
    r = unpack_into(s, ingest_fd, name, fd, expected_diff_id, o, &st, e);
    img_rm_rf_at(ingest_fd, name); /* gone after a rename; a partial layer otherwise */
    if (r < 0)
        return r;
    if (ret_stats)
        *ret_stats = st;
    return 0;
}

/* ---- the image index ------------------------------------------------------------------------ */

void img_image_clear(struct img_image *im)
{
    lstrv_free(&im->layers);
    memset(im, 0, sizeof(*im));
}

static int index_path(const struct img_store *s, char *dst, size_t size)
{
    return pathf(dst, size, "%s/images.json", s->dir);
}

/* Hold the index lock for a read-modify-write. */
static int index_lock(const struct img_store *s, struct lerr *e)
{
    char p[PATH_MAX];
    int r = pathf(p, sizeof(p), "%s/images.lock", s->dir);
    if (r < 0)
        return r;
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || flock(fd, LOCK_EX) < 0) {
        r = neg_errno();
        if (fd >= 0)
            close(fd);
        return lerr_set(e, r, "image store %s: index lock: %s", s->dir, strerror(-r));
    }
    return fd;
}

static int index_load(const struct img_store *s, json_t **ret, struct lerr *e)
{
    char p[PATH_MAX];
    int r = index_path(s, p, sizeof(p));
    if (r < 0)
        return r;
    _cleanup_free_ char *text = NULL;
    size_t n;
    r = lfs_read_file(p, IMG_INDEX_FILE_MAX, &text, &n);
    if (r == -ENOENT) {
        json_t *j = json_pack("{s:i, s:{}}", "version", INDEX_VERSION, "images");
        if (!j)
            return -ENOMEM;
        *ret = j;
        return 0;
    }
    if (r < 0)
        return lerr_set(e, r, "%s: %s", p, strerror(-r));
    _cleanup_json_ json_t *j = NULL;
    if ((r = ljson_parse(text, n, &j, e)) < 0)
        return img_prefix(r, e, "%s", p);
    if (ljson_int(j, "version", 0) != INDEX_VERSION ||
        !json_is_object(json_object_get(j, "images")))
        return lerr_set(e, -EINVAL, "%s: not an image index of version %d", p, INDEX_VERSION);
    *ret = TAKE_PTR(j);
    return 0;
}

static int index_save(const struct img_store *s, const json_t *j, struct lerr *e)
{
    char p[PATH_MAX];
    int r = index_path(s, p, sizeof(p));
    if (r < 0)
        return r;
    _cleanup_free_ char *text = json_dumps(j, JSON_INDENT(1) | JSON_SORT_KEYS);
    if (!text)
        return -ENOMEM;
    r = lfs_write_atomic(p, text, strlen(text), 0600);
    if (r < 0)
        return lerr_set(e, r, "%s: %s", p, strerror(-r));
    return 0;
}

static int normalize_name(const char *name, char *dst, size_t size, struct lerr *e)
{
    struct img_ref ref;
    int r = img_ref_parse(name, &ref, e);
    if (r < 0)
        return r;
    return img_ref_format(&ref, dst, size);
}

int img_store_tag(struct img_store *s, const struct img_image *im, struct lerr *e)
{
    char name[IMG_NAME_MAX + 1];
    int r = normalize_name(im->name, name, sizeof(name), e);
    if (r < 0)
        return r;
    if (!img_store_has_blob(s, im->manifest) || !img_store_has_blob(s, im->config))
        return lerr_set(e, -ENOENT, "image %s: manifest or config not in the store", name);
    _cleanup_json_ json_t *layers = json_array();
    if (!layers)
        return -ENOMEM;
    for (size_t i = 0; i < im->layers.n; i++) {
        if (!img_store_has_layer(s, im->layers.v[i]))
            return lerr_set(e, -ENOENT, "image %s: layer %s not in the store", name,
                            im->layers.v[i]);
        if (json_array_append_new(layers, json_string(im->layers.v[i])) < 0)
            return -ENOMEM;
    }
    json_t *entry = json_pack("{s:s, s:s, s:s, s:O}", "manifest", im->manifest, "config",
                              im->config, "platform", im->platform, "layers", layers);
    if (!entry)
        return -ENOMEM;
    if (im->index[0] && json_object_set_new(entry, "index", json_string(im->index)) < 0) {
        json_decref(entry);
        return -ENOMEM;
    }
    _cleanup_close_ int lock = index_lock(s, e);
    if (lock < 0) {
        json_decref(entry);
        return lock;
    }
    _cleanup_json_ json_t *j = NULL;
    if ((r = index_load(s, &j, e)) < 0) {
        json_decref(entry);
        return r;
    }
    if (json_object_set_new(json_object_get(j, "images"), name, entry) < 0)
        return -ENOMEM;
    return index_save(s, j, e);
}

static int image_from_json(const char *name, const json_t *v, struct img_image *ret)
{
    struct img_image im = {0};
    const char *manifest = ljson_str(v, "manifest"), *config = ljson_str(v, "config");
    const char *index = ljson_str(v, "index"), *platform = ljson_str(v, "platform");
    json_t *layers = json_object_get(v, "layers");
    if (!img_digest_valid(manifest) || !img_digest_valid(config) || !json_is_array(layers) ||
        (index && !img_digest_valid(index)))
        return -EINVAL;
    snprintf(im.name, sizeof(im.name), "%s", name);
    memcpy(im.manifest, manifest, IMG_DIGEST_LEN + 1);
    memcpy(im.config, config, IMG_DIGEST_LEN + 1);
    if (index)
        memcpy(im.index, index, IMG_DIGEST_LEN + 1);
    snprintf(im.platform, sizeof(im.platform), "%s", platform ? platform : "");
    size_t i;
    json_t *l;
    json_array_foreach (layers, i, l) {
        const char *d = json_string_value(l);
        if (!img_digest_valid(d) || lstrv_push(&im.layers, d) < 0) {
            lstrv_free(&im.layers);
            return d && img_digest_valid(d) ? -ENOMEM : -EINVAL;
        }
    }
    *ret = im;
    return 0;
}

int img_store_get(struct img_store *s, const char *name, struct img_image *ret, struct lerr *e)
{
    char norm[IMG_NAME_MAX + 1];
    int r = normalize_name(name, norm, sizeof(norm), e);
    if (r < 0)
        return r;
    _cleanup_json_ json_t *j = NULL;
    if ((r = index_load(s, &j, e)) < 0)
        return r;
    json_t *v = json_object_get(json_object_get(j, "images"), norm);
    if (!v)
        return lerr_set(e, -ENOENT, "image %s is not in the store", norm);
    if ((r = image_from_json(norm, v, ret)) < 0)
        return lerr_set(e, r, "image %s: a malformed entry in images.json", norm);
    return 0;
}

int img_store_untag(struct img_store *s, const char *name, struct lerr *e)
{
    char norm[IMG_NAME_MAX + 1];
    int r = normalize_name(name, norm, sizeof(norm), e);
    if (r < 0)
        return r;
    _cleanup_close_ int lock = index_lock(s, e);
    if (lock < 0)
        return lock;
    _cleanup_json_ json_t *j = NULL;
    if ((r = index_load(s, &j, e)) < 0)
        return r;
    if (json_object_del(json_object_get(j, "images"), norm) < 0)
        return lerr_set(e, -ENOENT, "image %s is not in the store", norm);
    return index_save(s, j, e);
}

int img_store_list(struct img_store *s, json_t **ret, struct lerr *e)
{
    return index_load(s, ret, e);
}

/* ---- garbage collection --------------------------------------------------------------------- */

/* Remove every entry of dir (a path under the store) whose name is not "sha256:<name>" in keep
 * (NULL: remove everything). */
static int sweep(const char *dir, const json_t *keep, unsigned *removed, unsigned *kept)
{
    _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return neg_errno();
    DIR *d = fdopendir(fd);
    if (!d)
        return -ENOMEM;
    fd = -1; /* owned by d */
    int r = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char digest[NAME_MAX + 8];
        snprintf(digest, sizeof(digest), "sha256:%s", de->d_name);
        if (keep && json_object_get(keep, digest)) {
            if (kept)
                (*kept)++;
            continue;
        }
        int q = img_rm_rf_at(dirfd(d), de->d_name);
        if (q < 0 && r == 0)
            r = q;
        else if (q == 0)
            (*removed)++;
    }
    closedir(d);
    return r;
}

int img_store_gc(struct img_store *s, struct img_gc_stats *ret, struct lerr *e)
{
    /* Convert our shared lock: fails while any other process has the store open. */
    if (flock(s->gc_lock, LOCK_EX | LOCK_NB) < 0) {
        int r = errno == EWOULDBLOCK ? -EBUSY : neg_errno();
        /* A failed conversion may have dropped the shared lock (flock(2)): take it again. */
        flock(s->gc_lock, LOCK_SH);
        return lerr_set(e, r, "image store %s: in use by another process (a pull or load?)",
                        s->dir);
    }
    struct img_gc_stats st = {0};
    _cleanup_json_ json_t *blobs = json_object(), *layers = json_object();
    _cleanup_json_ json_t *j = NULL;
    int r = blobs && layers ? index_load(s, &j, e) : -ENOMEM;
    if (r >= 0) {
        const char *name;
        json_t *v;
        json_object_foreach (json_object_get(j, "images"), name, v) {
            static const char *const keys[] = {"manifest", "config", "index"};
            for (size_t k = 0; k < ARRAY_SIZE(keys); k++) {
                const char *d = ljson_str(v, keys[k]);
                if (d)
                    json_object_set_new(blobs, d, json_true());
            }
            size_t i;
            json_t *l;
            json_array_foreach (json_object_get(v, "layers"), i, l)
                if (json_string_value(l))
                    json_object_set_new(layers, json_string_value(l), json_true());
        }
        char p[PATH_MAX];
        if ((r = pathf(p, sizeof(p), "%s/blobs/sha256", s->dir)) >= 0)
            r = sweep(p, blobs, &st.blobs_removed, &st.blobs_kept);
        int q;
        if ((q = pathf(p, sizeof(p), "%s/layers/sha256", s->dir)) >= 0)
            q = sweep(p, layers, &st.layers_removed, &st.layers_kept);
        r = r < 0 ? r : q;
        if ((q = pathf(p, sizeof(p), "%s/ingest", s->dir)) >= 0)
            q = sweep(p, NULL, &st.ingest_removed, NULL);
        r = r < 0 ? r : q;
        if (r < 0)
            lerr_set(e, r, "image store %s: collecting: %s", s->dir, strerror(-r));
    }
    flock(s->gc_lock, LOCK_SH);
    if (r < 0)
        return r;
    if (ret)
        *ret = st;
    return 0;
}
