/* image-internal.h — helpers shared inside src/image, not part of its API. */
#pragma once

#include "base/errors.h"

/* Remove name under dirfd and everything below it, never following symlinks. */
int img_rm_rf_at(int dirfd, const char *name);

/* Add context to e's message and return r: lerr_prefix() itself returns e's code, which is 0
 * for a NULL e and stale when the failure did not set e. */
#define img_prefix(r, e, ...) (lerr_prefix((e), __VA_ARGS__), (r))
