/*
 * The conversation-log state machine.
 *
 * Rules, applied identically by every replica (every failure leaves the state
 * untouched: commands are validated completely before anything changes):
 *
 *  - Ids: conversation ids are non-zero u64 (0 -> CH_EINVAL); user ids are 1..64
 *    bytes (CH_EINVAL otherwise).  Unknown conversation -> CH_ENOTFOUND; an actor
 *    that is not a member -> CH_ENOTMEMBER.
 *  - CREATE.  DIRECT: exactly two distinct members, the actor one of them, both
 *    MEMBER.  GROUP: the actor is OWNER; listed members join with their role (OWNER
 *    in the list becomes ADMIN, duplicates collapse, the actor is added if not
 *    listed); at most limits.max_members (CH_ELIMIT).  Emits CREATED (seq 1, body =
 *    name, members = resulting list).  Re-creating an existing conversation by its
 *    creator with the same kind is an idempotent retry (ok, dup, seq 1); anything
 *    else -> CH_EEXISTS.
 *  - ADD_MEMBER / REMOVE_MEMBER: groups only (CH_EFORBIDDEN for direct).  OWNER may
 *    add ADMIN or MEMBER and remove anyone but itself; ADMIN may add and remove
 *    MEMBERs only (CH_EFORBIDDEN).  Role OWNER cannot be granted (CH_EINVAL).
 *    Adding a member or removing a non-member is ok with dup and no event;
 *    removing oneself -> CH_EINVAL (use LEAVE).
 *  - LEAVE: groups only.  An owner that leaves hands ownership to the
 *    earliest-joined ADMIN, else the earliest-joined MEMBER (the event's target).
 *  - POST: body 1..limits.max_body bytes (CH_EINVAL / CH_ETOOLARGE).
 *  - EDIT: ref_seq must be a MESSAGE that is not deleted (CH_ENOMESSAGE); only its
 *    sender may edit (CH_EFORBIDDEN).  DELETE: its sender or an OWNER/ADMIN
 *    (moderation).  REACT: body 1..64 bytes, kind ADD or REMOVE (CH_EINVAL).
 *  - Idempotency: POST/EDIT/DELETE/REACT with a non-empty client_msg_id are keyed
 *    by (conversation, actor, client_msg_id) forever; a repeat returns the first
 *    seq and ts with dup = 1 and emits nothing, whatever its body (first write
 *    wins).  Checked after membership, before the other validations.
 *  - CURSOR: kind DELIVERED or READ; the seq is clamped to the last seq; cursors
 *    only move forward (a lower value: ok, dup, no event); READ raises DELIVERED
 *    too.  Emits RECEIPT (seq 0, ref_seq = new cursor) when it moved.  Members who
 *    leave lose their cursors.
 *  - At most limits.max_events events per conversation (CH_ELIMIT).
 *  - Event ts = max(entry ts, conversation's last ts): monotonic per conversation.
 */
#include "clog_internal.h"

#include <stdlib.h>
#include <string.h>

#include "../common/error.h"

#define CLOG_MAX_EMOJI 64

void clog_limits_default(struct clog_limits *l)
{
    l->max_body = 65536;
    l->max_members = 100000;
    l->max_events = 1u << 31;
}

/* ---- output --------------------------------------------------------------------- */

void clog_output_init(struct clog_output *o)
{
    memset(o, 0, sizeof *o);
    ch_wbuf_init(&o->events);
}

void clog_output_reset(struct clog_output *o)
{
    o->n_results = 0;
    o->n_events = 0;
    ch_wbuf_reset(&o->events);
}

void clog_output_free(struct clog_output *o)
{
    free(o->results);
    ch_wbuf_free(&o->events);
    memset(o, 0, sizeof *o);
}

static struct clog_result *push_result(struct clog_output *o)
{
    if (o->n_results == o->cap_results) {
        size_t cap = o->cap_results ? o->cap_results * 2 : 16;
        struct clog_result *r = realloc(o->results, cap * sizeof *r);
        if (r == NULL)
            return NULL;
        o->results = r;
        o->cap_results = cap;
    }
    struct clog_result *r = &o->results[o->n_results++];
    memset(r, 0, sizeof *r);
    return r;
}

/* ---- conversations ---------------------------------------------------------------- */

int clog_create(const struct clog_limits *limits, struct clog **out)
{
    struct clog *c = calloc(1, sizeof *c);
    if (c == NULL)
        return CH_ENOMEM;
    if (limits)
        c->limits = *limits;
    else
        clog_limits_default(&c->limits);
    ch_map_init(&c->convs);
    ch_wbuf_init(&c->scratch);
    ch_wbuf_init(&c->tmp);
    *out = c;
    return 0;
}

struct clog_conv *clog__conv_new(uint64_t id, uint8_t kind)
{
    struct clog_conv *cv = calloc(1, sizeof *cv);
    if (cv == NULL)
        return NULL;
    cv->id = id;
    cv->kind = kind;
    ch_map_init(&cv->members);
    return cv;
}

void clog__conv_free(struct clog_conv *cv)
{
    if (cv == NULL)
        return;
    for (uint32_t i = 0; i < cv->order_len; i++)
        free(cv->order[i]);
    free(cv->order);
    ch_map_free(&cv->members);
    free(cv->arena);
    free(cv->offsets);
    free(cv->flags);
    free(cv->idem);
    free(cv);
}

void clog__free_all(struct ch_map *convs)
{
    size_t it = 0;
    const struct ch_map_slot *slot;
    while (ch_map_next(convs, &it, &slot))
        clog__conv_free(slot->val);
    ch_map_free(convs);
}

void clog_destroy(struct clog *c)
{
    if (c == NULL)
        return;
    clog__free_all(&c->convs);
    ch_wbuf_free(&c->scratch);
    ch_wbuf_free(&c->tmp);
    free(c);
}

struct clog_conv *clog__conv_get(const struct clog *c, uint64_t id)
{
    return ch_map_get(&c->convs, &id, sizeof id);
}

int clog__append_record(struct clog_conv *cv, const uint8_t *rec, size_t len, uint8_t flags)
{
    if (cv->n_events == cv->cap_events) {
        uint64_t cap = cv->cap_events ? cv->cap_events * 2 : 8;
        uint64_t *off = realloc(cv->offsets, cap * sizeof *off);
        if (off == NULL)
            return CH_ENOMEM;
        cv->offsets = off;
        uint8_t *fl = realloc(cv->flags, cap);
        if (fl == NULL)
            return CH_ENOMEM;
        cv->flags = fl;
        cv->cap_events = cap;
    }
    if (cv->arena_cap - cv->arena_len < len) {
        size_t cap = cv->arena_cap ? cv->arena_cap : 256;
        while (cap - cv->arena_len < len)
            cap *= 2;
        uint8_t *a = realloc(cv->arena, cap);
        if (a == NULL)
            return CH_ENOMEM;
        cv->arena = a;
        cv->arena_cap = cap;
    }
    memcpy(cv->arena + cv->arena_len, rec, len);
    cv->offsets[cv->n_events] = cv->arena_len;
    cv->flags[cv->n_events] = flags;
    cv->arena_len += len;
    cv->n_events++;
    return 0;
}

static struct clog_member_rec *member_find(const struct clog_conv *cv, struct ch_slice user)
{
    return ch_map_get(&cv->members, user.ptr, user.len);
}

int clog__member_add(struct clog_conv *cv, struct ch_slice user, uint8_t role,
                     struct clog_member_rec **out)
{
    if (cv->order_len == cv->order_cap) {
        /* compact tombstones before growing */
        if (cv->order_len > cv->n_members * 2 && cv->order_len >= 16) {
            uint32_t w = 0;
            for (uint32_t i = 0; i < cv->order_len; i++)
                if (cv->order[i])
                    cv->order[w++] = cv->order[i];
            cv->order_len = w;
        } else {
            uint32_t cap = cv->order_cap ? cv->order_cap * 2 : 4;
            struct clog_member_rec **o = realloc(cv->order, cap * sizeof *o);
            if (o == NULL)
                return CH_ENOMEM;
            cv->order = o;
            cv->order_cap = cap;
        }
    }
    struct clog_member_rec *m = malloc(sizeof *m + user.len);
    if (m == NULL)
        return CH_ENOMEM;
    m->role = role;
    m->user_len = (uint16_t)user.len;
    m->delivered = 0;
    m->read = 0;
    memcpy(m->user, user.ptr, user.len);
    if (ch_map_put(&cv->members, m->user, user.len, m) != 0) {
        free(m);
        return CH_ENOMEM;
    }
    cv->order[cv->order_len++] = m;
    cv->n_members++;
    if (out)
        *out = m;
    return 0;
}

static void member_remove(struct clog_conv *cv, struct clog_member_rec *m)
{
    ch_map_del(&cv->members, m->user, m->user_len);
    for (uint32_t i = cv->order_len; i-- > 0;) {
        if (cv->order[i] == m) {
            cv->order[i] = NULL;
            break;
        }
    }
    while (cv->order_len > 0 && cv->order[cv->order_len - 1] == NULL)
        cv->order_len--;
    cv->n_members--;
    free(m);
}

/* ---- idempotency index ------------------------------------------------------------- */

uint64_t clog__idem_hash(struct ch_slice actor, struct ch_slice cmid)
{
    uint64_t h = ch_hash64(CH_HASH64_INIT, actor.ptr, actor.len);
    uint8_t sep = 0;
    h = ch_hash64(h, &sep, 1);
    h = ch_mix64(ch_hash64(h, cmid.ptr, cmid.len));
    return h ? h : 1;
}

/* Makes room for one more key; 0 or CH_ENOMEM. */
static int idem_reserve(struct clog_conv *cv)
{
    if ((cv->idem_count + 1) * 4 <= cv->idem_cap * 3)
        return 0;
    uint64_t cap = cv->idem_cap ? cv->idem_cap * 2 : 16;
    struct clog_idem_slot *t = calloc(cap, sizeof *t);
    if (t == NULL)
        return CH_ENOMEM;
    for (uint64_t i = 0; i < cv->idem_cap; i++) {
        if (cv->idem[i].hash == 0)
            continue;
        uint64_t j = cv->idem[i].hash & (cap - 1);
        while (t[j].hash != 0)
            j = (j + 1) & (cap - 1);
        t[j] = cv->idem[i];
    }
    free(cv->idem);
    cv->idem = t;
    cv->idem_cap = cap;
    return 0;
}

/* Inserts into reserved room. */
static void idem_insert(struct clog_conv *cv, uint64_t hash, uint64_t seq)
{
    uint64_t j = hash & (cv->idem_cap - 1);
    while (cv->idem[j].hash != 0)
        j = (j + 1) & (cv->idem_cap - 1);
    cv->idem[j].hash = hash;
    cv->idem[j].seq = seq;
    cv->idem_count++;
}

int clog__idem_put(struct clog_conv *cv, uint64_t hash, uint64_t seq)
{
    if (idem_reserve(cv) != 0)
        return CH_ENOMEM;
    idem_insert(cv, hash, seq);
    return 0;
}

static int decode_at(const struct clog_conv *cv, uint64_t seq, struct clog_event *ev)
{
    struct ch_rbuf r;
    uint64_t off = cv->offsets[seq - 1];
    ch_rbuf_init(&r, cv->arena + off, cv->arena_len - off);
    return clog_event_decode(&r, ev);
}

/* Returns the seq recorded for (actor, cmid) or 0. */
static uint64_t idem_find(const struct clog_conv *cv, struct ch_slice actor,
                          struct ch_slice cmid, uint64_t hash)
{
    if (cv->idem_cap == 0)
        return 0;
    for (uint64_t j = hash & (cv->idem_cap - 1); cv->idem[j].hash != 0;
         j = (j + 1) & (cv->idem_cap - 1)) {
        if (cv->idem[j].hash != hash)
            continue;
        struct clog_event ev;
        if (decode_at(cv, cv->idem[j].seq, &ev) == 0 && ch_slice_eq(ev.actor, actor) &&
            ch_slice_eq(ev.client_msg_id, cmid))
            return cv->idem[j].seq;
    }
    return 0;
}

/* ---- apply ------------------------------------------------------------------------ */

static int valid_user(struct ch_slice u)
{
    return u.len >= 1 && u.len <= CLOG_MAX_USER;
}

/* Appends ev (seq assigned here unless it is a receipt) to the conversation and
 * to the output.  0 or CH_ENOMEM (conversation unchanged on failure). */
static int emit(struct clog *c, struct clog_conv *cv, struct clog_event *ev, uint8_t flags,
                struct clog_output *out, int keyed)
{
    if (ev->type != CLOG_EV_RECEIPT)
        ev->seq = cv->n_events + 1;
    ch_wbuf_reset(&c->tmp);
    clog_event_encode(&c->tmp, ev);
    if (ch_wbuf_error(&c->tmp))
        return CH_ENOMEM;
    if (ev->type != CLOG_EV_RECEIPT) {
        uint64_t hash = keyed ? clog__idem_hash(ev->actor, ev->client_msg_id) : 0;
        /* reserve the idempotency slot first so that appending is the last
         * step that can fail */
        if (keyed && idem_reserve(cv) != 0)
            return CH_ENOMEM;
        if (clog__append_record(cv, c->tmp.data, c->tmp.len, flags) != 0)
            return CH_ENOMEM;
        if (keyed) {
            idem_insert(cv, hash, ev->seq);
            c->idem_keys++;
        }
        c->events++;
        c->event_bytes += c->tmp.len;
        cv->last_ts = ev->ts;
    }
    size_t before = out->events.len;
    ch_put_raw(&out->events, c->tmp.data, c->tmp.len);
    if (ch_wbuf_error(&out->events)) {
        out->events.len = before;
        return CH_ENOMEM;
    }
    out->n_events++;
    return 0;
}

static void event_init(struct clog_event *ev, uint8_t type, const struct clog_conv *cv,
                       const struct clog_cmd *cmd, uint64_t ts)
{
    memset(ev, 0, sizeof *ev);
    ev->type = type;
    ev->conv = cmd->conv;
    ev->ts = ts > cv->last_ts ? ts : cv->last_ts;
    ev->actor = cmd->actor;
}

static int apply_create(struct clog *c, const struct clog_cmd *cmd, uint64_t ts,
                        struct clog_result *res, struct clog_output *out)
{
    if (cmd->kind != CLOG_DIRECT && cmd->kind != CLOG_GROUP)
        return CH_EINVAL;
    struct clog_conv *existing = clog__conv_get(c, cmd->conv);
    if (existing != NULL) {
        struct clog_event first;
        if (existing->kind == cmd->kind && decode_at(existing, 1, &first) == 0 &&
            ch_slice_eq(first.actor, cmd->actor)) {
            res->dup = 1;
            res->seq = 1;
            res->ts = first.ts;
            return 0;
        }
        return CH_EEXISTS;
    }
    struct clog_members_iter it;
    uint32_t count;
    if (clog_members_open(&it, cmd->members, &count) != 0)
        return CH_EMALFORMED;
    struct clog_conv *cv = clog__conv_new(cmd->conv, cmd->kind);
    if (cv == NULL)
        return CH_ENOMEM;
    int rv = 0;
    if (cmd->kind == CLOG_GROUP)
        rv = clog__member_add(cv, cmd->actor, CLOG_ROLE_OWNER, NULL);
    struct ch_slice user;
    uint8_t role;
    int more;
    while (rv == 0 && (more = clog_members_next(&it, &user, &role)) != 0) {
        if (more < 0) {
            rv = CH_EMALFORMED;
            break;
        }
        if (role < CLOG_ROLE_OWNER || role > CLOG_ROLE_MEMBER) {
            rv = CH_EINVAL;
            break;
        }
        if (cmd->kind == CLOG_DIRECT)
            role = CLOG_ROLE_MEMBER;
        else if (role == CLOG_ROLE_OWNER)
            role = CLOG_ROLE_ADMIN;
        if (member_find(cv, user) != NULL)
            continue;
        if (cv->n_members >= c->limits.max_members) {
            rv = CH_ELIMIT;
            break;
        }
        rv = clog__member_add(cv, user, role, NULL);
    }
    if (rv == 0 && cmd->kind == CLOG_DIRECT &&
        (cv->n_members != 2 || member_find(cv, cmd->actor) == NULL))
        rv = CH_EINVAL;
    if (rv == 0 && cv->n_members > c->limits.max_members)
        rv = CH_ELIMIT;
    /* the CREATED event lists the resulting members in join order */
    struct ch_wbuf *mb = &c->scratch;
    ch_wbuf_reset(mb);
    if (rv == 0) {
        size_t at = clog_members_begin(mb);
        for (uint32_t i = 0; i < cv->order_len; i++) {
            struct clog_member_rec *m = cv->order[i];
            struct ch_slice u = {(const uint8_t *)m->user, m->user_len};
            clog_members_put(mb, u, m->role);
        }
        clog_members_end(mb, at, cv->n_members);
        if (ch_wbuf_error(mb))
            rv = CH_ENOMEM;
    }
    if (rv == 0 && ch_map_put(&c->convs, &cv->id, sizeof cv->id, cv) != 0)
        rv = CH_ENOMEM;
    if (rv != 0) {
        clog__conv_free(cv);
        return rv;
    }
    struct clog_event ev;
    event_init(&ev, CLOG_EV_CREATED, cv, cmd, ts);
    ev.kind = cmd->kind;
    ev.body = cmd->name;
    ev.members.ptr = mb->data;
    ev.members.len = mb->len;
    rv = emit(c, cv, &ev, 0, out, 0);
    if (rv != 0) {
        ch_map_del(&c->convs, &cv->id, sizeof cv->id);
        clog__conv_free(cv);
        return rv;
    }
    res->seq = ev.seq;
    res->ts = ev.ts;
    return 0;
}

/* The message at ref_seq, checked to exist and not be deleted. */
static int message_at(const struct clog_conv *cv, uint64_t ref_seq, struct clog_event *ev)
{
    if (ref_seq == 0 || ref_seq > cv->n_events)
        return CH_ENOMESSAGE;
    uint8_t f = cv->flags[ref_seq - 1];
    if (!(f & CLOG_MSG_IS_MESSAGE) || (f & CLOG_MSG_DELETED))
        return CH_ENOMESSAGE;
    return decode_at(cv, ref_seq, ev) == 0 ? 0 : CH_EINTERNAL;
}

/* A message body: 1..limits.max_body bytes. */
static int check_body(const struct clog *c, struct ch_slice body)
{
    if (body.len == 0)
        return CH_EINVAL;
    return body.len > c->limits.max_body ? CH_ETOOLARGE : 0;
}

static int apply_cmd(struct clog *c, const struct clog_cmd *cmd, uint64_t ts,
                     struct clog_result *res, struct clog_output *out)
{
    if (cmd->conv == 0 || !valid_user(cmd->actor))
        return CH_EINVAL;
    if (cmd->op == CLOG_OP_CREATE)
        return apply_create(c, cmd, ts, res, out);

    struct clog_conv *cv = clog__conv_get(c, cmd->conv);
    if (cv == NULL)
        return CH_ENOTFOUND;
    struct clog_member_rec *actor = member_find(cv, cmd->actor);
    if (actor == NULL)
        return CH_ENOTMEMBER;

    int keyed = 0;
    uint64_t hash = 0;
    switch (cmd->op) {
    case CLOG_OP_POST:
    case CLOG_OP_EDIT:
    case CLOG_OP_DELETE:
    case CLOG_OP_REACT:
        if (cmd->client_msg_id.len > 0) {
            keyed = 1;
            hash = clog__idem_hash(cmd->actor, cmd->client_msg_id);
            uint64_t seq = idem_find(cv, cmd->actor, cmd->client_msg_id, hash);
            if (seq != 0) {
                struct clog_event first;
                res->dup = 1;
                res->seq = seq;
                res->ts = decode_at(cv, seq, &first) == 0 ? first.ts : 0;
                return 0;
            }
        }
        break;
    default:
        break;
    }
    if (cmd->op != CLOG_OP_CURSOR && cv->n_events >= c->limits.max_events)
        return CH_ELIMIT;

    struct clog_event ev;
    struct clog_event ref;
    uint8_t flags = 0;
    int rv;
    switch (cmd->op) {
    case CLOG_OP_ADD_MEMBER: {
        if (cv->kind != CLOG_GROUP)
            return CH_EFORBIDDEN;
        if (!valid_user(cmd->target))
            return CH_EINVAL;
        uint8_t role = cmd->kind ? cmd->kind : CLOG_ROLE_MEMBER;
        if (role != CLOG_ROLE_ADMIN && role != CLOG_ROLE_MEMBER)
            return CH_EINVAL;
        if (actor->role == CLOG_ROLE_MEMBER ||
            (actor->role == CLOG_ROLE_ADMIN && role != CLOG_ROLE_MEMBER))
            return CH_EFORBIDDEN;
        if (member_find(cv, cmd->target) != NULL) {
            res->dup = 1;
            return 0;
        }
        if (cv->n_members >= c->limits.max_members)
            return CH_ELIMIT;
        if (clog__member_add(cv, cmd->target, role, NULL) != 0)
            return CH_ENOMEM;
        event_init(&ev, CLOG_EV_MEMBER_ADDED, cv, cmd, ts);
        ev.target = cmd->target;
        ev.kind = role;
        rv = emit(c, cv, &ev, 0, out, 0);
        if (rv != 0) {
            member_remove(cv, member_find(cv, cmd->target));
            return rv;
        }
        break;
    }
    case CLOG_OP_REMOVE_MEMBER: {
        if (cv->kind != CLOG_GROUP)
            return CH_EFORBIDDEN;
        if (!valid_user(cmd->target))
            return CH_EINVAL;
        if (ch_slice_eq(cmd->target, cmd->actor))
            return CH_EINVAL;
        struct clog_member_rec *t = member_find(cv, cmd->target);
        if (t == NULL) {
            res->dup = 1;
            return 0;
        }
        if (actor->role == CLOG_ROLE_MEMBER ||
            (actor->role == CLOG_ROLE_ADMIN && t->role != CLOG_ROLE_MEMBER))
            return CH_EFORBIDDEN;
        event_init(&ev, CLOG_EV_MEMBER_REMOVED, cv, cmd, ts);
        ev.target = cmd->target;
        rv = emit(c, cv, &ev, 0, out, 0);
        if (rv != 0)
            return rv;
        member_remove(cv, t);
        break;
    }
    case CLOG_OP_LEAVE: {
        if (cv->kind != CLOG_GROUP)
            return CH_EFORBIDDEN;
        struct clog_member_rec *heir = NULL;
        if (actor->role == CLOG_ROLE_OWNER) {
            for (int want = CLOG_ROLE_ADMIN; want <= CLOG_ROLE_MEMBER && !heir; want++)
                for (uint32_t i = 0; i < cv->order_len && !heir; i++)
                    if (cv->order[i] && cv->order[i] != actor && cv->order[i]->role == want)
                        heir = cv->order[i];
        }
        event_init(&ev, CLOG_EV_MEMBER_LEFT, cv, cmd, ts);
        if (heir) {
            ev.target.ptr = (const uint8_t *)heir->user;
            ev.target.len = heir->user_len;
        }
        rv = emit(c, cv, &ev, 0, out, 0);
        if (rv != 0)
            return rv;
        if (heir)
            heir->role = CLOG_ROLE_OWNER;
        member_remove(cv, actor);
        break;
    }
    case CLOG_OP_POST:
        if ((rv = check_body(c, cmd->body)) != 0)
            return rv;
        event_init(&ev, CLOG_EV_MESSAGE, cv, cmd, ts);
        ev.client_msg_id = cmd->client_msg_id;
        ev.body = cmd->body;
        flags = CLOG_MSG_IS_MESSAGE;
        if ((rv = emit(c, cv, &ev, flags, out, keyed)) != 0)
            return rv;
        break;
    case CLOG_OP_EDIT:
        if ((rv = message_at(cv, cmd->ref_seq, &ref)) != 0)
            return rv;
        if (!ch_slice_eq(ref.actor, cmd->actor))
            return CH_EFORBIDDEN;
        if ((rv = check_body(c, cmd->body)) != 0)
            return rv;
        event_init(&ev, CLOG_EV_EDITED, cv, cmd, ts);
        ev.client_msg_id = cmd->client_msg_id;
        ev.ref_seq = cmd->ref_seq;
        ev.body = cmd->body;
        if ((rv = emit(c, cv, &ev, 0, out, keyed)) != 0)
            return rv;
        break;
    case CLOG_OP_DELETE:
        if ((rv = message_at(cv, cmd->ref_seq, &ref)) != 0)
            return rv;
        if (!ch_slice_eq(ref.actor, cmd->actor) && actor->role == CLOG_ROLE_MEMBER)
            return CH_EFORBIDDEN;
        event_init(&ev, CLOG_EV_DELETED, cv, cmd, ts);
        ev.client_msg_id = cmd->client_msg_id;
        ev.ref_seq = cmd->ref_seq;
        if ((rv = emit(c, cv, &ev, 0, out, keyed)) != 0)
            return rv;
        cv->flags[cmd->ref_seq - 1] |= CLOG_MSG_DELETED;
        break;
    case CLOG_OP_REACT:
        if ((rv = message_at(cv, cmd->ref_seq, &ref)) != 0)
            return rv;
        if (cmd->kind != CLOG_REACT_ADD && cmd->kind != CLOG_REACT_REMOVE)
            return CH_EINVAL;
        if (cmd->body.len == 0 || cmd->body.len > CLOG_MAX_EMOJI)
            return CH_EINVAL;
        event_init(&ev, CLOG_EV_REACTION, cv, cmd, ts);
        ev.kind = cmd->kind;
        ev.client_msg_id = cmd->client_msg_id;
        ev.ref_seq = cmd->ref_seq;
        ev.body = cmd->body;
        if ((rv = emit(c, cv, &ev, 0, out, keyed)) != 0)
            return rv;
        break;
    case CLOG_OP_CURSOR: {
        if (cmd->kind != CLOG_CURSOR_DELIVERED && cmd->kind != CLOG_CURSOR_READ)
            return CH_EINVAL;
        uint64_t seq = cmd->ref_seq < cv->n_events ? cmd->ref_seq : cv->n_events;
        uint64_t *cur = cmd->kind == CLOG_CURSOR_READ ? &actor->read : &actor->delivered;
        if (seq <= *cur) {
            res->dup = 1;
            res->seq = 0;
            return 0;
        }
        event_init(&ev, CLOG_EV_RECEIPT, cv, cmd, ts);
        ev.kind = cmd->kind;
        ev.ref_seq = seq;
        if ((rv = emit(c, cv, &ev, 0, out, 0)) != 0)
            return rv;
        *cur = seq;
        if (cmd->kind == CLOG_CURSOR_READ && actor->delivered < seq)
            actor->delivered = seq;
        res->ts = ev.ts;
        res->conv = cmd->conv;
        return 0;
    }
    default:
        return CH_EUNKNOWN_OP;
    }
    res->seq = ev.seq;
    res->ts = ev.ts;
    return 0;
}

int clog_apply_cmd(struct clog *c, const struct clog_cmd *cmd, uint64_t ts_ms,
                   struct clog_output *out)
{
    struct clog_result *res = push_result(out);
    if (res == NULL)
        return CH_ENOMEM;
    res->conv = cmd->conv;
    int rv = apply_cmd(c, cmd, ts_ms, res, out);
    c->applied_commands++;
    if (rv == CH_ENOMEM)
        return rv;
    if (rv != 0) {
        res->err = (uint16_t)rv;
        res->seq = 0;
        res->ts = 0;
        res->dup = 0;
    }
    return 0;
}

int clog_apply(struct clog *c, const void *entry, size_t len, struct clog_output *out)
{
    clog_output_reset(out);
    struct clog_entry_header h;
    const uint8_t *payload;
    size_t payload_len;
    struct ch_wbuf scratch;
    /* the entry scratch must not be c->scratch, which CREATE uses for member lists */
    ch_wbuf_init(&scratch);
    int rv = clog_entry_decode(entry, len, &h, &scratch, &payload, &payload_len);
    if (rv != 0) {
        ch_wbuf_free(&scratch);
        return rv;
    }
    c->applied_entries++;
    struct ch_rbuf r;
    ch_rbuf_init(&r, payload, payload_len);
    for (uint32_t i = 0; i < h.n_cmds; i++) {
        struct ch_slice one = ch_get_bytes32(&r, payload_len);
        struct clog_cmd cmd;
        int err = r.err ? CH_EMALFORMED : 0;
        if (err == 0) {
            struct ch_rbuf cr;
            ch_rbuf_init(&cr, one.ptr, one.len);
            err = clog_cmd_decode(&cr, &cmd);
            if (err == 0 && cr.left != 0)
                err = CH_EMALFORMED;
        }
        if (err != 0) {
            struct clog_result *res = push_result(out);
            if (res == NULL) {
                ch_wbuf_free(&scratch);
                return CH_ENOMEM;
            }
            res->err = (uint16_t)err;
            continue;
        }
        if ((rv = clog_apply_cmd(c, &cmd, h.ts_ms, out)) != 0) {
            ch_wbuf_free(&scratch);
            return rv;
        }
    }
    ch_wbuf_free(&scratch);
    return 0;
}

/* ---- reads -------------------------------------------------------------------------- */

int clog_conv_info(const struct clog *c, uint64_t conv, struct clog_conv_info *info)
{
    const struct clog_conv *cv = clog__conv_get(c, conv);
    if (cv == NULL)
        return CH_ENOTFOUND;
    struct clog_event first;
    memset(info, 0, sizeof *info);
    if (cv->n_events > 0 && decode_at(cv, 1, &first) == 0) {
        info->name = first.body;
        info->created_by = first.actor;
        info->created_ts = first.ts;
    }
    info->conv = conv;
    info->kind = cv->kind;
    info->last_seq = cv->n_events;
    info->n_members = cv->n_members;
    return 0;
}

static void member_view(const struct clog_member_rec *m, struct clog_member *out)
{
    out->user.ptr = (const uint8_t *)m->user;
    out->user.len = m->user_len;
    out->role = m->role;
    out->delivered = m->delivered;
    out->read = m->read;
}

int clog_member_get(const struct clog *c, uint64_t conv, struct ch_slice user,
                    struct clog_member *m)
{
    const struct clog_conv *cv = clog__conv_get(c, conv);
    if (cv == NULL)
        return CH_ENOTFOUND;
    const struct clog_member_rec *r = member_find(cv, user);
    if (r == NULL)
        return CH_ENOTMEMBER;
    member_view(r, m);
    return 0;
}

int clog_members_foreach(const struct clog *c, uint64_t conv,
                         int (*fn)(void *arg, const struct clog_member *m), void *arg)
{
    const struct clog_conv *cv = clog__conv_get(c, conv);
    if (cv == NULL)
        return CH_ENOTFOUND;
    for (uint32_t i = 0; i < cv->order_len; i++) {
        if (cv->order[i] == NULL)
            continue;
        struct clog_member m;
        member_view(cv->order[i], &m);
        int rv = fn(arg, &m);
        if (rv != 0)
            return rv;
    }
    return 0;
}

int clog_event_get(const struct clog *c, uint64_t conv, uint64_t seq, struct ch_slice *record)
{
    const struct clog_conv *cv = clog__conv_get(c, conv);
    if (cv == NULL)
        return CH_ENOTFOUND;
    if (seq == 0 || seq > cv->n_events)
        return CH_ENOMESSAGE;
    uint64_t off = cv->offsets[seq - 1];
    uint64_t end = seq < cv->n_events ? cv->offsets[seq] : cv->arena_len;
    record->ptr = cv->arena + off;
    record->len = end - off;
    return 0;
}

int clog_history(const struct clog *c, uint64_t conv, uint64_t after, uint64_t before,
                 uint32_t limit, struct ch_wbuf *out, uint32_t *n, int *has_more)
{
    const struct clog_conv *cv = clog__conv_get(c, conv);
    *n = 0;
    *has_more = 0;
    if (cv == NULL)
        return CH_ENOTFOUND;
    uint64_t last = cv->n_events;
    /* the candidate range is [lo, hi] */
    uint64_t lo = after + 1;
    uint64_t hi = (before != 0 && before - 1 < last) ? before - 1 : last;
    if (after >= last || lo > hi)
        return 0;
    uint64_t count = hi - lo + 1;
    uint64_t first, end; /* [first, end] is the page */
    if (before != 0 && after == 0) {
        /* newest `limit` before `before` */
        first = count > limit ? hi - limit + 1 : lo;
        end = hi;
        *has_more = first > lo;
    } else {
        first = lo;
        end = count > limit ? lo + limit - 1 : hi;
        *has_more = end < hi;
    }
    if (limit == 0)
        return 0;
    uint64_t off = cv->offsets[first - 1];
    uint64_t stop = end < last ? cv->offsets[end] : cv->arena_len;
    size_t before_len = out->len;
    ch_put_raw(out, cv->arena + off, stop - off);
    if (ch_wbuf_error(out)) {
        out->len = before_len;
        return CH_ENOMEM;
    }
    *n = (uint32_t)(end - first + 1);
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

uint64_t *clog__sorted_ids(const struct clog *c, size_t *n, int *oom)
{
    *n = 0;
    *oom = 0;
    if (c->convs.count == 0)
        return NULL;
    uint64_t *ids = malloc(c->convs.count * sizeof *ids);
    if (ids == NULL) {
        *oom = 1;
        return NULL;
    }
    size_t it = 0;
    const struct ch_map_slot *slot;
    while (ch_map_next(&c->convs, &it, &slot))
        ids[(*n)++] = ((const struct clog_conv *)slot->val)->id;
    qsort(ids, *n, sizeof *ids, cmp_u64);
    return ids;
}

int clog_convs_foreach(const struct clog *c, int (*fn)(void *arg, uint64_t conv), void *arg)
{
    size_t n;
    int oom;
    uint64_t *ids = clog__sorted_ids(c, &n, &oom);
    if (oom)
        return CH_ENOMEM;
    int rv = 0;
    for (size_t i = 0; i < n && rv == 0; i++)
        rv = fn(arg, ids[i]);
    free(ids);
    return rv;
}

void clog_stats(const struct clog *c, struct clog_stats *st)
{
    st->conversations = c->convs.count;
    st->events = c->events;
    st->event_bytes = c->event_bytes;
    st->idempotency_keys = c->idem_keys;
    st->applied_entries = c->applied_entries;
    st->applied_commands = c->applied_commands;
}

uint64_t clog_digest(const struct clog *c)
{
    size_t n;
    int oom;
    uint64_t *ids = clog__sorted_ids(c, &n, &oom);
    uint64_t h = CH_HASH64_INIT;
    for (size_t i = 0; i < n; i++) {
        const struct clog_conv *cv = clog__conv_get(c, ids[i]);
        uint64_t fixed[4] = {cv->id, cv->kind, cv->n_events, cv->n_members};
        h = ch_hash64(h, fixed, sizeof fixed);
        for (uint32_t k = 0; k < cv->order_len; k++) {
            const struct clog_member_rec *m = cv->order[k];
            if (m == NULL)
                continue;
            uint64_t mf[3] = {m->role, m->delivered, m->read};
            h = ch_hash64(h, m->user, m->user_len);
            h = ch_hash64(h, mf, sizeof mf);
        }
        h = ch_hash64(h, cv->arena, cv->arena_len);
        h = ch_hash64(h, cv->flags, cv->n_events);
    }
    free(ids);
    return ch_mix64(h) ^ (oom ? 0xdeadull : 0);
}
