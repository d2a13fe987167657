/* attention.c - causal attention over a cached sequence, as GEMMs. */
#include "attention.h"

#include <math.h>

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

long egm_attn_latent_scratch(int T, int P, int H, int du, int dr) {
    long R = (long)H * T; /* one row per (head, query) pair */
    return R * du * 2 + R * dr + R * P;
}

void egm_attn_latent(float *out, int ldo, const float *q, int ldq, int T,
                     int pos0, const float *Z, int ldz, const float *kpe, int ldk,
                     const float *kv_b, int H, int dn, int dr, int dv, int du,
                     float scale, float *scratch) {
    int P = pos0 + T, dq = dn + dr;
    long R = (long)H * T;
    float *Qlat = scratch;            /* [H*T, du]: row h*T + t */
    float *Qpe = Qlat + R * du;       /* [H*T, dr] */
    float *S = Qpe + R * dr;          /* [H*T, P] */
    float *Olat = S + R * P;          /* [H*T, du] */

    for (int h = 0; h < H; h++) {
        const float *W_UK = kv_b + (long)h * (dn + dv) * du; /* [dn, du] */
        /* Qlat_h[T,du] = Q_nope_h[T,dn] W_UK[dn,du] */
        egm_gemm(0, 0, T, du, dn, 1.0f, q + h * dq, ldq, W_UK, du, 0.0f,
                 Qlat + (long)h * T * du, du);
        for (int t = 0; t < T; t++)
            for (int i = 0; i < dr; i++)
                Qpe[((long)h * T + t) * dr + i] = q[(long)t * ldq + h * dq + dn + i];
    }
    /* S = scale * (Qlat Z^T + Qpe Kpe^T): every head and query at once */
    egm_gemm(0, 1, (int)R, P, du, scale, Qlat, du, Z, ldz, 0.0f, S, P);
    egm_gemm(0, 1, (int)R, P, dr, scale, Qpe, dr, kpe, ldk, 1.0f, S, P);
    for (int h = 0; h < H; h++)
        for (int t = 0; t < T; t++)
            causal_softmax(S + ((long)h * T + t) * P, P, pos0 + t);
    /* Olat = S Z: the attention-weighted latent, then W_UV per head */
    egm_gemm(0, 0, (int)R, du, P, 1.0f, S, P, Z, ldz, 0.0f, Olat, du);
    for (int h = 0; h < H; h++) {
        const float *W_UV = kv_b + ((long)h * (dn + dv) + dn) * du; /* [dv, du] */
        egm_gemm(0, 1, T, dv, du, 1.0f, Olat + (long)h * T * du, du, W_UV, du,
                 0.0f, out + h * dv, ldo);
    }
}
