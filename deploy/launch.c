/* launch.c - runs a topology through mpirun, or writes an sbatch script.
 *
 * Placement is exact: rank 0 is the coordinator, rank i stage i-1, each on
 * the host its topology entry names. How that is told to Open MPI 4.1:
 *
 *  - bind: core  -> --rankfile: every rank gets `threads` consecutive cores
 *                   on its host ("slot=2-3"). A rankfile both places and
 *                   binds, which --map-by slot:PE=n cannot do for ranks whose
 *                   hosts are not in slot order.
 *  - bind: none  -> --bind-to none, and one app context per run of ranks on
 *                   the same host ("-np k --host h:slots ... : ..."), since a
 *                   rankfile always binds (--bind-to none does not undo it).
 *
 * Threads: OPENBLAS_NUM_THREADS / OMP_NUM_THREADS are set with -x, globally
 * when all ranks agree, else per app context. Open MPI trusts the slots the
 * hostfile declares, and validation keeps ranks within them, so no
 * --oversubscribe is needed; it is added only as a safeguard when a host
 * that is this machine gets more ranks than it has CPUs. bind: core on this
 * machine is refused when the ranks' threads exceed its CPUs (the rankfile
 * would name cores that do not exist); for other hosts that is mpirun's to
 * say. Running as root needs --allow-run-as-root.
 *
 * Transport: ucx -> pml ucx with any transport and device (hosts without
 * InfiniBand need pml_ucx_tls/devices "any" on Open MPI 4.1); tcp -> ob1 +
 * tcp,self; shm -> ob1 + vader,self; auto -> Open MPI's choice. */
#include "launch.h"
#include "split.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/args.h"
#include "model/config.h"

enum { EXIT_RUN = 1, EXIT_USAGE = 2 };

/* ---------------------------------------------------------------- buffers */

typedef struct {
    char *s;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) { b->oom = 1; return; }
        if (b->s && b->len + (size_t)n < b->cap) { b->len += (size_t)n; return; }
        size_t cap = (b->cap ? b->cap * 2 : 256) + (size_t)n;
        char *s = realloc(b->s, cap);
        if (!s) { b->oom = 1; return; }
        b->s = s;
        b->cap = cap;
    }
}

/* Hands the text over (or NULL when memory ran out). */
static char *sb_take(sbuf *b) {
    if (b->oom || !b->s) { free(b->s); return b->oom ? NULL : strdup(""); }
    return b->s;
}

typedef struct {
    char **v;
    int n, cap, oom;
} vec;

static void vpush(vec *a, const char *s) {
    if (a->oom) return;
    if (a->n + 2 > a->cap) {
        int cap = a->cap ? a->cap * 2 : 32;
        char **v = realloc(a->v, (size_t)cap * sizeof *v);
        if (!v) { a->oom = 1; return; }
        a->v = v;
        a->cap = cap;
    }
    if (!(a->v[a->n] = strdup(s))) { a->oom = 1; return; }
    a->v[++a->n] = NULL;
}

static void vpushf(vec *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void vpushf(vec *a, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    vpush(a, buf);
}

void egm_argv_free(char **argv) {
    if (!argv) return;
    for (char **p = argv; *p; p++) free(*p);
    free(argv);
}

static int shell_safe(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || strchr("_@%+=:,./-", *s)))
            return 0;
    return 1;
}

static void sb_quote(sbuf *b, const char *s) {
    if (shell_safe(s)) { sb_printf(b, "%s", s); return; }
    sb_printf(b, "'");
    for (; *s; s++) {
        if (*s == '\'') sb_printf(b, "'\\''");
        else sb_printf(b, "%c", *s);
    }
    sb_printf(b, "'");
}

char *egm_shell_join(char *const *argv) {
    sbuf b = {0};
    for (int i = 0; argv[i]; i++) {
        if (i) sb_printf(&b, " ");
        sb_quote(&b, argv[i]);
    }
    return sb_take(&b);
}

/* --------------------------------------------------------------- placement */

/* Distinct hosts that run ranks, in order of their first rank. */
typedef struct {
    int n;
    const char *host[512];
    int slots[512];    /* summed over node entries with this host */
    int ranks[512];
    int cores[512];    /* threads of its ranks, summed */
} hosts;

static int host_index(const hosts *h, const char *name) {
    for (int i = 0; i < h->n; i++)
        if (!strcmp(h->host[i], name)) return i;
    return -1;
}

static int collect_hosts(const egm_topology *t, hosts *h, egm_err *e) {
    h->n = 0;
    int R = egm_topology_n_ranks(t);
    for (int r = 0; r < R; r++) {
        const egm_topo_node *nd = &t->nodes[egm_topology_rank_node(t, r)];
        int i = host_index(h, nd->host);
        if (i < 0) {
            if (h->n == 512) return egm_fail(e, "%s: more than 512 hosts", t->origin);
            i = h->n++;
            h->host[i] = nd->host;
            h->slots[i] = h->ranks[i] = h->cores[i] = 0;
            for (int k = 0; k < t->n_nodes; k++)   /* every entry on this host */
                if (!strcmp(t->nodes[k].host, nd->host)) h->slots[i] += t->nodes[k].slots;
        }
        h->ranks[i]++;
        h->cores[i] += egm_topology_rank_threads(t, r);
    }
    return 0;
}

static int is_this_machine(const char *host) {
    if (!strcmp(host, "localhost") || !strcmp(host, "127.0.0.1") || !strcmp(host, "::1"))
        return 1;
    char me[256];
    if (gethostname(me, sizeof me) == 0) {
        me[sizeof me - 1] = 0;
        if (!strcmp(host, me)) return 1;
    }
    return 0;
}

int egm_launch_hostfile(const egm_topology *t, char **text, egm_err *e) {
    hosts *h = malloc(sizeof *h);
    if (!h) return egm_fail(e, "out of memory");
    if (collect_hosts(t, h, e)) { free(h); return -1; }
    sbuf b = {0};
    for (int i = 0; i < h->n; i++) sb_printf(&b, "%s slots=%d\n", h->host[i], h->slots[i]);
    free(h);
    if (!(*text = sb_take(&b))) return egm_fail(e, "out of memory");
    return 0;
}

int egm_launch_rankfile(const egm_topology *t, char **text, egm_err *e) {
    hosts *h = malloc(sizeof *h);
    if (!h) return egm_fail(e, "out of memory");
    if (collect_hosts(t, h, e)) { free(h); return -1; }
    int next[512] = {0};   /* next free core per host */
    sbuf b = {0};
    for (int r = 0; r < egm_topology_n_ranks(t); r++) {
        const char *host = t->nodes[egm_topology_rank_node(t, r)].host;
        int i = host_index(h, host), th = egm_topology_rank_threads(t, r);
        int c0 = next[i];
        next[i] += th;
        if (th == 1) sb_printf(&b, "rank %d=%s slot=%d\n", r, host, c0);
        else sb_printf(&b, "rank %d=%s slot=%d-%d\n", r, host, c0, c0 + th - 1);
    }
    free(h);
    if (!(*text = sb_take(&b))) return egm_fail(e, "out of memory");
    return 0;
}

/* ------------------------------------------------------------ mpirun argv */

static void push_transport(vec *a, egm_transport x) {
    switch (x) {
    case EGM_TRANSPORT_UCX:
        vpush(a, "--mca"); vpush(a, "pml"); vpush(a, "ucx");
        vpush(a, "--mca"); vpush(a, "pml_ucx_tls"); vpush(a, "any");
        vpush(a, "--mca"); vpush(a, "pml_ucx_devices"); vpush(a, "any");
        break;
    case EGM_TRANSPORT_TCP:
        vpush(a, "--mca"); vpush(a, "pml"); vpush(a, "ob1");
        vpush(a, "--mca"); vpush(a, "btl"); vpush(a, "tcp,self");
        break;
    case EGM_TRANSPORT_SHM:
        vpush(a, "--mca"); vpush(a, "pml"); vpush(a, "ob1");
        vpush(a, "--mca"); vpush(a, "btl"); vpush(a, "vader,self");
        break;
    case EGM_TRANSPORT_AUTO:
        break;
    }
}

static void push_threads(vec *a, int th) {
    vpush(a, "-x"); vpushf(a, "OPENBLAS_NUM_THREADS=%d", th);
    vpush(a, "-x"); vpushf(a, "OMP_NUM_THREADS=%d", th);
}

static void push_command(vec *a, const egm_launch_opts *o) {
    vpush(a, o->exe);
    for (int i = 0; i < o->argc; i++) vpush(a, o->argv[i]);
    vpush(a, "--topology");
    vpush(a, o->topology);
}

int egm_launch_build_argv(const egm_topology *t, const egm_launch_opts *o,
                          char ***out, egm_err *e) {
    *out = NULL;
    hosts *h = malloc(sizeof *h);
    if (!h) return egm_fail(e, "out of memory");
    if (collect_hosts(t, h, e)) { free(h); return -1; }
    int R = egm_topology_n_ranks(t);
    int uniform = 1, over = 0;
    for (int r = 1; r < R; r++)
        uniform &= egm_topology_rank_threads(t, r) == egm_topology_rank_threads(t, 0);
    for (int i = 0; i < h->n; i++) {
        if (o->local_cpus <= 0 || !is_this_machine(h->host[i])) continue;
        if (h->ranks[i] > o->local_cpus) over = 1;
        if (t->bind == EGM_BIND_CORE && h->cores[i] > o->local_cpus) {
            int rc = egm_fail(e, "%s: bind: core needs %d cores on host '%s' "
                              "(threads of its %d ranks) but this machine has %d; "
                              "use bind: none or fewer threads",
                              t->origin, h->cores[i], h->host[i], h->ranks[i],
                              o->local_cpus);
            free(h);
            return rc;
        }
    }
    vec a = {0};
    vpush(&a, o->mpirun ? o->mpirun : "mpirun");
    if (o->as_root) vpush(&a, "--allow-run-as-root");
    if (over) vpush(&a, "--oversubscribe");
    vpush(&a, "--hostfile");
    vpush(&a, o->hostfile);
    if (t->bind == EGM_BIND_CORE) {
        vpush(&a, "--rankfile");
        vpush(&a, o->rankfile);
    } else {
        vpush(&a, "--bind-to");
        vpush(&a, "none");
    }
    push_transport(&a, t->transport);
    if (uniform) push_threads(&a, egm_topology_rank_threads(t, 0));
    /* App contexts: runs of ranks that share what must be said per context
     * (the host when the rankfile does not place them, the threads when
     * they differ). One context when nothing differs. */
    int by_host = t->bind == EGM_BIND_NONE && h->n > 1;
    for (int r = 0; r < R;) {
        int node = egm_topology_rank_node(t, r), th = egm_topology_rank_threads(t, r);
        const char *host = t->nodes[node].host;
        int k = 1;
        while (r + k < R &&
               (!by_host || !strcmp(t->nodes[egm_topology_rank_node(t, r + k)].host, host)) &&
               (uniform || egm_topology_rank_threads(t, r + k) == th))
            k++;
        if (r > 0) vpush(&a, ":");
        vpush(&a, "-np");
        vpushf(&a, "%d", k);
        if (by_host) {
            vpush(&a, "--host");
            vpushf(&a, "%s:%d", host, h->slots[host_index(h, host)]);
        }
        if (!uniform) push_threads(&a, th);
        push_command(&a, o);
        r += k;
    }
    free(h);
    if (a.oom) {
        egm_argv_free(a.v);
        return egm_fail(e, "out of memory");
    }
    *out = a.v;
    return 0;
}

/* ----------------------------------------------------------------- slurm */

/* Text that goes into an #SBATCH line: no spaces, quotes or newlines. */
static int slurm_word(const char *s, const char *extra) {
    if (!*s) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || strchr(extra, *s)))
            return 0;
    return 1;
}

int egm_slurm_script(const egm_topology *t, const egm_slurm_opts *o,
                     char **text, egm_err *e) {
    *text = NULL;
    const char *job = o->job_name ? o->job_name : "egmla";
    if (!slurm_word(job, "._-"))
        return egm_fail(e, "--job-name: letters, digits and '._-' only, found \"%s\"", job);
    if (o->time && !slurm_word(o->time, ":-") )
        return egm_fail(e, "--time: expected [D-]HH:MM:SS or minutes, found \"%s\"", o->time);
    if (o->partition && !slurm_word(o->partition, "._-,"))
        return egm_fail(e, "--partition: letters, digits and '._-,' only, found \"%s\"",
                        o->partition);
    hosts *h = malloc(sizeof *h);
    if (!h) return egm_fail(e, "out of memory");
    if (collect_hosts(t, h, e)) { free(h); return -1; }
    int R = egm_topology_n_ranks(t), max_th = 1, per_node = h->ranks[0], uniform = 1;
    for (int r = 0; r < R; r++) {
        int th = egm_topology_rank_threads(t, r);
        if (th > max_th) max_th = th;
        uniform &= th == egm_topology_rank_threads(t, 0);
    }
    for (int i = 1; i < h->n; i++)
        if (h->ranks[i] != per_node) per_node = 0;
    sbuf b = {0};
    sb_printf(&b, "#!/bin/bash\n");
    sb_printf(&b, "# sbatch script written by egmla slurm for %s:\n", o->topology);
    sb_printf(&b, "# a coordinator (rank 0) and %d pipeline stages (ranks 1-%d) on %d node%s.\n",
              t->n_stages, t->n_stages, h->n, h->n > 1 ? "s" : "");
    sb_printf(&b, "# Slurm picks the machines (the topology's host names are not used)\n"
                  "# and lays the ranks on them in order.\n");
    sb_printf(&b, "#SBATCH --job-name=%s\n", job);
    sb_printf(&b, "#SBATCH --nodes=%d\n", h->n);
    sb_printf(&b, "#SBATCH --ntasks=%d\n", R);
    sb_printf(&b, "#SBATCH --cpus-per-task=%d\n", max_th);
    if (per_node) sb_printf(&b, "#SBATCH --ntasks-per-node=%d\n", per_node);
    if (o->time) sb_printf(&b, "#SBATCH --time=%s\n", o->time);
    if (o->partition) sb_printf(&b, "#SBATCH --partition=%s\n", o->partition);
    sb_printf(&b, "\n");
    if (!uniform)
        sb_printf(&b, "# Threads differ between ranks in the topology: the largest.\n");
    sb_printf(&b, "export OPENBLAS_NUM_THREADS=%d\n", max_th);
    sb_printf(&b, "export OMP_NUM_THREADS=%d\n\n", max_th);
    vec a = {0};
    if (o->use_mpirun) {
        sb_printf(&b, "# mpirun inside the allocation: Open MPI reads the nodes from Slurm.\n");
        vpush(&a, "mpirun");
        vpush(&a, "-np");
        vpushf(&a, "%d", R);
        if (t->bind == EGM_BIND_CORE) {
            vpush(&a, "--map-by");
            vpushf(&a, "slot:PE=%d", max_th);
            vpush(&a, "--bind-to");
            vpush(&a, "core");
        } else {
            vpush(&a, "--bind-to");
            vpush(&a, "none");
        }
        push_transport(&a, t->transport);
        vpush(&a, "-x");
        vpush(&a, "OPENBLAS_NUM_THREADS");
        vpush(&a, "-x");
        vpush(&a, "OMP_NUM_THREADS");
    } else {
        /* Plain srun without PMIx starts N singletons (each its own
         * MPI_COMM_WORLD of size 1; Open MPI #13523): --mpi=pmix is what
         * makes them one job. egmla also refuses a world size that is not
         * the topology's. */
        sb_printf(&b, "# --mpi=pmix is required: plain srun starts N unrelated one-rank jobs.\n");
        vpush(&a, "srun");
        vpush(&a, "--mpi=pmix");
        vpush(&a, t->bind == EGM_BIND_CORE ? "--cpu-bind=cores" : "--cpu-bind=none");
    }
    vpush(&a, o->exe);
    for (int i = 0; i < o->argc; i++) vpush(&a, o->argv[i]);
    vpush(&a, "--topology");
    vpush(&a, o->topology);
    free(h);
    char *line = a.oom ? NULL : egm_shell_join(a.v);
    egm_argv_free(a.v);
    if (line) sb_printf(&b, "%s\n", line);
    else b.oom = 1;
    free(line);
    if (!(*text = sb_take(&b))) return egm_fail(e, "out of memory");
    return 0;
}

/* ------------------------------------------------------------ subcommands */

/* Splits argv at "--": before it the options, after it the command. */
static int split_command(const char *name, int argc, char **argv, int *n_opts,
                         int *cmd_argc, char ***cmd_argv, egm_err *e) {
    int i = 0;
    while (i < argc && strcmp(argv[i], "--")) i++;
    *n_opts = i;
    *cmd_argc = i < argc ? argc - i - 1 : 0;
    *cmd_argv = i < argc ? argv + i + 1 : NULL;
    for (int k = 0; k < i; k++)   /* --help before the check for a command */
        if (!strcmp(argv[k], "--help") || !strcmp(argv[k], "-h")) return 0;
    if (*cmd_argc == 0)
        return egm_fail(e, "%s: expected \"-- <egmla command> [args]\" after the "
                        "options (see %s --help)", name, name);
    for (int k = 0; k < *cmd_argc; k++)
        if (!strcmp((*cmd_argv)[k], "--topology") ||
            !strncmp((*cmd_argv)[k], "--topology=", 11))
            return egm_fail(e, "%s: the command must not have --topology: %s "
                            "adds it", name, name);
    return 0;
}

/* The value of option `name` (--name V or --name=V) in argv, or NULL. */
static const char *opt_of(const char *name, int argc, char **argv) {
    size_t n = strlen(name);
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], name) && i + 1 < argc) return argv[i + 1];
        if (!strncmp(argv[i], name, n) && argv[i][n] == '=') return argv[i] + n + 1;
    }
    return NULL;
}

/* Checks the layer ranges against the model now, when its config can be
 * read here (the command's --model directory, else the topology's, or the
 * config.json of `bench --config`), rather than after every rank has
 * started. A model that is only on the cluster's storage is left to the
 * ranks to check. */
static int check_against_model(egm_topology *t, int argc, char **argv, FILE *print,
                               egm_err *e) {
    const char *m = opt_of("--model", argc, argv), *cfg = opt_of("--config", argc, argv);
    if (!m && !cfg) m = t->model;
    if (!m && !cfg) return 0;
    char path[PATH_MAX];
    snprintf(path, sizeof path, cfg && !m ? "%s" : "%s/config.json", cfg && !m ? cfg : m);
    if (access(path, R_OK)) return 0;
    egm_config c;
    if (egm_config_load(path, &c, e)) return -1;
    return egm_split_topology(t, &c, print, e); /* --dry-run prints each stage's share */
}

static int self_exe(char *buf, size_t cap) {
    ssize_t n = readlink("/proc/self/exe", buf, cap - 1);
    if (n <= 0) return -1;
    buf[n] = 0;
    return 0;
}

static int write_file(const char *path, const char *text, egm_err *e) {
    FILE *f = fopen(path, "w");
    if (!f) return egm_fail(e, "%s: cannot write: %s", path, strerror(errno));
    fputs(text, f);
    if (fclose(f)) return egm_fail(e, "%s: cannot write: %s", path, strerror(errno));
    return 0;
}

/* Prints each line of text after "# ". */
static void print_commented(const char *text) {
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        int n = nl ? (int)(nl - p) : (int)strlen(p);
        printf("#   %.*s\n", n, p);
        p += n + (nl ? 1 : 0);
    }
}

/* mpirun runs as our child, so that its hostfile and rankfile can be
 * removed once it is done. Ctrl-C reaches mpirun too (same process
 * group): we wait for it to stop the ranks rather than die first;
 * SIGTERM and SIGHUP are passed on. */
static volatile sig_atomic_t mpirun_pid;
static void pass_on(int sig) {
    if (mpirun_pid > 0) kill((pid_t)mpirun_pid, sig);
}

/* Runs argv; mpirun's exit status (128 + signal if killed), or -1. */
static int run_child(char **argv, const char *name) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "%s: cannot start %s: %s\n", name, argv[0], strerror(errno));
        return -1;
    }
    if (pid == 0) {
        execvp(argv[0], argv);
        fprintf(stderr, "%s: cannot run %s: %s\n", name, argv[0], strerror(errno));
        _exit(127);
    }
    mpirun_pid = pid;
    struct sigaction ign = {.sa_handler = SIG_IGN}, fwd = {.sa_handler = pass_on}, old[4];
    const int sigs[4] = {SIGINT, SIGQUIT, SIGTERM, SIGHUP};
    for (int i = 0; i < 4; i++) sigaction(sigs[i], i < 2 ? &ign : &fwd, &old[i]);
    int st = 0;
    pid_t w;
    while ((w = waitpid(pid, &st, 0)) < 0 && errno == EINTR) {}
    for (int i = 0; i < 4; i++) sigaction(sigs[i], &old[i], NULL);
    mpirun_pid = 0;
    if (w < 0) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Removes the directory launch made for its two files. */
static void remove_workdir(const char *dir, const char *hf, const char *rf) {
    unlink(hf);
    unlink(rf);
    rmdir(dir);
}

/* Inserts "--mca plm_rsh_agent AGENT" after the program name. */
static int with_agent(char ***mv, const char *agent) {
    int n = 0;
    while ((*mv)[n]) n++;
    char **v = calloc((size_t)n + 4, sizeof *v);
    if (!v) return -1;
    v[0] = (*mv)[0];
    v[1] = strdup("--mca");
    v[2] = strdup("plm_rsh_agent");
    v[3] = strdup(agent);
    for (int i = 1; i < n; i++) v[i + 3] = (*mv)[i];
    if (!v[1] || !v[2] || !v[3]) {
        free(v[1]);
        free(v[2]);
        free(v[3]);
        free(v);
        return -1;
    }
    free(*mv);
    *mv = v;
    return 0;
}

/* Options and the topology before "--", the egmla command after it (both
 * commands read their line this way). Returns 0, 1 after --help, or -1
 * after printing what is wrong; argv[0] is then the topology file. */
static int parse_command_line(const egm_cmd *cmd, int argc, char **argv, int *cargc,
                              char ***cargv) {
    egm_err e = {{0}};
    int n_opts, n_pos;
    if (split_command(cmd->name, argc, argv, &n_opts, cargc, cargv, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return -1;
    }
    int rc = egm_args_parse(cmd, n_opts, argv, &n_pos, &e);
    if (rc == 1) return 1;
    if (rc < 0 || n_pos != 1) {
        if (rc == 0) snprintf(e.msg, sizeof e.msg, "%s: expected one topology file "
                              "before \"--\", found %d (see %s --help)", cmd->name, n_pos,
                              cmd->name);
        fprintf(stderr, "%s\n", e.msg);
        return -1;
    }
    return 0;
}

/* The directory for the hostfile and rankfile: --workdir (made if need
 * be), else a new one in $TMPDIR; dir holds PATH_MAX. -1 after saying why. */
static int make_workdir(const char *name, const char *workdir, char *dir) {
    if (workdir) {
        snprintf(dir, PATH_MAX, "%s", workdir);
        if (mkdir(dir, 0700) && errno != EEXIST) {
            fprintf(stderr, "%s: --workdir %s: %s\n", name, dir, strerror(errno));
            return -1;
        }
        return 0;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, PATH_MAX, "%s/egmla-launch-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        fprintf(stderr, "%s: cannot create %s: %s\n", name, dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* --dry-run: the two files as comments, then the mpirun line to paste;
 * -1 if out of memory (nothing printed). */
static int print_dry_run(char **mv, const char *hf, const char *hosttext, const char *rf,
                         const char *ranktext, int removed, int rankfile_used) {
    char *line = egm_shell_join(mv);
    if (!line) return -1;
    if (removed)
        printf("# (the files below are removed again: pass --workdir DIR to keep them "
               "for this command)\n");
    printf("# hostfile %s\n", hf);
    print_commented(hosttext);
    printf("# rankfile %s%s\n", rf, rankfile_used ? "" : " (not used: bind: none)");
    print_commented(ranktext);
    printf("%s\n", line);
    free(line);
    fflush(stdout);
    return 0;
}

int egm_cmd_launch(int argc, char **argv) {
    static const char *NAME = "egmla launch";
    int dry = 0;
    const char *mpirun = "mpirun", *workdir = NULL, *agent = NULL;
    egm_opt opts[] = {
        {"dry-run", EGM_OPT_FLAG, &dry, "print the command and files instead of running", 0, 0, NULL},
        {"mpirun", EGM_OPT_STRING, &mpirun, "the mpirun to run", 0, 0, "PATH"},
        {"rsh-agent", EGM_OPT_STRING, &agent,
         "how mpirun reaches other hosts instead of ssh (--mca plm_rsh_agent), e.g. "
         "deploy/netns-agent.sh", 0, 0, "PATH"},
        {"workdir", EGM_OPT_STRING, &workdir,
         "where to write the hostfile and rankfile (default: a new directory in $TMPDIR)", 0, 0, "DIR"},
        {NULL, 0, NULL, NULL, 0, 0, NULL}};
    egm_cmd cmd = {NAME, "TOPO.yaml -- <egmla command> [args]",
                   "Runs an egmla command on every rank of a cluster topology through "
                   "Open MPI's mpirun: writes the hostfile and rankfile, then runs "
                   "mpirun with the placement, threads, binding and transport the "
                   "topology asks for. Every rank runs this egmla binary with the "
                   "command's arguments and --topology TOPO.yaml.",
                   opts};
    egm_err e = {{0}};
    int cargc;
    char **cargv;
    int rc = parse_command_line(&cmd, argc, argv, &cargc, &cargv);
    if (rc) return rc < 0 ? EXIT_USAGE : 0;
    char topo_abs[PATH_MAX], exe[PATH_MAX];
    egm_topology t;
    if (egm_topology_load(argv[0], &t, &e) ||
        check_against_model(&t, cargc, cargv, dry ? stdout : NULL, &e)) {
        fprintf(stderr, "%s: %s\n", NAME, e.msg);
        egm_topology_free(&t);
        return EXIT_USAGE;
    }
    if (!realpath(argv[0], topo_abs) || self_exe(exe, sizeof exe)) {
        fprintf(stderr, "%s: %s: %s\n", NAME, argv[0], strerror(errno));
        egm_topology_free(&t);
        return EXIT_RUN;
    }
    char dir[PATH_MAX], hf[PATH_MAX + 16], rf[PATH_MAX + 16];
    if (make_workdir(NAME, workdir, dir)) {
        egm_topology_free(&t);
        return EXIT_RUN;
    }
    snprintf(hf, sizeof hf, "%s/hostfile", dir);
    snprintf(rf, sizeof rf, "%s/rankfile", dir);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    egm_launch_opts o = {mpirun, exe, topo_abs, hf, rf, geteuid() == 0,
                         cpus > 0 ? (int)cpus : 0, cargc, cargv};
    char *hosttext = NULL, *ranktext = NULL, **mv = NULL;
    rc = EXIT_USAGE;
    if (egm_launch_hostfile(&t, &hosttext, &e) || egm_launch_rankfile(&t, &ranktext, &e) ||
        egm_launch_build_argv(&t, &o, &mv, &e)) {
        fprintf(stderr, "%s: %s\n", NAME, e.msg);
        goto done;
    }
    if (agent && with_agent(&mv, agent)) {
        fprintf(stderr, "%s: out of memory\n", NAME);
        goto done;
    }
    rc = EXIT_RUN;
    if (write_file(hf, hosttext, &e) || write_file(rf, ranktext, &e)) {
        fprintf(stderr, "%s: %s\n", NAME, e.msg);
        goto done;
    }
    if (dry) {
        if (!print_dry_run(mv, hf, hosttext, rf, ranktext, !workdir, t.bind == EGM_BIND_CORE))
            rc = 0;
        else fprintf(stderr, "%s: out of memory\n", NAME);
        goto done;
    }
    rc = run_child(mv, NAME);
    if (rc < 0) rc = EXIT_RUN;
done:
    /* a --workdir keeps its files for the user; our own directory goes */
    if (!workdir) remove_workdir(dir, hf, rf);
    egm_argv_free(mv);
    free(hosttext);
    free(ranktext);
    egm_topology_free(&t);
    return rc;
}

int egm_cmd_slurm(int argc, char **argv) {
    static const char *NAME = "egmla slurm";
    const char *launcher = "srun", *job = "egmla", *time = NULL, *part = NULL;
    egm_opt opts[] = {
        {"launcher", EGM_OPT_STRING, &launcher, "srun (with PMIx) or mpirun, inside the job", 0, 0, "L"},
        {"job-name", EGM_OPT_STRING, &job, "the job's name", 0, 0, "NAME"},
        {"time", EGM_OPT_STRING, &time, "time limit, e.g. 01:30:00", 0, 0, "HH:MM:SS"},
        {"partition", EGM_OPT_STRING, &part, "the Slurm partition", 0, 0, "P"},
        {NULL, 0, NULL, NULL, 0, 0, NULL}};
    egm_cmd cmd = {NAME, "TOPO.yaml -- <egmla command> [args]",
                   "Prints an sbatch script that runs an egmla command on the ranks of "
                   "a cluster topology: nodes, tasks and CPUs per task from the "
                   "topology, then srun --mpi=pmix (or mpirun inside the allocation).",
                   opts};
    egm_err e = {{0}};
    int cargc;
    char **cargv;
    int rc = parse_command_line(&cmd, argc, argv, &cargc, &cargv);
    if (rc) return rc < 0 ? EXIT_USAGE : 0;
    if (strcmp(launcher, "srun") && strcmp(launcher, "mpirun")) {
        fprintf(stderr, "%s: --launcher: expected srun or mpirun, found \"%s\"\n",
                NAME, launcher);
        return EXIT_USAGE;
    }
    egm_topology t;
    if (egm_topology_load(argv[0], &t, &e) ||
        check_against_model(&t, cargc, cargv, NULL, &e)) {
        fprintf(stderr, "%s: %s\n", NAME, e.msg);
        egm_topology_free(&t);
        return EXIT_USAGE;
    }
    char topo_abs[PATH_MAX], exe[PATH_MAX];
    if (!realpath(argv[0], topo_abs) || self_exe(exe, sizeof exe)) {
        fprintf(stderr, "%s: %s: %s\n", NAME, argv[0], strerror(errno));
        egm_topology_free(&t);
        return EXIT_RUN;
    }
    egm_slurm_opts so = {!strcmp(launcher, "mpirun"), job, time, part, exe, topo_abs,
                         cargc, cargv};
    char *text;
    if (egm_slurm_script(&t, &so, &text, &e)) {
        fprintf(stderr, "%s: %s\n", NAME, e.msg);
        egm_topology_free(&t);
        return EXIT_USAGE;
    }
    fputs(text, stdout);
    fflush(stdout);
    free(text);
    egm_topology_free(&t);
    return 0;
}
