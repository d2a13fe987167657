/* rand_vec.h - seeded uniform test data for the kernel tests (include after
 * cmocka.h; define RAND_SEED first: each test keeps its own data). */
#ifndef EGM_TESTS_RAND_VEC_H
#define EGM_TESTS_RAND_VEC_H

#include <stdint.h>
#include <stdlib.h>

static uint64_t rs = RAND_SEED;

/* Uniform in [-1, 1): a 64-bit LCG's top 53 bits. */
static float frand(void) {
    rs = rs * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rs >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

/* n floats uniform in [-scale, scale), malloc'd. */
static float *rand_vec(long n, float scale) {
    float *v = malloc((size_t)n * sizeof *v);
    assert_non_null(v);
    for (long i = 0; i < n; i++) v[i] = frand() * scale;
    return v;
}

#endif
