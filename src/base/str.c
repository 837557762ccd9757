/* str.c — string helpers (see str.h). */
#include "base/str.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

bool lstr_startswith(const char *s, const char *prefix)
{
    return s && prefix && strncmp(s, prefix, strlen(prefix)) == 0;
}

bool lstr_startswith_ci(const char *s, const char *prefix)
{
    return s && prefix && strncasecmp(s, prefix, strlen(prefix)) == 0;
}

bool lstr_endswith(const char *s, const char *suffix)
{
    if (!s || !suffix)
        return false;
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

char *lstr_ndup(const void *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s)
        return NULL;
    if (n)
        memcpy(s, p, n);
    s[n] = 0;
    return s;
}

char *lstr_printf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    int r = vasprintf(&s, fmt, ap);
    va_end(ap);
    return r < 0 ? NULL : s;
}

int lstr_copy(char *dst, size_t size, const char *src)
{
    if (size == 0)
        return -ENAMETOOLONG;
    size_t n = strlen(src);
    if (n >= size) {
        memcpy(dst, src, size - 1);
        dst[size - 1] = 0;
        return -ENAMETOOLONG;
    }
    memcpy(dst, src, n + 1);
    return 0;
}

void lstr_lower(char *s)
{
    for (; s && *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

int lstr_url_encode(const char *in, size_t n, struct lbuf *out)
{
    static const char hex[] = "0123456789ABCDEF";
    int r = lbuf_reserve(out, n);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            r = lbuf_putc(out, (char)c);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            r = lbuf_append(out, e, 3);
        }
        if (r < 0)
            return r;
    }
    return 0;
}

int lstr_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int lstr_url_decode(const char *in, size_t n, bool plus_is_space, struct lbuf *out)
{
    int r = lbuf_reserve(out, n);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (c == '%') {
            if (i + 2 >= n)
                return -EINVAL;
            int hi = lstr_hexval(in[i + 1]), lo = lstr_hexval(in[i + 2]);
            if (hi < 0 || lo < 0)
                return -EINVAL;
            c = (char)(hi * 16 + lo);
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        r = lbuf_putc(out, c);
        if (r < 0)
            return r;
    }
    return 0;
}

int lstr_to_u64(const char *s, unsigned long long *ret)
{
    if (!s || !*s || *s == '-' || *s == '+' || isspace((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || !end || *end)
        return -EINVAL;
    *ret = v;
    return 0;
}

int lstr_to_i64(const char *s, long long *ret)
{
    if (!s || !*s || isspace((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno || !end || *end)
        return -EINVAL;
    *ret = v;
    return 0;
}

int lstrv_push_take(struct lstrv *sv, char *s)
{
    if (!s)
        return -ENOMEM;
    if (sv->n + 2 > sv->cap) {
        size_t cap = sv->cap ? sv->cap * 2 : 8;
        char **v = realloc(sv->v, cap * sizeof(char *));
        if (!v) {
            free(s);
            return -ENOMEM;
        }
        sv->v = v;
        sv->cap = cap;
    }
    sv->v[sv->n++] = s;
    sv->v[sv->n] = NULL;
    return 0;
}

int lstrv_push(struct lstrv *sv, const char *s)
{
    return lstrv_push_take(sv, strdup(s));
}

int lstrv_printf(struct lstrv *sv, const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    int r = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (r < 0)
        return -ENOMEM;
    return lstrv_push_take(sv, s);
}

bool lstrv_contains(const struct lstrv *sv, const char *s)
{
    for (size_t i = 0; i < sv->n; i++)
        if (strcmp(sv->v[i], s) == 0)
            return true;
    return false;
}

char *lstrv_join(const struct lstrv *sv, const char *sep)
{
    struct lbuf b = LBUF_INIT;
    for (size_t i = 0; i < sv->n; i++) {
        if ((i && lbuf_puts(&b, sep) < 0) || lbuf_puts(&b, sv->v[i]) < 0) {
            lbuf_free(&b);
            return NULL;
        }
    }
    return lbuf_steal(&b);
}

void lstrv_free(struct lstrv *sv)
{
    for (size_t i = 0; i < sv->n; i++)
        free(sv->v[i]);
    free(sv->v);
    sv->v = NULL;
    sv->n = sv->cap = 0;
}
