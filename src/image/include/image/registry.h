/* registry.h — pulling images from OCI distribution registries (the registry API v2) into the
 * content store: Bearer token and Basic auth, HTTPS with a CA file, plain HTTP for loopback (and
 * listed) registries, manifest lists and OCI indexes resolved by the platform rule, every blob
 * verified against its digest while it streams, layers against their diff_ids while they unpack.
 *
 * Blocking (libcurl's easy interface): run it off the event loop — the oci engine runs pulls in
 * a helper process, which also keeps the unpacking of untrusted layers out of ledged. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "base/errors.h"
#include "image/store.h"

#define IMG_TOKEN_MAX (64u << 10)      /* a token server's answer */
#define IMG_ERROR_BODY_MAX (64u << 10) /* an error response kept for its message */

struct img_pull_opts {
    const char *ca_file;             /* PEM bundle for HTTPS registries; NULL: the system's */
    const char *username, *password; /* NULL: anonymous (see creds.h for the lookup) */
    const char *const *insecure;     /* NULL-terminated host[:port]s allowed over plain HTTP,
                                        besides loopback registries */
    const char *platform;            /* "linux/arm/v7"; NULL: this machine's */
    long connect_timeout_ms;         /* 0: 10 s */
    long stall_timeout_s;            /* abort a transfer idle this long; 0: 60 s */
    uint64_t max_layer;              /* compressed bytes of one layer; 0: IMG_LAYER_MAX */
    struct img_unpack_opts unpack;
    /* Called as blobs arrive: what ("sha256:…" or "manifest"), bytes so far, bytes in all. */
    void (*progress)(void *ud, const char *what, uint64_t done, uint64_t total);
    void *ud;
};

/* Pull ref (any spelling img_ref_parse takes) into s and name it there; ret (may be NULL)
 * receives the stored image. Errors name the image and the registry and say what failed: the
 * registry unreachable, authentication, an unknown repository or tag, no manifest for this
 * platform, a digest mismatch. */
int img_pull(struct img_store *s, const char *ref, const struct img_pull_opts *o,
             struct img_image *ret, struct lerr *e);
