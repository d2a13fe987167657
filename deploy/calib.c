/* calib.c - a node's calibration: interpolation, analytic stand-in, JSON
 * (calib.h). */
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "deploy/calib.h"
#include "deploy/cost.h"

/* y at x on the polyline (xs, ys): flat below the first point, the last
 * segment's slope (never negative) beyond the last. */
static double interp(const int *xs, const double *ys, int n, double x) {
    if (n == 0) return 0;
    if (n == 1 || x <= xs[0]) return n == 1 ? ys[0] * (x > xs[0] ? x / xs[0] : 1) : ys[0];
    int i = 1;
    while (i < n - 1 && x > xs[i]) i++;
    double slope = (ys[i] - ys[i - 1]) / (xs[i] - xs[i - 1]);
    if (x > xs[n - 1] && slope < 0) slope = 0;
    return ys[i - 1] + slope * (x - xs[i - 1]);
}

double egm_calib_layer(const egm_calib *k, int rows, long ctx) {
    double base = interp(k->rows, k->layer_s, k->n_rows, rows);
    return (base > 0 ? base : 0) + (double)rows * (double)ctx * k->attend_s;
}

double egm_calib_head(const egm_calib *k, int rows) {
    return interp(k->rows, k->head_s, k->n_rows, rows);
}

double egm_calib_embed(const egm_calib *k, int rows) {
    return interp(k->rows, k->embed_s, k->n_rows, rows);
}

double egm_calib_prefill(const egm_calib *k, int T, long p) {
    double base = interp(k->chunks, k->prefill_s, k->n_chunks, T);
    return (base > 0 ? base : 0) + (double)T * ((double)p + T / 2.0) * k->prefill_attend_s;
}

double egm_calib_colocated(const egm_calib *k, int copies, int rows) {
    if (copies < 2 || copies - 2 >= k->n_colo_copies || k->n_colo_rows < 1) return 0;
    const double *y = k->colo[copies - 2];
    const int *x = k->colo_rows, n = k->n_colo_rows;
    if (rows <= x[0]) return y[0];
    for (int i = 1; i < n; i++)
        if (rows <= x[i]) return y[i - 1] + (y[i] - y[i - 1]) * (rows - x[i - 1]) / (x[i] - x[i - 1]);
    return y[n - 1];
}

void egm_calib_link_default(egm_calib *k) {
    k->link_measured = 0;
    snprintf(k->transport, sizeof k->transport, "shm");
    k->link_latency_s = 2e-6;
    k->link_bytes_per_s = 5e9;
}

void egm_calib_analytic(const egm_config *c, egm_calib *k) {
    static const int rows[] = {1, 2, 4, 8, 16, 32, 64}, chunks[] = {64, 128, 256, 512};
    const double F = EGM_SPLIT_GFLOPS * 1e9, BW = EGM_SPLIT_GBS * 1e9;
    memset(k, 0, sizeof *k);
    snprintf(k->model_type, sizeof k->model_type, "%s", c->model_type);
    k->num_layers = c->num_layers, k->hidden_size = c->hidden_size;
    k->vocab_size = c->vocab_size, k->threads = 1;
    snprintf(k->host, sizeof k->host, "(analytic)");
    k->n_rows = (int)(sizeof rows / sizeof *rows);
    for (int i = 0; i < k->n_rows; i++) {
        int r = k->rows[i] = rows[i];
        k->layer_s[i] = egm_split_layer_flops(c, r, 0) / F + egm_split_layer_bytes(c, r, 0) / BW;
        k->head_s[i] = EGM_SPLIT_HEAD_FACTOR *
                       (egm_split_head_flops(c, r) / F + egm_split_head_bytes(c) / BW);
        k->embed_s[i] = 4.0 * r * c->hidden_size / BW;
    }
    /* per (row, position): the flops and the cache bytes of one more position */
    k->attend_s = (egm_split_layer_flops(c, 1, 1) - egm_split_layer_flops(c, 1, 0)) / F +
                  (egm_split_layer_bytes(c, 1, 1) - egm_split_layer_bytes(c, 1, 0)) / BW;
    k->n_chunks = (int)(sizeof chunks / sizeof *chunks);
    for (int i = 0; i < k->n_chunks; i++) {
        int T = k->chunks[i] = chunks[i];
        k->prefill_s[i] = egm_split_layer_flops(c, T, 0) / F + egm_split_layer_bytes(c, T, 0) / BW;
    }
    k->prefill_attend_s = (egm_split_layer_flops(c, 1, 1) - egm_split_layer_flops(c, 1, 0)) / F;
    egm_calib_link_default(k);
    k->rank0_s = 50e-6;
}

/* ---------------------------------------------------------------- JSON */

static json_t *num_array(const double *v, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_real(v[i]));
    return a;
}

static json_t *int_array(const int *v, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

int egm_calib_save(const char *path, const egm_calib *k, egm_err *e) {
    json_t *j = json_pack(
        "{s:i, s:{s:s, s:i, s:i, s:i}, s:i, s:i, s:s, s:s, s:{s:i, s:o, s:o, s:o, s:o, s:f}, "
        "s:{s:o, s:o, s:f}, s:{s:b, s:s, s:f, s:f}, s:f}",
        "egmla_calibration", 1,
        "model", "model_type", k->model_type, "num_layers", k->num_layers, "hidden_size",
        k->hidden_size, "vocab_size", k->vocab_size,
        "threads", k->threads, "cores", k->cores, "host", k->host, "attn_dtype",
        k->attn_bf16 ? "bf16" : "fp32",
        "decode", "context", k->context, "rows", int_array(k->rows, k->n_rows),
        "layer_s", num_array(k->layer_s, k->n_rows), "head_s", num_array(k->head_s, k->n_rows),
        "embed_s", num_array(k->embed_s, k->n_rows), "attend_s", k->attend_s,
        "prefill", "chunks", int_array(k->chunks, k->n_chunks),
        "layer_s", num_array(k->prefill_s, k->n_chunks), "attend_s", k->prefill_attend_s,
        "link", "measured", k->link_measured, "transport", k->transport,
        "latency_s", k->link_latency_s, "bytes_per_s", k->link_bytes_per_s,
        "rank0_s", k->rank0_s);
    if (!j) return egm_fail(e, "%s: out of memory", path);
    if (k->n_colo_copies > 0) {
        json_t *copies = json_array(), *sl = json_array();
        for (int n = 0; n < k->n_colo_copies; n++) {
            json_array_append_new(copies, json_integer(n + 2));
            json_array_append_new(sl, num_array(k->colo[n], k->n_colo_rows));
        }
        json_object_set_new(j, "colocated",
                            json_pack("{s:o, s:o, s:o}", "rows", int_array(k->colo_rows, k->n_colo_rows),
                                      "copies", copies, "slowdown", sl));
    }
    int rc = strcmp(path, "-") ? json_dump_file(j, path, JSON_INDENT(2))
                               : json_dumpf(j, stdout, JSON_INDENT(2));
    if (!strcmp(path, "-")) putchar('\n');
    json_decref(j);
    return rc ? egm_fail(e, "%s: cannot write", path) : 0;
}

/* A number at key `key` of o (named `what` in messages), > 0 unless zero_ok. */
static int get_num(const json_t *o, const char *key, const char *what, int zero_ok,
                   const char *path, double *out, egm_err *e) {
    const json_t *v = json_object_get(o, key);
    if (!json_is_number(v))
        return egm_fail(e, "%s: %s%s: expected a number", path, what, key);
    *out = json_number_value(v);
    if (!(zero_ok ? *out >= 0 : *out > 0) || isinf(*out))
        return egm_fail(e, "%s: %s%s is %g: expected a finite number %s 0", path, what, key,
                        *out, zero_ok ? ">=" : ">");
    return 0;
}

/* rows (increasing integers >= 1) and as many values per series. */
static int get_series(const json_t *o, const char *xkey, int *xs, const char *const *ykeys,
                      double *const *ys, int ny, const char *what, const char *path, int *n,
                      egm_err *e) {
    const json_t *x = json_object_get(o, xkey);
    if (!json_is_array(x) || json_array_size(x) < 1 || json_array_size(x) > EGM_CALIB_MAX_ROWS)
        return egm_fail(e, "%s: %s%s: expected an array of 1 to %d row counts", path, what,
                        xkey, EGM_CALIB_MAX_ROWS);
    *n = (int)json_array_size(x);
    for (int i = 0; i < *n; i++) {
        const json_t *v = json_array_get(x, i);
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 1 << 20 ||
            (i && json_integer_value(v) <= xs[i - 1]))
            return egm_fail(e, "%s: %s%s[%d]: expected increasing integers >= 1", path, what,
                            xkey, i);
        xs[i] = (int)json_integer_value(v);
    }
    for (int s = 0; s < ny; s++) {
        const json_t *y = json_object_get(o, ykeys[s]);
        if (!json_is_array(y) || (int)json_array_size(y) != *n)
            return egm_fail(e, "%s: %s%s: expected an array of %d numbers (one per %s)", path,
                            what, ykeys[s], *n, xkey);
        for (int i = 0; i < *n; i++) {
            const json_t *v = json_array_get(y, i);
            ys[s][i] = json_is_number(v) ? json_number_value(v) : -1;
            if (!(ys[s][i] >= 0) || isinf(ys[s][i]))
                return egm_fail(e, "%s: %s%s[%d]: expected a finite number >= 0", path, what,
                                ykeys[s], i);
        }
    }
    return 0;
}

/* The optional "colocated" object: rows (increasing), copies 2, 3, ...
 * and one slowdown per (copies, rows). */
static int get_colo(const json_t *j, const char *path, egm_calib *k, egm_err *e) {
    const json_t *o = json_object_get(j, "colocated");
    if (!o) return 0;
    const json_t *rows = json_object_get(o, "rows"), *copies = json_object_get(o, "copies"),
                 *sl = json_object_get(o, "slowdown");
    size_t nr = json_array_size(rows), nc = json_array_size(copies);
    if (!json_is_object(o) || nr < 1 || nr > EGM_CALIB_COLO_ROWS || nc < 1 ||
        nc > EGM_CALIB_MAX_COPIES || json_array_size(sl) != nc)
        return egm_fail(e, "%s: colocated: expected {\"rows\": [1 to %d row counts], "
                        "\"copies\": [2, 3, ... up to %d], \"slowdown\": [one array per copies]}",
                        path, EGM_CALIB_COLO_ROWS, EGM_CALIB_MAX_COPIES + 1);
    for (size_t i = 0; i < nr; i++) {
        json_int_t r = json_integer_value(json_array_get(rows, i));
        if (!json_is_integer(json_array_get(rows, i)) || r < 1 || r > 1 << 20 ||
            (i && r <= k->colo_rows[i - 1]))
            return egm_fail(e, "%s: colocated.rows[%zu]: expected increasing integers >= 1", path, i);
        k->colo_rows[i] = (int)r;
    }
    for (size_t n = 0; n < nc; n++) {
        const json_t *c = json_array_get(copies, n), *y = json_array_get(sl, n);
        if (!json_is_integer(c) || json_integer_value(c) != (json_int_t)n + 2)
            return egm_fail(e, "%s: colocated.copies[%zu]: expected %zu (copies count up from 2)",
                            path, n, n + 2);
        if (json_array_size(y) != nr)
            return egm_fail(e, "%s: colocated.slowdown[%zu]: expected %zu numbers (one per row count)",
                            path, n, nr);
        for (size_t i = 0; i < nr; i++) {
            double v = json_is_number(json_array_get(y, i)) ? json_number_value(json_array_get(y, i)) : -1;
            if (!(v > 0) || isinf(v))
                return egm_fail(e, "%s: colocated.slowdown[%zu][%zu]: expected a finite number > 0",
                                path, n, i);
            k->colo[n][i] = v;
        }
    }
    k->n_colo_rows = (int)nr, k->n_colo_copies = (int)nc;
    return 0;
}

static int get_obj(const json_t *j, const char *key, const char *path, const json_t **o,
                   egm_err *e) {
    *o = json_object_get(j, key);
    return json_is_object(*o) ? 0 : egm_fail(e, "%s: %s: expected an object", path, key);
}

int egm_calib_load(const char *path, egm_calib *k, egm_err *e) {
    memset(k, 0, sizeof *k);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j)
        return je.line > 0 ? egm_fail(e, "%s line %d: %s", path, je.line, je.text)
                           : egm_fail(e, "%s: %s", path, je.text);
    const json_t *m, *d, *p, *l;
    const char *mt = NULL, *host = "?", *tr = "?", *ad = "fp32";
    int rc = -1, measured = 0;
    if (json_integer_value(json_object_get(j, "egmla_calibration")) != 1) {
        egm_fail(e, "%s: not an egmla calibration (expected \"egmla_calibration\": 1; write "
                 "one with egmla bench --calibrate)", path);
        goto out;
    }
    if (get_obj(j, "model", path, &m, e) || get_obj(j, "decode", path, &d, e) ||
        get_obj(j, "prefill", path, &p, e) || get_obj(j, "link", path, &l, e))
        goto out;
    if (json_unpack_ex((json_t *)m, &je, 0, "{s:s, s:i, s:i, s:i}", "model_type", &mt,
                       "num_layers", &k->num_layers, "hidden_size", &k->hidden_size,
                       "vocab_size", &k->vocab_size) ||
        json_unpack_ex(j, &je, 0, "{s:i, s?:i, s?:s, s?:s}", "threads", &k->threads, "cores",
                       &k->cores, "host", &host, "attn_dtype", &ad) ||
        json_unpack_ex((json_t *)d, &je, 0, "{s:i}", "context", &k->context) ||
        json_unpack_ex((json_t *)l, &je, 0, "{s:b, s?:s}", "measured", &measured,
                       "transport", &tr)) {
        egm_fail(e, "%s: %s", path, je.text);
        goto out;
    }
    snprintf(k->model_type, sizeof k->model_type, "%s", mt);
    snprintf(k->host, sizeof k->host, "%s", host);
    k->attn_bf16 = !strcmp(ad, "bf16");
    if (!k->attn_bf16 && strcmp(ad, "fp32")) {
        egm_fail(e, "%s: attn_dtype: expected \"fp32\" or \"bf16\", found \"%.32s\"", path, ad);
        goto out;
    }
    snprintf(k->transport, sizeof k->transport, "%s", tr);
    k->link_measured = measured;
    if (k->threads < 1 || k->context < 0 || k->cores < 0) {
        egm_fail(e, "%s: threads must be >= 1, cores and decode.context >= 0", path);
        goto out;
    }
    static const char *const dk[] = {"layer_s", "head_s", "embed_s"}, *const pk[] = {"layer_s"};
    double *dy[] = {k->layer_s, k->head_s, k->embed_s}, *py[] = {k->prefill_s};
    if (get_series(d, "rows", k->rows, dk, dy, 3, "decode.", path, &k->n_rows, e) ||
        get_num(d, "attend_s", "decode.", 1, path, &k->attend_s, e) ||
        get_series(p, "chunks", k->chunks, pk, py, 1, "prefill.", path, &k->n_chunks, e) ||
        get_num(p, "attend_s", "prefill.", 1, path, &k->prefill_attend_s, e) ||
        get_num(l, "latency_s", "link.", 1, path, &k->link_latency_s, e) ||
        get_num(l, "bytes_per_s", "link.", 0, path, &k->link_bytes_per_s, e) ||
        get_num(j, "rank0_s", "", 1, path, &k->rank0_s, e) || get_colo(j, path, k, e))
        goto out;
    rc = 0;
out:
    json_decref(j);
    return rc;
}

int egm_calib_check(const egm_calib *k, const egm_config *c, const char *path, egm_err *e) {
    if (strcmp(k->model_type, c->model_type) || k->hidden_size != c->hidden_size ||
        k->vocab_size != c->vocab_size)
        return egm_fail(e, "%s: calibrated for a %s model (D %d, vocab %d), not this %s "
                        "(D %d, vocab %d): calibrate again with this model", path, k->model_type,
                        k->hidden_size, k->vocab_size, c->model_type, c->hidden_size,
                        c->vocab_size);
    return 0;
}

int egm_calib_load_node(const egm_topology *t, int node, const egm_config *c, egm_calib *k,
                        egm_err *e) {
    const egm_topo_node *nd = &t->nodes[node];
    char path[2 * PATH_MAX], dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", t->origin);
    if (nd->calibration[0] == '/')
        snprintf(path, sizeof path, "%s", nd->calibration);
    else
        snprintf(path, sizeof path, "%s/%s", dirname(dir), nd->calibration);
    if (egm_calib_load(path, k, e) || egm_calib_check(k, c, path, e))
        return egm_wrap(e, "%s line %d: node '%s'", t->origin, nd->line, nd->name);
    return 0;
}
