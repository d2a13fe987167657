/* fuzz_jsonl.c - libFuzzer harness for the JSONL line reader: arbitrary
 * bytes (NULs, CR, BOMs, huge lines) through egm_jsonl_next, each line then
 * parsed as a request, as the run loop does. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/jsonl.h"
#include "coordinator/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!size) return 0;
    FILE *f = fmemopen((void *)data, size, "r");
    if (!f) return 0;
    egm_jsonl *r = egm_jsonl_from_file(f, "fuzz.jsonl");
    if (r) {
        egm_request d;
        egm_request_defaults(&d);
        const char *line;
        size_t len;
        long lineno, last = 0;
        egm_err e;
        while (egm_jsonl_next(r, &line, &len, &lineno, &e) == 1) {
            if (lineno <= last || len == 0 || line[len] != 0) abort();
            last = lineno;
            egm_request q;
            memset(&q, 0, sizeof q);
            (void)egm_request_parse(line, len, lineno, egm_jsonl_origin(r), &d, &q, &e);
            egm_request_free(&q);
        }
        egm_jsonl_close(r);
    }
    fclose(f);
    return 0;
}
