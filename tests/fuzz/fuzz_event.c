/* Fuzz target: event record decoding (history replies and the committed stream). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/raft-log/clog_event.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ch_rbuf r;
    ch_rbuf_init(&r, data, size);
    while (r.left > 0) {
        struct clog_event ev;
        size_t before = r.left;
        int rv = clog_event_decode(&r, &ev);
        if (r.left >= before && r.err == 0)
            abort(); /* must make progress */
        if (rv != 0 && r.err)
            break;
        if (rv == 0) {
            /* re-encoding a decoded record gives the same bytes */
            struct ch_wbuf w;
            ch_wbuf_init(&w);
            clog_event_encode(&w, &ev);
            if (!w.oom && (w.len != before - r.left ||
                           memcmp(w.data, data + (size - before), w.len) != 0))
                abort();
            ch_wbuf_free(&w);
        }
    }
    return 0;
}
