"""selfcheck.py - checks that the reference, the writer and the fixtures agree.

    /usr/bin/python3 reference/selfcheck.py

- checkpoint.py's files read back bit-exactly with the safetensors package;
- the absorbed MLA/EG-MLA decode of NOTES.md (one token at a time from a
  cache of latents, k_pe and token ids, kv_b_proj absorbed into the query
  and the output) equals egmla_ref's materialised forward, so the spec is
  consistent with itself;
- fp32 reproduces the committed float64 expected.json closely;
- the loader refuses what MODEL.md says it must refuse.
"""
import copy
import json
import math
import os
import shutil
import sys
import tempfile

import torch
from safetensors import safe_open
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import egmla_ref as ref  # noqa: E402
from checkpoint import TORCH_DTYPE, write_model, write_safetensors  # noqa: E402

FIX = os.path.normpath(os.path.join(HERE, "..", "tests", "fixtures", "models"))


def decode_absorbed(m, tokens):
    """Logits [T, V] by decoding one token at a time, MLA cache, absorbed kv_b_proj."""
    c = m.c
    cache = [{"lat": [], "k_pe": []} for _ in range(c.L)]
    ids, rows = [], []
    for t, tok in enumerate(tokens):
        ids.append(tok)
        pos = torch.tensor([t])
        h = m.w["model.embed_tokens.weight"][tok][None]                       # [1, D]
        for n in range(c.L):
            x = ref.rms_norm(h, m.W(n, "input_layernorm"), c.eps)
            q_nope, q_pe = m.query(n, x, pos)                                 # [H,1,dn] [H,1,dr]
            lat, k_pe = m.kv_latent(n, x, pos)
            cache[n]["lat"].append(lat[0])
            cache[n]["k_pe"].append(k_pe[0])
            LAT, KPE = torch.stack(cache[n]["lat"]), torch.stack(cache[n]["k_pe"])   # [t+1, .]
            Z = m.z_of(n, LAT, torch.tensor(ids))        # rebuilt for every cached position
            Wkvb = m.W(n, "self_attn.kv_b_proj").view(c.H, c.dn + c.dv, c.dz)
            W_UK, W_UV = Wkvb[:, : c.dn], Wkvb[:, c.dn:]                      # [H,dn,dz] [H,dv,dz]
            q_lat = torch.einsum("hd,hdz->hz", q_nope[:, 0], W_UK)            # W_UK^T q_nope
            scores = (q_lat @ Z.T + q_pe[:, 0] @ KPE.T) / math.sqrt(c.dn + c.dr)   # [H, t+1]
            o_lat = torch.softmax(scores, dim=-1) @ Z                         # [H, dz]
            o = torch.einsum("hvz,hz->hv", W_UV, o_lat).reshape(1, c.H * c.dv)
            h = h + ref.linear(o, m.W(n, "self_attn.o_proj"))
            h = h + m.ffn(n, ref.rms_norm(h, m.W(n, "post_attention_layernorm"), c.eps))
        rows.append(m.final(h))
    return torch.cat(rows)


def check_writer(tmp):
    gen = torch.Generator().manual_seed(7)
    ts = {"a": torch.randn(3, 5, generator=gen), "b.weight": torch.randn(7, generator=gen) * 100,
          "c": torch.randn(2, 3, 4, generator=gen), "tiny": torch.tensor([1e-30, -0.0, 65504.0])}
    for dt, tdt in TORCH_DTYPE.items():
        p = os.path.join(tmp, f"x_{dt}.safetensors")
        write_safetensors(p, ts, dt, {"format": "pt"})
        with open(p, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
        assert (8 + n) % 8 == 0, "data section not 8-aligned"
        back = load_file(p)
        assert list(back) == list(ts) or set(back) == set(ts)
        for k, v in ts.items():
            assert back[k].dtype == tdt and torch.equal(back[k], v.to(tdt)), (dt, k)
    d = os.path.join(tmp, "sharded")
    write_model(d, {"model_type": "x"}, ts, "BF16", shards=3)
    idx = json.load(open(os.path.join(d, "model.safetensors.index.json")))
    assert sorted(set(idx["weight_map"].values())) == [f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)]
    for name, shard in idx["weight_map"].items():
        with safe_open(os.path.join(d, shard), framework="pt") as f:
            assert torch.equal(f.get_tensor(name), ts[name].to(torch.bfloat16))
    print("writer: safetensors package reads F32/BF16/F16 and shards bit-exactly")


def check_rope():
    # interleaved and half rotations are the same map up to a permutation of lanes
    gen = torch.Generator().manual_seed(3)
    x, pos, d = torch.randn(5, 8, generator=gen, dtype=torch.float64), torch.arange(5), 8
    perm = torch.tensor([0, 2, 4, 6, 1, 3, 5, 7])           # interleaved -> halves
    a = ref.rope(x, pos, 500.0, True)
    b = ref.rope(x[:, perm], pos, 500.0, False)
    assert torch.allclose(a[:, perm], b, atol=1e-12)
    assert torch.allclose(ref.rope(x, torch.zeros(5, dtype=torch.long), 500.0, True), x)
    print("rope: interleaved == permuted half rotation; position 0 is the identity")


def check_fixture(name):
    d = os.path.join(FIX, name)
    m64 = ref.load_model(d, torch.float64)
    m32 = ref.load_model(d, torch.float32)
    exp = json.load(open(os.path.join(d, "expected.json")))
    toks = exp["score"][1]["tokens"]
    full = m64.forward(toks)
    msg = f"{name:16s}"
    if m64.c.model_type != "llama":
        err64 = (decode_absorbed(m64, toks) - full).abs().max().item()
        err32 = (decode_absorbed(m32, toks) - m32.forward(toks)).abs().max().item()
        err32 /= full.abs().max().item()                 # fp32: relative to the largest logit
        assert err64 < 1e-9 and err32 < 1e-5, (name, err64, err32)
        msg += f" absorbed==materialised (f64 {err64:.1e}, f32 rel {err32:.1e})"
    # fp32 against the committed float64 golden values
    lg = torch.tensor(exp["logits"]["values"], dtype=torch.float64)
    e_logits = (m32.forward(exp["logits"]["tokens"]).double() - lg).abs().max().item()
    e_lp = max(abs(a - b) for s in exp["score"]
               for a, b in zip(torch.log_softmax(m32.forward(s["tokens"]).double(), -1)
                               .gather(1, torch.tensor(s["tokens"][1:])[:, None])[:, 0].tolist(),
                               s["logprobs"]))
    assert e_logits < 1e-4 and e_lp < 1e-4, (name, e_logits, e_lp)
    for g in exp["greedy"]:
        t = g["prompt"] + g["tokens"]
        am = m32.forward(t).argmax(-1)[len(g["prompt"]) - 1:-1].tolist()
        assert am == g["tokens"], name
    print(f"{msg}; fp32 vs golden: logits {e_logits:.1e}, logprobs {e_lp:.1e}, greedy equal")


def expect_refusal(d, what, needle):
    try:
        ref.load_model(d)
    except ref.RefError as ex:
        assert needle in str(ex), (what, str(ex))
        return
    raise AssertionError(f"{what}: not refused")


def check_refusals(tmp):
    src = os.path.join(FIX, "egmla_ln")
    cfg0 = json.load(open(os.path.join(src, "config.json")))
    cases = [("model_type", {"model_type": "mistral"}, "'model_type'"),
             ("rope_scaling", {"rope_scaling": {"type": "yarn", "factor": 4}}, "'rope_scaling.type'"),
             ("rope_parameters", {"rope_parameters": {"rope_theta": 1e4, "rope_type": "linear"}},
              "'rope_parameters.rope_type'"),
             ("experts", {"n_routed_experts": 8}, "'n_routed_experts'"),
             ("eg_embed_dim 0", {"eg_embed_dim": 0}, "use model_type deepseek_v2"),
             ("bad eg_norm", {"eg_norm": "batchnorm"}, "'eg_norm'"),
             ("shape", {"intermediate_size": 50}, "mlp.gate_proj.weight: expected shape [50, 48]"),
             ("missing key", {"kv_lora_rank": None}, "'kv_lora_rank'")]
    for what, patch, needle in cases:
        d = os.path.join(tmp, "r")
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(src, d)
        cfg = dict(cfg0, **patch)
        json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
        expect_refusal(d, what, needle)
    # weights: a missing tensor, eg_up_proj missing while d_u != d_c, a truncated file
    w = {k: v for k, v in load_file(os.path.join(src, "model.safetensors")).items()}
    for what, drop, needle in [("missing", "model.layers.1.mlp.up_proj.weight", "missing"),
                               ("no up", "model.layers.0.self_attn.eg_up_proj.weight", "eg_latent_dim 32")]:
        d = os.path.join(tmp, "w")
        write_model(d, cfg0, {k: v for k, v in w.items() if k != drop})
        expect_refusal(d, what, needle)
    p = os.path.join(d, "model.safetensors")
    os.truncate(p, os.path.getsize(p) - 4)
    expect_refusal(d, "truncated", "not a valid safetensors file")
    print(f"refusals: {len(cases) + 3} malformed inputs refused with a message")


def main():
    tmp = tempfile.mkdtemp(prefix="egmla_selfcheck_")
    try:
        check_writer(tmp)
        check_rope()
        for name in sorted(os.listdir(FIX)):
            check_fixture(name)
        check_refusals(tmp)
    finally:
        shutil.rmtree(tmp)
    print("selfcheck: all passed")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
