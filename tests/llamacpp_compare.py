"""llamacpp_compare.py - egmla against llama.cpp (llama-cpp-python) on one GGUF.

    llamacpp_compare.py BIN GGUF TOKDUMP [--reference-gguf REF] [--strict]

Run through tests/compare_llamacpp.sh, which finds the binary, the GGUF file, a
tokenizer helper and makes the F32 copy. egmla always runs on GGUF; llama.cpp
runs on REF (default: GGUF too). REF = tests/gguf_to_f32.py's F32 copy of
GGUF holds exactly the weights egmla multiplies (it dequantises at load), so
llama.cpp(REF) vs egmla(GGUF) compares the two engines' fp32 math, without
llama.cpp's on-the-fly quantisation of activations (Q8_1/Q8_0) in its
quantised dot products. Checks, each printed as it runs:

  1. tokenization: our ids == llama.cpp's (add_bos per the file's metadata,
     special tokens parsed) on real text, chat prompts and odd Unicode;
  2. scoring: both score the same >= 1,000 tokens of real text (our ids);
     top-1 agreement of the next-token argmax and the largest |delta
     log-prob| of the actual next token and over the whole vocabulary;
     with REF != GGUF, also egmla on REF == egmla on GGUF (bit for bit);
  3. greedy generation: N_GEN tokens from a few prompts, both engines fed
     our ids, token for token; where they part, the llama.cpp logit margin
     between its top two tokens there (a near-tie or not).

llama.cpp keeps its KV cache in F32 here, as egmla does (--llama-kv f16 gives
llama.cpp's default, fp16 K and V, which alone moves log-probs by ~0.03).

Bounds (exit status 1 when one fails): --strict (for an F32 reference) wants
top-1 >= 99.5 %, max |dlogp| of the next token <= 0.005 (mean <= 0.001) and
each greedy generation identical for its first 50 tokens (or entirely, if
shorter); without it (a quantised reference) top-1 >= 94 %, max
|dlogp| <= 1.5 (mean <= 0.1), and generations are only reported: llama.cpp's
8-bit activations move log-probs by ~0.06 on average (up to ~0.8 measured on
SmolLM2), enough to flip near-ties, after which the texts go their own
ways. Those bounds are meant to catch gross errors only."""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from llama_cpp import Llama

ap = argparse.ArgumentParser()
ap.add_argument("bin")
ap.add_argument("gguf")
ap.add_argument("tokdump")
ap.add_argument("--reference-gguf", help="the file llama.cpp runs (default: GGUF)")
ap.add_argument("--strict", action="store_true", help="bounds for an F32 reference")
ap.add_argument("--llama-kv", choices=("f32", "f16"), default="f32",
                help="llama.cpp's KV cache type (its default is f16; egmla's is fp32)")
ARGS = ap.parse_args()
BIN, GGUF, TOKDUMP = ARGS.bin, ARGS.gguf, ARGS.tokdump
REF = ARGS.reference_gguf or GGUF
N_GEN = int(os.environ.get("N_GEN", "200"))
THREADS = int(os.environ.get("THREADS", "2"))
BOUNDS = ({"top1": 0.995, "max_dlogp_token": 0.005, "mean_dlogp_token": 0.001,
           "greedy_prefix": 50} if ARGS.strict else
          {"top1": 0.94, "max_dlogp_token": 1.5, "mean_dlogp_token": 0.1, "greedy_prefix": 0})


def real_text():
    """A few pages of the GPL-3 (Debian ships it in base-files)."""
    with open("/usr/share/common-licenses/GPL-3", encoding="utf-8") as f:
        return f.read()[:7000]


CHAT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
        "Hugging Face<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n")
PROMPTS = [
    CHAT.format("What is the capital of France?"),
    CHAT.format("Write a short poem about the sea."),
    CHAT.format("Explain what a hash table is, in two paragraphs."),
    "The history of the Roman Empire",
]
ODD = ["Hello world", " Hello  World!\n\n\tx", "3333 7777777 12.5%", "Äpfel naïve café ☕ 🦙.cpp",
       "нещо на Български", "I'm you'll they've WE'LL", "   leading and trailing   ",
       "code: `for (int i=0;i<n;i++) {x+=i;}`"]


def ours_tokenize(texts):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
        name = f.name
    out = subprocess.run([TOKDUMP, GGUF, name], check=True, capture_output=True, text=True)
    os.unlink(name)
    return [json.loads(l) for l in out.stdout.splitlines()]


def run_bin(cmd, lines, model=GGUF):
    p = subprocess.run([BIN] + cmd + ["--model", model, "--threads", str(THREADS)],
                       input="".join(json.dumps(l) + "\n" for l in lines),
                       capture_output=True, text=True)
    if p.returncode:
        sys.exit("egmla failed: " + p.stderr)
    return [json.loads(l) for l in p.stdout.splitlines()]


def our_logits(toks, model, nv):
    with tempfile.TemporaryDirectory() as d:
        dump = os.path.join(d, "logits.f32")
        run_bin(["score", "--dump-logits", dump], [{"id": 0, "tokens": toks}], model)
        return np.fromfile(dump, dtype=np.float32).reshape(-1, nv)


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def main():
    print(f"llama.cpp on {REF} (KV cache {ARGS.llama_kv})\negmla     on {GGUF}\n"
          f"bounds: {BOUNDS}")
    # flash attention off: llama.cpp's CPU flash path rounds to fp16 even
    # with an F32 cache (max |dlogp| 0.02 instead of 3e-4)
    kv = 0 if ARGS.llama_kv == "f32" else 1   # GGML_TYPE_F32, GGML_TYPE_F16
    llm = Llama(model_path=REF, n_ctx=4096, n_batch=512, logits_all=True, n_threads=THREADS,
                type_k=kv, type_v=kv, flash_attn=False, verbose=False)
    ok = True

    # 1. tokenization
    texts = [real_text()] + PROMPTS + ODD
    ref = [llm.tokenize(t.encode(), add_bos=True, special=True) for t in texts]
    mine = ours_tokenize(texts)
    same = sum(a == b for a, b in zip(ref, mine))
    print(f"tokenize: {same}/{len(texts)} texts identical "
          f"({sum(map(len, ref))} llama.cpp tokens)")
    for t, a, b in zip(texts, ref, mine):
        if a != b:
            ok = False
            print(f"  differs on {t[:40]!r}: llama.cpp {a[:12]}... ours {b[:12]}...")

    # 2. scoring >= 1,000 tokens of real text, our ids fed to both
    toks = mine[0]
    llm.reset()
    llm.eval(toks)
    ref_logits = np.array(llm.scores[: len(toks)], dtype=np.float32)
    my_logits = our_logits(toks, GGUF, ref_logits.shape[1])
    if REF != GGUF:
        # egmla dequantises at load: the F32 copy must give the same bits
        d = np.abs(our_logits(toks, REF, ref_logits.shape[1]) - my_logits).max()
        print(f"egmla on the reference file vs on {os.path.basename(GGUF)}: max |dlogit| {d:g}")
        ok &= d == 0
    n = min(len(my_logits), len(ref_logits))
    a, b = log_softmax(ref_logits[: n - 1]), log_softmax(my_logits[: n - 1])
    nxt = np.array(toks[1:n])
    top1 = float((a.argmax(-1) == b.argmax(-1)).mean())
    d_tok = np.abs(a[np.arange(n - 1), nxt] - b[np.arange(n - 1), nxt])
    d_all = np.abs(a - b).max()
    # over the tokens the reference gives at least 1e-4: the far tail of a
    # log-softmax is all noise in both engines
    mask = a > np.log(1e-4)
    d_likely = np.abs(a - b)[mask].max()
    print(f"score: {n - 1} positions; top-1 agreement {top1 * 100:.2f}%; max |dlogp| "
          f"actual next token {d_tok.max():.2g} (mean {d_tok.mean():.2g}); over tokens with "
          f"p > 1e-4 {d_likely:.2g}; whole vocabulary {d_all:.2g}; max |dlogit| "
          f"{np.abs(ref_logits[:n] - my_logits[:n]).max():.2g}")
    ok &= (top1 >= BOUNDS["top1"] and d_tok.max() <= BOUNDS["max_dlogp_token"]
           and d_tok.mean() <= BOUNDS["mean_dlogp_token"])

    # 3. greedy generation, llama.cpp by hand (argmax of its logits), ours
    # through `egmla generate --temperature 0`, both from our ids.
    # llama.cpp's end-of-generation set: eos plus these control tokens
    eog = {llm.token_eos()}
    for s in (b"<|im_end|>", b"<|endoftext|>", b"<|eot_id|>"):
        ids = llm.tokenize(s, add_bos=False, special=True)
        if len(ids) == 1:
            eog.add(ids[0])
    prompt_ids = ours_tokenize(PROMPTS)
    refs, margins = [], []
    for ids in prompt_ids:
        llm.reset()
        llm.eval(ids)
        out, gap = [], []
        while len(out) < N_GEN:
            row = np.asarray(llm.scores[llm.n_tokens - 1])
            t = int(np.argmax(row))
            out.append(t)
            gap.append(float(row[t] - np.partition(row, -2)[-2]))
            if t in eog:
                break
            llm.eval([t])
        refs.append(out)
        margins.append(gap)
    mine = {r["id"]: r["tokens"] for r in run_bin(
        ["generate", "--temperature", "0", "--max-new-tokens", str(N_GEN)],
        [{"id": i, "tokens": ids} for i, ids in enumerate(prompt_ids)])}
    for i in range(len(PROMPTS)):
        a, b = refs[i], mine[i]
        k = next((j for j in range(min(len(a), len(b))) if a[j] != b[j]), min(len(a), len(b)))
        same = a == b
        where = ("identical" if same else
                 f"first difference at token {k} (llama.cpp margin there "
                 f"{margins[i][k] if k < len(a) else float('nan'):.3f} logits)")
        print(f"generate {i}: {where} ({len(a)} llama.cpp tokens, {len(b)} ours)")
        print("  llama.cpp: " + json.dumps(llm.detokenize(a).decode("utf-8", "replace")))
        if not same:
            print("  egmla:     " + json.dumps(llm.detokenize(b).decode("utf-8", "replace")))
        need = min(BOUNDS["greedy_prefix"], len(a), len(b))
        ok &= same or k >= need
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
