/* errors.h — the one error convention: functions return >= 0 on success and -errno on failure.
 * Where a human needs context (a JSON path, a line, a column), the caller also passes a
 * struct lerr that the callee fills with a message. Library code never prints it; the edge
 * (HTTP reply, CLI, log line) does. */
#pragma once

#include "base/macro.h"

#define LERR_MSG_MAX 512

struct lerr {
    int code;               /* negative errno, 0 when unset */
    char msg[LERR_MSG_MAX]; /* human message with context */
};

/* Record code and message in e (if non-NULL); returns code so callers can `return lerr_set(...)`.
 */
int lerr_set(struct lerr *e, int code, const char *fmt, ...) _printf_(3, 4);
/* Prepend "prefix: " to an existing message (adds context while unwinding). */
int lerr_prefix(struct lerr *e, const char *fmt, ...) _printf_(2, 3);
static inline void lerr_clear(struct lerr *e)
{
    if (e) {
        e->code = 0;
        e->msg[0] = 0;
    }
}
/* The message, or strerror(-code) when none was set. */
const char *lerr_str(const struct lerr *e);
