/* serve_api.c - the OpenAI API's JSON to egmla request lines and back.
 *
 * A request becomes the line generate would read ({"id", "prompt" |
 * "tokens" | "messages", "max_new_tokens", sampling fields, ...}); fields
 * the line format checks (ranges, unknown keys) are checked there, by the
 * same code as for batch jobs, and a refusal comes back as a 400. Here we
 * only check what the API itself defines: types, the model's name, n = 1. */
#include "coordinator/serve.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

json_t *srv_api_error(const char *msg, const char *type, const char *param, const char *code) {
    return json_pack("{s:{s:s, s:s, s:s?, s:s?}}", "error", "message", msg, "type", type,
                     "param", param, "code", code);
}

static int bad(json_t **err, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad(json_t **err, const char *param, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    *err = srv_api_error(msg, "invalid_request_error", param, NULL);
    return 400;
}

/* A field given as null counts as absent, as in request lines. */
static json_t *field(json_t *body, const char *key) {
    json_t *v = json_object_get(body, key);
    return json_is_null(v) ? NULL : v;
}

static int is_token_array(const json_t *a) {
    size_t i;
    json_t *v;
    if (!json_is_array(a) || !json_array_size(a)) return 0;
    json_array_foreach(a, i, v) if (!json_is_integer(v)) return 0;
    return 1;
}

/* prompt: a string, token ids, or a list of one of either. */
static int read_prompt(srv *s, json_t *body, json_t *line, srv_call *c, json_t **err) {
    json_t *p = field(body, "prompt");
    if (json_is_array(p) && json_array_size(p) == 1 &&
        (json_is_string(json_array_get(p, 0)) || json_is_array(json_array_get(p, 0))))
        p = json_array_get(p, 0);
    if (json_is_string(p)) {
        json_object_set(line, "prompt", p);
        if (c->echo) c->prompt_text = strdup(json_string_value(p));
    } else if (is_token_array(p)) {
        json_object_set(line, "tokens", p);
        if (c->echo && s->tok) {
            size_t n = json_array_size(p);
            int *ids = malloc(sizeof(int) * n);
            for (size_t i = 0; ids && i < n; i++) {
                long long t = json_integer_value(json_array_get(p, i));
                ids[i] = t >= 0 && t < s->vocab ? (int)t : 0;
            }
            c->prompt_text = ids ? egm_tok_decode(s->tok, ids, (int)n, 1) : NULL;
            free(ids);
        }
    } else if (json_is_array(p) && json_array_size(p) > 1) {
        return bad(err, "prompt", "\"prompt\": one prompt per request (n = 1); send a list "
                   "of prompts as separate requests");
    } else {
        return bad(err, "prompt", "\"prompt\": expected a string or an array of token ids");
    }
    return 0;
}

static int read_messages(json_t *body, json_t *line, json_t **err) {
    json_t *m = field(body, "messages");
    size_t i;
    json_t *v;
    if (!json_is_array(m) || !json_array_size(m))
        return bad(err, "messages", "\"messages\": expected a non-empty array of messages");
    json_array_foreach(m, i, v) {
        if (!json_is_object(v) || !json_is_string(json_object_get(v, "role")))
            return bad(err, "messages", "\"messages\"[%zu]: expected an object with a "
                       "\"role\" string", i);
    }
    json_object_set(line, "messages", m);
    return 0;
}

/* Numeric fields: the API's name, the line's, integer or not. */
static const struct {
    const char *api, *line;
    int integer;
} numbers[] = {
    {"max_tokens", "max_new_tokens", 1}, {"max_completion_tokens", "max_new_tokens", 1},
    {"temperature", "temperature", 0},  {"top_p", "top_p", 0},
    {"top_k", "top_k", 1},              {"min_p", "min_p", 0},
    {"repetition_penalty", "repetition_penalty", 0}, {"seed", "seed", 1},
};

static int read_numbers(json_t *body, json_t *line, json_t **err) {
    for (size_t i = 0; i < sizeof numbers / sizeof *numbers; i++) {
        json_t *v = field(body, numbers[i].api);
        if (!v) continue;
        if (numbers[i].integer ? !json_is_integer(v) : !json_is_number(v))
            return bad(err, numbers[i].api, "\"%s\": expected %s", numbers[i].api,
                       numbers[i].integer ? "an integer" : "a number");
        json_object_set(line, numbers[i].line, v);
    }
    static const char *const zero_only[] = {"presence_penalty", "frequency_penalty"};
    for (size_t i = 0; i < 2; i++) {
        json_t *v = field(body, zero_only[i]);
        if (v && (!json_is_number(v) || json_number_value(v) != 0))
            return bad(err, zero_only[i], "\"%s\": not supported (only 0); use "
                       "\"repetition_penalty\"", zero_only[i]);
    }
    json_t *n = field(body, "n");
    if (n && (!json_is_integer(n) || json_integer_value(n) != 1))
        return bad(err, "n", "\"n\": only 1 is supported");
    return 0;
}

static int read_bool(json_t *body, const char *key, int *out, json_t **err) {
    json_t *v = field(body, key);
    if (v && !json_is_boolean(v)) return bad(err, key, "\"%s\": expected true or false", key);
    *out = json_is_true(v);
    return 0;
}

/* stop: a string or an array of strings, handed to the line as an array. */
static int read_stop(json_t *body, json_t *line, srv_call *c, json_t **err) {
    json_t *v = field(body, "stop");
    if (!v) return 0;
    json_t *arr = json_is_string(v) ? json_pack("[O]", v) : json_incref(v);
    size_t i;
    json_t *x;
    int okay = json_is_array(arr);
    json_array_foreach(arr, i, x) if (!json_is_string(x)) okay = 0;
    if (!okay) {
        json_decref(arr);
        return bad(err, "stop", "\"stop\": expected a string or an array of strings");
    }
    if (json_array_size(arr)) json_object_set(line, "stop", arr);
    c->stop = arr;
    return 0;
}

/* logprobs: completions give an integer (top N), chat a boolean plus
 * top_logprobs; both become the line's "logprobs": N. */
static int read_logprobs(int chat, json_t *body, json_t *line, json_t **err) {
    json_t *v = field(body, "logprobs");
    if (!v) return 0;
    long long n;
    if (chat) {
        if (!json_is_boolean(v)) return bad(err, "logprobs", "\"logprobs\": expected true or false");
        if (!json_is_true(v)) return 0;
        json_t *t = field(body, "top_logprobs");
        if (t && !json_is_integer(t))
            return bad(err, "top_logprobs", "\"top_logprobs\": expected an integer");
        n = t ? json_integer_value(t) : 0;
    } else {
        if (!json_is_integer(v)) return bad(err, "logprobs", "\"logprobs\": expected an integer");
        n = json_integer_value(v);
    }
    json_object_set_new(line, "logprobs", json_integer(n));
    return 0;
}

int srv_api_parse(srv *s, int chat, json_t *body, long id, srv_call *c, json_t **err) {
    memset(c, 0, sizeof *c);
    c->chat = chat;
    json_t *model = field(body, "model");
    if (model && !json_is_string(model))
        return bad(err, "model", "\"model\": expected a string");
    if (model && strcmp(json_string_value(model), s->model_name)) {
        char msg[400];
        snprintf(msg, sizeof msg, "the model \"%.200s\" does not exist: this server serves \"%s\"",
                 json_string_value(model), s->model_name);
        *err = srv_api_error(msg, "invalid_request_error", "model", "model_not_found");
        return 404;
    }
    json_t *line = json_pack("{s:I}", "id", (json_int_t)id);
    int st = read_bool(body, "stream", &c->stream, err);
    if (!st && !chat) st = read_bool(body, "echo", &c->echo, err);
    if (!st) st = chat ? read_messages(body, line, err) : read_prompt(s, body, line, c, err);
    if (!st) st = read_numbers(body, line, err);
    if (!st) st = read_stop(body, line, c, err);
    if (!st) st = read_logprobs(chat, body, line, err);
    json_t *ie = field(body, "ignore_eos"); /* an extension, as in request lines */
    if (!st && ie) json_object_set(line, "ignore_eos", ie);
    if (!st) {
        c->line = json_dumps(line, JSON_COMPACT | JSON_REAL_PRECISION(17));
        if (!c->line) st = bad(err, NULL, "out of memory");
    }
    json_decref(line);
    if (st) srv_call_free(c);
    return st;
}

void srv_call_free(srv_call *c) {
    free(c->line);
    free(c->prompt_text);
    json_decref(c->stop);
    memset(c, 0, sizeof *c);
}

json_t *srv_api_usage(const json_t *result) {
    json_t *st = json_object_get(result, "stats");
    json_int_t p = json_integer_value(json_object_get(st, "prompt_tokens"));
    json_int_t g = json_integer_value(json_object_get(st, "generated_tokens"));
    if (!st) g = (json_int_t)json_array_size(json_object_get(result, "tokens"));
    return json_pack("{s:I, s:I, s:I}", "prompt_tokens", p, "completion_tokens", g,
                     "total_tokens", p + g);
}

static json_t *envelope(srv *s, const srv_call *c, long id, int chunk) {
    char sid[48];
    snprintf(sid, sizeof sid, "%s-%ld", c->chat ? "chatcmpl" : "cmpl", id);
    const char *object = c->chat ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                 : "text_completion";
    return json_pack("{s:s, s:s, s:I, s:s}", "id", sid, "object", object, "created",
                     (json_int_t)time(NULL), "model", s->model_name);
}

static json_t *bytes_of(const char *t) {
    json_t *a = json_array();
    for (const unsigned char *p = (const unsigned char *)t; *p; p++)
        json_array_append_new(a, json_integer(*p));
    return a;
}

/* The line's per-token log-probs ({"token", "text", "logprob", "top"}) as
 * the API puts them: completions' {"tokens", "token_logprobs",
 * "top_logprobs", "text_offset"}, chat's {"content": [...]}. Only tokens
 * whose text starts inside the returned text count: not the stop string's
 * nor an end-of-sequence token. Offsets start at `base` (an echoed
 * prompt's length). null when none were asked for. */
static json_t *logprobs_of(int chat, const json_t *result, size_t text_len, size_t base) {
    json_t *lp = json_object_get(result, "logprobs");
    if (!json_is_array(lp)) return json_null();
    json_t *toks = json_array(), *lps = json_array(), *tops = json_array(),
           *offs = json_array(), *content = json_array();
    size_t off = 0, i;
    json_t *e;
    json_array_foreach(lp, i, e) {
        const char *t = json_string_value(json_object_get(e, "text"));
        if (!t) t = "";
        if (off >= text_len && (i > 0 || text_len > 0)) break;
        json_t *l = json_object_get(e, "logprob"), *top = json_object_get(e, "top");
        json_t *top_map = json_object(), *top_list = json_array();
        size_t j;
        json_t *a;
        json_array_foreach(top, j, a) {
            const char *at = json_string_value(json_object_get(a, "text"));
            json_t *al = json_object_get(a, "logprob");
            json_object_set(top_map, at ? at : "", al);
            json_array_append_new(top_list, json_pack("{s:s, s:O, s:o}", "token", at ? at : "",
                                                      "logprob", al, "bytes", bytes_of(at ? at : "")));
        }
        json_array_append_new(toks, json_string(t));
        json_array_append(lps, l);
        json_array_append_new(tops, top_map);
        json_array_append_new(offs, json_integer((json_int_t)(base + off)));
        json_array_append_new(content, json_pack("{s:s, s:O, s:o, s:o}", "token", t, "logprob", l,
                                                 "bytes", bytes_of(t), "top_logprobs", top_list));
        off += strlen(t);
    }
    if (chat) {
        json_decref(toks);
        json_decref(lps);
        json_decref(tops);
        json_decref(offs);
        return json_pack("{s:o}", "content", content);
    }
    json_decref(content);
    return json_pack("{s:o, s:o, s:o, s:o}", "tokens", toks, "token_logprobs", lps,
                     "top_logprobs", tops, "text_offset", offs);
}

json_t *srv_api_response(srv *s, const srv_call *c, long id, const char *result, int *status) {
    json_t *res = result ? json_loads(result, 0, NULL) : NULL;
    if (!res || json_object_get(res, "error")) {
        const char *m = json_string_value(json_object_get(res, "error"));
        *status = res ? 400 : 500;
        json_t *e = srv_api_error(m ? m : "the server stopped before the request finished",
                                  res ? "invalid_request_error" : "server_error", NULL, NULL);
        json_decref(res);
        return e;
    }
    *status = 200;
    const char *text = json_string_value(json_object_get(res, "text"));
    const char *reason = json_string_value(json_object_get(res, "finish_reason"));
    if (!text) text = "";
    json_t *o = envelope(s, c, id, 0), *choice;
    if (c->chat) {
        choice = json_pack("{s:i, s:{s:s, s:s}, s:o, s:s?}", "index", 0, "message", "role",
                           "assistant", "content", text, "logprobs", logprobs_of(1, res, strlen(text), 0),
                           "finish_reason", reason);
    } else {
        size_t pl = c->echo && c->prompt_text ? strlen(c->prompt_text) : 0, tl = strlen(text);
        char *full = malloc(pl + tl + 1);
        if (full) {
            memcpy(full, c->echo && c->prompt_text ? c->prompt_text : "", pl);
            memcpy(full + pl, text, tl + 1);
        }
        choice = json_pack("{s:s?, s:i, s:o, s:s?}", "text", full, "index", 0, "logprobs",
                           logprobs_of(0, res, tl, pl), "finish_reason", reason);
        free(full);
    }
    json_object_set_new(o, "choices", json_pack("[o]", choice));
    json_object_set_new(o, "usage", srv_api_usage(res));
    json_decref(res);
    return o;
}

json_t *srv_api_chunk(srv *s, const srv_call *c, long id, const char *delta, size_t n,
                      const char *finish, int first, const json_t *lps, size_t offset) {
    json_t *text = json_stringn(delta, n);
    if (!text) return NULL; /* not valid UTF-8 yet */
    json_t *o = envelope(s, c, id, 1), *choice, *holder = json_pack("{s:O?}", "logprobs", lps);
    json_t *lp = logprobs_of(c->chat, holder, (size_t)-1, offset);
    json_decref(holder);
    if (c->chat) {
        json_t *d = json_object();
        if (first) json_object_set_new(d, "role", json_string("assistant"));
        if (n || !finish) json_object_set(d, "content", text);
        choice = json_pack("{s:i, s:o, s:o, s:s?}", "index", 0, "delta", d, "logprobs", lp,
                           "finish_reason", finish);
    } else {
        choice = json_pack("{s:O, s:i, s:o, s:s?}", "text", text, "index", 0, "logprobs", lp,
                           "finish_reason", finish);
    }
    json_decref(text);
    json_object_set_new(o, "choices", json_pack("[o]", choice));
    return o;
}
