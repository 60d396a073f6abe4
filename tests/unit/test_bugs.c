/* Unit tests of src/common/bugs (CHORUS_BUGS builds only): selecting a bug by name. */
#include "test.h"

#include "common/bugs.h"
#include "common/error.h"

static void nothing_selected_by_default(void)
{
    CHECK_EQ_INT(ch_bug_setup(NULL), 0);
    CHECK_EQ_INT(ch_bug_active(), CH_BUG_NONE);
    CHECK_EQ_INT(ch_bug_setup(""), 0);
    CHECK_EQ_INT(ch_bug_active(), CH_BUG_NONE);
    CHECK_EQ_INT(ch_bug_setup("none"), 0);
    CHECK_EQ_INT(ch_bug_active(), CH_BUG_NONE);
    for (int b = 0; b < CH__BUG_COUNT; b++)
        CHECK(!ch_bug((enum ch_bug)b));
}

static void each_name_selects_exactly_its_bug(void)
{
    for (int b = 1; b < CH__BUG_COUNT; b++) {
        CHECK_EQ_INT(ch_bug_setup(ch_bug_name((enum ch_bug)b)), 0);
        CHECK_EQ_INT(ch_bug_active(), b);
        for (int other = 0; other < CH__BUG_COUNT; other++)
            CHECK_EQ_INT(ch_bug((enum ch_bug)other), other == b);
        CHECK(strstr(ch_bug_names(), ch_bug_name((enum ch_bug)b)) != NULL);
    }
    CHECK(strcmp(ch_bug_name(CH_BUG_ACK_BEFORE_COMMIT), "ack-before-commit") == 0);
    CHECK(strcmp(ch_bug_name(CH_BUG_STALE_READ), "stale-read") == 0);
    CHECK(strcmp(ch_bug_name(CH_BUG_DELIVER_UNCOMMITTED), "deliver-uncommitted") == 0);
}

static void unknown_names_are_refused(void)
{
    CHECK_EQ_INT(ch_bug_setup("stale-read"), 0);
    CHECK_EQ_INT(ch_bug_setup("stale_read"), CH_EINVAL); /* a typo selects nothing */
    CHECK_EQ_INT(ch_bug_active(), CH_BUG_NONE);
    CHECK_EQ_INT(ch_bug_setup("Stale-Read"), CH_EINVAL);
    CHECK_EQ_INT(ch_bug_setup("stale-read "), CH_EINVAL);
    CHECK_EQ_INT(ch_bug_active(), CH_BUG_NONE);
}

TEST_MAIN(TEST_CASE(nothing_selected_by_default), TEST_CASE(each_name_selects_exactly_its_bug),
          TEST_CASE(unknown_names_are_refused))
