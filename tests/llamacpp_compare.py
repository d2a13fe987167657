"""llamacpp_compare.py - egmla against llama.cpp (llama-cpp-python) on one GGUF.

Run through tests/e2e_llamacpp.sh, which finds the binary, the GGUF file and
a tokenizer helper. Three checks, each printed as it runs:

  1. tokenization: our ids == llama.cpp's (add_bos per the file's metadata,
     special tokens parsed) on real text, chat prompts and odd Unicode;
  2. scoring: both score the same >= 1,000 tokens of real text (llama.cpp's
     ids); top-1 agreement of the next-token argmax and the largest
     |delta log-prob| of the actual next token and over the whole vocabulary;
  3. greedy generation: 200 tokens from a few prompts, token for token.

Exit status 1 when a check fails its threshold (see THRESHOLDS)."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from llama_cpp import Llama

BIN, GGUF, TOKDUMP = sys.argv[1], sys.argv[2], sys.argv[3]
N_GEN = int(os.environ.get("N_GEN", "200"))
THREADS = int(os.environ.get("THREADS", "2"))
# llama.cpp multiplies Q4_1 weights with activations quantised to Q8_1, we
# with exact fp32 dequantised weights, so logits differ by ~1e-2: argmax
# near-ties can flip. These thresholds catch real bugs, not that noise.
THRESHOLDS = {"top1": 0.98, "max_dlogp_token": 0.5}


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


def run_bin(cmd, lines):
    p = subprocess.run([BIN] + cmd + ["--model", GGUF, "--threads", str(THREADS)],
                       input="".join(json.dumps(l) + "\n" for l in lines),
                       capture_output=True, text=True)
    if p.returncode:
        sys.exit("egmla failed: " + p.stderr)
    return [json.loads(l) for l in p.stdout.splitlines()]


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def main():
    llm = Llama(model_path=GGUF, n_ctx=4096, n_batch=512, logits_all=True, n_threads=THREADS,
                verbose=False)
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

    # 2. scoring >= 1,000 tokens of real text
    toks = ref[0]
    llm.reset()
    llm.eval(toks)
    ref_logits = np.array(llm.scores[: len(toks)], dtype=np.float32)
    with tempfile.TemporaryDirectory() as d:
        dump = os.path.join(d, "logits.f32")
        run_bin(["score", "--dump-logits", dump], [{"id": 0, "tokens": toks}])
        my_logits = np.fromfile(dump, dtype=np.float32).reshape(-1, ref_logits.shape[1])
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
          f"actual next token {d_tok.max():.4f} (mean {d_tok.mean():.4f}); over tokens with "
          f"p > 1e-4 {d_likely:.4f}; whole vocabulary {d_all:.4f}")
    ok &= top1 >= THRESHOLDS["top1"] and d_tok.max() <= THRESHOLDS["max_dlogp_token"]

    # 3. greedy generation, llama.cpp by hand (argmax of its logits), ours
    # through `egmla generate --temperature 0`, from the same ids
    # llama.cpp's end-of-generation set: eos plus these control tokens
    eog = {llm.token_eos()}
    for s in (b"<|im_end|>", b"<|endoftext|>", b"<|eot_id|>"):
        ids = llm.tokenize(s, add_bos=False, special=True)
        if len(ids) == 1:
            eog.add(ids[0])
    reqs, refs = [], []
    for i, p in enumerate(PROMPTS):
        ids = llm.tokenize(p.encode(), add_bos=True, special=True)
        llm.reset()
        llm.eval(ids)
        out = []
        while len(out) < N_GEN:
            t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            out.append(t)
            if t in eog:
                break
            llm.eval([t])
        refs.append(out)
        reqs.append({"id": i, "tokens": ids})
    mine = {r["id"]: r["tokens"] for r in run_bin(
        ["generate", "--temperature", "0", "--max-new-tokens", str(N_GEN)], reqs)}
    for i, p in enumerate(PROMPTS):
        a, b = refs[i], mine[i]
        k = next((j for j in range(min(len(a), len(b))) if a[j] != b[j]), min(len(a), len(b)))
        same = a == b
        print(f"generate {i}: {'identical' if same else f'first difference at token {k}'} "
              f"({len(a)} llama.cpp tokens, {len(b)} ours)")
        print("  llama.cpp: " + json.dumps(llm.detokenize(a).decode("utf-8", "replace")))
        if not same:
            print("  egmla:     " + json.dumps(llm.detokenize(b).decode("utf-8", "replace")))
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
