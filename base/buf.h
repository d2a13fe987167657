/* buf.h - one growable buffer, for scratch and for messages.
 *
 *   egm_buf b = {0};
 *   float *x = egm_buf_need(&b, n);          scratch: n floats, old contents gone
 *   unsigned char *m = egm_buf_grow(&b, k);  k bytes, contents kept; NULL on OOM
 *   free(b.p);
 *
 * Buffers only grow (by a quarter more than asked), so a steady workload
 * stops allocating after its first rounds. */
#ifndef EGM_BUF_H
#define EGM_BUF_H

#include <stddef.h>

typedef struct {
    void *p;
    size_t cap;         /* bytes */
} egm_buf;

/* Scratch of n floats. Its size is bounded by batch and context, so running
 * out of memory here is fatal (abort), not an error to report. */
float *egm_buf_need(egm_buf *b, long n);

/* At least n bytes, keeping the first cap bytes; NULL (b unchanged) on OOM. */
void *egm_buf_grow(egm_buf *b, size_t n);

#endif
