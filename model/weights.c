/* weights.c - the tensors of layers [lo, hi) by MODEL.md name, shape-checked.
 *
 * One code path serves checkpoints and synthetic weights: fetch() either
 * looks a tensor up and checks its shape against the config, or allocates
 * and fills it deterministically. Within a loaded layer every tensor of the
 * checkpoint must be one we use: a stray bias or an eg_norm.bias next to an
 * RMSNorm would otherwise be silently ignored, which is a guess.
 *
 * A GGUF file (llama.cpp's format) is a third source: names are translated
 * to GGUF's (blk.N.attn_q.weight, ...), shapes are checked in GGUF's ne
 * order ([in, out] for a matrix, the same bytes as our [out, in]); matrices
 * stay in the mapping as stored, vectors are dequantised to fp32. */
#include "weights.h"

#include "gguf.h"
#include "kernels/ops.h"

#include <cblas.h> /* note: defines I (complex.h); avoid it as a name */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { INIT_LINEAR, INIT_ONE, INIT_ZERO };

#define MAX_USED 32

typedef struct {
    egm_model *m;
    egm_err *e;
    int random;                 /* synthetic weights instead of m->ck */
    const egm_gguf *gg;         /* GGUF source instead of m->ck */
    char gname[160];            /* scratch for gguf_name() */
    unsigned long long seed;
    char used[MAX_USED][160];   /* tensors fetched for the current layer */
    int n_used;
    char name[128];             /* scratch for lname() */
} ld;

static const char *origin(const ld *L) {
    if (L->gg) return egm_gguf_path(L->gg);
    return L->random ? "(random weights)" : egm_ckpt_origin(L->m->ck);
}

/* "model.layers.<l>.<suffix>" in L->name. */
static const char *lname(ld *L, int l, const char *suffix) {
    snprintf(L->name, sizeof L->name, "model.layers.%d.%s", l, suffix);
    return L->name;
}

/* Takes ownership of p (freed by egm_model_free). Frees p on failure. */
static int own(ld *L, void *p, size_t bytes) {
    egm_model *m = L->m;
    if (!p) return egm_fail(L->e, "%s: out of memory (%zu bytes)", origin(L), bytes);
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? m->cap_owned * 2 : 32;
        void **no = realloc(m->owned, (size_t)cap * sizeof *no);
        if (!no) {
            free(p);
            return egm_fail(L->e, "%s: out of memory", origin(L));
        }
        m->owned = no;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = p;
    m->owned_bytes += bytes;
    return 0;
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *s) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (int i = 0; i < ndim && k < n - 24; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)s[i]);
    snprintf(buf + k, n - k, "]");
}

/* splitmix64: a tiny, good, seedable generator. */
static unsigned long long splitmix(unsigned long long *s) {
    unsigned long long z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Each tensor's stream depends on the seed and its name only, so a stage
 * loading layers [2, 4) gets the same weights as a run loading them all. */
static void fill(float *x, size_t n, int init, int64_t fan_in, unsigned long long seed,
                 const char *name) {
    if (init != INIT_LINEAR) {
        for (size_t i = 0; i < n; i++) x[i] = init == INIT_ONE ? 1.0f : 0.0f;
        return;
    }
    unsigned long long s = seed ^ 0xCBF29CE484222325ull; /* FNV-1a of the name */
    for (const char *p = name; *p; p++) s = (s ^ (unsigned char)*p) * 0x100000001B3ull;
    float a = 1.0f / sqrtf((float)fan_in);
    for (size_t i = 0; i < n; i++) {
        float u = (float)(splitmix(&s) >> 40) * (1.0f / 16777216.0f); /* [0, 1) */
        x[i] = (2.0f * u - 1.0f) * a;
    }
}

/* Finds `name` in the checkpoint and checks its shape (ndim 1: [d0];
 * 2: [d0, d1]). Records it as used for the leftover check. */
static int find(ld *L, const char *name, int ndim, int64_t d0, int64_t d1,
                const egm_tensor **out) {
    int64_t want[2] = {d0, d1};
    char ws[64], fs[200];
    shape_str(ws, sizeof ws, ndim, want);
    const egm_tensor *t = egm_ckpt_get(L->m->ck, name);
    if (!t)
        return egm_fail(L->e, "%s: tensor \"%s\" missing (expected shape %s)", origin(L), name,
                        ws);
    if (t->ndim != ndim || t->shape[0] != d0 || (ndim == 2 && t->shape[1] != d1)) {
        shape_str(fs, sizeof fs, t->ndim, t->shape);
        return egm_fail(L->e, "%s: tensor \"%s\": expected shape %s, found %s", t->file, name,
                        ws, fs);
    }
    if (L->n_used < MAX_USED) snprintf(L->used[L->n_used++], sizeof L->used[0], "%s", name);
    *out = t;
    return 0;
}

int egm_gguf_name(const char *name, char *out, size_t n) {
    static const char *const map[][2] = {
        {"input_layernorm.weight", "attn_norm.weight"},
        {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.k_proj.weight", "attn_k.weight"},
        {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.o_proj.weight", "attn_output.weight"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},
        {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"},
        /* deepseek2 (llama.cpp's MLA names) and egmla (ours, docs/LLAMACPP.md) */
        {"self_attn.q_a_proj.weight", "attn_q_a.weight"},
        {"self_attn.q_a_layernorm.weight", "attn_q_a_norm.weight"},
        {"self_attn.q_b_proj.weight", "attn_q_b.weight"},
        {"self_attn.kv_a_proj_with_mqa.weight", "attn_kv_a_mqa.weight"},
        {"self_attn.kv_a_layernorm.weight", "attn_kv_a_norm.weight"},
        {"self_attn.kv_b_proj.weight", "attn_kv_b.weight"},
        {"self_attn.eg_embed.weight", "attn_eg_embd.weight"},
        {"self_attn.eg_gate_proj.weight", "attn_eg_gate.weight"},
        {"self_attn.eg_up_proj.weight", "attn_eg_up.weight"},
        {"self_attn.eg_norm.weight", "attn_eg_norm.weight"},
        {"self_attn.eg_norm.bias", "attn_eg_norm.bias"},
    };
    int l, k = 0;
    const char *g = NULL;
    if (!strcmp(name, "model.embed_tokens.weight")) g = "token_embd.weight";
    if (!strcmp(name, "model.norm.weight")) g = "output_norm.weight";
    if (!strcmp(name, "lm_head.weight")) g = "output.weight";
    if (g) {
        snprintf(out, n, "%s", g);
        return 0;
    }
    if (sscanf(name, "model.layers.%d.%n", &l, &k) == 1 && k > 0)
        for (size_t i = 0; i < sizeof map / sizeof *map; i++)
            if (!strcmp(name + k, map[i][0])) {
                snprintf(out, n, "blk.%d.%s", l, map[i][1]);
                return 0;
            }
    snprintf(out, n, "%s", name);
    return -1;
}

/* MODEL.md name -> GGUF name, in L->gname (the name itself when there is
 * none: then reported missing). */
static const char *gguf_name(ld *L, const char *name) {
    egm_gguf_name(name, L->gname, sizeof L->gname);
    return L->gname;
}

/* find() for GGUF: shapes are compared in ne order (reversed). */
static int find_gguf(ld *L, const char *name, int ndim, int64_t d0, int64_t d1,
                     const egm_gguf_tensor **out) {
    const char *gn = gguf_name(L, name);
    int64_t want[2] = {ndim == 2 ? d1 : d0, d0};
    char ws[64], fs[200];
    shape_str(ws, sizeof ws, ndim, want);
    const egm_gguf_tensor *t = egm_gguf_tensor_get(L->gg, gn);
    if (!t)
        return egm_fail(L->e, "%s: tensor \"%s\" missing (expected ne %s)", origin(L), gn, ws);
    if (t->ndim != ndim || t->ne[0] != want[0] || (ndim == 2 && t->ne[1] != want[1])) {
        shape_str(fs, sizeof fs, t->ndim, t->ne);
        return egm_fail(L->e, "%s: tensor \"%s\": expected ne %s, found ne %s", origin(L), gn,
                        ws, fs);
    }
    if (L->n_used < MAX_USED) snprintf(L->used[L->n_used++], sizeof L->used[0], "%s", gn);
    *out = t;
    return 0;
}

static int present(ld *L, const char *name);
static int ends_with(const char *s, const char *suf);

/* One GGUF tensor of exactly ne [n0, n1, n2], dequantised (owned). */
static int gguf_f32(ld *L, const char *gn, int64_t n0, int64_t n1, int64_t n2, float **out) {
    const egm_gguf_tensor *t = egm_gguf_tensor_get(L->gg, gn);
    if (!t)
        return egm_fail(L->e, "%s: tensor \"%s\" missing (expected ne [%lld, %lld, %lld])",
                        origin(L), gn, (long long)n0, (long long)n1, (long long)n2);
    if (t->ne[0] != n0 || t->ne[1] != n1 || t->ne[2] != n2 || t->ne[3] != 1)
        return egm_fail(L->e, "%s: tensor \"%s\": expected ne [%lld, %lld, %lld], found ne "
                        "[%lld, %lld, %lld, %lld]", origin(L), gn, (long long)n0, (long long)n1,
                        (long long)n2, (long long)t->ne[0], (long long)t->ne[1],
                        (long long)t->ne[2], (long long)t->ne[3]);
    size_t n = (size_t)(n0 * n1 * n2);
    float *x = malloc(n * sizeof *x);
    if (own(L, x, n * sizeof *x)) return -1;
    egm_gguf_to_f32(t, x);
    if (L->n_used < MAX_USED) snprintf(L->used[L->n_used++], sizeof L->used[0], "%s", gn);
    *out = x;
    return 0;
}

/* Newer llama.cpp deepseek2 files split kv_b_proj [H*(dn+dv), d_c] per head
 * into attn_k_b (k_b transposed: ne [dn, d_c, H]) and attn_v_b (ne [d_c,
 * dv, H]); we put the rows back together. */
static int fetch_kv_b_split(ld *L, const char *name, const float **out) {
    const egm_config *c = &L->m->cfg;
    int64_t H = c->num_heads, dn = c->qk_nope_head_dim, dv = c->v_head_dim,
            dc = egm_config_latent_dim(c);
    int l = 0;
    sscanf(name, "model.layers.%d.", &l);
    char kn[64], vn[64];
    snprintf(kn, sizeof kn, "blk.%d.attn_k_b.weight", l);
    snprintf(vn, sizeof vn, "blk.%d.attn_v_b.weight", l);
    if (!egm_gguf_tensor_get(L->gg, kn))
        return egm_fail(L->e, "%s: tensor \"blk.%d.attn_kv_b.weight\" missing, and so is its "
                        "split form \"%s\" + \"%s\" (expected ne [%lld, %lld])", origin(L), l,
                        kn, vn, (long long)dc, (long long)(H * (dn + dv)));
    float *kb, *vb;
    if (gguf_f32(L, kn, dn, dc, H, &kb) || gguf_f32(L, vn, dc, dv, H, &vb)) return -1;
    size_t n = (size_t)(H * (dn + dv) * dc);
    float *x = malloc(n * sizeof *x);
    if (own(L, x, n * sizeof *x)) return -1;
    for (int64_t h = 0; h < H; h++) {
        float *rows = x + h * (dn + dv) * dc;
        for (int64_t i = 0; i < dn; i++)
            for (int64_t j = 0; j < dc; j++) rows[i * dc + j] = kb[(h * dc + j) * dn + i];
        memcpy(rows + dn * dc, vb + h * dv * dc, (size_t)(dv * dc) * sizeof *x);
    }
    *out = x;
    return 0;
}

/* A tensor as fp32: the mapping itself when it already is aligned fp32,
 * an owned converted copy otherwise, or synthetic values. */
static int fetch(ld *L, const char *name, int ndim, int64_t d0, int64_t d1, int init,
                 const float **out) {
    size_t n = (size_t)d0 * (size_t)(ndim == 2 ? d1 : 1);
    if (L->random) {
        float *x = malloc(n * sizeof *x);
        if (own(L, x, n * sizeof *x)) return -1;
        fill(x, n, init, ndim == 2 ? d1 : d0, L->seed, name);
        *out = x;
        return 0;
    }
    if (L->gg) {
        const egm_gguf_tensor *g;
        if (ends_with(name, "kv_b_proj.weight") && !present(L, name))
            return fetch_kv_b_split(L, name, out);
        if (find_gguf(L, name, ndim, d0, d1, &g)) return -1;
        float *x = malloc(n * sizeof *x);
        if (own(L, x, n * sizeof *x)) return -1;
        egm_gguf_to_f32(g, x);
        *out = x;
        return 0;
    }
    const egm_tensor *t;
    if (find(L, name, ndim, d0, d1, &t)) return -1;
    if (t->dtype == EGM_DT_F32 && (uintptr_t)t->data % 4 == 0) {
        *out = (const float *)(const void *)t->data;
        return 0;
    }
    float *x = malloc(n * sizeof *x);
    if (own(L, x, n * sizeof *x)) return -1;
    egm_to_f32(x, t->data, t->dtype, n);
    *out = x;
    return 0;
}

/* Counts a matrix's bytes under its type for `egmla info`. */
static void count_mat(ld *L, const egm_mat *w) {
    if (w->type >= 0 && w->type <= EGM_GGML_BF16) L->m->mat_bytes[w->type] += egm_mat_bytes(w);
}

/* A projection matrix [d0, d1] in its stored precision: GGUF tensors and
 * 16-bit safetensors as mapped, F32 as mapped when aligned; synthetic
 * weights (and anything else) as fp32. */
static int fetch_mat(ld *L, const char *name, int64_t d0, int64_t d1, egm_mat *out) {
    const float *f;
    if (L->gg) {
        const egm_gguf_tensor *g;
        if (find_gguf(L, name, 2, d0, d1, &g)) return -1;
        if (g->type != EGM_GGML_F32 || (uintptr_t)g->data % 4 == 0) {
            *out = egm_mat_of(g->type, g->data, (int)d0, (int)d1);
            count_mat(L, out);
            return 0;
        }
    } else if (!L->random) {
        const egm_tensor *t;
        if (find(L, name, 2, d0, d1, &t)) return -1;
        int ty = t->dtype == EGM_DT_BF16 ? EGM_GGML_BF16 : t->dtype == EGM_DT_F16 ? EGM_GGML_F16 : -1;
        if (ty >= 0 && (uintptr_t)t->data % 2 == 0) {
            *out = egm_mat_of(ty, t->data, (int)d0, (int)d1);
            count_mat(L, out);
            return 0;
        }
    }
    if (fetch(L, name, 2, d0, d1, INIT_LINEAR, &f)) return -1;
    *out = egm_mat_f32(f, (int)d0, (int)d1);
    count_mat(L, out);
    return 0;
}

/* eg_embed stays a tensor in its stored dtype (read by row). */
static int fetch_table(ld *L, const char *name, int64_t V, int64_t de, const egm_tensor **out) {
    if (!L->random && !L->gg) return find(L, name, 2, V, de, out);
    /* synthetic or GGUF: an owned fp32 table */
    egm_tensor *t = calloc(1, sizeof *t);
    if (own(L, t, 0)) return -1;
    const float *x;
    if (fetch(L, name, 2, V, de, INIT_LINEAR, &x)) return -1;
    char *nm = strdup(name);
    if (own(L, nm, 0)) return -1;
    t->name = nm;
    t->dtype = EGM_DT_F32;
    t->ndim = 2;
    t->shape[0] = V;
    t->shape[1] = de;
    t->data = (const uint8_t *)x;
    t->nbytes = (size_t)V * (size_t)de * sizeof(float);
    t->file = origin(L);
    *out = t;
    return 0;
}

static int present(ld *L, const char *name) {
    if (L->gg) return egm_gguf_tensor_get(L->gg, gguf_name(L, name)) != NULL;
    return !L->random && egm_ckpt_get(L->m->ck, name) != NULL;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* Why a tensor we do not use is there, when we can tell. */
static const char *leftover_hint(const egm_config *c, const char *name) {
    if (ends_with(name, "eg_norm.bias") && c->eg_norm_rms)
        return " (eg_norm is \"rmsnorm\", which has no bias)";
    if (c->arch != EGM_LLAMA && !c->q_lora_rank &&
        (ends_with(name, "q_a_proj.weight") || ends_with(name, "q_b_proj.weight") ||
         ends_with(name, "q_a_layernorm.weight")))
        return " (config.json has q_lora_rank null)";
    if (c->arch != EGM_LLAMA && c->q_lora_rank && ends_with(name, "self_attn.q_proj.weight"))
        return " (config.json sets q_lora_rank, so q_a_proj/q_b_proj are used)";
    if (c->arch == EGM_EGMLA && ends_with(name, "kv_a_layernorm.weight"))
        return " (egmla normalises the latent with eg_norm, not kv_a_layernorm)";
    if (ends_with(name, ".bias")) return " (biases are not supported)";
    return "";
}

/* Every checkpoint tensor under "model.layers.<l>." must have been used.
 * Names are sorted, so the layer's tensors are one contiguous run. */
static int check_leftovers_gguf(ld *L, int l) {
    char prefix[48];
    int plen = snprintf(prefix, sizeof prefix, "blk.%d.", l);
    for (int i = 0; i < egm_gguf_tensor_count(L->gg); i++) {
        const egm_gguf_tensor *t = egm_gguf_tensor_at(L->gg, i);
        if (strncmp(t->name, prefix, (size_t)plen)) continue;
        int used = 0;
        for (int j = 0; j < L->n_used && !used; j++) used = !strcmp(L->used[j], t->name);
        if (!used)
            return egm_fail(L->e, "%s: tensor \"%s\" is not used by a %s model%s", origin(L),
                            t->name, L->m->cfg.model_type,
                            ends_with(t->name, ".bias") ? " (biases are not supported)" : "");
    }
    return 0;
}

/* Outside the layers a GGUF llama holds only the embeddings, the final norm
 * and output; anything else (rope_freqs for Llama 3.1 scaling, a layer past
 * block_count) would change the math if we ignored it. */
static int check_globals_gguf(ld *L) {
    int nl = L->m->cfg.num_layers;
    for (int i = 0; i < egm_gguf_tensor_count(L->gg); i++) {
        const char *n = egm_gguf_tensor_at(L->gg, i)->name;
        int l, k = 0;
        if (sscanf(n, "blk.%d.%n", &l, &k) == 1 && k > 0) {
            if (l < 0 || l >= nl)
                return egm_fail(L->e, "%s: tensor \"%s\": layer %d is out of range (block_count "
                                "is %d)", origin(L), n, l, nl);
            continue;
        }
        if (strcmp(n, "token_embd.weight") && strcmp(n, "output_norm.weight") &&
            strcmp(n, "output.weight"))
            return egm_fail(L->e, "%s: tensor \"%s\" is not used by a %s model%s", origin(L), n,
                            L->m->cfg.model_type,
                            !strcmp(n, "rope_freqs.weight") ? " (RoPE scaling is not supported)"
                                                            : "");
    }
    return 0;
}

static int check_leftovers(ld *L, int l) {
    if (L->gg) return check_leftovers_gguf(L, l);
    const egm_ckpt *ck = L->m->ck;
    char prefix[48];
    int plen = snprintf(prefix, sizeof prefix, "model.layers.%d.", l);
    int lo = 0, hi = egm_ckpt_count(ck);
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (strcmp(egm_ckpt_at(ck, mid)->name, prefix) < 0) lo = mid + 1;
        else hi = mid;
    }
    for (int i = lo; i < egm_ckpt_count(ck); i++) {
        const egm_tensor *t = egm_ckpt_at(ck, i);
        if (strncmp(t->name, prefix, (size_t)plen)) break;
        if (ends_with(t->name, "rotary_emb.inv_freq")) continue; /* old HF exports */
        int used = 0;
        for (int j = 0; j < L->n_used && !used; j++) used = !strcmp(L->used[j], t->name);
        if (!used)
            return egm_fail(L->e, "%s: tensor \"%s\" is not used by model_type \"%s\" with "
                            "this config.json%s", t->file, t->name, L->m->cfg.model_type,
                            leftover_hint(&L->m->cfg, t->name));
    }
    return 0;
}

/* G[V, d_u] = eg_embed[V, d_e] @ eg_gate[d_u, d_e]^T, a few MB of rows at a
 * time so a bf16 table is never converted whole. */
static int gate_table(ld *L, egm_layer *y) {
    const egm_config *c = &L->m->cfg;
    const egm_tensor *t = y->eg_embed;
    size_t V = (size_t)c->vocab_size, de = (size_t)c->eg_embed_dim, du = (size_t)c->eg_latent_dim;
    float *G = malloc(V * du * sizeof *G);
    if (own(L, G, V * du * sizeof *G)) return -1;
    int direct = t->dtype == EGM_DT_F32 && (uintptr_t)t->data % 4 == 0;
    size_t rows = (4u << 20) / (de * sizeof(float));
    if (rows < 1) rows = 1;
    if (rows > V) rows = V;
    float *tmp = direct ? NULL : malloc(rows * de * sizeof *tmp);
    if (!direct && !tmp) return egm_fail(L->e, "%s: out of memory", origin(L));
    for (size_t r = 0; r < V; r += rows) {
        size_t nr = V - r < rows ? V - r : rows;
        const float *A;
        if (direct) {
            A = (const float *)(const void *)t->data + r * de;
        } else {
            egm_to_f32(tmp, t->data + r * de * egm_dtype_size(t->dtype), t->dtype, nr * de);
            A = tmp;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)du, (int)de, 1.0f, A,
                    (int)de, y->eg_gate, (int)de, 0.0f, G + r * du, (int)du);
    }
    free(tmp);
    y->eg_G = G;
    return 0;
}

/* has_up: -1 until the first EG-MLA layer decides, then 0/1 for all. */
static int load_layer(ld *L, int l, egm_layer *y, int *has_up) {
    const egm_config *c = &L->m->cfg;
    int64_t D = c->hidden_size, F = c->intermediate_size, H = c->num_heads;
    L->n_used = 0;
    if (fetch(L, lname(L, l, "input_layernorm.weight"), 1, D, 0, INIT_ONE, &y->attn_norm) ||
        fetch(L, lname(L, l, "post_attention_layernorm.weight"), 1, D, 0, INIT_ONE,
              &y->ffn_norm) ||
        fetch_mat(L, lname(L, l, "mlp.gate_proj.weight"), F, D, &y->w_gate) ||
        fetch_mat(L, lname(L, l, "mlp.up_proj.weight"), F, D, &y->w_up) ||
        fetch_mat(L, lname(L, l, "mlp.down_proj.weight"), D, F, &y->w_down))
        return -1;

    if (c->arch == EGM_LLAMA) {
        int64_t dh = c->head_dim, Hkv = c->num_kv_heads;
        if (fetch_mat(L, lname(L, l, "self_attn.q_proj.weight"), H * dh, D, &y->wq) ||
            fetch_mat(L, lname(L, l, "self_attn.k_proj.weight"), Hkv * dh, D, &y->wk) ||
            fetch_mat(L, lname(L, l, "self_attn.v_proj.weight"), Hkv * dh, D, &y->wv) ||
            fetch_mat(L, lname(L, l, "self_attn.o_proj.weight"), D, H * dh, &y->wo))
            return -1;
        return L->random ? 0 : check_leftovers(L, l);
    }

    int64_t dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim, dv = c->v_head_dim;
    int64_t dc = c->kv_lora_rank, rq = c->q_lora_rank;
    int64_t dz = egm_config_latent_dim(c); /* width of z: d_c or d_u */
    if (!rq) {
        if (fetch_mat(L, lname(L, l, "self_attn.q_proj.weight"), H * (dn + dr), D, &y->q_proj))
            return -1;
    } else if (fetch_mat(L, lname(L, l, "self_attn.q_a_proj.weight"), rq, D, &y->q_a) ||
               fetch(L, lname(L, l, "self_attn.q_a_layernorm.weight"), 1, rq, 0, INIT_ONE,
                     &y->q_a_norm) ||
               fetch_mat(L, lname(L, l, "self_attn.q_b_proj.weight"), H * (dn + dr), rq,
                         &y->q_b)) {
        return -1;
    }
    if (fetch_mat(L, lname(L, l, "self_attn.kv_a_proj_with_mqa.weight"), dc + dr, D, &y->kv_a) ||
        fetch(L, lname(L, l, "self_attn.kv_b_proj.weight"), 2, H * (dn + dv), dz, INIT_LINEAR,
              &y->kv_b) ||
        fetch_mat(L, lname(L, l, "self_attn.o_proj.weight"), D, H * dv, &y->o_proj))
        return -1;
    if (c->arch == EGM_MLA) {
        if (fetch(L, lname(L, l, "self_attn.kv_a_layernorm.weight"), 1, dc, 0, INIT_ONE,
                  &y->kv_a_norm))
            return -1;
        return L->random ? 0 : check_leftovers(L, l);
    }

    /* EG-MLA. eg_up_proj is optional only when d_u = d_c, and then it is in
     * every layer or in none. */
    int64_t du = c->eg_latent_dim, de = c->eg_embed_dim, V = c->vocab_size;
    const char *up = lname(L, l, "self_attn.eg_up_proj.weight");
    int has = L->random ? du != dc : (du != dc || present(L, up));
    if (*has_up >= 0 && has != *has_up)
        return egm_fail(L->e, "%s: tensor \"%s\" %s, but layer %d %s (eg_up_proj must be in "
                        "every layer or in none)", origin(L), up, has ? "present" : "missing",
                        L->m->lo, *has_up ? "has one" : "has none");
    *has_up = has;
    if (has && fetch(L, up, 2, du, dc, INIT_LINEAR, &y->eg_up)) return -1;
    if (fetch_table(L, lname(L, l, "self_attn.eg_embed.weight"), V, de, &y->eg_embed) ||
        fetch(L, lname(L, l, "self_attn.eg_gate_proj.weight"), 2, du, de, INIT_LINEAR,
              &y->eg_gate) ||
        fetch(L, lname(L, l, "self_attn.eg_norm.weight"), 1, du, 0, INIT_ONE, &y->eg_norm_w))
        return -1;
    if (!c->eg_norm_rms &&
        fetch(L, lname(L, l, "self_attn.eg_norm.bias"), 1, du, 0, INIT_ZERO, &y->eg_norm_b))
        return -1;
    if ((L->m->flags & EGM_LOAD_GATE_TABLE) && gate_table(L, y)) return -1;
    return L->random ? 0 : check_leftovers(L, l);
}

static int load_all(ld *L, int lo, int hi, int flags) {
    egm_model *m = L->m;
    const egm_config *c = &m->cfg;
    int nl = c->num_layers;
    if (hi == -1) hi = nl;
    if (lo < 0 || hi < lo || hi > nl)
        return egm_fail(L->e, "%s: layers [%d, %d): expected 0 <= lo <= hi <= %d", origin(L), lo,
                        hi, nl);
    m->lo = lo;
    m->hi = hi;
    m->flags = flags;
    m->layers = calloc((size_t)(hi - lo) + 1, sizeof *m->layers);
    if (!m->layers) return egm_fail(L->e, "%s: out of memory", origin(L));
    if (L->gg && check_globals_gguf(L)) return -1;

    int64_t V = c->vocab_size, D = c->hidden_size;
    egm_mat emb = {0};
    if ((flags & EGM_LOAD_EMBED) || ((flags & EGM_LOAD_HEAD) && c->tie_word_embeddings))
        if (fetch_mat(L, "model.embed_tokens.weight", V, D, &emb)) return -1;
    if (flags & EGM_LOAD_EMBED) m->embed = emb;
    if (flags & EGM_LOAD_HEAD) {
        if (fetch(L, "model.norm.weight", 1, D, 0, INIT_ONE, &m->norm)) return -1;
        if (c->tie_word_embeddings) m->lm_head = emb;
        else if (fetch_mat(L, "lm_head.weight", V, D, &m->lm_head)) return -1;
    }
    int has_up = -1;
    for (int l = lo; l < hi; l++)
        if (load_layer(L, l, &m->layers[l - lo], &has_up)) return -1;
    return 0;
}

int egm_model_from_ckpt(const egm_config *c, egm_ckpt *ck, int lo, int hi, int flags,
                        egm_model *m, egm_err *e) {
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    m->ck = ck;
    ld L = {.m = m, .e = e};
    if (load_all(&L, lo, hi, flags)) {
        egm_model_free(m);
        return -1;
    }
    return 0;
}

/* A GGUF file: config from its metadata; the mapping stays open, the
 * matrices point into it, small vectors are converted to fp32. */
static int load_gguf(const char *path, int lo, int hi, int flags, egm_model *m, egm_err *e) {
    egm_gguf *g;
    if (egm_gguf_open(path, &g, e)) return -1;
    m->gg = g;
    ld L = {.m = m, .e = e, .gg = g};
    int rc = egm_config_from_gguf(g, &m->cfg, e) || load_all(&L, lo, hi, flags);
    if (rc) egm_model_free(m);
    return rc ? -1 : 0;
}

int egm_model_load(const char *dir, int lo, int hi, int flags, egm_model *m, egm_err *e) {
    memset(m, 0, sizeof *m);
    if (egm_gguf_is_file(dir)) return load_gguf(dir, lo, hi, flags, m, e);
    char path[4096];
    egm_config c;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (egm_config_load(path, &c, e)) return -1;
    egm_ckpt *ck;
    if (egm_ckpt_open(dir, &ck, e)) return -1;
    return egm_model_from_ckpt(&c, ck, lo, hi, flags, m, e);
}

int egm_model_random(const egm_config *c, unsigned long long seed, int lo, int hi, int flags,
                     egm_model *m, egm_err *e) {
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    ld L = {.m = m, .e = e, .random = 1, .seed = seed};
    if (load_all(&L, lo, hi, flags)) {
        egm_model_free(m);
        return -1;
    }
    return 0;
}

/* One matrix to `type`, row by row (Q8_0 with llama.cpp's reference
 * quantiser, d = amax / 127). */
static int convert_mat(ld *L, egm_mat *w, int type) {
    if (!w->data || w->type != EGM_GGML_F32) return 0;
    size_t rb = egm_qtype_row_bytes(type, w->cols);
    if (!rb)
        return egm_fail(L->e, "%s: a matrix of %d columns cannot be %s (blocks of %d)",
                        origin(L), w->cols, egm_qtype_name(type), egm_qtype_block(type));
    uint8_t *q = malloc(rb * (size_t)w->rows);
    if (own(L, q, rb * (size_t)w->rows)) return -1;
    for (int r = 0; r < w->rows; r++) {
        const float *x = (const float *)w->data + (size_t)r * (size_t)w->cols;
        uint8_t *d = q + rb * (size_t)r;
        if (type == EGM_GGML_Q8_0) {
            egm_quantize_row_q8_0(x, d, w->cols);
        } else {
            for (int k = 0; k < w->cols; k++) {
                uint16_t h = type == EGM_GGML_BF16 ? egm_f32_to_bf16(x[k]) : egm_f32_to_f16(x[k]);
                memcpy(d + 2 * (size_t)k, &h, 2);
            }
        }
    }
    L->m->mat_bytes[EGM_GGML_F32] -= egm_mat_bytes(w);
    *w = egm_mat_of(type, q, w->rows, w->cols);
    count_mat(L, w);
    return 0;
}

int egm_model_convert(egm_model *m, int type, egm_err *e) {
    ld L = {.m = m, .e = e, .random = 1};
    int tied = m->lm_head.data && m->lm_head.data == m->embed.data;
    if (convert_mat(&L, &m->embed, type) || (!tied && convert_mat(&L, &m->lm_head, type)))
        return -1;
    if (tied) m->lm_head = m->embed;
    for (int l = 0; l < m->hi - m->lo; l++) {
        egm_layer *y = &m->layers[l];
        egm_mat *all[] = {&y->wq, &y->wk, &y->wv, &y->wo, &y->q_proj, &y->q_a, &y->q_b,
                          &y->kv_a, &y->o_proj, &y->w_gate, &y->w_up, &y->w_down};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++)
            if (convert_mat(&L, all[i], type)) return -1;
    }
    return 0;
}

void egm_model_free(egm_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    egm_ckpt_close(m->ck);
    egm_gguf_close(m->gg);
    memset(m, 0, sizeof *m);
}

void egm_count_params(const egm_config *c, int has_eg_up, egm_param_count *p) {
    long long V = c->vocab_size, D = c->hidden_size, F = c->intermediate_size, H = c->num_heads,
              L = c->num_layers, attn = 0;
    memset(p, 0, sizeof *p);
    p->embed = V * D;
    p->lm_head = c->tie_word_embeddings ? 0 : V * D;
    p->ffn = L * 3 * F * D;
    p->norms = L * 2 * D + D; /* input/post-attention norms + final norm */
    if (c->arch == EGM_LLAMA) {
        long long dh = c->head_dim, Hkv = c->num_kv_heads;
        attn = 2 * H * dh * D + 2 * Hkv * dh * D;
    } else {
        long long dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim, dv = c->v_head_dim,
                  dc = c->kv_lora_rank, rq = c->q_lora_rank, dz = egm_config_latent_dim(c);
        attn = rq ? rq * D + rq + H * (dn + dr) * rq : H * (dn + dr) * D;
        attn += (dc + dr) * D + H * (dn + dv) * dz + D * H * dv;
        if (c->arch == EGM_MLA) {
            attn += dc; /* kv_a_layernorm */
        } else {
            long long du = c->eg_latent_dim, de = c->eg_embed_dim;
            attn += du * de + (has_eg_up ? du * dc : 0) + du * (c->eg_norm_rms ? 1 : 2);
            p->gate_table = L * V * de;
        }
    }
    p->attn = L * attn;
    p->total = p->embed + p->lm_head + p->attn + p->gate_table + p->ffn + p->norms;
}
