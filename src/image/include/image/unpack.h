/* unpack.h — unpacking one image layer (a tar, plain, gzip or zstd) into its own directory, in
 * the form overlayfs takes as a lower layer: whiteouts become 0/0 character devices, opaque
 * directories get trusted.overlay.opaque=y. Nothing an entry says can make a write land outside
 * that directory: paths are resolved with openat2(RESOLVE_IN_ROOT) where the kernel has it and
 * component by component without following symlinks where it has not. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "base/errors.h"
#include "image/digest.h"

/* Documented bounds (docs/engine-oci.md "images"). */
#define IMG_LAYER_MAX (8ull << 30)     /* uncompressed bytes of one layer */
#define IMG_LAYER_ENTRIES_MAX 1000000u /* entries in one layer */

struct img_unpack_opts {
    uint64_t max_bytes;   /* uncompressed stream bound; 0 = IMG_LAYER_MAX */
    uint64_t max_entries; /* 0 = IMG_LAYER_ENTRIES_MAX */
    bool no_openat2;      /* use the fallback resolver although the kernel has openat2 (tests) */
};

struct img_unpack_stats {
    char diff_id[IMG_DIGEST_LEN + 1]; /* sha256 of the whole uncompressed tar stream */
    uint64_t entries;
    uint64_t bytes; /* uncompressed stream */
    unsigned whiteouts, opaques;
    unsigned skipped_devices; /* device nodes the process may not create */
    unsigned skipped_xattrs;  /* xattrs the filesystem or the process refused, overlay's own */
    bool openat2;             /* whether openat2 resolved the paths */
};

/* Unpack the layer read from fd (compression detected from the bytes) into the directory dirfd
 * (empty; its own metadata is left alone). Ownership is applied when running as root. On error
 * e names the entry; the directory then holds a partial layer for the caller to remove. The
 * data is on disk (syncfs) when this returns 0. */
int img_unpack_layer(int fd, int dirfd, const struct img_unpack_opts *o,
                     struct img_unpack_stats *ret, struct lerr *e);

/* Whether this kernel has openat2(2) (Linux 5.6+). */
bool img_have_openat2(void);
