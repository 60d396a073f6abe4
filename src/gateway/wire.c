/*
 * The client wire codec (see wire.h; docs/protocol.md is the specification).
 *
 * Decoding is two-step: jansson parses the frame (it checks UTF-8 and nesting),
 * then one table-free function per op pulls each field out with a checked getter
 * that names the field in its error message.  Nothing here allocates per field:
 * string slices borrow from the parsed tree, which the request owns.
 *
 * Encoding writes JSON text straight into a ch_wbuf; the only escaping needed is
 * for strings, done once per string with a fast path for runs of plain bytes.
 */
#include "wire.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "../raft-log/clog_cmd.h"

static const char *const op_names[WIRE_OP__MAX] = {
    [WIRE_OP_REGISTER] = "register",
    [WIRE_OP_LOGIN] = "login",
    [WIRE_OP_AUTH] = "auth",
    [WIRE_OP_PING] = "ping",
    [WIRE_OP_CREATE] = "create",
    [WIRE_OP_GET] = "get",
    [WIRE_OP_CONVERSATIONS] = "conversations",
    [WIRE_OP_ADD_MEMBER] = "add_member",
    [WIRE_OP_REMOVE_MEMBER] = "remove_member",
    [WIRE_OP_LEAVE] = "leave",
    [WIRE_OP_SEND] = "send",
    [WIRE_OP_EDIT] = "edit",
    [WIRE_OP_DELETE] = "delete",
    [WIRE_OP_REACT] = "react",
    [WIRE_OP_HISTORY] = "history",
    [WIRE_OP_RECEIPT] = "receipt",
    [WIRE_OP_TYPING] = "typing",
    [WIRE_OP_PRESENCE] = "presence",
    [WIRE_OP_PROFILE] = "profile",
    [WIRE_OP_SET_PROFILE] = "set_profile",
    [WIRE_OP_SETTINGS] = "settings",
    [WIRE_OP_SET_SETTINGS] = "set_settings",
    [WIRE_OP_SYNC] = "sync",
};

const char *wire_op_name(int op)
{
    return op > 0 && op < WIRE_OP__MAX ? op_names[op] : NULL;
}

const char *wire_role_name(uint8_t role)
{
    switch (role) {
    case CLOG_ROLE_OWNER:
        return "owner";
    case CLOG_ROLE_ADMIN:
        return "admin";
    default:
        return "member";
    }
}

const char *wire_kind_name(uint8_t kind)
{
    return kind == CLOG_DIRECT ? "direct" : "group";
}

int wire_user_valid(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > WIRE_MAX_USER)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        int alnum = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
        if (!alnum && (i == 0 || (ch != '_' && ch != '.' && ch != '-')))
            return 0;
    }
    return 1;
}

/* ---- decoding --------------------------------------------------------------------- */

/* The decoding context: where errors are written and which op they belong to. */
struct dec {
    json_t *obj;
    const char *op;
    char *msg;
    size_t msglen;
    uint32_t max_body;
};

__attribute__((format(printf, 3, 4))) static int fail(struct dec *d, int err,
                                                      const char *fmt, ...)
{
    if (d->msg != NULL && d->msglen > 0) {
        int n = snprintf(d->msg, d->msglen, "%s%s", d->op ? d->op : "",
                         d->op ? ": " : "");
        if (n < 0 || (size_t)n >= d->msglen)
            n = 0;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->msg + n, d->msglen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return err;
}

/* The field `key`, or NULL when it is absent or null: then *rv is CH_EMALFORMED
 * if it is required, else 0.  *present (optional) says whether it was given. */
static json_t *field(struct dec *d, const char *key, int required, int *present, int *rv)
{
    json_t *v = json_object_get(d->obj, key);
    int given = v != NULL && !json_is_null(v);
    if (present)
        *present = given;
    *rv = given || !required ? 0 : fail(d, CH_EMALFORMED, "%s: required", key);
    return given ? v : NULL;
}

/* An unsigned integer field in [min, max]; absent is an error when required. */
static int get_uint(struct dec *d, const char *key, uint64_t min, uint64_t max,
                    int required, uint64_t *out, int *present)
{
    int rv;
    json_t *v = field(d, key, required, present, &rv);
    if (v == NULL)
        return rv;
    if (!json_is_integer(v))
        return fail(d, CH_EMALFORMED, "%s: expected an integer", key);
    json_int_t i = json_integer_value(v);
    if (i < 0 || (uint64_t)i < min || (uint64_t)i > max)
        return fail(d, CH_EINVAL, "%s: expected an integer in %" PRIu64 "..%" PRIu64, key,
                    min, max);
    *out = (uint64_t)i;
    return 0;
}

static int get_conv(struct dec *d, uint64_t *out)
{
    return get_uint(d, "conv", 1, WIRE_MAX_CONV, 1, out, NULL);
}

/* A string field of min..max bytes (jansson has checked it is UTF-8); longer is
 * too_large, shorter bad_request. */
static int get_str(struct dec *d, const char *key, size_t min, size_t max, int required,
                   struct ch_slice *out, int *present)
{
    int rv;
    json_t *v = field(d, key, required, present, &rv);
    if (v == NULL)
        return rv;
    if (!json_is_string(v))
        return fail(d, CH_EMALFORMED, "%s: expected a string", key);
    size_t len = json_string_length(v);
    if (len > max)
        return fail(d, CH_ETOOLARGE, "%s: longer than %zu bytes", key, max);
    if (len < min)
        return min == 1 ? fail(d, CH_EINVAL, "%s: must not be empty", key)
                        : fail(d, CH_EINVAL, "%s: shorter than %zu bytes", key, min);
    out->ptr = (const uint8_t *)json_string_value(v);
    out->len = len;
    return 0;
}

static int check_user(struct dec *d, const char *what, struct ch_slice s)
{
    if (!wire_user_valid((const char *)s.ptr, s.len))
        return fail(d, CH_EINVAL,
                    "%s: not a valid user id (1-%d of a-z 0-9 _ . -, starting with a "
                    "letter or digit)",
                    what, WIRE_MAX_USER);
    return 0;
}

static int get_user(struct dec *d, const char *key, int required, struct ch_slice *out)
{
    int present = 0;
    int rv = get_str(d, key, 0, 255, required, out, &present);
    if (rv != 0)
        return rv;
    return present ? check_user(d, key, *out) : 0;
}

static int get_bool(struct dec *d, const char *key, int dflt, uint8_t *out)
{
    json_t *v = json_object_get(d->obj, key);
    if (v == NULL || json_is_null(v)) {
        *out = (uint8_t)dflt;
        return 0;
    }
    if (!json_is_boolean(v))
        return fail(d, CH_EMALFORMED, "%s: expected true or false", key);
    *out = json_is_true(v) ? 1 : 0;
    return 0;
}

/* A string field naming one of `names` (NULL-terminated); *out = values[i]. */
static int get_enum(struct dec *d, const char *key, int required, const char *const *names,
                    const uint8_t *values, uint8_t *out)
{
    int rv;
    json_t *v = field(d, key, required, NULL, &rv);
    if (v == NULL)
        return rv;
    if (json_is_string(v)) {
        for (size_t i = 0; names[i] != NULL; i++) {
            if (strcmp(json_string_value(v), names[i]) == 0 &&
                json_string_length(v) == strlen(names[i])) {
                *out = values[i];
                return 0;
            }
        }
    }
    char list[96];
    size_t n = 0;
    list[0] = 0;
    for (size_t i = 0; names[i] != NULL && n < sizeof list; i++)
        n += (size_t)snprintf(list + n, sizeof list - n, "%s\"%s\"", i ? " or " : "",
                              names[i]);
    return fail(d, json_is_string(v) ? CH_EINVAL : CH_EMALFORMED, "%s: expected %s", key,
                list);
}

/* A list of user ids (create: members; presence: users), at most max. */
static int get_users(struct dec *d, const char *key, size_t min, size_t max,
                     struct wire_request *req)
{
    json_t *v = json_object_get(d->obj, key);
    if (v == NULL || json_is_null(v))
        return fail(d, CH_EMALFORMED, "%s: required", key);
    if (!json_is_array(v))
        return fail(d, CH_EMALFORMED, "%s: expected an array of user ids", key);
    size_t n = json_array_size(v);
    if (n > max)
        return fail(d, CH_ETOOLARGE, "%s: more than %zu users", key, max);
    if (n < min)
        return fail(d, CH_EINVAL, "%s: at least %zu user%s needed", key, min,
                    min == 1 ? " is" : "s are");
    req->users = n ? calloc(n, sizeof *req->users) : NULL;
    if (n && req->users == NULL)
        return fail(d, CH_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *u = json_array_get(v, i);
        if (!json_is_string(u))
            return fail(d, CH_EMALFORMED, "%s[%zu]: expected a user id string", key, i);
        struct ch_slice s = {(const uint8_t *)json_string_value(u), json_string_length(u)};
        if (!wire_user_valid((const char *)s.ptr, s.len))
            return fail(d, CH_EINVAL, "%s[%zu]: not a valid user id", key, i);
        req->users[req->n_users++] = s;
    }
    return 0;
}

static int cursor_cmp(const void *a, const void *b)
{
    const struct wire_cursor *x = a, *y = b;
    return x->conv < y->conv ? -1 : x->conv > y->conv;
}

/* Strict decimal without sign, leading zeros or trailing bytes. */
static int parse_decimal(const char *s, uint64_t *out)
{
    if (*s < '1' || *s > '9')
        return -1;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return 0;
}

static int get_cursors(struct dec *d, struct wire_request *req)
{
    json_t *v = json_object_get(d->obj, "cursors");
    if (v == NULL || json_is_null(v))
        return fail(d, CH_EMALFORMED, "cursors: required");
    if (!json_is_object(v))
        return fail(d, CH_EMALFORMED, "cursors: expected an object {\"<conv>\": seq, ...}");
    size_t n = json_object_size(v);
    if (n > WIRE_MAX_CURSORS)
        return fail(d, CH_ETOOLARGE, "cursors: more than %d conversations", WIRE_MAX_CURSORS);
    req->cursors = n ? calloc(n, sizeof *req->cursors) : NULL;
    if (n && req->cursors == NULL)
        return fail(d, CH_ENOMEM, "out of memory");
    const char *key;
    json_t *seq;
    json_object_foreach(v, key, seq)
    {
        uint64_t conv;
        if (parse_decimal(key, &conv) != 0 || conv > WIRE_MAX_CONV)
            return fail(d, CH_EINVAL, "cursors: key \"%.24s\" is not a conversation id", key);
        if (!json_is_integer(seq))
            return fail(d, CH_EMALFORMED, "cursors.%" PRIu64 ": expected an integer seq",
                        conv);
        json_int_t s = json_integer_value(seq);
        if (s < 0)
            return fail(d, CH_EINVAL, "cursors.%" PRIu64 ": seq must be >= 0", conv);
        req->cursors[req->n_cursors].conv = conv;
        req->cursors[req->n_cursors].seq = (uint64_t)s;
        req->n_cursors++;
    }
    if (req->n_cursors > 1) /* qsort(NULL, 0, ...) is undefined */
        qsort(req->cursors, req->n_cursors, sizeof *req->cursors, cursor_cmp);
    for (size_t i = 1; i < req->n_cursors; i++)
        if (req->cursors[i].conv == req->cursors[i - 1].conv)
            return fail(d, CH_EINVAL, "cursors: conversation %" PRIu64 " listed twice",
                        req->cursors[i].conv);
    return 0;
}

static int get_settings(struct dec *d, struct wire_request *req)
{
    json_t *v = json_object_get(d->obj, "settings");
    if (v == NULL || json_is_null(v))
        return fail(d, CH_EMALFORMED, "settings: required");
    if (!json_is_object(v))
        return fail(d, CH_EMALFORMED, "settings: expected an object");
    req->settings = json_dumps(v, JSON_COMPACT);
    if (req->settings == NULL)
        return fail(d, CH_ENOMEM, "out of memory");
    req->settings_len = strlen(req->settings);
    if (req->settings_len > WIRE_MAX_SETTINGS)
        return fail(d, CH_ETOOLARGE, "settings: larger than %d bytes encoded",
                    WIRE_MAX_SETTINGS);
    return 0;
}

static const char *const cursor_names[] = {"delivered", "read", NULL};
static const uint8_t cursor_values[] = {CLOG_CURSOR_DELIVERED, CLOG_CURSOR_READ};
static const char *const kind_names[] = {"direct", "group", NULL};
static const uint8_t kind_values[] = {CLOG_DIRECT, CLOG_GROUP};
static const char *const role_names[] = {"member", "admin", NULL};
static const uint8_t role_values[] = {CLOG_ROLE_MEMBER, CLOG_ROLE_ADMIN};

/* The fields of one op (the object has an id and a known op). */
static int decode_op(struct dec *d, struct wire_request *r)
{
    uint64_t seq_max = WIRE_MAX_CONV;
    int rv = 0, present = 0;
    switch (r->op) {
    case WIRE_OP_REGISTER:
        if ((rv = get_user(d, "user", 1, &r->user)) != 0 ||
            (rv = get_str(d, "password", WIRE_MIN_PASSWORD, WIRE_MAX_PASSWORD, 1,
                          &r->password, NULL)) != 0 ||
            (rv = get_str(d, "display_name", 0, WIRE_MAX_DISPLAY_NAME, 0, &r->display_name,
                          &present)) != 0)
            return rv;
        r->has_display_name = (uint8_t)present;
        return 0;
    case WIRE_OP_LOGIN:
        if ((rv = get_user(d, "user", 1, &r->user)) != 0)
            return rv;
        return get_str(d, "password", 1, WIRE_MAX_PASSWORD, 1, &r->password, NULL);
    case WIRE_OP_AUTH:
        return get_str(d, "token", 1, WIRE_MAX_TOKEN, 1, &r->token, NULL);
    case WIRE_OP_PING:
    case WIRE_OP_CONVERSATIONS:
    case WIRE_OP_SETTINGS:
        return 0;
    case WIRE_OP_CREATE:
        if ((rv = get_enum(d, "kind", 1, kind_names, kind_values, &r->kind)) != 0)
            return rv;
        if (r->kind == CLOG_DIRECT) {
            json_t *m = json_object_get(d->obj, "members");
            if (json_is_array(m) && json_array_size(m) != 1)
                return fail(d, CH_EINVAL,
                            "members: a direct conversation lists exactly one other user");
        }
        if ((rv = get_users(d, "members", 0, WIRE_MAX_MEMBERS, r)) != 0)
            return rv;
        return get_str(d, "name", 0, WIRE_MAX_NAME, 0, &r->name, NULL);
    case WIRE_OP_GET:
    case WIRE_OP_LEAVE:
        return get_conv(d, &r->conv);
    case WIRE_OP_ADD_MEMBER:
        r->kind = CLOG_ROLE_MEMBER;
        if ((rv = get_enum(d, "role", 0, role_names, role_values, &r->kind)) != 0)
            return rv;
        /* fall through */
    case WIRE_OP_REMOVE_MEMBER:
        if ((rv = get_conv(d, &r->conv)) != 0)
            return rv;
        return get_user(d, "user", 1, &r->user);
    case WIRE_OP_SEND:
    case WIRE_OP_EDIT:
        if ((rv = get_conv(d, &r->conv)) != 0 ||
            (rv = get_str(d, "client_msg_id", 1, WIRE_MAX_CLIENT_MSG_ID, 1, &r->client_msg_id,
                          NULL)) != 0 ||
            (r->op == WIRE_OP_EDIT &&
             (rv = get_uint(d, "seq", 1, seq_max, 1, &r->seq, NULL)) != 0))
            return rv;
        return get_str(d, "body", 1, d->max_body, 1, &r->body, NULL);
    case WIRE_OP_DELETE:
    case WIRE_OP_REACT:
        if ((rv = get_conv(d, &r->conv)) != 0 ||
            (rv = get_str(d, "client_msg_id", 1, WIRE_MAX_CLIENT_MSG_ID, 1, &r->client_msg_id,
                          NULL)) != 0 ||
            (rv = get_uint(d, "seq", 1, seq_max, 1, &r->seq, NULL)) != 0)
            return rv;
        if (r->op == WIRE_OP_DELETE)
            return 0;
        if ((rv = get_str(d, "emoji", 1, WIRE_MAX_EMOJI, 1, &r->body, NULL)) != 0)
            return rv;
        return get_bool(d, "remove", 0, &r->flag);
    case WIRE_OP_HISTORY: {
        int has_before = 0, has_after = 0;
        uint64_t limit = WIRE_DEFAULT_HISTORY;
        if ((rv = get_conv(d, &r->conv)) != 0 ||
            (rv = get_uint(d, "before", 1, UINT64_MAX, 0, &r->before, &has_before)) != 0 ||
            (rv = get_uint(d, "after", 0, UINT64_MAX, 0, &r->after, &has_after)) != 0 ||
            (rv = get_uint(d, "limit", 1, WIRE_MAX_HISTORY, 0, &limit, NULL)) != 0)
            return rv;
        if (has_before && has_after && r->before <= r->after + 1)
            return fail(d, CH_EINVAL, "before: must be greater than after + 1");
        if (!has_before && !has_after)
            r->before = UINT64_MAX; /* the newest page */
        r->limit = (uint32_t)limit;
        return 0;
    }
    case WIRE_OP_RECEIPT:
        if ((rv = get_conv(d, &r->conv)) != 0 ||
            (rv = get_enum(d, "kind", 1, cursor_names, cursor_values, &r->kind)) != 0)
            return rv;
        return get_uint(d, "seq", 1, seq_max, 1, &r->seq, NULL);
    case WIRE_OP_TYPING:
        if ((rv = get_conv(d, &r->conv)) != 0)
            return rv;
        return get_bool(d, "state", 1, &r->flag);
    case WIRE_OP_PRESENCE:
        return get_users(d, "users", 0, WIRE_MAX_PRESENCE, r);
    case WIRE_OP_PROFILE:
        return get_user(d, "user", 0, &r->user);
    case WIRE_OP_SET_PROFILE:
        if ((rv = get_str(d, "display_name", 0, WIRE_MAX_DISPLAY_NAME, 0, &r->display_name,
                          &present)) != 0)
            return rv;
        r->has_display_name = (uint8_t)present;
        if ((rv = get_str(d, "status", 0, WIRE_MAX_STATUS, 0, &r->status, &present)) != 0)
            return rv;
        r->has_status = (uint8_t)present;
        if (!r->has_display_name && !r->has_status)
            return fail(d, CH_EMALFORMED, "display_name or status required");
        return 0;
    case WIRE_OP_SET_SETTINGS:
        return get_settings(d, r);
    case WIRE_OP_SYNC:
        return get_cursors(d, r);
    default:
        return fail(d, CH_EUNKNOWN_OP, "unknown op");
    }
}

/* Writes the request id as JSON text into req->id; -1 when it is unusable. */
static int take_id(json_t *id, struct wire_request *req)
{
    if (json_is_integer(id)) {
        snprintf(req->id, sizeof req->id, "%" JSON_INTEGER_FORMAT, json_integer_value(id));
        return 0;
    }
    if (json_is_string(id) && json_string_length(id) <= WIRE_MAX_ID) {
        struct ch_wbuf b;
        ch_wbuf_init(&b);
        wire_put_string(&b, json_string_value(id), json_string_length(id));
        int ok = !ch_wbuf_error(&b) && b.len < sizeof req->id;
        if (ok) {
            memcpy(req->id, b.data, b.len);
            req->id[b.len] = 0;
        }
        ch_wbuf_free(&b);
        return ok ? 0 : -1;
    }
    return -1;
}

int wire_parse_request(const char *text, size_t len, uint32_t max_body,
                       struct wire_request *req, char *msg, size_t msglen)
{
    memset(req, 0, sizeof *req);
    memcpy(req->id, "null", 5);
    if (msg != NULL && msglen > 0)
        msg[0] = 0;
    struct dec d = {.msg = msg, .msglen = msglen, .max_body = max_body};
    if (d.max_body == 0 || d.max_body > CLOG_MAX_BODY)
        d.max_body = CLOG_MAX_BODY;

    json_error_t jerr;
    req->root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (req->root == NULL)
        return fail(&d, CH_EMALFORMED, "not valid JSON: %s (at byte %d)", jerr.text,
                    jerr.position);
    if (!json_is_object(req->root))
        return fail(&d, CH_EMALFORMED, "a request must be a JSON object");
    d.obj = req->root;

    json_t *id = json_object_get(d.obj, "id");
    if (id == NULL)
        return fail(&d, CH_EMALFORMED, "id: required (a number or a string)");
    if (take_id(id, req) != 0)
        return fail(&d, CH_EMALFORMED,
                    "id: expected an integer or a string of at most %d bytes (escaped)",
                    WIRE_MAX_ID);

    json_t *op = json_object_get(d.obj, "op");
    if (op == NULL)
        return fail(&d, CH_EMALFORMED, "op: required");
    if (!json_is_string(op))
        return fail(&d, CH_EMALFORMED, "op: expected a string");
    for (int i = 1; i < WIRE_OP__MAX; i++) {
        if (strcmp(op_names[i], json_string_value(op)) == 0 &&
            json_string_length(op) == strlen(op_names[i])) {
            req->op = i;
            break;
        }
    }
    if (req->op == 0)
        return fail(&d, CH_EUNKNOWN_OP, "unknown op \"%.32s\"", json_string_value(op));
    d.op = op_names[req->op];
    int rv = decode_op(&d, req);
    if (rv != 0)
        req->op = 0;
    return rv;
}

void wire_request_free(struct wire_request *req)
{
    json_decref(req->root);
    free(req->users);
    free(req->cursors);
    free(req->settings);
    req->root = NULL;
    req->users = NULL;
    req->cursors = NULL;
    req->settings = NULL;
    req->n_users = req->n_cursors = 0;
}

/* ---- encoding ---------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p (1..4), or 0 when it is not valid. */
static size_t utf8_seq(const uint8_t *p, size_t left)
{
    uint8_t c = p[0];
    if (c < 0x80)
        return 1;
    if (c < 0xc2)
        return 0;
    if (c < 0xe0) {
        return left >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
    }
    if (c < 0xf0) {
        if (left < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
            return 0;
        if (c == 0xe0 && p[1] < 0xa0)
            return 0; /* overlong */
        if (c == 0xed && p[1] >= 0xa0)
            return 0; /* surrogate */
        return 3;
    }
    if (c < 0xf5) {
        if (left < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 ||
            (p[3] & 0xc0) != 0x80)
            return 0;
        if (c == 0xf0 && p[1] < 0x90)
            return 0; /* overlong */
        if (c == 0xf4 && p[1] >= 0x90)
            return 0; /* above U+10FFFF */
        return 4;
    }
    return 0;
}

void wire_put_string(struct ch_wbuf *b, const void *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *p = s;
    size_t run = 0; /* start of the pending run of bytes copied as they are */
    if (ch_wbuf_reserve(b, len + 2) != 0)
        return;
    ch_put_u8(b, '"');
    size_t i = 0;
    while (i < len) {
        uint8_t c = p[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            i++;
            continue;
        }
        size_t n = c >= 0x80 ? utf8_seq(p + i, len - i) : 1;
        if (c >= 0x80 && n > 0) {
            i += n;
            continue;
        }
        ch_put_raw(b, p + run, i - run);
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            ch_put_raw(b, esc, 2);
        } else if (c < 0x20) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            ch_put_raw(b, esc, 6);
        } else {
            ch_put_raw(b, "\xef\xbf\xbd", 3); /* U+FFFD for a byte that is not UTF-8 */
        }
        i++;
        run = i;
    }
    ch_put_raw(b, p + run, len - run);
    ch_put_u8(b, '"');
}

void wire_put_raw(struct ch_wbuf *b, const char *s)
{
    ch_put_raw(b, s, strlen(s));
}

void wire_put_key(struct ch_wbuf *b, const char *key)
{
    uint8_t last = b->len ? b->data[b->len - 1] : '{';
    if (last != '{' && last != '[' && last != ',' && last != ':')
        ch_put_u8(b, ',');
    ch_put_u8(b, '"');
    wire_put_raw(b, key);
    ch_put_raw(b, "\":", 2);
}

void wire_put_u64(struct ch_wbuf *b, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[sizeof tmp - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    ch_put_raw(b, tmp + sizeof tmp - n, n);
}

void wire_put_bool(struct ch_wbuf *b, int v)
{
    if (v)
        ch_put_raw(b, "true", 4);
    else
        ch_put_raw(b, "false", 5);
}

static void put_str_key(struct ch_wbuf *b, const char *key, struct ch_slice s)
{
    wire_put_key(b, key);
    wire_put_string(b, s.ptr, s.len);
}

static void put_cstr_key(struct ch_wbuf *b, const char *key, const char *s)
{
    wire_put_key(b, key);
    wire_put_string(b, s, strlen(s));
}

void wire_reply_begin(struct ch_wbuf *b, const char *id)
{
    wire_put_raw(b, "{\"type\":\"reply\",\"id\":");
    wire_put_raw(b, id && id[0] ? id : "null");
    wire_put_raw(b, ",\"ok\":true,\"result\":");
}

void wire_reply_end(struct ch_wbuf *b)
{
    ch_put_u8(b, '}');
}

void wire_reply_error(struct ch_wbuf *b, const char *id, int err, const char *message,
                      uint64_t retry_after_ms)
{
    wire_put_raw(b, "{\"type\":\"reply\",\"id\":");
    wire_put_raw(b, id && id[0] ? id : "null");
    wire_put_raw(b, ",\"ok\":false,\"error\":{");
    put_cstr_key(b, "code", ch_errcode(err));
    put_cstr_key(b, "message", message != NULL && message[0] ? message : ch_strerror(err));
    if (retry_after_ms != 0) {
        wire_put_key(b, "retry_after_ms");
        wire_put_u64(b, retry_after_ms);
    }
    wire_put_raw(b, "}}");
}

static void put_u64_key(struct ch_wbuf *b, const char *key, uint64_t v)
{
    wire_put_key(b, key);
    wire_put_u64(b, v);
}

static void put_members(struct ch_wbuf *b, struct ch_slice blob)
{
    struct clog_members_iter it;
    uint32_t count;
    wire_put_key(b, "members");
    ch_put_u8(b, '[');
    if (clog_members_open(&it, blob, &count) == 0) {
        struct ch_slice user;
        uint8_t role;
        for (uint32_t i = 0; clog_members_next(&it, &user, &role) == 1; i++) {
            ch_put_raw(b, i ? ",{" : "{", i ? 2 : 1);
            put_str_key(b, "user", user);
            put_cstr_key(b, "role", wire_role_name(role));
            ch_put_u8(b, '}');
        }
    }
    ch_put_u8(b, ']');
}

void wire_event(struct ch_wbuf *b, const struct clog_event *ev, int bare)
{
    ch_put_u8(b, '{');
    if (!bare)
        wire_put_raw(b, "\"type\":\"event\"");
    put_u64_key(b, "conv", ev->conv);
    put_u64_key(b, "seq", ev->seq);
    put_u64_key(b, "ts", ev->ts);
    put_cstr_key(b, "event", clog_event_type_name(ev->type));
    put_str_key(b, "from", ev->actor);
    switch (ev->type) {
    case CLOG_EV_CREATED:
        put_cstr_key(b, "kind", wire_kind_name(ev->kind));
        put_str_key(b, "name", ev->body);
        put_members(b, ev->members);
        break;
    case CLOG_EV_MEMBER_ADDED:
        put_str_key(b, "user", ev->target);
        put_cstr_key(b, "role", wire_role_name(ev->kind));
        break;
    case CLOG_EV_MEMBER_REMOVED:
        put_str_key(b, "user", ev->target);
        break;
    case CLOG_EV_MEMBER_LEFT:
        if (ev->target.len > 0)
            put_str_key(b, "new_owner", ev->target);
        break;
    case CLOG_EV_MESSAGE:
        put_str_key(b, "client_msg_id", ev->client_msg_id);
        put_str_key(b, "body", ev->body);
        break;
    case CLOG_EV_EDITED:
        put_u64_key(b, "ref", ev->ref_seq);
        put_str_key(b, "client_msg_id", ev->client_msg_id);
        put_str_key(b, "body", ev->body);
        break;
    case CLOG_EV_DELETED:
        put_u64_key(b, "ref", ev->ref_seq);
        put_str_key(b, "client_msg_id", ev->client_msg_id);
        break;
    case CLOG_EV_REACTION:
        put_u64_key(b, "ref", ev->ref_seq);
        put_str_key(b, "emoji", ev->body);
        put_cstr_key(b, "action", ev->kind == CLOG_REACT_REMOVE ? "remove" : "add");
        break;
    case CLOG_EV_RECEIPT:
        put_cstr_key(b, "kind", ev->kind == CLOG_CURSOR_READ ? "read" : "delivered");
        put_u64_key(b, "upto", ev->ref_seq);
        break;
    default:
        break;
    }
    ch_put_u8(b, '}');
}
