/* args.h - command-line options of one subcommand, from a table.
 *
 *   static int top_k = 40; static const char *input = "-";
 *   egm_opt opts[] = {
 *       {"top-k", EGM_OPT_INT, &top_k, "keep the k most likely tokens", 0, 1e9, "K"},
 *       {"input", EGM_OPT_STRING, &input, "requests, JSONL (- = stdin)", 0, 0, "PATH"},
 *       {0}};
 *   egm_cmd cmd = {"egmla generate", "MODEL_DIR", "Generates text.", opts};
 *   int n_pos, rc = egm_args_parse(&cmd, argc - 2, argv + 2, &n_pos, &err);
 *
 * Accepts "--name value" and "--name=value"; "--" ends the options. Numbers
 * are checked strictly (whole string, type range, optional [min, max]).
 * The table has 7 fields: with -Wextra, write every one (or use designated
 * initializers); {0} ends it.
 * Values keep whatever the variable held when the option is absent, so the
 * table's variables hold the defaults, and --help prints them. */
#ifndef EGM_ARGS_H
#define EGM_ARGS_H

#include <stdio.h>

#include "base/err.h"

typedef enum {
    EGM_OPT_FLAG,    /* int *: set to 1; takes no value */
    EGM_OPT_INT,     /* int * */
    EGM_OPT_FLOAT,   /* float * */
    EGM_OPT_STRING,  /* const char **: points into argv */
    EGM_OPT_U64,     /* uint64_t * */
} egm_opt_kind;

typedef struct {
    const char *name;   /* without the leading "--"; NULL ends the table */
    egm_opt_kind kind;
    void *ptr;
    const char *help;
    double min, max;    /* INT/FLOAT/U64: allowed range when min < max */
    const char *metavar; /* shown in --help ("N", "PATH"...); NULL: by kind */
} egm_opt;

typedef struct {
    const char *name;      /* "egmla generate": prefixes every message */
    const char *synopsis;  /* after "[options]" in the usage line; may be NULL */
    const char *about;     /* a paragraph for --help; may be NULL */
    const egm_opt *opts;
} egm_cmd;

/* Parses argv[0..argc) (the arguments after the subcommand's name).
 * Positional arguments are moved, in order, to argv[0..*n_pos); with n_pos
 * NULL they are refused. Returns 0, 1 when --help/-h was given (usage
 * printed on stdout; the caller exits 0), or -1 with a message such as
 *   egmla generate: --top-k: expected an integer, found "x"
 *   egmla generate: unknown option --foo (see egmla generate --help) */
int egm_args_parse(const egm_cmd *cmd, int argc, char **argv, int *n_pos,
                   egm_err *e);

/* The same, also setting given[i] = 1 for each table entry i that appears
 * on the command line (given: one byte per entry, zeroed by the caller), so
 * that "not given" needs no sentinel value. */
int egm_args_parse_given(const egm_cmd *cmd, int argc, char **argv, int *n_pos,
                         unsigned char *given, egm_err *e);

/* egm_args_parse for a subcommand's entry point, without positionals:
 * returns -1 when the command goes on, else the exit status to return at
 * once: 0 after --help, 2 (EGM_EXIT_USAGE) after printing the error. */
int egm_args_main(const egm_cmd *cmd, int argc, char **argv);
int egm_args_main_given(const egm_cmd *cmd, int argc, char **argv, unsigned char *given);

/* The --help text, with each option's current value as its default. */
void egm_args_usage(const egm_cmd *cmd, FILE *f);

#endif
