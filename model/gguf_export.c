/* gguf_export.c - a model as a GGUF file (see gguf_export.h). */
#include "gguf_export.h"

#include "kernels/matmul.h"
#include "kernels/quant.h"
#include "kernels/quantize.h"

#include "gguf.h"
#include "gguf_write.h"
#include "source.h"
#include "tokenizer.h"
#include "weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct { const char *name; int type, ftype; } TYPES[] = {
    /* ftype: llama.cpp's general.file_type (LLAMA_FTYPE_*; Q4_K is _S) */
    {"f32", EGM_GGML_F32, 0},   {"f16", EGM_GGML_F16, 1},   {"bf16", EGM_GGML_BF16, 32},
    {"q8_0", EGM_GGML_Q8_0, 7}, {"q4_0", EGM_GGML_Q4_0, 2}, {"q4_1", EGM_GGML_Q4_1, 3},
    {"q4_k", EGM_GGML_Q4_K, 14}, {"q6_k", EGM_GGML_Q6_K, 18},
};

int egm_gguf_type_from_name(const char *name) {
    for (size_t i = 0; i < sizeof TYPES / sizeof *TYPES; i++)
        if (!strcmp(name, TYPES[i].name)) return TYPES[i].type;
    return -1;
}

typedef struct {
    const egm_model *m;
    egm_gguf_writer *w;
    int type;
    const char *arch;     /* GGUF architecture name */
    char key[128];
    float *tmp;           /* scratch for permuted / split matrices */
    float *mat;           /* scratch: one stored matrix as fp32 */
    egm_err *e;
} ex;

/* A matrix as the loader keeps it (stored type) in fp32, in x->mat. */
static const float *f32(ex *x, const egm_mat *m) {
    for (int r = 0; r < m->rows; r++)
        egm_dequant_row(m->type, (const uint8_t *)m->data + (size_t)r * m->row_bytes,
                        x->mat + (size_t)r * m->cols, m->cols);
    return x->mat;
}

static const char *K(ex *x, const char *name) {
    snprintf(x->key, sizeof x->key, "%s.%s", x->arch, name);
    return x->key;
}

/* The type a matrix with rows of `cols` elements gets. */
static int type_for(int type, int64_t cols) {
    if (cols % egm_qtype_block(type) == 0) return type;
    if (type != EGM_GGML_Q8_0 && cols % EGM_QK == 0) return EGM_GGML_Q8_0;
    return EGM_GGML_F16;
}

/* A tensor of rows x cols (ne = [cols, rows, n2]) from fp32; vectors
 * (rows == 1, n2 == 1) stay F32. */
static int put3(ex *x, const char *name, const float *v, int64_t cols, int64_t rows, int64_t n2) {
    int vec = rows == 1 && n2 == 1;
    int t = vec ? EGM_GGML_F32 : type_for(x->type, cols);
    size_t rb = egm_qtype_row_bytes(t, cols), nr = (size_t)(rows * n2);
    uint8_t *q = malloc(rb * nr);
    if (!q) return egm_fail(x->e, "%s: out of memory", name);
    for (size_t r = 0; r < nr; r++) egm_quantize_row(t, v + r * (size_t)cols, q + r * rb, cols);
    int64_t ne[3] = {cols, rows, n2};
    int rc = egm_gguf_w_tensor(x->w, name, t, vec ? 1 : n2 > 1 ? 3 : 2, ne, q, rb * nr, x->e);
    free(q);
    return rc;
}

/* By MODEL.md name (layer l, or -1 for a global tensor). */
static int put(ex *x, int l, const char *suffix, const float *v, int64_t rows, int64_t cols) {
    char hf[128], g[160];
    if (l < 0) snprintf(hf, sizeof hf, "%s", suffix);
    else snprintf(hf, sizeof hf, "model.layers.%d.%s", l, suffix);
    egm_gguf_name(hf, g, sizeof g);
    return put3(x, g, v, cols, rows, 1);
}

/* RoPE rows of each head [off, off + nrot) of a matrix with `stride` rows
 * per head, from rotate-half order (pairs i, i + nrot/2) to llama.cpp's
 * adjacent pairs (2i, 2i + 1): convert_hf_to_gguf.py's permute. */
static const float *permuted(ex *x, const float *w, int heads, int64_t stride, int64_t off,
                             int64_t nrot, int64_t cols) {
    memcpy(x->tmp, w, (size_t)(heads * stride * cols) * sizeof *w);
    for (int h = 0; h < heads; h++)
        for (int64_t i = 0; i < nrot / 2; i++) {
            const float *a = w + (h * stride + off + i) * cols;
            const float *b = w + (h * stride + off + nrot / 2 + i) * cols;
            memcpy(x->tmp + (h * stride + off + 2 * i) * cols, a, (size_t)cols * sizeof *w);
            memcpy(x->tmp + (h * stride + off + 2 * i + 1) * cols, b, (size_t)cols * sizeof *w);
        }
    return x->tmp;
}

static int put_llama_attn(ex *x, int l, const egm_layer *y) {
    const egm_config *c = &x->m->cfg;
    int64_t D = c->hidden_size, H = c->num_heads, Hkv = c->num_kv_heads, dh = c->head_dim;
    int perm = !c->rope_interleave;
    const float *q = f32(x, &y->wq);
    if (perm) q = permuted(x, q, (int)H, dh, 0, dh, D);
    if (put(x, l, "self_attn.q_proj.weight", q, H * dh, D)) return -1;
    const float *k = f32(x, &y->wk);
    if (perm) k = permuted(x, k, (int)Hkv, dh, 0, dh, D);
    return put(x, l, "self_attn.k_proj.weight", k, Hkv * dh, D) ||
           put(x, l, "self_attn.v_proj.weight", f32(x, &y->wv), Hkv * dh, D) ||
           put(x, l, "self_attn.o_proj.weight", f32(x, &y->wo), D, H * dh);
}

/* kv_b [H*(dn+dv), d_c] -> attn_k_b (ne [dn, d_c, H]) + attn_v_b (ne
 * [d_c, dv, H]): current llama.cpp's deepseek2 layout. */
static int put_kv_b_split(ex *x, int l, const float *kv) {
    const egm_config *c = &x->m->cfg;
    int64_t H = c->num_heads, dn = c->qk_nope_head_dim, dv = c->v_head_dim, dc = c->kv_lora_rank;
    float *kb = x->tmp, *vb = x->tmp + H * dn * dc;
    for (int64_t h = 0; h < H; h++) {
        const float *rows = kv + h * (dn + dv) * dc;
        for (int64_t i = 0; i < dn; i++)
            for (int64_t j = 0; j < dc; j++) kb[(h * dc + j) * dn + i] = rows[i * dc + j];
        memcpy(vb + h * dv * dc, rows + dn * dc, (size_t)(dv * dc) * sizeof *kv);
    }
    char kn[64], vn[64];
    snprintf(kn, sizeof kn, "blk.%d.attn_k_b.weight", l);
    snprintf(vn, sizeof vn, "blk.%d.attn_v_b.weight", l);
    return put3(x, kn, kb, dn, dc, H) || put3(x, vn, vb, dc, dv, H);
}

static int put_mla_attn(ex *x, int l, const egm_layer *y) {
    const egm_config *c = &x->m->cfg;
    int64_t D = c->hidden_size, H = c->num_heads, dn = c->qk_nope_head_dim,
            dr = c->qk_rope_head_dim, dv = c->v_head_dim, dc = c->kv_lora_rank,
            rq = c->q_lora_rank, dz = egm_config_latent_dim(c);
    /* deepseek2 is read with adjacent-pair RoPE; egmla says which it uses */
    int perm = c->arch == EGM_MLA && !c->rope_interleave;
    if (rq && (put(x, l, "self_attn.q_a_proj.weight", f32(x, &y->q_a), rq, D) ||
               put(x, l, "self_attn.q_a_layernorm.weight", y->q_a_norm, 1, rq)))
        return -1;
    const float *qw = f32(x, rq ? &y->q_b : &y->q_proj);
    int64_t qin = rq ? rq : D;
    if (perm) qw = permuted(x, qw, (int)H, dn + dr, dn, dr, qin);
    if (put(x, l, rq ? "self_attn.q_b_proj.weight" : "self_attn.q_proj.weight", qw,
            H * (dn + dr), qin))
        return -1;
    const float *kva = f32(x, &y->kv_a);
    if (perm) kva = permuted(x, kva, 1, dc + dr, dc, dr, D);
    if (put(x, l, "self_attn.kv_a_proj_with_mqa.weight", kva, dc + dr, D) ||
        put(x, l, "self_attn.o_proj.weight", f32(x, &y->o_proj), D, H * dv))
        return -1;
    if (c->arch == EGM_MLA)
        return put(x, l, "self_attn.kv_a_layernorm.weight", y->kv_a_norm, 1, dc) ||
               put_kv_b_split(x, l, y->kv_b);
    int64_t du = c->eg_latent_dim, de = c->eg_embed_dim, V = c->vocab_size;
    const egm_tensor *t = y->eg_embed;
    float *tab = malloc((size_t)(V * de) * sizeof *tab);
    if (!tab) return egm_fail(x->e, "out of memory");
    egm_to_f32(tab, t->data, t->dtype, (size_t)(V * de));
    int rc = put(x, l, "self_attn.kv_b_proj.weight", y->kv_b, H * (dn + dv), dz) ||
             put(x, l, "self_attn.eg_embed.weight", tab, V, de) ||
             put(x, l, "self_attn.eg_gate_proj.weight", y->eg_gate, du, de) ||
             (y->eg_up && put(x, l, "self_attn.eg_up_proj.weight", y->eg_up, du, dc)) ||
             put(x, l, "self_attn.eg_norm.weight", y->eg_norm_w, 1, du) ||
             (y->eg_norm_b && put(x, l, "self_attn.eg_norm.bias", y->eg_norm_b, 1, du));
    free(tab);
    return rc ? -1 : 0;
}

static int put_tensors(ex *x) {
    const egm_model *m = x->m;
    const egm_config *c = &m->cfg;
    int64_t V = c->vocab_size, D = c->hidden_size, F = c->intermediate_size;
    if (put(x, -1, "model.embed_tokens.weight", f32(x, &m->embed), V, D) ||
        put(x, -1, "model.norm.weight", m->norm, 1, D) ||
        (!c->tie_word_embeddings && put(x, -1, "lm_head.weight", f32(x, &m->lm_head), V, D)))
        return -1;
    for (int l = 0; l < c->num_layers; l++) {
        const egm_layer *y = &m->layers[l];
        if (put(x, l, "input_layernorm.weight", y->attn_norm, 1, D) ||
            put(x, l, "post_attention_layernorm.weight", y->ffn_norm, 1, D) ||
            put(x, l, "mlp.gate_proj.weight", f32(x, &y->w_gate), F, D) ||
            put(x, l, "mlp.up_proj.weight", f32(x, &y->w_up), F, D) ||
            put(x, l, "mlp.down_proj.weight", f32(x, &y->w_down), D, F) ||
            (c->arch == EGM_LLAMA ? put_llama_attn(x, l, y) : put_mla_attn(x, l, y)))
            return -1;
    }
    return 0;
}

static int put_keys(ex *x, const char *name, int ftype) {
    const egm_config *c = &x->m->cfg;
    egm_gguf_writer *w = x->w;
    egm_err *e = x->e;
    if (egm_gguf_w_str(w, "general.architecture", x->arch, e) ||
        egm_gguf_w_str(w, "general.name", name, e) ||
        egm_gguf_w_u32(w, "general.file_type", (uint32_t)ftype, e) ||
        egm_gguf_w_u32(w, "general.quantization_version", 2, e) ||
        egm_gguf_w_u32(w, K(x, "vocab_size"), (uint32_t)c->vocab_size, e) ||
        egm_gguf_w_u32(w, K(x, "context_length"), (uint32_t)c->max_position_embeddings, e) ||
        egm_gguf_w_u32(w, K(x, "embedding_length"), (uint32_t)c->hidden_size, e) ||
        egm_gguf_w_u32(w, K(x, "block_count"), (uint32_t)c->num_layers, e) ||
        egm_gguf_w_u32(w, K(x, "feed_forward_length"), (uint32_t)c->intermediate_size, e) ||
        egm_gguf_w_u32(w, K(x, "attention.head_count"), (uint32_t)c->num_heads, e) ||
        egm_gguf_w_f32(w, K(x, "rope.freq_base"), c->rope_theta, e) ||
        egm_gguf_w_f32(w, K(x, "attention.layer_norm_rms_epsilon"), c->rms_norm_eps, e))
        return -1;
    if (c->arch == EGM_LLAMA)
        return egm_gguf_w_u32(w, K(x, "attention.head_count_kv"), (uint32_t)c->num_kv_heads, e) ||
               egm_gguf_w_u32(w, K(x, "attention.key_length"), (uint32_t)c->head_dim, e) ||
               egm_gguf_w_u32(w, K(x, "attention.value_length"), (uint32_t)c->head_dim, e) ||
               egm_gguf_w_u32(w, K(x, "rope.dimension_count"), (uint32_t)c->head_dim, e) ? -1 : 0;
    uint32_t dn = (uint32_t)c->qk_nope_head_dim, dr = (uint32_t)c->qk_rope_head_dim,
             dv = (uint32_t)c->v_head_dim, dc = (uint32_t)c->kv_lora_rank;
    /* written also when 0 (no query compression): llama.cpp requires the key */
    if (egm_gguf_w_u32(w, K(x, "attention.q_lora_rank"), (uint32_t)c->q_lora_rank, e) ||
        egm_gguf_w_u32(w, K(x, "attention.kv_lora_rank"), dc, e) ||
        egm_gguf_w_u32(w, K(x, "rope.dimension_count"), dr, e))
        return -1;
    if (c->arch == EGM_MLA) /* current llama.cpp: absorbed MQA sizes + per-head ones */
        return egm_gguf_w_u32(w, K(x, "attention.head_count_kv"), 1, e) ||
               egm_gguf_w_u32(w, K(x, "attention.key_length"), dc + dr, e) ||
               egm_gguf_w_u32(w, K(x, "attention.value_length"), dc, e) ||
               egm_gguf_w_u32(w, K(x, "attention.key_length_mla"), dn + dr, e) ||
               egm_gguf_w_u32(w, K(x, "attention.value_length_mla"), dv, e) ||
               egm_gguf_w_u32(w, K(x, "leading_dense_block_count"), (uint32_t)c->num_layers, e) ||
               /* llama.cpp reads the expert keys even when every layer is dense */
               egm_gguf_w_u32(w, K(x, "expert_count"), 0, e) ||
               egm_gguf_w_u32(w, K(x, "expert_used_count"), 0, e) ||
               egm_gguf_w_u32(w, K(x, "expert_shared_count"), 0, e) ||
               egm_gguf_w_u32(w, K(x, "expert_feed_forward_length"), (uint32_t)c->intermediate_size, e) ||
               egm_gguf_w_f32(w, K(x, "expert_weights_scale"), 1.0f, e) ? -1 : 0;
    return egm_gguf_w_u32(w, K(x, "attention.key_length"), dn + dr, e) ||
           egm_gguf_w_u32(w, K(x, "attention.value_length"), dv, e) ||
           egm_gguf_w_u32(w, K(x, "eg_embed_dim"), (uint32_t)c->eg_embed_dim, e) ||
           egm_gguf_w_u32(w, K(x, "eg_latent_dim"), (uint32_t)c->eg_latent_dim, e) ||
           egm_gguf_w_str(w, K(x, "eg_norm"), c->eg_norm_rms ? "rmsnorm" : "layernorm", e) ||
           egm_gguf_w_f32(w, K(x, "eg_norm_eps"), c->eg_norm_eps, e) ||
           egm_gguf_w_bool(w, K(x, "rope_interleave"), c->rope_interleave, e) ? -1 : 0;
}

/* tokenizer.*: a GGUF source's keys as they are, or tokenizer.json's. */
static int put_tokenizer(ex *x, const char *src) {
    const egm_config *c = &x->m->cfg;
    if (egm_gguf_is_file(src)) {
        egm_gguf *g;
        if (egm_gguf_open(src, &g, x->e)) return -1;
        int rc = 0;
        for (int i = 0; i < egm_gguf_kv_count(g) && !rc; i++) {
            const egm_gguf_kv *kv = egm_gguf_kv_at(g, i);
            if (!strncmp(kv->key, "tokenizer.", 10)) rc = egm_gguf_w_copy(x->w, kv, x->e);
        }
        egm_gguf_close(g);
        return rc;
    }
    egm_tokenizer *t;
    if (egm_model_tokenizer(src, &t, x->e)) return -1;
    if (!t) return 0; /* no tokenizer.json: the file carries <arch>.vocab_size only */
    int rc = egm_tok_vocab_size(t) > c->vocab_size
                 ? egm_fail(x->e, "%s: the tokenizer has %d ids, the model %d", src,
                            egm_tok_vocab_size(t), c->vocab_size)
                 : egm_tok_to_gguf(t, c->bos_token_id, c->n_eos ? c->eos_token_ids[0] : -1, x->w,
                                   x->e);
    egm_tok_free(t);
    return rc;
}

/* The largest stored matrix (egm_mat) of the model. */
static size_t mat_elems(const egm_config *c) {
    size_t V = (size_t)c->vocab_size, D = (size_t)c->hidden_size, F = (size_t)c->intermediate_size,
           H = (size_t)c->num_heads, rq = (size_t)c->q_lora_rank;
    size_t dq = (size_t)(c->qk_nope_head_dim + c->qk_rope_head_dim), dv = (size_t)c->v_head_dim;
    size_t cand[] = {V * D, F * D, H * (size_t)c->head_dim * D, H * dq * (rq > D ? rq : D),
                     rq * D, ((size_t)c->kv_lora_rank + (size_t)c->qk_rope_head_dim) * D, D * H * dv};
    size_t n = 0;
    for (size_t i = 0; i < sizeof cand / sizeof *cand; i++) n = cand[i] > n ? cand[i] : n;
    return n;
}

/* Scratch for one permuted or split matrix: the largest one of a layer. */
static size_t scratch_elems(const egm_config *c) {
    size_t D = (size_t)c->hidden_size, H = (size_t)c->num_heads, n = 0;
    if (c->arch == EGM_LLAMA) return H * (size_t)c->head_dim * D;
    size_t dn = (size_t)c->qk_nope_head_dim, dr = (size_t)c->qk_rope_head_dim,
           dv = (size_t)c->v_head_dim, dc = (size_t)c->kv_lora_rank;
    size_t qin = c->q_lora_rank ? (size_t)c->q_lora_rank : D;
    n = H * (dn + dr) * qin;
    if ((dc + dr) * D > n) n = (dc + dr) * D;
    if (H * (dn + dv) * dc > n) n = H * (dn + dv) * dc;
    return n;
}

int egm_gguf_export(const char *src, const char *out, int type, egm_err *e) {
    int ftype = -1;
    for (size_t i = 0; i < sizeof TYPES / sizeof *TYPES; i++)
        if (TYPES[i].type == type) ftype = TYPES[i].ftype;
    if (ftype < 0 || !egm_quantize_supported(type))
        return egm_fail(e, "%s: ggml type %d cannot be written", out, type);
    egm_model m;
    if (egm_model_load(src, 0, -1, EGM_LOAD_EMBED | EGM_LOAD_HEAD, &m, e)) return -1;
    const char *arch = m.cfg.arch == EGM_LLAMA ? "llama" : m.cfg.arch == EGM_MLA ? "deepseek2"
                                                                               : "egmla";
    ex x = {&m, egm_gguf_writer_new(), type, arch, "", malloc(scratch_elems(&m.cfg) * sizeof(float)),
            malloc(mat_elems(&m.cfg) * sizeof(float)), e};
    const char *base = strrchr(src, '/');
    base = base && base[1] ? base + 1 : src;
    int rc = !x.w || !x.tmp || !x.mat ? egm_fail(e, "%s: out of memory", out)
             : put_keys(&x, base, ftype) || put_tokenizer(&x, src) || put_tensors(&x) ||
                       egm_gguf_w_write(x.w, out, e) ? -1 : 0;
    free(x.tmp);
    free(x.mat);
    egm_gguf_writer_free(x.w);
    egm_model_free(&m);
    return rc;
}
