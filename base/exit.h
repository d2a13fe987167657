/* exit.h - the exit statuses of bin/egmla (docs/ERRORS.md).
 *
 * Every layer may end a process (the CLI, the launcher, an MPI rank that
 * aborts the job), so the numbers live at the bottom of the stack. */
#ifndef EGM_EXIT_H
#define EGM_EXIT_H

enum {
    EGM_EXIT_OK = 0,
    EGM_EXIT_FAIL = 1,         /* the job could not run or stopped: bad file, dead rank... */
    EGM_EXIT_USAGE = 2,        /* bad command line */
    EGM_EXIT_SOME_FAILED = 3,  /* the job ran; some input lines were refused (error records written) */
};

#endif
