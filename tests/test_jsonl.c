/* test_jsonl.c - the line reader (CRLF, blank lines, a missing final
 * newline, a 1 MB line) and the line writer (creation errors, append and
 * torn-line repair, ENOSPC, EFBIG under RLIMIT_FSIZE without a partial
 * record). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "coordinator/jsonl.h"

static char tmpdir[64];

static int make_dir(void **state) {
    (void)state;
    strcpy(tmpdir, "/tmp/egm_jsonl_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

static int remove_dir(void **state) {
    (void)state;
    return nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static char *tpath(const char *name) {
    static char buf[4][256];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 256, "%s/%s", tmpdir, name);
    return p;
}

static void write_file(const char *path, const char *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[1 << 16];
    *n = fread(buf, 1, sizeof buf - 1, f);
    buf[*n] = '\0';
    fclose(f);
    return buf;
}

/* ---- reader ---- */

static void expect_line(egm_jsonl *r, const char *text, long lineno) {
    const char *line;
    size_t len;
    long ln;
    egm_err e;
    assert_int_equal(egm_jsonl_next(r, &line, &len, &ln, &e), 1);
    assert_int_equal(len, strlen(text));
    assert_string_equal(line, text);
    assert_int_equal(ln, lineno);
}

static void expect_eof(egm_jsonl *r) {
    const char *line;
    size_t len;
    long ln;
    egm_err e;
    assert_int_equal(egm_jsonl_next(r, &line, &len, &ln, &e), 0);
    assert_int_equal(egm_jsonl_next(r, &line, &len, &ln, &e), 0);
}

static void test_crlf_blank_last_line(void **state) {
    (void)state;
    const char data[] = "\xEF\xBB\xBF{\"id\":1}\r\n\r\n   \n\t\r\n{\"id\":2}\n\n"
                        "{\"id\":3}";
    char *p = tpath("in.jsonl");
    write_file(p, data, sizeof data - 1);
    egm_err e;
    egm_jsonl *r = egm_jsonl_open(p, &e);
    assert_non_null(r);
    assert_string_equal(egm_jsonl_origin(r), p);
    expect_line(r, "{\"id\":1}", 1);   /* BOM and CR gone */
    expect_line(r, "{\"id\":2}", 5);   /* blank lines skipped but counted */
    expect_line(r, "{\"id\":3}", 7);   /* no final newline */
    expect_eof(r);
    egm_jsonl_close(r);
}

static void test_empty_and_stream(void **state) {
    (void)state;
    char *p = tpath("empty.jsonl");
    write_file(p, "", 0);
    egm_err e;
    egm_jsonl *r = egm_jsonl_open(p, &e);
    assert_non_null(r);
    expect_eof(r);
    egm_jsonl_close(r);

    /* A caller's stream, with a NUL byte inside a line: len tells. */
    char data[] = "a\0b\nlast\r";
    FILE *f = fmemopen(data, sizeof data - 1, "rb");
    assert_non_null(f);
    r = egm_jsonl_from_file(f, "mem");
    assert_string_equal(egm_jsonl_origin(r), "mem");
    const char *line;
    size_t len;
    long ln;
    assert_int_equal(egm_jsonl_next(r, &line, &len, &ln, &e), 1);
    assert_int_equal(len, 3);
    assert_memory_equal(line, "a\0b", 3);
    expect_line(r, "last", 2);
    expect_eof(r);
    egm_jsonl_close(r);
    fclose(f);   /* not ours to close: still open */

    r = egm_jsonl_open("-", &e);
    assert_non_null(r);
    assert_string_equal(egm_jsonl_origin(r), "<stdin>");
    egm_jsonl_close(r);
}

static void test_long_line(void **state) {
    (void)state;
    size_t n = 1 << 20;
    char *big = malloc(n + 32);
    assert_non_null(big);
    memcpy(big, "{\"prompt\":\"", 11);
    memset(big + 11, 'x', n - 13);
    memcpy(big + n - 2, "\"}", 2);
    memcpy(big + n, "\r\n{}\n", 5);
    char *p = tpath("big.jsonl");
    write_file(p, big, n + 5);
    egm_err e;
    egm_jsonl *r = egm_jsonl_open(p, &e);
    const char *line;
    size_t len;
    long ln;
    assert_int_equal(egm_jsonl_next(r, &line, &len, &ln, &e), 1);
    assert_int_equal(len, n);
    assert_memory_equal(line, big, n);
    assert_int_equal(line[n], '\0');
    expect_line(r, "{}", 2);
    expect_eof(r);
    egm_jsonl_close(r);
    free(big);
}

static void test_open_errors(void **state) {
    (void)state;
    egm_err e;
    char *p = tpath("missing.jsonl"), want[512];
    assert_null(egm_jsonl_open(p, &e));
    snprintf(want, sizeof want,
             "cannot open input file \"%s\": No such file or directory", p);
    assert_string_equal(e.msg, want);

    /* A directory opens but cannot be read: a read error, not EOF. */
    egm_jsonl *r = egm_jsonl_open(tmpdir, &e);
    assert_non_null(r);
    const char *line;
    size_t len;
    long ln;
    assert_int_equal(egm_jsonl_next(r, &line, &len, &ln, &e), -1);
    snprintf(want, sizeof want, "%s: read error after line 0: Is a directory",
             tmpdir);
    assert_string_equal(e.msg, want);
    egm_jsonl_close(r);
}

/* ---- writer ---- */

static void test_write_and_append(void **state) {
    (void)state;
    char *p = tpath("out.jsonl");
    egm_err e;
    egm_out *o = egm_out_open(p, &e);
    assert_non_null(o);
    assert_string_equal(egm_out_path(o), p);
    assert_int_equal(egm_out_write_line(o, "{\"id\":1}", &e), 0);
    assert_int_equal(egm_out_write_line(o, "{\"id\":2}", &e), 0);
    assert_int_equal(egm_out_write_line(o, "{\"a\":\"x\\ny\"}\n", &e), -1);
    char want[512];
    snprintf(want, sizeof want,
             "%s: refusing to write a record containing a newline", p);
    assert_string_equal(e.msg, want);
    assert_int_equal(egm_out_sync(o, &e), 0);
    assert_int_equal(egm_out_close(o, &e), 0);
    size_t n;
    assert_string_equal(read_all(p, &n), "{\"id\":1}\n{\"id\":2}\n");

    o = egm_out_open_append(p, &e);
    assert_non_null(o);
    assert_int_equal(egm_out_write_line(o, "{\"id\":3}", &e), 0);
    assert_int_equal(egm_out_close(o, &e), 0);
    assert_string_equal(read_all(p, &n), "{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n");

    /* Opening without append starts over, but only once the run commits
     * (its first record, or egm_out_commit): a run that fails before
     * leaves the old output as it was. */
    o = egm_out_open(p, &e);
    assert_int_equal(egm_out_close(o, &e), 0);
    assert_string_equal(read_all(p, &n), "{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n");
    o = egm_out_open(p, &e);
    assert_int_equal(egm_out_commit(o, &e), 0);
    assert_int_equal(egm_out_close(o, &e), 0);
    assert_string_equal(read_all(p, &n), "");
    o = egm_out_open(p, &e);
    assert_int_equal(egm_out_write_line(o, "{\"id\":4}", &e), 0);
    assert_int_equal(egm_out_close(o, &e), 0);
    assert_string_equal(read_all(p, &n), "{\"id\":4}\n");
    /* a file the failed run created is removed again */
    char *r = tpath("never.jsonl");
    o = egm_out_open(r, &e);
    assert_non_null(o);
    assert_int_equal(access(r, F_OK), 0);
    assert_int_equal(egm_out_close(o, &e), 0);
    assert_int_equal(access(r, F_OK), -1);

    /* Append creates a missing file. */
    char *q = tpath("new.jsonl");
    o = egm_out_open_append(q, &e);
    assert_non_null(o);
    assert_int_equal(egm_out_write_line(o, "{}", &e), 0);
    assert_int_equal(egm_out_close(o, &e), 0);
    assert_string_equal(read_all(q, &n), "{}\n");
    assert_int_equal(egm_out_close(NULL, &e), 0);
}

static void test_append_repairs_torn_line(void **state) {
    (void)state;
    char *p = tpath("torn.jsonl");
    write_file(p, "{\"id\":1}\n{\"id\":2,\"tok", 21);
    egm_err e;
    egm_out *o = egm_out_open_append(p, &e);
    assert_non_null(o);
    assert_int_equal(egm_out_write_line(o, "{\"id\":2}", &e), 0);
    assert_int_equal(egm_out_close(o, &e), 0);
    size_t n;
    assert_string_equal(read_all(p, &n), "{\"id\":1}\n{\"id\":2}\n");

    /* A torn first line longer than the scan chunk: nothing survives. */
    char *junk = malloc(10000);
    memset(junk, 'j', 10000);
    write_file(p, junk, 10000);
    free(junk);
    o = egm_out_open_append(p, &e);
    assert_non_null(o);
    assert_int_equal(egm_out_write_line(o, "{}", &e), 0);
    assert_int_equal(egm_out_close(o, &e), 0);
    assert_string_equal(read_all(p, &n), "{}\n");
}

static void test_stdout(void **state) {
    (void)state;
    char *p = tpath("stdout.txt");
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    dup2(fd, STDOUT_FILENO);
    close(fd);
    egm_err e;
    egm_out *o = egm_out_open("-", &e);
    int ok = o && egm_out_write_line(o, "{\"id\":\"s\"}", &e) == 0 &&
             egm_out_sync(o, &e) == 0 && egm_out_close(o, &e) == 0;
    int still_open = fcntl(STDOUT_FILENO, F_GETFD) >= 0;
    dup2(saved, STDOUT_FILENO);
    close(saved);
    assert_true(ok);
    assert_true(still_open);
    size_t n;
    assert_string_equal(read_all(p, &n), "{\"id\":\"s\"}\n");
}

static void test_open_output_errors(void **state) {
    (void)state;
    egm_err e;
    char want[512];
    char *p = tpath("no/such/dir/out.jsonl");
    assert_null(egm_out_open(p, &e));
    snprintf(want, sizeof want,
             "cannot create output file \"%s\": No such file or directory", p);
    assert_string_equal(e.msg, want);
    assert_null(egm_out_open_append(p, &e));
    snprintf(want, sizeof want, "cannot open output file \"%s\" for "
             "appending: No such file or directory", p);
    assert_string_equal(e.msg, want);

    assert_null(egm_out_open(tmpdir, &e));
    snprintf(want, sizeof want,
             "cannot create output file \"%s\": Is a directory", tmpdir);
    assert_string_equal(e.msg, want);

    if (geteuid() != 0) {
        char *ro = tpath("ro");
        assert_int_equal(mkdir(ro, 0555), 0);
        char *q = tpath("ro/out.jsonl");
        assert_null(egm_out_open(q, &e));
        snprintf(want, sizeof want,
                 "cannot create output file \"%s\": Permission denied", q);
        assert_string_equal(e.msg, want);
        chmod(ro, 0755);
    } else {
        /* Root writes anywhere on disk, but not new files into /proc. */
        const char *q = "/proc/egm-test-out.jsonl";
        errno = 0;
        int fd = open(q, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int err = errno;
        assert_true(fd < 0);
        assert_null(egm_out_open(q, &e));
        snprintf(want, sizeof want, "cannot create output file \"%s\": %s", q,
                 strerror(err));
        assert_string_equal(e.msg, want);
    }
}

static void test_enospc(void **state) {
    (void)state;
    egm_err e;
    egm_out *o = egm_out_open("/dev/full", &e);
    assert_non_null(o);
    assert_int_equal(egm_out_write_line(o, "{\"id\":1}", &e), -1);
    assert_string_equal(e.msg, "cannot write to output \"/dev/full\": No space "
                               "left on device");
    assert_int_equal(egm_out_close(o, &e), 0);

    /* fsync on a device that cannot sync is not an error. */
    o = egm_out_open("/dev/null", &e);
    assert_non_null(o);
    assert_int_equal(egm_out_write_line(o, "{}", &e), 0);
    assert_int_equal(egm_out_sync(o, &e), 0);
    assert_int_equal(egm_out_close(o, &e), 0);
}

/* In a child with a 100-byte file size limit and SIGXFSZ ignored, 30-byte
 * records are written until one fails. The parent checks the message (sent
 * through a pipe) and that the file holds only whole records. */
static void test_efbig(void **state) {
    (void)state;
    char *p = tpath("limited.jsonl");
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {100, 100};
        if (setrlimit(RLIMIT_FSIZE, &rl) < 0) _exit(10);
        egm_err ce;
        egm_out *o = egm_out_open(p, &ce);
        if (!o) _exit(11);
        const char *rec = "{\"id\":1,\"tokens\":[1,2,3,4,5]}";   /* 29 + \n */
        int k = 0;
        while (k < 10 && egm_out_write_line(o, rec, &ce) == 0) k++;
        ssize_t w = write(fds[1], ce.msg, strlen(ce.msg));
        egm_out_close(o, &ce);
        _exit(w > 0 && k == 3 ? 0 : 12);
    }
    close(fds[1]);
    char msg[1100] = {0};
    size_t got = 0;
    ssize_t r;
    while ((r = read(fds[0], msg + got, sizeof msg - 1 - got)) > 0) got += (size_t)r;
    close(fds[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    char want[512];
    snprintf(want, sizeof want,
             "cannot write to output \"%s\": File too large", p);
    assert_string_equal(msg, want);
    size_t n;
    char *data = read_all(p, &n);
    assert_int_equal(n, 90);   /* 3 whole records; the 10 torn bytes cut off */
    assert_int_equal(data[89], '\n');
}

static void test_distinct(void **state) {
    (void)state;
    egm_err e;
    char *in = tpath("req.jsonl"), *other = tpath("res.jsonl");
    write_file(in, "{}\n", 3);
    char same[300];
    snprintf(same, sizeof same, "%s/./req.jsonl", tmpdir);
    assert_int_equal(egm_jsonl_check_distinct(in, same, &e), -1);
    char want[700];
    snprintf(want, sizeof want, "output \"%s\" is the input file \"%s\"; "
             "writing it would destroy the requests", same, in);
    assert_string_equal(e.msg, want);
    assert_int_equal(egm_jsonl_check_distinct(in, other, &e), 0);  /* absent */
    write_file(other, "", 0);
    assert_int_equal(egm_jsonl_check_distinct(in, other, &e), 0);
    assert_int_equal(egm_jsonl_check_distinct("-", "-", &e), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crlf_blank_last_line),
        cmocka_unit_test(test_empty_and_stream),
        cmocka_unit_test(test_long_line),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_write_and_append),
        cmocka_unit_test(test_append_repairs_torn_line),
        cmocka_unit_test(test_stdout),
        cmocka_unit_test(test_open_output_errors),
        cmocka_unit_test(test_enospc),
        cmocka_unit_test(test_efbig),
        cmocka_unit_test(test_distinct),
    };
    return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
