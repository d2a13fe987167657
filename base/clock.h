/* clock.h - monotonic seconds, for timeouts, latencies and benchmarks. */
#ifndef EGM_CLOCK_H
#define EGM_CLOCK_H

/* Seconds since an arbitrary fixed point (CLOCK_MONOTONIC): only
 * differences mean anything. */
double egm_now(void);

#endif
