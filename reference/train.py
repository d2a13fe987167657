"""Train the tiny twins (MHA, MLA, MLA-small, EG-MLA) on the KJV Bible.

    make twins              # venv + all four twins + second seeds + report
    build/venv-train/bin/python reference/train.py --all [--extra-seeds 2]
    build/venv-train/bin/python reference/train.py --twin egmla --out DIR --seed 1

The twins differ only in attention (docs/TRAINING.md has the configs). The
module below mirrors docs/MODEL.md tensor for tensor: its state dict, with
the tied lm_head dropped, *is* the checkpoint (it matches
reference/egmla_ref.py to 1e-6 on every architecture). Each output directory
gets config.json, model.safetensors, tokenizer.json and train_log.json (seed,
steps, losses, the validation curve, timing). --all also writes
models/TRAINING_RESULTS.json.

Reproducible: a fixed thread count (--threads, recorded), seeded init, seeded
batch order, deterministic algorithms, fp32 throughout (bf16 autocast
measured 10x *slower* than fp32 on a CPU without AVX512-BF16). Every
--save-every steps the whole training state (weights, optimiser, batch RNG,
losses, curve) goes to build/train/<twin>-seed<S>.pt; a killed run started
again with the same arguments resumes there and ends bit-identical to an
uninterrupted run (the arguments and thread count must match; checked).
"""
import argparse
import json
import math
import os
import sys
import time

from concurrent.futures import ProcessPoolExecutor
import multiprocessing as mp

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402
import train_tokenizer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CTX = 256              # training context
BATCH = 16             # sequences per step: 16 * 256 = 4096 tokens (see --batch)
MAX_BYTES = 25 * 1000 * 1000

COMMON = dict(vocab_size=4096, hidden_size=256, intermediate_size=688,
              num_hidden_layers=4, num_attention_heads=4, rms_norm_eps=1e-5,
              rope_theta=10000.0, max_position_embeddings=512,
              tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)
MLA = dict(q_lora_rank=None, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
           rope_interleave=True)
# The four twins. MLA-small has EG-MLA's latent (d_c 32): the same cache bytes
# per token, so it is the paper's equal-cache comparison.
CONFIGS = {
    "mha": dict(model_type="llama", **COMMON, num_key_value_heads=4, head_dim=64,
                rope_interleave=False),
    "mla": dict(model_type="deepseek_v2", **COMMON, **MLA, kv_lora_rank=128),
    "mla-small": dict(model_type="deepseek_v2", **COMMON, **MLA, kv_lora_rank=32),
    "egmla": dict(model_type="egmla", **COMMON, **MLA, kv_lora_rank=32,
                  eg_latent_dim=128, eg_embed_dim=64, eg_norm="layernorm", eg_norm_eps=1e-5),
}
OUTDIR = {"mha": "models/llama-tiny", "mla": "models/mla-tiny",
          "mla-small": "models/mla-small-tiny", "egmla": "models/egmla-tiny"}
ORDER = ["egmla", "mla-small", "mla", "mha"]     # --all trains in this order
SMALL_CACHE = ["egmla", "mla-small"]             # --extra-seeds retrains these
TOKENS = 6_000_000                               # default budget per twin
# About 1M training tokens, so the budget is 6 epochs: at 4 epochs without
# dropout the train loss was 0.4 nats/token under the validation loss.
DROPOUT = 0.1


def kv_per_token(cfg):
    """KV-cache elements per token, all layers (MODEL.md)."""
    L = cfg["num_hidden_layers"]
    if cfg["model_type"] == "llama":
        return 2 * cfg["num_key_value_heads"] * cfg["head_dim"] * L
    return (cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"]) * L


# ---------------------------------------------------------------------------
# The model (MODEL.md, written for training: whole sequences, no cache)

class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(d, T, theta):
    inv_freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)   # [d/2]
    ang = torch.arange(T, dtype=torch.float32)[:, None] * inv_freq[None]    # [T, d/2]
    return ang.cos(), ang.sin()


def rope(x, cos, sin, interleave):
    """Rotate the last dim of x [..., T, d]: pairs (2i, 2i+1) or (i, i + d/2)."""
    if interleave:
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack((a * cos - b * sin, a * sin + b * cos), -1).flatten(-2)
    a, b = x.chunk(2, -1)
    return torch.cat((a * cos - b * sin, a * sin + b * cos), -1)


def causal_attention(q, k, v, scale):
    """q, k [B, H, T, dk], v [B, H, T, dv] -> [B, T, H*dv]."""
    T = q.shape[2]
    s = (q @ k.transpose(-1, -2)).float() * scale    # softmax in fp32
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    p = s.masked_fill(mask, float("-inf")).softmax(-1)
    o = p.to(v.dtype) @ v
    return o.transpose(1, 2).flatten(2)


class LlamaAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        D, self.H, self.Hkv, self.dh = (c["hidden_size"], c["num_attention_heads"],
                                        c["num_key_value_heads"], c["head_dim"])
        self.q_proj = nn.Linear(D, self.H * self.dh, bias=False)
        self.k_proj = nn.Linear(D, self.Hkv * self.dh, bias=False)
        self.v_proj = nn.Linear(D, self.Hkv * self.dh, bias=False)
        self.o_proj = nn.Linear(self.H * self.dh, D, bias=False)
        self.interleave = c["rope_interleave"]

    def forward(self, x, ids, cos, sin):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.H, self.dh).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.Hkv, self.dh).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.Hkv, self.dh).transpose(1, 2)
        q, k = rope(q, cos, sin, self.interleave), rope(k, cos, sin, self.interleave)
        rep = self.H // self.Hkv                     # GQA: each kv head serves rep q heads
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        return self.o_proj(causal_attention(q, k, v, self.dh ** -0.5))


class MLAttention(nn.Module):
    """deepseek_v2 MLA, and EG-MLA when c["model_type"] == "egmla"."""

    def __init__(self, c):
        super().__init__()
        D, self.H = c["hidden_size"], c["num_attention_heads"]
        self.dn, self.dr, self.dv = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
        self.dc = c["kv_lora_rank"]
        self.eg = c["model_type"] == "egmla"
        self.q_proj = nn.Linear(D, self.H * (self.dn + self.dr), bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(D, self.dc + self.dr, bias=False)
        if self.eg:
            du, de = c.get("eg_latent_dim") or self.dc, c["eg_embed_dim"]
            if du != self.dc:
                self.eg_up_proj = nn.Linear(self.dc, du, bias=False)
            self.eg_embed = nn.Embedding(c["vocab_size"], de)
            self.eg_gate_proj = nn.Linear(de, du, bias=False)
            self.eg_norm = nn.LayerNorm(du, eps=c["eg_norm_eps"])
        else:
            du = self.dc
            self.kv_a_layernorm = RMSNorm(self.dc, 1e-6)  # latent norm: fixed eps (docs/MODEL.md)
        self.kv_b_proj = nn.Linear(du, self.H * (self.dn + self.dv), bias=False)
        self.o_proj = nn.Linear(self.H * self.dv, D, bias=False)
        self.interleave = c["rope_interleave"]

    def forward(self, x, ids, cos, sin):
        B, T, _ = x.shape
        H, dn, dr, dv = self.H, self.dn, self.dr, self.dv
        q = self.q_proj(x).view(B, T, H, dn + dr).transpose(1, 2)
        q_nope, q_pe = q.split((dn, dr), -1)
        q_pe = rope(q_pe, cos, sin, self.interleave)
        c, k_pe = self.kv_a_proj_with_mqa(x).split((self.dc, dr), -1)
        k_pe = rope(k_pe[:, None], cos, sin, self.interleave)          # [B, 1, T, dr], shared
        if self.eg:
            u = self.eg_up_proj(c) if hasattr(self, "eg_up_proj") else c
            g = self.eg_gate_proj(self.eg_embed(ids))                  # gate from token id
            n = self.eg_norm
            z = F.layer_norm((u * g).float(), n.normalized_shape, n.weight, n.bias, n.eps)
        else:
            z = self.kv_a_layernorm(c)
        kv = self.kv_b_proj(z).view(B, T, H, dn + dv).transpose(1, 2)
        k_nope, v = kv.split((dn, dv), -1)
        qf = torch.cat((q_nope, q_pe), -1)
        kf = torch.cat((k_nope, k_pe.expand(B, H, T, dr)), -1)
        return self.o_proj(causal_attention(qf, kf, v, (dn + dr) ** -0.5))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        D, I = c["hidden_size"], c["intermediate_size"]
        self.gate_proj = nn.Linear(D, I, bias=False)
        self.up_proj = nn.Linear(D, I, bias=False)
        self.down_proj = nn.Linear(I, D, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c, dropout=0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)      # training only; eval() turns it off
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = LlamaAttention(c) if c["model_type"] == "llama" else MLAttention(c)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.mlp = MLP(c)

    def forward(self, h, ids, cos, sin):
        h = h + self.drop(self.self_attn(self.input_layernorm(h), ids, cos, sin))
        return h + self.drop(self.mlp(self.post_attention_layernorm(h)))


class Body(nn.Module):
    def __init__(self, c, dropout=0.0):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(Layer(c, dropout) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class CausalLM(nn.Module):
    def __init__(self, c, dropout=0.0):
        super().__init__()
        self.cfg = c
        self.model = Body(c, dropout)
        rd = c["qk_rope_head_dim"] if "qk_rope_head_dim" in c else c["head_dim"]
        cos, sin = rope_tables(rd, c["max_position_embeddings"], c["rope_theta"])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.init_weights()

    def init_weights(self):
        # GPT-2 style: N(0, 0.02), residual outputs scaled down by sqrt(2L).
        L = self.cfg["num_hidden_layers"]
        for name, p in self.named_parameters():
            if name.endswith("norm.bias"):
                nn.init.zeros_(p)
            elif "norm" in name:
                nn.init.ones_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * L))
            elif "eg_embed" in name:
                # gate table around 1 would make u*g ~ u; N(0,1) rows with a small
                # gate projection give a gate of order 1 from the start.
                nn.init.normal_(p, 0.0, 1.0)
            else:
                nn.init.normal_(p, 0.0, 0.02)
        for layer in self.model.layers:
            a = layer.self_attn
            if hasattr(a, "eg_gate_proj"):
                nn.init.normal_(a.eg_gate_proj.weight, 0.0, a.eg_gate_proj.in_features ** -0.5)

    def forward(self, ids):
        T = ids.shape[1]
        cos, sin = self.cos[:T], self.sin[:T]
        h = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            h = layer(h, ids, cos, sin)
        return self.model.norm(h) @ self.model.embed_tokens.weight.t()   # tied lm_head

    def checkpoint_tensors(self):
        return {k: v.detach().contiguous() for k, v in self.state_dict().items()}


# ---------------------------------------------------------------------------
# Data, evaluation, sampling

def encode_docs(tok, docs):
    """Token stream: <|endoftext|> before every document (chapter)."""
    ids = []
    for e in tok.encode_batch(docs):
        ids.append(0)
        ids.extend(e.ids)
    return torch.tensor(ids, dtype=torch.long)


@torch.no_grad()
def evaluate(model, val_ids, val_bytes, ctx=CTX, stride=CTX // 2):
    """Sliding-window NLL over the whole validation stream, each token scored
    once with at least ctx - stride tokens of context (except at the start).
    Returns nats/token and nats/byte (total nats / UTF-8 bytes of the text)."""
    model.eval()
    N = len(val_ids)
    nll, count, prev_end = 0.0, 0, 0
    for start in range(0, N - 1, stride):
        end = min(start + ctx, N - 1)
        x = val_ids[start:end][None]
        y = val_ids[start + 1:end + 1]
        logp = model(x)[0].log_softmax(-1)
        first = prev_end - start                     # skip targets already scored
        tok_nll = -logp[first:].gather(1, y[first:, None]).squeeze(1)
        nll += tok_nll.double().sum().item()
        count += len(tok_nll)
        prev_end = end
        if end == N - 1:
            break
    model.train()
    assert count == N - 1
    return nll / count, nll / val_bytes, count


@torch.no_grad()
def sample(model, tok, prompt_ids, n, temperature, seed):
    g = torch.Generator().manual_seed(seed)
    ids = list(prompt_ids)
    model.eval()
    for _ in range(n):
        logits = model(torch.tensor([ids[-CTX:]]))[0, -1]
        if temperature == 0:
            nxt = int(logits.argmax())
        else:
            nxt = int(torch.multinomial((logits / temperature).softmax(-1), 1, generator=g))
        ids.append(nxt)
    model.train()
    return tok.decode(ids[len(prompt_ids):], skip_special_tokens=False)


# ---------------------------------------------------------------------------
# Training

def lr_at(step, steps, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))   # cosine to 10 %


def make_model(twin, seed, dropout=0.0):
    torch.manual_seed(seed)        # initialisation, then the dropout masks
    return CausalLM(dict(CONFIGS[twin]), dropout)


@torch.no_grad()
def quick_val(model, val_ids, val_bytes):
    """Validation nats/byte over non-overlapping 256-token windows: the curve's
    cheap point (about 4x cheaper than evaluate(); slightly higher, as the
    first tokens of each window have little context)."""
    model.eval()
    n = (len(val_ids) - 1) // CTX
    x = val_ids[:n * CTX].view(n, CTX)
    y = val_ids[1:n * CTX + 1].view(n, CTX)
    nll = 0.0
    for i in range(0, n, 16):
        lg = model(x[i:i + 16])
        nll += F.cross_entropy(lg.flatten(0, 1), y[i:i + 16].flatten(), reduction="sum").item()
    model.train()
    covered = val_bytes * (n * CTX) / (len(val_ids) - 1)   # bytes of the scored tokens, prorated
    return nll / covered


class Trainer:
    """One twin's run: model, optimiser, batch RNG and logs, all in one state
    that save()/load() round-trip exactly."""

    def __init__(self, twin, steps, seed, lr, batch, threads, dropout):
        self.key = dict(twin=twin, steps=steps, seed=seed, lr=lr, batch=batch, threads=threads,
                        dropout=dropout)
        self.model = make_model(twin, seed, dropout)
        p = self.model.named_parameters
        self.opt = torch.optim.AdamW([{"params": [t for n, t in p() if t.dim() >= 2], "weight_decay": 0.1},
                                      {"params": [t for n, t in p() if t.dim() < 2], "weight_decay": 0.0}],
                                     lr=lr, betas=(0.9, 0.95), eps=1e-8)
        self.gen = torch.Generator().manual_seed(seed + 1)    # batch order
        self.step, self.losses, self.curve, self.seconds = 0, [], [], 0.0

    def save(self, path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save({"key": self.key, "model": self.model.state_dict(), "opt": self.opt.state_dict(),
                    "gen": self.gen.get_state(), "rng": torch.get_rng_state(), "step": self.step, "losses": self.losses,
                    "curve": self.curve, "seconds": self.seconds}, path + ".tmp")
        os.replace(path + ".tmp", path)                      # never a half-written state

    def load(self, path):
        st = torch.load(path)
        if st["key"] != self.key:
            sys.exit(f"train.py: {path} is a run with {st['key']}, not {self.key}; "
                     f"delete it or pass the same arguments")
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["opt"])
        self.gen.set_state(st["gen"])
        torch.set_rng_state(st["rng"])                       # dropout masks go on as they were
        self.step, self.losses, self.curve = st["step"], st["losses"], st["curve"]
        self.seconds = st["seconds"]

    def train(self, train_ids, val_ids, val_bytes, eval_every, save_every, state, log):
        steps, lr, batch = self.key["steps"], self.key["lr"], self.key["batch"]
        warmup = max(1, steps // 10)
        while self.step < steps:
            t0 = time.time()
            starts = torch.randint(0, len(train_ids) - CTX - 1, (batch,), generator=self.gen)
            x = torch.stack([train_ids[s:s + CTX] for s in starts])
            y = torch.stack([train_ids[s + 1:s + CTX + 1] for s in starts])
            for group in self.opt.param_groups:
                group["lr"] = lr_at(self.step, steps, lr, warmup)
            loss = F.cross_entropy(self.model(x).flatten(0, 1), y.flatten())
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            self.step += 1
            self.losses.append(round(loss.item(), 4))
            self.seconds += time.time() - t0
            if self.step % eval_every == 0 or self.step == steps:
                vb = quick_val(self.model, val_ids, val_bytes)
                self.curve.append([self.step * batch * CTX, round(vb / math.log(2), 4)])
                log(f"{self.key['twin']} s{self.key['seed']} step {self.step}/{steps} "
                    f"loss {loss.item():.4f} val {self.curve[-1][1]:.4f} bits/byte "
                    f"({self.seconds:.0f} s, {self.step * batch * CTX / self.seconds:.0f} tok/s)")
            if state and (self.step % save_every == 0 or self.step == steps):
                self.save(state)


def save_checkpoint(model, out, tok_path):
    os.makedirs(out, exist_ok=True)
    tensors = model.checkpoint_tensors()
    nbytes = sum(t.numel() * 4 for t in tensors.values())
    dtype = "F32"
    if nbytes > MAX_BYTES:                      # too big for the repo: store bf16
        tensors = {k: v.to(torch.bfloat16) for k, v in tensors.items()}
        dtype = "BF16"
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    os.chmod(os.path.join(out, "model.safetensors"), 0o644)   # save_file makes it 0600
    cfg = {k: v for k, v in model.cfg.items() if v is not None or k == "q_lora_rank"}
    cfg["torch_dtype"] = "float32" if dtype == "F32" else "bfloat16"
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    if os.path.abspath(tok_path) != os.path.abspath(os.path.join(out, "tokenizer.json")):
        with open(tok_path, "rb") as src, open(os.path.join(out, "tokenizer.json"), "wb") as dst:
            dst.write(src.read())
    return dtype


def run(twin, out, args, tok, tok_path, train_ids, val_ids, val_bytes):
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    tr = Trainer(twin, args.steps, args.seed, args.lr, args.batch, args.threads, args.dropout)
    state = os.path.join(ROOT, "build", "train", f"{twin}-seed{args.seed}.pt")
    if os.path.exists(state) and not args.fresh:
        tr.load(state)
        print(f"{twin} s{args.seed}: resuming at step {tr.step} from {state}", flush=True)
    tr.train(train_ids, val_ids, val_bytes, args.eval_every, args.save_every, state,
             log=lambda s: print(s, flush=True))
    model = tr.model
    vl, vb, vn = evaluate(model, val_ids, val_bytes)
    dtype = save_checkpoint(model, out, tok_path)
    nparams = sum(p.numel() for p in model.parameters())
    prompt = tok.encode("And God said").ids
    samples = {"prompt": "And God said",
               "greedy": sample(model, tok, [0] + prompt, 100, 0.0, args.seed),
               "t0.8": sample(model, tok, [0] + prompt, 100, 0.8, args.seed)}
    ntok = args.steps * args.batch * CTX
    res = {"twin": twin, "model_type": model.cfg["model_type"], "out": os.path.relpath(out, ROOT),
           "seed": args.seed, "steps": args.steps, "lr": args.lr, "threads": args.threads,
           "dropout": args.dropout,
           "batch_tokens": args.batch * CTX, "ctx": CTX, "tokens_seen": ntok,
           "epochs": round(ntok / len(train_ids), 2),
           "train_seconds": round(tr.seconds, 1), "tokens_per_second": round(ntok / tr.seconds),
           "torch": torch.__version__,
           "params": nparams, "kv_elements_per_token": kv_per_token(model.cfg),
           "kv_elements_per_token_per_layer": kv_per_token(model.cfg) // model.cfg["num_hidden_layers"],
           "dtype": dtype,
           "checkpoint_bytes": os.path.getsize(os.path.join(out, "model.safetensors")),
           "final_train_loss": tr.losses[-1],
           "val_tokens": vn, "val_bytes": val_bytes,
           "val_loss_per_token": round(vl, 4), "val_ppl_per_token": round(math.exp(vl), 3),
           "val_loss_per_byte": round(vb, 4), "val_ppl_per_byte": round(math.exp(vb), 4),
           "val_bits_per_byte": round(vb / math.log(2), 4),
           "val_curve": tr.curve,
           "samples": samples,
           "command": f"reference/train.py --twin {twin} --out {os.path.relpath(out, ROOT)} "
                      f"--steps {args.steps} --seed {args.seed} --lr {args.lr} "
                      f"--batch {args.batch} --threads {args.threads} --dropout {args.dropout}",
           "train_losses": tr.losses}
    with open(os.path.join(out, "train_log.json"), "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")
    print(f"{twin} s{args.seed}: val {vl:.4f} nats/token (ppl {math.exp(vl):.2f}), "
          f"{vb / math.log(2):.4f} bits/byte; {nparams} params; saved {out} ({dtype})", flush=True)
    return res


def run_job(twin, out, seed, args, tok_path, train_ids, val_ids, val_bytes):
    """One run in a worker process of --all (the tokenizer comes back from its file)."""
    a = argparse.Namespace(**vars(args))
    a.seed = seed
    tok = Tokenizer.from_file(tok_path)
    return run(twin, out, a, tok, tok_path, train_ids, val_ids, val_bytes)


def main():
    ap = argparse.ArgumentParser(description="train the tiny twins (see docs/TRAINING.md)")
    ap.add_argument("--twin", choices=sorted(CONFIGS))
    ap.add_argument("--all", action="store_true", help="all four twins into models/")
    ap.add_argument("--extra-seeds", default="",
                    help="with --all: comma-separated seeds to train MLA-small and EG-MLA again "
                         "(into build/twins/seed<S>/), for the spread")
    ap.add_argument("--out", help="output directory (with --twin)")
    ap.add_argument("--tokens", type=int, default=TOKENS, help="training tokens per twin")
    ap.add_argument("--steps", type=int, help="exact steps (overrides --tokens)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch", type=int, default=BATCH, help=f"sequences of {CTX} tokens per step")
    ap.add_argument("--dropout", type=float, default=DROPOUT,
                    help="residual dropout while training (0 turns it off)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (results depend on it)")
    ap.add_argument("--jobs", type=int, default=2, help="with --all: runs at once")
    ap.add_argument("--eval-every", type=int, default=61, help="steps between validation points")
    ap.add_argument("--save-every", type=int, default=50, help="steps between state saves")
    ap.add_argument("--fresh", action="store_true", help="ignore a saved state, start over")
    args = ap.parse_args()
    if args.all == bool(args.twin):
        ap.error("give exactly one of --twin or --all")
    if args.twin and not args.out:
        ap.error("--twin needs --out")
    if args.steps is None:
        args.steps = -(-args.tokens // (args.batch * CTX))

    t0 = time.time()
    train_docs, val_docs = data.split()
    tok = train_tokenizer.train_tokenizer(train_docs)
    os.makedirs(os.path.join(ROOT, "build"), exist_ok=True)
    tok_path = os.path.join(ROOT, "build", "tokenizer.tmp.json")
    tok.save(tok_path)
    train_ids, val_ids = encode_docs(tok, train_docs), encode_docs(tok, val_docs)
    val_bytes = sum(len(d.encode()) for d in val_docs)
    print(f"train {len(train_ids)} tokens, val {len(val_ids)} tokens / {val_bytes} bytes; "
          f"{args.steps} steps of {args.batch * CTX} tokens", flush=True)

    if not args.all:
        run(args.twin, args.out, args, tok, tok_path, train_ids, val_ids, val_bytes)
        return
    todo = [(t, os.path.join(ROOT, OUTDIR[t]), args.seed) for t in ORDER]
    for s in [int(x) for x in args.extra_seeds.split(",") if x]:
        todo += [(t, os.path.join(ROOT, "build", "twins", f"seed{s}", os.path.basename(OUTDIR[t])), s)
                 for t in SMALL_CACHE]
    # --jobs runs take turns in that many processes (each with --threads):
    # on 2 cores two 1-thread runs beat one 2-thread run, and keep their
    # speed when other work shares the machine (no thread waits for another).
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futs = [pool.submit(run_job, t, out, s, args, tok_path, train_ids, val_ids, val_bytes)
                for t, out, s in todo]
        results = [f.result() for f in futs]
    summary = {"corpus": "Debian bible-kjv-text 4.38 (KJV Bible), read with `bible`",
               "split": "chapter k (canonical order) is validation when k % 20 == 19",
               "tokenizer": "byte-level BPE, 4096 tokens, trained on the training split",
               "eval": "sliding window 256, stride 128, every validation token scored "
                       "once; per byte = total nats / UTF-8 bytes of the validation text",
               "curve": "val_curve: [tokens seen, bits/byte over non-overlapping 256-token windows]",
               "total_seconds": round(time.time() - t0, 1),
               "steps": args.steps,
               "command": f"reference/train.py --all --extra-seeds '{args.extra_seeds}' "
                          f"--steps {args.steps} --seed {args.seed} --lr {args.lr} "
                          f"--batch {args.batch} --threads {args.threads} --dropout {args.dropout} "
                          f"--jobs {args.jobs}",
               "runs": [{k: v for k, v in r.items() if k != "train_losses"} for r in results]}
    path = os.path.join(ROOT, "models", "TRAINING_RESULTS.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    os.remove(tok_path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
