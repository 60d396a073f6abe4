/* Fuzz target: Raft entry decoding, command decoding and apply to a live state. */
#include <stdint.h>
#include <stdlib.h>

#include "../../src/raft-log/clog.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct clog *c;
    static struct clog_output out;
    static unsigned runs;
    if (runs == 0)
        clog_output_init(&out); /* static: reachable, reused, never leaked */
    if (runs++ % 1000 == 0) { /* bounded memory: a fresh state now and then */
        clog_destroy(c);
        struct clog_limits l;
        clog_limits_default(&l);
        l.max_members = 64;
        if (clog_create(&l, &c) != 0)
            abort();
    }
    int rv = clog_apply(c, data, size, &out);
    if (rv == 0) {
        /* every result and event produced must itself be well formed */
        struct ch_rbuf r;
        ch_rbuf_init(&r, out.events.data, out.events.len);
        for (size_t i = 0; i < out.n_events; i++) {
            struct clog_event ev;
            if (clog_event_decode(&r, &ev) != 0)
                abort();
        }
        if (r.left != 0)
            abort();
    }
    return 0;
}
