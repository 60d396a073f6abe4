/* Authentication primitives (pure): password hashing with scrypt and HS256 JWT tokens. */
#ifndef CHORUS_AUTH_H
#define CHORUS_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define AUTH_SALT_LEN 16
#define AUTH_HASH_LEN 32
#define AUTH_MAX_USER 64
#define AUTH_MAX_TOKEN 512
#define AUTH_MAX_RECORD 160

/* scrypt cost parameters; N must be a power of two.  The defaults (N 2^14, r 8,
 * p 1: 16 MiB and tens of milliseconds per hash) are the usual interactive-login
 * choice; tests pass cheaper ones. */
struct auth_kdf {
    uint64_t n;
    uint32_t r;
    uint32_t p;
};

void auth_kdf_default(struct auth_kdf *k);

/*
 * Hashes a password into a self-describing record
 *   "scrypt$<N>$<r>$<p>$<salt, base64url>$<hash, base64url>"
 * written into out (AUTH_MAX_RECORD bytes suffice).  The salt comes from the
 * caller (randomness is a parameter of pure modules).  Returns 0, CH_EINVAL
 * (bad parameters, empty or >1 KiB password) or CH_ENOMEM.
 */
int auth_password_hash(const char *password, size_t len, const uint8_t salt[AUTH_SALT_LEN],
                       const struct auth_kdf *kdf, char *out, size_t outlen);

/* Checks a password against a record (constant-time comparison).  Returns 0,
 * CH_EBAD_PASSWORD, or CH_EMALFORMED for a record that does not parse. */
int auth_password_verify(const char *password, size_t len, const char *record);

/*
 * Issues an HS256 JWT {"sub": user, "iat": now, "exp": now + ttl} signed with
 * secret, NUL-terminated into out (AUTH_MAX_TOKEN bytes suffice).  Returns 0 or
 * CH_EINVAL (empty/oversize user or secret).
 */
int auth_token_issue(const uint8_t *secret, size_t secret_len, const char *user,
                     uint64_t now_s, uint64_t ttl_s, char *out, size_t outlen);

/*
 * Verifies a token: structure, header {"alg":"HS256","typ":"JWT"}, signature
 * (constant time), then expiry against now_s.  On success copies the subject
 * into user (AUTH_MAX_USER + 1 bytes) and returns 0; otherwise CH_EBAD_TOKEN
 * (malformed, wrong algorithm, forged) or CH_ETOKEN_EXPIRED.
 */
int auth_token_verify(const uint8_t *secret, size_t secret_len, const char *token,
                      size_t token_len, uint64_t now_s, char *user, uint64_t *exp);

/* base64url without padding (RFC 4648 §5).  encode writes a NUL-terminated
 * string and returns its length, or -1 if out is too small; decode returns the
 * decoded length or -1 on bad input / small out. */
long auth_b64url_encode(const uint8_t *in, size_t len, char *out, size_t outlen);
long auth_b64url_decode(const char *in, size_t len, uint8_t *out, size_t outlen);

#endif
