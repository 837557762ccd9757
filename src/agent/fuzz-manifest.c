/* fuzz-manifest.c — libFuzzer target: manifest_parse on arbitrary bytes, then the lookups a
 * reconciler makes on what it returns, and image normalisation on the raw input. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct lstrv errors = LSTRV_INIT;
    struct deployment *d = NULL;

    int r = manifest_parse((const char *)data, size, "/usr/libexec/ledge/ledge-hub", &d, &errors);
    if (r == 0) {
        for (size_t i = 0; i < d->n_modules; i++) {
            const struct module_spec *m = &d->modules[i];
            if (deployment_find(d, m->name) != m || strlen(m->config_hash) != 64)
                abort();
            if (m->image) {
                char *again = NULL;
                /* A normalised reference is a fixed point. */
                if (manifest_normalize_image(m->image, &again) < 0 || strcmp(again, m->image) != 0)
                    abort();
                free(again);
                (void)deployment_credential_for(d, m->image);
            }
        }
        deployment_free(d);
    } else if (r == -EINVAL && errors.n == 0) {
        abort(); /* every failure explains itself */
    }
    lstrv_free(&errors);

    if (size < 1024) {
        char *s = malloc(size + 1);
        if (s) {
            memcpy(s, data, size);
            s[size] = 0;
        }
        char *norm = NULL;
        if (s && manifest_normalize_image(s, &norm) == 0) {
            char *again = NULL;
            if (manifest_normalize_image(norm, &again) < 0 || strcmp(again, norm) != 0)
                abort();
            free(again);
            free(norm);
        }
        free(s);
    }
    return 0;
}
