/* quantize.h - fp32 rows to ggml's storage types, as llama.cpp's reference
 * quantizers (quantize_row_*_ref in ggml-quants.c) round them.
 *
 * Q8_0:  d = amax / 127, q = round(x / d).
 * Q4_0:  d = -m / 8 where m is the value of largest magnitude (sign kept),
 *        q = min(15, trunc(x / d + 8.5)).
 * Q4_1:  d = (max - min) / 15, m = min, q = min(15, trunc((x - m) / d + 0.5)).
 * Q4_K:  per 32-element sub-block a scale and min fitted by weighted least
 *        squares over 21 candidate grids (llama.cpp's make_qkx2_quants), both
 *        stored as 6-bit multiples of per-super-block fp16 d and dmin.
 * Q6_K:  per 16-element sub-block a scale from 19 candidate grids
 *        (make_qx_quants, weights x^2), stored as int8 multiples of fp16 d.
 * F16 and BF16 round to nearest even. Pure math: the block layouts are
 * kernels/quant.h's. */
#ifndef EGM_QUANTIZE_H
#define EGM_QUANTIZE_H

#include <stddef.h>
#include <stdint.h>

/* 1 if egm_quantize_row can produce the type (F32, F16, BF16, Q8_0, Q4_0,
 * Q4_1, Q4_K, Q6_K). */
int egm_quantize_supported(int type);

/* Writes n elements of x (n a multiple of the type's block) as type into y
 * (egm_qtype_row_bytes(type, n) bytes). */
void egm_quantize_row(int type, const float *x, void *y, int64_t n);

#endif
