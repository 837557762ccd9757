/* ref.c — image reference parsing and normalisation (see ref.h). The grammar is Docker's
 * (distribution/reference): lower-case path components separated by '/', each of [a-z0-9]
 * joined by '.', '_', '__' or runs of '-'; a first component is a registry when it has a '.' or
 * a ':', is "localhost", or has upper case; tags [\w][\w.-]{0,127}; sha256 digests. */
#include "image/ref.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/str.h"
#include "image-internal.h"

static bool is_lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(char c)
{
    return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

static bool is_hex_lower(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* One repository path component of n bytes. Sets *upper when the only fault is upper case. */
static bool path_component_ok(const char *s, size_t n, bool *upper)
{
    if (n == 0)
        return false;
    bool any_upper = false;
    for (size_t i = 0; i < n; i++)
        if (s[i] >= 'A' && s[i] <= 'Z')
            any_upper = true;
    /* Judge the grammar on the lower-cased text, so "Foo" is reported as case, not syntax. */
    char c0 = (char)tolower((unsigned char)s[0]), cn = (char)tolower((unsigned char)s[n - 1]);
    if (!is_lower_alnum(c0) || !is_lower_alnum(cn))
        return false;
    for (size_t i = 1; i + 1 < n; i++) {
        char c = (char)tolower((unsigned char)s[i]);
        if (is_lower_alnum(c))
            continue;
        if (c == '.' || c == '_') {
            /* '.', '_' or "__" between alphanumerics */
            char next = (char)tolower((unsigned char)s[i + 1]);
            if (c == '_' && next == '_' && i + 2 < n && is_alnum(s[i + 2])) {
                i++;
                continue;
            }
            if (!is_lower_alnum(next))
                return false;
            continue;
        }
        if (c == '-') {
            while (i + 1 < n && s[i + 1] == '-')
                i++;
            if (i + 1 >= n || !is_alnum(s[i + 1]))
                return false;
            continue;
        }
        return false;
    }
    *upper = any_upper;
    return true;
}

/* host[:port] or [ipv6][:port], n bytes. */
static bool domain_ok(const char *s, size_t n)
{
    size_t i = 0;
    if (n == 0)
        return false;
    if (s[0] == '[') {
        size_t j = 1;
        while (j < n && (isxdigit((unsigned char)s[j]) || s[j] == ':'))
            j++;
        if (j == 1 || j >= n || s[j] != ']')
            return false;
        i = j + 1;
    } else {
        /* label(.label)*, each [A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])? */
        for (;;) {
            size_t start = i;
            while (i < n && (is_alnum(s[i]) || s[i] == '-'))
                i++;
            if (i == start || s[start] == '-' || s[i - 1] == '-')
                return false;
            if (i < n && s[i] == '.') {
                i++;
                continue;
            }
            break;
        }
    }
    if (i == n)
        return true;
    if (s[i] != ':' || i + 1 == n)
        return false;
    for (i++; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

static bool tag_ok(const char *s, size_t n)
{
    if (n == 0 || n > IMG_TAG_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool word = is_alnum(c) || c == '_';
        if (!word && (i == 0 || (c != '.' && c != '-')))
            return false;
    }
    return true;
}

static int parse_digest(const char *s, struct img_ref *r, struct lerr *e)
{
    const char *colon = strchr(s, ':');
    if (!colon)
        return lerr_set(e, -EINVAL, "invalid digest \"%.80s\": expected sha256:<64 hex digits>", s);
    if ((size_t)(colon - s) != 6 || strncmp(s, "sha256", 6) != 0)
        return lerr_set(e, -EINVAL, "unsupported digest algorithm \"%.*s\" (only sha256)",
                        (int)MIN((size_t)(colon - s), 40), s);
    const char *hex = colon + 1;
    size_t n = strlen(hex);
    for (size_t i = 0; i < n; i++)
        if (!is_hex_lower(hex[i]))
            return lerr_set(e, -EINVAL, "invalid digest \"%.80s\": not lower-case hex", s);
    if (n != 64)
        return lerr_set(e, -EINVAL, "invalid digest \"%.80s\": sha256 needs 64 hex digits", s);
    snprintf(r->digest, sizeof(r->digest), "%s", s);
    return 0;
}

int img_ref_parse(const char *s, struct img_ref *ret, struct lerr *e)
{
    struct img_ref r = {0};
    if (lstr_empty(s))
        return lerr_set(e, -EINVAL, "empty image reference");
    size_t total = strlen(s);
    if (total > IMG_REF_MAX + 1 + IMG_TAG_MAX + 1 + IMG_DIGEST_MAX)
        return lerr_set(e, -EINVAL, "image reference too long (%zu characters)", total);

    char buf[IMG_REF_MAX + IMG_TAG_MAX + IMG_DIGEST_MAX + 4];
    memcpy(buf, s, total + 1);
    char *at = strchr(buf, '@');
    if (at) {
        *at = 0;
        int q = parse_digest(at + 1, &r, e);
        if (q < 0)
            return img_prefix(q, e, "image \"%.200s\"", s);
    }
    /* A tag is after the last ':' that follows the last '/'. */
    char *slash = strrchr(buf, '/');
    char *colon = strrchr(slash ? slash : buf, ':');
    if (colon) {
        *colon = 0;
        if (!tag_ok(colon + 1, strlen(colon + 1)))
            return lerr_set(e, -EINVAL, "image \"%.200s\": invalid tag \"%.130s\"", s, colon + 1);
        snprintf(r.tag, sizeof(r.tag), "%s", colon + 1);
    } else if (!at) {
        snprintf(r.tag, sizeof(r.tag), "latest");
    }

    const char *name = buf;
    if (!*name)
        return lerr_set(e, -EINVAL, "image \"%.200s\": no repository name", s);
    const char *first_slash = strchr(name, '/');
    const char *remainder = name;
    if (first_slash) {
        size_t dl = (size_t)(first_slash - name);
        bool upper = false;
        for (size_t i = 0; i < dl; i++)
            upper |= name[i] >= 'A' && name[i] <= 'Z';
        bool is_domain = memchr(name, '.', dl) || memchr(name, ':', dl) ||
                         (dl == 9 && memcmp(name, "localhost", 9) == 0) || upper;
        if (is_domain) {
            if (!domain_ok(name, dl))
                return lerr_set(e, -EINVAL, "image \"%.200s\": invalid registry \"%.*s\"", s,
                                (int)MIN(dl, 200), name);
            if (dl >= sizeof(r.registry))
                return lerr_set(e, -EINVAL, "image \"%.200s\": registry name too long", s);
            /* Kept as written (Docker does): lower-casing "Registry/app" would turn the
             * registry into a Docker Hub path on the next parse. */
            memcpy(r.registry, name, dl);
            r.registry[dl] = 0;
            remainder = first_slash + 1;
        }
    }
    if (!r.registry[0] || strcmp(r.registry, "index.docker.io") == 0)
        snprintf(r.registry, sizeof(r.registry), "%s", IMG_DOCKER_HUB);

    /* Repository path: components separated by single slashes. */
    bool upper = false;
    for (const char *p = remainder;;) {
        const char *end = strchr(p, '/');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        bool u = false;
        if (!path_component_ok(p, n, &u))
            return lerr_set(e, -EINVAL, "image \"%.200s\": invalid repository name \"%.200s\"", s,
                            remainder);
        upper |= u;
        if (!end)
            break;
        p = end + 1;
    }
    if (upper)
        return lerr_set(e, -EINVAL, "image \"%.200s\": repository name must be lowercase", s);
    bool hub = strcmp(r.registry, IMG_DOCKER_HUB) == 0;
    int n = snprintf(r.repo, sizeof(r.repo), "%s%s",
                     hub && !strchr(remainder, '/') ? "library/" : "", remainder);
    if (n < 0 || (size_t)n >= sizeof(r.repo) || strlen(r.registry) + 1 + (size_t)n > IMG_REF_MAX)
        return lerr_set(e, -EINVAL, "image \"%.200s\": name longer than %d characters", s,
                        IMG_REF_MAX);
    *ret = r;
    return 0;
}

int img_ref_name(const struct img_ref *r, char *dst, size_t size)
{
    int n = snprintf(dst, size, "%s/%s", r->registry, r->repo);
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

int img_ref_format(const struct img_ref *r, char *dst, size_t size)
{
    int n = snprintf(dst, size, "%s/%s%s%s%s%s", r->registry, r->repo, r->tag[0] ? ":" : "", r->tag,
                     r->digest[0] ? "@" : "", r->digest);
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

const char *img_ref_selector(const struct img_ref *r)
{
    return r->digest[0] ? r->digest : r->tag;
}

const char *img_ref_api_host(const struct img_ref *r)
{
    return strcmp(r->registry, IMG_DOCKER_HUB) == 0 ? IMG_DOCKER_HUB_API : r->registry;
}

bool img_registry_is_loopback(const char *registry)
{
    char host[IMG_REF_MAX + 1];
    if (!registry || lstr_copy(host, sizeof(host), registry) < 0)
        return false;
    if (host[0] == '[') {
        char *close = strchr(host, ']');
        return close && (size_t)(close - host) == 4 && strncmp(host, "[::1]", 5) == 0;
    }
    char *colon = strchr(host, ':');
    if (colon)
        *colon = 0;
    lstr_lower(host);
    if (strcmp(host, "localhost") == 0)
        return true;
    /* 127.0.0.0/8: four decimal octets, the first 127 */
    unsigned a, b, c, d;
    char tail;
    if (sscanf(host, "%u.%u.%u.%u%c", &a, &b, &c, &d, &tail) != 4)
        return false;
    return a == 127 && b < 256 && c < 256 && d < 256;
}
