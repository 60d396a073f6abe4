/* A blocking HTTP/1.1 GET for chorusctl (the admin API): POSIX sockets + poll. */
#ifndef CHORUS_CTL_HTTP_H
#define CHORUS_CTL_HTTP_H

#include <stddef.h>

#include "../cluster/config.h"

#define CTL_HTTP_MAX_BODY (16u << 20)

/*
 * GET path from addr with "Authorization: Bearer token" (none when token is
 * empty), within timeout_ms for the whole exchange.  Returns 0 with the HTTP
 * status and the body (NUL-terminated, free() it), or CH_EUNAVAILABLE (cannot
 * connect), CH_ETIMEOUT, CH_EIO / CH_EMALFORMED (a broken or oversized reply).
 */
int ctl_http_get(const struct cluster_addr *addr, const char *path, const char *token,
                 int timeout_ms, int *status, char **body, size_t *len);

/* The node's admin API address: its "admin" address, else its gateway. */
const struct cluster_addr *ctl_admin_addr(const struct cluster_node *node);

#endif
