/* image-internal.h — helpers shared inside src/image, not part of its API. */
#pragma once

/* Remove name under dirfd and everything below it, never following symlinks. */
int img_rm_rf_at(int dirfd, const char *name);
