/*
 * Passwords and tokens.  scrypt (OpenSSL's EVP_PBE_scrypt) for stored password
 * hashes; HS256 (HMAC-SHA-256) JSON Web Tokens for sessions.  Pure: the clock and
 * the salt are parameters, nothing here touches the network or the disk.
 */
#include "auth.h"

#include <inttypes.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"

#define MAX_PASSWORD 1024
/* base64url of the fixed header {"alg":"HS256","typ":"JWT"} */
static const char jwt_header[] = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

void auth_kdf_default(struct auth_kdf *k)
{
    k->n = 1u << 14;
    k->r = 8;
    k->p = 1;
}

/* ---- base64url ---- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

long auth_b64url_encode(const uint8_t *in, size_t len, char *out, size_t outlen)
{
    size_t need = (len * 4 + 2) / 3;
    if (need + 1 > outlen)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[o++] = b64[(v >> 18) & 63];
        out[o++] = b64[(v >> 12) & 63];
        if (i + 1 < len)
            out[o++] = b64[(v >> 6) & 63];
        if (i + 2 < len)
            out[o++] = b64[v & 63];
    }
    out[o] = 0;
    return (long)o;
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

long auth_b64url_decode(const char *in, size_t len, uint8_t *out, size_t outlen)
{
    if (len % 4 == 1)
        return -1;
    size_t need = len * 3 / 4;
    if (need > outlen)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value(in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    /* canonical form only: the unused low bits must be zero */
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
        return -1;
    return (long)o;
}

/* ---- passwords ---- */

static int scrypt(const char *password, size_t len, const uint8_t *salt,
                  const struct auth_kdf *k, uint8_t out[AUTH_HASH_LEN])
{
    uint64_t maxmem = 128 * k->n * k->r * (uint64_t)k->p + (1u << 20);
    return EVP_PBE_scrypt(password, len, salt, AUTH_SALT_LEN, k->n, k->r, k->p, maxmem, out,
                          AUTH_HASH_LEN) == 1
               ? 0
               : CH_ENOMEM;
}

/* Bounded so that a record can never ask for more than 64 MiB or seconds of CPU. */
static int kdf_valid(const struct auth_kdf *k)
{
    return k->n >= 2 && k->n <= (1u << 16) && (k->n & (k->n - 1)) == 0 && k->r >= 1 &&
           k->r <= 8 && k->p >= 1 && k->p <= 4;
}

int auth_password_hash(const char *password, size_t len, const uint8_t salt[AUTH_SALT_LEN],
                       const struct auth_kdf *kdf, char *out, size_t outlen)
{
    if (len == 0 || len > MAX_PASSWORD || !kdf_valid(kdf))
        return CH_EINVAL;
    uint8_t hash[AUTH_HASH_LEN];
    int rv = scrypt(password, len, salt, kdf, hash);
    if (rv != 0)
        return rv;
    char s64[32], h64[48];
    auth_b64url_encode(salt, AUTH_SALT_LEN, s64, sizeof s64);
    auth_b64url_encode(hash, AUTH_HASH_LEN, h64, sizeof h64);
    int n = snprintf(out, outlen, "scrypt$%" PRIu64 "$%u$%u$%s$%s", kdf->n, kdf->r, kdf->p, s64,
                     h64);
    return n > 0 && (size_t)n < outlen ? 0 : CH_EINVAL;
}

int auth_password_verify(const char *password, size_t len, const char *record)
{
    struct auth_kdf k;
    char s64[32], h64[48];
    int used = 0;
    if (len == 0 || len > MAX_PASSWORD)
        return CH_EBAD_PASSWORD;
    if (sscanf(record, "scrypt$%" SCNu64 "$%u$%u$%31[A-Za-z0-9_-]$%47[A-Za-z0-9_-]%n", &k.n,
               &k.r, &k.p, s64, h64, &used) != 5 ||
        record[used] != 0 || !kdf_valid(&k))
        return CH_EMALFORMED;
    uint8_t salt[AUTH_SALT_LEN + 2], want[AUTH_HASH_LEN + 2], got[AUTH_HASH_LEN];
    if (auth_b64url_decode(s64, strlen(s64), salt, sizeof salt) != AUTH_SALT_LEN ||
        auth_b64url_decode(h64, strlen(h64), want, sizeof want) != AUTH_HASH_LEN)
        return CH_EMALFORMED;
    if (scrypt(password, len, salt, &k, got) != 0)
        return CH_ENOMEM;
    return CRYPTO_memcmp(got, want, AUTH_HASH_LEN) == 0 ? 0 : CH_EBAD_PASSWORD;
}

/* ---- tokens ---- */

static int sign(const uint8_t *secret, size_t secret_len, const char *data, size_t len,
                uint8_t mac[32])
{
    unsigned int mac_len = 0;
    if (HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)data, len, mac,
             &mac_len) == NULL ||
        mac_len != 32)
        return CH_EINTERNAL;
    return 0;
}

static int valid_user(const char *user, size_t len)
{
    if (len == 0 || len > AUTH_MAX_USER)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)user[i];
        if (ch < 0x20 || ch == '"' || ch == '\\' || ch >= 0x7f)
            return 0;
    }
    return 1;
}

int auth_token_issue(const uint8_t *secret, size_t secret_len, const char *user,
                     uint64_t now_s, uint64_t ttl_s, char *out, size_t outlen)
{
    if (secret_len < 16 || secret_len > 1024 || !valid_user(user, strlen(user)) ||
        ttl_s == 0 || now_s + ttl_s < now_s)
        return CH_EINVAL;
    char payload[160];
    int n = snprintf(payload, sizeof payload, "{\"sub\":\"%s\",\"iat\":%" PRIu64 ",\"exp\":%" PRIu64 "}",
                     user, now_s, now_s + ttl_s);
    if (n <= 0 || (size_t)n >= sizeof payload)
        return CH_EINVAL;
    char buf[AUTH_MAX_TOKEN];
    int off = snprintf(buf, sizeof buf, "%s.", jwt_header);
    long p = auth_b64url_encode((const uint8_t *)payload, (size_t)n, buf + off,
                                sizeof buf - (size_t)off);
    if (p < 0)
        return CH_EINVAL;
    off += (int)p;
    uint8_t mac[32];
    if (sign(secret, secret_len, buf, (size_t)off, mac) != 0)
        return CH_EINTERNAL;
    buf[off++] = '.';
    if (auth_b64url_encode(mac, sizeof mac, buf + off, sizeof buf - (size_t)off) < 0)
        return CH_EINVAL;
    if (strlen(buf) + 1 > outlen)
        return CH_EINVAL;
    memcpy(out, buf, strlen(buf) + 1);
    return 0;
}

int auth_token_verify(const uint8_t *secret, size_t secret_len, const char *token,
                      size_t token_len, uint64_t now_s, char *user, uint64_t *exp)
{
    size_t hlen = sizeof jwt_header - 1;
    if (token_len > AUTH_MAX_TOKEN || token_len < hlen + 2 ||
        memcmp(token, jwt_header, hlen) != 0 || token[hlen] != '.')
        return CH_EBAD_TOKEN;
    const char *payload = token + hlen + 1;
    const char *dot = memchr(payload, '.', token_len - hlen - 1);
    if (dot == NULL)
        return CH_EBAD_TOKEN;
    uint8_t mac[32], want[34];
    if (auth_b64url_decode(dot + 1, token_len - (size_t)(dot + 1 - token), want,
                           sizeof want) != 32 ||
        sign(secret, secret_len, token, (size_t)(dot - token), mac) != 0 ||
        CRYPTO_memcmp(mac, want, 32) != 0)
        return CH_EBAD_TOKEN;
    /* signed by us: now read the claims */
    uint8_t json[AUTH_MAX_TOKEN];
    long n = auth_b64url_decode(payload, (size_t)(dot - payload), json, sizeof json);
    if (n <= 0)
        return CH_EBAD_TOKEN;
    json_error_t jerr;
    json_t *claims = json_loadb((const char *)json, (size_t)n, 0, &jerr);
    json_t *sub = json_object_get(claims, "sub");
    json_t *jexp = json_object_get(claims, "exp");
    int rv = 0;
    if (!json_is_string(sub) || !json_is_integer(jexp) || json_integer_value(jexp) < 0 ||
        !valid_user(json_string_value(sub), json_string_length(sub)))
        rv = CH_EBAD_TOKEN;
    else if ((uint64_t)json_integer_value(jexp) <= now_s)
        rv = CH_ETOKEN_EXPIRED;
    else {
        memcpy(user, json_string_value(sub), json_string_length(sub) + 1);
        if (exp)
            *exp = (uint64_t)json_integer_value(jexp);
    }
    json_decref(claims);
    return rv;
}
