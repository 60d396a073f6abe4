/* canonical/raft return codes as the project's errors (shared by the Raft shells). */
#ifndef CHORUS_RAFT_ERR_H
#define CHORUS_RAFT_ERR_H

#include <raft.h>

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

#endif
