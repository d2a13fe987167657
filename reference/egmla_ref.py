"""egmla_ref.py - the executable specification: MODEL.md in plain PyTorch.

The three architectures of the model contract (llama, deepseek_v2, egmla),
fp32 on the CPU by default, written to be read line by line against
MODEL.md. Keys and values are materialised for every position on purpose:
the C engine decodes MLA/EG-MLA in the absorbed form, and this file checks
it independently.

    m = load_model("tests/fixtures/models/egmla_ln")
    logits = m.forward([1, 5, 7])        # [T, V]

Anything the contract refuses (unknown model_type, rope_scaling, experts,
missing tensors, wrong shapes, other dtypes) raises RefError naming the
file, the key or tensor, what was expected and what was found.
"""
import json
import math
import os
import sys
from types import SimpleNamespace

import torch
from safetensors import safe_open

ARCHS = ("llama", "deepseek_v2", "egmla")
# The latent norms (q_a_layernorm, kv_a_layernorm) use this eps whatever
# rms_norm_eps says, as transformers' DeepseekV2 and DeepSeek's code do.
LATENT_EPS = 1e-6
DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


class RefError(ValueError):
    pass


def fail(where, msg):
    raise RefError(f"{where}: {msg}")


# ---------------------------------------------------------------- config

def _int(raw, key, where, default=None, minimum=1):
    v = raw.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        fail(where, f"key '{key}': expected an integer >= {minimum}, found {v!r}")
    return v


def _num(raw, key, where, default=None):
    v = raw.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        fail(where, f"key '{key}': expected a number > 0, found {v!r}")
    return float(v)


def _bool(raw, key, where, default):
    v = raw.get(key, default)
    if not isinstance(v, bool):
        fail(where, f"key '{key}': expected true or false, found {v!r}")
    return v


def parse_config(raw, where="config.json"):
    """config.json (a dict) -> namespace with the symbols of MODEL.md."""
    if not isinstance(raw, dict):
        fail(where, "expected a JSON object")
    mt = raw.get("model_type")
    if mt not in ARCHS:
        fail(where, f"key 'model_type': expected one of {', '.join(ARCHS)}, found {mt!r}")
    # Options the contract does not implement are refused, never ignored.
    # RoPE scaling: rope_scaling (transformers 4) or rope_parameters
    # (transformers 5) may be present, but only with the default type.
    for k in ("rope_scaling", "rope_parameters"):
        v = raw.get(k)
        if v is None:
            continue
        if not isinstance(v, dict):
            fail(where, f"key '{k}': expected null or an object, found {v!r}")
        for t in ("type", "rope_type"):
            if t in v and v[t] != "default":
                fail(where, f"key '{k}.{t}': RoPE scaling is not supported (expected \"default\"), "
                            f"found {v[t]!r}")
    experts = raw.get("n_routed_experts")
    if experts is not None and (isinstance(experts, bool) or not isinstance(experts, int) or experts > 0):
        fail(where, f"key 'n_routed_experts': experts are not supported (expected 0 or null), "
                    f"found {raw['n_routed_experts']!r}")
    if raw.get("hidden_act", "silu") != "silu":
        fail(where, f"key 'hidden_act': expected \"silu\", found {raw['hidden_act']!r}")
    for k in ("attention_bias", "mlp_bias"):
        if raw.get(k):
            fail(where, f"key '{k}': biases are not supported (expected false), found {raw[k]!r}")

    c = SimpleNamespace(model_type=mt)
    c.V = _int(raw, "vocab_size", where)
    c.D = _int(raw, "hidden_size", where)
    c.I = _int(raw, "intermediate_size", where)
    c.L = _int(raw, "num_hidden_layers", where)
    c.H = _int(raw, "num_attention_heads", where)
    c.eps = _num(raw, "rms_norm_eps", where)
    rp = raw.get("rope_parameters")
    if "rope_theta" not in raw and isinstance(rp, dict):
        c.theta = _num(rp, "rope_theta", where + " rope_parameters")
    else:
        c.theta = _num(raw, "rope_theta", where)
    c.tied = _bool(raw, "tie_word_embeddings", where, False)
    c.interleave = _bool(raw, "rope_interleave", where, mt != "llama")

    if mt == "llama":
        c.Hkv = _int(raw, "num_key_value_heads", where, c.H)
        if c.H % c.Hkv:
            fail(where, f"key 'num_key_value_heads': expected a divisor of {c.H}, found {c.Hkv}")
        if raw.get("head_dim") is None and c.D % c.H:
            fail(where, f"key 'head_dim': absent and hidden_size {c.D} is not a multiple of {c.H} heads")
        c.dh = _int(raw, "head_dim", where, c.D // c.H)
        if c.dh % 2:
            fail(where, f"key 'head_dim': expected an even number (RoPE pairs), found {c.dh}")
        return c

    c.rq = raw.get("q_lora_rank")
    if c.rq is not None:
        c.rq = _int(raw, "q_lora_rank", where)
    c.dc = _int(raw, "kv_lora_rank", where)
    c.dn = _int(raw, "qk_nope_head_dim", where)
    c.dr = _int(raw, "qk_rope_head_dim", where)
    c.dv = _int(raw, "v_head_dim", where)
    if c.dr % 2:
        fail(where, f"key 'qk_rope_head_dim': expected an even number (RoPE pairs), found {c.dr}")
    c.dz = c.dc                                     # width of z
    if mt == "egmla":
        if not raw.get("eg_embed_dim"):
            fail(where, "key 'eg_embed_dim': expected > 0 (without the gate this is plain MLA: "
                        f"use model_type deepseek_v2), found {raw.get('eg_embed_dim')!r}")
        c.de = _int(raw, "eg_embed_dim", where)
        c.du = _int(raw, "eg_latent_dim", where, c.dc)
        c.dz = c.du
        c.eg_norm = raw.get("eg_norm", "layernorm")
        if c.eg_norm not in ("layernorm", "rmsnorm"):
            fail(where, f"key 'eg_norm': expected \"layernorm\" or \"rmsnorm\", found {c.eg_norm!r}")
        c.eg_eps = _num(raw, "eg_norm_eps", where, 1e-5)
    return c


def expected_shapes(c, has_up=None):
    """Tensor name -> shape the config asks for. has_up[n]: layer n has eg_up_proj."""
    V, D, I, H = c.V, c.D, c.I, c.H
    s = {"model.embed_tokens.weight": [V, D], "model.norm.weight": [D]}
    if not c.tied:
        s["lm_head.weight"] = [V, D]
    for n in range(c.L):
        p = f"model.layers.{n}."
        s[p + "input_layernorm.weight"] = [D]
        s[p + "post_attention_layernorm.weight"] = [D]
        s[p + "mlp.gate_proj.weight"] = [I, D]
        s[p + "mlp.up_proj.weight"] = [I, D]
        s[p + "mlp.down_proj.weight"] = [D, I]
        a = p + "self_attn."
        if c.model_type == "llama":
            s[a + "q_proj.weight"] = [H * c.dh, D]
            s[a + "k_proj.weight"] = [c.Hkv * c.dh, D]
            s[a + "v_proj.weight"] = [c.Hkv * c.dh, D]
            s[a + "o_proj.weight"] = [D, H * c.dh]
            continue
        if c.rq is None:
            s[a + "q_proj.weight"] = [H * (c.dn + c.dr), D]
        else:
            s[a + "q_a_proj.weight"] = [c.rq, D]
            s[a + "q_a_layernorm.weight"] = [c.rq]
            s[a + "q_b_proj.weight"] = [H * (c.dn + c.dr), c.rq]
        s[a + "kv_a_proj_with_mqa.weight"] = [c.dc + c.dr, D]
        s[a + "kv_b_proj.weight"] = [H * (c.dn + c.dv), c.dz]
        s[a + "o_proj.weight"] = [D, H * c.dv]
        if c.model_type == "deepseek_v2":
            s[a + "kv_a_layernorm.weight"] = [c.dc]
        else:
            s[a + "eg_embed.weight"] = [V, c.de]
            s[a + "eg_gate_proj.weight"] = [c.du, c.de]
            if has_up is not None and has_up[n]:
                s[a + "eg_up_proj.weight"] = [c.du, c.dc]
            s[a + "eg_norm.weight"] = [c.du]
            if c.eg_norm == "layernorm":
                s[a + "eg_norm.bias"] = [c.du]
    return s


# ---------------------------------------------------------------- tensors

def read_tensors(d):
    """All tensors of a model directory, upcast to fp32: name -> (tensor, file)."""
    single = os.path.join(d, "model.safetensors")
    index = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(single):
        files = {single: None}
    elif os.path.exists(index):
        try:
            with open(index) as f:
                wm = json.load(f)
        except (OSError, ValueError) as ex:
            fail(index, f"cannot read a JSON index: {ex}")
        wm = wm.get("weight_map") if isinstance(wm, dict) else None
        if not isinstance(wm, dict) or not wm:
            fail(index, "key 'weight_map': expected an object tensor -> shard file")
        files = {}
        for name, shard in wm.items():
            if not isinstance(shard, str) or os.sep in shard or shard.startswith("."):
                fail(index, f"tensor {name}: expected a shard file name, found {shard!r}")
            files.setdefault(os.path.join(d, shard), []).append(name)
    else:
        fail(d, "expected model.safetensors or model.safetensors.index.json, found neither")

    out = {}
    for path, names in files.items():
        if not os.path.exists(path):
            fail(path, "shard named in model.safetensors.index.json is missing")
        try:
            with safe_open(path, framework="pt") as f:
                keys = set(f.keys())
                for name in (sorted(keys) if names is None else names):
                    if name not in keys:
                        fail(path, f"tensor {name}: listed in the index, not in the shard")
                    if name in out:
                        fail(path, f"tensor {name}: stored twice ({out[name][1]})")
                    t = f.get_tensor(name)
                    if t.dtype not in DTYPES:
                        fail(path, f"tensor {name}: dtype expected F32, BF16 or F16, found {t.dtype}")
                    out[name] = (t.float(), path)
        except RefError:
            raise
        except Exception as ex:          # the safetensors package's own checks
            fail(path, f"not a valid safetensors file: {ex}")
    return out


# ---------------------------------------------------------------- math

def linear(x, w):
    return x @ w.T                                   # W is [out, in]: y = W x


def rms_norm(x, w, eps):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = (x - mu).pow(2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def silu(x):
    return x * torch.sigmoid(x)


def rope(x, pos, theta, interleave):
    """x [..., T, d]: rotates pair i of position t by the angle t * theta^(-2i/d)."""
    d = x.shape[-1]
    inv_freq = theta ** (-2.0 * torch.arange(d // 2, dtype=torch.float64) / d)
    angle = pos.to(torch.float64)[:, None] * inv_freq[None, :]        # [T, d/2]
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    if interleave:                                   # pairs (2i, 2i+1)
        a, b = x[..., 0::2], x[..., 1::2]
    else:                                            # pairs (i, i + d/2)
        a, b = x[..., : d // 2], x[..., d // 2:]
    ra, rb = a * cos - b * sin, a * sin + b * cos
    if interleave:
        return torch.stack((ra, rb), dim=-1).flatten(-2)
    return torch.cat((ra, rb), dim=-1)


def causal_attend(scores, v):
    """scores [H, T, T], v [H, T, dv] -> [H, T, dv]; position i sees j <= i."""
    T = scores.shape[-1]
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    p = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    return p @ v


# ---------------------------------------------------------------- model

class Model:
    def __init__(self, c, w, dtype=torch.float32):
        self.c = c
        self.w = {k: v.to(dtype) for k, v in w.items()}
        self.dtype = dtype

    def W(self, n, name):
        return self.w[f"model.layers.{n}.{name}.weight"]

    # --- the pieces, shared with the absorbed decode in selfcheck.py

    def ffn(self, n, x):
        return linear(silu(linear(x, self.W(n, "mlp.gate_proj"))) * linear(x, self.W(n, "mlp.up_proj")),
                      self.W(n, "mlp.down_proj"))

    def query(self, n, x, pos):
        """MLA query: q_nope [H, T, dn], q_pe [H, T, dr] (RoPE applied)."""
        c, T = self.c, x.shape[0]
        if c.rq is None:
            q = linear(x, self.W(n, "self_attn.q_proj"))
        else:
            qa = rms_norm(linear(x, self.W(n, "self_attn.q_a_proj")), self.W(n, "self_attn.q_a_layernorm"), LATENT_EPS)
            q = linear(qa, self.W(n, "self_attn.q_b_proj"))
        q = q.view(T, c.H, c.dn + c.dr).transpose(0, 1)
        return q[..., : c.dn], rope(q[..., c.dn:], pos, c.theta, c.interleave)

    def kv_latent(self, n, x, pos):
        """MLA cache entries: c [T, d_c] and k_pe [T, dr] (RoPE applied)."""
        c = self.c
        kv_a = linear(x, self.W(n, "self_attn.kv_a_proj_with_mqa"))
        return kv_a[:, : c.dc], rope(kv_a[:, c.dc:], pos, c.theta, c.interleave)

    def z_of(self, n, lat, tokens):
        """z from cached latents lat [T, d_c] and their token ids [T]."""
        c, a = self.c, f"model.layers.{n}.self_attn."
        if c.model_type == "deepseek_v2":
            return rms_norm(lat, self.w[a + "kv_a_layernorm.weight"], LATENT_EPS)
        up = self.w.get(a + "eg_up_proj.weight")
        u = lat if up is None else linear(lat, up)                          # [T, d_u]
        g = linear(self.w[a + "eg_embed.weight"][tokens], self.w[a + "eg_gate_proj.weight"])
        if c.eg_norm == "layernorm":
            return layer_norm(u * g, self.w[a + "eg_norm.weight"], self.w[a + "eg_norm.bias"], c.eg_eps)
        return rms_norm(u * g, self.w[a + "eg_norm.weight"], c.eg_eps)

    # --- attention, materialised

    def attn_llama(self, n, x, pos):
        c, T = self.c, x.shape[0]
        q = linear(x, self.W(n, "self_attn.q_proj")).view(T, c.H, c.dh).transpose(0, 1)
        k = linear(x, self.W(n, "self_attn.k_proj")).view(T, c.Hkv, c.dh).transpose(0, 1)
        v = linear(x, self.W(n, "self_attn.v_proj")).view(T, c.Hkv, c.dh).transpose(0, 1)
        q, k = rope(q, pos, c.theta, c.interleave), rope(k, pos, c.theta, c.interleave)
        group = c.H // c.Hkv                     # query head i reads kv head i // group
        k, v = k.repeat_interleave(group, 0), v.repeat_interleave(group, 0)
        out = causal_attend(q @ k.transpose(1, 2) / math.sqrt(c.dh), v)     # [H, T, dh]
        return linear(out.transpose(0, 1).reshape(T, c.H * c.dh), self.W(n, "self_attn.o_proj"))

    def attn_mla(self, n, x, pos, tokens):
        c, T = self.c, x.shape[0]
        q_nope, q_pe = self.query(n, x, pos)
        lat, k_pe = self.kv_latent(n, x, pos)
        z = self.z_of(n, lat, tokens)
        kv = linear(z, self.W(n, "self_attn.kv_b_proj")).view(T, c.H, c.dn + c.dv).transpose(0, 1)
        k_nope, v = kv[..., : c.dn], kv[..., c.dn:]
        scores = (q_nope @ k_nope.transpose(1, 2) + q_pe @ k_pe.T) / math.sqrt(c.dn + c.dr)
        out = causal_attend(scores, v)                                      # [H, T, dv]
        return linear(out.transpose(0, 1).reshape(T, c.H * c.dv), self.W(n, "self_attn.o_proj"))

    def final(self, h):
        head = self.w["model.embed_tokens.weight" if self.c.tied else "lm_head.weight"]
        return linear(rms_norm(h, self.w["model.norm.weight"], self.c.eps), head)

    def check_tokens(self, tokens):
        if len(tokens) == 0:
            fail("forward", "expected at least one token")
        for t in tokens:
            if not 0 <= t < self.c.V:
                fail("forward", f"token id {t}: expected 0 <= id < {self.c.V}")
        return torch.tensor(tokens, dtype=torch.long)

    def forward(self, tokens):
        """tokens: list of ids -> logits [T, V] (next-token logits at every position)."""
        c = self.c
        tok = self.check_tokens(tokens)
        pos = torch.arange(len(tokens))
        h = self.w["model.embed_tokens.weight"][tok]
        for n in range(c.L):
            x = rms_norm(h, self.W(n, "input_layernorm"), c.eps)
            h = h + (self.attn_llama(n, x, pos) if c.model_type == "llama" else self.attn_mla(n, x, pos, tok))
            h = h + self.ffn(n, rms_norm(h, self.W(n, "post_attention_layernorm"), c.eps))
        return self.final(h)


def load_model(d, dtype=torch.float32):
    """Reads and validates a model directory (MODEL.md); dtype is the compute type."""
    cpath = os.path.join(d, "config.json")
    try:
        with open(cpath) as f:
            raw = json.load(f)
    except (OSError, ValueError) as ex:
        fail(cpath, f"cannot read a JSON config: {ex}")
    c = parse_config(raw, cpath)
    tensors = read_tensors(d)
    has_up = None
    if c.model_type == "egmla":
        has_up = []
        for n in range(c.L):
            name = f"model.layers.{n}.self_attn.eg_up_proj.weight"
            has_up.append(name in tensors)
            if not has_up[-1] and c.du != c.dc:
                fail(d, f"tensor {name}: missing; expected [{c.du}, {c.dc}] since "
                        f"eg_latent_dim {c.du} != kv_lora_rank {c.dc}")
    w = {}
    for name, shape in expected_shapes(c, has_up).items():
        if name not in tensors:
            fail(d, f"tensor {name}: missing; expected shape {shape}")
        t, path = tensors[name]
        if list(t.shape) != shape:
            fail(path, f"tensor {name}: expected shape {shape}, found {list(t.shape)}")
        w[name] = t
    return Model(c, w, dtype)


if __name__ == "__main__":
    # python3 reference/egmla_ref.py MODEL_DIR ID ID ...: log p of each next token
    if len(sys.argv) < 3:
        sys.exit("usage: egmla_ref.py MODEL_DIR TOKEN_ID...")
    m = load_model(sys.argv[1])
    toks = [int(a) for a in sys.argv[2:]]
    lp = torch.log_softmax(m.forward(toks), dim=-1)
    for i in range(1, len(toks)):
        print(f"{i}\t{toks[i]}\t{lp[i - 1, toks[i]].item():.6f}")
    print("argmax next:", int(lp[-1].argmax()))
