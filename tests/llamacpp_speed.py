"""llamacpp_speed.py - decode speed of egmla and llama.cpp on the same GGUF.

    /usr/bin/python3 tests/llamacpp_speed.py bin/egmla MODEL.gguf

Both engines get the same prompt ids and generate N_GEN tokens greedily per
sequence without stopping, for batch 1 and batch B (B sequences decoded
together: llama.cpp's batched mode, one llama_batch holding one token of each
sequence per step, n_seq_max = B; egmla's scheduler batching B requests).
Prompt processing: one sequence of PP (512) tokens of real text, prefilled
(egmla: `generate --max-new-tokens 1`, its "prompt tok/s"; llama.cpp: one
llama_decode of the whole prompt, n_batch = PP), reported as batch "pp512".
Runs alternate A B A B ... REPS times, same thread count (THREADS, a list:
default "2,1"); the table gives each engine's median generated tokens/s,
counted as tokens generated over the wall time of prefill + decode (model
loading excluded on both sides: egmla's own "generated tokens in S s" line,
which starts after the load). llama.cpp runs with its defaults (fp16 KV
cache, flash attention as it decides), egmla with its (fp32 KV cache).

OpenMP wait policy: llama-cpp-python's llama.cpp is built with OpenMP, whose
threads must spin between the graph's nodes; OMP_WAIT_POLICY=passive (this
project's setting for egmla) cuts its 2-thread batch-1 decode from ~66 to ~22
tok/s on this machine. So llama.cpp gets OpenMP's default (the variable is
removed before it loads) and egmla gets passive (no difference to it: ~20
tok/s either way, measured)."""
import ctypes
import json
import os
import re
import statistics
import subprocess
import sys
import time

os.environ.pop("OMP_WAIT_POLICY", None)   # before libgomp starts: see above
import numpy as np
import llama_cpp as L

EGMLA_ENV = dict(os.environ, OMP_WAIT_POLICY="passive")

BIN, GGUF = sys.argv[1], sys.argv[2]
THREADS = [int(t) for t in os.environ.get("THREADS", "2,1").split(",")]
N_GEN = int(os.environ.get("N_GEN", "128"))
BATCH = int(os.environ.get("BATCH", "8"))
REPS = int(os.environ.get("REPS", "3"))
PP = int(os.environ.get("PP", "512"))
PROMPT = "<|im_start|>user\nTell me a long story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n"



@L.llama_log_callback
def _quiet(level, text, user_data):
    """llama.cpp's load and context chatter would bury the table."""


L.llama_log_set(_quiet, ctypes.c_void_p())
L.llama_backend_init()
mp = L.llama_model_default_params()
model = L.llama_model_load_from_file(GGUF.encode(), mp)
vocab = L.llama_model_get_vocab(model)
NV = L.llama_vocab_n_tokens(vocab)
buf = (L.llama_token * 512)()
n = L.llama_tokenize(vocab, PROMPT.encode(), len(PROMPT.encode()), buf, 512, False, True)
IDS = list(buf[:n])
with open("/usr/share/common-licenses/GPL-3", encoding="utf-8") as f:
    _text = f.read()[:20000].encode()
_pbuf = (L.llama_token * 8192)()
_n = L.llama_tokenize(vocab, _text, len(_text), _pbuf, 8192, True, False)
PP_IDS = list(_pbuf[:PP])


def llama_run(nseq, threads):
    cp = L.llama_context_default_params()
    cp.n_ctx = nseq * (len(IDS) + N_GEN + 16)
    cp.n_batch = cp.n_ubatch = max(512, nseq * len(IDS))
    cp.n_seq_max = nseq
    cp.n_threads = cp.n_threads_batch = threads
    ctx = L.llama_init_from_model(model, cp)
    batch = L.llama_batch_init(max(nseq * len(IDS), nseq), 0, nseq)

    def decode(entries):
        batch.n_tokens = len(entries)
        for i, (t, p, s, lg) in enumerate(entries):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = t, p, 1
            batch.seq_id[i][0], batch.logits[i] = s, lg
        assert L.llama_decode(ctx, batch) == 0

    def argmax(i):
        return int(np.argmax(np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(NV,))))

    t0 = time.perf_counter()
    entries = [(t, j, s, j == len(IDS) - 1) for s in range(nseq) for j, t in enumerate(IDS)]
    decode(entries)
    nxt = [argmax((s + 1) * len(IDS) - 1) for s in range(nseq)]
    for step in range(1, N_GEN):
        decode([(nxt[s], len(IDS) + step - 1, s, True) for s in range(nseq)])
        nxt = [argmax(s) for s in range(nseq)]
    dt = time.perf_counter() - t0
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    return nseq * N_GEN / dt


def llama_pp(threads):
    cp = L.llama_context_default_params()
    cp.n_ctx = PP + 16
    cp.n_batch = cp.n_ubatch = PP
    cp.n_threads = cp.n_threads_batch = threads
    ctx = L.llama_init_from_model(model, cp)
    batch = L.llama_batch_init(PP, 0, 1)
    batch.n_tokens = PP
    for i, t in enumerate(PP_IDS):
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = t, i, 1
        batch.seq_id[i][0], batch.logits[i] = 0, i == PP - 1
    t0 = time.perf_counter()
    assert L.llama_decode(ctx, batch) == 0
    dt = time.perf_counter() - t0
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    return PP / dt


def egmla_pp(threads):
    env = dict(EGMLA_ENV, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    p = subprocess.run([BIN, "generate", "--model", GGUF, "--temperature", "0", "--ignore-eos",
                        "--max-new-tokens", "1", "--threads", str(threads)],
                       input=json.dumps({"id": 0, "tokens": PP_IDS}) + "\n", capture_output=True,
                       text=True, check=True, env=env)
    return float(re.search(r"\(([\d.]+) prompt tok/s", p.stderr).group(1))


def egmla_run(nseq, threads):
    reqs = "".join(json.dumps({"id": i, "tokens": IDS}) + "\n" for i in range(nseq))
    # `--threads` alone does not bound a single-process run (OpenBLAS starts
    # one thread per core), so the thread count also goes in the environment
    env = dict(EGMLA_ENV, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    p = subprocess.run([BIN, "generate", "--model", GGUF, "--temperature", "0", "--ignore-eos",
                        "--max-new-tokens", str(N_GEN), "--threads", str(threads)],
                       input=reqs, capture_output=True, text=True, check=True, env=env)
    m = re.search(r"(\d+) generated tokens in ([\d.]+) s", p.stderr)
    return int(m.group(1)) / float(m.group(2))


def main():
    res = {}
    for rep in range(REPS):
        for th in THREADS:
            for nseq in (1, BATCH, "pp%d" % PP):
                pp = isinstance(nseq, str)
                for name, fn in (("egmla", egmla_pp if pp else egmla_run),
                                 ("llama.cpp", llama_pp if pp else llama_run)):
                    v = fn(th) if pp else fn(nseq, th)
                    res.setdefault((name, th, nseq), []).append(v)
                    print(f"rep {rep} threads {th} batch {nseq:>5} {name:9s} {v:8.1f} tok/s",
                          flush=True)
    print(f"\n{os.path.basename(GGUF)}: prompt {len(IDS)} tokens, {N_GEN} generated per "
          f"sequence (pp{PP}: {PP}-token prefill), median of {REPS}, "
          f"load average {os.getloadavg()[0]:.2f} at the end")
    print("| threads | batch | egmla tok/s | llama.cpp tok/s | egmla / llama.cpp |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for th in THREADS:
        for nseq in (1, BATCH, "pp%d" % PP):
            a = statistics.median(res[("egmla", th, nseq)])
            b = statistics.median(res[("llama.cpp", th, nseq)])
            print(f"| {th} | {nseq} | {a:.1f} | {b:.1f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
