/* schema.h — the table of every configuration key (dotted path, type, bounds, default, where it
 * lives in struct ledge_config) and the per-type parsers and formatters the loader, defaults,
 * config_free() and config_to_json() all drive from it. Internal to src/config. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "config/config.h"

enum cfg_type {
    CT_STRING,   /* char *, with an optional validator */
    CT_BOOL,     /* bool */
    CT_INT,      /* int in [min, max] */
    CT_DURATION, /* int64_t milliseconds in [min, max] */
    CT_SIZE,     /* uint64_t bytes in [min, max] */
    CT_PATH,     /* char *, absolute */
    CT_ENUM,     /* int, index into names */
    CT_STRLIST,  /* struct lstrv; the validator checks each item */
    CT_URI,      /* char *, an engine URI */
    CT_RENEW,    /* struct config_renew: "20%" or a duration */
    CT_CONNSTR,  /* no storage: the loader parses it into device.* */
};

enum {
    CF_SECRET = 1 << 0,  /* value never appears in a message; wiped on free; redacted in JSON */
    CF_SOCKET = 1 << 1,  /* a unix socket path: must fit sockaddr_un */
    CF_SECONDS = 1 << 2, /* duration must be whole seconds */
};

/* A validator: 0 when s is acceptable, else -EINVAL with the complete reason in why (for
 * non-secret keys it quotes the value, e.g. "\"a b\" is not a valid host name"). */
typedef int (*cfg_check_fn)(const char *s, struct lbuf *why);

struct cfg_key {
    const char *path; /* "agent.backoff_max" */
    enum cfg_type type;
    size_t off; /* offsetof(struct ledge_config, ...); unused for CT_CONNSTR */
    unsigned flags;
    int64_t min, max;         /* CT_INT, CT_DURATION (ms), CT_SIZE (bytes), CT_RENEW (ms) */
    const char *const *names; /* CT_ENUM: value names in enum order, NULL-terminated */
    cfg_check_fn check;       /* CT_STRING, CT_STRLIST items */
    const char *dflt;         /* default as it would be written in the file; NULL = none/derived */
};

extern const struct cfg_key cfg_keys[];
extern const size_t cfg_n_keys;

const struct cfg_key *cfg_find(const char *path);
/* True when path names a section (a mapping of keys), e.g. "device" or "device.x509". */
bool cfg_is_section(const char *path);

static inline void *cfg_field(const struct cfg_key *k, const struct ledge_config *c)
{
    return (char *)c + k->off;
}

/* Parse one scalar value s (NUL-free, length already checked by the caller) for key k and
 * store it in c, replacing (and freeing) what was there. For CT_STRLIST, s is one item to
 * append. On a bad value returns -EINVAL with the reason in why; -ENOMEM on allocation
 * failure. */
int cfg_set_scalar(const struct cfg_key *k, const char *s, struct ledge_config *c,
                   struct lbuf *why);
/* "a duration", "true or false", ...: what a key expects, for "must be ..." messages. */
const char *cfg_type_noun(const struct cfg_key *k);
/* The value of k in c as JSON (durations and sizes in their canonical text form). */
json_t *cfg_value_json(const struct cfg_key *k, const struct ledge_config *c, bool redact);
/* Release k's storage in c (wiping secrets) and zero it. */
void cfg_free_value(const struct cfg_key *k, struct ledge_config *c);

/* Canonical text of a duration ("500ms", "30s", "10m", "90d") and size ("512", "64KiB"). */
void cfg_format_duration(int64_t ms, char buf[static 32]);
void cfg_format_size(uint64_t bytes, char buf[static 32]);
/* Strict parsers behind the CT_DURATION and CT_SIZE types. */
int cfg_parse_duration(const char *s, int64_t *ret_ms);
int cfg_parse_size(const char *s, uint64_t *ret);

/* Append s to out as a double-quoted, escaped string of at most ~64 characters, safe to print
 * on a terminal. */
void cfg_quote(struct lbuf *out, const char *s);
void cfg_quote_n(struct lbuf *out, const char *s, size_t n);

/* Validators shared with the loader's cross-checks. */
int cfg_check_device_id(const char *s, struct lbuf *why);
int cfg_check_hostname(const char *s, struct lbuf *why);
int cfg_check_iothub_hostname(const char *s, struct lbuf *why);
int cfg_check_device_key(const char *s, struct lbuf *why);
bool cfg_is_hostname(const char *s);
bool cfg_is_ip(const char *s);
