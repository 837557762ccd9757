/* deb.c — Debian packages: fields, the installed version, recovering an installed .deb (deb.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/deb.h"
#include "base/fs.h"
#include "base/macro.h"
#include "base/proc.h"
#include "base/str.h"

/* A package is at most this big (ledge's is a few MiB). */
#define LDEB_MAX (512u * 1024 * 1024)

/* Run a dpkg tool to completion; its stdout in out. */
static int run(char *const argv[], long timeout_ms, const char *cwd, struct lbuf *out,
               struct lerr *err)
{
    _cleanup_lbuf_ struct lbuf said = {.max = 4096};
    struct lproc p = {.argv = argv,
                      .in_fd = -1,
                      .out = out ? out : &said,
                      .err = &said,
                      .timeout_ms = timeout_ms,
                      .cwd = cwd};
    int status = 0;
    int r = lproc_run_ok(&p, &status);
    if (r == -ENOENT)
        return lerr_set(err, r, "%s: not installed", argv[0]);
    if (r < 0) {
        char st[64];
        const char *s = said.data ? said.data : "";
        size_t n = strlen(s);
        if (n > 300)
            s += n - 300;
        while (*s == '\n')
            s++;
        return lerr_set(err, r, "%s %s: %s%s%.*s", argv[0], argv[1] ? argv[1] : "",
                        r == -ETIMEDOUT ? "timed out" : lproc_status_str(status, st, sizeof(st)),
                        *s ? ": " : "", (int)strcspn(s, "\n"), s);
    }
    return 0;
}

static void chomp(struct lbuf *b)
{
    while (b->len && (b->data[b->len - 1] == '\n' || b->data[b->len - 1] == ' '))
        b->data[--b->len] = 0;
}

int ldeb_field(const char *deb, const char *field, char **ret, struct lerr *err)
{
    _cleanup_lbuf_ struct lbuf out = {.max = 4096};
    char *argv[] = {"dpkg-deb", "-f", (char *)deb, (char *)field, NULL};
    int r = run(argv, 30000, NULL, &out, err);
    if (r < 0)
        return r;
    chomp(&out);
    if (!out.len)
        return lerr_set(err, -EINVAL, "%s: no %s field", deb, field);
    *ret = lbuf_steal(&out);
    return *ret ? 0 : -ENOMEM;
}

bool ldeb_has_version(const char *deb, const char *version)
{
    _cleanup_free_ char *v = NULL;
    return access(deb, R_OK) == 0 && ldeb_field(deb, "Version", &v, NULL) == 0 &&
           lstr_eq(v, version);
}

int ldeb_installed(const char *pkg, char **ret_version, char **ret_arch, struct lerr *err)
{
    _cleanup_lbuf_ struct lbuf out = {.max = 4096};
    char *argv[] = {"dpkg-query", "-W", "-f", "${Version}\t${Architecture}\t${Status}",
                    (char *)pkg,  NULL};
    struct lerr e = {0};
    int r = run(argv, 30000, NULL, &out, &e);
    if (r < 0)
        return lerr_set(err, -ENOENT, "%s is not installed as a package (%s)", pkg, lerr_str(&e));
    chomp(&out);
    char *tab1 = out.data ? strchr(out.data, '\t') : NULL;
    char *tab2 = tab1 ? strchr(tab1 + 1, '\t') : NULL;
    if (!tab2)
        return lerr_set(err, -EINVAL, "dpkg-query said \"%s\"", out.data ? out.data : "");
    *tab1 = *tab2 = 0;
    if (!lstr_eq(tab2 + 1, "install ok installed"))
        return lerr_set(err, -EINVAL, "the %s package is \"%s\", not installed and configured", pkg,
                        tab2 + 1);
    _cleanup_free_ char *v = strdup(out.data), *a = strdup(tab1 + 1);
    if (!v || !a)
        return -ENOMEM;
    *ret_version = TAKE_PTR(v);
    *ret_arch = TAKE_PTR(a);
    return 0;
}

char *ldeb_file_name(const char *pkg, const char *version, const char *arch)
{
    char fv[256];
    size_t k = 0;
    for (const char *s = version; *s && k + 4 < sizeof(fv); s++) {
        if (*s == ':') {
            memcpy(fv + k, "%3a", 3);
            k += 3;
        } else {
            fv[k++] = *s;
        }
    }
    fv[k] = 0;
    return lstr_printf("%s_%s_%s.deb", pkg, fv, arch);
}

static int copy_durably(const char *src, const char *dst)
{
    _cleanup_free_ char *data = NULL;
    size_t n = 0;
    int r = lfs_read_file(src, LDEB_MAX, &data, &n);
    return r < 0 ? r : lfs_write_atomic(dst, data, n, 0600);
}

int ldeb_recover(const char *pkg, const char *version, const char *arch, const char *dir,
                 const char *apt_archives, char **ret, enum ldeb_origin *ret_origin,
                 struct lerr *err)
{
    _cleanup_free_ char *file = ldeb_file_name(pkg, version, arch);
    if (!file)
        return -ENOMEM;
    _cleanup_free_ char *kept = lstr_printf("%s/%s", dir, file);
    _cleanup_free_ char *cached =
        lstr_printf("%s/%s", apt_archives ? apt_archives : "/var/cache/apt/archives", file);
    if (!kept || !cached)
        return -ENOMEM;
    if (ldeb_has_version(kept, version)) {
        *ret_origin = LDEB_KEPT;
        *ret = TAKE_PTR(kept);
        return 0;
    }
    if (ldeb_has_version(cached, version) && copy_durably(cached, kept) == 0) {
        *ret_origin = LDEB_APT;
        *ret = TAKE_PTR(kept);
        return 0;
    }
    char *argv[] = {"dpkg-repack", (char *)pkg, NULL};
    struct lerr e = {0};
    int r = run(argv, 300000, dir, NULL, &e);
    if (r == 0 && ldeb_has_version(kept, version)) {
        lfs_fsync_dir(dir);
        *ret_origin = LDEB_REPACKED;
        *ret = TAKE_PTR(kept);
        return 0;
    }
    return lerr_set(err, -ENOENT,
                    "no package of the installed %s %s: not in %s nor in apt's cache, and "
                    "dpkg-repack %s (apt install dpkg-repack, or put %s in %s)",
                    pkg, version, dir,
                    r == -ENOENT ? "is not installed"
                    : r == 0     ? "made no such package"
                                 : lerr_str(&e),
                    file, dir);
}
