/* self.h — this ledge's own .deb, for a guest image built from it (`ledge vm create NAME` with
 * neither --deb nor --image): run from a build tree, the tree's package is built as
 * scripts/build-deb does; installed from its package, the installed .deb is recovered (apt's
 * cache, or dpkg-repack, as `ledge update` keeps one for a rollback). */
#pragma once

#include <limits.h>

#include "base/errors.h"
#include "vm/def.h"

enum vm_self_kind {
    VM_SELF_BUILD_TREE, /* ledge runs from a meson build tree whose source has scripts/build-deb */
    VM_SELF_INSTALLED,  /* ledge is the installed ledge package's */
};

struct vm_self {
    enum vm_self_kind kind;
    enum vm_arch arch;
    char source[PATH_MAX]; /* VM_SELF_BUILD_TREE: the source tree */
    char version[128];     /* VM_SELF_INSTALLED: the package's version and architecture */
    char pkg_arch[32];
    char what[PATH_MAX + 128]; /* what will be done, in words (for the CLI's progress line) */
};

/* The source tree of the meson build directory that holds exe (meson-info/meson-info.json in one
 * of its parents), when that source has scripts/build-deb; -ENOENT otherwise. */
int vm_build_tree_source(const char *exe, char *src, size_t size);

/* Where a guest image of arch can get this ledge from; exe NULL: /proc/self/exe. -ENOENT with
 * err saying what to do when it cannot (neither a build tree nor the package; the package is
 * for another architecture). Cheap: runs dpkg-query at most. */
int vm_self_find(const char *exe, enum vm_arch arch, struct vm_self *ret, struct lerr *err);

/* Make the .deb: scripts/build-deb ARCH in the source tree (minutes for a first build; its
 * progress on our stderr), or the installed package recovered into <cache>/debs (apt_archives:
 * apt's cache, NULL for /var/cache/apt/archives). Its path in ret_deb. */
int vm_self_deb(const struct vm_self *s, const char *cache, const char *apt_archives, char *ret_deb,
                size_t size, struct lerr *err);
