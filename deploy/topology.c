/* topology.c - reads, validates and resolves a cluster topology (YAML).
 *
 * libyaml's document API gives a tree whose nodes keep their start marks, so
 * every message can name the YAML line (mark.line + 1). Parsing is strict:
 * an unknown key anywhere is an error, not a silently ignored typo, because a
 * misspelt "threads" would otherwise run a whole cluster at the wrong width. */
#include "topology.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* ---------------------------------------------------------------- helpers */

typedef struct {
    yaml_document_t *doc;
    const char *origin;
    egm_err *e;
} ctx;

static int line_of(const yaml_node_t *n) { return n ? (int)n->start_mark.line + 1 : 0; }

/* "origin line N: message" */
static int fail_at(ctx *c, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail_at(ctx *c, int line, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line > 0) return egm_fail(c->e, "%s line %d: %s", c->origin, line, msg);
    return egm_fail(c->e, "%s: %s", c->origin, msg);
}

static const char *kind_name(const yaml_node_t *n) {
    switch (n->type) {
    case YAML_MAPPING_NODE: return "a mapping";
    case YAML_SEQUENCE_NODE: return "a list";
    default: return "a scalar";
    }
}

static yaml_node_t *get(ctx *c, int id) { return yaml_document_get_node(c->doc, id); }

/* The scalar text of v, or an error naming the key and what was expected. */
static int want_scalar(ctx *c, const char *key, yaml_node_t *v,
                       const char *expected, const char **out) {
    if (v->type != YAML_SCALAR_NODE)
        return fail_at(c, line_of(v), "'%s' must be %s, found %s", key,
                       expected, kind_name(v));
    const char *s = (const char *)v->data.scalar.value;
    if (!s[0])
        return fail_at(c, line_of(v), "'%s' has no value (expected %s)", key,
                       expected);
    *out = s;
    return 0;
}

/* Strict decimal integer in [lo, hi]: the whole text, no sign, no hex. */
static int parse_uint(const char *s, long long hi, long long *out) {
    if (!s[0]) return -1;
    long long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') return -1;
        v = v * 10 + (*p - '0');
        if (v > hi) return -1;
    }
    *out = v;
    return 0;
}

static int want_int(ctx *c, const char *key, yaml_node_t *v, int lo, int hi,
                    int *out) {
    const char *s;
    char expected[96];
    snprintf(expected, sizeof expected, "an integer from %d to %d", lo, hi);
    if (want_scalar(c, key, v, expected, &s)) return -1;
    long long x;
    if (parse_uint(s, hi, &x) || x < lo)
        return fail_at(c, line_of(v), "'%s' must be %s, found '%s'", key,
                       expected, s);
    *out = (int)x;
    return 0;
}

static int want_size(ctx *c, const char *key, yaml_node_t *v, size_t *out) {
    const char *s;
    const char *expected = "a size in bytes > 0 (e.g. 1073741824, 512MiB, 2GiB)";
    if (want_scalar(c, key, v, expected, &s)) return -1;
    if (egm_parse_size(s, out) || *out == 0)
        return fail_at(c, line_of(v), "'%s' must be %s, found '%s'", key,
                       expected, s);
    return 0;
}

/* One of a fixed set of words; index into `words` on success. */
static int want_word(ctx *c, const char *key, yaml_node_t *v,
                     const char *const *words, int n, int *out) {
    char expected[128] = "one of:";
    for (int i = 0; i < n; i++)
        snprintf(expected + strlen(expected), sizeof expected - strlen(expected),
                 "%s %s", i ? "," : "", words[i]);
    const char *s;
    if (want_scalar(c, key, v, expected, &s)) return -1;
    for (int i = 0; i < n; i++)
        if (!strcmp(s, words[i])) { *out = i; return 0; }
    return fail_at(c, line_of(v), "'%s' must be %s; found '%s'", key, expected, s);
}

/* A name or host: non-empty, bounded, and free of characters that would
 * break a hostfile or rankfile line. */
static int want_name(ctx *c, const char *key, yaml_node_t *v, char *out,
                     size_t cap, const char *extra_ok) {
    const char *s;
    if (want_scalar(c, key, v, "a name", &s)) return -1;
    if (strlen(s) >= cap)
        return fail_at(c, line_of(v), "'%s' is longer than %zu characters", key,
                       cap - 1);
    for (const char *p = s; *p; p++) {
        int ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                 (*p >= '0' && *p <= '9') || strchr("._-", *p) ||
                 strchr(extra_ok, *p);
        if (!ok)
            return fail_at(c, line_of(v),
                           "'%s' may hold letters, digits and '.-_%s' only; "
                           "found '%s'", key, extra_ok, s);
    }
    strcpy(out, s);
    return 0;
}

/* Checks that a mapping has only known keys, each once, and hands back the
 * value of each known key (NULL when absent). */
static int want_map(ctx *c, yaml_node_t *m, const char *what,
                    const char *const *keys, int n_keys, yaml_node_t **vals) {
    if (m->type != YAML_MAPPING_NODE)
        return fail_at(c, line_of(m), "%s must be a mapping, found %s", what,
                       kind_name(m));
    int key_line[16] = {0};
    for (int i = 0; i < n_keys; i++) vals[i] = NULL;
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start;
         p < m->data.mapping.pairs.top; p++) {
        yaml_node_t *k = get(c, p->key), *v = get(c, p->value);
        if (k->type != YAML_SCALAR_NODE)
            return fail_at(c, line_of(k), "a key in %s is %s, expected a word",
                           what, kind_name(k));
        const char *ks = (const char *)k->data.scalar.value;
        int i = 0;
        while (i < n_keys && strcmp(ks, keys[i])) i++;
        if (i == n_keys) {
            char list[256] = "";
            for (int j = 0; j < n_keys; j++)
                snprintf(list + strlen(list), sizeof list - strlen(list),
                         "%s%s", j ? ", " : "", keys[j]);
            return fail_at(c, line_of(k),
                           "unknown key '%s' in %s (expected one of: %s)", ks,
                           what, list);
        }
        if (vals[i])
            return fail_at(c, line_of(k), "duplicate key '%s' in %s (first at line %d)",
                           ks, what, key_line[i]);
        vals[i] = v;
        key_line[i] = line_of(k);
    }
    return 0;
}

static int find_node(const egm_topology *t, const char *name) {
    for (int i = 0; i < t->n_nodes; i++)
        if (!strcmp(t->nodes[i].name, name)) return i;
    return -1;
}

static int want_node_ref(ctx *c, egm_topology *t, const char *key,
                         yaml_node_t *v, int *out) {
    const char *s;
    if (want_scalar(c, key, v, "a node name", &s)) return -1;
    int i = find_node(t, s);
    if (i < 0) {
        char list[256] = "";
        for (int j = 0; j < t->n_nodes; j++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s",
                     j ? ", " : "", t->nodes[j].name);
        return fail_at(c, line_of(v), "node '%s' is not declared in nodes (declared: %s)",
                       s, list);
    }
    *out = i;
    return 0;
}

/* "auto", "n" or "a-b" (inclusive; spaces around '-' allowed). */
static int parse_layers(const char *s, int *is_auto, int *lo, int *hi) {
    if (!strcmp(s, "auto")) { *is_auto = 1; *lo = 0; *hi = -1; return 0; }
    char a[32] = "", b[32] = "";
    const char *dash = strchr(s, '-');
    size_t la = dash ? (size_t)(dash - s) : strlen(s);
    if (la >= sizeof a || (dash && strlen(dash + 1) >= sizeof b)) return -1;
    memcpy(a, s, la);
    if (dash) strcpy(b, dash + 1);
    /* trim spaces */
    char *pa = a, *pb = b;
    while (*pa == ' ') pa++;
    while (*pb == ' ') pb++;
    for (char *q = pa + strlen(pa); q > pa && q[-1] == ' ';) *--q = 0;
    for (char *q = pb + strlen(pb); q > pb && q[-1] == ' ';) *--q = 0;
    long long x, y;
    if (parse_uint(pa, 1000000, &x)) return -1;
    if (dash) {
        if (parse_uint(pb, 1000000, &y)) return -1;
    } else {
        y = x;
    }
    if (y < x) return -2;
    *is_auto = 0;
    *lo = (int)x;
    *hi = (int)y + 1;
    return 0;
}

/* "origin line N" for a stage, or just "origin" when it has no line. */
static void where(const egm_topology *t, int line, char *buf, size_t cap) {
    if (line > 0) snprintf(buf, cap, "%s line %d", t->origin, line);
    else snprintf(buf, cap, "%s", t->origin);
}

static void range_text(int lo, int hi, char *buf, size_t cap) {
    if (hi - lo == 1) snprintf(buf, cap, "%d", lo);
    else snprintf(buf, cap, "%d-%d", lo, hi - 1);
}

/* Explicit ranges in pipeline order, no overlap, no layer left over where
 * no auto stage can take it. n_layers = 0: the model is not known yet, so
 * only what does not depend on it is checked. */
static int check_ranges(const egm_topology *t, int n_layers, egm_err *e) {
    char w[600], r1[32], r2[32];
    if (n_layers > 0 && t->n_stages > n_layers) {
        const egm_topo_stage *s = &t->stages[n_layers];
        where(t, s->line, w, sizeof w);
        return egm_fail(e, "%s: %d stages but the model has only %d layers "
                        "(each stage needs at least one; this is stage %d)",
                        w, t->n_stages, n_layers, n_layers + 1);
    }
    /* First the explicit ranges among themselves: order, overlap, the end. */
    int prev = -1, prev_hi = 0;   /* prev: last explicit stage */
    for (int i = 0; i < t->n_stages; i++) {
        const egm_topo_stage *s = &t->stages[i];
        if (s->is_auto) continue;
        where(t, s->line, w, sizeof w);
        range_text(s->layer_lo, s->layer_hi, r1, sizeof r1);
        if (n_layers > 0 && s->layer_hi > n_layers)
            return egm_fail(e, "%s: layers %s go past the model's last layer "
                            "%d (it has %d layers)", w, r1, n_layers - 1, n_layers);
        if (s->layer_lo < prev_hi) {
            const egm_topo_stage *p = &t->stages[prev];
            range_text(p->layer_lo, p->layer_hi, r2, sizeof r2);
            if (s->layer_hi > p->layer_lo)
                return egm_fail(e, "%s: layers %s overlap layers %s of the "
                                "stage at line %d", w, r1, r2, p->line);
            return egm_fail(e, "%s: layers %s come before layers %s of the "
                            "earlier stage at line %d (stages are listed in "
                            "pipeline order)", w, r1, r2, p->line);
        }
        prev = i;
        prev_hi = s->layer_hi;
    }
    /* Then the gaps between them: each needs auto stages, at most one per
     * layer. */
    int autos = 0;
    prev = -1;
    prev_hi = 0;
    for (int i = 0; i <= t->n_stages; i++) {
        int lo;
        if (i < t->n_stages) {
            if (t->stages[i].is_auto) { autos++; continue; }
            lo = t->stages[i].layer_lo;
        } else {
            if (n_layers <= 0) break;    /* the end is not known yet */
            lo = n_layers;
        }
        int gap = lo - prev_hi;
        if (gap > 0 && autos == 0) {
            range_text(prev_hi, lo, r1, sizeof r1);
            char ctxt[160];
            if (prev < 0 && i < t->n_stages)
                snprintf(ctxt, sizeof ctxt, "before the stage at line %d",
                         t->stages[i].line);
            else if (prev >= 0 && i == t->n_stages)
                snprintf(ctxt, sizeof ctxt, "after the stage at line %d",
                         t->stages[prev].line);
            else if (prev >= 0)
                snprintf(ctxt, sizeof ctxt, "between the stages at lines %d and %d",
                         t->stages[prev].line, t->stages[i].line);
            else
                snprintf(ctxt, sizeof ctxt, "no stage");
            if (n_layers > 0)
                return egm_fail(e, "%s: layer%s %s of %d %s not assigned to any "
                                "stage (%s)", t->origin, gap > 1 ? "s" : "", r1,
                                n_layers, gap > 1 ? "are" : "is", ctxt);
            return egm_fail(e, "%s: layer%s %s %s not assigned to any stage (%s)",
                            t->origin, gap > 1 ? "s" : "", r1,
                            gap > 1 ? "are" : "is", ctxt);
        }
        if (autos > gap) {
            const egm_topo_stage *a = &t->stages[i - autos];
            where(t, a->line, w, sizeof w);
            char what[96] = "no layer at all";
            if (gap > 0) {
                range_text(prev_hi, lo, r1, sizeof r1);
                snprintf(what, sizeof what, "only %d layer%s (%s)", gap,
                         gap == 1 ? "" : "s", r1);
            }
            return egm_fail(e, "%s: %d auto stage%s from here %s %s (each stage "
                            "needs at least one layer)", w, autos,
                            autos > 1 ? "s" : "", autos > 1 ? "share" : "gets", what);
        }
        if (i < t->n_stages) {
            prev = i;
            prev_hi = t->stages[i].layer_hi;
            autos = 0;
        }
    }
    return 0;
}

/* ------------------------------------------------------------- balancing */

/* a within a relative tolerance of b counts as equal (costs are sums of
 * floating-point numbers added in different orders). */
static int leq(double a, double b) { return a <= b + 1e-9 * (1 + fabs(b)); }

/* Splits layers [a, a+n) among k stages (speeds rate[k]), contiguously,
 * minimising max(cost / rate); among those splits, the one with the least
 * sum of squares (the most even). Ties give layers to earlier stages (the
 * last stage also runs the output head). Writes cuts[0..k]: stage j gets
 * [cuts[j], cuts[j+1]). */
static int balance(const double *cost, int a, int n, int k, const double *thr,
                   int *cuts) {
    double *P = malloc((size_t)(n + 1) * sizeof *P);
    double *best = malloc((size_t)(k + 1) * (n + 1) * sizeof *best);
    int *arg = malloc((size_t)(k + 1) * (n + 1) * sizeof *arg);
    if (!P || !best || !arg) { free(P); free(best); free(arg); return -1; }
    P[0] = 0;
    for (int i = 0; i < n; i++) P[i + 1] = P[i] + (cost ? cost[a + i] : 1.0);
    if (!(P[n] > 0))    /* all zero: weigh layers equally */
        for (int i = 0; i < n; i++) P[i + 1] = i + 1;
#define B(j, i) best[(size_t)(j) * (n + 1) + (i)]
#define A(j, i) arg[(size_t)(j) * (n + 1) + (i)]
    /* Pass 1: the smallest achievable maximum, M. */
    for (int j = 0; j <= k; j++)
        for (int i = 0; i <= n; i++) B(j, i) = INFINITY;
    B(0, 0) = 0;
    for (int j = 1; j <= k; j++)
        for (int i = j; i <= n; i++)
            for (int p = j - 1; p < i; p++) {
                double v = fmax(B(j - 1, p), (P[i] - P[p]) / thr[j - 1]);
                if (v < B(j, i)) B(j, i) = v;
            }
    double M = B(k, n);
    /* Pass 2: least sum of squares with every stage at most M. */
    for (int j = 0; j <= k; j++)
        for (int i = 0; i <= n; i++) B(j, i) = INFINITY;
    B(0, 0) = 0;
    for (int j = 1; j <= k; j++)
        for (int i = j; i <= n; i++)
            for (int p = j - 1; p < i; p++) {
                double c = (P[i] - P[p]) / thr[j - 1];
                if (!leq(c, M) || B(j - 1, p) == INFINITY) continue;
                double v = B(j - 1, p) + c * c;
                if (B(j, i) == INFINITY || leq(v, B(j, i))) {   /* later p wins ties */
                    B(j, i) = v;
                    A(j, i) = p;
                }
            }
    cuts[k] = a + n;
    for (int j = k, i = n; j > 0; j--) {
        i = A(j, i);
        cuts[j - 1] = a + i;
    }
#undef B
#undef A
    free(P); free(best); free(arg);
    return 0;
}

int egm_topology_resolve(egm_topology *t, int n_layers,
                         const double *layer_cost, egm_err *e) {
    return egm_topology_resolve_rates(t, n_layers, layer_cost, NULL, e);
}

int egm_topology_resolve_rates(egm_topology *t, int n_layers, const double *layer_cost,
                               const double *rate, egm_err *e) {
    if (n_layers < 1)
        return egm_fail(e, "%s: the model has %d layers", t->origin, n_layers);
    if (layer_cost)
        for (int i = 0; i < n_layers; i++)
            if (!(layer_cost[i] >= 0) || isinf(layer_cost[i]))
                return egm_fail(e, "%s: cost of layer %d is %g, expected a "
                                "finite number >= 0", t->origin, i, layer_cost[i]);
    if (rate)
        for (int i = 0; i < t->n_stages; i++)
            if (!(rate[i] > 0) || isinf(rate[i]))
                return egm_fail(e, "%s: speed of stage %d is %g, expected a finite number > 0",
                                t->origin, i + 1, rate[i]);
    if (check_ranges(t, n_layers, e)) return -1;
    /* Each run of auto stages shares the gap between its explicit neighbours. */
    int prev_hi = 0, first = 0;
    for (int i = 0; i <= t->n_stages; i++) {
        if (i < t->n_stages && t->stages[i].is_auto) continue;
        int lo = i < t->n_stages ? t->stages[i].layer_lo : n_layers;
        int k = i - first;
        if (k > 0) {
            double thr[k];
            int cuts[k + 1];
            for (int j = 0; j < k; j++)
                thr[j] = rate ? rate[first + j] : t->stages[first + j].threads;
            if (balance(layer_cost, prev_hi, lo - prev_hi, k, thr, cuts))
                return egm_fail(e, "%s: out of memory", t->origin);
            for (int j = 0; j < k; j++) {
                t->stages[first + j].layer_lo = cuts[j];
                t->stages[first + j].layer_hi = cuts[j + 1];
            }
        }
        if (i < t->n_stages) prev_hi = t->stages[i].layer_hi;
        first = i + 1;
    }
    t->n_layers = n_layers;
    return 0;
}

/* ---------------------------------------------------------------- parsing */

static const char *const k_transports[] = {"auto", "shm", "tcp", "ucx"};
static const char *const k_binds[] = {"none", "core"};


static int parse_nodes(ctx *c, egm_topology *t, yaml_node_t *seq) {
    if (seq->type != YAML_SEQUENCE_NODE)
        return fail_at(c, line_of(seq), "'nodes' must be a list of nodes, found %s",
                       kind_name(seq));
    int n = (int)(seq->data.sequence.items.top - seq->data.sequence.items.start);
    if (n == 0) return fail_at(c, line_of(seq), "'nodes' is empty");
    t->nodes = calloc((size_t)n, sizeof *t->nodes);
    if (!t->nodes) return fail_at(c, 0, "out of memory");
    static const char *const keys[] = {"name", "host", "slots", "threads", "calibration"};
    for (int i = 0; i < n; i++) {
        yaml_node_t *m = get(c, seq->data.sequence.items.start[i]), *v[5];
        if (want_map(c, m, "a node", keys, 5, v)) return -1;
        egm_topo_node *nd = &t->nodes[i];
        nd->line = line_of(m);
        nd->threads = 1;
        if (!v[0]) return fail_at(c, nd->line, "a node needs a 'name'");
        if (want_name(c, "name", v[0], nd->name, sizeof nd->name, "")) return -1;
        int dup = find_node(t, nd->name);
        if (dup >= 0)
            return fail_at(c, nd->line, "duplicate node name '%s' (first declared "
                           "at line %d)", nd->name, t->nodes[dup].line);
        if (v[1]) {
            if (want_name(c, "host", v[1], nd->host, sizeof nd->host, ":[]"))
                return -1;
        } else {
            strcpy(nd->host, nd->name);
        }
        if (v[2] && want_int(c, "slots", v[2], 1, 1 << 20, &nd->slots)) return -1;
        if (v[3] && want_int(c, "threads", v[3], 1, 4096, &nd->threads)) return -1;
        /* a JSON file of `egmla bench --calibrate`, relative to the topology */
        if (v[4] && want_name(c, "calibration", v[4], nd->calibration, sizeof nd->calibration,
                              "/+,=@"))
            return -1;
        t->n_nodes = i + 1;
    }
    return 0;
}

static int parse_coordinator(ctx *c, egm_topology *t, yaml_node_t *m) {
    static const char *const keys[] = {"node", "threads"};
    yaml_node_t *v[2];
    if (m->type == YAML_SCALAR_NODE) {   /* coordinator: a */
        if (want_node_ref(c, t, "coordinator", m, &t->coordinator)) return -1;
        return 0;
    }
    if (want_map(c, m, "coordinator", keys, 2, v)) return -1;
    if (v[0] && want_node_ref(c, t, "node", v[0], &t->coordinator)) return -1;
    if (v[1] && want_int(c, "threads", v[1], 1, 4096, &t->coordinator_threads))
        return -1;
    return 0;
}

static int parse_stages(ctx *c, egm_topology *t, yaml_node_t *seq) {
    if (seq->type != YAML_SEQUENCE_NODE)
        return fail_at(c, line_of(seq), "'stages' must be a list of stages, found %s",
                       kind_name(seq));
    int n = (int)(seq->data.sequence.items.top - seq->data.sequence.items.start);
    if (n == 0)
        return fail_at(c, line_of(seq), "'stages' is empty (a pipeline needs at "
                       "least one stage)");
    t->stages = calloc((size_t)n, sizeof *t->stages);
    if (!t->stages) return fail_at(c, 0, "out of memory");
    static const char *const keys[] = {"node", "layers", "threads", "kv_budget"};
    for (int i = 0; i < n; i++) {
        yaml_node_t *m = get(c, seq->data.sequence.items.start[i]), *v[4];
        if (want_map(c, m, "a stage", keys, 4, v)) return -1;
        egm_topo_stage *s = &t->stages[i];
        s->line = line_of(m);
        if (!v[0]) return fail_at(c, s->line, "a stage needs a 'node'");
        if (want_node_ref(c, t, "node", v[0], &s->node)) return -1;
        s->is_auto = 1;
        s->layer_hi = -1;
        if (v[1]) {
            const char *ls;
            const char *expected = "'a-b' (inclusive), a single layer 'n', or 'auto'";
            if (want_scalar(c, "layers", v[1], expected, &ls)) return -1;
            int rc = parse_layers(ls, &s->is_auto, &s->layer_lo, &s->layer_hi);
            if (rc == -2)
                return fail_at(c, line_of(v[1]), "bad layer range '%s': the first "
                               "layer is after the last", ls);
            if (rc)
                return fail_at(c, line_of(v[1]), "bad layers '%s': expected %s", ls,
                               expected);
        }
        s->threads = t->nodes[s->node].threads;
        if (v[2] && want_int(c, "threads", v[2], 1, 4096, &s->threads)) return -1;
        s->kv_budget = t->kv_budget;
        if (v[3] && want_size(c, "kv_budget", v[3], &s->kv_budget)) return -1;
        t->n_stages = i + 1;
    }
    return 0;
}

/* Ranks per node against slots; transport against hosts. */
static int check_placement(ctx *c, egm_topology *t, int transport_line) {
    for (int i = 0; i < t->n_nodes; i++) {
        egm_topo_node *nd = &t->nodes[i];
        int ranks = (t->coordinator == i);
        for (int s = 0; s < t->n_stages; s++) ranks += t->stages[s].node == i;
        if (nd->slots == 0) {
            nd->slots = ranks;           /* not given: exactly what it holds */
        } else if (ranks > nd->slots) {
            char who[256] = "";
            if (t->coordinator == i) strcpy(who, "the coordinator");
            for (int s = 0; s < t->n_stages; s++)
                if (t->stages[s].node == i)
                    snprintf(who + strlen(who), sizeof who - strlen(who),
                             "%sthe stage at line %d", who[0] ? ", " : "",
                             t->stages[s].line);
            return fail_at(c, nd->line, "node '%s' has slots: %d but %d ranks are "
                           "placed on it (%s)", nd->name, nd->slots, ranks, who);
        }
    }
    if (t->transport == EGM_TRANSPORT_SHM) {
        const char *h0 = t->nodes[t->coordinator].host;
        for (int s = 0; s < t->n_stages; s++) {
            const char *h = t->nodes[t->stages[s].node].host;
            if (strcmp(h, h0))
                return fail_at(c, transport_line, "transport: shm works on one host "
                               "only, but the stage at line %d runs on '%s' and the "
                               "coordinator on '%s' (use tcp, ucx or auto)",
                               t->stages[s].line, h, h0);
        }
    }
    return 0;
}

static int parse_doc(ctx *c, egm_topology *t) {
    yaml_node_t *root = yaml_document_get_root_node(c->doc);
    if (!root) return fail_at(c, 0, "empty document (expected a topology mapping)");
    static const char *const keys[] = {"model", "transport", "wire_dtype", "bind",
                                       "micro_batches", "kv_budget", "coordinator",
                                       "nodes", "stages"};
    enum { MODEL, TRANSPORT, DTYPE, BIND, MB, KV, COORD, NODES, STAGES, NK };
    yaml_node_t *v[NK];
    if (want_map(c, root, "the topology", keys, NK, v)) return -1;
    int x;
    if (v[MODEL]) {
        const char *s;
        if (want_scalar(c, "model", v[MODEL], "a path", &s)) return -1;
        if (!(t->model = strdup(s))) return fail_at(c, 0, "out of memory");
    }
    if (v[TRANSPORT]) {
        if (want_word(c, "transport", v[TRANSPORT], k_transports, 4, &x)) return -1;
        t->transport = (egm_transport)x;
    }
    if (v[DTYPE]) {
        if (want_word(c, "wire_dtype", v[DTYPE], egm_wire_dtype_names, EGM_WIRE_N_DTYPES, &x)) return -1;
        t->wire_dtype = (egm_wire_dtype)x;
    }
    if (v[BIND]) {
        if (want_word(c, "bind", v[BIND], k_binds, 2, &x)) return -1;
        t->bind = (egm_bind)x;
    }
    if (v[MB] && want_int(c, "micro_batches", v[MB], 1, 1 << 16, &t->micro_batches))
        return -1;
    if (v[KV] && want_size(c, "kv_budget", v[KV], &t->kv_budget)) return -1;
    if (!v[NODES])
        return fail_at(c, line_of(root), "missing 'nodes' (the machines to run on)");
    if (parse_nodes(c, t, v[NODES])) return -1;
    t->coordinator = 0;
    if (v[COORD] && parse_coordinator(c, t, v[COORD])) return -1;
    if (!t->coordinator_threads) t->coordinator_threads = t->nodes[t->coordinator].threads;
    if (!v[STAGES])
        return fail_at(c, line_of(root), "missing 'stages' (the pipeline stages)");
    if (parse_stages(c, t, v[STAGES])) return -1;
    if (!t->micro_batches) t->micro_batches = t->n_stages > 2 ? t->n_stages : 2;
    if (check_placement(c, t, v[TRANSPORT] ? line_of(v[TRANSPORT]) : 0)) return -1;
    return check_ranges(t, 0, c->e);
}

int egm_topology_parse(const char *buf, size_t len, const char *origin,
                       egm_topology *t, egm_err *e) {
    memset(t, 0, sizeof *t);
    snprintf(t->origin, sizeof t->origin, "%s", origin);
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) return egm_fail(e, "%s: out of memory", origin);
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    ctx c = {&doc, t->origin, e};
    int rc;
    if (!yaml_parser_load(&parser, &doc)) {
        int line = (int)(parser.problem_mark.line + 1);
        if (parser.context)
            rc = egm_fail(e, "%s line %d: YAML syntax error: %s, %s that starts at "
                          "line %d",
                          t->origin, line, parser.problem ? parser.problem : "?",
                          parser.context, (int)parser.context_mark.line + 1);
        else
            rc = egm_fail(e, "%s line %d: YAML syntax error: %s", t->origin, line,
                          parser.problem ? parser.problem : "?");
        yaml_parser_delete(&parser);
        return rc;
    }
    rc = parse_doc(&c, t);
    if (rc == 0) {       /* a second document is almost surely a mistake */
        yaml_document_t more;
        if (yaml_parser_load(&parser, &more)) {
            yaml_node_t *r = yaml_document_get_root_node(&more);
            if (r) rc = fail_at(&c, line_of(r), "a second YAML document; a "
                                "topology file holds one");
            yaml_document_delete(&more);
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    if (rc) egm_topology_free(t);
    return rc;
}

int egm_topology_load(const char *path, egm_topology *t, egm_err *e) {
    memset(t, 0, sizeof *t);
    FILE *f = fopen(path, "rb");
    if (!f) return egm_fail(e, "%s: cannot open topology: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            if (cap > (64u << 20)) {
                free(buf); fclose(f);
                return egm_fail(e, "%s: larger than 64 MiB, not a topology", path);
            }
            char *nb = realloc(buf, cap);
            if (!nb) { free(buf); fclose(f); return egm_fail(e, "%s: out of memory", path); }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(buf); return egm_fail(e, "%s: read error", path); }
    int rc = egm_topology_parse(buf, len, path, t, e);
    free(buf);
    return rc;
}

void egm_topology_free(egm_topology *t) {
    if (!t) return;
    free(t->model);
    free(t->nodes);
    free(t->stages);
    char origin[sizeof t->origin];
    memcpy(origin, t->origin, sizeof origin);
    memset(t, 0, sizeof *t);
    memcpy(t->origin, origin, sizeof origin);
}

int egm_topology_auto(int n_stages, egm_topology *t) {
    memset(t, 0, sizeof *t);
    if (n_stages < 1) return -1;
    snprintf(t->origin, sizeof t->origin, "(automatic %d-stage topology)", n_stages);
    t->nodes = calloc(1, sizeof *t->nodes);
    t->stages = calloc((size_t)n_stages, sizeof *t->stages);
    if (!t->nodes || !t->stages) { egm_topology_free(t); return -1; }
    t->n_nodes = 1;
    strcpy(t->nodes[0].name, "localhost");
    strcpy(t->nodes[0].host, "localhost");
    t->nodes[0].slots = n_stages + 1;
    t->nodes[0].threads = 1;
    t->coordinator_threads = 1;
    t->n_stages = n_stages;
    for (int i = 0; i < n_stages; i++) {
        t->stages[i].is_auto = 1;
        t->stages[i].layer_hi = -1;
        t->stages[i].threads = 1;
    }
    t->micro_batches = n_stages > 2 ? n_stages : 2;
    return 0;
}

/* ------------------------------------------------------------- placement */

int egm_topology_n_ranks(const egm_topology *t) { return t->n_stages + 1; }

int egm_topology_rank_node(const egm_topology *t, int rank) {
    if (rank == 0) return t->coordinator;
    if (rank < 1 || rank > t->n_stages) return -1;
    return t->stages[rank - 1].node;
}

int egm_topology_rank_threads(const egm_topology *t, int rank) {
    if (rank == 0) return t->coordinator_threads;
    if (rank < 1 || rank > t->n_stages) return -1;
    return t->stages[rank - 1].threads;
}

int egm_topology_check_world(const egm_topology *t, int world_size, egm_err *e) {
    int want = egm_topology_n_ranks(t);
    if (world_size == want) return 0;
    return egm_fail(e, "%s: the topology has %d ranks (a coordinator and %d "
                    "stages) but MPI started %d%s", t->origin, want, t->n_stages,
                    world_size,
                    world_size == 1 ? " (under Slurm, plain srun without "
                                      "--mpi=pmix starts independent singletons; "
                                      "use srun --mpi=pmix or egmla launch)" : "");
}
