/* qdot_x86.c - AVX2 and AVX-512 (VNNI, BF16) copies of the dot kernels,
 * compiled for their instruction sets whatever the build's -march, and used
 * only when the running CPU has them (egm_qdot_*_ok). */
#include "kernels/qdot.h"

#include "kernels/matmul.h"
#include "kernels/ops.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* Every function of a region gets the region's instruction sets (GCC and
 * clang spell it differently). */
#ifdef __clang__
#define REGION_AVX2 \
    _Pragma("clang attribute push(__attribute__((target(\"avx2,fma,f16c\"))), apply_to = function)")
/* (one string literal: _Pragma takes no concatenation) */
#define REGION_AVX512 _Pragma("clang attribute push(__attribute__((target(\"avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bf16\"))), apply_to = function)")
#define REGION_END _Pragma("clang attribute pop")
#else
#define REGION_AVX2 _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,f16c\")")
#define REGION_AVX512                                                                     \
    _Pragma("GCC push_options")                                                            \
    _Pragma("GCC target(\"avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bf16\")")
#define REGION_END _Pragma("GCC pop_options")
#endif

REGION_AVX2
#define SFX(n) n##_avx2
#define VNNI 0
#include "kernels/qdot_x86_body.h"
#undef SFX
#undef VNNI
REGION_END

REGION_AVX512
#define SFX(n) n##_avx512
#define VNNI 1
#include "kernels/qdot_x86_body.h"
#undef SFX
#undef VNNI
REGION_END

static const egm_qdot_set set_avx2 = {
    "avx2", dot_f16_avx2, dot_bf16_avx2, dot_q8_0_avx2, dot_q4_0_avx2,
    dot_q4_1_avx2, dot_q5_0_avx2, dot_q5_1_avx2, dot_q4_K_avx2, dot_q5_K_avx2, dot_q6_K_avx2, deq_row_avx2,
    quant_a8_avx2,
};
static const egm_qdot_set set_avx512 = {
    "avx512", dot_f16_avx512, dot_bf16_avx512, dot_q8_0_avx512, dot_q4_0_avx512,
    dot_q4_1_avx512, dot_q5_0_avx512, dot_q5_1_avx512, dot_q4_K_avx512, dot_q5_K_avx512, dot_q6_K_avx512, deq_row_avx512,
    quant_a8_avx512,
};

const egm_qdot_set *egm_qdot_avx2(void) { return &set_avx2; }
const egm_qdot_set *egm_qdot_avx512(void) { return &set_avx512; }

int egm_qdot_avx2_ok(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

int egm_qdot_avx512_ok(void) {
    __builtin_cpu_init();
    return egm_qdot_avx2_ok() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bf16");
}
#else
const egm_qdot_set *egm_qdot_avx2(void) { return NULL; }
const egm_qdot_set *egm_qdot_avx512(void) { return NULL; }
int egm_qdot_avx2_ok(void) { return 0; }
int egm_qdot_avx512_ok(void) { return 0; }
#endif
