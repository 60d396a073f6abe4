/* The client wire codec (pure): JSON requests in, JSON replies and events out. */
#ifndef CHORUS_WIRE_H
#define CHORUS_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "../common/codec.h"
#include "../raft-log/clog_event.h"

/*
 * docs/protocol.md is the specification.  Requests are decoded completely (every
 * field checked for presence, type and range) before the gateway acts on them, so
 * the gateway's logic never sees a half-valid request.  Replies and events are
 * written as JSON text into a ch_wbuf; strings are escaped here (control
 * characters as \u00XX, invalid UTF-8 replaced by U+FFFD), so any bytes stored
 * in the log produce valid JSON.
 */

#define WIRE_MAX_ID 64          /* bytes of a string request id */
#define WIRE_MAX_USER 32        /* user ids: [a-z0-9][a-z0-9_.-]{0,31} */
#define WIRE_MAX_PASSWORD 256
#define WIRE_MIN_PASSWORD 8
#define WIRE_MAX_TOKEN 512
#define WIRE_MAX_CLIENT_MSG_ID 64
#define WIRE_MAX_EMOJI 64
#define WIRE_MAX_NAME 256       /* group name */
#define WIRE_MAX_DISPLAY_NAME 64
#define WIRE_MAX_STATUS 256
#define WIRE_MAX_SETTINGS 4096  /* encoded settings object */
#define WIRE_MAX_MEMBERS 1000   /* members listed in one create */
#define WIRE_MAX_PRESENCE 1000  /* users in one presence request */
#define WIRE_MAX_CURSORS 10000  /* conversations in one sync */
#define WIRE_MAX_HISTORY 200
#define WIRE_DEFAULT_HISTORY 50
#define WIRE_MAX_CONV 9007199254740991ull /* 2^53 - 1 */

enum wire_op {
    WIRE_OP_REGISTER = 1,
    WIRE_OP_LOGIN,
    WIRE_OP_AUTH,
    WIRE_OP_PING,
    WIRE_OP_CREATE,
    WIRE_OP_GET,
    WIRE_OP_CONVERSATIONS,
    WIRE_OP_ADD_MEMBER,
    WIRE_OP_REMOVE_MEMBER,
    WIRE_OP_LEAVE,
    WIRE_OP_SEND,
    WIRE_OP_EDIT,
    WIRE_OP_DELETE,
    WIRE_OP_REACT,
    WIRE_OP_HISTORY,
    WIRE_OP_RECEIPT,
    WIRE_OP_TYPING,
    WIRE_OP_PRESENCE,
    WIRE_OP_PROFILE,
    WIRE_OP_SET_PROFILE,
    WIRE_OP_SETTINGS,
    WIRE_OP_SET_SETTINGS,
    WIRE_OP_SYNC,
    WIRE_OP__MAX
};

/* "send", "history", ...; NULL for an op out of range. */
const char *wire_op_name(int op);

struct wire_cursor {
    uint64_t conv;
    uint64_t seq;
};

/*
 * A decoded request.  Slices borrow from `root` (the parsed JSON), which the
 * request owns until wire_request_free.  Fields an op does not use are zero.
 */
struct wire_request {
    int op;
    char id[WIRE_MAX_ID + 3]; /* the request id as JSON text: 7, "abc" or null */
    json_t *root;

    uint64_t conv;
    uint64_t seq;    /* edit/delete/react: the message; receipt: up-to seq */
    /* history: as clog_history.  Neither given: before = UINT64_MAX (the newest
     * page); both given: the window between them (never empty). */
    uint64_t before;
    uint64_t after;
    uint32_t limit;  /* history: 1..WIRE_MAX_HISTORY, default WIRE_DEFAULT_HISTORY */
    uint8_t kind;    /* create: CLOG_DIRECT/CLOG_GROUP; receipt: CLOG_CURSOR_*;
                        add_member: CLOG_ROLE_MEMBER/ADMIN (default MEMBER) */
    uint8_t flag;    /* typing: state (default 1); react: remove (default 0) */
    uint8_t has_display_name, has_status; /* set_profile: which fields were given */

    struct ch_slice user;     /* register/login; add/remove_member target; profile (may be empty) */
    struct ch_slice password;
    struct ch_slice token;
    struct ch_slice display_name;
    struct ch_slice status;
    struct ch_slice name;     /* create (group name, may be empty) */
    struct ch_slice client_msg_id;
    struct ch_slice body;     /* send/edit; react: the emoji */

    /* create: members (user ids, validated); presence: users (validated). */
    struct ch_slice *users;
    size_t n_users;
    /* sync: cursors, validated (conv in range, seq >= 0), sorted by conv, no repeats */
    struct wire_cursor *cursors;
    size_t n_cursors;
    /* set_settings: the settings object re-encoded compactly (<= WIRE_MAX_SETTINGS) */
    char *settings;
    size_t settings_len;
};

/*
 * Parses one client message of `len` bytes.  On success returns 0.  On failure
 * returns CH_EMALFORMED (not JSON, not an object, a missing or mistyped field),
 * CH_EINVAL (a value out of range or a bad user id), CH_EUNKNOWN_OP or
 * CH_ETOOLARGE (body over max_body or a field over its WIRE_MAX_*), writes a
 * human message naming the field into msg, and still fills req->id when the
 * message had a usable id ("null" otherwise).  Either way call
 * wire_request_free afterwards.  Never reads beyond len; text need not be
 * NUL-terminated.
 */
int wire_parse_request(const char *text, size_t len, uint32_t max_body,
                       struct wire_request *req, char *msg, size_t msglen);

void wire_request_free(struct wire_request *req);

/* Is this a valid user id (1..WIRE_MAX_USER of [a-z0-9_.-], starting [a-z0-9])? */
int wire_user_valid(const char *s, size_t len);

/* ---- output ------------------------------------------------------------------------ */

/* Appends a JSON string literal (with quotes) for len bytes of s, escaped. */
void wire_put_string(struct ch_wbuf *b, const void *s, size_t len);

/*
 * Replies.  wire_reply_begin writes {"type":"reply","id":<id>,"ok":true,"result":
 * and the caller appends the result object, then wire_reply_end closes it.
 * wire_reply_error writes a whole error reply; retry_after_ms is included when
 * non-zero (rate_limited).  `err` is a CH_E* code: its wire code and message
 * (ch_errcode / ch_strerror) are used unless `message` is non-NULL.
 */
void wire_reply_begin(struct ch_wbuf *b, const char *id);
void wire_reply_end(struct ch_wbuf *b);
void wire_reply_error(struct ch_wbuf *b, const char *id, int err, const char *message,
                      uint64_t retry_after_ms);

/*
 * Appends the JSON object of one event (docs/protocol.md, "Events") without the
 * "type" member when bare != 0 (history pages), with "type":"event" otherwise.
 */
void wire_event(struct ch_wbuf *b, const struct clog_event *ev, int bare);

/* The role / kind names used on the wire. */
const char *wire_role_name(uint8_t role);   /* "owner", "admin", "member" */
const char *wire_kind_name(uint8_t kind);   /* "direct", "group" */

/*
 * Small writers for result objects: wire_put_key writes ,"key": (or "key": after
 * an opening brace — it looks at the last byte written), wire_put_u64 a number,
 * wire_put_bool true/false.
 */
void wire_put_key(struct ch_wbuf *b, const char *key);
void wire_put_u64(struct ch_wbuf *b, uint64_t v);
void wire_put_bool(struct ch_wbuf *b, int v);
void wire_put_raw(struct ch_wbuf *b, const char *s);

#endif
