/* Fuzz target: snapshot restore.  A failed restore must leave the state as it was
 * (conversations, users and the per-user conversation index). */
#include <stdint.h>
#include <stdlib.h>

#include "../../src/raft-log/clog.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct first_conv {
    uint64_t conv;
    int n;
};

static int first_conv(void *arg, uint64_t conv)
{
    struct first_conv *f = arg;
    if (f->n++ == 0)
        f->conv = conv;
    return 0;
}

/* The user's only conversation, or 0 when they have none or several. */
static uint64_t convs_of(const struct clog *c, const char *user)
{
    struct first_conv f = {0, 0};
    clog_user_convs_foreach(c, ch_slice_str(user), first_conv, &f);
    return f.n == 1 ? f.conv : 0;
}

static struct clog *seeded(void)
{
    struct clog *c;
    if (clog_create(NULL, &c) != 0)
        abort();
    struct clog_output out;
    clog_output_init(&out);
    struct ch_wbuf m;
    ch_wbuf_init(&m);
    size_t at = clog_members_begin(&m);
    clog_members_put(&m, ch_slice_str("b"), CLOG_ROLE_MEMBER);
    clog_members_end(&m, at, 1);
    struct clog_cmd cmd = {.op = CLOG_OP_CREATE, .kind = CLOG_GROUP, .conv = 9,
                           .actor = ch_slice_str("a"), .members = {m.data, m.len}};
    clog_apply_cmd(c, &cmd, 1, &out);
    struct clog_cmd post = {.op = CLOG_OP_POST, .conv = 9, .actor = ch_slice_str("b"),
                            .client_msg_id = ch_slice_str("x"), .body = ch_slice_str("hi")};
    clog_apply_cmd(c, &post, 2, &out);
    struct clog_cmd users[3] = {
        {.op = CLOG_OP_USER_CREATE, .actor = ch_slice_str("a"),
         .body = ch_slice_str("pw"), .name = ch_slice_str("A")},
        {.op = CLOG_OP_USER_UPDATE, .kind = CLOG_USER_SETTINGS,
         .actor = ch_slice_str("a"), .body = ch_slice_str("{}")},
        {.op = CLOG_OP_USER_CREATE, .actor = ch_slice_str("z"),
         .body = ch_slice_str("pz")},
    };
    for (int i = 0; i < 3; i++)
        clog_apply_cmd(c, &users[i], 3, &out);
    clog_output_free(&out);
    ch_wbuf_free(&m);
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct clog *c;
    static uint64_t digest;
    if (c == NULL) {
        c = seeded();
        digest = clog_digest(c);
    }
    if (clog_restore(c, data, size) != 0) {
        if (clog_digest(c) != digest || convs_of(c, "a") != 9 || convs_of(c, "b") != 9)
            abort();
        return 0;
    }
    /* it restored: snapshot again and restore that into a fresh state */
    uint8_t *again;
    size_t len;
    if (clog_snapshot(c, malloc, &again, &len) != 0)
        abort();
    struct clog *d;
    if (clog_create(NULL, &d) != 0 || clog_restore(d, again, len) != 0 ||
        clog_digest(d) != clog_digest(c))
        abort();
    free(again);
    clog_destroy(d);
    clog_destroy(c);
    c = seeded();
    return 0;
}
