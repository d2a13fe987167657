/* test_attention.c - latent attention, blocked (online softmax over blocks
 * of built latents) against the one-pass form it replaced and against a
 * naive double-precision computation: decode and prefill rows, a segment
 * starting mid-sequence, blocks that do not divide the length, q rows
 * with extra stride, and split into row groups and position ranges that
 * are merged (as the stage's threads run it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attention.h"
#include "kernels/attn_rows.h"
#include "kernels/attn_small.h"
#include "kernels/ops.h"

#define RAND_SEED 0x9e3779b97f4a7c15ull
#include "tests/rand_vec.h"

/* The latents live in one array here; the kernel sees them a block at a
 * time, and each call overwrites the previous block's copy so a kernel
 * that kept an old pointer would read garbage. */
typedef struct {
    const float *Z, *K;
    int du, dr, calls, last_j1;
    int side_by_side;   /* [z | kpe] rows in one buffer, the one-product path */
    float *zb, *kb;
} rows_ctx;

static void rows(void *v, int j0, int j1, const float **z, int *ldz, const float **kpe, int *ldk) {
    rows_ctx *c = v;
    assert_true(j0 == c->last_j1 && j1 > j0); /* blocks in order, covering all */
    c->last_j1 = j1;
    c->calls++;
    int lz = c->side_by_side ? c->du + c->dr : c->du, lk = c->side_by_side ? lz : c->dr;
    float *kb = c->side_by_side ? c->zb + c->du : c->kb;
    for (int j = j0; j < j1; j++) {
        memcpy(c->zb + (long)(j - j0) * lz, c->Z + (long)j * c->du, sizeof(float) * c->du);
        memcpy(kb + (long)(j - j0) * lk, c->K + (long)j * c->dr, sizeof(float) * c->dr);
    }
    *z = c->zb;
    *ldz = lz;
    *kpe = kb;
    *ldk = lk;
}

/* The one-pass form the engine ran before blocking: all P scores, one
 * softmax per row, one weighted sum. */
static void one_pass(float *olat, const float *qlat, const float *q, int ldq, int T, int pos0,
                     const float *Z, int ldz, const float *kpe, int ldk, int H, int dn, int dr,
                     int du, float scale, float *S) {
    int P = pos0 + T, R = H * T, dq = dn + dr;
    egm_gemm(0, 1, R, P, du, scale, qlat, du, Z, ldz, 0.0f, S, P);
    for (int t = 0; t < T; t++)
        egm_gemm(0, 1, H, P, dr, scale, q + (long)t * ldq + dn, dq, kpe, ldk, 1.0f,
                 S + (long)t * H * P, P);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            float *s = S + ((long)t * H + h) * P;
            egm_softmax(s, pos0 + t + 1);
            for (int j = pos0 + t + 1; j < P; j++) s[j] = 0.0f;
        }
    egm_gemm(0, 0, R, du, P, 1.0f, S, P, Z, ldz, 0.0f, olat, du);
}

/* Step 2 the way the stage splits it over threads: rows in groups of g,
 * each group against ranges of `span` positions up to its last row's,
 * merged in order, then divided. */
static void split_attend(float *got, const float *qlat, const float *q, int ldq, int T, int pos0,
                         rows_ctx *c, int H, int dn, int dr, int du, float scale, int block, int g,
                         int span) {
    float *S = malloc(sizeof(float) * egm_attn_latent_range_scratch(g, H, block, du, dr));
    float *o2 = malloc(sizeof(float) * g * H * du), *m = malloc(sizeof(float) * g * H);
    float *m2 = malloc(sizeof(float) * g * H);
    double *l = malloc(sizeof(double) * g * H), *l2 = malloc(sizeof(double) * g * H);
    for (int t0 = 0; t0 < T; t0 += g) {
        int n = T - t0 < g ? T - t0 : g, last = pos0 + t0 + n, R = n * H;
        float *o = got + (long)t0 * H * du;
        for (int j0 = 0; j0 < last; j0 += span) {
            c->last_j1 = j0; /* the range's blocks start at j0, in order */
            egm_latent_attend_range(j0 ? o2 : o, j0 ? m2 : m, j0 ? l2 : l, qlat + (long)t0 * H * du,
                                    q + (long)t0 * ldq, ldq, n, pos0 + t0, j0, j0 + span, rows, c,
                                    H, dn, dr, du, scale, block, S);
            assert_int_equal(c->last_j1, j0 + span < last ? j0 + span : last);
            if (j0) egm_latent_merge(o, m, l, o2, m2, l2, R, du);
        }
        egm_latent_finish(o, l, R, du);
    }
    free(S), free(o2), free(m), free(m2), free(l), free(l2);
}

static void check1(int T, int pos0, int block, int extra_ldq, int side_by_side, int g, int span) {
    const int H = 3, dn = 4, dr = 2, du = 8, dq = dn + dr, P = pos0 + T, R = H * T;
    int ldq = H * dq + extra_ldq;
    float *q = rand_vec((long)T * ldq, 1), *qlat = rand_vec((long)R * du, 1);
    float *Z = rand_vec((long)P * du, 2), *K = rand_vec((long)P * dr, 2);
    float *want = malloc(sizeof(float) * R * du), *got = malloc(sizeof(float) * R * du);
    float *S = malloc(sizeof(float) * R * P);
    float *Sb = malloc(sizeof(float) * egm_attn_latent_blocked_scratch(T, H, block, du, dr));
    float scale = 0.37f;
    one_pass(want, qlat, q, ldq, T, pos0, Z, du, K, dr, H, dn, dr, du, scale, S);
    rows_ctx c = {Z, K, du, dr, 0, 0, side_by_side, malloc(sizeof(float) * block * (du + dr)),
                  malloc(sizeof(float) * block * dr)};
    if (g) {
        split_attend(got, qlat, q, ldq, T, pos0, &c, H, dn, dr, du, scale, block, g, span);
    } else {
        egm_latent_attend_blocked(got, qlat, q, ldq, T, pos0, rows, &c, H, dn, dr, du, scale,
                                  block, Sb);
        assert_int_equal(c.calls, (P + block - 1) / block);
        assert_int_equal(c.last_j1, P);
    }
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            int r = t * H + h, last = pos0 + t;
            /* naive, in double */
            double s[128], mx = -1e300, sum = 0;
            for (int j = 0; j <= last; j++) {
                double v = 0;
                for (int k = 0; k < du; k++) v += (double)qlat[r * du + k] * Z[j * du + k];
                for (int k = 0; k < dr; k++) v += (double)q[t * ldq + h * dq + dn + k] * K[j * dr + k];
                s[j] = v * scale;
                if (s[j] > mx) mx = s[j];
            }
            for (int j = 0; j <= last; j++) sum += (s[j] = exp(s[j] - mx));
            for (int k = 0; k < du; k++) {
                double o = 0;
                for (int j = 0; j <= last; j++) o += s[j] / sum * Z[j * du + k];
                assert_true(fabs(got[r * du + k] - o) < 2e-6);
                assert_true(fabs(got[r * du + k] - want[r * du + k]) < 2e-6);
            }
        }
    free(q); free(qlat); free(Z); free(K); free(want); free(got); free(S); free(Sb);
    free(c.zb); free(c.kb);
}

static void check(int T, int pos0, int block, int extra_ldq) {
    check1(T, pos0, block, extra_ldq, 0, 0, 0);
    check1(T, pos0, block, extra_ldq, 1, 0, 0);
}

/* Rows in groups and positions in ranges (as the stage's threads take
 * them): the same answer, to fp32 rounding. */
static void test_split(void **st) {
    (void)st;
    check1(1, 39, 5, 0, 1, 1, 10);   /* decode: 4 ranges of 2 blocks */
    check1(1, 39, 5, 0, 0, 1, 15);   /* last range short */
    check1(30, 50, 4, 0, 1, 8, 16);  /* prefill: 4 row groups, ranges by triangle */
    check1(7, 0, 5, 2, 1, 3, 5);     /* from position 0: a group's rows start in its range */
    check1(12, 30, 4, 0, 0, 5, 40);  /* one range: a plain group split */
}

static void test_decode(void **st) {
    (void)st;
    check(1, 0, 5, 0);   /* one position */
    check(1, 22, 5, 0);  /* 23 positions: 4 full blocks and 3 */
    check(1, 39, 8, 0);  /* 40: exactly 5 blocks */
    check(1, 39, 64, 0); /* one block holds it all */
}

static void test_prefill(void **st) {
    (void)st;
    check(7, 0, 5, 0);   /* early rows see blocks entirely in their future */
    check(7, 13, 5, 0);  /* a chunk starting mid-sequence */
    check(12, 30, 4, 0);
    check(30, 50, 16, 0); /* 90 (row, head) pairs: one sgemm per block */
}

static void test_strided_q(void **st) {
    (void)st;
    check(7, 13, 5, 3);  /* q rows with more than H*dq values */
    check(1, 22, 6, 5);
}

/* The few-rows weighted sum against a naive double loop, with every tail:
 * rows not a multiple of the tile's 6, columns not of 16; strided
 * operands; AVX2 and plain C. */
static void small_kernels(int R, int nb, int K, int du) {
    int ldz = (K > du ? K : du) + 5, lds = nb + 2, ldo = du + 1;
    float *Z = rand_vec((long)nb * ldz, 1);
    float *S = rand_vec((long)R * lds, 1), *O = rand_vec((long)R * ldo, 1);
    float *O0 = malloc(sizeof(float) * R * ldo);
    memcpy(O0, O, sizeof(float) * R * ldo);
    egm_attn_wsum(R, du, nb, S, lds, Z, ldz, O, ldo);
    for (int r = 0; r < R; r++)
        for (int k = 0; k < du; k++) {
            double v = O0[r * ldo + k], mag = fabs(v);
            for (int j = 0; j < nb; j++) {
                v += (double)S[r * lds + j] * Z[j * ldz + k];
                mag += fabs((double)S[r * lds + j] * Z[j * ldz + k]);
            }
            assert_true(fabs(O[r * ldo + k] - v) <= mag * (nb + 1) * 0x1p-24 + 1e-30);
        }
    free(Z), free(S), free(O), free(O0);
}

static void test_small_kernels(void **st) {
    (void)st;
    for (int simd = 1; simd >= 0; simd--) {
        egm_attn_small_allow_simd(simd);
        small_kernels(12, 128, 320, 256); /* the paper configs' decode */
        small_kernels(1, 5, 7, 3);
        small_kernels(1, 19, 80, 75); /* one row (MHA decode): 64, 8 and 3 columns */
        small_kernels(4, 9, 17, 33);
        small_kernels(7, 130, 24, 16);
        small_kernels(16, 3, 8, 40);
    }
    egm_attn_small_allow_simd(1);
}


/* The softmax's exp against exp() in double over [-87, 0] (every 2^-13,
 * and the ends), in ulps of the result: the bound is the one measured, 1
 * ulp (expf itself is within 1). Then the AVX2 and plain C versions give
 * the same bits and the same sum for every length's tail; below -87 and
 * -inf give 0, NaN stays NaN; the max agrees with a plain loop. (Measured
 * worst: 0.995 ulp.) */
static void test_softmax_exp(void **st) {
    (void)st;
    int n = 87 * 8192 + 1;
    float *x = malloc(sizeof(float) * n);
    for (int i = 0; i < n; i++) x[i] = -(float)i / 8192.0f;
    double worst = 0.0;
    for (int simd = 1; simd >= 0; simd--) {
        egm_attn_small_allow_simd(simd);
        float *y = malloc(sizeof(float) * n);
        memcpy(y, x, sizeof(float) * n);
        double sum = egm_attn_exp_sum(y, n, 0.0f), ref = 0.0;
        for (int i = 0; i < n; i++) {
            double e = exp((double)x[i]);
            int ex;
            frexp(e, &ex);
            double ulps = fabs(y[i] - e) / ldexp(1.0, ex - 24);
            if (ulps > worst) worst = ulps;
            ref += y[i];
        }
        assert_true(fabs(sum - ref) <= ref * n * 0x1p-52);
        assert_true(y[0] == 1.0f);
        free(y);
    }
    assert_true(worst <= 1.0);
    free(x);
    for (int len = 0; len <= 37; len++) {
        float a[40], b[40];
        for (int i = 0; i < len; i++) a[i] = b[i] = -(float)((i * 7919) % 1000) / 37.0f - 0.25f;
        if (len > 3) a[3] = b[3] = -INFINITY;
        if (len > 5) a[5] = b[5] = -90.0f;
        egm_attn_small_allow_simd(1);
        double sa = egm_attn_exp_sum(a, len, 0.5f);
        float ma = egm_attn_max(a, len, -1e30f);
        egm_attn_small_allow_simd(0);
        double sb = egm_attn_exp_sum(b, len, 0.5f);
        float mb = egm_attn_max(b, len, -1e30f);
        assert_memory_equal(a, b, sizeof(float) * len);
        assert_true(sa == sb && ma == mb);
        float m = -1e30f;
        for (int i = 0; i < len; i++)
            if (a[i] > m) m = a[i];
        assert_true(ma == m);
        if (len > 5) assert_true(a[3] == 0.0f && a[5] == 0.0f);
    }
    for (int simd = 1; simd >= 0; simd--) {
        egm_attn_small_allow_simd(simd);
        float v[9] = {NAN, 0, 0, 0, 0, 0, 0, 0, NAN};
        egm_attn_exp_sum(v, 9, 0.0f);
        assert_true(isnan(v[0]) && isnan(v[8]) && v[1] == 1.0f);
    }
    egm_attn_small_allow_simd(1);
}

/* The cache as the stage pages it: blocks of B rows, each run's asked-for
 * columns copied into a buffer the next call overwrites, the rest NaN (a
 * kernel that kept an old pointer, or read other columns, would read
 * garbage). */
typedef struct {
    const float *kv;
    int E, B, calls;
    float *buf;
} run_ctx;

static const float *kv_run(void *v, int j0, int j1, int c0, int c1, int *n) {
    run_ctx *c = v;
    c->calls++;
    *n = c->B - j0 % c->B < j1 - j0 ? c->B - j0 % c->B : j1 - j0;
    assert_true(0 <= c0 && c0 < c1 && c1 <= c->E);
    for (long i = 0; i < (long)c->B * c->E; i++) c->buf[i] = NAN;
    for (int j = 0; j < *n; j++) /* only the columns asked for */
        memcpy(c->buf + (long)j * c->E + c0, c->kv + (long)(j0 + j) * c->E + c0,
               sizeof(float) * (c1 - c0));
    return c->buf;
}

/* Decode's MHA read in place (kernels/attn_rows.h) against a naive
 * double computation and against the GEMM form, every row and head.
 * Measured worst against double: 4.0e-7 (the GEMM form: 4.9e-7); the
 * bound is 2e-6. */
static void mha_rows_case(int T, int pos0, int H, int Hkv, int dh, int B) {
    int P = pos0 + T, E = 2 * Hkv * dh, ldq = H * dh + 3;
    float scale = 1.0f / sqrtf((float)dh);
    float *q = rand_vec((long)T * ldq, 2), *kv = rand_vec((long)P * E, 2);
    float *out = malloc(sizeof(float) * T * ldq), *ref = malloc(sizeof(float) * T * ldq);
    float *S = malloc(sizeof(float) * egm_attn_rows_scratch(T, H, P));
    float *S2 = malloc(sizeof(float) * egm_attn_mha_scratch(T, P));
    run_ctx c = {kv, E, B, 0, malloc(sizeof(float) * B * E)};
    /* heads in two calls, split at a group boundary */
    int hs = H / Hkv * (Hkv / 2);
    egm_attn_mha_rows(out, ldq, q, ldq, T, pos0, kv_run, &c, E, H, Hkv, dh, 0, hs, scale, S);
    egm_attn_mha_rows(out, ldq, q, ldq, T, pos0, kv_run, &c, E, H, Hkv, dh, hs, H, scale, S);
    assert_int_equal(c.calls, 4 * ((P + B - 1) / B)); /* each run twice a call: keys, values */
    egm_attn_mha(ref, ldq, q, ldq, T, pos0, kv, E, H, Hkv, dh, scale, S2);
    double *p = malloc(sizeof(double) * P);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            int g = h / (H / Hkv), n = pos0 + t + 1;
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j < n; j++) {
                double v = 0;
                for (int k = 0; k < dh; k++)
                    v += (double)q[(long)t * ldq + h * dh + k] * kv[(long)j * E + g * dh + k];
                p[j] = scale * v;
                if (p[j] > mx) mx = p[j];
            }
            for (int j = 0; j < n; j++) sum += p[j] = exp(p[j] - mx);
            for (int k = 0; k < dh; k++) {
                double o = 0;
                for (int j = 0; j < n; j++) o += p[j] / sum * kv[(long)j * E + (Hkv + g) * dh + k];
                float got = out[(long)t * ldq + h * dh + k];
                assert_true(fabs(got - o) <= 2e-6);
                assert_true(fabs(got - ref[(long)t * ldq + h * dh + k]) <= 2e-6);
            }
        }
    free(q), free(kv), free(out), free(ref), free(S), free(S2), free(c.buf), free(p);
}

static void test_mha_rows(void **st) {
    (void)st;
    for (int simd = 1; simd >= 0; simd--) {
        egm_attn_small_allow_simd(simd);
        mha_rows_case(1, 300, 12, 12, 64, 16); /* the paper MHA's decode */
        mha_rows_case(1, 0, 4, 2, 64, 16);     /* one position */
        mha_rows_case(3, 37, 6, 2, 72, 5);     /* rows, groups, 64 + 8 columns, odd runs */
        mha_rows_case(4, 20, 3, 1, 12, 1);     /* dh not a multiple of 8: plain C */
        mha_rows_case(2, 9, 2, 2, 8, 16);      /* a run shorter than a block */
    }
    egm_attn_small_allow_simd(1);
}

/* MHA prefill with its KV head groups split (as the stage's threads take
 * them): each range gives the bits of the whole call for its heads and
 * leaves the other heads' outputs alone. */
static void test_mha_heads(void **st) {
    (void)st;
    const int T = 19, pos0 = 7, P = pos0 + T, H = 6, Hkv = 3, dh = 8, E = 2 * Hkv * dh;
    float *q = rand_vec((long)T * H * dh, 1), *kv = rand_vec((long)P * E, 2);
    float *S = malloc(sizeof(float) * egm_attn_mha_scratch(T, P));
    float *whole = malloc(sizeof(float) * T * H * dh), *split = malloc(sizeof(float) * T * H * dh);
    egm_attn_mha(whole, H * dh, q, H * dh, T, pos0, kv, E, H, Hkv, dh, 0.3f, S);
    for (long i = 0; i < (long)T * H * dh; i++) split[i] = NAN;
    /* KV groups [0, 1), [1, 3): query heads [0, 2), [2, 6) */
    egm_attn_mha_heads(split, H * dh, q, H * dh, T, pos0, kv, E, H, Hkv, dh, 0, 2, 0.3f, S);
    for (int t = 0; t < T; t++) /* heads 2.. not written yet */
        assert_true(isnan(split[(long)t * H * dh + 2 * dh]));
    egm_attn_mha_heads(split, H * dh, q, H * dh, T, pos0, kv, E, H, Hkv, dh, 2, 6, 0.3f, S);
    assert_memory_equal(whole, split, sizeof(float) * T * H * dh);
    free(q), free(kv), free(S), free(whole), free(split);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_prefill),
        cmocka_unit_test(test_strided_q),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_small_kernels),
        cmocka_unit_test(test_softmax_exp),
        cmocka_unit_test(test_mha_rows),
        cmocka_unit_test(test_mha_heads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
