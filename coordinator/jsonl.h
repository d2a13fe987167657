/* jsonl.h - reading requests one line at a time, writing results one line
 * at a time.
 *
 * The reader never holds more than the current line: a million-request file
 * costs one line of memory. The writer emits each result as one complete
 * line with a single write(2), so a crash or a full disk never leaves half a
 * record behind (a failed write is cut back off regular files), and an output
 * opened for appending can be resumed. "-" means stdin / stdout. */
#ifndef EGM_JSONL_H
#define EGM_JSONL_H

#include <stddef.h>
#include <stdio.h>

#include "base/err.h"

/* ---- reader ---- */

typedef struct egm_jsonl egm_jsonl;

/* Opens path ("-" = stdin). NULL and a message naming the path on failure. */
egm_jsonl *egm_jsonl_open(const char *path, egm_err *e);
/* Wraps an already open stream (not closed by egm_jsonl_close); origin names
 * it in messages. NULL only when out of memory. */
egm_jsonl *egm_jsonl_from_file(FILE *f, const char *origin);

/* Next non-blank line. Returns 1 with *line (NUL-terminated, without the
 * line ending; it may still contain NUL bytes, so use *len), 0 at end of
 * input, -1 on a read error. *lineno is the 1-based physical line number
 * (blank lines count). A trailing "\r" (CRLF) and a UTF-8 byte order mark on
 * line 1 are removed. *line stays valid until the next call. */
int egm_jsonl_next(egm_jsonl *r, const char **line, size_t *len, long *lineno,
                   egm_err *e);
const char *egm_jsonl_origin(const egm_jsonl *r);
void egm_jsonl_close(egm_jsonl *r);

/* ---- writer ---- */

typedef struct egm_out egm_out;

/* Opens path for a new output, or "-" for stdout. Fails at once, naming
 * the path and the system's reason, so no work is done for output that
 * could never be written; but an existing file is emptied only by the first
 * record or egm_out_commit, so a run that fails before its first result
 * loses nothing (and a file it created is removed again at close). */
egm_out *egm_out_open(const char *path, egm_err *e);
/* The run succeeded (maybe with no record at all): empty the old output
 * now if no record has done so. */
int egm_out_commit(egm_out *o, egm_err *e);
/* Checks, before any work, that a report can be written at path ("-" and
 * NULL always can): an existing file must be writable, else its directory
 * must exist and be writable. what names the option in the message. */
int egm_out_check(const char *path, const char *what, egm_err *e);
/* Opens for appending (for --resume); creates the file if missing. If the
 * file ends in a torn line (no final "\n", left by a crash), that partial
 * line is cut off so the next record starts on a line of its own. */
egm_out *egm_out_open_append(const char *path, egm_err *e);

/* Writes json_line plus "\n" with one write(2). json_line must not contain a
 * newline. On failure (EFBIG, ENOSPC, EIO, EPIPE...) the message names the
 * path and reason; on a regular file any partial bytes are truncated away. */
int egm_out_write_line(egm_out *o, const char *json_line, egm_err *e);
/* Flushes to stable storage (fsync; a no-op for pipes and terminals). */
int egm_out_sync(egm_out *o, egm_err *e);
/* Closes (stdout stays open). Reports close errors. NULL is accepted. */
int egm_out_close(egm_out *o, egm_err *e);
const char *egm_out_path(const egm_out *o);

/* Refuses an output that is the same file as the input (opening it for
 * writing would truncate the input before it is read). "-" never clashes. */
int egm_jsonl_check_distinct(const char *in_path, const char *out_path,
                             egm_err *e);

#endif
