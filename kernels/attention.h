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
/* Query heads [h0, h1) only, the others' outputs untouched: heads are
 * independent, so a sequence's heads can go to threads with the same
 * bits as one call. */
void egm_attn_mha_heads(float *out, int ldo, const float *q, int ldq, int T, int pos0,
                        const float *kv, int ldkv, int H, int Hkv, int dh, int h0, int h1,
                        float scale, float *scratch);
/* The same with the scores from Q and K rounded to bf16 (kernels/attn_bf16.h,
 * fp32 accumulation; softmax and the sum over V fp32).
 * scratch: egm_attn_mha_scratch_bf16(T, P, H, Hkv, dh) floats. */
void egm_attn_mha_bf16(float *out, int ldo, const float *q, int ldq, int T, int pos0,
                       const float *kv, int ldkv, int H, int Hkv, int dh, float scale,
                       float *scratch);
long egm_attn_mha_scratch_bf16(int T, int P, int H, int Hkv, int dh);

/* Absorbed latent attention (deepseek_v2 and egmla), see MODEL.md/NOTES.md,
 * in three steps so that the per-head products with kv_b_proj are one GEMM
 * per head over every row of the micro-batch, and only the products with a
 * sequence's own latents are per sequence:
 *
 *   1. egm_latent_query: qlat[r, h] = W_UK_h^T q_nope[r, h]      (all rows)
 *   2. egm_latent_attend_blocked: per sequence segment, with its latents Z and rope
 *      keys, olat[r, h] = sum_j softmax_j(scale * (qlat.z_j + q_pe.kpe_j)) z_j
 *   3. egm_latent_output: out[r, h] = W_UV_h olat[r, h]            (all rows)
 *
 * Layouts: q row r, head h: q_nope [dn] then q_pe [dr] at q[r*ldq + h*(dn+dr)];
 * qlat and olat are [n, H, du] (row r, head h at (r*H + h)*du), so the rows
 * of one segment, all heads, form one matrix of T*H rows for the GEMMs;
 * kv_b is [H*(dn+dv), du]: per head W_UK (dn rows) then W_UV (dv rows);
 * out row r, head h at out[r*ldo + h*dv]. */
void egm_latent_query(float *qlat, const float *q, int ldq, int n,
                      const float *kv_b, int H, int dn, int dr, int dv, int du);

/* Step 2 for one segment: T rows at positions pos0.., qlat/olat pointing
 * at its first row, attending to positions 0..pos0+T-1 in blocks of
 * `block` with an online softmax. The latents come from a callback, a block
 * at a time, because EG-MLA's are built rather than read: a block is
 * produced, used by every row and head while it is still in cache, and
 * dropped, so Z [P, du] is never materialised. rows(ctx, j0, j1, ...) points
 * *z (row stride *ldz) and *kpe (row stride *ldk) at positions [j0, j1);
 * they stay valid until its next call; with kpe right after z in each row
 * (kpe == z + du, same stride) scores take one product instead of two.
 * scratch: egm_attn_latent_blocked_scratch(T, H, block, du, dr) floats. */
typedef void (*egm_latent_rows_fn)(void *ctx, int j0, int j1, const float **z, int *ldz,
                                   const float **kpe, int *ldk);
void egm_latent_attend_blocked(float *olat, const float *qlat, const float *q, int ldq,
                               int T, int pos0, egm_latent_rows_fn rows, void *ctx,
                               int H, int dn, int dr, int du, float scale, int block,
                               float *scratch);
long egm_attn_latent_blocked_scratch(int T, int H, int block, int du, int dr);

void egm_latent_output(float *out, int ldo, const float *olat, int n,
                       const float *kv_b, int H, int dn, int dv, int du);

/* Step 2 in pieces, so that one segment can be split over threads by
 * positions and rows: egm_latent_attend_range attends the segment's T rows
 * to positions [j_begin, j_end) (clipped to causality; blocks start at
 * j_begin) and leaves the unnormalised state — olat, the running max m
 * [T*H] and sum l [T*H] — without dividing; egm_latent_merge folds another
 * range's state into it (ranges merged in a fixed order give the same bits
 * whatever ran them); egm_latent_finish divides. Rows whose positions all
 * precede a block skip it: a prefill segment costs the causal triangle.
 * scratch: egm_attn_latent_range_scratch(T, H, block, du, dr) floats. */
void egm_latent_attend_range(float *olat, float *m, double *l, const float *qlat,
                             const float *q, int ldq, int T, int pos0, int j_begin, int j_end,
                             egm_latent_rows_fn rows, void *ctx, int H, int dn, int dr, int du,
                             float scale, int block, float *scratch);
long egm_attn_latent_range_scratch(int T, int H, int block, int du, int dr);
/* The same with the score products from bf16 operands ([qlat | q_pe] and
 * [z | kpe] rounded, fp32 accumulation: kernels/attn_bf16.h); the softmax
 * and the weighted sum stay fp32, over the fp32 latents.
 * scratch: egm_attn_latent_range_scratch_bf16(T, H, block, du, dr) floats. */
void egm_latent_attend_range_bf16(float *olat, float *m, double *l, const float *qlat,
                                  const float *q, int ldq, int T, int pos0, int j_begin,
                                  int j_end, egm_latent_rows_fn rows, void *ctx, int H, int dn,
                                  int dr, int du, float scale, int block, float *scratch);
long egm_attn_latent_range_scratch_bf16(int T, int H, int block, int du, int dr);
void egm_latent_merge(float *olat, float *m, double *l, const float *olat2, const float *m2,
                      const double *l2, int R, int du);
void egm_latent_finish(float *olat, const double *l, int R, int du);

/* Steps 1 and 3 for head h alone (the same bits): heads can go to threads. */
void egm_latent_query_head(float *qlat, const float *q, int ldq, int n, const float *kv_b,
                           int H, int dn, int dr, int dv, int du, int h);
void egm_latent_output_head(float *out, int ldo, const float *olat, int n, const float *kv_b,
                            int H, int dn, int dv, int du, int h);

#endif
