/* worker_mpi.c - a pipeline stage as an MPI rank (see worker_mpi.h).
 *
 * Startup: receive the Assign from rank 0, map the assigned layers, reply
 * Hello (capacities and fingerprints, or the loader's error). Then, per
 * micro-batch: header from the previous rank, activations (unless this is
 * the first stage), releases, admissions, the layers, and either header +
 * activations on to the next rank or, on the last stage, the Result back to
 * rank 0. Sends are non-blocking and double-buffered: the buffers of batch k
 * are reused only once the sends of batch k-2 completed, so computing a
 * batch overlaps shipping the previous one. A StatsRequest among the
 * batches is passed on and answered with the counters (busy, wait, bubble
 * seconds; bytes), which is how `egmla bench` times each stage. */
#include "base/clock.h"
#include "base/hash.h"
#include "worker/worker_mpi.h"

#include <cblas.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernels/ops.h"
#include "model/gguf.h"
#include "worker/admit.h"
#include "worker/head.h"
#include "worker/stage.h"
#include "worker/wire.h"

#ifndef EGM_VERSION
#define EGM_VERSION "0.0.0"
#endif
#ifndef EGM_GITREV
#define EGM_GITREV "unknown"
#endif

const char *egm_build_fingerprint(void) { return EGM_VERSION "+" EGM_GITREV; }

/* ---- fingerprints ------------------------------------------------------ */


static int hash_file(const char *path, size_t limit, uint64_t *h, egm_err *e) {
    FILE *f = fopen(path, "rb");
    if (!f) return egm_fail(e, "%s: cannot open: %s", path, strerror(errno));
    unsigned char buf[65536];
    size_t n, total = 0;
    while (total < limit && (n = fread(buf, 1, sizeof buf < limit - total ? sizeof buf : limit - total, f)) > 0) {
        *h = egm_fnv1a(*h, buf, n);
        total += n;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) return egm_fail(e, "%s: read error", path);
    return 0;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* name, size and header (8-byte length + JSON) of each shard, in name order */
static int hash_shards(const char *dir, uint64_t *h, egm_err *e) {
    DIR *d = opendir(dir);
    if (!d) return egm_fail(e, "%s: cannot open the model directory: %s", dir, strerror(errno));
    char **names = NULL;
    int n = 0, cap = 0, rc = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len < 12 || strcmp(de->d_name + len - 12, ".safetensors")) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            char **nn = realloc(names, sizeof *names * (size_t)cap);
            if (!nn) { rc = egm_fail(e, "out of memory"); break; }
            names = nn;
        }
        if (!(names[n] = strdup(de->d_name))) { rc = egm_fail(e, "out of memory"); break; }
        n++;
    }
    closedir(d);
    if (!rc) qsort(names, (size_t)n, sizeof *names, by_name);
    for (int i = 0; i < n && !rc; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "rb");
        if (!f) { rc = egm_fail(e, "%s: cannot open: %s", path, strerror(errno)); break; }
        unsigned char len8[8] = {0};
        size_t got = fread(len8, 1, 8, f);
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        fclose(f);
        if (got != 8) { rc = egm_fail(e, "%s: shorter than a safetensors header", path); break; }
        uint64_t hl = 0;
        for (int k = 7; k >= 0; k--) hl = hl << 8 | len8[k];
        if (hl > (uint64_t)size) hl = (uint64_t)size;
        *h = egm_fnv1a(*h, names[i], strlen(names[i]) + 1);
        *h = egm_fnv1a(*h, &size, sizeof size);
        rc = hash_file(path, 8 + (size_t)hl, h, e);
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

int egm_model_fingerprint(const char *dir, int with_weights, char out[40], egm_err *e) {
    if (egm_gguf_is_file(dir)) return egm_gguf_fingerprint(dir, with_weights, out, e);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    uint64_t hc = EGM_FNV_OFFSET, hw = 0;
    if (hash_file(path, (size_t)-1, &hc, e)) return -1;
    if (with_weights) {
        hw = EGM_FNV_OFFSET;
        if (hash_shards(dir, &hw, e)) return -1;
    }
    snprintf(out, 40, "%016llx-%016llx", (unsigned long long)hc, (unsigned long long)hw);
    return 0;
}

void egm_synthetic_fingerprint(const char *json, size_t len, uint64_t seed, char out[40]) {
    uint64_t hc = egm_fnv1a(EGM_FNV_OFFSET, json, len), hw = egm_fnv1a(EGM_FNV_OFFSET, &seed, sizeof seed);
    snprintf(out, 40, "%016llx-%016llx", (unsigned long long)hc, (unsigned long long)hw);
}

/* ---- MPI plumbing ------------------------------------------------------ */

int egm_mpi_fail(egm_err *e, int code, const char *what) {
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, s, &len) != MPI_SUCCESS) snprintf(s, sizeof s, "error %d", code);
    return egm_fail(e, "MPI: %s: %s", what, s);
}

void egm_mpi_hostname(char *buf, size_t n) {
    if (gethostname(buf, n)) snprintf(buf, n, "?");
    buf[n - 1] = 0;
}

/* Spin briefly (a reply is often microseconds away), then back off to
 * sleeps of up to 100 us so that waiting costs no core. */
static void backoff(int *spins, long *ns) {
    if ((*spins)++ < 100) return;
    *ns = *ns ? *ns * 2 : 1000;
    if (*ns > 100000) *ns = 100000;
    struct timespec ts = {0, *ns};
    nanosleep(&ts, NULL);
}

static int answer_pings;  /* set in workers: they answer rank 0's pings */

/* Answers rank 0's ping, if one is pending. */
static int serve_ping(egm_err *e) {
    if (!answer_pings) return 0;
    MPI_Status st;
    int flag = 0, v, rc = MPI_Iprobe(0, EGM_TAG_PING, MPI_COMM_WORLD, &flag, &st);
    if (rc != MPI_SUCCESS) return egm_mpi_fail(e, rc, "probe");
    if (!flag) return 0;
    rc = MPI_Recv(&v, 1, MPI_INT, 0, EGM_TAG_PING, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    if (rc == MPI_SUCCESS) rc = MPI_Send(&v, 1, MPI_INT, 0, EGM_TAG_PING, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return egm_mpi_fail(e, rc, "answer rank 0's ping");
    return 0;
}

int egm_mpi_wait_for(int n, const int *src, const int *tag, double timeout_s,
                     MPI_Status *st, egm_err *e) {
    long ns = 0;
    double t0 = timeout_s > 0 ? egm_now() : 0;
    for (int spins = 0;;) {
        for (int i = 0; i < n; i++) {
            int flag = 0, rc = MPI_Iprobe(src[i], tag[i], MPI_COMM_WORLD, &flag, st);
            if (rc != MPI_SUCCESS) return egm_mpi_fail(e, rc, "probe");
            if (flag) return i;
        }
        if (serve_ping(e)) return -1;
        if (timeout_s > 0 && spins >= 100 && egm_now() - t0 > timeout_s) return EGM_MPI_TIMEOUT;
        backoff(&spins, &ns);
    }
}

int egm_mpi_wait(int n, const int *src, const int *tag, MPI_Status *st, egm_err *e) {
    return egm_mpi_wait_for(n, src, tag, 0, st, e);
}

int egm_mpi_ping_all(int world, double grace_s, unsigned char *alive, egm_err *e) {
    static int round;
    int v = ++round, missing = world - 1;
    MPI_Request *req = malloc(sizeof *req * (size_t)world);
    if (!req) return egm_fail(e, "out of memory");
    memset(alive, 0, (size_t)world);
    for (int r = 1; r < world; r++)
        /* a dead peer may fail the send: it just stays "not alive" */
        if (MPI_Isend(&v, 1, MPI_INT, r, EGM_TAG_PING, MPI_COMM_WORLD, &req[r]) != MPI_SUCCESS)
            req[r] = MPI_REQUEST_NULL;
    double t0 = egm_now();
    long ns = 0;
    for (int spins = 0; missing > 0 && egm_now() - t0 < grace_s;) {
        MPI_Status st;
        int flag = 0, got, rc = MPI_Iprobe(MPI_ANY_SOURCE, EGM_TAG_PING, MPI_COMM_WORLD, &flag, &st);
        if (rc != MPI_SUCCESS) break;
        if (!flag) {
            backoff(&spins, &ns);
            continue;
        }
        rc = MPI_Recv(&got, 1, MPI_INT, st.MPI_SOURCE, EGM_TAG_PING, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) break;
        /* an answer to an older round says nothing about now */
        if (got == v && st.MPI_SOURCE > 0 && st.MPI_SOURCE < world && !alive[st.MPI_SOURCE]) {
            alive[st.MPI_SOURCE] = 1;
            missing--;
        }
    }
    /* pings to ranks that never answered stay pending: let MPI drop them */
    for (int r = 1; r < world; r++)
        if (req[r] != MPI_REQUEST_NULL) MPI_Request_free(&req[r]);
    free(req);
    return missing;
}

int egm_mpi_recv_probed(const MPI_Status *st, egm_buf *buf, size_t *len, egm_err *e) {
    int count = 0, rc = MPI_Get_count(st, MPI_BYTE, &count);
    if (rc != MPI_SUCCESS) return egm_mpi_fail(e, rc, "message size");
    if (!egm_buf_grow(buf, (size_t)count + 1)) return egm_fail(e, "out of memory for a %d-byte message", count);
    rc = MPI_Recv(buf->p, count, MPI_BYTE, st->MPI_SOURCE, st->MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) return egm_mpi_fail(e, rc, "receive");
    *len = (size_t)count;
    return 0;
}

static int send_env_tag(const Egmla__Envelope *env, int dest, int tag, egm_err *e) {
    size_t n = egmla__envelope__get_packed_size(env);
    unsigned char *buf = malloc(n ? n : 1);
    if (!buf) return egm_fail(e, "out of memory");
    egmla__envelope__pack(env, buf);
    int rc = MPI_Send(buf, (int)n, MPI_BYTE, dest, tag, MPI_COMM_WORLD);
    free(buf);
    if (rc != MPI_SUCCESS) return egm_mpi_fail(e, rc, "send");
    return 0;
}

int egm_mpi_send_env(const Egmla__Envelope *env, int dest, egm_err *e) {
    return send_env_tag(env, dest, EGM_TAG_CTRL, e);
}

int egm_mpi_recv_env(int src, Egmla__Envelope **env, int *from, egm_err *e) {
    MPI_Status st;
    int tag = EGM_TAG_CTRL;
    if (egm_mpi_wait(1, &src, &tag, &st, e) < 0) return -1;
    egm_buf b = {0};
    size_t len;
    if (egm_mpi_recv_probed(&st, &b, &len, e)) {
        free(b.p);
        return -1;
    }
    *env = egmla__envelope__unpack(NULL, len, b.p);
    free(b.p);
    if (from) *from = st.MPI_SOURCE;
    if (!*env) return egm_fail(e, "rank %d sent a message that does not decode (%zu bytes)", st.MPI_SOURCE, len);
    return 0;
}

/* ---- the stage --------------------------------------------------------- */

typedef struct {
    egm_buf hdr, act;        /* header bytes and activations (or logits) */
    MPI_Request req[2];
} send_slot;

typedef struct {
    int rank, world, first, last, prev, next;
    char host[256];
    egm_model m;
    egm_stage st;
    egm_head head;
    int have_head;
    egm_wire_dtype wd;
    egm_buf x;
    egm_buf in_hdr, in_act;
    egm_buf admits;            /* egm_admit[]: the batch's, decoded */
    egm_head_out *outs;
    int outs_cap;
    send_slot slots[2];
    unsigned long long n_batches;
    /* statistics (Stats in proto/egmla.proto says what each counts) */
    double busy, wait, bubble;
    unsigned long long bytes_in, bytes_out, hdr_out, rows;
} worker;

/* Tells rank 0 what went wrong; it prints it and stops every rank. */
static void report_error(worker *w, const egm_err *e) {
    Egmla__Error er = EGMLA__ERROR__INIT;
    er.rank = w->rank;
    er.host = w->host;
    er.message = (char *)e->msg;
    Egmla__Envelope env = EGMLA__ENVELOPE__INIT;
    env.msg_case = EGMLA__ENVELOPE__MSG_ERROR;
    env.error = &er;
    egm_err ignore;
    egm_mpi_send_env(&env, 0, &ignore);
}

/* The run is abandoned: sends still pending will never be received. */
static void cancel_sends(worker *w) {
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 2; j++)
            if (w->slots[k].req[j] != MPI_REQUEST_NULL) {
                MPI_Cancel(&w->slots[k].req[j]);
                MPI_Request_free(&w->slots[k].req[j]);
            }
}

/* Waits for rank 0's stop after an error (rank 0 prints the message). */
static void await_stop(worker *w) {
    MPI_Status st;
    int src = 0, tag = EGM_TAG_STOP;
    egm_err ignore;
    if (egm_mpi_wait(1, &src, &tag, &st, &ignore) == 0) {
        int v;
        MPI_Recv(&v, 1, MPI_INT, 0, EGM_TAG_STOP, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    }
    cancel_sends(w);
}

/* Waits for a slot's sends to leave, answering pings meanwhile: a rank
 * stuck behind a hung successor must still look alive. */
static int wait_slot(send_slot *s, egm_err *e) {
    long ns = 0;
    for (int spins = 0;;) {
        int done = 0, rc = MPI_Testall(2, s->req, &done, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS) return egm_mpi_fail(e, rc, "send to the next rank");
        if (done) return 0;
        if (serve_ping(e)) return -1;
        backoff(&spins, &ns);
    }
}

static int isend(const void *p, size_t n, int dest, int tag, MPI_Request *r, egm_err *e) {
    int rc = MPI_Isend(p, (int)n, MPI_BYTE, dest, tag, MPI_COMM_WORLD, r);
    if (rc != MPI_SUCCESS) return egm_mpi_fail(e, rc, "send");
    return 0;
}

/* The assigned layers: mapped from the model's files, or (bench --config)
 * generated from the config text rank 0 sent, by the same deterministic
 * generator one process uses, so any split runs the very same weights. */
static int load_layers(const Egmla__Assign *a, int flags, egm_model *m, char fp[40], egm_err *e) {
    if (!a->config_json || !*a->config_json) {
        if (egm_model_load(a->model, a->layer_lo, a->layer_hi, flags, m, e)) return -1;
        return egm_model_fingerprint(a->model, 1, fp, e);
    }
    egm_config c;
    size_t len = strlen(a->config_json);
    if (egm_config_parse(a->config_json, len, a->model, &c, e) ||
        egm_model_random(&c, a->seed, a->layer_lo, a->layer_hi, flags, m, e))
        return -1;
    egm_synthetic_fingerprint(a->config_json, len, a->seed, fp);
    return 0;
}

/* Loads the assigned layers and replies Hello. Returns 0 when the stage is
 * ready, -1 when it is not (the Hello carried the reason). */
static int start(worker *w, const Egmla__Assign *a, egm_err *e) {
    Egmla__Hello h = EGMLA__HELLO__INIT;
    char fp[40] = "";
    int rc = -1;
    w->first = a->stage == 0;
    w->last = a->stage == a->n_stages - 1;
    w->prev = w->rank - 1;
    w->next = w->last ? 0 : w->rank + 1;
    w->wd = (egm_wire_dtype)a->wire_dtype;
    if (a->threads > 0) openblas_set_num_threads(a->threads);
    if (a->wire_dtype < EGM_WIRE_BF16 || a->wire_dtype > EGM_WIRE_INT8 || a->n_slots < 1) {
        egm_fail(e, "bad assignment (wire dtype %d, %d slots)", a->wire_dtype, a->n_slots);
        goto reply;
    }
    if (strcmp(a->build, egm_build_fingerprint())) {
        egm_fail(e, "runs build %s, rank 0 runs %s", egm_build_fingerprint(), a->build);
        goto reply;
    }
    egm_set_batch_invariant(a->batch_invariant); /* process-wide: before any product */
    int flags = (w->first ? EGM_LOAD_EMBED : 0) | (w->last ? EGM_LOAD_HEAD : 0) |
                (a->gate_table ? EGM_LOAD_GATE_TABLE : 0);
    if (load_layers(a, flags, &w->m, fp, e)) goto reply;
    if (egm_stage_init(&w->st, &w->m, a->n_slots, (size_t)a->kv_budget, a->block_tokens,
                       a->kv_bf16, e) ||
        egm_stage_set_attn_bf16(&w->st, a->attn_bf16, e)) {
        egm_wrap(e, "layers %d-%d", a->layer_lo, a->layer_hi - 1);
        goto reply;
    }
    if (w->last) {
        if (egm_head_init(&w->head, a->n_slots, w->m.cfg.vocab_size, e)) goto reply;
        w->have_head = 1;
    }
    rc = 0;
reply:
    h.rank = w->rank;
    h.host = w->host;
    h.threads = a->threads;
    h.kv_budget = a->kv_budget;
    h.kv_blocks = rc ? 0 : w->st.kv.n_blocks;
    h.block_tokens = a->block_tokens;
    h.build = (char *)egm_build_fingerprint();
    h.model = fp;
    h.error = rc ? e->msg : "";
    h.layer_lo = a->layer_lo;
    h.layer_hi = a->layer_hi;
    Egmla__Envelope env = EGMLA__ENVELOPE__INIT;
    env.msg_case = EGMLA__ENVELOPE__MSG_HELLO;
    env.hello = &h;
    egm_err se;
    if (egm_mpi_send_env(&env, 0, &se)) {
        *e = se;
        return -1;
    }
    return rc;
}

/* The micro-batch's releases and admissions, decoded and applied. */
static int apply_admits(worker *w, const Egmla__MicroBatch *mb, egm_err *e) {
    int n = (int)mb->n_admits;
    egm_admit *ad = egm_buf_grow(&w->admits, sizeof *ad * (size_t)(n ? n : 1));
    if (!ad) return egm_fail(e, "out of memory for %d admissions", n);
    for (int i = 0; i < n; i++) {
        const Egmla__Admit *a = mb->admits[i];
        egm_admit *d = &ad[i];
        *d = (egm_admit){.slot = a->slot, .mode = a->mode, .n_reserve = a->n_reserve,
                         .fork_slot = a->fork_slot, .fork_n = a->fork_n,
                         .tokens = a->tokens, .n_tokens = (int)a->n_tokens,
                         .top_logprobs = a->top_logprobs};
        egm_sampling_default(&d->sp);
        if (a->sampling) {
            d->sp.temperature = a->sampling->temperature;
            d->sp.top_k = a->sampling->top_k;
            d->sp.top_p = a->sampling->top_p;
            d->sp.min_p = a->sampling->min_p;
            d->sp.repetition_penalty = a->sampling->repetition_penalty;
            d->sp.seed = a->sampling->seed;
        }
    }
    return egm_stage_apply(&w->st, w->have_head ? &w->head : NULL, mb->releases,
                           (int)mb->n_releases, ad, n, e);
}

/* A micro-batch's header against the worker's assignment. */
static int check_header(const worker *w, const Egmla__MicroBatch *mb, egm_err *e) {
    int n = mb->n;
    if (n < 0 || (int)mb->n_slot != n || (int)mb->n_pos != n || (int)mb->n_token != n ||
        (int)mb->want.len != n)
        return egm_fail(e, "micro-batch %llu: inconsistent header (%d rows)",
                        (unsigned long long)mb->seq, n);
    if (mb->wire_dtype != (int)w->wd)
        return egm_fail(e, "micro-batch %llu: wire dtype %d, assigned %d",
                        (unsigned long long)mb->seq, mb->wire_dtype, (int)w->wd);
    return 0;
}

/* The previous rank's activations for mb, into w->in_act. */
static int recv_act(worker *w, const Egmla__MicroBatch *mb, egm_err *e) {
    int n = mb->n, D = w->m.cfg.hidden_size;
    size_t want = egm_wire_bytes(w->wd, n, D), got;
    MPI_Status st;
    int src = w->prev, tag = EGM_TAG_ACT;
    if (egm_mpi_wait(1, &src, &tag, &st, e) < 0) return -1;
    if (egm_mpi_recv_probed(&st, &w->in_act, &got, e)) return -1;
    if (got != want)
        return egm_fail(e, "micro-batch %llu: %zu bytes of activations, expected %zu",
                        (unsigned long long)mb->seq, got, want);
    w->bytes_in += got;
    return 0;
}

/* Every row's slot, token and position, once the admissions are in. */
static int check_rows(const worker *w, const Egmla__MicroBatch *mb, egm_err *e) {
    const egm_config *c = &w->m.cfg;
    int n = mb->n;
    for (int r = 0; r < n; r++)
        if (mb->slot[r] < 0 || mb->slot[r] >= w->st.n_slots || mb->token[r] < 0 ||
            mb->token[r] >= c->vocab_size)
            return egm_fail(e, "micro-batch %llu row %d: bad slot %d or token %d",
                            (unsigned long long)mb->seq, r, mb->slot[r], mb->token[r]);
    /* positions: inside what the slot reserved, consecutive within a sequence */
    for (int r = 0; r < n; r++) {
        const egm_kv_seq *q = &w->st.seqs[mb->slot[r]];
        int same = r > 0 && mb->slot[r] == mb->slot[r - 1];
        if (mb->pos[r] < 0 || mb->pos[r] >= q->n_blocks * w->st.kv.block_tokens ||
            (same && mb->pos[r] != mb->pos[r - 1] + 1))
            return egm_fail(e, "micro-batch %llu row %d: position %d of slot %d is outside its "
                            "%d reserved positions or out of order", (unsigned long long)mb->seq,
                            r, mb->pos[r], mb->slot[r], q->n_blocks * w->st.kv.block_tokens);
    }
    return 0;
}

/* Not the last stage: the header, unchanged, and x encoded to the next rank.
 * busy_from: when this rank's own work on the batch started. */
static int send_next(worker *w, send_slot *s, const float *x, int n, size_t hdr_len,
                     double busy_from, egm_err *e) {
    int D = w->m.cfg.hidden_size;
    size_t nb = egm_wire_bytes(w->wd, n, D);
    if (!egm_buf_grow(&s->hdr, hdr_len) || !egm_buf_grow(&s->act, nb))
        return egm_fail(e, "out of memory");
    memcpy(s->hdr.p, w->in_hdr.p, hdr_len);  /* the header travels unchanged */
    egm_wire_encode(w->wd, x, n, D, s->act.p);
    w->busy += egm_now() - busy_from;
    if (isend(s->hdr.p, hdr_len, w->next, EGM_TAG_CTRL, &s->req[0], e) ||
        isend(s->act.p, nb, w->next, EGM_TAG_ACT, &s->req[1], e))
        return -1;
    w->bytes_out += nb;
    w->hdr_out += hdr_len;
    return 0;
}

/* The last stage: sample or score the wanted rows, send the results (and
 * logits when asked) to rank 0. */
static int send_result(worker *w, send_slot *s, const Egmla__MicroBatch *mb,
                       const egm_mbatch *b, const float *x, double busy_from, egm_err *e) {
    const egm_config *c = &w->m.cfg;
    int n = mb->n;
    if (w->outs_cap < n) {
        free(w->outs);
        w->outs_cap = n;
        w->outs = malloc(sizeof *w->outs * (size_t)n);
        if (!w->outs) return egm_fail(e, "out of memory");
    }
    const unsigned char *want = mb->want.data;
    int k = n ? egm_head_run(&w->head, &w->st, b, want, x, w->outs) : 0;
    Egmla__Output *ov = calloc((size_t)(k ? k : 1), sizeof *ov);
    Egmla__Output **op = calloc((size_t)(k ? k : 1), sizeof *op);
    if (!ov || !op) {
        free(ov);
        free(op);
        return egm_fail(e, "out of memory");
    }
    for (int i = 0; i < k; i++) {
        Egmla__Output o = EGMLA__OUTPUT__INIT;
        o.slot = w->outs[i].slot;
        o.pos = w->outs[i].pos;
        o.token = w->outs[i].token;
        o.logprob = w->outs[i].logprob;
        o.greedy = w->outs[i].greedy != 0;
        o.has_target = w->outs[i].has_target != 0;
        /* pointers into w->outs, alive until packed below */
        o.n_top_ids = o.n_top_logprobs = (size_t)w->outs[i].n_top;
        o.top_ids = (int32_t *)w->outs[i].top_id;
        o.top_logprobs = w->outs[i].top_lp;
        ov[i] = o;
        op[i] = &ov[i];
    }
    Egmla__Result res = EGMLA__RESULT__INIT;
    res.seq = mb->seq;
    res.n_outs = (size_t)k;
    res.outs = op;
    res.has_logits = mb->keep_logits && k > 0;
    Egmla__Envelope env = EGMLA__ENVELOPE__INIT;
    env.msg_case = EGMLA__ENVELOPE__MSG_RESULT;
    env.result = &res;
    size_t hl = egmla__envelope__get_packed_size(&env);
    size_t lb = res.has_logits ? sizeof(float) * (size_t)k * (size_t)c->vocab_size : 0;
    if (!egm_buf_grow(&s->hdr, hl) || (lb && !egm_buf_grow(&s->act, lb))) {
        free(ov);
        free(op);
        return egm_fail(e, "out of memory");
    }
    egmla__envelope__pack(&env, s->hdr.p);
    free(ov);
    free(op);
    if (lb) memcpy(s->act.p, egm_head_last_logits(&w->head), lb);
    w->busy += egm_now() - busy_from;
    if (isend(s->hdr.p, hl, 0, EGM_TAG_CTRL, &s->req[0], e)) return -1;
    if (lb && isend(s->act.p, lb, 0, EGM_TAG_LOGITS, &s->req[1], e)) return -1;
    w->hdr_out += hl;
    return 0;
}

/* One micro-batch: its header is in w->in_hdr (len bytes), unpacked as mb. */
static int step(worker *w, const Egmla__MicroBatch *mb, size_t hdr_len, egm_err *e) {
    int n = mb->n, D = w->m.cfg.hidden_size;
    if (check_header(w, mb, e)) return -1;
    float *x = egm_buf_need(&w->x, (long)(n ? n : 1) * D);
    double t0 = egm_now();
    if (!w->first && recv_act(w, mb, e)) return -1;
    double t1 = egm_now();
    w->wait += t1 - t0;
    if (apply_admits(w, mb, e) || check_rows(w, mb, e)) return -1;
    if (!w->first) egm_wire_decode(w->wd, w->in_act.p, n, D, x);
    egm_mbatch b = {n, mb->slot, mb->pos, mb->token};
    if (n) egm_stage_forward(&w->st, &b, x);

    /* ship it: reuse the buffers of two batches ago once they have left
     * (time spent waiting for that is the next rank's, not ours: wait) */
    send_slot *s = &w->slots[w->n_batches++ % 2];
    double ts = egm_now();
    if (wait_slot(s, e)) return -1;
    double tw = egm_now() - ts;
    w->wait += tw;
    if (w->last ? send_result(w, s, mb, &b, x, t1 + tw, e)
                : send_next(w, s, x, n, hdr_len, t1 + tw, e))
        return -1;
    w->rows += (unsigned long long)n;
    return 0;
}

/* This stage's statistics so far to rank 0 on `tag`, answering `request`
 * (0: the report at shutdown). */
static int send_stats(const worker *w, uint64_t request, int tag, egm_err *e) {
    Egmla__Stats s = EGMLA__STATS__INIT;
    s.rank = w->rank;
    s.host = (char *)w->host;
    s.layer_lo = w->m.lo;
    s.layer_hi = w->m.hi;
    s.busy_s = w->busy;
    s.wait_s = w->wait;
    s.bubble_s = w->bubble;
    s.clock_s = egm_now();
    s.bytes_in = w->bytes_in;
    s.bytes_out = w->bytes_out;
    s.header_bytes_out = w->hdr_out;
    s.rows = w->rows;
    s.batches = w->n_batches;
    s.request = request;
    Egmla__Envelope env = EGMLA__ENVELOPE__INIT;
    env.msg_case = EGMLA__ENVELOPE__MSG_STATS;
    env.stats = &s;
    return send_env_tag(&env, 0, tag, e);
}

/* A StatsRequest: pass it on behind the batches already sent (same tag,
 * so MPI keeps the order), then answer rank 0 on the stats tag. */
static int answer_stats(worker *w, uint64_t id, egm_err *e) {
    if (!w->last) {
        Egmla__Envelope env = EGMLA__ENVELOPE__INIT;
        Egmla__StatsRequest q = EGMLA__STATS_REQUEST__INIT;
        q.id = id;
        env.msg_case = EGMLA__ENVELOPE__MSG_STATS_REQUEST;
        env.stats_request = &q;
        if (egm_mpi_send_env(&env, w->next, e)) return -1;
    }
    return send_stats(w, id, EGM_TAG_STATS, e);
}

/* Shutdown: let the last sends leave, pass it on, report statistics. */
static int finish(worker *w, egm_err *e) {
    for (int k = 0; k < 2; k++)
        if (wait_slot(&w->slots[k], e)) return -1;
    if (!w->last) {
        Egmla__Envelope env = EGMLA__ENVELOPE__INIT;
        Egmla__Shutdown sd = EGMLA__SHUTDOWN__INIT;
        env.msg_case = EGMLA__ENVELOPE__MSG_SHUTDOWN;
        env.shutdown = &sd;
        if (egm_mpi_send_env(&env, w->next, e)) return -1;
    }
    return send_stats(w, 0, EGM_TAG_CTRL, e);
}

static void worker_free(worker *w) {
    egm_stage_free(&w->st);
    if (w->have_head) egm_head_free(&w->head);
    egm_model_free(&w->m);
    free(w->x.p);
    free(w->in_hdr.p);
    free(w->in_act.p);
    free(w->admits.p);
    free(w->outs);
    for (int k = 0; k < 2; k++) {
        free(w->slots[k].hdr.p);
        free(w->slots[k].act.p);
    }
}

int egm_worker_main(int rank, int world) {
    worker w;
    memset(&w, 0, sizeof w);
    w.rank = rank;
    w.world = world;
    answer_pings = 1;
    for (int k = 0; k < 2; k++) w.slots[k].req[0] = w.slots[k].req[1] = MPI_REQUEST_NULL;
    egm_mpi_hostname(w.host, sizeof w.host);
    egm_err e;
    Egmla__Envelope *env = NULL;
    int rc = 1;
    if (egm_mpi_recv_env(0, &env, NULL, &e)) goto fatal;
    if (env->msg_case != EGMLA__ENVELOPE__MSG_ASSIGN) {
        /* rank 0 gave up before assigning (it printed why): exit as it
         * does, so that mpirun's status is rank 0's whoever ends first */
        int status = env->msg_case == EGMLA__ENVELOPE__MSG_SHUTDOWN && env->shutdown->exit_status > 0
                         ? env->shutdown->exit_status : 1;
        egmla__envelope__free_unpacked(env, NULL);
        return status;
    }
    int ok = start(&w, env->assign, &e) == 0;
    egmla__envelope__free_unpacked(env, NULL);
    if (!ok) {
        await_stop(&w);  /* rank 0 reports the reason */
        worker_free(&w);
        return 1;
    }
    for (;;) {
        MPI_Status st;
        int src[2] = {w.prev, 0}, tag[2] = {EGM_TAG_CTRL, EGM_TAG_STOP};
        double t0 = egm_now();
        int which = egm_mpi_wait(2, src, tag, &st, &e);
        w.bubble += egm_now() - t0;  /* nothing to work on until a header comes */
        if (which < 0) goto fatal;
        if (which == 1) {
            int v;
            MPI_Recv(&v, 1, MPI_INT, 0, EGM_TAG_STOP, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            cancel_sends(&w);
            break;
        }
        size_t len;
        if (egm_mpi_recv_probed(&st, &w.in_hdr, &len, &e)) goto fatal;
        env = egmla__envelope__unpack(NULL, len, w.in_hdr.p);
        if (!env) {
            egm_fail(&e, "rank %d sent a message that does not decode (%zu bytes)", w.prev, len);
            goto fatal;
        }
        if (env->msg_case == EGMLA__ENVELOPE__MSG_SHUTDOWN) {
            int failed = env->shutdown->failed;
            egmla__envelope__free_unpacked(env, NULL);
            if (failed) break;
            if (finish(&w, &e)) goto fatal;
            rc = 0;
            break;
        }
        if (env->msg_case == EGMLA__ENVELOPE__MSG_STATS_REQUEST) {
            uint64_t id = env->stats_request->id;
            egmla__envelope__free_unpacked(env, NULL);
            if (answer_stats(&w, id, &e)) goto fatal;
            continue;
        }
        if (env->msg_case != EGMLA__ENVELOPE__MSG_BATCH) {
            egm_fail(&e, "unexpected message (case %d) from rank %d", env->msg_case, w.prev);
            egmla__envelope__free_unpacked(env, NULL);
            goto fatal;
        }
        int bad = step(&w, env->batch, len, &e);
        egmla__envelope__free_unpacked(env, NULL);
        if (bad) goto fatal;
    }
    worker_free(&w);
    return rc;
fatal:
    report_error(&w, &e);
    await_stop(&w);
    worker_free(&w);
    return 1;
}
