#include "error.h"

#include <stdarg.h>
#include <stdio.h>

static const char *const messages[] = {
#define CH__ERR_MSG(name, code, msg) msg,
    CH_ERRORS(CH__ERR_MSG)
#undef CH__ERR_MSG
};

static const char *const codes[] = {
#define CH__ERR_CODE(name, code, msg) code,
    CH_ERRORS(CH__ERR_CODE)
#undef CH__ERR_CODE
};

static const char *const names[] = {
#define CH__ERR_NAME(name, code, msg) #name,
    CH_ERRORS(CH__ERR_NAME)
#undef CH__ERR_NAME
};

const char *ch_strerror(int err)
{
    if (err < 0 || err >= CH__ERR_COUNT)
        return "unknown error";
    return messages[err];
}

const char *ch_errcode(int err)
{
    if (err < 0 || err >= CH__ERR_COUNT)
        return "internal";
    return codes[err];
}

const char *ch_errname(int err)
{
    if (err < 0 || err >= CH__ERR_COUNT)
        return "CH_E?";
    return names[err];
}

int ch_fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}
