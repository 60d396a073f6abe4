/* Raft membership changes of one group (a shard's or the meta group's), for its leader. */
#ifndef CHORUS_RAFT_CONF_H
#define CHORUS_RAFT_CONF_H

#include <stdint.h>

#include <raft.h>

/* The role of node in r's current configuration (PROTO_RAFT_ROLE_*). */
int raft_conf_role(const struct raft *r, uint32_t node);

/*
 * One idempotent membership change (PROTO_SHARD_CONF_*) on r, which the caller
 * has checked is the leader:
 *   ADD      raft_add (as a spare), then raft_assign STANDBY: the node receives the
 *            log without voting; `address` is its Raft address in this group;
 *   PROMOTE  raft_assign VOTER (Raft catches the node up first);
 *   REMOVE   raft_remove (never the leader itself: transfer leadership first).
 * cb runs once with 0 and the node's role afterwards, or an error.  Returns 0
 * (cb will run, never inline); CH_EEXISTS when the node already is where op
 * wants it (*role set, cb never runs); CH_EINVAL (promote an unknown node,
 * remove the leader, a bad op), CH_EUNAVAILABLE (another change in progress),
 * CH_ENOTLEADER, CH_ENOMEM: cb never runs.  log_shard: the shard for log lines
 * (-1: the meta group).
 */
typedef void (*raft_conf_cb)(void *data, int status, int role);
int raft_conf_change(struct raft *r, int log_shard, int op, uint32_t node,
                     const char *address, raft_conf_cb cb, void *data, int *role);

#endif
