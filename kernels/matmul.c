/* matmul.c - egm_mat_mul: F32 to egm_gemm, few rows to the dot kernels,
 * many rows to sgemm over dequantised tiles (see matmul.h).
 *
 * Why tiles into sgemm for many rows: once x has more than a few rows the
 * product is compute-bound, and OpenBLAS's sgemm runs near this CPU's fp32
 * peak; dequantising a tile of W costs O(rows*cols) against the GEMM's
 * O(M*rows*cols), so for M >= 16 it is a few percent (docs/BENCHMARKS.md). */
#include "kernels/matmul.h"

#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/ops.h"
#include "kernels/qdot.h"

egm_mat egm_mat_f32(const float *w, int rows, int cols) {
    return (egm_mat){EGM_GGML_F32, rows, cols, w, (size_t)cols * sizeof(float)};
}

egm_mat egm_mat_of(int type, const void *data, int rows, int cols) {
    return (egm_mat){type, rows, cols, data, egm_qtype_row_bytes(type, cols)};
}

size_t egm_mat_bytes(const egm_mat *W) { return (size_t)W->rows * W->row_bytes; }

void egm_mat_row(const egm_mat *W, int r, float *dst) {
    egm_dequant_row(W->type, (const char *)W->data + (size_t)r * W->row_bytes, dst, W->cols);
}

/* ---- kernel set -------------------------------------------------------- */

static const egm_qdot_set *g_set;

static const egm_qdot_set *best_set(const char *want) {
    int portable = want && !strcmp(want, "portable"), only2 = want && !strcmp(want, "avx2");
    if (!portable && !only2 && egm_qdot_avx512() && egm_qdot_avx512_ok()) return egm_qdot_avx512();
    if (!portable && egm_qdot_avx2() && egm_qdot_avx2_ok()) return egm_qdot_avx2();
    return &egm_qdot_ref;
}

static const egm_qdot_set *kernel_set(void) {
    const egm_qdot_set *s = __atomic_load_n(&g_set, __ATOMIC_ACQUIRE);
    if (!s) {
        s = best_set(getenv("EGMLA_KERNELS"));
        __atomic_store_n(&g_set, s, __ATOMIC_RELEASE);
    }
    return s;
}

const char *egm_kernels_name(void) { return kernel_set()->name; }

int egm_kernels_force(const char *name) {
    const egm_qdot_set *s = best_set(name);
    if (strcmp(s->name, name)) return -1;
    __atomic_store_n(&g_set, s, __ATOMIC_RELEASE);
    return 0;
}

/* ---- threading --------------------------------------------------------- */

typedef void (*range_fn)(void *ctx, int lo, int hi);

/* Splits [0, n) into one contiguous range per thread. The one place that
 * knows how work is spread, so another thread pool can replace it. */
static void par_ranges(int n, int threads, range_fn fn, void *ctx) {
    if (threads > n) threads = n;
    if (threads <= 1) {
        fn(ctx, 0, n);
        return;
    }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int t = 0; t < threads; t++)
        fn(ctx, (int)((long)n * t / threads), (int)((long)n * (t + 1) / threads));
}

/* Below this many bytes of weights one thread does it (waking the others
 * costs more; see ops.c's EGM_GEMM_THREADED_MIN for the same reasoning). */
#define EGM_QMM_THREADED_MIN (256L << 10)

static int threads_for(const egm_mat *W) {
#ifdef _OPENMP
    if (omp_in_parallel() || (long)egm_mat_bytes(W) < EGM_QMM_THREADED_MIN) return 1;
#else
    (void)W;
    return 1;
#endif
    return openblas_get_num_threads();
}

/* ---- few rows: dot kernels --------------------------------------------- */

typedef struct {
    const egm_mat *W;
    egm_qdot_fn dot;
    const void *act;
    size_t act_stride;
    int M, ldy, acc;
    float *y;
} dot_job;

static void dot_rows(void *p, int lo, int hi) {
    const dot_job *j = p;
    float out[EGM_QMM_DOT_MAX];
    for (int n = lo; n < hi; n++) {
        j->dot(j->W->cols, (const char *)j->W->data + (size_t)n * j->W->row_bytes, j->act,
               j->act_stride, j->M, out);
        for (int m = 0; m < j->M; m++) {
            float *o = j->y + (long)m * j->ldy + n;
            *o = j->acc ? *o + out[m] : out[m];
        }
    }
}

/* Scratch grown, never shrunk: one set per thread that calls us, freed when
 * that thread ends (the stage's pool threads come and go with the stage). */
typedef struct {
    void *act, *tile;
    size_t act_cap, tile_cap;
} scratch_t;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p) {
    scratch_t *s = p;
    free(s->act);
    free(s->tile);
    free(s);
}

static void scratch_key_init(void) {
    if (pthread_key_create(&scratch_key, scratch_free)) abort();
}

static scratch_t *scratch(void) {
    pthread_once(&scratch_once, scratch_key_init);
    scratch_t *s = pthread_getspecific(scratch_key);
    if (!s) {
        if (!(s = calloc(1, sizeof *s)) || pthread_setspecific(scratch_key, s)) abort();
    }
    return s;
}

static void *grow(void **p, size_t *cap, size_t n) {
    if (n > *cap) {
        free(*p);
        *cap = n + n / 4;
        if (!(*p = malloc(*cap))) abort(); /* bounded by batch x width; OOM is fatal */
    }
    return *p;
}

int egm_mat_act_format(const egm_mat *W, int M) {
    if (W->type == EGM_GGML_F32 || M > EGM_QMM_DOT_MAX) return 0;
    int kind = egm_qdot_act(W->type);
    return kind == EGM_ACT_F32 ? 0 : kind;
}

size_t egm_mat_act_bytes(const egm_mat *W, int M) {
    return egm_mat_act_format(W, M) ? egm_qdot_act_bytes(W->type, W->cols) * (size_t)M : 0;
}

void egm_mat_act_prepare(const egm_mat *W, int M, const float *x, int ldx, void *qx) {
    int K = W->cols;
    size_t stride = egm_qdot_act_bytes(W->type, K);
    for (int m = 0; m < M; m++) {
        void *row = (char *)qx + stride * (size_t)m;
        if (egm_qdot_act(W->type) == EGM_ACT_A8)
            kernel_set()->qa8(x + (long)m * ldx, row, K);
        else
            egm_quantize_row_q8_K(x + (long)m * ldx, row, K);
    }
}

static void mul_rows(const egm_mat *W, int M, const void *act, size_t stride, float *y, int ldy,
                     int acc) {
    dot_job j = {W, egm_qdot_pick(kernel_set(), W->type), act, stride, M, ldy, acc, y};
    par_ranges(W->rows, threads_for(W), dot_rows, &j);
}

void egm_mat_mul_prepared(const egm_mat *W, int M, const void *qx, float *y, int ldy, int acc) {
    if (M > 0 && W->rows > 0)
        mul_rows(W, M, qx, egm_qdot_act_bytes(W->type, W->cols), y, ldy, acc);
}

static void mul_dot(const egm_mat *W, int M, const float *x, int ldx, float *y, int ldy,
                    int acc) {
    if (!egm_mat_act_format(W, M)) { /* F16 / BF16: fp32 x as it is */
        mul_rows(W, M, x, (size_t)ldx * sizeof(float), y, ldy, acc);
        return;
    }
    scratch_t *sc = scratch();
    void *act = grow(&sc->act, &sc->act_cap, egm_mat_act_bytes(W, M));
    egm_mat_act_prepare(W, M, x, ldx, act);
    egm_mat_mul_prepared(W, M, act, y, ldy, acc);
}

/* ---- many rows: dequantised tiles into sgemm --------------------------- */

typedef struct {
    const egm_mat *W;
    int n0;
    float *tile;
    egm_qdeq_fn deq;
} deq_job;

static void deq_rows(void *p, int lo, int hi) {
    const deq_job *j = p;
    const egm_mat *W = j->W;
    for (int r = lo; r < hi; r++) {
        const void *src = (const char *)W->data + (size_t)(j->n0 + r) * W->row_bytes;
        float *dst = j->tile + (long)r * W->cols;
        if (!j->deq || !j->deq(W->type, src, dst, W->cols)) egm_dequant_row(W->type, src, dst, W->cols);
    }
}

static void mul_tiles(const egm_mat *W, int M, const float *x, int ldx, float *y, int ldy,
                      int acc) {
    int K = W->cols;
    /* ~4 MiB of fp32 per tile: L2/L3-sized, and few enough sgemm calls that
     * repacking x for each stays small */
    int rows = (int)((4L << 20) / ((long)K * (long)sizeof(float)));
    if (rows < 16) rows = 16;
    if (rows > W->rows) rows = W->rows;
    scratch_t *sc = scratch();
    float *tile = grow(&sc->tile, &sc->tile_cap, (size_t)rows * (size_t)K * sizeof(float));
    for (int n0 = 0; n0 < W->rows; n0 += rows) {
        int nr = W->rows - n0 < rows ? W->rows - n0 : rows;
        deq_job j = {W, n0, tile, kernel_set()->deq};
        par_ranges(nr, threads_for(W), deq_rows, &j);
        egm_gemm(0, 1, M, nr, K, 1.0f, x, ldx, tile, K, acc ? 1.0f : 0.0f, y + n0, ldy);
    }
}

/* ---- batch-invariant: every row through the dot kernels ---------------- */

/* The 16-bit kernels keep more sums per row for one or two rows (their
 * speed at batch 1), so a row's bits depend on M there; the others do not.
 * Invariant, 16-bit groups are padded with zero rows to the full 8. */
static void mul_invariant(const egm_mat *W, int M, const float *x, int ldx, float *y, int ldy,
                          int acc) {
    int pad = W->type == EGM_GGML_F16 || W->type == EGM_GGML_BF16;
    for (int i = 0; i < M; i += EGM_QMM_DOT_MAX) {
        int m = M - i < EGM_QMM_DOT_MAX ? M - i : EGM_QMM_DOT_MAX;
        const float *xi = x + (long)i * ldx;
        float *yi = y + (long)i * ldy;
        if (!pad || m == EGM_QMM_DOT_MAX) {
            mul_dot(W, m, xi, ldx, yi, ldy, acc);
            continue;
        }
        int K = W->cols, N = W->rows, G = EGM_QMM_DOT_MAX;
        scratch_t *sc = scratch(); /* the tile buffer: 16-bit products use no other */
        float *xp = grow(&sc->tile, &sc->tile_cap, sizeof(float) * (size_t)G * (K + N));
        float *yp = xp + (long)G * K;
        for (int r = 0; r < m; r++) memcpy(xp + (long)r * K, xi + (long)r * ldx, sizeof(float) * K);
        memset(xp + (long)m * K, 0, sizeof(float) * (size_t)(G - m) * K);
        mul_dot(W, G, xp, K, yp, N, 0);
        for (int r = 0; r < m; r++)
            for (int n = 0; n < N; n++) {
                float *o = yi + (long)r * ldy + n;
                *o = acc ? *o + yp[(long)r * N + n] : yp[(long)r * N + n];
            }
    }
}

void egm_mat_mul(const egm_mat *W, int M, const float *x, int ldx, float *y, int ldy, int acc) {
    if (M <= 0 || W->rows <= 0) return;
    if (W->type == EGM_GGML_F32)
        egm_gemm_batch(1, M, W->rows, W->cols, 1.0f, x, ldx, W->data, W->cols, acc ? 1.0f : 0.0f,
                       y, ldy);
    else if (egm_batch_invariant())
        mul_invariant(W, M, x, ldx, y, ldy, acc);
    else if (M <= EGM_QMM_DOT_MAX)
        mul_dot(W, M, x, ldx, y, ldy, acc);
    else
        mul_tiles(W, M, x, ldx, y, ldy, acc);
}

void egm_matmul(float *y, const float *x, const egm_mat *W, int M) {
    egm_mat_mul(W, M, x, W->cols, y, W->rows, 0);
}

void egm_matmul_acc(float *y, const float *x, const egm_mat *W, int M) {
    egm_mat_mul(W, M, x, W->cols, y, W->rows, 1);
}
