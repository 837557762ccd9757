/* fuzz-ref.c — libFuzzer target: image references (a parsed reference formats to a fixed
 * point), registry keys and credential matching, and WWW-Authenticate challenges (parsed, and
 * their realm rewritten). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image/auth.h"
#include "image/creds.h"
#include "image/ref.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct img_challenge c;
    (void)img_challenge_parse((const char *)data, size, &c);
    /* a rewritten challenge parses, with the new realm and the old service and scope */
    struct lbuf rw = LBUF_INIT;
    char old[IMG_AUTH_PARAM_MAX];
    if (img_challenge_rewrite_realm((const char *)data, size, "https://p:1/ledge/token/0", &rw,
                                    old) == 0) {
        struct img_challenge c2;
        if (img_challenge_parse(rw.data, rw.len, &c2) < 0 ||
            strcmp(c2.realm, "https://p:1/ledge/token/0") != 0 ||
            strcmp(c2.service, c.service) != 0 || strcmp(c2.scope, c.scope) != 0 ||
            strcmp(old, c.realm) != 0)
            abort();
    }
    lbuf_free(&rw);
    if (size > 2048)
        return 0;
    char s[2049];
    memcpy(s, data, size);
    s[size] = 0;
    struct img_ref r;
    if (img_ref_parse(s, &r, NULL) == 0) {
        char out[1024], again[1024];
        struct img_ref r2;
        if (img_ref_format(&r, out, sizeof(out)) < 0 || img_ref_parse(out, &r2, NULL) < 0 ||
            img_ref_format(&r2, again, sizeof(again)) < 0 || strcmp(out, again) != 0)
            abort();
        if (!img_registry_matches(r.registry, r.registry))
            abort();
        (void)img_registry_is_loopback(r.registry);
    }
    char key[300];
    if (img_registry_key(s, key, sizeof(key)) == 0) {
        char key2[300];
        /* A key is its own key. */
        if (img_registry_key(key, key2, sizeof(key2)) < 0 || strcmp(key, key2) != 0)
            abort();
    }
    return 0;
}
