/* self.c — this ledge's own .deb for a guest image (self.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/deb.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "spawn.h"
#include "vm/self.h"

/* A build directory is at most this many levels above the program (src/vm/ledge-vmm: 2). */
#define BUILD_TREE_DEPTH 4

int vm_build_tree_source(const char *exe, char *src, size_t size)
{
    char dir[PATH_MAX];
    if (lfs_dirname(exe, dir, sizeof(dir)) < 0)
        return -ENOENT;
    for (int i = 0; i <= BUILD_TREE_DEPTH && dir[0]; i++) {
        char info[PATH_MAX + 32];
        snprintf(info, sizeof(info), "%s/meson-info/meson-info.json", dir);
        _cleanup_free_ char *text = NULL;
        size_t n;
        if (lfs_read_file(info, 1 << 20, &text, &n) == 0) {
            _cleanup_json_ json_t *j = NULL;
            if (ljson_parse(text, n, &j, NULL) < 0)
                return -ENOENT;
            const char *s = ljson_str(json_object_get(j, "directories"), "source");
            char script[PATH_MAX + 32];
            if (!s ||
                snprintf(script, sizeof(script), "%s/scripts/build-deb", s) >=
                    (int)sizeof(script) ||
                access(script, X_OK) < 0)
                return -ENOENT;
            return lstr_copy(src, size, s) < 0 ? -ENAMETOOLONG : 0;
        }
        if (lstr_eq(dir, "/"))
            break;
        char up[PATH_MAX];
        if (lfs_dirname(dir, up, sizeof(up)) < 0)
            break;
        memcpy(dir, up, sizeof(dir));
    }
    return -ENOENT;
}

int vm_self_find(const char *exe, enum vm_arch arch, struct vm_self *ret, struct lerr *err)
{
    char self[PATH_MAX];
    if (!exe) {
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n <= 0)
            return lerr_set(err, -ENOENT, "cannot tell where this ledge is (/proc/self/exe)");
        self[n] = 0;
        exe = self;
    }
    memset(ret, 0, sizeof(*ret));
    ret->arch = arch;
    if (vm_build_tree_source(exe, ret->source, sizeof(ret->source)) == 0) {
        ret->kind = VM_SELF_BUILD_TREE;
        snprintf(ret->what, sizeof(ret->what),
                 "ledge's %s package built from %s (scripts/build-deb)", vm_arch_name(arch),
                 ret->source);
        return 0;
    }
    _cleanup_free_ char *version = NULL, *pkg_arch = NULL;
    struct lerr e = {0};
    int r = ldeb_installed("ledge", &version, &pkg_arch, &e);
    if (r < 0)
        return lerr_set(err, -ENOENT,
                        "this ledge (%s) is neither in a build tree nor installed from its package "
                        "(%s): give --deb FILE (ledge's .deb: scripts/build-deb %s in a source "
                        "tree) or --image KEY (ledge vm image import FILE)",
                        exe, lerr_str(&e), vm_arch_name(arch));
    if (!lstr_eq(pkg_arch, vm_arch_name(arch)))
        return lerr_set(err, -ENOENT,
                        "the installed ledge package is for %s, the VM is %s: give --deb with "
                        "ledge's %s package (scripts/build-deb %s in a source tree)",
                        pkg_arch, vm_arch_name(arch), vm_arch_name(arch), vm_arch_name(arch));
    ret->kind = VM_SELF_INSTALLED;
    if (lstr_copy(ret->version, sizeof(ret->version), version) < 0 ||
        lstr_copy(ret->pkg_arch, sizeof(ret->pkg_arch), pkg_arch) < 0)
        return lerr_set(err, -ENAMETOOLONG, "ledge's package version is too long");
    snprintf(ret->what, sizeof(ret->what), "the installed ledge %s package", version);
    return 0;
}

static int build_tree_deb(const struct vm_self *s, char *ret_deb, size_t size, struct lerr *err)
{
    char script[PATH_MAX + 32];
    snprintf(script, sizeof(script), "%s/scripts/build-deb", s->source);
    char *argv[] = {script, (char *)vm_arch_name(s->arch), NULL};
    _cleanup_lbuf_ struct lbuf out = LBUF_INIT;
    out.max = 64u << 10;
    int st;
    int r = vm_run(argv, &out, &st, err);
    if (r < 0)
        return r;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return lerr_set(err, -EIO, "%s %s failed (see its messages above)", script,
                        vm_arch_name(s->arch));
    /* The package's path is the last line. */
    const char *text = out.data ? out.data : "";
    size_t end = out.len;
    while (end > 0 && text[end - 1] == '\n')
        end--;
    size_t start = end;
    while (start > 0 && text[start - 1] != '\n')
        start--;
    if (end == start || end - start >= size)
        return lerr_set(err, -EPROTO, "%s printed no package", script);
    memcpy(ret_deb, text + start, end - start);
    ret_deb[end - start] = 0;
    if (access(ret_deb, R_OK) < 0)
        return lerr_set(err, -ENOENT, "%s: %s (printed by %s)", ret_deb, strerror(errno), script);
    return 0;
}

int vm_self_deb(const struct vm_self *s, const char *cache, const char *apt_archives, char *ret_deb,
                size_t size, struct lerr *err)
{
    if (s->kind == VM_SELF_BUILD_TREE)
        return build_tree_deb(s, ret_deb, size, err);
    char dir[PATH_MAX];
    if (snprintf(dir, sizeof(dir), "%s/debs", cache) >= (int)sizeof(dir))
        return lerr_set(err, -ENAMETOOLONG, "%s: path too long", cache);
    int r = lfs_mkdir_p(dir, 0755);
    if (r < 0)
        return lerr_set(err, r, "%s: %s", dir, strerror(-r));
    _cleanup_free_ char *deb = NULL;
    enum ldeb_origin origin;
    if ((r = ldeb_recover("ledge", s->version, s->pkg_arch, dir, apt_archives, &deb, &origin,
                          err)) < 0)
        return r;
    return lstr_copy(ret_deb, size, deb) < 0
               ? lerr_set(err, -ENAMETOOLONG, "%s: path too long", deb)
               : 0;
}
