/*
 * Fuzz target: client messages as a WebSocket text frame delivers them (src/gateway/wire).
 * Each input is parsed with a small and with the default max_body.  Beyond "no crash",
 * it aborts when a decoded request breaks the header's promises (op in range, the id
 * short valid JSON that equals the message's id, every field within its limits, user
 * ids valid, cursors sorted without repeats), when the error and success replies built
 * from the id and message do not parse, or when wire_put_string of the raw bytes is
 * not a JSON string that gives valid UTF-8 back exactly.  Events built from the input
 * bytes must encode as JSON objects too.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/codec.h"
#include "common/error.h"
#include "gateway/wire.h"
#include "raft-log/clog_cmd.h"
#include "raft-log/clog_event.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c)                                                                        \
    do {                                                                                  \
        if (!(c))                                                                         \
            abort();                                                                      \
    } while (0)

static struct ch_wbuf out;

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF), as JSON requires. */
static int utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp, min;
        if (c >= 0xc2 && c <= 0xdf)
            k = 1, cp = c & 0x1f, min = 0x80;
        else if (c >= 0xe0 && c <= 0xef)
            k = 2, cp = c & 0x0f, min = 0x800;
        else if (c >= 0xf0 && c <= 0xf4)
            k = 3, cp = c & 0x07, min = 0x10000;
        else
            return 0;
        if (n - i <= k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += k + 1;
    }
    return 1;
}

static json_t *load_out(size_t flags)
{
    json_error_t e;
    return json_loadb((const char *)out.data, out.len, flags | JSON_ALLOW_NUL, &e);
}

static int slice_user(struct ch_slice s)
{
    return wire_user_valid((const char *)s.ptr, s.len);
}

static int uses_conv(int op)
{
    switch (op) {
    case WIRE_OP_GET:
    case WIRE_OP_ADD_MEMBER:
    case WIRE_OP_REMOVE_MEMBER:
    case WIRE_OP_LEAVE:
    case WIRE_OP_SEND:
    case WIRE_OP_EDIT:
    case WIRE_OP_DELETE:
    case WIRE_OP_REACT:
    case WIRE_OP_HISTORY:
    case WIRE_OP_RECEIPT:
    case WIRE_OP_TYPING:
        return 1;
    default:
        return 0;
    }
}

/* What a successfully decoded request promises. */
static void check_request(const struct wire_request *r, uint32_t max_body)
{
    REQUIRE(r->op >= 1 && r->op < WIRE_OP__MAX);
    REQUIRE(wire_op_name(r->op) != NULL);
    REQUIRE(r->root != NULL);
    REQUIRE(r->conv <= WIRE_MAX_CONV);
    if (uses_conv(r->op))
        REQUIRE(r->conv >= 1);
    REQUIRE(r->flag <= 1);
    REQUIRE(r->password.len <= WIRE_MAX_PASSWORD);
    REQUIRE(r->token.len <= WIRE_MAX_TOKEN);
    REQUIRE(r->display_name.len <= WIRE_MAX_DISPLAY_NAME);
    REQUIRE(r->status.len <= WIRE_MAX_STATUS);
    REQUIRE(r->name.len <= WIRE_MAX_NAME);
    REQUIRE(r->client_msg_id.len <= WIRE_MAX_CLIENT_MSG_ID);
    REQUIRE(r->body.len <= max_body);
    REQUIRE(r->n_users <= (WIRE_MAX_MEMBERS > WIRE_MAX_PRESENCE ? WIRE_MAX_MEMBERS
                                                                 : WIRE_MAX_PRESENCE));
    REQUIRE(r->n_users == 0 || r->users != NULL);
    for (size_t i = 0; i < r->n_users; i++)
        REQUIRE(slice_user(r->users[i]));
    REQUIRE(r->n_cursors <= WIRE_MAX_CURSORS);
    REQUIRE(r->n_cursors == 0 || r->cursors != NULL);
    for (size_t i = 0; i < r->n_cursors; i++) {
        REQUIRE(r->cursors[i].conv >= 1 && r->cursors[i].conv <= WIRE_MAX_CONV);
        REQUIRE(i == 0 || r->cursors[i - 1].conv < r->cursors[i].conv);
    }
    REQUIRE(r->settings_len <= WIRE_MAX_SETTINGS);
    switch (r->op) {
    case WIRE_OP_REGISTER:
        REQUIRE(r->password.len >= WIRE_MIN_PASSWORD);
        /* fall through */
    case WIRE_OP_LOGIN:
    case WIRE_OP_ADD_MEMBER:
    case WIRE_OP_REMOVE_MEMBER:
        REQUIRE(slice_user(r->user));
        break;
    case WIRE_OP_PROFILE:
        REQUIRE(r->user.len == 0 || slice_user(r->user));
        break;
    case WIRE_OP_AUTH:
        REQUIRE(r->token.len >= 1);
        break;
    case WIRE_OP_CREATE:
        REQUIRE(r->kind == CLOG_DIRECT || r->kind == CLOG_GROUP);
        REQUIRE(r->n_users <= WIRE_MAX_MEMBERS);
        if (r->kind == CLOG_DIRECT)
            REQUIRE(r->n_users >= 1); /* the gateway reads users[0] */
        break;
    case WIRE_OP_PRESENCE:
        REQUIRE(r->n_users <= WIRE_MAX_PRESENCE);
        break;
    default:
        break;
    }
    if (r->op == WIRE_OP_ADD_MEMBER)
        REQUIRE(r->kind == CLOG_ROLE_MEMBER || r->kind == CLOG_ROLE_ADMIN);
    if (r->op == WIRE_OP_RECEIPT)
        REQUIRE(r->kind == CLOG_CURSOR_DELIVERED || r->kind == CLOG_CURSOR_READ);
    if (r->op == WIRE_OP_SEND || r->op == WIRE_OP_EDIT || r->op == WIRE_OP_DELETE ||
        r->op == WIRE_OP_REACT)
        REQUIRE(r->client_msg_id.len >= 1);
    if (r->op == WIRE_OP_SEND || r->op == WIRE_OP_EDIT)
        REQUIRE(r->body.len >= 1);
    if (r->op == WIRE_OP_REACT)
        REQUIRE(r->body.len >= 1 && r->body.len <= WIRE_MAX_EMOJI);
    if (r->op == WIRE_OP_EDIT || r->op == WIRE_OP_DELETE || r->op == WIRE_OP_REACT)
        REQUIRE(r->seq >= 1);
    if (r->op == WIRE_OP_HISTORY) {
        REQUIRE(r->limit >= 1 && r->limit <= WIRE_MAX_HISTORY);
        if (r->before != 0 && r->after != 0)
            REQUIRE(r->before > r->after + 1); /* a window holding at least one seq */
    }
    if (r->op == WIRE_OP_SET_SETTINGS) {
        REQUIRE(r->settings != NULL);
        json_error_t e;
        json_t *s = json_loadb(r->settings, r->settings_len, JSON_ALLOW_NUL, &e);
        REQUIRE(json_is_object(s));
        json_decref(s);
    }
}

/* req.id is short, valid JSON and, when not null, the message's own id. */
static void check_id(const struct wire_request *r, const uint8_t *data, size_t size)
{
    size_t n = strnlen(r->id, sizeof r->id);
    REQUIRE(n < sizeof r->id && n <= WIRE_MAX_ID + 2 && n > 0);
    json_error_t e;
    json_t *id = json_loadb(r->id, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    REQUIRE(id != NULL);
    REQUIRE(json_is_null(id) || json_is_integer(id) || json_is_real(id) || json_is_string(id));
    if (!json_is_null(id)) {
        json_t *msg = json_loadb((const char *)data, size, JSON_ALLOW_NUL, &e);
        if (msg != NULL && json_is_object(msg))
            REQUIRE(json_equal(id, json_object_get(msg, "id")));
        json_decref(msg);
    }
    json_decref(id);
}

/* The replies the gateway builds from a parse: both must be JSON objects. */
static void check_replies(const struct wire_request *r, int rv, const char *msg)
{
    ch_wbuf_reset(&out);
    wire_reply_error(&out, r->id, rv ? rv : CH_EINVAL, msg, (uint64_t)(size_t)r->n_users);
    json_t *j = load_out(0);
    REQUIRE(json_is_object(j));
    REQUIRE(json_is_false(json_object_get(j, "ok")));
    json_decref(j);
    ch_wbuf_reset(&out);
    wire_reply_begin(&out, r->id);
    wire_put_raw(&out, "{");
    wire_put_key(&out, "n");
    wire_put_u64(&out, r->conv);
    wire_put_raw(&out, "}");
    wire_reply_end(&out);
    j = load_out(0);
    REQUIRE(json_is_object(j));
    json_decref(j);
}

static void parse_one(const uint8_t *data, size_t size, uint32_t max_body)
{
    struct wire_request req;
    char msg[200];
    memset(&req, 0xa5, sizeof req); /* the gateway never zeroes it */
    int rv = wire_parse_request((const char *)data, size, max_body, &req, msg, sizeof msg);
    REQUIRE(rv == 0 || rv == CH_EMALFORMED || rv == CH_EINVAL || rv == CH_EUNKNOWN_OP ||
            rv == CH_ETOOLARGE || rv == CH_ENOMEM);
    check_id(&req, data, size);
    if (rv == 0) {
        check_request(&req, max_body);
    } else {
        REQUIRE(memchr(msg, 0, sizeof msg) != NULL);
        REQUIRE(msg[0] != 0);
    }
    check_replies(&req, rv, rv ? msg : NULL);
    wire_request_free(&req);
}

/* wire_put_string of any bytes is a JSON string; valid UTF-8 comes back exactly. */
static void check_put_string(const uint8_t *data, size_t size)
{
    ch_wbuf_reset(&out);
    wire_put_string(&out, data, size);
    if (ch_wbuf_error(&out))
        return;
    REQUIRE(out.len >= 2 && out.data[0] == '"' && out.data[out.len - 1] == '"');
    for (size_t i = 0; i < out.len; i++)
        REQUIRE(out.data[i] >= 0x20); /* no raw control characters */
    json_t *j = load_out(JSON_DECODE_ANY);
    REQUIRE(json_is_string(j));
    const uint8_t *s = (const uint8_t *)json_string_value(j);
    size_t n = json_string_length(j);
    REQUIRE(utf8_valid(s, n));
    if (utf8_valid(data, size))
        REQUIRE(n == size && (size == 0 || memcmp(s, data, size) == 0));
    json_decref(j);
}

/* Splits the input into an event's fields and checks its JSON. */
static void check_event(const uint8_t *data, size_t size)
{
    if (size < 6)
        return;
    static const uint8_t kinds[CLOG_EV__MAX][2] = {
        [CLOG_EV_CREATED] = {CLOG_DIRECT, CLOG_GROUP},
        [CLOG_EV_MEMBER_ADDED] = {CLOG_ROLE_MEMBER, CLOG_ROLE_ADMIN},
        [CLOG_EV_REACTION] = {CLOG_REACT_ADD, CLOG_REACT_REMOVE},
        [CLOG_EV_RECEIPT] = {CLOG_CURSOR_DELIVERED, CLOG_CURSOR_READ},
    };
    struct clog_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = (uint8_t)(1 + data[0] % (CLOG_EV__MAX - 1));
    ev.kind = kinds[ev.type][data[1] & 1];
    ev.conv = (uint64_t)data[1] << 40 | data[2];
    ev.seq = data[3];
    ev.ts = (uint64_t)data[4] << 32;
    ev.ref_seq = data[5];
    const uint8_t *p = data + 6;
    size_t left = size - 6;
    struct ch_slice *fields[] = {&ev.actor, &ev.target, &ev.client_msg_id, &ev.body};
    for (size_t i = 0; i < 4; i++) {
        size_t n = left ? (size_t)(p[0] % 32) : 0;
        if (left)
            p++, left--;
        if (n > left || i == 3)
            n = left;
        *fields[i] = (struct ch_slice){p, n};
        p += n;
        left -= n;
    }
    struct ch_wbuf m;
    ch_wbuf_init(&m);
    uint32_t count = 0;
    if (ev.type == CLOG_EV_CREATED) {
        size_t at = clog_members_begin(&m);
        /* members: the body's bytes, 8 at a time */
        for (size_t i = 0; i < ev.body.len; i += 8, count++)
            clog_members_put(&m,
                             (struct ch_slice){ev.body.ptr + i,
                                               ev.body.len - i < 8 ? ev.body.len - i : 8},
                             (uint8_t)(CLOG_ROLE_OWNER + count % 3));
        clog_members_end(&m, at, count);
        ev.members = (struct ch_slice){m.data, m.len};
    }
    for (int bare = 0; bare <= 1; bare++) {
        ch_wbuf_reset(&out);
        wire_event(&out, &ev, bare);
        if (ch_wbuf_error(&out) || ch_wbuf_error(&m))
            continue;
        json_t *j = load_out(0);
        REQUIRE(json_is_object(j));
        REQUIRE(bare ? json_object_get(j, "type") == NULL
                     : json_is_string(json_object_get(j, "type")));
        REQUIRE((uint64_t)json_integer_value(json_object_get(j, "conv")) == ev.conv);
        REQUIRE((uint64_t)json_integer_value(json_object_get(j, "seq")) == ev.seq);
        if (ev.type == CLOG_EV_CREATED)
            REQUIRE(json_array_size(json_object_get(j, "members")) == count);
        json_decref(j);
    }
    ch_wbuf_free(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy: libFuzzer's buffer is exact, the replay driver's is not */
    uint8_t *copy = malloc(size ? size : 1);
    if (copy == NULL)
        return 0;
    if (size)
        memcpy(copy, data, size);
    parse_one(copy, size, 1024);
    parse_one(copy, size, 65536);
    check_put_string(copy, size);
    check_event(copy, size);
    free(copy);
    ch_wbuf_free(&out);
    return 0;
}
