/* sampling.c - next-token choice: repetition penalty, temperature, top-k,
 * top-p, min-p and a draw from the request's own xoshiro256** generator.
 *
 * Candidates live as token ids in `scratch`. With V around 50k, nothing sorts
 * the whole vocabulary: top-k is a quickselect, and top-p sorts only the
 * candidates that sit where the mass crosses top_p. Candidates are ranked by
 * (probability desc, id asc), a total order, so every step is deterministic
 * whatever the partition/sort algorithm does. */
#include "kernels/sampling.h"
#include "kernels/ops.h"

#include <float.h>
#include <math.h>
#include <string.h>

void egm_sampling_default(egm_sampling *p) {
    p->temperature = 1.0f;
    p->top_k = 0;
    p->top_p = 1.0f;
    p->min_p = 0.0f;
    p->repetition_penalty = 1.0f;
    p->seed = 0;
}

const char *egm_sampling_check(const egm_sampling *p) {
    if (!(p->temperature >= 0.0f && isfinite(p->temperature)))
        return "temperature: expected a finite value >= 0";
    if (p->top_k < 0) return "top_k: expected an integer >= 0 (0 = off)";
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return "top_p: expected 0 < top_p <= 1 (1 = off)";
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return "min_p: expected 0 <= min_p <= 1 (0 = off)";
    if (!(p->repetition_penalty > 0.0f && isfinite(p->repetition_penalty)))
        return "repetition_penalty: expected a finite value > 0 (1 = off)";
    return NULL;
}

/* ------------------------------------------------------------------- rng */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The state is four splitmix64 outputs, never all zero. */
void egm_rng_seed(egm_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t egm_rng_next(egm_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* Top 53 bits as a double in [0, 1). */
double egm_rng_uniform(egm_rng *r) { return (double)(egm_rng_next(r) >> 11) * 0x1.0p-53; }

/* ------------------------------------------------------------ selection */

/* a ranks before b: larger logit, then smaller id. */
static inline int before(const float *l, int a, int b) {
    return l[a] > l[b] || (l[a] == l[b] && a < b);
}

static inline void swap(int *a, int *b) { int t = *a; *a = *b; *b = t; }

/* Partitions idx[0, n) so that idx[0, k) are the k best in rank order
 * (unsorted among themselves). Quickselect with a median-of-three pivot. */
static void select_top(const float *l, int *idx, int n, int k) {
    int lo = 0, hi = n - 1;
    while (hi > lo) {
        int mid = lo + (hi - lo) / 2;
        /* order idx[lo], idx[mid], idx[hi]; the median goes to hi as pivot */
        if (before(l, idx[mid], idx[lo])) swap(&idx[mid], &idx[lo]);
        if (before(l, idx[hi], idx[lo])) swap(&idx[hi], &idx[lo]);
        if (before(l, idx[mid], idx[hi])) swap(&idx[mid], &idx[hi]);
        int pv = idx[hi], store = lo;
        for (int i = lo; i < hi; i++)
            if (before(l, idx[i], pv)) swap(&idx[i], &idx[store++]);
        swap(&idx[store], &idx[hi]);
        /* idx[store] is now in its final ranked place */
        if (store == k - 1 || store == k) return;
        if (store > k) hi = store - 1;
        else lo = store + 1;
    }
}

/* Sorts idx[0, n) in rank order: insertion sort for short runs, else a
 * quicksort on the same total order. */
static void sort_rank(const float *l, int *idx, int n) {
    while (n > 16) {
        select_top(l, idx, n, n / 2); /* idx[n/2 - 1] or idx[n/2] is a pivot */
        int m = n / 2;
        sort_rank(l, idx + m, n - m); /* recurse on one half, loop on the other */
        n = m;
    }
    for (int i = 1; i < n; i++) {
        int v = idx[i], j = i;
        while (j > 0 && before(l, v, idx[j - 1])) { idx[j] = idx[j - 1]; j--; }
        idx[j] = v;
    }
}

/* Top-p bucket of a weight w in (0, 1]: the bits of a positive float grow
 * with it; keep the exponent and 4 mantissa bits. */
static inline int bucket(float w) {
    uint32_t u;
    memcpy(&u, &w, 4);
    return (int)(u >> 19);
}

/* ---------------------------------------------------------------- sample */

int egm_sample(float *logits, int V, const egm_sampling *p, const int *history,
               int n_history, egm_rng *rng, int *scratch) {
    if (V <= 1) return 0;
    float *l = logits;

    /* Repetition penalty (HF): once per distinct token id, whatever its count. */
    if (p->repetition_penalty != 1.0f && n_history > 0) {
        float r = p->repetition_penalty;
        memset(scratch, 0, (size_t)V * sizeof *scratch);
        for (int i = 0; i < n_history; i++) {
            int t = history[i];
            if (t < 0 || t >= V || scratch[t]) continue;
            scratch[t] = 1;
            l[t] = l[t] > 0.0f ? l[t] / r : l[t] * r;
        }
    }

    if (p->temperature == 0.0f || p->top_k == 1) return egm_argmax(l, V);

    /* Temperature, then make every logit comparable: NaN never wins, +inf
     * becomes the largest finite value so logit - max stays finite. */
    int n = 0;
    for (int i = 0; i < V; i++) {
        float v = p->temperature == 1.0f ? l[i] : l[i] / p->temperature;
        if (v != v) v = -INFINITY;
        else if (v > FLT_MAX) v = FLT_MAX;
        l[i] = v;
        if (v > -INFINITY) scratch[n++] = i; /* -inf has probability 0 */
    }
    if (n == 0) return egm_argmax(l, V);
    int *idx = scratch;

    /* Top-k. HF removes scores < the k-th score, so ties with it stay. */
    if (p->top_k > 0 && p->top_k < n) {
        int k = p->top_k;
        select_top(l, idx, n, k);
        float kth = l[idx[0]];
        for (int i = 1; i < k; i++)
            if (l[idx[i]] < kth) kth = l[idx[i]];
        for (int i = k; i < n; i++)
            if (l[idx[i]] == kth) swap(&idx[i], &idx[k++]);
        n = k;
    }

    /* From here on the candidates' logits are replaced by unnormalised
     * probabilities w = exp(l - max) in (0, 1]: same order, computed once. */
    float max = l[idx[0]];
    for (int i = 1; i < n; i++)
        if (l[idx[i]] > max) max = l[idx[i]];
    double Z = 0.0;
    for (int i = 0; i < n; i++) {
        l[idx[i]] = expf(l[idx[i]] - max);
        Z += l[idx[i]];
    }

    /* Top-p: keep the best tokens until their mass reaches top_p (at least
     * one). Membership needs order only where the mass crosses top_p, so
     * weights go into buckets by their float bits (monotone: 1/16 octave
     * each), whole buckets are kept or dropped, and only the boundary bucket
     * is sorted. */
    if (p->top_p < 1.0f && n > 1) {
        enum { NB = (0x3f800000 >> 19) + 1 };
        double mass[NB] = {0};
        double target = (double)p->top_p * Z, cum = 0.0;
        for (int i = 0; i < n; i++) mass[bucket(l[idx[i]])] += l[idx[i]];
        int bb = NB - 1;
        for (; bb > 0; bb--) {
            if (cum + mass[bb] >= target) break;
            cum += mass[bb];
        }
        /* buckets above bb first, then bb's members */
        int m = 0;
        for (int i = 0; i < n; i++)
            if (bucket(l[idx[i]]) > bb) swap(&idx[i], &idx[m++]);
        int c = m;
        for (int i = m; i < n; i++)
            if (bucket(l[idx[i]]) == bb) swap(&idx[i], &idx[c++]);
        sort_rank(l, idx + m, c - m);
        while (m < c && (m == 0 || cum < target)) cum += l[idx[m++]];
        n = m;
        Z = cum;
    }

    /* Min-p: drop p_i < min_p * p_max, i.e. w_i < min_p. The max itself
     * always stays (w = 1 >= min_p). */
    if (p->min_p > 0.0f) {
        int m = 0;
        Z = 0.0;
        for (int i = 0; i < n; i++)
            if (!(l[idx[i]] < p->min_p)) {
                idx[m++] = idx[i];
                Z += l[idx[i]];
            }
        n = m;
    }

    /* Draw: inverse CDF over the survivors, in their current order. */
    double u = egm_rng_uniform(rng) * Z, cum = 0.0;
    for (int i = 0; i < n; i++) {
        cum += l[idx[i]];
        if (u < cum) return idx[i];
    }
    return idx[n - 1];
}
