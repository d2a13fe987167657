/* prompt.h - a request's prompt as token ids: "tokens" as given, "prompt"
 * text through the tokenizer, "messages" through the chat template first.
 *
 * Text prompts are encoded as the tokenizer's post-processor says, with the
 * model's BOS put in front when add_bos asks and it is not there yet. A chat
 * is rendered and encoded as transformers'
 * apply_chat_template does: special tokens written by the template (such as
 * <|im_start|>) become their ids, and nothing is added around the text (the
 * template writes its own BOS). */
#ifndef EGM_PROMPT_H
#define EGM_PROMPT_H

#include "coordinator/request.h"
#include "model/chat_template.h"
#include "model/config.h"
#include "model/tokenizer.h"

/* gen_prompt: a chat ends with the assistant's turn opened (generate);
 * 0 renders the conversation as it is (score). *toks is malloc'd with room
 * for one more id. Messages name the field and
 * start with "origin:lineno: ". tok and chat may be NULL (then text prompts,
 * or chats, are refused with a message saying what to give instead). Ids of
 * "tokens" are checked against the vocabulary. */
int egm_prompt_tokens(const egm_request *r, const egm_config *c, const egm_tokenizer *tok,
                      const egm_chat_template *chat, int gen_prompt, int add_bos,
                      const char *origin, int **toks, int *n, egm_err *e);

#endif
