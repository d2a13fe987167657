/* args.c - table-driven "--name value" parsing with strict numbers. */
#include "args.h"

#include "base/exit.h"
#include "base/rank.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *metavar(const egm_opt *o) {
    if (o->metavar) return o->metavar;
    switch (o->kind) {
    case EGM_OPT_INT: case EGM_OPT_U64: return "N";
    case EGM_OPT_FLOAT: return "X";
    case EGM_OPT_STRING: return "STR";
    default: return "";
    }
}

void egm_args_usage(const egm_cmd *cmd, FILE *f) {
    fprintf(f, "usage: %s [options]%s%s\n", cmd->name,
            cmd->synopsis ? " " : "", cmd->synopsis ? cmd->synopsis : "");
    if (cmd->about) fprintf(f, "\n%s\n", cmd->about);
    fprintf(f, "\noptions:\n");
    for (const egm_opt *o = cmd->opts; o && o->name; o++) {
        char head[128];
        snprintf(head, sizeof head, "--%s%s%s", o->name,
                 o->kind == EGM_OPT_FLAG ? "" : " ", metavar(o));
        /* Long heads get their help on the next line, aligned. */
        if (strlen(head) > 22) fprintf(f, "  %s\n  %-22s  ", head, "");
        else fprintf(f, "  %-22s  ", head);
        fprintf(f, "%s", o->help ? o->help : "");
        /* a help text that states its own default gets no second one */
        switch (o->help && strstr(o->help, "(default") ? EGM_OPT_FLAG : o->kind) {
        case EGM_OPT_INT: fprintf(f, " (default: %d)", *(int *)o->ptr); break;
        case EGM_OPT_FLOAT: fprintf(f, " (default: %g)", *(float *)o->ptr); break;
        case EGM_OPT_U64:
            fprintf(f, " (default: %" PRIu64 ")", *(uint64_t *)o->ptr);
            break;
        case EGM_OPT_STRING:
            if (*(const char **)o->ptr)
                fprintf(f, " (default: %s)", *(const char **)o->ptr);
            break;
        default: break;
        }
        fprintf(f, "\n");
    }
    fprintf(f, "  %-22s  show this help\n", "-h, --help");
}

/* "expected ..., found "text"" for option o. */
static int bad_value(const egm_cmd *cmd, const egm_opt *o, const char *expected,
                     const char *found, egm_err *e) {
    return egm_fail(e, "%s: --%s: expected %s, found \"%.60s%s\"", cmd->name,
                    o->name, expected, found, strlen(found) > 60 ? "..." : "");
}

static int ranged(const egm_opt *o) { return o->min < o->max; }

static int set_value(const egm_cmd *cmd, const egm_opt *o, const char *s,
                     egm_err *e) {
    char *end, what[96];
    /* strto* skip leading blanks and accept signs: be stricter than that. */
    int lead_ok = *s && !isspace((unsigned char)*s);
    errno = 0;
    switch (o->kind) {
    case EGM_OPT_INT: {
        /* The table's range, never wider than an int. */
        long lo = ranged(o) && o->min > INT_MIN ? (long)ceil(o->min) : INT_MIN;
        long hi = ranged(o) && o->max < INT_MAX ? (long)floor(o->max) : INT_MAX;
        if (ranged(o)) snprintf(what, sizeof what, "an integer in [%ld, %ld]", lo, hi);
        else snprintf(what, sizeof what, "an integer");
        long x = lead_ok ? strtol(s, &end, 10) : 0;
        if (!lead_ok || end == s || *end) return bad_value(cmd, o, what, s, e);
        if (errno == ERANGE || x < lo || x > hi) {
            snprintf(what, sizeof what, "an integer in [%ld, %ld]", lo, hi);
            return bad_value(cmd, o, what, s, e);
        }
        *(int *)o->ptr = (int)x;
        return 0;
    }
    case EGM_OPT_FLOAT: {
        if (ranged(o)) snprintf(what, sizeof what, "a number in [%g, %g]", o->min, o->max);
        else snprintf(what, sizeof what, "a number");
        double x = lead_ok ? strtod(s, &end) : 0;
        if (!lead_ok || end == s || *end) return bad_value(cmd, o, what, s, e);
        if (!isfinite(x) || fabs(x) > FLT_MAX || errno == ERANGE) {
            if (!ranged(o)) snprintf(what, sizeof what, "a finite number");
            return bad_value(cmd, o, what, s, e);
        }
        if (ranged(o) && (x < o->min || x > o->max))
            return bad_value(cmd, o, what, s, e);
        *(float *)o->ptr = (float)x;
        return 0;
    }
    case EGM_OPT_U64: {
        if (ranged(o))
            snprintf(what, sizeof what, "an integer in [%.0f, %.0f]", o->min, o->max);
        else snprintf(what, sizeof what, "a non-negative integer");
        /* strtoull would wrap "-1" around: only digits are accepted. */
        if (!isdigit((unsigned char)*s)) return bad_value(cmd, o, what, s, e);
        unsigned long long x = strtoull(s, &end, 10);
        if (*end) return bad_value(cmd, o, what, s, e);
        if (errno == ERANGE) {
            snprintf(what, sizeof what, "an integer in [0, %" PRIu64 "]", UINT64_MAX);
            return bad_value(cmd, o, what, s, e);
        }
        if (ranged(o) && ((double)x < o->min || (double)x > o->max))
            return bad_value(cmd, o, what, s, e);
        *(uint64_t *)o->ptr = (uint64_t)x;
        return 0;
    }
    case EGM_OPT_STRING:
        *(const char **)o->ptr = s;
        return 0;
    default:
        return egm_fail(e, "%s: --%s: bad option table", cmd->name, o->name);
    }
}

static const char *expected_of(const egm_opt *o) {
    switch (o->kind) {
    case EGM_OPT_INT: case EGM_OPT_U64: return "an integer";
    case EGM_OPT_FLOAT: return "a number";
    default: return "a value";
    }
}

int egm_args_parse(const egm_cmd *cmd, int argc, char **argv, int *n_pos,
                   egm_err *e) {
    return egm_args_parse_given(cmd, argc, argv, n_pos, NULL, e);
}

int egm_args_parse_given(const egm_cmd *cmd, int argc, char **argv, int *n_pos,
                         unsigned char *given, egm_err *e) {
    int npos = 0, only_pos = 0;
    for (int i = 0; i < argc; i++) {
        char *a = argv[i];
        if (only_pos || a[0] != '-' || !strcmp(a, "-")) {
            if (!n_pos)
                return egm_fail(e, "%s: unexpected argument \"%s\" (see %s "
                                "--help)", cmd->name, a, cmd->name);
            argv[npos++] = a;   /* npos <= i: never overwrites unread args */
            continue;
        }
        if (!strcmp(a, "--")) { only_pos = 1; continue; }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            egm_args_usage(cmd, stdout);
            return 1;
        }
        if (a[1] != '-')
            return egm_fail(e, "%s: unknown option %s (see %s --help)",
                            cmd->name, a, cmd->name);

        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const egm_opt *o = cmd->opts;
        while (o && o->name && (strlen(o->name) != nlen || strncmp(o->name, name, nlen)))
            o++;
        if (!o || !o->name)
            return egm_fail(e, "%s: unknown option --%.*s (see %s --help)",
                            cmd->name, (int)nlen, name, cmd->name);
        if (given) given[o - cmd->opts] = 1;

        if (o->kind == EGM_OPT_FLAG) {
            if (eq)
                return egm_fail(e, "%s: --%s takes no value, found \"%s\"",
                                cmd->name, o->name, eq + 1);
            *(int *)o->ptr = 1;
            continue;
        }
        const char *v;
        if (eq) {
            v = eq + 1;
        } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2)) {
            v = argv[++i];
        } else if (i + 1 < argc) {
            return egm_fail(e, "%s: --%s: expected %s, found option \"%s\"",
                            cmd->name, o->name, expected_of(o), argv[i + 1]);
        } else {
            return egm_fail(e, "%s: --%s: expected %s, found nothing",
                            cmd->name, o->name, expected_of(o));
        }
        if (set_value(cmd, o, v, e) < 0) return -1;
    }
    if (n_pos) *n_pos = npos;
    return 0;
}

int egm_args_main(const egm_cmd *cmd, int argc, char **argv) {
    return egm_args_main_given(cmd, argc, argv, NULL);
}

int egm_args_main_given(const egm_cmd *cmd, int argc, char **argv, unsigned char *given) {
    egm_err e;
    int rc = egm_args_parse_given(cmd, argc, argv, NULL, given, &e);
    if (rc == 1) return EGM_EXIT_OK;
    if (rc < 0) {
        /* under mpirun every rank parses the same line: rank 0 says why */
        if (!egm_run_is_worker()) fprintf(stderr, "%s\n", e.msg);
        return EGM_EXIT_USAGE;
    }
    return -1;
}
