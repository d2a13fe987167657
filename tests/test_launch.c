/* test_launch.c - `egmla launch` / `egmla slurm`: hostfile, rankfile, the
 * mpirun command line, --dry-run output, sbatch scripts, exit statuses.
 * Nothing here runs mpirun. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "deploy/launch.h"
#include "deploy/topology.h"

static void parse(const char *yaml, egm_topology *t) {
    egm_err e = {{0}};
    int rc = egm_topology_parse(yaml, strlen(yaml), "t.yaml", t, &e);
    if (rc) print_error("%s\n", e.msg);
    assert_int_equal(rc, 0);
}

/* Index of the first argument equal to s at or after `from`, or -1. */
static int find_arg(char **argv, int from, const char *s) {
    for (int i = from; argv[i]; i++)
        if (!strcmp(argv[i], s)) return i;
    return -1;
}

static int count_arg(char **argv, const char *s) {
    int n = 0;
    for (int i = 0; argv[i]; i++) n += !strcmp(argv[i], s);
    return n;
}

/* argv[i..] starts with the given words. */
static void assert_seq(char **argv, const char *first, ...) {
    int i = find_arg(argv, 0, first);
    if (i < 0) print_error("missing %s\n", first);
    assert_true(i >= 0);
    va_list ap;
    va_start(ap, first);
    for (const char *w; (w = va_arg(ap, const char *)); ) {
        i++;
        if (!argv[i] || strcmp(argv[i], w))
            print_error("after %s: expected %s, found %s\n", first, w,
                        argv[i] ? argv[i] : "(end)");
        assert_non_null(argv[i]);
        assert_string_equal(argv[i], w);
    }
    va_end(ap);
}

static char *CMD[] = {"generate", "--input", "my file.jsonl"};

static egm_launch_opts opts(void) {
    egm_launch_opts o = {NULL, "/opt/egmla/bin/egmla", "/abs/topo.yaml", "/w/hostfile",
                         "/w/rankfile", 0, 0, 3, CMD};
    return o;
}

static const char *TWO_HOSTS =
    "transport: tcp\n"
    "coordinator: {node: a}\n"
    "nodes:\n"
    "  - {name: a, host: 10.0.0.1, slots: 2, threads: 2}\n"
    "  - {name: b, host: node-b, slots: 3, threads: 4}\n"
    "  - {name: a2, host: 10.0.0.1, slots: 1}\n"     /* same host as a */
    "stages:\n"
    "  - {node: a, threads: 1}\n"
    "  - {node: b}\n"
    "  - {node: b}\n"
    "  - {node: a2}\n";

static void test_hostfile_rankfile(void **state) {
    (void)state;
    egm_topology t;
    egm_err e = {{0}};
    parse(TWO_HOSTS, &t);
    char *hf, *rf;
    assert_int_equal(egm_launch_hostfile(&t, &hf, &e), 0);
    /* host a and a2 merge: 2 + 1 slots; hosts in order of first rank */
    assert_string_equal(hf, "10.0.0.1 slots=3\nnode-b slots=3\n");
    assert_int_equal(egm_launch_rankfile(&t, &rf, &e), 0);
    assert_string_equal(rf,
                        "rank 0=10.0.0.1 slot=0-1\n"    /* coordinator: a's 2 threads */
                        "rank 1=10.0.0.1 slot=2\n"      /* stage threads: 1 */
                        "rank 2=node-b slot=0-3\n"
                        "rank 3=node-b slot=4-7\n"
                        "rank 4=10.0.0.1 slot=3\n");    /* a2: 1 thread, after a's */
    free(hf);
    free(rf);
    egm_topology_free(&t);
}

static void test_argv_local(void **state) {
    (void)state;
    egm_topology t;
    egm_err e = {{0}};
    assert_int_equal(egm_topology_load("deploy/examples/local-2stage.yaml", &t, &e), 0);
    egm_launch_opts o = opts();
    char **v;
    assert_int_equal(egm_launch_build_argv(&t, &o, &v, &e), 0);
    assert_string_equal(v[0], "mpirun");
    assert_int_equal(find_arg(v, 0, "--allow-run-as-root"), -1);
    assert_int_equal(find_arg(v, 0, "--oversubscribe"), -1);    /* CPUs unknown */
    assert_seq(v, "--hostfile", "/w/hostfile", "--bind-to", "none", NULL);
    assert_int_equal(find_arg(v, 0, "--rankfile"), -1);
    assert_seq(v, "--mca", "pml", "ob1", "--mca", "btl", "vader,self", NULL);
    assert_seq(v, "-x", "OPENBLAS_NUM_THREADS=1", "-x", "OMP_NUM_THREADS=1", "-np", "3",
               "/opt/egmla/bin/egmla", "generate", "--input", "my file.jsonl",
               "--topology", "/abs/topo.yaml", NULL);
    assert_int_equal(count_arg(v, ":"), 0);
    char *line = egm_shell_join(v);
    assert_non_null(strstr(line, "--input 'my file.jsonl' --topology /abs/topo.yaml"));
    assert_null(strchr(line, '\n'));
    free(line);
    egm_argv_free(v);
    /* as root, on a 2-CPU machine: 3 ranks on localhost */
    o.as_root = 1;
    o.local_cpus = 2;
    o.mpirun = "/usr/bin/mpirun";
    assert_int_equal(egm_launch_build_argv(&t, &o, &v, &e), 0);
    assert_string_equal(v[0], "/usr/bin/mpirun");
    assert_string_equal(v[1], "--allow-run-as-root");
    assert_true(find_arg(v, 0, "--oversubscribe") > 0);
    egm_argv_free(v);
    o.local_cpus = 4;
    assert_int_equal(egm_launch_build_argv(&t, &o, &v, &e), 0);
    assert_int_equal(find_arg(v, 0, "--oversubscribe"), -1);
    egm_argv_free(v);
    egm_topology_free(&t);
}

static void test_argv_transports(void **state) {
    (void)state;
    const char *names[] = {"auto", "tcp", "ucx"};
    for (int i = 0; i < 3; i++) {
        char y[256];
        snprintf(y, sizeof y, "transport: %s\nnodes: [{name: a}]\nstages: [{node: a}]\n",
                 names[i]);
        egm_topology t;
        egm_err e = {{0}};
        parse(y, &t);
        egm_launch_opts o = opts();
        char **v;
        assert_int_equal(egm_launch_build_argv(&t, &o, &v, &e), 0);
        if (i == 0) {
            assert_int_equal(find_arg(v, 0, "--mca"), -1);
        } else if (i == 1) {
            assert_seq(v, "--mca", "pml", "ob1", "--mca", "btl", "tcp,self", NULL);
        } else {
            assert_seq(v, "--mca", "pml", "ucx", "--mca", "pml_ucx_tls", "any",
                       "--mca", "pml_ucx_devices", "any", NULL);
            assert_int_equal(find_arg(v, 0, "btl"), -1);
        }
        egm_argv_free(v);
        egm_topology_free(&t);
    }
}

static void test_argv_bind_core(void **state) {
    (void)state;
    egm_topology t;
    egm_err e = {{0}};
    assert_int_equal(egm_topology_load("deploy/examples/ucx.yaml", &t, &e), 0);
    egm_launch_opts o = opts();
    char **v;
    assert_int_equal(egm_launch_build_argv(&t, &o, &v, &e), 0);
    assert_seq(v, "--hostfile", "/w/hostfile", "--rankfile", "/w/rankfile", NULL);
    assert_int_equal(find_arg(v, 0, "--bind-to"), -1);
    assert_int_equal(find_arg(v, 0, "--host"), -1);      /* the rankfile places */
    assert_seq(v, "-x", "OPENBLAS_NUM_THREADS=2", "-x", "OMP_NUM_THREADS=2", "-np", "4", NULL);
    egm_argv_free(v);
    egm_topology_free(&t);
    /* bind: core on this machine with more threads than CPUs is refused */
    parse("bind: core\nnodes: [{name: l, host: localhost, threads: 2}]\n"
          "stages: [{node: l}]\n", &t);
    o.local_cpus = 3;
    assert_int_equal(egm_launch_build_argv(&t, &o, &v, &e), -1);
    assert_null(v);
    assert_non_null(strstr(e.msg, "bind: core needs 4 cores on host 'localhost'"));
    o.local_cpus = 4;
    assert_int_equal(egm_launch_build_argv(&t, &o, &v, &e), 0);
    egm_argv_free(v);
    egm_topology_free(&t);
}

static void test_argv_app_contexts(void **state) {
    (void)state;
    egm_topology t;
    egm_err e = {{0}};
    parse(TWO_HOSTS, &t);
    egm_launch_opts o = opts();
    char **v;
    assert_int_equal(egm_launch_build_argv(&t, &o, &v, &e), 0);
    /* ranks: 0 a(2 thr), 1 a(1), 2 b(4), 3 b(4), 4 a2(1) -> contexts
     * [0] [1] [2,3] [4]: host runs, split further where threads differ */
    assert_int_equal(count_arg(v, ":"), 3);
    assert_int_equal(count_arg(v, "/opt/egmla/bin/egmla"), 4);
    assert_int_equal(count_arg(v, "--topology"), 4);
    char *line = egm_shell_join(v);
    const char *tail = " generate --input 'my file.jsonl' --topology /abs/topo.yaml";
    char want[1024];
    snprintf(want, sizeof want,
             "mpirun --hostfile /w/hostfile --bind-to none --mca pml ob1 --mca btl tcp,self"
             " -np 1 --host 10.0.0.1:3 -x OPENBLAS_NUM_THREADS=2 -x OMP_NUM_THREADS=2"
             " /opt/egmla/bin/egmla%s"
             " : -np 1 --host 10.0.0.1:3 -x OPENBLAS_NUM_THREADS=1 -x OMP_NUM_THREADS=1"
             " /opt/egmla/bin/egmla%s"
             " : -np 2 --host node-b:3 -x OPENBLAS_NUM_THREADS=4 -x OMP_NUM_THREADS=4"
             " /opt/egmla/bin/egmla%s"
             " : -np 1 --host 10.0.0.1:3 -x OPENBLAS_NUM_THREADS=1 -x OMP_NUM_THREADS=1"
             " /opt/egmla/bin/egmla%s", tail, tail, tail, tail);
    assert_string_equal(line, want);
    free(line);
    egm_argv_free(v);
    egm_topology_free(&t);
}

static void test_shell_join(void **state) {
    (void)state;
    char *a[] = {"mpirun", "a b", "it's", "", "x=1,y:2/z", "$HOME", NULL};
    char *s = egm_shell_join(a);
    assert_string_equal(s, "mpirun 'a b' 'it'\\''s' '' x=1,y:2/z '$HOME'");
    free(s);
}

static void test_slurm_script(void **state) {
    (void)state;
    egm_topology t;
    egm_err e = {{0}};
    assert_int_equal(egm_topology_load("deploy/examples/ucx.yaml", &t, &e), 0);
    char *cmd[] = {"score", "--input", "in put.jsonl"};
    egm_slurm_opts so = {0, NULL, "01:30:00", "cpu", "/opt/egmla", "/abs/ucx.yaml", 3, cmd};
    char *s;
    assert_int_equal(egm_slurm_script(&t, &so, &s, &e), 0);
    assert_true(!strncmp(s, "#!/bin/bash\n", 12));
    assert_non_null(strstr(s, "#SBATCH --job-name=egmla\n"));
    assert_non_null(strstr(s, "#SBATCH --nodes=2\n"));
    assert_non_null(strstr(s, "#SBATCH --ntasks=4\n"));
    assert_non_null(strstr(s, "#SBATCH --cpus-per-task=2\n"));
    assert_non_null(strstr(s, "#SBATCH --ntasks-per-node=2\n"));
    assert_non_null(strstr(s, "#SBATCH --time=01:30:00\n"));
    assert_non_null(strstr(s, "#SBATCH --partition=cpu\n"));
    assert_non_null(strstr(s, "export OPENBLAS_NUM_THREADS=2\n"));
    assert_non_null(strstr(s, "export OMP_NUM_THREADS=2\n"));
    assert_non_null(strstr(s, "\nsrun --mpi=pmix --cpu-bind=cores /opt/egmla score --input "
                              "'in put.jsonl' --topology /abs/ucx.yaml\n"));
    assert_null(strstr(s, "mpirun"));
    free(s);
    /* mpirun inside the allocation */
    so.use_mpirun = 1;
    so.job_name = "pipe-1";
    so.time = NULL;
    so.partition = NULL;
    assert_int_equal(egm_slurm_script(&t, &so, &s, &e), 0);
    assert_non_null(strstr(s, "#SBATCH --job-name=pipe-1\n"));
    assert_null(strstr(s, "--time"));
    assert_null(strstr(s, "--partition"));
    assert_null(strstr(s, "srun"));
    assert_non_null(strstr(s, "\nmpirun -np 4 --map-by slot:PE=2 --bind-to core --mca pml ucx "
                              "--mca pml_ucx_tls any --mca pml_ucx_devices any "
                              "-x OPENBLAS_NUM_THREADS -x OMP_NUM_THREADS /opt/egmla score"));
    free(s);
    /* values that would break the script */
    so.job_name = "a b";
    assert_int_equal(egm_slurm_script(&t, &so, &s, &e), -1);
    assert_non_null(strstr(e.msg, "--job-name"));
    so.job_name = NULL;
    so.time = "1h\n#SBATCH --x";
    assert_int_equal(egm_slurm_script(&t, &so, &s, &e), -1);
    assert_non_null(strstr(e.msg, "--time"));
    egm_topology_free(&t);
    /* uneven ranks per host: no --ntasks-per-node; max threads per task */
    assert_int_equal(egm_topology_load("deploy/examples/three-hosts.yaml", &t, &e), 0);
    so = (egm_slurm_opts){0, NULL, NULL, NULL, "/e", "/t.yaml", 1, cmd};
    assert_int_equal(egm_slurm_script(&t, &so, &s, &e), 0);
    assert_non_null(strstr(s, "#SBATCH --nodes=3\n"));
    assert_non_null(strstr(s, "#SBATCH --ntasks=4\n"));
    assert_non_null(strstr(s, "#SBATCH --cpus-per-task=8\n"));
    assert_null(strstr(s, "--ntasks-per-node"));
    assert_non_null(strstr(s, "srun --mpi=pmix --cpu-bind=none /e score --topology /t.yaml\n"));
    free(s);
    egm_topology_free(&t);
}

/* ---- the commands, in-process, stdout captured in a file */

typedef struct {
    char dir[256];
    char out[300];
} tmp;

static void tmp_init(tmp *d) {
    strcpy(d->dir, "/tmp/test_launch_XXXXXX");
    assert_non_null(mkdtemp(d->dir));
    snprintf(d->out, sizeof d->out, "%s/stdout", d->dir);
}

static void tmp_write(tmp *d, const char *name, const char *text) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", d->dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void tmp_cleanup(tmp *d) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d->dir);
    assert_int_equal(system(cmd), 0);
}

static char last_err[4096];   /* stderr of the last run_captured */

static char *slurp(const char *path) {
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return strdup(buf);
}

/* Runs fn(argv) with stdout and stderr into files; returns its status, the
 * output (malloc'd) in *out and stderr in last_err. */
static int run_captured(tmp *d, int (*fn)(int, char **), char **argv, char **out) {
    int argc = 0;
    while (argv[argc]) argc++;
    char errpath[320];
    snprintf(errpath, sizeof errpath, "%s/stderr", d->dir);
    fflush(stdout);
    fflush(stderr);
    int so = dup(1), se = dup(2);
    int fo = open(d->out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int fe = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fo >= 0 && fe >= 0 && so >= 0 && se >= 0);
    dup2(fo, 1);
    dup2(fe, 2);
    close(fo);
    close(fe);
    int rc = fn(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    close(so);
    close(se);
    char *err = slurp(errpath);
    snprintf(last_err, sizeof last_err, "%s", err);
    free(err);
    *out = slurp(d->out);
    return rc;
}

static void test_cmd_launch_dry_run(void **state) {
    (void)state;
    tmp d;
    tmp_init(&d);
    char wd[300], topo[300], abs_topo[4096], arg[5000];
    snprintf(wd, sizeof wd, "%s/work", d.dir);
    snprintf(topo, sizeof topo, "%s/topo.yaml", d.dir);
    tmp_write(&d, "topo.yaml",
              "transport: tcp\nnodes:\n  - {name: l, host: localhost, slots: 3}\n"
              "stages:\n  - {node: l, layers: 0}\n  - {node: l, layers: auto}\n");
    assert_non_null(realpath(topo, abs_topo));
    char *argv[] = {topo, "--dry-run", "--workdir", wd, "--mpirun", "/x/mpirun",
                    "--", "generate", "--max-tokens", "4", NULL};
    char *out;
    int rc = run_captured(&d, egm_cmd_launch, argv, &out);
    assert_int_equal(rc, 0);
    snprintf(arg, sizeof arg, "# hostfile %s/hostfile\n#   localhost slots=3\n", wd);
    assert_non_null(strstr(out, arg));
    assert_non_null(strstr(out, "#   rank 0=localhost slot=0\n"));
    assert_non_null(strstr(out, "#   rank 2=localhost slot=2\n"));
    snprintf(arg, sizeof arg, "\n/x/mpirun %s%s--hostfile %s/hostfile --bind-to none "
             "--mca pml ob1 --mca btl tcp,self -x OPENBLAS_NUM_THREADS=1 "
             "-x OMP_NUM_THREADS=1 -np 3 ", geteuid() == 0 ? "--allow-run-as-root " : "",
             sysconf(_SC_NPROCESSORS_ONLN) < 3 ? "--oversubscribe " : "", wd);
    if (!strstr(out, arg)) print_error("output:\n%s\nwanted: %s\n", out, arg);
    assert_non_null(strstr(out, arg));
    snprintf(arg, sizeof arg, " generate --max-tokens 4 --topology %s\n", abs_topo);
    assert_non_null(strstr(out, arg));
    free(out);
    /* the files are there for the printed command */
    char p[400], buf[256] = "";
    snprintf(p, sizeof p, "%s/rankfile", wd);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    assert_string_equal(buf, "rank 0=localhost slot=0\nrank 1=localhost slot=1\n"
                             "rank 2=localhost slot=2\n");
    tmp_cleanup(&d);
}

static void test_cmd_exit_status(void **state) {
    (void)state;
    tmp d;
    tmp_init(&d);
    char good[300], bad[300], model[300], wd[300];
    snprintf(good, sizeof good, "%s/good.yaml", d.dir);
    snprintf(bad, sizeof bad, "%s/bad.yaml", d.dir);
    snprintf(model, sizeof model, "%s/m", d.dir);
    snprintf(wd, sizeof wd, "%s/w", d.dir);
    tmp_write(&d, "good.yaml", "nodes: [{name: a}]\nstages:\n  - {node: a}\n"
                               "  - {node: a}\n  - {node: a}\n");
    tmp_write(&d, "bad.yaml", "nodes: [{name: a}]\nstages:\n  - {node: b}\n");
    char *out;
    /* bad topology: its message, status 2 */
    char *a1[] = {bad, "--dry-run", "--", "generate", NULL};
    assert_int_equal(run_captured(&d, egm_cmd_launch, a1, &out), 2);
    assert_string_equal(out, "");
    assert_non_null(strstr(last_err, "bad.yaml line 3: node 'b' is not declared"));
    free(out);
    char *a2[] = {bad, "--", "generate", NULL};
    assert_int_equal(run_captured(&d, egm_cmd_slurm, a2, &out), 2);
    assert_non_null(strstr(last_err, "bad.yaml line 3"));
    free(out);
    /* usage: no command, no topology, unknown option, --topology given */
    char *a3[] = {good, "--dry-run", NULL};
    assert_int_equal(run_captured(&d, egm_cmd_launch, a3, &out), 2);
    assert_non_null(strstr(last_err, "expected \"-- <egmla command>"));
    free(out);
    char *a4[] = {"--dry-run", "--", "generate", NULL};
    assert_int_equal(run_captured(&d, egm_cmd_launch, a4, &out), 2);
    free(out);
    char *a5[] = {good, "--bogus", "--", "generate", NULL};
    assert_int_equal(run_captured(&d, egm_cmd_slurm, a5, &out), 2);
    free(out);
    char *a6[] = {good, "--dry-run", "--", "generate", "--topology", "x", NULL};
    assert_int_equal(run_captured(&d, egm_cmd_launch, a6, &out), 2);
    assert_non_null(strstr(last_err, "must not have --topology"));
    free(out);
    char *a7[] = {good, "--launcher", "pbs", "--", "generate", NULL};
    assert_int_equal(run_captured(&d, egm_cmd_slurm, a7, &out), 2);
    free(out);
    /* --help: usage on stdout, status 0 */
    char *a8[] = {"--help", NULL};
    assert_int_equal(run_captured(&d, egm_cmd_launch, a8, &out), 0);
    assert_non_null(strstr(out, "--dry-run"));
    free(out);
    assert_int_equal(run_captured(&d, egm_cmd_slurm, a8, &out), 0);
    assert_non_null(strstr(out, "--launcher"));
    free(out);
    /* slurm in-process */
    char *a9[] = {good, "--launcher", "mpirun", "--", "score", NULL};
    assert_int_equal(run_captured(&d, egm_cmd_slurm, a9, &out), 0);
    assert_non_null(strstr(out, "#SBATCH --ntasks=4\n"));
    assert_non_null(strstr(out, "mpirun -np 4 "));
    free(out);
    /* the model's config is read when it is here: 3 stages, 2 layers */
    assert_int_equal(mkdir(model, 0700), 0);
    tmp_write(&d, "m/config.json",
              "{\"model_type\": \"llama\", \"vocab_size\": 16, \"hidden_size\": 8,"
              " \"intermediate_size\": 16, \"num_hidden_layers\": 2,"
              " \"num_attention_heads\": 2, \"rms_norm_eps\": 1e-5,"
              " \"rope_theta\": 10000, \"max_position_embeddings\": 64}");
    char *a10[] = {good, "--dry-run", "--workdir", wd, "--", "generate", "--model", model, NULL};
    assert_int_equal(run_captured(&d, egm_cmd_launch, a10, &out), 2);
    assert_string_equal(out, "");
    assert_non_null(strstr(last_err, "good.yaml line 5: 3 stages but the model has only 2 layers"));
    free(out);
    /* ... and passes with a model the stages fit */
    tmp_write(&d, "m/config.json",
              "{\"model_type\": \"llama\", \"vocab_size\": 16, \"hidden_size\": 8,"
              " \"intermediate_size\": 16, \"num_hidden_layers\": 3,"
              " \"num_attention_heads\": 2, \"rms_norm_eps\": 1e-5,"
              " \"rope_theta\": 10000, \"max_position_embeddings\": 64}");
    assert_int_equal(run_captured(&d, egm_cmd_launch, a10, &out), 0);
    assert_non_null(strstr(out, "-np 4 "));
    /* --dry-run prints each stage's layers and predicted share */
    assert_non_null(strstr(out, "# stage 1 (a, 1 thread): layers 0-0 + embedding, predicted "));
    assert_non_null(strstr(out, "# stage 3 (a, 1 thread): layers 2-2 + lm_head, predicted "));
    free(out);
    tmp_cleanup(&d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostfile_rankfile),
        cmocka_unit_test(test_argv_local),
        cmocka_unit_test(test_argv_transports),
        cmocka_unit_test(test_argv_bind_core),
        cmocka_unit_test(test_argv_app_contexts),
        cmocka_unit_test(test_shell_join),
        cmocka_unit_test(test_slurm_script),
        cmocka_unit_test(test_cmd_launch_dry_run),
        cmocka_unit_test(test_cmd_exit_status),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
