/* crypto.h — the few primitives the layers above need, all delegated to OpenSSL: base64,
 * SHA-256, SHA-1 (only where a protocol demands it: WebSocket's accept key), HMAC-SHA256, random
 * bytes and constant-time comparison. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

#define LCRYPTO_SHA256_LEN 32
#define LCRYPTO_SHA1_LEN 20

int lcrypto_b64_encode(const void *data, size_t n, struct lbuf *out);
/* Strict standard base64 (padding required, no whitespace); -EINVAL on anything else. */
int lcrypto_b64_decode(const char *text, size_t n, struct lbuf *out);
int lcrypto_sha256(const void *data, size_t n, uint8_t out[LCRYPTO_SHA256_LEN]);
/* Lower-case hex of SHA-256 into out (65 bytes). */
int lcrypto_sha256_hex(const void *data, size_t n, char out[2 * LCRYPTO_SHA256_LEN + 1]);
/* SHA-1: not for anything secret (RFC 6455's Sec-WebSocket-Accept needs it). */
int lcrypto_sha1(const void *data, size_t n, uint8_t out[LCRYPTO_SHA1_LEN]);
int lcrypto_hmac_sha256(const void *key, size_t keylen, const void *data, size_t n,
                        uint8_t out[LCRYPTO_SHA256_LEN]);
int lcrypto_random(void *out, size_t n);
/* Constant-time equality of two buffers of the same length. */
bool lcrypto_memeq(const void *a, const void *b, size_t n);
/* The name a TLS client expects its server's certificate to carry: an IP literal (v4 or v6) is
 * checked against the certificate's IP addresses and sent without SNI (RFC 6066 allows only host
 * names there); anything else is a DNS name, sent as SNI and checked against the DNS names.
 * ssl is an OpenSSL SSL *. Returns 0 or -EINVAL when OpenSSL refuses the name. */
int lcrypto_tls_expect_peer(void *ssl, const char *name);
/* Overwrite secrets before freeing them. */
void lcrypto_wipe(void *p, size_t n);
