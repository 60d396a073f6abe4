/*
 * Snapshots of the conversation log.
 *
 *   header (32 bytes): u32 magic "CHS1" | u16 version | u16 flags (bit 0: lz4) |
 *                      u64 raw_len | u64 stored_len | u32 crc32c(stored payload) |
 *                      u32 crc32c(the 28 header bytes before it)
 *   raw payload:       u64 applied_entries | u64 applied_commands | u64 n_convs |
 *                      n_convs × conversation (ascending id) |
 *                      u64 n_users | n_users × user (ascending byte order of id)
 *   conversation:      u64 id | u64 last_ts | u64 n_events | u32 n_members |
 *                      n_members × (str16 user, u8 role, u64 delivered, u64 read)
 *                      in join order | u64 arena_len | event records
 *   user:              str16 user | u64 created_ts | u64 last_seen | u8 disabled |
 *                      str16 password_record | str16 display_name | str16 status |
 *                      str16 settings
 *
 * Version 1 is the same without the users section (n_users and the users); it
 * still restores, with no users.  Snapshots are always written as version 2.
 *
 * Restore validates every byte (checksums, then every record: seq contiguous,
 * conversation id, first event CREATED, members valid and unique, users strictly
 * ascending with fields in bounds) while building a complete new state beside the
 * current one, and swaps only on success.  Deletion marks, the idempotency index
 * and the per-user conversation index are derived from the conversations.
 */
#include <lz4.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "clog_internal.h"

#define SNAP_MAGIC 0x31534843u /* "CHS1" */
#define SNAP_VERSION 2
#define SNAP_VERSION_NO_USERS 1 /* oldest version restore accepts */
#define SNAP_USER_MIN_SIZE 29   /* a user record's smallest encoding */
#define SNAP_FLAG_LZ4 1
#define SNAP_HEADER 32
#define SNAP_MAX_RAW (UINT64_C(1) << 40)

static void put_conv(struct ch_wbuf *b, const struct clog_conv *cv)
{
    ch_put_u64(b, cv->id);
    ch_put_u64(b, cv->last_ts);
    ch_put_u64(b, cv->n_events);
    ch_put_u32(b, cv->n_members);
    for (uint32_t i = 0; i < cv->order_len; i++) {
        const struct clog_member_rec *m = cv->order[i];
        if (m == NULL)
            continue;
        struct ch_slice u = {(const uint8_t *)m->user, m->user_len};
        ch_put_str16(b, u);
        ch_put_u8(b, m->role);
        ch_put_u64(b, m->delivered);
        ch_put_u64(b, m->read);
    }
    ch_put_u64(b, cv->arena_len);
    ch_put_raw(b, cv->arena, cv->arena_len);
}

static void put_blob(struct ch_wbuf *b, const struct clog_blob *blob)
{
    struct ch_slice s = {blob->ptr, blob->len};
    ch_put_str16(b, s);
}

static void put_user(struct ch_wbuf *b, const struct clog_user_rec *u)
{
    struct ch_slice id = {(const uint8_t *)u->user, u->user_len};
    ch_put_str16(b, id);
    ch_put_u64(b, u->created_ts);
    ch_put_u64(b, u->last_seen);
    ch_put_u8(b, u->disabled);
    put_blob(b, &u->password_record);
    put_blob(b, &u->display_name);
    put_blob(b, &u->status);
    put_blob(b, &u->settings);
}

int clog_snapshot(const struct clog *c, void *(*alloc)(size_t), uint8_t **out, size_t *len)
{
    size_t n;
    int oom;
    uint64_t *ids = clog__sorted_ids(c, &n, &oom);
    if (oom)
        return CH_ENOMEM;
    size_t n_users;
    struct clog_user_rec **users = clog__sorted_users(&c->users, &n_users, &oom);
    if (oom) {
        free(ids);
        return CH_ENOMEM;
    }
    struct ch_wbuf raw;
    ch_wbuf_init(&raw);
    ch_put_u64(&raw, c->applied_entries);
    ch_put_u64(&raw, c->applied_commands);
    ch_put_u64(&raw, n);
    for (size_t i = 0; i < n; i++)
        put_conv(&raw, clog__conv_get(c, ids[i]));
    free(ids);
    ch_put_u64(&raw, n_users);
    for (size_t i = 0; i < n_users; i++)
        put_user(&raw, users[i]);
    free(users);
    if (ch_wbuf_error(&raw) || raw.len > (size_t)INT32_MAX - 4096) {
        ch_wbuf_free(&raw);
        return CH_ENOMEM;
    }
    int bound = LZ4_compressBound((int)raw.len);
    uint8_t *buf = alloc(SNAP_HEADER + (size_t)bound);
    if (buf == NULL) {
        ch_wbuf_free(&raw);
        return CH_ENOMEM;
    }
    int stored = LZ4_compress_default((const char *)raw.data, (char *)buf + SNAP_HEADER,
                                      (int)raw.len, bound);
    uint16_t flags = SNAP_FLAG_LZ4;
    if (stored <= 0 || (size_t)stored >= raw.len) {
        memcpy(buf + SNAP_HEADER, raw.data, raw.len);
        stored = (int)raw.len;
        flags = 0;
    }
    uint8_t *h = buf;
    ch_store_u32(h, SNAP_MAGIC);
    h[4] = SNAP_VERSION & 0xff;
    h[5] = SNAP_VERSION >> 8;
    h[6] = (uint8_t)flags;
    h[7] = (uint8_t)(flags >> 8);
    ch_store_u32(h + 8, (uint32_t)raw.len);
    ch_store_u32(h + 12, (uint32_t)((uint64_t)raw.len >> 32));
    ch_store_u32(h + 16, (uint32_t)stored);
    ch_store_u32(h + 20, 0);
    ch_store_u32(h + 24, ch_crc32c(0, buf + SNAP_HEADER, (size_t)stored));
    ch_store_u32(h + 28, ch_crc32c(0, h, SNAP_HEADER - 4));
    ch_wbuf_free(&raw);
    *out = buf;
    *len = SNAP_HEADER + (size_t)stored;
    return 0;
}

/* Reads one conversation into a new clog_conv; 0 or an error. */
static int read_conv(struct ch_rbuf *r, const struct clog_limits *limits, uint64_t prev_id,
                     struct clog_conv **out, uint64_t *n_keys)
{
    uint64_t id = ch_get_u64(r);
    uint64_t last_ts = ch_get_u64(r);
    uint64_t n_events = ch_get_u64(r);
    uint32_t n_members = ch_get_u32(r);
    if (r->err || id == 0 || id <= prev_id || n_events == 0 ||
        n_events > limits->max_events || n_members > limits->max_members ||
        n_members > r->left / 20)
        return CH_EMALFORMED;
    struct clog_conv *cv = clog__conv_new(id, 0);
    if (cv == NULL)
        return CH_ENOMEM;
    int rv = 0;
    for (uint32_t i = 0; i < n_members && rv == 0; i++) {
        struct ch_slice user = ch_get_str16(r);
        uint8_t role = ch_get_u8(r);
        uint64_t delivered = ch_get_u64(r);
        uint64_t read = ch_get_u64(r);
        struct clog_member_rec *m;
        if (r->err || user.len == 0 || user.len > CLOG_MAX_USER || role < CLOG_ROLE_OWNER ||
            role > CLOG_ROLE_MEMBER || delivered > n_events || read > n_events ||
            ch_map_get(&cv->members, user.ptr, user.len) != NULL)
            rv = CH_EMALFORMED;
        else if ((rv = clog__member_add(cv, user, role, &m)) == 0) {
            m->delivered = delivered;
            m->read = read;
        }
    }
    uint64_t arena_len = ch_get_u64(r);
    if (rv == 0 && (r->err || arena_len > r->left || arena_len / CLOG_EVENT_MIN_SIZE < n_events))
        rv = CH_EMALFORMED;
    struct ch_slice arena = {NULL, 0};
    if (rv == 0)
        arena = ch_get_raw(r, (size_t)arena_len);
    /* Walk the records: contiguous seqs of this conversation, CREATED first. */
    struct ch_rbuf ar;
    ch_rbuf_init(&ar, arena.ptr, arena.len);
    for (uint64_t seq = 1; rv == 0 && seq <= n_events; seq++) {
        const uint8_t *start = ar.p;
        struct clog_event ev;
        if (clog_event_decode(&ar, &ev) != 0 || ev.conv != id || ev.seq != seq ||
            ev.type == CLOG_EV_RECEIPT || (seq == 1) != (ev.type == CLOG_EV_CREATED) ||
            ev.ts > last_ts) {
            rv = CH_EMALFORMED;
            break;
        }
        if (seq == 1) {
            if (ev.kind != CLOG_DIRECT && ev.kind != CLOG_GROUP) {
                rv = CH_EMALFORMED;
                break;
            }
            cv->kind = ev.kind;
        }
        uint8_t flags = ev.type == CLOG_EV_MESSAGE ? CLOG_MSG_IS_MESSAGE : 0;
        rv = clog__append_record(cv, start, (size_t)(ar.p - start), flags);
        if (rv != 0)
            break;
        if (ev.type == CLOG_EV_DELETED) {
            if (ev.ref_seq == 0 || ev.ref_seq >= seq ||
                !(cv->flags[ev.ref_seq - 1] & CLOG_MSG_IS_MESSAGE)) {
                rv = CH_EMALFORMED;
                break;
            }
            cv->flags[ev.ref_seq - 1] |= CLOG_MSG_DELETED;
        }
        if (ev.client_msg_id.len > 0 &&
            (ev.type == CLOG_EV_MESSAGE || ev.type == CLOG_EV_EDITED ||
             ev.type == CLOG_EV_DELETED || ev.type == CLOG_EV_REACTION)) {
            rv = clog__idem_put(cv, clog__idem_hash(ev.actor, ev.client_msg_id), seq);
            (*n_keys)++;
        }
    }
    if (rv == 0 && (ar.left != 0 || (cv->kind == CLOG_DIRECT && n_members > 2)))
        rv = CH_EMALFORMED;
    if (rv != 0) {
        clog__conv_free(cv);
        return rv;
    }
    cv->last_ts = last_ts;
    *out = cv;
    return 0;
}

/* Is user strictly after prev in ascending byte order? */
static int user_after(const struct clog_user_rec *prev, struct ch_slice user)
{
    if (prev == NULL)
        return 1;
    size_t n = prev->user_len < user.len ? prev->user_len : user.len;
    int r = memcmp(prev->user, user.ptr, n);
    return r < 0 || (r == 0 && prev->user_len < user.len);
}

/* Reads one user into a new record; 0 or an error. */
static int read_user(struct ch_rbuf *r, const struct clog_user_rec *prev,
                     struct clog_user_rec **out)
{
    struct ch_slice user = ch_get_str16(r);
    uint64_t created_ts = ch_get_u64(r);
    uint64_t last_seen = ch_get_u64(r);
    uint8_t disabled = ch_get_u8(r);
    struct ch_slice password_record = ch_get_str16(r);
    struct ch_slice display_name = ch_get_str16(r);
    struct ch_slice status = ch_get_str16(r);
    struct ch_slice settings = ch_get_str16(r);
    if (r->err || user.len == 0 || user.len > CLOG_MAX_USER || !user_after(prev, user) ||
        disabled > 1 || password_record.len == 0 ||
        password_record.len > CLOG_MAX_PASSWORD_RECORD ||
        display_name.len > CLOG_MAX_DISPLAY_NAME || status.len > CLOG_MAX_STATUS ||
        settings.len > CLOG_MAX_SETTINGS)
        return CH_EMALFORMED;
    struct clog_user_rec *u =
        clog__user_new(user, password_record, display_name, status, settings);
    if (u == NULL)
        return CH_ENOMEM;
    u->created_ts = created_ts;
    u->last_seen = last_seen;
    u->disabled = disabled;
    *out = u;
    return 0;
}

int clog_restore(struct clog *c, const void *buf, size_t len)
{
    struct ch_rbuf r;
    ch_rbuf_init(&r, buf, len);
    uint32_t magic = ch_get_u32(&r);
    uint16_t version = ch_get_u16(&r);
    uint16_t flags = ch_get_u16(&r);
    uint64_t raw_len = ch_get_u64(&r);
    uint64_t stored_len = ch_get_u64(&r);
    uint32_t payload_crc = ch_get_u32(&r);
    uint32_t header_crc = ch_get_u32(&r);
    if (r.err || magic != SNAP_MAGIC)
        return CH_EMALFORMED;
    if (header_crc != ch_crc32c(0, buf, SNAP_HEADER - 4))
        return CH_ECORRUPT;
    if (version != SNAP_VERSION && version != SNAP_VERSION_NO_USERS)
        return CH_EVERSION;
    if ((flags & ~SNAP_FLAG_LZ4) != 0 || stored_len != r.left || raw_len > SNAP_MAX_RAW ||
        raw_len > INT32_MAX || (!(flags & SNAP_FLAG_LZ4) && raw_len != stored_len))
        return CH_EMALFORMED;
    if (payload_crc != ch_crc32c(0, r.p, r.left))
        return CH_ECORRUPT;

    const uint8_t *raw = r.p;
    uint8_t *decompressed = NULL;
    if (flags & SNAP_FLAG_LZ4) {
        decompressed = malloc(raw_len ? (size_t)raw_len : 1);
        if (decompressed == NULL)
            return CH_ENOMEM;
        int n = LZ4_decompress_safe((const char *)r.p, (char *)decompressed, (int)r.left,
                                    (int)raw_len);
        if (n < 0 || (uint64_t)n != raw_len) {
            free(decompressed);
            return CH_EMALFORMED;
        }
        raw = decompressed;
    }

    struct ch_rbuf p;
    ch_rbuf_init(&p, raw, (size_t)raw_len);
    uint64_t applied_entries = ch_get_u64(&p);
    uint64_t applied_commands = ch_get_u64(&p);
    uint64_t n_convs = ch_get_u64(&p);
    int rv = p.err || n_convs > p.left / 28 ? CH_EMALFORMED : 0;
    struct ch_map convs, users, user_convs;
    ch_map_init(&convs);
    ch_map_init(&users);
    ch_map_init(&user_convs);
    uint64_t prev = 0, events = 0, bytes = 0, keys = 0;
    for (uint64_t i = 0; i < n_convs && rv == 0; i++) {
        struct clog_conv *cv;
        rv = read_conv(&p, &c->limits, prev, &cv, &keys);
        if (rv != 0)
            break;
        prev = cv->id;
        events += cv->n_events;
        bytes += cv->arena_len;
        if (ch_map_put(&convs, &cv->id, sizeof cv->id, cv) != 0) {
            clog__conv_free(cv);
            rv = CH_ENOMEM;
            break;
        }
        /* ascending conversation ids: each index insert is an append */
        rv = clog__uconv_add_conv(&user_convs, cv);
    }
    if (rv == 0 && version != SNAP_VERSION_NO_USERS) {
        uint64_t n_users = ch_get_u64(&p);
        if (p.err || n_users > p.left / SNAP_USER_MIN_SIZE)
            rv = CH_EMALFORMED;
        const struct clog_user_rec *prev_user = NULL;
        for (uint64_t i = 0; i < n_users && rv == 0; i++) {
            struct clog_user_rec *u;
            rv = read_user(&p, prev_user, &u);
            if (rv != 0)
                break;
            if (ch_map_put(&users, u->user, u->user_len, u) != 0) {
                clog__user_free(u);
                rv = CH_ENOMEM;
                break;
            }
            prev_user = u;
        }
    }
    if (rv == 0 && p.left != 0)
        rv = CH_EMALFORMED;
    free(decompressed);
    if (rv != 0) {
        clog__free_all(&convs);
        clog__users_free_all(&users);
        clog__uconv_free_all(&user_convs);
        return rv;
    }
    clog__free_all(&c->convs);
    clog__users_free_all(&c->users);
    clog__uconv_free_all(&c->user_convs);
    c->convs = convs;
    c->users = users;
    c->user_convs = user_convs;
    c->events = events;
    c->event_bytes = bytes;
    c->idem_keys = keys;
    c->applied_entries = applied_entries;
    c->applied_commands = applied_commands;
    return 0;
}
