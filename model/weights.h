/* weights.h - a model's weights for a range of layers.
 *
 * Linear weights are [out, in] row-major (PyTorch nn.Linear), so y = W x.
 * The projection matrices (egm_mat) stay in their stored precision, used
 * straight from the mapping: F32, and safetensors BF16/F16, and GGUF's
 * F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q4_K/Q5_K/Q6_K. Norms and the latent
 * attention's kv_b / eg_* weights are small and read as fp32 (converted
 * once at load when stored otherwise).
 * Only layers [lo, hi) are read, plus the embeddings and/or the final norm
 * and lm_head when the flags ask for them. The EG-MLA gate table eg_embed
 * stays memory-mapped in its stored dtype and is read by row; optionally the
 * loader precomputes G = eg_embed @ eg_gate_proj^T ([V, d_u]) instead.
 *
 * Every missing tensor or wrong shape is refused with a message naming the
 * file, the tensor, the expected and the found shape. */
#ifndef EGM_WEIGHTS_H
#define EGM_WEIGHTS_H

#include "checkpoint.h"
#include "config.h"
#include "kernels/matmul.h"

typedef struct {
    const float *attn_norm, *ffn_norm;                   /* [D] */
    /* llama */
    egm_mat wq, wk, wv, wo;                              /* [H*dh,D] [Hkv*dh,D] x2 [D,H*dh] */
    /* deepseek_v2 / egmla (an absent matrix has data NULL) */
    egm_mat q_proj;                                      /* [H*(dn+dr), D] */
    egm_mat q_a;                                         /* [rq, D] */
    const float *q_a_norm;                               /* [rq] */
    egm_mat q_b;                                         /* [H*(dn+dr), rq] */
    egm_mat kv_a;                                        /* [d_c+dr, D] */
    const float *kv_a_norm;                              /* [d_c] (deepseek_v2 only) */
    const float *kv_b;                                   /* [H*(dn+dv), d_c or d_u], fp32 */
    egm_mat o_proj;                                      /* [D, H*dv] */
    /* egmla */
    const egm_tensor *eg_embed;                          /* [V, d_e], mapped, any dtype */
    const float *eg_gate;                                /* [d_u, d_e] */
    const float *eg_up;                                  /* [d_u, d_c] or NULL */
    const float *eg_norm_w, *eg_norm_b;                  /* [d_u]; bias NULL for rmsnorm */
    float *eg_G;                                         /* [V, d_u] if precomputed, else NULL */
    /* FFN (SwiGLU) */
    egm_mat w_gate, w_up, w_down;                        /* [I,D] [I,D] [D,I] */
} egm_layer;

enum {
    EGM_LOAD_EMBED = 1,        /* model.embed_tokens */
    EGM_LOAD_HEAD = 2,         /* model.norm + lm_head (or tied embed) */
    EGM_LOAD_GATE_TABLE = 4,   /* precompute eg_G for EG-MLA layers */
};

typedef struct {
    egm_config cfg;
    int lo, hi;                /* layers [lo, hi) are loaded */
    int flags;
    egm_mat embed;             /* [V, D], data NULL if not loaded; read by row */
    const float *norm;         /* [D] or NULL */
    egm_mat lm_head;           /* [V, D], data NULL if not loaded (== embed when tied) */
    egm_layer *layers;         /* layers[l - lo] */
    /* ownership */
    egm_ckpt *ck;              /* NULL for synthetic weights */
    struct egm_gguf *gg;       /* a GGUF source stays mapped: its tensors are used as stored */
    void **owned;
    int n_owned, cap_owned;
    size_t owned_bytes;        /* bytes of converted/synthetic weights */
    /* bytes of the matrices (embeddings, lm_head once if tied, layers' egm_mat
     * weights) by ggml type; fp32 vectors and tables not counted */
    size_t mat_bytes[EGM_GGML_BF16 + 1];
} egm_model;

/* Loads config.json from dir and the tensors for [lo, hi). hi = -1 means L. */
int egm_model_load(const char *dir, int lo, int hi, int flags, egm_model *m,
                   egm_err *e);

/* Same, with a config already parsed and a checkpoint already open (the
 * model takes ownership of ck, also on failure: ck is closed then). */
int egm_model_from_ckpt(const egm_config *c, egm_ckpt *ck, int lo, int hi,
                        int flags, egm_model *m, egm_err *e);

/* Synthetic weights for benchmarks: deterministic from seed, small values
 * (uniform in +-1/sqrt(fan_in)), norms at 1, biases at 0. Each tensor's
 * values depend only on the seed and its name, so any layer range gives the
 * same layers. eg_up_proj exists iff eg_latent_dim != kv_lora_rank; eg_embed
 * is an owned F32 egm_tensor. */
int egm_model_random(const egm_config *c, unsigned long long seed, int lo,
                     int hi, int flags, egm_model *m, egm_err *e);

/* Converts every fp32 projection matrix (and the embeddings) of a loaded
 * model to `type` (EGM_GGML_BF16, F16 or Q8_0), in owned buffers: the
 * synthetic benchmark's lower-precision weights. Others stay as they are. */
int egm_model_convert(egm_model *m, int type, egm_err *e);

void egm_model_free(egm_model *m);

/* The GGUF name of a MODEL.md tensor name ("model.layers.3.mlp.up_proj.weight"
 * -> "blk.3.ffn_up.weight"; llama.cpp's names, ours for the EG-MLA gate).
 * Returns -1 (and copies the name) when there is none. */
int egm_gguf_name(const char *name, char *out, size_t n);

/* Parameter counts by part, for `egmla info`. attn holds every attention
 * weight of all layers, including q_a_layernorm, kv_a_layernorm, eg_gate_proj,
 * eg_up_proj and eg_norm; gate_table is the eg_embed tables; norms are the
 * per-layer input/post-attention norms and the final norm. */
typedef struct {
    long long embed, lm_head, attn, gate_table, ffn, norms, total;
} egm_param_count;
void egm_count_params(const egm_config *c, int has_eg_up, egm_param_count *p);

#endif
