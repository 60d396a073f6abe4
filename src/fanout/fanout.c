/*
 * Fanout index and delivery rule (see fanout.h).
 *
 * Three maps: connections by id, conversations by id (only those some local
 * connection follows) and users by name (only those with a local connection).
 * A `follow` joins one connection to one conversation and sits in both their
 * arrays (swap-removal keeps them dense), so an event costs one lookup plus one
 * step per follower, and closing a connection costs one step per follow.
 */
#include "fanout.h"

#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "../common/hash.h"
#include "../gateway/wire.h"
#include "../raft-log/clog_cmd.h"

struct fconn;
struct fconv;

struct follow {
    struct fconn *conn;
    struct fconv *conv;
    uint64_t pushed;  /* last seq handed to the connection */
    uint64_t target;  /* highest seq known to exist (stream or read) */
    uint32_t conv_at; /* index in conv->v */
    uint32_t conn_at; /* index in conn->v */
    uint8_t fetching; /* a catch-up read is outstanding */
    uint8_t failed;   /* the last read failed: retry on fan_refetch */
    uint8_t ended;    /* membership ended: remove after the current pass */
    uint64_t fetch_after; /* the cursor the outstanding read started from */
    uint8_t reread;       /* read once more when the outstanding read returns */
    /* Created by a join seen while the connection's session read of this shard
     * was still out: nothing is pushed until that read settles it. */
    uint8_t tentative;
    uint8_t paused;       /* catch-up waits for room in the connection's queue */
    uint32_t shard;       /* of the join that created it (tentative follows) */
    uint64_t join_index;  /* the Raft index of that join */
};

struct fconv {
    uint64_t id; /* map key */
    struct follow **v;
    uint32_t n, cap;
};

struct fuser {
    struct fconn **conns;
    uint32_t n, cap;
    uint16_t len;
    char name[]; /* map key */
};

struct fconn {
    uint64_t id; /* map key */
    struct fuser *user;
    struct follow **v;
    uint32_t n, cap;
    struct ch_map by_conv; /* conv id (key in fconv) -> follow */
    uint8_t dead; /* 1 overflowed, 2 removed: freed after the current pass */
    /* Session start (fan_conn_loading): per shard, the Raft index of the state the
     * session's membership read saw (0: that read is still out).  Joins at or
     * below it are already reflected in the follows the read installed. */
    uint64_t *read_at;
    uint32_t n_shards;
    uint32_t n_paused; /* follows with a paused catch-up */
};

struct fan {
    struct fan_callbacks cb;
    uint32_t headroom;
    struct ch_map conns, convs, users;
    struct ch_wbuf scratch;
    struct fan_stats st;
    struct fconn **dead; /* overflowed during a pass */
    uint32_t n_dead, cap_dead;
    int in_pass;
};

/* ---- messages ---------------------------------------------------------------------- */

struct fan_msg *fan_msg_new(uint32_t headroom, const void *payload, size_t len)
{
    if (len > UINT32_MAX - headroom)
        return NULL;
    struct fan_msg *m = malloc(sizeof *m + headroom + len);
    if (m == NULL)
        return NULL;
    m->refs = 1;
    m->len = (uint32_t)len;
    m->headroom = headroom;
    memcpy(m->data + headroom, payload, len);
    return m;
}

void fan_msg_unref(struct fan_msg *m)
{
    if (m != NULL && --m->refs == 0)
        free(m);
}

/* ---- small arrays ------------------------------------------------------------------- */

static int grow(void **v, uint32_t *cap, uint32_t n, size_t elem)
{
    if (n < *cap)
        return 0;
    uint32_t c = *cap ? *cap * 2 : 4;
    void *p = realloc(*v, (size_t)c * elem);
    if (p == NULL)
        return CH_ENOMEM;
    *v = p;
    *cap = c;
    return 0;
}

/* ---- lifetime ---------------------------------------------------------------------- */

int fan_create(const struct fan_callbacks *cb, uint32_t headroom, struct fan **out)
{
    struct fan *f = calloc(1, sizeof *f);
    if (f == NULL)
        return CH_ENOMEM;
    f->cb = *cb;
    f->headroom = headroom;
    ch_map_init(&f->conns);
    ch_map_init(&f->convs);
    ch_map_init(&f->users);
    ch_wbuf_init(&f->scratch);
    *out = f;
    return 0;
}

static void conn_free(struct fan *f, struct fconn *c);

void fan_destroy(struct fan *f)
{
    if (f == NULL)
        return;
    size_t it = 0;
    const struct ch_map_slot *slot;
    /* Collect first: removal changes the maps. */
    while (f->conns.count > 0) {
        it = 0;
        if (!ch_map_next(&f->conns, &it, &slot))
            break;
        conn_free(f, slot->val);
    }
    ch_map_free(&f->conns);
    ch_map_free(&f->convs);
    ch_map_free(&f->users);
    ch_wbuf_free(&f->scratch);
    free(f->dead);
    free(f);
}

/* ---- follows ------------------------------------------------------------------------ */

static struct fconv *conv_get(struct fan *f, uint64_t id, int create)
{
    struct fconv *cv = ch_map_get(&f->convs, &id, sizeof id);
    if (cv != NULL || !create)
        return cv;
    cv = calloc(1, sizeof *cv);
    if (cv == NULL)
        return NULL;
    cv->id = id;
    if (ch_map_put(&f->convs, &cv->id, sizeof cv->id, cv) != 0) {
        free(cv);
        return NULL;
    }
    return cv;
}

static int has_room(const struct fan *f, const struct fconn *c)
{
    return f->cb.room == NULL || f->cb.room(f->cb.data, c->id);
}

static void set_paused(struct follow *fw, int on)
{
    if (fw->paused == on)
        return;
    fw->paused = (uint8_t)on;
    if (on)
        fw->conn->n_paused++;
    else
        fw->conn->n_paused--;
}

static void follow_remove(struct fan *f, struct follow *fw)
{
    struct fconv *cv = fw->conv;
    struct fconn *c = fw->conn;
    set_paused(fw, 0);
    cv->v[fw->conv_at] = cv->v[--cv->n];
    cv->v[fw->conv_at]->conv_at = fw->conv_at;
    c->v[fw->conn_at] = c->v[--c->n];
    c->v[fw->conn_at]->conn_at = fw->conn_at;
    ch_map_del(&c->by_conv, &cv->id, sizeof cv->id);
    f->st.follows--;
    free(fw);
    if (cv->n == 0) {
        ch_map_del(&f->convs, &cv->id, sizeof cv->id);
        free(cv->v);
        free(cv);
    }
}

static struct follow *follow_get(const struct fconn *c, uint64_t conv)
{
    return ch_map_get(&c->by_conv, &conv, sizeof conv);
}

static void start_fetch(struct fan *f, struct follow *fw)
{
    if (fw->fetching || fw->ended || fw->tentative || fw->conn->dead)
        return;
    if (!has_room(f, fw->conn)) {
        set_paused(fw, 1);
        return;
    }
    set_paused(fw, 0);
    fw->fetching = 1;
    fw->failed = 0;
    fw->fetch_after = fw->pushed;
    f->st.fetches++;
    f->cb.fetch(f->cb.data, fw->conn->id, fw->conv->id, fw->pushed);
}

static int follow_add(struct fan *f, struct fconn *c, uint64_t conv, uint64_t pushed,
                      struct follow **out)
{
    struct follow *fw = follow_get(c, conv);
    if (fw != NULL) {
        *out = fw;
        return 0;
    }
    struct fconv *cv = conv_get(f, conv, 1);
    if (cv == NULL)
        return CH_ENOMEM;
    fw = calloc(1, sizeof *fw);
    if (fw == NULL || grow((void **)&cv->v, &cv->cap, cv->n, sizeof *cv->v) != 0 ||
        grow((void **)&c->v, &c->cap, c->n, sizeof *c->v) != 0 ||
        ch_map_put(&c->by_conv, &cv->id, sizeof cv->id, fw) != 0) {
        free(fw);
        if (cv->n == 0) {
            ch_map_del(&f->convs, &cv->id, sizeof cv->id);
            free(cv->v);
            free(cv);
        }
        return CH_ENOMEM;
    }
    fw->conn = c;
    fw->conv = cv;
    fw->pushed = fw->target = pushed;
    fw->conv_at = cv->n;
    cv->v[cv->n++] = fw;
    fw->conn_at = c->n;
    c->v[c->n++] = fw;
    f->st.follows++;
    *out = fw;
    return 0;
}

/* ---- connections and users ------------------------------------------------------------ */

static struct fconn *conn_get(const struct fan *f, uint64_t id)
{
    return ch_map_get(&f->conns, &id, sizeof id);
}

int fan_conn_add(struct fan *f, uint64_t conn, const void *user, size_t user_len)
{
    if (conn_get(f, conn) != NULL)
        return CH_EEXISTS;
    if (user_len == 0 || user_len > UINT16_MAX)
        return CH_EINVAL;
    struct fconn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return CH_ENOMEM;
    c->id = conn;
    ch_map_init(&c->by_conv);
    struct fuser *u = ch_map_get(&f->users, user, user_len);
    int fresh = 0;
    if (u == NULL) {
        u = calloc(1, sizeof *u + user_len);
        if (u == NULL)
            goto oom;
        u->len = (uint16_t)user_len;
        memcpy(u->name, user, user_len);
        if (ch_map_put(&f->users, u->name, u->len, u) != 0) {
            free(u);
            goto oom;
        }
        fresh = 1;
    }
    if (grow((void **)&u->conns, &u->cap, u->n, sizeof *u->conns) != 0 ||
        ch_map_put(&f->conns, &c->id, sizeof c->id, c) != 0) {
        if (fresh) {
            ch_map_del(&f->users, u->name, u->len);
            free(u->conns);
            free(u);
        }
        goto oom;
    }
    u->conns[u->n++] = c;
    c->user = u;
    f->st.conns++;
    if (fresh)
        f->st.users++;
    return 0;
oom:
    ch_map_free(&c->by_conv);
    free(c);
    return CH_ENOMEM;
}

static void conn_free(struct fan *f, struct fconn *c)
{
    while (c->n > 0)
        follow_remove(f, c->v[c->n - 1]);
    free(c->v);
    free(c->read_at);
    ch_map_free(&c->by_conv);
    struct fuser *u = c->user;
    for (uint32_t i = 0; i < u->n; i++) {
        if (u->conns[i] == c) {
            u->conns[i] = u->conns[--u->n];
            break;
        }
    }
    if (u->n == 0) {
        ch_map_del(&f->users, u->name, u->len);
        free(u->conns);
        free(u);
        f->st.users--;
    }
    ch_map_del(&f->conns, &c->id, sizeof c->id);
    f->st.conns--;
    free(c);
}

void fan_conn_remove(struct fan *f, uint64_t conn)
{
    struct fconn *c = conn_get(f, conn);
    if (c == NULL)
        return;
    if (f->in_pass) {
        /* during a delivery pass the arrays being walked must stay intact */
        if (!c->dead) {
            if (grow((void **)&f->dead, &f->cap_dead, f->n_dead, sizeof *f->dead) == 0)
                f->dead[f->n_dead++] = c;
        }
        c->dead = 2; /* removed by the shell: no overflow callback */
        return;
    }
    conn_free(f, c);
}

/* Ends a pass: frees what overflowed or ended during it. */
static void pass_end(struct fan *f, struct fconv *cv)
{
    if (cv != NULL) {
        for (uint32_t i = 0; i < cv->n;) {
            struct follow *fw = cv->v[i];
            if (fw->ended && !fw->conn->dead) {
                int last = cv->n == 1;
                follow_remove(f, fw);
                if (last)
                    break; /* the conversation went with its last follow */
                continue;
            }
            i++;
        }
    }
    /* Still "in a pass" while the callbacks run: a removal they cause is queued
     * here rather than freeing a connection this loop has yet to reach. */
    f->in_pass = 1;
    while (f->n_dead > 0) {
        struct fconn *c = f->dead[--f->n_dead];
        uint64_t id = c->id;
        int overflow = c->dead == 1;
        conn_free(f, c);
        if (overflow) {
            f->st.overflows++;
            if (f->cb.overflow)
                f->cb.overflow(f->cb.data, id);
        }
    }
    f->in_pass = 0;
}

/* ---- delivery ----------------------------------------------------------------------- */

static struct fan_msg *encode(struct fan *f, const struct clog_event *ev)
{
    ch_wbuf_reset(&f->scratch);
    wire_event(&f->scratch, ev, 0);
    if (ch_wbuf_error(&f->scratch))
        return NULL;
    f->st.encodes++;
    return fan_msg_new(f->headroom, f->scratch.data, f->scratch.len);
}

/* Marks a connection for closing at the end of the pass (it resumes by sync). */
static void drop(struct fan *f, struct fconn *c)
{
    if (c->dead)
        return;
    c->dead = 1;
    if (grow((void **)&f->dead, &f->cap_dead, f->n_dead, sizeof *f->dead) == 0)
        f->dead[f->n_dead++] = c;
}

static void push(struct fan *f, struct fconn *c, struct fan_msg *m)
{
    if (c->dead)
        return;
    f->st.pushes++;
    if (f->cb.push(f->cb.data, c->id, m) != 0)
        drop(f, c);
}

/* Does this event end the membership of the follow's user? */
static int ends_membership(const struct follow *fw, const struct clog_event *ev)
{
    struct ch_slice user = {.ptr = (const uint8_t *)fw->conn->user->name,
                            .len = fw->conn->user->len};
    if (ev->type == CLOG_EV_MEMBER_REMOVED)
        return ch_slice_eq(ev->target, user);
    if (ev->type == CLOG_EV_MEMBER_LEFT)
        return ch_slice_eq(ev->actor, user);
    return 0;
}

/*
 * The delivery rule for one follow.  *shared is the event's shared encoding,
 * made on first use.  Returns 0, or CH_ENOMEM when encoding failed.
 */
static int offer(struct fan *f, struct follow *fw, const struct clog_event *ev,
                 struct fan_msg **shared)
{
    if (fw->ended || fw->conn->dead)
        return 0;
    if (fw->tentative) {
        /* not pushed yet: remember how far the conversation went, and whether the
         * membership ended again */
        if (ev->seq > fw->target)
            fw->target = ev->seq;
        if (ends_membership(fw, ev))
            fw->ended = 1;
        return 0;
    }
    if (ev->seq <= fw->pushed) {
        f->st.duplicates++;
        return 0;
    }
    if (ev->seq > fw->target)
        fw->target = ev->seq;
    if (ev->seq != fw->pushed + 1) {
        f->st.gaps++;
        start_fetch(f, fw);
        return 0;
    }
    if (*shared == NULL && (*shared = encode(f, ev)) == NULL)
        return CH_ENOMEM;
    push(f, fw->conn, *shared);
    fw->pushed = ev->seq;
    if (ends_membership(fw, ev))
        fw->ended = 1;
    return 0;
}

/*
 * A CREATED or MEMBER_ADDED naming local users: their connections start following
 * just before this event — unless a connection's session read of the shard saw a
 * state at or past this entry (a replayed entry: the read already installed what
 * membership the user has), and only tentatively while that read is still out.
 */
static void joins(struct fan *f, const struct clog_event *ev, struct ch_slice user,
                  uint32_t shard, uint64_t index)
{
    struct fuser *u = ch_map_get(&f->users, user.ptr, user.len);
    if (u == NULL)
        return;
    for (uint32_t i = 0; i < u->n; i++) {
        struct fconn *c = u->conns[i];
        struct follow *fw;
        if (follow_get(c, ev->conv) != NULL)
            continue;
        int tentative = 0;
        if (c->read_at != NULL && shard < c->n_shards) {
            if (c->read_at[shard] == 0)
                tentative = 1;
            else if (index <= c->read_at[shard])
                continue;
        }
        if (follow_add(f, c, ev->conv, ev->seq - 1, &fw) != 0) {
            drop(f, c); /* cannot track it: better resync than miss events */
            continue;
        }
        if (tentative) {
            fw->tentative = 1;
            fw->shard = shard;
            fw->join_index = index;
        }
    }
}

void fan_event(struct fan *f, const struct clog_event *ev)
{
    fan_event_at(f, ev, 0, UINT64_MAX);
}

void fan_event_at(struct fan *f, const struct clog_event *ev, uint32_t shard, uint64_t index)
{
    f->st.events++;
    if (ev->type == CLOG_EV_CREATED) {
        struct clog_members_iter it;
        uint32_t count;
        struct ch_slice user;
        uint8_t role;
        if (clog_members_open(&it, ev->members, &count) == 0)
            while (clog_members_next(&it, &user, &role) == 1)
                joins(f, ev, user, shard, index);
    } else if (ev->type == CLOG_EV_MEMBER_ADDED) {
        joins(f, ev, ev->target, shard, index);
    }
    struct fconv *cv = conv_get(f, ev->conv, 0);
    if (cv == NULL) {
        pass_end(f, NULL); /* connections dropped by joins() */
        return;
    }
    struct fan_msg *shared = NULL;
    f->in_pass = 1;
    if (ev->seq == 0) {
        /* receipts are outside the sequence: every follower gets them as they come */
        if ((shared = encode(f, ev)) != NULL)
            for (uint32_t i = 0; i < cv->n; i++)
                if (!cv->v[i]->tentative)
                    push(f, cv->v[i]->conn, shared);
    } else {
        for (uint32_t i = 0; i < cv->n; i++)
            if (offer(f, cv->v[i], ev, &shared) != 0)
                break;
    }
    fan_msg_unref(shared);
    pass_end(f, cv);
}

int fan_follow(struct fan *f, uint64_t conn, uint64_t conv, uint64_t pushed,
               uint64_t last_seq, int flags)
{
    struct fconn *c = conn_get(f, conn);
    if (c == NULL || c->dead)
        return CH_ENOTFOUND;
    struct follow *fw = follow_get(c, conv);
    if (fw == NULL) {
        int rv = follow_add(f, c, conv, pushed, &fw);
        if (rv != 0)
            return rv;
    } else if (flags & FAN_RESET) {
        fw->pushed = pushed;
        fw->target = pushed;
        fw->failed = 0;
    }
    if (last_seq > fw->target)
        fw->target = last_seq;
    if (fw->fetching && (flags & FAN_READ))
        fw->reread = 1; /* the outstanding read started from an older cursor */
    else if (fw->target > fw->pushed || (flags & FAN_READ))
        start_fetch(f, fw);
    return 0;
}

int fan_follows(const struct fan *f, uint64_t conn, uint64_t conv)
{
    const struct fconn *c = conn_get(f, conn);
    const struct follow *fw = c ? follow_get(c, conv) : NULL;
    return fw != NULL && !fw->tentative;
}

int fan_conn_loading(struct fan *f, uint64_t conn, uint32_t n_shards)
{
    struct fconn *c = conn_get(f, conn);
    if (c == NULL)
        return CH_ENOTFOUND;
    if (c->read_at != NULL || n_shards == 0)
        return CH_EINVAL;
    c->read_at = calloc(n_shards, sizeof *c->read_at);
    if (c->read_at == NULL)
        return CH_ENOMEM;
    c->n_shards = n_shards;
    return 0;
}

int fan_conn_shard_read(struct fan *f, uint64_t conn, uint32_t shard, uint64_t applied_index,
                        const struct fan_start *convs, size_t n, uint64_t stream_position)
{
    struct fconn *c = conn_get(f, conn);
    if (c == NULL || c->dead)
        return CH_ENOTFOUND;
    if (c->read_at == NULL || shard >= c->n_shards)
        return CH_EINVAL;
    uint64_t at = applied_index ? applied_index : 1;
    c->read_at[shard] = at;
    /* The stream already went past the read's state: events of listed
     * conversations in between were not pushed to this connection. */
    int ahead = stream_position > applied_index;
    for (size_t i = 0; i < n; i++) {
        struct follow *fw = follow_get(c, convs[i].conv);
        if (fw != NULL && fw->tentative) {
            /* the read says the user is a member with the log at last_seq: push
             * from there (what the tentative follow saw beyond it is fetched) */
            fw->tentative = 0;
            fw->ended = 0;
            fw->pushed = convs[i].last_seq;
            if (fw->target < fw->pushed)
                fw->target = fw->pushed;
            if (fw->target > fw->pushed || ahead)
                start_fetch(f, fw);
            continue;
        }
        int rv = fan_follow(f, conn, convs[i].conv, convs[i].last_seq, convs[i].last_seq,
                            ahead ? FAN_READ : 0);
        if (rv != 0)
            return rv;
    }
    /* Tentative follows the read did not confirm: a join the read already saw and
     * a later leave undid, or a replay of an old one, is dropped; a join after the
     * read's state stands, and what it saw since is fetched. */
    for (uint32_t i = 0; i < c->n;) {
        struct follow *fw = c->v[i];
        if (!fw->tentative || fw->shard != shard) {
            i++;
            continue;
        }
        if (fw->join_index <= at || fw->ended) {
            follow_remove(f, fw); /* swaps the last follow into slot i */
            continue;
        }
        fw->tentative = 0;
        if (fw->target > fw->pushed)
            start_fetch(f, fw);
        i++;
    }
    return 0;
}

uint64_t fan_cursor(const struct fan *f, uint64_t conn, uint64_t conv)
{
    const struct fconn *c = conn_get(f, conn);
    const struct follow *fw = c ? follow_get(c, conv) : NULL;
    return fw ? fw->pushed : 0;
}

int fan_behind(const struct fan *f, uint64_t conn, uint64_t conv)
{
    const struct fconn *c = conn_get(f, conn);
    const struct follow *fw = c ? follow_get(c, conv) : NULL;
    return fw != NULL && (fw->fetching || fw->failed || fw->target > fw->pushed);
}

int fan_fetched(struct fan *f, uint64_t conn, uint64_t conv, const uint8_t *records,
                size_t len, uint32_t n, int has_more, uint64_t last_seq)
{
    struct fconn *c = conn_get(f, conn);
    struct follow *fw = c ? follow_get(c, conv) : NULL;
    if (fw == NULL)
        return 1; /* no longer followed: nothing to catch up */
    fw->fetching = 0;
    /* A cursor past the end of the log (a client that synced a seq it cannot have,
     * say from another cluster) would swallow every event up to it: the log, read
     * linearizably, decides where the conversation ends. */
    if (last_seq < fw->pushed)
        fw->pushed = fw->target = last_seq;
    if (last_seq > fw->target)
        fw->target = last_seq;
    struct ch_rbuf r;
    ch_rbuf_init(&r, records, len);
    f->in_pass = 1;
    int paused = 0;
    for (uint32_t i = 0; i < n && !fw->ended && !c->dead; i++) {
        struct clog_event ev;
        if (clog_event_decode(&r, &ev) != 0 || ev.conv != conv)
            break;
        if (ev.seq == fw->pushed + 1 && !has_room(f, c)) {
            paused = 1; /* the rest is read again once the client has read */
            break;
        }
        if (ev.seq > fw->target)
            fw->target = ev.seq;
        if (ev.seq != fw->pushed + 1) {
            if (ev.seq <= fw->pushed)
                f->st.duplicates++;
            continue;
        }
        struct fan_msg *m = encode(f, &ev);
        if (m == NULL)
            break;
        push(f, c, m);
        fan_msg_unref(m);
        fw->pushed = ev.seq;
        if (ends_membership(fw, &ev))
            fw->ended = 1;
    }
    int done = 1;
    if (paused && !fw->ended && !c->dead) {
        if (fw->target <= fw->pushed)
            fw->target = fw->pushed + 1;
        set_paused(fw, 1);
        done = 0;
    } else if (!fw->ended && !c->dead) {
        if (has_more && fw->target <= fw->pushed)
            fw->target = fw->pushed + 1;
        if (fw->reread) {
            fw->reread = 0;
            start_fetch(f, fw);
            done = 0;
        } else if (fw->target > fw->pushed) {
            done = 0;
            if (fw->pushed > fw->fetch_after)
                start_fetch(f, fw); /* progress: read the next page */
            else
                fw->failed = 1; /* no progress: the next refetch sweep retries */
        }
    }
    int ended = fw->ended && !c->dead;
    f->in_pass = 0;
    if (ended)
        follow_remove(f, fw);
    pass_end(f, NULL);
    return done;
}

void fan_resume(struct fan *f, uint64_t conn)
{
    struct fconn *c = conn_get(f, conn);
    if (c == NULL || c->n_paused == 0 || c->dead)
        return;
    for (uint32_t i = 0; i < c->n && c->n_paused > 0 && has_room(f, c); i++)
        if (c->v[i]->paused)
            start_fetch(f, c->v[i]);
}

void fan_fetch_failed(struct fan *f, uint64_t conn, uint64_t conv)
{
    struct fconn *c = conn_get(f, conn);
    struct follow *fw = c ? follow_get(c, conv) : NULL;
    if (fw == NULL)
        return;
    fw->fetching = 0;
    fw->failed = 1;
}

void fan_refetch(struct fan *f, int (*match)(void *arg, uint64_t conv), void *arg)
{
    size_t it = 0;
    const struct ch_map_slot *slot;
    while (ch_map_next(&f->convs, &it, &slot)) {
        struct fconv *cv = slot->val;
        int all = match != NULL && match(arg, cv->id);
        for (uint32_t i = 0; i < cv->n; i++) {
            struct follow *fw = cv->v[i];
            if (fw->fetching || fw->tentative)
                continue;
            if (all || fw->failed || fw->paused)
                start_fetch(f, fw);
        }
    }
}

void fan_conv_conns(struct fan *f, uint64_t conv,
                    void (*fn)(void *arg, uint64_t conn, struct ch_slice user), void *arg)
{
    struct fconv *cv = ch_map_get(&f->convs, &conv, sizeof conv);
    if (cv == NULL)
        return;
    f->in_pass = 1; /* fn may remove connections: defer that to the end */
    for (uint32_t i = 0; i < cv->n; i++) {
        struct fconn *c = cv->v[i]->conn;
        if (c->dead || cv->v[i]->tentative)
            continue;
        fn(arg, c->id,
           (struct ch_slice){.ptr = (const uint8_t *)c->user->name, .len = c->user->len});
    }
    pass_end(f, NULL);
}

void fan_user_conns(struct fan *f, const void *user, size_t len,
                    void (*fn)(void *arg, uint64_t conn), void *arg)
{
    struct fuser *u = ch_map_get(&f->users, user, len);
    if (u == NULL)
        return;
    f->in_pass = 1;
    for (uint32_t i = 0; i < u->n; i++)
        if (!u->conns[i]->dead)
            fn(arg, u->conns[i]->id);
    pass_end(f, NULL);
}

void fan_stats(const struct fan *f, struct fan_stats *st)
{
    *st = f->st;
    st->convs = f->convs.count;
}
