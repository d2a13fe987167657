/* sched.c - continuous batching: groups of sequences, one micro-batch per
 * group in flight, results in submission order (see sched.h). */
#include "sched.h"

#include "coordinator/prompt.h"
#include "coordinator/stop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"

typedef struct {
    int active, group, blocks;
    int score_from;        /* prefix sharing: first lp index needed (0: none) */
    egm_request req;
    int *toks, n_prompt;   /* prompt (or scored sequence) */
    int n_feed;            /* positions to submit before decoding / finishing */
    int n_fed;             /* positions submitted so far */
    int *gen, n_gen, cap_gen;
    int max_new;
    egm_stop *stop;        /* generate with stop strings or on_token: the text so far */
    size_t sent;           /* on_token: bytes of stop->text delivered */
    float *tok_lp;         /* generate with logprobs: [max_new + 1] */
    egm_tok_lp *top;       /* ... and [max_new + 1][req.logprobs] alternatives */
    float *lp;             /* score: [n_prompt - 1] */
    unsigned char *gr;     /* score: greedy flags, [n_prompt - 1] */
    long long dump_off;    /* score: byte offset of this sequence's logits */
    double t_read;         /* read from the input */
    double t0, t_first;    /* admitted; first token back */
} seq_t;

#define JUNK_MAX 8 /* lines in a row, from the start, that are not JSON */

typedef struct {
    const egm_sched_opts *o;
    const egm_config *c;
    const egm_tokenizer *tok;
    egm_pipe *pipe;
    egm_jsonl *in;
    egm_out *out;
    egm_sched_stats *st;
    seq_t *seqs;
    int *group_n, per_group;
    int free_blocks;
    int held_slot;         /* the finished sequence kept as a source, or -1 */
    int held_used;         /* ... and a request of this build forked from it */
    /* the next request, read ahead and waiting for room */
    int have_next, input_done;
    seq_t next;
    long long dump_next;   /* offset for the next scored sequence */
    /* what the next submit carries */
    egm_admit *admits;
    int n_admits;
    int *releases, n_releases;
    /* batch rows */
    int *slot, *pos, *token;
    unsigned char *want;
    double t_start, t_sync, t_progress;
    int dirty;             /* lines written since the last sync */
    egm_idset *ids;        /* every id read so far: a second use is refused */
    /* the input's first lines, until one looks like JSON: if JUNK_MAX in a
     * row do not, the file is not JSONL (a binary, a text file) and the run
     * stops with one message instead of an error record per line */
    int looked_json;
    int n_junk;
    char *junk[JUNK_MAX];
    /* serving: the stages' busy time, asked for about once a second */
    egm_stage_busy *stage_busy; /* [pipe->n_stages] */
    double t_ask;
    int asked;                  /* an ask not answered yet */
} sched_t;

static void seq_clear(seq_t *q) {
    if (q->stop) egm_stop_free(q->stop);
    free(q->stop);
    free(q->tok_lp);
    free(q->top);
    egm_request_free(&q->req);
    free(q->toks);
    free(q->gen);
    free(q->lp);
    free(q->gr);
    memset(q, 0, sizeof *q);
}

static int write_line(sched_t *s, const char *id_json, char *line, int ok, egm_err *e) {
    if (!line) return egm_fail(e, "out of memory formatting a result");
    if (s->o->feed) {
        s->o->feed->result(s->o->feed, id_json, line, ok);
        free(line);
        return 0;
    }
    int rc = egm_out_write_line(s->out, line, e);
    free(line);
    s->dirty = 1;
    return rc;
}

static int write_error(sched_t *s, const char *id_json, const char *msg, egm_err *e) {
    s->st->failed++;
    s->st->requests++;
    if (s->o->on_score) {
        s->o->on_score(s->o->score_ctx, id_json, NULL, NULL, 0, msg);
        return 0;
    }
    return write_line(s, id_json, egm_result_error(id_json, msg), 0, e);
}

/* Could the line be a JSON object at all? (a NUL byte or a first
 * character other than '{' says no) */
static int looks_json(const char *line, size_t len) {
    size_t i = 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t')) i++;
    return i < len && line[i] == '{' && !memchr(line, 0, len);
}

/* The error records held back while the input might not be JSONL at all. */
static int flush_junk(sched_t *s, egm_err *e) {
    int rc = 0;
    for (int i = 0; i < s->n_junk; i++) {
        if (!rc) {
            fprintf(stderr, "egmla: %s\n", s->junk[i]);
            rc = write_error(s, NULL, s->junk[i], e);
        }
        free(s->junk[i]);
    }
    s->n_junk = 0;
    return rc;
}

/* A line was JSON-shaped: the input is JSONL, the lines held back before
 * it get their error records. 0 or -1. */
static int saw_json(sched_t *s, egm_err *e) {
    if (s->looked_json) return 0;
    s->looked_json = 1;
    return flush_junk(s, e);
}

/* A line that is not even JSON-shaped, before any line that was: held
 * back; the JUNK_MAX-th ends the run. 1 when held, 0 when not junk, -1. */
static int junk_line(sched_t *s, const char *line, size_t len, long lineno, const char *msg,
                     egm_err *e) {
    if (s->looked_json || s->o->on_score) return 0;
    if (looks_json(line, len)) return saw_json(s, e);
    if (s->n_junk == JUNK_MAX - 1) {
        egm_fail(e, "%s: not JSONL: none of its first %d lines (up to line %ld) is a JSON "
                 "object (one request per line, {\"id\": ..., \"prompt\" or \"tokens\": ...}); "
                 "line 1: %.200s", egm_jsonl_origin(s->in), JUNK_MAX, lineno, s->junk[0]);
        return -1;
    }
    if (!(s->junk[s->n_junk] = strdup(msg))) return egm_fail(e, "out of memory");
    s->n_junk++;
    return 1;
}

/* An id seen on an earlier line: results are matched by id, so refused. */
static int duplicate_id(sched_t *s, const char *id_json, const char *origin, long lineno,
                        egm_err *le) {
    if (!s->ids || !id_json) return 0;
    if (egm_idset_has(s->ids, id_json))
        return egm_fail(le, "%s:%ld: id %.200s is already used by an earlier line (each "
                        "request needs its own id: results are matched by it)", origin, lineno,
                        id_json), 1;
    egm_idset_add(s->ids, id_json);
    return 0;
}

/* --resume: an id already in the output is skipped, refused or not. */
static int skipped(sched_t *s, seq_t *q) {
    if (!s->o->skip || !q->req.id_json || !egm_idset_has(s->o->skip, q->req.id_json)) return 0;
    s->st->skipped++;
    seq_clear(q);
    return 1;
}

/* Parses, tokenizes and checks one line into s->next. Returns 1 when a
 * request is ready, 0 when the line was refused (error record written),
 * -1 on a fatal error. */
static int prepare(sched_t *s, const char *line, size_t len, long lineno, egm_err *e) {
    seq_t *q = &s->next;
    memset(q, 0, sizeof *q);
    q->t_read = egm_now();
    egm_err le;
    const char *origin = s->o->feed ? s->o->feed->origin : egm_jsonl_origin(s->in);
    if (egm_request_parse(line, len, lineno, origin, &s->o->defaults, &q->req, &le)) {
        if (skipped(s, q)) return 0;
        int j = junk_line(s, line, len, lineno, le.msg, e);
        if (j) {
            seq_clear(q);
            return j < 0 ? -1 : 0;
        }
        fprintf(stderr, "egmla: %s\n", le.msg);
        int rc = write_error(s, q->req.id_json, le.msg, e);
        seq_clear(q);
        return rc ? -1 : 0;
    }
    if (skipped(s, q)) return 0;
    if (saw_json(s, e)) return -1;
    if (duplicate_id(s, q->req.id_json, origin, lineno, &le)) goto refuse;
    const egm_config *c = s->c;
    if (egm_prompt_tokens(&q->req, c, s->tok, s->o->chat, s->o->mode == EGM_MODE_GENERATE,
                          s->o->add_bos, origin, &q->toks, &q->n_prompt, &le))
        goto refuse;
    if (q->n_prompt == 0) {
        egm_fail(&le, "%s:%ld: the prompt is empty (0 tokens)", origin, lineno);
        goto refuse;
    }
    if (s->o->mode == EGM_MODE_GENERATE && (q->req.n_stop > 0 || (s->o->on_token && s->tok))) {
        if (!s->tok) {
            egm_fail(&le, "%s:%ld: \"stop\" needs a tokenizer to read the text, and the model "
                     "has no tokenizer.json", origin, lineno);
            goto refuse;
        }
        if (!(q->stop = malloc(sizeof *q->stop))) return egm_fail(e, "out of memory");
        egm_stop_init(q->stop, q->req.stop, q->req.n_stop);
    }
    /* internal scoring never feeds the last token: it is only a target */
    int target_only = s->o->mode == EGM_MODE_SCORE && s->o->on_score && q->n_prompt > 1;
    q->n_feed = q->n_prompt - target_only;
    if (q->n_feed > c->max_position_embeddings) {
        egm_fail(&le, "%s:%ld: the prompt has %d tokens, more than the model's context of %d",
                 origin, lineno, q->n_prompt, c->max_position_embeddings + target_only);
        goto refuse;
    }
    if (target_only && s->o->score_from) {
        int f = s->o->score_from(s->o->score_ctx, q->req.id_json);
        q->score_from = f < 0 ? 0 : f < q->n_feed - 1 ? f : q->n_feed - 1;
    }
    int need = q->n_feed;
    if (s->o->mode == EGM_MODE_GENERATE) {
        q->max_new = q->req.max_new_tokens;
        if (q->max_new > c->max_position_embeddings - q->n_prompt)
            q->max_new = c->max_position_embeddings - q->n_prompt;
        need += q->max_new;
        if (q->req.logprobs >= 0) {
            size_t n = (size_t)q->max_new + 1;
            q->tok_lp = malloc(sizeof(float) * n);
            q->top = malloc(sizeof(egm_tok_lp) * n * (size_t)(q->req.logprobs + 1));
            if (!q->tok_lp || !q->top) return egm_fail(e, "out of memory for log-probs");
        }
    }
    egm_pipe_caps *cap = &s->pipe->caps;
    q->blocks = (need + cap->block_tokens - 1) / cap->block_tokens;
    if (q->blocks > cap->kv_blocks) {
        egm_fail(&le, "%s:%ld: the request needs %d positions of KV cache and the budget holds "
                 "%d: raise --kv-budget or lower max_new_tokens", origin, lineno, need,
                 cap->kv_blocks * cap->block_tokens);
        goto refuse;
    }
    return 1;
refuse:
    fprintf(stderr, "egmla: %s\n", le.msg);
    int rc = write_error(s, q->req.id_json, le.msg, e);
    seq_clear(q);
    return rc ? -1 : 0;
}

/* Makes s->next hold a request, unless the input is done (or, from a feed
 * and without `wait`, none is queued now). */
static int read_ahead(sched_t *s, int wait, egm_err *e) {
    egm_sched_feed *f = s->o->feed;
    while (!s->have_next && !s->input_done) {
        const char *line;
        size_t len;
        long lineno;
        egm_err le;
        int r = f ? f->next(f, wait, &line, &len, &lineno, &le)
                  : egm_jsonl_next(s->in, &line, &len, &lineno, &le);
        if (r < 0) return egm_fail(e, "%s", le.msg);
        if (r == 2) break;
        if (r == 0) {
            s->input_done = 1;
            if (flush_junk(s, e)) return -1;
            break;
        }
        r = prepare(s, line, len, lineno, e);
        if (r < 0) return -1;
        s->have_next = r;
    }
    return 0;
}

/* The held sequence goes: its slot and blocks are released before the next
 * micro-batch. Never called while a request admitted into that micro-batch
 * forks from it (the release would come first on every stage). */
static void release_held(sched_t *s) {
    if (s->held_slot < 0) return;
    seq_t *h = &s->seqs[s->held_slot];
    s->releases[s->n_releases++] = s->held_slot;
    s->free_blocks += h->blocks;
    seq_clear(h);
    s->held_slot = -1;
}

/* Keeps a finished sequence's tokens and cache as the prefix source
 * (s->held_slot: at most one). */
static void hold(sched_t *s, int slot) {
    seq_t *q = &s->seqs[slot];
    int *toks = q->toks, n_prompt = q->n_prompt, n_fed = q->n_fed, blocks = q->blocks,
        sf = q->score_from;
    q->toks = NULL;
    seq_clear(q);
    q->toks = toks;
    q->n_prompt = n_prompt;
    q->n_fed = n_fed;
    q->blocks = blocks;
    q->score_from = sf;
    s->held_slot = slot;
}

/* A slot neither in flight nor held (the caller knows one exists). */
static int free_slot(const sched_t *s) {
    int slot = 0;
    while (s->seqs[slot].active || slot == s->held_slot) slot++;
    return slot;
}

/* Finds the sequence (in flight or held) sharing the longest usable prefix
 * with s->next: at most next's score_from tokens. Returns its slot and
 * sets *n, or -1. */
static int prefix_source(const sched_t *s, int *n) {
    const seq_t *q = &s->next;
    int best = -1, best_n = 0;
    if (q->score_from <= 0) return -1;
    for (int i = 0; i < s->o->max_seqs; i++) {
        const seq_t *c = &s->seqs[i];
        if (!(c->active || i == s->held_slot) || c->score_from <= 0) continue;
        int lim = q->score_from < c->n_prompt ? q->score_from : c->n_prompt, k = 0;
        while (k < lim && c->toks[k] == q->toks[k]) k++;
        if (k > best_n || (k == best_n && k > 0 && c->n_fed >= k && s->seqs[best].n_fed < k)) {
            best = i;
            best_n = k;
        }
    }
    *n = best_n;
    return best_n > 0 ? best : -1;
}

/* on_token: the text settled since the last event (all of it at the end). */
static void token_event(sched_t *s, seq_t *q, const egm_head_out *o, const char *reason) {
    size_t upto = !q->stop ? 0 : reason ? q->stop->len : egm_stop_stable(q->stop);
    egm_token_event ev = {o ? o->token : -1, o ? q->n_gen - 1 : q->n_gen,
                          q->stop ? q->stop->text + q->sent : "", upto - q->sent,
                          o ? o->logprob : 0.0f, o && q->req.logprobs >= 0 ? q->req.logprobs : -1,
                          o ? o->top_id : NULL, o ? o->top_lp : NULL, reason};
    if (o && ev.n_top > o->n_top) ev.n_top = o->n_top;
    q->sent = upto;
    s->o->on_token(s->o->token_ctx, q->req.id_json, &ev);
}

static int finish(sched_t *s, int slot, const char *reason, egm_err *e) {
    seq_t *q = &s->seqs[slot];
    char *line = NULL;
    /* the slot is cleared before the line goes out */
    char *id_json = q->req.id_json ? strdup(q->req.id_json) : NULL;
    if (s->o->mode == EGM_MODE_SCORE && s->o->on_score) {
        s->o->on_score(s->o->score_ctx, q->req.id_json, q->lp, q->gr, q->n_prompt - 1, NULL);
    } else if (s->o->mode == EGM_MODE_SCORE) {
        line = egm_result_score(q->req.id_json, q->lp, q->n_prompt - 1);
    } else {
        /* with stop strings, the text up to one (tokens: every one generated) */
        if (q->stop && egm_stop_finish(q->stop) < 0) return egm_fail(e, "out of memory");
        if (s->o->on_token) token_event(s, q, NULL, reason);
        char *text = q->stop ? q->stop->text
                   : s->tok ? egm_tok_decode(s->tok, q->gen, q->n_gen, 1) : NULL;
        /* ttft and total count from admission; the queue wait is apart */
        egm_gen_stats gs = {q->n_prompt, q->n_gen, (q->t_first - q->t0) * 1e3,
                            (egm_now() - q->t0) * 1e3, (q->t0 - q->t_read) * 1e3};
        egm_gen_logprobs lp = {q->tok_lp, q->top, q->req.logprobs, s->tok};
        line = egm_result_generate_lp(q->req.id_json, q->gen, q->n_gen, text,
                                      q->stop ? q->stop->len : text ? strlen(text) : 0, reason,
                                      s->o->stats ? &gs : NULL, q->req.logprobs >= 0 ? &lp : NULL);
        if (!q->stop) free(text);
    }
    s->st->prompt_tokens += q->n_prompt;
    s->st->generated_tokens += q->n_gen;
    s->group_n[q->group]--;
    if (q->score_from > 0) {
        /* keep its cache for a request with the same context (the next
         * choice of a question); the one kept before goes */
        release_held(s);
        hold(s, slot);
    } else {
        s->releases[s->n_releases++] = slot;
        s->free_blocks += q->blocks;
        seq_clear(q);
    }
    /* a request counts as done only once its line is written */
    if (!(s->o->mode == EGM_MODE_SCORE && s->o->on_score) &&
        write_line(s, id_json, line, 1, e)) {
        free(id_json);
        return -1;
    }
    free(id_json);
    s->st->requests++;
    s->st->ok++;
    return 0;
}

/* Moves s->next into a free slot of group g; fork_n > 0 starts it from the
 * first fork_n cached positions of slot `from`. */
static void admit(sched_t *s, int g, int from, int fork_n) {
    int slot = free_slot(s);
    seq_t *q = &s->seqs[slot];
    *q = s->next;
    memset(&s->next, 0, sizeof s->next);
    s->have_next = 0;
    q->active = 1;
    q->group = g;
    q->t0 = egm_now();
    s->group_n[g]++;
    s->free_blocks -= q->blocks;
    if (s->o->mode == EGM_MODE_SCORE) {
        q->lp = calloc((size_t)q->n_prompt, sizeof(float));
        q->gr = calloc((size_t)q->n_prompt, 1);
        q->dump_off = s->dump_next;
        s->dump_next += (long long)q->n_prompt * s->c->vocab_size * (long long)sizeof(float);
    } else {
        q->cap_gen = q->max_new + 1;
        q->gen = malloc(sizeof(int) * (size_t)q->cap_gen);
    }
    egm_admit *a = &s->admits[s->n_admits++];
    a->slot = slot;
    a->mode = s->o->mode;
    a->sp = q->req.sampling;
    a->n_reserve = q->blocks * s->pipe->caps.block_tokens;
    a->tokens = q->toks;
    a->n_tokens = q->n_prompt;
    a->fork_slot = fork_n > 0 ? from : 0;
    a->fork_n = fork_n > 0 ? fork_n : 0;
    /* -1: the request wants no log-probs, so the head skips them */
    a->top_logprobs = s->o->mode != EGM_MODE_GENERATE ? 0 : q->req.logprobs;
    if (fork_n > 0) {
        q->n_fed = fork_n;
        s->st->shared_tokens += fork_n;
        if (from == s->held_slot) s->held_used = 1;
    }
}

/* Sequences in flight over all groups: never more than max_seqs, even when
 * the groups' rounded-up shares add up to more. */
static int n_active(const sched_t *s) {
    int n = 0;
    for (int g = 0; g < s->o->micro_batches; g++) n += s->group_n[g];
    return n;
}

/* Whether s->next fits now (a slot and its KV blocks); lets the held
 * sequence go when that makes room and no request of this micro-batch
 * forks from it. */
static int room(sched_t *s) {
    int held = s->held_slot >= 0;
    if (n_active(s) + held < s->o->max_seqs && s->next.blocks <= s->free_blocks) return 1;
    if (!held || s->held_used || n_active(s) >= s->o->max_seqs ||
        s->next.blocks > s->free_blocks + s->seqs[s->held_slot].blocks)
        return 0;
    release_held(s);
    return 1;
}

/* A feed's client went away: group g (not in flight) drops its sequences
 * at once, their slots and KV released with the next micro-batch; a
 * request read ahead and waiting goes too. */
static void drop_cancelled(sched_t *s, int g) {
    egm_sched_feed *f = s->o->feed;
    if (!f) return;
    for (int i = 0; i < s->o->max_seqs; i++) {
        seq_t *q = &s->seqs[i];
        if (!q->active || q->group != g || !f->cancelled(f, q->req.id_json)) continue;
        f->result(f, q->req.id_json, NULL, 0);
        s->st->cancelled++;
        s->st->prompt_tokens += q->n_fed < q->n_prompt ? q->n_fed : q->n_prompt;
        s->st->generated_tokens += q->n_gen;
        s->group_n[g]--;
        s->releases[s->n_releases++] = i;
        s->free_blocks += q->blocks;
        seq_clear(q);
    }
    if (s->have_next && f->cancelled(f, s->next.req.id_json)) {
        f->result(f, s->next.req.id_json, NULL, 0);
        s->st->cancelled++;
        seq_clear(&s->next);
        s->have_next = 0;
    }
}

/* Builds group g's next micro-batch: decode rows, then prefill chunks. */
static int build(sched_t *s, int g, egm_err *e) {
    s->held_used = 0;
    drop_cancelled(s, g);
    while (s->group_n[g] < s->per_group && n_active(s) < s->o->max_seqs) {
        if (read_ahead(s, 0, e)) return -1;
        if (!s->have_next) break;
        /* a source still prefilling the shared part: wait for its rows */
        int fork_n = 0, from = prefix_source(s, &fork_n);
        if (from >= 0 && s->seqs[from].n_fed < fork_n) break;
        if (!room(s)) break;
        if (s->o->mode == EGM_MODE_GENERATE && s->next.max_new == 0) {
            /* nothing to generate: answer without touching the pipeline */
            int slot = free_slot(s);
            s->group_n[g]++;
            s->free_blocks -= s->next.blocks;
            s->seqs[slot] = s->next;
            s->seqs[slot].group = g;
            s->seqs[slot].t0 = s->seqs[slot].t_first = egm_now();
            memset(&s->next, 0, sizeof s->next);
            s->have_next = 0;
            if (finish(s, slot, "length", e)) return -1;
            continue;
        }
        admit(s, g, from, fork_n);
    }
    int n = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < s->o->max_seqs; i++) {
            seq_t *q = &s->seqs[i];
            if (!q->active || q->group != g) continue;
            int decoding = q->n_fed >= q->n_feed;
            if (pass == 0 && decoding && s->o->mode == EGM_MODE_GENERATE) {
                s->slot[n] = i;
                s->pos[n] = q->n_fed++;
                s->token[n] = q->gen[q->n_gen - 1];
                s->want[n++] = 1;
            } else if (pass == 1 && !decoding) {
                int k = q->n_feed - q->n_fed;
                if (k > s->o->max_rows - n) k = s->o->max_rows - n;
                for (int j = 0; j < k; j++) {
                    s->slot[n] = i;
                    s->pos[n] = q->n_fed;
                    s->token[n] = q->toks[q->n_fed++];
                    s->want[n++] = s->o->mode == EGM_MODE_SCORE || q->n_fed == q->n_feed;
                }
            }
        }
    }
    return n;
}

/* A generated token's log-prob and alternatives (missing ones: id -1). */
static void keep_logprobs(seq_t *q, const egm_head_out *o) {
    int k = q->req.logprobs;
    q->tok_lp[q->n_gen] = o->logprob;
    for (int j = 0; j < k; j++) {
        egm_tok_lp *t = &q->top[(size_t)q->n_gen * k + j];
        t->id = j < o->n_top ? o->top_id[j] : -1;
        t->logprob = j < o->n_top ? o->top_lp[j] : 0.0f;
    }
}

static int process(sched_t *s, const egm_result *r, egm_err *e) {
    int V = s->c->vocab_size;
    for (int k = 0; k < r->n_outs; k++) {
        const egm_head_out *o = &r->outs[k];
        seq_t *q = &s->seqs[o->slot];
        if (o->slot < 0 || o->slot >= s->o->max_seqs || !q->active || o->pos < 0 ||
            o->pos >= q->n_prompt + q->max_new)
            return egm_fail(e, "a stage returned a result for slot %d position %d, which is "
                            "not in flight", o->slot, o->pos);
        if (s->o->mode == EGM_MODE_SCORE) {
            if (o->has_target) {
                q->lp[o->pos] = o->logprob;
                q->gr[o->pos] = o->greedy != 0;
            }
            if (s->o->dump_fd >= 0 && r->logits) {
                const float *row = r->logits + (long)k * V;
                off_t off = (off_t)(q->dump_off + (long long)o->pos * V * (long long)sizeof(float));
                if (pwrite(s->o->dump_fd, row, sizeof(float) * (size_t)V, off) != (ssize_t)(sizeof(float) * V))
                    return egm_fail(e, "--dump-logits: write failed: %s", strerror(errno));
            }
            if (o->pos == q->n_feed - 1 && finish(s, o->slot, NULL, e)) return -1;
            continue;
        }
        if (q->n_gen == 0) q->t_first = egm_now();
        if (q->tok_lp) keep_logprobs(q, o);
        q->gen[q->n_gen++] = o->token;
        const char *reason = NULL;
        int hit = q->stop ? egm_stop_feed_token(q->stop, s->tok, o->token) : 0;
        if (hit < 0) return egm_fail(e, "out of memory");
        if (!q->req.ignore_eos && egm_config_is_eos(s->c, o->token)) reason = "stop";
        else if (hit) reason = "stop";
        else if (q->n_gen >= q->max_new) reason = "length";
        if (s->o->on_token) token_event(s, q, o, NULL);
        if (reason && finish(s, o->slot, reason, e)) return -1;
    }
    return 0;
}

/* On a terminal: done/total, tokens/s (generated, or scored in score mode)
 * and the ETA from this run's pace; skipped (--resume) lines count as done. */
static void progress(sched_t *s, int last) {
    double t = egm_now();
    if (!s->o->progress || (!last && t - s->t_progress < 0.5)) return;
    s->t_progress = t;
    const egm_sched_stats *st = s->st;
    double el = t - s->t_start;
    if (el <= 0) el = 1e-9;
    long toks = s->o->mode == EGM_MODE_SCORE ? st->prompt_tokens : st->generated_tokens;
    long done = st->requests + st->skipped;
    char eta[64] = "";
    if (s->o->total > 0 && st->requests > 0 && done < s->o->total) {
        double left = (double)(s->o->total - done) * el / (double)st->requests;
        snprintf(eta, sizeof eta, ", ETA %dh%02dm%02ds", (int)(left / 3600),
                 (int)(left / 60) % 60, (int)left % 60);
    }
    char tot[32] = "";
    if (s->o->total >= 0) snprintf(tot, sizeof tot, "/%ld", s->o->total);
    fprintf(stderr, "\r\033[K%ld%s done (%ld failed, %ld skipped), %.1f tok/s%s%s", done, tot,
            st->failed, st->skipped, toks / el, eta, last ? "\n" : "");
}

static void feed_load(sched_t *s, egm_sched_load *l) {
    if (!s->o->feed->load) return;
    l->running = n_active(s);
    l->waiting = s->have_next;
    l->kv_blocks_used = l->kv_blocks_total - s->free_blocks;
    s->o->feed->load(s->o->feed, l);
}

/* Serving only: asks the stages for their busy time, right behind a
 * submitted micro-batch, at most about once a second and one ask at a time,
 * so batch jobs and bench never see it. */
static int stage_ask(sched_t *s, egm_err *e) {
    if (!s->stage_busy || s->asked) return 0;
    double t = egm_now();
    if (t - s->t_ask < 1.0) return 0;
    if (s->pipe->busy_ask(s->pipe, e)) return -1;
    s->asked = 1;
    s->t_ask = t;
    return 0;
}

/* Picks up the answers to the outstanding ask into l once every stage has
 * given one; wait=1 (nothing in flight) blocks until then. */
static int stage_poll(sched_t *s, int wait, egm_sched_load *l, egm_err *e) {
    if (!s->asked) return 0;
    int rc = s->pipe->busy_poll(s->pipe, wait, s->stage_busy, e);
    if (rc <= 0) return rc;
    s->asked = 0;
    int n = s->pipe->n_stages < EGM_LOAD_STAGES ? s->pipe->n_stages : EGM_LOAD_STAGES;
    memcpy(l->stages, s->stage_busy, sizeof *l->stages * (size_t)n);
    l->n_stages = n;
    return 0;
}

int egm_sched_run(const egm_sched_opts *o, const egm_config *c,
                  const egm_tokenizer *tok, egm_pipe *pipe, egm_jsonl *in,
                  egm_out *out, egm_sched_stats *st, egm_err *e) {
    sched_t s = {.o = o, .c = c, .tok = tok, .pipe = pipe, .in = in, .out = out, .st = st,
                 .held_slot = -1};
    memset(st, 0, sizeof *st);
    int M = o->micro_batches, S = o->max_seqs, rows = o->max_rows + S;
    int rc = -1;
    s.per_group = (S + M - 1) / M;
    s.free_blocks = pipe->caps.kv_blocks;
    s.seqs = calloc((size_t)S, sizeof *s.seqs);
    s.group_n = calloc((size_t)M, sizeof(int));
    s.admits = calloc((size_t)S, sizeof *s.admits);
    s.releases = calloc((size_t)S * 2, sizeof(int));
    s.slot = malloc(sizeof(int) * (size_t)rows);
    s.pos = malloc(sizeof(int) * (size_t)rows);
    s.token = malloc(sizeof(int) * (size_t)rows);
    s.want = malloc((size_t)rows);
    int *inflight = calloc((size_t)M, sizeof(int)), *fifo = calloc((size_t)M, sizeof(int));
    if (!s.seqs || !s.group_n || !s.admits || !s.releases || !s.slot || !s.pos ||
        !s.token || !s.want || !inflight || !fifo) {
        egm_fail(e, "out of memory for %d sequences", S);
        goto done;
    }
    if (!o->on_score && !o->feed && !(s.ids = egm_idset_new())) {
        egm_fail(e, "out of memory");
        goto done;
    }
    s.t_start = s.t_sync = s.t_progress = egm_now();
    s.t_ask = s.t_start - 2;
    if (o->feed && pipe->busy_ask && pipe->busy_poll && pipe->n_stages > 0 &&
        !(s.stage_busy = calloc((size_t)pipe->n_stages, sizeof *s.stage_busy))) {
        egm_fail(e, "out of memory");
        goto done;
    }
    if (o->feed && o->feed->start(o->feed, c, tok, &pipe->caps, e)) goto done;
    int f_head = 0, f_len = 0;
    egm_sched_load load = {.kv_blocks_total = pipe->caps.kv_blocks, .slots = S};
    for (;;) {
        for (int g = 0; g < M; g++) {
            if (inflight[g]) continue;
            int n = build(&s, g, e);
            if (n < 0) goto done;
            if (n == 0) continue;
            egm_submit sub = {.b = {n, s.slot, s.pos, s.token}, .want = s.want,
                              .admits = s.admits, .n_admits = s.n_admits,
                              .releases = s.releases, .n_releases = s.n_releases,
                              .keep_logits = o->dump_fd >= 0};
            double t_sub = egm_now();
            if (pipe->submit(pipe, &sub, e)) goto done;
            load.busy_s += egm_now() - t_sub;
            load.submits++;
            s.n_admits = s.n_releases = 0;
            inflight[g] = 1;
            fifo[(f_head + f_len++) % M] = g;
            if (stage_ask(&s, e)) goto done;
        }
        if (f_len == 0 && o->feed && !s.have_next && !s.input_done) {
            /* idle: say so at once (a cancelled request's slot and blocks
             * are free now), again with the stages' busy time, then sleep
             * until a request comes */
            feed_load(&s, &load);
            if (stage_poll(&s, 1, &load, e)) goto done;
            feed_load(&s, &load);
            if (read_ahead(&s, 1, e)) goto done;
            continue;
        }
        if (f_len == 0) {
            if (s.have_next || !s.input_done) {
                egm_fail(e, "scheduler stalled with requests waiting (bug)");
                goto done;
            }
            break;
        }
        egm_result r;
        double t_col = egm_now();
        if (pipe->collect(pipe, &r, e)) goto done;
        int g = fifo[f_head];
        f_head = (f_head + 1) % M;
        f_len--;
        inflight[g] = 0;
        load.busy_s += egm_now() - t_col;
        if (process(&s, &r, e)) goto done;
        if (stage_poll(&s, 0, &load, e)) goto done;
        if (o->feed) feed_load(&s, &load);
        /* checked after every micro-batch (milliseconds apart), whether
         * or not a request finished in it */
        double t = egm_now();
        if (t - s.t_sync > 2.0) {
            if (s.dirty && egm_out_sync(out, e)) goto done;
            s.dirty = 0;
            s.t_sync = t;
        }
        progress(&s, 0);
    }
    /* every stage's last answer read: none is left behind at shutdown */
    if (stage_poll(&s, 1, &load, e)) goto done;
    if (out && egm_out_commit(out, e)) goto done;
    rc = 0;
done:
    if (s.dirty && out) {
        egm_err se;
        if (egm_out_sync(out, &se) && rc == 0) {
            *e = se;
            rc = -1;
        }
    }
    st->seconds = egm_now() - s.t_start;
    if (o->feed && o->feed->stop) o->feed->stop(o->feed);
    progress(&s, 1);
    if (s.seqs)
        for (int i = 0; i < S; i++) seq_clear(&s.seqs[i]);
    seq_clear(&s.next);
    free(s.seqs);
    free(s.group_n);
    free(s.admits);
    free(s.releases);
    free(s.slot);
    free(s.pos);
    free(s.token);
    free(s.want);
    free(inflight);
    free(fifo);
    for (int i = 0; i < s.n_junk; i++) free(s.junk[i]);
    egm_idset_free(s.ids);
    free(s.stage_busy);
    return rc;
}
