/* commands.h - the subcommands of bin/egmla and what they share. */
#ifndef EGM_COMMANDS_H
#define EGM_COMMANDS_H

#include "base/exit.h"
#include "coordinator/engine.h"
#include "coordinator/job.h"
#include "coordinator/run.h"

int egm_cmd_info(int argc, char **argv);
int egm_cmd_generate(int argc, char **argv);
int egm_cmd_score(int argc, char **argv);
int egm_cmd_eval(int argc, char **argv);          /* coordinator/cmd_eval.c */
int egm_cmd_perplexity(int argc, char **argv);    /* coordinator/cmd_eval.c */
int egm_cmd_loglikelihood(int argc, char **argv); /* coordinator/cmd_eval.c */
int egm_cmd_quantize(int argc, char **argv);      /* coordinator/cmd_quantize.c */
int egm_cmd_plan(int argc, char **argv);          /* coordinator/cmd_plan.c */
int egm_cmd_serve(int argc, char **argv);         /* coordinator/cmd_serve.c */

#endif
