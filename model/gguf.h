/* gguf.h - GGUF files (llama.cpp's model format), read-only and validated.
 *
 * A GGUF file is one mapping: header ("GGUF", version 2 or 3, tensor and
 * key counts), typed metadata key/values, a tensor table (name, dims with
 * ne[0] the fastest, ggml type, offset), then the aligned data section.
 * egm_gguf_open checks all of it before anything is used: every length
 * inside the file, counts that the remaining bytes can hold, known value and
 * tensor types, offsets aligned, in range and not overlapping, no duplicate
 * keys or tensor names. Messages name the file and the key or tensor.
 *
 * A 2-D tensor with ne = [in, out] is a row-major [out, in] matrix, which is
 * the engine's nn.Linear layout; egm_gguf_to_f32 dequantises any supported
 * type (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K) to fp32. */
#ifndef EGM_GGUF_H
#define EGM_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "base/err.h"
#include "kernels/quant.h" /* EGM_GGML_* type ids and block layouts */

/* Metadata value types (the file's numbering). */
enum {
    EGM_GGUF_U8 = 0, EGM_GGUF_I8 = 1, EGM_GGUF_U16 = 2, EGM_GGUF_I16 = 3,
    EGM_GGUF_U32 = 4, EGM_GGUF_I32 = 5, EGM_GGUF_F32 = 6, EGM_GGUF_BOOL = 7,
    EGM_GGUF_STRING = 8, EGM_GGUF_ARRAY = 9, EGM_GGUF_U64 = 10, EGM_GGUF_I64 = 11,
    EGM_GGUF_F64 = 12,
};


typedef struct {
    const char *key;
    int type;               /* EGM_GGUF_* */
    int arr_type;           /* element type when type is ARRAY */
    uint64_t n;             /* array length (1 for scalars) */
    const uint8_t *data;    /* scalar value or first array element, in the mapping */
    /* strings (scalar or array elements): pointers into the mapping, not
     * NUL-terminated */
    const char **str;
    uint64_t *len;
} egm_gguf_kv;

typedef struct {
    const char *name;
    int type;               /* ggml type */
    int ndim;
    int64_t ne[4];          /* ne[0] fastest (in_features of a matrix) */
    uint64_t offset;        /* within the data section */
    const uint8_t *data;
    size_t nbytes;
} egm_gguf_tensor;

typedef struct egm_gguf egm_gguf;

/* 1 if path is a regular file that starts with the GGUF magic, or whose
 * name ends in ".gguf" (so a broken .gguf gets GGUF's error messages). */
int egm_gguf_is_file(const char *path);

int egm_gguf_open(const char *path, egm_gguf **out, egm_err *e);
void egm_gguf_close(egm_gguf *g);
const char *egm_gguf_path(const egm_gguf *g);
int egm_gguf_version(const egm_gguf *g);

/* Metadata. NULL if absent. */
const egm_gguf_kv *egm_gguf_kv_get(const egm_gguf *g, const char *key);
int egm_gguf_kv_count(const egm_gguf *g);
const egm_gguf_kv *egm_gguf_kv_at(const egm_gguf *g, int i);

/* Typed getters: any integer type for ints (range-checked), F32/F64 for
 * floats, BOOL, STRING. Missing and !required: *out = def, returns 0.
 * Errors read "<file>: key \"k\": expected <what>, found <what>". */
int egm_gguf_get_int(const egm_gguf *g, const char *key, int required, long long def,
                     long long min, long long max, long long *out, egm_err *e);
int egm_gguf_get_float(const egm_gguf *g, const char *key, int required, double def,
                       double *out, egm_err *e);
int egm_gguf_get_bool(const egm_gguf *g, const char *key, int required, int def, int *out,
                      egm_err *e);
/* *s is a malloc'd NUL-terminated copy (NULL when missing and optional). */
int egm_gguf_get_str(const egm_gguf *g, const char *key, int required, char **s,
                     egm_err *e);
/* An array of the given element type (-1: any integer type); *kv points at
 * it. Missing and !required: *kv = NULL, returns 0. */
int egm_gguf_get_arr(const egm_gguf *g, const char *key, int required, int elem_type,
                     const egm_gguf_kv **kv, egm_err *e);
/* Element i of an integer array as int64 (any integer element type). */
long long egm_gguf_arr_int(const egm_gguf_kv *kv, uint64_t i);

/* Tensors, in file order. */
int egm_gguf_tensor_count(const egm_gguf *g);
const egm_gguf_tensor *egm_gguf_tensor_at(const egm_gguf *g, int i);
const egm_gguf_tensor *egm_gguf_tensor_get(const egm_gguf *g, const char *name);
size_t egm_gguf_tensor_elems(const egm_gguf_tensor *t);

/* 1 if egm_gguf_to_f32 handles the type. */
int egm_ggml_type_supported(int type);

/* Dequantises all of t into dst (egm_gguf_tensor_elems(t) floats). */
void egm_gguf_to_f32(const egm_gguf_tensor *t, float *dst);

/* A llama config from the file's metadata (general.architecture "llama",
 * llama.* keys, vocabulary size from tokenizer.ggml.tokens, end-of-generation
 * ids as llama.cpp picks them). GGUF llama Q/K weights are permuted for
 * llama.cpp's adjacent-pair RoPE, so rope_interleave is 1; tie_word_embeddings
 * is 1 when output.weight is absent. Defined in config.c. */
int egm_config_from_gguf(const egm_gguf *g, egm_config *c, egm_err *e);

/* 1 for the token texts llama.cpp ends generation on whatever the file says
 * ("<|im_end|>", "<|eot_id|>", ...); it also makes them control tokens.
 * Defined in config.c. */
int egm_gguf_is_eog_text(const char *s, size_t len);

/* Fingerprint of a GGUF model, in egm_model_fingerprint's format
 * "CCCCCCCCCCCCCCCC-WWWWWWWWWWWWWWWW": a hash of the header and metadata
 * bytes, then (with_weights) one of the file size and the tensor table. */
int egm_gguf_fingerprint(const char *path, int with_weights, char out[40], egm_err *e);

#endif
