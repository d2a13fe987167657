#include "rank.h"

#include <stdlib.h>

int egm_under_mpi(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
}

int egm_run_is_worker(void) {
    const char *v = getenv("OMPI_COMM_WORLD_RANK");
    if (!v) v = getenv("PMIX_RANK");
    if (!v) v = getenv("PMI_RANK");
    return v && atoi(v) != 0;
}
