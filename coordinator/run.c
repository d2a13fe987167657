/* run.c - pick the role: in-process pipeline, or MPI coordinator/worker. */
#include <stdlib.h>

#include "coordinator/commands.h"

int egm_run(const egm_run_opts *r) {
    return egm_run_local(r);
}
