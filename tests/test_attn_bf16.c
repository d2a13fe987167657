/* test_attn_bf16.c - attention with bf16 operands (--attn-dtype bf16)
 * against plain C and against naive double-precision attention, for every
 * kernel set this CPU runs (portable, avx2, and avx512bf16 where present).
 *
 * The bounds (docs/BENCHMARKS.md, "bf16 attention"): rounding to bf16 moves
 * an operand by at most u = 2^-9 of itself; the product of two rounded
 * operands is exact in fp32, off the true one by at most (2u + u^2) |a b|;
 * summing K of them in fp32 and scaling adds at most (K + 1) 2^-24 of
 * sum |a b| (times 1 + 2^-7: the rounded magnitudes). So a score
 *   |s_bf16 - s| <= scale (2^-8 + (K + 2) 2^-23) sum_k |a_k b_k|      (1)
 * and with every score of a row off by at most eps, each softmax weight
 * moves by a factor within e^(+-2 eps), so an output of attention
 *   |o_bf16 - o| <= (e^(2 eps) - 1 + f) sum_j p_j |z_j|               (2)
 * where f = (P + 32) 2^-22 covers the fp32 softmax and weighted sum over P
 * positions. The test also checks the rounding really happens: bf16's error
 * is far above fp32's, so a path that quietly stayed fp32 fails. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attention.h"
#include "kernels/attn_bf16.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"

static const char *const SETS[] = {"portable", "avx2", "avx512"};

#define RAND_SEED 0x2545f4914f6cdd1dull
#include "tests/rand_vec.h"

static void restore_best(void) {
    if (egm_kernels_force("avx512")) egm_kernels_force("avx2");
}

/* Bound (1) on one dot product of K terms, relative to sum |a b|. */
static double dot_bound(int K) { return 0x1p-8 + (K + 2) * 0x1p-23; }

/* One shape through the bf16 GEMM of the current set: against the plain C
 * reference (avx2: the same bits; avx512bf16: within fp32 summation) and
 * against the exact product of the unrounded operands (bound 1). */
static void gemm_case(int M, int N, int K, float alpha, float beta) {
    int lda = K + 3, ldb = K + 5, ldc = N + 2;
    float *A = rand_vec((long)M * lda, 1), *B = rand_vec((long)N * ldb, 3);
    float *C0 = rand_vec((long)M * ldc, 1), *C = malloc(sizeof(float) * M * ldc);
    float *Cr = malloc(sizeof(float) * M * ldc), *C32 = malloc(sizeof(float) * M * ldc);
    uint16_t *Ab = malloc(2 * (size_t)M * lda), *Bb = malloc(2 * (size_t)N * ldb);
    egm_bf16_round_rows(Ab, lda, A, lda, M, K);
    egm_bf16_round_rows(Bb, ldb, B, ldb, N, K);
    const char *kern = egm_gemm_bf16_kernel(), *set = egm_kernels_name();
    memcpy(C, C0, sizeof(float) * M * ldc);
    egm_gemm_bf16_nt(M, N, K, alpha, Ab, lda, Bb, ldb, beta, C, ldc);
    egm_kernels_force("portable");
    memcpy(Cr, C0, sizeof(float) * M * ldc);
    egm_gemm_bf16_nt(M, N, K, alpha, Ab, lda, Bb, ldb, beta, Cr, ldc);
    egm_kernels_force(set);
    memcpy(C32, C0, sizeof(float) * M * ldc);
    egm_gemm(0, 1, M, N, K, alpha, A, lda, B, ldb, beta, C32, ldc);
    double worst16 = 0, worst32 = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double v = 0, mag = 0, mag16 = 0;
            for (int k = 0; k < K; k++) {
                v += (double)A[i * lda + k] * B[j * ldb + k];
                mag += fabs((double)A[i * lda + k] * B[j * ldb + k]);
                mag16 += fabs((double)egm_bf16_to_f32(Ab[i * lda + k]) *
                              egm_bf16_to_f32(Bb[j * ldb + k]));
            }
            v = alpha * v + beta * C0[i * ldc + j];
            double got = C[i * ldc + j], ref = Cr[i * ldc + j];
            double slack = fabs(beta * C0[i * ldc + j]) * 0x1p-23 + 1e-30;
            if (!strcmp(kern, "avx2")) assert_true(got == ref);
            else assert_true(fabs(got - ref) <= fabs(alpha) * mag16 * 2 * (K + 2) * 0x1p-24 + slack);
            assert_true(fabs(got - v) <= fabs(alpha) * mag * dot_bound(K) + slack);
            if (fabs(got - v) > worst16) worst16 = fabs(got - v);
            if (fabs(C32[i * ldc + j] - v) > worst32) worst32 = fabs(C32[i * ldc + j] - v);
        }
    if ((long)M * N * K >= 64) assert_true(worst16 > 16 * worst32);
    free(A), free(B), free(C0), free(C), free(Cr), free(C32), free(Ab), free(Bb);
}

static void test_gemm(void **st) {
    (void)st;
    int ran = 0;
    for (int s = 0; s < 3; s++) {
        if (egm_kernels_force(SETS[s])) continue;
        ran++;
        gemm_case(16, 128, 288, 0.0589f, 0.0f); /* paper decode scores: 16 heads, a block */
        gemm_case(128, 64, 96, 1.0f, 0.0f);     /* a rebuild block: positions x W_up rows */
        gemm_case(7, 5, 37, 0.5f, 1.0f);        /* every tail: rows, columns, K % 8, K % 32 */
        gemm_case(3, 9, 8, -1.0f, 0.5f);
        gemm_case(5, 2, 3, 1.0f, 0.0f);
        gemm_case(1, 1, 1, 2.0f, 0.0f);
    }
    assert_true(ran >= 1);
    restore_best();
}

/* Bound (2) for one query against positions [0, last]: s[j] are the
 * double scores, e[j] their bound (1); checks got[du] against the
 * double output. */
static void check_row(const float *got, double *s, const double *e, int last, const float *Z,
                      int ldz, int du, int P) {
    double mx = -1e300, sum = 0, eps = 0;
    for (int j = 0; j <= last; j++) {
        if (s[j] > mx) mx = s[j];
        if (e[j] > eps) eps = e[j];
    }
    for (int j = 0; j <= last; j++) sum += (s[j] = exp(s[j] - mx));
    double f = expm1(2 * eps) + (P + 32) * 0x1p-22;
    for (int k = 0; k < du; k++) {
        double o = 0, mag = 0;
        for (int j = 0; j <= last; j++) {
            o += s[j] / sum * Z[(long)j * ldz + k];
            mag += s[j] / sum * fabs(Z[(long)j * ldz + k]);
        }
        assert_true(fabs(got[k] - o) <= f * mag + 1e-30);
    }
}

/* The latents as a block callback: [z | kpe] side by side, one array. */
typedef struct {
    const float *ZK;
    int K;
} zk_ctx;

static void zk_rows(void *v, int j0, int j1, const float **z, int *ldz, const float **kpe,
                    int *ldk) {
    zk_ctx *c = v;
    (void)j1;
    *z = c->ZK + (long)j0 * c->K;
    *kpe = *z + c->K - 2; /* dr = 2 below */
    *ldz = *ldk = c->K;
}

/* Latent attention of T rows at pos0.. (heads H, d_u du, d_r 2) through
 * egm_latent_attend_range_bf16 and finish, against naive double attention. */
static void latent_case(int T, int pos0, int H, int du, int block, float zscale) {
    const int dn = 4, dr = 2, dq = dn + dr, K = du + dr, P = pos0 + T, R = H * T;
    float *q = rand_vec((long)T * H * dq, 1), *qlat = rand_vec((long)R * du, 1);
    float *ZK = rand_vec((long)P * K, zscale), *o = malloc(sizeof(float) * R * du);
    float *m = malloc(sizeof(float) * R), *S = malloc(sizeof(float) *
        egm_attn_latent_range_scratch_bf16(T, H, block, du, dr));
    double *l = malloc(sizeof(double) * R), *s = malloc(sizeof(double) * P);
    double *e = malloc(sizeof(double) * P);
    float scale = 1.0f / sqrtf((float)dq);
    zk_ctx c = {ZK, K};
    egm_latent_attend_range_bf16(o, m, l, qlat, q, H * dq, T, pos0, 0, P, zk_rows, &c, H, dn, dr,
                                 du, scale, block, S);
    egm_latent_finish(o, l, R, du);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            int r = t * H + h;
            const float *qp = q + (long)t * H * dq + h * dq + dn;
            for (int j = 0; j <= pos0 + t; j++) {
                double v = 0, mag = 0;
                for (int k = 0; k < K; k++) {
                    double a = k < du ? qlat[(long)r * du + k] : qp[k - du];
                    v += a * ZK[(long)j * K + k];
                    mag += fabs(a * ZK[(long)j * K + k]);
                }
                s[j] = scale * v;
                e[j] = scale * mag * dot_bound(K);
            }
            check_row(o + (long)r * du, s, e, pos0 + t, ZK, K, du, P);
        }
    free(q), free(qlat), free(ZK), free(o), free(m), free(S), free(l), free(s), free(e);
}

static void test_latent(void **st) {
    (void)st;
    for (int i = 0; i < 3; i++) {
        if (egm_kernels_force(SETS[i])) continue;
        latent_case(1, 300, 16, 64, 128, 1.0f); /* decode, blocks of 128 and a tail */
        latent_case(1, 40, 3, 37, 16, 4.0f);    /* sharp softmax, odd d_u */
        latent_case(9, 20, 4, 24, 8, 1.0f);     /* prefill: causal rows in blocks */
    }
    restore_best();
}

/* MHA (llama) with bf16 scores, grouped heads, against double. */
static void mha_case(int T, int pos0, int H, int Hkv, int dh) {
    int P = pos0 + T, E = 2 * Hkv * dh, ldq = H * dh;
    float *q = rand_vec((long)T * ldq, 2), *kv = rand_vec((long)P * E, 2);
    float *out = malloc(sizeof(float) * T * ldq);
    float *S = malloc(sizeof(float) * egm_attn_mha_scratch_bf16(T, P, H, Hkv, dh));
    double *s = malloc(sizeof(double) * P), *e = malloc(sizeof(double) * P);
    float scale = 1.0f / sqrtf((float)dh);
    egm_attn_mha_bf16(out, ldq, q, ldq, T, pos0, kv, E, H, Hkv, dh, scale, S);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            int g = h / (H / Hkv);
            for (int j = 0; j <= pos0 + t; j++) {
                double v = 0, mag = 0;
                for (int k = 0; k < dh; k++) {
                    double p = (double)q[(long)t * ldq + h * dh + k] * kv[(long)j * E + g * dh + k];
                    v += p, mag += fabs(p);
                }
                s[j] = scale * v;
                e[j] = scale * mag * dot_bound(dh);
            }
            check_row(out + (long)t * ldq + h * dh, s, e, pos0 + t, kv + (Hkv + g) * dh, E, dh, P);
        }
    free(q), free(kv), free(out), free(S), free(s), free(e);
}

static void test_mha(void **st) {
    (void)st;
    for (int i = 0; i < 3; i++) {
        if (egm_kernels_force(SETS[i])) continue;
        mha_case(1, 70, 4, 2, 32);
        mha_case(6, 10, 3, 1, 12);
    }
    restore_best();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_latent),
        cmocka_unit_test(test_mha),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
