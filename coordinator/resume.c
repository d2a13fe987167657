/* resume.c - the set of finished ids, read from an output file. */
#include "resume.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "base/hash.h"

/* Open addressing over strings, FNV-1a hashed; grows at half full. */
struct egm_idset {
    char **slot;
    size_t cap, n;
};

static uint64_t hash(const char *s) { return egm_fnv1a(EGM_FNV_OFFSET, s, strlen(s)); }

egm_idset *egm_idset_new(void) {
    egm_idset *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->cap = 64;
    s->slot = calloc(s->cap, sizeof *s->slot);
    if (!s->slot) {
        free(s);
        return NULL;
    }
    return s;
}

void egm_idset_free(egm_idset *s) {
    if (!s) return;
    for (size_t i = 0; i < s->cap; i++) free(s->slot[i]);
    free(s->slot);
    free(s);
}

static size_t find(char **slot, size_t cap, const char *id) {
    size_t i = hash(id) & (cap - 1);
    while (slot[i] && strcmp(slot[i], id)) i = (i + 1) & (cap - 1);
    return i;
}

int egm_idset_has(const egm_idset *s, const char *id) {
    return id && s->slot[find(s->slot, s->cap, id)] != NULL;
}

int egm_idset_add(egm_idset *s, const char *id) {
    if (egm_idset_has(s, id)) return 0;
    if ((s->n + 1) * 2 > s->cap) {
        size_t cap = s->cap * 2;
        char **slot = calloc(cap, sizeof *slot);
        if (!slot) return -1;
        for (size_t i = 0; i < s->cap; i++)
            if (s->slot[i]) slot[find(slot, cap, s->slot[i])] = s->slot[i];
        free(s->slot);
        s->slot = slot;
        s->cap = cap;
    }
    char *copy = strdup(id);
    if (!copy) return -1;
    s->slot[find(s->slot, s->cap, id)] = copy;
    s->n++;
    return 1;
}


int egm_resume_load(const char *path, egm_idset *s, egm_err *e) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) return 0;
        return egm_fail(e, "--resume: cannot read \"%s\": %s", path, strerror(errno));
    }
    char *buf = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    int rc = 0;
    while ((n = getline(&buf, &cap, f)) > 0) {
        lineno++;
        if (buf[n - 1] != '\n') break; /* torn last line: cut off on append */
        size_t len = (size_t)n - 1;
        size_t k = 0;
        while (k < len && (buf[k] == ' ' || buf[k] == '\t' || buf[k] == '\r')) k++;
        if (k == len) continue;
        json_error_t je;
        json_t *o = json_loadb(buf, len, 0, &je);
        json_t *id = o ? json_object_get(o, "id") : NULL;
        if (!o || !json_is_object(o) || !id) {
            rc = egm_fail(e, "--resume: %s:%ld: expected a result line with an \"id\", found %s",
                          path, lineno, o ? "an object without \"id\"" : je.text);
            json_decref(o);
            break;
        }
        /* null ids (refused lines without a usable id) cannot be matched */
        if (!json_is_null(id)) {
            char *txt = json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT);
            int r = txt ? egm_idset_add(s, txt) : -1;
            free(txt);
            if (r < 0) {
                json_decref(o);
                rc = egm_fail(e, "--resume: out of memory reading %s", path);
                break;
            }
        }
        json_decref(o);
    }
    if (!rc && ferror(f)) rc = egm_fail(e, "--resume: read error in \"%s\"", path);
    free(buf);
    fclose(f);
    return rc;
}

long egm_count_lines(const char *path) {
    if (!strcmp(path, "-")) return -1;
    struct stat st;
    if (stat(path, &st) || !S_ISREG(st.st_mode)) return -1;
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    static char buf[1 << 16];
    long lines = 0;
    int content = 0; /* the current line has a non-blank byte */
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        for (size_t i = 0; i < n; i++) {
            char c = buf[i];
            if (c == '\n') {
                lines += content;
                content = 0;
            } else if (c != ' ' && c != '\t' && c != '\r') {
                content = 1;
            }
        }
    lines += content;
    fclose(f);
    return lines;
}
