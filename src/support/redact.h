/* redact.h — the support bundle's one rule for secrets (docs/support-bundle.md "What is
 * redacted"): JSON documents by member names and values, text by patterns and by every secret
 * value learned so far (from the documents, the configuration and the hub's runtime file). Pure:
 * no I/O; unit-tested and fuzzed. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"
#include "base/str.h"

#define REDACTED "<redacted>"
/* Learned values shorter than this are not replaced in text: "1234" would hit ordinary words;
 * short secrets are still redacted where the rule finds them by name or pattern. */
#define REDACT_KNOWN_MIN 6
/* At most this many learned values (the rest are still redacted where they are found). */
#define REDACT_KNOWN_MAX 4096
/* Base64 runs at least this long (with mixed case and digits) are taken for keys. A 32-byte key
 * is 44 characters; a 20-byte one 28. */
#define REDACT_BASE64_MIN 28

struct redactor {
    struct lstrv known; /* secret values learned (unique) */
    size_t count;       /* replacements made */
};

void redactor_init(struct redactor *r);
void redactor_clear(struct redactor *r);
/* Remember a secret value (and its URL- and JSON-encoded forms) so that text containing it is
 * redacted. Values shorter than REDACT_KNOWN_MIN are ignored. */
int redactor_learn(struct redactor *r, const char *value);

/* A member or variable name whose value is a secret: one of its words (split at '_', '-', '.',
 * spaces and lower-to-upper case changes) is password, passwd, pwd, pass, passphrase, secret,
 * token, sas, sig, signature, key, apikey, credential(s), authorization, cookie, or the pair
 * "connection string" — unless its last word says it names something else (file, path, dir,
 * id, name, type, size, length, lifetime, ttl, expiry, count, algorithm, version, format,
 * policy, url, uri, hostname, host, ref, hash, mode, usage, renew). */
bool redact_name_is_secret(const char *name, size_t n);
/* A value that is a secret by its looks alone: a connection string with a key or password, a
 * SAS token, a PEM private key, a JWT, or a base64 run (REDACT_BASE64_MIN+, mixed case and
 * digits). */
bool redact_value_is_secret(const char *value);

/* Redact doc in place: string (and number) members whose name is secret, "value" members of an
 * object named by a secret name (manifest env: {"DB_PASSWORD": {"value": "..."}}), "NAME=VALUE"
 * strings with a secret NAME (createOptions Env), strings that are secrets by their looks, and
 * inside every other string what redact_text() finds; strings holding JSON (createOptions) are
 * parsed and redacted as documents. Every value redacted whole is learned. */
void redact_json(struct redactor *r, json_t *doc);

/* Text: learned values, then the patterns (NAME=VALUE and "NAME": "VALUE" with a secret NAME,
 * SAS tokens, connection string keys, URL passwords, Authorization headers, PEM private keys,
 * JWTs, base64 keys) replaced by REDACTED, appended to out. -ENOMEM (or out's bound) only. */
int redact_text(struct redactor *r, const char *in, size_t n, struct lbuf *out);
