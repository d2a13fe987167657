/* buf.c - the growable buffer. */
#include "buf.h"

#include <stdlib.h>

float *egm_buf_need(egm_buf *b, long n) {
    size_t bytes = sizeof(float) * (size_t)(n > 0 ? n : 0);
    if (bytes > b->cap) {
        free(b->p);
        b->cap = bytes + bytes / 4 + 256;
        b->p = malloc(b->cap);
        if (!b->p) abort();
    }
    return b->p;
}

void *egm_buf_grow(egm_buf *b, size_t n) {
    if (n > b->cap || !b->p) {
        size_t cap = n + n / 4 + 256;
        void *p = realloc(b->p, cap);
        if (!p) return NULL;
        b->p = p;
        b->cap = cap;
    }
    return b->p;
}
