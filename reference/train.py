"""Train the tiny twins (MHA, MLA, EG-MLA) on the KJV Bible; write engine checkpoints.

    OMP_WAIT_POLICY=passive nice -n 19 /usr/bin/python3 reference/train.py --all
    ... reference/train.py --arch egmla --out models/egmla-tiny --steps 94 --seed 1

The twins differ only in attention (docs/TRAINING.md has the configs). The
module below mirrors MODEL.md (the model contract) tensor for tensor: its
state dict, with the tied lm_head dropped, *is* the checkpoint (it matches
reference/egmla_ref.py to 1e-6 on all three architectures). Each output directory gets
config.json, model.safetensors, tokenizer.json and train_log.json (the exact
step count, seed, losses and timing, so a --minutes run can be repeated with
--steps). --all also writes models/TRAINING_RESULTS.json.

Reproducible: one thread, seeded init, seeded batch order, deterministic
algorithms. Without --steps, --minutes M times 3 steps of each twin and turns
M into a step count (the smallest over the twins, so all see the same
tokens); those steps are thrown away and the model re-initialised, so the
result depends only on (arch, steps, seed, lr, batch), all recorded.
Matmuls run in bf16 under autocast (oneDNN, ~3x fp32 here); weights, norms,
softmax and loss stay fp32; validation and the checkpoint are fp32.
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

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
CONFIGS = {
    "llama": dict(model_type="llama", **COMMON, num_key_value_heads=4, head_dim=64,
                  rope_interleave=False),
    "deepseek_v2": dict(model_type="deepseek_v2", **COMMON, **MLA, kv_lora_rank=128),
    "egmla": dict(model_type="egmla", **COMMON, **MLA, kv_lora_rank=32,
                  eg_latent_dim=128, eg_embed_dim=64, eg_norm="layernorm", eg_norm_eps=1e-5),
}
OUTDIR = {"llama": "models/llama-tiny", "deepseek_v2": "models/mla-tiny",
          "egmla": "models/egmla-tiny"}


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
        x = x.float()                            # norms in fp32 even under autocast
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
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = LlamaAttention(c) if c["model_type"] == "llama" else MLAttention(c)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.mlp = MLP(c)

    def forward(self, h, ids, cos, sin):
        h = h + self.self_attn(self.input_layernorm(h), ids, cos, sin)
        return h + self.mlp(self.post_attention_layernorm(h))


class Body(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(Layer(c) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class CausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.cfg = c
        self.model = Body(c)
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


def make_model(arch, seed):
    torch.manual_seed(seed)
    return CausalLM(dict(CONFIGS[arch]))


def train_one(arch, steps, seed, train_ids, lr, batch=BATCH, log=print):
    model = make_model(arch, seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": other, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95), eps=1e-8)
    g = torch.Generator().manual_seed(seed + 1)    # batch order
    warmup = max(1, steps // 10)
    losses, times, t0 = [], [], time.time()
    for step in range(steps):
        starts = torch.randint(0, len(train_ids) - CTX - 1, (batch,), generator=g)
        x = torch.stack([train_ids[s:s + CTX] for s in starts])
        y = torch.stack([train_ids[s + 1:s + CTX + 1] for s in starts])
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        # bf16 matmuls (oneDNN, ~3x fp32 on this CPU), fp32 weights, norms,
        # softmax and loss; evaluation and the checkpoint are fp32.
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(round(loss.item(), 4))
        times.append(time.time() - t0 - sum(times))
        if step % 10 == 0 or step == steps - 1:
            log(f"{arch} step {step + 1}/{steps} loss {loss.item():.4f} "
                f"({time.time() - t0:.0f} s)")
    return model, losses, times


def measure_steps(arch, minutes, seed, train_ids, lr, batch):
    """Time 2 steps (after 1 warm-up) and turn minutes into a step count."""
    _, _, times = train_one(arch, 3, seed, train_ids, lr, batch, log=lambda s: None)
    per_step = sum(times[1:]) / 2
    return max(1, int(minutes * 60 / per_step)), round(per_step, 2)


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


def run(arch, out, steps, seed, lr, batch, tok, tok_path, train_ids, val_ids, val_bytes,
        per_step):
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model, losses, times = train_one(arch, steps, seed, train_ids, lr, batch,
                                    log=lambda s: print(s, flush=True))
    vl, vb, vn = evaluate(model, val_ids, val_bytes)
    dtype = save_checkpoint(model, out, tok_path)
    nparams = sum(p.numel() for p in model.parameters())
    prompt = tok.encode("And God said").ids
    samples = {"prompt": "And God said",
               "greedy": sample(model, tok, [0] + prompt, 100, 0.0, seed),
               "t0.8": sample(model, tok, [0] + prompt, 100, 0.8, seed)}
    res = {"arch": arch, "out": out, "seed": seed, "steps": steps, "lr": lr,
           "batch_tokens": batch * CTX, "ctx": CTX, "tokens_seen": steps * batch * CTX,
           "train_seconds": round(sum(times), 1), "seconds_per_step_measured": per_step,
           "params": nparams, "kv_elements_per_token": kv_per_token(model.cfg),
           "kv_elements_per_token_per_layer": kv_per_token(model.cfg) // model.cfg["num_hidden_layers"],
           "dtype": dtype,
           "checkpoint_bytes": os.path.getsize(os.path.join(out, "model.safetensors")),
           "final_train_loss": losses[-1],
           "val_tokens": vn, "val_bytes": val_bytes,
           "val_loss_per_token": round(vl, 4), "val_ppl_per_token": round(math.exp(vl), 3),
           "val_loss_per_byte": round(vb, 4), "val_ppl_per_byte": round(math.exp(vb), 4),
           "val_bits_per_byte": round(vb / math.log(2), 4),
           "samples": samples,
           "command": f"reference/train.py --arch {arch} --out {out} --steps {steps} "
                      f"--seed {seed} --lr {lr} --batch {batch}",
           "train_losses": losses}
    with open(os.path.join(out, "train_log.json"), "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")
    print(f"{arch}: val {vl:.4f} nats/token (ppl {math.exp(vl):.2f}), "
          f"{vb / math.log(2):.4f} bits/byte; {nparams} params; saved {out} ({dtype})", flush=True)
    return res


def main():
    ap = argparse.ArgumentParser(description="train the tiny twins (see docs/TRAINING.md)")
    ap.add_argument("--arch", choices=sorted(CONFIGS))
    ap.add_argument("--all", action="store_true", help="all three twins into models/")
    ap.add_argument("--out", help="output directory (default models/<arch>-tiny)")
    ap.add_argument("--steps", type=int, help="exact number of steps (reproducible)")
    ap.add_argument("--minutes", type=float, default=10.0,
                    help="without --steps: time budget per twin, measured")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch", type=int, default=BATCH, help=f"sequences of {CTX} tokens per step")
    args = ap.parse_args()
    if args.all == bool(args.arch):
        ap.error("give exactly one of --arch or --all")

    t0 = time.time()
    train_docs, val_docs = data.split()
    tok = train_tokenizer.train_tokenizer(train_docs)
    tok_path = os.path.join(ROOT, "models", "tokenizer.tmp.json")
    os.makedirs(os.path.dirname(tok_path), exist_ok=True)
    tok.save(tok_path)
    train_ids, val_ids = encode_docs(tok, train_docs), encode_docs(tok, val_docs)
    val_bytes = sum(len(d.encode()) for d in val_docs)
    print(f"train {len(train_ids)} tokens, val {len(val_ids)} tokens / {val_bytes} bytes",
          flush=True)

    archs = ["llama", "deepseek_v2", "egmla"] if args.all else [args.arch]
    measured = {}
    if args.steps is None:
        # Every twin gets the same number of steps (same tokens), so their
        # validation losses compare: the count the slowest one fits in M minutes.
        torch.set_num_threads(1)
        for arch in archs:
            measured[arch] = measure_steps(arch, args.minutes, args.seed, train_ids,
                                           args.lr, args.batch)
            print(f"{arch}: {measured[arch][1]:.2f} s/step -> {measured[arch][0]} steps "
                  f"in {args.minutes} min", flush=True)
        args.steps = min(n for n, _ in measured.values())
        print(f"training every twin for {args.steps} steps", flush=True)
    results = []
    for arch in archs:
        out = args.out if (args.out and not args.all) else os.path.join(ROOT, OUTDIR[arch])
        results.append(run(arch, out, args.steps, args.seed, args.lr, args.batch, tok,
                           tok_path, train_ids, val_ids, val_bytes,
                           measured.get(arch, (None, None))[1]))
    os.remove(tok_path)
    if args.all:
        summary = {"corpus": "Debian bible-kjv-text 4.38 (KJV Bible), read with `bible`",
                   "split": "chapter k (canonical order) is validation when k % 20 == 19",
                   "tokenizer": "byte-level BPE, 4096 tokens, trained on the training split",
                   "eval": "sliding window 256, stride 128, every validation token scored "
                           "once; per byte = total nats / UTF-8 bytes of the validation text",
                   "total_seconds": round(time.time() - t0, 1),
                   "steps": args.steps,
                   "command": f"reference/train.py --all --steps {args.steps} --seed {args.seed} "
                              f"--lr {args.lr} --batch {args.batch}",
                   "twins": {r["arch"]: {k: v for k, v in r.items() if k != "train_losses"}
                             for r in results}}
        path = os.path.join(ROOT, "models", "TRAINING_RESULTS.json")
        with open(path, "w") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
