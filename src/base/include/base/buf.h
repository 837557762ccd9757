/* buf.h — a growable byte buffer that is always NUL-terminated, with an optional size bound
 * so that data from the wire can never make us allocate without limit. */
#pragma once

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "base/macro.h"

struct lbuf {
    char *data; /* NULL until the first append; data[len] == 0 afterwards */
    size_t len;
    size_t cap;
    size_t max; /* 0 = unbounded; appends beyond it fail with -E2BIG */
};

#define LBUF_INIT                                                                                  \
    {                                                                                              \
        NULL, 0, 0, 0                                                                              \
    }

int lbuf_reserve(struct lbuf *b, size_t extra);
int lbuf_append(struct lbuf *b, const void *p, size_t n);
int lbuf_puts(struct lbuf *b, const char *s);
int lbuf_putc(struct lbuf *b, char c);
int lbuf_printf(struct lbuf *b, const char *fmt, ...) _printf_(2, 3);
int lbuf_vprintf(struct lbuf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Drop the first n bytes. */
void lbuf_consume(struct lbuf *b, size_t n);
void lbuf_reset(struct lbuf *b);
void lbuf_free(struct lbuf *b);
/* Hand the NUL-terminated contents to the caller (never NULL: "" for an empty buffer). */
char *lbuf_steal(struct lbuf *b);

static inline void lbuf_freep(struct lbuf *b)
{
    lbuf_free(b);
}
#define _cleanup_lbuf_ _cleanup_(lbuf_freep)
