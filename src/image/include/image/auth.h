/* image/auth.h — the registry's WWW-Authenticate challenge (RFC 7235 auth-params, as the
 * distribution spec's token flow uses them): "Bearer realm=…,service=…,scope=…" or "Basic
 * realm=…". Pure; fuzzed. */
#pragma once

#include <stddef.h>

#include "base/buf.h"

enum img_auth_scheme {
    IMG_AUTH_NONE,
    IMG_AUTH_BASIC,
    IMG_AUTH_BEARER,
};

#define IMG_AUTH_PARAM_MAX 1024

struct img_challenge {
    enum img_auth_scheme scheme;
    char realm[IMG_AUTH_PARAM_MAX];
    char service[IMG_AUTH_PARAM_MAX];
    char scope[IMG_AUTH_PARAM_MAX];
};

/* Parse one header value (without "WWW-Authenticate:"). -EINVAL for a malformed one, -ENOTSUP
 * for a scheme other than Basic and Bearer; -ENAMETOOLONG for a parameter beyond
 * IMG_AUTH_PARAM_MAX. Unknown parameters are ignored. */
int img_challenge_parse(const char *value, size_t n, struct img_challenge *ret);
/* The Bearer challenge value with every realm parameter's value replaced by realm (quoted and
 * escaped), everything else byte for byte (service, scope, error, spacing), appended to out; the
 * realm it named (unescaped) in ret_realm. For a registry proxy that relays the token requests
 * too (docs/registry-proxy.md). -ENOTSUP a Basic challenge, -ENOENT no realm, -EINVAL malformed
 * (as img_challenge_parse) or a realm with control characters; out as it was on failure. */
int img_challenge_rewrite_realm(const char *value, size_t n, const char *realm, struct lbuf *out,
                                char ret_realm[IMG_AUTH_PARAM_MAX]);
