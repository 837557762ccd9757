/* fuzz-sas.c — libFuzzer target for SAS tokens: the parser and the verifier on arbitrary bytes,
 * and a make→verify round trip for every valid module id the input spells. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "identity/keys.h"
#include "identity/sas.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t key[32] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
static const char *const hosts[] = {"myhub.azure-devices.net", "gateway.local"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sas_token t;
    struct lerr e = {0};
    if (sas_token_parse((const char *)data, size, &t, &e) == 0) {
        /* What a successful parse promises. */
        if (!t.sr || !*t.sr || !t.sr_dec || !*t.sr_dec || !t.sig || !*t.sig || t.se > INT64_MAX)
            abort();
        sas_token_done(&t);
    } else if (!e.msg[0] || e.code >= 0) {
        abort();
    }

    if (size > SAS_TOKEN_MAX + 16)
        return 0;
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = 0;
    e = (struct lerr){0};
    int r = sas_token_verify(s, hosts, 2, "dev1", "mod1", key, sizeof(key), 1, &e);
    if (r > 0 || (r < 0 && !e.msg[0]))
        abort();
    e = (struct lerr){0};
    r = sas_token_verify(s, hosts, 2, "dev1", NULL, key, sizeof(key), 1, &e);
    if (r > 0 || (r < 0 && !e.msg[0]))
        abort();

    /* Round trip: any valid module id, encoded by make, must verify for that id. */
    if (identity_id_valid(s)) {
        struct lbuf res = LBUF_INIT, tok = LBUF_INIT;
        if (lbuf_printf(&res, "gateway.local/devices/dev1/modules/%s", s) == 0 &&
            sas_token_make(res.data, key, sizeof(key), 2000000000, NULL, &tok) == 0) {
            e = (struct lerr){0};
            if (sas_token_verify(tok.data, hosts, 2, "DEV1", s, key, sizeof(key), 1999999999, &e) !=
                0)
                abort();
        }
        lbuf_free(&res);
        lbuf_free(&tok);
    }
    free(s);
    return 0;
}
