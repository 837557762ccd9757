/* tokens.h — the dashboard's login tokens: random, shown once by `ledge dashboard token`, kept
 * only as SHA-256 hashes in a file (0600, written atomically), each with an expiry; revocable one
 * by one or all at once. Never logs. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define DASH_TOKENS_MAX 32  /* issuing more drops the oldest */
#define DASH_TOKEN_ID_LEN 8 /* hex characters of the public id */
#define DASH_TOKEN_PREFIX "ldt_"

struct dash_tokens;

/* Load path (missing = empty; damaged = -EINVAL). */
int dash_tokens_open(const char *path, struct dash_tokens **ret);
void dash_tokens_free(struct dash_tokens *t);
/* A new token valid for ttl_ms from now_ms: *ret_token (free it) is the secret, written nowhere;
 * ret_id its public id. Persists the store. */
int dash_tokens_issue(struct dash_tokens *t, int64_t now_ms, int64_t ttl_ms, char **ret_token,
                      char ret_id[DASH_TOKEN_ID_LEN + 1], int64_t *ret_expires_ms);
/* Is token one of ours and not expired? Then 0 with its id and expiry; -EACCES otherwise. */
int dash_tokens_verify(struct dash_tokens *t, const char *token, int64_t now_ms,
                       char ret_id[DASH_TOKEN_ID_LEN + 1], int64_t *ret_expires_ms);
/* Revoke one token by id (NULL: all). The number revoked, -ENOENT when id is unknown. */
int dash_tokens_revoke(struct dash_tokens *t, const char *id);
/* [{id, createdAt, expiresAt, expired}] */
json_t *dash_tokens_json(const struct dash_tokens *t, int64_t now_ms);
