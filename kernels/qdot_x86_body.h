/* qdot_x86_body.h - the x86 dot kernels, compiled twice by qdot_x86.c: once
 * for AVX2 (VNNI 0: maddubs + madd) and once for AVX-512 VNNI/BF16 (VNNI 1:
 * vpdpbusd). SFX(name) gives each copy its own names. Each kernel unpacks a
 * weight block once and applies it to all M activation rows. */

/* 8 x int32: sums of 4 adjacent products of u8 u and s8 s. */
static inline __attribute__((always_inline)) __m256i SFX(dot4)(__m256i u, __m256i s) {
#if VNNI
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

/* F16C's one-instruction conversion (ops.c's portable one is a call). */
static inline __attribute__((always_inline)) float SFX(h2f)(uint16_t h) {
    return _cvtsh_ss(h);
}

static inline __attribute__((always_inline)) float SFX(hsum)(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

/* 16 bytes of nibbles -> 32 u8: low nibbles (elements 0..15), then high. */
static inline __attribute__((always_inline)) __m256i SFX(nibbles)(const uint8_t *p) {
    __m128i q = _mm_loadu_si128((const __m128i *)p);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(15));
}

#define ACT(m, T) ((const T *)((const char *)act + (size_t)(m) * stride))

/* Q4_1: d and m converted together (one 32-bit load, one vcvtph2ps), and
 * multiplied by the activation's adjacent d and s in one vmulps: lane 0 is
 * d * da for the block's scale, lane 1 is m * s, summed in lane 1 of c[m]
 * (the min term), in the order the plain sum would take: same bits, some
 * 20 % fewer instructions per block than converting each half alone. */
static inline __attribute__((always_inline)) void SFX(k_q4_1)(int n, const void *w, const void *act, size_t stride, int M,
                          float *out) {
    __m256 acc[EGM_QMM_DOT_MAX];
    __m128 c[EGM_QMM_DOT_MAX];
    for (int m = 0; m < M; m++) acc[m] = _mm256_setzero_ps(), c[m] = _mm_setzero_ps();
    const egm_block_q4_1 *b = w;
#pragma GCC unroll 2
    for (int i = 0; i < n / EGM_QK; i++) {
        __m256i q = SFX(nibbles)(b[i].qs);
        int dm; /* d, then m: the block's first 4 bytes */
        memcpy(&dm, (const void *)(b + i), 4);
        __m128 dmf = _mm_cvtph_ps(_mm_cvtsi32_si128(dm));
        for (int m = 0; m < M; m++) {
            const egm_block_a8 *a = ACT(m, egm_block_a8) + i;
            __m256i p = SFX(dot4)(q, _mm256_loadu_si256((const __m256i *)a->qs));
            __m128i ds = _mm_loadl_epi64((const __m128i *)(const void *)&a->d); /* d, s */
            __m128 f = _mm_mul_ps(dmf, _mm_castsi128_ps(ds));
            acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcastss_ps(f), acc[m]);
            c[m] = _mm_add_ps(c[m], f);
        }
    }
    for (int m = 0; m < M; m++) out[m] = SFX(hsum)(acc[m]) + _mm_cvtss_f32(_mm_movehdup_ps(c[m]));
}

static inline __attribute__((always_inline)) void SFX(k_q4_0)(int n, const void *w, const void *act, size_t stride, int M,
                          float *out) {
    __m256 acc[EGM_QMM_DOT_MAX];
    for (int m = 0; m < M; m++) acc[m] = _mm256_setzero_ps();
    const egm_block_q4_0 *b = w;
    for (int i = 0; i < n / EGM_QK; i++) {
        __m256i q = SFX(nibbles)(b[i].qs);
        float d = SFX(h2f)(b[i].d);
        for (int m = 0; m < M; m++) {
            const egm_block_a8 *a = ACT(m, egm_block_a8) + i;
            __m256i p = SFX(dot4)(q, _mm256_loadu_si256((const __m256i *)a->qs));
            /* (q - 8) . a: the -8 sum(a) lands in lane 0 */
            p = _mm256_add_epi32(p, _mm256_setr_epi32(-8 * a->sum, 0, 0, 0, 0, 0, 0, 0));
            acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * a->d), acc[m]);
        }
    }
    for (int m = 0; m < M; m++) out[m] = SFX(hsum)(acc[m]);
}

static inline __attribute__((always_inline)) void SFX(k_q8_0)(int n, const void *w, const void *act, size_t stride, int M,
                          float *out) {
    __m256 acc[EGM_QMM_DOT_MAX];
    for (int m = 0; m < M; m++) acc[m] = _mm256_setzero_ps();
    const egm_block_q8_0 *b = w;
    for (int i = 0; i < n / EGM_QK; i++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)b[i].qs);
        __m256i qa = _mm256_sign_epi8(q, q); /* |q| as u8; the sign moves to a */
        float d = SFX(h2f)(b[i].d);
        for (int m = 0; m < M; m++) {
            const egm_block_a8 *a = ACT(m, egm_block_a8) + i;
            __m256i s = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)a->qs), q);
            __m256i p = SFX(dot4)(qa, s);
            acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * a->d), acc[m]);
        }
    }
    for (int m = 0; m < M; m++) out[m] = SFX(hsum)(acc[m]);
}

/* 32 bits -> 32 bytes, 0x10 where the bit is set (Q5_0 / Q5_1's fifth bit;
 * llama.cpp's bytes_from_bits_32). */
static inline __attribute__((always_inline)) __m256i SFX(bit5)(const uint8_t *qh) {
    uint32_t u;
    memcpy(&u, qh, 4);
    __m256i x = _mm256_shuffle_epi8(_mm256_set1_epi32((int)u),
                                    _mm256_setr_epi64x(0, 0x0101010101010101LL,
                                                       0x0202020202020202LL,
                                                       0x0303030303030303LL));
    x = _mm256_or_si256(x, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfeLL));
    return _mm256_and_si256(_mm256_cmpeq_epi8(x, _mm256_set1_epi64x(-1)), _mm256_set1_epi8(16));
}

static inline __attribute__((always_inline)) void SFX(k_q5)(int n, const void *w,
                                                            const void *act, size_t stride,
                                                            int M, float *out, int q51) {
    __m256 acc[EGM_QMM_DOT_MAX];
    float corr[EGM_QMM_DOT_MAX];
    for (int m = 0; m < M; m++) acc[m] = _mm256_setzero_ps(), corr[m] = 0;
    size_t bb = q51 ? sizeof(egm_block_q5_1) : sizeof(egm_block_q5_0);
    for (int i = 0; i < n / EGM_QK; i++) {
        const uint8_t *b = (const uint8_t *)w + bb * (size_t)i, *p = b + (q51 ? 4 : 2);
        uint16_t hd, hm = 0;
        memcpy(&hd, b, 2);
        if (q51) memcpy(&hm, b + 2, 2);
        __m256i q = _mm256_or_si256(SFX(nibbles)(p + 4), SFX(bit5)(p));
        float d = SFX(h2f)(hd), mn = q51 ? SFX(h2f)(hm) : 0.0f;
        for (int m = 0; m < M; m++) {
            const egm_block_a8 *a = ACT(m, egm_block_a8) + i;
            __m256i pr = SFX(dot4)(q, _mm256_loadu_si256((const __m256i *)a->qs));
            if (!q51) /* (q - 16) . a, in integers: -16 sum(a) in lane 0 */
                pr = _mm256_add_epi32(pr, _mm256_setr_epi32(-16 * a->sum, 0, 0, 0, 0, 0, 0, 0));
            acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(pr), _mm256_set1_ps(d * a->d), acc[m]);
            if (q51) corr[m] += mn * a->s;
        }
    }
    for (int m = 0; m < M; m++) out[m] = SFX(hsum)(acc[m]) + corr[m];
}

static inline __attribute__((always_inline)) void SFX(k_q5_0)(int n, const void *w,
                                                              const void *act, size_t stride,
                                                              int M, float *out) {
    SFX(k_q5)(n, w, act, stride, M, out, 0);
}

static inline __attribute__((always_inline)) void SFX(k_q5_1)(int n, const void *w,
                                                              const void *act, size_t stride,
                                                              int M, float *out) {
    SFX(k_q5)(n, w, act, stride, M, out, 1);
}

/* Q4_K / Q5_K (qh NULL for Q4_K): the 8 sub-blocks of 32 as u8 vectors. */
static inline __attribute__((always_inline)) void SFX(unpack_k45)(const uint8_t *qs,
                                                                  const uint8_t *qh,
                                                                  __m256i v[8]) {
    __m256i m4 = _mm256_set1_epi8(15), hb = _mm256_setzero_si256();
    if (qh) hb = _mm256_loadu_si256((const __m256i *)qh);
    for (int g = 0; g < 4; g++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * g));
        v[2 * g] = _mm256_and_si256(q, m4);
        v[2 * g + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        if (qh) { /* bit 2g / 2g+1 of each qh byte, moved to bit 4 */
            __m256i one = _mm256_set1_epi8(1);
            __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * g), one);
            __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * g + 1), one);
            v[2 * g] = _mm256_or_si256(v[2 * g], _mm256_slli_epi16(h0, 4));
            v[2 * g + 1] = _mm256_or_si256(v[2 * g + 1], _mm256_slli_epi16(h1, 4));
        }
    }
}

static inline __attribute__((always_inline)) void SFX(dot_k45)(int n, const void *w, int five,
                                                               const void *act, size_t stride,
                                                               int M, float *out) {
    __m256 acc[EGM_QMM_DOT_MAX];
    float corr[EGM_QMM_DOT_MAX];
    for (int m = 0; m < M; m++) acc[m] = _mm256_setzero_ps(), corr[m] = 0;
    size_t bb = five ? sizeof(egm_block_q5_K) : sizeof(egm_block_q4_K);
    for (int i = 0; i < n / EGM_QK_K; i++) {
        const uint8_t *blk = (const uint8_t *)w + bb * (size_t)i;
        const egm_block_q4_K *b4 = (const egm_block_q4_K *)(const void *)blk;
        const egm_block_q5_K *b5 = (const egm_block_q5_K *)(const void *)blk;
        __m256i v[8];
        SFX(unpack_k45)(five ? b5->qs : b4->qs, five ? b5->qh : NULL, v);
        uint8_t sc[8], mn[8];
        for (int j = 0; j < 8; j++) egm_q4k_scale_min(j, b4->scales, &sc[j], &mn[j]);
        float d = SFX(h2f)(b4->d), dmin = SFX(h2f)(b4->dmin);
        for (int m = 0; m < M; m++) {
            const egm_block_q8_K *a = ACT(m, egm_block_q8_K) + i;
            __m256i s = _mm256_setzero_si256();
            for (int j = 0; j < 8; j++) {
                __m256i p = SFX(dot4)(v[j], _mm256_loadu_si256((const __m256i *)(a->qs + 32 * j)));
                s = _mm256_add_epi32(s, _mm256_mullo_epi32(p, _mm256_set1_epi32(sc[j])));
            }
            int summ = 0;
            for (int j = 0; j < 8; j++) summ += mn[j] * (a->bsums[2 * j] + a->bsums[2 * j + 1]);
            acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d * a->d), acc[m]);
            corr[m] -= dmin * a->d * (float)summ;
        }
    }
    for (int m = 0; m < M; m++) out[m] = SFX(hsum)(acc[m]) + corr[m];
}

static inline __attribute__((always_inline)) void SFX(k_q4_K)(int n, const void *w,
                                                              const void *act, size_t stride,
                                                              int M, float *out) {
    SFX(dot_k45)(n, w, 0, act, stride, M, out);
}

static inline __attribute__((always_inline)) void SFX(k_q5_K)(int n, const void *w,
                                                              const void *act, size_t stride,
                                                              int M, float *out) {
    SFX(dot_k45)(n, w, 1, act, stride, M, out);
}

/* Q6_K's 6-bit q as 8 vectors of 32 u8: vector 4h + k holds elements
 * 128h + 32k + l, scales 2(4h + k) (l < 16) and 2(4h + k) + 1. */
static inline __attribute__((always_inline)) void SFX(unpack_q6)(const egm_block_q6_K *b,
                                                                 __m256i v[8]) {
    __m256i m4 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; h++) {
        __m256i l0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
        __m256i l1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32));
        __m256i hh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
        __m256i lo[4] = {_mm256_and_si256(l0, m4), _mm256_and_si256(l1, m4),
                         _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                         _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4)};
        for (int k = 0; k < 4; k++) {
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(hh, 2 * k), m3);
            v[4 * h + k] = _mm256_or_si256(lo[k], _mm256_slli_epi16(hi, 4));
        }
    }
}

/* Q6_K: vector k of half h holds elements 128h + 32k + l, scales
 * 8h + 2k (l < 16) and 8h + 2k + 1; q - 32 via -32 * sc . bsums. */
static inline __attribute__((always_inline)) void SFX(k_q6_K)(int n, const void *w, const void *act, size_t stride, int M,
                          float *out) {
    __m256 acc[EGM_QMM_DOT_MAX];
    for (int m = 0; m < M; m++) acc[m] = _mm256_setzero_ps();
    const egm_block_q6_K *b = w;
    for (int i = 0; i < n / EGM_QK_K; i++) {
        __m256i v[8], scv[8];
        SFX(unpack_q6)(&b[i], v);
        for (int j = 0; j < 8; j++) {
            int s0 = b[i].scales[2 * j], s1 = b[i].scales[2 * j + 1];
            scv[j] = _mm256_setr_epi32(s0, s0, s0, s0, s1, s1, s1, s1);
        }
        float d = SFX(h2f)(b[i].d);
        for (int m = 0; m < M; m++) {
            const egm_block_q8_K *a = ACT(m, egm_block_q8_K) + i;
            __m256i s = _mm256_setzero_si256();
            for (int j = 0; j < 8; j++) {
                __m256i p = SFX(dot4)(v[j], _mm256_loadu_si256((const __m256i *)(a->qs + 32 * j)));
                s = _mm256_add_epi32(s, _mm256_mullo_epi32(p, scv[j]));
            }
            int off = 0;
            for (int j = 0; j < 16; j++) off += b[i].scales[j] * a->bsums[j];
            s = _mm256_add_epi32(s, _mm256_setr_epi32(-32 * off, 0, 0, 0, 0, 0, 0, 0));
            acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d * a->d), acc[m]);
        }
    }
    for (int m = 0; m < M; m++) out[m] = SFX(hsum)(acc[m]);
}

/* 16-bit weights against fp32 activations: 8 weights widened per step.
 * With one or two rows, U independent sums per row (U steps per turn):
 * a single chain of dependent FMAs waits out their latency, 4 cycles per
 * 8 weights (measured on BF16 SmolLM2 at batch 1: 12 GB/s, where this
 * machine streams 14.5). */
static inline __attribute__((always_inline)) void SFX(dot_16)(int n, const uint16_t *h, int bf,
                                                              const void *act, size_t stride,
                                                              int M, float *out) {
    enum { U_MAX = 4 };
    const int U = M == 1 ? 4 : M == 2 ? 2 : 1;
    __m256 acc[EGM_QMM_DOT_MAX][U_MAX];
    for (int m = 0; m < M; m++)
        for (int u = 0; u < U; u++) acc[m][u] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 * U <= n; i += 8 * U)
        for (int u = 0; u < U; u++) {
            __m128i r = _mm_loadu_si128((const __m128i *)(h + i + 8 * u));
            __m256 wv = bf ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(r), 16))
                           : _mm256_cvtph_ps(r);
            for (int m = 0; m < M; m++)
                acc[m][u] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(ACT(m, float) + i + 8 * u),
                                            acc[m][u]);
        }
    for (; i + 8 <= n; i += 8) {
        __m128i r = _mm_loadu_si128((const __m128i *)(h + i));
        __m256 wv = bf ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(r), 16))
                       : _mm256_cvtph_ps(r);
        for (int m = 0; m < M; m++)
            acc[m][0] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(ACT(m, float) + i), acc[m][0]);
    }
    for (int m = 0; m < M; m++) {
        for (int u = 1; u < U; u++) acc[m][0] = _mm256_add_ps(acc[m][0], acc[m][u]);
        float s = SFX(hsum)(acc[m][0]);
        for (int k = i; k < n; k++)
            s += (bf ? egm_bf16_to_f32(h[k]) : egm_f16_to_f32(h[k])) * ACT(m, float)[k];
        out[m] = s;
    }
}

static inline __attribute__((always_inline)) void SFX(k_f16)(int n, const void *w,
                                                             const void *act, size_t stride,
                                                             int M, float *out) {
    SFX(dot_16)(n, w, 0, act, stride, M, out);
}

static inline __attribute__((always_inline)) void SFX(k_bf16)(int n, const void *w,
                                                              const void *act, size_t stride,
                                                              int M, float *out) {
    SFX(dot_16)(n, w, 1, act, stride, M, out);
}

/* The entry points: M as a constant, so the loops over rows unroll and the
 * per-row accumulators stay in registers. */
#define ENTRY(t)                                                                            \
    static void SFX(dot_##t)(int n, const void *w, const void *act, size_t stride, int M,   \
                             float *out) {                                                  \
        switch (M) {                                                                        \
        case 1: SFX(k_##t)(n, w, act, stride, 1, out); break;                               \
        case 2: SFX(k_##t)(n, w, act, stride, 2, out); break;                               \
        case 3: SFX(k_##t)(n, w, act, stride, 3, out); break;                               \
        case 4: SFX(k_##t)(n, w, act, stride, 4, out); break;                               \
        case 5: SFX(k_##t)(n, w, act, stride, 5, out); break;                               \
        case 6: SFX(k_##t)(n, w, act, stride, 6, out); break;                               \
        case 7: SFX(k_##t)(n, w, act, stride, 7, out); break;                               \
        default: SFX(k_##t)(n, w, act, stride, 8, out); break;                              \
        }                                                                                   \
    }
ENTRY(f16)
ENTRY(bf16)
ENTRY(q8_0)
ENTRY(q4_0)
ENTRY(q4_1)
ENTRY(q5_0)
ENTRY(q5_1)
ENTRY(q4_K)
ENTRY(q5_K)
ENTRY(q6_K)
#undef ENTRY

/* ---- dequantisation (the many-rows path's tiles) ---- */

/* 32 u8 at q -> 32 floats d * q + m at y; the second 16 with d1, m1. */
static inline __attribute__((always_inline)) void SFX(deq32x2)(__m256i q, float d, float m,
                                                               float d1, float m1, float *y) {
    __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    for (int k = 0; k < 4; k++) {
        __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[k]));
        __m256 dv = _mm256_set1_ps(k < 2 ? d : d1), mv = _mm256_set1_ps(k < 2 ? m : m1);
        _mm256_storeu_ps(y + 8 * k, _mm256_fmadd_ps(f, dv, mv));
    }
}

static inline __attribute__((always_inline)) void SFX(deq32)(__m256i q, float d, float m,
                                                             float *y) {
    SFX(deq32x2)(q, d, m, d, m, y);
}

/* 1 if this type has a vector dequantiser here (else the caller uses
 * egm_dequant_row). */
static int SFX(deq_row)(int type, const void *src, float *y, int n) {
    switch (type) {
    case EGM_GGML_Q4_1:
        for (const egm_block_q4_1 *b = src; n > 0; n -= 32, b++, y += 32)
            SFX(deq32)(SFX(nibbles)(b->qs), SFX(h2f)(b->d), SFX(h2f)(b->m), y);
        return 1;
    case EGM_GGML_Q4_0:
        for (const egm_block_q4_0 *b = src; n > 0; n -= 32, b++, y += 32) {
            float d = SFX(h2f)(b->d);
            SFX(deq32)(SFX(nibbles)(b->qs), d, -8.0f * d, y);
        }
        return 1;
    case EGM_GGML_Q8_0: /* q + 128 as u8, minus 128 d */
        for (const egm_block_q8_0 *b = src; n > 0; n -= 32, b++, y += 32) {
            float d = SFX(h2f)(b->d);
            __m256i q = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)b->qs),
                                         _mm256_set1_epi8((char)0x80));
            SFX(deq32)(q, d, -128.0f * d, y);
        }
        return 1;
    case EGM_GGML_Q4_K:
    case EGM_GGML_Q5_K: {
        int five = type == EGM_GGML_Q5_K;
        size_t bb = five ? sizeof(egm_block_q5_K) : sizeof(egm_block_q4_K);
        for (const uint8_t *blk = src; n > 0; n -= 256, blk += bb) {
            const egm_block_q4_K *b4 = (const egm_block_q4_K *)(const void *)blk;
            const egm_block_q5_K *b5 = (const egm_block_q5_K *)(const void *)blk;
            __m256i v[8];
            SFX(unpack_k45)(five ? b5->qs : b4->qs, five ? b5->qh : NULL, v);
            float d = SFX(h2f)(b4->d), dmin = SFX(h2f)(b4->dmin);
            for (int j = 0; j < 8; j++, y += 32) {
                uint8_t sc, mn;
                egm_q4k_scale_min(j, b4->scales, &sc, &mn);
                SFX(deq32)(v[j], d * (float)sc, -dmin * (float)mn, y);
            }
        }
        return 1;
    }
    case EGM_GGML_Q6_K: /* d sc (q - 32) */
        for (const egm_block_q6_K *b = src; n > 0; n -= 256, b++) {
            __m256i v[8];
            SFX(unpack_q6)(b, v);
            float d = SFX(h2f)(b->d);
            for (int j = 0; j < 8; j++, y += 32) {
                float d0 = d * (float)b->scales[2 * j], d1 = d * (float)b->scales[2 * j + 1];
                SFX(deq32x2)(v[j], d0, -32.0f * d0, d1, -32.0f * d1, y);
            }
        }
        return 1;
    case EGM_GGML_F16:
    case EGM_GGML_BF16: {
        const uint16_t *h = src;
        int i = 0;
        for (; i + 8 <= n; i += 8) {
            __m128i r = _mm_loadu_si128((const __m128i *)(h + i));
            _mm256_storeu_ps(y + i, type == EGM_GGML_F16 ? _mm256_cvtph_ps(r) :
                             _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(r), 16)));
        }
        if (i < n) egm_dequant_row(type, h + i, y + i, n - i);
        return 1;
    }
    }
    return 0;
}

/* ---- activation rounding (egm_quantize_row_a8, the same bits) ---- */

/* As the plain-C one: amax ignores NaN (max_ps returns its second operand
 * when the first is NaN), q = x * (127 / amax) rounded to even by the
 * default MXCSR mode as lrintf does, kept as the low byte of the int32 (the
 * C cast), sum of the stored bytes, d and s through fp16 (F16C rounds to
 * nearest even like egm_f32_to_f16). */
static void SFX(quant_a8)(const float *x, egm_block_a8 *y, int n) {
    const __m256 nosign = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int i = 0; i < n / EGM_QK; i++, x += EGM_QK) {
        __m256 v[4], mx = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + 8 * k);
            mx = _mm256_max_ps(_mm256_and_ps(v[k], nosign), mx);
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        float amax = _mm_cvtss_f32(h), d = amax / 127.0f, id = amax ? 127.0f / amax : 0.0f;
        __m256 iv = _mm256_set1_ps(id);
        __m256i lo8 = _mm256_set1_epi32(0xff), q[4];
        for (int k = 0; k < 4; k++)
            q[k] = _mm256_and_si256(_mm256_cvtps_epi32(_mm256_mul_ps(v[k], iv)), lo8);
        /* low bytes in order: pack (0..255 fits unsigned), then undo the lanes */
        __m256i b = _mm256_packus_epi16(_mm256_packus_epi32(q[0], q[1]),
                                        _mm256_packus_epi32(q[2], q[3]));
        b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)y[i].qs, b);
        __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), b);
        __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
        __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
        int sum = _mm_cvtsi128_si32(t);
        y[i].d = _cvtsh_ss(_cvtss_sh(d, 0));
        y[i].s = _cvtsh_ss(_cvtss_sh(d * (float)sum, 0));
        y[i].sum = sum;
    }
}

#undef ACT
