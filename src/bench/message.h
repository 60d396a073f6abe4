/* Decodes what a chorus gateway sends on a WebSocket, for chorus-bench: replies,
 * events and goodbyes, with every field checked (docs/protocol.md). */
#ifndef CHORUS_BENCH_MESSAGE_H
#define CHORUS_BENCH_MESSAGE_H

#include <stddef.h>
#include <stdint.h>

/* What a message is, by its "type". */
enum bench_message_type {
    BENCH_MSG_REPLY = 1, /* "reply": the answer to one request */
    BENCH_MSG_EVENT,     /* "event": a committed conversation event */
    BENCH_MSG_GOODBYE,   /* "goodbye": the server is about to close the connection */
    BENCH_MSG_OTHER,     /* typing, presence or a type this tool does not know */
};

#define BENCH_MSG_MAX_CODE 32          /* error and goodbye codes ("rate_limited") */
#define BENCH_MSG_MAX_EVENT 16         /* event kinds ("member_added") */
#define BENCH_MSG_MAX_CLIENT_MSG_ID 64 /* as the gateway's limit */
#define BENCH_MSG_MAX_CONV ((1ull << 53) - 1)
#define BENCH_MSG_MAX_TOKEN 512 /* as the gateway's AUTH_MAX_TOKEN */

/*
 * One decoded message.  Strings are copied into the struct (NUL-terminated), so it
 * owns nothing and outlives the text it was decoded from.  Fields a message does
 * not carry are zero / empty.
 */
struct bench_message {
    enum bench_message_type type;

    /* reply */
    int has_id; /* the reply names an integer id (null ids have has_id 0) */
    int64_t id;
    int ok;                            /* "ok": true */
    char code[BENCH_MSG_MAX_CODE + 1]; /* error.code of a failed reply; goodbye code */
    uint64_t retry_after_ms;           /* error.retry_after_ms, 0 when absent */
    uint64_t result_conv; /* result.conv when the result has one (create, send) */
    uint64_t result_seq;  /* result.seq when present */
    char result_token[BENCH_MSG_MAX_TOKEN + 1]; /* result.token (register, login) */

    /* event */
    uint64_t conv;
    uint64_t seq;
    char event[BENCH_MSG_MAX_EVENT + 1];
    char client_msg_id[BENCH_MSG_MAX_CLIENT_MSG_ID + 1];
};

/*
 * Decodes one text frame of len bytes (need not be NUL-terminated).  Returns 0, or
 * CH_EMALFORMED with a one-line reason in err: not JSON, not an object, no string
 * "type", or a field this tool reads has the wrong type or is out of range (a
 * string longer than its buffer, a conv outside 1..2^53-1).  On error *out is
 * zeroed.  Fields the tool does not read are not checked.
 */
int bench_message_decode(const char *text, size_t len, struct bench_message *out,
                         char *err, size_t errlen);

#endif
