/* str.h — string helpers: prefixes, case-insensitive compare, printf-to-heap, URL encoding,
 * and a growable vector of owned strings (used for error lists and argv building). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "base/macro.h"

static inline bool lstr_eq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}
static inline bool lstr_eq_ci(const char *a, const char *b)
{
    return a && b && strcasecmp(a, b) == 0;
}
static inline bool lstr_empty(const char *s)
{
    return !s || !*s;
}
bool lstr_startswith(const char *s, const char *prefix);
bool lstr_startswith_ci(const char *s, const char *prefix);
bool lstr_endswith(const char *s, const char *suffix);
/* Copy n bytes that need not be NUL-terminated (strndup would scan them for a NUL); NULL on
 * ENOMEM. */
char *lstr_ndup(const void *p, size_t n);
/* heap-allocated printf; NULL on ENOMEM */
char *lstr_printf(const char *fmt, ...) _printf_(1, 2);
/* Copy at most size-1 bytes and terminate; returns -ENAMETOOLONG if truncated. */
int lstr_copy(char *dst, size_t size, const char *src);
void lstr_lower(char *s);

/* Percent-encoding as IoT Hub and SAS tokens use it (RFC 3986 unreserved characters kept). */
int lstr_url_encode(const char *in, size_t n, struct lbuf *out);
/* Decode %XX (and '+' as space when plus_is_space); -EINVAL on a malformed escape. */
/* The value of a hexadecimal digit (either case), or -1. */
int lstr_hexval(char c);
int lstr_url_decode(const char *in, size_t n, bool plus_is_space, struct lbuf *out);

/* Parse an unsigned/signed decimal integer that must span the whole string. */
int lstr_to_u64(const char *s, unsigned long long *ret);
int lstr_to_i64(const char *s, long long *ret);

struct lstrv {
    char **v; /* NULL-terminated once non-empty */
    size_t n;
    size_t cap;
};
#define LSTRV_INIT                                                                                 \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }
int lstrv_push(struct lstrv *sv, const char *s); /* copies s */
int lstrv_push_take(struct lstrv *sv, char *s);  /* takes ownership (frees on failure) */
int lstrv_printf(struct lstrv *sv, const char *fmt, ...) _printf_(2, 3);
bool lstrv_contains(const struct lstrv *sv, const char *s);
char *lstrv_join(const struct lstrv *sv, const char *sep);
void lstrv_free(struct lstrv *sv);
static inline void lstrv_freep(struct lstrv *sv)
{
    lstrv_free(sv);
}
#define _cleanup_lstrv_ _cleanup_(lstrv_freep)
