/* fuzz_tok_encode.c - libFuzzer harness for encoding untrusted prompt text
 * with a real tokenizer (tests/fixtures/tokenizer/llama3.json, which has a
 * Split regex and special tokens). Every id must be in the vocabulary, and
 * valid UTF-8 must decode back to itself. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer.h"

static egm_tokenizer *tok;

static int valid_utf8(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!k || i + k > n) return 0;
        uint32_t cp = k == 1 ? c : k == 2 ? c & 0x1f : k == 3 ? c & 0x0f : c & 0x07;
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if ((k == 2 && cp < 0x80) || (k == 3 && cp < 0x800) || (k == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += k;
    }
    return 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    egm_err e;
    const char *path = getenv("EGM_FUZZ_TOKENIZER");
    if (!path) path = "tests/fixtures/tokenizer/llama3.json";
    if (egm_tok_load(path, &tok, &e)) {
        fprintf(stderr, "fuzz_tok_encode: %s\n", e.msg);
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int *ids = NULL, n = 0;
    egm_err e;
    int V = egm_tok_vocab_size(tok);
    if (egm_tok_encode(tok, (const char *)data, size, 1, &ids, &n, &e) == 0) {
        for (int i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= V) abort();
        free(ids);
        ids = NULL;
        /* without added specials, valid text round-trips exactly */
        if (egm_tok_encode(tok, (const char *)data, size, 0, &ids, &n, &e) == 0) {
            char *back = egm_tok_decode(tok, ids, n, 0);
            if (back && valid_utf8(data, size) && !memchr(data, 0, size) &&
                (strlen(back) != size || memcmp(back, data, size)))
                abort();
            free(back);
        }
    }
    free(ids);
    return 0;
}
