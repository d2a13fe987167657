/* test_config.c - config.json parsing: defaults, derived sizes, refusals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/config.h"

static const char *LLAMA =
    "{\"model_type\": \"llama\", \"vocab_size\": 100, \"hidden_size\": 64,"
    " \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
    " \"rms_norm_eps\": 1e-6, \"rope_theta\": 10000, \"max_position_embeddings\": 256,"
    " \"bos_token_id\": 1, \"eos_token_id\": [2, 7], \"torch_dtype\": \"bfloat16\","
    " \"architectures\": [\"LlamaForCausalLM\"], \"rope_scaling\": null}";

static const char *MLA =
    "{\"model_type\": \"deepseek_v2\", \"vocab_size\": 100, \"hidden_size\": 64,"
    " \"intermediate_size\": 128, \"num_hidden_layers\": 3, \"num_attention_heads\": 4,"
    " \"rms_norm_eps\": 1e-6, \"rope_theta\": 10000.0, \"max_position_embeddings\": 256,"
    " \"q_lora_rank\": null, \"kv_lora_rank\": 32, \"qk_nope_head_dim\": 16,"
    " \"qk_rope_head_dim\": 8, \"v_head_dim\": 16, \"tie_word_embeddings\": true,"
    " \"n_routed_experts\": null, \"eos_token_id\": 5, \"bos_token_id\": null}";

static const char *EGMLA =
    "{\"model_type\": \"egmla\", \"vocab_size\": 100, \"hidden_size\": 64,"
    " \"intermediate_size\": 128, \"num_hidden_layers\": 3, \"num_attention_heads\": 4,"
    " \"rms_norm_eps\": 1e-6, \"rope_theta\": 10000, \"max_position_embeddings\": 256,"
    " \"q_lora_rank\": 24, \"kv_lora_rank\": 16, \"qk_nope_head_dim\": 16,"
    " \"qk_rope_head_dim\": 8, \"v_head_dim\": 16, \"eg_embed_dim\": 12}";

/* Parses `base` with key set to `val` (JSON text), or removed if val is NULL. */
static int parse_with(const char *base, const char *key, const char *val, egm_config *c,
                      egm_err *e) {
    json_t *root = json_loads(base, 0, NULL);
    assert_non_null(root);
    if (key) {
        if (val) {
            json_t *v = json_loads(val, JSON_DECODE_ANY, NULL);
            assert_non_null(v);
            json_object_set_new(root, key, v);
        } else {
            json_object_del(root, key);
        }
    }
    char *s = json_dumps(root, 0);
    json_decref(root);
    memset(e, 0, sizeof *e);
    int rc = egm_config_parse(s, strlen(s), "dir/config.json", c, e);
    free(s);
    return rc;
}

/* Refused, with a message naming the file and the key. */
static void refused(const char *base, const char *key, const char *val, const char *named) {
    egm_config c;
    egm_err e;
    int rc = parse_with(base, key, val, &c, &e);
    if (rc != -1 || !strstr(e.msg, "dir/config.json") || !strstr(e.msg, named))
        print_error("key %s = %s: rc %d, msg \"%s\"\n", key, val ? val : "(removed)", rc, e.msg);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(e.msg, "dir/config.json"));
    assert_non_null(strstr(e.msg, named));
}

static void test_llama_defaults(void **st) {
    (void)st;
    egm_config c;
    egm_err e;
    assert_int_equal(parse_with(LLAMA, NULL, NULL, &c, &e), 0);
    assert_int_equal(c.arch, EGM_LLAMA);
    assert_string_equal(c.model_type, "llama");
    assert_int_equal(c.vocab_size, 100);
    assert_int_equal(c.num_layers, 2);
    assert_int_equal(c.num_kv_heads, 4);
    assert_int_equal(c.head_dim, 16);
    assert_int_equal(c.tie_word_embeddings, 0);
    assert_int_equal(c.rope_interleave, 0);
    assert_float_equal(c.rms_norm_eps, 1e-6f, 1e-12);
    assert_float_equal(c.rope_theta, 10000.0f, 0);
    assert_int_equal(c.bos_token_id, 1);
    assert_int_equal(c.n_eos, 2);
    assert_true(egm_config_is_eos(&c, 2) && egm_config_is_eos(&c, 7));
    assert_false(egm_config_is_eos(&c, 1));
    assert_int_equal(egm_config_kv_elems(&c), 2 * 4 * 16);
    assert_int_equal(egm_config_latent_dim(&c), 0);

    assert_int_equal(parse_with(LLAMA, "num_key_value_heads", "2", &c, &e), 0);
    assert_int_equal(egm_config_kv_elems(&c), 2 * 2 * 16);
    assert_int_equal(parse_with(LLAMA, "head_dim", "8", &c, &e), 0);
    assert_int_equal(c.head_dim, 8);
    assert_int_equal(parse_with(LLAMA, "rope_interleave", "true", &c, &e), 0);
    assert_int_equal(c.rope_interleave, 1);
    assert_int_equal(parse_with(LLAMA, "bos_token_id", NULL, &c, &e), 0);
    assert_int_equal(c.bos_token_id, -1);
    assert_int_equal(parse_with(LLAMA, "eos_token_id", "null", &c, &e), 0);
    assert_int_equal(c.n_eos, 0);
}

static void test_mla(void **st) {
    (void)st;
    egm_config c;
    egm_err e;
    assert_int_equal(parse_with(MLA, NULL, NULL, &c, &e), 0);
    assert_int_equal(c.arch, EGM_MLA);
    assert_int_equal(c.q_lora_rank, 0);
    assert_int_equal(c.kv_lora_rank, 32);
    assert_int_equal(c.rope_interleave, 1);
    assert_int_equal(c.tie_word_embeddings, 1);
    assert_int_equal(c.bos_token_id, -1);
    assert_int_equal(c.n_eos, 1);
    assert_int_equal(c.eos_token_ids[0], 5);
    assert_int_equal(egm_config_kv_elems(&c), 32 + 8);
    assert_int_equal(egm_config_latent_dim(&c), 32);
    /* experts only past the last layer: still dense, accepted */
    assert_int_equal(parse_with(MLA, "n_routed_experts", "0", &c, &e), 0);
    json_t *r = json_loads(MLA, 0, NULL);
    json_object_set_new(r, "n_routed_experts", json_integer(64));
    json_object_set_new(r, "first_k_dense_replace", json_integer(3));
    char *s = json_dumps(r, 0);
    assert_int_equal(egm_config_parse(s, strlen(s), "x", &c, &e), 0);
    /* ... but not when layer 2 would use them */
    json_object_set_new(r, "first_k_dense_replace", json_integer(1));
    json_object_set_new(r, "moe_layer_freq", json_integer(2));
    free(s);
    s = json_dumps(r, 0);
    assert_int_equal(egm_config_parse(s, strlen(s), "x/config.json", &c, &e), -1);
    assert_non_null(strstr(e.msg, "n_routed_experts"));
    assert_non_null(strstr(e.msg, "layer 2"));
    free(s);
    json_decref(r);
}

static void test_egmla_defaults(void **st) {
    (void)st;
    egm_config c;
    egm_err e;
    assert_int_equal(parse_with(EGMLA, NULL, NULL, &c, &e), 0);
    assert_int_equal(c.arch, EGM_EGMLA);
    assert_int_equal(c.q_lora_rank, 24);
    assert_int_equal(c.eg_embed_dim, 12);
    assert_int_equal(c.eg_latent_dim, 16);
    assert_int_equal(c.eg_norm_rms, 0);
    assert_float_equal(c.eg_norm_eps, 1e-5f, 1e-12);
    assert_int_equal(c.rope_interleave, 1);
    assert_int_equal(egm_config_kv_elems(&c), 16 + 8);
    assert_int_equal(egm_config_latent_dim(&c), 16);
    assert_int_equal(parse_with(EGMLA, "eg_latent_dim", "40", &c, &e), 0);
    assert_int_equal(egm_config_latent_dim(&c), 40);
    assert_int_equal(egm_config_kv_elems(&c), 16 + 8); /* cache holds c, not u */
    assert_int_equal(parse_with(EGMLA, "eg_norm", "\"rmsnorm\"", &c, &e), 0);
    assert_int_equal(c.eg_norm_rms, 1);
    assert_int_equal(parse_with(EGMLA, "eg_norm_eps", "1e-6", &c, &e), 0);
    assert_float_equal(c.eg_norm_eps, 1e-6f, 1e-12);
}

/* transformers 5 writes rope_theta only in rope_parameters; RoPE scaling
 * of any type but "default" is refused, naming the key. */
static void test_rope_parameters(void **st) {
    (void)st;
    egm_config c;
    egm_err e;
    json_t *root = json_loads(LLAMA, 0, NULL);
    json_object_del(root, "rope_theta");
    json_object_del(root, "rope_scaling");
    char *base = json_dumps(root, 0);
    json_decref(root);
    assert_int_equal(parse_with(base, "rope_parameters",
                                "{\"rope_theta\": 123456.0, \"rope_type\": \"default\"}", &c, &e), 0);
    assert_float_equal(c.rope_theta, 123456.0f, 1e-3);
    refused(base, "rope_parameters", "{\"rope_theta\": 1e4, \"rope_type\": \"yarn\", \"factor\": 4}",
            "\"rope_parameters.rope_type\"");
    refused(base, "rope_parameters", "{\"rope_theta\": 1e4, \"rope_type\": \"linear\"}", "linear");
    refused(base, "rope_parameters", "{\"rope_type\": \"default\"}", "\"rope_parameters.rope_theta\"");
    refused(base, "rope_parameters", "{\"rope_theta\": -1, \"rope_type\": \"default\"}",
            "\"rope_parameters.rope_theta\"");
    refused(base, "rope_parameters", NULL, "\"rope_theta\"");
    refused(LLAMA, "rope_parameters", "\"yarn\"", "\"rope_parameters\"");
    free(base);
    /* a top-level rope_theta is read as before; a default-typed scaling is no scaling */
    assert_int_equal(parse_with(LLAMA, "rope_scaling", "{\"rope_type\": \"default\"}", &c, &e), 0);
    assert_float_equal(c.rope_theta, 10000.0f, 1e-3);
    refused(LLAMA, "rope_scaling", "{\"rope_type\": \"dynamic\", \"factor\": 2}", "\"rope_scaling.rope_type\"");
    refused(MLA, "rope_scaling", "{\"type\": \"yarn\"}", "\"rope_scaling.type\"");
    refused(MLA, "rope_parameters", "{\"rope_theta\": 1e4, \"rope_type\": \"yarn\"}", "\"rope_parameters.rope_type\"");
}

static void test_refusals(void **st) {
    (void)st;
    refused(LLAMA, "model_type", "\"mistral\"", "\"model_type\"");
    refused(LLAMA, "model_type", NULL, "\"model_type\"");
    refused(LLAMA, "rope_scaling", "{\"type\": \"linear\", \"factor\": 2.0}", "\"rope_scaling.type\"");
    refused(MLA, "rope_scaling", "\"yarn\"", "\"rope_scaling\"");
    refused(MLA, "n_routed_experts", "64", "\"n_routed_experts\"");
    refused(MLA, "n_routed_experts", "\"64\"", "\"n_routed_experts\"");
    refused(LLAMA, "hidden_size", "0", "\"hidden_size\"");
    refused(LLAMA, "hidden_size", "-64", "\"hidden_size\"");
    refused(LLAMA, "vocab_size", NULL, "\"vocab_size\"");
    refused(LLAMA, "num_hidden_layers", "2.5", "\"num_hidden_layers\"");
    refused(LLAMA, "intermediate_size", "\"128\"", "\"intermediate_size\"");
    refused(LLAMA, "rms_norm_eps", "0", "\"rms_norm_eps\"");
    refused(LLAMA, "rope_theta", "\"10000\"", "\"rope_theta\"");
    refused(LLAMA, "num_key_value_heads", "3", "\"num_key_value_heads\"");
    refused(LLAMA, "head_dim", "7", "\"head_dim\"");
    refused(LLAMA, "tie_word_embeddings", "1", "\"tie_word_embeddings\"");
    refused(LLAMA, "rope_interleave", "\"yes\"", "\"rope_interleave\"");
    refused(LLAMA, "eos_token_id", "\"</s>\"", "\"eos_token_id\"");
    refused(LLAMA, "eos_token_id", "[2, \"x\"]", "\"eos_token_id\"");
    refused(LLAMA, "eos_token_id", "100", "\"eos_token_id\"");
    refused(LLAMA, "bos_token_id", "-1", "\"bos_token_id\"");
    refused(LLAMA, "attention_bias", "true", "\"attention_bias\"");
    refused(LLAMA, "hidden_act", "\"gelu\"", "\"hidden_act\"");
    refused(MLA, "q_lora_rank", NULL, "\"q_lora_rank\"");
    refused(MLA, "q_lora_rank", "0", "\"q_lora_rank\"");
    refused(MLA, "kv_lora_rank", "null", "\"kv_lora_rank\"");
    refused(MLA, "qk_rope_head_dim", "7", "\"qk_rope_head_dim\"");
    refused(EGMLA, "eg_embed_dim", "0", "\"eg_embed_dim\"");
    refused(EGMLA, "eg_embed_dim", NULL, "\"eg_embed_dim\"");
    refused(EGMLA, "eg_norm", "\"batchnorm\"", "\"eg_norm\"");
    refused(EGMLA, "eg_norm_eps", "-1", "\"eg_norm_eps\"");
    refused(EGMLA, "eg_latent_dim", "0", "\"eg_latent_dim\"");

    /* The message says what was expected and what was found. */
    egm_config c;
    egm_err e;
    assert_int_equal(parse_with(LLAMA, "hidden_size", "\"64\"", &c, &e), -1);
    assert_non_null(strstr(e.msg, "expected a positive integer"));
    assert_non_null(strstr(e.msg, "found string \"64\""));
    assert_int_equal(parse_with(EGMLA, "eg_embed_dim", "0", &c, &e), -1);
    assert_non_null(strstr(e.msg, "deepseek_v2"));
}

static void test_bad_json(void **st) {
    (void)st;
    egm_config c;
    egm_err e;
    const char *bad = "{\"model_type\": \"llama\",\n \"vocab_size\": }";
    assert_int_equal(egm_config_parse(bad, strlen(bad), "m/config.json", &c, &e), -1);
    assert_non_null(strstr(e.msg, "m/config.json"));
    assert_non_null(strstr(e.msg, "line 2"));
    assert_int_equal(egm_config_parse("[1]", 3, "m/config.json", &c, &e), -1);
    assert_non_null(strstr(e.msg, "object"));
    assert_int_equal(egm_config_parse("", 0, "m/config.json", &c, &e), -1);
    assert_non_null(strstr(e.msg, "m/config.json"));
}

static void test_load_file(void **st) {
    (void)st;
    char dir[] = "/tmp/egm_cfgXXXXXX", path[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/config.json", dir);
    egm_config c;
    egm_err e;
    assert_int_equal(egm_config_load(path, &c, &e), -1); /* not there yet */
    assert_non_null(strstr(e.msg, path));
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(EGMLA, f);
    fclose(f);
    assert_int_equal(egm_config_load(path, &c, &e), 0);
    assert_int_equal(c.eg_embed_dim, 12);
    f = fopen(path, "w");
    fputs("{\"model_type\": \"gpt2\"}", f);
    fclose(f);
    assert_int_equal(egm_config_load(path, &c, &e), -1);
    assert_non_null(strstr(e.msg, path));
    assert_non_null(strstr(e.msg, "gpt2"));
    unlink(path);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_defaults), cmocka_unit_test(test_mla),
        cmocka_unit_test(test_egmla_defaults), cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_rope_parameters),
        cmocka_unit_test(test_bad_json),       cmocka_unit_test(test_load_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
