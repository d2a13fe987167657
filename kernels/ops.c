/* ops.c - the math of a transformer block on fp32 rows: matmuls (OpenBLAS),
 * norms, RoPE, softmax, activations and the bf16/f16 conversions. */
#include "kernels/ops.h"
#include "kernels/gemm_small.h"

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#else
static int omp_in_parallel(void) { return 0; }
#endif
#include <float.h>
#include <math.h>
#include <string.h>

/* ---------------------------------------------------------------- matmul */

/* Below this many multiply-adds a product runs on one BLAS thread: waking
 * OpenBLAS's other threads costs more than it saves, and on a busy machine
 * far more (measured: a tiny model's decode 30x slower with 2 threads while
 * the other core was loaded). Inside our own parallel regions BLAS is
 * already single-threaded. */
#define EGM_GEMM_THREADED_MIN (4L << 20)

static void gemm_blas(int transA, int transB, int M, int N, int K, float alpha,
                      const float *A, int lda, const float *B, int ldb, float beta,
                      float *C, int ldc);

static int g_invariant;

void egm_set_batch_invariant(int on) { g_invariant = on != 0; }
int egm_batch_invariant(void) { return g_invariant; }

static void gemm_small(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                       float beta, float *C, int ldc) {
    int threads = 1;
    if ((long)M * N * K >= EGM_GEMM_THREADED_MIN && !omp_in_parallel())
        threads = openblas_get_num_threads();
    egm_gemm_small_nt(M, N, K, A, lda, B, ldb, beta == 1.0f, C, ldc, threads);
}

/* Batch-invariant products: x W^T in groups of at most 8 rows through
 * gemm_small (one row included; a scale other than 1 applied to each sum
 * after it), anything else one row at a time. */
static void gemm_invariant(int transB, int M, int N, int K, float alpha, const float *A,
                           int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (transB && (beta == 0.0f || (beta == 1.0f && alpha == 1.0f))) {
        for (int i = 0; i < M; i += EGM_GEMM_SMALL_MAX_M) {
            int m = M - i < EGM_GEMM_SMALL_MAX_M ? M - i : EGM_GEMM_SMALL_MAX_M;
            float *c = C + (long)i * ldc;
            gemm_small(m, N, K, A + (long)i * lda, lda, B, ldb, beta, c, ldc);
            if (alpha != 1.0f)
                for (int r = 0; r < m; r++)
                    for (int n = 0; n < N; n++) c[(long)r * ldc + n] *= alpha;
        }
        return;
    }
    for (int i = 0; i < M; i++)
        gemm_blas(0, transB, 1, N, K, alpha, A + (long)i * lda, lda, B, ldb, beta,
                  C + (long)i * ldc, ldc);
}

void egm_gemm_batch(int transB, int M, int N, int K, float alpha, const float *A, int lda,
                    const float *B, int ldb, float beta, float *C, int ldc) {
    if (!g_invariant || M <= 0 || N <= 0 || K <= 0) {
        egm_gemm(0, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    int nt = 1;
    if (!omp_in_parallel() && (nt = openblas_get_num_threads()) > 1 &&
        (long)N * K < EGM_GEMM_THREADED_MIN)
        openblas_set_num_threads(1);
    gemm_invariant(transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (nt > 1 && (long)N * K < EGM_GEMM_THREADED_MIN) openblas_set_num_threads(nt);
}

void egm_gemm(int transA, int transB, int M, int N, int K, float alpha,
              const float *A, int lda, const float *B, int ldb, float beta,
              float *C, int ldc) {
    /* a few rows times weights: no packing (kernels/gemm_small.c) */
    if (!transA && transB && M >= 2 && M <= EGM_GEMM_SMALL_MAX_M && N > 0 && K > 0 &&
        alpha == 1.0f && (beta == 0.0f || beta == 1.0f)) {
        gemm_small(M, N, K, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    int nt = 1;
    if (M > 0 && N > 0 && K > 0 && (long)M * N * K < EGM_GEMM_THREADED_MIN &&
        !omp_in_parallel() && (nt = openblas_get_num_threads()) > 1)
        openblas_set_num_threads(1);
    gemm_blas(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (nt > 1) openblas_set_num_threads(nt);
}

static void gemm_blas(int transA, int transB, int M, int N, int K, float alpha,
                      const float *A, int lda, const float *B, int ldb, float beta,
                      float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        /* Empty product: C = beta * C (BLAS would do the same, but some
         * builds reject K = 0 leading dimensions). */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++)
                C[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(size_t)i * ldc + j];
        return;
    }
    if (M == 1) {
        /* One row: op(A) is the vector a, and C^T = op(B)^T a. sgemv is several
         * times faster than sgemm here. a is A's row (no trans) or its first
         * column (trans, stride lda). */
        int inca = transA ? lda : 1;
        /* OpenBLAS gemv with beta = 0 may still read y (0 * NaN = NaN): clear it. */
        if (beta == 0.0f) memset(C, 0, (size_t)N * sizeof *C);
        if (transB) /* B is [N, K]: y = B a */
            cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, alpha, B, ldb, A, inca,
                        beta, C, 1);
        else        /* B is [K, N]: y = B^T a */
            cblas_sgemv(CblasRowMajor, CblasTrans, K, N, alpha, B, ldb, A, inca,
                        beta, C, 1);
        return;
    }
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                transB ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb,
                beta, C, ldc);
}

void egm_linear(float *y, const float *x, const float *W, int M, int N, int K) {
    egm_gemm(0, 1, M, N, K, 1.0f, x, K, W, K, 0.0f, y, N);
}

void egm_linear_acc(float *y, const float *x, const float *W, int M, int N, int K) {
    egm_gemm(0, 1, M, N, K, 1.0f, x, K, W, K, 1.0f, y, N);
}

/* ----------------------------------------------------------------- norms */

/* Reductions keep 8 partial sums, lane j summing elements i = j mod 8 in
 * order: vectorisable, and closer to PyTorch's blocked reduction than one
 * serial accumulator. The lanes are one 8-float vector (GCC's vector
 * extension) so that the compiler cannot but use one register for them. */
typedef float v8f __attribute__((vector_size(32)));

/* Vectors go by pointer, never by value: without AVX enabled (a portable
 * or sanitizer build) a 32-byte vector argument or result changes the ABI. */
static inline void load8(v8f *v, const float *x) { memcpy(v, x, sizeof *v); }

static inline float lanes_sum(const v8f *a) {
    return (((*a)[0] + (*a)[1]) + ((*a)[2] + (*a)[3])) + (((*a)[4] + (*a)[5]) + ((*a)[6] + (*a)[7]));
}

static float sum_sq(const float *x, int n) {
    v8f acc = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f v;
        load8(&v, x + i);
        acc += v * v;
    }
    float s = 0.0f;
    for (; i < n; i++) s += x[i] * x[i];
    return s + lanes_sum(&acc);
}

static float sum_f(const float *x, int n) {
    v8f acc = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f v;
        load8(&v, x + i);
        acc += v;
    }
    float s = 0.0f;
    for (; i < n; i++) s += x[i];
    return s + lanes_sum(&acc);
}

/* RMSNorm of x into out, the sum of its squares known. */
static void rmsnorm_sum(float *out, const float *x, float sum_squares, const float *w, int n,
                        float eps) {
    float scale = 1.0f / sqrtf(sum_squares / (float)n + eps);
    for (int i = 0; i < n; i++) out[i] = (x[i] * scale) * w[i];
}

/* out = x / sqrt(mean(x^2) + eps) * w, as HF: (x * rsqrt(var + eps)) * w.
 * out may alias x. */
void egm_rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    if (n <= 0) return;
    rmsnorm_sum(out, x, sum_sq(x, n), w, n, eps);
}

/* LayerNorm of x in place, its mean known. The last loop is split by which
 * of w and b exist so that each version vectorises. */
static void egm_layernorm_mean(float *restrict x, float mean, const float *restrict w,
                               const float *restrict b, int n, float eps) {
    v8f acc = {0};
    float var = 0.0f;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f d;
        load8(&d, x + i);
        d -= mean;
        acc += d * d;
    }
    for (; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    var += lanes_sum(&acc);
    float rstd = 1.0f / sqrtf(var / (float)n + eps);
    if (w && b)
        for (i = 0; i < n; i++) x[i] = (x[i] - mean) * rstd * w[i] + b[i];
    else if (w)
        for (i = 0; i < n; i++) x[i] = (x[i] - mean) * rstd * w[i];
    else if (b)
        for (i = 0; i < n; i++) x[i] = (x[i] - mean) * rstd + b[i];
    else
        for (i = 0; i < n; i++) x[i] = (x[i] - mean) * rstd;
}

/* out = (x - mean) / sqrt(var + eps) * w + b, variance taken two-pass around
 * the mean (no E[x^2] - E[x]^2 cancellation). out may alias x. */
void egm_layernorm(float *out, const float *x, const float *w, const float *b,
                   int n, float eps) {
    if (n <= 0) return;
    if (out != x) memcpy(out, x, sizeof(float) * (size_t)n);
    egm_layernorm_mean(out, sum_f(out, n) / (float)n, w, b, n, eps);
}

/* ------------------------------------------------------------------ RoPE */

/* Precision choice: follow the PyTorch reference bit for bit where it is
 * cheap to. HF computes inv_freq = 1.0 / (theta ** (arange(0, d, 2).float() / d))
 * in fp32 and the angle pos * inv_freq in fp32, then cos/sin in fp32. We do
 * the same fp32 steps, and take cos/sin of that fp32 angle in double, rounded
 * once (torch's own cos/sin are within 1 ulp of that). Computing the angle
 * in double would be more exact but would drift from every reference
 * checkpoint by up to pos * ulp(inv_freq) radians.
 *
 * All heads of a token share a position, so the last (d, theta, pos) table is
 * kept per thread. */
#define ROPE_CACHE_HALF 512

static _Thread_local struct {
    int d, pos;
    float theta;
    float cos[ROPE_CACHE_HALF], sin[ROPE_CACHE_HALF];
} rope_cache = {.d = -1};

static void rope_angle(float *c, float *s, int i, int d, int pos, float theta) {
    float e = (float)(2 * i) / (float)d;
    float inv_freq = 1.0f / powf(theta, e);
    float angle = (float)pos * inv_freq;
    *c = (float)cos((double)angle);
    *s = (float)sin((double)angle);
}

static void rotate(float *x0, float *x1, float c, float s) {
    float a = *x0, b = *x1;
    *x0 = a * c - b * s;
    *x1 = b * c + a * s;
}

void egm_rope(float *x, int d, int pos, float theta, int interleave) {
    int half = d / 2;
    if (half <= 0) return;
    if (half <= ROPE_CACHE_HALF) {
        if (rope_cache.d != d || rope_cache.pos != pos || rope_cache.theta != theta) {
            for (int i = 0; i < half; i++)
                rope_angle(&rope_cache.cos[i], &rope_cache.sin[i], i, d, pos, theta);
            rope_cache.d = d;
            rope_cache.pos = pos;
            rope_cache.theta = theta;
        }
        const float *c = rope_cache.cos, *s = rope_cache.sin;
        if (interleave)
            for (int i = 0; i < half; i++) rotate(&x[2 * i], &x[2 * i + 1], c[i], s[i]);
        else
            for (int i = 0; i < half; i++) rotate(&x[i], &x[i + half], c[i], s[i]);
        return;
    }
    for (int i = 0; i < half; i++) {
        float c, s;
        rope_angle(&c, &s, i, d, pos, theta);
        if (interleave) rotate(&x[2 * i], &x[2 * i + 1], c, s);
        else rotate(&x[i], &x[i + half], c, s);
    }
}

/* --------------------------------------------------------------- softmax */

/* In place. Subtracts the max so expf never overflows; sums in double.
 * Degenerate rows stay finite: +inf entries share all the mass, and a row
 * that is all -inf (nothing allowed) becomes uniform. */
void egm_softmax(float *x, int n) {
    if (n <= 0) return;
    float max = -INFINITY;
    for (int i = 0; i < n; i++)
        if (x[i] > max) max = x[i];
    if (max == INFINITY || max == -INFINITY) {
        int cnt = 0;
        for (int i = 0; i < n; i++) cnt += (x[i] == max);
        if (cnt == 0) cnt = n; /* all NaN */
        for (int i = 0; i < n; i++) x[i] = (x[i] == max || cnt == n) ? 1.0f / (float)cnt : 0.0f;
        return;
    }
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++) x[i] *= inv;
}

/* x[idx] - logsumexp(x), with the logsumexp shifted by the max and summed in
 * double. */
float egm_logprob(const float *x, int n, int idx) {
    float max = -INFINITY;
    for (int i = 0; i < n; i++)
        if (x[i] > max) max = x[i];
    if (max == -INFINITY) return -INFINITY;
    if (max == INFINITY) return x[idx] == INFINITY ? 0.0f : -INFINITY;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += exp((double)x[i] - (double)max);
    return (float)((double)x[idx] - (double)max - log(sum));
}

/* Index of the largest value; the first one on ties; NaNs never win. */
int egm_argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best] || (x[best] != x[best] && x[i] == x[i])) best = i;
    return best;
}

/* ----------------------------------------------------------- elementwise */

void egm_swiglu(float *g, const float *u, int n) {
    for (int i = 0; i < n; i++) g[i] = egm_silu(g[i]) * u[i];
}

void egm_mul(float *x, const float *y, int n) {
    for (int i = 0; i < n; i++) x[i] *= y[i];
}

void egm_gate_norm(float *restrict z, const float *restrict g, const float *w,
                   const float *b, int n, float eps, int rms) {
    if (n <= 0) return;
    /* the products summed in the lanes and order of sum_f / sum_sq */
    v8f acc = {0};
    float s = 0.0f;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f v, w8;
        load8(&v, z + i);
        load8(&w8, g + i);
        v *= w8;
        memcpy(z + i, &v, sizeof v);
        acc += rms ? v * v : v;
    }
    for (; i < n; i++) {
        z[i] *= g[i];
        s += rms ? z[i] * z[i] : z[i];
    }
    s += lanes_sum(&acc);
    if (rms) rmsnorm_sum(z, z, s, w, n, eps);
    else egm_layernorm_mean(z, s / (float)n, w, b, n, eps);
}

void egm_add(float *x, const float *y, int n) {
    for (int i = 0; i < n; i++) x[i] += y[i];
}

/* ---------------------------------------------------------- conversions */

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* bf16 is the top half of an fp32. */
float egm_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

/* Round to nearest, ties to even: add 0x7fff plus the lowest kept bit, then
 * truncate. Overflow rounds to inf, as it should. A NaN keeps its sign and
 * top payload, with the quiet bit set so truncation cannot turn it into inf. */
uint16_t egm_f32_to_bf16(float f) {
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* IEEE half: 1 sign, 5 exponent (bias 15), 10 mantissa bits. */
float egm_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) /* inf / NaN: payload moves to the top of the fp32 mantissa */
        return u2f(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (man == 0) return u2f(sign);
        /* Subnormal: man * 2^-24, exact in fp32. */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return u2f(sign | ((exp + 112u) << 23) | (man << 13));
}

void egm_bf16_to_f32_n(float *dst, const uint16_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = u2f((uint32_t)src[i] << 16);
}

void egm_f32_to_bf16_n(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = egm_f32_to_bf16(src[i]);
}

void egm_f16_to_f32_n(float *dst, const uint16_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = egm_f16_to_f32(src[i]);
}
