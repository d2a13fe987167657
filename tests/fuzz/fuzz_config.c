/* fuzz_config.c - libFuzzer harness for config.json (egm_config_parse).
 * A config it accepts must give sane derived sizes. */
#include <stdint.h>
#include <stdlib.h>

#include "model/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    egm_config c;
    egm_err e;
    if (egm_config_parse((const char *)data, size, "fuzz/config.json", &c, &e) == 0) {
        /* accepted: the sizes the engine allocates from must be positive */
        if (c.vocab_size <= 0 || c.hidden_size <= 0 || c.num_layers <= 0 || c.num_heads <= 0)
            abort();
        if (egm_config_kv_elems(&c) <= 0 || egm_config_latent_dim(&c) < 0) abort();
        for (int i = 0; i < c.n_eos; i++) (void)egm_config_is_eos(&c, c.eos_token_ids[i]);
    }
    return 0;
}
