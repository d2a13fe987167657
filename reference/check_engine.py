"""check_engine.py - compares bin/egmla with the reference, live.

    /usr/bin/python3 reference/check_engine.py [--bin bin/egmla] [--tol 1e-3]
                                               [--random N] [--engine-args "..."] [MODEL_DIR ...]

For each model directory (default: every tests/fixtures/models/*): scores
the expected.json sequences plus N random ones with `egmla score` and
compares the log-probabilities with egmla_ref's; then runs the greedy
prompts with `egmla generate --temperature 0 --ignore-eos` and compares the
tokens. Works on any model directory, fixture or not (then only random
sequences are scored). Exit status 1 if anything differs.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import egmla_ref as ref  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, ".."))


def run_engine(binary, cmd, model, requests, extra=()):
    with tempfile.TemporaryDirectory(prefix="egmla_check_") as tmp:
        inp, out = os.path.join(tmp, "in.jsonl"), os.path.join(tmp, "out.jsonl")
        with open(inp, "w") as f:
            for i, r in enumerate(requests):
                f.write(json.dumps(dict(r, id=i)) + "\n")
        p = subprocess.run([binary, cmd, "--model", model, "--input", inp, "--out", out, *extra],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"{cmd} exited {p.returncode}: {p.stderr.strip()}")
        res = {}
        for line in open(out):
            o = json.loads(line)
            if "error" in o:
                raise RuntimeError(f"{cmd}: request {o.get('id')}: {o['error']}")
            res[o["id"]] = o
        return [res[i] for i in range(len(requests))]


def check(binary, d, tol, n_random, extra=(), seed=0):
    m = ref.load_model(d, torch.float64)
    exp_path = os.path.join(d, "expected.json")
    exp = json.load(open(exp_path)) if os.path.exists(exp_path) else {"score": [], "greedy": []}
    gen = torch.Generator().manual_seed(seed)
    seqs = [s["tokens"] for s in exp["score"]]
    seqs += [torch.randint(0, m.c.V, (int(n),), generator=gen).tolist()
             for n in torch.randint(2, 64, (n_random,), generator=gen)]
    got = run_engine(binary, "score", d, [{"tokens": s} for s in seqs], extra)
    worst, ok = 0.0, True
    for s, g in zip(seqs, got):
        lp = torch.log_softmax(m.forward(s), -1)
        want = [lp[i - 1, s[i]].item() for i in range(1, len(s))]
        if len(g["logprobs"]) != len(want):
            print(f"  score: {len(g['logprobs'])} logprobs for {len(s)} tokens, expected {len(want)}")
            ok = False
            continue
        worst = max([worst] + [abs(a - b) for a, b in zip(g["logprobs"], want)])
    ok &= worst <= tol
    print(f"{os.path.basename(d):16s} score: {len(seqs)} sequences, max |diff| {worst:.2e} "
          f"({'ok' if worst <= tol else 'FAIL'})")
    if exp["greedy"]:
        reqs = [{"tokens": g["prompt"], "max_new_tokens": g["max_new_tokens"]} for g in exp["greedy"]]
        got = run_engine(binary, "generate", d, reqs, ["--temperature", "0", "--ignore-eos", *extra])
        for g, r in zip(exp["greedy"], got):
            same = r["tokens"] == g["tokens"]
            ok &= same
            print(f"{'':16s} greedy {g['prompt']}: {'ok' if same else 'FAIL'}"
                  + ("" if same else f" engine {r['tokens']} expected {g['tokens']}"))
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "bin", "egmla"))
    ap.add_argument("--tol", type=float, default=1e-3, help="max |logprob difference|")
    ap.add_argument("--random", type=int, default=8, help="random sequences per model")
    ap.add_argument("--engine-args", default="", help="more options for the engine, e.g. \"--kv-dtype bf16\"")
    ap.add_argument("models", nargs="*")
    a = ap.parse_args()
    fix = os.path.join(ROOT, "tests", "fixtures", "models")
    models = a.models or [os.path.join(fix, n) for n in sorted(os.listdir(fix))]
    ok = True
    for d in models:
        try:
            ok &= check(a.bin, d, a.tol, a.random, shlex.split(a.engine_args))
        except (RuntimeError, ref.RefError) as ex:
            print(f"{os.path.basename(d):16s} FAIL: {ex}")
            ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
