/* fuzz_envelope.c - libFuzzer harness for the protobuf control messages a
 * rank receives from a peer (egmla__envelope__unpack).
 *
 * There is no validation function separate from the MPI receive loops yet
 * (worker/worker_mpi.c step() and coordinator/pipe_mpi.c mpi_collect() check
 * inline), so this harness checks what protobuf-c itself promises: whatever
 * it decodes has the repeated fields and strings it claims, and packs back
 * to a message that decodes the same. (protobuf-c keeps unknown fields with
 * the invalid field number 0, written as an overlong varint, and re-packs
 * them as a plain 0 it then refuses: harmless here, as no rank re-packs a
 * message it received - a stage forwards the header's bytes as they came.) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "egmla.pb-c.h"

static volatile uint64_t sink; /* wraps: only there so reads are not optimised away */

static void walk(const Egmla__Envelope *m) {
    switch (m->msg_case) {
    case EGMLA__ENVELOPE__MSG_HELLO:
        sink += (uint64_t)strlen(m->hello->host) + (uint64_t)strlen(m->hello->build) +
                (uint64_t)strlen(m->hello->model) + (uint64_t)strlen(m->hello->error);
        break;
    case EGMLA__ENVELOPE__MSG_ASSIGN:
        sink += (uint64_t)strlen(m->assign->model) + (uint64_t)strlen(m->assign->build);
        break;
    case EGMLA__ENVELOPE__MSG_BATCH: {
        const Egmla__MicroBatch *b = m->batch;
        for (size_t i = 0; i < b->n_slot; i++) sink += (uint64_t)b->slot[i];
        for (size_t i = 0; i < b->n_pos; i++) sink += (uint64_t)b->pos[i];
        for (size_t i = 0; i < b->n_token; i++) sink += (uint64_t)b->token[i];
        for (size_t i = 0; i < b->want.len; i++) sink += b->want.data[i];
        for (size_t i = 0; i < b->n_releases; i++) sink += (uint64_t)b->releases[i];
        for (size_t i = 0; i < b->n_admits; i++) {
            const Egmla__Admit *a = b->admits[i];
            if (!a) abort();
            if (a->sampling) sink += (uint64_t)a->sampling->top_k;
            for (size_t j = 0; j < a->n_tokens; j++) sink += (uint64_t)a->tokens[j];
        }
        break;
    }
    case EGMLA__ENVELOPE__MSG_RESULT:
        for (size_t i = 0; i < m->result->n_outs; i++) {
            if (!m->result->outs[i]) abort();
            sink += m->result->outs[i]->token;
        }
        break;
    case EGMLA__ENVELOPE__MSG_STATS:
        sink += (uint64_t)strlen(m->stats->host);
        break;
    case EGMLA__ENVELOPE__MSG_ERROR:
        sink += (uint64_t)strlen(m->error->host) + (uint64_t)strlen(m->error->message);
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Egmla__Envelope *m = egmla__envelope__unpack(NULL, size, data);
    if (!m) return 0;
    walk(m);
    size_t n = egmla__envelope__get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) abort();
    if (egmla__envelope__pack(m, buf) != n) abort();
    Egmla__Envelope *m2 = egmla__envelope__unpack(NULL, n, buf);
    if (!m2) goto out;
    if (m2->msg_case != m->msg_case) abort();
    /* packing is deterministic: the re-decoded message packs the same bytes */
    size_t n2 = egmla__envelope__get_packed_size(m2);
    uint8_t *buf2 = malloc(n2 ? n2 : 1);
    if (!buf2 || n2 != n || egmla__envelope__pack(m2, buf2) != n || memcmp(buf, buf2, n)) abort();
    free(buf2);
    egmla__envelope__free_unpacked(m2, NULL);
out:
    free(buf);
    egmla__envelope__free_unpacked(m, NULL);
    return 0;
}
