/* fuzz_request.c - libFuzzer harness for one JSONL request line
 * (egm_request_parse), then the result records built from what it parsed. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    egm_request d, r;
    egm_err e;
    egm_request_defaults(&d);
    memset(&r, 0, sizeof r);
    int rc = egm_request_parse((const char *)data, size, 7, "fuzz.jsonl", &d, &r, &e);
    if (rc == 0) {
        if (!r.id_json || !!r.prompt + !!r.tokens + !!r.messages != 1 || r.max_new_tokens < 0 ||
            r.n_stop > EGM_MAX_STOP || r.logprobs < -1 || r.logprobs > EGM_MAX_LOGPROBS)
            abort();
        for (int i = 0; i < r.n_tokens; i++)
            if (r.tokens[i] < 0) abort();
        for (int i = 0; i < r.n_stop; i++)
            if (!r.stop[i][0]) abort();
        for (int i = 0; i < r.n_messages; i++)
            if (!r.messages[i].role || !r.messages[i].content) abort();
        egm_gen_stats st = {r.n_tokens, 1, 0.5, 1.5, 0.25};
        const char *text = r.prompt ? r.prompt : "";
        free(egm_result_generate(r.id_json, r.tokens, r.n_tokens, text, strlen(text), "stop", &st));
        float lp[3] = {-1.0f, -0.5f, 0.0f};
        free(egm_result_score(r.id_json, lp, 3));
    }
    /* an error record for whatever id there was (NULL writes null) */
    free(egm_result_error(r.id_json, rc ? e.msg : "ok"));
    /* the raw bytes as generated text: escaping of arbitrary bytes */
    free(egm_result_generate(NULL, NULL, 0, (const char *)data, size, "length", NULL));
    egm_request_free(&r);
    return 0;
}
