/* unpack.c — safe layer unpacking with libarchive (see unpack.h). Two archive readers are
 * chained: the outer one only decompresses (raw format, gzip/zstd filters) and its bytes are
 * hashed into the layer's diff_id as they pass; the inner one parses tar from them. Every entry
 * is created relative to the layer's directory fd: its parent is resolved inside the layer, its
 * last component is created with O_NOFOLLOW/O_EXCL semantics after removing what was there, so
 * no earlier symlink, hard link or ".." can redirect a write outside. */
#include "image/unpack.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "base/macro.h"
#include "base/str.h"
#include "image-internal.h"

#define WHITEOUT_PREFIX ".wh."
#define WHITEOUT_OPAQUE ".wh..wh..opq"
#define OVERLAY_OPAQUE_XATTR "trusted.overlay.opaque"
#define CHUNK (64 * 1024)
#define MAX_COMPONENTS (PATH_MAX / 2)

static void archive_freep(struct archive **a)
{
    if (*a)
        archive_read_free(*a);
}
#define _cleanup_archive_ _cleanup_(archive_freep)

/* ---- removing ------------------------------------------------------------------------------- */

static int rm_rf_depth(int parent, const char *name, unsigned depth)
{
    if (unlinkat(parent, name, 0) == 0)
        return 0;
    if (errno == ENOENT)
        return 0;
    if (errno != EISDIR && errno != EPERM)
        return neg_errno();
    if (depth > MAX_COMPONENTS)
        return -ELOOP;
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return neg_errno();
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -ENOMEM;
    }
    int r = 0;
    struct dirent *de;
    while (r == 0 && (de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        r = rm_rf_depth(dirfd(d), de->d_name, depth + 1);
    }
    closedir(d);
    if (r == 0 && unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        r = neg_errno();
    return r;
}

int img_rm_rf_at(int dirfd, const char *name)
{
    return rm_rf_depth(dirfd, name, 0);
}

/* ---- resolving inside the layer ------------------------------------------------------------- */

/* Directory times are set again at the end: entries created inside a directory change its
 * mtime. At most DIRTIMES_MAX directories are remembered (beyond, they keep the time of their
 * last change). */
#define DIRTIMES_MAX 65536

struct dirtime {
    char *path;
    struct timespec ts[2];
};

struct unpacker {
    int root;          /* the layer directory */
    bool use_openat2;  /* else: walk without following symlinks */
    bool as_root;      /* apply ownership, create devices */
    const char *entry; /* for messages */
    struct lerr *e;
    struct img_unpack_stats st;
    struct dirtime *dirtimes;
    size_t n_dirtimes, cap_dirtimes;
};

bool img_have_openat2(void)
{
    struct open_how how = {.flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_IN_ROOT};
    int fd = (int)syscall(SYS_openat2, AT_FDCWD, "/", &how, sizeof(how));
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

static int openat2_in_root(int root, const char *path, int flags)
{
    struct open_how how = {
        .flags = (uint64_t)(flags | O_CLOEXEC),
        .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
    };
    for (int tries = 0; tries < 16; tries++) {
        int fd = (int)syscall(SYS_openat2, root, path, &how, sizeof(how));
        if (fd >= 0)
            return fd;
        if (errno != EAGAIN && errno != EINTR)
            return neg_errno();
    }
    return -EAGAIN;
}

/* An entry's path as components: leading "/" and "./" dropped (as Docker does), "." skipped,
 * ".." refused. buf receives the components NUL-separated; returns the count (0 = the root). */
static int split_path(struct unpacker *u, const char *path, char *buf, size_t size, char **comps,
                      size_t max)
{
    if (!path)
        return lerr_set(u->e, -EINVAL, "an entry without a path name");
    if (lstr_copy(buf, size, path) < 0)
        return lerr_set(u->e, -ENAMETOOLONG, "entry %.200s…: path longer than %zu bytes", path,
                        size - 1);
    size_t n = 0;
    for (char *save = NULL, *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
        if (strcmp(c, ".") == 0)
            continue;
        if (strcmp(c, "..") == 0)
            return lerr_set(u->e, -EPERM, "entry %.300s: \"..\" in a layer path is refused", path);
        if (strlen(c) > NAME_MAX)
            return lerr_set(u->e, -ENAMETOOLONG, "entry %.300s: a name longer than %d bytes", path,
                            NAME_MAX);
        if (n == max)
            return lerr_set(u->e, -ENAMETOOLONG, "entry %.300s: too deep", path);
        comps[n++] = c;
    }
    return (int)n;
}

static int join(char *dst, size_t size, char *const *comps, size_t n)
{
    size_t off = 0;
    dst[0] = 0;
    for (size_t i = 0; i < n; i++) {
        int k = snprintf(dst + off, size - off, "%s%s", i ? "/" : "", comps[i]);
        if (k < 0 || (size_t)k >= size - off)
            return -ENAMETOOLONG;
        off += (size_t)k;
    }
    return 0;
}

/* The directory comps[0..n) inside the layer as an O_PATH fd, creating missing directories
 * (0755, root's) on the way. With openat2 each prefix is resolved from the layer root with
 * RESOLVE_IN_ROOT, so symlinks inside the layer resolve inside it (absolute ones against the
 * layer root) and ".." stops at it. Without openat2, symlinks are not followed at all. */
static int open_dir(struct unpacker *u, char *const *comps, size_t n, bool create)
{
    int cur = fcntl(u->root, F_DUPFD_CLOEXEC, 3);
    if (cur < 0)
        return neg_errno();
    char prefix[PATH_MAX];
    for (size_t i = 0; i < n; i++) {
        int next = -1;
        for (int attempt = 0; attempt < 2; attempt++) {
            if (u->use_openat2) {
                int r = join(prefix, sizeof(prefix), comps, i + 1);
                next = r < 0 ? r : openat2_in_root(u->root, prefix, O_PATH | O_DIRECTORY);
            } else {
                next = openat(cur, comps[i], O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (next < 0)
                    next = neg_errno();
            }
            if (next != -ENOENT || !create || attempt == 1)
                break;
            /* Missing: create it in the directory resolved so far, then resolve again. */
            if (mkdirat(cur, comps[i], 0755) < 0 && errno != EEXIST) {
                next = neg_errno();
                break;
            }
        }
        struct stat st;
        bool is_link = next == -ENOTDIR && fstatat(cur, comps[i], &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                       S_ISLNK(st.st_mode);
        close(cur);
        if (next < 0) {
            if (next == -ENOENT)
                return lerr_set(u->e, next,
                                "entry %.300s: parent %.300s resolves to nothing "
                                "(a dangling symlink?)",
                                u->entry, comps[i]);
            if (is_link && !u->use_openat2)
                return lerr_set(u->e, -ELOOP,
                                "entry %.300s: %.300s is a symlink (symlinks in layer paths are "
                                "not followed without openat2)",
                                u->entry, comps[i]);
            if (next == -ENOTDIR)
                return lerr_set(u->e, next, "entry %.300s: %.300s is not a directory", u->entry,
                                comps[i]);
            if (next == -EXDEV)
                return lerr_set(u->e, next, "entry %.300s: path crosses a mount point", u->entry);
            return lerr_set(u->e, next, "entry %.300s: cannot open directory %.300s: %s", u->entry,
                            comps[i], strerror(-next));
        }
        cur = next;
    }
    return cur;
}

/* Make room for a new entry called name in dir: remove what is there unless both are
 * directories (then the existing one is kept and *kept set). */
static int clear_name(struct unpacker *u, int dir, const char *name, bool new_is_dir, bool *kept)
{
    struct stat st;
    if (kept)
        *kept = false;
    if (fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT
                   ? 0
                   : lerr_set(u->e, neg_errno(), "entry %.300s: %s", u->entry, strerror(errno));
    if (new_is_dir && S_ISDIR(st.st_mode)) {
        if (kept)
            *kept = true;
        return 0;
    }
    int r = img_rm_rf_at(dir, name);
    if (r < 0)
        return lerr_set(u->e, r, "entry %.300s: cannot replace the earlier entry: %s", u->entry,
                        strerror(-r));
    return 0;
}

/* ---- metadata ------------------------------------------------------------------------------- */

static bool xattr_allowed(const char *name)
{
    /* overlayfs's own attributes (redirects, metacopy, opaque) must come from us, never from a
     * layer: they steer lookups inside the overlay. */
    return !lstr_startswith(name, "trusted.overlay.") && !lstr_startswith(name, "user.overlay.");
}

/* xattrs of the entry onto fd (a regular file or directory). */
static int apply_xattrs(struct unpacker *u, struct archive_entry *ae, int fd)
{
    const char *name;
    const void *value;
    size_t size;
    archive_entry_xattr_reset(ae);
    while (archive_entry_xattr_next(ae, &name, &value, &size) == ARCHIVE_OK) {
        if (!name || !xattr_allowed(name)) {
            u->st.skipped_xattrs++;
            continue;
        }
        if (fsetxattr(fd, name, value, size, 0) < 0) {
            if (errno == ENOTSUP || errno == EPERM || errno == EACCES || errno == EINVAL) {
                u->st.skipped_xattrs++;
                continue;
            }
            return lerr_set(u->e, neg_errno(), "entry %.300s: xattr %.100s: %s", u->entry, name,
                            strerror(errno));
        }
    }
    return 0;
}

/* Owner, mode, xattrs and times onto an open file or directory. chown before chmod: chown
 * clears set-id bits. */
static int apply_meta_fd(struct unpacker *u, struct archive_entry *ae, int fd)
{
    if (u->as_root && fchown(fd, (uid_t)archive_entry_uid(ae), (gid_t)archive_entry_gid(ae)) < 0)
        return lerr_set(u->e, neg_errno(), "entry %.300s: chown: %s", u->entry, strerror(errno));
    if (fchmod(fd, archive_entry_perm(ae) & 07777) < 0)
        return lerr_set(u->e, neg_errno(), "entry %.300s: chmod: %s", u->entry, strerror(errno));
    int r = apply_xattrs(u, ae, fd);
    if (r < 0)
        return r;
    struct timespec ts[2] = {
        {.tv_sec = archive_entry_atime(ae), .tv_nsec = archive_entry_atime_nsec(ae)},
        {.tv_sec = archive_entry_mtime(ae), .tv_nsec = archive_entry_mtime_nsec(ae)},
    };
    if (!archive_entry_atime_is_set(ae))
        ts[0] = ts[1];
    (void)futimens(fd, ts);
    return 0;
}

/* Owner and times of a node that cannot be opened (symlink, device, fifo), by name. */
static int apply_meta_at(struct unpacker *u, struct archive_entry *ae, int dir, const char *name,
                         bool is_link)
{
    if (u->as_root && fchownat(dir, name, (uid_t)archive_entry_uid(ae),
                               (gid_t)archive_entry_gid(ae), AT_SYMLINK_NOFOLLOW) < 0)
        return lerr_set(u->e, neg_errno(), "entry %.300s: chown: %s", u->entry, strerror(errno));
    if (!is_link && fchmodat(dir, name, archive_entry_perm(ae) & 07777, 0) < 0)
        return lerr_set(u->e, neg_errno(), "entry %.300s: chmod: %s", u->entry, strerror(errno));
    struct timespec ts[2] = {
        {.tv_sec = archive_entry_mtime(ae), .tv_nsec = archive_entry_mtime_nsec(ae)},
        {.tv_sec = archive_entry_mtime(ae), .tv_nsec = archive_entry_mtime_nsec(ae)},
    };
    (void)utimensat(dir, name, ts, AT_SYMLINK_NOFOLLOW);
    return 0;
}

/* ---- entries -------------------------------------------------------------------------------- */

static int write_file(struct unpacker *u, struct archive *a, struct archive_entry *ae, int dir,
                      const char *name)
{
    int r = clear_name(u, dir, name, false, NULL);
    if (r < 0)
        return r;
    _cleanup_close_ int fd =
        openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return lerr_set(u->e, neg_errno(), "entry %.300s: %s", u->entry, strerror(errno));
    for (;;) {
        const void *buf;
        size_t size;
        la_int64_t offset;
        int ar = archive_read_data_block(a, &buf, &size, &offset);
        if (ar == ARCHIVE_EOF)
            break;
        if (ar < ARCHIVE_WARN)
            return lerr_set(u->e, -EIO, "entry %.300s: %s", u->entry, archive_error_string(a));
        const char *p = buf;
        while (size) {
            ssize_t w = pwrite(fd, p, size, (off_t)offset);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                return lerr_set(u->e, neg_errno(), "entry %.300s: write: %s", u->entry,
                                strerror(errno));
            p += w;
            size -= (size_t)w;
            offset += w;
        }
    }
    /* Sparse files end in a hole the data blocks do not cover. */
    if (archive_entry_size_is_set(ae) && ftruncate(fd, (off_t)archive_entry_size(ae)) < 0)
        return lerr_set(u->e, neg_errno(), "entry %.300s: truncate: %s", u->entry, strerror(errno));
    return apply_meta_fd(u, ae, fd);
}

static void remember_dirtime(struct unpacker *u, struct archive_entry *ae)
{
    if (u->n_dirtimes == DIRTIMES_MAX)
        return;
    if (u->n_dirtimes == u->cap_dirtimes) {
        size_t nc = u->cap_dirtimes ? u->cap_dirtimes * 2 : 64;
        struct dirtime *nd = realloc(u->dirtimes, nc * sizeof(*nd));
        if (!nd)
            return; /* best effort: the directory keeps its last-change time */
        u->dirtimes = nd;
        u->cap_dirtimes = nc;
    }
    struct dirtime *d = &u->dirtimes[u->n_dirtimes];
    if (!(d->path = strdup(u->entry)))
        return;
    d->ts[1] = (struct timespec){archive_entry_mtime(ae), archive_entry_mtime_nsec(ae)};
    d->ts[0] = archive_entry_atime_is_set(ae)
                   ? (struct timespec){archive_entry_atime(ae), archive_entry_atime_nsec(ae)}
                   : d->ts[1];
    u->n_dirtimes++;
}

/* Set the remembered directory times, deepest (latest) first, resolving each path again the
 * way entries are resolved. */
static void restore_dirtimes(struct unpacker *u)
{
    for (size_t i = u->n_dirtimes; i-- > 0;) {
        char buf[PATH_MAX];
        char *comps[MAX_COMPONENTS];
        struct lerr ignored;
        struct lerr *saved = u->e;
        u->e = &ignored;
        u->entry = u->dirtimes[i].path;
        int n = split_path(u, u->dirtimes[i].path, buf, sizeof(buf), comps, ARRAY_SIZE(comps));
        int dir = n > 0 ? open_dir(u, comps, (size_t)n - 1, false) : -1;
        u->e = saved;
        if (dir < 0)
            continue;
        int fd = openat(dir, comps[n - 1], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        close(dir);
        if (fd < 0)
            continue;
        (void)futimens(fd, u->dirtimes[i].ts);
        close(fd);
    }
}

static void free_dirtimes(struct unpacker *u)
{
    for (size_t i = 0; i < u->n_dirtimes; i++)
        free(u->dirtimes[i].path);
    free(u->dirtimes);
}

static int make_dir(struct unpacker *u, struct archive_entry *ae, int dir, const char *name)
{
    bool kept;
    int r = clear_name(u, dir, name, true, &kept);
    if (r < 0)
        return r;
    if (!kept && mkdirat(dir, name, 0700) < 0)
        return lerr_set(u->e, neg_errno(), "entry %.300s: mkdir: %s", u->entry, strerror(errno));
    _cleanup_close_ int fd = openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return lerr_set(u->e, neg_errno(), "entry %.300s: %s", u->entry, strerror(errno));
    r = apply_meta_fd(u, ae, fd);
    if (r >= 0)
        remember_dirtime(u, ae);
    return r;
}

static int make_symlink(struct unpacker *u, struct archive_entry *ae, int dir, const char *name)
{
    const char *target = archive_entry_symlink(ae);
    if (lstr_empty(target) || strlen(target) >= PATH_MAX)
        return lerr_set(u->e, -EINVAL, "entry %.300s: symlink without a valid target", u->entry);
    int r = clear_name(u, dir, name, false, NULL);
    if (r < 0)
        return r;
    /* The target is only text: it is never followed while unpacking except by the resolver,
     * which keeps it inside the layer. */
    if (symlinkat(target, dir, name) < 0)
        return lerr_set(u->e, neg_errno(), "entry %.300s: symlink: %s", u->entry, strerror(errno));
    return apply_meta_at(u, ae, dir, name, true);
}

static int make_hardlink(struct unpacker *u, struct archive_entry *ae, int dir, const char *name)
{
    const char *target = archive_entry_hardlink(ae);
    char buf[PATH_MAX];
    char *comps[MAX_COMPONENTS];
    const char *saved = u->entry;
    int n = split_path(u, target, buf, sizeof(buf), comps, ARRAY_SIZE(comps));
    if (n < 0)
        return img_prefix(n, u->e, "hard link %.300s", saved);
    if (n == 0)
        return lerr_set(u->e, -EPERM, "entry %.300s: hard link to the layer root", saved);
    _cleanup_close_ int tfd = -1;
    if (u->use_openat2) {
        char path[PATH_MAX];
        int r = join(path, sizeof(path), comps, (size_t)n);
        /* O_NOFOLLOW: a hard link to a symlink links the symlink itself. */
        tfd = r < 0 ? r : openat2_in_root(u->root, path, O_PATH | O_NOFOLLOW);
    } else {
        int pdir = open_dir(u, comps, (size_t)n - 1, false);
        if (pdir < 0)
            return img_prefix(pdir, u->e, "hard link %.300s", saved);
        tfd = openat(pdir, comps[n - 1], O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (tfd < 0)
            tfd = neg_errno();
        close(pdir);
    }
    if (tfd < 0)
        return lerr_set(u->e, tfd, "entry %.300s: hard link target %.300s is not in the layer: %s",
                        saved, target, strerror(-tfd));
    struct stat st;
    if (fstat(tfd, &st) < 0)
        return lerr_set(u->e, neg_errno(), "entry %.300s: %s", saved, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return lerr_set(u->e, -EPERM, "entry %.300s: hard link to a directory", saved);
    struct stat here;
    if (fstatat(dir, name, &here, AT_SYMLINK_NOFOLLOW) == 0 && here.st_ino == st.st_ino &&
        here.st_dev == st.st_dev)
        return 0; /* already that file */
    int r = clear_name(u, dir, name, false, NULL);
    if (r < 0)
        return r;
    if (linkat(tfd, "", dir, name, AT_EMPTY_PATH) < 0) {
        /* AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; the fd's /proc link does not. */
        char proc[64];
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", tfd);
        if (linkat(AT_FDCWD, proc, dir, name, AT_SYMLINK_FOLLOW) < 0)
            return lerr_set(u->e, neg_errno(), "entry %.300s: link: %s", saved, strerror(errno));
    }
    return 0;
}

static int make_node(struct unpacker *u, struct archive_entry *ae, int dir, const char *name,
                     mode_t type)
{
    int r = clear_name(u, dir, name, false, NULL);
    if (r < 0)
        return r;
    dev_t dev =
        type == S_IFIFO ? 0 : makedev(archive_entry_rdevmajor(ae), archive_entry_rdevminor(ae));
    if (mknodat(dir, name, type | 0600, dev) < 0) {
        if (errno == EPERM && type != S_IFIFO) {
            u->st.skipped_devices++;
            return 0;
        }
        return lerr_set(u->e, neg_errno(), "entry %.300s: mknod: %s", u->entry, strerror(errno));
    }
    return apply_meta_at(u, ae, dir, name, false);
}

/* ".wh.NAME": NAME is deleted from the layers below, which overlayfs reads as a 0/0 character
 * device; ".wh..wh..opq": the directory hides everything below it. */
static int whiteout(struct unpacker *u, int dir, const char *name)
{
    if (strcmp(name, WHITEOUT_OPAQUE) == 0) {
        int fd = openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            return lerr_set(u->e, neg_errno(), "entry %.300s: %s", u->entry, strerror(errno));
        int r = fsetxattr(fd, OVERLAY_OPAQUE_XATTR, "y", 1, 0) < 0 ? neg_errno() : 0;
        close(fd);
        if (r < 0)
            return lerr_set(u->e, r, "entry %.300s: marking the directory opaque (%s): %s",
                            u->entry, OVERLAY_OPAQUE_XATTR, strerror(-r));
        u->st.opaques++;
        return 0;
    }
    const char *target = name + strlen(WHITEOUT_PREFIX);
    if (lstr_startswith(target, WHITEOUT_PREFIX))
        return 0; /* other ".wh..wh." names are aufs bookkeeping (hard link dirs): nothing */
    if (!*target || strcmp(target, ".") == 0 || strcmp(target, "..") == 0)
        return lerr_set(u->e, -EINVAL, "entry %.300s: a whiteout of nothing", u->entry);
    int r = clear_name(u, dir, target, false, NULL);
    if (r < 0)
        return r;
    if (mknodat(dir, target, S_IFCHR | 0, makedev(0, 0)) < 0)
        return lerr_set(u->e, neg_errno(), "entry %.300s: creating the whiteout for %.200s: %s",
                        u->entry, target, strerror(errno));
    u->st.whiteouts++;
    return 0;
}

static int unpack_entry(struct unpacker *u, struct archive *a, struct archive_entry *ae)
{
    char buf[PATH_MAX];
    char *comps[MAX_COMPONENTS];
    const char *path = archive_entry_pathname(ae);
    if (!path)
        path = archive_entry_pathname_utf8(ae);
    u->entry = path ? path : "(no name)";
    int n = split_path(u, path, buf, sizeof(buf), comps, ARRAY_SIZE(comps));
    if (n <= 0)
        return n; /* the layer root itself ("./"): its metadata is the layer directory's */
    const char *name = comps[n - 1];
    bool is_whiteout = lstr_startswith(name, WHITEOUT_PREFIX);
    _cleanup_close_ int dir = open_dir(u, comps, (size_t)n - 1, true);
    if (dir < 0)
        return dir;
    if (is_whiteout)
        return whiteout(u, dir, name);
    if (archive_entry_hardlink(ae))
        return make_hardlink(u, ae, dir, name);
    switch (archive_entry_filetype(ae)) {
    case AE_IFREG:
        return write_file(u, a, ae, dir, name);
    case AE_IFDIR:
        return make_dir(u, ae, dir, name);
    case AE_IFLNK:
        return make_symlink(u, ae, dir, name);
    case AE_IFCHR:
        return make_node(u, ae, dir, name, S_IFCHR);
    case AE_IFBLK:
        return make_node(u, ae, dir, name, S_IFBLK);
    case AE_IFIFO:
        return make_node(u, ae, dir, name, S_IFIFO);
    default:
        return 0; /* sockets and unknown types are not part of a filesystem image */
    }
}

/* ---- the two chained readers ---------------------------------------------------------------- */

struct chain {
    struct archive *outer;
    struct img_hash *hash;
    uint64_t total, max;
    int err;
    char msg[256];
    char buf[CHUNK];
};

static la_ssize_t chain_read(struct archive *inner, void *ud, const void **buf)
{
    struct chain *c = ud;
    la_ssize_t n = archive_read_data(c->outer, c->buf, sizeof(c->buf));
    if (n < 0) {
        c->err = -EIO;
        snprintf(c->msg, sizeof(c->msg), "decompressing: %s", archive_error_string(c->outer));
        archive_set_error(inner, EIO, "%s", c->msg);
        return -1;
    }
    c->total += (uint64_t)n;
    if (c->total > c->max) {
        c->err = -EFBIG;
        snprintf(c->msg, sizeof(c->msg), "more than %llu uncompressed bytes",
                 (unsigned long long)c->max);
        archive_set_error(inner, EFBIG, "%s", c->msg);
        return -1;
    }
    if (img_hash_update(c->hash, c->buf, (size_t)n) < 0) {
        c->err = -EIO;
        return -1;
    }
    *buf = c->buf;
    return n;
}

static int unpack_all(struct unpacker *u, int fd, int dirfd, const struct img_unpack_opts *o,
                      struct img_unpack_stats *ret, struct lerr *e)
{
    uint64_t max_entries = o->max_entries ? o->max_entries : IMG_LAYER_ENTRIES_MAX;

    _cleanup_free_ struct chain *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->max = o->max_bytes ? o->max_bytes : IMG_LAYER_MAX;
    _cleanup_img_hash_ struct img_hash *h = NULL;
    int r = img_hash_new(&h);
    if (r < 0)
        return r;
    c->hash = h;

    _cleanup_archive_ struct archive *outer = archive_read_new();
    _cleanup_archive_ struct archive *inner = archive_read_new();
    if (!outer || !inner)
        return -ENOMEM;
    c->outer = outer;
    /* Only what layers are compressed with; libarchive detects which from the bytes. */
    if (archive_read_support_filter_gzip(outer) < ARCHIVE_WARN ||
        archive_read_support_filter_zstd(outer) < ARCHIVE_WARN ||
        archive_read_support_format_raw(outer) != ARCHIVE_OK ||
        archive_read_support_format_tar(inner) != ARCHIVE_OK)
        return lerr_set(e, -ENOTSUP, "libarchive: %s", archive_error_string(outer));
    if (archive_read_open_fd(outer, fd, CHUNK) != ARCHIVE_OK)
        return lerr_set(e, -EINVAL, "layer: %s", archive_error_string(outer));
    struct archive_entry *raw;
    if (archive_read_next_header(outer, &raw) != ARCHIVE_OK)
        return lerr_set(e, -EINVAL, "layer: %s",
                        archive_error_string(outer) ? archive_error_string(outer) : "empty");
    if (archive_read_open(inner, c, NULL, chain_read, NULL) != ARCHIVE_OK)
        return lerr_set(e, c->err ? c->err : -EINVAL, "layer: not a tar archive: %s",
                        archive_error_string(inner));

    for (;;) {
        struct archive_entry *ae;
        int ar = archive_read_next_header(inner, &ae);
        if (ar == ARCHIVE_EOF)
            break;
        if (ar < ARCHIVE_WARN)
            return lerr_set(e, c->err ? c->err : -EINVAL, "layer: entry %llu: %s",
                            (unsigned long long)u->st.entries + 1,
                            c->err ? c->msg : archive_error_string(inner));
        if (++u->st.entries > max_entries)
            return lerr_set(e, -E2BIG, "layer: more than %llu entries",
                            (unsigned long long)max_entries);
        r = unpack_entry(u, inner, ae);
        if (r < 0)
            return r;
        if (c->err) /* a data read failed inside the entry */
            return lerr_set(e, c->err, "layer: %s", c->msg);
    }
    /* The diff_id covers the whole stream, padding after the end-of-archive blocks included. */
    for (;;) {
        const void *dummy;
        la_ssize_t n = chain_read(inner, c, &dummy);
        if (n == 0)
            break;
        if (n < 0)
            return lerr_set(e, c->err ? c->err : -EIO, "layer: %s", c->msg);
    }
    restore_dirtimes(u);
    if (syncfs(dirfd) < 0)
        return lerr_set(e, neg_errno(), "layer: syncfs: %s", strerror(errno));
    u->st.bytes = c->total;
    r = img_hash_final(h, u->st.diff_id);
    if (r < 0)
        return r;
    if (ret)
        *ret = u->st;
    return 0;
}

int img_unpack_layer(int fd, int dirfd, const struct img_unpack_opts *o,
                     struct img_unpack_stats *ret, struct lerr *e)
{
    struct img_unpack_opts dflt = {0};
    if (!o)
        o = &dflt;
    struct unpacker u = {
        .root = dirfd,
        .use_openat2 = !o->no_openat2 && img_have_openat2(),
        .as_root = geteuid() == 0,
        .e = e,
    };
    u.st.openat2 = u.use_openat2;
    int r = unpack_all(&u, fd, dirfd, o, ret, e);
    free_dirtimes(&u);
    return r;
}
