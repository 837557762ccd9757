/* fuzz-redact.c — libFuzzer target for the support bundle's redaction rule (redact.h): the first
 * line of the input is a secret the redactor learns, the rest a text (first byte even) or a JSON
 * document (odd) as they come from logs and the management API. Whatever the input, nothing the
 * redactor learned may be left in what it writes, and a document stays a document. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/str.h"
#include "redact.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A learned value the output may still contain only as part of the REDACTED marker. */
static bool checkable(const char *v)
{
    return strlen(v) >= REDACT_KNOWN_MIN && !strchr(v, '<') && !strchr(v, '>') &&
           !strstr(REDACTED, v);
}

static void assert_clean(const struct redactor *r, const struct lbuf *out)
{
    for (size_t i = 0; i < r->known.n; i++)
        if (checkable(r->known.v[i]) && out->data &&
            memmem(out->data, out->len, r->known.v[i], strlen(r->known.v[i])))
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 1 << 20)
        return 0;
    bool doc = data[0] & 1;
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    const char *nl = memchr(text, '\n', n);
    struct redactor r;
    redactor_init(&r);
    if (nl) {
        char *secret = lstr_ndup(text, (size_t)(nl - text));
        if (secret && !memchr(text, 0, (size_t)(nl - text)))
            redactor_learn(&r, secret);
        free(secret);
        n -= (size_t)(nl - text) + 1;
        text = nl + 1;
    }
    struct lbuf out = LBUF_INIT;
    if (doc) {
        json_t *j = json_loadb(text, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        if (j) {
            redact_json(&r, j);
            char *dumped = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
            if (!dumped)
                abort(); /* still a document */
            if (redact_text(&r, dumped, strlen(dumped), &out) < 0)
                abort();
            free(dumped);
            json_decref(j);
        }
    } else if (redact_text(&r, text, n, &out) < 0) {
        abort();
    }
    assert_clean(&r, &out);
    lbuf_free(&out);
    redactor_clear(&r);
    return 0;
}
