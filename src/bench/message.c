/*
 * Decoding gateway messages for chorus-bench (see message.h).  jansson parses the
 * frame (it checks UTF-8 and bounds nesting); each field is then read with a
 * checked getter, so a malformed message is an error with a reason, never a
 * crash or a silently wrong number.
 */
#include "message.h"

#include <jansson.h>
#include <string.h>

#include "../common/error.h"

/* A string field copied into out (cap bytes with the NUL).  Absent: 0 and "" when
 * optional, else an error.  -1 on error. */
static int get_string(json_t *obj, const char *key, int required, char *out, size_t cap,
                      char *err, size_t errlen)
{
    json_t *v = json_object_get(obj, key);
    out[0] = 0;
    if (v == NULL || json_is_null(v)) {
        if (!required)
            return 0;
        ch_fail(err, errlen, CH_EMALFORMED, "%s: required", key);
        return -1;
    }
    if (!json_is_string(v)) {
        ch_fail(err, errlen, CH_EMALFORMED, "%s: expected a string", key);
        return -1;
    }
    size_t n = json_string_length(v);
    if (n >= cap || memchr(json_string_value(v), 0, n) != NULL) {
        ch_fail(err, errlen, CH_EMALFORMED, "%s: longer than %zu bytes or holds NUL", key,
                cap - 1);
        return -1;
    }
    memcpy(out, json_string_value(v), n);
    out[n] = 0;
    return 0;
}

/* An integer field in [min, max] into *out.  Absent: 0 when optional (out left
 * alone), else an error.  -1 on error. */
static int get_uint(json_t *obj, const char *key, int required, uint64_t min,
                    uint64_t max, uint64_t *out, char *err, size_t errlen)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL || json_is_null(v)) {
        if (!required)
            return 0;
        ch_fail(err, errlen, CH_EMALFORMED, "%s: required", key);
        return -1;
    }
    if (!json_is_integer(v)) {
        ch_fail(err, errlen, CH_EMALFORMED, "%s: expected an integer", key);
        return -1;
    }
    json_int_t i = json_integer_value(v);
    if (i < 0 || (uint64_t)i < min || (uint64_t)i > max) {
        ch_fail(err, errlen, CH_EMALFORMED, "%s: %lld is out of range", key,
                (long long)i);
        return -1;
    }
    *out = (uint64_t)i;
    return 0;
}

static int decode_reply(json_t *root, struct bench_message *m, char *err, size_t errlen)
{
    json_t *id = json_object_get(root, "id");
    if (json_is_integer(id)) {
        m->has_id = 1;
        m->id = (int64_t)json_integer_value(id);
    } else if (id != NULL && !json_is_null(id) && !json_is_string(id)) {
        ch_fail(err, errlen, CH_EMALFORMED, "id: expected an integer, a string or null");
        return -1;
    }
    json_t *ok = json_object_get(root, "ok");
    if (!json_is_boolean(ok)) {
        ch_fail(err, errlen, CH_EMALFORMED, "ok: expected true or false");
        return -1;
    }
    m->ok = json_is_true(ok);
    if (m->ok) {
        json_t *result = json_object_get(root, "result");
        if (!json_is_object(result)) {
            ch_fail(err, errlen, CH_EMALFORMED, "result: expected an object");
            return -1;
        }
        if (get_uint(result, "conv", 0, 1, BENCH_MSG_MAX_CONV, &m->result_conv, err,
                     errlen) != 0 ||
            get_uint(result, "seq", 0, 0, BENCH_MSG_MAX_CONV, &m->result_seq, err,
                     errlen) != 0 ||
            get_string(result, "token", 0, m->result_token, sizeof m->result_token, err,
                       errlen) != 0)
            return -1;
        return 0;
    }
    json_t *error = json_object_get(root, "error");
    if (!json_is_object(error)) {
        ch_fail(err, errlen, CH_EMALFORMED, "error: expected an object");
        return -1;
    }
    if (get_string(error, "code", 1, m->code, sizeof m->code, err, errlen) != 0)
        return -1;
    if (m->code[0] == 0) {
        ch_fail(err, errlen, CH_EMALFORMED, "code: must not be empty");
        return -1;
    }
    return get_uint(error, "retry_after_ms", 0, 0, UINT32_MAX, &m->retry_after_ms, err,
                    errlen);
}

static int decode_event(json_t *root, struct bench_message *m, char *err, size_t errlen)
{
    if (get_uint(root, "conv", 1, 1, BENCH_MSG_MAX_CONV, &m->conv, err, errlen) != 0 ||
        get_uint(root, "seq", 1, 0, BENCH_MSG_MAX_CONV, &m->seq, err, errlen) != 0 ||
        get_string(root, "event", 1, m->event, sizeof m->event, err, errlen) != 0 ||
        get_string(root, "client_msg_id", 0, m->client_msg_id, sizeof m->client_msg_id,
                   err, errlen) != 0)
        return -1;
    if (m->event[0] == 0) {
        ch_fail(err, errlen, CH_EMALFORMED, "event: must not be empty");
        return -1;
    }
    return 0;
}

int bench_message_decode(const char *text, size_t len, struct bench_message *out,
                         char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (err != NULL && errlen > 0)
        err[0] = 0;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return ch_fail(err, errlen, CH_EMALFORMED, "not valid JSON: %s (at byte %d)",
                       jerr.text, jerr.position);
    int rv = 0;
    char type[32];
    if (!json_is_object(root)) {
        rv = ch_fail(err, errlen, CH_EMALFORMED, "not a JSON object");
    } else if (get_string(root, "type", 1, type, sizeof type, err, errlen) != 0) {
        rv = CH_EMALFORMED;
    } else if (strcmp(type, "reply") == 0) {
        out->type = BENCH_MSG_REPLY;
        rv = decode_reply(root, out, err, errlen) ? CH_EMALFORMED : 0;
    } else if (strcmp(type, "event") == 0) {
        out->type = BENCH_MSG_EVENT;
        rv = decode_event(root, out, err, errlen) ? CH_EMALFORMED : 0;
    } else if (strcmp(type, "goodbye") == 0) {
        out->type = BENCH_MSG_GOODBYE;
        rv = get_string(root, "code", 0, out->code, sizeof out->code, err, errlen)
                 ? CH_EMALFORMED
                 : 0;
    } else {
        out->type = BENCH_MSG_OTHER;
    }
    json_decref(root);
    if (rv != 0)
        memset(out, 0, sizeof *out);
    return rv;
}
