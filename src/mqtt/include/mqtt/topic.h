/* topic.h — MQTT topic names and filters: UTF-8 rules (§1.5.3), validation (§4.7) and matching,
 * including the rule that filters starting with a wildcard do not match topics starting with '$'.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "base/errors.h"

/* 0 when s is well-formed UTF-8 without U+0000 (no overlongs, surrogates or code points past
 * U+10FFFF); otherwise -EILSEQ with "invalid UTF-8 at offset N" or "U+0000 at offset N". Control
 * characters and non-characters are accepted: the spec says SHOULD NOT, not MUST NOT. */
int mqtt_utf8_check(const char *s, size_t n, struct lerr *e);

/* A topic name as a PUBLISH (or a will) carries it: 1..65535 bytes of valid UTF-8, no '+' or '#'.
 * -EINVAL ("empty topic name", "wildcard '+' in topic name", ...) or -EILSEQ ("topic name: invalid
 * UTF-8 at offset 3"). */
int mqtt_topic_name_check(const char *t, size_t n, struct lerr *e);

/* A topic filter as SUBSCRIBE/UNSUBSCRIBE carry it: 1..65535 bytes of valid UTF-8; '+' fills a
 * whole level; '#' is alone or follows '/' and ends the filter. -EINVAL or -EILSEQ as above. */
int mqtt_topic_filter_check(const char *f, size_t n, struct lerr *e);

bool mqtt_topic_filter_has_wildcards(const char *f, size_t n);

/* Whether a valid topic name matches a valid filter ("sport/#" matches "sport" too; '+' matches
 * an empty level; '+' or '#' at the start of a filter never match a topic starting with '$'). */
bool mqtt_topic_match(const char *filter, size_t filter_len, const char *topic, size_t topic_len);
