/* quant.h - ggml's block formats: type ids, layouts, sizes, dequantisation.
 *
 * The numbering and the bytes are llama.cpp's (ggml-common.h), so a GGUF
 * tensor's data is used as it is stored. A row of n elements of a blocked
 * type is n / block consecutive blocks; a matrix [rows, cols] is rows such
 * rows back to back (row_bytes each). Q8_K is the activation format of the
 * K-quant dot products; Q8_0 serves Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0. Pure math. */
#ifndef EGM_QUANT_H
#define EGM_QUANT_H

#include <stddef.h>
#include <stdint.h>

/* ggml type ids (the GGUF file's numbering). */
enum {
    EGM_GGML_F32 = 0, EGM_GGML_F16 = 1, EGM_GGML_Q4_0 = 2, EGM_GGML_Q4_1 = 3,
    EGM_GGML_Q5_0 = 6, EGM_GGML_Q5_1 = 7, EGM_GGML_Q8_0 = 8, EGM_GGML_Q4_K = 12, EGM_GGML_Q5_K = 13, EGM_GGML_Q6_K = 14,
    EGM_GGML_Q8_K = 15, EGM_GGML_BF16 = 30,
};

#define EGM_QK 32    /* elements per block of Q4_0, Q4_1, Q8_0 */
#define EGM_QK_K 256 /* elements per super-block of the K-quants */

/* x = d * q */
typedef struct { uint16_t d; int8_t qs[EGM_QK]; } egm_block_q8_0;
/* x = d * (q - 8); byte j holds element j (low nibble) and j + 16 (high) */
typedef struct { uint16_t d; uint8_t qs[EGM_QK / 2]; } egm_block_q4_0;
/* x = d * q + m; nibbles as Q4_0 */
typedef struct { uint16_t d, m; uint8_t qs[EGM_QK / 2]; } egm_block_q4_1;
/* Q4_0 / Q4_1 plus a fifth bit: bit j of qh (little-endian u32) for element
 * j. Q5_0: x = d * (q - 16); Q5_1: x = d * q + m. (The K-quant files of
 * models whose widths are not multiples of 256 fall back to these.) */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[EGM_QK / 2]; } egm_block_q5_0;
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[EGM_QK / 2]; } egm_block_q5_1;
/* 8 sub-blocks of 32, 6-bit scale and min each (packed in scales[12], see
 * egm_q4k_scale_min); x = d * sc * q - dmin * m. qs: 4 groups of 32 bytes,
 * group g holds sub-block 2g (low nibbles) and 2g + 1 (high nibbles). */
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qs[EGM_QK_K / 2];
} egm_block_q4_K;
/* Q4_K plus a fifth bit per element: bit 2g of qh[l] for sub-block 2g's
 * element l, bit 2g + 1 for sub-block 2g + 1's. */
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[EGM_QK_K / 8];
    uint8_t qs[EGM_QK_K / 2];
} egm_block_q5_K;
/* 16 sub-blocks of 16 with an int8 scale each; q in [0, 64), x = d * sc *
 * (q - 32). Low 4 bits in ql, high 2 in qh (see egm_dequant_row). */
typedef struct {
    uint8_t ql[EGM_QK_K / 2];
    uint8_t qh[EGM_QK_K / 4];
    int8_t scales[EGM_QK_K / 16];
    uint16_t d;
} egm_block_q6_K;
/* Activations for the K-quants: fp32 d, int8 q, and the sums of each 16. */
typedef struct {
    float d;
    int8_t qs[EGM_QK_K];
    int16_t bsums[EGM_QK_K / 16];
} egm_block_q8_K;

/* 1 if the type is one of the above (weights we keep as stored). */
int egm_qtype_known(int type);
const char *egm_qtype_name(int type);   /* "Q4_K", ..., "?" */
int egm_qtype_block(int type);          /* elements per block (1 for F32/F16/BF16), 0 if unknown */
size_t egm_qtype_block_bytes(int type); /* bytes per block, 0 if unknown */
/* Bytes of a row of n elements; 0 if the type is unknown or n is not a
 * multiple of its block. */
size_t egm_qtype_row_bytes(int type, int64_t n);

/* f32 -> IEEE half, round to nearest even, NaN stays NaN (the other
 * conversions, egm_f16_to_f32 and the bf16 pair, are in ops.h). */
uint16_t egm_f32_to_f16(float f);

/* 6-bit scale and min j (0..7) of a Q4_K / Q5_K super-block. */
void egm_q4k_scale_min(int j, const uint8_t *scales, uint8_t *sc, uint8_t *m);

/* dst[0, n) = the n elements at src (n a multiple of the block). */
void egm_dequant_row(int type, const void *src, float *dst, int64_t n);

/* Activation quantisers, as llama.cpp's reference ones: Q8_0 with d =
 * amax / 127; Q8_K with d = -max / 128 where max is the signed value of
 * largest magnitude (so q reaches -128 there, clamped to 127). n a multiple
 * of the block. */
void egm_quantize_row_q8_0(const float *x, void *y, int64_t n);
void egm_quantize_row_q8_K(const float *x, void *y, int64_t n);

#endif
