/* test_request.c - request lines (every shape and every refusal, with exact
 * messages) and result lines (exact strings, escaping, float round trip). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "coordinator/request.h"

static egm_request defaults;

static int setup(void **state) {
    (void)state;
    egm_request_defaults(&defaults);
    defaults.max_new_tokens = 32;
    defaults.sampling.temperature = 0.7f;
    defaults.sampling.top_k = 40;
    defaults.sampling.seed = 5;
    return 0;
}

static int parse(const char *line, egm_request *r, egm_err *e) {
    return egm_request_parse(line, strlen(line), 7, "in.jsonl", &defaults, r, e);
}

/* The line is refused with exactly msg; id_json is what survives for the
 * error record (NULL: none). */
static void refused(const char *line, const char *msg, const char *id_json) {
    egm_request r;
    egm_err e;
    assert_int_equal(parse(line, &r, &e), -1);
    assert_string_equal(e.msg, msg);
    if (id_json) assert_string_equal(r.id_json, id_json);
    else assert_null(r.id_json);
    assert_null(r.prompt);
    assert_null(r.tokens);
    assert_null(r.messages);
    assert_int_equal(r.n_stop, 0);
    egm_request_free(&r);
}

/* ---- good lines ---- */

static void test_prompt_with_defaults(void **state) {
    (void)state;
    egm_request r;
    egm_err e;
    assert_int_equal(parse("{\"id\":\"a\",\"prompt\":\"Hello, world\"}", &r, &e), 0);
    assert_string_equal(r.id_json, "\"a\"");
    assert_string_equal(r.prompt, "Hello, world");
    assert_null(r.tokens);
    assert_int_equal(r.n_tokens, 0);
    assert_int_equal(r.max_new_tokens, 32);
    assert_int_equal(r.ignore_eos, 0);
    assert_true(r.sampling.temperature == 0.7f);
    assert_int_equal(r.sampling.top_k, 40);
    assert_true(r.sampling.top_p == 1.0f);
    assert_true(r.sampling.seed == 5);
    assert_int_equal(r.lineno, 7);
    egm_request_free(&r);
    egm_request_free(&r);   /* idempotent */
}

static void test_tokens_with_overrides(void **state) {
    (void)state;
    egm_request r;
    egm_err e;
    const char *line =
        " {\"id\" : 12, \"tokens\":[0, 5, 2147483647], \"max_new_tokens\":0,"
        "\"temperature\":0,\"top_k\":3,\"top_p\":0.5,\"min_p\":0.1,"
        "\"repetition_penalty\":1.2,\"seed\":9223372036854775807,"
        "\"ignore_eos\":true} ";
    assert_int_equal(parse(line, &r, &e), 0);
    assert_string_equal(r.id_json, "12");
    assert_null(r.prompt);
    assert_int_equal(r.n_tokens, 3);
    assert_int_equal(r.tokens[0], 0);
    assert_int_equal(r.tokens[1], 5);
    assert_int_equal(r.tokens[2], 2147483647);
    assert_int_equal(r.max_new_tokens, 0);
    assert_true(r.sampling.temperature == 0.0f);
    assert_int_equal(r.sampling.top_k, 3);
    assert_true(r.sampling.top_p == 0.5f);
    assert_true(r.sampling.min_p == 0.1f);
    assert_true(r.sampling.repetition_penalty == 1.2f);
    assert_true(r.sampling.seed == INT64_MAX);
    assert_int_equal(r.ignore_eos, 1);
    egm_request_free(&r);
}

static void test_ids_and_nulls(void **state) {
    (void)state;
    egm_request r;
    egm_err e;
    /* A string id is kept as JSON text: UTF-8 as is, controls escaped. */
    assert_int_equal(parse("{\"id\":\"\\u00e9\\u0001 \\\"q\\\"\",\"prompt\":\"\"}",
                           &r, &e), 0);
    assert_string_equal(r.id_json, "\"\xC3\xA9\\u0001 \\\"q\\\"\"");
    assert_string_equal(r.prompt, "");
    egm_request_free(&r);
    /* Large and negative integers survive exactly; null means "not given". */
    assert_int_equal(parse("{\"id\":-9007199254740993,\"prompt\":\"x\","
                           "\"tokens\":null,\"temperature\":null,\"seed\":null,"
                           "\"ignore_eos\":false}", &r, &e), 0);
    assert_string_equal(r.id_json, "-9007199254740993");
    assert_string_equal(r.prompt, "x");
    assert_true(r.sampling.temperature == 0.7f);
    assert_true(r.sampling.seed == 5);
    egm_request_free(&r);
    /* The line need not be NUL-terminated: only len bytes are read. */
    const char buf[] = "{\"id\":1,\"prompt\":\"a\"}GARBAGE";
    assert_int_equal(egm_request_parse(buf, 21, 1, "x", &defaults, &r, &e), 0);
    assert_string_equal(r.prompt, "a");
    egm_request_free(&r);
}

/* ---- refusals ---- */

static void test_bad_json(void **state) {
    (void)state;
    refused("{\"id\":1,", "in.jsonl:7: invalid JSON at column 8: string or '}' "
            "expected near end of file", NULL);
    /* Columns count characters, not bytes. */
    refused("{\"id\":1,\"prompt\":\"\xC3\xA9\",x}", "in.jsonl:7: invalid JSON "
            "at column 22: string or '}' expected near 'x'", NULL);
    refused("{\"id\":1,\"prompt\":\"a\"} x", "in.jsonl:7: invalid JSON at "
            "column 23: end of file expected near 'x'", NULL);
    refused("{\"id\":1,\"id\":2,\"prompt\":\"a\"}", "in.jsonl:7: invalid JSON "
            "at column 12: duplicate object key near '\"id\"'", NULL);
    refused("{\"id\":1,\"prompt\":\"\\u0000\"}", "in.jsonl:7: invalid JSON at "
            "column 25: \\u0000 is not allowed without JSON_ALLOW_NUL near "
            "'\"\\u0000\"'", NULL);
    refused("[1]", "in.jsonl:7: expected a JSON object, found an array", NULL);
    refused("\"hello\"", "in.jsonl:7: expected a JSON object, found \"hello\"", NULL);
}

static void test_bad_id(void **state) {
    (void)state;
    refused("{\"prompt\":\"a\"}",
            "in.jsonl:7: missing \"id\" (a string or an integer)", NULL);
    refused("{\"id\":{\"k\":1},\"prompt\":\"a\"}", "in.jsonl:7: \"id\": "
            "expected a string or an integer, found an object", NULL);
    refused("{\"id\":[],\"prompt\":\"a\"}", "in.jsonl:7: \"id\": expected a "
            "string or an integer, found an empty array", NULL);
    refused("{\"id\":1.5,\"prompt\":\"a\"}", "in.jsonl:7: \"id\": expected a "
            "string or an integer, found 1.5", NULL);
    refused("{\"id\":null,\"prompt\":\"a\"}", "in.jsonl:7: \"id\": expected a "
            "string or an integer, found null", NULL);
}

static void test_prompt_and_tokens(void **state) {
    (void)state;
    refused("{\"id\":\"r\",\"prompt\":\"a\",\"tokens\":[1]}", "in.jsonl:7: "
            "both \"prompt\" and \"tokens\" given; expected exactly one of \"prompt\", "
            "\"tokens\", \"messages\"", "\"r\"");
    refused("{\"id\":\"r\",\"max_new_tokens\":3}", "in.jsonl:7: neither "
            "\"prompt\", \"tokens\" nor \"messages\" given; expected exactly one", "\"r\"");
    refused("{\"id\":1,\"prompt\":5}",
            "in.jsonl:7: \"prompt\": expected a string, found 5", "1");
    refused("{\"id\":1,\"tokens\":[1,2,3,\"x\"]}", "in.jsonl:7: \"tokens\"[3]: "
            "expected a non-negative integer, found \"x\"", "1");
    refused("{\"id\":1,\"tokens\":[1,-2]}", "in.jsonl:7: \"tokens\"[1]: "
            "expected a non-negative integer, found -2", "1");
    refused("{\"id\":1,\"tokens\":[1.0]}", "in.jsonl:7: \"tokens\"[0]: "
            "expected a non-negative integer, found 1.0", "1");
    refused("{\"id\":1,\"tokens\":[2147483648]}", "in.jsonl:7: \"tokens\"[0]: "
            "expected a non-negative integer, found 2147483648", "1");
    refused("{\"id\":1,\"tokens\":[[1]]}", "in.jsonl:7: \"tokens\"[0]: "
            "expected a non-negative integer, found an array", "1");
    refused("{\"id\":1,\"tokens\":[]}", "in.jsonl:7: \"tokens\": expected a "
            "non-empty array of token ids, found an empty array", "1");
    /* Long values are clipped in messages. */
    refused("{\"id\":1,\"tokens\":\"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\"}",
            "in.jsonl:7: \"tokens\": expected a non-empty array of token ids, "
            "found \"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy...", "1");
}

static void test_messages(void **state) {
    (void)state;
    egm_request r;
    egm_err e;
    assert_int_equal(parse("{\"id\":1,\"messages\":[{\"role\":\"system\",\"content\":\"S\"},"
                           "{\"role\":\"user\",\"name\":\"x\",\"content\":[{\"type\":\"text\","
                           "\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]}]}", &r, &e), 0);
    assert_null(r.prompt);
    assert_int_equal(r.n_messages, 2);
    assert_string_equal(r.messages[0].role, "system");
    assert_string_equal(r.messages[0].content, "S");
    assert_string_equal(r.messages[1].role, "user");
    assert_string_equal(r.messages[1].content, "ab");
    egm_request_free(&r);
    refused("{\"id\":1,\"prompt\":\"a\",\"messages\":[]}", "in.jsonl:7: both \"prompt\" and "
            "\"messages\" given; expected exactly one of \"prompt\", \"tokens\", \"messages\"", "1");
    refused("{\"id\":1,\"messages\":[]}", "in.jsonl:7: \"messages\": expected a non-empty "
            "array of {\"role\", \"content\"}, found an empty array", "1");
    refused("{\"id\":1,\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}",
            "in.jsonl:7: \"messages[0].role\": expected \"system\", \"user\" or \"assistant\", "
            "found \"tool\"", "1");
    refused("{\"id\":1,\"messages\":[{\"role\":\"user\"}]}",
            "in.jsonl:7: \"messages[0].content\": expected a string, found null", "1");
    refused("{\"id\":1,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
            "in.jsonl:7: \"messages[0].content[0]\": expected a part {\"type\": \"text\", "
            "\"text\": \"...\"}, found an object", "1");
    refused("{\"id\":1,\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"tool_calls\":[]}]}",
            "in.jsonl:7: \"messages[0]\": unknown key \"tool_calls\" (expected role, content, name)",
            "1");
}

static void test_stop_and_logprobs(void **state) {
    (void)state;
    egm_request r, d;
    egm_err e;
    egm_request_defaults(&d);
    assert_int_equal(d.logprobs, -1);
    char dstop[] = "END";
    d.stop[0] = dstop;
    d.n_stop = 1;
    d.logprobs = 2;
    /* the defaults' stop strings are copied; a line's replace them */
    const char *l1 = "{\"id\":1,\"prompt\":\"a\"}";
    assert_int_equal(egm_request_parse(l1, strlen(l1), 1, "x", &d, &r, &e), 0);
    assert_int_equal(r.n_stop, 1);
    assert_string_equal(r.stop[0], "END");
    assert_true(r.stop[0] != dstop);
    assert_int_equal(r.logprobs, 2);
    egm_request_free(&r);
    const char *l2 = "{\"id\":1,\"prompt\":\"a\",\"stop\":[\"A\",\"\\n\\n\"],\"logprobs\":0}";
    assert_int_equal(egm_request_parse(l2, strlen(l2), 1, "x", &d, &r, &e), 0);
    assert_int_equal(r.n_stop, 2);
    assert_string_equal(r.stop[1], "\n\n");
    assert_int_equal(r.logprobs, 0);
    egm_request_free(&r);
    assert_int_equal(parse("{\"id\":1,\"prompt\":\"a\",\"stop\":\"x\"}", &r, &e), 0);
    assert_int_equal(r.n_stop, 1);
    assert_int_equal(r.logprobs, -1);
    egm_request_free(&r);
    refused("{\"id\":1,\"prompt\":\"a\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}",
            "in.jsonl:7: \"stop\": expected a non-empty string or a list of 1 to 4 of them, "
            "found an array", "1");
    refused("{\"id\":1,\"prompt\":\"a\",\"stop\":\"\"}", "in.jsonl:7: \"stop\": expected a "
            "non-empty string or a list of 1 to 4 of them, found \"\"", "1");
    refused("{\"id\":1,\"prompt\":\"a\",\"stop\":[1]}", "in.jsonl:7: \"stop\": expected a "
            "non-empty string or a list of 1 to 4 of them, found an array", "1");
    refused("{\"id\":1,\"prompt\":\"a\",\"logprobs\":21}",
            "in.jsonl:7: \"logprobs\": expected an integer from 0 to 20, found 21", "1");
    refused("{\"id\":1,\"prompt\":\"a\",\"logprobs\":true}",
            "in.jsonl:7: \"logprobs\": expected an integer from 0 to 20, found true", "1");
}

static void test_unknown_key(void **state) {
    (void)state;
    refused("{\"id\":\"k\",\"prompt\":\"a\",\"temprature\":0.5}",
            "in.jsonl:7: unknown key \"temprature\" (expected id, prompt, "
            "tokens, messages, max_new_tokens, temperature, top_k, top_p, min_p, "
            "repetition_penalty, seed, ignore_eos, stop, logprobs)", "\"k\"");
    refused("{\"id\":\"k\",\"prompt\":\"a\",\"x\\ny\":1}",
            "in.jsonl:7: unknown key \"x\\ny\" (expected id, prompt, "
            "tokens, messages, max_new_tokens, temperature, top_k, top_p, min_p, "
            "repetition_penalty, seed, ignore_eos, stop, logprobs)", "\"k\"");
}

static void test_bad_values(void **state) {
    (void)state;
    refused("{\"id\":1,\"prompt\":\"a\",\"temperature\":-1}", "in.jsonl:7: "
            "\"temperature\": expected a finite value >= 0, found -1", "1");
    refused("{\"id\":1,\"prompt\":\"a\",\"temperature\":\"hot\"}", "in.jsonl:7: "
            "\"temperature\": expected a number, found \"hot\"", "1");
    refused("{\"id\":1,\"prompt\":\"a\",\"temperature\":1e39}", "in.jsonl:7: "
            "\"temperature\": expected a finite number within float range, "
            "found 1e39", "1");
    refused("{\"id\":1,\"prompt\":\"a\",\"top_p\":1.5}", "in.jsonl:7: "
            "\"top_p\": expected 0 < top_p <= 1 (1 = off), found 1.5", "1");
    refused("{\"id\":1,\"prompt\":\"a\",\"top_p\":0}", "in.jsonl:7: "
            "\"top_p\": expected 0 < top_p <= 1 (1 = off), found 0", "1");
    refused("{\"id\":1,\"prompt\":\"a\",\"min_p\":2}", "in.jsonl:7: "
            "\"min_p\": expected 0 <= min_p <= 1 (0 = off), found 2", "1");
    refused("{\"id\":1,\"prompt\":\"a\",\"repetition_penalty\":0}", "in.jsonl:7: "
            "\"repetition_penalty\": expected a finite value > 0 (1 = off), "
            "found 0", "1");
    refused("{\"id\":1,\"prompt\":\"a\",\"top_k\":-1}", "in.jsonl:7: "
            "\"top_k\": expected an integer >= 0 (0 = off), found -1", "1");
    refused("{\"id\":1,\"prompt\":\"a\",\"top_k\":2.5}", "in.jsonl:7: "
            "\"top_k\": expected an integer, found 2.5", "1");
    refused("{\"id\":1,\"prompt\":\"a\",\"top_k\":true}", "in.jsonl:7: "
            "\"top_k\": expected an integer, found true", "1");
    refused("{\"id\":1,\"prompt\":\"a\",\"max_new_tokens\":-1}", "in.jsonl:7: "
            "\"max_new_tokens\": expected a non-negative integer, found -1", "1");
    refused("{\"id\":1,\"prompt\":\"a\",\"max_new_tokens\":\"5\"}", "in.jsonl:7: "
            "\"max_new_tokens\": expected a non-negative integer, found \"5\"", "1");
    refused("{\"id\":1,\"prompt\":\"a\",\"max_new_tokens\":4294967296}",
            "in.jsonl:7: \"max_new_tokens\": expected a non-negative integer, "
            "found 4294967296", "1");
    refused("{\"id\":1,\"prompt\":\"a\",\"seed\":-1}", "in.jsonl:7: "
            "\"seed\": expected a non-negative integer, found -1", "1");
    refused("{\"id\":1,\"prompt\":\"a\",\"ignore_eos\":1}", "in.jsonl:7: "
            "\"ignore_eos\": expected true or false, found 1", "1");
    refused("{\"id\":1,\"prompt\":\"a\",\"ignore_eos\":{}}", "in.jsonl:7: "
            "\"ignore_eos\": expected true or false, found an object", "1");
}

static void test_bad_defaults(void **state) {
    (void)state;
    egm_request d = defaults, r;
    d.sampling.top_p = 2.0f;
    egm_err e;
    assert_int_equal(egm_request_parse("{\"id\":1,\"prompt\":\"a\"}", 21, 1,
                                       "in.jsonl", &d, &r, &e), -1);
    assert_string_equal(e.msg, "default sampling parameters: top_p: expected "
                               "0 < top_p <= 1 (1 = off)");
    egm_request_free(&r);
}

/* ---- result lines ---- */

static void test_result_generate(void **state) {
    (void)state;
    int toks[] = {5, 6, 7};
    egm_gen_stats st = {4, 3, 12.5, 100.25, 7.5};
    char *s = egm_result_generate("\"a\"", toks, 3, "Hi there", 8, "stop", &st);
    assert_string_equal(s, "{\"id\":\"a\",\"tokens\":[5,6,7],\"text\":\"Hi there\","
                           "\"finish_reason\":\"stop\",\"stats\":{\"prompt_tokens\":4,"
                           "\"generated_tokens\":3,\"ttft_ms\":12.5,\"total_ms\":100.25,\"queue_ms\":7.5}}");
    free(s);
    s = egm_result_generate("17", NULL, 0, NULL, 0, "length", NULL);
    assert_string_equal(s, "{\"id\":17,\"tokens\":[],\"finish_reason\":\"length\"}");
    free(s);
    /* NUL, controls, quotes and newlines are escaped; bad UTF-8 becomes
     * U+FFFD; good UTF-8 passes through. */
    s = egm_result_generate("1", toks, 1, "a\0b\x01\"\n\\\xff\xC3\xA9\xED\xA0\x80", 13,
                            "stop", NULL);
    assert_string_equal(s, "{\"id\":1,\"tokens\":[5],\"text\":\"a\\u0000b\\u0001"
                           "\\\"\\n\\\\\xEF\xBF\xBD\xC3\xA9\xEF\xBF\xBD\xEF\xBF\xBD"
                           "\xEF\xBF\xBD\",\"finish_reason\":\"stop\"}");
    assert_null(strchr(s, '\n'));
    free(s);
}

static void test_result_score(void **state) {
    (void)state;
    float lp[] = {-0.1f, 0.0f, -1e-10f, -12.5f, -INFINITY, 1.0f / 3.0f};
    char *s = egm_result_score("\"q\"", lp, 6);
    assert_string_equal(s, "{\"id\":\"q\",\"logprobs\":[-0.100000001,0.0,"
                           "-1.00000001e-10,-12.5,null,0.333333343]}");
    /* Every finite value reads back as the same float. */
    const char *p = strchr(s, '[') + 1;
    for (int i = 0; i < 6; i++) {
        char *end;
        if (!isfinite(lp[i])) {
            assert_memory_equal(p, "null", 4);
            end = (char *)p + 4;
        } else {
            float back = strtof(p, &end);
            assert_true(back == lp[i]);
        }
        p = end + 1;
    }
    free(s);
    s = egm_result_score("2", NULL, 0);
    assert_string_equal(s, "{\"id\":2,\"logprobs\":[]}");
    free(s);
}

static void test_result_error(void **state) {
    (void)state;
    char *s = egm_result_error(NULL, "in.jsonl:3: invalid JSON");
    assert_string_equal(s, "{\"id\":null,\"error\":\"in.jsonl:3: invalid JSON\"}");
    free(s);
    s = egm_result_error("\"x\\u0001\"", "token 99999 \"out\" of range\n");
    assert_string_equal(s, "{\"id\":\"x\\u0001\",\"error\":\"token 99999 "
                           "\\\"out\\\" of range\\n\"}");
    free(s);

    /* The id a parse keeps goes into the record unchanged. */
    egm_request r;
    egm_err e;
    assert_int_equal(parse("{\"id\":\"\\u00e9\",\"prompt\":1}", &r, &e), -1);
    s = egm_result_error(r.id_json, e.msg);
    assert_string_equal(s, "{\"id\":\"\xC3\xA9\",\"error\":\"in.jsonl:7: "
                           "\\\"prompt\\\": expected a string, found 1\"}");
    free(s);
    egm_request_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prompt_with_defaults),
        cmocka_unit_test(test_tokens_with_overrides),
        cmocka_unit_test(test_ids_and_nulls),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_bad_id),
        cmocka_unit_test(test_prompt_and_tokens),
        cmocka_unit_test(test_messages),
        cmocka_unit_test(test_stop_and_logprobs),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_bad_defaults),
        cmocka_unit_test(test_result_generate),
        cmocka_unit_test(test_result_score),
        cmocka_unit_test(test_result_error),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
