/* config.c - config.json -> egm_config, with every key checked (MODEL.md).
 *
 * Unknown extra keys are ignored (Hugging Face configs carry dozens), but a
 * key we know is refused when its value is of the wrong type, out of range,
 * or asks for something we do not implement (RoPE scaling, routed experts,
 * biases). Messages read:
 *     <path>: key "x": expected <what>, found <type> <value> */
#include "config.h"
#include "gguf.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *origin;
    json_t *root;
    egm_err *e;
} ctx;

static const char *type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

/* "expected <what>, found <type> <value>" (value clipped: it may be huge). */
static int bad(ctx *x, const char *key, const json_t *v, const char *what) {
    if (!v)
        return egm_fail(x->e, "%s: key \"%s\": expected %s, found nothing (key missing)",
                        x->origin, key, what);
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    char shown[64];
    snprintf(shown, sizeof shown, "%s", s ? s : "?");
    if (s && strlen(s) >= sizeof shown) strcpy(shown + sizeof shown - 4, "...");
    free(s);
    if (json_is_null(v))
        return egm_fail(x->e, "%s: key \"%s\": expected %s, found null", x->origin, key, what);
    return egm_fail(x->e, "%s: key \"%s\": expected %s, found %s %s", x->origin, key,
                    what, type_name(v), shown);
}

/* Integer key >= min. Missing: error if required, else *out = def. */
static int get_int(ctx *x, const char *key, int required, int def, int min, int *out) {
    json_t *v = json_object_get(x->root, key);
    char what[64];
    snprintf(what, sizeof what, min == 1 ? "a positive integer" : "an integer >= %d", min);
    if (!v) {
        if (required) return bad(x, key, v, what);
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > INT_MAX)
        return bad(x, key, v, what);
    *out = (int)json_integer_value(v);
    return 0;
}

/* Like get_int, but null is allowed and gives *out = 0. */
static int get_int_or_null(ctx *x, const char *key, int required, int *out) {
    json_t *v = json_object_get(x->root, key);
    if (v && json_is_null(v)) {
        *out = 0;
        return 0;
    }
    if (!v && !required) {
        *out = 0;
        return 0;
    }
    if (!v || !json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > INT_MAX)
        return bad(x, key, v, "a positive integer or null");
    *out = (int)json_integer_value(v);
    return 0;
}

/* Positive number (integer or real). */
static int get_pos(ctx *x, const char *key, int required, float def, float *out) {
    json_t *v = json_object_get(x->root, key);
    if (!v && !required) {
        *out = def;
        return 0;
    }
    if (!v || !json_is_number(v) || !(json_number_value(v) > 0))
        return bad(x, key, v, "a positive number");
    *out = (float)json_number_value(v);
    return 0;
}

static int get_bool(ctx *x, const char *key, int def, int *out) {
    json_t *v = json_object_get(x->root, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v)) return bad(x, key, v, "true or false");
    *out = json_is_true(v);
    return 0;
}

/* A token id: integer in [0, V). */
static int token_id(ctx *x, const char *key, const json_t *v, int V, int *out) {
    char what[64];
    snprintf(what, sizeof what, "a token id in [0, %d), a list of them, or null", V);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= V)
        return bad(x, key, v, what);
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_bos_eos(ctx *x, egm_config *c) {
    json_t *v = json_object_get(x->root, "bos_token_id");
    c->bos_token_id = -1;
    if (v && !json_is_null(v)) {
        /* a list of BOS ids is unusual; the first one is the one prepended */
        json_t *first = json_is_array(v) && json_array_size(v) > 0 ? json_array_get(v, 0) : v;
        if (json_is_array(v) && json_array_size(v) == 0)
            return bad(x, "bos_token_id", v, "a token id, a non-empty list of them, or null");
        if (token_id(x, "bos_token_id", first, c->vocab_size, &c->bos_token_id)) return -1;
    }
    v = json_object_get(x->root, "eos_token_id");
    c->n_eos = 0;
    if (!v || json_is_null(v)) return 0;
    if (json_is_array(v)) {
        size_t n = json_array_size(v);
        if (n > EGM_MAX_EOS) {
            char what[64];
            snprintf(what, sizeof what, "at most %d token ids", EGM_MAX_EOS);
            return bad(x, "eos_token_id", v, what);
        }
        for (size_t i = 0; i < n; i++)
            if (token_id(x, "eos_token_id", json_array_get(v, i), c->vocab_size,
                         &c->eos_token_ids[c->n_eos++]))
                return -1;
        return 0;
    }
    if (token_id(x, "eos_token_id", v, c->vocab_size, &c->eos_token_ids[0])) return -1;
    c->n_eos = 1;
    return 0;
}

/* RoPE scaling: rope_scaling (transformers 4) or rope_parameters
 * (transformers 5) may be there, but only with the default type. */
static int refuse_rope_scaling(ctx *x) {
    static const char *const where[][3] = {
        {"rope_scaling", "type", "rope_scaling.type"},
        {"rope_scaling", "rope_type", "rope_scaling.rope_type"},
        {"rope_parameters", "rope_type", "rope_parameters.rope_type"},
        {"rope_parameters", "type", "rope_parameters.type"},
    };
    for (int i = 0; i < 4; i++) {
        json_t *o = json_object_get(x->root, where[i][0]);
        if (!o || json_is_null(o)) continue;
        if (!json_is_object(o))
            return bad(x, where[i][0], o, "null or an object (RoPE scaling is not supported)");
        json_t *t = json_object_get(o, where[i][1]);
        if (t && !(json_is_string(t) && !strcmp(json_string_value(t), "default")))
            return bad(x, where[i][2], t, "\"default\" (RoPE scaling is not supported)");
    }
    return 0;
}

/* rope_theta at the top (transformers 4, DeepSeek), else in
 * rope_parameters (transformers 5 writes it there and nowhere else). */
static int get_rope_theta(ctx *x, float *out) {
    json_t *p = json_object_get(x->root, "rope_parameters");
    if (json_object_get(x->root, "rope_theta") || !json_is_object(p))
        return get_pos(x, "rope_theta", 1, 0, out);
    json_t *v = json_object_get(p, "rope_theta");
    if (!v || !json_is_number(v) || !(json_number_value(v) > 0))
        return bad(x, "rope_parameters.rope_theta", v, "a positive number");
    *out = (float)json_number_value(v);
    return 0;
}

/* Known keys that would change the math if set: refuse rather than ignore. */
static int refuse_unsupported(ctx *x, const egm_config *c) {
    if (refuse_rope_scaling(x)) return -1;
    json_t *v = json_object_get(x->root, "hidden_act");
    if (v && !(json_is_string(v) && !strcmp(json_string_value(v), "silu")))
        return bad(x, "hidden_act", v, "\"silu\"");
    const char *bias_keys[] = {"attention_bias", "mlp_bias"};
    for (int i = 0; i < 2; i++) {
        v = json_object_get(x->root, bias_keys[i]);
        if (v && !json_is_false(v)) return bad(x, bias_keys[i], v, "false (biases are not supported)");
    }

    /* Experts: HF DeepSeek-V2 puts an MoE FFN on layer l when
     * n_routed_experts is set, l >= first_k_dense_replace and
     * l % moe_layer_freq == 0. Any such layer means we cannot run it. */
    int first_dense, freq;
    v = json_object_get(x->root, "n_routed_experts");
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return bad(x, "n_routed_experts", v, "0 or null (routed experts are not supported)");
    if (json_integer_value(v) == 0) return 0;
    if (get_int(x, "first_k_dense_replace", 0, 0, 0, &first_dense)) return -1;
    if (get_int(x, "moe_layer_freq", 0, 1, 1, &freq)) return -1;
    for (int l = first_dense; l < c->num_layers; l++)
        if (l % freq == 0) {
            char what[128];
            snprintf(what, sizeof what,
                     "0 or null (routed experts are not supported; layer %d would use them)", l);
            return bad(x, "n_routed_experts", json_object_get(x->root, "n_routed_experts"), what);
        }
    return 0;
}

static int parse_root(ctx *x, egm_config *c) {
    memset(c, 0, sizeof *c);
    json_t *v = json_object_get(x->root, "model_type");
    const char *what = "\"llama\", \"deepseek_v2\" or \"egmla\"";
    if (!v || !json_is_string(v)) return bad(x, "model_type", v, what);
    const char *mt = json_string_value(v);
    if (!strcmp(mt, "llama")) c->arch = EGM_LLAMA;
    else if (!strcmp(mt, "deepseek_v2")) c->arch = EGM_MLA;
    else if (!strcmp(mt, "egmla")) c->arch = EGM_EGMLA;
    else return bad(x, "model_type", v, what);
    snprintf(c->model_type, sizeof c->model_type, "%s", mt);

    if (get_int(x, "vocab_size", 1, 0, 1, &c->vocab_size) ||
        get_int(x, "hidden_size", 1, 0, 1, &c->hidden_size) ||
        get_int(x, "intermediate_size", 1, 0, 1, &c->intermediate_size) ||
        get_int(x, "num_hidden_layers", 1, 0, 1, &c->num_layers) ||
        get_int(x, "num_attention_heads", 1, 0, 1, &c->num_heads) ||
        get_pos(x, "rms_norm_eps", 1, 0, &c->rms_norm_eps) ||
        get_rope_theta(x, &c->rope_theta) ||
        get_int(x, "max_position_embeddings", 1, 0, 1, &c->max_position_embeddings) ||
        get_bool(x, "tie_word_embeddings", 0, &c->tie_word_embeddings) ||
        get_bool(x, "rope_interleave", c->arch != EGM_LLAMA, &c->rope_interleave) ||
        get_bos_eos(x, c) || refuse_unsupported(x, c))
        return -1;

    int H = c->num_heads;
    if (c->arch == EGM_LLAMA) {
        if (get_int(x, "num_key_value_heads", 0, H, 1, &c->num_kv_heads)) return -1;
        if (H % c->num_kv_heads != 0) {
            char w[96];
            snprintf(w, sizeof w, "a divisor of num_attention_heads (%d)", H);
            return bad(x, "num_key_value_heads", json_object_get(x->root, "num_key_value_heads"), w);
        }
        json_t *hd = json_object_get(x->root, "head_dim");
        if (!hd && c->hidden_size % H != 0)
            return egm_fail(x->e, "%s: key \"head_dim\": expected it to be set, since "
                            "hidden_size (%d) is not divisible by num_attention_heads (%d)",
                            x->origin, c->hidden_size, H);
        if (get_int(x, "head_dim", 0, c->hidden_size / H, 1, &c->head_dim)) return -1;
        if (c->head_dim % 2)
            return egm_fail(x->e, "%s: key \"head_dim\": expected an even number (RoPE "
                            "rotates pairs), found %d%s", x->origin, c->head_dim,
                            hd ? "" : " (hidden_size / num_attention_heads)");
        return 0;
    }

    /* deepseek_v2 and egmla */
    if (get_int_or_null(x, "q_lora_rank", 1, &c->q_lora_rank) ||
        get_int(x, "kv_lora_rank", 1, 0, 1, &c->kv_lora_rank) ||
        get_int(x, "qk_nope_head_dim", 1, 0, 1, &c->qk_nope_head_dim) ||
        get_int(x, "qk_rope_head_dim", 1, 0, 1, &c->qk_rope_head_dim) ||
        get_int(x, "v_head_dim", 1, 0, 1, &c->v_head_dim))
        return -1;
    if (c->qk_rope_head_dim % 2)
        return bad(x, "qk_rope_head_dim", json_object_get(x->root, "qk_rope_head_dim"),
                   "an even number (RoPE rotates pairs)");
    if (c->arch == EGM_MLA) return 0;

    v = json_object_get(x->root, "eg_embed_dim");
    if (v && json_is_integer(v) && json_integer_value(v) == 0)
        return bad(x, "eg_embed_dim", v,
                   "a positive integer (eg_embed_dim 0 is plain MLA: use model_type \"deepseek_v2\")");
    if (get_int(x, "eg_embed_dim", 1, 0, 1, &c->eg_embed_dim) ||
        get_int(x, "eg_latent_dim", 0, c->kv_lora_rank, 1, &c->eg_latent_dim) ||
        get_pos(x, "eg_norm_eps", 0, 1e-5f, &c->eg_norm_eps))
        return -1;
    v = json_object_get(x->root, "eg_norm");
    if (v) {
        if (json_is_string(v) && !strcmp(json_string_value(v), "layernorm")) c->eg_norm_rms = 0;
        else if (json_is_string(v) && !strcmp(json_string_value(v), "rmsnorm")) c->eg_norm_rms = 1;
        else return bad(x, "eg_norm", v, "\"layernorm\" or \"rmsnorm\"");
    }
    return 0;
}

/* Each size is an int, and so is every width the engine derives from them
 * (H * head_dim, d_c + d_r, ...): refuse values whose products overflow
 * instead of letting them wrap (tests/regress/config/int-max-sizes.json). */
#define EGM_CONFIG_DIM_MAX (1 << 24)
static int check_widths(const char *origin, const egm_config *c, egm_err *e) {
    const long long H = c->num_heads;
    struct { const char *what; long long v; } w[] = {
        {"vocab_size", c->vocab_size},
        {"hidden_size", c->hidden_size},
        {"intermediate_size", c->intermediate_size},
        {"num_hidden_layers", c->num_layers},
        {"num_attention_heads * head_dim", H * c->head_dim},
        {"2 * num_key_value_heads * head_dim", 2LL * c->num_kv_heads * c->head_dim},
        {"q_lora_rank", c->q_lora_rank},
        {"kv_lora_rank + qk_rope_head_dim", (long long)c->kv_lora_rank + c->qk_rope_head_dim},
        {"num_attention_heads * (qk_nope_head_dim + qk_rope_head_dim)",
         H * ((long long)c->qk_nope_head_dim + c->qk_rope_head_dim)},
        {"num_attention_heads * (qk_nope_head_dim + v_head_dim)",
         H * ((long long)c->qk_nope_head_dim + c->v_head_dim)},
        {"eg_embed_dim", c->eg_embed_dim},
        {"eg_latent_dim", c->eg_latent_dim},
    };
    for (size_t i = 0; i < sizeof w / sizeof *w; i++)
        if (w[i].v > EGM_CONFIG_DIM_MAX)
            return egm_fail(e, "%s: %s is %lld, expected at most %d", origin, w[i].what,
                            w[i].v, EGM_CONFIG_DIM_MAX);
    return 0;
}

int egm_config_parse(const char *json, size_t len, const char *origin, egm_config *c,
                     egm_err *e) {
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return egm_fail(e, "%s: line %d column %d: invalid JSON: %s", origin, je.line,
                        je.column, je.text);
    ctx x = {origin, root, e};
    int rc;
    if (!json_is_object(root))
        rc = egm_fail(e, "%s: expected a JSON object at the top, found %s", origin,
                      type_name(root));
    else
        rc = parse_root(&x, c) || check_widths(origin, c, e) ? -1 : 0;
    json_decref(root);
    return rc;
}

int egm_config_load(const char *path, egm_config *c, egm_err *e) {
    FILE *f = fopen(path, "rb");
    if (!f) return egm_fail(e, "%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0, n;
    char chunk[65536];
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (len + n > cap) {
            cap = (len + n) * 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return egm_fail(e, "%s: out of memory", path);
            }
            buf = nb;
        }
        memcpy(buf + len, chunk, n);
        len += n;
    }
    int rerr = ferror(f) ? errno : 0;
    fclose(f);
    if (rerr) {
        free(buf);
        return egm_fail(e, "%s: read error: %s", path, strerror(rerr));
    }
    int rc = egm_config_parse(buf ? buf : "", len, path, c, e);
    free(buf);
    return rc;
}

int egm_config_kv_elems(const egm_config *c) {
    if (c->arch == EGM_LLAMA) return 2 * c->num_kv_heads * c->head_dim;
    return c->kv_lora_rank + c->qk_rope_head_dim;
}

int egm_config_latent_dim(const egm_config *c) {
    if (c->arch == EGM_EGMLA) return c->eg_latent_dim;
    if (c->arch == EGM_MLA) return c->kv_lora_rank;
    return 0;
}

int egm_config_is_eos(const egm_config *c, int token) {
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_token_ids[i] == token) return 1;
    return 0;
}

/* ---- GGUF metadata (declared in gguf.h) --------------------------------- */

/* llama.cpp ends generation on these control tokens besides eos/eot/eom
 * (llama-vocab.cpp picks them by text); we do the same, so a greedy run
 * stops where llama.cpp's does. */
static const char *const EOG_TEXTS[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
    "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>",
};

int egm_gguf_is_eog_text(const char *s, size_t len) {
    for (size_t k = 0; k < sizeof EOG_TEXTS / sizeof *EOG_TEXTS; k++)
        if (len == strlen(EOG_TEXTS[k]) && !memcmp(s, EOG_TEXTS[k], len)) return 1;
    return 0;
}

static void add_eos(egm_config *c, long long id) {
    if (id < 0 || id >= c->vocab_size || c->n_eos >= EGM_MAX_EOS) return;
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_token_ids[i] == id) return;
    c->eos_token_ids[c->n_eos++] = (int)id;
}

/* "<arch>.<name>": GGUF keys are prefixed with general.architecture. */
typedef struct {
    const egm_gguf *g;
    const char *arch;
    char k[128];
    egm_err *e;
} gkeys;

static const char *K(gkeys *x, const char *name) {
    snprintf(x->k, sizeof x->k, "%s.%s", x->arch, name);
    return x->k;
}

static int gint(gkeys *x, const char *name, int required, long long def, long long min,
                long long max, long long *out) {
    return egm_gguf_get_int(x->g, K(x, name), required, def, min, max, out, x->e);
}

/* The vocabulary size: tokenizer.ggml.tokens, and <arch>.vocab_size when
 * both are there must agree (a file without a tokenizer gives only the
 * latter). */
static int gguf_vocab(gkeys *x, long long *V) {
    const egm_gguf_kv *tokens;
    const char *path = egm_gguf_path(x->g);
    if (egm_gguf_get_arr(x->g, "tokenizer.ggml.tokens", 0, EGM_GGUF_STRING, &tokens, x->e))
        return -1;
    if (!tokens) {
        if (!egm_gguf_kv_get(x->g, K(x, "vocab_size")))
            return egm_fail(x->e, "%s: key \"tokenizer.ggml.tokens\": expected the vocabulary, "
                            "found nothing (and no %s either)", path, K(x, "vocab_size"));
        return gint(x, "vocab_size", 1, 0, 1, INT_MAX, V);
    }
    if (tokens->n < 1 || tokens->n > INT_MAX)
        return egm_fail(x->e, "%s: key \"tokenizer.ggml.tokens\": expected 1 to %d tokens, found "
                        "%llu", path, INT_MAX, (unsigned long long)tokens->n);
    if (gint(x, "vocab_size", 0, (long long)tokens->n, (long long)tokens->n,
             (long long)tokens->n, V))
        return egm_wrap(x->e, "the vocabulary size must match tokenizer.ggml.tokens");
    return 0;
}

/* Keys every architecture has, and the refusals that apply to all. */
static int gguf_common(gkeys *x, egm_config *c) {
    const char *path = egm_gguf_path(x->g);
    long long ctx, D, L, F, H, V;
    double theta, eps;
    if (gguf_vocab(x, &V) ||
        gint(x, "context_length", 1, 0, 1, INT_MAX, &ctx) ||
        gint(x, "embedding_length", 1, 0, 1, INT_MAX, &D) ||
        gint(x, "block_count", 1, 0, 1, INT_MAX, &L) ||
        gint(x, "feed_forward_length", 1, 0, 1, INT_MAX, &F) ||
        gint(x, "attention.head_count", 1, 0, 1, INT_MAX, &H) ||
        egm_gguf_get_float(x->g, K(x, "rope.freq_base"), 0, 10000.0, &theta, x->e) ||
        egm_gguf_get_float(x->g, K(x, "attention.layer_norm_rms_epsilon"), 1, 0, &eps, x->e))
        return -1;
    if (!(theta > 0) || !(eps > 0))
        return egm_fail(x->e, "%s: key \"%s\": expected a positive number, found %g", path,
                        theta > 0 ? K(x, "attention.layer_norm_rms_epsilon")
                                  : K(x, "rope.freq_base"), theta > 0 ? eps : theta);
    char *scaling = NULL;
    if (egm_gguf_get_str(x->g, K(x, "rope.scaling.type"), 0, &scaling, x->e)) return -1;
    if (scaling && strcmp(scaling, "none")) {
        egm_fail(x->e, "%s: key \"%s\": expected \"none\" (RoPE scaling is not supported), "
                 "found \"%s\"", path, x->k, scaling);
        free(scaling);
        return -1;
    }
    free(scaling);
    /* routed experts: a deepseek2 file is dense when every layer is one of
     * the leading dense blocks */
    long long experts, dense;
    if (gint(x, "expert_count", 0, 0, 0, INT_MAX, &experts) ||
        gint(x, "leading_dense_block_count", 0, 0, 0, INT_MAX, &dense))
        return -1;
    if (experts > 0 && dense < L)
        return egm_fail(x->e, "%s: key \"%s\": routed experts are not supported (%lld experts, "
                        "layers %lld.. would use them; %s.leading_dense_block_count is %lld)",
                        path, K(x, "expert_count"), experts, dense, x->arch, dense);
    c->vocab_size = (int)V;
    c->hidden_size = (int)D;
    c->intermediate_size = (int)F;
    c->num_layers = (int)L;
    c->num_heads = (int)H;
    c->rms_norm_eps = (float)eps;
    c->rope_theta = (float)theta;
    c->max_position_embeddings = (int)ctx;
    c->tie_word_embeddings = egm_gguf_tensor_get(x->g, "output.weight") == NULL;
    return 0;
}

static int gguf_llama(gkeys *x, egm_config *c) {
    const char *path = egm_gguf_path(x->g);
    long long H = c->num_heads, D = c->hidden_size, Hkv, dh, dv, rot;
    if (gint(x, "attention.head_count_kv", 0, H, 1, H, &Hkv)) return -1;
    if (H % Hkv)
        return egm_fail(x->e, "%s: key \"llama.attention.head_count_kv\": expected a divisor of "
                        "llama.attention.head_count (%lld), found %lld", path, H, Hkv);
    if (D % H && !egm_gguf_kv_get(x->g, "llama.attention.key_length"))
        return egm_fail(x->e, "%s: key \"llama.attention.key_length\": expected it to be set, "
                        "since llama.embedding_length (%lld) is not divisible by "
                        "llama.attention.head_count (%lld)", path, D, H);
    if (gint(x, "attention.key_length", 0, D / H, 2, INT_MAX, &dh) ||
        gint(x, "attention.value_length", 0, dh, dh, dh, &dv) ||
        gint(x, "rope.dimension_count", 0, dh, dh, dh, &rot))
        return egm_wrap(x->e, "partial RoPE and value heads of another width are not supported");
    if (dh % 2)
        return egm_fail(x->e, "%s: key \"llama.attention.key_length\": expected an even head "
                        "size (RoPE rotates pairs), found %lld", path, dh);
    c->num_kv_heads = (int)Hkv;
    c->head_dim = (int)dh;
    return 0;
}

/* deepseek2 (llama.cpp's MLA) and egmla. Newer llama.cpp files describe
 * the absorbed form (head_count_kv 1, key_length d_c + d_r) and put the
 * per-head sizes in key_length_mla / value_length_mla; older ones have the
 * per-head sizes in key_length / value_length. */
static int gguf_mla(gkeys *x, egm_config *c) {
    const char *path = egm_gguf_path(x->g);
    int mla = egm_gguf_kv_get(x->g, K(x, "attention.key_length_mla")) != NULL;
    long long rq, dc, dk, dv, dr;
    if (gint(x, "attention.q_lora_rank", 0, 0, 0, INT_MAX, &rq) ||
        gint(x, "attention.kv_lora_rank", 1, 0, 1, INT_MAX, &dc) ||
        gint(x, "rope.dimension_count", 1, 0, 2, INT_MAX, &dr) ||
        gint(x, mla ? "attention.key_length_mla" : "attention.key_length", 1, 0, dr + 1,
             INT_MAX, &dk) ||
        gint(x, mla ? "attention.value_length_mla" : "attention.value_length", 1, 0, 1,
             INT_MAX, &dv))
        return -1;
    if (dr % 2)
        return egm_fail(x->e, "%s: key \"%s\": expected an even number (RoPE rotates pairs), "
                        "found %lld", path, K(x, "rope.dimension_count"), dr);
    c->q_lora_rank = (int)rq;
    c->kv_lora_rank = (int)dc;
    c->qk_rope_head_dim = (int)dr;
    c->qk_nope_head_dim = (int)(dk - dr);
    c->v_head_dim = (int)dv;
    /* llama.cpp runs deepseek2 with adjacent-pair RoPE on the stored weights
     * (the converter does not permute: HF's DeepSeek-V2 de-interleaves) */
    c->rope_interleave = 1;
    if (c->arch == EGM_MLA) return 0;

    long long de, du;
    double neps;
    char *norm = NULL;
    if (gint(x, "eg_embed_dim", 1, 0, 1, INT_MAX, &de) ||
        gint(x, "eg_latent_dim", 0, dc, 1, INT_MAX, &du) ||
        egm_gguf_get_float(x->g, K(x, "eg_norm_eps"), 0, 1e-5, &neps, x->e) ||
        egm_gguf_get_bool(x->g, K(x, "rope_interleave"), 0, 1, &c->rope_interleave, x->e) ||
        egm_gguf_get_str(x->g, K(x, "eg_norm"), 0, &norm, x->e))
        return -1;
    c->eg_embed_dim = (int)de;
    c->eg_latent_dim = (int)du;
    c->eg_norm_eps = (float)neps;
    c->eg_norm_rms = norm && !strcmp(norm, "rmsnorm");
    int ok = !norm || c->eg_norm_rms || !strcmp(norm, "layernorm");
    if (!ok)
        egm_fail(x->e, "%s: key \"egmla.eg_norm\": expected \"layernorm\" or \"rmsnorm\", found "
                 "\"%s\"", path, norm);
    free(norm);
    if (!ok) return -1;
    if (!(neps > 0))
        return egm_fail(x->e, "%s: key \"egmla.eg_norm_eps\": expected a positive number, found "
                        "%g", path, neps);
    return 0;
}

/* End-of-generation and BOS ids, as llama.cpp picks them. */
static int gguf_special_ids(const egm_gguf *g, egm_config *c, egm_err *e) {
    long long V = c->vocab_size, bos, eos, eot, eom;
    if (egm_gguf_get_int(g, "tokenizer.ggml.bos_token_id", 0, -1, -1, V - 1, &bos, e) ||
        egm_gguf_get_int(g, "tokenizer.ggml.eos_token_id", 0, -1, -1, V - 1, &eos, e) ||
        egm_gguf_get_int(g, "tokenizer.ggml.eot_token_id", 0, -1, -1, V - 1, &eot, e) ||
        egm_gguf_get_int(g, "tokenizer.ggml.eom_token_id", 0, -1, -1, V - 1, &eom, e))
        return -1;
    c->bos_token_id = (int)bos;
    add_eos(c, eos);
    add_eos(c, eot);
    add_eos(c, eom);
    const egm_gguf_kv *tokens = egm_gguf_kv_get(g, "tokenizer.ggml.tokens");
    if (!tokens) return 0;
    /* whatever their token type (llama.cpp makes them control tokens) */
    for (uint64_t i = 0; i < tokens->n; i++)
        if (egm_gguf_is_eog_text(tokens->str[i], tokens->len[i])) add_eos(c, (long long)i);
    return 0;
}

int egm_config_from_gguf(const egm_gguf *g, egm_config *c, egm_err *e) {
    memset(c, 0, sizeof *c);
    char *arch = NULL;
    if (egm_gguf_get_str(g, "general.architecture", 1, &arch, e)) return -1;
    static const struct { const char *gguf, *model_type; egm_arch arch; } ARCHS[] = {
        {"llama", "llama", EGM_LLAMA},
        {"deepseek2", "deepseek_v2", EGM_MLA},
        {"egmla", "egmla", EGM_EGMLA},
    };
    int k = -1;
    for (int i = 0; i < 3; i++)
        if (!strcmp(arch, ARCHS[i].gguf)) k = i;
    if (k < 0) {
        egm_fail(e, "%s: key \"general.architecture\": expected \"llama\", \"deepseek2\" or "
                 "\"egmla\", found \"%s\"", egm_gguf_path(g), arch);
        free(arch);
        return -1;
    }
    free(arch);
    c->arch = ARCHS[k].arch;
    snprintf(c->model_type, sizeof c->model_type, "%s", ARCHS[k].model_type);
    gkeys x = {g, ARCHS[k].gguf, "", e};
    if (gguf_common(&x, c)) return -1;
    /* convert_hf_to_gguf.py permutes llama's q/k rows so that llama.cpp's
     * "normal" RoPE (adjacent pairs) equals HF's rotate_half: pairs
     * (2i, 2i+1) here */
    c->rope_interleave = 1;
    if ((c->arch == EGM_LLAMA ? gguf_llama(&x, c) : gguf_mla(&x, c)) ||
        gguf_special_ids(g, c, e))
        return -1;
    return check_widths(egm_gguf_path(g), c, e);
}
