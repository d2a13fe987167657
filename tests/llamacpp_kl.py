"""llamacpp_kl.py - accuracy of quantised weights: egmla and llama.cpp on the
same GGUF files, each against the F32 model's distribution.

    llamacpp_kl.py BIN F32.gguf TOKDUMP FILE.gguf [FILE.gguf ...]

Run through tests/compare_llamacpp.sh. Both engines score the same >= 1,000
tokens of real text (our ids) on each FILE; the reference distribution P is
llama.cpp on F32.gguf (the same weights dequantised; egmla on it agrees to
~1e-4 in log-prob). Per file: top-1 agreement of egmla's and llama.cpp's
next-token argmax, and the mean KL(P || Q) over positions for Q = each
engine on that file (llama.cpp's --kl-divergence measure). Passes when
agreement >= 99 % and egmla's KL <= 1.1 x llama.cpp's (+ 1e-5, for files so
close to F32 that both are noise). Prints a markdown table."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from llama_cpp import Llama

BIN, F32, TOKDUMP, FILES = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
THREADS = int(os.environ.get("THREADS", "2"))


def tokens():
    with open("/usr/share/common-licenses/GPL-3", encoding="utf-8") as f:
        text = f.read()[:7000]
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.write(json.dumps({"text": text}) + "\n")
    out = subprocess.run([TOKDUMP, F32, f.name], check=True, capture_output=True, text=True)
    os.unlink(f.name)
    return json.loads(out.stdout.splitlines()[0])


def egmla_logits(toks, model, nv):
    with tempfile.TemporaryDirectory() as d:
        dump = os.path.join(d, "logits.f32")
        subprocess.run([BIN, "score", "--model", model, "--threads", str(THREADS),
                        "--dump-logits", dump], input=json.dumps({"id": 0, "tokens": toks}) + "\n",
                       capture_output=True, text=True, check=True)
        return np.fromfile(dump, dtype=np.float32).reshape(-1, nv)


def llama_logits(toks, model):
    llm = Llama(model_path=model, n_ctx=4096, n_batch=512, logits_all=True, n_threads=THREADS,
                type_k=0, type_v=0, flash_attn=False, verbose=False)
    llm.eval(toks)
    x = np.array(llm.scores[: len(toks)], dtype=np.float32)
    del llm
    return x


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def kl(p_log, q_log):
    return float((np.exp(p_log) * (p_log - q_log)).sum(-1).mean())


def main():
    toks = tokens()
    ref = log_softmax(llama_logits(toks, F32))
    nv = ref.shape[1]
    n = len(toks)
    print(f"{n} positions of real text; reference: llama.cpp on {os.path.basename(F32)}; "
          f"egmla on it: mean KL {kl(ref, log_softmax(egmla_logits(toks, F32, nv))):.2e}")
    print("| file | top-1 egmla vs llama.cpp | KL egmla | KL llama.cpp | egmla / llama.cpp |")
    print("| --- | ---: | ---: | ---: | ---: |")
    ok = True
    for f in FILES:
        a = log_softmax(egmla_logits(toks, f, nv))
        b = log_softmax(llama_logits(toks, f))
        top1 = float((a.argmax(-1) == b.argmax(-1)).mean())
        ka, kb = kl(ref, a), kl(ref, b)
        good = top1 >= 0.99 and ka <= 1.1 * kb + 1e-5
        ok &= good
        print(f"| {os.path.basename(f)} | {top1 * 100:.2f} % | {ka:.2e} | {kb:.2e} | "
              f"{ka / kb if kb else float('nan'):.2f} |{'' if good else ' FAIL'}", flush=True)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
