/* test_kvcache.c - worker/kvcache.c: sizes, block accounting (exhaustion,
 * all-or-nothing, release and reuse) and row/id storage round trips. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "worker/kvcache.h"

/* A value that names its sequence, layer, position and element. */
static float val(int seq, int layer, int pos, int e) {
    return (float)(seq * 1000000 + layer * 10000 + pos * 10 + e) * 0.001f + 0.1234567f;
}

static void test_bytes_per_token(void **st) {
    (void)st;
    /* llama, 2 layers, Hkv 4, dh 16: 2*4*16 = 128 values per layer */
    assert_int_equal(egm_kv_bytes_per_token(2, 128, 0, 0), 2 * 128 * 4);
    assert_int_equal(egm_kv_bytes_per_token(2, 128, 0, 1), 2 * 128 * 2);
    /* EG-MLA of the paper, d_c = dr = 64, 12 layers, bf16: 1536 values + an id */
    assert_int_equal(egm_kv_bytes_per_token(12, 64 + 64, 1, 1), 1536 * 2 + 4);
    egm_kv_pool p;
    assert_int_equal(egm_kv_init(&p, 12, 128, 1, 16, 1, 1 << 20), 0);
    assert_int_equal(p.block_bytes, 16 * egm_kv_bytes_per_token(12, 128, 1, 1));
    assert_int_equal(p.n_blocks, (1 << 20) / p.block_bytes);
    assert_int_equal(p.n_free, p.n_blocks);
    egm_kv_free(&p);
}

static void test_blocks_for_budget(void **st) {
    (void)st;
    size_t bb = 8 * egm_kv_bytes_per_token(3, 10, 1, 0);
    assert_int_equal(egm_kv_blocks_for_budget(10 * bb, 3, 10, 1, 0, 8), 10);
    assert_int_equal(egm_kv_blocks_for_budget(11 * bb - 1, 3, 10, 1, 0, 8), 10);
    assert_int_equal(egm_kv_blocks_for_budget(bb - 1, 3, 10, 1, 0, 8), 0);
    /* invalid shapes hold nothing */
    assert_int_equal(egm_kv_blocks_for_budget(1 << 30, 0, 10, 0, 0, 8), 0);
    assert_int_equal(egm_kv_blocks_for_budget(1 << 30, 3, 10, 0, 0, 0), 0);
    assert_int_equal(egm_kv_blocks_for_budget(SIZE_MAX, 1 << 30, 1 << 30, 0, 0, 1 << 30), 0);
}

static void test_budget_too_small(void **st) {
    (void)st;
    egm_kv_pool p;
    size_t bb = 16 * egm_kv_bytes_per_token(2, 64, 0, 0);
    assert_int_equal(egm_kv_init(&p, 2, 64, 0, 16, 0, bb - 1), -1);
    assert_null(p.pool);
    egm_kv_free(&p); /* safe after a failed init */
    assert_int_equal(egm_kv_init(&p, 2, 64, 0, 16, 0, bb), 0);
    assert_int_equal(p.n_blocks, 1);
    egm_kv_free(&p);
}

static void test_reserve_exhaustion_release(void **st) {
    (void)st;
    egm_kv_pool p;
    size_t bb = 16 * egm_kv_bytes_per_token(1, 8, 0, 0);
    assert_int_equal(egm_kv_init(&p, 1, 8, 0, 16, 0, 4 * bb), 0);
    assert_int_equal(egm_kv_blocks_needed(&p, 0), 0);
    assert_int_equal(egm_kv_blocks_needed(&p, 1), 1);
    assert_int_equal(egm_kv_blocks_needed(&p, 16), 1);
    assert_int_equal(egm_kv_blocks_needed(&p, 17), 2);

    egm_kv_seq a = {0}, b = {0};
    assert_int_equal(egm_kv_reserve(&p, &a, 40), 0); /* 3 blocks */
    assert_int_equal(a.n_blocks, 3);
    assert_int_equal(p.n_free, 1);
    /* b wants 2, only 1 is free: fails and changes nothing */
    assert_int_equal(egm_kv_reserve(&p, &b, 32), -1);
    assert_int_equal(b.n_blocks, 0);
    assert_null(b.blocks);
    assert_int_equal(p.n_free, 1);
    assert_int_equal(egm_kv_reserve(&p, &b, 16), 0);
    assert_int_equal(p.n_free, 0);
    /* a growing past its blocks fails, keeping its 3 */
    int before[3];
    memcpy(before, a.blocks, sizeof before);
    assert_int_equal(egm_kv_reserve(&p, &a, 49), -1);
    assert_int_equal(a.n_blocks, 3);
    assert_memory_equal(a.blocks, before, sizeof before);
    /* within what it holds: nothing to do */
    assert_int_equal(egm_kv_reserve(&p, &a, 48), 0);
    assert_int_equal(egm_kv_reserve(&p, &a, 5), 0);
    assert_int_equal(a.n_blocks, 3);
    /* every block handed out once */
    int seen[4] = {0};
    for (int i = 0; i < a.n_blocks; i++) seen[a.blocks[i]]++;
    for (int i = 0; i < b.n_blocks; i++) seen[b.blocks[i]]++;
    for (int i = 0; i < 4; i++) assert_int_equal(seen[i], 1);

    /* release a, then b can grow into its blocks */
    egm_kv_release(&p, &a);
    assert_int_equal(a.n_blocks, 0);
    assert_null(a.blocks);
    assert_int_equal(p.n_free, 3);
    assert_int_equal(egm_kv_reserve(&p, &b, 64), 0);
    assert_int_equal(b.n_blocks, 4);
    assert_int_equal(p.n_free, 0);
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < b.n_blocks; i++) seen[b.blocks[i]]++;
    for (int i = 0; i < 4; i++) assert_int_equal(seen[i], 1);
    egm_kv_release(&p, &b);
    assert_int_equal(p.n_free, 4);
    egm_kv_release(&p, &a); /* releasing an empty sequence is harmless */
    assert_int_equal(p.n_free, 4);
    egm_kv_free(&p);
}

static void roundtrip(int bf16) {
    const int L = 3, E = 5, B = 4, T = 11;
    egm_kv_pool p;
    assert_int_equal(egm_kv_init(&p, L, E, 0, B, bf16, 8 * B * egm_kv_bytes_per_token(L, E, 0, bf16)), 0);
    egm_kv_seq s = {0};
    assert_int_equal(egm_kv_reserve(&p, &s, T), 0);
    float row[5];
    for (int l = 0; l < L; l++)
        for (int t = 0; t < T; t++) {
            for (int e = 0; e < E; e++) row[e] = val(0, l, t, e) * (e % 2 ? -1.0f : 1.0f);
            egm_kv_write(&p, &s, l, t, row);
        }
    const int ranges[][2] = {{0, 11}, {3, 9}, {4, 8}, {10, 11}, {0, 1}, {5, 5}};
    float out[11 * 5];
    for (int l = 0; l < L; l++)
        for (int r = 0; r < 6; r++) {
            int p0 = ranges[r][0], p1 = ranges[r][1];
            egm_kv_gather(&p, &s, l, p0, p1, out);
            for (int t = p0; t < p1; t++)
                for (int e = 0; e < E; e++) {
                    float want = val(0, l, t, e) * (e % 2 ? -1.0f : 1.0f);
                    float got = out[(t - p0) * E + e];
                    if (bf16) {
                        /* exactly the rounded value, within half a bf16 ulp */
                        assert_true(got == egm_bf16_to_f32(egm_f32_to_bf16(want)));
                        assert_true(fabsf(got - want) <= fabsf(want) * 0x1p-8f);
                    } else {
                        assert_true(got == want);
                    }
                }
        }
    /* columns [1, 4) only: the same values as whole rows, at their offsets,
     * and the other columns untouched (rows cross two block boundaries) */
    float whole[11 * 5], cols[11 * 5];
    egm_kv_gather(&p, &s, 1, 2, 10, whole);
    for (int i = 0; i < 11 * 5; i++) cols[i] = -7.0f;
    egm_kv_gather_cols(&p, &s, 1, 2, 10, 1, 4, cols);
    for (int t = 0; t < 8; t++)
        for (int e = 0; e < E; e++)
            assert_true(cols[t * E + e] == (e >= 1 && e < 4 ? whole[t * E + e] : -7.0f));
    assert_true(cols[8 * E] == -7.0f);
    /* the zero-copy pointer sees the same storage */
    const void *r = egm_kv_row(&p, &s, 2, 6);
    if (bf16) assert_true(egm_bf16_to_f32(((const uint16_t *)r)[E + 1]) ==
                          egm_bf16_to_f32(egm_f32_to_bf16(val(0, 2, 7, 1) * -1.0f)));
    else assert_true(((const float *)r)[E + 1] == val(0, 2, 7, 1) * -1.0f);
    egm_kv_release(&p, &s);
    egm_kv_free(&p);
}

static void test_roundtrip_f32(void **st) { (void)st; roundtrip(0); }
static void test_roundtrip_bf16(void **st) { (void)st; roundtrip(1); }

static void test_ids(void **st) {
    (void)st;
    const int L = 2, E = 3, B = 4, T = 14;
    egm_kv_pool p;
    assert_int_equal(egm_kv_init(&p, L, E, 1, B, 1, 4 * B * egm_kv_bytes_per_token(L, E, 1, 1)), 0);
    egm_kv_seq s = {0};
    assert_int_equal(egm_kv_reserve(&p, &s, T), 0);
    float row[3];
    for (int t = 0; t < T; t++)
        for (int l = 0; l < L; l++) {
            for (int e = 0; e < E; e++) row[e] = val(0, l, t, e);
            egm_kv_write(&p, &s, l, t, row);
        }
    for (int t = 0; t < T; t++) egm_kv_set_id(&p, &s, t, t * 7919 + 1);
    egm_kv_set_id(&p, &s, 13, -5); /* any int32 survives */
    for (int t = 0; t < 13; t++) assert_int_equal(egm_kv_get_id(&p, &s, t), t * 7919 + 1);
    assert_int_equal(egm_kv_get_id(&p, &s, 13), -5);
    int ids[14];
    egm_kv_gather_ids(&p, &s, 2, 13, ids); /* crosses three block boundaries */
    for (int t = 2; t < 13; t++) assert_int_equal(ids[t - 2], t * 7919 + 1);
    /* ids and rows do not overlap */
    float out[14 * 3];
    for (int l = 0; l < L; l++) {
        egm_kv_gather(&p, &s, l, 0, T, out);
        for (int t = 0; t < T; t++)
            for (int e = 0; e < E; e++)
                assert_true(out[t * E + e] == egm_bf16_to_f32(egm_f32_to_bf16(val(0, l, t, e))));
    }
    egm_kv_release(&p, &s);
    egm_kv_free(&p);
}

/* Several sequences growing one token at a time, so their blocks interleave
 * in the pool; one is released midway and a new one takes its blocks. */
static void test_interleaved(void **st) {
    (void)st;
    enum { NS = 4, L = 2, E = 6, B = 3, T = 20 };
    egm_kv_pool p;
    assert_int_equal(egm_kv_init(&p, L, E, 1, B, 0, 40 * B * egm_kv_bytes_per_token(L, E, 1, 0)), 0);
    egm_kv_seq s[NS + 1];
    memset(s, 0, sizeof s);
    int tag[NS + 1] = {0, 1, 2, 3, 4}; /* which values each sequence holds */
    float row[E];
    for (int t = 0; t < T; t++)
        for (int q = 0; q < NS; q++) {
            if (q == 1 && t == 10) { /* swap sequence 1 for a fresh one */
                egm_kv_release(&p, &s[1]);
                tag[1] = 9;
                for (int u = 0; u < t; u++) {
                    assert_int_equal(egm_kv_reserve(&p, &s[1], u + 1), 0);
                    for (int l = 0; l < L; l++) {
                        for (int e = 0; e < E; e++) row[e] = val(9, l, u, e);
                        egm_kv_write(&p, &s[1], l, u, row);
                    }
                    egm_kv_set_id(&p, &s[1], u, 9000 + u);
                }
            }
            assert_int_equal(egm_kv_reserve(&p, &s[q], t + 1), 0);
            for (int l = 0; l < L; l++) {
                for (int e = 0; e < E; e++) row[e] = val(tag[q], l, t, e);
                egm_kv_write(&p, &s[q], l, t, row);
            }
            egm_kv_set_id(&p, &s[q], t, tag[q] * 1000 + t);
            s[q].n_tokens = t + 1;
        }
    assert_int_equal(p.n_free, 40 - NS * ((T + B - 1) / B));
    float out[T * E];
    for (int q = 0; q < NS; q++) {
        for (int l = 0; l < L; l++) {
            egm_kv_gather(&p, &s[q], l, 0, T, out);
            for (int t = 0; t < T; t++)
                for (int e = 0; e < E; e++) assert_true(out[t * E + e] == val(tag[q], l, t, e));
        }
        for (int t = 0; t < T; t++) assert_int_equal(egm_kv_get_id(&p, &s[q], t), tag[q] * 1000 + t);
        egm_kv_release(&p, &s[q]);
    }
    assert_int_equal(p.n_free, 40);
    egm_kv_free(&p);
}

/* Prefix sharing: a copy of the first n positions, every layer and the
 * ids, into blocks of another sequence; the source is untouched, positions
 * the copy writes after n are its own, and too short a sequence is refused. */
static void test_copy_prefix(void **st) {
    (void)st;
    enum { L = 2, E = 5, B = 4, N = 10, T = 16 };
    egm_kv_pool p;
    assert_int_equal(egm_kv_init(&p, L, E, 1, B, 0, 40 * B * egm_kv_bytes_per_token(L, E, 1, 0)), 0);
    egm_kv_seq a = {0}, b = {0}, c = {0}, filler = {0};
    float row[E];
    assert_int_equal(egm_kv_reserve(&p, &a, T), 0);
    assert_int_equal(egm_kv_reserve(&p, &filler, 3), 0); /* b's blocks are not a's + 4 */
    assert_int_equal(egm_kv_reserve(&p, &b, T), 0);
    for (int t = 0; t < T; t++) {
        for (int l = 0; l < L; l++) {
            for (int e = 0; e < E; e++) row[e] = val(1, l, t, e);
            egm_kv_write(&p, &a, l, t, row);
        }
        egm_kv_set_id(&p, &a, t, 100 + t);
    }
    assert_int_equal(egm_kv_copy_prefix(&p, &a, &b, N), 0);
    for (int t = N; t < T; t++) { /* b goes its own way after N */
        for (int l = 0; l < L; l++) {
            for (int e = 0; e < E; e++) row[e] = val(2, l, t, e);
            egm_kv_write(&p, &b, l, t, row);
        }
        egm_kv_set_id(&p, &b, t, 200 + t);
    }
    float out[T * E];
    for (int l = 0; l < L; l++) {
        egm_kv_gather(&p, &b, l, 0, T, out);
        for (int t = 0; t < T; t++)
            for (int e = 0; e < E; e++) assert_true(out[t * E + e] == val(t < N ? 1 : 2, l, t, e));
        egm_kv_gather(&p, &a, l, 0, T, out);
        for (int t = 0; t < T; t++)
            for (int e = 0; e < E; e++) assert_true(out[t * E + e] == val(1, l, t, e));
    }
    for (int t = 0; t < T; t++) {
        assert_int_equal(egm_kv_get_id(&p, &b, t), (t < N ? 100 : 200) + t);
        assert_int_equal(egm_kv_get_id(&p, &a, t), 100 + t);
    }
    /* refused, nothing copied: c holds 4 positions, a self-copy, n < 0 */
    assert_int_equal(egm_kv_reserve(&p, &c, 4), 0);
    assert_int_equal(egm_kv_copy_prefix(&p, &a, &c, N), -1);
    assert_int_equal(egm_kv_copy_prefix(&p, &c, &b, N), -1);
    assert_int_equal(egm_kv_copy_prefix(&p, &a, &a, N), -1);
    assert_int_equal(egm_kv_copy_prefix(&p, &a, &b, -1), -1);
    egm_kv_gather(&p, &b, 1, 0, T, out);
    for (int t = 0; t < T; t++) assert_true(out[t * E] == val(t < N ? 1 : 2, 1, t, 0));
    egm_kv_release(&p, &a);
    egm_kv_release(&p, &b);
    egm_kv_release(&p, &c);
    egm_kv_release(&p, &filler);
    assert_int_equal(p.n_free, 40);
    egm_kv_free(&p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes_per_token),
        cmocka_unit_test(test_blocks_for_budget),
        cmocka_unit_test(test_budget_too_small),
        cmocka_unit_test(test_reserve_exhaustion_release),
        cmocka_unit_test(test_roundtrip_f32),
        cmocka_unit_test(test_roundtrip_bf16),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_interleaved),
        cmocka_unit_test(test_copy_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
