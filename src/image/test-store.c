/* test-store.c — layer unpacking (every entry type, whiteouts, xattrs, ownership, gzip/zstd,
 * diff_ids, bounds), malicious layers with both resolvers (traversal, symlinks and hard links
 * pointing out, writes through earlier symlinks: nothing may change outside the layer), the
 * content store (ingest verification, corrupt blobs, the index, garbage collection and its lock)
 * and archive loading (docker save, OCI layout). Tars are built with libarchive's writer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "base/fs.h"
#include "image-internal.h"
#include "image/load.h"
#include "image/manifest.h"
#include "image/store.h"

static char tmp[256], outside[300];

/* ---- a tiny tar writer ---------------------------------------------------------------------- */

enum kind { F, DIR_, SYM, HARD, FIFO, CHR };
struct ent {
    enum kind k;
    const char *path;
    const char *arg; /* file content, link target */
    unsigned mode;
    unsigned uid;
    const char *xattr_name, *xattr_value;
};

static la_ssize_t fd_write(struct archive *a, void *ud, const void *buf, size_t n)
{
    (void)a;
    return write(*(int *)ud, buf, n);
}

/* A tar of ents into a memfd (compressed by filter: "", "gzip", "zstd"), rewound. */
static int make_tar(const struct ent *ents, size_t n, const char *filter)
{
    int fd = memfd_create("tar", MFD_CLOEXEC);
    assert_true(fd >= 0);
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    if (strcmp(filter, "gzip") == 0)
        archive_write_add_filter_gzip(a);
    else if (strcmp(filter, "zstd") == 0)
        assert_int_equal(archive_write_add_filter_zstd(a), ARCHIVE_OK);
    else
        archive_write_add_filter_none(a);
    archive_write_set_bytes_in_last_block(a, 1); /* no padding: the same stream either way */
    assert_int_equal(archive_write_open(a, &fd, NULL, fd_write, NULL), ARCHIVE_OK);
    for (size_t i = 0; i < n; i++) {
        const struct ent *x = &ents[i];
        struct archive_entry *e = archive_entry_new();
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s", x->path);
        /* "@" stands for the real directory outside the layer. */
        char target[PATH_MAX];
        const char *arg = x->arg;
        if (arg && arg[0] == '@') {
            snprintf(target, sizeof(target), "%s%s", outside, arg + 1);
            arg = target;
        }
        archive_entry_set_pathname(e, path);
        archive_entry_set_perm(e, x->mode ? x->mode : 0644);
        archive_entry_set_uid(e, x->uid);
        archive_entry_set_gid(e, x->uid);
        archive_entry_set_mtime(e, 1000000, 0);
        switch (x->k) {
        case F:
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_size(e, arg ? (la_int64_t)strlen(arg) : 0);
            break;
        case DIR_:
            archive_entry_set_filetype(e, AE_IFDIR);
            break;
        case SYM:
            archive_entry_set_filetype(e, AE_IFLNK);
            archive_entry_set_symlink(e, arg);
            break;
        case HARD:
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_hardlink(e, arg);
            break;
        case FIFO:
            archive_entry_set_filetype(e, AE_IFIFO);
            break;
        case CHR:
            archive_entry_set_filetype(e, AE_IFCHR);
            archive_entry_set_rdev(e, makedev(1, 3));
            break;
        }
        if (x->xattr_name)
            archive_entry_xattr_add_entry(e, x->xattr_name, x->xattr_value, strlen(x->xattr_value));
        assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
        if (x->k == F && arg)
            archive_write_data(a, arg, strlen(arg));
        archive_entry_free(e);
    }
    archive_write_close(a);
    archive_write_free(a);
    lseek(fd, 0, SEEK_SET);
    return fd;
}

static void sha_of_fd(int fd, char out[IMG_DIGEST_LEN + 1])
{
    struct stat st;
    fstat(fd, &st);
    char *p = malloc((size_t)st.st_size + 1);
    assert_int_equal(pread(fd, p, (size_t)st.st_size, 0), st.st_size);
    img_digest_of(p, (size_t)st.st_size, out);
    free(p);
}

static int fresh_dir(const char *name)
{
    _cleanup_close_ int t = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    img_rm_rf_at(t, name);
    assert_int_equal(mkdirat(t, name, 0755), 0);
    int fd = openat(t, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(fd >= 0);
    return fd;
}

static char *path_in(const char *dir, const char *rel)
{
    static char p[2][PATH_MAX * 2];
    static int i;
    i ^= 1;
    int n = snprintf(p[i], sizeof(p[i]), "%s/%s/%s", tmp, dir, rel);
    assert_true(n > 0 && (size_t)n < sizeof(p[i]));
    return p[i];
}

static char *slurp(const char *path)
{
    char *s = NULL;
    size_t n;
    return lfs_read_file(path, 1 << 20, &s, &n) == 0 ? s : NULL;
}

/* outside/ holds exactly "secret" with "secret", one link, no xattrs. */
static void assert_outside_untouched(void)
{
    DIR *d = opendir(outside);
    assert_non_null(d);
    struct dirent *de;
    int n = 0;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            if (strcmp(de->d_name, "secret") != 0)
                fail_msg("outside/%s appeared", de->d_name);
            n++;
        }
    closedir(d);
    assert_int_equal(n, 1);
    char p[PATH_MAX * 2];
    snprintf(p, sizeof(p), "%s/secret", outside);
    char *s = slurp(p);
    assert_non_null(s);
    assert_string_equal(s, "secret");
    free(s);
    struct stat st;
    assert_int_equal(lstat(p, &st), 0);
    assert_int_equal(st.st_nlink, 1);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_true(listxattr(outside, NULL, 0) <= 0);
}

/* ---- unpacking ------------------------------------------------------------------------------ */

static void test_unpack_types(void **state)
{
    const struct ent ents[] = {
        {DIR_, "./", NULL, 0755, 0, NULL, NULL},
        {DIR_, "./etc", NULL, 0750, 0, NULL, NULL},
        {F, "./etc/passwd", "root:x:0:0::/:/bin/sh\n", 0644, 0, NULL, NULL},
        {F, "usr/bin/su", "elf", 04755, 0, "user.test", "yes"},
        {F, "/abs", "a", 0600, 1000, NULL, NULL}, /* leading "/" is the layer root */
        {SYM, "bin", "usr/bin", 0777, 0, NULL, NULL},
        {SYM, "abs-link", "/etc/passwd", 0777, 0, NULL, NULL},
        {HARD, "usr/bin/su-again", "usr/bin/su", 0, 0, NULL, NULL},
        {FIFO, "run/fifo", NULL, 0600, 0, NULL, NULL},
        {CHR, "dev/null", NULL, 0666, 0, NULL, NULL},
        {F, "a/deep/implicit/file", "x", 0644, 0, NULL, NULL}, /* parents not in the tar */
        {F, "etc/.wh.shadow", "", 0, 0, NULL, NULL},
        {DIR_, "var", NULL, 0755, 0, NULL, NULL},
        {F, "var/.wh..wh..opq", "", 0, 0, NULL, NULL},
        {F, "var/kept", "k", 0644, 0, NULL, NULL},
        {F, "etc/passwd", "replaced\n", 0640, 0, NULL, NULL}, /* a later entry replaces */
        {DIR_, "opq", NULL, 0755, 0, "trusted.overlay.redirect", "/etc"},
    };
    for (int pass = 0; pass < 2; pass++) {
        int tar = make_tar(ents, ARRAY_SIZE(ents), "");
        char want[IMG_DIGEST_LEN + 1];
        sha_of_fd(tar, want);
        int dfd = fresh_dir("types");
        struct img_unpack_opts o = {.no_openat2 = pass == 1};
        struct img_unpack_stats st;
        struct lerr e = {0};
        if (img_unpack_layer(tar, dfd, &o, &st, &e) != 0)
            fail_msg("pass %d: %s", pass, e.msg);
        close(dfd);
        close(tar);
        assert_string_equal(st.diff_id, want);
        assert_int_equal(st.openat2, pass == 0 && img_have_openat2());
        assert_int_equal(st.whiteouts, 1);
        assert_int_equal(st.opaques, 1);
        assert_true(st.skipped_xattrs >= 1); /* the overlay redirect */

        char *s = slurp(path_in("types", "etc/passwd"));
        assert_string_equal(s, "replaced\n");
        free(s);
        struct stat sb;
        assert_int_equal(stat(path_in("types", "etc/passwd"), &sb), 0);
        assert_int_equal(sb.st_mode & 07777, 0640);
        assert_int_equal(stat(path_in("types", "etc"), &sb), 0);
        assert_int_equal(sb.st_mode & 07777, 0750);
        /* Entries created inside etc later changed its mtime; the tar's is restored. */
        assert_int_equal(sb.st_mtime, 1000000);
        assert_int_equal(stat(path_in("types", "var"), &sb), 0);
        assert_int_equal(sb.st_mtime, 1000000);
        assert_int_equal(stat(path_in("types", "usr/bin/su"), &sb), 0);
        assert_int_equal(sb.st_mode & 07777, 04755);
        assert_int_equal(sb.st_nlink, 2);
        if (geteuid() == 0) {
            assert_int_equal(stat(path_in("types", "abs"), &sb), 0);
            assert_int_equal(sb.st_uid, 1000);
            assert_int_equal(lstat(path_in("types", "dev/null"), &sb), 0);
            assert_true(S_ISCHR(sb.st_mode) && major(sb.st_rdev) == 1 && minor(sb.st_rdev) == 3);
            assert_int_equal(lstat(path_in("types", "etc/shadow"), &sb), 0);
            assert_true(S_ISCHR(sb.st_mode) && sb.st_rdev == makedev(0, 0));
            char v[8] = {0};
            assert_int_equal(getxattr(path_in("types", "var"), "trusted.overlay.opaque", v, 8), 1);
            assert_int_equal(v[0], 'y');
            assert_true(getxattr(path_in("types", "opq"), "trusted.overlay.redirect", v, 8) < 0);
        }
        assert_int_equal(lstat(path_in("types", "etc/.wh.shadow"), &sb), -1);
        char v[8] = {0};
        if (getxattr(path_in("types", "usr/bin/su"), "user.test", v, sizeof(v)) >= 0)
            assert_string_equal(v, "yes");
        char link[64] = {0};
        assert_true(readlink(path_in("types", "abs-link"), link, sizeof(link)) > 0);
        assert_string_equal(link, "/etc/passwd");
        assert_int_equal(lstat(path_in("types", "run/fifo"), &sb), 0);
        assert_true(S_ISFIFO(sb.st_mode));
        assert_int_equal(stat(path_in("types", "a/deep/implicit"), &sb), 0);
        assert_true(S_ISDIR(sb.st_mode));
        assert_int_equal(lstat(path_in("types", "var/kept"), &sb), 0);
    }
}

static void test_unpack_compressed(void **state)
{
    const struct ent ents[] = {{F, "f", "hello", 0644, 0, NULL, NULL}};
    char plain[IMG_DIGEST_LEN + 1];
    int tar = make_tar(ents, 1, "");
    sha_of_fd(tar, plain);
    close(tar);
    static const char *const filters[] = {"gzip", "zstd"};
    for (size_t i = 0; i < ARRAY_SIZE(filters); i++) {
        tar = make_tar(ents, 1, filters[i]);
        int dfd = fresh_dir("z");
        struct img_unpack_stats st;
        struct lerr e = {0};
        if (img_unpack_layer(tar, dfd, NULL, &st, &e) != 0)
            fail_msg("%s: %s", filters[i], e.msg);
        assert_string_equal(st.diff_id, plain); /* the diff_id is of the uncompressed tar */
        close(dfd);
        close(tar);
        char *s = slurp(path_in("z", "f"));
        assert_string_equal(s, "hello");
        free(s);
    }
    /* Not a tar. */
    int fd = memfd_create("junk", MFD_CLOEXEC);
    assert_int_equal(write(fd, "this is not a tar archive at all, no.", 37), 37);
    lseek(fd, 0, SEEK_SET);
    int dfd = fresh_dir("z");
    struct lerr e = {0};
    assert_true(img_unpack_layer(fd, dfd, NULL, NULL, &e) < 0);
    close(fd);
    close(dfd);
}

static void test_unpack_bounds(void **state)
{
    char big[4096];
    memset(big, 'b', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    const struct ent ents[] = {{F, "a", big, 0644, 0, NULL, NULL},
                               {F, "b", "x", 0644, 0, NULL, NULL},
                               {F, "c", "x", 0644, 0, NULL, NULL}};
    int tar = make_tar(ents, 3, "gzip");
    int dfd = fresh_dir("bounds");
    struct img_unpack_opts o = {.max_bytes = 2048};
    struct lerr e = {0};
    assert_int_equal(img_unpack_layer(tar, dfd, &o, NULL, &e), -EFBIG);
    assert_non_null(strstr(e.msg, "more than 2048 uncompressed bytes"));
    lseek(tar, 0, SEEK_SET);
    o = (struct img_unpack_opts){.max_entries = 2};
    assert_int_equal(img_unpack_layer(tar, dfd, &o, NULL, &e), -E2BIG);
    assert_non_null(strstr(e.msg, "more than 2 entries"));
    close(tar);
    close(dfd);
}

struct mal {
    const char *what;
    struct ent ents[4];
    size_t n;
    const char *err_openat2;  /* NULL: unpacks (inside the layer) */
    const char *err_fallback; /* NULL: unpacks */
    const char *inside;       /* a file that must then exist inside the layer ("@" = outside) */
};

static void test_malicious(void **state)
{
    const struct mal t[] = {
        {"dot-dot", {{F, "../escape", "x", 0, 0, NULL, NULL}}, 1, "\"..\"", "\"..\"", NULL},
        {"dot-dot inside",
         {{F, "a/../../escape", "x", 0, 0, NULL, NULL}},
         1,
         "\"..\"",
         "\"..\"",
         NULL},
        {"absolute", {{F, "@/abs", "x", 0, 0, NULL, NULL}}, 1, NULL, NULL, NULL},
        {"write through an absolute symlink",
         {{SYM, "l", "@", 0, 0, NULL, NULL}, {F, "l/secret", "pwned", 0, 0, NULL, NULL}},
         2,
         "dangling symlink", /* the target does not exist inside the layer */
         "not followed without openat2",
         NULL},
        {"write through a relative symlink",
         {{SYM, "l", "../../../../../../../..", 0, 0, NULL, NULL},
          {F, "l/escape", "pwned", 0, 0, NULL, NULL}},
         2,
         NULL,
         "not followed without openat2",
         "escape"},
        {"replace a symlink to outside",
         {{SYM, "l", "@/secret", 0, 0, NULL, NULL}, {F, "l", "pwned", 0, 0, NULL, NULL}},
         2,
         NULL,
         NULL,
         "l"},
        {"a directory over a symlink",
         {{SYM, "l", "@", 0, 0, NULL, NULL},
          {DIR_, "l", NULL, 0755, 0, NULL, NULL},
          {F, "l/secret", "pwned", 0, 0, NULL, NULL}},
         3,
         NULL,
         NULL,
         "l/secret"},
        {"hard link to an absolute path",
         {{HARD, "h", "@/secret", 0, 0, NULL, NULL}},
         1,
         "not in the layer",
         "resolves to nothing",
         NULL},
        {"hard link with dot-dot",
         {{HARD, "h", "../outside/secret", 0, 0, NULL, NULL}},
         1,
         "\"..\"",
         "\"..\"",
         NULL},
        {"hard link through a symlink",
         {{SYM, "l", "@", 0, 0, NULL, NULL}, {HARD, "h", "l/secret", 0, 0, NULL, NULL}},
         2,
         "not in the layer",
         "not followed without openat2",
         NULL},
        {"hard link to a symlink to outside",
         {{SYM, "l", "@/secret", 0, 0, NULL, NULL}, {HARD, "h", "l", 0, 0, NULL, NULL}},
         2,
         NULL,
         NULL,
         "l"},
        {"whiteout through a symlink",
         {{SYM, "l", "@", 0, 0, NULL, NULL}, {F, "l/.wh.secret", "", 0, 0, NULL, NULL}},
         2,
         "dangling symlink",
         "not followed without openat2",
         NULL},
        {"opaque through a symlink",
         {{SYM, "l", "@", 0, 0, NULL, NULL}, {F, "l/.wh..wh..opq", "", 0, 0, NULL, NULL}},
         2,
         "dangling symlink",
         "not followed without openat2",
         NULL},
        {"a file as a parent",
         {{F, "f", "x", 0, 0, NULL, NULL}, {F, "f/x", "y", 0, 0, NULL, NULL}},
         2,
         "f is not a directory",
         "f is not a directory",
         NULL},
        {"symlink chain out",
         {{SYM, "a", "b", 0, 0, NULL, NULL},
          {SYM, "b", "../../..@", 0, 0, NULL, NULL},
          {F, "a/secret", "pwned", 0, 0, NULL, NULL}},
         3,
         "dangling symlink",
         "not followed without openat2",
         NULL},
    };
    for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
        for (int pass = 0; pass < 2; pass++) {
            if (pass == 0 && !img_have_openat2())
                continue;
            int tar = make_tar(t[i].ents, t[i].n, "");
            int dfd = fresh_dir("mal");
            struct img_unpack_opts o = {.no_openat2 = pass == 1};
            struct lerr e = {0};
            int r = img_unpack_layer(tar, dfd, &o, NULL, &e);
            close(dfd);
            close(tar);
            const char *want = pass == 0 ? t[i].err_openat2 : t[i].err_fallback;
            if (want && (r >= 0 || !strstr(e.msg, want)))
                fail_msg("%s (%s): expected an error with \"%s\", got %d \"%s\"", t[i].what,
                         pass ? "fallback" : "openat2", want, r, e.msg);
            if (!want && r < 0)
                fail_msg("%s (%s): %s", t[i].what, pass ? "fallback" : "openat2", e.msg);
            assert_outside_untouched();
            if (!want && t[i].inside) {
                char rel[PATH_MAX * 2];
                snprintf(rel, sizeof(rel), "%s%s", t[i].inside[0] == '@' ? outside + 1 : "",
                         t[i].inside + (t[i].inside[0] == '@'));
                struct stat st;
                if (lstat(path_in("mal", rel), &st) < 0)
                    fail_msg("%s: %s not inside the layer", t[i].what, rel);
            }
        }
    }
}

/* ---- the store ------------------------------------------------------------------------------ */

static struct img_store *store_open(const char *name)
{
    char p[PATH_MAX * 2];
    snprintf(p, sizeof(p), "%s/%s", tmp, name);
    struct img_store *s = NULL;
    struct lerr e = {0};
    if (img_store_open(p, &s, &e) < 0)
        fail_msg("%s", e.msg);
    return s;
}

static void test_store_blobs(void **state)
{
    struct img_store *s = store_open("store-blobs");
    char d[IMG_DIGEST_LEN + 1], p[PATH_MAX * 2];
    struct lerr e = {0};
    assert_int_equal(img_store_put_blob(s, "hello", 5, NULL, d, &e), 0);
    assert_true(img_store_has_blob(s, d));
    char *text = NULL;
    size_t n;
    assert_int_equal(img_store_read_blob(s, d, 100, &text, &n, &e), 0);
    assert_string_equal(text, "hello");
    free(text);
    assert_int_equal(img_store_read_blob(s, d, 3, &text, &n, &e), -EFBIG);
    /* A blob changed on disk is found out on read. */
    img_store_blob_path(s, d, p, sizeof(p));
    chmod(p, 0600);
    lfs_write_atomic(p, "jello", 5, 0444);
    assert_int_equal(img_store_read_blob(s, d, 100, &text, &n, &e), -EIO);
    assert_non_null(strstr(e.msg, "corrupt"));
    /* put with the wrong expected digest */
    assert_int_equal(img_store_put_blob(s, "x", 1, d, NULL, &e), -EBADMSG);

    /* Ingest: size bound, digest mismatch, nothing left behind. */
    struct img_ingest *ig = NULL;
    assert_int_equal(img_ingest_begin(s, d, 5, &ig, &e), 0);
    assert_int_equal(img_ingest_write(ig, "hel", 3, &e), 0);
    assert_int_equal(img_ingest_write(ig, "lo!", 3, &e), -EFBIG);
    img_ingest_free(ig);
    assert_int_equal(img_ingest_begin(s, d, 5, &ig, &e), 0);
    assert_int_equal(img_ingest_write(ig, "HELLO", 5, &e), 0);
    assert_int_equal(img_ingest_commit(ig, &e), -EBADMSG);
    assert_non_null(strstr(e.msg, "digest mismatch"));
    img_ingest_free(ig);
    assert_int_equal(img_ingest_begin(s, d, 5, &ig, &e), 0);
    assert_int_equal(img_ingest_write(ig, "hell", 4, &e), 0);
    assert_int_equal(img_ingest_verify(ig, NULL, &e), -EIO); /* short */
    img_ingest_free(ig);
    snprintf(p, sizeof(p), "%s/store-blobs/ingest", tmp);
    DIR *dir = opendir(p);
    struct dirent *de;
    while ((de = readdir(dir)))
        if (de->d_name[0] != '.')
            fail_msg("left in ingest: %s", de->d_name);
    closedir(dir);
    img_store_close(s);
}

static void test_store_images_gc(void **state)
{
    struct img_store *s = store_open("store-images");
    struct lerr e = {0};
    const struct ent l1[] = {{F, "one", "1", 0644, 0, NULL, NULL}};
    const struct ent l2[] = {{F, "two", "2", 0644, 0, NULL, NULL}};
    int t1 = make_tar(l1, 1, "gzip"), t2 = make_tar(l2, 1, "");
    struct img_unpack_stats st1, st2;
    /* A wrong diff_id: refused, nothing stored. */
    const char *wrong = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    assert_int_equal(img_store_unpack(s, t1, wrong, NULL, NULL, &e), -EBADMSG);
    assert_non_null(strstr(e.msg, "diff_id mismatch"));
    assert_false(img_store_has_layer(s, wrong));
    lseek(t1, 0, SEEK_SET);
    assert_int_equal(img_store_unpack(s, t1, NULL, NULL, &st1, &e), 0);
    assert_int_equal(img_store_unpack(s, t2, NULL, NULL, &st2, &e), 0);
    assert_true(img_store_has_layer(s, st1.diff_id));
    close(t1);
    close(t2);

    struct img_image im = {0};
    assert_int_equal(img_store_put_blob(s, "{\"c\":1}", 7, NULL, im.config, &e), 0);
    assert_int_equal(img_store_put_blob(s, "{\"m\":1}", 7, NULL, im.manifest, &e), 0);
    snprintf(im.name, sizeof(im.name), "localhost:5000/app");
    snprintf(im.platform, sizeof(im.platform), "linux/amd64");
    lstrv_push(&im.layers, st1.diff_id);
    assert_int_equal(img_store_tag(s, &im, &e), 0);
    /* A name whose layer is missing is refused. */
    struct img_image bad = im;
    bad.layers = (struct lstrv)LSTRV_INIT;
    lstrv_push(&bad.layers, wrong);
    snprintf(bad.name, sizeof(bad.name), "other");
    assert_int_equal(img_store_tag(s, &bad, &e), -ENOENT);
    lstrv_free(&bad.layers);

    struct img_image got;
    assert_int_equal(img_store_get(s, "localhost:5000/app:latest", &got, &e), 0);
    assert_string_equal(got.name, "localhost:5000/app:latest");
    assert_string_equal(got.manifest, im.manifest);
    assert_int_equal(got.layers.n, 1);
    img_image_clear(&got);
    assert_int_equal(img_store_get(s, "nothere", &got, &e), -ENOENT);
    assert_non_null(strstr(e.msg, "docker.io/library/nothere:latest is not in the store"));

    /* Another open store (a pull elsewhere) keeps the collector out. */
    struct img_store *other = store_open("store-images");
    struct img_gc_stats gs;
    assert_int_equal(img_store_gc(s, &gs, &e), -EBUSY);
    img_store_close(other);

    /* Leftovers of an interrupted pull, and an unnamed blob and layer: collected. */
    char p[PATH_MAX * 2];
    snprintf(p, sizeof(p), "%s/store-images/ingest/sha256-partial", tmp);
    lfs_write_atomic(p, "x", 1, 0600);
    assert_int_equal(img_store_put_blob(s, "orphan", 6, NULL, NULL, &e), 0);
    assert_int_equal(img_store_gc(s, &gs, &e), 0);
    assert_int_equal(gs.blobs_removed, 1);
    assert_int_equal(gs.layers_removed, 1); /* layer two */
    assert_int_equal(gs.blobs_kept, 2);
    assert_int_equal(gs.layers_kept, 1);
    assert_true(gs.ingest_removed >= 1);
    assert_true(img_store_has_layer(s, st1.diff_id));
    assert_false(img_store_has_layer(s, st2.diff_id));
    /* The shared lock is back: another open still works and gc is refused again. */
    other = store_open("store-images");
    assert_int_equal(img_store_gc(s, &gs, &e), -EBUSY);
    img_store_close(other);

    assert_int_equal(img_store_untag(s, "localhost:5000/app", &e), 0);
    assert_int_equal(img_store_untag(s, "localhost:5000/app", &e), -ENOENT);
    assert_int_equal(img_store_gc(s, &gs, &e), 0);
    assert_int_equal(gs.blobs_removed, 2);
    assert_int_equal(gs.layers_removed, 1);
    assert_false(img_store_has_layer(s, st1.diff_id));
    img_image_clear(&im);
    img_store_close(s);
}

/* ---- archives ------------------------------------------------------------------------------- */

/* Write a tar of (name, content) pairs plus symlinks ("name", NULL, target) to path; a
 * content equal to layer_data is written with layer_len bytes (it holds NULs). */
static const char *layer_data;
static size_t layer_len;
static size_t content_len(const char *c)
{
    return c == layer_data ? layer_len : strlen(c);
}

static void write_archive(const char *path, const char *const (*files)[3], size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    archive_write_open(a, &fd, NULL, fd_write, NULL);
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, files[i][0]);
        archive_entry_set_perm(e, 0644);
        if (files[i][1]) {
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_size(e, (la_int64_t)content_len(files[i][1]));
        } else {
            archive_entry_set_filetype(e, AE_IFLNK);
            archive_entry_set_symlink(e, files[i][2]);
        }
        archive_write_header(a, e);
        if (files[i][1])
            archive_write_data(a, files[i][1], content_len(files[i][1]));
        archive_entry_free(e);
    }
    archive_write_close(a);
    archive_write_free(a);
    close(fd);
}

static char *fd_text(int fd)
{
    struct stat st;
    fstat(fd, &st);
    char *p = calloc(1, (size_t)st.st_size + 1);
    assert_int_equal(pread(fd, p, (size_t)st.st_size, 0), st.st_size);
    return p;
}

static void test_load(void **state)
{
    struct img_store *s = store_open("store-load");
    const struct ent l1[] = {{F, "hello", "world", 0644, 0, NULL, NULL}};
    int t = make_tar(l1, 1, "");
    char *layer = fd_text(t);
    struct stat lst;
    fstat(t, &lst);
    layer_data = layer;
    layer_len = (size_t)lst.st_size;
    char diff[IMG_DIGEST_LEN + 1], cfgd[IMG_DIGEST_LEN + 1];
    sha_of_fd(t, diff);
    close(t);
    char config[512];
    snprintf(config, sizeof(config),
             "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
             "\"diff_ids\":[\"%s\",\"%s\"]}}",
             diff, diff);
    img_digest_of(config, strlen(config), cfgd);
    char cfgname[128], manifest[1024];
    snprintf(cfgname, sizeof(cfgname), "%s.json", img_digest_hex(cfgd));
    /* docker save: the same layer twice, the second as a symlink (as docker writes repeats). */
    snprintf(manifest, sizeof(manifest),
             "[{\"Config\":\"%s\",\"RepoTags\":[\"example.com/app:1\",\"app:2\"],"
             "\"Layers\":[\"aaa/layer.tar\",\"bbb/layer.tar\"]}]",
             cfgname);
    const char *const files[][3] = {
        {"aaa/layer.tar", layer, NULL}, {"bbb/layer.tar", NULL, "../aaa/layer.tar"},
        {cfgname, config, NULL},        {"manifest.json", manifest, NULL},
        {"repositories", "{}", NULL},
    };
    char path[PATH_MAX * 2];
    snprintf(path, sizeof(path), "%s/save.tar", tmp);
    write_archive(path, files, ARRAY_SIZE(files));
    struct lstrv names = LSTRV_INIT;
    struct lerr e = {0};
    if (img_load_archive(s, path, NULL, &names, &e) != 0)
        fail_msg("%s", e.msg);
    assert_int_equal(names.n, 2);
    assert_string_equal(names.v[0], "example.com/app:1");
    assert_string_equal(names.v[1], "docker.io/library/app:2");
    lstrv_free(&names);
    struct img_image im;
    assert_int_equal(img_store_get(s, "app:2", &im, &e), 0);
    assert_string_equal(im.config, cfgd);
    assert_int_equal(im.layers.n, 2);
    assert_true(img_store_has_layer(s, diff));
    img_image_clear(&im);

    /* A layer whose content is not the config's diff_id. */
    const char *const tampered[][3] = {
        {"aaa/layer.tar", "not the same", NULL},
        {"bbb/layer.tar", layer, NULL},
        {cfgname, config, NULL},
        {"manifest.json", manifest, NULL},
    };
    write_archive(path, tampered, ARRAY_SIZE(tampered));
    struct img_store *fresh = store_open("store-load-fresh");
    assert_true(img_load_archive(fresh, path, NULL, NULL, &e) < 0);
    assert_non_null(strstr(e.msg, "aaa/layer.tar"));
    img_store_close(fresh);

    /* A path out of the archive, and an archive of neither format. */
    const char *const evil[][3] = {{"../manifest.json", "[]", NULL}};
    write_archive(path, evil, 1);
    assert_int_equal(img_load_archive(s, path, NULL, NULL, &e), -EPERM);
    assert_non_null(strstr(e.msg, "path leaves the archive"));
    const char *const neither[][3] = {{"readme", "hi", NULL}};
    write_archive(path, neither, 1);
    assert_int_equal(img_load_archive(s, path, NULL, NULL, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "neither an OCI layout"));

    /* An OCI layout with only a tag as ref.name: needs a name from the caller. */
    char mdoc[1024], md[IMG_DIGEST_LEN + 1], index[1024], lpath[128], cpath[128], mpath[128];
    snprintf(config, sizeof(config),
             "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
             "\"diff_ids\":[\"%s\"]}}",
             diff);
    img_digest_of(config, strlen(config), cfgd);
    snprintf(mdoc, sizeof(mdoc),
             "{\"schemaVersion\":2,\"mediaType\":\"" IMG_MT_OCI_MANIFEST "\",\"config\":{"
             "\"mediaType\":\"" IMG_MT_OCI_CONFIG "\",\"digest\":\"%s\",\"size\":%zu},"
             "\"layers\":[{\"mediaType\":\"" IMG_MT_OCI_LAYER "\",\"digest\":\"%s\","
             "\"size\":%zu}]}",
             cfgd, strlen(config), diff, layer_len);
    img_digest_of(mdoc, strlen(mdoc), md);
    snprintf(index, sizeof(index),
             "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"" IMG_MT_OCI_MANIFEST
             "\",\"digest\":\"%s\",\"size\":%zu,\"annotations\":{"
             "\"org.opencontainers.image.ref.name\":\"v1\"}}]}",
             md, strlen(mdoc));
    snprintf(lpath, sizeof(lpath), "blobs/sha256/%s", img_digest_hex(diff));
    snprintf(cpath, sizeof(cpath), "blobs/sha256/%s", img_digest_hex(cfgd));
    snprintf(mpath, sizeof(mpath), "blobs/sha256/%s", img_digest_hex(md));
    const char *const oci[][3] = {
        {"oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}", NULL},
        {"index.json", index, NULL},
        {lpath, layer, NULL},
        {cpath, config, NULL},
        {mpath, mdoc, NULL},
    };
    write_archive(path, oci, ARRAY_SIZE(oci));
    assert_int_equal(img_load_archive(s, path, NULL, NULL, &e), -ENOENT);
    assert_non_null(strstr(e.msg, "names no image"));
    struct img_load_opts lo = {.name = "localhost/oci:v1"};
    if (img_load_archive(s, path, &lo, NULL, &e) != 0)
        fail_msg("%s", e.msg);
    assert_int_equal(img_store_get(s, "localhost/oci:v1", &im, &e), 0);
    assert_string_equal(im.manifest, md);
    img_image_clear(&im);
    free(layer);
    img_store_close(s);
}

static int setup(void **state)
{
    snprintf(tmp, sizeof(tmp), "/tmp/ledge-test-image-XXXXXX");
    if (!mkdtemp(tmp))
        return -1;
    snprintf(outside, sizeof(outside), "%s/outside", tmp);
    mkdir(outside, 0700);
    char p[PATH_MAX * 2];
    snprintf(p, sizeof(p), "%s/secret", outside);
    return lfs_write_atomic(p, "secret", 6, 0600);
}

static int teardown(void **state)
{
    img_rm_rf_at(AT_FDCWD, tmp);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unpack_types),  cmocka_unit_test(test_unpack_compressed),
        cmocka_unit_test(test_unpack_bounds), cmocka_unit_test(test_malicious),
        cmocka_unit_test(test_store_blobs),   cmocka_unit_test(test_store_images_gc),
        cmocka_unit_test(test_load),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
