/* calibrate.c - `egmla bench --calibrate`: what one layer, the head and the
 * embedding cost on this node, and the link to the next rank.
 *
 * The first few layers of the model (synthetic weights from --config or the
 * files of --model) run as a stage with the embedding and the head, and a
 * layer's time is the stage's over its layer count: enough layers that
 * their weights do not fit twice in the last-level cache, because a real
 * stage streams each layer's weights from memory once per step, while one
 * small layer timed again and again would run from the cache. (A layer of
 * the paper configs, 35 MB in fp32, already exceeds this machine's 32 MiB
 * L3: there 1, 2 and 12 layers measured the same.) The rows are those a pipeline gives a stage: decode micro-batches of
 * 1..32 rows (one per sequence) and prefill chunks of 64..--chunk rows.
 * Each figure is the median of a few repetitions (robust to a shared
 * machine's other load). Attention's share is separated by measuring again
 * at more cached positions: decode at 8 rows at context 16 and 1024,
 * prefill a chunk at position 0 and at position `chunk`. */
#include <cblas.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "coordinator/bench_report.h"
#include "coordinator/calibrate.h"
#include "coordinator/commands.h"
#include "coordinator/roofline.h"
#include "coordinator/workers.h"
#include "deploy/calib.h"
#include "model/source.h"
#include "worker/head.h"
#include "worker/stage.h"
#include "worker/worker_mpi.h"

#define REPS 9
#define CTX_LO 16
#define CTX_HI 1024

typedef struct {
    egm_stage st;
    egm_head hd;
    const egm_model *m;
    float *x;
    int *slot, *pos, *tok, *next;
    unsigned char *want;
    egm_head_out *out;
    int cap_rows, n_slots, n_layers;
} cal_rig;

static void cal_free(cal_rig *g) {
    egm_head_free(&g->hd);
    egm_stage_free(&g->st);
    free(g->x), free(g->slot), free(g->pos), free(g->tok), free(g->want), free(g->out);
    free(g->next);
}

static int cal_init(cal_rig *g, const egm_model *m, int slots, int rows, int positions,
                    int attn_bf16, egm_err *e) {
    const egm_config *c = &m->cfg;
    memset(g, 0, sizeof *g);
    g->m = m, g->cap_rows = rows, g->n_slots = slots, g->n_layers = m->hi - m->lo;
    size_t per_tok = egm_kv_bytes_per_token(g->n_layers, egm_config_kv_elems(c), c->arch == EGM_EGMLA, 0);
    size_t budget = (size_t)slots * ((size_t)positions + 64) * per_tok;
    if (egm_stage_init(&g->st, m, slots, budget, 16, 0, e) ||
        egm_stage_set_attn_bf16(&g->st, attn_bf16, e))
        return -1;
    if (egm_head_init(&g->hd, slots, c->vocab_size, e)) return -1;
    g->x = malloc(sizeof(float) * (size_t)rows * c->hidden_size);
    g->slot = malloc(sizeof(int) * (size_t)rows);
    g->pos = malloc(sizeof(int) * (size_t)rows);
    g->tok = malloc(sizeof(int) * (size_t)rows);
    g->next = calloc((size_t)slots, sizeof(int));
    g->want = malloc((size_t)rows);
    g->out = malloc(sizeof *g->out * (size_t)rows);
    if (!g->x || !g->slot || !g->pos || !g->tok || !g->want || !g->out || !g->next)
        return egm_fail(e, "out of memory for %d rows", rows);
    egm_sampling sp;
    egm_sampling_default(&sp);
    sp.temperature = 0;
    for (int i = 0; i < slots; i++) {
        egm_head_open(&g->hd, i, EGM_MODE_GENERATE, &sp, NULL, 0);
        egm_head_set_top(&g->hd, i, -1); /* no log-probs, as `generate` by default */
        if (egm_stage_reserve(&g->st, i, positions))
            return egm_fail(e, "KV pool refused slot %d (internal error)", i);
    }
    return 0;
}

/* T rows of slot 0 from position p: the layer's forward time (embedding
 * included). */
static double chunk_at(cal_rig *g, int T, int p) {
    for (int t = 0; t < T; t++) {
        g->slot[t] = 0, g->pos[t] = p + t;
        g->tok[t] = (p + t) * 7919 % g->m->cfg.vocab_size;
    }
    egm_mbatch b = {T, g->slot, g->pos, g->tok};
    double t0 = egm_now();
    egm_stage_forward(&g->st, &b, g->x);
    return egm_now() - t0;
}

/* Fills slot 0 to n positions and copies it into slots 1..slots-1. */
static void fill(cal_rig *g, int n) {
    int chunk = g->cap_rows;
    for (int p = 0; p < n; p += chunk) chunk_at(g, n - p < chunk ? n - p : chunk, p);
    for (int s = 1; s < g->n_slots; s++) (void)egm_stage_fork(&g->st, s, 0, n);
}

/* One decode step of r rows (slots 0..r-1, all at position `at`); returns
 * the forward's time, and the head's in *head. */
static double decode_at(cal_rig *g, int r, int at, double *head) {
    for (int i = 0; i < r; i++) {
        g->slot[i] = i, g->pos[i] = at, g->tok[i] = g->next[i], g->want[i] = 1;
    }
    egm_mbatch b = {r, g->slot, g->pos, g->tok};
    double t0 = egm_now();
    egm_stage_forward(&g->st, &b, g->x);
    double t1 = egm_now();
    int k = egm_head_run(&g->hd, &g->st, &b, g->want, g->x, g->out);
    *head = egm_now() - t1;
    for (int i = 0; i < k; i++) g->next[g->out[i].slot] = g->out[i].token;
    return t1 - t0;
}

/* The first stage's embedding of r rows: the rows' copy out of the table. */
static double embed_time(const egm_model *m, int r, float *x) {
    int D = m->cfg.hidden_size;
    double t0 = egm_now();
    for (int i = 0; i < r; i++)
        egm_mat_row(&m->embed, (i * 7919) % m->cfg.vocab_size, x + (long)i * D);
    return egm_now() - t0;
}

static double median(double *v, int n) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
            double t = v[j]; v[j] = v[j - 1]; v[j - 1] = t;
        }
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Non-increasing from the right: a time that exceeds a larger row count's
 * was inflated by the machine's other load. */
static void envelope(double *v, int n) {
    for (int i = n - 2; i >= 0; i--)
        if (v[i] > v[i + 1]) v[i] = v[i + 1];
}

/* Decode rows at CTX_LO (and 8 rows at CTX_HI for attention's slope). The
 * row counts take turns within each repetition, so a burst of other load
 * spreads over all of them. */
static void measure_decode(cal_rig *g, egm_calib *k) {
    static const int rows[] = {1, 2, 4, 8, 16, 32};
    int n = 0;
    while (n < (int)(sizeof rows / sizeof *rows) && rows[n] <= g->cap_rows) n++;
    double lt[EGM_CALIB_MAX_ROWS][REPS], ht[EGM_CALIB_MAX_ROWS][REPS], et[EGM_CALIB_MAX_ROWS][REPS];
    double hi[REPS], dummy;
    k->context = CTX_LO;
    fill(g, CTX_LO);
    for (int i = 0; i < n; i++) decode_at(g, rows[i], CTX_LO, &dummy); /* warm-up */
    for (int s = 0; s < REPS; s++)
        for (int i = 0; i < n; i++) {
            /* the same position again: the cache stays put */
            lt[i][s] = decode_at(g, rows[i], CTX_LO, &ht[i][s]);
            et[i][s] = embed_time(g->m, rows[i], g->x);
        }
    k->n_rows = n;
    double at8 = 0;
    for (int i = 0; i < n; i++) {
        k->rows[i] = rows[i];
        k->embed_s[i] = median(et[i], REPS);
        k->layer_s[i] = (median(lt[i], REPS) - k->embed_s[i]) / g->n_layers;
        k->head_s[i] = median(ht[i], REPS);
        if (rows[i] == 8) at8 = median(lt[i], REPS);
    }
    fill(g, CTX_HI);
    decode_at(g, 8, CTX_HI, &dummy);
    for (int s = 0; s < REPS; s++) hi[s] = decode_at(g, 8, CTX_HI, &dummy);
    double d = (median(hi, REPS) - at8) / g->n_layers / (8.0 * (CTX_HI - CTX_LO));
    k->attend_s = d > 0 ? d : 0;
    /* the measured rows include CTX_LO positions of attention each (at most
     * half the time: the slope comes from other measurements, with their
     * own noise) */
    for (int i = 0; i < n; i++) {
        double a = k->rows[i] * (double)CTX_LO * k->attend_s;
        k->layer_s[i] = a < k->layer_s[i] / 2 ? k->layer_s[i] - a : k->layer_s[i] / 2;
    }
    envelope(k->layer_s, n);
    envelope(k->head_s, n);
}

/* Prefill chunks at position 0; the largest again at position `chunk`. */
static void measure_prefill(cal_rig *g, int chunk, egm_calib *k) {
    static const int chunks[] = {16, 64, 128, 256, 512, 1024, 2048};
    double t[3];
    k->n_chunks = 0;
    for (size_t i = 0; i < sizeof chunks / sizeof *chunks; i++) {
        int T = chunks[i] < chunk ? chunks[i] : chunk;
        if (k->n_chunks && T <= k->chunks[k->n_chunks - 1]) break;
        for (int s = 0; s < 3; s++) t[s] = chunk_at(g, T, 0);
        k->chunks[k->n_chunks] = T;
        k->prefill_s[k->n_chunks++] = median(t, 3) / g->n_layers;
    }
    int T = k->chunks[k->n_chunks - 1];
    for (int s = 0; s < 3; s++) t[s] = chunk_at(g, T, T);
    double d = (median(t, 3) / g->n_layers - k->prefill_s[k->n_chunks - 1]) / ((double)T * T);
    k->prefill_attend_s = d > 0 ? d : 0;
    for (int i = 0; i < k->n_chunks; i++) {
        double a = k->chunks[i] * (k->chunks[i] / 2.0) * k->prefill_attend_s;
        k->prefill_s[i] = a < k->prefill_s[i] / 2 ? k->prefill_s[i] - a : k->prefill_s[i] / 2;
    }
    envelope(k->prefill_s, k->n_chunks);
}

/* Ping-pong between ranks 0 and 1: half the best round trip of 8 bytes is
 * the latency; a 4 MiB message's half round trip minus it gives the bandwidth. */
#define PING_BIG (4 << 20)
static int link_pingpong(int rank, egm_calib *k) {
    char *buf = malloc(PING_BIG);
    if (!buf) return -1;
    memset(buf, 1, PING_BIG);
    double best[2] = {1e9, 1e9};
    int sizes[2] = {8, PING_BIG};
    for (int z = 0; z < 2; z++)
        for (int rep = 0; rep < (z ? 10 : 200); rep++) {
            double t0 = MPI_Wtime();
            if (rank == 0) {
                MPI_Send(buf, sizes[z], MPI_BYTE, 1, 77, MPI_COMM_WORLD);
                MPI_Recv(buf, sizes[z], MPI_BYTE, 1, 77, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            } else {
                MPI_Recv(buf, sizes[z], MPI_BYTE, 0, 77, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                MPI_Send(buf, sizes[z], MPI_BYTE, 0, 77, MPI_COMM_WORLD);
            }
            double rt = MPI_Wtime() - t0;
            if (rt < best[z]) best[z] = rt;
        }
    free(buf);
    k->link_measured = 1;
    const char *pml = getenv("OMPI_MCA_pml"), *btl = getenv("OMPI_MCA_btl");
    snprintf(k->transport, sizeof k->transport, "%s",
             pml && !strcmp(pml, "ucx") ? "ucx"
             : btl && strstr(btl, "tcp") ? "tcp"
             : btl && strstr(btl, "vader") ? "shm" : "auto");
    k->link_latency_s = best[0] / 2;
    double tx = best[1] / 2 - k->link_latency_s;
    k->link_bytes_per_s = tx > 0 ? PING_BIG / tx : 1e12;
    return 0;
}

/* ---- co-location ------------------------------------------------------
 * Stages on one node slow each other even when each has a core: they share
 * the memory bandwidth and the last-level cache (and beyond the node's
 * cores, the cores). So the same layers run in n processes at once,
 * n = 2 .. cores / threads + 2, each with weights of its own (another seed,
 * or other layers of the file: never pages another copy also reads), and
 * the slowdown is their mean step time over the time alone, measured in
 * turn over windows of about COLO_WINDOW_S. The copies are forked before
 * anything is loaded and never touch MPI. */

#define COLO_REPS 7
#define COLO_WINDOW_S 0.15
static const int colo_rows[] = {1, 8, 32};
#define N_COLO_ROWS ((int)(sizeof colo_rows / sizeof *colo_rows))

/* The mean time of `reps` decode steps of r rows through the layers: a
 * window long enough (COLO_WINDOW_S alone) to span many of the
 * scheduler's time slices when the copies outnumber the cores, where one
 * step's time is all or nothing of a slice. */
static double colo_time(cal_rig *g, int r, int reps) {
    for (int i = 0; i < r; i++) g->slot[i] = i, g->pos[i] = CTX_LO, g->tok[i] = i * 31 + 1;
    egm_mbatch b = {r, g->slot, g->pos, g->tok};
    double t0 = egm_now();
    for (int s = 0; s < reps; s++) egm_stage_forward(&g->st, &b, g->x);
    return (egm_now() - t0) / reps;
}

/* Copy `idx`'s rig: n layers of its own, filled to CTX_LO positions. */
static int colo_rig(const egm_bench_opts *o, const egm_config *c, int n, int idx, egm_model *m,
                    cal_rig *g, egm_err *e) {
    int lo = o->config ? 0 : idx * n % (c->num_layers - n + 1);
    int flags = o->no_gate_table ? 0 : EGM_LOAD_GATE_TABLE; /* no embedding: x is zeros */
    if (o->config ? egm_model_random(c, o->seed + 1000003ULL * (unsigned)idx, 0, n, flags, m, e)
                  : egm_model_load(o->model, lo, lo + n, flags, m, e))
        return -1;
    if (cal_init(g, m, 32, 32, CTX_LO + 64, o->attn_bf16, e)) return -1;
    memset(g->x, 0, sizeof(float) * 32 * (size_t)c->hidden_size);
    fill(g, CTX_LO);
    return 0;
}

/* A copy: says it is ready (1) or failed (-1), then times the row counts
 * it is sent until its command pipe closes. */
static void colo_copy(const egm_bench_opts *o, const egm_config *c, int n, int idx, int cmd,
                      int res) {
    egm_model m;
    cal_rig g;
    egm_err e;
    memset(&m, 0, sizeof m);
    double ok = colo_rig(o, c, n, idx, &m, &g, &e) ? -1 : 1;
    int rr[2]; /* rows, reps */
    if (write(res, &ok, sizeof ok) == sizeof ok && ok > 0)
        while (read(cmd, rr, sizeof rr) == sizeof rr) {
            double t = colo_time(&g, rr[0], rr[1]);
            if (write(res, &t, sizeof t) != sizeof t) break;
        }
    _exit(0);
}

typedef struct {
    pid_t pid[EGM_CALIB_MAX_COPIES];
    int cmd[EGM_CALIB_MAX_COPIES], res[EGM_CALIB_MAX_COPIES];
    int n;  /* copies started */
} colo_copies;

/* Forks up to `want` copies (fewer if fork fails: then fewer are measured). */
static void colo_start(colo_copies *cc, int want, const egm_bench_opts *o, const egm_config *c,
                       int n) {
    cc->n = 0;
    fflush(NULL);
    while (cc->n < want && cc->n < EGM_CALIB_MAX_COPIES) {
        int a[2], b[2];
        if (pipe(a)) break;
        if (pipe(b)) { close(a[0]), close(a[1]); break; }
        pid_t pid = fork();
        if (pid == 0) {
            for (int i = 0; i < cc->n; i++) close(cc->cmd[i]), close(cc->res[i]);
            close(a[1]), close(b[0]);
            colo_copy(o, c, n, cc->n + 1, a[0], b[1]);
        }
        close(a[0]), close(b[1]);
        if (pid < 0) { close(a[1]), close(b[0]); break; }
        cc->pid[cc->n] = pid, cc->cmd[cc->n] = a[1], cc->res[cc->n] = b[0];
        cc->n++;
    }
}

static void colo_stop(colo_copies *cc) {
    for (int i = 0; i < cc->n; i++) {
        close(cc->cmd[i]), close(cc->res[i]);
        waitpid(cc->pid[i], NULL, 0);
    }
    cc->n = 0;
}

/* The slowdowns with 2 .. cc->n + 1 copies at once (this process one of
 * them); copies that failed to load end the series there. */
static void measure_colocated(cal_rig *g, colo_copies *cc, egm_calib *k) {
    double alone[N_COLO_ROWS], ok;
    int ready = 0, reps[N_COLO_ROWS];
    while (ready < cc->n && read(cc->res[ready], &ok, sizeof ok) == sizeof ok && ok > 0) ready++;
    k->n_colo_rows = 0;
    for (int i = 0; i < N_COLO_ROWS && colo_rows[i] <= g->cap_rows; i++) {
        k->colo_rows[k->n_colo_rows++] = colo_rows[i];
        double one = colo_time(g, colo_rows[i], 1); /* warm-up, and the window's size */
        reps[i] = one > 0 ? (int)(COLO_WINDOW_S / one) + 1 : COLO_REPS;
        if (reps[i] < COLO_REPS) reps[i] = COLO_REPS;
        alone[i] = colo_time(g, colo_rows[i], reps[i]);
    }
    for (int n = 1; n <= ready; n++) {
        for (int i = 0; i < k->n_colo_rows; i++) {
            int rr[2] = {k->colo_rows[i], reps[i]}, bad = 0;
            double sum = 0, t;
            for (int c = 0; c < n; c++) bad |= write(cc->cmd[c], rr, sizeof rr) != sizeof rr;
            sum += colo_time(g, rr[0], rr[1]);
            for (int c = 0; c < n; c++) {
                if (read(cc->res[c], &t, sizeof t) != sizeof t) bad = 1;
                sum += t;
            }
            if (bad) return; /* a copy died: keep the counts measured so far */
            k->colo[n - 1][i] = sum / (n + 1) / alone[i];
        }
        k->n_colo_copies = n;
    }
}

/* Layers to time together: their fp32 weights at least twice the
 * last-level cache (at least 2 layers, at most the model's). */
static int layers_to_time(const egm_config *c) {
    long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (llc <= 0) llc = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (llc <= 0) llc = 32L << 20;
    egm_step_cost cost;
    egm_step_cost_of(c, 1, 0, 0, 0, 0, &cost);
    double layer = cost.weight_bytes / c->num_layers;
    int n = 2;
    while (n < c->num_layers && n * layer < 2.0 * llc) n++;
    return n < c->num_layers ? n : c->num_layers;
}

static int measure_compute(const egm_bench_opts *o, egm_calib *k, egm_err *e) {
    egm_model m;
    egm_config cfg;
    int flags = EGM_LOAD_EMBED | EGM_LOAD_HEAD | (o->no_gate_table ? 0 : EGM_LOAD_GATE_TABLE);
    if (o->config ? egm_config_load(o->config, &cfg, e) : egm_model_config(o->model, &cfg, e))
        return -1;
    int n = layers_to_time(&cfg);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    colo_copies cc;
    int fit = (int)(cores > 0 ? cores : 1) / (o->threads ? o->threads : 1); /* copies with cores each */
    colo_start(&cc, o->colo_copies >= 0 ? o->colo_copies : (fit > 1 ? fit : 1) + 1, o, &cfg, n);
    if (o->config ? egm_model_random(&cfg, o->seed, 0, n, flags, &m, e)
                  : egm_model_load(o->model, 0, n, flags, &m, e)) {
        colo_stop(&cc);
        return -1;
    }
    const egm_config *c = &m.cfg;
    int threads = o->threads ? o->threads : 1;
    openblas_set_num_threads(threads);
    memset(k, 0, sizeof *k);
    snprintf(k->model_type, sizeof k->model_type, "%s", c->model_type);
    k->num_layers = c->num_layers, k->hidden_size = c->hidden_size;
    k->vocab_size = c->vocab_size, k->threads = threads, k->attn_bf16 = o->attn_bf16;
    k->cores = cores > 0 ? (int)cores : 0;
    egm_mpi_hostname(k->host, sizeof k->host);
    int chunk = o->chunk, rows = chunk > 32 ? chunk : 32;
    cal_rig g;
    int rc = cal_init(&g, &m, 32, rows, CTX_HI + 2 * chunk + 16, o->attn_bf16, e);
    if (!rc) {
        measure_decode(&g, k);
        measure_prefill(&g, chunk, k);
        measure_colocated(&g, &cc, k);
        egm_calib_link_default(k);
        k->rank0_s = 50e-6;
    }
    colo_stop(&cc);
    cal_free(&g);
    egm_model_free(&m);
    return rc;
}

int egm_calibrate_node(const egm_bench_opts *o, egm_calib *k, int *helper, egm_err *e) {
    *helper = 0;
    if (!egm_under_mpi()) return measure_compute(o, k, e);
    int provided, rank = 0, world = 1;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return egm_fail(e, "MPI_Init failed");
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    int rc = 0;
    if (rank == 0) rc = measure_compute(o, k, e);
    /* the others wait for rank 0 without spinning on a core it measures with */
    MPI_Request req;
    int done = 0;
    MPI_Ibcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD, &req);
    while (MPI_Test(&req, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && !done) usleep(1000);
    if (!rc && world >= 2 && rank <= 1 && link_pingpong(rank, k))
        rc = egm_fail(e, "out of memory for the link test");
    MPI_Finalize();
    *helper = rank != 0;
    return rc;
}

int egm_calibrate_main(const egm_bench_opts *o) {
    egm_calib *k = calloc(1, sizeof *k);
    egm_err e;
    if (!k) return EGM_EXIT_FAIL;
    int helper;
    int rc = egm_calibrate_node(o, k, &helper, &e);
    if (helper) { /* rank 1 of the link test, or a bystander: rank 0 reports */
        free(k);
        return rc ? EGM_EXIT_FAIL : EGM_EXIT_OK;
    }
    if (rc) {
        fprintf(stderr, "egmla bench --calibrate: %s\n", e.msg);
        free(k);
        return EGM_EXIT_FAIL;
    }
    int last = k->n_rows - 1;
    fprintf(stderr, "egmla bench --calibrate: %s, %d thread%s: one layer %.3f ms (1 row) .. "
            "%.3f ms (%d rows) + %.2f us per row per cached position; head %.3f .. %.3f ms; "
            "prefill chunk of %d: %.2f ms; link: %s\n", k->host, k->threads,
            k->threads > 1 ? "s" : "", 1e3 * k->layer_s[0], 1e3 * k->layer_s[last],
            k->rows[last], 1e6 * k->attend_s, 1e3 * k->head_s[0], 1e3 * k->head_s[last],
            k->chunks[k->n_chunks - 1], 1e3 * k->prefill_s[k->n_chunks - 1],
            k->link_measured ? "measured" : "not measured (one process: run under mpirun "
                                            "with 2 ranks to measure it)");
    if (k->link_measured)
        fprintf(stderr, "  link rank 0 -> 1: latency %.1f us, %.2f GB/s\n",
                1e6 * k->link_latency_s, k->link_bytes_per_s / 1e9);
    for (int n = 0; n < k->n_colo_copies; n++) {
        fprintf(stderr, "  %d copies at once: a layer x", n + 2);
        for (int i = 0; i < k->n_colo_rows; i++)
            fprintf(stderr, "%s%.2f (%d rows)", i ? ", x" : "", k->colo[n][i], k->colo_rows[i]);
        fputc('\n', stderr);
    }
    if (egm_calib_save(o->json_path ? o->json_path : "-", k, &e)) {
        fprintf(stderr, "egmla bench --calibrate: %s\n", e.msg);
        rc = EGM_EXIT_FAIL;
    }
    free(k);
    return rc ? EGM_EXIT_FAIL : EGM_EXIT_OK;
}
