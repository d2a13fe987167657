"""GGUF files written by `egmla quantize`, run by llama.cpp itself.

    /usr/bin/python3 tests/llamacpp_quantized.py [bin/egmla]

Quantizes the trained models/llama-tiny (and models/mla-tiny as deepseek2)
to each type, loads every file in llama.cpp (llama-cpp-python), and checks
that llama.cpp and egmla, given the same prompt ids, produce the same greedy
tokens, and that llama.cpp tokenizes the prompts as egmla does. Not part of
`make test`: llama-cpp-python compiles llama.cpp for many minutes. Prints
SKIP and exits 0 when llama_cpp cannot be imported. Exit 1 on a mismatch
for the llama model; deepseek2 is reported, not required.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

try:
    import llama_cpp
except ImportError:
    print("SKIP: llama_cpp is not importable (pip install llama-cpp-python)")
    sys.exit(0)

BIN = sys.argv[1] if len(sys.argv) > 1 else "bin/egmla"
PROMPTS = [
    "In the beginning God created the heaven and the earth.",
    "And the LORD spake unto Moses, saying,",
    "Blessed are the meek: for they shall inherit the earth.",
    "And it came to pass, when",
]
N = 32


def llama_greedy(path, prompts):
    llm = llama_cpp.Llama(model_path=path, n_ctx=256, n_threads=2, logits_all=False,
                          verbose=False)
    out = []
    for p in prompts:
        ids = llm.tokenize(p.encode(), add_bos=False, special=True)
        llm.reset()
        llm.eval(ids)
        gen = []
        for _ in range(N):
            # the last position's logits, straight from llama.cpp
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1),
                                           shape=(llm.n_vocab(),))
            t = int(logits.argmax())
            gen.append(t)
            if t == llm.token_eos():
                break
            llm.eval([t])
        out.append((ids, gen))
    return out


def llama_logprobs(path, seqs):
    """log p(token i | tokens before i), i >= 1, of each sequence, by llama.cpp."""
    llm = llama_cpp.Llama(model_path=path, n_ctx=256, n_threads=2, logits_all=True,
                          verbose=False)
    out = []
    for ids in seqs:
        llm.reset()
        llm.eval(ids)
        lp = []
        for i in range(1, len(ids)):
            z = np.array(llm.scores[i - 1], dtype=np.float64)
            z -= z.max()
            lp.append(float(z[ids[i]] - np.log(np.exp(z).sum())))
        out.append(lp)
    return out


def egmla_logprobs(path, seqs):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for i, ids in enumerate(seqs):
            f.write(json.dumps({"id": str(i), "tokens": ids}) + "\n")
    r = subprocess.run([BIN, "score", "--model", path, "--input", f.name],
                       capture_output=True, text=True)
    os.unlink(f.name)
    rows = {json.loads(l)["id"]: json.loads(l)["logprobs"] for l in r.stdout.splitlines()}
    return [rows[str(i)] for i in range(len(seqs))]


def egmla_greedy(path, items):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for i, (ids, _) in enumerate(items):
            f.write(json.dumps({"id": str(i), "tokens": ids, "max_new_tokens": N,
                                "temperature": 0}) + "\n")
    r = subprocess.run([BIN, "generate", "--model", path, "--input", f.name],
                       capture_output=True, text=True)
    os.unlink(f.name)
    rows = {json.loads(l)["id"]: json.loads(l) for l in r.stdout.splitlines()}
    return [rows[str(i)].get("tokens") for i in range(len(items))]


def egmla_ids(path, prompts):
    """How many tokens egmla makes of each prompt (from its score output)."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for i, p in enumerate(prompts):
            f.write(json.dumps({"id": str(i), "prompt": p}) + "\n")
    r = subprocess.run([BIN, "score", "--model", path, "--input", f.name],
                       capture_output=True, text=True)
    os.unlink(f.name)
    return {json.loads(l)["id"]: len(json.loads(l)["logprobs"]) for l in r.stdout.splitlines()}


def check(model, arch, types):
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for t in types:
            g = os.path.join(tmp, f"{arch}.{t}.gguf")
            subprocess.run([BIN, "quantize", "--model", model, "--out", g, "--type", t],
                           check=True, capture_output=True)
            try:
                ref = llama_greedy(g, PROMPTS)
            except Exception as ex:  # llama.cpp refused the file
                print(f"{arch} {t}: llama.cpp cannot load it: {ex}")
                bad += 1
                continue
            ours = egmla_greedy(g, ref)
            lens = egmla_ids(g, PROMPTS)
            same = sum(a == b for (_, a), b in zip(ref, ours))
            seqs = [ids + gen for ids, gen in ref]
            d = [abs(x - y) for a, b in zip(llama_logprobs(g, seqs), egmla_logprobs(g, seqs))
                 for x, y in zip(a, b)]
            # score gives one log-prob per token after the first
            tok_ok = all(lens[str(i)] == len(ids) - 1 for i, (ids, _) in enumerate(ref))
            print(f"{arch} {t}: {same}/{len(PROMPTS)} greedy continuations identical "
                  f"({N} tokens each); prompt token counts equal: {tok_ok}; |delta log p| over "
                  f"{len(d)} positions: max {max(d):.2g}, mean {sum(d) / len(d):.2g}")
            for (ids, a), b in zip(ref, ours):
                if a != b:
                    k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                    print(f"  first difference at token {k}: llama.cpp {a[k:k+4]} egmla {b[k:k+4] if b else b}")
            bad += same != len(PROMPTS) or not tok_ok
    return bad


def main():
    print("llama-cpp-python", llama_cpp.__version__)
    bad = check("models/llama-tiny", "llama", ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q4_k", "q6_k"])
    check("models/mla-tiny", "deepseek2", ["f32", "q8_0"])
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
