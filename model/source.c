/* source.c - config and tokenizer of a model directory or GGUF file. */
#include "source.h"

#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"


int egm_model_config(const char *path, egm_config *c, egm_err *e) {
    struct stat st;
    if (!egm_gguf_is_file(path) && stat(path, &st) == 0 && S_ISREG(st.st_mode))
        return egm_config_load(path, c, e); /* a config.json on its own */
    if (!egm_gguf_is_file(path)) {
        char p[4096];
        snprintf(p, sizeof p, "%s/config.json", path);
        return egm_config_load(p, c, e);
    }
    egm_gguf *g;
    if (egm_gguf_open(path, &g, e)) return -1;
    int rc = egm_config_from_gguf(g, c, e);
    egm_gguf_close(g);
    return rc;
}

int egm_model_tokenizer(const char *path, egm_tokenizer **tok, egm_err *e) {
    *tok = NULL;
    if (!egm_gguf_is_file(path)) {
        /* tokenizer.json is optional (MODEL.md) */
        char p[4096];
        snprintf(p, sizeof p, "%s/tokenizer.json", path);
        if (access(p, F_OK) != 0) return 0;
        return egm_tok_load(p, tok, e);
    }
    egm_gguf *g;
    if (egm_gguf_open(path, &g, e)) return -1;
    /* a GGUF file without a vocabulary (egmla quantize of a checkpoint
     * without tokenizer.json) is like a directory without one */
    int rc = egm_gguf_kv_get(g, "tokenizer.ggml.model") ? egm_tok_from_gguf(g, tok, e) : 0;
    egm_gguf_close(g);
    return rc;
}
