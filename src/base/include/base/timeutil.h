/* timeutil.h — clocks and timestamps: monotonic and wall-clock milliseconds, RFC 3339 formatting
 * and parsing, and the relative/absolute "since" forms the CLI accepts. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define LTIME_RFC3339_MAX 40

int64_t ltime_mono_ms(void);
int64_t ltime_now_ms(void);   /* wall clock, ms since the epoch */
void ltime_sleep_ms(long ms); /* the whole time, resumed after signals */
/* "2026-11-21T05:43:00.123Z"; returns buf. */
char *ltime_format_rfc3339(int64_t ms, char buf[static LTIME_RFC3339_MAX]);
/* Accepts RFC 3339 with Z or an offset, fractions optional. */
int ltime_parse_rfc3339(const char *s, int64_t *ret_ms);
/* CLI/API "since": RFC 3339, unix seconds, or a duration before now ("90s", "10m", "2h", "1d"). */
int ltime_parse_since(const char *s, int64_t now_ms, int64_t *ret_ms);
/* A duration like "500ms", "30s", "10m", "2h", "1d" or bare seconds. */
int ltime_parse_duration_ms(const char *s, int64_t *ret_ms);
