/* fuzz-layer.c — libFuzzer target for layer unpacking: the input is either a tar stream as is
 * (first byte even) or a recipe (first byte odd) from which a tar is built with libarchive's
 * writer, entries made of traversal-prone names ("..", "/", symlinks to the real directory
 * outside the layer, hard links, whiteouts). After each unpack the directory beside the layer
 * must be exactly as it was: nothing may escape. Both resolvers (openat2 and the fallback) run. */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image-internal.h"
#include "image/unpack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char base[256], outside[PATH_MAX];
static int base_fd = -1;

static void remove_base(void)
{
    img_rm_rf_at(AT_FDCWD, base);
}

static void setup(void)
{
    if (base_fd >= 0)
        return;
    const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(base, sizeof(base), "%s/ledge-fuzz-layer-%d", tmp, (int)getpid());
    snprintf(outside, sizeof(outside), "%s/outside", base);
    mkdir(base, 0700);
    mkdir(outside, 0700);
    int fd = open(outside, O_RDONLY | O_DIRECTORY);
    int s = openat(fd, "sentinel", O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || s < 0 || write(s, "x", 1) != 1)
        abort();
    close(s);
    close(fd);
    base_fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (base_fd < 0)
        abort();
    atexit(remove_base);
}

/* Nothing but base/{outside/sentinel ("x"), layer}. */
static void check_nothing_escaped(void)
{
    DIR *d = opendir(base);
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && strcmp(de->d_name, "outside") &&
            strcmp(de->d_name, "layer"))
            abort();
    closedir(d);
    d = opendir(outside);
    int n = 0;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            if (strcmp(de->d_name, "sentinel") != 0)
                abort();
            n++;
        }
    closedir(d);
    struct stat st;
    char p[PATH_MAX + 16];
    snprintf(p, sizeof(p), "%s/sentinel", outside);
    if (n != 1 || lstat(p, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size != 1 || st.st_nlink != 1)
        abort();
}

static const char *const name_tokens[] = {
    "a", "b",       "link",  "..",           ".", "",   "outside",
    "/", "x/../..", ".wh.a", ".wh..wh..opq", "c", "etc"};
static const char *const target_tokens[] = {
    "/",    "..",   "../..",   "../outside", "a",
    "link", "/etc", "b/../..", NULL /* outside's real path */};

static uint8_t take(const uint8_t **p, size_t *n)
{
    if (!*n)
        return 0;
    (*n)--;
    return *(*p)++;
}

static void build_path(const uint8_t **p, size_t *n, char *dst, size_t size,
                       const char *const *tokens, size_t nt, bool allow_outside)
{
    size_t parts = 1 + take(p, n) % 4, off = 0;
    dst[0] = 0;
    for (size_t i = 0; i < parts; i++) {
        uint8_t t = take(p, n) % nt;
        const char *tok = tokens[t] ? tokens[t] : (allow_outside ? outside : "a");
        int k = snprintf(dst + off, size - off, "%s%s", i ? "/" : "", tok);
        if (k < 0 || (size_t)k >= size - off)
            break;
        off += (size_t)k;
    }
}

static la_ssize_t mem_write(struct archive *a, void *ud, const void *buf, size_t n)
{
    (void)a;
    FILE *f = ud;
    return fwrite(buf, 1, n, f) == n ? (la_ssize_t)n : -1;
}

/* A tar from the recipe, written to fd. */
static void build_tar(const uint8_t *p, size_t n, int fd)
{
    FILE *f = fdopen(dup(fd), "w");
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    archive_write_add_filter_none(a);
    archive_write_open(a, f, NULL, mem_write, NULL);
    for (int i = 0; i < 32 && n; i++) {
        char path[512], target[512];
        uint8_t type = take(&p, &n) % 8;
        build_path(&p, &n, path, sizeof(path), name_tokens, sizeof(name_tokens) / sizeof(char *),
                   false);
        build_path(&p, &n, target, sizeof(target), target_tokens,
                   sizeof(target_tokens) / sizeof(char *), true);
        size_t len = take(&p, &n) % 32;
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, path);
        archive_entry_set_perm(e, 0644);
        switch (type) {
        case 0:
        case 4:
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_size(e, (la_int64_t)len);
            break;
        case 1:
        case 5:
            archive_entry_set_filetype(e, AE_IFDIR);
            archive_entry_set_perm(e, 0755);
            break;
        case 2:
            archive_entry_set_filetype(e, AE_IFLNK);
            archive_entry_set_symlink(e, target);
            break;
        case 3:
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_hardlink(e, target);
            break;
        case 6:
            archive_entry_set_filetype(e, AE_IFIFO);
            break;
        case 7:
            archive_entry_set_filetype(e, AE_IFCHR);
            archive_entry_set_rdev(e, 0);
            break;
        }
        archive_write_header(a, e);
        if ((type == 0 || type == 4) && len) {
            char buf[32];
            memset(buf, 'z', sizeof(buf));
            archive_write_data(a, buf, len);
        }
        archive_entry_free(e);
    }
    archive_write_close(a);
    archive_write_free(a);
    fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > (1 << 20))
        return 0;
    setup();
    int fd = memfd_create("layer", MFD_CLOEXEC);
    if (fd < 0)
        abort();
    if (data[0] & 1) {
        build_tar(data + 1, size - 1, fd);
    } else if (write(fd, data + 1, size - 1) != (ssize_t)(size - 1)) {
        abort();
    }
    for (int pass = 0; pass < 2; pass++) {
        img_rm_rf_at(base_fd, "layer");
        if (mkdirat(base_fd, "layer", 0755) < 0)
            abort();
        int dfd = openat(base_fd, "layer", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || lseek(fd, 0, SEEK_SET) < 0)
            abort();
        struct img_unpack_opts o = {
            .max_bytes = 1 << 22, .max_entries = 256, .no_openat2 = pass == 1};
        struct img_unpack_stats st;
        struct lerr e;
        (void)img_unpack_layer(fd, dfd, &o, &st, &e);
        close(dfd);
        check_nothing_escaped();
    }
    img_rm_rf_at(base_fd, "layer");
    close(fd);
    return 0;
}
