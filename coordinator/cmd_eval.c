/* cmd_eval.c - `egmla eval`, `egmla perplexity` and `egmla loglikelihood`:
 * lm-evaluation-harness requests (eval.h) run as score jobs through the
 * same scheduler and pipe as `egmla score`, so they work under mpirun too.
 *
 * Each command builds its scoring windows, writes them to an anonymous
 * temporary file (the scheduler streams them from there), runs the job, and
 * reports from the per-request sums. The task / text and one result per
 * request stay in memory; the token windows do not. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/args.h"
#include "coordinator/commands.h"
#include "coordinator/engine.h"
#include "coordinator/eval.h"
#include "model/config.h"
#include "model/source.h"

/* ---- what the three commands share ---- */

typedef struct {
    egm_run_opts r;
    egm_engine_opts eo;
    int max_length, stride;
    egm_config cfg;
    egm_tokenizer *tok;
} job_t;

/* Options of the three commands besides the engine's. */
#define JOB_OPTS(j) \
    {"max-length", EGM_OPT_INT, &(j)->max_length, "tokens the model sees at most (0 = its context)", 0, 1 << 30, "N"}

/* Parses the command's own options and the engine's (engine.h). Returns -1
 * when the command goes on, else the exit status to return at once. */
static int job_args(job_t *j, const char *name, const char *about, const egm_opt *own,
                    int argc, char **argv) {
    egm_opt tab[16 + EGM_ENGINE_N_OPTS];
    unsigned char given[sizeof tab / sizeof *tab] = {0};
    int first = egm_engine_table(own, &j->eo, tab, (int)(sizeof tab / sizeof *tab));
    egm_cmd cmd = {name, NULL, about, tab};
    int rc = egm_args_main_given(&cmd, argc, argv, given);
    if (rc >= 0) return rc;
    egm_err e;
    if (egm_engine_resolve(&j->eo, given + first, &e)) {
        fprintf(stderr, "%s: %s\n", name, e.msg);
        return EGM_EXIT_USAGE;
    }
    egm_engine_to_run(&j->eo, &j->r);
    return -1;
}

static void job_init(job_t *j) {
    memset(j, 0, sizeof *j);
    egm_run_opts_default(&j->r);
    egm_engine_defaults(&j->eo);
    j->r.mode = EGM_MODE_SCORE;
}

/* After the options: config (context length, prefix token), tokenizer. */
static int job_load(job_t *j, int need_tok, egm_err *e) {
    if (egm_model_config(j->r.model, &j->cfg, e)) return -1; /* a directory or a .gguf */
    if (j->max_length > j->cfg.max_position_embeddings)
        return egm_fail(e, "--max-length %d: the model's context is %d", j->max_length,
                        j->cfg.max_position_embeddings);
    if (!j->max_length) j->max_length = j->cfg.max_position_embeddings;
    if (egm_run_load_tokenizer(j->r.model, &j->tok, e)) return -1;
    if (need_tok && !j->tok)
        return egm_fail(e, "%s has no tokenizer.json: text needs one (give token ids instead)", j->r.model);
    return 0;
}

/* Runs the job's windows; every request's result is in ll->r after. */
static int job_run(job_t *j, egm_ll_job *ll, const char *name) {
    egm_err e;
    FILE *f = tmpfile();
    if (!f) {
        fprintf(stderr, "egmla %s: cannot create a temporary file: %s\n", name, strerror(errno));
        return EGM_EXIT_FAIL;
    }
    if (egm_ll_write(ll, f, &e)) {
        fprintf(stderr, "egmla %s: %s\n", name, e.msg);
        fclose(f);
        return EGM_EXIT_FAIL;
    }
    rewind(f);
    j->r.in_file = f;
    j->r.in_name = "<scoring windows>";
    j->r.on_score = egm_ll_on_score;
    j->r.score_from = egm_ll_score_from;
    j->r.score_ctx = ll;
    j->r.job = name;
    int rc = egm_run(&j->r);
    fclose(f);
    if (rc == EGM_EXIT_SOME_FAILED) rc = 0; /* refusals are in each result's error */
    return rc;
}

static void job_free(job_t *j) { egm_tok_free(j->tok); }

/* Checks the report paths before any work (the results of a long run must
 * not be lost to a typo in a directory name); 1 after printing why. */
static int reports_unwritable(const char *name, const char *out, const char *per_example) {
    egm_err e;
    if (!egm_out_check(out, "--out", &e) && !egm_out_check(per_example, "--per-example", &e))
        return 0;
    if (!egm_run_is_worker()) fprintf(stderr, "%s: %s\n", name, e.msg);
    return 1;
}

/* --out: "-" = JSON on stdout and the table on stderr; a file = JSON there
 * and the table on stdout; absent = the table on stdout. */
static int write_report(json_t *rep, const char *out, FILE **table, const char *name) {
    *table = out && !strcmp(out, "-") ? stderr : stdout;
    if (!out) return 0;
    int rc = !strcmp(out, "-") ? json_dumpf(rep, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(10))
                               : json_dump_file(rep, out, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    if (rc) {
        fprintf(stderr, "egmla %s: cannot write the report to %s: %s\n", name, out, strerror(errno));
        return -1;
    }
    if (!strcmp(out, "-")) fputc('\n', stdout);
    return 0;
}

static json_t *num(double x) { return isfinite(x) ? json_real(x) : json_null(); }

/* ---- egmla eval ---- */

typedef struct {
    char *id_json;
    int gold, n_choices, first_req;
    double *len;       /* each choice's length in characters (acc_norm) */
} example_t;

static int get_tokens(json_t *a, int **out, int *n) {
    if (!json_is_array(a)) return -1;
    *n = (int)json_array_size(a);
    *out = malloc(sizeof(int) * (size_t)(*n + 1));
    if (!*out) return -1;
    for (int i = 0; i < *n; i++) {
        json_t *v = json_array_get(a, (size_t)i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1 << 30) {
            free(*out);
            *out = NULL;
            return -1;
        }
        (*out)[i] = (int)json_integer_value(v);
    }
    return 0;
}

/* One task line into ex and its requests. */
static int task_line(job_t *j, egm_ll_job *ll, const char *line, size_t len, const char *origin,
                     long lineno, example_t *ex, egm_err *e) {
    json_error_t je;
    json_t *o = json_loadb(line, len, 0, &je);
    int rc = -1;
    if (!o || !json_is_object(o)) {
        egm_fail(e, "%s:%ld: expected a JSON object, %s", origin, lineno, o ? "found another value" : je.text);
        goto out;
    }
    json_t *id = json_object_get(o, "id"), *ctx = json_object_get(o, "context"),
           *ctx_t = json_object_get(o, "context_tokens"), *ch = json_object_get(o, "choices"),
           *ch_t = json_object_get(o, "choices_tokens"), *gold = json_object_get(o, "gold");
    if (!id || !(json_is_string(id) || json_is_integer(id))) {
        egm_fail(e, "%s:%ld: \"id\": expected a string or an integer", origin, lineno);
        goto out;
    }
    if (!!ctx == !!ctx_t || (ctx && !json_is_string(ctx))) {
        egm_fail(e, "%s:%ld: expected \"context\" (a string) or \"context_tokens\" (token ids), exactly one",
                 origin, lineno);
        goto out;
    }
    json_t *choices = ctx ? ch : ch_t;
    if (!json_is_array(choices) || json_array_size(choices) == 0) {
        egm_fail(e, "%s:%ld: \"%s\": expected a non-empty array", origin, lineno, ctx ? "choices" : "choices_tokens");
        goto out;
    }
    int nc = (int)json_array_size(choices);
    if (!json_is_integer(gold) || json_integer_value(gold) < 0 || json_integer_value(gold) >= nc) {
        egm_fail(e, "%s:%ld: \"gold\": expected the index of a choice, 0 to %d", origin, lineno, nc - 1);
        goto out;
    }
    if (ch && ch_t && json_array_size(ch) != (size_t)nc) {
        egm_fail(e, "%s:%ld: \"choices\" and \"choices_tokens\" differ in length", origin, lineno);
        goto out;
    }
    if (ctx && !j->tok) {
        egm_fail(e, "%s:%ld: text needs a tokenizer and %s has no tokenizer.json: use \"context_tokens\" "
                 "and \"choices_tokens\"", origin, lineno, j->r.model);
        goto out;
    }
    ex->id_json = json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT);
    ex->gold = (int)json_integer_value(gold);
    ex->n_choices = nc;
    ex->first_req = ll->n_r;
    ex->len = malloc(sizeof(double) * (size_t)nc);
    if (!ex->id_json || !ex->len) {
        egm_fail(e, "out of memory");
        goto out;
    }
    int *ct = NULL, nct = 0;
    if (ctx_t && get_tokens(ctx_t, &ct, &nct)) {
        egm_fail(e, "%s:%ld: \"context_tokens\": expected an array of token ids", origin, lineno);
        goto out;
    }
    for (int i = 0; i < nc; i++) {
        json_t *c = json_array_get(choices, (size_t)i);
        json_t *text = ch ? json_array_get(ch, (size_t)i) : NULL;
        if (text && !json_is_string(text)) {
            egm_fail(e, "%s:%ld: \"choices\"[%d]: expected a string", origin, lineno, i);
            free(ct);
            goto out;
        }
        int k;
        if (ctx) {
            k = egm_ll_add_text(ll, j->tok, json_string_value(ctx), json_string_length(ctx),
                                json_string_value(c), json_string_length(c));
        } else {
            int *cc, ncc;
            if (get_tokens(c, &cc, &ncc)) {
                egm_fail(e, "%s:%ld: \"choices_tokens\"[%d]: expected an array of token ids", origin, lineno, i);
                free(ct);
                goto out;
            }
            k = egm_ll_add_tokens(ll, ct, nct, cc, ncc);
            if (!text) ex->len[i] = ncc; /* no text given: tokens stand in (docs/JOBS.md) */
            free(cc);
        }
        if (k < 0) {
            egm_fail(e, "out of memory");
            free(ct);
            goto out;
        }
        if (text) ex->len[i] = (double)egm_utf8_chars(json_string_value(text), json_string_length(text));
        if (ll->r[k].error) {
            egm_fail(e, "%s:%ld: choice %d: %s", origin, lineno, i, ll->r[k].error);
            free(ct);
            goto out;
        }
    }
    free(ct);
    rc = 0;
out:
    json_decref(o);
    return rc;
}

/* Reads the task: one example per line, its choices added to ll as
 * requests. *ex grows to *n_ex examples (freed by the caller on failure). */
static int read_task(job_t *j, egm_ll_job *ll, const char *task, example_t **ex, int *n_ex,
                     egm_err *e) {
    egm_jsonl *in = egm_jsonl_open(task, e);
    if (!in) return -1;
    int cap = 0, rc = -1;
    for (;;) {
        const char *line;
        size_t len;
        long lineno;
        int r = egm_jsonl_next(in, &line, &len, &lineno, e);
        if (r < 0) goto out;
        if (r == 0) break;
        if (*n_ex == cap) {
            cap = cap ? cap * 2 : 64;
            example_t *p = realloc(*ex, sizeof **ex * (size_t)cap);
            if (!p) {
                egm_fail(e, "out of memory");
                goto out;
            }
            *ex = p;
        }
        example_t *x = &(*ex)[(*n_ex)++];
        memset(x, 0, sizeof *x);
        if (task_line(j, ll, line, len, task, lineno, x, e)) goto out;
    }
    rc = *n_ex == 0 ? egm_fail(e, "%s: no examples", task) : 0;
out:
    egm_jsonl_close(in);
    return rc;
}

/* One example's line of --per-example. Takes lls and gr. */
static void per_example_line(FILE *pe, const example_t *x, json_t *lls, json_t *gr, int pred,
                             int pred_n) {
    json_t *o = json_object();
    json_object_set_new(o, "id", json_loads(x->id_json, JSON_DECODE_ANY, NULL));
    json_object_set_new(o, "loglikelihoods", lls);
    json_object_set_new(o, "is_greedy", gr);
    json_object_set_new(o, "pred", json_integer(pred));
    json_object_set_new(o, "pred_norm", json_integer(pred_n));
    json_object_set_new(o, "gold", json_integer(x->gold));
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17));
    if (s) fprintf(pe, "%s\n", s);
    free(s);
    json_decref(o);
}

/* acc[i] and accn[i] of each example from its choices' results (and its
 * --per-example line when pe); *tokens counts the continuation tokens. */
static int grade(const egm_ll_job *ll, const example_t *ex, int n_ex, const char *task,
                 FILE *pe, double *acc, double *accn, long *tokens, egm_err *e) {
    *tokens = 0;
    for (int i = 0; i < n_ex; i++) {
        const example_t *x = &ex[i];
        double ll_[x->n_choices], norm[x->n_choices];
        json_t *lls = json_array(), *gr = json_array();
        for (int c = 0; c < x->n_choices; c++) {
            const egm_ll_result *r = &ll->r[x->first_req + c];
            if (r->error) {
                json_decref(lls);
                json_decref(gr);
                return egm_fail(e, "%s: example %s, choice %d: %s", task, x->id_json, c, r->error);
            }
            ll_[c] = r->logprob;
            norm[c] = r->logprob / x->len[c];
            *tokens += r->n_tokens;
            json_array_append_new(lls, num(r->logprob));
            json_array_append_new(gr, json_boolean(r->is_greedy));
        }
        int pred = egm_argmax_d(ll_, x->n_choices), pred_n = egm_argmax_d(norm, x->n_choices);
        acc[i] = pred == x->gold;
        accn[i] = pred_n == x->gold;
        if (pe) {
            per_example_line(pe, x, lls, gr, pred, pred_n);
        } else {
            json_decref(lls);
            json_decref(gr);
        }
    }
    return 0;
}

/* The report: JSON to --out, the table to the terminal. */
static int eval_report(const job_t *j, const egm_ll_job *ll, const char *task, const char *out,
                       int n_ex, const double *acc, const double *accn, long tokens) {
    double m = 0, mn = 0;
    for (int i = 0; i < n_ex; i++) m += acc[i], mn += accn[i];
    m /= n_ex;
    mn /= n_ex;
    double se = egm_mean_stderr(acc, n_ex), sen = egm_mean_stderr(accn, n_ex);
    json_t *rep = json_object();
    json_object_set_new(rep, "task", json_string(task));
    json_object_set_new(rep, "model", json_string(j->r.model));
    json_object_set_new(rep, "n", json_integer(n_ex));
    json_object_set_new(rep, "acc", json_real(m));
    json_object_set_new(rep, "acc_stderr", num(se));
    json_object_set_new(rep, "acc_norm", json_real(mn));
    json_object_set_new(rep, "acc_norm_stderr", num(sen));
    json_object_set_new(rep, "requests", json_integer(ll->n_r));
    json_object_set_new(rep, "continuation_tokens", json_integer(tokens));
    json_object_set_new(rep, "max_length", json_integer(j->max_length));
    FILE *tf;
    int bad = write_report(rep, out, &tf, "eval");
    json_decref(rep);
    if (bad) return EGM_EXIT_FAIL;
    fprintf(tf, "%s: %d examples\n", task, n_ex);
    fprintf(tf, "| metric   |  value |  stderr |\n|----------|--------|---------|\n");
    fprintf(tf, "| acc      | %.4f | %7.4f |\n| acc_norm | %.4f | %7.4f |\n", m, se, mn, sen);
    return 0;
}

int egm_cmd_eval(int argc, char **argv) {
    job_t j;
    job_init(&j);
    const char *task = NULL, *out = NULL, *per_example = NULL;
    egm_opt opts[] = {
        {"task", EGM_OPT_STRING, &task, "multiple-choice task, JSONL {\"id\", \"context\", \"choices\", \"gold\"}", 0, 0, "TASK.jsonl"},
        {"out", EGM_OPT_STRING, &out, "JSON report (- = stdout, the table then goes to stderr)", 0, 0, "REPORT.json"},
        {"per-example", EGM_OPT_STRING, &per_example, "one line per example: log-likelihoods, is_greedy, predictions", 0, 0, "OUT.jsonl"},
        JOB_OPTS(&j),
        {NULL, 0, NULL, NULL, 0, 0, NULL}};
    int rc = job_args(&j, "egmla eval",
                      "Multiple-choice evaluation with lm-evaluation-harness semantics: acc is the argmax of "
                      "each choice's log-likelihood given the context, acc_norm the argmax of the log-likelihood "
                      "divided by the choice's length in characters; standard errors of the means.",
                      opts, argc, argv);
    if (rc >= 0) return rc;
    if (!task) {
        if (!egm_run_is_worker()) fprintf(stderr, "egmla eval: --task is required\n");
        return EGM_EXIT_USAGE;
    }
    egm_err e;
    if (reports_unwritable("egmla eval", out, per_example)) return EGM_EXIT_FAIL;
    egm_ll_job ll;
    example_t *ex = NULL;
    int n_ex = 0;
    double *acc = NULL, *accn = NULL;
    FILE *pe = NULL;
    long tokens;
    rc = EGM_EXIT_FAIL;
    egm_ll_init(&ll, 0, -1); /* freed at done, even when the model fails to load */
    if (job_load(&j, 0, &e)) goto fail;
    egm_ll_init(&ll, j.max_length, egm_prefix_token(&j.cfg));
    if (read_task(&j, &ll, task, &ex, &n_ex, &e)) goto fail;
    rc = job_run(&j, &ll, "eval");
    if (egm_run_is_worker() || rc) goto done;
    rc = EGM_EXIT_FAIL;
    acc = malloc(sizeof(double) * (size_t)n_ex);
    accn = malloc(sizeof(double) * (size_t)n_ex);
    if (!acc || !accn) {
        egm_fail(&e, "out of memory");
        goto fail;
    }
    if (per_example && !(pe = !strcmp(per_example, "-") ? stdout : fopen(per_example, "w"))) {
        egm_fail(&e, "--per-example %s: cannot create: %s", per_example, strerror(errno));
        goto fail;
    }
    if (grade(&ll, ex, n_ex, task, pe, acc, accn, &tokens, &e)) goto fail;
    FILE *closing = pe;
    pe = NULL;
    if (closing && closing != stdout && fclose(closing)) {
        egm_fail(&e, "--per-example %s: write failed", per_example);
        goto fail;
    }
    rc = eval_report(&j, &ll, task, out, n_ex, acc, accn, tokens);
    goto done;
fail:
    fprintf(stderr, "egmla eval: %s\n", e.msg);
done:
    if (pe && pe != stdout) fclose(pe);
    free(acc);
    free(accn);
    for (int i = 0; i < n_ex; i++) {
        free(ex[i].id_json);
        free(ex[i].len);
    }
    free(ex);
    egm_ll_free(&ll);
    job_free(&j);
    return rc;
}

/* ---- egmla perplexity ---- */

/* The whole of path ("-" = stdin). */
static char *read_all(const char *path, size_t *len, egm_err *e) {
    FILE *f = !strcmp(path, "-") ? stdin : fopen(path, "rb");
    if (!f) {
        egm_fail(e, "cannot open \"%s\": %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    for (;;) {
        if (!b) break;
        size_t k = fread(b + n, 1, cap - n, f);
        n += k;
        if (n < cap) break;
        char *nb = realloc(b, cap *= 2);
        if (!nb) {
            free(b);
            b = NULL;
        }
        b = nb;
    }
    int bad = !b || ferror(f);
    if (f != stdin) fclose(f);
    if (bad) {
        free(b);
        egm_fail(e, "cannot read \"%s\"", path);
        return NULL;
    }
    *len = n;
    return b;
}

/* The report of a scored text: JSON as lm-eval's wikitext task words it,
 * and a table; 0, or EGM_EXIT_FAIL once write_report has said why. */
static int perplexity_report(const job_t *j, const egm_ll_job *ll, int k, const char *text,
                             const char *out, const char *buf, size_t len, int n, int n_windows,
                             int stride) {
    double lp = ll->r[k].logprob;
    long words = egm_count_words(buf, len);
    json_t *rep = json_object();
    json_object_set_new(rep, "text", json_string(text));
    json_object_set_new(rep, "model", json_string(j->r.model));
    json_object_set_new(rep, "loglikelihood", num(lp));
    json_object_set_new(rep, "tokens", json_integer(n));
    json_object_set_new(rep, "words", json_integer(words));
    json_object_set_new(rep, "bytes", json_integer((json_int_t)len));
    json_object_set_new(rep, "word_perplexity", num(exp(-lp / words)));
    json_object_set_new(rep, "byte_perplexity", num(exp(-lp / (double)len)));
    json_object_set_new(rep, "bits_per_byte", num(-lp / (double)len / log(2)));
    json_object_set_new(rep, "token_perplexity", num(exp(-lp / n)));
    json_object_set_new(rep, "window", json_integer(ll->max_len));
    json_object_set_new(rep, "stride", json_integer(stride > 0 && stride < ll->max_len ? stride : ll->max_len));
    json_object_set_new(rep, "windows", json_integer(n_windows));
    FILE *tf;
    if (write_report(rep, out, &tf, "perplexity")) {
        json_decref(rep);
        return EGM_EXIT_FAIL;
    }
    json_decref(rep);
    fprintf(tf, "%s: %d tokens, %ld words, %zu bytes, %d windows of %d\n", text, n, words, len,
            n_windows, ll->max_len);
    fprintf(tf, "| metric           |        value |\n|------------------|--------------|\n");
    fprintf(tf, "| word_perplexity  | %12.4f |\n| byte_perplexity  | %12.4f |\n", exp(-lp / words),
            exp(-lp / (double)len));
    fprintf(tf, "| bits_per_byte    | %12.4f |\n| token_perplexity | %12.4f |\n",
            -lp / (double)len / log(2), exp(-lp / n));
    return 0;
}

int egm_cmd_perplexity(int argc, char **argv) {
    job_t j;
    job_init(&j);
    const char *text = NULL, *out = NULL;
    int window = 0, stride = 0;
    egm_opt opts[] = {
        {"text", EGM_OPT_STRING, &text, "the text, UTF-8, scored as one document", 0, 0, "FILE"},
        {"out", EGM_OPT_STRING, &out, "JSON report (- = stdout, the table then goes to stderr)", 0, 0, "REPORT.json"},
        {"window", EGM_OPT_INT, &window, "tokens per window (0 = the model's context)", 0, 1 << 30, "N"},
        {"stride", EGM_OPT_INT, &stride, "tokens predicted per window after the first (0 = window: disjoint, as lm-eval)", 0, 1 << 30, "N"},
        JOB_OPTS(&j),
        {NULL, 0, NULL, NULL, 0, 0, NULL}};
    int rc = job_args(&j, "egmla perplexity",
                      "Perplexity of a text with lm-evaluation-harness's loglikelihood_rolling: disjoint "
                      "windows of the model's context, the first conditioned on the bos token. Reports word "
                      "and byte perplexity and bits per byte as lm-eval's wikitext task, and token perplexity.",
                      opts, argc, argv);
    if (rc >= 0) return rc;
    if (!text) {
        if (!egm_run_is_worker()) fprintf(stderr, "egmla perplexity: --text is required\n");
        return EGM_EXIT_USAGE;
    }
    egm_err e;
    if (reports_unwritable("egmla perplexity", out, NULL)) return EGM_EXIT_FAIL;
    if (window) j.max_length = window;
    egm_ll_job ll;
    egm_ll_init(&ll, 0, -1);
    char *buf = NULL;
    int *ids = NULL, n = 0;
    size_t len = 0;
    rc = EGM_EXIT_FAIL;
    if (job_load(&j, 1, &e)) goto fail;
    egm_ll_init(&ll, j.max_length, egm_prefix_token(&j.cfg));
    ll.stride = stride;
    /* a worker runs layers only: the text (maybe stdin, which mpirun gives
     * rank 0 alone) is rank 0's business */
    if (egm_run_is_worker()) {
        rc = job_run(&j, &ll, "perplexity");
        goto done;
    }
    if (!(buf = read_all(text, &len, &e))) goto fail;
    if (egm_tok_encode(j.tok, buf, len, 0, &ids, &n, &e)) {
        egm_wrap(&e, "%s", text);
        goto fail;
    }
    int k = egm_ll_add_rolling(&ll, ids, n);
    if (k < 0) {
        egm_fail(&e, "out of memory");
        goto fail;
    }
    if (ll.r[k].error) {
        egm_fail(&e, "%s: %s", text, ll.r[k].error);
        goto fail;
    }
    int n_windows = ll.n_w;
    rc = job_run(&j, &ll, "perplexity");
    if (egm_run_is_worker() || rc) goto done;
    rc = EGM_EXIT_FAIL;
    if (ll.r[k].error) {
        egm_fail(&e, "%s: %s", text, ll.r[k].error);
        goto fail;
    }
    rc = perplexity_report(&j, &ll, k, text, out, buf, len, n, n_windows, stride);
    goto done;
fail:
    fprintf(stderr, "egmla perplexity: %s\n", e.msg);
done:
    free(buf);
    free(ids);
    egm_ll_free(&ll);
    job_free(&j);
    return rc;
}

/* ---- egmla loglikelihood: the lm-eval backend's batch command ---- */

/* One input line into a request; a refused line becomes an error request,
 * so request k is always input line k. Returns -1 only when out of memory. */
static int ll_line(job_t *j, egm_ll_job *ll, const char *line, size_t len, const char *origin,
                   long lineno, char **id_json) {
    char msg[1400];
    int named = 0; /* msg already names the line */
    json_error_t je;
    json_t *o = json_loadb(line, len, 0, &je);
    json_t *id = o && json_is_object(o) ? json_object_get(o, "id") : NULL;
    *id_json = id && (json_is_string(id) || json_is_integer(id)) ? json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    json_t *ctx = id ? json_object_get(o, "context") : NULL, *cont = id ? json_object_get(o, "continuation") : NULL,
           *toks = id ? json_object_get(o, "tokens") : NULL, *nctx = id ? json_object_get(o, "n_context") : NULL,
           *text = id ? json_object_get(o, "text") : NULL;
    int k;
    if (!o || !json_is_object(o)) {
        snprintf(msg, sizeof msg, "%s:%ld: expected a JSON object, %s", origin, lineno, o ? "found another value" : je.text);
        named = 1, k = egm_ll_add_error(ll, msg);
    } else if (!*id_json) {
        snprintf(msg, sizeof msg, "%s:%ld: \"id\": expected a string or an integer", origin, lineno);
        named = 1, k = egm_ll_add_error(ll, msg);
    } else if ((ctx || cont) && !toks && !text) {
        if (!json_is_string(ctx) || !json_is_string(cont)) {
            snprintf(msg, sizeof msg, "%s:%ld: \"context\" and \"continuation\": expected two strings", origin, lineno);
            named = 1, k = egm_ll_add_error(ll, msg);
        } else if (!j->tok) {
            snprintf(msg, sizeof msg, "%s:%ld: text needs a tokenizer and the model has no tokenizer.json", origin, lineno);
            named = 1, k = egm_ll_add_error(ll, msg);
        } else {
            k = egm_ll_add_text(ll, j->tok, json_string_value(ctx), json_string_length(ctx),
                                json_string_value(cont), json_string_length(cont));
        }
    } else if (toks && !ctx && !cont && !text) {
        int *t = NULL, n = 0;
        if (get_tokens(toks, &t, &n) || !json_is_integer(nctx) || json_integer_value(nctx) < 0 ||
            json_integer_value(nctx) > n) {
            snprintf(msg, sizeof msg, "%s:%ld: expected \"tokens\" (token ids) and \"n_context\" (0 to their count)",
                     origin, lineno);
            named = 1, k = egm_ll_add_error(ll, msg);
        } else {
            int nc = (int)json_integer_value(nctx);
            k = egm_ll_add_tokens(ll, t, nc, t + nc, n - nc);
        }
        free(t);
    } else if (text && !ctx && !cont && !toks) {
        int *t = NULL, n = 0;
        egm_err e;
        if (!json_is_string(text)) {
            snprintf(msg, sizeof msg, "%s:%ld: \"text\": expected a string", origin, lineno);
            named = 1, k = egm_ll_add_error(ll, msg);
        } else if (!j->tok) {
            snprintf(msg, sizeof msg, "%s:%ld: text needs a tokenizer and the model has no tokenizer.json", origin, lineno);
            named = 1, k = egm_ll_add_error(ll, msg);
        } else if (egm_tok_encode(j->tok, json_string_value(text), json_string_length(text), 0, &t, &n, &e)) {
            snprintf(msg, sizeof msg, "%s:%ld: \"text\": %.1000s", origin, lineno, e.msg);
            named = 1, k = egm_ll_add_error(ll, msg);
        } else {
            k = egm_ll_add_rolling(ll, t, n);
        }
        free(t);
    } else {
        snprintf(msg, sizeof msg, "%s:%ld: expected \"context\" + \"continuation\", \"tokens\" + \"n_context\", "
                 "or \"text\"", origin, lineno);
        named = 1, k = egm_ll_add_error(ll, msg);
    }
    json_decref(o);
    if (k >= 0 && ll->r[k].error && !named) {
        /* name the line in messages from eval.c */
        snprintf(msg, sizeof msg, "%s:%ld: %.1000s", origin, lineno, ll->r[k].error);
        free(ll->r[k].error);
        ll->r[k].error = strdup(msg);
    }
    return k < 0 ? -1 : 0;
}

int egm_cmd_loglikelihood(int argc, char **argv) {
    job_t j;
    job_init(&j);
    const char *input = "-", *out = "-";
    egm_opt opts[] = {
        {"input", EGM_OPT_STRING, &input, "requests: {\"id\", \"context\", \"continuation\"} | {\"id\", \"tokens\", \"n_context\"} | {\"id\", \"text\"} (rolling)", 0, 0, "IN.jsonl"},
        {"out", EGM_OPT_STRING, &out, "results {\"id\", \"logprob\", \"is_greedy\", \"n_tokens\"}, in input order (- = stdout)", 0, 0, "OUT.jsonl"},
        JOB_OPTS(&j),
        {NULL, 0, NULL, NULL, 0, 0, NULL}};
    int rc = job_args(&j, "egmla loglikelihood",
                      "lm-evaluation-harness requests in batch: loglikelihood(context, continuation) with "
                      "lm-eval's token boundary, or loglikelihood_rolling(text). What the lm-eval backend "
                      "(deploy/lm_eval) runs.",
                      opts, argc, argv);
    if (rc >= 0) return rc;
    egm_err e;
    egm_ll_job ll;
    egm_ll_init(&ll, 0, -1);
    char **ids = NULL;
    int n_ids = 0, cap = 0;
    egm_jsonl *in = NULL;
    egm_out *o = NULL;
    rc = EGM_EXIT_FAIL;
    if (job_load(&j, 0, &e)) goto fail;
    egm_ll_init(&ll, j.max_length, egm_prefix_token(&j.cfg));
    if (egm_jsonl_check_distinct(input, out, &e)) goto fail;
    if (!(in = egm_jsonl_open(input, &e))) goto fail;
    if (!egm_run_is_worker() && !(o = egm_out_open(out, &e))) goto fail;
    for (;;) {
        const char *line;
        size_t len;
        long lineno;
        int r = egm_jsonl_next(in, &line, &len, &lineno, &e);
        if (r < 0) goto fail;
        if (r == 0) break;
        if (n_ids == cap) {
            cap = cap ? cap * 2 : 64;
            char **p = realloc(ids, sizeof *ids * (size_t)cap);
            if (!p) goto oom;
            ids = p;
        }
        if (ll_line(&j, &ll, line, len, egm_jsonl_origin(in), lineno, &ids[n_ids++])) goto oom;
    }
    egm_jsonl_close(in);
    in = NULL;
    rc = job_run(&j, &ll, "loglikelihood");
    if (egm_run_is_worker() || rc) goto done;
    long failed = 0;
    for (int i = 0; i < n_ids; i++) {
        egm_ll_result *r = &ll.r[i];
        char *line;
        if (r->error) {
            failed++;
            line = egm_result_error(ids[i], r->error);
        } else {
            json_t *b = json_object();
            json_object_set_new(b, "id", json_loads(ids[i], JSON_DECODE_ANY, NULL));
            json_object_set_new(b, "logprob", num(r->logprob));
            json_object_set_new(b, "is_greedy", json_boolean(r->is_greedy));
            json_object_set_new(b, "n_tokens", json_integer(r->n_tokens));
            line = json_dumps(b, JSON_COMPACT | JSON_REAL_PRECISION(17));
            json_decref(b);
        }
        if (!line) goto oom;
        int w = egm_out_write_line(o, line, &e);
        free(line);
        if (w) goto fail;
    }
    if (egm_out_commit(o, &e) || egm_out_sync(o, &e)) goto fail;
    rc = failed ? EGM_EXIT_SOME_FAILED : 0;
    goto done;
oom:
    egm_fail(&e, "out of memory");
fail:
    fprintf(stderr, "egmla loglikelihood: %s\n", e.msg);
    rc = EGM_EXIT_FAIL;
done:
    if (in) egm_jsonl_close(in);
    if (o && egm_out_close(o, &e)) fprintf(stderr, "egmla loglikelihood: %s\n", e.msg);
    for (int i = 0; i < n_ids; i++) free(ids[i]);
    free(ids);
    egm_ll_free(&ll);
    job_free(&j);
    return rc;
}
