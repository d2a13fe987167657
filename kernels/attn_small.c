/* attn_small.c - the weighted sum of a block of latents for a few query
 * rows (see attn_small.h): tiles of 6 rows x 16 columns, 12 ymm
 * accumulators, one broadcast of S[r, j] per row and two loads of z_j per
 * position: the 16 ymm registers of AVX2. (A register-blocked kernel for
 * the scores was tried, 4 rows x 3 positions: 20 % slower than OpenBLAS's
 * sgemm there, so the scores stay with BLAS.) */
#include "kernels/attn_small.h"

/* ---------------------------------------------------------------- plain C */

static void wsum_c(int R, int du, int nb, const float *S, int lds, const float *Z, int ldz,
                   float *O, int ldo) {
    for (int r = 0; r < R; r++)
        for (int j = 0; j < nb; j++) {
            float s = S[(long)r * lds + j];
            for (int k = 0; k < du; k++) O[(long)r * ldo + k] += s * Z[(long)j * ldz + k];
        }
}

/* ---------------------------------------------------------------- AVX2 */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma")))

/* Rows r0.. (rr <= 6 valid; the others repeat the last and are not
 * stored) x columns k0..k0+15, over every position. Named accumulators:
 * an array indexed by a loop variable would live on the stack. */
AVX2 static void wsum_tile(int rr, int nb, const float *S, int lds, const float *Z, int ldz,
                           float *O, int ldo) {
    const float *s0 = S, *s1 = S + (long)(rr > 1 ? 1 : 0) * lds, *s2 = S + (long)(rr > 2 ? 2 : rr - 1) * lds;
    const float *s3 = S + (long)(rr > 3 ? 3 : rr - 1) * lds, *s4 = S + (long)(rr > 4 ? 4 : rr - 1) * lds;
    const float *s5 = S + (long)(rr > 5 ? 5 : rr - 1) * lds;
#define LD(i) O + (long)((i) < rr ? (i) : rr - 1) * ldo
    __m256 a0 = _mm256_loadu_ps(LD(0)), b0 = _mm256_loadu_ps(LD(0) + 8);
    __m256 a1 = _mm256_loadu_ps(LD(1)), b1 = _mm256_loadu_ps(LD(1) + 8);
    __m256 a2 = _mm256_loadu_ps(LD(2)), b2 = _mm256_loadu_ps(LD(2) + 8);
    __m256 a3 = _mm256_loadu_ps(LD(3)), b3 = _mm256_loadu_ps(LD(3) + 8);
    __m256 a4 = _mm256_loadu_ps(LD(4)), b4 = _mm256_loadu_ps(LD(4) + 8);
    __m256 a5 = _mm256_loadu_ps(LD(5)), b5 = _mm256_loadu_ps(LD(5) + 8);
#undef LD
    for (int j = 0; j < nb; j++) {
        const float *z = Z + (long)j * ldz;
        __m256 y0 = _mm256_loadu_ps(z), y1 = _mm256_loadu_ps(z + 8), x;
        x = _mm256_broadcast_ss(s0 + j), a0 = _mm256_fmadd_ps(x, y0, a0), b0 = _mm256_fmadd_ps(x, y1, b0);
        x = _mm256_broadcast_ss(s1 + j), a1 = _mm256_fmadd_ps(x, y0, a1), b1 = _mm256_fmadd_ps(x, y1, b1);
        x = _mm256_broadcast_ss(s2 + j), a2 = _mm256_fmadd_ps(x, y0, a2), b2 = _mm256_fmadd_ps(x, y1, b2);
        x = _mm256_broadcast_ss(s3 + j), a3 = _mm256_fmadd_ps(x, y0, a3), b3 = _mm256_fmadd_ps(x, y1, b3);
        x = _mm256_broadcast_ss(s4 + j), a4 = _mm256_fmadd_ps(x, y0, a4), b4 = _mm256_fmadd_ps(x, y1, b4);
        x = _mm256_broadcast_ss(s5 + j), a5 = _mm256_fmadd_ps(x, y0, a5), b5 = _mm256_fmadd_ps(x, y1, b5);
    }
    /* stores in reverse: padded rows alias the last valid one, whose own
     * (identical) values are then written last */
    if (rr > 5) _mm256_storeu_ps(O + 5L * ldo, a5), _mm256_storeu_ps(O + 5L * ldo + 8, b5);
    if (rr > 4) _mm256_storeu_ps(O + 4L * ldo, a4), _mm256_storeu_ps(O + 4L * ldo + 8, b4);
    if (rr > 3) _mm256_storeu_ps(O + 3L * ldo, a3), _mm256_storeu_ps(O + 3L * ldo + 8, b3);
    if (rr > 2) _mm256_storeu_ps(O + 2L * ldo, a2), _mm256_storeu_ps(O + 2L * ldo + 8, b2);
    if (rr > 1) _mm256_storeu_ps(O + 1L * ldo, a1), _mm256_storeu_ps(O + 1L * ldo + 8, b1);
    _mm256_storeu_ps(O, a0), _mm256_storeu_ps(O + 8, b0);
}

AVX2 static void wsum_avx2(int R, int du, int nb, const float *S, int lds, const float *Z,
                           int ldz, float *O, int ldo) {
    int du16 = du & ~15;
    for (int r0 = 0; r0 < R; r0 += 6) {
        int rr = R - r0 < 6 ? R - r0 : 6;
        for (int k0 = 0; k0 < du16; k0 += 16)
            wsum_tile(rr, nb, S + (long)r0 * lds, lds, Z + k0, ldz, O + (long)r0 * ldo + k0, ldo);
    }
    if (du16 < du)
        for (int r = 0; r < R; r++)
            for (int j = 0; j < nb; j++) {
                float s = S[(long)r * lds + j];
                for (int k = du16; k < du; k++) O[(long)r * ldo + k] += s * Z[(long)j * ldz + k];
            }
}

static int have_avx2(void) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
static int have_avx2(void) { return 0; }
#define wsum_avx2 wsum_c
#endif

static int simd_off;

void egm_attn_small_allow_simd(int on) { simd_off = !on; }

int egm_attn_small_simd(void) { return !simd_off && have_avx2(); }

void egm_attn_wsum(int R, int du, int nb, const float *S, int lds, const float *Z, int ldz,
                   float *O, int ldo) {
    if (egm_attn_small_simd())
        wsum_avx2(R, du, nb, S, lds, Z, ldz, O, ldo);
    else
        wsum_c(R, du, nb, S, lds, Z, ldz, O, ldo);
}
