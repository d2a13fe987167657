/* test_weights.c - loading a model's tensors by MODEL.md name and shape.
 *
 * Each test writes a tiny model directory (config.json + safetensors built
 * here from the list of tensors MODEL.md prescribes), then loads it, or a
 * deliberately broken variant of it. Values are multiples of 1/8 in [-1, 1],
 * exact in F32, BF16 and F16, so every dtype must round-trip exactly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/weights.h"

/* ---- a tiny model, as a list of tensors ---- */

enum { V = 32, D = 16, FF = 24, H = 2, NL = 3 };

typedef struct {
    char name[128];
    int ndim;
    int64_t shape[2];
    egm_dtype dt;
} tt;

typedef struct {
    tt t[128];
    int n;
} tlist;

typedef struct {
    const char *type;    /* llama, deepseek_v2, egmla */
    int q_lora;          /* 0: null */
    int du;              /* egmla eg_latent_dim (0: default d_c) */
    int eg_up;           /* write eg_up_proj */
    int rms;             /* eg_norm rmsnorm */
    int tie;
} arch;

/* MLA sizes */
enum { DN = 4, DR = 4, DV = 6, DC = 8, DE = 6 };
/* llama sizes */
enum { HKV = 1, DH = 8 };

static float val(const char *name, size_t i) {
    unsigned h = 2166136261u;
    for (const char *p = name; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
    return (float)((int)((i * 7 + h) % 17) - 8) / 8.0f;
}

static void add(tlist *tl, const char *name, int64_t d0, int64_t d1) {
    tt *t = &tl->t[tl->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->dt = EGM_DT_F32;
}

static void addl(tlist *tl, int l, const char *suffix, int64_t d0, int64_t d1) {
    char n[128];
    snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix);
    add(tl, n, d0, d1);
}

static int du_of(const arch *a) { return a->du ? a->du : DC; }

/* Every tensor MODEL.md lists for this architecture, layers [lo, hi). */
static void model_tensors(tlist *tl, const arch *a, int lo, int hi, int embed_head) {
    tl->n = 0;
    if (embed_head) {
        add(tl, "model.embed_tokens.weight", V, D);
        add(tl, "model.norm.weight", D, 0);
        if (!a->tie) add(tl, "lm_head.weight", V, D);
    }
    for (int l = lo; l < hi; l++) {
        addl(tl, l, "input_layernorm.weight", D, 0);
        addl(tl, l, "post_attention_layernorm.weight", D, 0);
        addl(tl, l, "mlp.gate_proj.weight", FF, D);
        addl(tl, l, "mlp.up_proj.weight", FF, D);
        addl(tl, l, "mlp.down_proj.weight", D, FF);
        if (!strcmp(a->type, "llama")) {
            addl(tl, l, "self_attn.q_proj.weight", H * DH, D);
            addl(tl, l, "self_attn.k_proj.weight", HKV * DH, D);
            addl(tl, l, "self_attn.v_proj.weight", HKV * DH, D);
            addl(tl, l, "self_attn.o_proj.weight", D, H * DH);
            continue;
        }
        int eg = !strcmp(a->type, "egmla"), dz = eg ? du_of(a) : DC;
        if (a->q_lora) {
            addl(tl, l, "self_attn.q_a_proj.weight", a->q_lora, D);
            addl(tl, l, "self_attn.q_a_layernorm.weight", a->q_lora, 0);
            addl(tl, l, "self_attn.q_b_proj.weight", H * (DN + DR), a->q_lora);
        } else {
            addl(tl, l, "self_attn.q_proj.weight", H * (DN + DR), D);
        }
        addl(tl, l, "self_attn.kv_a_proj_with_mqa.weight", DC + DR, D);
        addl(tl, l, "self_attn.kv_b_proj.weight", H * (DN + DV), dz);
        addl(tl, l, "self_attn.o_proj.weight", D, H * DV);
        if (!eg) {
            addl(tl, l, "self_attn.kv_a_layernorm.weight", DC, 0);
            continue;
        }
        addl(tl, l, "self_attn.eg_embed.weight", V, DE);
        addl(tl, l, "self_attn.eg_gate_proj.weight", dz, DE);
        if (a->eg_up) addl(tl, l, "self_attn.eg_up_proj.weight", dz, DC);
        addl(tl, l, "self_attn.eg_norm.weight", dz, 0);
        if (!a->rms) addl(tl, l, "self_attn.eg_norm.bias", dz, 0);
    }
}

static tt *tl_find(tlist *tl, const char *name) {
    for (int i = 0; i < tl->n; i++)
        if (!strcmp(tl->t[i].name, name)) return &tl->t[i];
    return NULL;
}

static void tl_remove(tlist *tl, const char *name) {
    tt *t = tl_find(tl, name);
    assert_non_null(t);
    *t = tl->t[--tl->n];
}

static void set_dtype(tlist *tl, egm_dtype dt) {
    for (int i = 0; i < tl->n; i++) tl->t[i].dt = dt;
}

static size_t numel(const tt *t) { return (size_t)t->shape[0] * (size_t)(t->ndim == 2 ? t->shape[1] : 1); }

/* ---- writing a model directory ---- */

static char dir[64];

static void path_of(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

static uint16_t to_half(float f) { /* exact for our values: multiples of 1/8 in [-1, 1] */
    if (f == 0) return 0;
    uint16_t s = f < 0 ? 0x8000 : 0;
    float a = fabsf(f);
    int e;
    float m = frexpf(a, &e); /* a = m * 2^e, m in [0.5, 1) */
    return s | (uint16_t)((e - 1 + 15) << 10) | (uint16_t)((m * 2 - 1) * 1024);
}

static void encode(uint8_t *dst, const tt *t) {
    size_t n = numel(t);
    for (size_t i = 0; i < n; i++) {
        float f = val(t->name, i);
        uint32_t b;
        memcpy(&b, &f, 4);
        uint16_t h = t->dt == EGM_DT_BF16 ? (uint16_t)(b >> 16) : to_half(f);
        if (t->dt == EGM_DT_F32) memcpy(dst + 4 * i, &f, 4);
        else memcpy(dst + 2 * i, &h, 2);
    }
}

/* Writes tensors [from, to) of tl to dir/name; the data section starts at
 * 8 + N with (8 + N) % 8 == align_mod (0: aligned, 2: every F32 unaligned). */
static void write_st(const char *name, const tlist *tl, int from, int to, int align_mod) {
    static char hdr[65536];
    int k = snprintf(hdr, sizeof hdr, "{");
    size_t off = 0;
    for (int i = from; i < to; i++) {
        const tt *t = &tl->t[i];
        size_t nb = numel(t) * egm_dtype_size(t->dt);
        k += snprintf(hdr + k, sizeof hdr - k,
                      "%s\"%s\": {\"dtype\": \"%s\", \"shape\": [%lld%s%.0lld], "
                      "\"data_offsets\": [%zu, %zu]}",
                      i > from ? ", " : "", t->name, egm_dtype_name(t->dt),
                      (long long)t->shape[0], t->ndim == 2 ? ", " : "",
                      t->ndim == 2 ? (long long)t->shape[1] : 0LL, off, off + nb);
        off += nb;
    }
    k += snprintf(hdr + k, sizeof hdr - k, "}");
    while ((8 + k) % 8 != align_mod) hdr[k++] = ' ';
    uint8_t *data = calloc(1, off + 1);
    off = 0;
    for (int i = from; i < to; i++) {
        encode(data + off, &tl->t[i]);
        off += numel(&tl->t[i]) * egm_dtype_size(tl->t[i].dt);
    }
    char p[256];
    path_of(p, sizeof p, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    uint64_t h = (uint64_t)k;
    for (int i = 0; i < 8; i++) fputc((int)(h >> (8 * i)) & 0xff, f);
    fwrite(hdr, 1, (size_t)k, f);
    fwrite(data, 1, off, f);
    fclose(f);
    free(data);
}

static void write_text(const char *name, const char *text) {
    char p[256];
    path_of(p, sizeof p, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void write_config(const arch *a, const char *extra) {
    char c[2048];
    int k = snprintf(c, sizeof c,
                     "{\"model_type\": \"%s\", \"vocab_size\": %d, \"hidden_size\": %d,"
                     " \"intermediate_size\": %d, \"num_hidden_layers\": %d,"
                     " \"num_attention_heads\": %d, \"rms_norm_eps\": 1e-6, \"rope_theta\": 10000,"
                     " \"max_position_embeddings\": 64, \"tie_word_embeddings\": %s",
                     a->type, V, D, FF, NL, H, a->tie ? "true" : "false");
    if (!strcmp(a->type, "llama"))
        k += snprintf(c + k, sizeof c - k, ", \"num_key_value_heads\": %d, \"head_dim\": %d", HKV, DH);
    else {
        k += snprintf(c + k, sizeof c - k, ", \"kv_lora_rank\": %d, \"qk_nope_head_dim\": %d,"
                      " \"qk_rope_head_dim\": %d, \"v_head_dim\": %d", DC, DN, DR, DV);
        if (a->q_lora) k += snprintf(c + k, sizeof c - k, ", \"q_lora_rank\": %d", a->q_lora);
        else k += snprintf(c + k, sizeof c - k, ", \"q_lora_rank\": null");
    }
    if (!strcmp(a->type, "egmla")) {
        k += snprintf(c + k, sizeof c - k, ", \"eg_embed_dim\": %d, \"eg_norm\": \"%s\"", DE,
                      a->rms ? "rmsnorm" : "layernorm");
        if (a->du) k += snprintf(c + k, sizeof c - k, ", \"eg_latent_dim\": %d", a->du);
    }
    snprintf(c + k, sizeof c - k, "%s}", extra ? extra : "");
    write_text("config.json", c);
}

/* config.json + model.safetensors for a and tl. */
static void write_model(const arch *a, const tlist *tl, int align_mod) {
    write_config(a, NULL);
    write_st("model.safetensors", tl, 0, tl->n, align_mod);
}

static int setup(void **st) {
    (void)st;
    snprintf(dir, sizeof dir, "/tmp/egm_wXXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **st) {
    (void)st;
    const char *names[] = {"config.json", "model.safetensors", "model.safetensors.index.json",
                           "a.safetensors", "b.safetensors"};
    char p[256];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        path_of(p, sizeof p, names[i]);
        unlink(p);
    }
    return rmdir(dir);
}

/* ---- checks ---- */

/* x holds exactly the values the writer put into tensor `name`. */
static void same_values(const float *x, const char *name, size_t n) {
    assert_non_null(x);
    for (size_t i = 0; i < n; i++)
        if (x[i] != val(name, i)) {
            print_error("%s[%zu] = %g, want %g\n", name, i, x[i], val(name, i));
            fail();
        }
}

static void lname(char *b, int l, const char *s) { snprintf(b, 128, "model.layers.%d.%s", l, s); }

static void load_fails(int lo, int hi, int flags, const char *w1, const char *w2) {
    egm_model m;
    egm_err e = {{0}};
    int rc = egm_model_load(dir, lo, hi, flags, &m, &e);
    if (rc != -1 || !strstr(e.msg, w1) || (w2 && !strstr(e.msg, w2)))
        print_error("rc %d msg \"%s\" (want \"%s\", \"%s\")\n", rc, e.msg, w1, w2 ? w2 : "");
    assert_int_equal(rc, -1);
    assert_non_null(strstr(e.msg, w1));
    if (w2) assert_non_null(strstr(e.msg, w2));
    assert_null(m.layers); /* freed and cleared */
    assert_null(m.ck);
}

/* A matrix dequantised to fp32 has exactly the writer's values. */
static void same_mat(const egm_mat *w, const char *name, size_t n) {
    assert_non_null(w->data);
    assert_int_equal((size_t)w->rows * (size_t)w->cols, n);
    float *x = malloc(n * sizeof *x);
    for (int r = 0; r < w->rows; r++) egm_mat_row(w, r, x + (size_t)r * (size_t)w->cols);
    same_values(x, name, n);
    free(x);
}

/* ---- tests ---- */

static void test_llama_f32_mapped(void **st) {
    (void)st;
    arch a = {.type = "llama"};
    tlist tl;
    model_tensors(&tl, &a, 0, NL, 1);
    write_model(&a, &tl, 0);
    egm_model m;
    egm_err e;
    assert_int_equal(egm_model_load(dir, 0, -1, EGM_LOAD_EMBED | EGM_LOAD_HEAD, &m, &e), 0);
    assert_int_equal(m.lo, 0);
    assert_int_equal(m.hi, NL);
    assert_int_equal(m.cfg.arch, EGM_LLAMA);
    assert_int_equal(m.owned_bytes, 0); /* nothing converted */
    char n[128];
    lname(n, 2, "self_attn.k_proj.weight");
    /* aligned F32 is used straight from the mapping */
    assert_ptr_equal(m.layers[2].wk.data, (const float *)(const void *)egm_ckpt_get(m.ck, n)->data);
    same_mat(&m.layers[2].wk, n, HKV * DH * D);
    lname(n, 1, "mlp.down_proj.weight");
    same_mat(&m.layers[1].w_down, n, D * FF);
    same_mat(&m.embed, "model.embed_tokens.weight", V * D);
    same_mat(&m.lm_head, "lm_head.weight", V * D);
    same_values(m.norm, "model.norm.weight", D);
    assert_null(m.layers[0].kv_a.data);
    egm_model_free(&m);
    assert_null(m.layers);
}

static void test_llama_f32_unaligned(void **st) {
    (void)st;
    arch a = {.type = "llama"};
    tlist tl;
    model_tensors(&tl, &a, 0, NL, 1);
    write_model(&a, &tl, 2);
    egm_model m;
    egm_err e;
    assert_int_equal(egm_model_load(dir, 0, -1, EGM_LOAD_HEAD, &m, &e), 0);
    char n[128];
    lname(n, 0, "self_attn.q_proj.weight");
    const egm_tensor *t = egm_ckpt_get(m.ck, n);
    assert_int_equal((uintptr_t)t->data % 4, 2);
    assert_ptr_not_equal(m.layers[0].wq.data, (const float *)(const void *)t->data);
    assert_int_equal((uintptr_t)m.layers[0].wq.data % 4, 0);
    same_mat(&m.layers[0].wq, n, H * DH * D);
    assert_null(m.embed.data); /* not asked for */
    same_mat(&m.lm_head, "lm_head.weight", V * D);
    assert_true(m.owned_bytes > 0);
    egm_model_free(&m);
}

static void test_mla_bf16(void **st) {
    (void)st;
    arch a = {.type = "deepseek_v2", .q_lora = 12, .tie = 1};
    tlist tl;
    model_tensors(&tl, &a, 0, NL, 1);
    set_dtype(&tl, EGM_DT_BF16);
    write_model(&a, &tl, 0);
    egm_model m;
    egm_err e;
    assert_int_equal(egm_model_load(dir, 0, -1, EGM_LOAD_EMBED | EGM_LOAD_HEAD, &m, &e), 0);
    char n[128];
    egm_layer *y = &m.layers[1];
    assert_null(y->q_proj.data);
    lname(n, 1, "self_attn.q_b_proj.weight");
    same_mat(&y->q_b, n, (size_t)H * (DN + DR) * 12);
    lname(n, 1, "self_attn.kv_a_layernorm.weight");
    same_values(y->kv_a_norm, n, DC);
    lname(n, 1, "self_attn.kv_b_proj.weight");
    same_values(y->kv_b, n, (size_t)H * (DN + DV) * DC);
    assert_null(y->eg_embed);
    /* tied: the head is the embedding */
    assert_ptr_equal(m.lm_head.data, m.embed.data);
    same_mat(&m.embed, "model.embed_tokens.weight", V * D);
    egm_model_free(&m);

    /* only the head: the tied embedding is still loaded for it */
    assert_int_equal(egm_model_load(dir, NL, NL, EGM_LOAD_HEAD, &m, &e), 0);
    assert_null(m.embed.data);
    same_mat(&m.lm_head, "model.embed_tokens.weight", V * D);
    egm_model_free(&m);
}

static void naive_gate(float *G, const char *embed_name, const float *gate, int du) {
    for (int v = 0; v < V; v++)
        for (int j = 0; j < du; j++) {
            double s = 0;
            for (int k = 0; k < DE; k++) s += val(embed_name, (size_t)v * DE + k) * gate[j * DE + k];
            G[v * du + j] = (float)s;
        }
}

static void test_egmla_f16_gate_table(void **st) {
    (void)st;
    arch a = {.type = "egmla", .du = 10, .eg_up = 1};
    tlist tl;
    model_tensors(&tl, &a, 0, NL, 1);
    set_dtype(&tl, EGM_DT_F16);
    write_model(&a, &tl, 0);
    egm_model m;
    egm_err e;
    assert_int_equal(egm_model_load(dir, 0, -1, EGM_LOAD_GATE_TABLE, &m, &e), 0);
    char n[128], en[128];
    for (int l = 0; l < NL; l++) {
        egm_layer *y = &m.layers[l];
        lname(n, l, "self_attn.eg_up_proj.weight");
        same_values(y->eg_up, n, 10 * DC);
        lname(n, l, "self_attn.eg_norm.bias");
        same_values(y->eg_norm_b, n, 10);
        lname(n, l, "self_attn.kv_b_proj.weight");
        same_values(y->kv_b, n, (size_t)H * (DN + DV) * 10);
        assert_null(y->kv_a_norm);
        /* the table stays mapped, in its stored dtype */
        lname(en, l, "self_attn.eg_embed.weight");
        assert_ptr_equal(y->eg_embed, egm_ckpt_get(m.ck, en));
        assert_int_equal(y->eg_embed->dtype, EGM_DT_F16);
        assert_non_null(y->eg_G);
        float G[V * 10];
        naive_gate(G, en, y->eg_gate, 10);
        for (int i = 0; i < V * 10; i++) assert_float_equal(y->eg_G[i], G[i], 1e-5);
    }
    egm_model_free(&m);

    /* without the flag: no table */
    assert_int_equal(egm_model_load(dir, 0, 1, 0, &m, &e), 0);
    assert_null(m.layers[0].eg_G);
    egm_model_free(&m);
}

static void test_egmla_rmsnorm(void **st) {
    (void)st;
    arch a = {.type = "egmla", .rms = 1, .tie = 1};
    tlist tl;
    model_tensors(&tl, &a, 0, NL, 1);
    write_model(&a, &tl, 0);
    egm_model m;
    egm_err e;
    assert_int_equal(egm_model_load(dir, 0, -1, EGM_LOAD_GATE_TABLE, &m, &e), 0);
    assert_null(m.layers[0].eg_norm_b);
    assert_null(m.layers[0].eg_up);
    assert_int_equal(m.cfg.eg_latent_dim, DC);
    assert_int_equal(m.cfg.eg_norm_rms, 1);
    char en[128];
    lname(en, 2, "self_attn.eg_embed.weight");
    float G[V * DC];
    naive_gate(G, en, m.layers[2].eg_gate, DC);
    for (int i = 0; i < V * DC; i++) assert_float_equal(m.layers[2].eg_G[i], G[i], 1e-5);
    egm_model_free(&m);

    /* a LayerNorm bias next to an RMSNorm is refused, not ignored */
    add(&tl, "model.layers.1.self_attn.eg_norm.bias", DC, 0);
    write_model(&a, &tl, 0);
    load_fails(0, -1, 0, "model.safetensors", "\"model.layers.1.self_attn.eg_norm.bias\"");
    load_fails(0, -1, 0, "rmsnorm", NULL);
    /* ... but it is not looked at when layer 1 is not loaded */
    assert_int_equal(egm_model_load(dir, 2, 3, 0, &m, &e), 0);
    egm_model_free(&m);
}

static void test_partial_layers(void **st) {
    (void)st;
    /* only layer 1's tensors: no embeddings, no layer 0 or 2 */
    arch a = {.type = "egmla", .q_lora = 12};
    tlist tl;
    model_tensors(&tl, &a, 1, 2, 0);
    write_model(&a, &tl, 0);
    egm_model m;
    egm_err e;
    assert_int_equal(egm_model_load(dir, 1, 2, 0, &m, &e), 0);
    assert_int_equal(m.lo, 1);
    assert_int_equal(m.hi, 2);
    assert_null(m.embed.data);
    assert_null(m.lm_head.data);
    char n[128];
    lname(n, 1, "self_attn.q_a_proj.weight");
    same_mat(&m.layers[0].q_a, n, 12 * D);
    egm_model_free(&m);
    /* asking for more fails, naming what is missing and where */
    load_fails(0, 2, 0, "model.layers.0.", dir);
    load_fails(1, 3, 0, "model.layers.2.", "missing");
    load_fails(1, 2, EGM_LOAD_EMBED, "\"model.embed_tokens.weight\"", dir);
    load_fails(1, 2, EGM_LOAD_HEAD, "\"model.norm.weight\"", dir);
    load_fails(2, 1, 0, "[2, 1)", NULL);
    load_fails(0, 4, 0, "[0, 4)", NULL);
}

static void test_missing_and_shapes(void **st) {
    (void)st;
    arch a = {.type = "deepseek_v2"};
    tlist tl;
    model_tensors(&tl, &a, 0, NL, 1);
    tl_remove(&tl, "model.layers.2.self_attn.kv_a_proj_with_mqa.weight");
    write_model(&a, &tl, 0);
    load_fails(0, -1, 0, "\"model.layers.2.self_attn.kv_a_proj_with_mqa.weight\"", dir);
    load_fails(0, -1, 0, "missing (expected shape [12, 16])", NULL);
    egm_model m;
    egm_err e;
    assert_int_equal(egm_model_load(dir, 0, 2, EGM_LOAD_HEAD, &m, &e), 0);
    egm_model_free(&m);

    model_tensors(&tl, &a, 0, NL, 1);
    tl_find(&tl, "model.layers.1.self_attn.kv_b_proj.weight")->shape[1] = DC + 1;
    write_model(&a, &tl, 0);
    char want[512];
    snprintf(want, sizeof want, "%s/model.safetensors: tensor \"model.layers.1.self_attn.kv_b_proj."
             "weight\": expected shape [20, 8], found [20, 9]", dir);
    load_fails(0, -1, 0, want, NULL);

    model_tensors(&tl, &a, 0, NL, 1);
    tt *t = tl_find(&tl, "model.norm.weight");
    t->ndim = 2;
    t->shape[1] = 1;
    write_model(&a, &tl, 0);
    load_fails(0, -1, EGM_LOAD_HEAD, "\"model.norm.weight\": expected shape [16], found [16, 1]", NULL);

    /* q_a_proj where config says q_lora_rank null */
    model_tensors(&tl, &a, 0, NL, 1);
    add(&tl, "model.layers.0.self_attn.q_a_proj.weight", 12, D);
    write_model(&a, &tl, 0);
    load_fails(0, -1, 0, "\"model.layers.0.self_attn.q_a_proj.weight\"", "q_lora_rank");

    /* llama with a q bias */
    arch b = {.type = "llama"};
    model_tensors(&tl, &b, 0, NL, 1);
    add(&tl, "model.layers.2.self_attn.q_proj.bias", H * DH, 0);
    write_model(&b, &tl, 0);
    load_fails(0, -1, 0, "\"model.layers.2.self_attn.q_proj.bias\"", "model.safetensors");
    /* old exports carry rotary_emb.inv_freq: harmless, skipped */
    model_tensors(&tl, &b, 0, NL, 1);
    add(&tl, "model.layers.0.self_attn.rotary_emb.inv_freq", DH / 2, 0);
    write_model(&b, &tl, 0);
    assert_int_equal(egm_model_load(dir, 0, -1, 0, &m, &e), 0);
    egm_model_free(&m);
}

static void test_eg_up_consistency(void **st) {
    (void)st;
    arch a = {.type = "egmla", .eg_up = 1};
    tlist tl;
    model_tensors(&tl, &a, 0, NL, 1);
    egm_model m;
    egm_err e;
    write_model(&a, &tl, 0); /* d_u = d_c with eg_up everywhere: fine */
    assert_int_equal(egm_model_load(dir, 0, -1, 0, &m, &e), 0);
    assert_non_null(m.layers[2].eg_up);
    egm_model_free(&m);

    tl_remove(&tl, "model.layers.2.self_attn.eg_up_proj.weight");
    write_model(&a, &tl, 0);
    load_fails(0, -1, 0, "\"model.layers.2.self_attn.eg_up_proj.weight\"", "every layer or in none");
    assert_int_equal(egm_model_load(dir, 2, 3, 0, &m, &e), 0); /* alone, layer 2 is fine */
    assert_null(m.layers[0].eg_up);
    egm_model_free(&m);

    /* eg_latent_dim != kv_lora_rank needs eg_up_proj */
    arch b = {.type = "egmla", .du = 10};
    model_tensors(&tl, &b, 0, NL, 1);
    write_model(&b, &tl, 0);
    load_fails(0, -1, 0, "\"model.layers.0.self_attn.eg_up_proj.weight\"", "missing");

    /* eg_embed with the wrong vocabulary */
    arch c = {.type = "egmla"};
    model_tensors(&tl, &c, 0, NL, 1);
    tl_find(&tl, "model.layers.0.self_attn.eg_embed.weight")->shape[0] = V - 1;
    write_model(&c, &tl, 0);
    load_fails(0, -1, 0, "\"model.layers.0.self_attn.eg_embed.weight\": expected shape [32, 6], found [31, 6]",
               NULL);

    /* egmla has no kv_a_layernorm */
    model_tensors(&tl, &c, 0, NL, 1);
    add(&tl, "model.layers.0.self_attn.kv_a_layernorm.weight", DC, 0);
    write_model(&c, &tl, 0);
    load_fails(0, -1, 0, "\"model.layers.0.self_attn.kv_a_layernorm.weight\"", "eg_norm");
}

static void test_bad_config(void **st) {
    (void)st;
    arch a = {.type = "llama"};
    tlist tl;
    model_tensors(&tl, &a, 0, NL, 1);
    write_model(&a, &tl, 0);
    char cfg[256];
    path_of(cfg, sizeof cfg, "config.json");
    write_config(&a, ", \"rope_scaling\": {\"type\": \"dynamic\", \"factor\": 2}");
    load_fails(0, -1, 0, cfg, "\"rope_scaling.type\"");
    write_config(&a, ", \"n_routed_experts\": 8");
    load_fails(0, -1, 0, cfg, "\"n_routed_experts\"");
    write_config(&a, ", \"attention_bias\": \"no\"");
    load_fails(0, -1, 0, cfg, "\"attention_bias\"");
    arch m = {.type = "mixtral"};
    write_config(&m, NULL);
    load_fails(0, -1, 0, cfg, "\"model_type\"");
    unlink(cfg);
    load_fails(0, -1, 0, cfg, "cannot open");
    /* config fine, no weights */
    write_config(&a, NULL);
    char p[256];
    path_of(p, sizeof p, "model.safetensors");
    unlink(p);
    load_fails(0, -1, 0, dir, "model.safetensors");
}

static void test_sharded(void **st) {
    (void)st;
    arch a = {.type = "egmla"};
    tlist tl;
    model_tensors(&tl, &a, 0, NL, 1);
    set_dtype(&tl, EGM_DT_BF16);
    write_config(&a, NULL);
    int half = tl.n / 2;
    write_st("a.safetensors", &tl, 0, half, 0);
    write_st("b.safetensors", &tl, half, tl.n, 0);
    static char idx[16384];
    int k = snprintf(idx, sizeof idx, "{\"metadata\": {}, \"weight_map\": {");
    for (int i = 0; i < tl.n; i++)
        k += snprintf(idx + k, sizeof idx - k, "%s\"%s\": \"%s\"", i ? ", " : "", tl.t[i].name,
                      i < half ? "a.safetensors" : "b.safetensors");
    snprintf(idx + k, sizeof idx - k, "}}");
    write_text("model.safetensors.index.json", idx);
    egm_model m;
    egm_err e;
    assert_int_equal(egm_model_load(dir, 0, -1, EGM_LOAD_EMBED | EGM_LOAD_HEAD, &m, &e), 0);
    same_mat(&m.embed, "model.embed_tokens.weight", V * D);
    char n[128];
    lname(n, 2, "mlp.down_proj.weight");
    same_mat(&m.layers[2].w_down, n, D * FF);
    lname(n, 2, "self_attn.eg_embed.weight");
    assert_non_null(strstr(m.layers[2].eg_embed->file, "b.safetensors"));
    egm_model_free(&m);
}

static void test_random(void **st) {
    (void)st;
    egm_config c;
    egm_err e;
    const char *cj = "{\"model_type\": \"egmla\", \"vocab_size\": 32, \"hidden_size\": 16,"
                     " \"intermediate_size\": 24, \"num_hidden_layers\": 3,"
                     " \"num_attention_heads\": 2, \"rms_norm_eps\": 1e-6, \"rope_theta\": 1e4,"
                     " \"max_position_embeddings\": 64, \"q_lora_rank\": null,"
                     " \"kv_lora_rank\": 8, \"qk_nope_head_dim\": 4, \"qk_rope_head_dim\": 4,"
                     " \"v_head_dim\": 6, \"eg_embed_dim\": 6, \"eg_latent_dim\": 10}";
    assert_int_equal(egm_config_parse(cj, strlen(cj), "x", &c, &e), 0);
    egm_model a, b, p;
    assert_int_equal(egm_model_random(&c, 42, 0, -1, EGM_LOAD_EMBED | EGM_LOAD_HEAD |
                                      EGM_LOAD_GATE_TABLE, &a, &e), 0);
    assert_int_equal(egm_model_random(&c, 42, 0, -1, EGM_LOAD_EMBED | EGM_LOAD_HEAD, &b, &e), 0);
    assert_int_equal(egm_model_random(&c, 42, 1, 3, 0, &p, &e), 0);
    assert_null(a.ck);
    assert_null(p.embed.data);
    /* deterministic, and a layer does not depend on the range loaded */
    assert_memory_equal(a.layers[1].kv_b, b.layers[1].kv_b, sizeof(float) * H * (DN + DV) * 10);
    assert_memory_equal(a.layers[2].w_up.data, p.layers[1].w_up.data, sizeof(float) * FF * D);
    assert_memory_equal(a.layers[1].eg_embed->data, p.layers[0].eg_embed->data,
                        sizeof(float) * V * DE);
    /* layers differ from each other, lm_head from embed */
    assert_memory_not_equal(a.layers[0].w_up.data, a.layers[1].w_up.data, sizeof(float) * FF * D);
    assert_memory_not_equal(a.embed.data, a.lm_head.data, sizeof(float) * V * D);
    /* values: uniform in +-1/sqrt(fan_in), norms at 1, bias 0 */
    float bound = 1.0f / sqrtf((float)D), mx = 0;
    for (int i = 0; i < FF * D; i++) {
        assert_true(fabsf(((const float *)a.layers[0].w_gate.data)[i]) <= bound);
        mx = fmaxf(mx, fabsf(((const float *)a.layers[0].w_gate.data)[i]));
    }
    assert_true(mx > bound * 0.8f);
    for (int i = 0; i < D; i++) assert_true(a.layers[0].attn_norm[i] == 1.0f);
    for (int i = 0; i < 10; i++) assert_true(a.layers[0].eg_norm_b[i] == 0.0f);
    /* d_u != d_c: eg_up is there; eg_embed is an owned F32 tensor */
    assert_non_null(a.layers[0].eg_up);
    const egm_tensor *t = a.layers[0].eg_embed;
    assert_int_equal(t->dtype, EGM_DT_F32);
    assert_int_equal(t->shape[0], V);
    assert_int_equal(t->shape[1], DE);
    assert_string_equal(t->name, "model.layers.0.self_attn.eg_embed.weight");
    /* the gate table matches the definition */
    const float *E = (const float *)(const void *)t->data, *W = a.layers[0].eg_gate;
    for (int v = 0; v < V; v++)
        for (int j = 0; j < 10; j++) {
            float s = 0;
            for (int k = 0; k < DE; k++) s += E[v * DE + k] * W[j * DE + k];
            assert_float_equal(a.layers[0].eg_G[v * 10 + j], s, 1e-5);
        }
    assert_null(b.layers[0].eg_G);
    egm_model random_other;
    assert_int_equal(egm_model_random(&c, 43, 0, 1, 0, &random_other, &e), 0);
    assert_memory_not_equal(a.layers[0].w_up.data, random_other.layers[0].w_up.data, sizeof(float) * FF * D);
    egm_model_free(&random_other);
    egm_model_free(&a);
    egm_model_free(&b);
    egm_model_free(&p);
}

static long long sum_numel(const tlist *tl) {
    long long s = 0;
    for (int i = 0; i < tl->n; i++) s += (long long)numel(&tl->t[i]);
    return s;
}

static void test_count_params(void **st) {
    (void)st;
    /* the count must equal the number of values in a full checkpoint */
    arch archs[] = {{.type = "llama"},
                    {.type = "llama", .tie = 1},
                    {.type = "deepseek_v2", .q_lora = 12},
                    {.type = "egmla", .du = 10, .eg_up = 1},
                    {.type = "egmla", .rms = 1, .tie = 1}};
    for (size_t i = 0; i < sizeof archs / sizeof *archs; i++) {
        tlist tl;
        model_tensors(&tl, &archs[i], 0, NL, 1);
        write_config(&archs[i], NULL);
        char p[256];
        path_of(p, sizeof p, "config.json");
        egm_config c;
        egm_err e;
        assert_int_equal(egm_config_load(p, &c, &e), 0);
        egm_param_count pc;
        egm_count_params(&c, archs[i].eg_up, &pc);
        assert_int_equal(pc.total, sum_numel(&tl));
        assert_int_equal(pc.embed, V * D);
        assert_int_equal(pc.lm_head, archs[i].tie ? 0 : V * D);
        assert_int_equal(pc.ffn, NL * 3 * FF * D);
        assert_int_equal(pc.gate_table, strcmp(archs[i].type, "egmla") ? 0 : NL * V * DE);
    }
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_llama_f32_mapped),    T(test_llama_f32_unaligned), T(test_mla_bf16),
        T(test_egmla_f16_gate_table), T(test_egmla_rmsnorm),      T(test_partial_layers),
        T(test_missing_and_shapes),  T(test_eg_up_consistency),   T(test_bad_config),
        T(test_sharded),             T(test_random),              T(test_count_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
