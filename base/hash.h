/* hash.h - FNV-1a, 64-bit: hash tables and content fingerprints.
 *
 * Not cryptographic; fingerprints only tell ranks whether they loaded the
 * same files. Chain calls to hash several pieces:
 *   uint64_t h = egm_fnv1a(EGM_FNV_OFFSET, a, na); h = egm_fnv1a(h, b, nb); */
#ifndef EGM_HASH_H
#define EGM_HASH_H

#include <stddef.h>
#include <stdint.h>

#define EGM_FNV_OFFSET 0xcbf29ce484222325ULL
#define EGM_FNV_PRIME 0x100000001b3ULL

static inline uint64_t egm_fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * EGM_FNV_PRIME;
    return h;
}

#endif
