/* kvcache.h - the paged KV cache of one stage, bounded by a byte budget.
 *
 * The pool is cut into blocks of `block_tokens` positions. A block holds,
 * for every local layer, block_tokens rows of `elems` values (llama:
 * 2*Hkv*dh = k then v; MLA/EG-MLA: d_c + dr = latent then rope key), stored
 * as fp32 or bf16, and for EG-MLA one int32 token id per position (shared by
 * all layers). Layout of a block:
 *     [ids: B x int32 (EG-MLA only)] [layer 0: B x elems] [layer 1] ...
 * A sequence owns a list of blocks; positions p live in block p / B at
 * row p % B. Nothing else is allocated per token, so bytes per token is
 * exactly block_bytes / B, which is what `egmla info` reports. */
#ifndef EGM_KVCACHE_H
#define EGM_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int n_layers;        /* local layers */
    int elems;           /* values per token per layer */
    int has_ids;         /* EG-MLA: store token ids */
    int block_tokens;    /* B */
    int bf16;            /* storage: 0 fp32, 1 bf16 */
    size_t block_bytes;
    int n_blocks;        /* total blocks in the pool */
    int n_free;
    int *free_stack;     /* block ids, free_stack[0..n_free) */
    uint8_t *pool;       /* n_blocks * block_bytes, allocated at init */
} egm_kv_pool;

typedef struct {
    int *blocks;         /* block ids in position order */
    int n_blocks, cap;
    int n_tokens;        /* positions written so far (managed by caller) */
} egm_kv_seq;

/* Bytes one token costs in a pool of this shape (exact, no rounding). */
size_t egm_kv_bytes_per_token(int n_layers, int elems, int has_ids, int bf16);
/* Blocks of size B that `budget` bytes hold. */
int egm_kv_blocks_for_budget(size_t budget, int n_layers, int elems,
                             int has_ids, int bf16, int block_tokens);

/* Returns -1 if the budget does not hold a single block or memory fails. */
int egm_kv_init(egm_kv_pool *p, int n_layers, int elems, int has_ids,
                int block_tokens, int bf16, size_t budget_bytes);
void egm_kv_free(egm_kv_pool *p);

/* Blocks needed for n_tokens positions. */
int egm_kv_blocks_needed(const egm_kv_pool *p, int n_tokens);
/* Makes sure s has room for n_tokens positions: allocates all missing blocks
 * or none. Returns -1 (and changes nothing) if the pool lacks blocks. */
int egm_kv_reserve(egm_kv_pool *p, egm_kv_seq *s, int n_tokens);
/* Copies positions [0, n) of `from` into `to`, every layer and the ids:
 * whole blocks, so rows of the last block past n come along and are
 * overwritten when `to` writes them. Both must hold n positions already
 * (and be distinct sequences); returns -1, copying nothing, otherwise. */
int egm_kv_copy_prefix(egm_kv_pool *p, const egm_kv_seq *from, const egm_kv_seq *to, int n);
/* Returns all blocks of s to the pool and resets s. */
void egm_kv_release(egm_kv_pool *p, egm_kv_seq *s);

/* Row access. pos must be < reserved capacity. */
void egm_kv_write(egm_kv_pool *p, const egm_kv_seq *s, int layer, int pos,
                  const float *row);
/* Copies rows [p0, p1) of one layer into out[(p1-p0) * elems] as fp32. */
void egm_kv_gather(const egm_kv_pool *p, const egm_kv_seq *s, int layer,
                   int p0, int p1, float *out);
/* Columns [c0, c1) of those rows only, as fp32, at their offsets in rows
 * of elems values (the other columns of out untouched). */
void egm_kv_gather_cols(const egm_kv_pool *p, const egm_kv_seq *s, int layer, int p0, int p1,
                        int c0, int c1, float *out);
void egm_kv_set_id(egm_kv_pool *p, const egm_kv_seq *s, int pos, int id);
int egm_kv_get_id(const egm_kv_pool *p, const egm_kv_seq *s, int pos);
/* Copies the token ids of positions [p0, p1) into out[p1 - p0]. */
void egm_kv_gather_ids(const egm_kv_pool *p, const egm_kv_seq *s, int p0, int p1,
                       int *out);
/* Zero-copy access: the storage of row pos of one layer (float * for fp32,
 * uint16_t * bf16 for bf16). Rows pos .. up to the end of its block (the next
 * multiple of B) follow contiguously, elems values each. */
void *egm_kv_row(const egm_kv_pool *p, const egm_kv_seq *s, int layer, int pos);

#endif
