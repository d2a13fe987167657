/* quant.c - ggml block formats: sizes, conversions, plain-C dequantisation
 * and the reference activation quantisers (see quant.h). */
#include "kernels/quant.h"

#include "kernels/ops.h"

#include <math.h>
#include <string.h>

_Static_assert(sizeof(egm_block_q8_0) == 34, "Q8_0 block");
_Static_assert(sizeof(egm_block_q4_0) == 18, "Q4_0 block");
_Static_assert(sizeof(egm_block_q4_1) == 20, "Q4_1 block");
_Static_assert(sizeof(egm_block_q5_0) == 22, "Q5_0 block");
_Static_assert(sizeof(egm_block_q5_1) == 24, "Q5_1 block");
_Static_assert(sizeof(egm_block_q4_K) == 144, "Q4_K block");
_Static_assert(sizeof(egm_block_q5_K) == 176, "Q5_K block");
_Static_assert(sizeof(egm_block_q6_K) == 210, "Q6_K block");
_Static_assert(sizeof(egm_block_q8_K) == 292, "Q8_K block");

typedef struct { int type; const char *name; int blck; int size; } qinfo;

static const qinfo QT[] = {
    {EGM_GGML_F32, "F32", 1, 4},
    {EGM_GGML_F16, "F16", 1, 2},
    {EGM_GGML_BF16, "BF16", 1, 2},
    {EGM_GGML_Q8_0, "Q8_0", EGM_QK, sizeof(egm_block_q8_0)},
    {EGM_GGML_Q4_0, "Q4_0", EGM_QK, sizeof(egm_block_q4_0)},
    {EGM_GGML_Q4_1, "Q4_1", EGM_QK, sizeof(egm_block_q4_1)},
    {EGM_GGML_Q5_0, "Q5_0", EGM_QK, sizeof(egm_block_q5_0)},
    {EGM_GGML_Q5_1, "Q5_1", EGM_QK, sizeof(egm_block_q5_1)},
    {EGM_GGML_Q4_K, "Q4_K", EGM_QK_K, sizeof(egm_block_q4_K)},
    {EGM_GGML_Q5_K, "Q5_K", EGM_QK_K, sizeof(egm_block_q5_K)},
    {EGM_GGML_Q6_K, "Q6_K", EGM_QK_K, sizeof(egm_block_q6_K)},
    {EGM_GGML_Q8_K, "Q8_K", EGM_QK_K, sizeof(egm_block_q8_K)},
};

static const qinfo *qinfo_of(int type) {
    for (size_t i = 0; i < sizeof QT / sizeof *QT; i++)
        if (QT[i].type == type) return &QT[i];
    return NULL;
}

int egm_qtype_known(int type) { return qinfo_of(type) != NULL; }

const char *egm_qtype_name(int type) {
    const qinfo *q = qinfo_of(type);
    return q ? q->name : "?";
}

int egm_qtype_block(int type) {
    const qinfo *q = qinfo_of(type);
    return q ? q->blck : 0;
}

size_t egm_qtype_block_bytes(int type) {
    const qinfo *q = qinfo_of(type);
    return q ? (size_t)q->size : 0;
}

size_t egm_qtype_row_bytes(int type, int64_t n) {
    const qinfo *q = qinfo_of(type);
    if (!q || n < 0 || n % q->blck) return 0;
    return (size_t)(n / q->blck) * (size_t)q->size;
}

/* ---- scalar conversions ------------------------------------------------ */

/* f32 -> f16, round to nearest even (ops.c has the other directions). */
uint16_t egm_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t s = (u >> 16) & 0x8000, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(s | 0x7e00);     /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(s | 0x7c00);    /* rounds to inf */
    if (a < 0x38800000u) {                                  /* subnormal or zero */
        if (a < 0x33000000u) return (uint16_t)s;            /* below half the least subnormal */
        uint32_t e = a >> 23, m = (a & 0x7fffff) | 0x800000;
        int sh = 126 - (int)e;                              /* 14..24+ */
        uint32_t q = m >> sh, rem = m & ((1u << sh) - 1), half = 1u << (sh - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(s | q);
    }
    uint32_t r = a + 0xfff + ((a >> 13) & 1);               /* round to nearest even */
    return (uint16_t)(s | ((r - 0x38000000u) >> 13));
}

/* ---- dequantisation ---------------------------------------------------- */

void egm_q4k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

static void deq_q4_K(const egm_block_q4_K *b, float *y) {
    float d = egm_f16_to_f32(b->d), dmin = egm_f16_to_f32(b->dmin);
    const uint8_t *q = b->qs;
    for (int g = 0; g < 4; g++, q += 32, y += 64) {
        uint8_t s0, m0, s1, m1;
        egm_q4k_scale_min(2 * g, b->scales, &s0, &m0);
        egm_q4k_scale_min(2 * g + 1, b->scales, &s1, &m1);
        float d0 = d * s0, n0 = dmin * m0, d1 = d * s1, n1 = dmin * m1;
        for (int l = 0; l < 32; l++) {
            y[l] = d0 * (float)(q[l] & 15) - n0;
            y[l + 32] = d1 * (float)(q[l] >> 4) - n1;
        }
    }
}

static void deq_q5_K(const egm_block_q5_K *b, float *y) {
    float d = egm_f16_to_f32(b->d), dmin = egm_f16_to_f32(b->dmin);
    const uint8_t *q = b->qs;
    for (int g = 0; g < 4; g++, q += 32, y += 64) {
        uint8_t s0, m0, s1, m1;
        egm_q4k_scale_min(2 * g, b->scales, &s0, &m0);
        egm_q4k_scale_min(2 * g + 1, b->scales, &s1, &m1);
        float d0 = d * s0, n0 = dmin * m0, d1 = d * s1, n1 = dmin * m1;
        for (int l = 0; l < 32; l++) {
            int h0 = (b->qh[l] >> (2 * g)) & 1, h1 = (b->qh[l] >> (2 * g + 1)) & 1;
            y[l] = d0 * (float)((q[l] & 15) + 16 * h0) - n0;
            y[l + 32] = d1 * (float)((q[l] >> 4) + 16 * h1) - n1;
        }
    }
}

/* Q6_K: two halves of 128; in half h, element l + 32 i (i = 0..3) takes its
 * low bits from ql[64h + l + 32 (i & 1)] (low nibble for i < 2, high for
 * i >= 2) and its high bits from qh[32h + l] >> 2i; scale 8h + l/16 + 2i. */
static void deq_q6_K(const egm_block_q6_K *b, float *y) {
    float d = egm_f16_to_f32(b->d);
    const uint8_t *ql = b->ql, *qh = b->qh;
    const int8_t *sc = b->scales;
    for (int h = 0; h < 2; h++, y += 128, ql += 64, qh += 32, sc += 8)
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = ((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32;
            int q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * (float)sc[is] * (float)q1;
            y[l + 32] = d * (float)sc[is + 2] * (float)q2;
            y[l + 64] = d * (float)sc[is + 4] * (float)q3;
            y[l + 96] = d * (float)sc[is + 6] * (float)q4;
        }
}

void egm_dequant_row(int type, const void *src, float *y, int64_t n) {
    const uint8_t *s = src;
    int64_t nb = n / egm_qtype_block(type);
    switch (type) {
    case EGM_GGML_F32: memcpy(y, s, (size_t)n * sizeof *y); return;
    case EGM_GGML_F16:
    case EGM_GGML_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            y[i] = type == EGM_GGML_F16 ? egm_f16_to_f32(h) : egm_bf16_to_f32(h);
        }
        return;
    case EGM_GGML_Q8_0:
        for (const egm_block_q8_0 *b = src; nb--; b++, y += 32) {
            float d = egm_f16_to_f32(b->d);
            for (int j = 0; j < 32; j++) y[j] = d * (float)b->qs[j];
        }
        return;
    case EGM_GGML_Q4_0:
        for (const egm_block_q4_0 *b = src; nb--; b++, y += 32) {
            float d = egm_f16_to_f32(b->d);
            for (int j = 0; j < 16; j++) {
                y[j] = d * (float)((b->qs[j] & 15) - 8);
                y[j + 16] = d * (float)((b->qs[j] >> 4) - 8);
            }
        }
        return;
    case EGM_GGML_Q4_1:
        for (const egm_block_q4_1 *b = src; nb--; b++, y += 32) {
            float d = egm_f16_to_f32(b->d), m = egm_f16_to_f32(b->m);
            for (int j = 0; j < 16; j++) {
                y[j] = d * (float)(b->qs[j] & 15) + m;
                y[j + 16] = d * (float)(b->qs[j] >> 4) + m;
            }
        }
        return;
    case EGM_GGML_Q5_0:
    case EGM_GGML_Q5_1:
        for (int64_t i = 0; i < nb; i++, y += 32) {
            const uint8_t *b = s + (size_t)i * (type == EGM_GGML_Q5_0 ? 22 : 24);
            uint16_t hd, hm = 0;
            uint32_t qh;
            memcpy(&hd, b, 2);
            if (type == EGM_GGML_Q5_1) memcpy(&hm, b + 2, 2);
            const uint8_t *p = b + (type == EGM_GGML_Q5_0 ? 2 : 4);
            memcpy(&qh, p, 4);
            float d = egm_f16_to_f32(hd), m = type == EGM_GGML_Q5_0 ? -16.0f * d : egm_f16_to_f32(hm);
            for (int j = 0; j < 16; j++) {
                y[j] = d * (float)((p[4 + j] & 15) | (((qh >> j) & 1) << 4)) + m;
                y[j + 16] = d * (float)((p[4 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) + m;
            }
        }
        return;
    case EGM_GGML_Q4_K:
        for (const egm_block_q4_K *b = src; nb--; b++, y += 256) deq_q4_K(b, y);
        return;
    case EGM_GGML_Q5_K:
        for (const egm_block_q5_K *b = src; nb--; b++, y += 256) deq_q5_K(b, y);
        return;
    case EGM_GGML_Q6_K:
        for (const egm_block_q6_K *b = src; nb--; b++, y += 256) deq_q6_K(b, y);
        return;
    case EGM_GGML_Q8_K:
        for (const egm_block_q8_K *b = src; nb--; b++, y += 256)
            for (int j = 0; j < 256; j++) y[j] = b->d * (float)b->qs[j];
        return;
    }
}

/* ---- activation quantisers --------------------------------------------- */

void egm_quantize_row_q8_0(const float *x, void *out, int64_t n) {
    egm_block_q8_0 *b = out;
    for (int64_t i = 0; i < n / 32; i++, x += 32) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        b[i].d = egm_f32_to_f16(d);
        for (int j = 0; j < 32; j++) b[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

void egm_quantize_row_q8_K(const float *x, void *out, int64_t n) {
    egm_block_q8_K *b = out;
    for (int64_t i = 0; i < n / 256; i++, x += 256) {
        float max = 0, amax = 0;
        for (int j = 0; j < 256; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        memset(&b[i], 0, sizeof b[i]);
        if (!amax) continue;
        float iscale = -128.0f / max;
        for (int j = 0; j < 256; j++) {
            int v = (int)lrintf(iscale * x[j]);
            b[i].qs[j] = (int8_t)(v > 127 ? 127 : v);
        }
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int k = 0; k < 16; k++) s += b[i].qs[16 * j + k];
            b[i].bsums[j] = (int16_t)s;
        }
        b[i].d = 1.0f / iscale;
    }
}
