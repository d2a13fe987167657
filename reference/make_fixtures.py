"""make_fixtures.py - regenerates the golden models under tests/fixtures/models/.

    /usr/bin/python3 reference/make_fixtures.py

Deterministic (fixed seeds): tiny random models of every architecture and
option of MODEL.md, each written with checkpoint.py and read back with
egmla_ref.py, plus expected.json with what the engine must reproduce:

    {"score":  [{"tokens": [...], "logprobs": [log p(t_i | t_<i) for i = 1..n-1]}, x3],
     "greedy": [{"prompt": [...], "max_new_tokens": 16, "tokens": [16 ids]}, x2],
     "logits": {"tokens": [4 ids], "values": [[V floats] per position]}}

Expected values are computed from the stored (rounded) weights, in float64,
so they are the exact answer of the contract for those weights. Greedy
continuations have a top-1 minus top-2 logit gap > GAP at every step and
contain no eos token, so an fp32 engine must match them token for token,
with or without stopping at eos. Ends by running selfcheck.py.
"""
import json
import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import egmla_ref as ref          # noqa: E402
from checkpoint import write_model  # noqa: E402

OUT = os.path.join(HERE, "..", "tests", "fixtures", "models")
GAP = 1e-2
MAX_BYTES = 300 * 1024

def conf(*parts, **keys):
    """Merges dicts left to right, then keys."""
    out = {}
    for p in parts + (keys,):
        out.update(p)
    return out


COMMON = dict(vocab_size=300, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=128, bos_token_id=1, eos_token_id=2)

MLA = dict(kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12)

# name -> (config, stored dtype, shards, has eg_up_proj, seed)
FIXTURES = {
    "llama_mha": (conf(COMMON, model_type="llama", hidden_size=48, intermediate_size=64,
                       num_key_value_heads=4, rms_norm_eps=1e-5, rope_theta=500.0,
                       rope_interleave=False, rope_scaling=None, tie_word_embeddings=False),
                  "F32", 1, False, 101),
    "llama_gqa_tied": (conf(COMMON, model_type="llama", hidden_size=64, intermediate_size=128,
                            num_key_value_heads=2, head_dim=24, rms_norm_eps=1e-6, rope_theta=300.0,
                            tie_word_embeddings=True, eos_token_id=[2, 3]),
                       "F16", 1, False, 102),
    "mla": (conf(COMMON, MLA, model_type="deepseek_v2", hidden_size=48, intermediate_size=32,
                 q_lora_rank=None, rms_norm_eps=1e-6, rope_theta=500.0, rope_scaling=None,
                 n_routed_experts=None),
            "F32", 1, False, 103),
    "mla_qlora": (conf(COMMON, MLA, model_type="deepseek_v2", hidden_size=48, intermediate_size=48,
                       q_lora_rank=24, rms_norm_eps=1e-5, rope_theta=400.0),
                  "F32", 1, False, 104),
    "egmla_ln": (conf(COMMON, MLA, model_type="egmla", hidden_size=48, intermediate_size=48,
                      kv_lora_rank=16, eg_latent_dim=32, eg_embed_dim=12, eg_norm="layernorm",
                      q_lora_rank=None, rms_norm_eps=1e-5, rope_theta=500.0, tie_word_embeddings=True),
                 "F32", 1, True, 105),
    # rope_interleave false: the half-rotation path in the MLA family too.
    "egmla_rms_noup": (conf(COMMON, MLA, model_type="egmla", hidden_size=40, intermediate_size=48,
                            kv_lora_rank=24, eg_embed_dim=16, eg_norm="rmsnorm", eg_norm_eps=1e-6,
                            q_lora_rank=20, rms_norm_eps=1e-6, rope_theta=600.0, rope_interleave=False),
                       "F32", 1, False, 106),
    # rms_norm_eps far from the latent norms' fixed 1e-6, so using the wrong
    # eps there shows; rope_theta only in rope_parameters, as transformers 5
    # writes it.
    "mla_eps": (conf(COMMON, MLA, model_type="deepseek_v2", hidden_size=48, intermediate_size=48,
                     q_lora_rank=24, rms_norm_eps=1e-2,
                     rope_parameters={"rope_theta": 450.0, "rope_type": "default"}),
                "F32", 1, False, 108),
    "egmla_eps": (conf(COMMON, MLA, model_type="egmla", hidden_size=40, intermediate_size=48,
                       kv_lora_rank=24, eg_embed_dim=16, eg_norm="rmsnorm", eg_norm_eps=1e-6,
                       q_lora_rank=20, rms_norm_eps=1e-2, rope_theta=600.0),
                  "F32", 1, False, 109),
    "egmla_bf16": (conf(COMMON, MLA, model_type="egmla", hidden_size=64, intermediate_size=96,
                        kv_lora_rank=24, eg_latent_dim=40, eg_embed_dim=32, eg_norm="layernorm",
                        eg_norm_eps=1e-5, q_lora_rank=None, rms_norm_eps=1e-5, rope_theta=500.0),
                   "BF16", 2, True, 107),
}

# std = GAIN / sqrt(fan_in) for linear weights; larger on q/k so attention is peaked enough to matter
GAIN = {"q_proj": 1.5, "k_proj": 1.5, "q_b_proj": 1.5, "q_a_proj": 1.0,
        "kv_a_proj_with_mqa": 1.5, "kv_b_proj": 1.5, "lm_head": 3.0}


def random_weights(c, has_up, gen):
    w = {}
    for name, shape in ref.expected_shapes(c, [has_up] * c.L).items():
        r = torch.randn(shape, generator=gen, dtype=torch.float64)
        kind = name.split(".")[-2]
        if name.endswith(".bias"):                       # eg_norm.bias: small
            w[name] = 0.1 * r
        elif len(shape) == 1:                            # every norm weight
            w[name] = 1.0 + 0.1 * r
        elif name == "model.embed_tokens.weight":        # tied: it is also lm_head
            w[name] = r * (3.0 / math.sqrt(c.D) if c.tied else 1.0)
        elif kind == "eg_embed":
            w[name] = r
        else:
            w[name] = r * GAIN.get(kind, 1.0) / math.sqrt(shape[1])
    return {k: v.float() for k, v in w.items()}


def logprobs(m, tokens):
    lp = torch.log_softmax(m.forward(tokens), dim=-1)
    return [lp[i - 1, tokens[i]].item() for i in range(1, len(tokens))]


def greedy(m, prompt, n, eos):
    """Pure argmax by re-running the whole forward; None if a step is near a tie or hits eos."""
    toks = list(prompt)
    for _ in range(n):
        last = m.forward(toks)[-1]
        top2, nxt = last.topk(2).values, int(last.argmax())
        if (top2[0] - top2[1]).item() <= GAP or nxt in eos:
            return None
        toks.append(nxt)
    return toks[len(prompt):]


def expected(m, cfg, gen):
    V = m.c.V
    rand = lambda n: torch.randint(0, V, (n,), generator=gen).tolist()  # noqa: E731
    eos = cfg["eos_token_id"] if isinstance(cfg["eos_token_id"], list) else [cfg["eos_token_id"]]
    out = {"score": [], "greedy": []}
    for n in (5, 17, 40):
        t = [cfg["bos_token_id"]] + rand(n - 1)
        out["score"].append({"tokens": t, "logprobs": logprobs(m, t)})
    for plen in (3, 7):
        for _attempt in range(200):
            prompt = rand(plen)
            g = greedy(m, prompt, 16, eos)
            if g is not None:
                break
        else:
            raise RuntimeError("no tie-free greedy prompt found")
        out["greedy"].append({"prompt": prompt, "max_new_tokens": 16, "tokens": g})
    t = rand(4)
    out["logits"] = {"tokens": t, "values": m.forward(t).tolist()}
    return out


def make(name):
    cfg, dtype, shards, has_up, seed = FIXTURES[name]
    d = os.path.normpath(os.path.join(OUT, name))
    gen = torch.Generator().manual_seed(seed)
    c = ref.parse_config(cfg, name)
    cfg = {"model_type": cfg["model_type"], **cfg}        # model_type first, for readers
    write_model(d, cfg, random_weights(c, has_up, gen), dtype, shards)
    m = ref.load_model(d, dtype=torch.float64)       # the stored weights, exactly
    exp = expected(m, cfg, gen)
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(exp, f, separators=(",", ":"))
        f.write("\n")
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    assert size < MAX_BYTES, f"{name}: {size} bytes"
    spread = [round(x, 2) for x in (min(min(r) for r in exp["logits"]["values"]),
                                    max(max(r) for r in exp["logits"]["values"]))]
    mean_lp = sum(sum(s["logprobs"]) for s in exp["score"]) / sum(len(s["logprobs"]) for s in exp["score"])
    print(f"{name:16s} {size:7d} B  logits in {spread}  mean logprob {mean_lp:.3f}  "
          f"greedy {[g['tokens'][:6] for g in exp['greedy']]}")


if __name__ == "__main__":
    torch.set_num_threads(1)                         # same answer on any machine
    for name in FIXTURES:
        make(name)
    import selfcheck
    selfcheck.main()
