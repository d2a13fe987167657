/* cmd_quantize.c - `egmla quantize`: a model as a GGUF file of one storage
 * type (model/gguf_export.h does the work). */
#include <stdio.h>
#include <string.h>

#include "base/args.h"
#include "base/exit.h"
#include "coordinator/commands.h"
#include "model/gguf_export.h"

int egm_cmd_quantize(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *type = "q8_0";
    egm_opt opts[] = {
        {"model", EGM_OPT_STRING, &model, "checkpoint directory or GGUF file to convert", 0, 0, "DIR|FILE"},
        {"out", EGM_OPT_STRING, &out, "GGUF file to write", 0, 0, "FILE.gguf"},
        {"type", EGM_OPT_STRING, &type, "f32, f16, bf16, q8_0, q4_0, q4_1, q4_k or q6_k", 0, 0, "TYPE"},
        {0}};
    egm_cmd cmd = {"egmla quantize", NULL,
                   "Writes a llama, deepseek_v2 or egmla model as a GGUF file (architectures "
                   "llama, deepseek2, egmla) with its matrices in TYPE and its norms in F32, "
                   "tokenizer included. See docs/LLAMACPP.md.",
                   opts};
    int rc = egm_args_main(&cmd, argc, argv);
    if (rc >= 0) return rc;
    if (!model || !out) {
        fprintf(stderr, "egmla quantize: --%s is required (see egmla quantize --help)\n",
                model ? "out" : "model");
        return EGM_EXIT_USAGE;
    }
    int t = egm_gguf_type_from_name(type);
    if (t < 0) {
        fprintf(stderr, "egmla quantize: --type: expected f32, f16, bf16, q8_0, q4_0, q4_1, q4_k "
                "or q6_k, found \"%s\"\n", type);
        return EGM_EXIT_USAGE;
    }
    egm_err e;
    if (egm_gguf_export(model, out, t, &e)) {
        fprintf(stderr, "egmla: %s\n", e.msg);
        return EGM_EXIT_FAIL;
    }
    fprintf(stderr, "egmla quantize: wrote %s (%s)\n", out, type);
    return EGM_EXIT_OK;
}
