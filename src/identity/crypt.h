/* crypt.h — the workload API's encrypt/decrypt: AES-256-GCM under a module-bound key, a fresh
 * random nonce per message, the caller's initialization vector bound as associated data, and a
 * versioned ciphertext layout:
 *
 *     version (1 byte, = 1) | nonce (12 bytes) | ciphertext (= plaintext length) | tag (16 bytes)
 *     associated data = version byte | initializationVector bytes
 *
 * The key (identity_module_crypt_key) already binds device, module and generation, so anything
 * encrypted for another module or an earlier generation of this one fails to decrypt. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/errors.h"

#define CRYPT_KEY_LEN 32
#define CRYPT_VERSION 1
#define CRYPT_NONCE_LEN 12
#define CRYPT_TAG_LEN 16
#define CRYPT_OVERHEAD (1 + CRYPT_NONCE_LEN + CRYPT_TAG_LEN)
/* Plaintexts (and IVs) beyond this are refused: far above what the workload API lets through. */
#define CRYPT_MAX_INPUT (64 * 1024 * 1024)

/* Append the sealed form of plaintext to out. */
int crypt_encrypt(const uint8_t key[CRYPT_KEY_LEN], const void *iv, size_t iv_len,
                  const void *plaintext, size_t n, struct lbuf *out);
/* Append the plaintext to out only if ciphertext authenticates under key and iv; otherwise
 * -EBADMSG (or -EINVAL for a malformed input) with the reason in e, and out is unchanged. */
int crypt_decrypt(const uint8_t key[CRYPT_KEY_LEN], const void *iv, size_t iv_len,
                  const void *ciphertext, size_t n, struct lbuf *out, struct lerr *e);
