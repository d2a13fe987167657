/* test_args.c - the table-driven option parser: forms, strict numbers,
 * positional arguments, messages and --help. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/args.h"

/* Fresh option variables for every test: the table points at these. */
static int top_k, threads, ignore_eos;
static float temperature, top_p;
static const char *input;
static uint64_t seed;

static egm_opt opts[] = {
    {"top-k", EGM_OPT_INT, &top_k, "keep the k most likely tokens", 0, 0, NULL},
    {"threads", EGM_OPT_INT, &threads, "worker threads", 1, 64, NULL},
    {"temperature", EGM_OPT_FLOAT, &temperature, "sampling temperature", 0, 0, NULL},
    {"top-p", EGM_OPT_FLOAT, &top_p, "nucleus mass", 0, 1, NULL},
    {"input", EGM_OPT_STRING, &input, "requests (JSONL)", 0, 0, "PATH"},
    {"seed", EGM_OPT_U64, &seed, "random seed", 0, 0, NULL},
    {"ignore-eos", EGM_OPT_FLAG, &ignore_eos, "keep going past EOS", 0, 0, NULL},
    {NULL, 0, NULL, NULL, 0, 0, NULL},
};
static const egm_cmd cmd = {"egmla generate", "MODEL_DIR",
                            "Generates text for every request.", opts};

static int reset(void **state) {
    (void)state;
    top_k = 40; threads = 2; ignore_eos = 0;
    temperature = 1.0f; top_p = 1.0f;
    input = "-"; seed = 7;
    return 0;
}

/* Parses a NULL-terminated list of words; argv is a private copy. */
static char *words[32];
static int parse(int *n_pos, egm_err *e, ...) {
    va_list ap;
    int n = 0;
    va_start(ap, e);
    for (const char *w; (w = va_arg(ap, const char *)) && n < 31;) words[n++] = (char *)w;
    va_end(ap);
    words[n] = NULL;
    return egm_args_parse(&cmd, n, words, n_pos, e);
}

static void expect_error(const char *msg, int rc, const egm_err *e) {
    assert_int_equal(rc, -1);
    assert_string_equal(e->msg, msg);
}

/* given[] marks exactly the entries on the command line, in either form:
 * not one whose name is inside a value, nor a word after "--". */
static void test_given(void **state) {
    (void)state;
    egm_err e;
    unsigned char given[8] = {0};
    char *argv[] = {"--threads=4", "--input", "x--top-k", "--ignore-eos", "--", "--seed", NULL};
    int n_pos = 0;
    assert_int_equal(egm_args_parse_given(&cmd, 6, argv, &n_pos, given, &e), 0);
    const unsigned char want[8] = {0, 1, 0, 0, 1, 0, 1, 0}; /* threads, input, ignore-eos */
    assert_memory_equal(given, want, sizeof want);
    assert_int_equal(n_pos, 1);
    assert_int_equal(threads, 4);
}

static void test_defaults_kept(void **state) {
    (void)state;
    egm_err e;
    int n_pos = -1;
    assert_int_equal(parse(&n_pos, &e, NULL), 0);
    assert_int_equal(n_pos, 0);
    assert_int_equal(top_k, 40);
    assert_true(temperature == 1.0f);
    assert_string_equal(input, "-");
    assert_true(seed == 7);
    assert_int_equal(ignore_eos, 0);
}

static void test_both_forms(void **state) {
    (void)state;
    egm_err e;
    int n_pos;
    assert_int_equal(parse(&n_pos, &e, "--top-k", "5", "--temperature=0.25",
                           "--input", "in.jsonl", "--seed=18446744073709551615",
                           "--ignore-eos", "--threads=64", "--top-p", "0.9",
                           NULL), 0);
    assert_int_equal(top_k, 5);
    assert_true(temperature == 0.25f);
    assert_string_equal(input, "in.jsonl");
    assert_true(seed == UINT64_MAX);
    assert_int_equal(ignore_eos, 1);
    assert_int_equal(threads, 64);
    assert_true(top_p == 0.9f);
    /* Negative numbers are values, not options; last occurrence wins. */
    assert_int_equal(parse(&n_pos, &e, "--top-k", "-3", "--top-k", "+4", NULL), 0);
    assert_int_equal(top_k, 4);
    assert_int_equal(parse(&n_pos, &e, "--temperature", "-1e-3", "--input=", NULL), 0);
    assert_true(temperature == -1e-3f);
    assert_string_equal(input, "");
}

static void test_positionals(void **state) {
    (void)state;
    egm_err e;
    int n_pos;
    assert_int_equal(parse(&n_pos, &e, "model", "--top-k", "1", "-", "--",
                           "--not-an-option", NULL), 0);
    assert_int_equal(n_pos, 3);
    assert_string_equal(words[0], "model");
    assert_string_equal(words[1], "-");
    assert_string_equal(words[2], "--not-an-option");
    assert_int_equal(top_k, 1);
    expect_error("egmla generate: unexpected argument \"model\" (see egmla "
                 "generate --help)", parse(NULL, &e, "model", NULL), &e);
}

static void test_bad_integers(void **state) {
    (void)state;
    egm_err e;
    int n;
    expect_error("egmla generate: --top-k: expected an integer, found \"x\"",
                 parse(&n, &e, "--top-k", "x", NULL), &e);
    expect_error("egmla generate: --top-k: expected an integer, found \"12x\"",
                 parse(&n, &e, "--top-k=12x", NULL), &e);
    expect_error("egmla generate: --top-k: expected an integer, found \"\"",
                 parse(&n, &e, "--top-k=", NULL), &e);
    expect_error("egmla generate: --top-k: expected an integer, found \" 12\"",
                 parse(&n, &e, "--top-k", " 12", NULL), &e);
    expect_error("egmla generate: --top-k: expected an integer, found \"1.5\"",
                 parse(&n, &e, "--top-k", "1.5", NULL), &e);
    expect_error("egmla generate: --top-k: expected an integer in "
                 "[-2147483648, 2147483647], found \"2147483648\"",
                 parse(&n, &e, "--top-k", "2147483648", NULL), &e);
    expect_error("egmla generate: --top-k: expected an integer in "
                 "[-2147483648, 2147483647], found \"99999999999999999999\"",
                 parse(&n, &e, "--top-k", "99999999999999999999", NULL), &e);
    expect_error("egmla generate: --threads: expected an integer in [1, 64], "
                 "found \"0\"", parse(&n, &e, "--threads", "0", NULL), &e);
    expect_error("egmla generate: --threads: expected an integer in [1, 64], "
                 "found \"0x8\"", parse(&n, &e, "--threads", "0x8", NULL), &e);
    assert_int_equal(threads, 2);   /* refused values leave the default */
}

static void test_bad_floats_and_u64(void **state) {
    (void)state;
    egm_err e;
    int n;
    expect_error("egmla generate: --temperature: expected a number, found \"warm\"",
                 parse(&n, &e, "--temperature", "warm", NULL), &e);
    expect_error("egmla generate: --temperature: expected a finite number, "
                 "found \"nan\"", parse(&n, &e, "--temperature=nan", NULL), &e);
    expect_error("egmla generate: --temperature: expected a finite number, "
                 "found \"inf\"", parse(&n, &e, "--temperature=inf", NULL), &e);
    expect_error("egmla generate: --temperature: expected a finite number, "
                 "found \"1e39\"", parse(&n, &e, "--temperature=1e39", NULL), &e);
    expect_error("egmla generate: --top-p: expected a number in [0, 1], "
                 "found \"1.5\"", parse(&n, &e, "--top-p", "1.5", NULL), &e);
    expect_error("egmla generate: --top-p: expected a number in [0, 1], "
                 "found \"0.5x\"", parse(&n, &e, "--top-p", "0.5x", NULL), &e);
    expect_error("egmla generate: --seed: expected a non-negative integer, "
                 "found \"-1\"", parse(&n, &e, "--seed", "-1", NULL), &e);
    expect_error("egmla generate: --seed: expected an integer in "
                 "[0, 18446744073709551615], found \"18446744073709551616\"",
                 parse(&n, &e, "--seed", "18446744073709551616", NULL), &e);
    expect_error("egmla generate: --seed: expected a non-negative integer, "
                 "found \"0x10\"", parse(&n, &e, "--seed", "0x10", NULL), &e);
}

static void test_option_errors(void **state) {
    (void)state;
    egm_err e;
    int n;
    expect_error("egmla generate: unknown option --foo (see egmla generate --help)",
                 parse(&n, &e, "--foo", NULL), &e);
    expect_error("egmla generate: unknown option --top (see egmla generate --help)",
                 parse(&n, &e, "--top=3", NULL), &e);
    expect_error("egmla generate: unknown option -k (see egmla generate --help)",
                 parse(&n, &e, "-k", "3", NULL), &e);
    expect_error("egmla generate: --ignore-eos takes no value, found \"yes\"",
                 parse(&n, &e, "--ignore-eos=yes", NULL), &e);
    expect_error("egmla generate: --top-k: expected an integer, found nothing",
                 parse(&n, &e, "--top-k", NULL), &e);
    expect_error("egmla generate: --input: expected a value, found option "
                 "\"--top-k\"", parse(&n, &e, "--input", "--top-k", "3", NULL), &e);
}

/* Runs a parse with stdout sent to a file, returns what was printed. */
static char *capture_parse(int *rc, const char *arg) {
    char dir[] = "/tmp/egm_args_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/out", dir);
    FILE *f = fopen(path, "w+");
    assert_non_null(f);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    dup2(fileno(f), STDOUT_FILENO);
    egm_err e;
    int n;
    *rc = parse(&n, &e, "--top-k", "9", arg, "--foo", NULL);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    static char buf[4096];
    rewind(f);
    size_t got = fread(buf, 1, sizeof buf - 1, f);
    buf[got] = '\0';
    fclose(f);
    unlink(path);
    rmdir(dir);
    return buf;
}

static void test_help(void **state) {
    (void)state;
    int rc;
    char *out = capture_parse(&rc, "--help");
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "usage: egmla generate [options] MODEL_DIR\n"));
    assert_non_null(strstr(out, "Generates text for every request."));
    /* Defaults are the variables' values at the time of --help. */
    assert_non_null(strstr(out, "  --top-k N               keep the k most "
                                "likely tokens (default: 9)\n"));
    assert_non_null(strstr(out, "  --input PATH            requests (JSONL) "
                                "(default: -)\n"));
    assert_non_null(strstr(out, "  --ignore-eos            keep going past EOS\n"));
    assert_non_null(strstr(out, "(default: 7)"));
    assert_non_null(strstr(out, "-h, --help"));
    out = capture_parse(&rc, "-h");
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "usage: egmla generate"));

    char *mem = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&mem, &len);
    egm_args_usage(&cmd, f);
    fclose(f);
    assert_non_null(strstr(mem, "  --temperature X         sampling temperature (default: 1)\n"));
    free(mem);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_given, reset),
        cmocka_unit_test_setup(test_defaults_kept, reset),
        cmocka_unit_test_setup(test_both_forms, reset),
        cmocka_unit_test_setup(test_positionals, reset),
        cmocka_unit_test_setup(test_bad_integers, reset),
        cmocka_unit_test_setup(test_bad_floats_and_u64, reset),
        cmocka_unit_test_setup(test_option_errors, reset),
        cmocka_unit_test_setup(test_help, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
