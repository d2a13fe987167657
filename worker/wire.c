/* wire.c - encode and decode activations for the wire (see wire.h). */
#include "worker/wire.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/ops.h"

size_t egm_wire_bytes(egm_wire_dtype t, int n, int D) {
    size_t rows = (size_t)n, d = (size_t)D;
    switch (t) {
    case EGM_WIRE_FP32: return rows * d * 4;
    case EGM_WIRE_INT8: return rows * 4 + rows * d;
    case EGM_WIRE_BF16:
    default: return rows * d * 2;
    }
}

void egm_wire_encode(egm_wire_dtype t, const float *x, int n, int D, void *out) {
    size_t nd = (size_t)n * (size_t)D;
    if (t == EGM_WIRE_FP32) {
        memcpy(out, x, nd * sizeof(float));
    } else if (t == EGM_WIRE_INT8) {
        /* scales first (4-byte aligned in the buffer), then the codes */
        float *scale = out;
        int8_t *q = (int8_t *)((char *)out + (size_t)n * 4);
        for (int r = 0; r < n; r++) {
            const float *row = x + (size_t)r * D;
            float amax = 0;
            for (int i = 0; i < D; i++) {
                float a = fabsf(row[i]);
                if (a > amax) amax = a;
            }
            float s = amax / 127.0f;
            scale[r] = s;
            float inv = s > 0 ? 1.0f / s : 0.0f;
            int8_t *qr = q + (size_t)r * D;
            for (int i = 0; i < D; i++) {
                float v = nearbyintf(row[i] * inv);
                qr[i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
            }
        }
    } else {
        egm_f32_to_bf16_n(out, x, nd);
    }
}

void egm_wire_decode(egm_wire_dtype t, const void *in, int n, int D, float *x) {
    size_t nd = (size_t)n * (size_t)D;
    if (t == EGM_WIRE_FP32) {
        memcpy(x, in, nd * sizeof(float));
    } else if (t == EGM_WIRE_INT8) {
        const float *scale = in;
        const int8_t *q = (const int8_t *)((const char *)in + (size_t)n * 4);
        for (int r = 0; r < n; r++)
            for (int i = 0; i < D; i++)
                x[(size_t)r * D + i] = scale[r] * q[(size_t)r * D + i];
    } else {
        egm_bf16_to_f32_n(x, in, nd);
    }
}
