/* kvcache.c - the paged KV cache: one pool allocated up front, cut into
 * blocks of B positions, handed to sequences from a free stack.
 *
 * Block layout (see kvcache.h): [ids: B x int32][layer 0: B rows][layer 1]...
 * so the rows of one layer inside a block are contiguous, and a gather is
 * one memcpy (or one bf16 conversion) per block. */
#include "worker/kvcache.h"
#include "kernels/ops.h"

#include <assert.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(sizeof(int) == 4, "token ids are stored as int32");

static size_t elem_size(int bf16) { return bf16 ? 2 : 4; }

size_t egm_kv_bytes_per_token(int n_layers, int elems, int has_ids, int bf16) {
    if (n_layers < 0 || elems < 0) return 0;
    return (size_t)n_layers * (size_t)elems * elem_size(bf16) + (has_ids ? 4 : 0);
}

/* Block bytes, or 0 if the shape is invalid or overflows size_t. */
static size_t block_bytes(int n_layers, int elems, int has_ids, int bf16, int B) {
    if (n_layers < 1 || elems < 1 || B < 1) return 0;
    if ((size_t)elems > SIZE_MAX / 8 / (size_t)n_layers) return 0;
    size_t per = egm_kv_bytes_per_token(n_layers, elems, has_ids, bf16);
    if (per > SIZE_MAX / (size_t)B) return 0;
    return per * (size_t)B;
}

int egm_kv_blocks_for_budget(size_t budget, int n_layers, int elems,
                             int has_ids, int bf16, int block_tokens) {
    size_t bb = block_bytes(n_layers, elems, has_ids, bf16, block_tokens);
    if (bb == 0) return 0;
    size_t n = budget / bb;
    return n > (size_t)INT_MAX ? INT_MAX : (int)n;
}

int egm_kv_init(egm_kv_pool *p, int n_layers, int elems, int has_ids,
                int block_tokens, int bf16, size_t budget_bytes) {
    memset(p, 0, sizeof *p);
    int n = egm_kv_blocks_for_budget(budget_bytes, n_layers, elems, has_ids, bf16,
                                     block_tokens);
    if (n < 1) return -1;
    p->n_layers = n_layers;
    p->elems = elems;
    p->has_ids = has_ids ? 1 : 0;
    p->block_tokens = block_tokens;
    p->bf16 = bf16 ? 1 : 0;
    p->block_bytes = block_bytes(n_layers, elems, has_ids, bf16, block_tokens);
    /* calloc: the whole budget up front, but a large one is fresh zeroed
     * pages the kernel commits only when touched. Unwritten rows read 0. */
    p->pool = calloc((size_t)n, p->block_bytes);
    p->free_stack = malloc((size_t)n * sizeof *p->free_stack);
    if (!p->pool || !p->free_stack) {
        egm_kv_free(p);
        return -1;
    }
    /* Pop order 0, 1, 2, ...: low blocks first. */
    for (int i = 0; i < n; i++) p->free_stack[i] = n - 1 - i;
    p->n_blocks = n;
    p->n_free = n;
    return 0;
}

void egm_kv_free(egm_kv_pool *p) {
    free(p->pool);
    free(p->free_stack);
    memset(p, 0, sizeof *p);
}

int egm_kv_blocks_needed(const egm_kv_pool *p, int n_tokens) {
    if (n_tokens <= 0) return 0;
    return (int)(((long long)n_tokens + p->block_tokens - 1) / p->block_tokens);
}

int egm_kv_reserve(egm_kv_pool *p, egm_kv_seq *s, int n_tokens) {
    int need = egm_kv_blocks_needed(p, n_tokens) - s->n_blocks;
    if (need <= 0) return 0;
    if (need > p->n_free) return -1;
    if (s->n_blocks + need > s->cap) {
        int cap = s->cap ? s->cap : 4;
        while (cap < s->n_blocks + need) cap = cap > INT_MAX / 2 ? INT_MAX : cap * 2;
        int *b = realloc(s->blocks, (size_t)cap * sizeof *b);
        if (!b) return -1; /* s unchanged */
        s->blocks = b;
        s->cap = cap;
    }
    for (int i = 0; i < need; i++) s->blocks[s->n_blocks++] = p->free_stack[--p->n_free];
    return 0;
}

int egm_kv_copy_prefix(egm_kv_pool *p, const egm_kv_seq *from, const egm_kv_seq *to, int n) {
    int nb = egm_kv_blocks_needed(p, n);
    if (n < 0 || from == to || from->n_blocks < nb || to->n_blocks < nb) return -1;
    for (int i = 0; i < nb; i++)
        memcpy(p->pool + (size_t)to->blocks[i] * p->block_bytes,
               p->pool + (size_t)from->blocks[i] * p->block_bytes, p->block_bytes);
    return 0;
}

void egm_kv_release(egm_kv_pool *p, egm_kv_seq *s) {
    /* Pushed in reverse so the next reserve gets them back in the same order. */
    for (int i = s->n_blocks - 1; i >= 0; i--) {
        assert(p->n_free < p->n_blocks);
        p->free_stack[p->n_free++] = s->blocks[i];
    }
    free(s->blocks);
    memset(s, 0, sizeof *s);
}

/* Start of rows [row, B) of `layer` in the block holding pos. */
static uint8_t *row_ptr(const egm_kv_pool *p, const egm_kv_seq *s, int layer, int pos) {
    int B = p->block_tokens;
    assert(pos >= 0 && pos / B < s->n_blocks && layer >= 0 && layer < p->n_layers);
    size_t es = elem_size(p->bf16);
    uint8_t *blk = p->pool + (size_t)s->blocks[pos / B] * p->block_bytes;
    size_t off = (p->has_ids ? (size_t)B * 4 : 0) +
                 ((size_t)layer * B + (size_t)(pos % B)) * (size_t)p->elems * es;
    return blk + off;
}

void *egm_kv_row(const egm_kv_pool *p, const egm_kv_seq *s, int layer, int pos) {
    return row_ptr(p, s, layer, pos);
}

void egm_kv_write(egm_kv_pool *p, const egm_kv_seq *s, int layer, int pos,
                  const float *row) {
    uint8_t *dst = row_ptr(p, s, layer, pos);
    if (p->bf16) egm_f32_to_bf16_n((uint16_t *)(void *)dst, row, (size_t)p->elems);
    else memcpy(dst, row, (size_t)p->elems * sizeof(float));
}

void egm_kv_gather(const egm_kv_pool *p, const egm_kv_seq *s, int layer,
                   int p0, int p1, float *out) {
    int B = p->block_tokens;
    size_t E = (size_t)p->elems;
    for (int pos = p0; pos < p1;) {
        int run = B - pos % B; /* rows left in this block */
        if (run > p1 - pos) run = p1 - pos;
        const uint8_t *src = row_ptr(p, s, layer, pos);
        if (p->bf16) egm_bf16_to_f32_n(out, (const uint16_t *)(const void *)src, run * E);
        else memcpy(out, src, run * E * sizeof(float));
        out += run * E;
        pos += run;
    }
}

/* The id slot of pos: the first B * 4 bytes of its block. */
static uint8_t *id_ptr(const egm_kv_pool *p, const egm_kv_seq *s, int pos) {
    int B = p->block_tokens;
    assert(p->has_ids && pos >= 0 && pos / B < s->n_blocks);
    return p->pool + (size_t)s->blocks[pos / B] * p->block_bytes + (size_t)(pos % B) * 4;
}

void egm_kv_set_id(egm_kv_pool *p, const egm_kv_seq *s, int pos, int id) {
    int32_t v = id;
    memcpy(id_ptr(p, s, pos), &v, 4);
}

int egm_kv_get_id(const egm_kv_pool *p, const egm_kv_seq *s, int pos) {
    int32_t v;
    memcpy(&v, id_ptr(p, s, pos), 4);
    return v;
}

void egm_kv_gather_cols(const egm_kv_pool *p, const egm_kv_seq *s, int layer, int p0, int p1,
                        int c0, int c1, float *out) {
    size_t E = (size_t)p->elems, n = (size_t)(c1 - c0), es = elem_size(p->bf16);
    for (int pos = p0; pos < p1; pos++, out += E) {
        const uint8_t *src = row_ptr(p, s, layer, pos) + (size_t)c0 * es;
        if (p->bf16) egm_bf16_to_f32_n(out + c0, (const uint16_t *)(const void *)src, n);
        else memcpy(out + c0, src, n * sizeof(float));
    }
}

void egm_kv_gather_ids(const egm_kv_pool *p, const egm_kv_seq *s, int p0, int p1,
                       int *out) {
    int B = p->block_tokens;
    for (int pos = p0; pos < p1;) {
        int run = B - pos % B;
        if (run > p1 - pos) run = p1 - pos;
        memcpy(out, id_ptr(p, s, pos), (size_t)run * 4); /* int is int32 here */
        out += run;
        pos += run;
    }
}
