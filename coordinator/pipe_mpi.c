/* pipe_mpi.c - rank 0's end of the MPI pipeline (see pipe_mpi.h). */
#include "base/clock.h"
#include "coordinator/pipe_mpi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "worker/wire.h"
#include "worker/worker_mpi.h"

#define RING 64

typedef struct {
    egm_buf buf;
    MPI_Request req;
} ring_slot;

typedef struct {
    egm_pipe base;
    int world, last, V;
    egm_wire_dtype wd;
    ring_slot ring[RING];
    unsigned long long n_submit, n_collect;
    unsigned long long n_ring;              /* messages sent through the ring */
    unsigned long long n_marks, n_marks_read;
    egm_buf in;
    egm_head_out *outs;
    int outs_cap;
    float *logits;
    size_t logits_cap;
    double timeout;
    char (*hosts)[256];
    egm_stage_stats *marks;                 /* [world - 1], for busy_poll */
    int faulted;
} mpi_pipe;

/* Something is wrong with a rank; e says what rank 0 saw. Pings every
 * rank and names those that do not answer, so the user learns which
 * process (and machine) to look at. */
static int rank_fault(mpi_pipe *mp, egm_err *e) {
    char list[512] = "";
    mp->faulted = 1;
    unsigned char *alive = calloc((size_t)mp->world, 1);
    egm_err pe;
    /* long enough for a busy rank to finish its step and answer */
    double grace = mp->timeout > 0 ? mp->timeout / 2 : 2;
    if (grace < 1) grace = 1;
    if (grace > 5) grace = 5;
    int missing = alive ? egm_mpi_ping_all(mp->world, grace, alive, &pe) : -1;
    if (missing > 0) {
        size_t n = 0;
        for (int r = 1; r < mp->world && n < sizeof list - 80; r++)
            if (!alive[r])
                n += (size_t)snprintf(list + n, sizeof list - n, "%s%d (%.60s)", n ? ", rank " : "",
                                      r, mp->hosts[r]);
        free(alive);
        return egm_wrap(e, "rank %s does not answer (dead or hung)", list);
    }
    free(alive);
    if (missing == 0) egm_wrap(e, "every rank still answers (a pipeline bug?)");
    return -1;
}

/* Waits for one message like egm_mpi_wait, bounded by the rank timeout;
 * `what` names what was awaited, for the message on a fault. */
static int wait_msg(mpi_pipe *mp, int src, int tag, MPI_Status *st, const char *what, egm_err *e) {
    int rc = egm_mpi_wait_for(1, &src, &tag, mp->timeout, st, e);
    if (rc >= 0) return 0;
    if (rc == EGM_MPI_TIMEOUT)
        egm_fail(e, "no %s for %.0f s (--rank-timeout)", what, mp->timeout);
    else
        egm_wrap(e, "waiting for %s", what);
    return rank_fault(mp, e);
}

/* Waits for a send to complete, bounded the same way. */
static int wait_send(mpi_pipe *mp, MPI_Request *r, int dest, egm_err *e) {
    double t0 = egm_now();
    for (;;) {
        int done = 0, rc = MPI_Test(r, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) {
            egm_mpi_fail(e, rc, "send");
            egm_wrap(e, "sending to rank %d (%.60s)", dest, mp->hosts[dest]);
            return rank_fault(mp, e);
        }
        if (done) return 0;
        if (mp->timeout > 0 && egm_now() - t0 > mp->timeout) {
            egm_fail(e, "a send to rank %d (%.60s) has not completed for %.0f s (--rank-timeout)",
                     dest, mp->hosts[dest], mp->timeout);
            return rank_fault(mp, e);
        }
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
}

/* Sends a control message to rank 1 without blocking, from the ring: a
 * buffer RING messages old has long been received. */
static int ring_send(mpi_pipe *mp, const Egmla__Envelope *env, egm_err *e) {
    ring_slot *r = &mp->ring[mp->n_ring % RING];
    if (wait_send(mp, &r->req, 1, e)) return -1;
    size_t n = egmla__envelope__get_packed_size(env);
    unsigned char *buf = egm_buf_grow(&r->buf, n);
    if (!buf) return egm_fail(e, "out of memory");
    egmla__envelope__pack(env, buf);
    int rc = MPI_Isend(buf, (int)n, MPI_BYTE, 1, EGM_TAG_CTRL, MPI_COMM_WORLD, &r->req);
    if (rc != MPI_SUCCESS) {
        egm_mpi_fail(e, rc, "send");
        egm_wrap(e, "sending to rank 1 (%.60s)", mp->hosts[1]);
        return rank_fault(mp, e);
    }
    mp->n_ring++;
    return 0;
}

static int mpi_submit(egm_pipe *p, const egm_submit *s, egm_err *e) {
    mpi_pipe *mp = (mpi_pipe *)p;
    if (mp->n_submit - mp->n_collect >= RING)
        return egm_fail(e, "more than %d micro-batches in flight", RING);
    Egmla__Admit *ad = calloc((size_t)s->n_admits + 1, sizeof *ad);
    Egmla__Admit **adp = calloc((size_t)s->n_admits + 1, sizeof *adp);
    Egmla__Sampling *sp = calloc((size_t)s->n_admits + 1, sizeof *sp);
    if (!ad || !adp || !sp) {
        free(ad);
        free(adp);
        free(sp);
        return egm_fail(e, "out of memory");
    }
    for (int i = 0; i < s->n_admits; i++) {
        const egm_admit *a = &s->admits[i];
        Egmla__Sampling si = EGMLA__SAMPLING__INIT;
        si.temperature = a->sp.temperature;
        si.top_k = a->sp.top_k;
        si.top_p = a->sp.top_p;
        si.min_p = a->sp.min_p;
        si.repetition_penalty = a->sp.repetition_penalty;
        si.seed = a->sp.seed;
        sp[i] = si;
        Egmla__Admit ai = EGMLA__ADMIT__INIT;
        ai.slot = a->slot;
        ai.mode = a->mode;
        ai.sampling = &sp[i];
        ai.n_reserve = a->n_reserve;
        ai.fork_slot = a->fork_slot;
        ai.fork_n = a->fork_n;
        ai.top_logprobs = a->top_logprobs;
        /* only the last stage needs a scored sequence's tokens */
        ai.n_tokens = a->mode == EGM_MODE_SCORE ? (size_t)a->n_tokens : 0;
        ai.tokens = (int32_t *)a->tokens;
        ad[i] = ai;
        adp[i] = &ad[i];
    }
    Egmla__MicroBatch mb = EGMLA__MICRO_BATCH__INIT;
    mb.seq = mp->n_submit;
    mb.n = s->b.n;
    mb.n_slot = mb.n_pos = mb.n_token = (size_t)s->b.n;
    mb.slot = (int32_t *)s->b.slot;
    mb.pos = (int32_t *)s->b.pos;
    mb.token = (int32_t *)s->b.token;
    mb.want.len = (size_t)s->b.n;
    mb.want.data = (uint8_t *)s->want;
    mb.n_admits = (size_t)s->n_admits;
    mb.admits = adp;
    mb.n_releases = (size_t)s->n_releases;
    mb.releases = (int32_t *)s->releases;
    mb.keep_logits = s->keep_logits != 0;
    mb.wire_dtype = mp->wd;
    Egmla__Envelope env = EGMLA__ENVELOPE__INIT;
    env.msg_case = EGMLA__ENVELOPE__MSG_BATCH;
    env.batch = &mb;
    int bad = ring_send(mp, &env, e);
    free(ad);
    free(adp);
    free(sp);
    if (bad) return -1;
    mp->n_submit++;
    return 0;
}

/* An Error from any rank, or something that has no business here. */
static int bad_message(const Egmla__Envelope *env, int from, egm_err *e) {
    if (env->msg_case == EGMLA__ENVELOPE__MSG_ERROR)
        return egm_fail(e, "rank %d (%s): %s", env->error->rank, env->error->host,
                        env->error->message);
    return egm_fail(e, "rank %d sent an unexpected message (case %d)", from, env->msg_case);
}

static int mpi_collect(egm_pipe *p, egm_result *res, egm_err *e) {
    mpi_pipe *mp = (mpi_pipe *)p;
    if (mp->n_collect == mp->n_submit) return egm_fail(e, "collect with nothing in flight");
    MPI_Status st;
    int src = MPI_ANY_SOURCE, tag = EGM_TAG_CTRL;
    size_t len;
    char what[128];
    snprintf(what, sizeof what, "result from the pipeline (last stage: rank %d on %s)", mp->last,
             mp->hosts[mp->last]);
    if (wait_msg(mp, src, tag, &st, what, e)) return -1;
    if (egm_mpi_recv_probed(&st, &mp->in, &len, e)) {
        egm_wrap(e, "receiving from rank %d (%.60s)", st.MPI_SOURCE, mp->hosts[st.MPI_SOURCE]);
        return rank_fault(mp, e);
    }
    Egmla__Envelope *env = egmla__envelope__unpack(NULL, len, mp->in.p);
    if (!env) return egm_fail(e, "rank %d sent a message that does not decode (%zu bytes)", st.MPI_SOURCE, len);
    int rc = -1;
    if (env->msg_case != EGMLA__ENVELOPE__MSG_RESULT || st.MPI_SOURCE != mp->last) {
        bad_message(env, st.MPI_SOURCE, e);
        goto out;
    }
    const Egmla__Result *r = env->result;
    if (r->seq != mp->n_collect) {
        egm_fail(e, "rank %d returned micro-batch %llu, expected %llu", mp->last,
                 (unsigned long long)r->seq, mp->n_collect);
        goto out;
    }
    int k = (int)r->n_outs;
    if (mp->outs_cap < k) {
        free(mp->outs);
        mp->outs_cap = k;
        mp->outs = malloc(sizeof *mp->outs * (size_t)k);
        if (!mp->outs) {
            mp->outs_cap = 0;
            egm_fail(e, "out of memory");
            goto out;
        }
    }
    for (int i = 0; i < k; i++) {
        const Egmla__Output *o = r->outs[i];
        /* never trust a peer: the scheduler indexes its tables with these */
        if (o->slot < 0 || o->slot >= mp->base.caps.n_slots || o->pos < 0 || o->token < 0 ||
            o->token >= mp->V) {
            egm_fail(e, "rank %d returned a bad result (slot %d, position %d, token %d)",
                     mp->last, o->slot, o->pos, o->token);
            goto out;
        }
        if (o->n_top_ids != o->n_top_logprobs || o->n_top_ids > EGM_HEAD_MAX_TOP) {
            egm_fail(e, "rank %d returned %zu top ids with %zu log-probs (at most %d)", mp->last,
                     o->n_top_ids, o->n_top_logprobs, EGM_HEAD_MAX_TOP);
            goto out;
        }
        egm_head_out *h = &mp->outs[i];
        *h = (egm_head_out){o->slot, o->pos, o->token, o->logprob, o->greedy, o->has_target, 0, {0}, {0}};
        h->n_top = (int)o->n_top_ids;
        for (int j = 0; j < h->n_top; j++) {
            if (o->top_ids[j] < 0 || o->top_ids[j] >= mp->V) {
                egm_fail(e, "rank %d returned a bad top token %d", mp->last, o->top_ids[j]);
                goto out;
            }
            h->top_id[j] = o->top_ids[j];
            h->top_lp[j] = o->top_logprobs[j];
        }
    }
    res->outs = mp->outs;
    res->n_outs = k;
    res->logits = NULL;
    if (r->has_logits) {
        size_t need = sizeof(float) * (size_t)k * (size_t)mp->V;
        if (mp->logits_cap < need) {
            free(mp->logits);
            mp->logits = malloc(need);
            mp->logits_cap = mp->logits ? need : 0;
            if (!mp->logits) {
                egm_fail(e, "out of memory for logits");
                goto out;
            }
        }
        MPI_Status ls;
        if (wait_msg(mp, mp->last, EGM_TAG_LOGITS, &ls, "logits from the last stage", e)) goto out;
        int c = 0, mrc = MPI_Recv(mp->logits, (int)need, MPI_BYTE, mp->last, EGM_TAG_LOGITS,
                                  MPI_COMM_WORLD, &ls);
        if (mrc != MPI_SUCCESS) {
            egm_mpi_fail(e, mrc, "receive logits");
            egm_wrap(e, "rank %d (%.60s)", mp->last, mp->hosts[mp->last]);
            rank_fault(mp, e);
            goto out;
        }
        MPI_Get_count(&ls, MPI_BYTE, &c);
        if ((size_t)c != need) {
            egm_fail(e, "rank %d sent %d bytes of logits, expected %zu", mp->last, c, need);
            goto out;
        }
        res->logits = mp->logits;
    }
    mp->n_collect++;
    rc = 0;
out:
    egmla__envelope__free_unpacked(env, NULL);
    return rc;
}

static void mpi_close(egm_pipe *p) {
    mpi_pipe *mp = (mpi_pipe *)p;
    for (int i = 0; i < RING; i++) {
        if (mp->ring[i].req != MPI_REQUEST_NULL) {
            /* unfinished only when the run was abandoned */
            MPI_Cancel(&mp->ring[i].req);
            MPI_Request_free(&mp->ring[i].req);
        }
        free(mp->ring[i].buf.p);
    }
    free(mp->in.p);
    free(mp->outs);
    free(mp->logits);
    free(mp->hosts);
    free(mp->marks);
    free(mp);
}

static int mpi_busy_ask(egm_pipe *p, egm_err *e);
static int mpi_busy_poll(egm_pipe *p, int wait, egm_stage_busy *out, egm_err *e);

int egm_pipe_mpi_open(const egm_pipe_mpi_opts *o, egm_pipe **out, egm_err *e) {
    mpi_pipe *mp = calloc(1, sizeof *mp);
    if (!mp || !(mp->hosts = calloc((size_t)o->world, sizeof *mp->hosts)) ||
        !(mp->marks = calloc((size_t)o->world, sizeof *mp->marks))) {
        if (mp) free(mp->hosts);
        free(mp);
        return egm_fail(e, "out of memory");
    }
    mp->world = o->world;
    mp->last = o->world - 1;
    mp->V = o->vocab;
    mp->wd = o->wd;
    mp->timeout = o->rank_timeout;
    for (int r = 0; r < o->world; r++)
        snprintf(mp->hosts[r], sizeof mp->hosts[r], "%s", o->hosts && o->hosts[r] ? o->hosts[r] : "?");
    for (int i = 0; i < RING; i++) mp->ring[i].req = MPI_REQUEST_NULL;
    mp->base.caps = o->caps;
    mp->base.submit = mpi_submit;
    mp->base.collect = mpi_collect;
    mp->base.close = mpi_close;
    mp->base.n_stages = o->world - 1;
    mp->base.busy_ask = mpi_busy_ask;
    mp->base.busy_poll = mpi_busy_poll;
    *out = &mp->base;
    return 0;
}

int egm_pipe_mpi_faulted(const egm_pipe *p) { return ((const mpi_pipe *)p)->faulted; }

int egm_pipe_mpi_mark(egm_pipe *p, egm_err *e) {
    mpi_pipe *mp = (mpi_pipe *)p;
    Egmla__StatsRequest q = EGMLA__STATS_REQUEST__INIT;
    q.id = mp->n_marks;
    Egmla__Envelope env = EGMLA__ENVELOPE__INIT;
    env.msg_case = EGMLA__ENVELOPE__MSG_STATS_REQUEST;
    env.stats_request = &q;
    if (ring_send(mp, &env, e)) return -1;
    mp->n_marks++;
    return 0;
}

/* Receives rank r's answer to the oldest unread mark (probed as st) into o. */
static int recv_stats(mpi_pipe *mp, int r, MPI_Status *st, int is_stats, egm_stage_stats *o,
                      egm_err *e) {
    size_t len;
    if (egm_mpi_recv_probed(st, &mp->in, &len, e)) {
        egm_wrap(e, "receiving from rank %d (%.60s)", st->MPI_SOURCE, mp->hosts[st->MPI_SOURCE]);
        return rank_fault(mp, e);
    }
    Egmla__Envelope *m = egmla__envelope__unpack(NULL, len, mp->in.p);
    if (!m)
        return egm_fail(e, "rank %d sent a message that does not decode (%zu bytes)",
                        st->MPI_SOURCE, len);
    int rc = 0;
    if (!is_stats || m->msg_case != EGMLA__ENVELOPE__MSG_STATS) {
        rc = bad_message(m, st->MPI_SOURCE, e);
    } else if (m->stats->request != mp->n_marks_read) {
        rc = egm_fail(e, "rank %d answered statistics request %llu, expected %llu", r,
                      (unsigned long long)m->stats->request, mp->n_marks_read);
    } else {
        const Egmla__Stats *s = m->stats;
        memset(o, 0, sizeof *o);
        o->rank = s->rank;
        o->layer_lo = s->layer_lo;
        o->layer_hi = s->layer_hi;
        snprintf(o->host, sizeof o->host, "%s", s->host);
        o->clock_s = s->clock_s;
        o->busy_s = s->busy_s;
        o->wait_s = s->wait_s;
        o->bubble_s = s->bubble_s;
        o->bytes_in = s->bytes_in;
        o->bytes_out = s->bytes_out;
        o->header_bytes_out = s->header_bytes_out;
        o->rows = s->rows;
        o->batches = s->batches;
    }
    egmla__envelope__free_unpacked(m, NULL);
    return rc ? -1 : 0;
}

int egm_pipe_mpi_read_mark(egm_pipe *p, egm_stage_stats *out, egm_err *e) {
    mpi_pipe *mp = (mpi_pipe *)p;
    if (mp->n_marks_read == mp->n_marks) return egm_fail(e, "no statistics were requested");
    /* then the only control message that can come is an Error */
    if (mp->n_collect != mp->n_submit)
        return egm_fail(e, "statistics read with micro-batches in flight");
    for (int r = 1; r < mp->world; r++) {
        int src[2] = {r, MPI_ANY_SOURCE}, tag[2] = {EGM_TAG_STATS, EGM_TAG_CTRL};
        MPI_Status st;
        int which = egm_mpi_wait_for(2, src, tag, mp->timeout, &st, e);
        if (which < 0) {
            if (which == EGM_MPI_TIMEOUT)
                egm_fail(e, "no statistics from rank %d (%.60s) for %.0f s (--rank-timeout)", r,
                         mp->hosts[r], mp->timeout);
            else
                egm_wrap(e, "waiting for statistics from rank %d", r);
            return rank_fault(mp, e);
        }
        if (recv_stats(mp, r, &st, which == 0, &out[r - 1], e)) return -1;
    }
    mp->n_marks_read++;
    return 0;
}

int egm_pipe_mpi_poll_mark(egm_pipe *p, egm_stage_stats *out, egm_err *e) {
    mpi_pipe *mp = (mpi_pipe *)p;
    if (mp->n_marks_read == mp->n_marks) return 0;
    /* answers to one mark come on the stats tag, in order per rank: the
     * first pending from each rank answers the oldest mark */
    MPI_Status st;
    for (int r = 1; r < mp->world; r++) {
        int flag = 0, rc = MPI_Iprobe(r, EGM_TAG_STATS, MPI_COMM_WORLD, &flag, &st);
        if (rc != MPI_SUCCESS) {
            egm_mpi_fail(e, rc, "probe");
            egm_wrap(e, "waiting for statistics from rank %d (%.60s)", r, mp->hosts[r]);
            return rank_fault(mp, e);
        }
        if (!flag) return 0;
    }
    for (int r = 1; r < mp->world; r++) {
        int rc = MPI_Probe(r, EGM_TAG_STATS, MPI_COMM_WORLD, &st);
        if (rc != MPI_SUCCESS) {
            egm_mpi_fail(e, rc, "probe");
            return rank_fault(mp, e);
        }
        if (recv_stats(mp, r, &st, 1, &out[r - 1], e)) return -1;
    }
    mp->n_marks_read++;
    return 1;
}

/* egm_pipe's busy hooks: marks, read without blocking while serving. */
static int mpi_busy_ask(egm_pipe *p, egm_err *e) { return egm_pipe_mpi_mark(p, e); }

static int mpi_busy_poll(egm_pipe *p, int wait, egm_stage_busy *out, egm_err *e) {
    mpi_pipe *mp = (mpi_pipe *)p;
    int rc = wait ? egm_pipe_mpi_read_mark(p, mp->marks, e) ? -1 : 1
                  : egm_pipe_mpi_poll_mark(p, mp->marks, e);
    if (rc != 1) return rc;
    for (int i = 0; i < mp->world - 1; i++) {
        const egm_stage_stats *s = &mp->marks[i];
        /* a worker's loop is always busy, waiting or idle: their sum is its
         * elapsed time since it started */
        out[i] = (egm_stage_busy){s->layer_lo, s->layer_hi, s->busy_s,
                                  s->busy_s + s->wait_s + s->bubble_s, s->clock_s};
    }
    return 1;
}

int egm_pipe_mpi_shutdown(egm_pipe *p, egm_err *e) {
    mpi_pipe *mp = (mpi_pipe *)p;
    for (int i = 0; i < RING; i++)
        if (wait_send(mp, &mp->ring[i].req, 1, e)) return -1;
    Egmla__Shutdown sd = EGMLA__SHUTDOWN__INIT;
    Egmla__Envelope env = EGMLA__ENVELOPE__INIT;
    env.msg_case = EGMLA__ENVELOPE__MSG_SHUTDOWN;
    env.shutdown = &sd;
    if (egm_mpi_send_env(&env, 1, e)) return -1;
    int S = mp->world - 1;
    Egmla__Stats **stats = calloc((size_t)S, sizeof *stats);
    Egmla__Envelope **envs = calloc((size_t)S, sizeof *envs);
    int rc = -1;
    if (!stats || !envs) {
        egm_fail(e, "out of memory");
        goto out;
    }
    for (int i = 0; i < S; i++) {
        Egmla__Envelope *m;
        MPI_Status ms;
        size_t len;
        if (wait_msg(mp, MPI_ANY_SOURCE, EGM_TAG_CTRL, &ms, "statistics from every stage", e))
            goto out;
        int from = ms.MPI_SOURCE;
        if (egm_mpi_recv_probed(&ms, &mp->in, &len, e)) goto out;
        if (!(m = egmla__envelope__unpack(NULL, len, mp->in.p))) {
            egm_fail(e, "rank %d sent a message that does not decode (%zu bytes)", from, len);
            goto out;
        }
        if (m->msg_case != EGMLA__ENVELOPE__MSG_STATS || from < 1 || from > S || envs[from - 1]) {
            bad_message(m, from, e);
            egmla__envelope__free_unpacked(m, NULL);
            goto out;
        }
        envs[from - 1] = m;
        stats[from - 1] = m->stats;
    }
    const char *wname = egm_wire_dtype_name(mp->wd);
    for (int i = 0; i < S; i++) {
        const Egmla__Stats *s = stats[i];
        double rows = s->rows ? (double)s->rows : 1;
        fprintf(stderr, "egmla: stage %d (rank %d on %s, layers %d-%d): busy %.3f s, wait %.3f s, "
                "bubble %.3f s, %llu micro-batches, %llu tokens",
                i + 1, s->rank, s->host, s->layer_lo, s->layer_hi - 1, s->busy_s, s->wait_s,
                s->bubble_s, (unsigned long long)s->batches, (unsigned long long)s->rows);
        if (i < S - 1)
            fprintf(stderr, ", %.1f B/token/hop out (%s) + %.1f B header", s->bytes_out / rows,
                    wname, s->header_bytes_out / rows);
        fputc('\n', stderr);
    }
    rc = 0;
out:
    for (int i = 0; envs && i < S; i++)
        if (envs[i]) egmla__envelope__free_unpacked(envs[i], NULL);
    free(envs);
    free(stats);
    return rc;
}

void egm_mpi_stop_workers(int world) {
    int v = 1;
    for (int r = 1; r < world; r++)
        MPI_Send(&v, 1, MPI_INT, r, EGM_TAG_STOP, MPI_COMM_WORLD);
}
