/* fuzz_topology.c - libFuzzer harness for topology YAML (egm_topology_parse,
 * then egm_topology_resolve against a few layer counts). A resolved
 * topology must cover the layers contiguously, in order. */
#include <stdint.h>
#include <stdlib.h>

#include "deploy/topology.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    egm_topology t;
    egm_err e;
    if (egm_topology_parse((const char *)data, size, "fuzz.yaml", &t, &e) == 0) {
        static const int layers[] = {1, 3, 12, 64};
        for (size_t k = 0; k < sizeof layers / sizeof *layers; k++) {
            double cost[64];
            for (int i = 0; i < 64; i++) cost[i] = 1.0 + (i % 3);
            if (egm_topology_resolve(&t, layers[k], k & 1 ? cost : NULL, &e)) continue;
            int next = 0;
            for (int s = 0; s < t.n_stages; s++) {
                if (t.stages[s].layer_lo != next || t.stages[s].layer_hi <= t.stages[s].layer_lo)
                    abort();
                next = t.stages[s].layer_hi;
            }
            if (next != layers[k]) abort();
        }
        int R = egm_topology_n_ranks(&t);
        for (int r = 0; r < R; r++) {
            int nd = egm_topology_rank_node(&t, r);
            if (nd < 0 || nd >= t.n_nodes) abort();
            (void)egm_topology_rank_threads(&t, r);
        }
        (void)egm_topology_check_world(&t, R, &e);
    }
    egm_topology_free(&t);
    /* the size syntax on its own, from the same bytes */
    char buf[64];
    size_t n = size < sizeof buf - 1 ? size : sizeof buf - 1, v;
    for (size_t i = 0; i < n; i++) buf[i] = (char)data[i];
    buf[n] = 0;
    (void)egm_parse_size(buf, &v);
    return 0;
}
