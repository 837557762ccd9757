/* auth.c — WWW-Authenticate challenges (see image/auth.h): a scheme token, then
 * comma-separated name=value pairs whose values are tokens or quoted strings with
 * backslash escapes; parsed, and a Bearer challenge's realm replaced (a registry proxy's). */
#include "image/auth.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

static bool is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static void skip_ws(const char *s, size_t n, size_t *i)
{
    while (*i < n && (s[*i] == ' ' || s[*i] == '\t'))
        (*i)++;
}

/* The auth-param at *i: its name's span and its value's (quotes included). 1 a parameter, 0
 * the end, < 0 malformed. */
static int param_next(const char *s, size_t n, size_t *i, size_t *ret_ks, size_t *ret_kl,
                      size_t *ret_vs, size_t *ret_ve)
{
    skip_ws(s, n, i);
    while (*i < n && s[*i] == ',') {
        (*i)++;
        skip_ws(s, n, i);
    }
    if (*i >= n)
        return 0;
    size_t ks = *i;
    while (*i < n && is_tchar(s[*i]))
        (*i)++;
    size_t kl = *i - ks;
    skip_ws(s, n, i);
    if (kl == 0 || *i >= n || s[*i] != '=')
        return -EINVAL;
    (*i)++;
    skip_ws(s, n, i);
    size_t vs = *i;
    if (*i < n && s[*i] == '"') {
        for ((*i)++;; (*i)++) {
            if (*i >= n)
                return -EINVAL; /* unterminated */
            if (s[*i] == '"') {
                (*i)++;
                break;
            }
            if (s[*i] == '\\' && ++(*i) >= n)
                return -EINVAL;
            if (s[*i] == 0)
                return -EINVAL;
        }
    } else {
        while (*i < n && is_tchar(s[*i]))
            (*i)++;
        if (*i == vs)
            return -EINVAL;
    }
    size_t ve = *i;
    skip_ws(s, n, i);
    if (*i < n && s[*i] != ',')
        return -EINVAL;
    *ret_ks = ks;
    *ret_kl = kl;
    *ret_vs = vs;
    *ret_ve = ve;
    return 1;
}

/* A value's span (a token, or a quoted string param_next() accepted) unescaped into dst. */
static int value_copy(const char *s, size_t vs, size_t ve, char dst[IMG_AUTH_PARAM_MAX])
{
    size_t len = 0;
    bool quoted = s[vs] == '"';
    for (size_t j = quoted ? vs + 1 : vs; j < (quoted ? ve - 1 : ve); j++) {
        if (quoted && s[j] == '\\')
            j++;
        if (len + 1 >= IMG_AUTH_PARAM_MAX)
            return -ENAMETOOLONG;
        dst[len++] = s[j];
    }
    dst[len] = 0;
    return 0;
}

static bool param_is(const char *s, size_t ks, size_t kl, const char *name)
{
    return kl == strlen(name) && strncasecmp(s + ks, name, kl) == 0;
}

/* The scheme at the start: its end in *i. */
static int scheme_parse(const char *s, size_t n, size_t *i, enum img_auth_scheme *ret)
{
    skip_ws(s, n, i);
    size_t start = *i;
    while (*i < n && is_tchar(s[*i]))
        (*i)++;
    size_t sl = *i - start;
    if (sl == 6 && strncasecmp(s + start, "bearer", 6) == 0)
        *ret = IMG_AUTH_BEARER;
    else if (sl == 5 && strncasecmp(s + start, "basic", 5) == 0)
        *ret = IMG_AUTH_BASIC;
    else
        return sl ? -ENOTSUP : -EINVAL;
    return 0;
}

int img_challenge_parse(const char *s, size_t n, struct img_challenge *ret)
{
    struct img_challenge c = {0};
    size_t i = 0, ks, kl, vs, ve;
    int r = scheme_parse(s, n, &i, &c.scheme);
    while (r >= 0 && (r = param_next(s, n, &i, &ks, &kl, &vs, &ve)) > 0) {
        char *dst = param_is(s, ks, kl, "realm")     ? c.realm
                    : param_is(s, ks, kl, "service") ? c.service
                    : param_is(s, ks, kl, "scope")   ? c.scope
                                                     : NULL;
        if (dst && (r = value_copy(s, vs, ve, dst)) < 0)
            break;
    }
    if (r < 0)
        return r;
    *ret = c;
    return 0;
}

int img_challenge_rewrite_realm(const char *s, size_t n, const char *realm, struct lbuf *out,
                                char ret_realm[IMG_AUTH_PARAM_MAX])
{
    struct img_challenge c;
    int r = img_challenge_parse(s, n, &c);
    if (r < 0)
        return r;
    if (c.scheme != IMG_AUTH_BEARER)
        return -ENOTSUP;
    if (!c.realm[0])
        return -ENOENT;
    for (const char *p = realm; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return -EINVAL;
    size_t start = out->len, i = 0, ks, kl, vs, ve, copied = 0;
    enum img_auth_scheme scheme;
    (void)scheme_parse(s, n, &i, &scheme);
    while (r >= 0 && (r = param_next(s, n, &i, &ks, &kl, &vs, &ve)) > 0) {
        if (!param_is(s, ks, kl, "realm"))
            continue;
        /* everything up to this value as it came, then the new one quoted */
        if ((r = lbuf_append(out, s + copied, vs - copied)) < 0 || (r = lbuf_putc(out, '"')) < 0)
            break;
        for (const char *p = realm; *p && r >= 0; p++) {
            if (*p == '"' || *p == '\\')
                r = lbuf_putc(out, '\\');
            if (r >= 0)
                r = lbuf_putc(out, *p);
        }
        if (r < 0 || (r = lbuf_putc(out, '"')) < 0)
            break;
        copied = ve;
    }
    if (r >= 0)
        r = lbuf_append(out, s + copied, n - copied);
    if (r < 0) {
        out->len = start;
        return r;
    }
    memcpy(ret_realm, c.realm, strlen(c.realm) + 1);
    return 0;
}
