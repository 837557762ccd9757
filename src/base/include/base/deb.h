/* deb.h — Debian packages for the tools that handle ledge's own package (`ledge update`, `ledge vm
 * create`): a field of a .deb, the installed version of a package, and a .deb of the installed
 * version recovered (kept before, apt's cache, or packed again by dpkg-repack). Blocking; runs
 * dpkg-deb, dpkg-query and dpkg-repack through lproc. */
#pragma once

#include <stdbool.h>

#include "base/errors.h"

/* Where ldeb_recover() found the package. */
enum ldeb_origin {
    LDEB_KEPT,     /* already in the directory */
    LDEB_APT,      /* copied from apt's cache */
    LDEB_REPACKED, /* packed again from the installed files by dpkg-repack */
};

/* Field of a .deb's control file (dpkg-deb -f): a new string in *ret. */
int ldeb_field(const char *deb, const char *field, char **ret, struct lerr *err);
/* Does deb exist and carry version? */
bool ldeb_has_version(const char *deb, const char *version);
/* The installed version and architecture of pkg (status "install ok installed" only); -ENOENT
 * when dpkg does not know it (or there is no dpkg), -EINVAL when it is not fully installed. */
int ldeb_installed(const char *pkg, char **ret_version, char **ret_arch, struct lerr *err);
/* "pkg_version_arch.deb" as dpkg and apt name it (an epoch's colon spelled %3a), or NULL. */
char *ldeb_file_name(const char *pkg, const char *version, const char *arch);
/* A .deb of the installed pkg version/arch in dir (which must exist): one already there, apt's
 * copy from apt_archives (NULL: /var/cache/apt/archives), or dpkg-repack's. Its path in *ret,
 * where it came from in *ret_origin. -ENOENT with err saying what was tried when none. */
int ldeb_recover(const char *pkg, const char *version, const char *arch, const char *dir,
                 const char *apt_archives, char **ret, enum ldeb_origin *ret_origin,
                 struct lerr *err);
