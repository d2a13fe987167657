/* resume.h - what `generate --resume` needs: the ids already answered.
 *
 * The output file is read once, line by line, before it is reopened for
 * appending; each complete line's "id" is re-serialised compactly (exactly
 * as egm_request_parse makes id_json) into a hash set. Only the set stays in
 * memory (one short string per finished request), never the file. A torn
 * last line (no final "\n", left by a kill in the middle of a write) is
 * ignored here and cut off by egm_out_open_append. Error records count as
 * answered: the line was refused and would be refused again. */
#ifndef EGM_RESUME_H
#define EGM_RESUME_H

#include "base/err.h"

typedef struct egm_idset egm_idset;

egm_idset *egm_idset_new(void);
void egm_idset_free(egm_idset *s);
/* Adds a copy of id (compact JSON text); returns 1 if new, 0 if already
 * there, -1 when out of memory. */
int egm_idset_add(egm_idset *s, const char *id);
int egm_idset_has(const egm_idset *s, const char *id);

/* Reads the ids of every complete line of path into s. A missing file is an
 * empty set. A complete line that is not a JSON object with an "id" fails,
 * naming the file and line (that file is not an output of ours). */
int egm_resume_load(const char *path, egm_idset *s, egm_err *e);

/* Non-blank lines of a regular file (the progress line's total), read in
 * large chunks; -1 when path is "-" or not a regular file. */
long egm_count_lines(const char *path);

#endif
