/* test_topology.c - topology YAML: parsing, every validation message (with
 * its line number), layer balancing, and the shipped examples. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "deploy/topology.h"

/* Parses `yaml` and expects failure with every given substring in the
 * message. */
static void expect_fail(const char *yaml, const char *want1, const char *want2) {
    egm_topology t;
    egm_err e = {{0}};
    int rc = egm_topology_parse(yaml, strlen(yaml), "t.yaml", &t, &e);
    if (rc == 0 || !strstr(e.msg, want1) || (want2 && !strstr(e.msg, want2)))
        print_error("yaml:\n%s\nmessage: %s\nwanted: '%s' '%s'\n", yaml, e.msg,
                    want1, want2 ? want2 : "");
    assert_int_equal(rc, -1);
    assert_non_null(strstr(e.msg, "t.yaml"));
    assert_non_null(strstr(e.msg, want1));
    if (want2) assert_non_null(strstr(e.msg, want2));
    egm_topology_free(&t);
}

static void parse_ok(const char *yaml, egm_topology *t) {
    egm_err e = {{0}};
    int rc = egm_topology_parse(yaml, strlen(yaml), "t.yaml", t, &e);
    if (rc) print_error("unexpected failure: %s\n", e.msg);
    assert_int_equal(rc, 0);
}

/* Resolves and expects failure with the substrings. */
static void expect_resolve_fail(const char *yaml, int L, const char *w1,
                                const char *w2) {
    egm_topology t;
    parse_ok(yaml, &t);
    egm_err e = {{0}};
    int rc = egm_topology_resolve(&t, L, NULL, &e);
    if (rc == 0 || !strstr(e.msg, w1) || (w2 && !strstr(e.msg, w2)))
        print_error("message: %s\nwanted: '%s' '%s'\n", e.msg, w1, w2 ? w2 : "");
    assert_int_equal(rc, -1);
    assert_non_null(strstr(e.msg, w1));
    if (w2) assert_non_null(strstr(e.msg, w2));
    egm_topology_free(&t);
}

static const char *FULL =
    "model: models/egmla-tiny\n"            /* 1 */
    "transport: tcp\n"                      /* 2 */
    "wire_dtype: int8\n"                    /* 3 */
    "micro_batches: 6\n"                    /* 4 */
    "kv_budget: 2GiB\n"                     /* 5 */
    "bind: core\n"                          /* 6 */
    "coordinator: {node: b, threads: 3}\n"  /* 7 */
    "nodes:\n"                              /* 8 */
    "  - {name: a, host: 10.0.0.1, slots: 2, threads: 2}\n"
    "  - {name: b, host: node-b, slots: 3}\n"
    "stages:\n"
    "  - {node: a, layers: 0-5, kv_budget: 1GiB, threads: 1}\n"
    "  - {node: b, layers: auto}\n"
    "  - {node: a, layers: 9}\n";

static void test_full_parse(void **state) {
    (void)state;
    egm_topology t;
    parse_ok(FULL, &t);
    assert_string_equal(t.model, "models/egmla-tiny");
    assert_int_equal(t.transport, EGM_TRANSPORT_TCP);
    assert_int_equal(t.wire_dtype, EGM_WIRE_INT8);
    assert_int_equal(t.bind, EGM_BIND_CORE);
    assert_int_equal(t.micro_batches, 6);
    assert_true(t.kv_budget == (size_t)2 << 30);
    assert_int_equal(t.coordinator, 1);
    assert_int_equal(t.coordinator_threads, 3);
    assert_int_equal(t.n_nodes, 2);
    assert_string_equal(t.nodes[0].name, "a");
    assert_string_equal(t.nodes[0].host, "10.0.0.1");
    assert_int_equal(t.nodes[0].slots, 2);
    assert_int_equal(t.nodes[0].threads, 2);
    assert_int_equal(t.nodes[1].threads, 1);
    assert_int_equal(t.nodes[1].line, 10);
    assert_int_equal(t.n_stages, 3);
    assert_int_equal(t.stages[0].node, 0);
    assert_int_equal(t.stages[0].is_auto, 0);
    assert_int_equal(t.stages[0].layer_lo, 0);
    assert_int_equal(t.stages[0].layer_hi, 6);
    assert_int_equal(t.stages[0].threads, 1);
    assert_true(t.stages[0].kv_budget == (size_t)1 << 30);
    assert_int_equal(t.stages[1].is_auto, 1);
    assert_int_equal(t.stages[1].threads, 1);               /* node b's */
    assert_true(t.stages[1].kv_budget == (size_t)2 << 30);  /* the default */
    assert_int_equal(t.stages[2].layer_lo, 9);
    assert_int_equal(t.stages[2].layer_hi, 10);
    assert_int_equal(t.stages[2].threads, 2);               /* node a's */
    assert_int_equal(t.stages[2].line, 14);
    /* rank placement */
    assert_int_equal(egm_topology_n_ranks(&t), 4);
    assert_int_equal(egm_topology_rank_node(&t, 0), 1);
    assert_int_equal(egm_topology_rank_node(&t, 1), 0);
    assert_int_equal(egm_topology_rank_node(&t, 2), 1);
    assert_int_equal(egm_topology_rank_node(&t, 3), 0);
    assert_int_equal(egm_topology_rank_node(&t, 4), -1);
    assert_int_equal(egm_topology_rank_threads(&t, 0), 3);
    assert_int_equal(egm_topology_rank_threads(&t, 3), 2);
    /* the auto stage takes 6-8 exactly */
    egm_err e = {{0}};
    assert_int_equal(egm_topology_resolve(&t, 10, NULL, &e), 0);
    assert_int_equal(t.stages[1].layer_lo, 6);
    assert_int_equal(t.stages[1].layer_hi, 9);
    assert_int_equal(t.n_layers, 10);
    /* a model with more layers leaves 10-11 to nobody */
    assert_int_equal(egm_topology_resolve(&t, 12, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "layers 10-11 of 12 are not assigned"));
    assert_non_null(strstr(e.msg, "after the stage at line 14"));
    egm_topology_free(&t);
}

static void test_defaults(void **state) {
    (void)state;
    egm_topology t;
    parse_ok("nodes:\n  - name: solo\nstages:\n  - node: solo\n  - node: solo\n"
             "  - node: solo\n", &t);
    assert_null(t.model);
    assert_int_equal(t.transport, EGM_TRANSPORT_AUTO);
    assert_int_equal(t.wire_dtype, EGM_WIRE_BF16);
    assert_int_equal(t.bind, EGM_BIND_NONE);
    assert_int_equal(t.micro_batches, 3);         /* max(2, stages) */
    assert_true(t.kv_budget == 0);
    assert_int_equal(t.coordinator, 0);
    assert_string_equal(t.nodes[0].host, "solo");  /* host = name */
    assert_int_equal(t.nodes[0].slots, 4);          /* = ranks placed */
    assert_int_equal(t.nodes[0].threads, 1);
    for (int i = 0; i < 3; i++) assert_int_equal(t.stages[i].is_auto, 1);
    egm_topology_free(&t);
    parse_ok("nodes: [{name: x}]\nstages: [{node: x}]\n", &t);
    assert_int_equal(t.micro_batches, 2);
    egm_topology_free(&t);
    /* scalar coordinator shorthand */
    parse_ok("coordinator: y\nnodes: [{name: x}, {name: y}]\nstages: [{node: x}]\n", &t);
    assert_int_equal(t.coordinator, 1);
    assert_int_equal(t.nodes[0].slots, 1);
    egm_topology_free(&t);
}

static const char *BASE_NODES =
    "nodes:\n"                                   /* 1 */
    "  - {name: a, host: h1, slots: 8}\n";       /* 2 */

static void test_unknown_keys(void **state) {
    (void)state;
    expect_fail("nodes: [{name: a}]\nstages: [{node: a}]\nthreads: 4\n", "line 3",
                "unknown key 'threads' in the topology");
    expect_fail("nodes:\n  - {name: a, thread: 2}\nstages: [{node: a}]\n", "line 2",
                "unknown key 'thread' in a node");
    expect_fail("nodes: [{name: a}]\nstages:\n  - node: a\n    layer: 0-3\n", "line 4",
                "unknown key 'layer' in a stage");
    expect_fail("coordinator: {node: a, host: x}\nnodes: [{name: a}]\nstages: [{node: a}]\n",
                "line 1", "unknown key 'host' in coordinator");
    /* duplicate keys */
    expect_fail("nodes: [{name: a}]\nstages: [{node: a}]\nnodes: [{name: b}]\n",
                "line 3", "duplicate key 'nodes'");
}

static void test_wrong_types(void **state) {
    (void)state;
    expect_fail("nodes: {name: a}\nstages: [{node: a}]\n", "line 1",
                "'nodes' must be a list");
    expect_fail("nodes:\n  - {name: a, slots: two}\nstages: [{node: a}]\n", "line 2",
                "'slots' must be an integer");
    expect_fail("nodes:\n  - {name: a, threads: 0}\nstages: [{node: a}]\n", "line 2",
                "'threads' must be an integer from 1");
    expect_fail("nodes:\n  - {name: a, threads: [1, 2]}\nstages: [{node: a}]\n",
                "line 2", "found a list");
    expect_fail("micro_batches: -1\nnodes: [{name: a}]\nstages: [{node: a}]\n",
                "line 1", "'micro_batches' must be an integer");
    expect_fail("model:\nnodes: [{name: a}]\nstages: [{node: a}]\n", "line 1",
                "'model' has no value");
    expect_fail("nodes:\n  - a\nstages: [{node: a}]\n", "line 2",
                "a node must be a mapping");
    expect_fail("nodes:\n  - {name: 'a b'}\nstages: [{node: a}]\n", "line 2",
                "'name' may hold letters");
    expect_fail("- 1\n- 2\n", "line 1", "the topology must be a mapping");
    expect_fail("", "empty document", NULL);
    expect_fail("nodes: [{name: a}]\n", "line 1", "missing 'stages'");
    expect_fail("stages: [{node: a}]\n", "line 1", "missing 'nodes'");
    expect_fail("nodes:\n  - {host: x}\nstages: [{node: a}]\n", "line 2",
                "a node needs a 'name'");
    expect_fail("nodes: [{name: a}]\nstages:\n  - {layers: auto}\n", "line 3",
                "a stage needs a 'node'");
}

/* A node may name its calibration file; a bad value says where. */
static void test_calibration_key(void **state) {
    (void)state;
    egm_topology t;
    parse_ok("nodes:\n  - {name: a, calibration: cal/a-node.json}\n  - {name: b}\n"
             "stages: [{node: a}, {node: b}]\n", &t);
    assert_string_equal(t.nodes[0].calibration, "cal/a-node.json");
    assert_string_equal(t.nodes[1].calibration, "");
    egm_topology_free(&t);
    expect_fail("nodes:\n  - {name: a, calibration: [x]}\nstages: [{node: a}]\n", "line 2",
                "found a list");
    expect_fail("nodes:\n  - {name: a, calibration: 'a b.json'}\nstages: [{node: a}]\n",
                "line 2", "'calibration' may hold letters");
    expect_fail("nodes:\n  - name: a\n    calibration:\nstages: [{node: a}]\n", "line 3",
                "'calibration' has no value");
    expect_fail("nodes:\n  - {name: a, calibrate: x.json}\nstages: [{node: a}]\n", "line 2",
                "unknown key 'calibrate' in a node");
}

static void test_names_and_nodes(void **state) {
    (void)state;
    expect_fail("nodes:\n  - {name: a}\n  - {name: b}\n  - {name: a, host: z}\n"
                "stages: [{node: a}]\n", "line 4", "duplicate node name 'a' (first "
                "declared at line 2)");
    expect_fail("nodes: [{name: a}, {name: b}]\nstages:\n  - {node: a}\n  - {node: c}\n",
                "line 4", "node 'c' is not declared in nodes (declared: a, b)");
    expect_fail("coordinator: {node: q}\nnodes: [{name: a}]\nstages: [{node: a}]\n",
                "line 1", "node 'q' is not declared");
}

static void test_layer_syntax(void **state) {
    (void)state;
    char y[256];
    const char *bad[] = {"0-", "-3", "x", "1-2-3", "0x3", "1.5", "AUTO", "0 to 4"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(y, sizeof y, "%sstages:\n  - {node: a, layers: '%s'}\n", BASE_NODES,
                 bad[i]);
        expect_fail(y, "line 4", "bad layers");
    }
    snprintf(y, sizeof y, "%sstages:\n  - {node: a, layers: 5-2}\n", BASE_NODES);
    expect_fail(y, "line 4", "the first layer is after the last");
    snprintf(y, sizeof y, "%sstages:\n  - {node: a, layers: [0, 3]}\n", BASE_NODES);
    expect_fail(y, "line 4", "found a list");
    /* accepted forms */
    egm_topology t;
    snprintf(y, sizeof y, "%sstages:\n  - {node: a, layers: 0 - 2}\n"
             "  - {node: a, layers: 3}\n  - {node: a, layers: \"4-4\"}\n", BASE_NODES);
    parse_ok(y, &t);
    assert_int_equal(t.stages[0].layer_hi, 3);
    assert_int_equal(t.stages[1].layer_lo, 3);
    assert_int_equal(t.stages[1].layer_hi, 4);
    assert_int_equal(t.stages[2].layer_lo, 4);
    assert_int_equal(t.stages[2].layer_hi, 5);
    egm_err e = {{0}};
    assert_int_equal(egm_topology_resolve(&t, 5, NULL, &e), 0);
    egm_topology_free(&t);
}

static void test_ranges_at_parse(void **state) {
    (void)state;
    char y[512];
    snprintf(y, sizeof y, "%sstages:\n  - {node: a, layers: 0-5}\n"
             "  - {node: a, layers: 4-7}\n", BASE_NODES);
    expect_fail(y, "line 5", "layers 4-7 overlap layers 0-5 of the stage at line 4");
    snprintf(y, sizeof y, "%sstages:\n  - {node: a, layers: 4-7}\n"
             "  - {node: a, layers: 0-3}\n", BASE_NODES);
    expect_fail(y, "line 5", "come before layers 4-7");
    /* a gap with no auto stage to fill it is known without the model */
    snprintf(y, sizeof y, "%sstages:\n  - {node: a, layers: 0-3}\n"
             "  - {node: a, layers: 6-7}\n", BASE_NODES);
    expect_fail(y, "layers 4-5 are not assigned", "between the stages at lines 4 and 5");
    snprintf(y, sizeof y, "%sstages:\n  - {node: a, layers: 2-3}\n", BASE_NODES);
    expect_fail(y, "layers 0-1 are not assigned", "before the stage at line 4");
    /* two auto stages but one layer between explicit ones */
    snprintf(y, sizeof y, "%sstages:\n  - {node: a, layers: 0-3}\n  - {node: a}\n"
             "  - {node: a}\n  - {node: a, layers: 5}\n", BASE_NODES);
    expect_fail(y, "line 5", "2 auto stages from here share only 1 layer (4)");
}

static void test_ranges_at_resolve(void **state) {
    (void)state;
    char y[512];
    snprintf(y, sizeof y, "%sstages:\n  - {node: a, layers: 0-5}\n"
             "  - {node: a, layers: 6-9}\n", BASE_NODES);
    expect_resolve_fail(y, 8, "line 5", "layers 6-9 go past the model's last layer 7");
    expect_resolve_fail(y, 12, "layers 10-11 of 12 are not assigned",
                        "after the stage at line 5");
    snprintf(y, sizeof y, "%sstages:\n  - {node: a}\n  - {node: a}\n  - {node: a}\n",
             BASE_NODES);
    expect_resolve_fail(y, 2, "line 6", "3 stages but the model has only 2 layers");
    snprintf(y, sizeof y, "%sstages:\n  - {node: a, layers: 0-5}\n  - {node: a}\n",
             BASE_NODES);
    expect_resolve_fail(y, 6, "line 5", "1 auto stage from here gets no layer");
}

static void test_slots_transport_sizes(void **state) {
    (void)state;
    expect_fail("nodes:\n  - {name: a, slots: 2}\n  - {name: b}\nstages:\n"
                "  - {node: a}\n  - {node: a}\n  - {node: b}\n", "line 2",
                "node 'a' has slots: 2 but 3 ranks are placed on it (the "
                "coordinator, the stage at line 5, the stage at line 6)");
    expect_fail("transport: shm\nnodes: [{name: a}, {name: b}]\n"
                "stages: [{node: a}, {node: b}]\n", "line 1",
                "transport: shm works on one host only");
    expect_fail("transport: infiniband\nnodes: [{name: a}]\nstages: [{node: a}]\n",
                "line 1", "'transport' must be one of: auto, shm, tcp, ucx");
    expect_fail("wire_dtype: fp16\nnodes: [{name: a}]\nstages: [{node: a}]\n",
                "line 1", "'wire_dtype' must be one of: bf16, fp32, int8");
    expect_fail("bind: socket\nnodes: [{name: a}]\nstages: [{node: a}]\n",
                "line 1", "'bind' must be one of");
    expect_fail("kv_budget: 2XB\nnodes: [{name: a}]\nstages: [{node: a}]\n", "line 1",
                "'kv_budget' must be a size");
    expect_fail("nodes: [{name: a}]\nstages:\n  - {node: a, kv_budget: 0}\n", "line 3",
                "'kv_budget' must be a size");
    expect_fail("nodes: [{name: a}]\nstages: []\n", "line 2", "'stages' is empty");
    expect_fail("nodes: []\nstages: [{node: a}]\n", "line 1", "'nodes' is empty");
    /* two node entries on one host with shm are fine */
    egm_topology t;
    parse_ok("transport: shm\nnodes: [{name: a, host: h}, {name: b, host: h}]\n"
             "stages: [{node: a}, {node: b}]\n", &t);
    egm_topology_free(&t);
}

static void test_yaml_syntax(void **state) {
    (void)state;
    expect_fail("nodes: [{name: a}]\nstages:\n  - {node: a, layers: 0-3\n", "line 4",
                "YAML syntax error");
    expect_fail("nodes: [{name: a}]\nstages: [{node: a}]\n  bad: indent\n", "line 3",
                "YAML syntax error");
    expect_fail("nodes: [{name: a}]\nstages: [{node: a}]\n---\nnodes: []\n", "line 4",
                "a second YAML document");
}

static void test_parse_size(void **state) {
    (void)state;
    size_t v;
    assert_int_equal(egm_parse_size("1024", &v), 0); assert_true(v == 1024);
    assert_int_equal(egm_parse_size("2GiB", &v), 0); assert_true(v == (size_t)2 << 30);
    assert_int_equal(egm_parse_size("2G", &v), 0); assert_true(v == (size_t)2 << 30);
    assert_int_equal(egm_parse_size("2GB", &v), 0); assert_true(v == 2000000000u);
    assert_int_equal(egm_parse_size("512 MiB", &v), 0); assert_true(v == (size_t)512 << 20);
    assert_int_equal(egm_parse_size("1.5K", &v), 0); assert_true(v == 1536);
    assert_int_equal(egm_parse_size("7B", &v), 0); assert_true(v == 7);
    assert_int_equal(egm_parse_size("1KiB", &v), 0); assert_true(v == 1024);
    assert_int_equal(egm_parse_size("", &v), -1);
    assert_int_equal(egm_parse_size("G", &v), -1);
    assert_int_equal(egm_parse_size("-1", &v), -1);
    assert_int_equal(egm_parse_size("3 apples", &v), -1);
    assert_int_equal(egm_parse_size("99999999999TiB", &v), -1);
}

/* ---- balancing */

static void layers_of(const egm_topology *t, int *lo, int *hi) {
    for (int i = 0; i < t->n_stages; i++) {
        lo[i] = t->stages[i].layer_lo;
        hi[i] = t->stages[i].layer_hi;
    }
}

static void test_balance_equal(void **state) {
    (void)state;
    egm_topology t;
    egm_err e = {{0}};
    int lo[8], hi[8];
    assert_int_equal(egm_topology_auto(3, &t), 0);
    assert_int_equal(egm_topology_resolve(&t, 12, NULL, &e), 0);
    layers_of(&t, lo, hi);
    assert_int_equal(lo[0], 0); assert_int_equal(hi[0], 4);
    assert_int_equal(lo[1], 4); assert_int_equal(hi[1], 8);
    assert_int_equal(lo[2], 8); assert_int_equal(hi[2], 12);
    /* uneven: the extra layers go to the earlier stages */
    assert_int_equal(egm_topology_resolve(&t, 10, NULL, &e), 0);
    layers_of(&t, lo, hi);
    assert_int_equal(hi[0] - lo[0], 4);
    assert_int_equal(hi[1] - lo[1], 3);
    assert_int_equal(hi[2] - lo[2], 3);
    assert_int_equal(lo[1], hi[0]);
    assert_int_equal(hi[2], 10);
    /* one layer each */
    assert_int_equal(egm_topology_resolve(&t, 3, NULL, &e), 0);
    layers_of(&t, lo, hi);
    for (int i = 0; i < 3; i++) { assert_int_equal(lo[i], i); assert_int_equal(hi[i], i + 1); }
    assert_int_equal(egm_topology_resolve(&t, 2, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "3 stages but the model has only 2 layers"));
    egm_topology_free(&t);
    assert_int_equal(egm_topology_auto(0, &t), -1);
    egm_topology_free(&t);
}

static void test_balance_mixed(void **state) {
    (void)state;
    egm_topology t;
    egm_err e = {{0}};
    int lo[8], hi[8];
    /* explicit 4-5 in the middle; autos before (2) and after (1) */
    parse_ok("nodes: [{name: a}]\nstages:\n  - {node: a}\n  - {node: a}\n"
             "  - {node: a, layers: 4-5}\n  - {node: a}\n", &t);
    assert_int_equal(egm_topology_resolve(&t, 9, NULL, &e), 0);
    layers_of(&t, lo, hi);
    assert_int_equal(lo[0], 0); assert_int_equal(hi[0], 2);
    assert_int_equal(lo[1], 2); assert_int_equal(hi[1], 4);
    assert_int_equal(lo[2], 4); assert_int_equal(hi[2], 6);
    assert_int_equal(lo[3], 6); assert_int_equal(hi[3], 9);
    assert_int_equal(t.stages[2].is_auto, 0);
    assert_int_equal(t.stages[3].is_auto, 1);
    egm_topology_free(&t);
}

static void test_balance_skewed(void **state) {
    (void)state;
    egm_topology t;
    egm_err e = {{0}};
    int lo[8], hi[8];
    assert_int_equal(egm_topology_auto(3, &t), 0);
    /* layer 0 costs as much as ten others: it gets a stage of its own and
     * the other eleven are split evenly (6, 5), not 10 + 1 */
    double cost[12];
    for (int i = 0; i < 12; i++) cost[i] = 1;
    cost[0] = 10;
    assert_int_equal(egm_topology_resolve(&t, 12, cost, &e), 0);
    layers_of(&t, lo, hi);
    assert_int_equal(hi[0], 1);
    assert_int_equal(hi[1] - lo[1], 6);
    assert_int_equal(hi[2] - lo[2], 5);
    /* rising costs: later stages get fewer layers; max stage cost optimal */
    double rise[8] = {1, 2, 3, 4, 5, 6, 7, 8};   /* total 36 */
    assert_int_equal(egm_topology_resolve(&t, 8, rise, &e), 0);
    layers_of(&t, lo, hi);
    double mx = 0;
    for (int s = 0; s < 3; s++) {
        double c = 0;
        for (int l = lo[s]; l < hi[s]; l++) c += rise[l];
        if (c > mx) mx = c;
    }
    assert_true(mx == 15);        /* {1..5}=15, {6,7}=13, {8}=8 is optimal */
    assert_true(hi[0] - lo[0] >= hi[2] - lo[2]);
    /* bad costs */
    rise[3] = -1;
    assert_int_equal(egm_topology_resolve(&t, 8, rise, &e), -1);
    assert_non_null(strstr(e.msg, "cost of layer 3"));
    egm_topology_free(&t);
    /* threads weigh: a 3-thread stage takes three times the layers */
    parse_ok("nodes: [{name: a}]\nstages:\n  - {node: a, threads: 3}\n  - {node: a}\n", &t);
    assert_int_equal(egm_topology_resolve(&t, 8, NULL, &e), 0);
    assert_int_equal(t.stages[0].layer_hi, 6);
    assert_int_equal(t.stages[1].layer_lo, 6);
    egm_topology_free(&t);
}

/* Smallest max stage cost over every contiguous split (brute force). */
static double brute_best(const double *c, int L, int S, int at, double sofar) {
    if (S == 1) {
        double x = 0;
        for (int l = at; l < L; l++) x += c[l];
        return x > sofar ? x : sofar;
    }
    double best = 1e300, x = 0;
    for (int end = at + 1; end <= L - (S - 1); end++) {
        x += c[end - 1];
        double v = brute_best(c, L, S - 1, end, x > sofar ? x : sofar);
        if (v < best) best = v;
    }
    return best;
}

static void test_balance_optimal(void **state) {
    (void)state;
    unsigned seed = 12345;
    for (int L = 1; L <= 9; L++)
        for (int S = 1; S <= 4 && S <= L; S++)
            for (int trial = 0; trial < 20; trial++) {
                double c[9];
                for (int l = 0; l < L; l++) {
                    seed = seed * 1103515245u + 12345u;
                    c[l] = (double)((seed >> 16) % 10);
                }
                egm_topology t;
                egm_err e = {{0}};
                assert_int_equal(egm_topology_auto(S, &t), 0);
                assert_int_equal(egm_topology_resolve(&t, L, c, &e), 0);
                double mx = 0;
                int at = 0;
                for (int s = 0; s < S; s++) {
                    assert_int_equal(t.stages[s].layer_lo, at);
                    assert_true(t.stages[s].layer_hi > at);
                    double x = 0;
                    for (int l = at; l < t.stages[s].layer_hi; l++) x += c[l];
                    if (x > mx) mx = x;
                    at = t.stages[s].layer_hi;
                }
                assert_int_equal(at, L);
                double sum = 0;
                for (int l = 0; l < L; l++) sum += c[l];
                if (sum > 0) assert_true(mx == brute_best(c, L, S, 0, 0));
                egm_topology_free(&t);
            }
}

static void test_check_world(void **state) {
    (void)state;
    egm_topology t;
    egm_err e = {{0}};
    assert_int_equal(egm_topology_auto(2, &t), 0);
    assert_int_equal(egm_topology_check_world(&t, 3, &e), 0);
    assert_int_equal(egm_topology_check_world(&t, 1, &e), -1);
    assert_non_null(strstr(e.msg, "3 ranks"));
    assert_non_null(strstr(e.msg, "pmix"));
    egm_topology_free(&t);
}

static void test_examples(void **state) {
    (void)state;
    const char *files[] = {"deploy/examples/local-2stage.yaml",
                           "deploy/examples/local-3stage-auto.yaml",
                           "deploy/examples/three-hosts.yaml",
                           "deploy/examples/ucx.yaml"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        egm_topology t;
        egm_err e = {{0}};
        int rc = egm_topology_load(files[i], &t, &e);
        if (rc) print_error("%s\n", e.msg);
        assert_int_equal(rc, 0);
        rc = egm_topology_resolve(&t, 32, NULL, &e);
        if (rc) print_error("%s\n", e.msg);
        assert_int_equal(rc, 0);
        assert_int_equal(t.stages[t.n_stages - 1].layer_hi, 32);
        egm_topology_free(&t);
    }
    egm_topology t;
    assert_int_equal(egm_topology_load("deploy/examples/three-hosts.yaml", &t, NULL), 0);
    assert_int_equal(t.transport, EGM_TRANSPORT_TCP);
    assert_int_equal(t.n_nodes, 3);
    egm_topology_free(&t);
    egm_err e = {{0}};
    assert_int_equal(egm_topology_load("deploy/examples/nope.yaml", &t, &e), -1);
    assert_non_null(strstr(e.msg, "nope.yaml"));
    egm_topology_free(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_parse),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_names_and_nodes),
        cmocka_unit_test(test_calibration_key),
        cmocka_unit_test(test_layer_syntax),
        cmocka_unit_test(test_ranges_at_parse),
        cmocka_unit_test(test_ranges_at_resolve),
        cmocka_unit_test(test_slots_transport_sizes),
        cmocka_unit_test(test_yaml_syntax),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_balance_equal),
        cmocka_unit_test(test_balance_mixed),
        cmocka_unit_test(test_balance_skewed),
        cmocka_unit_test(test_balance_optimal),
        cmocka_unit_test(test_check_world),
        cmocka_unit_test(test_examples),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
