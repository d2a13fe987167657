/* size.h - byte sizes as people write them ("2GiB", "512K"). */
#ifndef EGM_SIZE_H
#define EGM_SIZE_H

#include <stddef.h>

/* Parses a byte size: "1048576", "512K", "1.5GiB", "2 GB", "64MiB".
 * K/M/G/T and KiB/MiB/GiB/TiB are powers of 1024, KB/MB/GB/TB powers of
 * 1000; a trailing "B" alone means bytes. Returns -1 on anything else
 * (no message: callers say where the text came from). */
int egm_parse_size(const char *s, size_t *out);

#endif
