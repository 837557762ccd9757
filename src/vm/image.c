/* image.c — cached guest images and the VM directories made from them (image.h). */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "vm/image.h"
#include "vm/paths.h"
#include "spawn.h"

int vm_image_key_check(const char *key, struct lerr *err)
{
    enum vm_arch a;
    const char *dash = key ? strchr(key, '-') : NULL;
    char arch[16];
    if (!dash || (size_t)(dash - key) >= sizeof(arch))
        goto bad;
    memcpy(arch, key, (size_t)(dash - key));
    arch[dash - key] = 0;
    if (vm_arch_parse(arch, &a) < 0 || !lstr_eq(arch, vm_arch_name(a)))
        goto bad;
    size_t n = strlen(dash + 1);
    if (n < 8 || n > 64)
        goto bad;
    for (const char *p = dash + 1; *p; p++)
        if (!isxdigit((unsigned char)*p) || isupper((unsigned char)*p))
            goto bad;
    return 0;
bad:
    return lerr_set(err, -EINVAL, "image \"%s\": expected ARCH-HASH (amd64-1f2e3d4c...)",
                    key ? key : "");
}

int vm_image_manifest(const char *cache, const char *key, json_t **ret, struct lerr *err)
{
    int r = vm_image_key_check(key, err);
    if (r < 0)
        return r;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s/%s", cache, key, VM_IMAGE_MANIFEST);
    _cleanup_free_ char *text = NULL;
    size_t len;
    if ((r = lfs_read_file(path, 1 << 20, &text, &len)) < 0)
        return lerr_set(err, r, "image %s: %s", key,
                        r == -ENOENT ? "not in the cache" : strerror(-r));
    json_t *j = NULL;
    if ((r = ljson_parse(text, len, &j, err)) < 0)
        return lerr_prefix(err, "image %s manifest", key);
    const char *files[] = {VM_IMAGE_ROOTFS, VM_IMAGE_KERNEL, VM_IMAGE_INITRD};
    for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
        snprintf(path, sizeof(path), "%s/%s/%s", cache, key, files[i]);
        if (access(path, R_OK) < 0) {
            json_decref(j);
            return lerr_set(err, -ENOENT, "image %s: %s is missing", key, files[i]);
        }
    }
    *ret = j;
    return 0;
}

static int cmp_built(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    const char *bx = ljson_str(x, "built") ?: "", *by = ljson_str(y, "built") ?: "";
    return strcmp(by, bx);
}

json_t *vm_image_list(const char *cache)
{
    json_t *out = json_array();
    DIR *d = opendir(cache);
    if (!d || !out)
        return out;
    json_t *items[256];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < ARRAY_SIZE(items)) {
        json_t *m;
        if (vm_image_key_check(e->d_name, NULL) < 0 ||
            vm_image_manifest(cache, e->d_name, &m, NULL) < 0)
            continue;
        json_object_set_new(m, "key", json_string(e->d_name));
        items[n++] = m;
    }
    closedir(d);
    qsort(items, n, sizeof(items[0]), cmp_built);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(out, items[i]);
    return out;
}

int vm_copy_sparse(const char *src, const char *dst, struct lerr *err)
{
    _cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return lerr_set(err, neg_errno(), "%s: %s", src, strerror(errno));
    struct stat st;
    if (fstat(in, &st) < 0)
        return lerr_set(err, neg_errno(), "%s: %s", src, strerror(errno));
    _cleanup_close_ int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out < 0)
        return lerr_set(err, neg_errno(), "%s: %s", dst, strerror(errno));
    int r = 0;
    if (ioctl(out, FICLONE, in) == 0)
        goto done;
    /* Copy the data extents only; holes stay holes. */
    off_t pos = 0;
    while (pos < st.st_size) {
        off_t data = lseek(in, pos, SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO)
                break; /* only a hole remains */
            r = lerr_set(err, neg_errno(), "%s: %s", src, strerror(errno));
            goto fail;
        }
        off_t hole = lseek(in, data, SEEK_HOLE);
        if (hole < 0)
            hole = st.st_size;
        off_t o_in = data, o_out = data;
        while (o_in < hole) {
            ssize_t n = copy_file_range(in, &o_in, out, &o_out, (size_t)(hole - o_in), 0);
            if (n <= 0) {
                r = lerr_set(err, n < 0 ? neg_errno() : -EIO, "copying %s: %s", src,
                             n < 0 ? strerror(errno) : "short copy");
                goto fail;
            }
        }
        pos = hole;
    }
done:
    if (ftruncate(out, st.st_size) < 0 || fsync(out) < 0) {
        r = lerr_set(err, neg_errno(), "%s: %s", dst, strerror(errno));
        goto fail;
    }
    return 0;
fail:
    unlink(dst);
    return r;
}

int vm_rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : neg_errno();
    if (!S_ISDIR(st.st_mode))
        return unlink(path) < 0 && errno != ENOENT ? neg_errno() : 0;
    DIR *d = opendir(path);
    if (!d)
        return neg_errno();
    int r = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (lstr_eq(e->d_name, ".") || lstr_eq(e->d_name, ".."))
            continue;
        char sub[PATH_MAX];
        if (snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name) >= (int)sizeof(sub)) {
            r = -ENAMETOOLONG;
            continue;
        }
        int k = vm_rm_rf(sub);
        if (k < 0)
            r = k;
    }
    closedir(d);
    if (rmdir(path) < 0 && errno != ENOENT)
        r = neg_errno();
    return r;
}

int vm_image_engine(const json_t *manifest, enum vm_engine *ret)
{
    const char *e = ljson_str(manifest, "engine");
    if (!e) {
        *ret = VM_ENGINE_DOCKER;
        return 0;
    }
    return vm_engine_parse(e, ret);
}

int vm_create(const char *vmroot, const char *cache, const struct vm_def *d, struct lerr *err)
{
    int r;
    _cleanup_json_ json_t *manifest = NULL;
    if ((r = vm_def_validate(d, err)) < 0)
        return r;
    if (!d->image)
        return lerr_set(err, -EINVAL, "no image given");
    if ((r = vm_image_manifest(cache, d->image, &manifest, err)) < 0)
        return r;
    if (!lstr_eq(ljson_str(manifest, "arch"), vm_arch_name(d->arch)))
        return lerr_set(err, -EINVAL, "image %s is for %s, the VM is %s", d->image,
                        ljson_str(manifest, "arch") ?: "?", vm_arch_name(d->arch));
    enum vm_engine engine;
    if (vm_image_engine(manifest, &engine) < 0)
        return lerr_set(err, -EINVAL, "image %s runs engine \"%s\", which this ledge does not know",
                        d->image, ljson_str(manifest, "engine"));
    if (engine != d->engine)
        return lerr_set(err, -EINVAL, "image %s runs the %s engine, the VM is to run %s (--engine)",
                        d->image, vm_engine_name(engine), vm_engine_name(d->engine));
    char dir[PATH_MAX], src[PATH_MAX], dst[PATH_MAX + 32];
    snprintf(dir, sizeof(dir), "%s/%s", vmroot, d->name);
    if ((r = lfs_mkdir_p(vmroot, 0755)) < 0)
        return lerr_set(err, r, "%s: %s", vmroot, strerror(-r));
    if (mkdir(dir, 0750) < 0)
        return errno == EEXIST ? lerr_set(err, -EEXIST, "a VM named %s exists", d->name)
                               : lerr_set(err, neg_errno(), "%s: %s", dir, strerror(errno));
    const char *copies[][2] = {{VM_IMAGE_ROOTFS, VM_FILE_DISK},
                               {VM_IMAGE_KERNEL, VM_FILE_KERNEL},
                               {VM_IMAGE_INITRD, VM_FILE_INITRD}};
    for (size_t i = 0; i < ARRAY_SIZE(copies); i++) {
        snprintf(src, sizeof(src), "%s/%s/%s", cache, d->image, copies[i][0]);
        snprintf(dst, sizeof(dst), "%s/%s", dir, copies[i][1]);
        if ((r = vm_copy_sparse(src, dst, err)) < 0)
            goto fail;
    }
    snprintf(dst, sizeof(dst), "%s/%s", dir, VM_FILE_DISK);
    struct stat st;
    if (stat(dst, &st) < 0) {
        r = lerr_set(err, neg_errno(), "%s: %s", dst, strerror(errno));
        goto fail;
    }
    if ((uint64_t)st.st_size > d->disk) {
        char a[32], b[32];
        r = lerr_set(err, -EINVAL, "disk: the image's root needs %s, more than %s",
                     vm_size_format((uint64_t)st.st_size, a, sizeof(a)),
                     vm_size_format(d->disk, b, sizeof(b)));
        goto fail;
    }
    if (truncate(dst, (off_t)d->disk) < 0) {
        r = lerr_set(err, neg_errno(), "%s: %s", dst, strerror(errno));
        goto fail;
    }
    if (d->data_disk) {
        /* sparse and blank: the guest formats it at its first boot and seeds it with the
         * root's state (ledge-vm-data in ledge-vm-build) */
        snprintf(dst, sizeof(dst), "%s/%s", dir, VM_FILE_DATA);
        int fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 || ftruncate(fd, (off_t)d->disk) < 0 || fsync(fd) < 0) {
            r = lerr_set(err, neg_errno(), "%s: %s", dst, strerror(errno));
            if (fd >= 0)
                close(fd);
            goto fail;
        }
        close(fd);
    }
    snprintf(dst, sizeof(dst), "%s/%s", dir, VM_FILE_DEF);
    if ((r = vm_def_save(dst, d)) < 0) {
        r = lerr_set(err, r, "%s: %s", dst, strerror(-r));
        goto fail;
    }
    lfs_fsync_dir(dir);
    return 0;
fail:
    vm_rm_rf(dir);
    return r;
}

int vm_resize_disk(const char *vmroot, const char *name, uint64_t bytes, struct lerr *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s/%s", vmroot, name, VM_FILE_DISK);
    struct stat st;
    if (stat(path, &st) < 0)
        return lerr_set(err, neg_errno(), "%s: %s", path, strerror(errno));
    if ((uint64_t)st.st_size > bytes) {
        char a[32];
        return lerr_set(err, -EINVAL, "disk: can only grow (it is %s)",
                        vm_size_format((uint64_t)st.st_size, a, sizeof(a)));
    }
    if (truncate(path, (off_t)bytes) < 0)
        return lerr_set(err, neg_errno(), "%s: %s", path, strerror(errno));
    /* the data disk grows with the root (the guest grows its file system at boot) */
    snprintf(path, sizeof(path), "%s/%s/%s", vmroot, name, VM_FILE_DATA);
    if (stat(path, &st) == 0 && (uint64_t)st.st_size < bytes && truncate(path, (off_t)bytes) < 0)
        return lerr_set(err, neg_errno(), "%s: %s", path, strerror(errno));
    return 0;
}

/* Remove <parent>/<name> and everything in it. */
static int remove_tree(const char *parent, const char *name, struct lerr *err)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/%s", parent, name);
    int r = vm_rm_rf(dir);
    return r < 0 ? lerr_set(err, r, "%s: %s", dir, strerror(-r)) : 0;
}

int vm_delete_dir(const char *vmroot, const char *name, struct lerr *err)
{
    int r = vm_name_check(name, err);
    return r < 0 ? r : remove_tree(vmroot, name, err);
}

/* ------------------------------------------------------------------ build, export, import */

#define BUILD_ARGS_MAX 32
/* ledge-vm-build prints the key (and for --help its usage): bounded. */
#define BUILD_STDOUT_MAX (64u << 10)
/* An image archive lists a handful of files. */
#define IMPORT_LISTING_MAX (1u << 20)

int vm_image_build(const char *cache, char *const *args, size_t n, char *ret_key, size_t size,
                   struct lbuf *ret_out, struct lerr *err)
{
    char prog[PATH_MAX];
    if (vm_find_program("ledge-vm-build", prog, sizeof(prog)) < 0)
        return lerr_set(err, -ENOENT, "cannot find ledge-vm-build (set LEDGE_VM_LIBDIR)");
    if (n + 4 > BUILD_ARGS_MAX)
        return lerr_set(err, -E2BIG, "ledge-vm-build: at most %d arguments", BUILD_ARGS_MAX - 4);
    char cache_opt[] = "--cache";
    char *argv[BUILD_ARGS_MAX] = {prog, cache_opt, (char *)cache};
    for (size_t i = 0; i < n; i++)
        argv[3 + i] = args[i];
    _cleanup_lbuf_ struct lbuf out = LBUF_INIT;
    out.max = BUILD_STDOUT_MAX;
    int st;
    int r = vm_run(argv, &out, &st, err);
    if (r < 0)
        return r;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return lerr_set(err, -EIO, "building the guest image failed (see the messages above)");
    /* The key is the last line. */
    const char *text = out.data ? out.data : "";
    size_t end = out.len;
    while (end > 0 && text[end - 1] == '\n')
        end--;
    size_t start = end;
    while (start > 0 && text[start - 1] != '\n')
        start--;
    if (end - start >= size)
        return lerr_set(err, -EPROTO, "ledge-vm-build printed no image key");
    memcpy(ret_key, text + start, end - start);
    ret_key[end - start] = 0;
    if (ret_out && out.len && lbuf_append(ret_out, out.data, out.len) < 0)
        return lerr_set(err, -ENOMEM, "out of memory");
    return 0;
}

int vm_image_export(const char *cache, const char *key, const char *file, struct lerr *err)
{
    _cleanup_json_ json_t *m = NULL;
    int r = vm_image_manifest(cache, key, &m, err);
    if (r < 0)
        return r;
    char tar[] = "tar", sparse[] = "--sparse", dir[] = "-C", create[] = "-cf";
    char *argv[] = {tar, sparse, dir, (char *)cache, create, (char *)file, (char *)key, NULL};
    return vm_run_tool(argv, "tar", err);
}

/* The one top-level directory of an archive's listing, or -EINVAL. */
static int listing_key(char *listing, char *key, size_t size)
{
    key[0] = 0;
    bool any = false;
    for (char *s = listing, *line; s && (line = strsep(&s, "\n"));) {
        if (!*line)
            continue;
        char *slash = strchr(line, '/');
        if (slash)
            *slash = 0;
        if (!key[0] && lstr_copy(key, size, line) < 0)
            return -EINVAL;
        if (!lstr_eq(key, line) || (slash && strstr(slash + 1, "..")))
            return -EINVAL;
        any = true;
    }
    return any ? 0 : -EINVAL;
}

int vm_image_import(const char *cache, const char *file, char *ret_key, size_t size,
                    struct lerr *err)
{
    char tar[] = "tar", list[] = "-tf";
    char *largv[] = {tar, list, (char *)file, NULL};
    _cleanup_lbuf_ struct lbuf listing = LBUF_INIT;
    listing.max = IMPORT_LISTING_MAX;
    int st;
    int r = vm_run(largv, &listing, &st, err);
    if (r < 0)
        return r;
    char key[128];
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || !listing.data ||
        listing_key(listing.data, key, sizeof(key)) < 0 || vm_image_key_check(key, NULL) < 0)
        return lerr_set(err, -EINVAL, "%s: not an image exported by `ledge vm image export`", file);
    lfs_mkdir_p(cache, 0755);
    char sparse[] = "--sparse", owner[] = "--no-same-owner", dir[] = "-C", extract[] = "-xf";
    char *xargv[] = {tar, sparse, owner, dir, (char *)cache, extract, (char *)file, NULL};
    if ((r = vm_run_tool(xargv, "tar", err)) < 0)
        return r;
    _cleanup_json_ json_t *m = NULL;
    if ((r = vm_image_manifest(cache, key, &m, err)) < 0)
        return r;
    return lstr_copy(ret_key, size, key);
}

int vm_image_remove(const char *cache, const char *key, struct lerr *err)
{
    _cleanup_json_ json_t *m = NULL;
    int r = vm_image_manifest(cache, key, &m, err);
    return r < 0 ? r : remove_tree(cache, key, err);
}
