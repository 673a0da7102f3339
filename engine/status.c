/* status.c -- status names of mf.h and the error-text helper of mf_util.h. */
#include "mf.h"
#include "mf_util.h"

#include <stdarg.h>
#include <stdio.h>

void mf_set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

const char *mf_status_str(mf_status s)
{
    switch (s) {
    case MF_OK: return "ok";
    case MF_ERR_IO: return "i/o error";
    case MF_ERR_FORMAT: return "bad model file format";
    case MF_ERR_ARCH: return "bad architecture";
    case MF_ERR_TENSOR: return "bad tensor";
    case MF_ERR_NOMEM: return "out of memory";
    case MF_ERR_ARG: return "bad argument";
    case MF_ERR_THREAD: return "thread error";
    }
    return "unknown error";
}
