/* serve_metrics.c - GET /metrics: Prometheus text exposition (0.0.4). */
#include "coordinator/serve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void gauge(FILE *b, const char *name, const char *help, double v) {
    fprintf(b, "# HELP %s %s\n# TYPE %s gauge\n%s %.9g\n", name, help, name, name, v);
}

static void counter(FILE *b, const char *name, const char *help, double v) {
    fprintf(b, "# HELP %s %s\n# TYPE %s counter\n%s %.9g\n", name, help, name, name, v);
}

static void hist(FILE *b, const char *name, const char *help, const srv_hist *h) {
    fprintf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    long cum = 0;
    for (int i = 0; i < SRV_HIST_N; i++) {
        cum += h->count[i];
        if (i == SRV_HIST_N - 1) fprintf(b, "%s_bucket{le=\"+Inf\"} %ld\n", name, cum);
        else fprintf(b, "%s_bucket{le=\"%g\"} %ld\n", name, h->le[i], cum);
    }
    fprintf(b, "%s_sum %.9g\n%s_count %ld\n", name, h->sum, name, h->n);
}

char *srv_metrics_text(srv *s) {
    char *text = NULL;
    size_t len = 0;
    FILE *b = open_memstream(&text, &len);
    if (!b) return NULL;
    pthread_mutex_lock(&s->mu);
    fprintf(b, "# HELP egmla_requests_total API requests by outcome.\n"
            "# TYPE egmla_requests_total counter\n");
    for (int i = 0; i < SRV_N_OUTCOMES; i++)
        fprintf(b, "egmla_requests_total{outcome=\"%s\"} %ld\n", srv_outcome_names[i],
            s->outcomes[i]);
    counter(b, "egmla_prompt_tokens_total", "Prompt tokens of finished requests.",
            (double)s->prompt_tokens);
    counter(b, "egmla_generated_tokens_total", "Tokens generated for finished requests.",
            (double)s->generated_tokens);
    gauge(b, "egmla_queue_length", "Requests waiting for a sequence slot.",
          s->q_len + s->load.waiting);
    gauge(b, "egmla_running_sequences", "Sequences in the continuous batch.", s->load.running);
    gauge(b, "egmla_sequence_slots", "Sequences the batch holds at most.", s->load.slots);
    gauge(b, "egmla_kv_blocks_used", "KV cache blocks reserved by running sequences.",
          s->load.kv_blocks_used);
    gauge(b, "egmla_kv_blocks_total", "KV cache blocks of the smallest stage.",
          s->load.kv_blocks_total);
    hist(b, "egmla_time_to_first_token_seconds", "From the request queued to its first token.",
         &s->ttft);
    hist(b, "egmla_inter_token_latency_seconds", "Between two tokens of one request.", &s->itl);
    double up = srv_now() - s->t_start;
    counter(b, "egmla_pipeline_busy_seconds_total",
            "Seconds the coordinator spent in the pipeline: computing (one process) or waiting "
            "for the stages' results (mpirun).", s->load.busy_s);
    fprintf(b, "# HELP egmla_stage_busy_fraction Busy seconds over elapsed seconds, "
            "cumulative: stage=\"N\" each stage's own (stage forward and head, since it "
            "started; refreshed about once a second), stage=\"pipeline\" the coordinator's "
            "time in the pipeline over the server's uptime.\n"
            "# TYPE egmla_stage_busy_fraction gauge\n");
    for (int i = 0; i < s->load.n_stages; i++) {
        const egm_stage_busy *g = &s->load.stages[i];
        double f = g->elapsed_s > 0 ? g->busy_s / g->elapsed_s : 0;
        fprintf(b, "egmla_stage_busy_fraction{stage=\"%d\",layers=\"%d-%d\"} %.6f\n", i,
                g->layer_lo, g->layer_hi - 1, f < 0 ? 0 : f > 1 ? 1 : f);
    }
    fprintf(b, "egmla_stage_busy_fraction{stage=\"pipeline\"} %.6f\n",
            up > 0 ? s->load.busy_s / up : 0);
    fprintf(b, "# HELP egmla_stage_busy_seconds_total Each stage's own busy seconds (stage "
            "forward and head) since it started.\n# TYPE egmla_stage_busy_seconds_total counter\n");
    for (int i = 0; i < s->load.n_stages; i++)
        fprintf(b, "egmla_stage_busy_seconds_total{stage=\"%d\",layers=\"%d-%d\"} %.9g\n", i,
                s->load.stages[i].layer_lo, s->load.stages[i].layer_hi - 1,
                s->load.stages[i].busy_s);
    counter(b, "egmla_micro_batches_total", "Micro-batches submitted to the pipeline.",
            (double)s->load.submits);
    pthread_mutex_unlock(&s->mu);
    if (fclose(b)) {
        free(text);
        return NULL;
    }
    return text;
}
