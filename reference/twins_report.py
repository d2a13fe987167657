"""twins_report.py - the twins' table, plot and golden check, from the runs.

    python3 reference/twins_report.py                # eval + plot + table (needs bin/egmla)
    python3 reference/twins_report.py --table-only   # the table from the JSON files alone

Reads models/TRAINING_RESULTS.json (written by train.py --all). For every
run it scores the held-out continuation task with `bin/egmla eval`
(models/kjv-continuation.jsonl) into models/TWINS_EVAL.json, plots the
validation curves into docs/twins-loss.png and prints the table that
docs/PAPER.md carries. --check also runs reference/check_engine.py on each
twin at --tol 1e-4 (the engine against the PyTorch reference), after writing
its expected.json (write_expected) for tests/e2e_twins.sh. --table-only
needs neither torch nor matplotlib: tests/e2e_docs.sh uses it to check that
docs/PAPER.md agrees with the committed JSON files.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "models", "TRAINING_RESULTS.json")
EVAL = os.path.join(ROOT, "models", "TWINS_EVAL.json")
TASK = os.path.join(ROOT, "models", "kjv-continuation.jsonl")
PLOT = os.path.join(ROOT, "docs", "twins-loss.png")
NAMES = {"mha": "MHA", "mla": "MLA (d_c 128)", "mla-small": "MLA-small (d_c 32)",
         "egmla": "EG-MLA (d_c 32)"}


def run_key(r):
    return f"{r['twin']}-seed{r['seed']}"


def evaluate(binary, runs):
    out = {}
    for r in runs:
        with tempfile.TemporaryDirectory(prefix="twins_") as tmp:
            rep = os.path.join(tmp, "report.json")
            p = subprocess.run([binary, "eval", "--model", os.path.join(ROOT, r["out"]),
                                "--task", TASK, "--out", rep], capture_output=True, text=True)
            if p.returncode != 0:
                sys.exit(f"twins_report: egmla eval on {r['out']} exited {p.returncode}: "
                         f"{p.stderr.strip()}")
            with open(rep) as f:
                e = json.load(f)
        out[run_key(r)] = {k: e[k] for k in ("n", "acc", "acc_stderr", "acc_norm", "acc_norm_stderr")}
        print(f"{run_key(r)}: acc {e['acc']:.3f} acc_norm {e['acc_norm']:.3f}", file=sys.stderr)
    return out


def write_expected(d, n_greedy=2, new_tokens=16):
    """d/expected.json in the fixtures' format (reference/README.md), from
    egmla_ref in float64 on held-out text: log-probs of three continuation
    contexts, and greedy continuations whose every step has a top-1 minus
    top-2 logit gap above 1e-2 (so they hold in fp32). tests/e2e_twins.sh
    checks the engine against it without torch."""
    import torch
    from tokenizers import Tokenizer
    sys.path.insert(0, os.path.join(ROOT, "reference"))
    import egmla_ref as ref
    m = ref.load_model(d, torch.float64)
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    with open(TASK) as f:
        texts = [json.loads(line)["context"] for line in f][:40]
    score, greedy = [], []
    for t in texts[:3]:
        ids = [0] + tok.encode(t).ids
        lp = torch.log_softmax(m.forward(ids), -1)
        score.append({"tokens": ids, "logprobs": [lp[i - 1, ids[i]].item() for i in range(1, len(ids))]})
    for t in texts[3:]:
        ids = [0] + tok.encode(t).ids[:8]
        out = list(ids)
        for _ in range(new_tokens):
            top = m.forward(out)[-1].topk(2)
            if top.values[0] - top.values[1] <= 1e-2:
                break
            out.append(int(top.indices[0]))
        if len(out) == len(ids) + new_tokens:
            greedy.append({"prompt": ids, "max_new_tokens": new_tokens, "tokens": out[len(ids):]})
        if len(greedy) == n_greedy:
            break
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump({"score": score, "greedy": greedy}, f)
        f.write("\n")


def golden(runs, tol):
    bad = 0
    for r in runs:
        write_expected(os.path.join(ROOT, r["out"]))
        p = subprocess.run([sys.executable, os.path.join(ROOT, "reference", "check_engine.py"),
                            "--tol", str(tol), "--random", "4", os.path.join(ROOT, r["out"])],
                           capture_output=True, text=True)
        print(f"golden {r['out']}: {'ok' if p.returncode == 0 else 'FAILED'}", file=sys.stderr)
        if p.returncode != 0:
            print(p.stdout + p.stderr, file=sys.stderr)
            bad += 1
    return bad


def plot(runs):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colours = {"mha": "tab:gray", "mla": "tab:blue", "mla-small": "tab:orange", "egmla": "tab:green"}
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for r in runs:
        xs = [t / 1e6 for t, _ in r["val_curve"]]
        ys = [b for _, b in r["val_curve"]]
        main = r["seed"] == runs[0]["seed"]
        ax.plot(xs, ys, color=colours[r["twin"]], linestyle="-" if main else "--",
                label=f"{NAMES[r['twin']]}, KV {r['kv_elements_per_token']}/token, seed {r['seed']}")
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("validation bits per byte")
    ax.set_ylim(top=min(2.2, ax.get_ylim()[1]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Tiny twins on the KJV Bible: validation loss while training")
    fig.tight_layout()
    fig.savefig(PLOT)
    print(f"wrote {PLOT}", file=sys.stderr)


def table(runs, ev):
    """The markdown rows docs/PAPER.md carries: one per run, then the spread."""
    rows = ["| twin | seed | params | KV elements / token | val bits / byte | acc | acc_norm |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in runs:
        e = ev[run_key(r)]
        rows.append(f"| {NAMES[r['twin']]} | {r['seed']} | {r['params'] / 1e6:.2f} M | "
                    f"{r['kv_elements_per_token']} | {r['val_bits_per_byte']:.4f} | "
                    f"{e['acc']:.3f} ± {e['acc_stderr']:.3f} | "
                    f"{e['acc_norm']:.3f} ± {e['acc_norm_stderr']:.3f} |")
    by = {}
    for r in runs:
        by.setdefault(r["twin"], []).append(r)
    spread = [t for t, rs in by.items() if len(rs) > 1]
    if spread:
        rows += ["", "| twin | seeds | val bits / byte, mean ± half range | acc, mean |",
                 "| --- | ---: | ---: | ---: |"]
        for t in spread:
            b = [r["val_bits_per_byte"] for r in by[t]]
            a = [ev[run_key(r)]["acc"] for r in by[t]]
            rows.append(f"| {NAMES[t]} | {len(b)} | {sum(b) / len(b):.4f} ± "
                        f"{(max(b) - min(b)) / 2:.4f} | {sum(a) / len(a):.3f} |")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "bin", "egmla"))
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--check", action="store_true", help="also the golden check at 1e-4")
    args = ap.parse_args()
    with open(RESULTS) as f:
        runs = json.load(f)["runs"]
    if args.table_only:
        with open(EVAL) as f:
            ev = json.load(f)
    else:
        ev = evaluate(args.bin, runs)
        with open(EVAL, "w") as f:
            json.dump(ev, f, indent=2)
            f.write("\n")
        plot(runs)
        if args.check and golden([r for r in runs if r["out"].startswith("models/")], 1e-4):
            sys.exit(1)
    print("\n".join(table(runs, ev)))


if __name__ == "__main__":
    main()
