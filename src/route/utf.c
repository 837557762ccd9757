/* utf.c — the little Unicode the route language needs: lenient UTF-8 decoding, encoding, and
 * counting in UTF-16 code units (IoT Edge measures and indexes strings as .NET does). */
#include "route-internal.h"

size_t u8_decode(const unsigned char *s, size_t n, size_t i, uint32_t *ret_cp)
{
    unsigned char c = s[i];
    uint32_t cp, min;
    size_t len;
    if (c < 0x80) {
        *ret_cp = c;
        return 1;
    } else if (c >= 0xc2 && c <= 0xdf) {
        len = 2, cp = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3, cp = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        *ret_cp = 0xfffd;
        return 1;
    }
    if (n - i < len) {
        *ret_cp = 0xfffd;
        return 1;
    }
    for (size_t k = 1; k < len; k++) {
        if ((s[i + k] & 0xc0) != 0x80) {
            *ret_cp = 0xfffd;
            return 1;
        }
        cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
        *ret_cp = 0xfffd;
        return 1;
    }
    *ret_cp = cp;
    return len;
}

size_t u8_encode(uint32_t cp, char *out)
{
    unsigned char *o = (unsigned char *)out;
    if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        cp = 0xfffd;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xc0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xe0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (unsigned char)(0xf0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

size_t u16_length(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t units = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += u8_decode(u, n, i, &cp);
        units += cp >= 0x10000 ? 2 : 1;
    }
    return units;
}

uint32_t u8_column(const char *s, size_t off)
{
    uint32_t col = 1;
    for (size_t i = 0; i < off; i++)
        if (((unsigned char)s[i] & 0xc0) != 0x80)
            col++;
    return col;
}
