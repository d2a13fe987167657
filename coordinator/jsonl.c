/* jsonl.c - line reader over a stream, line writer over a file descriptor. */
#include "jsonl.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- reader ---- */

struct egm_jsonl {
    FILE *f;
    int owned;        /* close f at the end */
    char *origin;
    char *buf;        /* getline's buffer: grows to the longest line */
    size_t cap;
    long lineno;
};

egm_jsonl *egm_jsonl_from_file(FILE *f, const char *origin) {
    egm_jsonl *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->f = f;
    r->origin = strdup(origin ? origin : "<input>");
    if (!r->origin) { free(r); return NULL; }
    return r;
}

egm_jsonl *egm_jsonl_open(const char *path, egm_err *e) {
    int std = strcmp(path, "-") == 0;
    FILE *f = std ? stdin : fopen(path, "rb");
    if (!f) {
        egm_fail(e, "cannot open input file \"%s\": %s", path, strerror(errno));
        return NULL;
    }
    egm_jsonl *r = egm_jsonl_from_file(f, std ? "<stdin>" : path);
    if (!r) {
        if (!std) fclose(f);
        egm_fail(e, "%s: out of memory", path);
        return NULL;
    }
    r->owned = !std;
    return r;
}

static int blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return 0;
    return 1;
}

int egm_jsonl_next(egm_jsonl *r, const char **line, size_t *len, long *lineno,
                   egm_err *e) {
    for (;;) {
        errno = 0;
        ssize_t n = getline(&r->buf, &r->cap, r->f);
        if (n < 0) {
            if (ferror(r->f))
                return egm_fail(e, "%s: read error after line %ld: %s",
                                r->origin, r->lineno,
                                strerror(errno ? errno : EIO));
            if (errno == ENOMEM)
                return egm_fail(e, "%s:%ld: out of memory reading the line",
                                r->origin, r->lineno + 1);
            return 0;
        }
        r->lineno++;
        char *s = r->buf;
        size_t m = (size_t)n;
        if (m && s[m - 1] == '\n') m--;
        if (m && s[m - 1] == '\r') m--;
        if (r->lineno == 1 && m >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
            s += 3;
            m -= 3;
        }
        s[m] = '\0';
        if (blank(s, m)) continue;
        *line = s;
        *len = m;
        *lineno = r->lineno;
        return 1;
    }
}

const char *egm_jsonl_origin(const egm_jsonl *r) { return r->origin; }

void egm_jsonl_close(egm_jsonl *r) {
    if (!r) return;
    if (r->owned) fclose(r->f);
    free(r->buf);
    free(r->origin);
    free(r);
}

/* ---- writer ---- */

struct egm_out {
    int fd;
    int std;          /* fd is stdout: never closed */
    int regular;      /* a regular file: partial writes can be cut back */
    int pending;      /* opened for a new output, not yet truncated */
    int created;      /* the file did not exist before egm_out_open */
    char *path;
    char *buf;        /* line + "\n", so the record goes out in one write */
    size_t cap;
};

static egm_out *out_new(int fd, int std, const char *path, egm_err *e) {
    /* A file-size limit (ulimit -f) must fail the write with EFBIG, which
     * egm_out_write_line reports and cuts back, not kill the process with
     * SIGXFSZ after a partial write has left half a record behind. */
    signal(SIGXFSZ, SIG_IGN);
    egm_out *o = calloc(1, sizeof *o);
    if (o) o->path = strdup(std ? "<stdout>" : path);
    if (!o || !o->path) {
        free(o);
        if (!std) close(fd);
        egm_fail(e, "%s: out of memory", path);
        return NULL;
    }
    struct stat st;
    o->fd = fd;
    o->std = std;
    o->regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    return o;
}

static egm_out *open_stdout(egm_err *e) {
    /* Anything already buffered in stdio goes out before our first line. */
    fflush(stdout);
    int fl = fcntl(STDOUT_FILENO, F_GETFL);
    if (fl < 0 || (fl & O_ACCMODE) == O_RDONLY) {
        egm_fail(e, "standard output is %s",
                 fl < 0 ? "closed" : "not open for writing");
        return NULL;
    }
    return out_new(STDOUT_FILENO, 1, "-", e);
}

egm_out *egm_out_open(const char *path, egm_err *e) {
    if (strcmp(path, "-") == 0) return open_stdout(e);
    /* opened now, so that a bad path fails before any work; emptied only
     * when the first result comes (an old output survives a run that
     * fails before), removed again if we made it and nothing came */
    int created = 1;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && errno == EEXIST) {
        created = 0;
        fd = open(path, O_WRONLY | O_CLOEXEC);
    }
    if (fd < 0) {
        egm_fail(e, "cannot create output file \"%s\": %s", path,
                 strerror(errno));
        return NULL;
    }
    egm_out *o = out_new(fd, 0, path, e);
    if (o) {
        o->pending = 1;
        o->created = created;
    }
    return o;
}

int egm_out_commit(egm_out *o, egm_err *e) {
    if (!o->pending) return 0;
    o->pending = 0;
    if (o->regular && ftruncate(o->fd, 0) < 0)
        return egm_fail(e, "cannot truncate output \"%s\": %s", o->path,
                        strerror(errno));
    return 0;
}

/* Length of the file up to and including its last "\n" (0 if none). */
static int complete_prefix(int fd, off_t size, off_t *keep) {
    char chunk[4096];
    off_t end = size;
    while (end > 0) {
        off_t start = end > (off_t)sizeof chunk ? end - (off_t)sizeof chunk : 0;
        ssize_t n = pread(fd, chunk, (size_t)(end - start), start);
        if (n != end - start) return -1;
        for (off_t i = n - 1; i >= 0; i--)
            if (chunk[i] == '\n') { *keep = start + i + 1; return 0; }
        end = start;
    }
    *keep = 0;
    return 0;
}

egm_out *egm_out_open_append(const char *path, egm_err *e) {
    if (strcmp(path, "-") == 0) return open_stdout(e);
    int fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        egm_fail(e, "cannot open output file \"%s\" for appending: %s", path,
                 strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
        off_t keep;
        if (complete_prefix(fd, st.st_size, &keep) < 0 ||
            (keep != st.st_size && ftruncate(fd, keep) < 0)) {
            egm_fail(e, "cannot repair the torn last line of \"%s\": %s", path,
                     strerror(errno ? errno : EIO));
            close(fd);
            return NULL;
        }
    }
    return out_new(fd, 0, path, e);
}

int egm_out_write_line(egm_out *o, const char *json_line, egm_err *e) {
    size_t n = strlen(json_line);
    if (memchr(json_line, '\n', n))
        return egm_fail(e, "%s: refusing to write a record containing a "
                        "newline", o->path);
    if (n + 1 > o->cap) {
        size_t cap = (n + 1) * 2;
        char *b = realloc(o->buf, cap);
        if (!b) return egm_fail(e, "%s: out of memory", o->path);
        o->buf = b;
        o->cap = cap;
    }
    memcpy(o->buf, json_line, n);
    o->buf[n] = '\n';
    if (egm_out_commit(o, e)) return -1;

    /* Where the record starts, to cut back a partial write. */
    off_t start = o->regular ? lseek(o->fd, 0, SEEK_END) : -1;
    size_t done = 0;
    while (done < n + 1) {
        ssize_t w = write(o->fd, o->buf + done, n + 1 - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int err = w < 0 ? errno : EIO;
            if (start >= 0 && done > 0) {
                /* Best effort: the error below is what matters. */
                if (ftruncate(o->fd, start) == 0) lseek(o->fd, start, SEEK_SET);
            }
            return egm_fail(e, "cannot write to output \"%s\": %s", o->path,
                            strerror(err));
        }
        done += (size_t)w;
    }
    return 0;
}

int egm_out_sync(egm_out *o, egm_err *e) {
    if (fsync(o->fd) < 0 && errno != EINVAL && errno != EROFS &&
        errno != ENOTSUP)
        return egm_fail(e, "cannot sync output \"%s\": %s", o->path,
                        strerror(errno));
    return 0;
}

int egm_out_close(egm_out *o, egm_err *e) {
    if (!o) return 0;
    int rc = 0;
    if (!o->std && close(o->fd) < 0)
        rc = egm_fail(e, "cannot close output \"%s\": %s", o->path,
                      strerror(errno));
    if (o->pending && o->created) unlink(o->path);
    free(o->buf);
    free(o->path);
    free(o);
    return rc;
}

const char *egm_out_path(const egm_out *o) { return o->path; }

int egm_out_check(const char *path, const char *what, egm_err *e) {
    if (!path || !strcmp(path, "-")) return 0;
    if (access(path, F_OK) == 0) {
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
            return egm_fail(e, "%s \"%s\" is a directory", what, path);
        if (access(path, W_OK))
            return egm_fail(e, "%s \"%s\" is not writable: %s", what, path, strerror(errno));
        return 0;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = 0;
    else *slash = 0;
    if (access(dir, W_OK | X_OK))
        return egm_fail(e, "cannot create %s \"%s\": %s", what, path, strerror(errno));
    return 0;
}

int egm_jsonl_check_distinct(const char *in_path, const char *out_path,
                             egm_err *e) {
    if (!strcmp(in_path, "-") || !strcmp(out_path, "-")) return 0;
    struct stat a, b;
    if (stat(in_path, &a) < 0 || stat(out_path, &b) < 0) return 0;
    if (a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        return egm_fail(e, "output \"%s\" is the input file \"%s\"; writing "
                        "it would destroy the requests", out_path, in_path);
    return 0;
}
