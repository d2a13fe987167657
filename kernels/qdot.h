/* qdot.h - the dot-product kernels behind egm_mat_mul, one table per
 * instruction set (qdot_ref.c plain C, qdot_x86.c AVX2 / AVX-512). Internal
 * to kernels/. */
#ifndef EGM_QDOT_H
#define EGM_QDOT_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/quant.h"

/* Activations for the 32-element types, rounded as llama.cpp's Q8_0 / Q8_1
 * are (so both engines multiply the same numbers): d = amax / 127 rounded
 * to fp16, q = round-to-even(x * 127 / amax), s = fp16(amax / 127 * sum q)
 * for Q4_1 / Q5_1's min term, and the exact integer sum for Q4_0 / Q5_0's
 * offset. x ~ d * q. */
typedef struct {
    float d, s;
    int32_t sum;
    int8_t qs[EGM_QK];
} egm_block_a8;
/* d and s adjacent: the x86 Q4_1 kernel loads them as one pair */
_Static_assert(offsetof(egm_block_a8, s) == offsetof(egm_block_a8, d) + 4, "a8 d, s");

/* The activation format a weight type's dot kernel takes. */
enum { EGM_ACT_F32, EGM_ACT_A8, EGM_ACT_Q8K };
int egm_qdot_act(int type);
/* Bytes of one activation row of n elements in that format. */
size_t egm_qdot_act_bytes(int type, int n);
void egm_quantize_row_a8(const float *x, egm_block_a8 *y, int n);

/* out[m] = dot(weight row w, activation row m) for m < M; activation rows
 * are act_stride bytes apart; n elements. */
typedef void (*egm_qdot_fn)(int n, const void *w, const void *act, size_t act_stride, int M,
                            float *out);

/* Dequantises a row of n elements if the set has a kernel for the type
 * (returns 1), else returns 0 (egm_dequant_row then). */
typedef int (*egm_qdeq_fn)(int type, const void *src, float *dst, int n);

typedef struct {
    const char *name;
    egm_qdot_fn f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_K, q5_K, q6_K;
    egm_qdeq_fn deq;
    /* egm_quantize_row_a8, the same bits */
    void (*qa8)(const float *x, egm_block_a8 *y, int n);
} egm_qdot_set;

extern const egm_qdot_set egm_qdot_ref;
/* NULL when not built in (non-x86 compilers). */
const egm_qdot_set *egm_qdot_avx2(void);
const egm_qdot_set *egm_qdot_avx512(void);
/* 1 if the running CPU has what the set needs. */
int egm_qdot_avx2_ok(void);
int egm_qdot_avx512_ok(void);

egm_qdot_fn egm_qdot_pick(const egm_qdot_set *s, int type);

#endif
