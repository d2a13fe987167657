/* attention.c - causal attention over a cached sequence, as GEMMs. */
#include "attention.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "attn_bf16.h"
#include "attn_small.h"
#include "ops.h"

/* Masked softmax of one score row: positions > last are excluded. */
static void causal_softmax(float *s, int P, int last) {
    egm_attn_softmax(s, last + 1);
    for (int j = last + 1; j < P; j++) s[j] = 0.0f;
}

long egm_attn_mha_scratch(int T, int P) { return (long)T * P; }

long egm_attn_mha_scratch_bf16(int T, int P, int H, int Hkv, int dh) {
    return (long)T * P + ((long)T * H * dh + (long)P * Hkv * dh + 1) / 2 + 1;
}

/* qb, kb: NULL for fp32 scores; else Q and K rounded to bf16, [T, H*dh]
 * and [P, Hkv*dh], for the score products. */
static void attn_mha(float *out, int ldo, const float *q, int ldq, int T, int pos0,
                     const float *kv, int ldkv, int H, int Hkv, int dh, int h0, int h1,
                     float scale, float *S, const uint16_t *qb, const uint16_t *kb) {
    int P = pos0 + T, group = H / Hkv;
    for (int h = h0; h < h1; h++) {
        int g = h / group;
        const float *K = kv + g * dh, *V = kv + (Hkv + g) * dh;
        /* S[T,P] = scale * Q_h[T,dh] K_g[P,dh]^T */
        if (qb)
            egm_gemm_bf16_nt(T, P, dh, scale, qb + h * dh, H * dh, kb + g * dh, Hkv * dh, 0.0f,
                             S, P);
        else
            egm_gemm(0, 1, T, P, dh, scale, q + h * dh, ldq, K, ldkv, 0.0f, S, P);
        for (int t = 0; t < T; t++) causal_softmax(S + (long)t * P, P, pos0 + t);
        /* out_h[T,dh] = S[T,P] V_g[P,dh] */
        egm_gemm(0, 0, T, dh, P, 1.0f, S, P, V, ldkv, 0.0f, out + h * dh, ldo);
    }
}

void egm_attn_mha(float *out, int ldo, const float *q, int ldq, int T, int pos0,
                  const float *kv, int ldkv, int H, int Hkv, int dh, float scale,
                  float *S) {
    attn_mha(out, ldo, q, ldq, T, pos0, kv, ldkv, H, Hkv, dh, 0, H, scale, S, NULL, NULL);
}

void egm_attn_mha_heads(float *out, int ldo, const float *q, int ldq, int T, int pos0,
                        const float *kv, int ldkv, int H, int Hkv, int dh, int h0, int h1,
                        float scale, float *S) {
    attn_mha(out, ldo, q, ldq, T, pos0, kv, ldkv, H, Hkv, dh, h0, h1, scale, S, NULL, NULL);
}

void egm_attn_mha_bf16(float *out, int ldo, const float *q, int ldq, int T, int pos0,
                       const float *kv, int ldkv, int H, int Hkv, int dh, float scale,
                       float *S) {
    int P = pos0 + T;
    uint16_t *qb = (uint16_t *)(S + (long)T * P), *kb = qb + (long)T * H * dh;
    egm_bf16_round_rows(qb, H * dh, q, ldq, T, H * dh);
    egm_bf16_round_rows(kb, Hkv * dh, kv, ldkv, P, Hkv * dh);
    attn_mha(out, ldo, q, ldq, T, pos0, kv, ldkv, H, Hkv, dh, 0, H, scale, S, qb, kb);
}

void egm_latent_query_head(float *qlat, const float *q, int ldq, int n, const float *kv_b,
                           int H, int dn, int dr, int dv, int du, int h) {
    const float *W_UK = kv_b + (long)h * (dn + dv) * du; /* [dn, du] */
    egm_gemm_batch(0, n, du, dn, 1.0f, q + h * (dn + dr), ldq, W_UK, du, 0.0f,
                   qlat + (long)h * du, H * du);
}

void egm_latent_query(float *qlat, const float *q, int ldq, int n,
                      const float *kv_b, int H, int dn, int dr, int dv, int du) {
    for (int h = 0; h < H; h++) egm_latent_query_head(qlat, q, ldq, n, kv_b, H, dn, dr, dv, du, h);
}

long egm_attn_latent_range_scratch(int T, int H, int block, int du, int dr) {
    return (long)H * T * (block + du + dr);
}

long egm_attn_latent_range_scratch_bf16(int T, int H, int block, int du, int dr) {
    long K = du + dr;
    return egm_attn_latent_range_scratch(T, H, block, du, dr) + ((long)H * T * K + block * K + 1) / 2 + 1;
}

long egm_attn_latent_blocked_scratch(int T, int H, int block, int du, int dr) {
    /* the range's scratch, running max, padding, running sum (double) */
    return egm_attn_latent_range_scratch(T, H, block, du, dr) + (long)H * T * 3 + 2;
}

/* Online softmax of one block's scores for rows [r0, R): rescales what a
 * row has so far to the new max and adds the block's mass to l. */
static void block_softmax(float *S, int nb, float *olat, float *m, double *l, int r0, int R,
                          int H, int T, int pos0, int j0, int du) {
    for (int r = r0; r < R; r++) {
        int t = r / H;
        (void)T;
        int n = pos0 + t - j0 + 1; /* causal: positions <= pos0 + t */
        if (n > nb) n = nb;
        float *s = S + (long)(r - r0) * nb;
        if (n <= 0) { /* the whole block is after this row */
            for (int j = 0; j < nb; j++) s[j] = 0.0f;
            continue;
        }
        float mx = egm_attn_max(s, n, m[r]);
        double sum = egm_attn_exp_sum(s, n, mx);
        for (int j = n; j < nb; j++) s[j] = 0.0f;
        if (mx != m[r]) {
            float c = m[r] == -INFINITY ? 0.0f : expf(m[r] - mx);
            float *o = olat + (long)r * du;
            for (int k = 0; k < du; k++) o[k] *= c;
            l[r] *= c;
            m[r] = mx;
        }
        l[r] += sum;
    }
}

/* Scores of rows [r0, R) against a block: fp32 GEMMs, or with bq (the
 * rows' [qlat | q_pe] in bf16) the block rounded into bz and one bf16 GEMM. */
static void block_scores(float *S, const float *qc, const uint16_t *bq, uint16_t *bz, int r0,
                         int Rb, int nb, const float *Z, int ldz, const float *kpe, int ldk,
                         int du, int dr, float scale) {
    int K = du + dr;
    if (bq) {
        egm_bf16_round_rows(bz, K, Z, ldz, nb, du);
        egm_bf16_round_rows(bz + du, K, kpe, ldk, nb, dr);
        egm_gemm_bf16_nt(Rb, nb, K, scale, bq + (long)r0 * K, K, bz, K, 0.0f, S, nb);
    } else if (kpe == Z + du && ldk == ldz) { /* [z | kpe] side by side: one GEMM */
        egm_gemm(0, 1, Rb, nb, K, scale, qc + (long)r0 * K, K, Z, ldz, 0.0f, S, nb);
    } else {
        egm_gemm(0, 1, Rb, nb, du, scale, qc + (long)r0 * K, K, Z, ldz, 0.0f, S, nb);
        egm_gemm(0, 1, Rb, nb, dr, scale, qc + (long)r0 * K + du, K, kpe, ldk, 1.0f, S, nb);
    }
}

/* egm_latent_attend_range; bf16: scores from bf16 operands, whose copies
 * go after the fp32 scratch. */
static void attend_range(float *olat, float *m, double *l, const float *qlat, const float *q,
                         int ldq, int T, int pos0, int j_begin, int j_end,
                         egm_latent_rows_fn rows, void *ctx, int H, int dn, int dr, int du,
                         float scale, int block, float *scratch, int bf16) {
    int P = pos0 + T, R = H * T, dq = dn + dr, K = du + dr;
    if (j_end > P) j_end = P;
    float *S = scratch, *qc = S + (long)R * block;
    for (int r = 0; r < R; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0;
        /* [qlat | q_pe] of (row, head): scored against [z | kpe] at once
         * when the rows callback keeps them side by side */
        memcpy(qc + (long)r * K, qlat + (long)r * du, sizeof(float) * du);
        memcpy(qc + (long)r * K + du, q + (long)(r / H) * ldq + (r % H) * dq + dn,
               sizeof(float) * dr);
    }
    for (long i = 0; i < (long)R * du; i++) olat[i] = 0.0f;
    uint16_t *bq = NULL, *bz = NULL;
    if (bf16) { /* the queries rounded once, the latents a block at a time */
        bq = (uint16_t *)(scratch + egm_attn_latent_range_scratch(T, H, block, du, dr));
        bz = bq + (long)R * K;
        egm_bf16_round_rows(bq, K, qc, K, R, K);
    }
    for (int j0 = j_begin; j0 < j_end; j0 += block) {
        int nb = j_end - j0 < block ? j_end - j0 : block;
        /* rows whose last position is before the block see none of it:
         * prefill's work is the causal triangle, by blocks */
        int t_lo = j0 > pos0 ? j0 - pos0 : 0, r0 = t_lo * H, Rb = R - r0;
        const float *Z, *kpe;
        int ldz, ldk;
        rows(ctx, j0, j0 + nb, &Z, &ldz, &kpe, &ldk);
        /* S[(t,h), nb] = scale * (qlat Z^T + q_pe kpe^T) */
        block_scores(S, qc, bq, bz, r0, Rb, nb, Z, ldz, kpe, ldk, du, dr, scale);
        block_softmax(S, nb, olat, m, l, r0, R, H, T, pos0, j0, du);
        if (Rb <= EGM_ATTN_SMALL_MAX_R) /* decode: OpenBLAS is slow at few rows */
            egm_attn_wsum(Rb, du, nb, S, nb, Z, ldz, olat + (long)r0 * du, du);
        else
            egm_gemm(0, 0, Rb, du, nb, 1.0f, S, nb, Z, ldz, 1.0f, olat + (long)r0 * du, du);
    }
}

void egm_latent_attend_range(float *olat, float *m, double *l, const float *qlat,
                             const float *q, int ldq, int T, int pos0, int j_begin, int j_end,
                             egm_latent_rows_fn rows, void *ctx, int H, int dn, int dr, int du,
                             float scale, int block, float *scratch) {
    attend_range(olat, m, l, qlat, q, ldq, T, pos0, j_begin, j_end, rows, ctx, H, dn, dr, du,
                 scale, block, scratch, 0);
}

void egm_latent_attend_range_bf16(float *olat, float *m, double *l, const float *qlat,
                                  const float *q, int ldq, int T, int pos0, int j_begin,
                                  int j_end, egm_latent_rows_fn rows, void *ctx, int H, int dn,
                                  int dr, int du, float scale, int block, float *scratch) {
    attend_range(olat, m, l, qlat, q, ldq, T, pos0, j_begin, j_end, rows, ctx, H, dn, dr, du,
                 scale, block, scratch, 1);
}

void egm_latent_merge(float *olat, float *m, double *l, const float *olat2, const float *m2,
                      const double *l2, int R, int du) {
    for (int r = 0; r < R; r++) {
        if (m2[r] == -INFINITY) continue; /* saw no position */
        float *o = olat + (long)r * du;
        const float *o2 = olat2 + (long)r * du;
        if (m[r] == -INFINITY) {
            memcpy(o, o2, sizeof(float) * du);
            m[r] = m2[r];
            l[r] = l2[r];
            continue;
        }
        float mx = m[r] > m2[r] ? m[r] : m2[r];
        float a = expf(m[r] - mx), b = expf(m2[r] - mx);
        for (int k = 0; k < du; k++) o[k] = o[k] * a + o2[k] * b;
        l[r] = l[r] * a + l2[r] * b;
        m[r] = mx;
    }
}

void egm_latent_finish(float *olat, const double *l, int R, int du) {
    for (int r = 0; r < R; r++) {
        float inv = (float)(1.0 / l[r]);
        float *o = olat + (long)r * du;
        for (int k = 0; k < du; k++) o[k] *= inv;
    }
}

void egm_latent_attend_blocked(float *olat, const float *qlat, const float *q, int ldq,
                               int T, int pos0, egm_latent_rows_fn rows, void *ctx,
                               int H, int dn, int dr, int du, float scale, int block,
                               float *scratch) {
    int R = H * T;
    long off = egm_attn_latent_range_scratch(T, H, block, du, dr);
    float *m = scratch + off;
    off += R;
    double *l = (double *)(scratch + off + (off & 1)); /* 8-byte aligned, as scratch is */
    egm_latent_attend_range(olat, m, l, qlat, q, ldq, T, pos0, 0, pos0 + T, rows, ctx, H, dn,
                            dr, du, scale, block, scratch);
    egm_latent_finish(olat, l, R, du);
}

void egm_latent_output_head(float *out, int ldo, const float *olat, int n, const float *kv_b,
                            int H, int dn, int dv, int du, int h) {
    const float *W_UV = kv_b + ((long)h * (dn + dv) + dn) * du; /* [dv, du] */
    egm_gemm_batch(1, n, dv, du, 1.0f, olat + (long)h * du, H * du, W_UV, du, 0.0f, out + h * dv,
                   ldo);
}

void egm_latent_output(float *out, int ldo, const float *olat, int n,
                       const float *kv_b, int H, int dn, int dv, int du) {
    for (int h = 0; h < H; h++) egm_latent_output_head(out, ldo, olat, n, kv_b, H, dn, dv, du, h);
}
