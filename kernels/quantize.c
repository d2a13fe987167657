/* quantize.c - reference quantizers (see quantize.h). The arithmetic
 * follows llama.cpp's reference code operation for operation (float, not
 * double; its round-half-to-even trick), so our files hold the bytes
 * llama-quantize would write for the same fp32 input. */
#include "quantize.h"

#include "ops.h"
#include "quant.h"

#include <float.h>
#include <math.h>
#include <string.h>

#define EPS_GROUP 1e-15f

/* Round to nearest, ties to even, for |v| < 2^22: adding 1.5 * 2^23 puts the
 * integer in the low mantissa bits (ggml's nearest_int). */
static int nearest(float v) {
    float t = v + 12582912.f;
    int32_t i;
    memcpy(&i, &t, 4);
    return (i & 0x007fffff) - 0x00400000;
}

static int imin(int a, int b) { return a < b ? a : b; }
static int imax(int a, int b) { return a > b ? a : b; }

static void q8_0(const float *x, egm_block_q8_0 *y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += EGM_QK) {
        float amax = 0;
        for (int j = 0; j < EGM_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127, id = d ? 1.0f / d : 0.0f;
        y[b].d = egm_f32_to_f16(d);
        for (int j = 0; j < EGM_QK; j++) y[b].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

static void q4_0(const float *x, egm_block_q4_0 *y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += EGM_QK) {
        float amax = 0, m = 0;
        for (int j = 0; j < EGM_QK; j++)
            if (amax < fabsf(x[j])) amax = fabsf(x[j]), m = x[j];
        float d = m / -8, id = d ? 1.0f / d : 0.0f;
        y[b].d = egm_f32_to_f16(d);
        for (int j = 0; j < EGM_QK / 2; j++) {
            int lo = imin(15, (int8_t)(x[j] * id + 8.5f));
            int hi = imin(15, (int8_t)(x[j + EGM_QK / 2] * id + 8.5f));
            y[b].qs[j] = (uint8_t)(lo | hi << 4);
        }
    }
}

static void q4_1(const float *x, egm_block_q4_1 *y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += EGM_QK) {
        float lo = FLT_MAX, hi = -FLT_MAX;
        for (int j = 0; j < EGM_QK; j++) lo = fminf(lo, x[j]), hi = fmaxf(hi, x[j]);
        float d = (hi - lo) / 15, id = d ? 1.0f / d : 0.0f;
        y[b].d = egm_f32_to_f16(d);
        y[b].m = egm_f32_to_f16(lo);
        for (int j = 0; j < EGM_QK / 2; j++) {
            int a = imin(15, (int8_t)((x[j] - lo) * id + 0.5f));
            int c = imin(15, (int8_t)((x[j + EGM_QK / 2] - lo) * id + 0.5f));
            y[b].qs[j] = (uint8_t)(a | c << 4);
        }
    }
}

/* Weighted error of levels l against x for scale s and offset m. */
static float fit_error(int n, const float *x, const float *w, const uint8_t *l, float s, float m) {
    float err = 0;
    for (int i = 0; i < n; i++) {
        float diff = s * l[i] + m - x[i];
        err += w[i] * diff * diff;
    }
    return err;
}

/* x ~ scale * L + min with L in [0, nmax]: the plain min/max grid first,
 * then nstep + 1 grids of nmax + rmin + rdelta * k steps over the range,
 * each refitted by weighted least squares; the best by weighted squared
 * error wins. Returns the scale, *neg_min = -min (min clamped to <= 0). */
static float fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L,
                           float *neg_min, uint8_t *tmp, float rmin, float rdelta, int nstep) {
    float lo = x[0], hi = x[0], sw = w[0], sx = w[0] * x[0];
    for (int i = 1; i < n; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
        sw += w[i];
        sx += w[i] * x[i];
    }
    if (lo > 0) lo = 0;
    if (hi == lo) {
        memset(L, 0, (size_t)n);
        *neg_min = -lo;
        return 0.f;
    }
    float is = nmax / (hi - lo), scale = 1 / is;
    for (int i = 0; i < n; i++) L[i] = (uint8_t)imax(0, imin(nmax, nearest(is * (x[i] - lo))));
    float best = fit_error(n, x, w, L, scale, lo);
    for (int k = 0; k <= nstep; k++) {
        is = (rmin + rdelta * k + nmax) / (hi - lo);
        float sl = 0, sl2 = 0, sxl = 0;
        for (int i = 0; i < n; i++) {
            int l = imax(0, imin(nmax, nearest(is * (x[i] - lo))));
            tmp[i] = (uint8_t)l;
            sl += w[i] * l;
            sl2 += w[i] * l * l;
            sxl += w[i] * l * x[i];
        }
        float D = sw * sl2 - sl * sl;
        if (!(D > 0)) continue;
        float s = (sw * sxl - sx * sl) / D, m = (sl2 * sx - sl * sxl) / D;
        if (m > 0) m = 0, s = sxl / sl2;
        float err = fit_error(n, x, w, tmp, s, m);
        if (err < best) {
            memcpy(L, tmp, (size_t)n);
            best = err;
            scale = s;
            lo = m;
        }
    }
    *neg_min = -lo;
    return scale;
}

/* The 6-bit scale/min pair j of a Q4_K block, packed as egm_q4k_scale_min
 * unpacks it. */
static void pack_scale_min(uint8_t *sc, int j, uint8_t ls, uint8_t lm) {
    if (j < 4) {
        sc[j] = ls;
        sc[j + 4] = lm;
    } else {
        sc[j + 4] = (uint8_t)((ls & 0xF) | (lm & 0xF) << 4);
        sc[j - 4] |= (uint8_t)((ls >> 4) << 6);
        sc[j] |= (uint8_t)((lm >> 4) << 6);
    }
}

static void q4_k(const float *x, egm_block_q4_K *y, int64_t nb) {
    uint8_t L[EGM_QK_K], tmp[32];
    float w[32], mins[8], scales[8];
    for (int64_t b = 0; b < nb; b++, x += EGM_QK_K) {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < 8; j++) {
            const float *s = x + 32 * j;
            float s2 = 0;
            for (int l = 0; l < 32; l++) s2 += s[l] * s[l];
            float av = sqrtf(s2 / 32);
            for (int l = 0; l < 32; l++) w[l] = av + fabsf(s[l]);
            scales[j] = fit_scale_min(32, 15, s, w, L + 32 * j, &mins[j], tmp, -1.f, 0.1f, 20);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        float inv_s = max_scale > 0 ? 63.f / max_scale : 0.f;
        float inv_m = max_min > 0 ? 63.f / max_min : 0.f;
        memset(y[b].scales, 0, sizeof y[b].scales);
        for (int j = 0; j < 8; j++)
            pack_scale_min(y[b].scales, j, (uint8_t)imin(63, nearest(inv_s * scales[j])),
                           (uint8_t)imin(63, nearest(inv_m * mins[j])));
        y[b].d = egm_f32_to_f16(max_scale / 63.f);
        y[b].dmin = egm_f32_to_f16(max_min / 63.f);
        /* the levels again, against the scales as stored */
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            egm_q4k_scale_min(j, y[b].scales, &sc, &m);
            float d = egm_f16_to_f32(y[b].d) * sc;
            if (!d) continue;
            float dm = egm_f16_to_f32(y[b].dmin) * m;
            for (int i = 0; i < 32; i++)
                L[32 * j + i] = (uint8_t)imax(0, imin(15, nearest((x[32 * j + i] + dm) / d)));
        }
        for (int g = 0; g < 4; g++)
            for (int l = 0; l < 32; l++)
                y[b].qs[32 * g + l] = (uint8_t)(L[64 * g + l] | L[64 * g + 32 + l] << 4);
    }
}

/* x ~ scale * l with l in [-nmax, nmax), weights x^2: the grid through the
 * value of largest magnitude, then 18 nearby grids, best by weighted
 * correlation (make_qx_quants with rmse_type 1). L gets nmax + l of the
 * best grid. */
static float fit_scale_sym(int n, int nmax, const float *x, uint8_t *L) {
    float amax = 0, m = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]), m = x[i];
    if (amax < EPS_GROUP) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float scale = 0, best = 0;
    for (int k = 0; k <= 18; k++) {
        int step = k == 0 ? 0 : k <= 9 ? k - 10 : k - 9; /* 0, then -9..-1, 1..9 */
        float is = step ? -(nmax + 0.1f * step) / m : -nmax / m;
        float slx = 0, sl2 = 0;
        for (int i = 0; i < n; i++) {
            int l = imax(-nmax, imin(nmax - 1, nearest(is * x[i])));
            float w = x[i] * x[i];
            slx += w * x[i] * l;
            sl2 += w * l * l;
        }
        if (step && !(sl2 > 0 && slx * slx > best * sl2)) continue;
        scale = sl2 ? slx / sl2 : 0.0f;
        best = scale * slx;
        for (int i = 0; i < n; i++)
            L[i] = (uint8_t)(nmax + imax(-nmax, imin(nmax - 1, nearest(is * x[i]))));
    }
    return scale;
}

static void q6_k(const float *x, egm_block_q6_K *y, int64_t nb) {
    uint8_t L[EGM_QK_K];
    float scales[16];
    for (int64_t b = 0; b < nb; b++, x += EGM_QK_K) {
        float max_scale = 0, max_abs = 0;
        for (int j = 0; j < 16; j++) {
            scales[j] = fit_scale_sym(16, 32, x + 16 * j, L + 16 * j);
            if (fabsf(scales[j]) > max_abs) max_abs = fabsf(scales[j]), max_scale = scales[j];
        }
        memset(&y[b], 0, sizeof y[b]);
        if (max_abs < EPS_GROUP) {
            y[b].d = egm_f32_to_f16(0.f);
            continue;
        }
        float is = -128.f / max_scale;
        y[b].d = egm_f32_to_f16(1 / is);
        for (int j = 0; j < 16; j++) y[b].scales[j] = (int8_t)imin(127, nearest(is * scales[j]));
        for (int j = 0; j < 16; j++) {
            float d = egm_f16_to_f32(y[b].d) * y[b].scales[j];
            if (!d) continue;
            for (int i = 0; i < 16; i++)
                L[16 * j + i] = (uint8_t)(imax(-32, imin(31, nearest(x[16 * j + i] / d))) + 32);
        }
        for (int h = 0; h < 2; h++) {
            const uint8_t *q = L + 128 * h;
            uint8_t *ql = y[b].ql + 64 * h, *qh = y[b].qh + 32 * h;
            for (int l = 0; l < 32; l++) {
                ql[l] = (uint8_t)((q[l] & 0xF) | (q[l + 64] & 0xF) << 4);
                ql[l + 32] = (uint8_t)((q[l + 32] & 0xF) | (q[l + 96] & 0xF) << 4);
                qh[l] = (uint8_t)(q[l] >> 4 | (q[l + 32] >> 4) << 2 | (q[l + 64] >> 4) << 4 |
                                  (q[l + 96] >> 4) << 6);
            }
        }
    }
}

int egm_quantize_supported(int type) {
    switch (type) {
    case EGM_GGML_F32: case EGM_GGML_F16: case EGM_GGML_BF16: case EGM_GGML_Q8_0:
    case EGM_GGML_Q4_0: case EGM_GGML_Q4_1: case EGM_GGML_Q4_K: case EGM_GGML_Q6_K: return 1;
    }
    return 0;
}

void egm_quantize_row(int type, const float *x, void *y, int64_t n) {
    switch (type) {
    case EGM_GGML_F32: memcpy(y, x, (size_t)n * sizeof *x); return;
    case EGM_GGML_F16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)y)[i] = egm_f32_to_f16(x[i]);
        return;
    case EGM_GGML_BF16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)y)[i] = egm_f32_to_bf16(x[i]);
        return;
    case EGM_GGML_Q8_0: q8_0(x, y, n / EGM_QK); return;
    case EGM_GGML_Q4_0: q4_0(x, y, n / EGM_QK); return;
    case EGM_GGML_Q4_1: q4_1(x, y, n / EGM_QK); return;
    case EGM_GGML_Q4_K: q4_k(x, y, n / EGM_QK_K); return;
    case EGM_GGML_Q6_K: q6_k(x, y, n / EGM_QK_K); return;
    }
}
