/* launch.h - `egmla launch` (mpirun) and `egmla slurm` (sbatch script).
 *
 *   egmla launch TOPO.yaml [--dry-run] [--mpirun PATH] [--workdir DIR] -- generate ...
 *   egmla slurm  TOPO.yaml [--launcher srun|mpirun] [--job-name N] [--time T]
 *                [--partition P] -- generate ...
 *
 * Both run `<this egmla binary> <command> <args> --topology <TOPO.yaml,
 * absolute>` on every rank; rank 0 coordinates, rank i runs stage i-1.
 * The command building is split from the commands so that it can be tested
 * without running mpirun. */
#ifndef EGM_LAUNCH_H
#define EGM_LAUNCH_H

#include "deploy/topology.h"
#include "base/err.h"

typedef struct {
    const char *mpirun;      /* program to run; NULL = "mpirun" */
    const char *exe;         /* the egmla binary, absolute */
    const char *topology;    /* the YAML, absolute */
    const char *hostfile;    /* where the files are written */
    const char *rankfile;
    int as_root;             /* add --allow-run-as-root */
    int local_cpus;          /* CPUs of this machine (0: unknown), for hosts
                              * that are this machine: --oversubscribe, and
                              * bind: core fits */
    int argc;                /* the egmla command and its arguments */
    char **argv;
} egm_launch_opts;

/* The hostfile: "host slots=N", one line per distinct host that runs ranks
 * (node entries sharing a host add their slots). Malloc'd text. */
int egm_launch_hostfile(const egm_topology *t, char **text, egm_err *e);

/* The rankfile: "rank i=host slot=a[-b]": each rank gets `threads` cores,
 * consecutive on its host, in rank order. Malloc'd text. */
int egm_launch_rankfile(const egm_topology *t, char **text, egm_err *e);

/* The full mpirun command line, NULL-terminated; free with egm_argv_free. */
int egm_launch_build_argv(const egm_topology *t, const egm_launch_opts *o,
                          char ***argv, egm_err *e);
void egm_argv_free(char **argv);

/* argv as one shell-quoted line (malloc'd). */
char *egm_shell_join(char *const *argv);

typedef struct {
    int use_mpirun;          /* 0: srun --mpi=pmix; 1: mpirun inside the job */
    const char *job_name;    /* NULL = "egmla" */
    const char *time;        /* NULL: not set */
    const char *partition;   /* NULL: not set */
    const char *exe;
    const char *topology;
    int argc;
    char **argv;
} egm_slurm_opts;

/* The sbatch script text (malloc'd). */
int egm_slurm_script(const egm_topology *t, const egm_slurm_opts *o,
                     char **text, egm_err *e);

/* The subcommands; argv holds the arguments after "launch" / "slurm".
 * Exit status: 0, 1 (could not run mpirun), 2 (bad usage or topology). */
int egm_cmd_launch(int argc, char **argv);
int egm_cmd_slurm(int argc, char **argv);

#endif
