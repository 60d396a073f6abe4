/* Token buckets and the output queue of a client connection (see session.h). */
#include "session.h"

#include <stdlib.h>
#include <string.h>

#include "../common/error.h"

void sess_bucket_init(struct sess_bucket *b, uint32_t rate, uint32_t burst, uint64_t now_ms)
{
    b->rate = rate ? rate : 1;
    b->burst = burst ? burst : 1;
    b->milli_tokens = (uint64_t)b->burst * 1000;
    b->last_ms = now_ms;
}

int sess_bucket_take(struct sess_bucket *b, uint64_t now_ms, uint64_t *retry_after_ms)
{
    uint64_t cap = (uint64_t)b->burst * 1000;
    if (now_ms > b->last_ms) {
        uint64_t add = (now_ms - b->last_ms) * b->rate; /* ms × tokens/s = milli-tokens */
        b->milli_tokens = cap - b->milli_tokens < add ? cap : b->milli_tokens + add;
        b->last_ms = now_ms;
    }
    if (b->milli_tokens >= 1000) {
        b->milli_tokens -= 1000;
        return 0;
    }
    if (retry_after_ms)
        *retry_after_ms = (1000 - b->milli_tokens + b->rate - 1) / b->rate;
    return CH_ERATELIMITED;
}

void sess_queue_init(struct sess_queue *q, size_t max_bytes)
{
    q->v = NULL;
    q->head = q->n = q->cap = 0;
    q->bytes = 0;
    q->max_bytes = max_bytes;
}

void sess_queue_free(struct sess_queue *q)
{
    while (q->n > 0)
        sess_queue_pop(q);
    free(q->v);
    q->v = NULL;
    q->cap = 0;
}

int sess_queue_push_force(struct sess_queue *q, struct fan_msg *m)
{
    if (q->n == q->cap) {
        uint32_t cap = q->cap ? q->cap * 2 : 16;
        struct fan_msg **v = malloc((size_t)cap * sizeof *v);
        if (v == NULL)
            return CH_ENOMEM;
        for (uint32_t i = 0; i < q->n; i++)
            v[i] = q->v[(q->head + i) % q->cap];
        free(q->v);
        q->v = v;
        q->cap = cap;
        q->head = 0;
    }
    q->v[(q->head + q->n) % q->cap] = m;
    q->n++;
    q->bytes += m->len;
    fan_msg_ref(m);
    return 0;
}

int sess_queue_push(struct sess_queue *q, struct fan_msg *m)
{
    if (q->bytes + m->len > q->max_bytes)
        return CH_ELIMIT;
    return sess_queue_push_force(q, m);
}

struct fan_msg *sess_queue_peek(const struct sess_queue *q)
{
    return q->n ? q->v[q->head] : NULL;
}

void sess_queue_pop(struct sess_queue *q)
{
    if (q->n == 0)
        return;
    struct fan_msg *m = q->v[q->head];
    q->head = (q->head + 1) % q->cap;
    q->n--;
    q->bytes -= m->len;
    fan_msg_unref(m);
}

size_t sess_queue_take_batch(struct sess_queue *q, uint8_t *buf, size_t cap, size_t *len)
{
    size_t n = 0, used = 0;
    while (q->n > 0) {
        struct fan_msg *m = q->v[q->head];
        if (m->len + 1 > cap - used)
            break;
        memcpy(buf + used, fan_msg_payload(m), m->len);
        used += m->len;
        buf[used++] = '\n';
        sess_queue_pop(q);
        n++;
    }
    *len = used;
    return n;
}
