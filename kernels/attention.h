/* attention.h - causal attention of one sequence segment. Pure math.
 *
 * A segment is T consecutive query rows of one sequence at positions
 * pos0 .. pos0+T-1, attending to cached positions 0 .. pos0+T-1 (the
 * segment's own keys are already in the cache). Every product is a GEMM:
 * over the T rows, and for latent attention over all heads at once. */
#ifndef EGM_ATTENTION_H
#define EGM_ATTENTION_H

/* Multi-head / grouped-query attention (llama).
 * q:  row t, head h at q[t*ldq + h*dh]        (RoPE applied)
 * kv: position j: k at kv[j*ldkv + g*dh], v at kv[j*ldkv + Hkv*dh + g*dh]
 * out: row t, head h at out[t*ldo + h*dh]
 * scratch: egm_attn_mha_scratch(T, P) floats. */
void egm_attn_mha(float *out, int ldo, const float *q, int ldq, int T, int pos0,
                  const float *kv, int ldkv, int H, int Hkv, int dh, float scale,
                  float *scratch);
long egm_attn_mha_scratch(int T, int P);

/* Absorbed latent attention (deepseek_v2 and egmla), see MODEL.md/NOTES.md.
 * q:   row t, head h: q_nope [dn] then q_pe [dr] at q[t*ldq + h*(dn+dr)]
 * Z:   [P, du] (row stride ldz) latent z of every cached position (MLA: normalised c;
 *      EG-MLA: Norm(up(c) * gate(token))), P = pos0 + T
 * kpe: position j's rope key at kpe[j*ldk]  (dr values, shared by heads)
 * kv_b: [H*(dn+dv), du]: per head W_UK (dn rows) then W_UV (dv rows)
 * out: row t, head h at out[t*ldo + h*dv]
 * Scores: (q_nope.W_UK z_j + q_pe.kpe_j) * scale = (W_UK^T q_nope).z_j + ...
 * scratch: egm_attn_latent_scratch(T, P, H, du, dr) floats. */
void egm_attn_latent(float *out, int ldo, const float *q, int ldq, int T,
                     int pos0, const float *Z, int ldz, const float *kpe, int ldk,
                     const float *kv_b, int H, int dn, int dr, int dv, int du,
                     float scale, float *scratch);
long egm_attn_latent_scratch(int T, int P, int H, int du, int dr);

#endif
