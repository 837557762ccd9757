/* tokens.c — the dashboard's login tokens, hashed at rest (dashboard/tokens.h). */
#include "dashboard/tokens.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/macro.h"
#include "base/str.h"
#include "base/timeutil.h"

#define HASH_HEX (2 * LCRYPTO_SHA256_LEN + 1)
#define SECRET_BYTES 32

struct dash_token {
    char id[DASH_TOKEN_ID_LEN + 1];
    char hash[HASH_HEX];
    int64_t created_ms, expires_ms;
};

struct dash_tokens {
    char *path;
    struct dash_token v[DASH_TOKENS_MAX];
    size_t n;
};

static void hex(const uint8_t *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = 0;
}

static bool is_hex(const char *s, size_t n)
{
    if (!s || strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!strchr("0123456789abcdef", s[i]))
            return false;
    return true;
}

static int save(const struct dash_tokens *t)
{
    _cleanup_json_ json_t *arr = json_array();
    for (size_t i = 0; i < t->n; i++)
        json_array_append_new(arr,
                              json_pack("{s:s, s:s, s:I, s:I}", "id", t->v[i].id, "sha256",
                                        t->v[i].hash, "created", (json_int_t)t->v[i].created_ms,
                                        "expires", (json_int_t)t->v[i].expires_ms));
    _cleanup_free_ char *text = ljson_dump(arr);
    if (!text)
        return -ENOMEM;
    return lfs_write_atomic(t->path, text, strlen(text), 0600);
}

int dash_tokens_open(const char *path, struct dash_tokens **ret)
{
    struct dash_tokens *t = calloc(1, sizeof(*t));
    if (!t || !(t->path = strdup(path))) {
        free(t);
        return -ENOMEM;
    }
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    int r = lfs_read_file(path, 1 << 20, &text, &len);
    if (r == -ENOENT) {
        *ret = t;
        return 0;
    }
    _cleanup_json_ json_t *arr = NULL;
    if (r < 0 || ljson_parse(text, len, &arr, NULL) < 0 || !json_is_array(arr)) {
        dash_tokens_free(t);
        return r < 0 ? r : -EINVAL;
    }
    size_t i;
    json_t *e;
    json_array_foreach (arr, i, e) {
        if (t->n == DASH_TOKENS_MAX)
            break;
        const char *id = ljson_str(e, "id"), *h = ljson_str(e, "sha256");
        if (!is_hex(id, DASH_TOKEN_ID_LEN) || !is_hex(h, HASH_HEX - 1))
            continue;
        struct dash_token *d = &t->v[t->n++];
        memcpy(d->id, id, sizeof(d->id));
        memcpy(d->hash, h, sizeof(d->hash));
        d->created_ms = ljson_int(e, "created", 0);
        d->expires_ms = ljson_int(e, "expires", 0);
    }
    *ret = t;
    return 0;
}

void dash_tokens_free(struct dash_tokens *t)
{
    if (!t)
        return;
    free(t->path);
    free(t);
}

/* Drop expired tokens; when full, the oldest one too. */
static void prune(struct dash_tokens *t, int64_t now_ms, bool make_room)
{
    size_t w = 0;
    for (size_t i = 0; i < t->n; i++)
        if (t->v[i].expires_ms > now_ms)
            t->v[w++] = t->v[i];
    t->n = w;
    if (make_room && t->n == DASH_TOKENS_MAX) {
        size_t oldest = 0;
        for (size_t i = 1; i < t->n; i++)
            if (t->v[i].created_ms < t->v[oldest].created_ms)
                oldest = i;
        t->v[oldest] = t->v[--t->n];
    }
}

int dash_tokens_issue(struct dash_tokens *t, int64_t now_ms, int64_t ttl_ms, char **ret_token,
                      char ret_id[DASH_TOKEN_ID_LEN + 1], int64_t *ret_expires_ms)
{
    if (ttl_ms <= 0)
        return -EINVAL;
    uint8_t idb[DASH_TOKEN_ID_LEN / 2], secret[SECRET_BYTES];
    char secret_hex[2 * SECRET_BYTES + 1];
    int r;
    if ((r = lcrypto_random(idb, sizeof(idb))) < 0 ||
        (r = lcrypto_random(secret, sizeof(secret))) < 0)
        return r;
    struct dash_token d = {.created_ms = now_ms, .expires_ms = now_ms + ttl_ms};
    hex(idb, sizeof(idb), d.id);
    hex(secret, sizeof(secret), secret_hex);
    /* The token names its id, so verifying hashes one candidate, not all of them. */
    char *token = lstr_printf(DASH_TOKEN_PREFIX "%s_%s", d.id, secret_hex);
    lcrypto_wipe(secret, sizeof(secret));
    lcrypto_wipe(secret_hex, sizeof(secret_hex));
    if (!token)
        return -ENOMEM;
    lcrypto_sha256_hex(token, strlen(token), d.hash);
    prune(t, now_ms, true);
    t->v[t->n++] = d;
    if ((r = save(t)) < 0) {
        t->n--;
        lcrypto_wipe(token, strlen(token));
        free(token);
        return r;
    }
    *ret_token = token;
    memcpy(ret_id, d.id, sizeof(d.id));
    if (ret_expires_ms)
        *ret_expires_ms = d.expires_ms;
    return 0;
}

int dash_tokens_verify(struct dash_tokens *t, const char *token, int64_t now_ms,
                       char ret_id[DASH_TOKEN_ID_LEN + 1], int64_t *ret_expires_ms)
{
    size_t plen = strlen(DASH_TOKEN_PREFIX);
    if (!token || strlen(token) != plen + DASH_TOKEN_ID_LEN + 1 + 2 * SECRET_BYTES ||
        !lstr_startswith(token, DASH_TOKEN_PREFIX) || token[plen + DASH_TOKEN_ID_LEN] != '_')
        return -EACCES;
    char hash[HASH_HEX];
    lcrypto_sha256_hex(token, strlen(token), hash);
    for (size_t i = 0; i < t->n; i++) {
        const struct dash_token *d = &t->v[i];
        if (memcmp(d->id, token + plen, DASH_TOKEN_ID_LEN) != 0)
            continue;
        if (!lcrypto_memeq(d->hash, hash, HASH_HEX - 1) || d->expires_ms <= now_ms)
            return -EACCES;
        memcpy(ret_id, d->id, sizeof(d->id));
        if (ret_expires_ms)
            *ret_expires_ms = d->expires_ms;
        return 0;
    }
    return -EACCES;
}

int dash_tokens_revoke(struct dash_tokens *t, const char *id)
{
    size_t w = 0, n0 = t->n;
    for (size_t i = 0; i < t->n; i++)
        if (id && strcmp(t->v[i].id, id) != 0)
            t->v[w++] = t->v[i];
    if (id && w == n0)
        return -ENOENT;
    t->n = w;
    int r = save(t);
    return r < 0 ? r : (int)(n0 - w);
}

json_t *dash_tokens_json(const struct dash_tokens *t, int64_t now_ms)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < t->n; i++) {
        char c[LTIME_RFC3339_MAX], e[LTIME_RFC3339_MAX];
        json_array_append_new(arr,
                              json_pack("{s:s, s:s, s:s, s:b}", "id", t->v[i].id, "createdAt",
                                        ltime_format_rfc3339(t->v[i].created_ms, c), "expiresAt",
                                        ltime_format_rfc3339(t->v[i].expires_ms, e), "expired",
                                        t->v[i].expires_ms <= now_ms));
    }
    return arr;
}
