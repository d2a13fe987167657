/* prompt.c - request prompt to token ids (see prompt.h). */
#include "prompt.h"

#include <stdlib.h>
#include <string.h>

static int from_text(const char *text, int chat, const egm_config *c, const egm_tokenizer *tok,
                     int add_bos, int **toks, int *n, egm_err *e) {
    int *ids = NULL, k = 0;
    if (egm_tok_encode(tok, text, strlen(text), !chat, &ids, &k, e)) return -1;
    int bos = !chat && add_bos && c->bos_token_id >= 0 && !(k > 0 && ids[0] == c->bos_token_id);
    *toks = malloc(sizeof(int) * (size_t)(k + bos + 1));
    if (!*toks) {
        free(ids);
        return egm_fail(e, "out of memory");
    }
    if (bos) (*toks)[0] = c->bos_token_id;
    memcpy(*toks + bos, ids, sizeof(int) * (size_t)k);
    free(ids);
    *n = k + bos;
    return 0;
}

int egm_prompt_tokens(const egm_request *r, const egm_config *c, const egm_tokenizer *tok,
                      const egm_chat_template *chat, int gen_prompt, int add_bos,
                      const char *origin, int **toks, int *n, egm_err *e) {
    long ln = r->lineno;
    *toks = NULL;
    *n = 0;
    if (r->messages) {
        if (!tok)
            return egm_fail(e, "%s:%ld: \"messages\" need a tokenizer, and the model has no "
                            "tokenizer.json: give \"tokens\" instead", origin, ln);
        if (!chat)
            return egm_fail(e, "%s:%ld: \"messages\" need a chat template, and the model has "
                            "none: give --chat-template NAME|FILE (%s)", origin, ln,
                            egm_chat_families);
        char *text = egm_chat_render(chat, r->messages, r->n_messages, gen_prompt, e);
        if (!text) return egm_wrap(e, "%s:%ld: \"messages\": the %s chat template refuses them",
                                   origin, ln, egm_chat_template_family(chat));
        int rc = from_text(text, 1, c, tok, add_bos, toks, n, e);
        free(text);
        return rc ? egm_wrap(e, "%s:%ld: \"messages\"", origin, ln) : 0;
    }
    if (r->prompt) {
        if (!tok)
            return egm_fail(e, "%s:%ld: \"prompt\" needs a tokenizer, and the model has no "
                            "tokenizer.json: give \"tokens\" instead", origin, ln);
        if (from_text(r->prompt, 0, c, tok, add_bos, toks, n, e))
            return egm_wrap(e, "%s:%ld: \"prompt\"", origin, ln);
        return 0;
    }
    *toks = malloc(sizeof(int) * (size_t)(r->n_tokens + 1));
    if (!*toks) return egm_fail(e, "out of memory");
    memcpy(*toks, r->tokens, sizeof(int) * (size_t)r->n_tokens);
    *n = r->n_tokens;
    for (int i = 0; i < *n; i++)
        if ((*toks)[i] >= c->vocab_size)
            return egm_fail(e, "%s:%ld: \"tokens\"[%d]: %d is not below the vocabulary size %d",
                            origin, ln, i, (*toks)[i], c->vocab_size);
    return 0;
}
