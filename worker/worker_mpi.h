/* worker_mpi.h - a pipeline stage as an MPI rank, and the MPI plumbing the
 * coordinator (coordinator/pipe_mpi.c, coordinator/run.c) shares with it.
 *
 * Messages: every control message is one protobuf Envelope (proto/egmla.proto)
 * on EGM_TAG_CTRL, except the Stats answering a StatsRequest, which go to
 * rank 0 on EGM_TAG_STATS (so they never mix with its Results). A micro-batch header is followed, from the same sender, by
 * its activations on EGM_TAG_ACT (not into the first stage, which embeds); a
 * Result asking for logits by them on EGM_TAG_LOGITS. EGM_TAG_STOP from rank
 * 0 abandons the run: every rank then exits non-zero without a word (rank 0
 * has printed the one message). Waiting ranks poll with short sleeps so an
 * idle rank leaves its core to a busy one (ranks often share cores).
 *
 * Liveness: a worker answers rank 0's EGM_TAG_PING (one int) with the same
 * int, on EGM_TAG_PING, whenever it waits for a message or for its sends to
 * leave. When the pipeline goes quiet for too long, rank 0 pings every rank
 * and names the ones that do not answer (hung, or stopped with SIGSTOP). */
#ifndef EGM_WORKER_MPI_H
#define EGM_WORKER_MPI_H

#include <stddef.h>
#include <stdint.h>

#include <mpi.h>

#include "egmla.pb-c.h"
#include "base/buf.h"
#include "base/err.h"

enum { EGM_TAG_CTRL = 1, EGM_TAG_ACT = 2, EGM_TAG_LOGITS = 3, EGM_TAG_STOP = 4,
       EGM_TAG_PING = 5, EGM_TAG_STATS = 6 };

/* EGM_VERSION + EGM_GITREV of this binary. */
const char *egm_build_fingerprint(void);

/* Model fingerprint "CCCCCCCCCCCCCCCC-WWWWWWWWWWWWWWWW": a 64-bit hash of
 * config.json's bytes, then one of every *.safetensors file's name, size and
 * header. With with_weights = 0 only the config part is computed (the
 * coordinator needs no weights) and the second half is zeros. */
int egm_model_fingerprint(const char *dir, int with_weights, char out[40],
                          egm_err *e);

/* The same shape for synthetic weights (Assign.config_json): a hash of the
 * config text, then one of the seed. */
void egm_synthetic_fingerprint(const char *json, size_t len, uint64_t seed, char out[40]);

/* Turns an MPI error code into a message (returns -1). */
int egm_mpi_fail(egm_err *e, int code, const char *what);
void egm_mpi_hostname(char *buf, size_t n);

/* Waits until a message matching one of (src[i], tag[i]) is pending; returns
 * i (status in *st), or -1 on an MPI error. */
int egm_mpi_wait(int n, const int *src, const int *tag, MPI_Status *st,
                 egm_err *e);

/* The same, giving up after timeout_s seconds (<= 0: never): returns
 * EGM_MPI_TIMEOUT then, without a message. */
#define EGM_MPI_TIMEOUT (-2)
int egm_mpi_wait_for(int n, const int *src, const int *tag, double timeout_s,
                     MPI_Status *st, egm_err *e);

/* Rank 0: pings ranks 1..world-1 and waits up to grace_s seconds for their
 * answers; alive[r] (r >= 1) is set to 1 for each rank that answered.
 * Returns the number of ranks that did not answer, or -1 on an MPI error. */
int egm_mpi_ping_all(int world, double grace_s, unsigned char *alive,
                     egm_err *e);

/* Receives the pending message described by st into buf; *len its size. */
int egm_mpi_recv_probed(const MPI_Status *st, egm_buf *buf, size_t *len,
                        egm_err *e);

/* Packs env and sends it (blocking; control messages are small). */
int egm_mpi_send_env(const Egmla__Envelope *env, int dest, egm_err *e);

/* Waits for an envelope from src on EGM_TAG_CTRL (or MPI_ANY_SOURCE) and
 * unpacks it (free with egmla__envelope__free_unpacked). *from: its rank. */
int egm_mpi_recv_env(int src, Egmla__Envelope **env, int *from, egm_err *e);

/* Rank >= 1: runs one pipeline stage until shutdown. Returns the exit code. */
int egm_worker_main(int rank, int world);

#endif
