/* tokenizer_decode.c - ids to text: whole (egm_tok_decode) or one id at a
 * time (egm_tok_stream_*).
 *
 * Decoding maps each token back through the inverse byte table (done once
 * at load: every id's bytes are in t->bytes), and turns invalid UTF-8 into
 * U+FFFD per maximal invalid subpart (Rust's from_utf8_lossy, which HF
 * uses). */
#include "tokenizer_impl.h"

#include <stdlib.h>
#include <string.h>

static const u8 REPLACEMENT[3] = {0xEF, 0xBF, 0xBD};

/* Copies s[0, n) to out as valid UTF-8 (one U+FFFD per maximal invalid
 * subpart). If hold, a truncated sequence at the end is left unconsumed.
 * Stops before a character that would not fit in cap. Returns bytes written;
 * *used gets the input consumed. */
static size_t lossy(const u8 *s, size_t n, int hold, u8 *out, size_t cap, size_t *used) {
    size_t i = 0, k = 0;
    while (i < n) {
        int len, r = utf8_seq(s + i, n - i, &len);
        if (r == 0 && hold) break;
        size_t w = r == 1 ? (size_t)len : 3;
        if (k + w > cap) break;
        if (r == 1) memcpy(out + k, s + i, len);
        else memcpy(out + k, REPLACEMENT, 3);
        k += w;
        i += len;
    }
    *used = i;
    return k;
}

char *egm_tok_decode(const egm_tokenizer *t, const int *ids, int n, int skip_special) {
    size_t total = 0;
    for (int i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < t->n_ids) total += t->nbytes[ids[i]];
    u8 *raw = malloc(total + 1), *out = malloc(3 * total + 1);
    if (!raw || !out) { free(raw); free(out); return NULL; }
    size_t k = 0, used;
    for (int i = 0; i < n; i++) {
        int id = ids[i];
        if (id < 0 || id >= t->n_ids || !t->bytes[id]) continue; /* HF skips unknown ids */
        if (skip_special && t->special[id]) continue;
        memcpy(raw + k, t->bytes[id], t->nbytes[id]);
        k += t->nbytes[id];
    }
    size_t m = lossy(raw, k, 0, out, 3 * total, &used);
    out[m] = 0;
    free(raw);
    return (char *)out;
}

size_t egm_tok_stream_cap(const egm_tokenizer *t) {
    /* worst case: every byte of the longest token, plus the held bytes,
     * becomes a 3-byte U+FFFD */
    return 3 * (t->max_bytes + 8);
}

size_t egm_tok_stream_feed(const egm_tokenizer *t, egm_tok_stream *s, int id, char *out,
                           size_t cap) {
    if (id < 0 || id >= t->n_ids || !t->bytes[id]) return 0;
    size_t np = s->npend > 0 ? (size_t)s->npend : 0, nb = (size_t)t->nbytes[id];
    u8 local[512], *buf = np + nb <= sizeof local ? local : malloc(np + nb);
    if (!buf) return 0;
    memcpy(buf, s->pend, np);
    memcpy(buf + np, t->bytes[id], nb);
    size_t used, w = lossy(buf, np + nb, 1, (u8 *)out, cap, &used);
    /* Keep what was not emitted: a truncated character (at most 3 bytes), or
     * whatever did not fit in out, as far as pend can hold it. */
    size_t rest = np + nb - used;
    if (rest > sizeof s->pend) rest = sizeof s->pend;
    memmove(s->pend, buf + used, rest);
    s->npend = (int)rest;
    if (buf != local) free(buf);
    return w;
}

size_t egm_tok_stream_flush(egm_tok_stream *s, char *out, size_t cap) {
    size_t used, w = lossy(s->pend, s->npend > 0 ? (size_t)s->npend : 0, 0, (u8 *)out, cap, &used);
    memmove(s->pend, s->pend + used, s->npend - used);
    s->npend -= (int)used;
    return w;
}
