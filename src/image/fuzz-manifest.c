/* fuzz-manifest.c — libFuzzer target: registry manifests, indexes and image configs from
 * arbitrary bytes; the first byte picks a Content-Type, the platform rule runs on every index. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const types[] = {NULL,
                                        IMG_MT_DOCKER_MANIFEST,
                                        IMG_MT_DOCKER_LIST,
                                        IMG_MT_OCI_MANIFEST,
                                        IMG_MT_OCI_INDEX,
                                        "text/plain"};
    if (size == 0)
        return 0;
    const char *ct = types[data[0] % 6];
    data++, size--;
    struct img_manifest *m = NULL;
    if (img_manifest_parse((const char *)data, size, ct, &m, NULL) == 0) {
        if (m->kind == IMG_KIND_IMAGE && m->n_descs > IMG_LAYERS_MAX)
            abort();
        for (size_t i = 0; i < m->n_descs; i++)
            if (!img_digest_valid(m->descs[i].digest))
                abort();
        if (m->kind == IMG_KIND_INDEX) {
            static const char *const want[] = {"linux/amd64", "linux/arm/v7", "linux/arm64",
                                               "linux/arm/v6"};
            for (size_t w = 0; w < 4; w++) {
                struct img_platform p;
                const struct img_desc *d;
                struct lerr e;
                if (img_platform_parse(want[w], &p, NULL) < 0)
                    abort();
                if (img_index_select(m, &p, &d, &e) == 0 &&
                    (!d->has_platform || img_platform_score(&p, &d->platform) < 0))
                    abort();
            }
        }
        img_manifest_free(m);
    }
    struct img_config *c = NULL;
    if (img_config_parse((const char *)data, size, &c, NULL) == 0) {
        for (size_t i = 0; i < c->diff_ids.n; i++)
            if (!img_digest_valid(c->diff_ids.v[i]))
                abort();
        img_config_free(c);
    }
    return 0;
}
