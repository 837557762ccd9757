/* fuzz-leaf.c — libFuzzer target for leaf device identities: arbitrary bytes as a stored record
 * (unsealed under a fixed master secret), as a runtime-file entry, as a thumbprint list and as a
 * registered CA's PEM; whatever parses must seal and unseal back to itself. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "identity/keys.h"
#include "identity/leaf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t secret[32] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                   16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};

/* l seals and unseals to the same identity. */
static void round_trip(const struct identity_keys *k, const struct identity_leaf *l)
{
    json_t *rec = NULL;
    struct identity_leaf *back = NULL;
    if (identity_leaf_seal(k, "edge1", l, &rec) < 0)
        abort();
    if (identity_leaf_unseal(k, "edge1", rec, &back, NULL) < 0 ||
        strcmp(back->device_id, l->device_id) != 0 || back->auth != l->auth ||
        memcmp(back->key, l->key, sizeof(l->key)) != 0 ||
        memcmp(back->thumbprint, l->thumbprint, sizeof(l->thumbprint)) != 0)
        abort();
    identity_leaf_free(back);
    json_decref(rec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 64 * 1024)
        return 0;
    struct identity_keys *k = NULL;
    if (identity_keys_from_secret(secret, sizeof(secret), &k) < 0)
        abort();
    json_t *j = NULL;
    struct lerr e = {0};
    if (ljson_parse((const char *)data, size, &j, &e) == 0) {
        struct identity_leaf *l = NULL;
        e = (struct lerr){0};
        int r = identity_leaf_unseal(k, "edge1", j, &l, &e);
        if (r == 0) {
            round_trip(k, l);
            identity_leaf_free(l);
        } else if (!e.msg[0]) {
            abort();
        }
        /* as runtime-file entries: {"<id>": {...}, ...} */
        const char *id;
        json_t *v;
        if (json_is_object(j))
            json_object_foreach (j, id, v) {
                e = (struct lerr){0};
                if (identity_leaf_from_runtime_json(id, v, &l, &e) == 0) {
                    round_trip(k, l);
                    json_t *rt = identity_leaf_runtime_json(l);
                    struct identity_leaf *again = NULL;
                    if (!rt || identity_leaf_from_runtime_json(id, rt, &again, NULL) < 0)
                        abort();
                    identity_leaf_free(again);
                    json_decref(rt);
                    identity_leaf_free(l);
                } else if (!e.msg[0]) {
                    abort();
                }
            }
        json_decref(j);
    }
    char *s = malloc(size + 1);
    if (s) {
        memcpy(s, data, size);
        s[size] = 0;
        struct identity_leaf_spec spec = {
            .device_id = "cam", .auth = IDENTITY_LEAF_X509_THUMBPRINT, .thumbprints = s};
        struct identity_leaf *l = NULL;
        if (identity_leaf_new(&spec, 0, &l, NULL) == 0) {
            round_trip(k, l);
            identity_leaf_free(l);
        }
        struct identity_device_ca ca;
        if (identity_device_ca_parse(s, size, 0, &ca, NULL) == 0)
            identity_device_ca_clear(&ca);
        free(s);
    }
    identity_keys_free(k);
    return 0;
}
