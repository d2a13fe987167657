"""decode_callgrind.py - instructions per decoded token, egmla against llama.cpp.

    /usr/bin/python3 tests/decode_callgrind.py bin/egmla MODEL.gguf [OUTDIR]

Instruction counts do not depend on what else the machine runs, so this
attributes the decode gap where wall-clock timing cannot. Each engine runs
under `valgrind --tool=callgrind` on one thread, prefills the same 19-token
chat prompt and generates N tokens greedily, for N = 16 and 32; the
difference of the two runs over 16 is the cost of one decode step (loading,
prefill and exit cancel). llama.cpp runs through llama-cpp-python (its
defaults: F16 KV cache, flash attention as it decides); the driver is this
script with `--llama N`. Prints instructions per token by part for both.
Runs for some minutes per engine (callgrind is ~50x slower than native);
OUTDIR (default build/callgrind) keeps the profiles, and an existing
profile is reused, so delete it after rebuilding."""
import os
import re
import subprocess
import sys

IDS = [1, 4093, 198, 31530, 549, 253, 986, 1977, 563, 253, 33059, 40061, 30, 2, 198, 1, 520,
       9531, 198]  # "Tell me a long story about a lighthouse keeper." as a SmolLM2 chat
NS = (16, 32)

# function-name patterns -> part, first match wins
EGMLA_PARTS = [
    ("Q4_1 products (dot kernel)", r"^dot_q4_1_"),
    ("lm_head Q8_0 product (49152 x 576)", r"^dot_q8_0_"),
    ("activation rounding to 8 bits", r"quantize_row_a8|^quant_a8_|^fmaxf$|^lrintf$|egm_f32_to_f16|egm_f16_to_f32"),
    ("product dispatch (per row / block)", r"^dot_rows$|egm_mat_|^lin_task$|^mul_|par_ranges|egm_pool_|egm_qdot_|omp_in_parallel|pthread_getspecific|openblas_get_num"),
    ("attention (scores, softmax, KV copy)", r"egm_attn|egm_softmax|sgemv|egm_kv_|memcpy|^0x0000000001|sscal|mha_task"),
    ("norms, RoPE, SwiGLU", r"egm_rmsnorm|egm_rope|egm_swiglu|^__expf|^__sincos"),
    ("logits: log-prob, argmax, sampling", r"egm_logprob|egm_argmax|egm_sample|^exp@|__ieee754_exp|egm_head"),
]
LLAMA_PARTS = [
    ("Q4_1 products (dot kernel)", r"ggml_vec_dot_q4_1_q8_1"),
    ("lm_head Q8_0 product (49152 x 576)", r"ggml_vec_dot_q8_0_q8_0"),
    ("activation rounding to 8 bits", r"quantize_row_q8"),
    ("product dispatch (per row / block)", r"ggml_compute_forward_mul_mat"),
    ("attention (scores, softmax, KV copy)", r"flash_attn|ggml_vec_dot_f16|fp32_to_fp16|memcpy|softmax|cpy"),
    ("norms, RoPE, SwiGLU", r"rms_norm|rope|swiglu|^__expf|^__sincos"),
    ("logits: log-prob, argmax, sampling", r"argmax"),
]


def llama_drive(gguf, n):
    """The llama.cpp side: prefill IDS, then n - 1 single-token steps."""
    import ctypes
    import numpy as np
    import llama_cpp as L

    @L.llama_log_callback
    def quiet(level, text, user_data):
        pass

    L.llama_log_set(quiet, ctypes.c_void_p())
    L.llama_backend_init()
    model = L.llama_model_load_from_file(gguf.encode(), L.llama_model_default_params())
    nv = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    cp = L.llama_context_default_params()
    cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = 128, 512, 512, 1
    cp.n_threads = cp.n_threads_batch = 1
    ctx = L.llama_init_from_model(model, cp)
    batch = L.llama_batch_init(512, 0, 1)

    def decode(toks, p0):
        batch.n_tokens = len(toks)
        for i, t in enumerate(toks):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = t, p0 + i, 1
            batch.seq_id[i][0], batch.logits[i] = 0, i == len(toks) - 1
        assert L.llama_decode(ctx, batch) == 0
        lg = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, len(toks) - 1), shape=(nv,))
        return int(np.argmax(lg))

    out = [decode(IDS, 0)]
    for s in range(1, n):
        out.append(decode([out[-1]], len(IDS) + s - 1))
    print(out)


def profile(cmd, path, env=None):
    if os.path.exists(path):
        return
    subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + path] + cmd,
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def self_costs(path):
    """Self instructions per function name (inlined pieces summed)."""
    out = subprocess.run(["callgrind_annotate", "--auto=no", "--threshold=100", path],
                         check=True, capture_output=True, text=True).stdout
    d = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*)$", line)
        if not m or "PROGRAM TOTALS" in m.group(2):
            continue
        name = re.sub(r"\s*\[.*\]$", "", m.group(2))
        name = name[4:] if name.startswith("???:") else name.split(":", 1)[-1]
        d[name] = d.get(name, 0) + int(m.group(1).replace(",", ""))
    return d


def per_token(a, b):
    n = NS[1] - NS[0]
    return {k: (b.get(k, 0) - a.get(k, 0)) / n for k in set(a) | set(b)}


def split(costs, parts):
    res = {name: 0.0 for name, _ in parts}
    res["other"] = 0.0
    for fn, v in costs.items():
        for name, pat in parts:
            if re.search(pat, fn):
                res[name] += v
                break
        else:
            res["other"] += v
    return res


def main():
    if sys.argv[1] == "--llama":
        llama_drive(sys.argv[2], int(sys.argv[3]))
        return
    egmla, gguf = sys.argv[1], sys.argv[2]
    outdir = sys.argv[3] if len(sys.argv) > 3 else "build/callgrind"
    os.makedirs(outdir, exist_ok=True)
    req = os.path.join(outdir, "req.jsonl")
    with open(req, "w") as f:
        f.write('{"id":0,"tokens":%s}\n' % IDS)
    # one thread everywhere; egmla's re-exec (main.c) does not work under
    # valgrind, so its variables are set here
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               OMP_WAIT_POLICY="passive", OPENBLAS_CORETYPE="Haswell", EGMLA_NO_REEXEC="1")
    lenv = dict(os.environ)
    lenv.pop("OMP_WAIT_POLICY", None)
    eg, ll = [], []
    for n in NS:
        p = os.path.join(outdir, "egmla%d.cg" % n)
        profile([egmla, "generate", "--model", gguf, "--threads", "1", "--temperature", "0",
                 "--ignore-eos", "--max-new-tokens", str(n), "--input", req], p, env)
        eg.append(self_costs(p))
        p = os.path.join(outdir, "llama%d.cg" % n)
        profile([sys.executable, os.path.abspath(__file__), "--llama", gguf, str(n)], p, lenv)
        ll.append(self_costs(p))
    e, l = per_token(*eg), per_token(*ll)
    es, ls = split(e, EGMLA_PARTS), split(l, LLAMA_PARTS)
    print("instructions per decoded token (millions), %d - %d tokens, 1 thread" % NS[::-1])
    print("| part | egmla | llama.cpp |")
    print("| --- | ---: | ---: |")
    for name in list(es):
        print("| %s | %.1f | %.1f |" % (name, es[name] / 1e6, ls[name] / 1e6))
    print("| **total** | **%.1f** | **%.1f** |" % (sum(e.values()) / 1e6, sum(l.values()) / 1e6))
    for label, c in (("egmla", e), ("llama.cpp", l)):
        print("\n%s, top functions (M instructions per token):" % label)
        for fn, v in sorted(c.items(), key=lambda kv: -kv[1])[:12]:
            print("  %8.2f  %s" % (v / 1e6, fn[:100]))


if __name__ == "__main__":
    main()
