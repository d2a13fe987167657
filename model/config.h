/* config.h - model hyper-parameters from config.json (MODEL.md).
 *
 * One struct serves all three architectures; fields that do not apply to an
 * architecture are 0. Unknown model types and unsupported options
 * (rope_scaling, routed experts, ...) are refused, never guessed. */
#ifndef EGM_CONFIG_H
#define EGM_CONFIG_H

#include "base/err.h"

typedef enum { EGM_LLAMA = 0, EGM_MLA = 1, EGM_EGMLA = 2 } egm_arch;

#define EGM_MAX_EOS 8

/* The latent norms of deepseek_v2 (q_a_layernorm, kv_a_layernorm) and
 * egmla (q_a_layernorm) use this eps whatever rms_norm_eps says, as
 * transformers' DeepseekV2 and DeepSeek's own code do (docs/MODEL.md). */
#define EGM_LATENT_NORM_EPS 1e-6f

typedef struct {
    egm_arch arch;
    char model_type[32];      /* "llama", "deepseek_v2", "egmla" */
    int vocab_size;           /* V */
    int hidden_size;          /* D */
    int intermediate_size;    /* I */
    int num_layers;           /* L */
    int num_heads;            /* H */
    float rms_norm_eps;
    float rope_theta;
    int max_position_embeddings;
    int tie_word_embeddings;  /* 0/1, default 0 */
    int rope_interleave;      /* default 0 for llama, 1 otherwise */
    int bos_token_id;         /* -1 if absent/null */
    int eos_token_ids[EGM_MAX_EOS];
    int n_eos;                /* 0 if absent/null */

    /* llama */
    int num_kv_heads;         /* Hkv, default H */
    int head_dim;             /* dh, default D/H */

    /* deepseek_v2 and egmla */
    int q_lora_rank;          /* 0 when null (no query compression) */
    int kv_lora_rank;         /* d_c */
    int qk_nope_head_dim;     /* dn */
    int qk_rope_head_dim;     /* dr */
    int v_head_dim;           /* dv */

    /* egmla */
    int eg_embed_dim;         /* d_e */
    int eg_latent_dim;        /* d_u, default d_c */
    int eg_norm_rms;          /* 0: layernorm (default), 1: rmsnorm */
    float eg_norm_eps;        /* default 1e-5 */
} egm_config;

/* Parses and validates `path` (a config.json). Messages name the file and
 * the key. */
int egm_config_load(const char *path, egm_config *c, egm_err *e);

/* Same, from a JSON text already in memory; `origin` names it in messages. */
int egm_config_parse(const char *json, size_t len, const char *origin,
                     egm_config *c, egm_err *e);

/* Derived sizes. */
int egm_config_kv_elems(const egm_config *c);   /* per token per layer */
int egm_config_latent_dim(const egm_config *c); /* d_c (MLA) or d_u (EG-MLA): width of z */
int egm_config_is_eos(const egm_config *c, int token);

#endif
