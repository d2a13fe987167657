/* test_split.c - the cost-balanced split: against a brute-force search over
 * every contiguous split on small cases, with the embedding on the first
 * stage, the head on the last and per-stage speeds; and the analytic cost's
 * ratios on the paper config. */
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

#include "deploy/calib.h"
#include "deploy/split.h"

/* The smallest max(stage time) over every way to cut n layers into k
 * non-empty contiguous stages (recursive enumeration). */
static double brute(const egm_split_cost *c, const double *rate, int k, int stage, int lo,
                    double worst) {
    int n = c->n_layers;
    if (stage == k - 1) {
        double s = 0;
        for (int l = lo; l < n; l++) s += c->layer[l];
        s += c->head + (lo == 0 ? c->embed : 0);
        double v = fmax(worst, s / rate[stage]);
        return v;
    }
    double best = INFINITY;
    for (int hi = lo + 1; hi <= n - (k - 1 - stage); hi++) {
        double s = 0;
        for (int l = lo; l < hi; l++) s += c->layer[l];
        if (lo == 0) s += c->embed;
        double v = brute(c, rate, k, stage + 1, hi, fmax(worst, s / rate[stage]));
        if (v < best) best = v;
    }
    return best;
}

static void auto_topology(egm_topology *t, int k, const double *rate) {
    char y[1024];
    int n = snprintf(y, sizeof y, "nodes: [{name: a, slots: 16}]\nstages:\n");
    for (int i = 0; i < k; i++)
        n += snprintf(y + n, sizeof y - n, "  - {node: a, threads: %d}\n", (int)rate[i]);
    egm_err e = {{0}};
    assert_int_equal(egm_topology_parse(y, strlen(y), "t.yaml", t, &e), 0);
}

/* Random small cases: the split's busiest stage equals the brute force's,
 * the stages cover the layers in order, and stage_times agrees. */
static void test_against_brute_force(void **state) {
    (void)state;
    unsigned s = 12345;
    egm_split_cost *c = malloc(sizeof *c);
    for (int trial = 0; trial < 400; trial++) {
        int n = 1 + (int)((s = s * 1103515245u + 12345u) >> 16) % 9;
        int k = 1 + (int)((s = s * 1103515245u + 12345u) >> 16) % n;
        if (k > 5) k = 5;
        c->n_layers = n;
        for (int l = 0; l < n; l++)
            c->layer[l] = 1 + ((s = s * 1103515245u + 12345u) >> 16) % 10;
        c->embed = ((s = s * 1103515245u + 12345u) >> 16) % 3;
        c->head = ((s = s * 1103515245u + 12345u) >> 16) % 25;
        double rate[5];
        for (int i = 0; i < k; i++) rate[i] = 1 + ((s = s * 1103515245u + 12345u) >> 16) % 3;
        egm_topology t;
        auto_topology(&t, k, rate);
        egm_err e = {{0}};
        /* with rates, then with the threads (the same numbers here) */
        for (int pass = 0; pass < 2; pass++) {
            assert_int_equal(egm_split_resolve(&t, c, pass ? NULL : rate, &e), 0);
            double tm[5], worst = 0;
            egm_split_stage_times(&t, c, pass ? NULL : rate, tm);
            assert_int_equal(t.stages[0].layer_lo, 0);
            assert_int_equal(t.stages[k - 1].layer_hi, n);
            for (int i = 0; i < k; i++) {
                assert_true(t.stages[i].layer_hi > t.stages[i].layer_lo);
                if (i) assert_int_equal(t.stages[i].layer_lo, t.stages[i - 1].layer_hi);
                worst = fmax(worst, tm[i]);
            }
            double b = brute(c, rate, k, 0, 0, 0);
            if (fabs(worst - b) > 1e-9)
                print_error("n %d k %d: split %g, brute force %g\n", n, k, worst, b);
            assert_true(fabs(worst - b) <= 1e-9);
        }
        egm_topology_free(&t);
    }
    free(c);
}

/* An explicit stage stays; the auto ones around it balance what is left. */
static void test_explicit_stage_kept(void **state) {
    (void)state;
    const char *y = "nodes: [{name: a, slots: 5}]\nstages:\n  - {node: a}\n"
                    "  - {node: a, layers: 2-3}\n  - {node: a}\n  - {node: a}\n";
    egm_topology t;
    egm_err e = {{0}};
    assert_int_equal(egm_topology_parse(y, strlen(y), "t.yaml", &t, &e), 0);
    egm_split_cost *c = calloc(1, sizeof *c);
    c->n_layers = 8;
    for (int l = 0; l < 8; l++) c->layer[l] = 1;
    c->head = 2; /* layers 4-7 + head = 6: 4-5 | 6-7 + head would be 2 | 4, 4 | 5-7 is 1 | 5 */
    assert_int_equal(egm_split_resolve(&t, c, NULL, &e), 0);
    assert_int_equal(t.stages[1].layer_lo, 2);
    assert_int_equal(t.stages[1].layer_hi, 4);
    assert_int_equal(t.stages[2].layer_lo, 4);
    assert_int_equal(t.stages[2].layer_hi, 7);
    assert_int_equal(t.stages[3].layer_lo, 7);
    /* a bad speed is refused, naming the stage */
    double rate[4] = {1, 1, 0, 1};
    assert_int_equal(egm_split_resolve(&t, c, rate, &e), -1);
    assert_non_null(strstr(e.msg, "speed of stage 3"));
    free(c);
    egm_topology_free(&t);
}

/* Paper EG-MLA config: lm_head (32000 x 768) costs a few layers; the split
 * gives the last stage fewer layers, and stays within 15 % of the mean. */
static void test_paper_config(void **state) {
    (void)state;
    egm_config cfg;
    egm_err e = {{0}};
    assert_int_equal(egm_config_load("deploy/examples/paper-egmla.json", &cfg, &e), 0);
    egm_split_cost *c = malloc(sizeof *c);
    assert_int_equal(egm_split_cost_analytic(&cfg, 16, 128, c, &e), 0);
    double ratio = c->head / c->layer[0];
    assert_true(ratio > 2 && ratio < 6);
    for (int k = 2; k <= 3; k++) {
        egm_topology t;
        assert_int_equal(egm_topology_auto(k, &t), 0);
        assert_int_equal(egm_split_resolve(&t, c, NULL, &e), 0);
        int first = t.stages[0].layer_hi - t.stages[0].layer_lo;
        int last = t.stages[k - 1].layer_hi - t.stages[k - 1].layer_lo;
        assert_true(last < first);
        double tm[3], sum = 0, mx = 0;
        egm_split_stage_times(&t, c, NULL, tm);
        for (int i = 0; i < k; i++) sum += tm[i], mx = fmax(mx, tm[i]);
        assert_true(mx <= 1.15 * sum / k);
        egm_topology_free(&t);
    }
    free(c);
}

/* Nodes naming calibrations: a node twice as slow gets about half the
 * layers; a missing file is named with the topology's line. */
static void test_node_calibrations(void **state) {
    (void)state;
    char dir[] = "/tmp/egm-split-XXXXXX", path[300];
    assert_non_null(mkdtemp(dir));
    egm_config cfg;
    egm_err e = {{0}};
    assert_int_equal(egm_config_load("deploy/examples/paper-egmla.json", &cfg, &e), 0);
    egm_calib k;
    egm_calib_analytic(&cfg, &k);
    for (int i = 0; i < k.n_rows; i++) k.head_s[i] = 0; /* layers only: 12 equal parts */
    snprintf(path, sizeof path, "%s/fast.json", dir);
    assert_int_equal(egm_calib_save(path, &k, &e), 0);
    for (int i = 0; i < k.n_rows; i++) k.layer_s[i] *= 2;
    k.attend_s *= 2;
    snprintf(path, sizeof path, "%s/slow.json", dir);
    assert_int_equal(egm_calib_save(path, &k, &e), 0);
    const char *y = "nodes:\n  - {name: f, calibration: fast.json}\n"
                    "  - {name: s, calibration: slow.json}\nstages: [{node: f}, {node: s}]\n";
    snprintf(path, sizeof path, "%s/t.yaml", dir);
    FILE *f = fopen(path, "w");
    fputs(y, f);
    fclose(f);
    egm_topology t;
    assert_int_equal(egm_topology_load(path, &t, &e), 0);
    assert_int_equal(egm_split_topology(&t, &cfg, NULL, &e), 0);
    assert_int_equal(t.stages[0].layer_hi, 8); /* 8 | 4 x 2 */
    egm_topology_free(&t);
    f = fopen(path, "w");
    fputs("nodes:\n  - {name: f, calibration: fast.json}\n"
          "  - {name: s, calibration: gone.json}\nstages: [{node: f}, {node: s}]\n", f);
    fclose(f);
    assert_int_equal(egm_topology_load(path, &t, &e), 0);
    assert_int_equal(egm_split_topology(&t, &cfg, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "t.yaml line 3: node 's'"));
    assert_non_null(strstr(e.msg, "gone.json"));
    egm_topology_free(&t);
    const char *names[] = {"fast.json", "slow.json", "t.yaml"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_brute_force),
        cmocka_unit_test(test_explicit_stage_kept),
        cmocka_unit_test(test_paper_config),
        cmocka_unit_test(test_node_calibrations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
