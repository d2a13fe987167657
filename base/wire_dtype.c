/* wire_dtype.c - names of the wire encodings. */
#include "wire_dtype.h"

#include <string.h>

const char *const egm_wire_dtype_names[EGM_WIRE_N_DTYPES] = {"bf16", "fp32", "int8"};

const char *egm_wire_dtype_name(egm_wire_dtype x) {
    return (unsigned)x < EGM_WIRE_N_DTYPES ? egm_wire_dtype_names[x] : "?";
}

int egm_wire_dtype_parse(const char *s, egm_wire_dtype *out) {
    for (int i = 0; i < EGM_WIRE_N_DTYPES; i++)
        if (!strcmp(s, egm_wire_dtype_names[i])) {
            *out = (egm_wire_dtype)i;
            return 0;
        }
    return -1;
}
