/* gguf_export.h - a model written as GGUF in one storage type (`egmla
 * quantize`).
 *
 * The source is a checkpoint directory or a GGUF file; it is loaded as fp32
 * and written with general.architecture "llama", "deepseek2" (for
 * deepseek_v2) or "egmla", the keys and tensor names docs/LLAMACPP.md lists.
 * Matrices take the requested type (falling back to Q8_0, then F16, when
 * their rows are not a whole number of blocks); vectors (norms, biases)
 * stay F32, as llama.cpp keeps them. Llama and deepseek2 files follow
 * llama.cpp's RoPE convention (adjacent pairs): rows of q/k (the RoPE part
 * for MLA) are permuted when the model rotates halves (rope_interleave 0),
 * as convert_hf_to_gguf.py does; deepseek2's kv_b is split into attn_k_b /
 * attn_v_b as current llama.cpp expects. The tokenizer goes along:
 * tokenizer.json as llama.cpp's converter writes it, or a GGUF source's
 * tokenizer.* keys as they are. */
#ifndef EGM_GGUF_EXPORT_H
#define EGM_GGUF_EXPORT_H

#include "base/err.h"

/* "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q4_k", "q6_k" -> ggml type
 * id; -1 if none. */
int egm_gguf_type_from_name(const char *name);

/* Writes src as a GGUF file at out in storage type `type`. */
int egm_gguf_export(const char *src, const char *out, int type, egm_err *e);

#endif
