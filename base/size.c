/* size.c - byte sizes as people write them. */
#include "size.h"

#include <math.h>
#include <string.h>

int egm_parse_size(const char *s, size_t *out) {
    while (*s == ' ') s++;
    const char *p = s;
    double v = 0;
    int digits = 0;
    while (*p >= '0' && *p <= '9') { v = v * 10 + (*p++ - '0'); digits++; }
    if (*p == '.') {
        p++;
        for (double f = 0.1; *p >= '0' && *p <= '9'; f /= 10) {
            v += (*p++ - '0') * f;
            digits++;
        }
    }
    if (!digits) return -1;
    while (*p == ' ') p++;
    static const struct { const char *u; double m; } units[] = {
        {"", 1}, {"B", 1},
        {"K", 1024.0}, {"KiB", 1024.0}, {"KB", 1e3}, {"k", 1024.0}, {"kB", 1e3},
        {"M", 1048576.0}, {"MiB", 1048576.0}, {"MB", 1e6},
        {"G", 1073741824.0}, {"GiB", 1073741824.0}, {"GB", 1e9},
        {"T", 1099511627776.0}, {"TiB", 1099511627776.0}, {"TB", 1e12},
    };
    for (size_t i = 0; i < sizeof units / sizeof *units; i++)
        if (!strcmp(p, units[i].u)) {
            double b = floor(v * units[i].m);
            if (b >= 9.2e18 || (double)(size_t)b != b) return -1;
            *out = (size_t)b;
            return 0;
        }
    return -1;
}
