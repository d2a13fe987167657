/* admit.c - applying releases and admissions to a stage. */
#include "admit.h"

static int check(const egm_stage *s, const egm_admit *a, egm_err *e) {
    if (a->slot < 0 || a->slot >= s->n_slots) return egm_fail(e, "admission to slot %d", a->slot);
    if (a->n_reserve < 0 || a->n_tokens < 0 ||
        (a->mode != EGM_MODE_GENERATE && a->mode != EGM_MODE_SCORE))
        return egm_fail(e, "admission to slot %d: mode %d, %d positions", a->slot, a->mode,
                        a->n_reserve);
    for (int k = 0; k < a->n_tokens; k++)
        if (a->tokens[k] < 0 || a->tokens[k] >= s->c->vocab_size)
            return egm_fail(e, "admission to slot %d: token %d outside the vocabulary", a->slot,
                            a->tokens[k]);
    const char *bad = egm_sampling_check(&a->sp);
    if (bad) return egm_fail(e, "admission to slot %d: %s", a->slot, bad);
    return 0;
}

int egm_stage_apply(egm_stage *s, egm_head *h, const int *releases, int n_releases,
                    const egm_admit *admits, int n_admits, egm_err *e) {
    for (int i = 0; i < n_releases; i++) {
        int slot = releases[i];
        if (slot < 0 || slot >= s->n_slots) return egm_fail(e, "release of slot %d", slot);
        egm_stage_release(s, slot);
        if (h) egm_head_close(h, slot);
    }
    for (int i = 0; i < n_admits; i++) {
        const egm_admit *a = &admits[i];
        if (check(s, a, e)) return -1;
        if (egm_stage_reserve(s, a->slot, a->n_reserve))
            return egm_fail(e, "layers %d-%d: KV cache cannot hold %d more positions for slot %d",
                            s->m->lo, s->m->hi - 1, a->n_reserve, a->slot);
        /* egm_stage_fork checks the source slot and that both hold fork_n */
        if (a->fork_n > 0 && egm_stage_fork(s, a->slot, a->fork_slot, a->fork_n))
            return egm_fail(e, "admission to slot %d: cannot start from %d positions of slot %d",
                            a->slot, a->fork_n, a->fork_slot);
        if (h && egm_head_open(h, a->slot, a->mode, &a->sp, a->tokens, a->n_tokens))
            return egm_fail(e, "out of memory opening slot %d", a->slot);
        if (h) egm_head_set_top(h, a->slot, a->top_logprobs);
    }
    return 0;
}
