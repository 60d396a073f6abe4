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
 *
 * Users (the chat accounts that hash to this shard).  User ops carry conv 0 (any
 * other value -> CH_EINVAL) and the user id as actor (1..64 bytes, CH_EINVAL); they
 * emit no events and their result has seq 0.  The value is validated before the
 * user is looked up.
 *  - USER_CREATE: body = password record, 1..256 bytes, opaque to clog (CH_EINVAL /
 *    CH_ETOOLARGE); name = display name, 0..64 bytes (CH_ETOOLARGE), empty meaning
 *    "show the user id".  Status and settings start empty, last_seen 0, enabled;
 *    created_ts and the result ts are the entry ts.  If the user exists: the same
 *    password record byte-for-byte is an idempotent retry (ok, dup, ts = created_ts,
 *    whatever the display name), anything else -> CH_EEXISTS.
 *  - USER_UPDATE: kind = the field (CH_EINVAL when unknown).  DISPLAY_NAME from name
 *    (0..64 bytes), STATUS from body (0..256), SETTINGS from body (0..4096, opaque),
 *    PASSWORD from body (1..256): empty where not allowed -> CH_EINVAL, too long ->
 *    CH_ETOOLARGE.  DISABLED from ref_seq (0 or 1, else CH_EINVAL).  LAST_SEEN from
 *    ref_seq (ms) only moves forward: a value not above the stored one is ok with
 *    dup.  Then an unknown user -> CH_ENOUSER; setting a field to the value it
 *    already has is ok with dup and changes nothing.  The result ts is the entry ts.
 *  - Disabling a user changes nothing else here: refusing a disabled user's
 *    requests (CH_EUSER_DISABLED) is the gateway's job.
 *  - Membership does not require a user record (members may live on other shards).
 *    The per-user conversation index (clog_user_convs_foreach) follows CREATE,
 *    ADD_MEMBER, REMOVE_MEMBER and LEAVE; it is derived and rebuilt on restore.
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
    ch_map_init(&c->users);
    ch_map_init(&c->user_convs);
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
    clog__users_free_all(&c->users);
    clog__uconv_free_all(&c->user_convs);
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

static struct ch_slice member_user(const struct clog_member_rec *m)
{
    struct ch_slice u = {(const uint8_t *)m->user, m->user_len};
    return u;
}

/* ---- users ------------------------------------------------------------------------ */

static struct ch_slice blob_slice(const struct clog_blob *b)
{
    struct ch_slice s = {b->ptr, b->len};
    return s;
}

/* A copy of s (NULL pointer when empty); 0 or CH_ENOMEM. */
static int blob_copy(struct clog_blob *b, struct ch_slice s)
{
    b->ptr = NULL;
    b->len = 0;
    if (s.len == 0)
        return 0;
    b->ptr = malloc(s.len);
    if (b->ptr == NULL)
        return CH_ENOMEM;
    memcpy(b->ptr, s.ptr, s.len);
    b->len = (uint32_t)s.len;
    return 0;
}

struct clog_user_rec *clog__user_new(struct ch_slice user,
                                     struct ch_slice password_record,
                                     struct ch_slice display_name, struct ch_slice status,
                                     struct ch_slice settings)
{
    struct clog_user_rec *u = calloc(1, sizeof *u + user.len);
    if (u == NULL)
        return NULL;
    u->user_len = (uint16_t)user.len;
    memcpy(u->user, user.ptr, user.len);
    if (blob_copy(&u->password_record, password_record) != 0 ||
        blob_copy(&u->display_name, display_name) != 0 ||
        blob_copy(&u->status, status) != 0 || blob_copy(&u->settings, settings) != 0) {
        clog__user_free(u);
        return NULL;
    }
    return u;
}

void clog__user_free(struct clog_user_rec *u)
{
    if (u == NULL)
        return;
    free(u->password_record.ptr);
    free(u->display_name.ptr);
    free(u->status.ptr);
    free(u->settings.ptr);
    free(u);
}

void clog__users_free_all(struct ch_map *users)
{
    size_t it = 0;
    const struct ch_map_slot *slot;
    while (ch_map_next(users, &it, &slot))
        clog__user_free(slot->val);
    ch_map_free(users);
}

static struct clog_user_rec *user_find(const struct clog *c, struct ch_slice user)
{
    return ch_map_get(&c->users, user.ptr, user.len);
}

/* Ascending byte order of user id; a prefix sorts first. */
static int cmp_user(const void *a, const void *b)
{
    const struct clog_user_rec *x = *(const struct clog_user_rec *const *)a;
    const struct clog_user_rec *y = *(const struct clog_user_rec *const *)b;
    size_t n = x->user_len < y->user_len ? x->user_len : y->user_len;
    int r = memcmp(x->user, y->user, n);
    if (r != 0)
        return r;
    return (x->user_len > y->user_len) - (x->user_len < y->user_len);
}

struct clog_user_rec **clog__sorted_users(const struct ch_map *users, size_t *n, int *oom)
{
    *n = 0;
    *oom = 0;
    if (users->count == 0)
        return NULL;
    struct clog_user_rec **v = malloc(users->count * sizeof *v);
    if (v == NULL) {
        *oom = 1;
        return NULL;
    }
    size_t it = 0;
    const struct ch_map_slot *slot;
    while (ch_map_next(users, &it, &slot))
        v[(*n)++] = slot->val;
    qsort(v, *n, sizeof *v, cmp_user);
    return v;
}

/* ---- per-user conversation index -------------------------------------------------- */

static struct clog_user_convs *uconv_get(const struct ch_map *index, struct ch_slice user)
{
    return ch_map_get(index, user.ptr, user.len);
}

/* Position of the first id >= conv. */
static uint32_t uconv_lower_bound(const struct clog_user_convs *e, uint64_t conv)
{
    uint32_t lo = 0, hi = e->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (e->ids[mid] < conv)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void uconv_drop(struct ch_map *index, struct clog_user_convs *e)
{
    ch_map_del(index, e->user, e->user_len);
    free(e->ids);
    free(e);
}

int clog__uconv_reserve(struct ch_map *index, struct ch_slice user)
{
    struct clog_user_convs *e = uconv_get(index, user);
    if (e == NULL) {
        e = malloc(sizeof *e + user.len);
        if (e == NULL)
            return CH_ENOMEM;
        e->ids = NULL;
        e->n = 0;
        e->cap = 0;
        e->user_len = (uint16_t)user.len;
        memcpy(e->user, user.ptr, user.len);
        if (ch_map_put(index, e->user, user.len, e) != 0) {
            free(e);
            return CH_ENOMEM;
        }
    }
    if (e->n < e->cap)
        return 0;
    if (e->cap > UINT32_MAX / 2) /* cannot happen: fewer conversations than that */
        return CH_ENOMEM;
    uint32_t cap = e->cap ? e->cap * 2 : 2;
    uint64_t *ids = realloc(e->ids, (size_t)cap * sizeof *ids);
    if (ids == NULL) {
        if (e->n == 0)
            uconv_drop(index, e);
        return CH_ENOMEM;
    }
    e->ids = ids;
    e->cap = cap;
    return 0;
}

void clog__uconv_insert(struct ch_map *index, struct ch_slice user, uint64_t conv)
{
    struct clog_user_convs *e = uconv_get(index, user);
    if (e == NULL || e->n == e->cap) /* no reservation: a bug, never overflow */
        return;
    uint32_t at = uconv_lower_bound(e, conv);
    if (at < e->n && e->ids[at] == conv)
        return;
    memmove(e->ids + at + 1, e->ids + at, (size_t)(e->n - at) * sizeof *e->ids);
    e->ids[at] = conv;
    e->n++;
}

void clog__uconv_release(struct ch_map *index, struct ch_slice user)
{
    struct clog_user_convs *e = uconv_get(index, user);
    if (e != NULL && e->n == 0)
        uconv_drop(index, e);
}

void clog__uconv_remove(struct ch_map *index, struct ch_slice user, uint64_t conv)
{
    struct clog_user_convs *e = uconv_get(index, user);
    if (e == NULL)
        return;
    uint32_t at = uconv_lower_bound(e, conv);
    if (at == e->n || e->ids[at] != conv)
        return;
    memmove(e->ids + at, e->ids + at + 1, (size_t)(e->n - at - 1) * sizeof *e->ids);
    e->n--;
    if (e->n == 0) {
        uconv_drop(index, e);
        return;
    }
    /* give memory back after a user left most of their conversations */
    if (e->cap >= 16 && e->n <= e->cap / 4) {
        uint64_t *ids = realloc(e->ids, (size_t)(e->cap / 2) * sizeof *ids);
        if (ids != NULL) {
            e->ids = ids;
            e->cap /= 2;
        }
    }
}

void clog__uconv_free_all(struct ch_map *index)
{
    size_t it = 0;
    const struct ch_map_slot *slot;
    while (ch_map_next(index, &it, &slot)) {
        struct clog_user_convs *e = slot->val;
        free(e->ids);
        free(e);
    }
    ch_map_free(index);
}

int clog__uconv_add_conv(struct ch_map *index, const struct clog_conv *cv)
{
    for (uint32_t i = 0; i < cv->order_len; i++) {
        if (cv->order[i] == NULL)
            continue;
        struct ch_slice u = member_user(cv->order[i]);
        if (clog__uconv_reserve(index, u) != 0)
            return CH_ENOMEM;
        clog__uconv_insert(index, u, cv->id);
    }
    return 0;
}

/* ---- idempotency index ------------------------------------------------------------ */

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
        /* Idempotent: a re-create by the creator, and for a direct conversation a
         * create by its other member (gateways derive a direct conversation's id
         * from the pair, so both sides name the same one). */
        struct clog_event first;
        if (existing->kind == cmd->kind && decode_at(existing, 1, &first) == 0 &&
            (ch_slice_eq(first.actor, cmd->actor) ||
             (cmd->kind == CLOG_DIRECT && member_find(existing, cmd->actor) != NULL))) {
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
    /* room in every member's conversation index first, so that emitting the event
     * stays the last step that can fail (the members are distinct users) */
    uint32_t reserved = 0;
    while (reserved < cv->order_len &&
           clog__uconv_reserve(&c->user_convs, member_user(cv->order[reserved])) == 0)
        reserved++;
    struct clog_event ev;
    event_init(&ev, CLOG_EV_CREATED, cv, cmd, ts);
    ev.kind = cmd->kind;
    ev.body = cmd->name;
    ev.members.ptr = mb->data;
    ev.members.len = mb->len;
    rv = reserved < cv->order_len ? CH_ENOMEM : emit(c, cv, &ev, 0, out, 0);
    if (rv != 0) {
        for (uint32_t i = 0; i < reserved; i++)
            clog__uconv_release(&c->user_convs, member_user(cv->order[i]));
        ch_map_del(&c->convs, &cv->id, sizeof cv->id);
        clog__conv_free(cv);
        return rv;
    }
    for (uint32_t i = 0; i < cv->order_len; i++)
        clog__uconv_insert(&c->user_convs, member_user(cv->order[i]), cv->id);
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

/* ---- user ops --------------------------------------------------------------------- */

static int apply_user_create(struct clog *c, const struct clog_cmd *cmd, uint64_t ts,
                             struct clog_result *res)
{
    if (cmd->body.len == 0)
        return CH_EINVAL;
    if (cmd->body.len > CLOG_MAX_PASSWORD_RECORD || cmd->name.len > CLOG_MAX_DISPLAY_NAME)
        return CH_ETOOLARGE;
    const struct clog_user_rec *existing = user_find(c, cmd->actor);
    if (existing != NULL) {
        if (!ch_slice_eq(blob_slice(&existing->password_record), cmd->body))
            return CH_EEXISTS;
        res->dup = 1;
        res->ts = existing->created_ts;
        return 0;
    }
    struct ch_slice none = {NULL, 0};
    struct clog_user_rec *u =
        clog__user_new(cmd->actor, cmd->body, cmd->name, none, none);
    if (u == NULL)
        return CH_ENOMEM;
    u->created_ts = ts;
    if (ch_map_put(&c->users, u->user, u->user_len, u) != 0) {
        clog__user_free(u);
        return CH_ENOMEM;
    }
    res->ts = ts;
    return 0;
}

/* Replaces a blob field unless it already holds value (then dup).  0 or CH_ENOMEM. */
static int set_blob(struct clog_blob *field, struct ch_slice value,
                    struct clog_result *res)
{
    if (ch_slice_eq(blob_slice(field), value)) {
        res->dup = 1;
        return 0;
    }
    struct clog_blob copy;
    if (blob_copy(&copy, value) != 0)
        return CH_ENOMEM;
    free(field->ptr);
    *field = copy;
    return 0;
}

static int apply_user_update(struct clog *c, const struct clog_cmd *cmd, uint64_t ts,
                             struct clog_result *res, struct clog_output *out)
{
    struct ch_slice value = cmd->body;
    size_t min = 0, max = 0;
    switch (cmd->kind) {
    case CLOG_USER_DISPLAY_NAME:
        value = cmd->name;
        max = CLOG_MAX_DISPLAY_NAME;
        break;
    case CLOG_USER_STATUS:
        max = CLOG_MAX_STATUS;
        break;
    case CLOG_USER_SETTINGS:
        max = CLOG_MAX_SETTINGS;
        break;
    case CLOG_USER_PASSWORD:
        min = 1;
        max = CLOG_MAX_PASSWORD_RECORD;
        break;
    case CLOG_USER_DISABLED:
        if (cmd->ref_seq > 1)
            return CH_EINVAL;
        break;
    case CLOG_USER_LAST_SEEN:
        break;
    default:
        return CH_EINVAL;
    }
    if (max != 0) {
        if (value.len < min)
            return CH_EINVAL;
        if (value.len > max)
            return CH_ETOOLARGE;
    }
    struct clog_user_rec *u = user_find(c, cmd->actor);
    if (u == NULL)
        return CH_ENOUSER;
    res->ts = ts;
    switch (cmd->kind) {
    case CLOG_USER_DISPLAY_NAME:
        return set_blob(&u->display_name, value, res);
    case CLOG_USER_STATUS:
        return set_blob(&u->status, value, res);
    case CLOG_USER_SETTINGS:
        return set_blob(&u->settings, value, res);
    case CLOG_USER_PASSWORD:
        return set_blob(&u->password_record, value, res);
    case CLOG_USER_DISABLED:
        if (u->disabled == cmd->ref_seq) {
            res->dup = 1;
            return 0;
        }
        if (cmd->ref_seq == 1) {
            /* tell the gateways, through the stream only: they close its sessions */
            struct clog_event ev;
            memset(&ev, 0, sizeof ev);
            ev.type = CLOG_EV_USER_DISABLED;
            ev.ts = ts;
            ev.actor = cmd->actor;
            ch_wbuf_reset(&c->tmp);
            clog_event_encode(&c->tmp, &ev);
            size_t before = out->events.len;
            ch_put_raw(&out->events, c->tmp.data, c->tmp.len);
            if (ch_wbuf_error(&c->tmp) || ch_wbuf_error(&out->events)) {
                out->events.len = before;
                return CH_ENOMEM;
            }
            out->n_events++;
        }
        u->disabled = (uint8_t)cmd->ref_seq;
        return 0;
    default: /* CLOG_USER_LAST_SEEN */
        if (cmd->ref_seq <= u->last_seen)
            res->dup = 1;
        else
            u->last_seen = cmd->ref_seq;
        return 0;
    }
}

/* ---- dispatch --------------------------------------------------------------------- */

static int apply_cmd(struct clog *c, const struct clog_cmd *cmd, uint64_t ts,
                     struct clog_result *res, struct clog_output *out)
{
    if (cmd->op == CLOG_OP_USER_CREATE || cmd->op == CLOG_OP_USER_UPDATE) {
        if (cmd->conv != 0 || !valid_user(cmd->actor))
            return CH_EINVAL;
        return cmd->op == CLOG_OP_USER_CREATE ? apply_user_create(c, cmd, ts, res)
                                              : apply_user_update(c, cmd, ts, res, out);
    }
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
        if (clog__uconv_reserve(&c->user_convs, cmd->target) != 0)
            return CH_ENOMEM;
        if (clog__member_add(cv, cmd->target, role, NULL) != 0) {
            clog__uconv_release(&c->user_convs, cmd->target);
            return CH_ENOMEM;
        }
        event_init(&ev, CLOG_EV_MEMBER_ADDED, cv, cmd, ts);
        ev.target = cmd->target;
        ev.kind = role;
        rv = emit(c, cv, &ev, 0, out, 0);
        if (rv != 0) {
            member_remove(cv, member_find(cv, cmd->target));
            clog__uconv_release(&c->user_convs, cmd->target);
            return rv;
        }
        clog__uconv_insert(&c->user_convs, cmd->target, cv->id);
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
        clog__uconv_remove(&c->user_convs, cmd->target, cv->id);
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
        clog__uconv_remove(&c->user_convs, cmd->actor, cv->id);
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

/* ---- reads ------------------------------------------------------------------------ */

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

int clog_user_get(const struct clog *c, struct ch_slice user, struct clog_user *out)
{
    const struct clog_user_rec *u = user_find(c, user);
    if (u == NULL)
        return CH_ENOUSER;
    memset(out, 0, sizeof *out);
    out->user.ptr = (const uint8_t *)u->user;
    out->user.len = u->user_len;
    out->password_record = blob_slice(&u->password_record);
    out->display_name = u->display_name.len ? blob_slice(&u->display_name) : out->user;
    out->status = blob_slice(&u->status);
    out->settings = blob_slice(&u->settings);
    out->created_ts = u->created_ts;
    out->last_seen = u->last_seen;
    out->disabled = u->disabled;
    return 0;
}

int clog_user_convs_foreach(const struct clog *c, struct ch_slice user,
                            int (*fn)(void *arg, uint64_t conv), void *arg)
{
    const struct clog_user_convs *e = uconv_get(&c->user_convs, user);
    if (e == NULL)
        return 0;
    for (uint32_t i = 0; i < e->n; i++) {
        int rv = fn(arg, e->ids[i]);
        if (rv != 0)
            return rv;
    }
    return 0;
}

void clog_stats(const struct clog *c, struct clog_stats *st)
{
    st->conversations = c->convs.count;
    st->users = c->users.count;
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
    /* users, in id order; with none the digest is what it was before users existed */
    size_t n_users;
    int users_oom;
    struct clog_user_rec **users = clog__sorted_users(&c->users, &n_users, &users_oom);
    for (size_t i = 0; i < n_users; i++) {
        const struct clog_user_rec *u = users[i];
        uint64_t fixed[4] = {u->user_len, u->created_ts, u->last_seen, u->disabled};
        h = ch_hash64(h, fixed, sizeof fixed);
        h = ch_hash64(h, u->user, u->user_len);
        const struct clog_blob *fields[4] = {&u->password_record, &u->display_name,
                                             &u->status, &u->settings};
        for (int k = 0; k < 4; k++) {
            uint64_t len = fields[k]->len;
            h = ch_hash64(h, &len, sizeof len);
            h = ch_hash64(h, fields[k]->ptr, fields[k]->len);
        }
    }
    free(users);
    return ch_mix64(h) ^ (oom || users_oom ? 0xdeadull : 0);
}
