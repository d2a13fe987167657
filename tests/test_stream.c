/* test_stream.c - the scheduler's per-token events (what a streaming server
 * sends) agree with the result lines: for each request, the events' tokens
 * are its "tokens", their text deltas concatenate to its "text" (with a stop
 * string held back and never delivered), their log-probs are its
 * "logprobs", and the final event carries its finish_reason. Runs the
 * embedded model in-process. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "coordinator/jsonl.h"
#include "coordinator/sched.h"
#include "model/source.h"
#include "model/weights.h"

typedef struct {
    char id[16];
    json_t *tokens, *lps;
    char text[4096];
    size_t len;
    char reason[16];
    int finals, after_final;
} stream;

static stream streams[8];
static int n_streams;

static void on_token(void *ctx, const char *id_json, const egm_token_event *ev) {
    (void)ctx;
    stream *st = NULL;
    for (int i = 0; i < n_streams; i++)
        if (!strcmp(streams[i].id, id_json)) st = &streams[i];
    if (!st) {
        st = &streams[n_streams++];
        snprintf(st->id, sizeof st->id, "%s", id_json);
        st->tokens = json_array();
        st->lps = json_array();
    }
    if (st->finals) st->after_final++;
    assert_true(st->len + ev->text_len < sizeof st->text);
    memcpy(st->text + st->len, ev->text, ev->text_len);
    st->len += ev->text_len;
    if (ev->token < 0) {
        st->finals++;
        assert_non_null(ev->finish_reason);
        snprintf(st->reason, sizeof st->reason, "%s", ev->finish_reason);
        return;
    }
    assert_null(ev->finish_reason);
    assert_int_equal(ev->index, (int)json_array_size(st->tokens));
    json_array_append_new(st->tokens, json_integer(ev->token));
    if (ev->n_top >= 0) {
        json_array_append_new(st->lps, json_real(ev->logprob));
        for (int j = 1; j < ev->n_top; j++) assert_true(ev->top_lp[j] <= ev->top_lp[j - 1]);
    }
}

static void test_events_match_lines(void **state) {
    (void)state;
    const char *model = "models/egmla-tiny";
    egm_err e;
    egm_model m;
    egm_tokenizer *tok;
    egm_pipe *pipe;
    memset(&m, 0, sizeof m);
    if (egm_model_load(model, 0, -1, EGM_LOAD_EMBED | EGM_LOAD_HEAD | EGM_LOAD_GATE_TABLE, &m, &e) ||
        egm_model_tokenizer(model, &tok, &e))
        fail_msg("%s", e.msg);
    egm_pipe_opts po = {.n_slots = 8, .kv_budget = (size_t)64 << 20, .block_tokens = 16};
    if (egm_pipe_local_open(&m, &po, &pipe, &e)) fail_msg("%s", e.msg);
    const char *lines =
        "{\"id\":\"plain\",\"prompt\":\"And the king\",\"max_new_tokens\":20,\"temperature\":0}\n"
        "{\"id\":\"stop\",\"prompt\":\"And the king\",\"max_new_tokens\":20,\"temperature\":0,"
        "\"stop\":[\"LORD\",\"the k\"]}\n"
        "{\"id\":\"lp\",\"prompt\":\"And the king\",\"max_new_tokens\":9,\"temperature\":0.9,"
        "\"seed\":5,\"logprobs\":3}\n"
        "{\"id\":\"none\",\"prompt\":\"And\",\"max_new_tokens\":0}\n";
    FILE *in = fmemopen((void *)lines, strlen(lines), "r");
    egm_jsonl *jl = egm_jsonl_from_file(in, "mem");
    char path[] = "/tmp/egm-test-stream-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    egm_out *out = egm_out_open(path, &e);
    assert_non_null(out);
    egm_sched_opts so = {.mode = EGM_MODE_GENERATE, .micro_batches = 2, .max_seqs = 4,
                         .max_rows = 64, .dump_fd = -1, .total = -1, .on_token = on_token};
    egm_request_defaults(&so.defaults);
    egm_sched_stats st;
    if (egm_sched_run(&so, &m.cfg, tok, pipe, jl, out, &st, &e)) fail_msg("%s", e.msg);
    assert_int_equal(egm_out_close(out, &e), 0);
    egm_jsonl_close(jl);
    fclose(in);

    json_error_t je;
    FILE *f = fopen(path, "r");
    char buf[65536];
    int seen = 0;
    while (fgets(buf, sizeof buf, f)) {
        json_t *r = json_loads(buf, 0, &je);
        assert_non_null(r);
        char *id = json_dumps(json_object_get(r, "id"), JSON_ENCODE_ANY);
        stream *sx = NULL;
        for (int i = 0; i < n_streams; i++)
            if (!strcmp(streams[i].id, id)) sx = &streams[i];
        assert_non_null(sx);
        assert_int_equal(sx->finals, 1);
        assert_int_equal(sx->after_final, 0);
        assert_true(json_equal(sx->tokens, json_object_get(r, "tokens")));
        const char *text = json_string_value(json_object_get(r, "text"));
        assert_int_equal(sx->len, strlen(text));
        assert_memory_equal(sx->text, text, sx->len);
        assert_string_equal(sx->reason, json_string_value(json_object_get(r, "finish_reason")));
        json_t *lps = json_object_get(r, "logprobs");
        if (!strcmp(id, "\"lp\"")) {
            assert_int_equal(json_array_size(lps), json_array_size(sx->lps));
            for (size_t i = 0; i < json_array_size(lps); i++)
                assert_true((float)json_real_value(json_array_get(sx->lps, i)) ==
                            (float)json_number_value(json_object_get(json_array_get(lps, i), "logprob")));
        } else {
            assert_null(lps);
        }
        if (!strcmp(id, "\"stop\"")) {
            assert_string_equal(sx->reason, "stop");
            assert_null(strstr(sx->text, "LORD"));
        }
        seen++;
        free(id);
        json_decref(r);
    }
    fclose(f);
    unlink(path);
    close(fd);
    assert_int_equal(seen, 4);
    assert_int_equal(n_streams, 4);
    for (int i = 0; i < n_streams; i++) {
        json_decref(streams[i].tokens);
        json_decref(streams[i].lps);
    }
    pipe->close(pipe);
    egm_tok_free(tok);
    egm_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_events_match_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
