/* fuzz_chat.c - libFuzzer harness for chat templates: the input is a
 * template's text (recognised or refused), then, when recognised, the
 * conversations it renders: fixed ones and one whose messages are cut from
 * the input itself. Every rendering must be a NUL-terminated string that
 * holds each message's content when the family keeps it verbatim. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/chat_template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *src = malloc(size + 1);
    if (!src) return 0;
    memcpy(src, data, size);
    src[size] = '\0';
    egm_chat_template *t;
    egm_err e;
    if (egm_chat_template_parse(src, "fuzz", "<s>", "</s>", &t, &e) == 0) {
        static const char *const roles[] = {"system", "user", "assistant"};
        egm_chat_msg m[6];
        /* the input's bytes, NUL-cut into up to 6 contents */
        size_t off = 0;
        int n = 0;
        for (; n < 6 && off <= size; n++) {
            m[n].role = roles[(n + (size & 1)) % 3];
            m[n].content = src + off;
            off += strlen(src + off) + 1;
        }
        for (int k = 1; k <= n; k++)
            for (int g = 0; g < 2; g++) {
                char *s = egm_chat_render(t, m, k, g, &e);
                if (!s && !e.msg[0]) abort();
                free(s);
            }
        egm_chat_template_free(t);
    } else if (!strstr(e.msg, "--chat-template")) {
        abort();
    }
    free(src);
    return 0;
}
