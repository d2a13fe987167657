/* test_chat_template.c - chat templates rendered in C against jinja2's
 * renderings of the real template strings (tests/fixtures/chat_templates/
 * expected.json, from reference/chat_templates.py), byte for byte; and the
 * refusals: unknown templates, unknown overrides, bad roles. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "coordinator/prompt.h"
#include "model/chat_template.h"

#define DIR "tests/fixtures/chat_templates/"

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = 0;
    fclose(f);
    return s;
}

static egm_chat_template *parse_file(const char *name, const char *bos, const char *eos) {
    char path[512];
    snprintf(path, sizeof path, DIR "%s.jinja", name);
    char *src = slurp(path);
    egm_chat_template *t = NULL;
    egm_err e;
    if (egm_chat_template_parse(src, path, bos, eos, &t, &e)) fail_msg("%s", e.msg);
    free(src);
    return t;
}

/* Every case of expected.json: same bytes, or the same refusal. */
static void test_against_jinja2(void **state) {
    (void)state;
    json_error_t je;
    json_t *cases = json_load_file(DIR "expected.json", 0, &je);
    assert_non_null(cases);
    assert_true(json_array_size(cases) >= 300);
    size_t i;
    json_t *c;
    int templates = 0;
    const char *last = "";
    json_array_foreach(cases, i, c) {
        const char *name = json_string_value(json_object_get(c, "template"));
        if (strcmp(name, last)) templates++;
        last = name;
        egm_chat_template *t = parse_file(name, json_string_value(json_object_get(c, "bos")),
                                          json_string_value(json_object_get(c, "eos")));
        json_t *ms = json_object_get(c, "messages");
        int n = (int)json_array_size(ms);
        egm_chat_msg msgs[16];
        for (int k = 0; k < n; k++) {
            json_t *m = json_array_get(ms, (size_t)k);
            msgs[k].role = json_string_value(json_object_get(m, "role"));
            msgs[k].content = json_string_value(json_object_get(m, "content"));
        }
        egm_err e;
        char *got = egm_chat_render(t, msgs, n, json_is_true(json_object_get(c, "add_generation_prompt")), &e);
        json_t *want = json_object_get(c, "output");
        if (want) {
            if (!got) fail_msg("case %zu (%s): refused: %s", i, name, e.msg);
            if (strcmp(got, json_string_value(want)))
                fail_msg("case %zu (%s):\n got  [%s]\n want [%s]", i, name, got,
                         json_string_value(want));
        } else {
            if (got) fail_msg("case %zu (%s): rendered [%s], jinja2 refused", i, name, got);
            assert_string_equal(e.msg, json_string_value(json_object_get(c, "error")));
        }
        free(got);
        egm_chat_template_free(t);
    }
    assert_int_equal(templates, 16);
    json_decref(cases);
}

/* Which family each real template is. */
static void test_families(void **state) {
    (void)state;
    static const char *const want[][2] = {
        {"smollm2-135m-instruct", "chatml"}, {"qwen2.5-7b-instruct", "chatml"},
        {"openhermes-2.5-mistral-7b", "chatml"}, {"meta-llama-3-8b-instruct", "llama3"},
        {"llama-3.1-8b-instruct", "llama3.1"}, {"llama-2-13b-chat", "llama2"},
        {"mistral-7b-instruct-v0.1", "mistral"}, {"mixtral-8x7b-instruct-v0.1", "mistral"},
        {"gemma-7b-it", "gemma"}, {"gemma-2-2b-it", "gemma"},
        {"phi-3.5-mini-instruct", "phi3"}, {"phi-3-mini-4k-instruct-2024-04", "phi3"},
        {"zephyr-7b-beta", "zephyr"}, {"qwen2-instruct-gguf", "chatml"},
        {"phi-3-mini-4k-instruct-gguf", "phi3"}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        egm_chat_template *t = parse_file(want[i][0], "<s>", "</s>");
        assert_string_equal(egm_chat_template_family(t), want[i][1]);
        egm_chat_template_free(t);
    }
}

/* An unknown template is refused naming the families and the override. */
static void test_unknown_refused(void **state) {
    (void)state;
    egm_chat_template *t = (void *)1;
    egm_err e;
    const char *src = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}";
    assert_int_equal(egm_chat_template_parse(src, "m.gguf: tokenizer.chat_template", "", "", &t, &e), -1);
    assert_null(t);
    assert_string_equal(e.msg, "m.gguf: tokenizer.chat_template: the chat template is not one "
                        "egmla can render (families: chatml, llama3, llama3.1, llama2, mistral, "
                        "gemma, phi3, zephyr); give --chat-template NAME (one of those) or "
                        "--chat-template FILE");
    /* a reasoning ChatML template is not plain ChatML */
    assert_int_equal(egm_chat_template_parse("<|im_start|><think><|im_end|>", "x", "", "", &t, &e), -1);
}

/* --chat-template NAME needs no model template; a bad name is refused. */
static void test_override(void **state) {
    (void)state;
    egm_chat_template *t;
    egm_err e;
    assert_int_equal(egm_chat_template_load("tests/fixtures/no-such-model", "chatml", NULL, NULL, &t, &e), 0);
    egm_chat_msg m[] = {{"user", "hi"}};
    char *s = egm_chat_render(t, m, 1, 1, &e);
    assert_string_equal(s, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    free(s);
    egm_chat_template_free(t);
    assert_int_equal(egm_chat_template_load(".", "chatml2", NULL, NULL, &t, &e), -1);
    assert_string_equal(e.msg, "--chat-template: \"chatml2\" is neither a family (chatml, llama3, "
                        "llama3.1, llama2, mistral, gemma, phi3, zephyr) nor a file");
    /* a FILE override is recognised like a model's template */
    assert_int_equal(egm_chat_template_load(".", DIR "zephyr-7b-beta.jinja", NULL, NULL, &t, &e), 0);
    assert_string_equal(egm_chat_template_family(t), "zephyr");
    egm_chat_template_free(t);
}

static void test_bad_role(void **state) {
    (void)state;
    egm_chat_template *t = parse_file("smollm2-135m-instruct", "", "");
    egm_chat_msg m[] = {{"user", "hi"}, {"tool", "x"}};
    egm_err e;
    assert_null(egm_chat_render(t, m, 2, 1, &e));
    assert_string_equal(e.msg, "message 1: role \"tool\" is not system, user or assistant");
    assert_null(egm_chat_render(t, m, 0, 1, &e));
    egm_chat_template_free(t);
}

/* A rendered chat is tokenized with the template's special tokens as their
 * ids (<|im_start|> = 1, <|im_end|> = 2 in SmolLM2's tokenizer) and no BOS
 * added, even when --add-bos is on. */
static void test_chat_tokens(void **state) {
    (void)state;
    egm_tokenizer *tok;
    egm_err e;
    if (egm_tok_load("tests/fixtures/tokenizer/smollm2.json", &tok, &e)) fail_msg("%s", e.msg);
    egm_chat_template *t = parse_file("smollm2-135m-instruct", "<|im_start|>", "<|im_end|>");
    egm_chat_msg m[] = {{"system", "S"}, {"user", "hi"}};
    egm_request r = {.messages = m, .n_messages = 2, .lineno = 3};
    egm_config c = {.vocab_size = 49152, .bos_token_id = 0};
    int *ids, n;
    if (egm_prompt_tokens(&r, &c, tok, t, 1, 1, "in", &ids, &n, &e)) fail_msg("%s", e.msg);
    /* <|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n */
    int specials = 0;
    for (int i = 0; i < n; i++) specials += ids[i] == 1 || ids[i] == 2;
    assert_int_equal(ids[0], 1);
    assert_int_equal(specials, 5);
    char *back = egm_tok_decode(tok, ids, n, 0);
    assert_string_equal(back, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                        "<|im_start|>assistant\n");
    free(back);
    free(ids);
    /* without a template, a chat is refused with what to give */
    assert_int_equal(egm_prompt_tokens(&r, &c, tok, NULL, 1, 1, "in", &ids, &n, &e), -1);
    assert_string_equal(e.msg, "in:3: \"messages\" need a chat template, and the model has none: "
                        "give --chat-template NAME|FILE (chatml, llama3, llama3.1, llama2, mistral, "
                        "gemma, phi3, zephyr)");
    free(ids);
    egm_chat_template_free(t);
    egm_tok_free(tok);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_jinja2),
        cmocka_unit_test(test_families),
        cmocka_unit_test(test_unknown_refused),
        cmocka_unit_test(test_override),
        cmocka_unit_test(test_bad_role),
        cmocka_unit_test(test_chat_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
