/* Deliberate bug injection, so the Jepsen suite can show that it catches real bugs. */
#ifndef CHORUS_BUGS_H
#define CHORUS_BUGS_H

/*
 * A consistency checker that has never reported "invalid" proves nothing.  A
 * chorusd configured with -DCHORUS_BUGS=ON carries a few realistic mistakes,
 * each in the place where it would really be made, and the environment
 * variable CHORUS_BUG (read once at startup) switches on at most one of them by
 * name.  docs/jepsen.md says what each one breaks.  Without CHORUS_BUGS (the
 * default, and every production build) ch_bug() is the constant 0, the guarded
 * code is dead and this module is not even compiled.
 *
 * X(identifier, name as written in CHORUS_BUG)
 */
#define CH_BUGS(X)                                                                \
    X(ACK_BEFORE_COMMIT, "ack-before-commit")     /* store: ack on raft_apply */  \
    X(STALE_READ, "stale-read")                   /* store: reads skip barrier */ \
    X(DELIVER_UNCOMMITTED, "deliver-uncommitted") /* gateway: echo on submit */

enum ch_bug {
    CH_BUG_NONE = 0,
#define CH__BUG_ENUM(id, name) CH_BUG_##id,
    CH_BUGS(CH__BUG_ENUM)
#undef CH__BUG_ENUM
        CH__BUG_COUNT
};

#if defined(CHORUS_BUGS) && CHORUS_BUGS

/*
 * Selects the active bug by name: NULL, "" or "none" select none.  Returns 0, or
 * CH_EINVAL for an unknown name (nothing is selected then).  Called once by
 * main() before the loop starts; not thread-safe.
 */
int ch_bug_setup(const char *name);

/* Is bug b the active one? */
int ch_bug(enum ch_bug b);

/* The active bug (CH_BUG_NONE if none). */
enum ch_bug ch_bug_active(void);

/* The CHORUS_BUG name of b ("ack-before-commit", ...); "none" for CH_BUG_NONE. */
const char *ch_bug_name(enum ch_bug b);

/* Every accepted name, comma-separated, for error messages. */
const char *ch_bug_names(void);

#else

/* Production: no bug can be active, and the compiler drops the guarded code. */
#define ch_bug(b) ((void)(b), 0)

#endif

#endif
