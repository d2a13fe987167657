/* gemm_small.c - y[M, N] = x[M, K] W[N, K]^T (+ y) for a few rows of x.
 *
 * Decode steps of small batches multiply 2..8 rows by every weight matrix.
 * OpenBLAS's sgemm packs all of W into its own layout first, which for so
 * few rows costs more than the product. Here W streams through once, one
 * row at a time, dotted with all M rows of x (a few KiB per row, in L1).
 * Measured on this machine, one thread, 200 cold 2048 x 768 matrices:
 * M = 2, 4, 8 at 12.9, 21.6, 38.1 GFLOP/s, against OpenBLAS's sgemm at
 * about 9, 13, 13.5. Built with
 * -ffp-contract=fast (Makefile) so the multiply-adds are fused, as in
 * OpenBLAS; sums are fp32. */
#include "kernels/gemm_small.h"

#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* 8 lanes: one AVX register in the AVX2 clone, two SSE ones in the
 * portable build (egm_gemm_small_nt is cloned per instruction set below). */
#define VL 8
typedef float vf __attribute__((vector_size(VL * sizeof(float))));

/* A tile is one row of W against all M rows of x: M sums, the W vector
 * and one x vector in registers (at most 10 of AVX2's 16), and W streams
 * through once. Measured here with cold weights: about 12-13 GB/s of W for
 * M = 2..4 (the read-only bandwidth is about 14.5), where tiles of several
 * W rows ran at 8-11, and a 4 x 4 tile (24 registers, spilled) at 6-9. */
#define MR EGM_GEMM_SMALL_MAX_M

/* Vectors go by pointer: a wide vector by value changes the ABI when the
 * build does not enable the matching instruction set. */
static inline void ld(vf *v, const float *p) { memcpy(v, p, sizeof *v); }

static inline float hsum(const vf *a) {
    float s[VL];
    memcpy(s, a, sizeof s);
    for (int w = VL / 2; w > 0; w /= 2)
        for (int i = 0; i < w; i++) s[i] += s[i + w];
    return s[0];
}

/* Rows [0, mr) of x against row w of W, into column 0 of y. Inlined with
 * a constant mr, so the loops unroll and acc lives in registers. Each sum
 * runs over VL lanes along k, then hsum, then the tail: the same order for
 * every M, so a row's bits do not depend on how many rows share the call. */
static inline __attribute__((always_inline)) void tile(int mr, int K, const float *x, int ldx,
                                                       const float *w, int acc_y, float *y,
                                                       int ldy) {
    vf acc[MR];
    memset(acc, 0, sizeof acc);
    int k = 0;
    for (; k + VL <= K; k += VL) {
        vf b;
        ld(&b, w + k);
        for (int i = 0; i < mr; i++) {
            vf a;
            ld(&a, x + (long)i * ldx + k);
            acc[i] += a * b;
        }
    }
    for (int i = 0; i < mr; i++) {
        float s = hsum(&acc[i]);
        for (int kk = k; kk < K; kk++) s += x[(long)i * ldx + kk] * w[kk];
        float *o = y + (long)i * ldy;
        *o = acc_y ? *o + s : s;
    }
}

/* Column n of y for all M rows: the tile of constant height M. */
static inline __attribute__((always_inline)) void column(int M, int K, const float *x, int ldx,
                                                         const float *w, int acc_y, float *y,
                                                         int ldy) {
    switch (M) {
#define CASE(m) case m: tile(m, K, x, ldx, w, acc_y, y, ldy); return;
    CASE(8) CASE(7) CASE(6) CASE(5) CASE(4) CASE(3) CASE(2)
#undef CASE
    default: tile(1, K, x, ldx, w, acc_y, y, ldy); return;
    }
}

/* Column blocks [b0, b1), built for the baseline and for AVX2 + FMA; the
 * loader picks by CPU, so a portable binary keeps this CPU's speed. The
 * tile code is inlined into each clone (an OpenMP region's outlined body
 * would not be cloned, hence the split from the threaded loop below). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__AVX2__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
static void column_blocks(int b0, int b1, int M, int N, int K, const float *x, int ldx,
                          const float *W, int ldw, int acc_y, float *y, int ldy) {
    (void)N;
    for (int n = b0; n < b1; n++) column(M, K, x, ldx, W + (long)n * ldw, acc_y, y + n, ldy);
}

void egm_gemm_small_nt(int M, int N, int K, const float *x, int ldx, const float *W, int ldw,
                       int acc_y, float *y, int ldy, int threads) {
    if (M < 1 || M > MR) return;
    int blocks = N;
    if (threads > blocks) threads = blocks;
    if (threads < 1) threads = 1;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int t = 0; t < threads; t++)
        column_blocks((int)((long)blocks * t / threads), (int)((long)blocks * (t + 1) / threads),
                      M, N, K, x, ldx, W, ldw, acc_y, y, ldy);
}
