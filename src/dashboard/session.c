/* session.c — the dashboard's sessions, cookies, CSRF and Origin checks (dashboard/session.h). */
#include "dashboard/session.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/crypto.h"
#include "base/str.h"

void dash_sessions_init(struct dash_sessions *s, int64_t idle_ms)
{
    memset(s, 0, sizeof(*s));
    s->idle_ms = idle_ms;
}

static int random_hex(char out[DASH_SECRET_HEX + 1])
{
    static const char digits[] = "0123456789abcdef";
    uint8_t b[DASH_SECRET_HEX / 2];
    int r = lcrypto_random(b, sizeof(b));
    if (r < 0)
        return r;
    for (size_t i = 0; i < sizeof(b); i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[DASH_SECRET_HEX] = 0;
    lcrypto_wipe(b, sizeof(b));
    return 0;
}

static bool live(const struct dash_sessions *s, const struct dash_session *e, int64_t now_ms)
{
    return e->expires_ms > now_ms && (s->idle_ms <= 0 || now_ms - e->last_ms < s->idle_ms);
}

static void expire(struct dash_sessions *s, int64_t now_ms)
{
    size_t w = 0;
    for (size_t i = 0; i < s->n; i++)
        if (live(s, &s->v[i], now_ms))
            s->v[w++] = s->v[i];
    s->n = w;
}

struct dash_session *dash_session_create(struct dash_sessions *s, const char *token_id,
                                         int64_t token_expires_ms, int64_t now_ms)
{
    expire(s, now_ms);
    if (s->n == DASH_SESSIONS_MAX) {
        size_t lru = 0;
        for (size_t i = 1; i < s->n; i++)
            if (s->v[i].last_ms < s->v[lru].last_ms)
                lru = i;
        s->v[lru] = s->v[--s->n];
    }
    struct dash_session *e = &s->v[s->n];
    memset(e, 0, sizeof(*e));
    if (random_hex(e->id) < 0 || random_hex(e->csrf) < 0)
        return NULL;
    lstr_copy(e->token_id, sizeof(e->token_id), token_id);
    e->expires_ms = token_expires_ms;
    e->last_ms = now_ms;
    s->n++;
    return e;
}

struct dash_session *dash_session_find(struct dash_sessions *s, const char *cookie_header,
                                       int64_t now_ms)
{
    char value[DASH_SECRET_HEX + 1];
    if (dash_cookie_get(cookie_header, DASH_COOKIE, value, sizeof(value)) < 0 ||
        strlen(value) != DASH_SECRET_HEX)
        return NULL;
    expire(s, now_ms);
    for (size_t i = 0; i < s->n; i++)
        if (lcrypto_memeq(s->v[i].id, value, DASH_SECRET_HEX)) {
            s->v[i].last_ms = now_ms;
            return &s->v[i];
        }
    return NULL;
}

void dash_session_end(struct dash_sessions *s, struct dash_session *e)
{
    if (!e || e < s->v || e >= s->v + s->n)
        return;
    *e = s->v[--s->n];
}

size_t dash_sessions_revoke(struct dash_sessions *s, const char *token_id)
{
    size_t w = 0, n0 = s->n;
    for (size_t i = 0; i < s->n; i++)
        if (token_id && strcmp(s->v[i].token_id, token_id) != 0)
            s->v[w++] = s->v[i];
    s->n = w;
    return n0 - w;
}

int dash_cookie_get(const char *header, const char *name, char *buf, size_t size)
{
    size_t nlen = strlen(name);
    const char *p = header;
    while (p && *p) {
        while (*p == ' ' || *p == '\t' || *p == ';')
            p++;
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > nlen && memcmp(p, name, nlen) == 0 && p[nlen] == '=') {
            const char *v = p + nlen + 1;
            size_t vlen = len - nlen - 1;
            while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
                vlen--;
            if (vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"') {
                v++;
                vlen -= 2;
            }
            if (vlen >= size)
                return -E2BIG;
            memcpy(buf, v, vlen);
            buf[vlen] = 0;
            return 0;
        }
        p = end;
    }
    return -ENOENT;
}

char *dash_cookie_format(char *buf, size_t size, const char *value, int64_t max_age_s, bool tls)
{
    snprintf(buf, size, "%s=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%lld%s", DASH_COOKIE,
             max_age_s > 0 ? value : "", (long long)(max_age_s > 0 ? max_age_s : 0),
             tls ? "; Secure" : "");
    return buf;
}

bool dash_csrf_ok(const struct dash_session *e, const char *header)
{
    return e && header && strlen(header) == DASH_SECRET_HEX &&
           lcrypto_memeq(e->csrf, header, DASH_SECRET_HEX);
}

bool dash_origin_ok(const char *origin, const char *host, bool tls)
{
    if (!origin || !host || !*host || strchr(host, '/') || strchr(host, ' '))
        return false;
    const char *scheme = tls ? "https://" : "http://";
    size_t sl = strlen(scheme);
    return strncmp(origin, scheme, sl) == 0 && lstr_eq_ci(origin + sl, host);
}

bool dash_method_changes(const char *method)
{
    return !(lstr_eq(method, "GET") || lstr_eq(method, "HEAD"));
}
