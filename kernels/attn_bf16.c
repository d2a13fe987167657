/* attn_bf16.c - C = alpha A B^T + beta C over bf16 rows, fp32 accumulation
 * (see attn_bf16.h). Every output is a dot product along the rows (the
 * shape of scores, q . k, and of the rebuild, c . W_up row), so a kernel is
 * a few dot products at once sharing their loads. */
#include "kernels/attn_bf16.h"

#include <string.h>

#include "kernels/matmul.h"
#include "kernels/ops.h"

static inline float bf(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The tail after the 8-lane part, in order. Products of two bf16 values
 * are exact in fp32, so a multiply then an add is the same as an FMA. */
static inline float tail(float s, const uint16_t *a, const uint16_t *b, int k, int K) {
    for (; k < K; k++) s += bf(a[k]) * bf(b[k]);
    return s;
}

static inline void put(float *c, float alpha, float s, float beta) {
    *c = beta == 0.0f ? alpha * s : alpha * s + beta * *c;
}

/* ---------------------------------------------------------------- plain C */

/* The reference order: lane l sums terms l, l+8, ... of the first K & ~7,
 * the lanes fold as ((0+4)+(2+6)) + ((1+5)+(3+7)), then the tail. */
static float dot_ref(const uint16_t *a, const uint16_t *b, int K) {
    float l[8] = {0};
    int K8 = K & ~7;
    for (int k = 0; k < K8; k += 8)
        for (int i = 0; i < 8; i++) l[i] += bf(a[k + i]) * bf(b[k + i]);
    float s = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
    return tail(s, a, b, K8, K);
}

static void gemm_ref(int M, int N, int K, float alpha, const uint16_t *A, int lda,
                     const uint16_t *B, int ldb, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++)
            put(C + (long)i * ldc + j, alpha,
                dot_ref(A + (long)i * lda, B + (long)j * ldb, K), beta);
}

/* ---------------------------------------------------------------- x86 */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma")))

/* 8 bf16 widened to fp32: a bf16 is the top half of an fp32. */
AVX2 static inline __m256 ld8(const uint16_t *p) {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

/* The reference fold: ((0+4)+(2+6)) + ((1+5)+(3+7)). */
AVX2 static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}

AVX2 static float dot_avx2(const uint16_t *a, const uint16_t *b, int K) {
    __m256 acc = _mm256_setzero_ps();
    int K8 = K & ~7;
    for (int k = 0; k < K8; k += 8) acc = _mm256_fmadd_ps(ld8(a + k), ld8(b + k), acc);
    return tail(hsum8(acc), a, b, K8, K);
}

/* 4 rows of A x 2 rows of B: 8 accumulators, 6 loads per 8 terms. */
AVX2 static void tile_avx2(int K, const uint16_t *A, int lda, const uint16_t *B, int ldb,
                           float alpha, float beta, float *C, int ldc) {
    const uint16_t *a0 = A, *a1 = A + lda, *a2 = A + 2L * lda, *a3 = A + 3L * lda;
    const uint16_t *b0 = B, *b1 = B + ldb;
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00;
    int K8 = K & ~7;
    for (int k = 0; k < K8; k += 8) {
        __m256 x0 = ld8(b0 + k), x1 = ld8(b1 + k), y;
        y = ld8(a0 + k), c00 = _mm256_fmadd_ps(y, x0, c00), c01 = _mm256_fmadd_ps(y, x1, c01);
        y = ld8(a1 + k), c10 = _mm256_fmadd_ps(y, x0, c10), c11 = _mm256_fmadd_ps(y, x1, c11);
        y = ld8(a2 + k), c20 = _mm256_fmadd_ps(y, x0, c20), c21 = _mm256_fmadd_ps(y, x1, c21);
        y = ld8(a3 + k), c30 = _mm256_fmadd_ps(y, x0, c30), c31 = _mm256_fmadd_ps(y, x1, c31);
    }
    __m256 acc[4][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}};
    for (int r = 0; r < 4; r++)
        for (int j = 0; j < 2; j++)
            put(C + (long)r * ldc + j, alpha,
                tail(hsum8(acc[r][j]), A + (long)r * lda, B + (long)j * ldb, K8, K), beta);
}

/* AVX512-BF16 (Cooper Lake, Sapphire Rapids, Zen 4): vdpbf16ps adds 16
 * pairs of products per instruction, 32 terms, in its own order. This
 * machine has no AVX-512 at all, so this path is compiled but has not run
 * here; tests compare it with the reference wherever the CPU has it. */
#define AVX512BF16 __attribute__((target("avx512bf16,avx512f,avx512bw,avx512vl")))

AVX512BF16 static inline __m512bh ld32(const uint16_t *p, __mmask32 m) {
    return (__m512bh)_mm512_maskz_loadu_epi16(m, p);
}

AVX512BF16 static float dot_512(const uint16_t *a, const uint16_t *b, int K) {
    __m512 acc = _mm512_setzero_ps();
    for (int k = 0; k < K; k += 32) {
        __mmask32 m = K - k >= 32 ? ~(__mmask32)0 : (__mmask32)((1u << (K - k)) - 1);
        acc = _mm512_dpbf16_ps(acc, ld32(a + k, m), ld32(b + k, m));
    }
    return _mm512_reduce_add_ps(acc);
}

/* 4 rows of A x 2 rows of B; the masked loads zero the tail's lanes. */
AVX512BF16 static void tile_512(int K, const uint16_t *A, int lda, const uint16_t *B, int ldb,
                                float alpha, float beta, float *C, int ldc) {
    const uint16_t *a0 = A, *a1 = A + lda, *a2 = A + 2L * lda, *a3 = A + 3L * lda;
    const uint16_t *b0 = B, *b1 = B + ldb;
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00;
    for (int k = 0; k < K; k += 32) {
        __mmask32 m = K - k >= 32 ? ~(__mmask32)0 : (__mmask32)((1u << (K - k)) - 1);
        __m512bh x0 = ld32(b0 + k, m), x1 = ld32(b1 + k, m), y;
        y = ld32(a0 + k, m), c00 = _mm512_dpbf16_ps(c00, y, x0), c01 = _mm512_dpbf16_ps(c01, y, x1);
        y = ld32(a1 + k, m), c10 = _mm512_dpbf16_ps(c10, y, x0), c11 = _mm512_dpbf16_ps(c11, y, x1);
        y = ld32(a2 + k, m), c20 = _mm512_dpbf16_ps(c20, y, x0), c21 = _mm512_dpbf16_ps(c21, y, x1);
        y = ld32(a3 + k, m), c30 = _mm512_dpbf16_ps(c30, y, x0), c31 = _mm512_dpbf16_ps(c31, y, x1);
    }
    __m512 acc[4][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}};
    for (int r = 0; r < 4; r++)
        for (int j = 0; j < 2; j++)
            put(C + (long)r * ldc + j, alpha, _mm512_reduce_add_ps(acc[r][j]), beta);
}

/* A kernel set's two pieces: a 4 x 2 tile of outputs, and one output. */
typedef void (*tile_fn)(int K, const uint16_t *A, int lda, const uint16_t *B, int ldb,
                        float alpha, float beta, float *C, int ldc);
typedef float (*dot_fn)(const uint16_t *a, const uint16_t *b, int K);

/* Tiles over the first M & ~3 rows and N & ~1 columns, single outputs for
 * the edges. */
static void gemm_tiled(tile_fn tile, dot_fn dot, int M, int N, int K, float alpha,
                       const uint16_t *A, int lda, const uint16_t *B, int ldb, float beta,
                       float *C, int ldc) {
    int M4 = M & ~3, N2 = N & ~1;
    for (int i = 0; i < M; i++) {
        const uint16_t *a = A + (long)i * lda;
        float *c = C + (long)i * ldc;
        if (i < M4 && (i & 3) == 0)
            for (int j = 0; j < N2; j += 2)
                tile(K, a, lda, B + (long)j * ldb, ldb, alpha, beta, c + j, ldc);
        for (int j = i < M4 ? N2 : 0; j < N; j++)
            put(c + j, alpha, dot(a, B + (long)j * ldb, K), beta);
    }
}

static void gemm_avx2(int M, int N, int K, float alpha, const uint16_t *A, int lda,
                      const uint16_t *B, int ldb, float beta, float *C, int ldc) {
    gemm_tiled(tile_avx2, dot_avx2, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

static void gemm_512(int M, int N, int K, float alpha, const uint16_t *A, int lda,
                     const uint16_t *B, int ldb, float beta, float *C, int ldc) {
    gemm_tiled(tile_512, dot_512, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

static int have_avx2(void) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

static int have_512(void) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
}
#else
static int have_avx2(void) { return 0; }
static int have_512(void) { return 0; }
#define gemm_avx2 gemm_ref
#define gemm_512 gemm_ref
#endif

/* 0 portable, 1 avx2, 2 avx512bf16: from the weight kernels' set, so that
 * EGMLA_KERNELS and egm_kernels_force steer both. */
static int kernel_id(void) {
    const char *set = egm_kernels_name();
    if (!strcmp(set, "portable")) return 0;
    if (!strcmp(set, "avx512") && have_512()) return 2;
    return have_avx2() ? 1 : 0;
}

const char *egm_gemm_bf16_kernel(void) {
    static const char *const names[] = {"portable", "avx2", "avx512bf16"};
    return names[kernel_id()];
}

void egm_gemm_bf16_nt(int M, int N, int K, float alpha, const uint16_t *A, int lda,
                      const uint16_t *B, int ldb, float beta, float *C, int ldc) {
    switch (kernel_id()) {
    case 2: gemm_512(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc); break;
    case 1: gemm_avx2(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc); break;
    default: gemm_ref(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    }
}

void egm_bf16_round_rows(uint16_t *dst, int ldd, const float *src, int lds, int rows, int cols) {
    for (int r = 0; r < rows; r++)
        egm_f32_to_bf16_n(dst + (long)r * ldd, src + (long)r * lds, (size_t)cols);
}
