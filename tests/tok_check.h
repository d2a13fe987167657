/* tok_check.h - shared by the tokenizer tests (include after cmocka.h and
 * jansson.h). */
#ifndef EGM_TESTS_TOK_CHECK_H
#define EGM_TESTS_TOK_CHECK_H

#include <stdio.h>

/* Asserts ids equal the JSON array want, naming the text on failure. */
static inline void check_ids(const char *what, const char *text, const int *ids, int n,
                             const json_t *want) {
    int ok = (size_t)n == json_array_size(want);
    for (int i = 0; ok && i < n; i++) ok = ids[i] == json_integer_value(json_array_get(want, i));
    if (ok) return;
    fprintf(stderr, "%s: text \"%s\"\n  got  ", what, text);
    for (int i = 0; i < n; i++) fprintf(stderr, "%d ", ids[i]);
    fprintf(stderr, "\n  want ");
    for (size_t i = 0; i < json_array_size(want); i++)
        fprintf(stderr, "%lld ", (long long)json_integer_value(json_array_get(want, i)));
    fprintf(stderr, "\n");
    fail();
}

#endif
