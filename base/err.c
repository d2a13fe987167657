#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int egm_fail(egm_err *e, const char *fmt, ...) {
    if (!e) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int egm_wrap(egm_err *e, const char *fmt, ...) {
    if (!e) return -1;
    char prefix[512], old[sizeof e->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    /* both parts fit the buffer; the tail of a very long message is cut */
    size_t n = strlen(prefix);
    if (n > sizeof e->msg - 3) n = sizeof e->msg - 3;
    memcpy(e->msg, prefix, n);
    memcpy(e->msg + n, ": ", 2);
    size_t rest = sizeof e->msg - n - 3, m = strlen(old);
    if (m > rest) m = rest;
    memcpy(e->msg + n + 2, old, m);
    e->msg[n + 2 + m] = 0;
    return -1;
}
