/* err.h - one error type for everything that can fail on outside input.
 *
 * Functions that read files, parse or validate return 0 on success and -1 on
 * failure, after writing a human-readable message into an egm_err that names
 * what was wrong and where (file, line, tensor, field). Callers print it and
 * exit non-zero; nothing ever aborts on bad input. */
#ifndef EGM_ERR_H
#define EGM_ERR_H

#include <stddef.h>

typedef struct {
    char msg[1024];
} egm_err;

/* Formats the message into e (if not NULL) and returns -1. */
int egm_fail(egm_err *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to an existing message (for adding context). */
int egm_wrap(egm_err *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
