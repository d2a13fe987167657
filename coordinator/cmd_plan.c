/* cmd_plan.c - `egmla plan`: what a pipeline of this model will do on these
 * nodes, from their calibrations (coordinator/plan.h has the model). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/args.h"
#include "base/exit.h"
#include "coordinator/bench_report.h"
#include "coordinator/calibrate.h"
#include "coordinator/commands.h"
#include "coordinator/plan.h"
#include "model/source.h"
#include "worker/wire.h"

typedef struct {
    const char *model, *config, *topology, *calibration, *json, *wire, *budget_s, *kv_dtype;
    const char *stage_ms;
    int ranks, batch, context, micro_batches, chunk, steps, threads, calib_threads;
    float gbps, us;
} plan_opts;

/* The calibration of each stage's node: its topology entry, else
 * --calibration, else one measured here now (loaded/measured once each). */
static int stage_calibs(const plan_opts *po, const egm_topology *t, const egm_config *c,
                        egm_calib *own, int *have_own, egm_calib *nodes,
                        const egm_calib **k, egm_err *e) {
    for (int j = 0; j < t->n_stages; j++) {
        const egm_topo_node *nd = &t->nodes[t->stages[j].node];
        egm_calib *nk = &nodes[t->stages[j].node];
        if (nd->calibration[0]) {
            if (!nk->n_rows && egm_calib_load_node(t, t->stages[j].node, c, nk, e)) return -1;
            k[j] = nk;
            continue;
        }
        if (!*have_own) {
            if (po->calibration && !strcmp(po->calibration, "analytic")) {
                egm_calib_analytic(c, own); /* a nominal node: no measurement */
            } else if (po->calibration) {
                if (egm_calib_load(po->calibration, own, e) ||
                    egm_calib_check(own, c, po->calibration, e))
                    return -1;
            } else {
                fprintf(stderr, "egmla plan: no calibration given: measuring this node "
                        "(egmla bench --calibrate; about 10-30 s)\n");
                egm_bench_opts bo = {.config = po->config, .model = po->model,
                                     .chunk = po->chunk, .threads = po->calib_threads,
                                     .seed = 1};
                int helper;
                if (egm_calibrate_node(&bo, own, &helper, e)) return -1;
            }
            *have_own = 1;
        }
        k[j] = own;
    }
    return 0;
}

static json_t *plan_json(const plan_opts *po, const egm_plan_in *in, const egm_plan_out *p) {
    json_t *st = json_array();
    for (int j = 0; j < p->n_stages; j++) {
        const egm_plan_stage *s = &p->st[j];
        json_array_append_new(st, json_pack(
            "{s:[i,i], s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:I, s:s}", "layers", s->layer_lo,
            s->layer_hi - 1, "threads", s->threads, "micro_batch_s", s->mb_s, "core_share",
            s->core_share, "busy", s->busy,
            "wait", s->wait, "bubble", s->bubble, "prefill_busy", s->prefill_busy,
            "kv_sequences", (json_int_t)s->kv_seqs, "calibration_host", in->k[j]->host));
    }
    return json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:s, s:f, s:f, s:f, s:f, s:f, s:f, s:f, "
                     "s:f, s:f, s:i, s:s, s:o}",
                     "model", po->config ? po->config : po->model, "stages", p->n_stages,
                     "batch", in->batch, "context", in->context, "micro_batches",
                     p->micro_batches, "rows_per_micro_batch", p->rows, "wire_dtype",
                     egm_wire_dtype_name(in->wd), "link_latency_s", in->link_latency_s,
                     "link_bytes_per_s", in->link_bytes_per_s, "decode_tokens_per_s",
                     p->decode_tok_s, "decode_round_s", p->round_s, "prefill_tokens_per_s",
                     p->prefill_tok_s, "ttft_s", p->ttft_s, "wire_bytes_per_token_per_hop",
                     p->wire_bytes_per_token, "hop_s", p->hop_s, "round_trip_s", p->cycle_s,
                     "micro_batches_needed", p->micro_batches_needed, "bound", p->bound,
                     "per_stage", st);
}

static void plan_print(FILE *f, const egm_plan_in *in, const egm_plan_out *p, int measured) {
    fprintf(f, "pipeline: %d stage%s, batch %d in %d micro-batch%s of %d rows, context %d, "
            "wire %s; link %.3g Gbit/s, %.1f us%s\n", p->n_stages, p->n_stages > 1 ? "s" : "",
            in->batch, p->micro_batches, p->micro_batches > 1 ? "es" : "", p->rows, in->context,
            egm_wire_dtype_name(in->wd), in->link_bytes_per_s * 8 / 1e9,
            in->link_latency_s * 1e6, measured ? "" : " (not measured: assumed)");
    fprintf(f, "decode:  %.1f tokens/s (a round, every sequence one token: %.1f ms)\n",
            p->decode_tok_s, 1e3 * p->round_s);
    fprintf(f, "prefill: %.1f tokens/s, time to first token %.1f ms\n", p->prefill_tok_s,
            1e3 * p->ttft_s);
    if (p->n_stages > 1)
        fprintf(f, "wire:    %.1f bytes per token per hop (a micro-batch's hop: %.3f ms)\n",
                p->wire_bytes_per_token, 1e3 * p->hop_s);
    fprintf(f, "bound:   %s; micro-batches needed to fill the pipeline: %d\n", p->bound,
            p->micro_batches_needed);
    fprintf(f, "stage  layers  threads  ms/micro-batch  busy  wait  bubble  prefill busy  "
            "KV sequences\n");
    for (int j = 0; j < p->n_stages; j++) {
        const egm_plan_stage *s = &p->st[j];
        fprintf(f, "%5d  %2d-%-3d  %7d  %14.2f  %3.0f%%  %3.0f%%  %5.0f%%  %11.0f%%  %12ld\n",
                j + 1, s->layer_lo, s->layer_hi - 1, s->threads, 1e3 * s->mb_s, 100 * s->busy,
                100 * s->wait, 100 * s->bubble, 100 * s->prefill_busy, s->kv_seqs);
    }
    for (int j = 0; j < p->n_stages; j++)
        if (p->st[j].core_share > 1) {
            fprintf(f, "cores:   stages that can work at once share their node's cores "
                    "(its calibration's \"cores\"): stage compute x%.2f", p->st[j].core_share);
            for (int i = j + 1; i < p->n_stages; i++)
                if (p->st[i].core_share > 1) fprintf(f, ", stage %d x%.2f", i + 1, p->st[i].core_share);
            fprintf(f, " (stage %d first)\n", j + 1);
            break;
        }
}

static int plan_main(const plan_opts *po) {
    egm_err e = {{0}};
    egm_config c;
    egm_topology t;
    memset(&t, 0, sizeof t);
    int rc = EGM_EXIT_FAIL, have_own = 0;
    egm_calib *own = calloc(1, sizeof *own), *nodes = NULL;
    const egm_calib **k = NULL;
    if (!own) goto oom;
    if (po->config ? egm_config_load(po->config, &c, &e) : egm_model_config(po->model, &c, &e))
        goto fail;
    if (po->topology ? egm_topology_load(po->topology, &t, &e)
                     : egm_topology_auto(po->ranks - 1, &t)) {
        if (!po->topology) goto oom;
        rc = EGM_EXIT_USAGE;
        goto fail;
    }
    if (po->threads)
        for (int j = 0; j < t.n_stages; j++) t.stages[j].threads = po->threads;
    nodes = calloc((size_t)t.n_nodes, sizeof *nodes);
    k = calloc((size_t)t.n_stages, sizeof *k);
    if (!nodes || !k) goto oom;
    if (stage_calibs(po, &t, &c, own, &have_own, nodes, k, &e)) goto fail;
    egm_plan_in in = {.c = &c, .t = &t, .k = k, .batch = po->batch, .context = po->context,
                      .micro_batches = po->micro_batches, .chunk = po->chunk,
                      .steps = po->steps, .wd = t.wire_dtype,
                      .kv_bf16 = !strcmp(po->kv_dtype, "bf16"), .block_tokens = 16};
    if (po->wire) egm_wire_dtype_parse(po->wire, &in.wd); /* checked with the options */
    double stage_s[EGM_PLAN_MAX_STAGES];
    if (po->stage_ms) {
        const char *q = po->stage_ms;
        int n = 0;
        for (char *end;; q = end + 1) {
            double v = strtod(q, &end);
            if (end == q || !(v > 0) || n == EGM_PLAN_MAX_STAGES || (*end && *end != ',')) {
                n = -1;
                break;
            }
            stage_s[n++] = v * 1e-3;
            if (!*end) break;
        }
        if (n != t.n_stages) {
            fprintf(stderr, "egmla plan: --stage-ms: expected %d positive numbers (one per "
                    "stage), found \"%s\"\n", t.n_stages, po->stage_ms);
            rc = EGM_EXIT_USAGE;
            goto out;
        }
        in.stage_mb_s = stage_s;
    }
    if (egm_parse_size(po->budget_s, &in.kv_budget)) {
        fprintf(stderr, "egmla plan: --kv-budget: expected a size such as 4GiB, found \"%s\"\n",
                po->budget_s);
        rc = EGM_EXIT_USAGE;
        goto out;
    }
    /* the link: the options, else the first stage's node's calibration */
    in.link_latency_s = po->us >= 0 ? po->us * 1e-6 : k[0]->link_latency_s;
    in.link_bytes_per_s = po->gbps > 0 ? po->gbps * 1e9 / 8 : k[0]->link_bytes_per_s;
    int measured = po->gbps > 0 || k[0]->link_measured;
    egm_plan_out *p = malloc(sizeof *p);
    if (!p) goto oom;
    if (egm_plan_run(&in, p, &e)) {
        free(p);
        goto fail;
    }
    plan_print(stdout, &in, p, measured);
    rc = EGM_EXIT_OK;
    if (po->json) {
        json_t *j = plan_json(po, &in, p);
        if (!j || (strcmp(po->json, "-") ? json_dump_file(j, po->json, JSON_INDENT(2))
                                         : json_dumpf(j, stdout, JSON_INDENT(2)))) {
            fprintf(stderr, "egmla plan: %s: cannot write\n", po->json);
            rc = EGM_EXIT_FAIL;
        }
        json_decref(j);
    }
    free(p);
    goto out;
oom:
    egm_fail(&e, "out of memory");
fail:
    fprintf(stderr, "egmla plan: %s\n", e.msg);
out:
    free(own), free(nodes), free(k);
    egm_topology_free(&t);
    return rc;
}

int egm_cmd_plan(int argc, char **argv) {
    plan_opts po = {.batch = 32, .context = 128, .chunk = 512, .steps = 16, .gbps = 0,
                    .us = -1, .budget_s = "4GiB", .kv_dtype = "fp32", .calib_threads = 1};
    egm_opt opts[] = {
        {"config", EGM_OPT_STRING, &po.config, "config.json of the model", 0, 0, "FILE"},
        {"model", EGM_OPT_STRING, &po.model, "a model directory or .gguf", 0, 0, "DIR"},
        {"topology", EGM_OPT_STRING, &po.topology, "the cluster: stages, threads, wire dtype, "
         "per-node calibration files", 0, 0, "FILE"},
        {"ranks", EGM_OPT_INT, &po.ranks, "or: rank 0 + N-1 auto stages on this node", 2, 4097, "N"},
        {"batch", EGM_OPT_INT, &po.batch, "decode sequences in flight", 1, 1 << 20, "B"},
        {"context", EGM_OPT_INT, &po.context, "prompt tokens (prefill) and cached positions "
         "(decode)", 1, 1 << 24, "C"},
        {"micro-batches", EGM_OPT_INT, &po.micro_batches, "decode micro-batches in flight (0: "
         "one per stage)", 0, 1 << 20, "M"},
        {"wire-dtype", EGM_OPT_STRING, &po.wire, "bf16, fp32 or int8 (default: the topology's)",
         0, 0, "T"},
        {"link-gbps", EGM_OPT_FLOAT, &po.gbps, "stage-to-stage bandwidth, Gbit/s (default: "
         "the calibration's)", 0, 1e6, "G"},
        {"link-us", EGM_OPT_FLOAT, &po.us, "stage-to-stage latency, microseconds", 0, 1e9, "L"},
        {"calibration", EGM_OPT_STRING, &po.calibration, "egmla bench --calibrate JSON for "
         "nodes without their own (default: calibrate this node now; \"analytic\": a nominal "
         "node of 25 GFLOP/s and 10 GB/s per thread)", 0, 0, "FILE"},
        {"calibrate-threads", EGM_OPT_INT, &po.calib_threads, "threads when calibrating now",
         1, 256, "N"},
        {"threads", EGM_OPT_INT, &po.threads, "every stage's threads (0: the topology's)", 0,
         4096, "N"},
        {"chunk", EGM_OPT_INT, &po.chunk, "prefill rows per chunk", 1, 1 << 20, "N"},
        {"steps", EGM_OPT_INT, &po.steps, "decode rounds replayed (as bench's --steps)", 1,
         1 << 20, "N"},
        {"kv-budget", EGM_OPT_STRING, &po.budget_s, "KV bytes per stage (unless the topology "
         "gives one)", 0, 0, "SIZE"},
        {"kv-dtype", EGM_OPT_STRING, &po.kv_dtype, "KV cache storage: fp32 or bf16", 0, 0, "T"},
        {"json", EGM_OPT_STRING, &po.json, "also write the plan as JSON (- = stdout)", 0, 0,
         "FILE"},
        {"stage-ms", EGM_OPT_STRING, &po.stage_ms, "each stage's measured compute per decode "
         "micro-batch, comma-separated ms (e.g. from egmla bench's busy_s / micro_batches): "
         "checks the pipeline model apart from the calibration", 0, 0, "LIST"},
        {NULL, 0, NULL, NULL, 0, 0, NULL}};
    egm_cmd cmd = {"egmla plan", NULL,
                   "Predicts a pipeline's prefill and decode tokens/s, time to first token, "
                   "each stage's busy / wait / bubble, wire bytes, KV capacity and what bounds "
                   "the run, from per-node calibrations (egmla bench --calibrate). See "
                   "docs/CLUSTER.md.",
                   opts};
    egm_err e;
    int rc = egm_args_parse(&cmd, argc, argv, NULL, &e);
    if (rc == 1) return EGM_EXIT_OK;
    const char *bad = NULL;
    egm_wire_dtype wd;
    if (rc < 0) bad = e.msg;
    else if (!po.config == !po.model) bad = "egmla plan: give exactly one of --config FILE and --model DIR";
    else if (!po.topology == !po.ranks) bad = "egmla plan: give exactly one of --topology FILE and --ranks N";
    else if (po.wire && egm_wire_dtype_parse(po.wire, &wd))
        bad = "egmla plan: --wire-dtype: expected bf16, fp32 or int8";
    else if (strcmp(po.kv_dtype, "fp32") && strcmp(po.kv_dtype, "bf16"))
        bad = "egmla plan: --kv-dtype: expected fp32 or bf16";
    else if ((po.gbps > 0) != (po.us >= 0))
        bad = "egmla plan: give --link-gbps and --link-us together";
    if (bad) {
        fprintf(stderr, "%s\n", bad);
        return EGM_EXIT_USAGE;
    }
    return plan_main(&po);
}
