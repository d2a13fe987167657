/* checkpoint.h - memory-mapped safetensors checkpoints (MODEL.md).
 *
 * Opens model.safetensors, or model.safetensors.index.json and its shards,
 * maps every file read-only and validates every header completely before
 * anything is used: header length within the file, JSON well formed, dtype
 * known, shape * itemsize == byte length, offsets inside the data section
 * and not overlapping. Tensor data is only touched when the caller reads it,
 * so a pipeline stage pays only for the layers it uses. */
#ifndef EGM_CHECKPOINT_H
#define EGM_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef enum { EGM_DT_F32 = 0, EGM_DT_BF16 = 1, EGM_DT_F16 = 2 } egm_dtype;

#define EGM_MAX_DIMS 8

typedef struct {
    const char *name;
    egm_dtype dtype;
    int ndim;
    int64_t shape[EGM_MAX_DIMS];
    const uint8_t *data;   /* points into the mapping */
    size_t nbytes;
    const char *file;      /* path of the file holding it (for messages) */
} egm_tensor;

typedef struct egm_ckpt egm_ckpt;

/* dir: a model directory. Fails with a message naming the file. */
int egm_ckpt_open(const char *dir, egm_ckpt **out, egm_err *e);
/* Opens one .safetensors file directly (used by tests and fuzzers). */
int egm_ckpt_open_file(const char *path, egm_ckpt **out, egm_err *e);
void egm_ckpt_close(egm_ckpt *ck);
/* The directory (or file, for open_file) it was opened from, for messages. */
const char *egm_ckpt_origin(const egm_ckpt *ck);

const egm_tensor *egm_ckpt_get(const egm_ckpt *ck, const char *name); /* NULL if absent */
int egm_ckpt_count(const egm_ckpt *ck);
const egm_tensor *egm_ckpt_at(const egm_ckpt *ck, int i); /* in name order; NULL out of range */

size_t egm_dtype_size(egm_dtype t);
const char *egm_dtype_name(egm_dtype t);

/* Converts n elements of any stored dtype to fp32. */
void egm_to_f32(float *dst, const void *src, egm_dtype t, size_t n);

#endif
