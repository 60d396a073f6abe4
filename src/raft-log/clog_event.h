/* Conversation events: the records the log stores, history returns and fanout pushes. */
#ifndef CHORUS_CLOG_EVENT_H
#define CHORUS_CLOG_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "../common/codec.h"

/*
 * Every change to a conversation is an event with the next seq (1, 2, 3, ... with
 * no gaps): its creation, membership changes, messages, edits, deletes and
 * reactions.  Edits, deletes and reactions reference an earlier message by
 * ref_seq; the log stays append-only.  Receipts (delivered/read cursor moves) are
 * events too, but outside the sequence: their seq is 0 and ref_seq is the cursor.
 */
enum clog_event_type {
    CLOG_EV_CREATED = 1,    /* actor created it; kind = direct|group; body = name;
                               members = initial member list */
    CLOG_EV_MEMBER_ADDED,   /* actor added target with role kind */
    CLOG_EV_MEMBER_REMOVED, /* actor removed target */
    CLOG_EV_MEMBER_LEFT,    /* actor left; target = new owner if ownership passed */
    CLOG_EV_MESSAGE,        /* actor posted body */
    CLOG_EV_EDITED,         /* actor replaced the body of ref_seq */
    CLOG_EV_DELETED,        /* actor deleted ref_seq */
    CLOG_EV_REACTION,       /* actor added/removed (kind) reaction body on ref_seq */
    CLOG_EV_RECEIPT,        /* actor's cursor kind (delivered|read) moved to ref_seq */
    CLOG_EV_USER_DISABLED,  /* conv 0, seq 0: actor's account was disabled.  Only in
                               the committed stream (gateways close its sessions),
                               never in a conversation's history */
    CLOG_EV__MAX
};

/* Name of an event type ("message", "edited", ...); "?" when unknown. */
const char *clog_event_type_name(int type);

/* A decoded event.  Slices borrow from the record it was decoded from. */
struct clog_event {
    uint8_t type;
    uint8_t kind;
    uint64_t conv;
    uint64_t seq;
    uint64_t ts; /* ms since the epoch, from the batch's leader clock, monotonic per conv */
    uint64_t ref_seq;
    struct ch_slice actor;
    struct ch_slice target;
    struct ch_slice client_msg_id;
    struct ch_slice body;
    struct ch_slice members;
};

/*
 * Record encoding (the same bytes in memory, in snapshots, in history replies and
 * in the committed stream):
 *   u32 record_len (including itself) | u8 type | u8 kind | u16 0
 *   u64 conv | u64 seq | u64 ts | u64 ref_seq
 *   str16 actor | str16 target | str16 client_msg_id | bytes32 body | bytes32 members
 */
#define CLOG_EVENT_MIN_SIZE 54

/* Appends ev's record to b. */
void clog_event_encode(struct ch_wbuf *b, const struct clog_event *ev);

/*
 * Decodes the record at the reader's position and advances past it.  The record
 * must be self-consistent (its length covers exactly its fields) and within the
 * hard bounds of clog_cmd.h.  Returns 0, CH_EMALFORMED or CH_EUNKNOWN_OP (type).
 */
int clog_event_decode(struct ch_rbuf *r, struct clog_event *ev);

#endif
