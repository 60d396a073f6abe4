/* Conversation-log commands and the Raft entry that batches them (pure codec). */
#ifndef CHORUS_CLOG_CMD_H
#define CHORUS_CLOG_CMD_H

#include <stddef.h>
#include <stdint.h>

#include "../common/codec.h"

/* Hard bounds of the encoding; configurable limits (clog_limits) are lower. */
#define CLOG_MAX_USER 64        /* user id bytes */
#define CLOG_MAX_CLIENT_MSG_ID 64
#define CLOG_MAX_NAME 256       /* conversation name bytes */
#define CLOG_MAX_BODY (1u << 20)       /* message body bytes, absolute cap */
#define CLOG_MAX_MEMBERS_BLOB (8u << 20) /* encoded member list bytes */
#define CLOG_MAX_ENTRY (32u << 20)     /* one decoded Raft entry payload */

/* Bounds of user fields (the state machine enforces them: CH_EINVAL / CH_ETOOLARGE). */
#define CLOG_MAX_PASSWORD_RECORD 256 /* opaque password record bytes (1..) */
#define CLOG_MAX_DISPLAY_NAME 64     /* display name bytes (0..: empty = the user id) */
#define CLOG_MAX_STATUS 256          /* status text bytes */
#define CLOG_MAX_SETTINGS 4096       /* settings bytes, opaque (gateway: JSON) */

enum clog_op {
    CLOG_OP_CREATE = 1,    /* conv, actor, kind, name, members: create a conversation */
    CLOG_OP_ADD_MEMBER,    /* conv, actor, target, kind = role */
    CLOG_OP_REMOVE_MEMBER, /* conv, actor, target */
    CLOG_OP_LEAVE,         /* conv, actor */
    CLOG_OP_POST,          /* conv, actor, client_msg_id, body: a message */
    CLOG_OP_EDIT,          /* conv, actor, client_msg_id, ref_seq, body */
    CLOG_OP_DELETE,        /* conv, actor, client_msg_id, ref_seq */
    CLOG_OP_REACT,         /* conv, actor, client_msg_id, ref_seq, body = emoji,
                              kind = CLOG_REACT_ADD | CLOG_REACT_REMOVE */
    CLOG_OP_CURSOR,        /* conv, actor, kind = CLOG_CURSOR_*, ref_seq = up-to seq */
    /* User ops: conv is 0, actor is the user id; they emit no events. */
    CLOG_OP_USER_CREATE,   /* actor, body = password record, name = display name */
    CLOG_OP_USER_UPDATE,   /* actor, kind = CLOG_USER_* field; the value in name
                              (DISPLAY_NAME), body (STATUS, SETTINGS, PASSWORD) or
                              ref_seq (DISABLED, LAST_SEEN) */
    CLOG_OP__MAX
};

enum clog_kind { CLOG_DIRECT = 1, CLOG_GROUP = 2 };
enum clog_role { CLOG_ROLE_OWNER = 1, CLOG_ROLE_ADMIN = 2, CLOG_ROLE_MEMBER = 3 };
enum clog_cursor_kind { CLOG_CURSOR_DELIVERED = 1, CLOG_CURSOR_READ = 2 };
enum clog_react_kind { CLOG_REACT_ADD = 1, CLOG_REACT_REMOVE = 2 };
/* The field a USER_UPDATE sets. */
enum clog_user_field {
    CLOG_USER_DISPLAY_NAME = 1, /* name, 0..CLOG_MAX_DISPLAY_NAME bytes */
    CLOG_USER_STATUS,           /* body, 0..CLOG_MAX_STATUS bytes */
    CLOG_USER_SETTINGS,         /* body, 0..CLOG_MAX_SETTINGS bytes */
    CLOG_USER_PASSWORD,         /* body, 1..CLOG_MAX_PASSWORD_RECORD bytes */
    CLOG_USER_DISABLED,         /* ref_seq, 0 or 1 */
    CLOG_USER_LAST_SEEN         /* ref_seq, ms; only moves forward */
};

/* Name of an op ("post", "create", "user_create", ...) for logs and tools; "?" when
 * unknown. */
const char *clog_op_name(int op);

/*
 * One command.  Slices borrow from the buffer the command was decoded from (or
 * from the caller when encoding); unused fields are empty.  `members` is an
 * encoded member list (see clog_members_put), used by CREATE only.
 */
struct clog_cmd {
    uint8_t op;
    uint8_t kind;
    uint64_t conv;
    uint64_t ref_seq;
    struct ch_slice actor;
    struct ch_slice target;
    struct ch_slice client_msg_id;
    struct ch_slice name;
    struct ch_slice body;
    struct ch_slice members;
};

/* Appends the command's encoding to b (check ch_wbuf_error once at the end). */
void clog_cmd_encode(struct ch_wbuf *b, const struct clog_cmd *cmd);

/*
 * Decodes one command from r.  Checks the encoding's hard bounds (lengths above,
 * op in range) but not permissions or configurable limits, which are the state
 * machine's.  Returns 0, CH_EMALFORMED or CH_EUNKNOWN_OP.
 */
int clog_cmd_decode(struct ch_rbuf *r, struct clog_cmd *cmd);

/*
 * Member lists: u32 count, then count × (str16 user, u8 role).
 * clog_members_begin writes a zero count and returns its offset; each
 * clog_members_put appends one member; clog_members_end patches the count.
 */
size_t clog_members_begin(struct ch_wbuf *b);
void clog_members_put(struct ch_wbuf *b, struct ch_slice user, uint8_t role);
void clog_members_end(struct ch_wbuf *b, size_t begin, uint32_t count);

/* Iterates a member list: clog_members_open then clog_members_next until it returns 0. */
struct clog_members_iter {
    struct ch_rbuf r;
    uint32_t left;
};
/* Returns 0 or CH_EMALFORMED; *count receives the declared count. */
int clog_members_open(struct clog_members_iter *it, struct ch_slice blob, uint32_t *count);
/* Returns 1 with the next member, 0 at the end, or -CH_EMALFORMED on bad input. */
int clog_members_next(struct clog_members_iter *it, struct ch_slice *user, uint8_t *role);

/* ---- Raft entries ---------------------------------------------------------------
 *
 * One Raft entry carries a batch of commands proposed by one leader:
 *
 *   u32 magic "CHE1" | u8 version (1) | u8 flags (bit 0: payload is lz4) | u16 0
 *   u32 origin node | u64 batch id | u64 ts_ms (leader wall clock)
 *   u32 n_cmds | u32 raw_len | u32 stored_len | payload (stored_len bytes)
 *
 * The raw payload is n_cmds × (u32 length, command encoding); the entry is
 * zero-padded to a multiple of 8 bytes (raft_uv requires it).  Raft itself
 * checksums entries on disk, so the entry carries no checksum of its own.
 */
#define CLOG_ENTRY_MAGIC 0x31454843u /* "CHE1" little-endian */
#define CLOG_ENTRY_VERSION 1
#define CLOG_ENTRY_HEADER_SIZE 40
#define CLOG_ENTRY_FLAG_LZ4 1

struct clog_entry_header {
    uint32_t origin;   /* node id of the proposing leader */
    uint64_t batch_id; /* unique per origin: lets the origin find its waiting requests */
    uint64_t ts_ms;    /* time stamped on the batch's events */
    uint32_t n_cmds;
};

/*
 * Encodes an entry from `cmds`, which holds h->n_cmds length-prefixed commands
 * (as built with clog_batch_add).  The payload is lz4-compressed when that saves
 * space and it is at least compress_min bytes (0 disables compression).  The
 * entry is allocated with `alloc` (raft_malloc in the shell, malloc in tests);
 * on success *out belongs to the caller.  Returns 0, CH_ENOMEM or CH_ETOOLARGE.
 */
int clog_entry_encode(const struct clog_entry_header *h, const void *cmds, size_t cmds_len,
                      size_t compress_min, void *(*alloc)(size_t), uint8_t **out,
                      size_t *out_len);

/* Appends one length-prefixed command to a batch under construction. */
void clog_batch_add(struct ch_wbuf *batch, const struct clog_cmd *cmd);

/*
 * Decodes an entry's header and hands out its raw command payload.  When the
 * payload is compressed it is decompressed into `scratch` (reused between calls);
 * *payload then points into scratch, otherwise into buf.  Returns 0,
 * CH_EMALFORMED, CH_EVERSION, CH_ETOOLARGE or CH_ENOMEM.
 */
int clog_entry_decode(const void *buf, size_t len, struct clog_entry_header *h,
                      struct ch_wbuf *scratch, const uint8_t **payload,
                      size_t *payload_len);

/* Reads just the header (no decompression); 0 or an error as above. */
int clog_entry_peek(const void *buf, size_t len, struct clog_entry_header *h);

#endif
