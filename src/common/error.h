/* The project's one error enum: every module returns 0 or one of these codes. */
#ifndef CHORUS_ERROR_H
#define CHORUS_ERROR_H

#include <stddef.h>

/*
 * X(name, wire code, message).  The wire code is the stable string clients and
 * tools see (docs/protocol.md); several internal errors may share one wire code.
 * Values are positive and stable: they travel in the store RPC as u16, so new
 * codes are only ever appended.
 */
#define CH_ERRORS(X)                                                              \
    X(CH_OK, "ok", "success")                                                     \
    X(CH_ENOMEM, "internal", "out of memory")                                     \
    X(CH_EMALFORMED, "bad_request", "malformed input")                            \
    X(CH_EINVAL, "bad_request", "invalid argument")                               \
    X(CH_EUNKNOWN_OP, "unknown_op", "unknown operation")                          \
    X(CH_ETOOLARGE, "too_large", "input larger than the configured limit")        \
    X(CH_ENOTFOUND, "not_found", "no such conversation")                          \
    X(CH_ENOMESSAGE, "not_found", "no such message in this conversation")         \
    X(CH_ENOTMEMBER, "forbidden", "not a member of this conversation")            \
    X(CH_EFORBIDDEN, "forbidden", "role does not allow this operation")           \
    X(CH_EEXISTS, "conflict", "already exists")                                   \
    X(CH_ELIMIT, "limit_exceeded", "conversation limit reached")                  \
    X(CH_ENOTLEADER, "not_leader", "this node is not the shard's leader")         \
    X(CH_EUNAVAILABLE, "unavailable", "shard has no leader or quorum right now")  \
    X(CH_ETIMEOUT, "timeout", "operation timed out")                              \
    X(CH_ESHUTDOWN, "unavailable", "node is shutting down")                       \
    X(CH_ECORRUPT, "corrupt", "checksum mismatch: data is corrupt")               \
    X(CH_EVERSION, "unsupported_version", "unsupported format version")           \
    X(CH_EIO, "io_error", "input/output error")                                   \
    X(CH_ECONFIG, "bad_config", "invalid cluster configuration")                  \
    X(CH_ETOOOLD, "too_old", "requested index is no longer retained")             \
    X(CH_ENOSHARD, "not_found", "this node holds no replica of the shard")        \
    X(CH_ERATELIMITED, "rate_limited", "rate limit exceeded")                     \
    X(CH_EUNAUTHORIZED, "unauthorized", "missing or invalid credentials")         \
    X(CH_EINTERNAL, "internal", "internal error")                                 \
    X(CH_ETOKEN_EXPIRED, "unauthorized", "token expired")                         \
    X(CH_EBAD_TOKEN, "unauthorized", "invalid token")                             \
    X(CH_EBAD_PASSWORD, "unauthorized", "wrong user name or password")            \
    X(CH_ENOUSER, "not_found", "no such user")                                    \
    X(CH_EUSER_DISABLED, "forbidden", "user is disabled")

enum ch_err {
#define CH__ERR_ENUM(name, code, msg) name,
    CH_ERRORS(CH__ERR_ENUM)
#undef CH__ERR_ENUM
        CH__ERR_COUNT
};

/* Human-readable message for an error code (never NULL, also for bad codes). */
const char *ch_strerror(int err);

/* Stable wire code ("not_found", "bad_request", ...) for an error code. */
const char *ch_errcode(int err);

/* Formats a message into err (when err is not NULL and errlen > 0) and returns
 * code: the one way modules report an error with its explanation. */
int ch_fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Symbolic name ("CH_ENOTFOUND") for logs and tests. */
const char *ch_errname(int err);

#endif
