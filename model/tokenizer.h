/* tokenizer.h - Hugging Face tokenizer.json, byte-level BPE.
 *
 * Supports the GPT-2 / Llama-3 / SmolLM family: a ByteLevel pre-tokenizer
 * (optionally behind a Split with a regex, compiled with PCRE2), the
 * byte-to-unicode table, merges applied by rank, added/special tokens matched
 * before pre-tokenization, and a ByteLevel decoder. Anything else in the file
 * (another model type, a normalizer we do not implement) is refused with a
 * message naming the field. */
#ifndef EGM_TOKENIZER_H
#define EGM_TOKENIZER_H

#include <stddef.h>

#include "base/err.h"
#include "gguf.h"
#include "gguf_write.h"

typedef struct egm_tokenizer egm_tokenizer;

int egm_tok_load(const char *path, egm_tokenizer **out, egm_err *e);
int egm_tok_parse(const char *json, size_t len, const char *origin,
                  egm_tokenizer **out, egm_err *e);
void egm_tok_free(egm_tokenizer *t);

/* From a GGUF file's tokenizer.ggml.* metadata, matching llama.cpp's
 * tokenizer: model "llama" (SentencePiece-style: scores, byte fallback;
 * tokenizer_spm.c) or "gpt2" (byte-level BPE), the pre-tokenizer regexes
 * llama.cpp uses for tokenizer.ggml.pre (smollm, gpt-2, starcoder, llama3,
 * qwen2, default, ...), merges by rank; control, user-defined and unknown
 * tokens are matched in the text before pre-tokenization (control and
 * unknown ones count as special); add_special adds the BOS/EOS that
 * tokenizer.ggml.add_bos_token / add_eos_token ask for. */
int egm_tok_from_gguf(const egm_gguf *g, egm_tokenizer **out, egm_err *e);

/* Writes tokenizer.ggml.* for a byte-level BPE tokenizer.json the way
 * llama.cpp's convert_hf_to_gguf.py does (model "gpt2", pre "gpt-2", tokens
 * in their byte-level spelling, special added tokens as control tokens,
 * other added ones as user-defined, missing ids as unused "[PAD<id>]",
 * merges in rank order). Pre-tokenizers other than ByteLevel's own regex
 * are refused. bos/eos < 0 are left out. */
int egm_tok_to_gguf(const egm_tokenizer *t, int bos, int eos, egm_gguf_writer *w, egm_err *e);

int egm_tok_vocab_size(const egm_tokenizer *t);   /* max id + 1 */
/* id of a token string (e.g. "<|endoftext|>"), -1 if none. Vocab entries are
 * in their byte-level spelling ("\u0120the" for " the"). */
int egm_tok_id(const egm_tokenizer *t, const char *token);
/* The token string of an id (as in the file), NULL if none. */
const char *egm_tok_token(const egm_tokenizer *t, int id);
/* 1 if id is an added token marked "special" (what skip_special drops). */
int egm_tok_is_special(const egm_tokenizer *t, int id);

/* Encodes text (no special tokens added around it unless add_special and
 * the file's post_processor is a TemplateProcessing that adds them).
 * *ids is malloc'd; caller frees. Returns -1 on invalid UTF-8 input etc. */
int egm_tok_encode(const egm_tokenizer *t, const char *text, size_t len,
                   int add_special, int **ids, int *n, egm_err *e);

/* Decodes ids to a malloc'd NUL-terminated UTF-8 string; invalid byte
 * sequences become U+FFFD. skip_special drops special tokens. */
char *egm_tok_decode(const egm_tokenizer *t, const int *ids, int n,
                     int skip_special);

/* Streaming decoder: feed one id at a time, get only complete UTF-8
 * characters back; an incomplete multi-byte sequence is held until it
 * completes (or flushed as U+FFFD by egm_tok_stream_flush). Start from a
 * zeroed egm_tok_stream. Specials are emitted as their text; unknown ids are
 * ignored. */
typedef struct {
    unsigned char pend[8];
    int npend;
} egm_tok_stream;
/* Appends decoded bytes to out (capacity cap); returns bytes written. Not
 * NUL-terminated. A cap of egm_tok_stream_cap(t) always suffices; with less,
 * output that does not fit may be lost. */
size_t egm_tok_stream_cap(const egm_tokenizer *t);
size_t egm_tok_stream_feed(const egm_tokenizer *t, egm_tok_stream *s, int id,
                           char *out, size_t cap);
size_t egm_tok_stream_flush(egm_tok_stream *s, char *out, size_t cap);

#endif
