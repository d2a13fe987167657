/* source.h - where a model comes from: a checkpoint directory (MODEL.md) or
 * a GGUF file. Commands take either as --model; these give the config and
 * the tokenizer without loading weights (rank 0 of the MPI pipeline, info). */
#ifndef EGM_SOURCE_H
#define EGM_SOURCE_H

#include "config.h"
#include "base/err.h"
#include "tokenizer.h"

/* The config: dir/config.json, or the GGUF metadata. */
int egm_model_config(const char *path, egm_config *c, egm_err *e);

/* The tokenizer: dir/tokenizer.json (optional: *tok = NULL and 0 when it is
 * absent), or the GGUF's tokenizer.ggml.* metadata (required). */
int egm_model_tokenizer(const char *path, egm_tokenizer **tok, egm_err *e);

#endif
