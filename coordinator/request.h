/* request.h - one JSONL request in, one JSONL result out.
 *
 * Input line (keys are a contract; anything else is refused by name):
 *   {"id": "a" | 7, "prompt": "text" | "tokens": [1, 2, 3]
 *                   | "messages": [{"role": "user", "content": "Hi"}, ...],
 *    "max_new_tokens": 64, "temperature": 0.7, "top_k": 40, "top_p": 0.9,
 *    "min_p": 0.05, "repetition_penalty": 1.1, "seed": 1, "ignore_eos": false,
 *    "stop": "\n\n" | ["A:", "B:"], "logprobs": 5}
 * "id" is required; exactly one of "prompt"/"tokens"/"messages"; the rest
 * override the command line's defaults. An optional key given as null
 * counts as absent. "messages" are rendered with the model's chat template;
 * a message's "content" is a string or a list of {"type": "text", "text"}
 * parts (joined); "name" is accepted and ignored. "stop": up to
 * EGM_MAX_STOP non-empty strings. "logprobs": 0..EGM_MAX_LOGPROBS top
 * alternatives reported with each generated token's log-prob.
 *
 * Output lines (JSON_COMPACT, the id copied byte for byte from the input):
 *   generate: {"id":..,"tokens":[..],"text":"..","finish_reason":"stop",
 *              "logprobs":[{"token":..,"text":"..","logprob":..,
 *                           "top":[{"token":..,"text":"..","logprob":..}]}],
 *              "stats":{"prompt_tokens":..,"generated_tokens":..,
 *                       "ttft_ms":..,"total_ms":..}}
 *             "tokens" holds every generated token, including an EOS and the
 *             tokens that spelled a stop string; "text" is their text without
 *             special tokens, cut before the stop string; "logprobs" (when
 *             asked) has one entry per token of "tokens".
 *   score:    {"id":..,"logprobs":[..]}
 *   error:    {"id":.. or null,"error":".."} */
#ifndef EGM_REQUEST_H
#define EGM_REQUEST_H

#include <stddef.h>

#include "kernels/sampling.h"
#include "model/chat_template.h"
#include "base/err.h"
#include "model/tokenizer.h"

enum { EGM_MAX_STOP = 4, EGM_MAX_LOGPROBS = 20 };

typedef struct {
    char *id_json;        /* the "id" value re-serialised compactly, copied verbatim to outputs */
    char *prompt;         /* NULL if "tokens" given */
    int *tokens;          /* NULL if "prompt" given */
    int n_tokens;
    egm_chat_msg *messages; /* NULL unless "messages" given; strings malloc'd */
    int n_messages;
    char *stop[EGM_MAX_STOP]; /* malloc'd, non-empty; a line's "stop" replaces the defaults' */
    int n_stop;
    int logprobs;         /* -1: none; else top alternatives per generated token */
    egm_sampling sampling;
    int max_new_tokens;   /* >= 0 */
    int ignore_eos;       /* 0/1 */
    long lineno;
} egm_request;

/* Defaults before the command line: egm_sampling_default, max_new_tokens
 * 256, ignore_eos 0, no stop strings, logprobs -1. Only the scalar fields,
 * stop and logprobs are meaningful in defaults (stop strings are copied). */
void egm_request_defaults(egm_request *d);

/* Parses one line (len bytes; need not be NUL-terminated). origin (the input
 * file's name) and lineno prefix every message, e.g.
 *   in.jsonl:7: "tokens"[3]: expected a non-negative integer, found "x"
 * Token ids are only checked to be >= 0: the caller checks them against the
 * vocabulary. On failure out->id_json is still set when the line had a valid
 * id, so the caller can write an error record for it; call
 * egm_request_free in both cases. */
int egm_request_parse(const char *line, size_t len, long lineno,
                      const char *origin, const egm_request *defaults,
                      egm_request *out, egm_err *e);
void egm_request_free(egm_request *r);

/* ---- result lines: malloc'd, without the trailing newline; NULL only when
 * out of memory. id_json NULL writes "id":null. ---- */

typedef struct {
    int prompt_tokens;
    int generated_tokens;
    double ttft_ms;       /* time to first token */
    double total_ms;
    double queue_ms;      /* read from the input until admitted */
} egm_gen_stats;

/* text: text_len bytes of UTF-8 (NUL and control bytes are escaped; an
 * invalid sequence becomes U+FFFD); NULL omits "text". finish_reason:
 * "stop" or "length". stats NULL omits "stats". */
char *egm_result_generate(const char *id_json, const int *tokens, int n_tokens,
                          const char *text, size_t text_len,
                          const char *finish_reason,
                          const egm_gen_stats *stats);

/* Log-probs of generated tokens, from the raw model distribution (before
 * repetition penalty, temperature and truncation: vLLM's default). */
typedef struct {
    int id;
    float logprob;
} egm_tok_lp;
typedef struct {
    const float *logprob;      /* [n_tokens]: each generated token's */
    const egm_tok_lp *top;     /* [n_tokens * n_top]: most likely first */
    int n_top;
    const egm_tokenizer *tok;  /* each token's "text"; NULL: omitted */
} egm_gen_logprobs;
/* egm_result_generate plus "logprobs" (lp NULL: none). A token's "text" is
 * its own decoded bytes (a piece of a multi-byte character shows as U+FFFD);
 * -inf log-probs print as null. */
char *egm_result_generate_lp(const char *id_json, const int *tokens, int n_tokens,
                             const char *text, size_t text_len, const char *finish_reason,
                             const egm_gen_stats *stats, const egm_gen_logprobs *lp);
/* Floats print with 9 significant digits (round-trips a float); a
 * non-finite value (e.g. -inf) prints as null. */
char *egm_result_score(const char *id_json, const float *logprobs, int n);
char *egm_result_error(const char *id_json, const char *message);

#endif
