/* test_bench.c - `egmla bench` end to end on the tiny fixture models: the
 * JSON report's shape and its exact numbers (KV arithmetic, cost model),
 * and the refusal of bad command lines. Speeds are only checked positive. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coordinator/bench.h"
#include "coordinator/commands.h"
#include "coordinator/roofline.h"
#include "model/config.h"
#include "worker/kvcache.h"

static char dir[64];

static int setup(void **st) {
    (void)st;
    strcpy(dir, "/tmp/egm_bench_XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **st) {
    (void)st;
    char p[128];
    snprintf(p, sizeof p, "%s/out.json", dir);
    unlink(p);
    return rmdir(dir);
}

/* Runs bench with argv (NULL-terminated) and returns its exit status. */
static int run(const char **args) {
    char *argv[64];
    int n = 0;
    for (; args[n]; n++) argv[n] = (char *)args[n];
    argv[n] = NULL;
    return egm_cmd_bench(n, argv);
}

static json_t *field(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    if (!v) fail_msg("missing key %s", k);
    return v;
}

static double num(json_t *o, const char *k) { return json_number_value(field(o, k)); }

static void check_report(const char *model, int batches, int contexts, int steps) {
    char path[128], cfgp[256];
    snprintf(path, sizeof path, "%s/out.json", dir);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    assert_non_null(root);
    json_t *rl = field(root, "roofline");
    assert_true(num(rl, "sgemm_gflops") > 0);
    assert_true(num(rl, "mem_bw_gbs") > 0);

    egm_config c;
    egm_err e;
    snprintf(cfgp, sizeof cfgp, "%s/config.json", model);
    assert_int_equal(egm_config_load(cfgp, &c, &e), 0);

    json_t *res = field(root, "results");
    assert_int_equal(json_array_size(res), (size_t)contexts * (batches + 1));
    int n_prefill = 0;
    for (size_t i = 0; i < json_array_size(res); i++) {
        json_t *r = json_array_get(res, i);
        const char *ph = json_string_value(field(r, "phase"));
        assert_non_null(ph);
        assert_int_equal(json_integer_value(field(r, "ranks")), 1);
        assert_string_equal(json_string_value(field(r, "attn_dtype")), "fp32");
        assert_true(num(r, "tokens_per_s") > 0);
        assert_true(num(r, "ratio_to_sgemm") > 0);
        assert_true(num(r, "ratio_to_bw") > 0);
        int b = (int)json_integer_value(field(r, "batch"));
        int ctx = (int)json_integer_value(field(r, "context"));
        /* The flops are the cost model's, for this batch. */
        egm_step_cost k;
        if (!strcmp(ph, "prefill")) {
            n_prefill++;
            assert_int_equal(b, 1);
            assert_true(num(r, "ttft_ms") > 0);
            /* a short prompt is timed up to 5 times; the median counts */
            json_int_t runs = json_integer_value(field(r, "prefills"));
            assert_true(runs >= 1 && runs <= 5);
            assert_true(num(r, "ttft_ms_mean") > 0);
            if (runs == 1) assert_true(num(r, "ttft_ms_mean") == num(r, "ttft_ms"));
            egm_step_cost_of(&c, ctx, 1, 0, 1, 0, &k);
            /* the causal triangle: row t attends t + 1 positions; each
             * chunk rebuilds EG-MLA's z for every position up to its end */
            int chunk = (int)json_integer_value(field(r, "chunk_rows"));
            long seg = 0;
            for (int p0 = 0; p0 < ctx; p0 += chunk) seg += p0 + chunk < ctx ? p0 + chunk : ctx;
            assert_true(num(r, "attn_flops") ==
                        egm_attn_flops_of(&c, ctx, (long)ctx * (ctx + 1) / 2, seg, 1));
        } else {
            assert_string_equal(ph, "decode");
            assert_int_equal(json_integer_value(field(r, "steps")), steps);
            assert_true(num(r, "ms_per_step") > 0);
            assert_true(num(r, "proj_ms") > 0);
            assert_true(num(r, "attn_ms") > 0);
            egm_step_cost_of(&c, b, b, 0, 1, 0, &k);
            /* step k of `steps` attends ctx + 2 + k positions per row */
            double mean = ctx + 2 + (steps - 1) / 2.0;
            double want = egm_attn_flops_of(&c, b, 0, 0, 1) +
                          (egm_attn_flops_of(&c, 0, b, b, 1) * mean);
            assert_true(fabs(num(r, "attn_flops") - want) <= 1e-9 * want);
            /* tokens/s is batch over the step time */
            assert_true(fabs(num(r, "tokens_per_s") * num(r, "ms_per_step") / 1e3 - b) < 1e-6 * b);
        }
        assert_true(num(r, "proj_flops") == k.proj_flops);
        /* the compute roofline counts projections and attention */
        double secs = !strcmp(ph, "prefill") ? num(r, "ttft_ms") / 1e3 : num(r, "ms_per_step") / 1e3;
        double rc = (k.proj_flops + num(r, "attn_flops")) / secs * 1e-9 / num(r, "sgemm_gflops");
        assert_true(fabs(num(r, "ratio_to_compute_roofline") - rc) <= 1e-9 * rc);
    }
    assert_int_equal(n_prefill, contexts);

    json_t *kv = field(root, "kv");
    size_t per = egm_kv_bytes_per_token(c.num_layers, egm_config_kv_elems(&c),
                                        c.arch == EGM_EGMLA, 0);
    assert_int_equal(json_integer_value(field(kv, "bytes_per_token")), (json_int_t)per);
    json_t *fits = field(kv, "fits");
    assert_int_equal(json_array_size(fits), (size_t)contexts);
    for (size_t i = 0; i < json_array_size(fits); i++) {
        json_t *f = json_array_get(fits, i);
        int ctx = (int)json_integer_value(field(f, "context"));
        int blocks = egm_kv_blocks_for_budget((size_t)1 << 20, c.num_layers,
                                              egm_config_kv_elems(&c), c.arch == EGM_EGMLA, 0, 16);
        assert_int_equal(json_integer_value(field(f, "sequences")), blocks / ((ctx + 15) / 16));
        /* and a real pool of that budget holds exactly as many */
        assert_int_equal(json_integer_value(field(f, "verified_sequences")),
                         json_integer_value(field(f, "sequences")));
    }
    json_decref(root);
}

static void test_egmla_model(void **st) {
    (void)st;
    char out[128];
    snprintf(out, sizeof out, "%s/out.json", dir);
    const char *a[] = {"--model", "tests/fixtures/models/egmla_ln", "--batch", "1,3",
                       "--context", "5,40", "--steps", "3", "--chunk", "16", "--reps", "1",
                       "--bw-mib", "1", "--kv-budget", "1MiB", "--json", out, NULL};
    assert_int_equal(run(a), EGM_EXIT_OK);
    check_report("tests/fixtures/models/egmla_ln", 2, 2, 3);
}

static void test_llama_config(void **st) {
    (void)st;
    char out[128];
    snprintf(out, sizeof out, "%s/out.json", dir);
    /* --config: synthetic weights of the fixture's shape. */
    const char *a[] = {"--config", "tests/fixtures/models/llama_gqa_tied/config.json",
                       "--batch", "2", "--context", "9", "--steps", "2", "--reps", "1",
                       "--bw-mib", "1", "--kv-budget", "1MiB", "--threads", "1",
                       "--json", out, NULL};
    assert_int_equal(run(a), EGM_EXIT_OK);
    check_report("tests/fixtures/models/llama_gqa_tied", 1, 1, 2);
}

static void test_bad_usage(void **st) {
    (void)st;
    const char *m = "tests/fixtures/models/mla";
    const char *a1[] = {"--model", m, "--batch", "1,x", NULL};
    assert_int_equal(run(a1), EGM_EXIT_USAGE);
    const char *a2[] = {"--model", m, "--batch", "0", NULL};
    assert_int_equal(run(a2), EGM_EXIT_USAGE);
    const char *a3[] = {"--model", m, "--config", "x.json", NULL};
    assert_int_equal(run(a3), EGM_EXIT_USAGE);
    const char *a4[] = {"--batch", "1", NULL};
    assert_int_equal(run(a4), EGM_EXIT_USAGE);
    const char *a5[] = {"--model", m, "--kv-dtype", "fp8", NULL};
    assert_int_equal(run(a5), EGM_EXIT_USAGE);
    const char *a6[] = {"--model", m, "--kv-budget", "lots", NULL};
    assert_int_equal(run(a6), EGM_EXIT_USAGE);
    /* context + steps past the model's max_position_embeddings (128) */
    const char *a7[] = {"--model", m, "--context", "120", "--steps", "16", "--bw-mib", "1", NULL};
    assert_int_equal(run(a7), EGM_EXIT_USAGE);
    const char *a8[] = {"--config", "tests/fixtures/no/such/config.json", NULL};
    assert_int_equal(run(a8), EGM_EXIT_FAIL);
    const char *a9[] = {"--model", m, "--frobnicate", NULL};
    assert_int_equal(run(a9), EGM_EXIT_USAGE);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_egmla_model),
        cmocka_unit_test(test_llama_config),
        cmocka_unit_test(test_bad_usage),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
