/* engine.h - the options of every command that runs the engine.
 *
 * generate, score, eval, perplexity, loglikelihood and bench accept the
 * same engine options, from one table, checked by one resolve step:
 *
 *   egm_engine_opts eo;  egm_engine_defaults(&eo);
 *   egm_opt tab[N_OWN + EGM_ENGINE_N_OPTS + 1];
 *   int first = egm_engine_table(own, &eo, tab, sizeof tab / sizeof *tab);
 *   unsigned char given[sizeof tab / sizeof *tab] = {0};
 *   rc = egm_args_main_given(&cmd, argc, argv, given);
 *   if (egm_engine_resolve(&eo, given + first, &e)) ... usage error
 *
 * Whether an option was given is known from the parser, not guessed from
 * its value or from argv. */
#ifndef EGM_ENGINE_H
#define EGM_ENGINE_H

#include <stddef.h>

#include "base/args.h"
#include "base/err.h"
#include "base/wire_dtype.h"
#include "coordinator/job.h"

#define EGM_ENGINE_N_OPTS 14   /* entries egm_engine_table adds */

typedef struct {
    /* as given; the defaults are egm_engine_defaults' */
    const char *model;        /* NULL: the command's default */
    const char *kv_budget, *kv_dtype;
    const char *attn_dtype;   /* "fp32" or "bf16" */
    const char *wire_dtype;   /* NULL: the topology's */
    const char *topology;     /* NULL: none */
    int max_batch, micro_batches, chunk, block_tokens, threads;
    int no_gate_table;
    int batch_invariant;      /* every row's bits whatever shares its batch */
    float rank_timeout;
    /* set by egm_engine_resolve */
    int max_batch_set, micro_batches_set;
    size_t kv_budget_bytes;
    int kv_bf16, attn_bf16;
    egm_wire_dtype wd;        /* valid when wire_dtype != NULL */
} egm_engine_opts;

/* The model used when --model is not given: $EGMLA_MODEL, else the embedded
 * default next to the binary, else ./models/egmla-tiny. */
const char *egm_default_model(void);

void egm_engine_defaults(egm_engine_opts *o);

/* Copies the command's own entries (up to their NULL name) into out, then
 * the EGM_ENGINE_N_OPTS engine entries pointing into o, then the end marker.
 * Returns the index of the first engine entry (the command's own count). */
int egm_engine_table(const egm_opt *own, egm_engine_opts *o, egm_opt *out, int cap);

/* After parsing. given: one byte per engine entry (NULL: none given).
 * Checks the values that need no model (sizes, dtype names) and records
 * what was given. Messages name the option: "--kv-dtype: expected ..." */
int egm_engine_resolve(egm_engine_opts *o, const unsigned char *given, egm_err *e);

/* The engine part of a job's options; model defaults to egm_default_model. */
void egm_engine_to_run(const egm_engine_opts *o, egm_run_opts *r);

#endif
