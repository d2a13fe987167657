/* sampling.h - choosing the next token from logits. Pure: no I/O.
 *
 * Order of operations (as Hugging Face's generate applies its processors):
 * repetition penalty, temperature, top-k, top-p, min-p, then a draw from the
 * per-request generator. temperature == 0 is greedy (argmax after the
 * repetition penalty). Each request owns its generator, so a request with a
 * given seed yields the same tokens whatever else shares its batch. */
#ifndef EGM_SAMPLING_H
#define EGM_SAMPLING_H

#include <stdint.h>

typedef struct {
    float temperature;        /* 0: greedy; default 1 */
    int top_k;                /* 0: off */
    float top_p;              /* 1: off */
    float min_p;              /* 0: off */
    float repetition_penalty; /* 1: off */
    uint64_t seed;
} egm_sampling;

void egm_sampling_default(egm_sampling *p);
/* Returns NULL if valid, else a static message naming the bad field. */
const char *egm_sampling_check(const egm_sampling *p);

typedef struct { uint64_t s[4]; } egm_rng;   /* xoshiro256** */
void egm_rng_seed(egm_rng *r, uint64_t seed);
uint64_t egm_rng_next(egm_rng *r);
double egm_rng_uniform(egm_rng *r);          /* [0, 1) */

/* Picks a token. logits[V] is modified (used as scratch). history holds the
 * token ids the repetition penalty applies to (prompt + generated; each
 * distinct id once, ids outside [0, V) ignored). scratch: at least V ints.
 * As in HF, top-k keeps every token tied with the k-th; top_k == 1 is greedy.
 * NaN and -inf logits are never drawn; +inf ones take all the mass. */
int egm_sample(float *logits, int V, const egm_sampling *p, const int *history,
               int n_history, egm_rng *rng, int *scratch);

#endif
