/* wire_dtype.h - how activations are encoded between pipeline stages.
 *
 * The choice is made by the deployment (a topology's wire_dtype, or
 * --wire-dtype) and carried out by worker/wire.c, so the names live below
 * both. */
#ifndef EGM_WIRE_DTYPE_H
#define EGM_WIRE_DTYPE_H

typedef enum {
    EGM_WIRE_BF16 = 0,
    EGM_WIRE_FP32,
    EGM_WIRE_INT8,
    EGM_WIRE_N_DTYPES
} egm_wire_dtype;

/* "bf16", "fp32", "int8", indexed by egm_wire_dtype. */
extern const char *const egm_wire_dtype_names[EGM_WIRE_N_DTYPES];

const char *egm_wire_dtype_name(egm_wire_dtype x); /* "?" when out of range */

/* "bf16" | "fp32" | "int8" -> dtype; -1 on anything else. */
int egm_wire_dtype_parse(const char *s, egm_wire_dtype *out);

#endif
