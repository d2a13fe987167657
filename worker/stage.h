/* stage.h - a pipeline stage: a range of layers, its KV cache, its scratch.
 *
 * A micro-batch is n rows; row r is token `token[r]` of the sequence in
 * slot `slot[r]` at position `pos[r]`. The rows of one sequence are
 * consecutive, in position order, and continue where that sequence's cache
 * ends (a prefill chunk, or one decode token). The stage writes the rows'
 * keys/latents into its cache first, then lets each row attend to every
 * cached position up to its own. The first stage also embeds the tokens;
 * the last one can also apply the final norm and lm_head. */
#ifndef EGM_STAGE_H
#define EGM_STAGE_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/pool.h"
#include "model/weights.h"
#include "worker/kvcache.h"

typedef struct {
    int n;              /* rows */
    const int *slot;    /* [n] */
    const int *pos;     /* [n] */
    const int *token;   /* [n] */
} egm_mbatch;

/* Per-thread scratch for the per-sequence part of attention. */
typedef struct {
    egm_buf seg, z, gate, emb, att;
    egm_buf ids;        /* int32 token ids of an EG-MLA block of positions */
    egm_buf cb;         /* --attn-dtype bf16: a block of c rounded to bf16 */
} egm_seg_scratch;

#define EGM_STAGE_MAX_THREADS 64

typedef struct {
    const egm_model *m;
    const egm_config *c;
    egm_kv_pool kv;
    egm_kv_seq *seqs;    /* [n_slots] */
    int n_slots;
    egm_buf xn, q, qa, qlat, olat, kvrow, attn, ffn_g, ffn_u;
    egm_buf qx;          /* x rounded once for the products that share it */
    egm_seg_scratch scr[EGM_STAGE_MAX_THREADS];
    int *seg_start, n_segs, cap_segs;  /* segments of the current batch */
    /* attention's tasks for the current batch: a group of a segment's rows
     * against a range of positions (worker/stage.c, plan_attention) */
    struct egm_attn_task *tasks;
    int n_tasks, cap_tasks;
    struct egm_attn_group *groups;
    int n_groups, cap_groups, n_parts;
    egm_buf part, ml;    /* partial states of ranges after a group's first; final m, l */
    egm_pool *pool;      /* every parallel loop; as many threads as BLAS had
                          * at init (--threads), BLAS itself single-threaded */
    int attn_bf16;       /* --attn-dtype bf16 (egm_stage_set_attn_bf16) */
    uint16_t **eg_up_bf16; /* [layers] EG-MLA's W_up rounded to bf16, or NULL */
} egm_stage;

/* kv_budget: bytes for this stage's cache; block_tokens: positions per
 * block; kv_bf16: store the cache as bf16. */
int egm_stage_init(egm_stage *s, const egm_model *m, int n_slots,
                   size_t kv_budget, int block_tokens, int kv_bf16,
                   egm_err *e);
void egm_stage_free(egm_stage *s);

/* --attn-dtype bf16 (on) or fp32: the attention's score products, and
 * EG-MLA's rebuild up(c), from bf16 operands with fp32 accumulation
 * (kernels/attn_bf16.h); softmax, norms and weighted sums stay fp32. On
 * rounds each layer's W_up once. After init, before any forward; 0, or -1
 * when out of memory. */
int egm_stage_set_attn_bf16(egm_stage *s, int on, egm_err *e);

/* Reserves cache for n_tokens positions of a sequence (all or nothing). */
int egm_stage_reserve(egm_stage *s, int slot, int n_tokens);
void egm_stage_release(egm_stage *s, int slot);
/* Starts `slot` with the first n cached positions of slot `from` (prefix
 * sharing: a multiple-choice context is prefilled once). Both must be
 * reserved for n positions; -1 otherwise. */
int egm_stage_fork(egm_stage *s, int slot, int from, int n);

/* x: [n, D] activations in (ignored on the first stage, which embeds) and
 * out. Positions of the batch are appended to the cache. */
void egm_stage_forward(egm_stage *s, const egm_mbatch *b, float *x);

/* The attention of egm_stage_forward(s, b) alone, every layer, against
 * the cache as it is (its positions are not written again): for timing.
 * Call it right after a forward of the same batch, whose queries it reuses. */
void egm_stage_attention_replay(egm_stage *s, const egm_mbatch *b);

/* logits[k, V] = lm_head(RMSNorm(x[rows[k]])) for k < n_rows (last stage). */
void egm_stage_logits(egm_stage *s, const float *x, const int *rows,
                      int n_rows, float *logits);

#endif
