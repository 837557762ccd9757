/* topic.c — MQTT UTF-8 rules, topic name/filter validation and matching. One pass per string: a
 * class table per byte, 8 plain ASCII bytes per step, exact RFC 3629 checks for multi-byte. */
#include "mqtt/topic.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "mqtt/codec.h"

enum {
    C_NUL = 1,      /* U+0000: never allowed */
    C_HIGH = 2,     /* lead or continuation byte: decode the sequence */
    C_WILDCARD = 4, /* '+' or '#' */
};

static const uint8_t byte_class[256] = {
    [0] = C_NUL,
    ['+'] = C_WILDCARD,
    ['#'] = C_WILDCARD,
    [0x80 ... 0xff] = C_HIGH,
};

/* Length of the well-formed multi-byte sequence at s (n bytes available), or 0. */
static size_t utf8_seq_len(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    if (c >= 0xc2 && c <= 0xdf)
        return n >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        if (n < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
            return 0;
        if (c == 0xe0 && s[1] < 0xa0) /* overlong */
            return 0;
        if (c == 0xed && s[1] >= 0xa0) /* U+D800..U+DFFF */
            return 0;
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (n < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
            return 0;
        if (c == 0xf0 && s[1] < 0x90) /* overlong */
            return 0;
        if (c == 0xf4 && s[1] >= 0x90) /* past U+10FFFF */
            return 0;
        return 4;
    }
    return 0; /* continuation byte, C0/C1 overlong lead, or F5..FF */
}

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Nonzero iff some byte of w is zero (the classic test; extra flags only above a real zero). */
static inline uint64_t has_zero_byte(uint64_t w)
{
    return (w - ONES) & ~w & HIGHS;
}

/* Whether 8 bytes need no attention: ASCII, no NUL, and (wild) no '+' or '#'. */
static inline bool word_plain(const uint8_t *p, bool wild)
{
    uint64_t w;
    memcpy(&w, p, sizeof(w));
    uint64_t bad = (w & HIGHS) | has_zero_byte(w);
    if (wild)
        bad |= has_zero_byte(w ^ (ONES * '+')) | has_zero_byte(w ^ (ONES * '#'));
    return bad == 0;
}

/* Scan s; stop at the first byte whose class intersects `stop` after handling UTF-8 and NUL.
 * Returns 0 with *ret_off = n when clean, 0 with *ret_off at a stop byte, or -EILSEQ. Plain
 * ASCII is skipped 8 bytes at a time. */
static int scan(const uint8_t *s, size_t n, uint8_t stop, size_t *ret_off, struct lerr *e)
{
    bool wild = stop & C_WILDCARD;
    size_t i = 0;
    for (;;) {
        while (i + 8 <= n && word_plain(s + i, wild))
            i += 8;
        if (i >= n)
            break;
        uint8_t cls = byte_class[s[i]];
        if (likely(cls == 0)) {
            i++;
            continue;
        }
        if (cls & C_NUL)
            return lerr_set(e, -EILSEQ, "U+0000 at offset %zu", i);
        if (cls & C_HIGH) {
            size_t l = utf8_seq_len(s + i, n - i);
            if (l == 0)
                return lerr_set(e, -EILSEQ, "invalid UTF-8 at offset %zu", i);
            i += l;
            continue;
        }
        if (cls & stop) {
            *ret_off = i;
            return 0;
        }
        i++;
    }
    *ret_off = n;
    return 0;
}

int mqtt_utf8_check(const char *s, size_t n, struct lerr *e)
{
    size_t off;
    return scan((const uint8_t *)s, n, 0, &off, e);
}

int mqtt_topic_name_check(const char *t, size_t n, struct lerr *e)
{
    if (n == 0)
        return lerr_set(e, -EINVAL, "empty topic name");
    if (n > MQTT_TOPIC_MAX)
        return lerr_set(e, -EINVAL, "topic name longer than %u bytes", MQTT_TOPIC_MAX);
    size_t off;
    int r = scan((const uint8_t *)t, n, C_WILDCARD, &off, e);
    if (r < 0) {
        lerr_prefix(e, "topic name");
        return r;
    }
    if (off < n)
        return lerr_set(e, -EINVAL, "wildcard '%c' in topic name", t[off]);
    return 0;
}

int mqtt_topic_filter_check(const char *f, size_t n, struct lerr *e)
{
    if (n == 0)
        return lerr_set(e, -EINVAL, "empty topic filter");
    if (n > MQTT_TOPIC_MAX)
        return lerr_set(e, -EINVAL, "topic filter longer than %u bytes", MQTT_TOPIC_MAX);
    const uint8_t *s = (const uint8_t *)f;
    size_t i = 0;
    for (;;) {
        size_t off;
        int r = scan(s + i, n - i, C_WILDCARD, &off, e);
        if (r < 0) {
            lerr_prefix(e, "topic filter");
            return r;
        }
        i += off;
        if (i >= n)
            return 0;
        bool level_start = i == 0 || s[i - 1] == '/';
        if (s[i] == '+') {
            if (!level_start || (i + 1 < n && s[i + 1] != '/'))
                return lerr_set(e, -EINVAL, "topic filter: '+' must fill a whole level");
        } else if (!level_start || i + 1 != n) {
            return lerr_set(e, -EINVAL,
                            "topic filter: '#' must be the last level (alone or after '/')");
        }
        i++;
    }
}

bool mqtt_topic_filter_has_wildcards(const char *f, size_t n)
{
    return memchr(f, '+', n) || memchr(f, '#', n);
}

bool mqtt_topic_match(const char *f, size_t fl, const char *t, size_t tl)
{
    /* §4.7.2: topics starting with '$' are for the server; wildcards at the start skip them. */
    if (tl > 0 && t[0] == '$' && fl > 0 && (f[0] == '+' || f[0] == '#'))
        return false;
    size_t i = 0, j = 0;
    while (i < fl) {
        char c = f[i];
        if (c == '#')
            return true; /* valid filters only have '#' as the whole last level */
        if (c == '+') {
            while (j < tl && t[j] != '/')
                j++;
            i++;
            continue;
        }
        if (j >= tl || t[j] != c) {
            /* "a/#" also matches its parent "a". */
            return j == tl && c == '/' && i + 2 == fl && f[i + 1] == '#';
        }
        i++;
        j++;
    }
    return j == tl;
}
