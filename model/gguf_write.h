/* gguf_write.h - building a GGUF file (llama.cpp's format), version 3.
 *
 * Metadata is serialised as it is added; tensors are copied in and laid out
 * at write time, each at an offset aligned to 32 bytes (general.alignment's
 * default). The file is written to "<path>.tmp" and renamed into place, so a
 * failed run never leaves a truncated file under the final name. Keys and
 * tensor names must be unique (checked). */
#ifndef EGM_GGUF_WRITE_H
#define EGM_GGUF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "gguf.h"

typedef struct egm_gguf_writer egm_gguf_writer;

egm_gguf_writer *egm_gguf_writer_new(void); /* NULL when out of memory */
void egm_gguf_writer_free(egm_gguf_writer *w);

/* Scalars. Return 0, or -1 with a message (duplicate key, out of memory). */
int egm_gguf_w_str(egm_gguf_writer *w, const char *key, const char *v, egm_err *e);
int egm_gguf_w_u32(egm_gguf_writer *w, const char *key, uint32_t v, egm_err *e);
int egm_gguf_w_i32(egm_gguf_writer *w, const char *key, int32_t v, egm_err *e);
int egm_gguf_w_f32(egm_gguf_writer *w, const char *key, float v, egm_err *e);
int egm_gguf_w_bool(egm_gguf_writer *w, const char *key, int v, egm_err *e);
/* Arrays: n strings (lens[i] bytes each; lens NULL means NUL-terminated),
 * or n numbers of a scalar type (EGM_GGUF_I32, EGM_GGUF_F32, ...). */
int egm_gguf_w_arr_str(egm_gguf_writer *w, const char *key, const char *const *s,
                       const uint64_t *lens, uint64_t n, egm_err *e);
int egm_gguf_w_arr(egm_gguf_writer *w, const char *key, int elem_type, const void *v,
                   uint64_t n, egm_err *e);
/* Copies a key/value of another file as it is. */
int egm_gguf_w_copy(egm_gguf_writer *w, const egm_gguf_kv *kv, egm_err *e);

/* A tensor of ggml type `type` with ne[0..ndim) (ne[0] fastest) whose
 * nbytes of data are copied. */
int egm_gguf_w_tensor(egm_gguf_writer *w, const char *name, int type, int ndim,
                      const int64_t *ne, const void *data, size_t nbytes, egm_err *e);

int egm_gguf_w_write(egm_gguf_writer *w, const char *path, egm_err *e);

#endif
