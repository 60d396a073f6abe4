/* Fuzz target: what a gateway (or anything listening on its port) can send
 * chorus-bench on a WebSocket (src/bench/message.c). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/bench/message.h"
#include "../../src/common/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct bench_message m;
    char err[160];
    int rv = bench_message_decode((const char *)data, size, &m, err, sizeof err);
    if (rv != 0) {
        /* an error has a reason and leaves nothing decoded */
        if (rv != CH_EMALFORMED || err[0] == 0 || m.type != 0)
            abort();
        return 0;
    }
    /* what decoded is within the documented bounds, strings terminated */
    if (m.type < BENCH_MSG_REPLY || m.type > BENCH_MSG_OTHER)
        abort();
    if (strlen(m.code) > BENCH_MSG_MAX_CODE || strlen(m.event) > BENCH_MSG_MAX_EVENT ||
        strlen(m.client_msg_id) > BENCH_MSG_MAX_CLIENT_MSG_ID ||
        strlen(m.result_token) > BENCH_MSG_MAX_TOKEN)
        abort();
    if (m.conv > BENCH_MSG_MAX_CONV || m.seq > BENCH_MSG_MAX_CONV ||
        m.result_conv > BENCH_MSG_MAX_CONV || m.result_seq > BENCH_MSG_MAX_CONV)
        abort();
    if (m.type == BENCH_MSG_EVENT && (m.conv == 0 || m.event[0] == 0))
        abort();
    if (m.type == BENCH_MSG_REPLY && !m.ok && m.code[0] == 0)
        abort();
    return 0;
}
