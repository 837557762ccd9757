/* auth.c — WWW-Authenticate challenge parsing (see auth.h): a scheme token, then
 * comma-separated name=value pairs whose values are tokens or quoted strings with
 * backslash escapes. */
#include "auth.h"

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

int img_challenge_parse(const char *s, size_t n, struct img_challenge *ret)
{
    struct img_challenge c = {0};
    size_t i = 0;
    skip_ws(s, n, &i);
    size_t start = i;
    while (i < n && is_tchar(s[i]))
        i++;
    size_t sl = i - start;
    if (sl == 6 && strncasecmp(s + start, "bearer", 6) == 0)
        c.scheme = IMG_AUTH_BEARER;
    else if (sl == 5 && strncasecmp(s + start, "basic", 5) == 0)
        c.scheme = IMG_AUTH_BASIC;
    else
        return sl ? -ENOTSUP : -EINVAL;

    for (;;) {
        skip_ws(s, n, &i);
        while (i < n && s[i] == ',') {
            i++;
            skip_ws(s, n, &i);
        }
        if (i >= n)
            break;
        size_t ks = i;
        while (i < n && is_tchar(s[i]))
            i++;
        size_t kl = i - ks;
        skip_ws(s, n, &i);
        if (kl == 0 || i >= n || s[i] != '=')
            return -EINVAL;
        i++;
        skip_ws(s, n, &i);
        char *dst = NULL;
        if (kl == 5 && strncasecmp(s + ks, "realm", 5) == 0)
            dst = c.realm;
        else if (kl == 7 && strncasecmp(s + ks, "service", 7) == 0)
            dst = c.service;
        else if (kl == 5 && strncasecmp(s + ks, "scope", 5) == 0)
            dst = c.scope;
        size_t len = 0;
        if (i < n && s[i] == '"') {
            for (i++;; i++) {
                if (i >= n)
                    return -EINVAL; /* unterminated */
                char ch = s[i];
                if (ch == '"') {
                    i++;
                    break;
                }
                if (ch == '\\') {
                    if (++i >= n)
                        return -EINVAL;
                    ch = s[i];
                }
                if (ch == 0)
                    return -EINVAL;
                if (dst) {
                    if (len + 1 >= IMG_AUTH_PARAM_MAX)
                        return -ENAMETOOLONG;
                    dst[len++] = ch;
                }
            }
        } else {
            size_t vs = i;
            while (i < n && is_tchar(s[i]))
                i++;
            if (i == vs)
                return -EINVAL;
            if (dst) {
                if (i - vs >= IMG_AUTH_PARAM_MAX)
                    return -ENAMETOOLONG;
                memcpy(dst, s + vs, i - vs);
                len = i - vs;
            }
        }
        if (dst)
            dst[len] = 0;
        skip_ws(s, n, &i);
        if (i < n && s[i] != ',')
            return -EINVAL;
    }
    *ret = c;
    return 0;
}
