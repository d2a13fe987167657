/* gemm_small.c - y[M, N] = x[M, K] W[N, K]^T (+ y) for a few rows of x.
 *
 * Decode steps of small batches multiply 2..8 rows by every weight matrix.
 * OpenBLAS's sgemm packs all of W into its own layout first, which for so
 * few rows costs more than the product (measured here: M = 8, cold weights,
 * 22 GFLOP/s against 32 for this kernel; M = 2, 5 against 8). Here W streams
 * through once, NR of its rows at a time, each dotted with up to MR rows of
 * x held in registers; x (a few KiB per row) stays in cache. Built with
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

#define MR 4
#define NR 4

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

/* One tile: rows [0, mr) of x against rows [0, nr) of W. Inlined with
 * constant mr and nr, so the loops unroll and acc lives in registers. */
static inline __attribute__((always_inline)) void tile(int mr, int nr, int K, const float *x,
                                                       int ldx, const float *W, int ldw,
                                                       int acc_y, float *y, int ldy) {
    vf acc[MR][NR];
    memset(acc, 0, sizeof acc);
    int k = 0;
    for (; k + VL <= K; k += VL) {
        vf a[MR], b[NR];
        for (int i = 0; i < mr; i++) ld(&a[i], x + (long)i * ldx + k);
        for (int j = 0; j < nr; j++) ld(&b[j], W + (long)j * ldw + k);
        for (int i = 0; i < mr; i++)
            for (int j = 0; j < nr; j++) acc[i][j] += a[i] * b[j];
    }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) {
            float s = hsum(&acc[i][j]);
            for (int kk = k; kk < K; kk++) s += x[(long)i * ldx + kk] * W[(long)j * ldw + kk];
            float *o = y + (long)i * ldy + j;
            *o = acc_y ? *o + s : s;
        }
}

/* Columns [n0, n0 + nr) for every row of x, MR rows at a time. */
static inline __attribute__((always_inline)) void column_block(int M, int nr, int K, const float *x, int ldx, const float *W, int ldw,
                         int acc_y, float *y, int ldy) {
    for (int m0 = 0; m0 < M; m0 += MR) {
        int mr = M - m0 < MR ? M - m0 : MR;
        const float *xm = x + (long)m0 * ldx;
        float *ym = y + (long)m0 * ldy;
        if (nr == NR) {
            switch (mr) {
            case 4: tile(4, NR, K, xm, ldx, W, ldw, acc_y, ym, ldy); break;
            case 3: tile(3, NR, K, xm, ldx, W, ldw, acc_y, ym, ldy); break;
            case 2: tile(2, NR, K, xm, ldx, W, ldw, acc_y, ym, ldy); break;
            default: tile(1, NR, K, xm, ldx, W, ldw, acc_y, ym, ldy); break;
            }
        } else {
            for (int j = 0; j < nr; j++)
                for (int i = 0; i < mr; i++)
                    tile(1, 1, K, xm + (long)i * ldx, ldx, W + (long)j * ldw, ldw, acc_y,
                         ym + (long)i * ldy + j, ldy);
        }
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
    for (int b = b0; b < b1; b++) {
        int n0 = b * NR, nr = N - n0 < NR ? N - n0 : NR;
        column_block(M, nr, K, x, ldx, W + (long)n0 * ldw, ldw, acc_y, y + n0, ldy);
    }
}

void egm_gemm_small_nt(int M, int N, int K, const float *x, int ldx, const float *W, int ldw,
                       int acc_y, float *y, int ldy, int threads) {
    int blocks = (N + NR - 1) / NR;
    if (threads > blocks) threads = blocks;
    if (threads < 1) threads = 1;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int t = 0; t < threads; t++)
        column_blocks((int)((long)blocks * t / threads), (int)((long)blocks * (t + 1) / threads),
                      M, N, K, x, ldx, W, ldw, acc_y, y, ldy);
}
