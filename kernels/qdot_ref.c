/* qdot_ref.c - plain-C dot kernels: the reference every faster set is
 * tested against, and what runs on a CPU without AVX2. Integer sums per
 * block, fp32 across blocks, as llama.cpp does. */
#include "kernels/qdot.h"

#include <math.h>
#include <string.h>

#include "kernels/ops.h"

int egm_qdot_act(int type) {
    switch (type) {
    case EGM_GGML_Q8_0: case EGM_GGML_Q4_0: case EGM_GGML_Q4_1:
    case EGM_GGML_Q5_0: case EGM_GGML_Q5_1: return EGM_ACT_A8;
    case EGM_GGML_Q4_K: case EGM_GGML_Q5_K: case EGM_GGML_Q6_K: return EGM_ACT_Q8K;
    }
    return EGM_ACT_F32;
}

size_t egm_qdot_act_bytes(int type, int n) {
    switch (egm_qdot_act(type)) {
    case EGM_ACT_A8: return (size_t)(n / EGM_QK) * sizeof(egm_block_a8);
    case EGM_ACT_Q8K: return (size_t)(n / EGM_QK_K) * sizeof(egm_block_q8_K);
    }
    return (size_t)n * sizeof(float);
}

void egm_quantize_row_a8(const float *x, egm_block_a8 *y, int n) {
    for (int i = 0; i < n / EGM_QK; i++, x += EGM_QK) {
        float amax = 0;
        for (int j = 0; j < EGM_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = amax ? 127.0f / amax : 0.0f;
        int s = 0;
        for (int j = 0; j < EGM_QK; j++) {
            y[i].qs[j] = (int8_t)lrintf(x[j] * id);
            s += y[i].qs[j];
        }
        y[i].d = egm_f16_to_f32(egm_f32_to_f16(d));
        y[i].s = egm_f16_to_f32(egm_f32_to_f16(d * (float)s));
        y[i].sum = s;
    }
}

#define FOR_ROWS for (int m = 0; m < M; m++, act = (const char *)act + stride)

static void dot_f16(int n, const void *w, const void *act, size_t stride, int M, float *out) {
    const uint16_t *h = w;
    FOR_ROWS {
        const float *x = act;
        float s = 0;
        for (int i = 0; i < n; i++) s += egm_f16_to_f32(h[i]) * x[i];
        out[m] = s;
    }
}

static void dot_bf16(int n, const void *w, const void *act, size_t stride, int M, float *out) {
    const uint16_t *h = w;
    FOR_ROWS {
        const float *x = act;
        float s = 0;
        for (int i = 0; i < n; i++) s += egm_bf16_to_f32(h[i]) * x[i];
        out[m] = s;
    }
}

static void dot_q8_0(int n, const void *w, const void *act, size_t stride, int M, float *out) {
    FOR_ROWS {
        const egm_block_q8_0 *b = w;
        const egm_block_a8 *a = act;
        float s = 0;
        for (int i = 0; i < n / EGM_QK; i++) {
            int t = 0;
            for (int j = 0; j < EGM_QK; j++) t += b[i].qs[j] * a[i].qs[j];
            s += egm_f16_to_f32(b[i].d) * a[i].d * (float)t;
        }
        out[m] = s;
    }
}

/* sum (q - 8) a = sum q a - 8 sum a */
static void dot_q4_0(int n, const void *w, const void *act, size_t stride, int M, float *out) {
    FOR_ROWS {
        const egm_block_q4_0 *b = w;
        const egm_block_a8 *a = act;
        float s = 0;
        for (int i = 0; i < n / EGM_QK; i++) {
            int t = 0;
            for (int j = 0; j < 16; j++)
                t += (b[i].qs[j] & 15) * a[i].qs[j] + (b[i].qs[j] >> 4) * a[i].qs[j + 16];
            s += egm_f16_to_f32(b[i].d) * a[i].d * (float)(t - 8 * a[i].sum);
        }
        out[m] = s;
    }
}

/* sum (d q + m) da qa = d da sum q qa + m s */
static void dot_q4_1(int n, const void *w, const void *act, size_t stride, int M, float *out) {
    FOR_ROWS {
        const egm_block_q4_1 *b = w;
        const egm_block_a8 *a = act;
        float s = 0;
        for (int i = 0; i < n / EGM_QK; i++) {
            int t = 0;
            for (int j = 0; j < 16; j++)
                t += (b[i].qs[j] & 15) * a[i].qs[j] + (b[i].qs[j] >> 4) * a[i].qs[j + 16];
            s += egm_f16_to_f32(b[i].d) * a[i].d * (float)t + egm_f16_to_f32(b[i].m) * a[i].s;
        }
        out[m] = s;
    }
}

/* Q5_0 / Q5_1: the 5-bit q of 32 elements dotted with a, then Q5_0's
 * -16 sum(a) (exact, in integers) or Q5_1's m s. */
static void dot_q5(int n, const void *w, const void *act, size_t stride, int M, float *out,
                   int q51) {
    size_t bb = q51 ? sizeof(egm_block_q5_1) : sizeof(egm_block_q5_0);
    FOR_ROWS {
        const egm_block_a8 *a = act;
        float s = 0;
        for (int i = 0; i < n / EGM_QK; i++) {
            const uint8_t *b = (const uint8_t *)w + bb * (size_t)i, *p = b + (q51 ? 4 : 2);
            uint16_t hd, hm = 0;
            uint32_t qh;
            memcpy(&hd, b, 2);
            if (q51) memcpy(&hm, b + 2, 2);
            memcpy(&qh, p, 4);
            int t = 0;
            for (int j = 0; j < 16; j++)
                t += ((p[4 + j] & 15) | (((qh >> j) & 1) << 4)) * a[i].qs[j] +
                     ((p[4 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) * a[i].qs[j + 16];
            float d = egm_f16_to_f32(hd);
            if (q51) s += d * a[i].d * (float)t + egm_f16_to_f32(hm) * a[i].s;
            else s += d * a[i].d * (float)(t - 16 * a[i].sum);
        }
        out[m] = s;
    }
}

static void dot_q5_0(int n, const void *w, const void *act, size_t stride, int M, float *out) {
    dot_q5(n, w, act, stride, M, out, 0);
}

static void dot_q5_1(int n, const void *w, const void *act, size_t stride, int M, float *out) {
    dot_q5(n, w, act, stride, M, out, 1);
}

/* Q4_K / Q5_K: sum_j d sc_j (q . a)_j - dmin sum_j m_j (sum a)_j, times da.
 * qh is NULL for Q4_K. */
static float dot_k45(const uint8_t *scales, const uint8_t *qs, const uint8_t *qh, float d,
                     float dmin, const egm_block_q8_K *a) {
    int sumi = 0, summ = 0;
    for (int g = 0; g < 4; g++) {
        uint8_t s0, m0, s1, m1;
        egm_q4k_scale_min(2 * g, scales, &s0, &m0);
        egm_q4k_scale_min(2 * g + 1, scales, &s1, &m1);
        const int8_t *y = a->qs + 64 * g;
        int t0 = 0, t1 = 0;
        for (int l = 0; l < 32; l++) {
            int h0 = qh ? ((qh[l] >> (2 * g)) & 1) << 4 : 0;
            int h1 = qh ? ((qh[l] >> (2 * g + 1)) & 1) << 4 : 0;
            t0 += ((qs[32 * g + l] & 15) | h0) * y[l];
            t1 += ((qs[32 * g + l] >> 4) | h1) * y[l + 32];
        }
        sumi += s0 * t0 + s1 * t1;
        summ += m0 * (a->bsums[4 * g] + a->bsums[4 * g + 1]) +
                m1 * (a->bsums[4 * g + 2] + a->bsums[4 * g + 3]);
    }
    return a->d * (d * (float)sumi - dmin * (float)summ);
}

static void dot_q4_K(int n, const void *w, const void *act, size_t stride, int M, float *out) {
    FOR_ROWS {
        const egm_block_q4_K *b = w;
        const egm_block_q8_K *a = act;
        float s = 0;
        for (int i = 0; i < n / EGM_QK_K; i++)
            s += dot_k45(b[i].scales, b[i].qs, NULL, egm_f16_to_f32(b[i].d),
                         egm_f16_to_f32(b[i].dmin), &a[i]);
        out[m] = s;
    }
}

static void dot_q5_K(int n, const void *w, const void *act, size_t stride, int M, float *out) {
    FOR_ROWS {
        const egm_block_q5_K *b = w;
        const egm_block_q8_K *a = act;
        float s = 0;
        for (int i = 0; i < n / EGM_QK_K; i++)
            s += dot_k45(b[i].scales, b[i].qs, b[i].qh, egm_f16_to_f32(b[i].d),
                         egm_f16_to_f32(b[i].dmin), &a[i]);
        out[m] = s;
    }
}

/* Q6_K: element layout as in quant.c's deq_q6_K. */
static void dot_q6_K(int n, const void *w, const void *act, size_t stride, int M, float *out) {
    FOR_ROWS {
        const egm_block_q6_K *b = w;
        const egm_block_q8_K *a = act;
        float s = 0;
        for (int i = 0; i < n / EGM_QK_K; i++) {
            const uint8_t *ql = b[i].ql, *qh = b[i].qh;
            int sumi = 0;
            for (int h = 0; h < 2; h++, ql += 64, qh += 32) {
                const int8_t *y = a[i].qs + 128 * h, *sc = b[i].scales + 8 * h;
                for (int k = 0; k < 2; k++) { /* l in [16k, 16k + 16): scale index k */
                    int t[4] = {0, 0, 0, 0};
                    for (int l = 16 * k; l < 16 * k + 16; l++) {
                        t[0] += (((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32) * y[l];
                        t[1] += (((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32) * y[l + 32];
                        t[2] += (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32) * y[l + 64];
                        t[3] += (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32) * y[l + 96];
                    }
                    for (int q = 0; q < 4; q++) sumi += sc[k + 2 * q] * t[q];
                }
            }
            s += egm_f16_to_f32(b[i].d) * a[i].d * (float)sumi;
        }
        out[m] = s;
    }
}

const egm_qdot_set egm_qdot_ref = {
    "portable", dot_f16, dot_bf16, dot_q8_0, dot_q4_0, dot_q4_1, dot_q5_0, dot_q5_1,
    dot_q4_K, dot_q5_K, dot_q6_K,
    NULL, egm_quantize_row_a8,
};

egm_qdot_fn egm_qdot_pick(const egm_qdot_set *s, int type) {
    switch (type) {
    case EGM_GGML_F16: return s->f16;
    case EGM_GGML_BF16: return s->bf16;
    case EGM_GGML_Q8_0: return s->q8_0;
    case EGM_GGML_Q4_0: return s->q4_0;
    case EGM_GGML_Q4_1: return s->q4_1;
    case EGM_GGML_Q5_0: return s->q5_0;
    case EGM_GGML_Q5_1: return s->q5_1;
    case EGM_GGML_Q4_K: return s->q4_K;
    case EGM_GGML_Q5_K: return s->q5_K;
    case EGM_GGML_Q6_K: return s->q6_K;
    }
    return NULL;
}
