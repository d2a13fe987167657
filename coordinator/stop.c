/* stop.c - stop strings over the growing text (see stop.h). */
#include "stop.h"

#include <stdlib.h>
#include <string.h>

void egm_stop_init(egm_stop *m, char *const *stop, int n) {
    memset(m, 0, sizeof *m);
    if (n > EGM_STOP_MAX) n = EGM_STOP_MAX;
    for (int i = 0; i < n; i++) m->stop[i] = stop[i];
    m->n_stop = n;
    m->matched = -1;
    for (int i = 0; i < n; i++)
        if (strlen(stop[i]) > m->max_len) m->max_len = strlen(stop[i]);
}

void egm_stop_free(egm_stop *m) {
    free(m->text);
    free(m->piece);
    memset(m, 0, sizeof *m);
    m->matched = -1;
}

static int grow(char **p, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    char *q = realloc(*p, c);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

int egm_stop_feed(egm_stop *m, const char *piece, size_t n) {
    if (m->matched >= 0) return 1;
    if (grow(&m->text, &m->cap, m->len + n + 1)) return -1;
    size_t old = m->len;
    memcpy(m->text + m->len, piece, n);
    m->len += n;
    m->text[m->len] = '\0';
    if (n == 0 || m->n_stop == 0) return 0;
    /* a new occurrence ends in the new bytes: it starts at most
     * max_len - 1 bytes before them */
    size_t from = old > m->max_len - 1 ? old - (m->max_len - 1) : 0;
    size_t best = (size_t)-1;
    for (int i = 0; i < m->n_stop; i++) {
        const char *hit = memmem(m->text + from, m->len - from, m->stop[i], strlen(m->stop[i]));
        if (hit && (size_t)(hit - m->text) < best) {
            best = (size_t)(hit - m->text);
            m->matched = i;
        }
    }
    if (m->matched < 0) return 0;
    m->len = best;
    m->text[m->len] = '\0';
    return 1;
}

int egm_stop_feed_token(egm_stop *m, const egm_tokenizer *tok, int id) {
    if (m->matched >= 0) return 1;
    if (egm_tok_is_special(tok, id)) return 0;
    size_t cap = egm_tok_stream_cap(tok);
    if (grow(&m->piece, &m->piece_cap, cap)) return -1;
    size_t n = egm_tok_stream_feed(tok, &m->ds, id, m->piece, cap);
    return egm_stop_feed(m, m->piece, n);
}

int egm_stop_finish(egm_stop *m) {
    char buf[32];
    size_t n = egm_tok_stream_flush(&m->ds, buf, sizeof buf);
    return egm_stop_feed(m, buf, n);
}

size_t egm_stop_stable(const egm_stop *m) {
    if (m->matched >= 0) return m->len;
    size_t hold = 0;
    for (int i = 0; i < m->n_stop; i++) {
        size_t k = strlen(m->stop[i]) - 1;
        if (k > m->len) k = m->len;
        for (; k > hold; k--)
            if (!memcmp(m->text + m->len - k, m->stop[i], k)) {
                hold = k;
                break;
            }
    }
    return m->len - hold;
}
