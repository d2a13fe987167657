/* fuzz_gguf.c - libFuzzer harness for GGUF files (egm_gguf_open), then
 * everything built from an accepted file: every key read back, every
 * tensor dequantised in full, the llama config and the tokenizer from its
 * metadata (egm_config_from_gguf, egm_tok_from_gguf). The input goes into a
 * memfd so it is mapped as a file on disk would be. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "model/config.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

static volatile unsigned long long sink; /* wraps: only there so reads are not optimised away */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = memfd_create("fuzz.gguf", 0);
    if (fd < 0) return 0;
    size_t done = 0;
    while (done < size) {
        ssize_t w = write(fd, data + done, size - done);
        if (w <= 0) { close(fd); return 0; }
        done += (size_t)w;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    egm_gguf *g = NULL;
    egm_err e;
    if (egm_gguf_open(path, &g, &e) == 0) {
        for (int i = 0; i < egm_gguf_kv_count(g); i++) {
            const egm_gguf_kv *kv = egm_gguf_kv_at(g, i);
            if (egm_gguf_kv_get(g, kv->key) == NULL) abort();
            if (kv->str)
                for (uint64_t j = 0; j < kv->n && j < 64; j++)
                    for (uint64_t k = 0; k < kv->len[j]; k++) sink += kv->str[j][k];
            if (kv->type == EGM_GGUF_ARRAY)
                for (uint64_t j = 0; j < kv->n && j < 64; j++)
                    if (kv->arr_type <= EGM_GGUF_I32 || kv->arr_type >= EGM_GGUF_U64)
                        sink += (unsigned long long)egm_gguf_arr_int(kv, j);
        }
        for (int i = 0; i < egm_gguf_tensor_count(g); i++) {
            const egm_gguf_tensor *t = egm_gguf_tensor_at(g, i);
            if (egm_gguf_tensor_get(g, t->name) != t) abort();
            size_t n = egm_gguf_tensor_elems(t);
            if (!egm_ggml_type_supported(t->type) || n > (1u << 22)) continue;
            float *f = malloc(n ? n * sizeof *f : 1);
            if (f) egm_gguf_to_f32(t, f);
            free(f);
        }
        egm_config c;
        (void)egm_config_from_gguf(g, &c, &e);
        egm_tokenizer *tok = NULL;
        if (egm_tok_from_gguf(g, &tok, &e) == 0) {
            int *ids = NULL, n = 0;
            static const char text[] = "Hello world, it's 2024! \xc3\xa9\xf0\x9f\x98\x80";
            if (egm_tok_encode(tok, text, sizeof text - 1, 1, &ids, &n, &e) == 0)
                free(egm_tok_decode(tok, ids, n, 0));
            free(ids);
            egm_tok_free(tok);
        }
        egm_gguf_close(g);
    }
    close(fd);
    return 0;
}
