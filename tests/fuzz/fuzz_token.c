/* Fuzz target: bearer tokens and base64url as a client can send them. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/common/error.h"
#include "../../src/gateway/auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t secret[] = "fuzzing-secret-fuzzing-secret-32";
    char user[AUTH_MAX_USER + 1];
    uint64_t exp;
    int rv = auth_token_verify(secret, sizeof secret - 1, (const char *)data, size, 1000, user,
                               &exp);
    if (rv == 0 && (strlen(user) == 0 || exp <= 1000))
        abort();
    uint8_t out[1024];
    long n = auth_b64url_decode((const char *)data, size, out, sizeof out);
    if (n >= 0) {
        /* decoding is canonical: encoding again gives the input back */
        char again[2048];
        long m = auth_b64url_encode(out, (size_t)n, again, sizeof again);
        if (m != (long)size || memcmp(again, data, size) != 0)
            abort();
    }
    return 0;
}
