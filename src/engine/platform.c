/* platform.c — host platform detection and the host/guest platform rule (see platform.h). The
 * architecture table follows the spellings containerd's platform normaliser accepts. */
#include "engine/platform.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>

#include "base/str.h"

static int copy_lower(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);
    if (n == 0 || n >= size)
        return -EINVAL;
    for (size_t i = 0; i <= n; i++)
        dst[i] = (char)tolower((unsigned char)src[i]);
    return 0;
}

/* "7", "v7", "" → "v7", "v7", "" ; anything else kept lower-cased. */
static int normalize_variant(const char *v, char *dst, size_t size)
{
    dst[0] = 0;
    if (lstr_empty(v))
        return 0;
    if (isdigit((unsigned char)v[0])) {
        if (strlen(v) + 2 > size)
            return -EINVAL;
        snprintf(dst, size, "v%s", v);
        return 0;
    }
    return copy_lower(dst, size, v);
}

int platform_normalize(const char *os, const char *arch, const char *variant, struct platform *ret)
{
    static const struct {
        const char *name;
        const char *arch;
        const char *variant; /* NULL: keep the given one */
    } arches[] = {
        {"x86_64", "amd64", ""},    {"x86-64", "amd64", ""}, {"amd64", "amd64", ""},
        {"i386", "386", ""},        {"i486", "386", ""},     {"i586", "386", ""},
        {"i686", "386", ""},        {"386", "386", ""},      {"aarch64", "arm64", ""},
        {"arm64", "arm64", ""},     {"armhf", "arm", "v7"},  {"armel", "arm", "v6"},
        {"armv8l", "arm", "v8"},    {"armv7l", "arm", "v7"}, {"armv7", "arm", "v7"},
        {"armv6l", "arm", "v6"},    {"armv6", "arm", "v6"},  {"armv5tel", "arm", "v5"},
        {"armv5tejl", "arm", "v5"}, {"armv5l", "arm", "v5"}, {"arm", "arm", NULL},
    };
    struct platform p = {{0}};
    if (lstr_empty(arch) || copy_lower(p.os, sizeof(p.os), lstr_empty(os) ? "linux" : os) < 0)
        return -EINVAL;
    char a[sizeof(p.arch)];
    if (copy_lower(a, sizeof(a), arch) < 0)
        return -EINVAL;
    const char *keep = NULL;
    size_t i;
    for (i = 0; i < ARRAY_SIZE(arches); i++)
        if (strcmp(a, arches[i].name) == 0)
            break;
    if (i < ARRAY_SIZE(arches)) {
        strcpy(p.arch, arches[i].arch);
        keep = arches[i].variant;
    } else {
        strcpy(p.arch, a);
    }
    if (keep) {
        strcpy(p.variant, keep);
    } else if (normalize_variant(variant, p.variant, sizeof(p.variant)) < 0) {
        return -EINVAL;
    }
    /* arm64's only variant is v8: it says nothing. */
    if (strcmp(p.arch, "arm64") == 0)
        p.variant[0] = 0;
    *ret = p;
    return 0;
}

int platform_host(struct platform *ret)
{
    struct utsname u;
    if (uname(&u) < 0)
        return neg_errno();
    return platform_normalize(u.sysname, u.machine, NULL, ret);
}

const char *platform_format(const struct platform *p, char *buf)
{
    if (p->variant[0])
        snprintf(buf, PLATFORM_STR_MAX, "%s/%s/%s", p->os, p->arch, p->variant);
    else
        snprintf(buf, PLATFORM_STR_MAX, "%s/%s", p->os, p->arch);
    return buf;
}

/* ARM variant number: "v7" → 7; 0 when unknown. */
static int arm_level(const char *variant)
{
    if (variant[0] == 'v' && variant[1] >= '5' && variant[1] <= '8' && !variant[2])
        return variant[1] - '0';
    return 0;
}

int platform_compatible(const struct platform *host, const char *image_os, const char *image_arch,
                        const char *image_variant, struct lerr *err)
{
    if (lstr_empty(image_os) || lstr_empty(image_arch))
        return PLATFORM_UNDECLARED;
    char hs[PLATFORM_STR_MAX], is[PLATFORM_STR_MAX];
    platform_format(host, hs);
    struct platform img;
    if (platform_normalize(image_os, image_arch, image_variant, &img) < 0)
        return lerr_set(err, -ENOEXEC,
                        "image declares a platform ledge cannot read (%.32s/%.32s): this host "
                        "is %s",
                        image_os, image_arch, hs);
    platform_format(&img, is);

    if (strcmp(img.os, host->os) != 0)
        return lerr_set(err, -ENOEXEC,
                        "image is built for %s, this host is %s: a container shares the host's "
                        "kernel, so a module's container OS must be the host's OS family (%s "
                        "images on a %s host; a virtual machine counts as the host it is, and "
                        "no layer of ledge translates between the two); use a %s image",
                        is, hs, host->os, host->os, host->os);

    if (strcmp(img.arch, host->arch) == 0) {
        if (strcmp(host->arch, "arm") != 0)
            return PLATFORM_MATCH;
        int hl = arm_level(host->variant), il = arm_level(img.variant);
        /* An ARM CPU runs code for its own and older architecture versions. Unknown levels on
         * either side are left to the engine. */
        if (!hl || !il || il <= hl)
            return PLATFORM_MATCH;
        return lerr_set(err, -ENOEXEC,
                        "image is built for %s, this host is %s: the image needs ARM%s "
                        "instructions this CPU does not have; a module's image must match the "
                        "host's OS family (%s) and an architecture its CPU runs; use an image "
                        "built for linux/arm/%s or older (or a multi-platform image)",
                        is, hs, img.variant, host->os, host->variant);
    }
    if ((strcmp(host->arch, "amd64") == 0 && strcmp(img.arch, "386") == 0) ||
        (strcmp(host->arch, "arm64") == 0 && strcmp(img.arch, "arm") == 0))
        return PLATFORM_COMPAT_32;
    return lerr_set(err, -ENOEXEC,
                    "image is built for %s, this host is %s: a module's image must match the "
                    "host's OS family (%s) and an architecture the host's CPU runs (%s); use an "
                    "image built for %s or a multi-platform image that includes it",
                    is, hs, host->os, host->arch, hs);
}

int platform_check_module(const struct platform *host, const char *module, const char *image,
                          const char *image_os, const char *image_arch, const char *image_variant,
                          struct lerr *err)
{
    int r = platform_compatible(host, image_os, image_arch, image_variant, err);
    if (r < 0)
        lerr_prefix(err, "module %s (%s)", module, image);
    return r;
}
