/* A client connection's pure state: token buckets and the bounded output queue. */
#ifndef CHORUS_SESSION_H
#define CHORUS_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "../fanout/fanout.h"

/*
 * Token bucket: `rate` tokens per second up to `burst`.  Time is a parameter
 * (milliseconds from any fixed origin), so tests run on a fake clock.
 */
struct sess_bucket {
    uint32_t rate;
    uint32_t burst;
    uint64_t milli_tokens; /* tokens × 1000, so refills need no floating point */
    uint64_t last_ms;
};

void sess_bucket_init(struct sess_bucket *b, uint32_t rate, uint32_t burst, uint64_t now_ms);

/* Takes one token: 0, or CH_ERATELIMITED with *retry_after_ms until one is back. */
int sess_bucket_take(struct sess_bucket *b, uint64_t now_ms, uint64_t *retry_after_ms);

/*
 * The output queue: shared encoded messages (fan_msg) waiting for the socket.
 * It holds one reference per entry.  `max_bytes` bounds the payload bytes queued:
 * a push that would exceed it fails with CH_ELIMIT and the connection is then
 * closed as a slow consumer (it resumes by sync); sess_queue_push_force ignores
 * the bound (for the goodbye notice that precedes that close).
 */
struct sess_queue {
    struct fan_msg **v;
    uint32_t head, n, cap;
    size_t bytes;
    size_t max_bytes;
};

void sess_queue_init(struct sess_queue *q, size_t max_bytes);
void sess_queue_free(struct sess_queue *q); /* drops every reference */
int sess_queue_push(struct sess_queue *q, struct fan_msg *m);       /* 0, CH_ELIMIT, CH_ENOMEM */
int sess_queue_push_force(struct sess_queue *q, struct fan_msg *m); /* 0 or CH_ENOMEM */
/* The oldest message (still queued), or NULL. */
struct fan_msg *sess_queue_peek(const struct sess_queue *q);
/* Removes the oldest message and drops the queue's reference to it. */
void sess_queue_pop(struct sess_queue *q);

/*
 * Batched frames (a client that connected with /ws?batch=1): copies the oldest
 * queued messages, each followed by '\n', into buf while they fit in cap bytes,
 * pops them and returns how many; *len is the bytes written.  Returns 0 (and
 * pops nothing) when the oldest message alone does not fit: the caller sends it
 * in a frame of its own.  Messages are compact JSON, never containing a newline,
 * so the receiver splits the frame on '\n'.
 */
size_t sess_queue_take_batch(struct sess_queue *q, uint8_t *buf, size_t cap, size_t *len);

#endif
