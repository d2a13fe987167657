"""lm-evaluation-harness backend for egmla.

Registers model type ``egmla``. Each batch of harness requests is written to
a JSONL file, run by ``egmla loglikelihood`` (or ``egmla generate``) and read
back; the engine applies lm-eval's token boundary and rolling windows itself
(docs/JOBS.md), so the numbers equal ``egmla eval`` on the same data.

Model args (``--model_args k=v,...``):
  model       model directory (default: the engine's embedded model)
  binary      the egmla binary (default: $EGMLA_BIN, else ``egmla`` on PATH)
  launcher    local | mpirun | srun (default local)
  ranks       MPI ranks for mpirun/srun: rank 0 coordinates, 1..N-1 are
              pipeline stages (default 2)
  max_length  tokens the model sees at most (default: its context)
  extra_args  more engine options, space separated (e.g. "--kv-budget 2GiB")
  launcher_args  options for mpirun/srun, space separated
"""
import json
import os
import shlex
import shutil
import subprocess
import tempfile

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

__all__ = ["EgmlaLM"]


def _args(req):
    return req.args if hasattr(req, "args") else req


@register_model("egmla")
class EgmlaLM(LM):
    def __init__(self, model=None, binary=None, launcher="local", ranks=2,
                 max_length=None, extra_args="", launcher_args="", **_ignored):
        # batch_size / device from the harness mean nothing here: the engine
        # batches continuously and runs on CPU.
        super().__init__()
        self.model_dir = model
        self.binary = binary or os.environ.get("EGMLA_BIN") or shutil.which("egmla") or "egmla"
        if launcher not in ("local", "mpirun", "srun"):
            raise ValueError("egmla: launcher must be local, mpirun or srun, not %r" % launcher)
        self.launcher = launcher
        self.ranks = int(ranks)
        self.max_length = int(max_length) if max_length else None
        self.extra_args = shlex.split(str(extra_args or ""))
        self.launcher_args = shlex.split(str(launcher_args or ""))

    # ---- running the engine ----

    def _command(self, sub, inp, out):
        cmd = [self.binary, sub, "--input", inp, "--out", out]
        if self.model_dir:
            cmd += ["--model", self.model_dir]
        if self.max_length and sub == "loglikelihood":
            cmd += ["--max-length", str(self.max_length)]
        cmd += self.extra_args
        if self.launcher == "mpirun":
            return ["mpirun", "-n", str(self.ranks)] + self.launcher_args + cmd
        if self.launcher == "srun":
            return ["srun", "-n", str(self.ranks)] + self.launcher_args + cmd
        return cmd

    def _run(self, sub, lines, extra=()):
        """Writes lines (dicts with "id" = their index) and returns one
        result dict per line, in order."""
        if not lines:
            return []
        with tempfile.TemporaryDirectory(prefix="egmla-lm-eval-") as d:
            inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
            with open(inp, "w", encoding="utf-8") as f:
                for line in lines:
                    f.write(json.dumps(line, ensure_ascii=False) + "\n")
            cmd = self._command(sub, inp, out) + list(extra)
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            # 3: some lines refused; their error records say why (below)
            if p.returncode not in (0, 3):
                raise RuntimeError("egmla: %s failed (exit %d):\n%s" % (" ".join(cmd), p.returncode, p.stderr))
            res = {}
            with open(out, encoding="utf-8") as f:
                for l in f:
                    o = json.loads(l)
                    res[o["id"]] = o
        got = []
        for i in range(len(lines)):
            o = res.get(i)
            if o is None or "error" in o:
                raise RuntimeError("egmla: request %d: %s" % (i, o["error"] if o else "no result"))
            got.append(o)
        return got

    # ---- the LM interface ----

    def loglikelihood(self, requests, disable_tqdm=False):
        lines = [{"id": i, "context": _args(r)[0], "continuation": _args(r)[1]}
                 for i, r in enumerate(requests)]
        out = [(o["logprob"] if o["logprob"] is not None else float("-inf"), bool(o["is_greedy"]))
               for o in self._run("loglikelihood", lines)]
        for r, o in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood", _args(r), o)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        lines = [{"id": i, "text": _args(r)[0]} for i, r in enumerate(requests)]
        out = [o["logprob"] if o["logprob"] is not None else float("-inf")
               for o in self._run("loglikelihood", lines)]
        for r, o in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood_rolling", _args(r), o)
        return out

    def generate_until(self, requests, disable_tqdm=False):
        """Greedy unless do_sample; cut at the first `until` string (the
        engine stops at the model's eos tokens by itself)."""
        lines, stops = [], []
        for i, r in enumerate(requests):
            ctx, kw = _args(r)[0], dict(_args(r)[1] or {})
            until = kw.get("until") or []
            if isinstance(until, str):
                until = [until]
            line = {"id": i, "prompt": ctx, "max_new_tokens": int(kw.get("max_gen_toks", 256))}
            if kw.get("do_sample"):
                line["temperature"] = float(kw.get("temperature", 1.0))
            else:
                line["temperature"] = 0.0
            lines.append(line)
            stops.append(until)
        texts = []
        for o, until in zip(self._run("generate", lines), stops):
            t = o.get("text", "")
            for s in until:
                if s:
                    t = t.split(s)[0]
            texts.append(t)
        for r, t in zip(requests, texts):
            self.cache_hook.add_partial("generate_until", _args(r), t)
        return texts
