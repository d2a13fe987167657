/* attention.c - causal attention over a cached sequence, as GEMMs. */
#include "attention.h"

#include <math.h>
#include <string.h>

#include "ops.h"

/* Masked softmax of one score row: positions > last are excluded. */
static void causal_softmax(float *s, int P, int last) {
    egm_softmax(s, last + 1);
    for (int j = last + 1; j < P; j++) s[j] = 0.0f;
}

long egm_attn_mha_scratch(int T, int P) { return (long)T * P; }

void egm_attn_mha(float *out, int ldo, const float *q, int ldq, int T, int pos0,
                  const float *kv, int ldkv, int H, int Hkv, int dh, float scale,
                  float *S) {
    int P = pos0 + T, group = H / Hkv;
    for (int h = 0; h < H; h++) {
        int g = h / group;
        const float *K = kv + g * dh, *V = kv + (Hkv + g) * dh;
        /* S[T,P] = scale * Q_h[T,dh] K_g[P,dh]^T */
        egm_gemm(0, 1, T, P, dh, scale, q + h * dh, ldq, K, ldkv, 0.0f, S, P);
        for (int t = 0; t < T; t++) causal_softmax(S + (long)t * P, P, pos0 + t);
        /* out_h[T,dh] = S[T,P] V_g[P,dh] */
        egm_gemm(0, 0, T, dh, P, 1.0f, S, P, V, ldkv, 0.0f, out + h * dh, ldo);
    }
}

void egm_latent_query_head(float *qlat, const float *q, int ldq, int n, const float *kv_b,
                           int H, int dn, int dr, int dv, int du, int h) {
    const float *W_UK = kv_b + (long)h * (dn + dv) * du; /* [dn, du] */
    egm_gemm(0, 0, n, du, dn, 1.0f, q + h * (dn + dr), ldq, W_UK, du, 0.0f,
             qlat + (long)h * du, H * du);
}

void egm_latent_query(float *qlat, const float *q, int ldq, int n,
                      const float *kv_b, int H, int dn, int dr, int dv, int du) {
    for (int h = 0; h < H; h++) egm_latent_query_head(qlat, q, ldq, n, kv_b, H, dn, dr, dv, du, h);
}

long egm_attn_latent_blocked_scratch(int T, int H, int block, int du, int dr) {
    /* scores, [qlat | q_pe] rows, running max, padding, running sum (double) */
    return (long)H * T * (block + du + dr + 3) + 2;
}

void egm_latent_attend_blocked(float *olat, const float *qlat, const float *q, int ldq,
                               int T, int pos0, egm_latent_rows_fn rows, void *ctx,
                               int H, int dn, int dr, int du, float scale, int block,
                               float *scratch) {
    int P = pos0 + T, R = H * T, dq = dn + dr, K = du + dr;
    float *S = scratch, *qc = S + (long)R * block, *m = qc + (long)R * K;
    long off = (long)R * (block + K + 1);
    double *l = (double *)(scratch + off + (off & 1)); /* 8-byte aligned, as scratch is */
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
    for (int j0 = 0; j0 < P; j0 += block) {
        int nb = P - j0 < block ? P - j0 : block;
        const float *Z, *kpe;
        int ldz, ldk;
        rows(ctx, j0, j0 + nb, &Z, &ldz, &kpe, &ldk);
        /* S[(t,h), nb] = scale * (qlat Z^T + q_pe kpe^T): one GEMM when the
         * rows are [z | kpe] side by side */
        if (kpe == Z + du && ldk == ldz) {
            egm_gemm(0, 1, R, nb, K, scale, qc, K, Z, ldz, 0.0f, S, nb);
        } else {
            egm_gemm(0, 1, R, nb, du, scale, qc, K, Z, ldz, 0.0f, S, nb);
            egm_gemm(0, 1, R, nb, dr, scale, qc + du, K, kpe, ldk, 1.0f, S, nb);
        }
        /* online softmax: rescale what the row has so far to the new max */
        for (int t = 0; t < T; t++) {
            int n = pos0 + t - j0 + 1; /* causal: positions <= pos0 + t */
            if (n > nb) n = nb;
            for (int h = 0; h < H; h++) {
                int r = t * H + h;
                float *s = S + (long)r * nb;
                if (n <= 0) { /* the whole block is after this row */
                    for (int j = 0; j < nb; j++) s[j] = 0.0f;
                    continue;
                }
                float mx = m[r];
                for (int j = 0; j < n; j++)
                    if (s[j] > mx) mx = s[j];
                double sum = 0.0;
                for (int j = 0; j < n; j++) {
                    s[j] = expf(s[j] - mx);
                    sum += s[j];
                }
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
        egm_gemm(0, 0, R, du, nb, 1.0f, S, nb, Z, ldz, 1.0f, olat, du);
    }
    for (int r = 0; r < R; r++) {
        float inv = (float)(1.0 / l[r]);
        float *o = olat + (long)r * du;
        for (int k = 0; k < du; k++) o[k] *= inv;
    }
}

void egm_latent_output_head(float *out, int ldo, const float *olat, int n, const float *kv_b,
                            int H, int dn, int dv, int du, int h) {
    const float *W_UV = kv_b + ((long)h * (dn + dv) + dn) * du; /* [dv, du] */
    egm_gemm(0, 1, n, dv, du, 1.0f, olat + (long)h * du, H * du, W_UV, du, 0.0f, out + h * dv,
             ldo);
}

void egm_latent_output(float *out, int ldo, const float *olat, int n,
                       const float *kv_b, int H, int dn, int dv, int du) {
    for (int h = 0; h < H; h++) egm_latent_output_head(out, ldo, olat, n, kv_b, H, dn, dv, du, h);
}
