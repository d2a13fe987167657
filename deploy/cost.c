/* cost.c - one layer's and the head's flops and bytes per step (cost.h). */
#include "deploy/cost.h"

#include "model/weights.h"
#include "worker/kvcache.h"

/* Weights of one layer (every per-layer tensor but the gate table, which is
 * gathered a row per cached position, not streamed). */
static double layer_params(const egm_config *c) {
    egm_param_count p;
    egm_count_params(c, c->arch == EGM_EGMLA && c->eg_latent_dim != c->kv_lora_rank, &p);
    return (double)(p.attn + p.ffn + p.norms - c->hidden_size) / c->num_layers;
}

/* Attention flops per (row, cached position): scores and values; for the
 * latent architectures over the absorbed latent, plus EG-MLA's z rebuild
 * (eg_up GEMM and the gate-norm pass). */
static double attend_flops(const egm_config *c) {
    double H = c->num_heads;
    if (c->arch == EGM_LLAMA) return 4.0 * H * c->head_dim;
    double dz = egm_config_latent_dim(c), dr = c->qk_rope_head_dim;
    double f = 2.0 * H * (2 * dz + dr);
    if (c->arch == EGM_EGMLA)
        f += (c->eg_latent_dim != c->kv_lora_rank ? 2.0 * dz * c->kv_lora_rank : 0) + 8 * dz;
    return f;
}

double egm_split_layer_flops(const egm_config *c, int rows, long positions) {
    return 2.0 * rows * layer_params(c) + attend_flops(c) * (double)positions;
}

double egm_split_layer_bytes(const egm_config *c, int rows, long positions) {
    double per_pos = (double)egm_kv_bytes_per_token(1, egm_config_kv_elems(c),
                                                    c->arch == EGM_EGMLA, 0);
    if (c->arch == EGM_EGMLA) per_pos += 4.0 * egm_config_latent_dim(c); /* gate rows */
    (void)rows;
    return 4.0 * layer_params(c) + per_pos * (double)positions;
}

/* lm_head, then the softmax / argmax over the vocabulary (~10 flops each). */
double egm_split_head_flops(const egm_config *c, int rows) {
    return 2.0 * rows * c->vocab_size * (double)c->hidden_size + 10.0 * rows * c->vocab_size;
}

double egm_split_head_bytes(const egm_config *c) {
    return 4.0 * c->vocab_size * (double)c->hidden_size;
}
