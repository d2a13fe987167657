/* test_plan.c - the pipeline model's arithmetic on synthetic calibrations
 * (flat costs, so every number can be worked out by hand), and the
 * calibration file's round trip and messages. Nothing is timed. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "coordinator/plan.h"
#include "worker/kvcache.h"
#include "worker/wire.h"

static const char *CFG =
    "{\"model_type\": \"llama\", \"vocab_size\": 16, \"hidden_size\": 8,"
    " \"intermediate_size\": 16, \"num_hidden_layers\": 4,"
    " \"num_attention_heads\": 2, \"rms_norm_eps\": 1e-5,"
    " \"rope_theta\": 10000, \"max_position_embeddings\": 64}";

/* Every layer 1 ms whatever the rows, the head 2 ms, nothing else costs. */
static void flat(egm_calib *k) {
    memset(k, 0, sizeof *k);
    snprintf(k->model_type, sizeof k->model_type, "llama");
    k->num_layers = 4, k->hidden_size = 8, k->vocab_size = 16, k->threads = 1;
    k->n_rows = 2, k->rows[0] = 1, k->rows[1] = 64;
    k->layer_s[0] = k->layer_s[1] = 1e-3;
    k->head_s[0] = k->head_s[1] = 2e-3;
    k->n_chunks = 2, k->chunks[0] = 1, k->chunks[1] = 512;
    k->prefill_s[0] = k->prefill_s[1] = 1e-3;
    k->link_bytes_per_s = 1e15;
}

typedef struct {
    egm_config c;
    egm_topology t;
    egm_calib k;
    const egm_calib *ks[2];
    egm_plan_in in;
    egm_plan_out out;
} rig;

static rig *rig_new(int batch, int m) {
    rig *g = calloc(1, sizeof *g);
    egm_err e = {{0}};
    assert_int_equal(egm_config_parse(CFG, strlen(CFG), "cfg", &g->c, &e), 0);
    assert_int_equal(egm_topology_auto(2, &g->t), 0);
    flat(&g->k);
    g->ks[0] = g->ks[1] = &g->k;
    g->in = (egm_plan_in){.c = &g->c, .t = &g->t, .k = g->ks, .batch = batch, .context = 16,
                          .micro_batches = m, .chunk = 512, .steps = 8, .wd = EGM_WIRE_BF16,
                          .link_latency_s = 0, .link_bytes_per_s = 1e15,
                          .kv_budget = 1 << 20, .block_tokens = 16};
    return g;
}

static void rig_free(rig *g) {
    egm_topology_free(&g->t);
    free(g);
}

#define NEAR(a, b) assert_true(fabs((double)(a) - (b)) <= 1e-6 * fabs((double)(b)) + 1e-12)

/* 4 layers of 1 ms + a 2 ms head on 2 stages: 3 | 1 + head, 3 ms each. Two
 * micro-batches keep both busy: a round (8 tokens) is 2 x 3 ms. */
static void test_full_pipeline(void **state) {
    (void)state;
    rig *g = rig_new(8, 2);
    egm_err e = {{0}};
    assert_int_equal(egm_plan_run(&g->in, &g->out, &e), 0);
    assert_int_equal(g->out.st[0].layer_hi, 3);
    assert_int_equal(g->out.rows, 4);
    NEAR(g->out.st[0].mb_s, 3e-3);
    NEAR(g->out.st[1].mb_s, 3e-3);
    NEAR(g->out.round_s, 6e-3);
    NEAR(g->out.decode_tok_s, 8 / 6e-3);
    NEAR(g->out.st[0].busy, 1);
    NEAR(g->out.st[1].busy, 1);
    assert_int_equal(g->out.bound_kind, 0);
    assert_int_equal(g->out.micro_batches_needed, 2);
    /* bf16: 2 D bytes + the header's share of a 4-row micro-batch */
    NEAR(g->out.wire_bytes_per_token, 16 + egm_plan_header_bytes(4) / 4);
    /* prefill: one 16-token chunk through both stages, the head once */
    NEAR(g->out.ttft_s, 3e-3 + 1e-3 + 2e-3);
    NEAR(g->out.prefill_tok_s, 16 / 6e-3);
    rig_free(g);
}

/* Measured stage times replace the calibration's: 5 and 3 ms a
 * micro-batch, two micro-batches: a round is 2 x 5 ms, stage 2 busy 60 %. */
static void test_stage_times_given(void **state) {
    (void)state;
    rig *g = rig_new(8, 2);
    egm_err e = {{0}};
    double ms[2] = {5e-3, 3e-3};
    g->in.stage_mb_s = ms;
    assert_int_equal(egm_plan_run(&g->in, &g->out, &e), 0);
    NEAR(g->out.round_s, 10e-3);
    NEAR(g->out.st[1].busy, 0.6);
    assert_string_equal(g->out.bound, "stage 1 compute");
    rig_free(g);
}

/* One micro-batch: the stages take turns; the round is the round trip. */
static void test_round_trip_bound(void **state) {
    (void)state;
    rig *g = rig_new(8, 1);
    egm_err e = {{0}};
    g->k.rank0_s = 1e-3;
    assert_int_equal(egm_plan_run(&g->in, &g->out, &e), 0);
    NEAR(g->out.round_s, 7e-3);
    NEAR(g->out.st[0].busy, 3.0 / 7);
    NEAR(g->out.st[1].bubble, 4.0 / 7);
    assert_int_equal(g->out.bound_kind, 2);
    assert_non_null(strstr(g->out.bound, "round trip"));
    /* with rank 0's 1 ms, two micro-batches (6 ms of work a round) still wait
     * for the 7 ms round trip; three fill it */
    assert_int_equal(g->out.micro_batches_needed, 3);
    rig_free(g);
}

/* A slow link: each 4-row hop takes 5 ms, so with 4 micro-batches the hop
 * bounds the round (4 x 5 ms against 4 x 3 ms of compute and an 11 ms round
 * trip), and stage 2 spends the rest waiting on the wire or idle. */
static void test_link_bound(void **state) {
    (void)state;
    rig *g = rig_new(16, 4);
    egm_err e = {{0}};
    double bytes = egm_wire_bytes(EGM_WIRE_BF16, 4, 8) + egm_plan_header_bytes(4);
    g->in.link_bytes_per_s = bytes / 5e-3;
    assert_int_equal(egm_plan_run(&g->in, &g->out, &e), 0);
    assert_int_equal(g->out.bound_kind, 1);
    assert_string_equal(g->out.bound, "link stage 1 -> 2");
    NEAR(g->out.hop_s, 5e-3);
    /* the round: two hops back to back, and rank 0's small messages */
    assert_true(g->out.round_s >= 20e-3 && g->out.round_s < 20.5e-3);
    assert_true(g->out.st[1].wait > 0.3);
    NEAR(g->out.st[1].busy + g->out.st[1].wait + g->out.st[1].bubble, 1);
    /* int8 on a link twice as fast: compute bound again */
    g->in.wd = EGM_WIRE_INT8;
    g->in.link_bytes_per_s = bytes / 2.5e-3;
    assert_int_equal(egm_plan_run(&g->in, &g->out, &e), 0);
    assert_int_equal(g->out.bound_kind, 0);
    rig_free(g);
}

/* Prefill in 4 chunks: stage 1 (3 ms a chunk) feeds stage 2 (1 ms, + 2 ms
 * head on the last): 4 x 3 + 1 + 2 ms. */
static void test_prefill_chunks(void **state) {
    (void)state;
    rig *g = rig_new(1, 1);
    egm_err e = {{0}};
    g->in.context = 64;
    g->in.chunk = 16;
    assert_int_equal(egm_plan_run(&g->in, &g->out, &e), 0);
    NEAR(g->out.ttft_s, 15e-3);
    NEAR(g->out.st[0].prefill_busy, 12.0 / 15);
    rig_free(g);
}

/* KV: each stage caches its own layers only. */
static void test_kv_per_stage(void **state) {
    (void)state;
    rig *g = rig_new(8, 2);
    egm_err e = {{0}};
    assert_int_equal(egm_plan_run(&g->in, &g->out, &e), 0);
    int per = (16 + 8 + 1 + 15) / 16;
    long want0 = egm_kv_blocks_for_budget(1 << 20, 3, egm_config_kv_elems(&g->c), 0, 0, 16) / per;
    long want1 = egm_kv_blocks_for_budget(1 << 20, 1, egm_config_kv_elems(&g->c), 0, 0, 16) / per;
    assert_int_equal(g->out.st[0].kv_seqs, want0);
    assert_int_equal(g->out.st[1].kv_seqs, want1);
    assert_true(want1 > 2 * want0);
    rig_free(g);
}

/* Interpolation, and the JSON file round trip with its messages. */
/* Both stages on one node of 1 core: with 2 micro-batches both work at
 * once and each runs at half speed (3 ms -> 6 ms), the node's core is the
 * bound; with 1 micro-batch they take turns and nothing is shared; with 2
 * cores there is a core each. */
static void test_shared_cores(void **state) {
    (void)state;
    rig *g = rig_new(8, 2);
    egm_err e = {{0}};
    g->k.cores = 1;
    assert_int_equal(egm_plan_run(&g->in, &g->out, &e), 0);
    NEAR(g->out.st[0].core_share, 2);
    NEAR(g->out.st[0].mb_s, 6e-3);
    NEAR(g->out.st[1].mb_s, 6e-3);
    NEAR(g->out.round_s, 12e-3);
    assert_int_equal(g->out.bound_kind, 3);
    assert_non_null(strstr(g->out.bound, "1 cores"));
    g->in.micro_batches = 1;
    assert_int_equal(egm_plan_run(&g->in, &g->out, &e), 0);
    NEAR(g->out.st[0].core_share, 1);
    NEAR(g->out.st[1].mb_s, 3e-3);
    g->k.cores = 2, g->in.micro_batches = 2;
    assert_int_equal(egm_plan_run(&g->in, &g->out, &e), 0);
    NEAR(g->out.st[0].mb_s, 3e-3);
    NEAR(g->out.round_s, 6e-3);
    assert_int_equal(g->out.bound_kind, 0);
    rig_free(g);
}

/* Measured co-location replaces the core ratio: 2 copies at once x1.5 at 1
 * row, x2.5 at 9 rows (x2 at 5, between); 2 stages on one node with 2
 * micro-batches of 5 rows work at once: 3 ms -> 6 ms, though the node has a
 * core for each. One micro-batch: they take turns, x1. Three copies not
 * measured: the ratio of threads to cores again. */
static void test_colocated(void **state) {
    (void)state;
    rig *g = rig_new(10, 2);
    egm_err e = {{0}};
    g->k.cores = 2;
    g->k.n_colo_copies = 1, g->k.n_colo_rows = 2;
    g->k.colo_rows[0] = 1, g->k.colo_rows[1] = 9;
    g->k.colo[0][0] = 1.5, g->k.colo[0][1] = 2.5;
    NEAR(egm_calib_colocated(&g->k, 2, 5), 2.0);
    NEAR(egm_calib_colocated(&g->k, 2, 100), 2.5);
    NEAR(egm_calib_colocated(&g->k, 3, 5), 0);
    assert_int_equal(egm_plan_run(&g->in, &g->out, &e), 0);
    NEAR(g->out.st[0].core_share, 2.0);
    NEAR(g->out.st[0].mb_s, 6e-3);
    NEAR(g->out.round_s, 12e-3);
    g->in.micro_batches = 1;
    assert_int_equal(egm_plan_run(&g->in, &g->out, &e), 0);
    NEAR(g->out.st[0].core_share, 1);
    g->in.micro_batches = 2, g->k.cores = 1, g->k.n_colo_copies = 0;
    assert_int_equal(egm_plan_run(&g->in, &g->out, &e), 0);
    NEAR(g->out.st[0].core_share, 2);
    /* A 5 ms link: the stages are busy part of the time and share less; the
     * stretch is the fixed point 1 + the other stage's busy fraction. */
    g->in.link_latency_s = 5e-3;
    assert_int_equal(egm_plan_run(&g->in, &g->out, &e), 0);
    assert_true(g->out.st[0].core_share > 1.05 && g->out.st[0].core_share < 1.95);
    assert_true(fabs(g->out.st[0].core_share - (1 + g->out.st[1].busy)) < 1e-3);
    assert_true(fabs(g->out.st[1].core_share - (1 + g->out.st[0].busy)) < 1e-3);
    rig_free(g);
}

/* A calibration file of the smallest valid shape with `top` after "threads"
 * and `tail` after "rank0_s", and these decode series: egm_calib_load
 * refuses it with a message naming the file and saying `want`. */
static void refused(const char *path, const char *top, const char *rows, const char *layer,
                    const char *head, const char *embed, const char *tail, const char *want) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"egmla_calibration\": 1, \"model\": {\"model_type\": \"llama\", \"num_layers\": 4,"
            " \"hidden_size\": 8, \"vocab_size\": 16}, \"threads\": 1%s, \"decode\": {\"context\": 1,"
            " \"rows\": %s, \"layer_s\": %s, \"head_s\": %s, \"embed_s\": %s, \"attend_s\": 0},"
            " \"prefill\": {\"chunks\": [1], \"layer_s\": [1], \"attend_s\": 0}, \"link\":"
            " {\"measured\": false, \"latency_s\": 0, \"bytes_per_s\": 1}, \"rank0_s\": 0%s}",
            top, rows, layer, head, embed, tail);
    fclose(f);
    egm_calib r;
    egm_err e = {{0}};
    assert_int_equal(egm_calib_load(path, &r, &e), -1);
    assert_non_null(strstr(e.msg, path));
    assert_non_null(strstr(e.msg, want));
}

static void test_calib_file(void **state) {
    (void)state;
    egm_calib k, r;
    flat(&k);
    k.layer_s[1] = 64e-3; /* 1 ms at 1 row, 64 ms at 64 rows: linear between */
    k.attend_s = 1e-6;
    k.cores = 3, k.attn_bf16 = 1;
    k.n_colo_copies = 2, k.n_colo_rows = 1, k.colo_rows[0] = 8;
    k.colo[0][0] = 1.25, k.colo[1][0] = 1.75;
    NEAR(egm_calib_layer(&k, 32, 0), 32e-3);
    NEAR(egm_calib_layer(&k, 32, 100), 32e-3 + 32 * 100 * 1e-6);
    NEAR(egm_calib_layer(&k, 128, 0), 128e-3);
    char path[] = "/tmp/egm-calib-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    egm_err e = {{0}};
    assert_int_equal(egm_calib_save(path, &k, &e), 0);
    assert_int_equal(egm_calib_load(path, &r, &e), 0);
    NEAR(r.layer_s[1], 64e-3);
    NEAR(r.head_s[0], 2e-3);
    assert_int_equal(r.cores, 3);
    assert_int_equal(r.attn_bf16, 1);
    assert_int_equal(r.n_chunks, 2);
    assert_int_equal(r.n_colo_copies, 2);
    NEAR(egm_calib_colocated(&r, 3, 8), 1.75);
    refused(path, "", "[1, 2]", "[1, -2]", "[1, 1]", "[0, 0]", "",
            "decode.layer_s[1]: expected a finite number >= 0");
    refused(path, ", \"attn_dtype\": \"bf17\"", "[1]", "[1]", "[1]", "[0]", "",
            "attn_dtype: expected \"fp32\" or \"bf16\", found \"bf17\"");
    refused(path, "", "[1]", "[1]", "[1]", "[0]",
            ", \"colocated\": {\"rows\": [1, 8], \"copies\": [2, 4], \"slowdown\": [[1, 1], [2, 2]]}",
            "colocated.copies[1]: expected 3");
    FILE *f = fopen(path, "w");
    fputs("{\"a\": 1}", f);
    fclose(f);
    assert_int_equal(egm_calib_load(path, &r, &e), -1);
    assert_non_null(strstr(e.msg, "not an egmla calibration"));
    unlink(path);
    /* a calibration of another model is refused */
    egm_config c;
    assert_int_equal(egm_config_parse(CFG, strlen(CFG), "cfg", &c, &e), 0);
    k.hidden_size = 16;
    assert_int_equal(egm_calib_check(&k, &c, "x.json", &e), -1);
    assert_non_null(strstr(e.msg, "x.json: calibrated for a llama model (D 16"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_pipeline),   cmocka_unit_test(test_stage_times_given),   cmocka_unit_test(test_round_trip_bound),
        cmocka_unit_test(test_link_bound),      cmocka_unit_test(test_prefill_chunks),
        cmocka_unit_test(test_kv_per_stage),    cmocka_unit_test(test_calib_file),
        cmocka_unit_test(test_shared_cores),    cmocka_unit_test(test_colocated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
