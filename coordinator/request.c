/* request.c - parsing request lines and building result lines (jansson). */
#include "request.h"

#include <float.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void egm_request_defaults(egm_request *d) {
    memset(d, 0, sizeof *d);
    egm_sampling_default(&d->sampling);
    d->max_new_tokens = 256;
    d->ignore_eos = 0;
    d->logprobs = -1;
}

static void free_messages(egm_request *r) {
    for (int i = 0; i < r->n_messages; i++) {
        free((char *)r->messages[i].role);
        free((char *)r->messages[i].content);
    }
    free(r->messages);
    r->messages = NULL;
    r->n_messages = 0;
}

static void free_stop(egm_request *r) {
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    r->n_stop = 0;
}

void egm_request_free(egm_request *r) {
    if (!r) return;
    free(r->id_json);
    free(r->prompt);
    free(r->tokens);
    free_messages(r);
    free_stop(r);
    r->id_json = r->prompt = NULL;
    r->tokens = NULL;
    r->n_tokens = 0;
}

/* ---- describing what was found, for messages ---- */

/* Cuts s to at most max bytes on a UTF-8 character boundary, adding "...". */
static void clip(char *s, size_t max) {
    size_t n = strlen(s);
    if (n <= max) return;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80) max--;
    strcpy(s + max, "...");
}

/* A short rendering of a JSON value: scalars as written, containers by kind. */
static void describe(const json_t *v, char *buf, size_t n) {
    if (json_is_object(v)) { snprintf(buf, n, "an object"); return; }
    if (json_is_array(v)) {
        snprintf(buf, n, json_array_size(v) ? "an array" : "an empty array");
        return;
    }
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(9));
    snprintf(buf, n, "%s", s ? s : "?");
    free(s);
    clip(buf, n > 48 ? 44 : n - 4);
}

/* A key as it would be written in JSON (quoted, escaped, clipped). */
static void quote_key(const char *key, char *buf, size_t n) {
    json_t *s = json_string(key);
    describe(s, buf, n);
    json_decref(s);
}

/* ---- per-field readers; each fails with "origin:line: "key": ..." ---- */

typedef struct {
    const char *origin;
    long lineno;
    egm_err *e;
} ctx;

static int bad(const ctx *c, const char *key, const char *expected,
               const json_t *found) {
    char f[64];
    describe(found, f, sizeof f);
    return egm_fail(c->e, "%s:%ld: \"%s\": expected %s, found %s", c->origin,
                    c->lineno, key, expected, f);
}

static int read_int(const ctx *c, const char *key, const json_t *v,
                    long long lo, long long hi, const char *expected,
                    long long *out) {
    if (!json_is_integer(v)) return bad(c, key, expected, v);
    long long x = json_integer_value(v);
    if (x < lo || x > hi) return bad(c, key, expected, v);
    *out = x;
    return 0;
}

static int read_float(const ctx *c, const char *key, const json_t *v,
                      float *out) {
    if (!json_is_number(v)) return bad(c, key, "a number", v);
    double x = json_number_value(v);
    if (!isfinite(x) || fabs(x) > FLT_MAX)
        return bad(c, key, "a finite number within float range", v);
    *out = (float)x;
    return 0;
}

static const char *const known_keys[] = {
    "id", "prompt", "tokens", "max_new_tokens", "temperature", "top_k",
    "top_p", "min_p", "repetition_penalty", "seed", "ignore_eos", "messages",
    "stop", "logprobs", NULL,
};

static int check_keys(const ctx *c, json_t *obj) {
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        int ok = 0;
        for (int i = 0; known_keys[i]; i++)
            if (!strcmp(key, known_keys[i])) { ok = 1; break; }
        if (ok) continue;
        char q[64];
        quote_key(key, q, sizeof q);
        return egm_fail(c->e, "%s:%ld: unknown key %s (expected id, prompt, "
                        "tokens, messages, max_new_tokens, temperature, top_k, "
                        "top_p, min_p, repetition_penalty, seed, ignore_eos, stop, "
                        "logprobs)",
                        c->origin, c->lineno, q);
    }
    return 0;
}

static int read_id(const ctx *c, json_t *obj, egm_request *out) {
    json_t *v = json_object_get(obj, "id");
    if (!v)
        return egm_fail(c->e, "%s:%ld: missing \"id\" (a string or an integer)",
                        c->origin, c->lineno);
    if (!json_is_string(v) && !json_is_integer(v))
        return bad(c, "id", "a string or an integer", v);
    out->id_json = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (!out->id_json)
        return egm_fail(c->e, "%s:%ld: out of memory", c->origin, c->lineno);
    return 0;
}

static int read_tokens(const ctx *c, const json_t *v, egm_request *out) {
    if (!json_is_array(v) || json_array_size(v) == 0)
        return bad(c, "tokens", "a non-empty array of token ids", v);
    size_t n = json_array_size(v);
    if (n > INT_MAX)
        return egm_fail(c->e, "%s:%ld: \"tokens\": too many tokens (%zu)",
                        c->origin, c->lineno, n);
    out->tokens = malloc(n * sizeof *out->tokens);
    if (!out->tokens)
        return egm_fail(c->e, "%s:%ld: out of memory", c->origin, c->lineno);
    for (size_t i = 0; i < n; i++) {
        const json_t *t = json_array_get(v, i);
        if (!json_is_integer(t) || json_integer_value(t) < 0 ||
            json_integer_value(t) > INT_MAX) {
            char f[64];
            describe(t, f, sizeof f);
            return egm_fail(c->e, "%s:%ld: \"tokens\"[%zu]: expected a "
                            "non-negative integer, found %s", c->origin,
                            c->lineno, i, f);
        }
        out->tokens[i] = (int)json_integer_value(t);
    }
    out->n_tokens = (int)n;
    return 0;
}

/* A sampling field changed: the merged parameters must still be valid. */
static int check_sampling(const ctx *c, const char *key, const json_t *v,
                          const egm_sampling *s) {
    const char *why = egm_sampling_check(s);
    if (!why) return 0;
    /* The check's message starts with the field's name: say it once. */
    size_t k = strlen(key);
    if (!strncmp(why, key, k) && !strncmp(why + k, ": ", 2)) why += k + 2;
    char f[64];
    describe(v, f, sizeof f);
    return egm_fail(c->e, "%s:%ld: \"%s\": %s, found %s", c->origin, c->lineno,
                    key, why, f);
}

/* A message's content: a string, or a list of {"type": "text", "text"}
 * parts, joined (OpenAI's two shapes). *out is malloc'd. */
static int read_content(const ctx *c, const char *key, const json_t *v, char **out) {
    if (json_is_string(v)) {
        *out = strdup(json_string_value(v));
        return *out ? 0 : egm_fail(c->e, "%s:%ld: out of memory", c->origin, c->lineno);
    }
    if (!json_is_array(v)) return bad(c, key, "a string or a list of text parts", v);
    size_t n = 0, i;
    json_t *p;
    json_array_foreach(v, i, p) {
        json_t *type = json_object_get(p, "type"), *text = json_object_get(p, "text");
        if (!json_is_object(p) || !json_is_string(type) || strcmp(json_string_value(type), "text") ||
            !json_is_string(text)) {
            char k[96];
            snprintf(k, sizeof k, "%s[%zu]", key, i);
            return bad(c, k, "a part {\"type\": \"text\", \"text\": \"...\"}", p);
        }
        n += json_string_length(text);
    }
    *out = malloc(n + 1);
    if (!*out) return egm_fail(c->e, "%s:%ld: out of memory", c->origin, c->lineno);
    n = 0;
    json_array_foreach(v, i, p) {
        json_t *text = json_object_get(p, "text");
        memcpy(*out + n, json_string_value(text), json_string_length(text));
        n += json_string_length(text);
    }
    (*out)[n] = '\0';
    return 0;
}

static int read_messages(const ctx *c, const json_t *v, egm_request *out) {
    if (!json_is_array(v) || json_array_size(v) == 0)
        return bad(c, "messages", "a non-empty array of {\"role\", \"content\"}", v);
    size_t n = json_array_size(v);
    if (n > INT_MAX)
        return egm_fail(c->e, "%s:%ld: \"messages\": too many", c->origin, c->lineno);
    out->messages = calloc(n, sizeof *out->messages);
    if (!out->messages) return egm_fail(c->e, "%s:%ld: out of memory", c->origin, c->lineno);
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(v, i), *role, *content, *x;
        char k[64];
        snprintf(k, sizeof k, "messages[%zu]", i);
        if (!json_is_object(m)) return bad(c, k, "an object {\"role\", \"content\"}", m);
        const char *key;
        json_object_foreach(m, key, x) {
            if (strcmp(key, "role") && strcmp(key, "content") && strcmp(key, "name")) {
                char q[64];
                quote_key(key, q, sizeof q);
                return egm_fail(c->e, "%s:%ld: \"%s\": unknown key %s (expected role, content, "
                                "name)", c->origin, c->lineno, k, q);
            }
        }
        role = json_object_get(m, "role");
        content = json_object_get(m, "content");
        snprintf(k, sizeof k, "messages[%zu].role", i);
        if (!json_is_string(role) || (strcmp(json_string_value(role), "system") &&
                                      strcmp(json_string_value(role), "user") &&
                                      strcmp(json_string_value(role), "assistant")))
            return bad(c, k, "\"system\", \"user\" or \"assistant\"", role ? role : json_null());
        snprintf(k, sizeof k, "messages[%zu].content", i);
        if (!content) return bad(c, k, "a string", json_null());
        char *text = NULL;
        if (read_content(c, k, content, &text)) return -1;
        out->messages[i].content = text;
        out->messages[i].role = strdup(json_string_value(role));
        out->n_messages = (int)i + 1;
        if (!out->messages[i].role)
            return egm_fail(c->e, "%s:%ld: out of memory", c->origin, c->lineno);
    }
    return 0;
}

/* "stop": a string or a list of up to EGM_MAX_STOP; replaces the defaults. */
static int read_stop(const ctx *c, const json_t *v, egm_request *out) {
    const char *expected = "a non-empty string or a list of 1 to 4 of them";
    size_t n = json_is_array(v) ? json_array_size(v) : 1;
    if (!(json_is_string(v) || json_is_array(v)) || n == 0 || n > EGM_MAX_STOP)
        return bad(c, "stop", expected, v);
    free_stop(out);
    for (size_t i = 0; i < n; i++) {
        const json_t *s = json_is_array(v) ? json_array_get(v, i) : v;
        if (!json_is_string(s) || json_string_length(s) == 0) return bad(c, "stop", expected, v);
        if (strlen(json_string_value(s)) != json_string_length(s))
            return bad(c, "stop", "strings without NUL characters", v);
        out->stop[out->n_stop] = strdup(json_string_value(s));
        if (!out->stop[out->n_stop])
            return egm_fail(c->e, "%s:%ld: out of memory", c->origin, c->lineno);
        out->n_stop++;
    }
    return 0;
}

static int read_fields(const ctx *c, json_t *obj, egm_request *out) {
    json_t *prompt = json_object_get(obj, "prompt");
    json_t *tokens = json_object_get(obj, "tokens");
    json_t *messages = json_object_get(obj, "messages");
    if (json_is_null(prompt)) prompt = NULL;
    if (json_is_null(tokens)) tokens = NULL;
    if (json_is_null(messages)) messages = NULL;
    int given = !!prompt + !!tokens + !!messages;
    if (given > 1)
        return egm_fail(c->e, "%s:%ld: %s given; expected exactly one of \"prompt\", "
                        "\"tokens\", \"messages\"", c->origin, c->lineno,
                        given == 3 ? "\"prompt\", \"tokens\" and \"messages\""
                        : !messages ? "both \"prompt\" and \"tokens\""
                        : prompt ? "both \"prompt\" and \"messages\""
                        : "both \"tokens\" and \"messages\"");
    if (!given)
        return egm_fail(c->e, "%s:%ld: neither \"prompt\", \"tokens\" nor \"messages\" "
                        "given; expected exactly one", c->origin, c->lineno);
    if (messages) {
        if (read_messages(c, messages, out) < 0) return -1;
    } else if (prompt) {
        if (!json_is_string(prompt)) return bad(c, "prompt", "a string", prompt);
        out->prompt = strdup(json_string_value(prompt));
        if (!out->prompt)
            return egm_fail(c->e, "%s:%ld: out of memory", c->origin, c->lineno);
    } else if (read_tokens(c, tokens, out) < 0) {
        return -1;
    }

    json_t *v;
    long long x;
    if ((v = json_object_get(obj, "max_new_tokens")) && !json_is_null(v)) {
        if (read_int(c, "max_new_tokens", v, 0, INT_MAX,
                     "a non-negative integer", &x) < 0)
            return -1;
        out->max_new_tokens = (int)x;
    }
    if ((v = json_object_get(obj, "ignore_eos")) && !json_is_null(v)) {
        if (!json_is_boolean(v)) return bad(c, "ignore_eos", "true or false", v);
        out->ignore_eos = json_is_true(v);
    }
    if ((v = json_object_get(obj, "stop")) && !json_is_null(v) && read_stop(c, v, out) < 0)
        return -1;
    if ((v = json_object_get(obj, "logprobs")) && !json_is_null(v)) {
        if (read_int(c, "logprobs", v, 0, EGM_MAX_LOGPROBS, "an integer from 0 to 20", &x) < 0)
            return -1;
        out->logprobs = (int)x;
    }
    if ((v = json_object_get(obj, "seed")) && !json_is_null(v)) {
        if (read_int(c, "seed", v, 0, LLONG_MAX, "a non-negative integer",
                     &x) < 0)
            return -1;
        out->sampling.seed = (uint64_t)x;
    }

    egm_sampling *s = &out->sampling;
    struct { const char *key; float *dst; } floats[] = {
        {"temperature", &s->temperature},
        {"top_p", &s->top_p},
        {"min_p", &s->min_p},
        {"repetition_penalty", &s->repetition_penalty},
    };
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++) {
        v = json_object_get(obj, floats[i].key);
        if (!v || json_is_null(v)) continue;
        if (read_float(c, floats[i].key, v, floats[i].dst) < 0 ||
            check_sampling(c, floats[i].key, v, s) < 0)
            return -1;
    }
    if ((v = json_object_get(obj, "top_k")) && !json_is_null(v)) {
        if (read_int(c, "top_k", v, INT_MIN, INT_MAX, "an integer", &x) < 0)
            return -1;
        s->top_k = (int)x;
        if (check_sampling(c, "top_k", v, s) < 0) return -1;
    }
    return 0;
}

int egm_request_parse(const char *line, size_t len, long lineno,
                      const char *origin, const egm_request *defaults,
                      egm_request *out, egm_err *e) {
    ctx c = {origin ? origin : "<input>", lineno, e};
    memset(out, 0, sizeof *out);
    out->sampling = defaults->sampling;
    out->max_new_tokens = defaults->max_new_tokens;
    out->ignore_eos = defaults->ignore_eos;
    out->logprobs = defaults->logprobs;
    out->lineno = lineno;
    for (int i = 0; i < defaults->n_stop; i++) {
        if (!(out->stop[i] = strdup(defaults->stop[i]))) return egm_fail(e, "out of memory");
        out->n_stop = i + 1;
    }

    /* Defaults come from the command line: a bad one is blamed there. */
    const char *why = egm_sampling_check(&defaults->sampling);
    if (why) return egm_fail(e, "default sampling parameters: %s", why);

    json_error_t jerr;
    json_t *obj = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY,
                             &jerr);
    if (!obj)
        return egm_fail(e, "%s:%ld: invalid JSON at column %d: %s", c.origin,
                        lineno, jerr.column, jerr.text);
    int rc = -1;
    if (!json_is_object(obj)) {
        char f[64];
        describe(obj, f, sizeof f);
        egm_fail(e, "%s:%ld: expected a JSON object, found %s", c.origin,
                 lineno, f);
    } else if (read_id(&c, obj, out) == 0 && check_keys(&c, obj) == 0 &&
               read_fields(&c, obj, out) == 0) {
        rc = 0;
    }
    json_decref(obj);
    if (rc < 0) {
        /* Keep only the id, for the caller's error record. */
        free(out->prompt);
        free(out->tokens);
        free_messages(out);
        free_stop(out);
        out->prompt = NULL;
        out->tokens = NULL;
        out->n_tokens = 0;
    }
    return rc;
}

/* ---- result lines ---- */

/* Copies s[0..n) replacing each invalid UTF-8 byte with U+FFFD. */
static char *utf8_repair(const char *s, size_t n, size_t *out_n) {
    char *o = malloc(n * 3 + 1);
    if (!o) return NULL;
    size_t j = 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        size_t k = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2
                 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        int ok = k > 0 && i + k <= n;
        for (size_t t = 1; ok && t < k; t++) ok = (u[i + t] & 0xC0) == 0x80;
        if (ok && k == 3) {   /* no overlongs, no surrogates */
            ok = !(c == 0xE0 && u[i + 1] < 0xA0) && !(c == 0xED && u[i + 1] >= 0xA0);
        } else if (ok && k == 4) {  /* no overlongs, nothing past U+10FFFF */
            ok = !(c == 0xF0 && u[i + 1] < 0x90) && !(c == 0xF4 && u[i + 1] >= 0x90);
        }
        if (ok) {
            memcpy(o + j, s + i, k);
            j += k;
            i += k;
        } else {
            memcpy(o + j, "\xEF\xBF\xBD", 3);
            j += 3;
            i++;
        }
    }
    o[j] = '\0';
    *out_n = j;
    return o;
}

static json_t *real_or_null(double x) {
    return isfinite(x) ? json_real(x) : json_null();
}

/* Dumps body and puts "id":<id_json> in front of its keys, byte for byte. */
static char *with_id(const char *id_json, json_t *body) {
    if (!body) return NULL;
    char *rest = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(body);
    if (!rest) return NULL;
    const char *id = id_json ? id_json : "null";
    int empty = strcmp(rest, "{}") == 0;
    size_t n = strlen(id) + strlen(rest) + 16;
    char *s = malloc(n);
    if (s) snprintf(s, n, "{\"id\":%s%s%s", id, empty ? "}" : ",", rest + 1);
    free(rest);
    return s;
}

/* A UTF-8 string value, invalid bytes repaired (never dropped). */
static json_t *text_value(const char *text, size_t n) {
    json_t *t = json_stringn(text, n);
    if (t) return t;
    size_t m;
    char *fixed = utf8_repair(text, n, &m);
    t = fixed ? json_stringn(fixed, m) : NULL;
    free(fixed);
    return t;
}

/* {"token": id, "text": "..", "logprob": x} */
static json_t *token_lp(const egm_tokenizer *tok, int id, float logprob) {
    json_t *o = json_object();
    json_object_set_new(o, "token", json_integer(id));
    if (tok) {
        char *s = egm_tok_decode(tok, &id, 1, 0);
        json_object_set_new(o, "text", s ? text_value(s, strlen(s)) : json_null());
        free(s);
    }
    json_object_set_new(o, "logprob", real_or_null((double)logprob));
    return o;
}

static json_t *logprobs_array(const int *tokens, int n, const egm_gen_logprobs *lp) {
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) {
        json_t *e = token_lp(lp->tok, tokens[i], lp->logprob[i]), *top = json_array();
        for (int j = 0; j < lp->n_top; j++) {
            const egm_tok_lp *t = &lp->top[(size_t)i * lp->n_top + j];
            if (t->id >= 0) json_array_append_new(top, token_lp(lp->tok, t->id, t->logprob));
        }
        json_object_set_new(e, "top", top);
        json_array_append_new(arr, e);
    }
    return arr;
}

char *egm_result_generate(const char *id_json, const int *tokens, int n_tokens,
                          const char *text, size_t text_len,
                          const char *finish_reason,
                          const egm_gen_stats *stats) {
    return egm_result_generate_lp(id_json, tokens, n_tokens, text, text_len, finish_reason,
                                  stats, NULL);
}

char *egm_result_generate_lp(const char *id_json, const int *tokens, int n_tokens,
                             const char *text, size_t text_len, const char *finish_reason,
                             const egm_gen_stats *stats, const egm_gen_logprobs *lp) {
    json_t *o = json_object(), *arr = json_array();
    if (!o || !arr) { json_decref(o); json_decref(arr); return NULL; }
    for (int i = 0; i < n_tokens; i++)
        json_array_append_new(arr, json_integer(tokens[i]));
    json_object_set_new(o, "tokens", arr);
    if (text) {
        json_t *t = text_value(text, text_len);  /* invalid UTF-8 repaired, not dropped */
        if (!t) { json_decref(o); return NULL; }
        json_object_set_new(o, "text", t);
    }
    if (finish_reason)
        json_object_set_new(o, "finish_reason", json_string(finish_reason));
    if (lp) json_object_set_new(o, "logprobs", logprobs_array(tokens, n_tokens, lp));
    if (stats) {
        json_t *st = json_object();
        json_object_set_new(st, "prompt_tokens", json_integer(stats->prompt_tokens));
        json_object_set_new(st, "generated_tokens", json_integer(stats->generated_tokens));
        json_object_set_new(st, "ttft_ms", real_or_null(stats->ttft_ms));
        json_object_set_new(st, "total_ms", real_or_null(stats->total_ms));
        json_object_set_new(st, "queue_ms", real_or_null(stats->queue_ms));
        json_object_set_new(o, "stats", st);
    }
    return with_id(id_json, o);
}

char *egm_result_score(const char *id_json, const float *logprobs, int n) {
    json_t *o = json_object(), *arr = json_array();
    if (!o || !arr) { json_decref(o); json_decref(arr); return NULL; }
    for (int i = 0; i < n; i++)
        json_array_append_new(arr, real_or_null((double)logprobs[i]));
    json_object_set_new(o, "logprobs", arr);
    return with_id(id_json, o);
}

char *egm_result_error(const char *id_json, const char *message) {
    json_t *o = json_object();
    if (!o) return NULL;
    json_t *t = text_value(message, strlen(message));
    if (!t) { json_decref(o); return NULL; }
    json_object_set_new(o, "error", t);
    return with_id(id_json, o);
}
