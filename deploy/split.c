/* split.c - pipeline step costs and the balanced layer split (split.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "deploy/calib.h"
#include "deploy/split.h"

int egm_split_cost_analytic(const egm_config *c, int rows, int ctx, egm_split_cost *out,
                            egm_err *e) {
    if (c->num_layers < 1 || c->num_layers > EGM_SPLIT_MAX_LAYERS)
        return egm_fail(e, "%d layers: the split handles 1 to %d", c->num_layers,
                        EGM_SPLIT_MAX_LAYERS);
    const double F = EGM_SPLIT_GFLOPS * 1e9, BW = EGM_SPLIT_GBS * 1e9;
    long pos = (long)rows * ctx;
    double l = egm_split_layer_flops(c, rows, pos) / F + egm_split_layer_bytes(c, rows, pos) / BW;
    out->n_layers = c->num_layers;
    for (int i = 0; i < c->num_layers; i++) out->layer[i] = l;
    out->embed = 4.0 * rows * c->hidden_size / BW;
    out->head = EGM_SPLIT_HEAD_FACTOR *
                (egm_split_head_flops(c, rows) / F + egm_split_head_bytes(c) / BW);
    return 0;
}

/* The first stage always holds layer 0 and the last one layer L-1, so the
 * embedding and the head fold into those two layers' costs exactly. */
int egm_split_resolve(egm_topology *t, const egm_split_cost *c, const double *rate,
                      egm_err *e) {
    int L = c->n_layers;
    if (L < 1 || L > EGM_SPLIT_MAX_LAYERS)
        return egm_fail(e, "%s: the model has %d layers", t->origin, L);
    double cost[EGM_SPLIT_MAX_LAYERS];
    memcpy(cost, c->layer, sizeof(double) * (size_t)L);
    cost[0] += c->embed;
    cost[L - 1] += c->head;
    return egm_topology_resolve_rates(t, L, cost, rate, e);
}

void egm_split_stage_times(const egm_topology *t, const egm_split_cost *c, const double *rate,
                           double *out) {
    for (int i = 0; i < t->n_stages; i++) {
        const egm_topo_stage *s = &t->stages[i];
        double sum = 0;
        for (int l = s->layer_lo; l < s->layer_hi; l++) sum += c->layer[l];
        if (s->layer_lo == 0) sum += c->embed;
        if (s->layer_hi == c->n_layers) sum += c->head;
        out[i] = sum / (rate ? rate[i] : s->threads);
    }
}

void egm_split_print(FILE *f, const egm_topology *t, const egm_split_cost *c,
                     const double *rate) {
    double tm[t->n_stages], sum = 0;
    egm_split_stage_times(t, c, rate, tm);
    for (int i = 0; i < t->n_stages; i++) sum += tm[i];
    double mean = sum / t->n_stages;
    for (int i = 0; i < t->n_stages; i++) {
        const egm_topo_stage *s = &t->stages[i];
        fprintf(f, "# stage %d (%s, %d thread%s): layers %d-%d%s%s, predicted %.1f %% of the "
                "step's work, %.2fx the mean stage\n", i + 1, t->nodes[s->node].name,
                s->threads, s->threads == 1 ? "" : "s", s->layer_lo, s->layer_hi - 1,
                s->layer_lo == 0 ? " + embedding" : "",
                s->layer_hi == c->n_layers ? " + lm_head" : "",
                sum > 0 ? 100 * tm[i] / sum : 0, mean > 0 ? tm[i] / mean : 0);
    }
}

/* Every stage's node has a calibration: costs at the default workload from
 * the first stage's, each stage's speed from its own (and its threads). */
static int from_calibrations(egm_topology *t, const egm_config *c, egm_split_cost *k,
                             double *rate, egm_err *e) {
    egm_calib *cal = malloc(sizeof *cal * (size_t)t->n_nodes);
    int *have = calloc((size_t)t->n_nodes, sizeof *have);
    if (!cal || !have) { free(cal); free(have); return egm_fail(e, "out of memory"); }
    int rc = 0;
    for (int j = 0; j < t->n_stages && !rc; j++) {
        int n = t->stages[j].node;
        if (!have[n] && !(rc = egm_calib_load_node(t, n, c, &cal[n], e))) have[n] = 1;
    }
    if (!rc) {
        const egm_calib *k0 = &cal[t->stages[0].node];
        double l0 = egm_calib_layer(k0, EGM_SPLIT_ROWS, EGM_SPLIT_CONTEXT);
        k->n_layers = c->num_layers;
        for (int i = 0; i < c->num_layers; i++) k->layer[i] = l0;
        k->embed = egm_calib_embed(k0, EGM_SPLIT_ROWS);
        k->head = egm_calib_head(&cal[t->stages[t->n_stages - 1].node], EGM_SPLIT_ROWS);
        for (int j = 0; j < t->n_stages; j++) {
            const egm_calib *kj = &cal[t->stages[j].node];
            double lj = egm_calib_layer(kj, EGM_SPLIT_ROWS, EGM_SPLIT_CONTEXT) * kj->threads /
                        t->stages[j].threads;
            rate[j] = l0 > 0 && lj > 0 ? l0 / lj : t->stages[j].threads;
        }
    }
    free(cal), free(have);
    return rc;
}

int egm_split_topology(egm_topology *t, const egm_config *c, FILE *print, egm_err *e) {
    egm_split_cost *k = malloc(sizeof *k);
    double *rate = malloc(sizeof(double) * (size_t)t->n_stages);
    if (!k || !rate) { free(k); free(rate); return egm_fail(e, "out of memory"); }
    int all = 1;
    for (int j = 0; j < t->n_stages; j++) all &= t->nodes[t->stages[j].node].calibration[0] != 0;
    int rc = c->num_layers > EGM_SPLIT_MAX_LAYERS
                 ? egm_fail(e, "%d layers: the split handles up to %d", c->num_layers,
                            EGM_SPLIT_MAX_LAYERS)
             : all ? from_calibrations(t, c, k, rate, e)
                   : egm_split_cost_analytic(c, EGM_SPLIT_ROWS, EGM_SPLIT_CONTEXT, k, e);
    if (!rc) rc = egm_split_resolve(t, k, all ? rate : NULL, e);
    if (!rc && print) {
        fprintf(print, "# stage costs: %s, a decode micro-batch of %d rows at %d positions\n",
                all ? "the nodes' calibrations" : "analytic (no calibration for every node)",
                EGM_SPLIT_ROWS, EGM_SPLIT_CONTEXT);
        egm_split_print(print, t, k, all ? rate : NULL);
    }
    free(k), free(rate);
    return rc;
}
