/* Deliberate bug injection (CHORUS_BUGS builds only): see bugs.h. */
#include "bugs.h"

#include <string.h>

#include "error.h"

static enum ch_bug active = CH_BUG_NONE;

static const char *const names[CH__BUG_COUNT] = {
    [CH_BUG_NONE] = "none",
#define CH__BUG_NAME(id, name) [CH_BUG_##id] = name,
    CH_BUGS(CH__BUG_NAME)
#undef CH__BUG_NAME
};

int ch_bug_setup(const char *name)
{
    active = CH_BUG_NONE;
    if (name == NULL || name[0] == 0)
        return 0;
    for (int b = 0; b < CH__BUG_COUNT; b++) {
        if (strcmp(name, names[b]) == 0) {
            active = (enum ch_bug)b;
            return 0;
        }
    }
    return CH_EINVAL;
}

int ch_bug(enum ch_bug b)
{
    return b != CH_BUG_NONE && b == active;
}

enum ch_bug ch_bug_active(void)
{
    return active;
}

const char *ch_bug_name(enum ch_bug b)
{
    return (unsigned)b < CH__BUG_COUNT ? names[b] : "?";
}

const char *ch_bug_names(void)
{
#define CH__BUG_LIST(id, name) ", " name
    return "none" CH_BUGS(CH__BUG_LIST);
#undef CH__BUG_LIST
}
