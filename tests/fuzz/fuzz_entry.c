/* Fuzz target: Raft entry decoding, command decoding and apply to a live state. */
#include <stdint.h>
#include <stdlib.h>

#include "../../src/raft-log/clog_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Invariants of the derived per-user conversation index, checked after every entry:
 * every member of every conversation finds it in their index, every id in a
 * member's index is a conversation they belong to, ids ascend, the index holds
 * no more ids than there are memberships (so nobody keeps a stale one; this peeks
 * at the internal index), and a restored copy of the state reports the same.
 */
struct index_check {
    struct clog *c;
    struct clog *copy;
    struct ch_slice user;
    uint64_t conv;
    uint64_t prev;
    int found;
    uint64_t memberships;
};

static int index_entry(void *arg, uint64_t conv)
{
    struct index_check *ic = arg;
    struct clog_member m;
    if (conv <= ic->prev || clog_member_get(ic->c, conv, ic->user, &m) != 0)
        abort();
    ic->prev = conv;
    if (conv == ic->conv)
        ic->found = 1;
    return 0;
}

static int count_entry(void *arg, uint64_t conv)
{
    struct index_check *ic = arg;
    struct clog_member m;
    if (clog_member_get(ic->c, conv, ic->user, &m) != 0)
        abort();
    ic->found++;
    return 0;
}

static int index_member(void *arg, const struct clog_member *m)
{
    struct index_check *ic = arg;
    ic->user = m->user;
    ic->prev = 0;
    ic->found = 0;
    clog_user_convs_foreach(ic->c, m->user, index_entry, ic);
    if (!ic->found)
        abort();
    /* the restored copy lists as many conversations, each one of this user's */
    struct index_check count = *ic;
    count.found = 0;
    clog_user_convs_foreach(ic->c, m->user, count_entry, &count);
    int live = count.found;
    count.found = 0;
    clog_user_convs_foreach(ic->copy, m->user, count_entry, &count);
    if (count.found != live)
        abort();
    return 0;
}

static int index_conv(void *arg, uint64_t conv)
{
    struct index_check *ic = arg;
    struct clog_conv_info info;
    if (clog_conv_info(ic->c, conv, &info) != 0)
        abort();
    ic->memberships += info.n_members;
    ic->conv = conv;
    return clog_members_foreach(ic->c, conv, index_member, ic);
}

static void check_state(struct clog *c)
{
    uint8_t *snap;
    size_t len;
    struct clog *copy;
    if (clog_snapshot(c, malloc, &snap, &len) != 0 || clog_create(NULL, &copy) != 0)
        abort();
    if (clog_restore(copy, snap, len) != 0 || clog_digest(copy) != clog_digest(c))
        abort();
    struct clog_stats a, b;
    clog_stats(c, &a);
    clog_stats(copy, &b);
    if (a.users != b.users || a.conversations != b.conversations)
        abort();
    struct index_check ic = {.c = c, .copy = copy};
    if (clog_convs_foreach(c, index_conv, &ic) != 0)
        abort();
    const struct clog *views[2] = {c, copy};
    for (int k = 0; k < 2; k++) {
        uint64_t ids = 0;
        size_t it = 0;
        const struct ch_map_slot *slot;
        while (ch_map_next(&views[k]->user_convs, &it, &slot))
            ids += ((const struct clog_user_convs *)slot->val)->n;
        if (ids != ic.memberships)
            abort();
    }
    free(snap);
    clog_destroy(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct clog *c;
    static struct clog_output out;
    static unsigned runs;
    if (runs == 0)
        clog_output_init(&out); /* static: reachable, reused, never leaked */
    if (runs++ % 1000 == 0) { /* bounded memory: a fresh state now and then */
        clog_destroy(c);
        struct clog_limits l;
        clog_limits_default(&l);
        l.max_members = 64;
        if (clog_create(&l, &c) != 0)
            abort();
    }
    int rv = clog_apply(c, data, size, &out);
    if (rv == 0) {
        /* every result and event produced must itself be well formed */
        struct ch_rbuf r;
        ch_rbuf_init(&r, out.events.data, out.events.len);
        for (size_t i = 0; i < out.n_events; i++) {
            struct clog_event ev;
            if (clog_event_decode(&r, &ev) != 0)
                abort();
        }
        if (r.left != 0)
            abort();
        /* user ops (conv 0) never produce a seq */
        for (size_t i = 0; i < out.n_results; i++)
            if (out.results[i].conv == 0 && out.results[i].seq != 0)
                abort();
        check_state(c);
    }
    return 0;
}
