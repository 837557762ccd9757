/* timeutil.c — clocks and timestamp formats (see timeutil.h). */
#include "base/timeutil.h"

#include <ctype.h>
#include <stdbool.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ltime_mono_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}
int64_t ltime_now_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}

char *ltime_format_rfc3339(int64_t ms, char buf[static LTIME_RFC3339_MAX])
{
    time_t secs = (time_t)(ms / 1000);
    int frac = (int)(ms % 1000);
    if (frac < 0) {
        frac += 1000;
        secs -= 1;
    }
    struct tm tm;
    gmtime_r(&secs, &tm);
    char tmp[32];
    strftime(tmp, sizeof(tmp), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, LTIME_RFC3339_MAX, "%s.%03dZ", tmp, frac);
    return buf;
}

int ltime_parse_rfc3339(const char *s, int64_t *ret_ms)
{
    if (!s)
        return -EINVAL;
    struct tm tm = {0};
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p)
        p = strptime(s, "%Y-%m-%d %H:%M:%S", &tm);
    if (!p)
        return -EINVAL;
    int64_t frac_ms = 0;
    if (*p == '.') {
        p++;
        int digits = 0;
        int64_t scale = 100;
        while (isdigit((unsigned char)*p)) {
            if (digits < 3) {
                frac_ms += (*p - '0') * scale;
                scale /= 10;
            }
            digits++;
            p++;
        }
        if (!digits)
            return -EINVAL;
    }
    int64_t offset_s = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1;
        int hh, mm;
        /* exactly "+HH:MM" */
        if (!isdigit((unsigned char)p[1]) || !isdigit((unsigned char)p[2]) || p[3] != ':' ||
            !isdigit((unsigned char)p[4]) || !isdigit((unsigned char)p[5]) ||
            sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2)
            return -EINVAL;
        offset_s = sign * (hh * 3600 + mm * 60);
        p += 6;
    } else {
        return -EINVAL;
    }
    if (*p)
        return -EINVAL;
    time_t t = timegm(&tm);
    *ret_ms = ((int64_t)t - offset_s) * 1000 + frac_ms;
    return 0;
}

int ltime_parse_duration_ms(const char *s, int64_t *ret_ms)
{
    if (!s || !*s)
        return -EINVAL;
    /* digits, an optional fraction, then the unit: no signs, exponents, hex, inf or nan */
    const char *q = s;
    while (isdigit((unsigned char)*q))
        q++;
    if (q == s)
        return -EINVAL;
    if (*q == '.') {
        q++;
        if (!isdigit((unsigned char)*q))
            return -EINVAL;
        while (isdigit((unsigned char)*q))
            q++;
    }
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end != q || v < 0)
        return -EINVAL;
    double mult;
    if (!*end || strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "m") == 0)
        mult = 60e3;
    else if (strcmp(end, "h") == 0)
        mult = 3600e3;
    else if (strcmp(end, "d") == 0)
        mult = 86400e3;
    else
        return -EINVAL;
    double ms = v * mult;
    if (ms > 9.2e18)
        return -ERANGE;
    *ret_ms = (int64_t)ms;
    return 0;
}

int ltime_parse_since(const char *s, int64_t now_ms, int64_t *ret_ms)
{
    if (!s || !*s)
        return -EINVAL;
    if (ltime_parse_rfc3339(s, ret_ms) == 0)
        return 0;
    bool all_digits = true;
    for (const char *p = s; *p; p++)
        if (!isdigit((unsigned char)*p))
            all_digits = false;
    if (all_digits) {
        *ret_ms = strtoll(s, NULL, 10) * 1000;
        return 0;
    }
    int64_t d;
    int r = ltime_parse_duration_ms(s, &d);
    if (r < 0)
        return r;
    *ret_ms = now_ms - d;
    return 0;
}

void ltime_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}
