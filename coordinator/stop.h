/* stop.h - stop strings, matched on the detokenised text as it grows.
 *
 * Tokens are decoded one at a time (an incomplete UTF-8 character waits
 * for its next bytes; special tokens such as EOS add no text, as in the
 * "text" of a result). A stop string may end in the middle of a token or
 * span several: after each token the text is searched for every stop
 * string wherever a new occurrence can end; the earliest occurrence wins,
 * and the text is cut where it starts (the stop string is not part of the
 * output). For streaming, egm_stop_stable says how much of the text can
 * no longer change: a tail that is still the beginning of a stop string is
 * held back until the next tokens decide. */
#ifndef EGM_STOP_H
#define EGM_STOP_H

#include <stddef.h>

#include "model/tokenizer.h"

enum { EGM_STOP_MAX = 8 };

typedef struct {
    const char *stop[EGM_STOP_MAX]; /* not owned; non-empty strings */
    int n_stop;
    size_t max_len;       /* longest stop string */
    char *text;           /* decoded so far (NUL-terminated), cut at a match */
    size_t len, cap;
    int matched;          /* index of the stop string found, or -1 */
    egm_tok_stream ds;
    char *piece;          /* one token's decoded bytes */
    size_t piece_cap;
} egm_stop;

/* The strings stop[0..min(n, EGM_STOP_MAX)) must outlive m (the array
 * itself is copied). */
void egm_stop_init(egm_stop *m, char *const *stop, int n);
void egm_stop_free(egm_stop *m);

/* Appends text; returns 1 when a stop string now occurs (text is cut before
 * it, further input is ignored), 0 if not, -1 out of memory. */
int egm_stop_feed(egm_stop *m, const char *piece, size_t n);
/* Decodes one generated token and feeds its text (special tokens: none). */
int egm_stop_feed_token(egm_stop *m, const egm_tokenizer *tok, int id);
/* The sequence ended: bytes of an incomplete character become U+FFFD. */
int egm_stop_finish(egm_stop *m);

/* Bytes at the start of text that no later input can change. */
size_t egm_stop_stable(const egm_stop *m);

#endif
