/* fuzz_safetensors.c - libFuzzer harness for the safetensors header parser.
 *
 * The input is a whole .safetensors file. It goes into a memfd so that
 * egm_ckpt_open_file() maps it exactly as it would a file on disk; then every
 * tensor it accepted is read back in full, so an offset or size the
 * validation let through that points outside the mapping is caught by ASan
 * (or as a SIGSEGV/SIGBUS past the end of the mapping). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "model/checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = memfd_create("fuzz.safetensors", 0);
    if (fd < 0) return 0;
    size_t done = 0;
    while (done < size) {
        ssize_t w = write(fd, data + done, size - done);
        if (w <= 0) { close(fd); return 0; }
        done += (size_t)w;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    egm_ckpt *ck = NULL;
    egm_err e;
    if (egm_ckpt_open_file(path, &ck, &e) == 0) {
        for (int i = 0; i < egm_ckpt_count(ck); i++) {
            const egm_tensor *t = egm_ckpt_at(ck, i);
            size_t n = t->nbytes / egm_dtype_size(t->dtype);
            float *f = malloc(n ? n * sizeof *f : 1);
            if (f) egm_to_f32(f, t->data, t->dtype, n);
            free(f);
            if (egm_ckpt_get(ck, t->name) == NULL) abort(); /* lookup must find it */
        }
        egm_ckpt_close(ck);
    }
    close(fd);
    return 0;
}
