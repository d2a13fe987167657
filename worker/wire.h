/* wire.h - activations between pipeline stages, as raw bytes.
 *
 * A micro-batch's hidden states [n, D] cross each stage boundary in one of
 * three encodings, chosen by --wire-dtype (or the topology's wire_dtype):
 *   fp32  n*D*4 bytes, exact (results do not depend on the split);
 *   bf16  n*D*2 bytes, round to nearest even (the default);
 *   int8  n*4 + n*D bytes: n float scales (max|row| / 127), then the rows
 *         quantised to round(x / scale); an all-zero row has scale 0.
 * Native byte order (every rank of a run is the same build on x86-64). */
#ifndef EGM_WIRE_H
#define EGM_WIRE_H

#include <stddef.h>

#include "base/wire_dtype.h"

/* Bytes of n rows of width D in dtype. */
size_t egm_wire_bytes(egm_wire_dtype t, int n, int D);
void egm_wire_encode(egm_wire_dtype t, const float *x, int n, int D, void *out);
void egm_wire_decode(egm_wire_dtype t, const void *in, int n, int D, float *x);

#endif
