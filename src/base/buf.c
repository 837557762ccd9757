/* buf.c — growable, bounded, NUL-terminated byte buffer. */
#include "base/buf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int lbuf_reserve(struct lbuf *b, size_t extra)
{
    if (extra > SIZE_MAX / 2 - b->len)
        return -E2BIG;
    size_t need = b->len + extra + 1;
    if (b->max && need > b->max + 1)
        return -E2BIG;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    if (b->max && cap > b->max + 1)
        cap = b->max + 1;
    char *p = realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    if (!b->data)
        p[0] = 0; /* a reserved-only buffer is still a valid empty string */
    b->data = p;
    b->cap = cap;
    return 0;
}

int lbuf_append(struct lbuf *b, const void *p, size_t n)
{
    int r = lbuf_reserve(b, n);
    if (r < 0)
        return r;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

int lbuf_puts(struct lbuf *b, const char *s)
{
    return lbuf_append(b, s, strlen(s));
}

int lbuf_putc(struct lbuf *b, char c)
{
    return lbuf_append(b, &c, 1);
}

int lbuf_vprintf(struct lbuf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return -EINVAL;
    int r = lbuf_reserve(b, (size_t)n);
    if (r < 0)
        return r;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int lbuf_printf(struct lbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = lbuf_vprintf(b, fmt, ap);
    va_end(ap);
    return r;
}

void lbuf_consume(struct lbuf *b, size_t n)
{
    if (n >= b->len) {
        lbuf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = 0;
}

void lbuf_reset(struct lbuf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = 0;
}

void lbuf_free(struct lbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

char *lbuf_steal(struct lbuf *b)
{
    char *p = b->data ? b->data : strdup("");
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}
