/* cmd_info.c - `egmla info`: parameters by part and the KV cache arithmetic.
 *
 * The KV numbers come from the same functions the cache allocates with
 * (worker/kvcache.c), so what info prints is what a run takes. */
#include <stdio.h>
#include <string.h>

#include "base/args.h"
#include "base/size.h"
#include "coordinator/commands.h"
#include "deploy/topology.h"
#include "model/config.h"
#include "model/source.h"
#include "model/weights.h"
#include "worker/kvcache.h"

static void print_count(const char *what, long long n, long long total) {
    printf("  %-22s %14lld  (%5.1f %%)\n", what, n, total ? 100.0 * n / total : 0.0);
}

/* The loaded model's matrices by stored type (what stays resident), the
 * fp32 vectors and converted copies besides, and the kernel set. */
static int print_weights(const char *path) {
    egm_model m;
    egm_err e;
    if (egm_model_load(path, 0, -1, EGM_LOAD_EMBED | EGM_LOAD_HEAD, &m, &e)) {
        fprintf(stderr, "egmla: %s\n", e.msg);
        return -1;
    }
    printf("weights (resident bytes; kernels %s):\n", egm_kernels_name());
    size_t total = m.owned_bytes;
    for (int t = 0; t <= EGM_GGML_BF16; t++)
        if (m.mat_bytes[t]) {
            printf("  %-22s %14zu\n", egm_qtype_name(t), m.mat_bytes[t]);
            total += m.mat_bytes[t];
        }
    printf("  %-22s %14zu  (vectors, and weights converted at load)\n", "fp32 owned", m.owned_bytes);
    printf("  %-22s %14zu\n", "total", total);
    egm_model_free(&m);
    return 0;
}

int egm_cmd_info(int argc, char **argv) {
    const char *model = NULL, *config = NULL, *budget_s = "1GiB", *kv_dtype = "fp32";
    int context = 0, block_tokens = 16;
    egm_opt opts[] = {
        {"model", EGM_OPT_STRING, &model, "model directory (default: the embedded model)", 0, 0, "DIR"},
        {"config", EGM_OPT_STRING, &config, "a config.json alone (no weights needed)", 0, 0, "FILE"},
        {"kv-budget", EGM_OPT_STRING, &budget_s, "KV cache budget to fit sequences into", 0, 0, "SIZE"},
        {"context", EGM_OPT_INT, &context, "tokens per sequence (default: the model's context)", 0, 1 << 30, "N"},
        {"kv-dtype", EGM_OPT_STRING, &kv_dtype, "KV cache storage: fp32 or bf16", 0, 0, "T"},
        {"block-tokens", EGM_OPT_INT, &block_tokens, "positions per KV block", 1, 65536, "N"},
        {NULL, 0, NULL, NULL, 0, 0, NULL}};
    egm_cmd cmd = {"egmla info", NULL,
                   "Prints a model's parameters by part, its KV cache bytes per token, and how many "
                   "sequences of a given context fit a KV budget.",
                   opts};
    int rc = egm_args_main(&cmd, argc, argv);
    if (rc >= 0) return rc;
    egm_err e;
    size_t budget;
    if (egm_parse_size(budget_s, &budget)) {
        fprintf(stderr, "egmla info: --kv-budget: expected a size such as 4GiB, found \"%s\"\n", budget_s);
        return EGM_EXIT_USAGE;
    }
    int bf16 = !strcmp(kv_dtype, "bf16");
    if (!bf16 && strcmp(kv_dtype, "fp32")) {
        fprintf(stderr, "egmla info: --kv-dtype: expected fp32 or bf16, found \"%s\"\n", kv_dtype);
        return EGM_EXIT_USAGE;
    }
    int weights = !config; /* a model, not a config.json alone */
    if (!config) config = model ? model : egm_default_model();
    egm_config c;
    /* a config.json alone, a model directory, or a .gguf file */
    if (egm_model_config(config, &c, &e)) {
        fprintf(stderr, "egmla: %s\n", e.msg);
        return EGM_EXIT_FAIL;
    }
    if (!context) context = c.max_position_embeddings;

    int has_up = c.arch == EGM_EGMLA && c.eg_latent_dim != c.kv_lora_rank;
    egm_param_count p;
    egm_count_params(&c, has_up, &p);
    printf("model: %s (%s), %d layers, hidden %d, %d heads, vocab %d, context %d\n", config,
           c.model_type, c.num_layers, c.hidden_size, c.num_heads, c.vocab_size,
           c.max_position_embeddings);
    printf("parameters:\n");
    print_count("embeddings", p.embed, p.total);
    print_count("lm_head", p.lm_head, p.total);
    print_count("attention", p.attn, p.total);
    if (c.arch == EGM_EGMLA) print_count("gate tables (eg_embed)", p.gate_table, p.total);
    print_count("ffn", p.ffn, p.total);
    print_count("norms", p.norms, p.total);
    print_count("total", p.total, p.total);

    if (weights && print_weights(config)) return EGM_EXIT_FAIL;

    int L = c.num_layers, E = egm_config_kv_elems(&c), ids = c.arch == EGM_EGMLA;
    size_t per_tok = egm_kv_bytes_per_token(L, E, ids, bf16);
    printf("kv cache (%s):\n", kv_dtype);
    printf("  elements per token per layer  %d", E);
    if (c.arch == EGM_LLAMA) printf("  (2 x %d kv heads x %d)\n", c.num_kv_heads, c.head_dim);
    else printf("  (latent %d + rope key %d)\n", c.kv_lora_rank, c.qk_rope_head_dim);
    printf("  elements per token, all layers %lld%s\n", (long long)E * L,
           ids ? " (+ 1 token id per position)" : "");
    printf("  bytes per token per layer     %zu\n", (size_t)E * (bf16 ? 2 : 4));
    printf("  bytes per token, all layers   %zu\n", per_tok);
    int blocks = egm_kv_blocks_for_budget(budget, L, E, ids, bf16, block_tokens);
    int per_seq = (context + block_tokens - 1) / block_tokens;
    printf("  budget %zu bytes: %d blocks of %d tokens; sequences of %d tokens that fit: %d\n",
           budget, blocks, block_tokens, context, per_seq ? blocks / per_seq : 0);
    return 0;
}
