/* chat_template.h - turning chat messages into a prompt, as the model's own
 * chat template would.
 *
 * Models publish their prompt format as a Jinja template (tokenizer_config.json
 * "chat_template", GGUF "tokenizer.chat_template"). C has no Jinja, so the
 * template text is recognised by signature as one of the families published
 * models use, and rendered by C code that reproduces that family's templates
 * byte for byte (tests/test_chat_template.c checks it against jinja2 on the
 * real template strings, rendered by reference/chat_templates.py):
 *
 *   chatml    <|im_start|>role\n...<|im_end|>\n  (SmolLM2, Qwen2.5, OpenHermes;
 *             a default system prompt written in the template is kept)
 *   llama3    <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>
 *   llama3.1  llama3 with the "Cutting Knowledge Date" system header
 *   llama2    [INST] <<SYS>>\n...\n<</SYS>>\n\n... [/INST]  (Llama-2-chat)
 *   mistral   [INST] ... [/INST]  (Mistral-7B-Instruct v0.1/v0.2, Mixtral)
 *   gemma     <start_of_turn>user\n...<end_of_turn>\n  (Gemma, Gemma 2)
 *   phi3      <|user|>\n...<|end|>\n  (Phi-3, Phi-3.5)
 *   zephyr    <|user|>\n...</s>\n  (Zephyr, TinyLlama-chat)
 *
 * bos_token / eos_token in a template are written as the tokenizer's text for
 * them (e.g. "<|begin_of_text|>"); tokenize the rendered prompt with special
 * tokens matched and nothing added around it (as transformers does). */
#ifndef EGM_CHAT_TEMPLATE_H
#define EGM_CHAT_TEMPLATE_H

#include <stddef.h>

#include "config.h"
#include "base/err.h"
#include "tokenizer.h"

typedef struct {
    const char *role;      /* "system", "user" or "assistant" */
    const char *content;   /* UTF-8, may be empty */
} egm_chat_msg;

typedef struct egm_chat_template egm_chat_template;

/* The families, comma-separated, for messages and --help. */
extern const char egm_chat_families[];

/* Recognises a template's text. bos/eos: the text {{ bos_token }} and
 * {{ eos_token }} write ("" if the model has none). An unrecognised template
 * fails with a message naming origin, the families and the override flag. */
int egm_chat_template_parse(const char *src, const char *origin, const char *bos,
                            const char *eos, egm_chat_template **out, egm_err *e);

/* The model's template (GGUF tokenizer.chat_template; a directory's
 * chat_template.jinja or tokenizer_config.json "chat_template"), or
 * `override` when not NULL: a family name above or a file holding a
 * template. bos/eos text from tokenizer_config.json, else from the
 * tokenizer's tokens for c's bos/eos ids (tok may be NULL). *out = NULL
 * and 0 when the model has no template and there is no override. */
int egm_chat_template_load(const char *model, const char *override,
                           const egm_config *c, const egm_tokenizer *tok,
                           egm_chat_template **out, egm_err *e);
void egm_chat_template_free(egm_chat_template *t);

/* "chatml", "llama3", ... */
const char *egm_chat_template_family(const egm_chat_template *t);

/* Renders messages[0..n) (n >= 1), then the assistant's opening when
 * add_generation_prompt. Returns a malloc'd NUL-terminated prompt, or NULL
 * with the template's own refusal in e (e.g. "Conversation roles must
 * alternate user/assistant/user/assistant/..."). */
char *egm_chat_render(const egm_chat_template *t, const egm_chat_msg *msgs, int n,
                      int add_generation_prompt, egm_err *e);

#endif
