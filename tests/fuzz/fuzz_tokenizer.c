/* fuzz_tokenizer.c - libFuzzer harness for tokenizer.json (egm_tok_parse).
 * An accepted tokenizer must then encode and decode a few fixed strings and
 * stream-decode every id without faults. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer.h"

static const char *texts[] = {
    "Hello, world!", " the  quick\n\nbrown fox's 123 ", "\xc3\xa9t\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80",
    "<|endoftext|>a<s></s>", "",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    egm_tokenizer *t = NULL;
    egm_err e;
    if (egm_tok_parse((const char *)data, size, "fuzz/tokenizer.json", &t, &e)) return 0;
    int V = egm_tok_vocab_size(t);
    for (size_t k = 0; k < sizeof texts / sizeof *texts; k++) {
        int *ids = NULL, n = 0;
        if (egm_tok_encode(t, texts[k], strlen(texts[k]), (int)(k & 1), &ids, &n, &e) == 0) {
            for (int i = 0; i < n; i++)
                if (ids[i] < 0 || ids[i] >= V) abort();
            free(egm_tok_decode(t, ids, n, 0));
            free(egm_tok_decode(t, ids, n, 1));
        }
        free(ids);
    }
    size_t cap = egm_tok_stream_cap(t);
    char *out = malloc(cap ? cap : 1);
    egm_tok_stream s;
    memset(&s, 0, sizeof s);
    for (int id = -1; id <= V && id < 4096; id++) {
        (void)egm_tok_token(t, id);
        (void)egm_tok_is_special(t, id);
        if (out) egm_tok_stream_feed(t, &s, id, out, cap);
    }
    if (out) egm_tok_stream_flush(&s, out, cap);
    free(out);
    egm_tok_free(t);
    return 0;
}
