/* Unit tests of the client wire codec (src/gateway/wire): requests in, replies and events out. */
#include "test.h"

#include <stdarg.h>

#include <jansson.h>

#include "common/codec.h"
#include "common/error.h"
#include "gateway/wire.h"
#include "raft-log/clog_cmd.h"
#include "raft-log/clog_event.h"

#define MAX_BODY 65536

/* ---- helpers ---------------------------------------------------------------------- */

/* The request under test; parsing the next one frees the previous one. */
static struct wire_request req;
static int req_live;
static char msg[256];
static int msg_ok; /* after a failed parse: msg is a NUL-terminated, non-empty message */

static void release(void)
{
    if (req_live)
        wire_request_free(&req);
    req_live = 0;
}

/*
 * Parses len bytes of text from an exactly-sized heap copy, so ASan reports any read
 * past len, and frees the copy right away: a request borrows from req.root only.
 * req is filled with junk first, since callers (the gateway) never zero it.
 */
static int parse_raw(const char *text, size_t len, uint32_t max_body)
{
    release();
    char *copy = malloc(len ? len : 1);
    if (copy == NULL)
        abort();
    if (len)
        memcpy(copy, text, len);
    memset(&req, 0x5a, sizeof req);
    memset(msg, 'X', sizeof msg);
    int rv = wire_parse_request(copy, len, max_body, &req, msg, sizeof msg);
    free(copy);
    req_live = 1;
    msg_ok = memchr(msg, 0, sizeof msg) != NULL && msg[0] != 0;
    if (rv == 0)
        msg_ok = 1;
    return rv;
}

/* JSON written with ' for " (the tests' requests never need a literal apostrophe). */
static char *dq(const char *s)
{
    size_t n = strlen(s);
    char *t = malloc(n + 1);
    if (t == NULL)
        abort();
    for (size_t i = 0; i <= n; i++)
        t[i] = s[i] == '\'' ? '"' : s[i];
    return t;
}

static int parse_max(const char *squoted, uint32_t max_body)
{
    char *t = dq(squoted);
    int rv = parse_raw(t, strlen(t), max_body);
    free(t);
    return rv;
}

static int parse(const char *squoted)
{
    return parse_max(squoted, MAX_BODY);
}

static int sl_is(struct ch_slice s, const char *want)
{
    size_t n = strlen(want);
    return s.len == n && (n == 0 || memcmp(s.ptr, want, n) == 0);
}

static int id_ok(void)
{
    return memchr(req.id, 0, sizeof req.id) != NULL;
}

static void sb_printf(struct ch_wbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        ch_put_raw(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void sb_repeat(struct ch_wbuf *b, const char *s, size_t times)
{
    for (size_t i = 0; i < times; i++)
        ch_put_raw(b, s, strlen(s));
}

static int parse_buf(const struct ch_wbuf *b, uint32_t max_body)
{
    return parse_raw((const char *)b->data, b->len, max_body);
}

/* "'" + n copies of unit + "'" wrapped in a request template with one %s. */
static int parse_with_fill(const char *tmpl_squoted, const char *unit, size_t n,
                           uint32_t max_body)
{
    char *t = dq(tmpl_squoted);
    const char *at = strstr(t, "%s");
    if (at == NULL)
        abort();
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    ch_put_raw(&b, t, (size_t)(at - t));
    sb_repeat(&b, unit, n);
    ch_put_raw(&b, at + 2, strlen(at + 2));
    free(t);
    int rv = parse_buf(&b, max_body);
    ch_wbuf_free(&b);
    return rv;
}

/* Parses output text as any JSON value (NULs allowed: \u0000 is valid JSON). */
static json_t *load_any(const struct ch_wbuf *b)
{
    json_error_t e;
    return json_loadb((const char *)b->data, b->len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
}

/* Output text as a JSON object, or NULL. */
static json_t *load_obj(const struct ch_wbuf *b)
{
    json_error_t e;
    json_t *j = json_loadb((const char *)b->data, b->len, JSON_ALLOW_NUL, &e);
    if (j != NULL && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

static int jstr_is(json_t *o, const char *key, const char *want)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) && json_string_length(v) == strlen(want) &&
           memcmp(json_string_value(v), want, strlen(want)) == 0;
}

static int jint_is(json_t *o, const char *key, uint64_t want)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) && (uint64_t)json_integer_value(v) == want;
}

/* ---- requests: every op ------------------------------------------------------------ */

static void all_unused_zero(int *ok)
{
    *ok = req.conv == 0 && req.seq == 0 && req.before == 0 && req.after == 0 &&
          req.limit == 0 && req.kind == 0 && req.flag == 0 && req.has_display_name == 0 &&
          req.has_status == 0 && req.user.len == 0 && req.password.len == 0 &&
          req.token.len == 0 && req.display_name.len == 0 && req.status.len == 0 &&
          req.name.len == 0 && req.client_msg_id.len == 0 && req.body.len == 0 &&
          req.users == NULL && req.n_users == 0 && req.cursors == NULL &&
          req.n_cursors == 0 && req.settings == NULL && req.settings_len == 0;
}

static void op_names(void)
{
    static const char *const names[] = {
        NULL,       "register",      "login",       "auth",         "ping",
        "create",   "get",           "conversations", "add_member", "remove_member",
        "leave",    "send",          "edit",        "delete",       "react",
        "history",  "receipt",       "typing",      "presence",     "profile",
        "set_profile", "settings",   "set_settings", "sync",
    };
    CHECK_EQ_INT(sizeof names / sizeof names[0], WIRE_OP__MAX);
    for (int op = 1; op < WIRE_OP__MAX; op++) {
        const char *n = wire_op_name(op);
        CHECK(n != NULL);
        if (strcmp(n, names[op]) != 0) {
            fprintf(stderr, "  wire_op_name(%d) = %s, want %s\n", op, n, names[op]);
            CHECK(0);
        }
    }
    CHECK(wire_op_name(0) == NULL);
    CHECK(wire_op_name(-1) == NULL);
    CHECK(wire_op_name(WIRE_OP__MAX) == NULL);
    CHECK(wire_op_name(1000) == NULL);

    CHECK(strcmp(wire_role_name(CLOG_ROLE_OWNER), "owner") == 0);
    CHECK(strcmp(wire_role_name(CLOG_ROLE_ADMIN), "admin") == 0);
    CHECK(strcmp(wire_role_name(CLOG_ROLE_MEMBER), "member") == 0);
    CHECK(strcmp(wire_kind_name(CLOG_DIRECT), "direct") == 0);
    CHECK(strcmp(wire_kind_name(CLOG_GROUP), "group") == 0);
}

/* One minimal valid request per op: each parses to its op, named by wire_op_name. */
static void every_op_parses(void)
{
    static const struct {
        int op;
        const char *json;
    } v[] = {
        {WIRE_OP_REGISTER, "{'id':1,'op':'register','user':'alice','password':'hunter22'}"},
        {WIRE_OP_LOGIN, "{'id':1,'op':'login','user':'alice','password':'hunter22'}"},
        {WIRE_OP_AUTH, "{'id':1,'op':'auth','token':'a.b.c'}"},
        {WIRE_OP_PING, "{'id':1,'op':'ping'}"},
        {WIRE_OP_CREATE, "{'id':1,'op':'create','kind':'direct','members':['bob']}"},
        {WIRE_OP_GET, "{'id':1,'op':'get','conv':1}"},
        {WIRE_OP_CONVERSATIONS, "{'id':1,'op':'conversations'}"},
        {WIRE_OP_ADD_MEMBER, "{'id':1,'op':'add_member','conv':1,'user':'bob'}"},
        {WIRE_OP_REMOVE_MEMBER, "{'id':1,'op':'remove_member','conv':1,'user':'bob'}"},
        {WIRE_OP_LEAVE, "{'id':1,'op':'leave','conv':1}"},
        {WIRE_OP_SEND, "{'id':1,'op':'send','conv':1,'client_msg_id':'m','body':'x'}"},
        {WIRE_OP_EDIT, "{'id':1,'op':'edit','conv':1,'client_msg_id':'m','seq':1,'body':'x'}"},
        {WIRE_OP_DELETE, "{'id':1,'op':'delete','conv':1,'client_msg_id':'m','seq':1}"},
        {WIRE_OP_REACT, "{'id':1,'op':'react','conv':1,'client_msg_id':'m','seq':1,'emoji':'+1'}"},
        {WIRE_OP_HISTORY, "{'id':1,'op':'history','conv':1}"},
        {WIRE_OP_RECEIPT, "{'id':1,'op':'receipt','conv':1,'kind':'read','seq':1}"},
        {WIRE_OP_TYPING, "{'id':1,'op':'typing','conv':1}"},
        {WIRE_OP_PRESENCE, "{'id':1,'op':'presence','users':['bob']}"},
        {WIRE_OP_PROFILE, "{'id':1,'op':'profile'}"},
        {WIRE_OP_SET_PROFILE, "{'id':1,'op':'set_profile','status':'away'}"},
        {WIRE_OP_SETTINGS, "{'id':1,'op':'settings'}"},
        {WIRE_OP_SET_SETTINGS, "{'id':1,'op':'set_settings','settings':{}}"},
        {WIRE_OP_SYNC, "{'id':1,'op':'sync','cursors':{}}"},
    };
    CHECK_EQ_INT(sizeof v / sizeof v[0], WIRE_OP__MAX - 1);
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        int rv = parse(v[i].json);
        if (rv != 0 || req.op != v[i].op || strcmp(req.id, "1") != 0) {
            fprintf(stderr, "  %s: rv %s (%s), op %d, id %s\n", v[i].json, ch_errname(rv),
                    rv ? msg : "", req.op, id_ok() ? req.id : "?");
            CHECK(0);
        }
        CHECK(strcmp(wire_op_name(req.op), wire_op_name(v[i].op)) == 0);
    }
    /* ops without fields fill nothing; fields an op does not use stay zero */
    int ok = 0;
    CHECK_EQ_INT(parse("{'id':1,'op':'ping'}"), 0);
    all_unused_zero(&ok);
    CHECK(ok);
    CHECK_EQ_INT(parse("{'id':1,'op':'conversations'}"), 0);
    all_unused_zero(&ok);
    CHECK(ok);
    CHECK_EQ_INT(parse("{'id':1,'op':'settings'}"), 0);
    all_unused_zero(&ok);
    CHECK(ok);
    CHECK_EQ_INT(parse("{'op':'ping','id':1,'conv':5,'body':'x','users':['a']}"), 0);
    all_unused_zero(&ok);
    CHECK(ok);
    release();
}

static void accounts(void)
{
    CHECK_EQ_INT(parse("{'id':1,'op':'register','user':'alice','password':'hunter22',"
                       "'display_name':'Alice A.'}"),
                 0);
    CHECK_EQ_INT(req.op, WIRE_OP_REGISTER);
    CHECK(sl_is(req.user, "alice"));
    CHECK(sl_is(req.password, "hunter22"));
    CHECK(sl_is(req.display_name, "Alice A."));
    CHECK_EQ_INT(parse("{'id':1,'op':'register','user':'bob','password':'hunter22'}"), 0);
    CHECK(sl_is(req.user, "bob"));
    CHECK_EQ_INT(req.display_name.len, 0);
    /* password 8..256 bytes, counted in bytes of UTF-8 */
    CHECK_EQ_INT(parse("{'id':1,'op':'register','user':'bob','password':'12345678'}"), 0);
    CHECK_EQ_INT(parse("{'id':1,'op':'register','user':'bob','password':'\\u00e9\\u00e9\\u00e9\\u00e9'}"), 0);
    CHECK_EQ_INT(req.password.len, 8);
    CHECK_EQ_INT(parse_with_fill("{'id':1,'op':'register','user':'bob','password':'%s'}", "p",
                                 WIRE_MAX_PASSWORD, MAX_BODY),
                 0);
    CHECK_EQ_INT(req.password.len, WIRE_MAX_PASSWORD);
    /* user ids: 32 bytes of [a-z0-9_.-] */
    CHECK_EQ_INT(parse("{'id':1,'op':'register','user':'0a_b.c-d',"
                       "'password':'hunter22'}"),
                 0);
    CHECK(sl_is(req.user, "0a_b.c-d"));
    CHECK_EQ_INT(parse_with_fill("{'id':1,'op':'login','user':'%s','password':'hunter22'}", "u",
                                 WIRE_MAX_USER, MAX_BODY),
                 0);
    CHECK_EQ_INT(req.user.len, WIRE_MAX_USER);
    /* display name: up to 64 bytes */
    CHECK_EQ_INT(parse_with_fill("{'id':1,'op':'register','user':'bob','password':'hunter22',"
                                 "'display_name':'%s'}",
                                 "\xf0\x9f\x98\x80", WIRE_MAX_DISPLAY_NAME / 4, MAX_BODY),
                 0);
    CHECK_EQ_INT(req.display_name.len, WIRE_MAX_DISPLAY_NAME);

    CHECK_EQ_INT(parse("{'id':2,'op':'login','user':'alice','password':'hunter22'}"), 0);
    CHECK_EQ_INT(req.op, WIRE_OP_LOGIN);
    CHECK(sl_is(req.user, "alice"));
    CHECK(sl_is(req.password, "hunter22"));

    CHECK_EQ_INT(parse("{'id':3,'op':'auth','token':'eyJ.eyJ.sig'}"), 0);
    CHECK_EQ_INT(req.op, WIRE_OP_AUTH);
    CHECK(sl_is(req.token, "eyJ.eyJ.sig"));
    CHECK_EQ_INT(parse_with_fill("{'id':1,'op':'auth','token':'%s'}", "t", WIRE_MAX_TOKEN,
                                 MAX_BODY),
                 0);
    CHECK_EQ_INT(req.token.len, WIRE_MAX_TOKEN);
    release();
}

static void conversations(void)
{
    CHECK_EQ_INT(parse("{'id':5,'op':'create','kind':'group','members':['bob','carol'],"
                       "'name':'Team \\u00e9'}"),
                 0);
    CHECK_EQ_INT(req.op, WIRE_OP_CREATE);
    CHECK_EQ_INT(req.kind, CLOG_GROUP);
    CHECK_EQ_INT(req.n_users, 2);
    CHECK(req.users != NULL);
    CHECK(sl_is(req.users[0], "bob"));
    CHECK(sl_is(req.users[1], "carol"));
    CHECK(sl_is(req.name, "Team \xc3\xa9"));
    CHECK_EQ_U64(req.conv, 0);

    CHECK_EQ_INT(parse("{'id':5,'op':'create','kind':'direct','members':['bob']}"), 0);
    CHECK_EQ_INT(req.kind, CLOG_DIRECT);
    CHECK_EQ_INT(req.n_users, 1);
    CHECK(sl_is(req.users[0], "bob"));
    CHECK_EQ_INT(req.name.len, 0);

    CHECK_EQ_INT(parse("{'id':5,'op':'create','kind':'group','members':['bob']}"), 0);
    CHECK_EQ_INT(req.name.len, 0);
    CHECK_EQ_INT(parse_with_fill("{'id':1,'op':'create','kind':'group','members':['bob'],"
                                 "'name':'%s'}",
                                 "n", WIRE_MAX_NAME, MAX_BODY),
                 0);
    CHECK_EQ_INT(req.name.len, WIRE_MAX_NAME);

    /* WIRE_MAX_MEMBERS members, in order */
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    sb_printf(&b, "{\"id\":1,\"op\":\"create\",\"kind\":\"group\",\"members\":[");
    for (int i = 0; i < WIRE_MAX_MEMBERS; i++)
        sb_printf(&b, "%s\"u%d\"", i ? "," : "", i);
    sb_printf(&b, "]}");
    int rv = parse_buf(&b, MAX_BODY);
    ch_wbuf_free(&b);
    CHECK_EQ_INT(rv, 0);
    CHECK_EQ_INT(req.n_users, WIRE_MAX_MEMBERS);
    for (int i = 0; i < WIRE_MAX_MEMBERS; i++) {
        char want[16];
        snprintf(want, sizeof want, "u%d", i);
        CHECK(sl_is(req.users[i], want));
    }

    CHECK_EQ_INT(parse("{'id':6,'op':'get','conv':4711}"), 0);
    CHECK_EQ_INT(req.op, WIRE_OP_GET);
    CHECK_EQ_U64(req.conv, 4711);
    CHECK_EQ_INT(parse("{'id':6,'op':'get','conv':9007199254740991}"), 0);
    CHECK_EQ_U64(req.conv, WIRE_MAX_CONV);
    CHECK_EQ_INT(parse("{'id':6,'op':'get','conv':1}"), 0);
    CHECK_EQ_U64(req.conv, 1);

    CHECK_EQ_INT(parse("{'id':7,'op':'add_member','conv':9,'user':'dave','role':'admin'}"), 0);
    CHECK_EQ_INT(req.op, WIRE_OP_ADD_MEMBER);
    CHECK_EQ_U64(req.conv, 9);
    CHECK(sl_is(req.user, "dave"));
    CHECK_EQ_INT(req.kind, CLOG_ROLE_ADMIN);
    CHECK_EQ_INT(parse("{'id':7,'op':'add_member','conv':9,'user':'dave','role':'member'}"),
                 0);
    CHECK_EQ_INT(req.kind, CLOG_ROLE_MEMBER);
    CHECK_EQ_INT(parse("{'id':7,'op':'add_member','conv':9,'user':'dave'}"), 0);
    CHECK_EQ_INT(req.kind, CLOG_ROLE_MEMBER); /* the default */

    CHECK_EQ_INT(parse("{'id':8,'op':'remove_member','conv':10,'user':'erin'}"), 0);
    CHECK_EQ_INT(req.op, WIRE_OP_REMOVE_MEMBER);
    CHECK_EQ_U64(req.conv, 10);
    CHECK(sl_is(req.user, "erin"));

    CHECK_EQ_INT(parse("{'id':9,'op':'leave','conv':11}"), 0);
    CHECK_EQ_INT(req.op, WIRE_OP_LEAVE);
    CHECK_EQ_U64(req.conv, 11);
    release();
}

static void messages(void)
{
    CHECK_EQ_INT(parse("{'id':7,'op':'send','conv':4711,'client_msg_id':'m-1','body':'hi'}"), 0);
    CHECK_EQ_INT(req.op, WIRE_OP_SEND);
    CHECK_EQ_U64(req.conv, 4711);
    CHECK(sl_is(req.client_msg_id, "m-1"));
    CHECK(sl_is(req.body, "hi"));
    CHECK_EQ_U64(req.seq, 0);
    CHECK_EQ_INT(req.flag, 0);
    CHECK(strcmp(req.id, "7") == 0);
    /* escapes are decoded; the body is bytes of UTF-8 */
    {
        const char *raw = "{\"id\":7,\"op\":\"send\",\"conv\":1,\"client_msg_id\":\"m\","
                          "\"body\":\"a\\\"b\\\\c\\n\\u00e9\\ud83d\\ude00/\\/\"}";
        CHECK_EQ_INT(parse_raw(raw, strlen(raw), MAX_BODY), 0);
        CHECK(sl_is(req.body, "a\"b\\c\n\xc3\xa9\xf0\x9f\x98\x80//"));
    }
    /* body: 1 .. max_body bytes */
    CHECK_EQ_INT(parse_max("{'id':1,'op':'send','conv':1,'client_msg_id':'m',"
                           "'body':'0123456789'}",
                           10),
                 0);
    CHECK_EQ_INT(req.body.len, 10);
    CHECK_EQ_INT(parse_max("{'id':1,'op':'send','conv':1,'client_msg_id':'m',"
                           "'body':'\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9'}",
                           10),
                 0); /* 5 characters, 10 bytes */
    CHECK_EQ_INT(parse_with_fill("{'id':1,'op':'send','conv':1,'client_msg_id':'m','body':'%s'}",
                                 "b", MAX_BODY, MAX_BODY),
                 0);
    CHECK_EQ_INT(req.body.len, MAX_BODY);
    /* client_msg_id: 1..64 */
    CHECK_EQ_INT(parse_with_fill("{'id':1,'op':'send','conv':1,'client_msg_id':'%s','body':'x'}",
                                 "c", WIRE_MAX_CLIENT_MSG_ID, MAX_BODY),
                 0);
    CHECK_EQ_INT(req.client_msg_id.len, WIRE_MAX_CLIENT_MSG_ID);

    CHECK_EQ_INT(parse("{'id':1,'op':'edit','conv':3,'client_msg_id':'e-1','seq':12,"
                       "'body':'fixed'}"),
                 0);
    CHECK_EQ_INT(req.op, WIRE_OP_EDIT);
    CHECK_EQ_U64(req.conv, 3);
    CHECK_EQ_U64(req.seq, 12);
    CHECK(sl_is(req.client_msg_id, "e-1"));
    CHECK(sl_is(req.body, "fixed"));
    CHECK_EQ_INT(parse_max("{'id':1,'op':'edit','conv':3,'client_msg_id':'e','seq':1,"
                           "'body':'0123456789'}",
                           10),
                 0);

    CHECK_EQ_INT(parse("{'id':1,'op':'delete','conv':3,'client_msg_id':'d-1','seq':12}"), 0);
    CHECK_EQ_INT(req.op, WIRE_OP_DELETE);
    CHECK_EQ_U64(req.conv, 3);
    CHECK_EQ_U64(req.seq, 12);
    CHECK(sl_is(req.client_msg_id, "d-1"));
    CHECK_EQ_INT(req.body.len, 0);

    CHECK_EQ_INT(parse("{'id':1,'op':'react','conv':3,'client_msg_id':'r-1','seq':12,"
                       "'emoji':'\\ud83d\\udc4d'}"),
                 0);
    CHECK_EQ_INT(req.op, WIRE_OP_REACT);
    CHECK_EQ_U64(req.conv, 3);
    CHECK_EQ_U64(req.seq, 12);
    CHECK(sl_is(req.client_msg_id, "r-1"));
    CHECK(sl_is(req.body, "\xf0\x9f\x91\x8d"));
    CHECK_EQ_INT(req.flag, 0);
    CHECK_EQ_INT(parse("{'id':1,'op':'react','conv':3,'client_msg_id':'r','seq':12,"
                       "'emoji':'x','remove':true}"),
                 0);
    CHECK_EQ_INT(req.flag, 1);
    CHECK_EQ_INT(parse("{'id':1,'op':'react','conv':3,'client_msg_id':'r','seq':12,"
                       "'emoji':'x','remove':false}"),
                 0);
    CHECK_EQ_INT(req.flag, 0);
    /* emoji: 1..64 bytes */
    CHECK_EQ_INT(parse_with_fill("{'id':1,'op':'react','conv':3,'client_msg_id':'r','seq':1,"
                                 "'emoji':'%s'}",
                                 "\xf0\x9f\x91\x8d", WIRE_MAX_EMOJI / 4, MAX_BODY),
                 0);
    CHECK_EQ_INT(req.body.len, WIRE_MAX_EMOJI);
    release();
}

/*
 * history: "with before (or neither) the last limit events before it".  clog_history
 * reads before == 0 && after == 0 as the oldest page, so "neither" is decoded as a
 * before above every seq (the newest page), and both bounds as the window between.
 */
static void history(void)
{
    CHECK_EQ_INT(parse("{'id':1,'op':'history','conv':3}"), 0);
    CHECK_EQ_INT(req.op, WIRE_OP_HISTORY);
    CHECK_EQ_U64(req.conv, 3);
    CHECK(req.before > WIRE_MAX_CONV); /* the newest page */
    CHECK_EQ_U64(req.after, 0);
    CHECK_EQ_INT(req.limit, WIRE_DEFAULT_HISTORY);
    CHECK_EQ_INT(parse("{'id':1,'op':'history','conv':3,'after':0}"), 0);
    CHECK_EQ_U64(req.before, 0); /* from the start */
    CHECK_EQ_U64(req.after, 0);
    CHECK_EQ_INT(parse("{'id':1,'op':'history','conv':3,'before':10,'after':5}"), 0);
    CHECK_EQ_U64(req.before, 10); /* the window (5, 10) */
    CHECK_EQ_U64(req.after, 5);
    CHECK_EQ_INT(parse("{'id':1,'op':'history','conv':3,'before':7,'after':5}"), 0);
    CHECK_EQ_INT(parse("{'id':1,'op':'history','conv':3,'before':100,'limit':20}"), 0);
    CHECK_EQ_U64(req.before, 100);
    CHECK_EQ_U64(req.after, 0);
    CHECK_EQ_INT(req.limit, 20);
    CHECK_EQ_INT(parse("{'id':1,'op':'history','conv':3,'after':5,'limit':200}"), 0);
    CHECK_EQ_U64(req.after, 5);
    CHECK_EQ_U64(req.before, 0);
    CHECK_EQ_INT(req.limit, WIRE_MAX_HISTORY);
    CHECK_EQ_INT(parse("{'id':1,'op':'history','conv':3,'limit':1}"), 0);
    CHECK_EQ_INT(req.limit, 1);
    release();
}

static void receipts_typing_presence(void)
{
    CHECK_EQ_INT(parse("{'id':1,'op':'receipt','conv':3,'kind':'delivered','seq':40}"), 0);
    CHECK_EQ_INT(req.op, WIRE_OP_RECEIPT);
    CHECK_EQ_U64(req.conv, 3);
    CHECK_EQ_INT(req.kind, CLOG_CURSOR_DELIVERED);
    CHECK_EQ_U64(req.seq, 40);
    CHECK_EQ_INT(parse("{'id':1,'op':'receipt','conv':3,'kind':'read','seq':41}"), 0);
    CHECK_EQ_INT(req.kind, CLOG_CURSOR_READ);
    CHECK_EQ_U64(req.seq, 41);

    CHECK_EQ_INT(parse("{'id':1,'op':'typing','conv':3}"), 0);
    CHECK_EQ_INT(req.op, WIRE_OP_TYPING);
    CHECK_EQ_U64(req.conv, 3);
    CHECK_EQ_INT(req.flag, 1); /* default */
    CHECK_EQ_INT(parse("{'id':1,'op':'typing','conv':3,'state':false}"), 0);
    CHECK_EQ_INT(req.flag, 0);
    CHECK_EQ_INT(parse("{'id':1,'op':'typing','conv':3,'state':true}"), 0);
    CHECK_EQ_INT(req.flag, 1);

    CHECK_EQ_INT(parse("{'id':1,'op':'presence','users':['bob','carol','d.e-f_9']}"), 0);
    CHECK_EQ_INT(req.op, WIRE_OP_PRESENCE);
    CHECK_EQ_INT(req.n_users, 3);
    CHECK(sl_is(req.users[0], "bob"));
    CHECK(sl_is(req.users[1], "carol"));
    CHECK(sl_is(req.users[2], "d.e-f_9"));
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    sb_printf(&b, "{\"id\":1,\"op\":\"presence\",\"users\":[");
    for (int i = 0; i < WIRE_MAX_PRESENCE; i++)
        sb_printf(&b, "%s\"p%d\"", i ? "," : "", i);
    sb_printf(&b, "]}");
    int rv = parse_buf(&b, MAX_BODY);
    ch_wbuf_free(&b);
    CHECK_EQ_INT(rv, 0);
    CHECK_EQ_INT(req.n_users, WIRE_MAX_PRESENCE);
    CHECK(sl_is(req.users[WIRE_MAX_PRESENCE - 1], "p999"));
    release();
}

static void profiles_settings(void)
{
    CHECK_EQ_INT(parse("{'id':1,'op':'profile'}"), 0);
    CHECK_EQ_INT(req.op, WIRE_OP_PROFILE);
    CHECK_EQ_INT(req.user.len, 0);
    CHECK_EQ_INT(parse("{'id':1,'op':'profile','user':'bob'}"), 0);
    CHECK(sl_is(req.user, "bob"));

    CHECK_EQ_INT(parse("{'id':1,'op':'set_profile','display_name':'Al'}"), 0);
    CHECK_EQ_INT(req.op, WIRE_OP_SET_PROFILE);
    CHECK_EQ_INT(req.has_display_name, 1);
    CHECK_EQ_INT(req.has_status, 0);
    CHECK(sl_is(req.display_name, "Al"));
    CHECK_EQ_INT(parse("{'id':1,'op':'set_profile','status':''}"), 0);
    CHECK_EQ_INT(req.has_display_name, 0);
    CHECK_EQ_INT(req.has_status, 1);
    CHECK_EQ_INT(req.status.len, 0);
    CHECK_EQ_INT(parse("{'id':1,'op':'set_profile','display_name':'','status':'busy'}"), 0);
    CHECK_EQ_INT(req.has_display_name, 1);
    CHECK_EQ_INT(req.has_status, 1);
    CHECK_EQ_INT(req.display_name.len, 0);
    CHECK(sl_is(req.status, "busy"));
    CHECK_EQ_INT(parse_with_fill("{'id':1,'op':'set_profile','status':'%s'}", "s",
                                 WIRE_MAX_STATUS, MAX_BODY),
                 0);
    CHECK_EQ_INT(req.status.len, WIRE_MAX_STATUS);
    CHECK_EQ_INT(parse_with_fill("{'id':1,'op':'set_profile','display_name':'%s'}", "d",
                                 WIRE_MAX_DISPLAY_NAME, MAX_BODY),
                 0);
    CHECK_EQ_INT(req.display_name.len, WIRE_MAX_DISPLAY_NAME);

    /* settings are re-encoded compactly, in order */
    CHECK_EQ_INT(parse("{'id':1,'op':'set_settings','settings': { 'theme' : 'dark' ,\n"
                       "  'n' : [1, 2, {'x': null, 'y': true}] , 'o' : { } } }"),
                 0);
    CHECK_EQ_INT(req.op, WIRE_OP_SET_SETTINGS);
    CHECK(req.settings != NULL);
    {
        const char *want = "{\"theme\":\"dark\",\"n\":[1,2,{\"x\":null,\"y\":true}],\"o\":{}}";
        if (req.settings_len != strlen(want) || memcmp(req.settings, want, strlen(want)) != 0) {
            fprintf(stderr, "  settings = %.*s\n", (int)req.settings_len, req.settings);
            CHECK(0);
        }
    }
    CHECK_EQ_INT(parse("{'id':1,'op':'set_settings','settings':{}}"), 0);
    CHECK_EQ_INT(req.settings_len, 2);
    CHECK(memcmp(req.settings, "{}", 2) == 0);
    /* non-ASCII survives (escaped or not): the re-encoding parses to the same value */
    CHECK_EQ_INT(parse("{'id':1,'op':'set_settings','settings':{'e':'\\u00e9\\ud83d\\ude00'}}"),
                 0);
    {
        json_error_t e;
        json_t *j = json_loadb(req.settings, req.settings_len, 0, &e);
        CHECK(j != NULL);
        int same = jstr_is(j, "e", "\xc3\xa9\xf0\x9f\x98\x80");
        json_decref(j);
        CHECK(same);
    }
    /* exactly WIRE_MAX_SETTINGS encoded bytes: {"k":"xxx...x"} */
    CHECK_EQ_INT(parse_with_fill("{'id':1,'op':'set_settings','settings':{'k':'%s'}}", "x",
                                 WIRE_MAX_SETTINGS - 8, MAX_BODY),
                 0);
    CHECK_EQ_INT(req.settings_len, WIRE_MAX_SETTINGS);
    release();
}

static void sync_cursors(void)
{
    CHECK_EQ_INT(parse("{'id':1,'op':'sync','cursors':{'30':5,'4':0,'100':7,'9007199254740991':1}}"),
                 0);
    CHECK_EQ_INT(req.op, WIRE_OP_SYNC);
    CHECK_EQ_INT(req.n_cursors, 4);
    CHECK(req.cursors != NULL);
    CHECK_EQ_U64(req.cursors[0].conv, 4);
    CHECK_EQ_U64(req.cursors[0].seq, 0);
    CHECK_EQ_U64(req.cursors[1].conv, 30);
    CHECK_EQ_U64(req.cursors[1].seq, 5);
    CHECK_EQ_U64(req.cursors[2].conv, 100);
    CHECK_EQ_U64(req.cursors[2].seq, 7);
    CHECK_EQ_U64(req.cursors[3].conv, WIRE_MAX_CONV);
    CHECK_EQ_U64(req.cursors[3].seq, 1);

    CHECK_EQ_INT(parse("{'id':1,'op':'sync','cursors':{}}"), 0);
    CHECK_EQ_INT(req.n_cursors, 0);

    /* a literal repeated key: whatever jansson keeps, never two cursors for one conv */
    int rv = parse("{'id':1,'op':'sync','cursors':{'5':1,'5':2}}");
    CHECK(rv != 0 || req.n_cursors == 1);

    /* WIRE_MAX_CURSORS, given in descending order, come out sorted */
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    sb_printf(&b, "{\"id\":1,\"op\":\"sync\",\"cursors\":{");
    for (int i = WIRE_MAX_CURSORS; i >= 1; i--)
        sb_printf(&b, "%s\"%d\":%d", i == WIRE_MAX_CURSORS ? "" : ",", i * 3, i * 2);
    sb_printf(&b, "}}");
    rv = parse_buf(&b, MAX_BODY * 4);
    ch_wbuf_free(&b);
    CHECK_EQ_INT(rv, 0);
    CHECK_EQ_INT(req.n_cursors, WIRE_MAX_CURSORS);
    for (size_t i = 0; i < req.n_cursors; i++) {
        CHECK_EQ_U64(req.cursors[i].conv, (i + 1) * 3);
        CHECK_EQ_U64(req.cursors[i].seq, (i + 1) * 2);
    }
    release();
}

/* ---- request ids -------------------------------------------------------------------- */

/* The id text is valid JSON equal to `want` (a JSON literal). */
static int id_is_json(const char *want)
{
    if (!id_ok())
        return 0;
    json_error_t e;
    json_t *a = json_loads(req.id, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    json_t *b = json_loads(want, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    int same = a != NULL && b != NULL && json_equal(a, b);
    json_decref(a);
    json_decref(b);
    return same;
}

static void request_ids(void)
{
    static const struct {
        const char *json;
        const char *id;
    } exact[] = {
        {"{'id':7,'op':'ping'}", "7"},
        {"{'id':0,'op':'ping'}", "0"},
        {"{'id':-3,'op':'ping'}", "-3"},
        {"{'id':9007199254740993,'op':'ping'}", "9007199254740993"},
        {"{'id':'abc','op':'ping'}", "\"abc\""},
        {"{'id':'','op':'ping'}", "\"\""},
        {"{'op':'ping','id':'late'}", "\"late\""},
        {"{'id':null,'op':'ping'}", "null"},
        {"{'op':'ping'}", "null"},
        {"{'id':true,'op':'ping'}", "null"},
        {"{'id':[1],'op':'ping'}", "null"},
        {"{'id':{'a':1},'op':'ping'}", "null"},
        /* filled even when the rest is bad */
        {"{'id':'r1','op':'send'}", "\"r1\""},
        {"{'id':8,'op':'bogus'}", "8"},
        {"{'id':9}", "9"},
        {"{'id':10,'op':'send','conv':0,'client_msg_id':'m','body':'x'}", "10"},
        {"{'id':11,'op':'get','conv':'x'}", "11"},
        {"{'id':12,'op':5}", "12"},
        /* unusable messages */
        {"{'id':13,", "null"},
        {"[{'id':14,'op':'ping'}]", "null"},
        {"'abc'", "null"},
        {"", "null"},
        {"{'id':15,'op':'ping'} {'id':16}", "null"},
    };
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++) {
        parse(exact[i].json);
        if (!id_ok() || strcmp(req.id, exact[i].id) != 0) {
            fprintf(stderr, "  %s: id %s, want %s\n", exact[i].json, id_ok() ? req.id : "?",
                    exact[i].id);
            CHECK(0);
        }
    }
    /* a string id of WIRE_MAX_ID bytes is echoed; a longer one is not usable */
    CHECK_EQ_INT(parse_with_fill("{'id':'%s','op':'ping'}", "i", WIRE_MAX_ID, MAX_BODY), 0);
    CHECK_EQ_INT(strlen(req.id), WIRE_MAX_ID + 2);
    CHECK(req.id[0] == '"' && req.id[WIRE_MAX_ID + 1] == '"');
    parse_with_fill("{'id':'%s','op':'ping'}", "i", WIRE_MAX_ID + 1, MAX_BODY);
    CHECK(strcmp(req.id, "null") == 0);
    /* strings that need escaping: echoed as equal JSON text that fits, or null */
    static const char *const odd[] = {
        "{\"id\":\"a\\\"b\",\"op\":\"ping\"}",     "{\"id\":\"back\\\\slash\",\"op\":\"ping\"}",
        "{\"id\":\"\\u00e9t\\u00e9\",\"op\":\"ping\"}", "{\"id\":\"nl\\n\\u0001\",\"op\":\"ping\"}",
        "{\"id\":1.5,\"op\":\"ping\"}",
    };
    static const char *const odd_id[] = {"\"a\\\"b\"", "\"back\\\\slash\"", "\"\\u00e9t\\u00e9\"",
                                         "\"nl\\n\\u0001\"", "1.5"};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        parse_raw(odd[i], strlen(odd[i]), MAX_BODY);
        CHECK(id_ok());
        CHECK(strlen(req.id) <= WIRE_MAX_ID + 2);
        if (strcmp(req.id, "null") != 0 && !id_is_json(odd_id[i])) {
            fprintf(stderr, "  %s: id %s\n", odd[i], req.id);
            CHECK(0);
        }
    }
    /* a 64-byte string of quotes does not fit escaped: null, or still valid and short */
    parse_with_fill("{'id':'%s','op':'ping'}", "\\\"", WIRE_MAX_ID, MAX_BODY);
    CHECK(id_ok() && strlen(req.id) <= WIRE_MAX_ID + 2);
    if (strcmp(req.id, "null") != 0) {
        json_error_t e;
        json_t *j = json_loads(req.id, JSON_DECODE_ANY, &e);
        int good = json_is_string(j);
        json_decref(j);
        CHECK(good);
    }
    release();
}

/* ---- request errors ------------------------------------------------------------------- */

#define ANY_ERR (-1)        /* any failure */
#define INVAL_OR_LARGE (-2) /* CH_EINVAL or CH_ETOOLARGE */

struct bad {
    const char *json; /* ' for " */
    int err;
    const char *field; /* a word msg must contain, or NULL */
    uint32_t max_body; /* 0: MAX_BODY */
};

static const struct bad bads[] = {
    /* not JSON, not an object, no usable op */
    {"", CH_EMALFORMED, NULL, 0},
    {"{", CH_EMALFORMED, NULL, 0},
    {"{'id':1,'op':'ping'", CH_EMALFORMED, NULL, 0},
    {"{'id':1,'op':'ping'} x", CH_EMALFORMED, NULL, 0},
    {"{'id':1,'op':'ping'}{}", CH_EMALFORMED, NULL, 0},
    {"[1,2]", CH_EMALFORMED, NULL, 0},
    {"42", CH_EMALFORMED, NULL, 0},
    {"'ping'", CH_EMALFORMED, NULL, 0},
    {"null", CH_EMALFORMED, NULL, 0},
    {"{'id':1,'op':'ping',}", CH_EMALFORMED, NULL, 0},
    {"{'id':1}", CH_EMALFORMED, "op", 0},
    {"{}", CH_EMALFORMED, NULL, 0},
    {"{'id':1,'op':5}", CH_EMALFORMED, "op", 0},
    {"{'id':1,'op':null}", CH_EMALFORMED, "op", 0},
    {"{'id':1,'op':['ping']}", CH_EMALFORMED, "op", 0},
    {"{'id':1,'op':'fly'}", CH_EUNKNOWN_OP, NULL, 0},
    {"{'id':1,'op':'PING'}", CH_EUNKNOWN_OP, NULL, 0},
    {"{'id':1,'op':''}", CH_EUNKNOWN_OP, NULL, 0},
    {"{'id':1,'op':'ping '}", CH_EUNKNOWN_OP, NULL, 0},
    {"{'id':1,'op':'pin'}", CH_EUNKNOWN_OP, NULL, 0},
    {"{'id':1,'op':'ping\\u0000'}", ANY_ERR, NULL, 0},
    {"{'id':1,'op':'\\u0000ping'}", ANY_ERR, NULL, 0},

    /* register / login / auth */
    {"{'id':1,'op':'register','password':'hunter22'}", CH_EMALFORMED, "user", 0},
    {"{'id':1,'op':'register','user':5,'password':'hunter22'}", CH_EMALFORMED, "user", 0},
    {"{'id':1,'op':'register','user':null,'password':'hunter22'}", CH_EMALFORMED, "user", 0},
    {"{'id':1,'op':'register','user':'Alice','password':'hunter22'}", CH_EINVAL, "user", 0},
    {"{'id':1,'op':'register','user':'','password':'hunter22'}", CH_EINVAL, "user", 0},
    {"{'id':1,'op':'register','user':'-bob','password':'hunter22'}", CH_EINVAL, "user", 0},
    {"{'id':1,'op':'register','user':'_bob','password':'hunter22'}", CH_EINVAL, "user", 0},
    {"{'id':1,'op':'register','user':'bo b','password':'hunter22'}", CH_EINVAL, "user", 0},
    {"{'id':1,'op':'register','user':'b\\u00f6b','password':'hunter22'}", CH_EINVAL, "user", 0},
    {"{'id':1,'op':'register','user':'bob\\u0000x','password':'hunter22'}", ANY_ERR, NULL, 0},
    {"{'id':1,'op':'register','user':'abcdefghijklmnopqrstuvwxyz0123456','password':'hunter22'}",
     INVAL_OR_LARGE, "user", 0},
    {"{'id':1,'op':'register','user':'bob'}", CH_EMALFORMED, "password", 0},
    {"{'id':1,'op':'register','user':'bob','password':12345678}", CH_EMALFORMED, "password", 0},
    {"{'id':1,'op':'register','user':'bob','password':'short'}", CH_EINVAL, "password", 0},
    {"{'id':1,'op':'register','user':'bob','password':'1234567'}", CH_EINVAL, "password", 0},
    {"{'id':1,'op':'register','user':'bob','password':'hunter22','display_name':7}", CH_EMALFORMED,
     "display_name", 0},
    {"{'id':1,'op':'login','password':'hunter22'}", CH_EMALFORMED, "user", 0},
    {"{'id':1,'op':'login','user':'bob'}", CH_EMALFORMED, "password", 0},
    {"{'id':1,'op':'login','user':'BOB','password':'hunter22'}", CH_EINVAL, "user", 0},
    {"{'id':1,'op':'auth'}", CH_EMALFORMED, "token", 0},
    {"{'id':1,'op':'auth','token':5}", CH_EMALFORMED, "token", 0},

    /* create */
    {"{'id':1,'op':'create','members':['bob']}", CH_EMALFORMED, "kind", 0},
    {"{'id':1,'op':'create','kind':1,'members':['bob']}", CH_EMALFORMED, "kind", 0},
    {"{'id':1,'op':'create','kind':'triple','members':['bob']}", CH_EINVAL, "kind", 0},
    {"{'id':1,'op':'create','kind':'Group','members':['bob']}", CH_EINVAL, "kind", 0},
    {"{'id':1,'op':'create','kind':'group'}", CH_EMALFORMED, "members", 0},
    {"{'id':1,'op':'create','kind':'group','members':'bob'}", CH_EMALFORMED, "members", 0},
    {"{'id':1,'op':'create','kind':'group','members':{'bob':1}}", CH_EMALFORMED, "members", 0},
    {"{'id':1,'op':'create','kind':'group','members':[1]}", CH_EMALFORMED, "members", 0},
    {"{'id':1,'op':'create','kind':'group','members':['bob',null]}", CH_EMALFORMED, "members", 0},
    {"{'id':1,'op':'create','kind':'group','members':['Bob']}", CH_EINVAL, "members", 0},
    {"{'id':1,'op':'create','kind':'group','members':['bob','']}", CH_EINVAL, "members", 0},
    {"{'id':1,'op':'create','kind':'direct','members':[]}", CH_EINVAL, "members", 0},
    {"{'id':1,'op':'create','kind':'group','members':['bob'],'name':5}", CH_EMALFORMED, "name", 0},

    /* conv */
    {"{'id':1,'op':'get'}", CH_EMALFORMED, "conv", 0},
    {"{'id':1,'op':'get','conv':'4711'}", CH_EMALFORMED, "conv", 0},
    {"{'id':1,'op':'get','conv':1.5}", CH_EMALFORMED, "conv", 0},
    {"{'id':1,'op':'get','conv':true}", CH_EMALFORMED, "conv", 0},
    {"{'id':1,'op':'get','conv':null}", CH_EMALFORMED, "conv", 0},
    {"{'id':1,'op':'get','conv':[1]}", CH_EMALFORMED, "conv", 0},
    {"{'id':1,'op':'get','conv':0}", CH_EINVAL, "conv", 0},
    {"{'id':1,'op':'get','conv':-1}", CH_EINVAL, "conv", 0},
    {"{'id':1,'op':'get','conv':9007199254740992}", CH_EINVAL, "conv", 0},
    {"{'id':1,'op':'get','conv':9223372036854775807}", CH_EINVAL, "conv", 0},
    {"{'id':1,'op':'get','conv':-9223372036854775808}", CH_EINVAL, "conv", 0},
    {"{'id':1,'op':'leave'}", CH_EMALFORMED, "conv", 0},
    {"{'id':1,'op':'leave','conv':0}", CH_EINVAL, "conv", 0},
    {"{'id':1,'op':'typing'}", CH_EMALFORMED, "conv", 0},
    {"{'id':1,'op':'history'}", CH_EMALFORMED, "conv", 0},
    {"{'id':1,'op':'receipt','kind':'read','seq':1}", CH_EMALFORMED, "conv", 0},

    /* add_member / remove_member */
    {"{'id':1,'op':'add_member','conv':1}", CH_EMALFORMED, "user", 0},
    {"{'id':1,'op':'add_member','conv':1,'user':'X'}", CH_EINVAL, "user", 0},
    {"{'id':1,'op':'add_member','conv':1,'user':'bob','role':'owner'}", CH_EINVAL, "role", 0},
    {"{'id':1,'op':'add_member','conv':1,'user':'bob','role':'boss'}", CH_EINVAL, "role", 0},
    {"{'id':1,'op':'add_member','conv':1,'user':'bob','role':2}", CH_EMALFORMED, "role", 0},
    {"{'id':1,'op':'add_member','user':'bob'}", CH_EMALFORMED, "conv", 0},
    {"{'id':1,'op':'remove_member','conv':1}", CH_EMALFORMED, "user", 0},
    {"{'id':1,'op':'remove_member','conv':1,'user':'a b'}", CH_EINVAL, "user", 0},

    /* send / edit / delete / react */
    {"{'id':1,'op':'send','conv':1,'body':'x'}", CH_EMALFORMED, "client_msg_id", 0},
    {"{'id':1,'op':'send','conv':1,'client_msg_id':5,'body':'x'}", CH_EMALFORMED, "client_msg_id", 0},
    {"{'id':1,'op':'send','conv':1,'client_msg_id':'','body':'x'}", CH_EINVAL, "client_msg_id", 0},
    {"{'id':1,'op':'send','conv':1,'client_msg_id':'m'}", CH_EMALFORMED, "body", 0},
    {"{'id':1,'op':'send','conv':1,'client_msg_id':'m','body':5}", CH_EMALFORMED, "body", 0},
    {"{'id':1,'op':'send','conv':1,'client_msg_id':'m','body':null}", CH_EMALFORMED, "body", 0},
    {"{'id':1,'op':'send','conv':1,'client_msg_id':'m','body':''}", CH_EINVAL, "body", 0},
    {"{'id':1,'op':'send','conv':1,'client_msg_id':'m','body':'0123456789a'}", CH_ETOOLARGE, "body",
     10},
    {"{'id':1,'op':'send','conv':1,'client_msg_id':'m','body':'\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9a'}",
     CH_ETOOLARGE, "body", 10},
    {"{'id':1,'op':'send','conv':0,'client_msg_id':'m','body':'x'}", CH_EINVAL, "conv", 0},
    {"{'id':1,'op':'send','client_msg_id':'m','body':'x'}", CH_EMALFORMED, "conv", 0},
    {"{'id':1,'op':'edit','conv':1,'client_msg_id':'m','body':'x'}", CH_EMALFORMED, "seq", 0},
    {"{'id':1,'op':'edit','conv':1,'client_msg_id':'m','seq':'2','body':'x'}", CH_EMALFORMED, "seq", 0},
    {"{'id':1,'op':'edit','conv':1,'client_msg_id':'m','seq':0,'body':'x'}", CH_EINVAL, "seq", 0},
    {"{'id':1,'op':'edit','conv':1,'client_msg_id':'m','seq':-5,'body':'x'}", CH_EINVAL, "seq", 0},
    {"{'id':1,'op':'edit','conv':1,'client_msg_id':'m','seq':2}", CH_EMALFORMED, "body", 0},
    {"{'id':1,'op':'edit','conv':1,'client_msg_id':'m','seq':2,'body':''}", CH_EINVAL, "body", 0},
    {"{'id':1,'op':'edit','conv':1,'client_msg_id':'m','seq':2,'body':'0123456789a'}", CH_ETOOLARGE,
     "body", 10},
    {"{'id':1,'op':'edit','conv':1,'seq':2,'body':'x'}", CH_EMALFORMED, "client_msg_id", 0},
    {"{'id':1,'op':'delete','conv':1,'client_msg_id':'m'}", CH_EMALFORMED, "seq", 0},
    {"{'id':1,'op':'delete','conv':1,'seq':3}", CH_EMALFORMED, "client_msg_id", 0},
    {"{'id':1,'op':'delete','conv':1,'client_msg_id':'m','seq':0}", CH_EINVAL, "seq", 0},
    {"{'id':1,'op':'react','conv':1,'client_msg_id':'m','seq':3}", CH_EMALFORMED, "emoji", 0},
    {"{'id':1,'op':'react','conv':1,'client_msg_id':'m','seq':3,'emoji':5}", CH_EMALFORMED, "emoji",
     0},
    {"{'id':1,'op':'react','conv':1,'client_msg_id':'m','seq':3,'emoji':''}", CH_EINVAL, "emoji", 0},
    {"{'id':1,'op':'react','conv':1,'client_msg_id':'m','seq':3,'emoji':'x','remove':'yes'}",
     CH_EMALFORMED, "remove", 0},
    {"{'id':1,'op':'react','conv':1,'client_msg_id':'m','seq':3,'emoji':'x','remove':1}",
     CH_EMALFORMED, "remove", 0},
    {"{'id':1,'op':'react','conv':1,'client_msg_id':'m','emoji':'x'}", CH_EMALFORMED, "seq", 0},

    /* history */
    {"{'id':1,'op':'history','conv':1,'limit':0}", CH_EINVAL, "limit", 0},
    {"{'id':1,'op':'history','conv':1,'limit':201}", CH_EINVAL, "limit", 0},
    {"{'id':1,'op':'history','conv':1,'limit':-1}", CH_EINVAL, "limit", 0},
    {"{'id':1,'op':'history','conv':1,'limit':4294967346}", CH_EINVAL, "limit", 0},
    {"{'id':1,'op':'history','conv':1,'limit':'5'}", CH_EMALFORMED, "limit", 0},
    {"{'id':1,'op':'history','conv':1,'before':'5'}", CH_EMALFORMED, "before", 0},
    {"{'id':1,'op':'history','conv':1,'after':5.5}", CH_EMALFORMED, "after", 0},
    {"{'id':1,'op':'history','conv':1,'before':-1}", CH_EINVAL, "before", 0},
    {"{'id':1,'op':'history','conv':1,'after':-1}", CH_EINVAL, "after", 0},
    {"{'id':1,'op':'history','conv':1,'before':0}", CH_EINVAL, "before", 0},
    /* both bounds: a window that must hold at least one seq */
    {"{'id':1,'op':'history','conv':1,'before':6,'after':5}", CH_EINVAL, "before", 0},
    {"{'id':1,'op':'history','conv':1,'before':5,'after':5}", CH_EINVAL, "before", 0},
    {"{'id':1,'op':'history','conv':1,'before':5,'after':10}", CH_EINVAL, "before", 0},
    {"{'id':1,'op':'history','conv':0}", CH_EINVAL, "conv", 0},

    /* receipt / typing / presence */
    {"{'id':1,'op':'receipt','conv':1,'seq':1}", CH_EMALFORMED, "kind", 0},
    {"{'id':1,'op':'receipt','conv':1,'kind':2,'seq':1}", CH_EMALFORMED, "kind", 0},
    {"{'id':1,'op':'receipt','conv':1,'kind':'seen','seq':1}", CH_EINVAL, "kind", 0},
    {"{'id':1,'op':'receipt','conv':1,'kind':'read'}", CH_EMALFORMED, "seq", 0},
    {"{'id':1,'op':'receipt','conv':1,'kind':'read','seq':-1}", CH_EINVAL, "seq", 0},
    {"{'id':1,'op':'receipt','conv':1,'kind':'read','seq':'1'}", CH_EMALFORMED, "seq", 0},
    {"{'id':1,'op':'typing','conv':1,'state':'on'}", CH_EMALFORMED, "state", 0},
    {"{'id':1,'op':'typing','conv':1,'state':1}", CH_EMALFORMED, "state", 0},
    {"{'id':1,'op':'typing','conv':-4}", CH_EINVAL, "conv", 0},
    {"{'id':1,'op':'presence'}", CH_EMALFORMED, "users", 0},
    {"{'id':1,'op':'presence','users':'bob'}", CH_EMALFORMED, "users", 0},
    {"{'id':1,'op':'presence','users':[null]}", CH_EMALFORMED, "users", 0},
    {"{'id':1,'op':'presence','users':['bob',3]}", CH_EMALFORMED, "users", 0},
    {"{'id':1,'op':'presence','users':['BOB']}", CH_EINVAL, "users", 0},

    /* profile / set_profile / settings */
    {"{'id':1,'op':'profile','user':3}", CH_EMALFORMED, "user", 0},
    {"{'id':1,'op':'profile','user':'No!'}", CH_EINVAL, "user", 0},
    {"{'id':1,'op':'set_profile','display_name':5}", CH_EMALFORMED, "display_name", 0},
    {"{'id':1,'op':'set_profile','status':['x']}", CH_EMALFORMED, "status", 0},
    {"{'id':1,'op':'set_settings'}", CH_EMALFORMED, "settings", 0},
    {"{'id':1,'op':'set_settings','settings':[]}", CH_EMALFORMED, "settings", 0},
    {"{'id':1,'op':'set_settings','settings':'{}'}", CH_EMALFORMED, "settings", 0},
    {"{'id':1,'op':'set_settings','settings':null}", CH_EMALFORMED, "settings", 0},

    /* sync */
    {"{'id':1,'op':'sync'}", CH_EMALFORMED, "cursors", 0},
    {"{'id':1,'op':'sync','cursors':[]}", CH_EMALFORMED, "cursors", 0},
    {"{'id':1,'op':'sync','cursors':[[1,2]]}", CH_EMALFORMED, "cursors", 0},
    {"{'id':1,'op':'sync','cursors':5}", CH_EMALFORMED, "cursors", 0},
    {"{'id':1,'op':'sync','cursors':{'abc':1}}", CH_EINVAL, "cursors", 0},
    {"{'id':1,'op':'sync','cursors':{'':1}}", CH_EINVAL, "cursors", 0},
    {"{'id':1,'op':'sync','cursors':{'5x':1}}", CH_EINVAL, "cursors", 0},
    {"{'id':1,'op':'sync','cursors':{'0':1}}", CH_EINVAL, "cursors", 0},
    {"{'id':1,'op':'sync','cursors':{'-1':1}}", CH_EINVAL, "cursors", 0},
    {"{'id':1,'op':'sync','cursors':{'9007199254740992':1}}", CH_EINVAL, "cursors", 0},
    {"{'id':1,'op':'sync','cursors':{'18446744073709551617':1}}", CH_EINVAL, "cursors", 0},
    {"{'id':1,'op':'sync','cursors':{'1.5':1}}", CH_EINVAL, "cursors", 0},
    {"{'id':1,'op':'sync','cursors':{'5':-1}}", CH_EINVAL, "cursors", 0},
    {"{'id':1,'op':'sync','cursors':{'5':'1'}}", CH_EMALFORMED, "cursors", 0},
    {"{'id':1,'op':'sync','cursors':{'5':1.5}}", CH_EMALFORMED, "cursors", 0},
    {"{'id':1,'op':'sync','cursors':{'5':null}}", CH_EMALFORMED, "cursors", 0},
    /* the same conversation twice, spelt differently (or a bad spelling) */
    {"{'id':1,'op':'sync','cursors':{'7':1,'07':2}}", CH_EINVAL, "cursors", 0},
    {"{'id':1,'op':'sync','cursors':{'5':1,'+5':2}}", CH_EINVAL, "cursors", 0},
    {"{'id':1,'op':'sync','cursors':{'5':1,' 5':2}}", CH_EINVAL, "cursors", 0},
    {"{'id':1,'op':'sync','cursors':{'3':1,'4':1,'5':1,'005':2}}", CH_EINVAL, "cursors", 0},
};

static int err_matches(int rv, int want)
{
    if (want == ANY_ERR)
        return rv != 0;
    if (want == INVAL_OR_LARGE)
        return rv == CH_EINVAL || rv == CH_ETOOLARGE;
    return rv == want;
}

static const char *want_name(int want)
{
    return want == ANY_ERR          ? "any error"
           : want == INVAL_OR_LARGE ? "CH_EINVAL or CH_ETOOLARGE"
                                    : ch_errname(want);
}

/* Runs one bad case; reports every mismatch (does not stop at the first). */
static int bad_case(const char *what, int rv, int want, const char *field)
{
    int good = err_matches(rv, want) && msg_ok && id_ok();
    if (good && field != NULL && rv != 0 && strstr(msg, field) == NULL)
        good = 0;
    if (!good) {
        fprintf(stderr, "  %s\n    -> %s \"%s\"; want %s naming \"%s\"\n", what, ch_errname(rv),
                rv && msg_ok ? msg : "", want_name(want), field ? field : "");
        test__failed_checks++;
    }
    return good;
}

static void request_errors(void)
{
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
        int rv = parse_max(bads[i].json, bads[i].max_body ? bads[i].max_body : MAX_BODY);
        bad_case(bads[i].json, rv, bads[i].err, bads[i].field);
        /* the id (always 1 where given) is kept whenever the text was an object */
        char *t = dq(bads[i].json);
        json_error_t e;
        json_t *j = json_loads(t, JSON_REJECT_DUPLICATES, &e);
        int is_object = json_is_object(j);
        json_decref(j);
        free(t);
        if (rv != 0 && is_object && strncmp(bads[i].json, "{'id':1,", 8) == 0 &&
            strcmp(req.id, "1") != 0) {
            fprintf(stderr, "  %s\n    -> id %s, want 1\n", bads[i].json, req.id);
            test__failed_checks++;
        }
    }
    release();
}

/* Fields over their WIRE_MAX_* (and lists over their limits): CH_ETOOLARGE. */
static void request_too_large(void)
{
    static const struct {
        const char *tmpl;
        const char *unit;
        size_t n;
        const char *field;
    } v[] = {
        {"{'id':1,'op':'register','user':'bob','password':'%s'}", "p", WIRE_MAX_PASSWORD + 1,
         "password"},
        {"{'id':1,'op':'login','user':'bob','password':'%s'}", "p", WIRE_MAX_PASSWORD + 1,
         "password"},
        {"{'id':1,'op':'register','user':'bob','password':'hunter22','display_name':'%s'}", "d",
         WIRE_MAX_DISPLAY_NAME + 1, "display_name"},
        {"{'id':1,'op':'register','user':'bob','password':'hunter22','display_name':'%s'}",
         "\\u00e9", WIRE_MAX_DISPLAY_NAME / 2 + 1, "display_name"},
        {"{'id':1,'op':'auth','token':'%s'}", "t", WIRE_MAX_TOKEN + 1, "token"},
        {"{'id':1,'op':'send','conv':1,'client_msg_id':'%s','body':'x'}", "c",
         WIRE_MAX_CLIENT_MSG_ID + 1, "client_msg_id"},
        {"{'id':1,'op':'edit','conv':1,'client_msg_id':'%s','seq':1,'body':'x'}", "c",
         WIRE_MAX_CLIENT_MSG_ID + 1, "client_msg_id"},
        {"{'id':1,'op':'send','conv':1,'client_msg_id':'m','body':'%s'}", "b", MAX_BODY + 1,
         "body"},
        {"{'id':1,'op':'react','conv':1,'client_msg_id':'m','seq':1,'emoji':'%s'}", "e",
         WIRE_MAX_EMOJI + 1, "emoji"},
        {"{'id':1,'op':'react','conv':1,'client_msg_id':'m','seq':1,'emoji':'%s'}",
         "\\ud83d\\udc4d", WIRE_MAX_EMOJI / 4 + 1, "emoji"},
        {"{'id':1,'op':'create','kind':'group','members':['bob'],'name':'%s'}", "n",
         WIRE_MAX_NAME + 1, "name"},
        {"{'id':1,'op':'set_profile','display_name':'%s'}", "d", WIRE_MAX_DISPLAY_NAME + 1,
         "display_name"},
        {"{'id':1,'op':'set_profile','status':'%s'}", "s", WIRE_MAX_STATUS + 1, "status"},
        {"{'id':1,'op':'set_settings','settings':{'k':'%s'}}", "x", WIRE_MAX_SETTINGS - 7,
         "settings"},
        {"{'id':1,'op':'set_settings','settings':{'k':'%s'}}", "x", 100000, "settings"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        int rv = parse_with_fill(v[i].tmpl, v[i].unit, v[i].n, MAX_BODY * 4);
        if (strstr(v[i].tmpl, "'body'") != NULL)
            rv = parse_with_fill(v[i].tmpl, v[i].unit, v[i].n, MAX_BODY);
        char what[300];
        snprintf(what, sizeof what, "%s with %zu x \"%s\"", v[i].tmpl, v[i].n, v[i].unit);
        bad_case(what, rv, CH_ETOOLARGE, v[i].field);
        if (strcmp(req.id, "1") != 0) {
            fprintf(stderr, "  %s: id %s, want 1\n", what, req.id);
            test__failed_checks++;
        }
    }

    /* lists one over their limits */
    static const struct {
        const char *head;
        const char *fmt;
        const char *tail;
        int n;
        const char *field;
    } lists[] = {
        {"{\"id\":1,\"op\":\"create\",\"kind\":\"group\",\"members\":[", "\"u%d\"", "]}",
         WIRE_MAX_MEMBERS + 1, "members"},
        {"{\"id\":1,\"op\":\"presence\",\"users\":[", "\"u%d\"", "]}", WIRE_MAX_PRESENCE + 1,
         "users"},
        {"{\"id\":1,\"op\":\"sync\",\"cursors\":{", "\"%d\":1", "}}", WIRE_MAX_CURSORS + 1,
         "cursors"},
    };
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        struct ch_wbuf b;
        ch_wbuf_init(&b);
        sb_printf(&b, "%s", lists[i].head);
        for (int k = 1; k <= lists[i].n; k++) {
            if (k > 1)
                ch_put_u8(&b, ',');
            sb_printf(&b, lists[i].fmt, k);
        }
        sb_printf(&b, "%s", lists[i].tail);
        int rv = parse_buf(&b, MAX_BODY);
        ch_wbuf_free(&b);
        char what[200];
        snprintf(what, sizeof what, "%s %d entries", lists[i].head, lists[i].n);
        bad_case(what, rv, CH_ETOOLARGE, lists[i].field);
    }
    release();
}

/* Text need not be NUL-terminated; nothing past len is read or matters. */
static void length_bounded(void)
{
    const char *full = "{\"id\":1,\"op\":\"send\",\"conv\":5,\"client_msg_id\":\"m\",\"body\":\"hi\"}"
                       "GARBAGE\"}{";
    size_t len = strlen("{\"id\":1,\"op\":\"send\",\"conv\":5,\"client_msg_id\":\"m\",\"body\":\"hi\"}");
    CHECK_EQ_INT(parse_raw(full, len, MAX_BODY), 0);
    CHECK(sl_is(req.body, "hi"));
    /* without the trailing sanitizer copy: straight from a bigger stack buffer */
    char buf[128];
    memset(buf, '}', sizeof buf);
    memcpy(buf, "{\"id\":2,\"op\":\"ping\"}", 20);
    release();
    memset(&req, 0, sizeof req);
    CHECK_EQ_INT(wire_parse_request(buf, 20, MAX_BODY, &req, msg, sizeof msg), 0);
    req_live = 1;
    CHECK_EQ_INT(req.op, WIRE_OP_PING);
    CHECK(strcmp(req.id, "2") == 0);
    /* one byte short: the closing brace past len is not seen */
    CHECK_EQ_INT(parse_raw("{\"id\":1,\"op\":\"ping\"}", 19, MAX_BODY), CH_EMALFORMED);
    /* a string cut by len */
    CHECK_EQ_INT(parse_raw(full, 60, MAX_BODY), CH_EMALFORMED);
    /* every prefix of a valid request is an error, never a crash or an over-read */
    for (size_t n = 0; n < len; n++) {
        int rv = parse_raw(full, n, MAX_BODY);
        CHECK(rv != 0);
        CHECK(msg_ok && id_ok());
    }
    release();
}

/* ---- output: strings ------------------------------------------------------------------ */

/* wire_put_string(s) as JSON: 1 when it parses as a string, its bytes in *out. */
static int put_decode(const void *s, size_t len, struct ch_wbuf *text, struct ch_wbuf *out)
{
    ch_wbuf_reset(text);
    ch_wbuf_reset(out);
    wire_put_string(text, s, len);
    json_t *j = load_any(text);
    int ok = json_is_string(j);
    if (ok)
        ch_put_raw(out, json_string_value(j), json_string_length(j));
    json_decref(j);
    return ok && !ch_wbuf_error(text) && !ch_wbuf_error(out);
}

static int buf_is(const struct ch_wbuf *b, const void *want, size_t n)
{
    return b->len == n && (n == 0 || memcmp(b->data, want, n) == 0);
}

static int text_is(const struct ch_wbuf *b, const char *want)
{
    return buf_is(b, want, strlen(want));
}

static int has_bytes(const struct ch_wbuf *b, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= b->len; i++)
        if (memcmp(b->data + i, needle, n) == 0)
            return 1;
    return 0;
}

/* The escaped text has no raw control characters. */
static int no_raw_controls(const struct ch_wbuf *b)
{
    for (size_t i = 0; i < b->len; i++)
        if (b->data[i] < 0x20)
            return 0;
    return 1;
}

#define FFFD "\xef\xbf\xbd"

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

static void put_string_escapes(void)
{
    struct ch_wbuf t, o;
    ch_wbuf_init(&t);
    ch_wbuf_init(&o);
    CHECK(put_decode("", 0, &t, &o));
    CHECK(text_is(&t, "\"\""));
    CHECK(put_decode("hello", 5, &t, &o));
    CHECK(text_is(&t, "\"hello\""));
    CHECK(put_decode("a\"b\\c", 5, &t, &o));
    CHECK(text_is(&t, "\"a\\\"b\\\\c\""));
    CHECK(buf_is(&o, "a\"b\\c", 5));
    /* control characters: \u00XX (or a short escape), never raw */
    for (int c = 0; c < 0x20; c++) {
        char in[3] = {'x', (char)c, 'y'};
        CHECK(put_decode(in, 3, &t, &o));
        CHECK(buf_is(&o, in, 3));
        CHECK(no_raw_controls(&t));
    }
    CHECK(put_decode("\x01", 1, &t, &o));
    CHECK(text_is(&t, "\"\\u0001\""));
    CHECK(put_decode("\x1f", 1, &t, &o));
    CHECK(text_is(&t, "\"\\u001f\"") || text_is(&t, "\"\\u001F\""));
    CHECK(put_decode("\0", 1, &t, &o));
    CHECK(text_is(&t, "\"\\u0000\""));
    CHECK(buf_is(&o, "\0", 1));
    /* len, not the NUL, bounds the input */
    CHECK(put_decode("ab\0cd", 5, &t, &o));
    CHECK(buf_is(&o, "ab\0cd", 5));
    CHECK(put_decode("abcdef", 3, &t, &o));
    CHECK(text_is(&t, "\"abc\""));
    CHECK(put_decode("\x7f/<>&'", 6, &t, &o));
    CHECK(buf_is(&o, "\x7f/<>&'", 6));
    /* it appends */
    ch_wbuf_reset(&t);
    wire_put_raw(&t, "[");
    wire_put_string(&t, "a", 1);
    wire_put_raw(&t, ",");
    wire_put_string(&t, "\"", 1);
    wire_put_raw(&t, "]");
    CHECK(text_is(&t, "[\"a\",\"\\\"\"]"));
    ch_wbuf_free(&t);
    ch_wbuf_free(&o);
}

static void put_string_utf8(void)
{
    struct ch_wbuf t, o;
    ch_wbuf_init(&t);
    ch_wbuf_init(&o);
    /* valid UTF-8 round-trips exactly */
    static const char *const valid[] = {
        "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9d\x84\x9e", "\xef\xbf\xbf", "\xf4\x8f\xbf\xbf",
        "\xee\x80\x80", "\xc2\x80", "\xe0\xa0\x80", "\xf0\x90\x80\x80", "h\xc3\xa9llo \xe2\x82\xac",
        FFFD,
    };
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        CHECK(put_decode(valid[i], strlen(valid[i]), &t, &o));
        CHECK(buf_is(&o, valid[i], strlen(valid[i])));
    }
    /* every code point but the surrogates, in one string */
    struct ch_wbuf all;
    ch_wbuf_init(&all);
    for (uint32_t cp = 0; cp <= 0x10ffff; cp++) {
        if (cp >= 0xd800 && cp <= 0xdfff)
            continue;
        if (cp < 0x80) {
            ch_put_u8(&all, (uint8_t)cp);
        } else if (cp < 0x800) {
            ch_put_u8(&all, (uint8_t)(0xc0 | cp >> 6));
            ch_put_u8(&all, (uint8_t)(0x80 | (cp & 0x3f)));
        } else if (cp < 0x10000) {
            ch_put_u8(&all, (uint8_t)(0xe0 | cp >> 12));
            ch_put_u8(&all, (uint8_t)(0x80 | (cp >> 6 & 0x3f)));
            ch_put_u8(&all, (uint8_t)(0x80 | (cp & 0x3f)));
        } else {
            ch_put_u8(&all, (uint8_t)(0xf0 | cp >> 18));
            ch_put_u8(&all, (uint8_t)(0x80 | (cp >> 12 & 0x3f)));
            ch_put_u8(&all, (uint8_t)(0x80 | (cp >> 6 & 0x3f)));
            ch_put_u8(&all, (uint8_t)(0x80 | (cp & 0x3f)));
        }
    }
    CHECK(!ch_wbuf_error(&all));
    int ok = put_decode(all.data, all.len, &t, &o) && buf_is(&o, all.data, all.len);
    ch_wbuf_free(&all);
    CHECK(ok);

    /* invalid UTF-8 becomes U+FFFD; the rest is kept */
    CHECK(put_decode("a\xff" "b", 3, &t, &o));
    CHECK(buf_is(&o, "a" FFFD "b", 5));
    CHECK(put_decode("\x80", 1, &t, &o));
    CHECK(buf_is(&o, FFFD, 3));
    CHECK(put_decode("\xfe\xfe", 2, &t, &o));
    CHECK(buf_is(&o, FFFD FFFD, 6));
    CHECK(put_decode("x\xc3", 2, &t, &o)); /* truncated at the end */
    CHECK(buf_is(&o, "x" FFFD, 4));
    CHECK(put_decode("\xc3(", 2, &t, &o)); /* bad continuation: '(' survives */
    CHECK(buf_is(&o, FFFD "(", 4));
    CHECK(put_decode("\xe2\x82(", 3, &t, &o));
    CHECK(o.len >= 4 && memcmp(o.data + o.len - 1, "(", 1) == 0 && has_bytes(&o, FFFD));
    static const char *const invalid[] = {
        "\xc0\xaf",             /* overlong '/' */
        "\xc1\xbf",             /* overlong */
        "\xe0\x80\xaf",         /* overlong '/' */
        "\xf0\x80\x80\xaf",     /* overlong '/' */
        "\xed\xa0\x80",         /* surrogate U+D800 */
        "\xed\xbf\xbf",         /* surrogate U+DFFF */
        "\xed\xa0\xbd\xed\xb8\x80", /* CESU-8 pair */
        "\xf4\x90\x80\x80",     /* U+110000 */
        "\xf5\x80\x80\x80",
        "\xf8\x88\x80\x80\x80", /* 5-byte form */
        "\xfc\x84\x80\x80\x80\x80",
        "\xe2\x82",             /* truncated */
        "\xf0\x9f\x98",         /* truncated */
    };
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        size_t n = strlen(invalid[i]);
        if (!put_decode(invalid[i], n, &t, &o) || !has_bytes(&o, FFFD) ||
            has_bytes(&o, "/") || !utf8_valid(o.data, o.len)) {
            fprintf(stderr, "  invalid input %zu: output %.*s\n", i, (int)t.len,
                    (const char *)t.data);
            CHECK(0);
        }
    }
    /* pseudo-random bytes: always a JSON string; valid input comes back exactly */
    uint64_t s = 0x243f6a8885a308d3ull;
    uint8_t in[64];
    for (int round = 0; round < 20000; round++) {
        size_t n = (size_t)(round % 64);
        for (size_t i = 0; i < n; i++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            /* bias towards UTF-8 lead and continuation bytes */
            uint8_t c = (uint8_t)s;
            in[i] = (s >> 8) % 3 == 0 ? (uint8_t)(0x80 | (c & 0x3f)) : c;
        }
        if (!put_decode(in, n, &t, &o) || !utf8_valid(o.data, o.len) ||
            (utf8_valid(in, n) && !buf_is(&o, in, n))) {
            fprintf(stderr, "  random round %d failed: %.*s\n", round, (int)t.len,
                    (const char *)t.data);
            CHECK(0);
        }
    }
    ch_wbuf_free(&t);
    ch_wbuf_free(&o);
}

/* ---- output: small writers --------------------------------------------------------------- */

static void put_keys(void)
{
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    wire_put_raw(&b, "{");
    wire_put_key(&b, "a");
    wire_put_u64(&b, 1);
    wire_put_key(&b, "b");
    wire_put_bool(&b, 1);
    wire_put_key(&b, "c");
    wire_put_bool(&b, 0);
    wire_put_key(&b, "d");
    wire_put_string(&b, "x", 1);
    wire_put_key(&b, "o");
    wire_put_raw(&b, "{");
    wire_put_key(&b, "i");
    wire_put_u64(&b, 0);
    wire_put_raw(&b, "}");
    wire_put_key(&b, "l");
    wire_put_raw(&b, "[{");
    wire_put_key(&b, "m");
    wire_put_u64(&b, 18446744073709551ull);
    wire_put_raw(&b, "},{");
    wire_put_key(&b, "n");
    wire_put_u64(&b, WIRE_MAX_CONV);
    wire_put_raw(&b, "}]}");
    CHECK(!ch_wbuf_error(&b));
    CHECK(text_is(&b, "{\"a\":1,\"b\":true,\"c\":false,\"d\":\"x\",\"o\":{\"i\":0},"
                      "\"l\":[{\"m\":18446744073709551},{\"n\":9007199254740991}]}"));
    json_t *j = load_obj(&b);
    CHECK(j != NULL);
    json_decref(j);
    ch_wbuf_reset(&b);
    wire_put_u64(&b, 1234567890123ull);
    CHECK(text_is(&b, "1234567890123"));
    ch_wbuf_reset(&b);
    wire_put_u64(&b, UINT64_MAX);
    CHECK(text_is(&b, "18446744073709551615"));
    ch_wbuf_reset(&b);
    wire_put_u64(&b, 0);
    CHECK(text_is(&b, "0"));
    ch_wbuf_free(&b);
}

static void user_ids(void)
{
    static const char *const good[] = {"a", "alice", "0", "0abc", "a_b.c-d", "bob.", "x-",
                                       "abcdefghijklmnopqrstuvwxyz012345"};
    static const char *const bad[] = {"", "Alice", "_a", ".a", "-a", "a b", "a@b", "a/b",
                                      "abcdefghijklmnopqrstuvwxyz0123456", "\xc3\xa9", "a\xc3\xa9",
                                      "a\"", "a\\", "a\n"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!wire_user_valid(good[i], strlen(good[i]))) {
            fprintf(stderr, "  wire_user_valid(\"%s\") = 0\n", good[i]);
            CHECK(0);
        }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (wire_user_valid(bad[i], strlen(bad[i]))) {
            fprintf(stderr, "  wire_user_valid(\"%s\") = 1\n", bad[i]);
            CHECK(0);
        }
    CHECK(!wire_user_valid("a\0b", 3));
    CHECK(!wire_user_valid("ab\0", 3));
    CHECK(wire_user_valid("aliceX", 5)); /* only len bytes count */
    CHECK(!wire_user_valid("Xalice", 1));
    CHECK(!wire_user_valid("alice", 0));
    for (int c = 0; c < 256; c++) {
        char s[2] = {'a', (char)c};
        int want = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
                   c == '-';
        CHECK_EQ_INT(!!wire_user_valid(s, 2), want);
    }
}

/* ---- output: replies ---------------------------------------------------------------------- */

static void replies(void)
{
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    wire_reply_begin(&b, "7");
    wire_put_raw(&b, "{");
    wire_put_key(&b, "x");
    wire_put_u64(&b, 1);
    wire_put_raw(&b, "}");
    wire_reply_end(&b);
    CHECK(text_is(&b, "{\"type\":\"reply\",\"id\":7,\"ok\":true,\"result\":{\"x\":1}}"));
    json_t *j = load_obj(&b);
    CHECK(j != NULL);
    CHECK(jstr_is(j, "type", "reply"));
    CHECK(jint_is(j, "id", 7));
    CHECK(json_is_true(json_object_get(j, "ok")));
    CHECK(jint_is(json_object_get(j, "result"), "x", 1));
    CHECK(json_object_get(j, "error") == NULL);
    json_decref(j);

    ch_wbuf_reset(&b);
    wire_reply_begin(&b, "\"abc\"");
    wire_put_raw(&b, "{}");
    wire_reply_end(&b);
    j = load_obj(&b);
    CHECK(j != NULL);
    CHECK(jstr_is(j, "id", "abc"));
    CHECK(json_is_object(json_object_get(j, "result")));
    json_decref(j);

    ch_wbuf_reset(&b);
    wire_reply_begin(&b, "null");
    wire_put_raw(&b, "{}");
    wire_reply_end(&b);
    j = load_obj(&b);
    CHECK(j != NULL);
    CHECK(json_is_null(json_object_get(j, "id")));
    json_decref(j);

    /* every error code: its wire code and message */
    for (int err = 1; err < CH__ERR_COUNT; err++) {
        ch_wbuf_reset(&b);
        wire_reply_error(&b, "7", err, NULL, 0);
        j = load_obj(&b);
        CHECK(j != NULL);
        json_t *e = json_object_get(j, "error");
        int good = jstr_is(j, "type", "reply") && jint_is(j, "id", 7) &&
                   json_is_false(json_object_get(j, "ok")) && json_is_object(e) &&
                   jstr_is(e, "code", ch_errcode(err)) &&
                   jstr_is(e, "message", ch_strerror(err)) &&
                   json_object_get(j, "result") == NULL &&
                   json_object_get(j, "retry_after_ms") == NULL &&
                   json_object_get(e, "retry_after_ms") == NULL;
        if (!good)
            fprintf(stderr, "  error reply for %s: %.*s\n", ch_errname(err), (int)b.len,
                    (const char *)b.data);
        json_decref(j);
        CHECK(good);
    }
    /* a message of the caller's, escaped */
    ch_wbuf_reset(&b);
    wire_reply_error(&b, "\"r-1\"", CH_EMALFORMED, "conv: \"x\" is not\tan integer\n\\", 0);
    j = load_obj(&b);
    CHECK(j != NULL);
    CHECK(jstr_is(j, "id", "r-1"));
    CHECK(json_is_false(json_object_get(j, "ok")));
    CHECK(jstr_is(json_object_get(j, "error"), "code", "bad_request"));
    CHECK(jstr_is(json_object_get(j, "error"), "message", "conv: \"x\" is not\tan integer\n\\"));
    json_decref(j);
    ch_wbuf_reset(&b);
    wire_reply_error(&b, "null", CH_EINVAL, "bad \xff byte", 0);
    j = load_obj(&b);
    CHECK(j != NULL);
    CHECK(json_is_null(json_object_get(j, "id")));
    CHECK(jstr_is(json_object_get(j, "error"), "message", "bad " FFFD " byte"));
    json_decref(j);
    /* retry_after_ms only when non-zero */
    ch_wbuf_reset(&b);
    wire_reply_error(&b, "9", CH_ERATELIMITED, NULL, 1500);
    j = load_obj(&b);
    CHECK(j != NULL);
    {
        json_t *e = json_object_get(j, "error");
        CHECK(jstr_is(e, "code", "rate_limited"));
        json_t *top = json_object_get(j, "retry_after_ms"), *in = json_object_get(e, "retry_after_ms");
        CHECK((top == NULL) != (in == NULL)); /* in exactly one place */
        CHECK(json_integer_value(top ? top : in) == 1500);
    }
    json_decref(j);
    ch_wbuf_reset(&b);
    wire_reply_error(&b, "9", CH_ERATELIMITED, NULL, 0);
    j = load_obj(&b);
    CHECK(j != NULL);
    CHECK(json_object_get(j, "retry_after_ms") == NULL);
    CHECK(json_object_get(json_object_get(j, "error"), "retry_after_ms") == NULL);
    json_decref(j);
    /* replies append */
    ch_wbuf_reset(&b);
    wire_put_raw(&b, "[");
    wire_reply_error(&b, "1", CH_ENOTFOUND, NULL, 0);
    wire_put_raw(&b, ",");
    wire_reply_begin(&b, "2");
    wire_put_raw(&b, "{}");
    wire_reply_end(&b);
    wire_put_raw(&b, "]");
    j = load_any(&b);
    CHECK(json_is_array(j) && json_array_size(j) == 2);
    CHECK(jint_is(json_array_get(j, 1), "id", 2));
    json_decref(j);
    ch_wbuf_free(&b);
}

/* ---- output: events ------------------------------------------------------------------------ */

static struct clog_event mk(uint8_t type, uint8_t kind, uint64_t seq, uint64_t ref,
                            const char *actor, const char *target, const char *cmid,
                            const char *body)
{
    struct clog_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = type;
    ev.kind = kind;
    ev.conv = 4711;
    ev.seq = seq;
    ev.ts = 1795000000000ull + seq;
    ev.ref_seq = ref;
    ev.actor = ch_slice_str(actor);
    ev.target = ch_slice_str(target);
    ev.client_msg_id = ch_slice_str(cmid);
    ev.body = ch_slice_str(body);
    return ev;
}

/* The event as a JSON object, checked for the common fields and the bare/type rule. */
static json_t *event_json(const struct clog_event *ev, int bare, const char *name)
{
    struct ch_wbuf b;
    ch_wbuf_init(&b);
    wire_event(&b, ev, bare);
    json_t *j = load_obj(&b);
    int good = j != NULL && jint_is(j, "conv", ev->conv) && jint_is(j, "seq", ev->seq) &&
               jint_is(j, "ts", ev->ts) && jstr_is(j, "event", name);
    if (good && ev->actor.len > 0 && utf8_valid(ev->actor.ptr, ev->actor.len)) {
        json_t *from = json_object_get(j, "from");
        good = json_is_string(from) && json_string_length(from) == ev->actor.len &&
               memcmp(json_string_value(from), ev->actor.ptr, ev->actor.len) == 0;
    }
    if (good)
        good = bare ? json_object_get(j, "type") == NULL : jstr_is(j, "type", "event");
    if (!good) {
        fprintf(stderr, "  event %s bare=%d: %.*s\n", name, bare, (int)b.len,
                (const char *)b.data);
        json_decref(j);
        j = NULL;
    }
    ch_wbuf_free(&b);
    return j;
}

static void event_created(void)
{
    struct ch_wbuf m;
    ch_wbuf_init(&m);
    size_t at = clog_members_begin(&m);
    clog_members_put(&m, ch_slice_str("alice"), CLOG_ROLE_OWNER);
    clog_members_put(&m, ch_slice_str("bob"), CLOG_ROLE_MEMBER);
    clog_members_put(&m, ch_slice_str("carol"), CLOG_ROLE_ADMIN);
    clog_members_end(&m, at, 3);
    struct clog_event ev = mk(CLOG_EV_CREATED, CLOG_GROUP, 1, 0, "alice", "", "", "Team");
    ev.members = (struct ch_slice){m.data, m.len};
    for (int bare = 0; bare <= 1; bare++) {
        json_t *j = event_json(&ev, bare, "created");
        CHECK(j != NULL);
        CHECK(jstr_is(j, "from", "alice"));
        CHECK(jstr_is(j, "kind", "group"));
        CHECK(jstr_is(j, "name", "Team"));
        json_t *mem = json_object_get(j, "members");
        int good = json_is_array(mem) && json_array_size(mem) == 3 &&
                   jstr_is(json_array_get(mem, 0), "user", "alice") &&
                   jstr_is(json_array_get(mem, 0), "role", "owner") &&
                   jstr_is(json_array_get(mem, 1), "user", "bob") &&
                   jstr_is(json_array_get(mem, 1), "role", "member") &&
                   jstr_is(json_array_get(mem, 2), "user", "carol") &&
                   jstr_is(json_array_get(mem, 2), "role", "admin");
        json_decref(j);
        CHECK(good);
    }
    /* a direct conversation: empty name, two members */
    ch_wbuf_reset(&m);
    at = clog_members_begin(&m);
    clog_members_put(&m, ch_slice_str("bob"), CLOG_ROLE_MEMBER);
    clog_members_put(&m, ch_slice_str("alice"), CLOG_ROLE_MEMBER);
    clog_members_end(&m, at, 2);
    ev = mk(CLOG_EV_CREATED, CLOG_DIRECT, 1, 0, "alice", "", "", "");
    ev.members = (struct ch_slice){m.data, m.len};
    json_t *j = event_json(&ev, 0, "created");
    CHECK(j != NULL);
    CHECK(jstr_is(j, "kind", "direct"));
    json_t *name = json_object_get(j, "name");
    CHECK(name == NULL || jstr_is(j, "name", ""));
    CHECK(json_array_size(json_object_get(j, "members")) == 2);
    json_decref(j);
    /* no members at all */
    ch_wbuf_reset(&m);
    at = clog_members_begin(&m);
    clog_members_end(&m, at, 0);
    ev = mk(CLOG_EV_CREATED, CLOG_GROUP, 1, 0, "alice", "", "", "x");
    ev.members = (struct ch_slice){m.data, m.len};
    j = event_json(&ev, 1, "created");
    CHECK(j != NULL);
    CHECK(json_is_array(json_object_get(j, "members")) &&
          json_array_size(json_object_get(j, "members")) == 0);
    json_decref(j);
    ch_wbuf_free(&m);
}

static void event_members(void)
{
    struct clog_event ev = mk(CLOG_EV_MEMBER_ADDED, CLOG_ROLE_ADMIN, 2, 0, "alice", "dave", "", "");
    json_t *j = event_json(&ev, 0, "member_added");
    CHECK(j != NULL);
    CHECK(jstr_is(j, "from", "alice"));
    CHECK(jstr_is(j, "user", "dave"));
    CHECK(jstr_is(j, "role", "admin"));
    json_decref(j);
    ev.kind = CLOG_ROLE_MEMBER;
    j = event_json(&ev, 1, "member_added");
    CHECK(j != NULL);
    CHECK(jstr_is(j, "role", "member"));
    json_decref(j);

    ev = mk(CLOG_EV_MEMBER_REMOVED, 0, 3, 0, "alice", "dave", "", "");
    j = event_json(&ev, 0, "member_removed");
    CHECK(j != NULL);
    CHECK(jstr_is(j, "user", "dave"));
    json_decref(j);

    ev = mk(CLOG_EV_MEMBER_LEFT, 0, 4, 0, "alice", "bob", "", "");
    j = event_json(&ev, 0, "member_left");
    CHECK(j != NULL);
    CHECK(jstr_is(j, "from", "alice"));
    CHECK(jstr_is(j, "new_owner", "bob"));
    json_decref(j);
    ev = mk(CLOG_EV_MEMBER_LEFT, 0, 5, 0, "carol", "", "", "");
    j = event_json(&ev, 1, "member_left");
    CHECK(j != NULL);
    json_t *no = json_object_get(j, "new_owner");
    CHECK(no == NULL || json_is_null(no));
    json_decref(j);
}

static void event_messages(void)
{
    struct clog_event ev = mk(CLOG_EV_MESSAGE, 0, 12, 0, "alice", "", "m-1", "hi");
    for (int bare = 0; bare <= 1; bare++) {
        json_t *j = event_json(&ev, bare, "message");
        CHECK(j != NULL);
        CHECK(jstr_is(j, "from", "alice"));
        CHECK(jstr_is(j, "client_msg_id", "m-1"));
        CHECK(jstr_is(j, "body", "hi"));
        CHECK(jint_is(j, "ts", 1795000000012ull));
        json_decref(j);
    }
    /* the body is any bytes: escaped, NULs kept, invalid UTF-8 replaced */
    static const char body[] = "q\"b\\s\n\x01\0z\xff\xc3\xa9";
    ev.body = (struct ch_slice){(const uint8_t *)body, sizeof body - 1};
    json_t *j = event_json(&ev, 0, "message");
    CHECK(j != NULL);
    CHECK(json_string_length(json_object_get(j, "body")) == 14);
    CHECK(memcmp(json_string_value(json_object_get(j, "body")),
                 "q\"b\\s\n\x01\0z" FFFD "\xc3\xa9", 14) == 0);
    json_decref(j);

    ev = mk(CLOG_EV_EDITED, 0, 13, 12, "alice", "", "e-1", "hello");
    j = event_json(&ev, 0, "edited");
    CHECK(j != NULL);
    CHECK(jint_is(j, "ref", 12));
    CHECK(jstr_is(j, "client_msg_id", "e-1"));
    CHECK(jstr_is(j, "body", "hello"));
    json_decref(j);

    ev = mk(CLOG_EV_DELETED, 0, 14, 12, "bob", "", "d-1", "");
    j = event_json(&ev, 1, "deleted");
    CHECK(j != NULL);
    CHECK(jstr_is(j, "from", "bob"));
    CHECK(jint_is(j, "ref", 12));
    CHECK(jstr_is(j, "client_msg_id", "d-1"));
    json_decref(j);

    ev = mk(CLOG_EV_REACTION, CLOG_REACT_ADD, 15, 12, "carol", "", "r-1", "\xf0\x9f\x91\x8d");
    j = event_json(&ev, 0, "reaction");
    CHECK(j != NULL);
    CHECK(jint_is(j, "ref", 12));
    CHECK(jstr_is(j, "emoji", "\xf0\x9f\x91\x8d"));
    CHECK(jstr_is(j, "action", "add"));
    json_decref(j);
    ev.kind = CLOG_REACT_REMOVE;
    j = event_json(&ev, 1, "reaction");
    CHECK(j != NULL);
    CHECK(jstr_is(j, "action", "remove"));
    json_decref(j);
}

static void event_receipts(void)
{
    struct clog_event ev = mk(CLOG_EV_RECEIPT, CLOG_CURSOR_DELIVERED, 0, 40, "bob", "", "", "");
    json_t *j = event_json(&ev, 0, "receipt");
    CHECK(j != NULL);
    CHECK(jint_is(j, "seq", 0));
    CHECK(jstr_is(j, "from", "bob"));
    CHECK(jstr_is(j, "kind", "delivered"));
    CHECK(jint_is(j, "upto", 40));
    json_decref(j);
    ev.kind = CLOG_CURSOR_READ;
    ev.ref_seq = WIRE_MAX_CONV;
    j = event_json(&ev, 1, "receipt");
    CHECK(j != NULL);
    CHECK(jstr_is(j, "kind", "read"));
    CHECK(jint_is(j, "upto", WIRE_MAX_CONV));
    json_decref(j);
}

/* History pages: bare events in an array; odd bytes in every string field. */
static void event_pages(void)
{
    struct ch_wbuf b, m;
    ch_wbuf_init(&b);
    ch_wbuf_init(&m);
    size_t at = clog_members_begin(&m);
    clog_members_put(&m, ch_slice_str("a\"\xff"), CLOG_ROLE_OWNER);
    clog_members_end(&m, at, 1);
    struct clog_event evs[] = {
        mk(CLOG_EV_CREATED, CLOG_GROUP, 1, 0, "a\"\xff", "", "", "n\\\x02\xc0"),
        mk(CLOG_EV_MEMBER_ADDED, CLOG_ROLE_MEMBER, 2, 0, "a\"\xff", "t\n\xed\xa0\x80", "", ""),
        mk(CLOG_EV_MEMBER_REMOVED, 0, 3, 0, "a\"\xff", "t\n", "", ""),
        mk(CLOG_EV_MEMBER_LEFT, 0, 4, 0, "a\"\xff", "\x7f\x1f", "", ""),
        mk(CLOG_EV_MESSAGE, 0, 5, 0, "a\"\xff", "", "c\x01\xf8", "\xe2\x82"),
        mk(CLOG_EV_EDITED, 0, 6, 5, "a\"\xff", "", "c\"", "b\\"),
        mk(CLOG_EV_DELETED, 0, 7, 5, "a\"\xff", "", "\xf4\x90\x80\x80", ""),
        mk(CLOG_EV_REACTION, CLOG_REACT_REMOVE, 8, 5, "a\"\xff", "", "c", "\xff\xfe"),
        mk(CLOG_EV_RECEIPT, CLOG_CURSOR_READ, 0, 8, "a\"\xff", "", "", ""),
    };
    evs[0].members = (struct ch_slice){m.data, m.len};
    static const char *const names[] = {"created", "member_added", "member_removed",
                                        "member_left", "message", "edited",
                                        "deleted", "reaction", "receipt"};
    /* every event a conversation holds (USER_DISABLED is stream-only: the gateway
     * acts on it and never renders it) */
    CHECK_EQ_INT(sizeof evs / sizeof evs[0], CLOG_EV__MAX - 2);
    for (int bare = 0; bare <= 1; bare++) {
        ch_wbuf_reset(&b);
        wire_put_raw(&b, "[");
        for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++) {
            if (i)
                wire_put_raw(&b, ",");
            wire_event(&b, &evs[i], bare);
        }
        wire_put_raw(&b, "]");
        json_t *j = load_any(&b);
        int good = json_is_array(j) && json_array_size(j) == sizeof evs / sizeof evs[0];
        for (size_t i = 0; good && i < json_array_size(j); i++) {
            json_t *e = json_array_get(j, i);
            good = jstr_is(e, "event", names[i]) && jint_is(e, "seq", evs[i].seq) &&
                   jstr_is(e, "from", "a\"" FFFD) &&
                   (bare ? json_object_get(e, "type") == NULL : jstr_is(e, "type", "event"));
        }
        if (!good)
            fprintf(stderr, "  page bare=%d: %.*s\n", bare, (int)b.len, (const char *)b.data);
        json_decref(j);
        CHECK(good);
    }
    ch_wbuf_free(&b);
    ch_wbuf_free(&m);
}

TEST_MAIN(TEST_CASE(op_names), TEST_CASE(every_op_parses), TEST_CASE(accounts),
          TEST_CASE(conversations), TEST_CASE(messages), TEST_CASE(history),
          TEST_CASE(receipts_typing_presence), TEST_CASE(profiles_settings),
          TEST_CASE(sync_cursors), TEST_CASE(request_ids), TEST_CASE(request_errors),
          TEST_CASE(request_too_large), TEST_CASE(length_bounded),
          TEST_CASE(put_string_escapes), TEST_CASE(put_string_utf8), TEST_CASE(put_keys),
          TEST_CASE(user_ids), TEST_CASE(replies), TEST_CASE(event_created),
          TEST_CASE(event_members), TEST_CASE(event_messages), TEST_CASE(event_receipts),
          TEST_CASE(event_pages))
