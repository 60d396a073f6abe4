/* canonical/raft return codes as the project's errors (shared by the Raft shells). */
#ifndef CHORUS_RAFT_ERR_H
#define CHORUS_RAFT_ERR_H

#include <stdlib.h>

#include <raft.h>
#include <raft/uv.h>

#include "../common/error.h"

static inline int ch_from_raft(int rv)
{
    switch (rv) {
    case 0:
        return 0;
    case RAFT_NOTLEADER:
    case RAFT_LEADERSHIPLOST:
        return CH_ENOTLEADER;
    case RAFT_SHUTDOWN:
    case RAFT_CANCELED:
        return CH_ESHUTDOWN;
    case RAFT_NOMEM:
        return CH_ENOMEM;
    case RAFT_TOOBIG:
        return CH_ETOOLARGE;
    default:
        return CH_EUNAVAILABLE;
    }
}

/*
 * libraft formats every trace line (snprintf into a static buffer) before its
 * tracer decides to drop it: that was ~2% of a node's CPU under load.  A NULL
 * tracer skips the formatting.  LIBRAFT_TRACE set in the environment keeps the
 * library's own tracer, for debugging.
 */
static inline void ch_raft_quiet_tracer(struct raft *r, struct raft_io *io)
{
    if (getenv("LIBRAFT_TRACE") != NULL)
        return;
    r->tracer = NULL;
    raft_uv_set_tracer(io, NULL);
}

#endif
