/* chat_template.c - chat templates recognised by signature, rendered in C.
 *
 * Every supported template is one pass over the messages with a few
 * choices, so one renderer with a table of per-family settings covers them
 * all. The settings are read off the template text (e.g. "does it write
 * bos_token first", "does it drop an empty system message"); each choice is
 * pinned by a real published template in tests/fixtures/chat_templates. */
#include "chat_template.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gguf.h"

const char egm_chat_families[] = "chatml, llama3, llama3.1, llama2, mistral, gemma, phi3, zephyr";

/* How system messages are treated. */
enum {
    SYS_TURN,        /* a turn like any other */
    SYS_SKIP_EMPTY,  /* a turn, unless its content is empty (Phi-3.5) */
    SYS_DROP,        /* ignored (early Phi-3-mini) */
    SYS_MERGE_FIRST, /* messages[0] wrapped into the first turn (Llama-2) */
    SYS_HEADER,      /* messages[0] (or "") in a fixed header (Llama-3.1) */
};
enum { R_SYSTEM, R_USER, R_ASSISTANT };

/* In the strings below, \x01 writes bos_token and \x02 eos_token. */
typedef struct {
    const char *family;
    int bos_first;            /* bos_token before everything */
    int sys;                  /* SYS_* */
    const char *sys_wrap[2];  /* SYS_MERGE_FIRST / SYS_HEADER: around the system text */
    const char *pre[3], *suf[3]; /* per role; pre NULL: the role writes nothing */
    int trim;                 /* content | trim (Python's str.strip) */
    int alternate;            /* user/assistant must alternate, user first */
    const char *sys_error;    /* messages[0] is system: refused with this */
    const char *role_error;   /* a role with pre NULL: refused with this */
    const char *gen;          /* add_generation_prompt */
    int gen_always;           /* written whether asked or not */
    const char *no_gen;       /* written when add_generation_prompt is false */
} family;

struct egm_chat_template {
    family f;
    char *default_system;     /* chatml: the template's own system prompt */
    char *bos, *eos;
};

#define ALTERNATE_MSG "Conversation roles must alternate user/assistant/user/assistant/..."

static const family CHATML = {
    "chatml", 0, SYS_TURN, {0, 0},
    {"<|im_start|>system\n", "<|im_start|>user\n", "<|im_start|>assistant\n"},
    {"<|im_end|>\n", "<|im_end|>\n", "<|im_end|>\n"},
    0, 0, NULL, NULL, "<|im_start|>assistant\n", 0, ""};
#define L3H(r) "<|start_header_id|>" r "<|end_header_id|>\n\n"
static const family LLAMA3 = {
    "llama3", 1, SYS_TURN, {0, 0},
    {L3H("system"), L3H("user"), L3H("assistant")},
    {"<|eot_id|>", "<|eot_id|>", "<|eot_id|>"},
    1, 0, NULL, NULL, L3H("assistant"), 0, ""};
static const family LLAMA31 = {
    "llama3.1", 1, SYS_HEADER,
    {L3H("system") "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n", "<|eot_id|>"},
    {L3H("system"), L3H("user"), L3H("assistant")},
    {"<|eot_id|>", "<|eot_id|>", "<|eot_id|>"},
    1, 0, NULL, NULL, L3H("assistant"), 0, ""};
static const family LLAMA2 = {
    "llama2", 0, SYS_MERGE_FIRST, {"<<SYS>>\n", "\n<</SYS>>\n\n"},
    {NULL, "\x01[INST] ", " "}, {NULL, " [/INST]", " \x02"},
    1, 1, NULL, NULL, "", 0, ""};
static const family MISTRAL = {
    "mistral", 1, SYS_TURN, {0, 0},
    {NULL, "[INST] ", ""}, {NULL, " [/INST]", "\x02"},
    0, 1, NULL, "Only user and assistant roles are supported!", "", 0, ""};
static const family GEMMA = {
    "gemma", 1, SYS_TURN, {0, 0},
    {"<start_of_turn>system\n", "<start_of_turn>user\n", "<start_of_turn>model\n"},
    {"<end_of_turn>\n", "<end_of_turn>\n", "<end_of_turn>\n"},
    1, 1, "System role not supported", NULL, "<start_of_turn>model\n", 0, ""};
static const family PHI3 = {
    "phi3", 0, SYS_SKIP_EMPTY, {0, 0},
    {"<|system|>\n", "<|user|>\n", "<|assistant|>\n"},
    {"<|end|>\n", "<|end|>\n", "<|end|>\n"},
    0, 0, NULL, NULL, "<|assistant|>\n", 0, "\x02"};
static const family ZEPHYR = {
    "zephyr", 0, SYS_TURN, {0, 0},
    {"<|system|>\n", "<|user|>\n", "<|assistant|>\n"},
    {"\x02\n", "\x02\n", "\x02\n"},
    0, 0, NULL, NULL, "<|assistant|>\n", 0, ""};

static const family *const by_name[] = {&CHATML, &LLAMA3, &LLAMA31, &LLAMA2, &MISTRAL,
                                        &GEMMA, &PHI3, &ZEPHYR, NULL};

/* ---- recognising a template ---- */

static int has(const char *s, const char *needle) { return strstr(s, needle) != NULL; }

/* The template begins by writing bos_token. */
static int starts_with_bos(const char *s) {
    while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r') s++;
    return !strncmp(s, "{{ bos_token }}", 15) || !strncmp(s, "{{- bos_token }}", 16) ||
           !strncmp(s, "{{bos_token}}", 13);
}

/* ChatML templates may write a default system prompt when messages[0] is
 * not a system message: '<|im_start|>system\n' directly followed by text
 * (not by a closing quote and message content) up to <|im_end|>. Returns
 * that text with the Jinja string escapes undone, or NULL. */
static char *chatml_default_system(const char *s) {
    static const char *const heads[] = {"<|im_start|>system\\n", "<|im_start|>system\n"};
    for (int h = 0; h < 2; h++) {
        for (const char *p = strstr(s, heads[h]); p; p = strstr(p + 1, heads[h])) {
            const char *t = p + strlen(heads[h]);
            if (*t == '\'' || *t == '"') continue;
            const char *end = strstr(t, "<|im_end|>");
            if (!end) continue;
            char *out = malloc((size_t)(end - t) + 1), *o = out;
            if (!out) return NULL;
            for (const char *q = t; q < end; q++) {
                if (*q == '\\' && q + 1 < end) {
                    q++;
                    *o++ = *q == 'n' ? '\n' : *q == 't' ? '\t' : *q;
                } else {
                    *o++ = *q;
                }
            }
            *o = '\0';
            return out;
        }
    }
    return NULL;
}

/* The family whose signature s (escapes decoded) has; 0 if none. */
static int recognise_text(const char *s, family *f) {
    /* reasoning templates (<think>) rewrite assistant turns: not ours */
    if (has(s, "<think>")) return 0;
    if (has(s, "<|im_start|>") && has(s, "<|im_end|>")) {
        *f = CHATML;
        return 1;
    }
    if (has(s, "<|start_header_id|>") && has(s, "<|eot_id|>")) {
        if (has(s, "Cutting Knowledge Date")) {
            /* 3.2 and later date the prompt with today's date: not reproducible */
            if (has(s, "strftime_now") || !has(s, "date_string = \"26 Jul 2024\"")) return 0;
            *f = LLAMA31;
            return 1;
        }
        *f = LLAMA3;
        f->gen_always = !has(s, "add_generation_prompt");
        return 1;
    }
    if (has(s, "[INST]") && has(s, "<<SYS>>")) {
        *f = LLAMA2;
        return has(s, "bos_token + '[INST] '");
    }
    if (has(s, "[INST]")) {
        /* later Mistral templates move the system prompt and add tools */
        if (has(s, "[AVAILABLE_TOOLS]") || has(s, "[SYSTEM_PROMPT]") || has(s, "system_message"))
            return 0;
        *f = MISTRAL;
        f->bos_first = starts_with_bos(s);
        if (has(s, "eos_token + ' '")) f->suf[R_ASSISTANT] = "\x02 ";
        return 1;
    }
    if (has(s, "<start_of_turn>") && has(s, "<end_of_turn>")) {
        /* Gemma 3 takes content as a list of parts and merges the system */
        if (has(s, "first_user_prefix")) return 0;
        *f = GEMMA;
        f->bos_first = starts_with_bos(s);
        return 1;
    }
    if (has(s, "<|end|>") && has(s, "<|user|>") && has(s, "<|assistant|>")) {
        *f = PHI3;
        f->bos_first = starts_with_bos(s);
        if (has(s, "'<|end|>' + '\n' + '<|assistant|>' + '\n'")) {
            /* early Phi-3-mini: a user turn opens the assistant's; no system */
            f->sys = SYS_DROP;
            f->pre[R_SYSTEM] = NULL;
            f->suf[R_USER] = "<|end|>\n<|assistant|>\n";
            f->pre[R_ASSISTANT] = "";
            f->gen = "";
            f->no_gen = "";
            return 1;
        }
        if (!has(s, "'system' and message['content']")) f->sys = SYS_TURN;
        if (!has(s, "{{ eos_token }}")) f->no_gen = "";
        return 1;
    }
    if (has(s, "<|user|>") && has(s, "<|assistant|>") && has(s, "eos_token") &&
        has(s, "loop.last and add_generation_prompt")) {
        *f = ZEPHYR;
        return 1;
    }
    return 0;
}

/* Fills f from the template text; 0 when no family matches. Signatures
 * are written with "\n" as a newline: the text is matched with its Jinja
 * escapes \n decoded (GGUF files store templates decoded, JSON ones not). */
static int recognise(const char *raw, family *f, char **default_system) {
    char *s = strdup(raw), *o = s;
    if (!s) return 0;
    for (const char *p = raw; *p; p++) {
        if (p[0] == '\\' && p[1] == 'n') {
            *o++ = '\n';
            p++;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    int ok = recognise_text(s, f);
    free(s);
    *default_system = ok && !strcmp(f->family, "chatml") ? chatml_default_system(raw) : NULL;
    return ok;
}

static egm_chat_template *make(const family *f, char *default_system, const char *bos,
                               const char *eos) {
    egm_chat_template *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->f = *f;
    t->default_system = default_system;
    t->bos = strdup(bos ? bos : "");
    t->eos = strdup(eos ? eos : "");
    if (!t->bos || !t->eos) {
        egm_chat_template_free(t);
        return NULL;
    }
    return t;
}

int egm_chat_template_parse(const char *src, const char *origin, const char *bos,
                            const char *eos, egm_chat_template **out, egm_err *e) {
    family f;
    char *ds;
    *out = NULL;
    if (!recognise(src, &f, &ds))
        return egm_fail(e, "%s: the chat template is not one egmla can render (families: %s); "
                        "give --chat-template NAME (one of those) or --chat-template FILE",
                        origin, egm_chat_families);
    *out = make(&f, ds, bos, eos);
    if (!*out) {
        free(ds);
        return egm_fail(e, "out of memory");
    }
    return 0;
}

void egm_chat_template_free(egm_chat_template *t) {
    if (!t) return;
    free(t->default_system);
    free(t->bos);
    free(t->eos);
    free(t);
}

const char *egm_chat_template_family(const egm_chat_template *t) { return t->f.family; }

/* ---- rendering ---- */

typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { b->oom = 1; return; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

/* Writes a table string, expanding \x01 (bos) and \x02 (eos). */
static void put_fixed(sbuf *b, const egm_chat_template *t, const char *s) {
    for (; *s; s++) {
        if (*s == '\x01') put(b, t->bos, strlen(t->bos));
        else if (*s == '\x02') put(b, t->eos, strlen(t->eos));
        else put(b, s, 1);
    }
}

/* Length of the UTF-8 whitespace character at s (Python's str.isspace), or 0. */
static int space_at(const unsigned char *s, size_t n) {
    if (n >= 1 && ((s[0] >= 0x09 && s[0] <= 0x0D) || (s[0] >= 0x1C && s[0] <= 0x20))) return 1;
    if (n >= 2 && s[0] == 0xC2 && (s[1] == 0x85 || s[1] == 0xA0)) return 2;
    if (n >= 3 && s[0] == 0xE1 && s[1] == 0x9A && s[2] == 0x80) return 3;   /* U+1680 */
    if (n >= 3 && s[0] == 0xE2 && s[1] == 0x80 &&
        (s[2] <= 0x8A || s[2] == 0xA8 || s[2] == 0xA9 || s[2] == 0xAF)) return 3;
    if (n >= 3 && s[0] == 0xE2 && s[1] == 0x81 && s[2] == 0x9F) return 3;   /* U+205F */
    if (n >= 3 && s[0] == 0xE3 && s[1] == 0x80 && s[2] == 0x80) return 3;   /* U+3000 */
    return 0;
}

/* The last character of s[0..n) starts at the returned offset. */
static size_t last_char(const unsigned char *s, size_t n) {
    size_t i = n - 1;
    while (i > 0 && (s[i] & 0xC0) == 0x80 && n - i < 4) i--;
    return i;
}

/* Python's str.strip(): whitespace characters off both ends. */
static void put_trimmed(sbuf *b, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t lo = 0, hi = n;
    int k;
    while (lo < hi && (k = space_at(u + lo, hi - lo)) > 0) lo += (size_t)k;
    while (hi > lo) {
        size_t c = last_char(u, hi);
        if (c < lo || space_at(u + c, hi - c) != (int)(hi - c)) break;
        hi = c;
    }
    put(b, s + lo, hi - lo);
}

static int role_of(const char *r) {
    return !strcmp(r, "system") ? R_SYSTEM : !strcmp(r, "user") ? R_USER
         : !strcmp(r, "assistant") ? R_ASSISTANT : -1;
}

/* One message's turn. content may be the system text merged with the
 * message's own (SYS_MERGE_FIRST). */
static void put_turn(sbuf *b, const egm_chat_template *t, int r, const char *content, size_t n) {
    put_fixed(b, t, t->f.pre[r]);
    if (t->f.trim) put_trimmed(b, content, n);
    else put(b, content, n);
    put_fixed(b, t, t->f.suf[r]);
}

char *egm_chat_render(const egm_chat_template *t, const egm_chat_msg *msgs, int n,
                      int add_generation_prompt, egm_err *e) {
    const family *f = &t->f;
    if (n < 1) { egm_fail(e, "no messages"); return NULL; }
    for (int i = 0; i < n; i++)
        if (role_of(msgs[i].role) < 0) {
            egm_fail(e, "message %d: role \"%s\" is not system, user or assistant", i,
                     msgs[i].role);
            return NULL;
        }
    int first_sys = role_of(msgs[0].role) == R_SYSTEM;
    if (f->sys_error && first_sys) { egm_fail(e, "%s", f->sys_error); return NULL; }
    sbuf b = {0};
    int start = 0;
    const char *sys_text = NULL;
    if ((f->sys == SYS_MERGE_FIRST || f->sys == SYS_HEADER) && first_sys) {
        sys_text = msgs[0].content;
        start = 1;
    }
    if (f->bos_first) put(&b, t->bos, strlen(t->bos));
    if (f->sys == SYS_HEADER) {
        put_fixed(&b, t, f->sys_wrap[0]);
        if (sys_text) put_trimmed(&b, sys_text, strlen(sys_text));
        put_fixed(&b, t, f->sys_wrap[1]);
    }
    if (t->default_system && !first_sys)
        put_turn(&b, t, R_SYSTEM, t->default_system, strlen(t->default_system));
    for (int i = start; i < n; i++) {
        int r = role_of(msgs[i].role), k = i - start;
        const char *c = msgs[i].content;
        if (f->alternate && (r == R_USER) != (k % 2 == 0)) {
            free(b.p);
            egm_fail(e, "%s", ALTERNATE_MSG);
            return NULL;
        }
        if (r == R_SYSTEM && (f->sys == SYS_DROP || (f->sys == SYS_SKIP_EMPTY && !*c))) continue;
        if (!f->pre[r]) {
            if (f->role_error) {
                free(b.p);
                egm_fail(e, "%s", f->role_error);
                return NULL;
            }
            continue;
        }
        if (f->sys == SYS_MERGE_FIRST && k == 0 && sys_text) {
            sbuf m = {0};
            put(&m, f->sys_wrap[0], strlen(f->sys_wrap[0]));
            put(&m, sys_text, strlen(sys_text));
            put(&m, f->sys_wrap[1], strlen(f->sys_wrap[1]));
            put(&m, c, strlen(c));
            if (!m.oom) put_turn(&b, t, r, m.p, m.n);
            b.oom |= m.oom;
            free(m.p);
        } else {
            put_turn(&b, t, r, c, strlen(c));
        }
    }
    put_fixed(&b, t, add_generation_prompt || f->gen_always ? f->gen : f->no_gen);
    put(&b, "", 0);
    if (b.oom) {
        free(b.p);
        egm_fail(e, "out of memory rendering the chat template");
        return NULL;
    }
    return b.p;
}

/* ---- where the template comes from ---- */

static char *read_file(const char *path, egm_err *e) {
    FILE *f = fopen(path, "rb");
    if (!f) { egm_fail(e, "%s: cannot open: %s", path, strerror(errno)); return NULL; }
    char *s = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *p = realloc(s, cap);
            if (!p) { free(s); fclose(f); egm_fail(e, "out of memory"); return NULL; }
            s = p;
        }
        size_t r = fread(s + n, 1, 4096, f);
        n += r;
        if (r < 4096) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(s); egm_fail(e, "%s: read error", path); return NULL; }
    s[n] = '\0';
    return s;
}

/* A tokenizer_config.json special token: "text" or {"content": "text"}. */
static char *special_text(json_t *cfg, const char *key) {
    json_t *v = json_object_get(cfg, key);
    if (json_is_object(v)) v = json_object_get(v, "content");
    return json_is_string(v) ? strdup(json_string_value(v)) : NULL;
}

/* A directory: chat_template.jinja, else tokenizer_config.json's
 * "chat_template" (a string, or a list of {name, template}: "default"). */
static int dir_template(const char *dir, char **src, char **origin, char **bos, char **eos,
                        egm_err *e) {
    char p[4096];
    struct stat st;
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    if (stat(p, &st) == 0) {
        json_error_t je;
        json_t *cfg = json_load_file(p, 0, &je);
        if (!cfg) return egm_fail(e, "%s:%d: invalid JSON: %s", p, je.line, je.text);
        *bos = special_text(cfg, "bos_token");
        *eos = special_text(cfg, "eos_token");
        json_t *ct = json_object_get(cfg, "chat_template");
        if (json_is_array(ct)) {
            size_t i;
            json_t *it, *pick = NULL;
            json_array_foreach(ct, i, it) {
                json_t *name = json_object_get(it, "name");
                if (json_is_string(name) && !strcmp(json_string_value(name), "default"))
                    pick = json_object_get(it, "template");
            }
            ct = pick;
        }
        if (json_is_string(ct)) {
            *src = strdup(json_string_value(ct));
            *origin = strdup(p);
        }
        json_decref(cfg);
    }
    snprintf(p, sizeof p, "%s/chat_template.jinja", dir);
    if (stat(p, &st) == 0) {
        free(*src);
        free(*origin);
        *src = read_file(p, e);
        if (!*src) return -1;
        *origin = strdup(p);
    }
    return 0;
}

static int gguf_template(const char *path, char **src, egm_err *e) {
    egm_gguf *g;
    if (egm_gguf_open(path, &g, e)) return -1;
    int rc = egm_gguf_get_str(g, "tokenizer.chat_template", 0, src, e);
    egm_gguf_close(g);
    return rc;
}

/* An override: a family's name, else a file. */
static int from_override(const char *ov, char **src, const family **named, egm_err *e) {
    for (int i = 0; by_name[i]; i++)
        if (!strcmp(ov, by_name[i]->family)) {
            *named = by_name[i];
            return 0;
        }
    struct stat st;
    if (stat(ov, &st) != 0)
        return egm_fail(e, "--chat-template: \"%s\" is neither a family (%s) nor a file", ov,
                        egm_chat_families);
    *src = read_file(ov, e);
    return *src ? 0 : -1;
}

int egm_chat_template_load(const char *model, const char *override,
                           const egm_config *c, const egm_tokenizer *tok,
                           egm_chat_template **out, egm_err *e) {
    char *src = NULL, *origin = NULL, *bos = NULL, *eos = NULL;
    const family *named = NULL;
    int rc = -1;
    *out = NULL;
    if (override) {
        if (from_override(override, &src, &named, e)) goto done;
        origin = strdup(override);
        if (!egm_gguf_is_file(model)) {
            /* only the bos/eos text: the directory's own template is overridden */
            char *own = NULL, *own_origin = NULL;
            int r = dir_template(model, &own, &own_origin, &bos, &eos, e);
            free(own);
            free(own_origin);
            if (r) goto done;
        }
    } else if (egm_gguf_is_file(model)) {
        if (gguf_template(model, &src, e)) goto done;
        char o[4200];
        snprintf(o, sizeof o, "%s: tokenizer.chat_template", model);
        origin = strdup(o);
    } else if (dir_template(model, &src, &origin, &bos, &eos, e)) {
        goto done;
    }
    if (!src && !named) { rc = 0; goto done; }
    /* bos/eos text from the tokenizer when the config did not say */
    const char *tb = c && tok && c->bos_token_id >= 0 ? egm_tok_token(tok, c->bos_token_id) : NULL;
    const char *te = c && tok && c->n_eos > 0 ? egm_tok_token(tok, c->eos_token_ids[0]) : NULL;
    const char *b = bos ? bos : tb ? tb : "", *s = eos ? eos : te ? te : "";
    if (named) {
        *out = make(named, NULL, b, s);
        rc = *out ? 0 : egm_fail(e, "out of memory");
    } else {
        rc = egm_chat_template_parse(src, origin ? origin : model, b, s, out, e);
    }
done:
    free(src);
    free(origin);
    free(bos);
    free(eos);
    return rc;
}
