/* errors.c — error message helpers for the error convention described in errors.h. */
#include "base/errors.h"

#include <stdarg.h>
#include <string.h>

static void copy_trunc(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);
    if (n >= size)
        n = size - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

int lerr_set(struct lerr *e, int code, const char *fmt, ...)
{
    if (!e)
        return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    e->code = code;
    return code;
}

int lerr_prefix(struct lerr *e, const char *fmt, ...)
{
    if (!e)
        return 0;
    char prefix[LERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    char old[LERR_MSG_MAX];
    memcpy(old, e->msg, sizeof(old));
    size_t n = strlen(prefix);
    if (n + 2 >= sizeof(e->msg))
        n = sizeof(e->msg) - 3;
    memcpy(e->msg, prefix, n);
    memcpy(e->msg + n, ": ", 2);
    copy_trunc(e->msg + n + 2, sizeof(e->msg) - n - 2, old);
    return e->code;
}

const char *lerr_str(const struct lerr *e)
{
    if (!e)
        return "unknown error";
    if (e->msg[0])
        return e->msg;
    return e->code ? strerror(-e->code) : "no error";
}
