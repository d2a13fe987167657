"""check_transformers.py - checkpoints saved by transformers load unedited,
and egmla computes what transformers computes.

    python tests/check_transformers.py BIN WORKDIR

Tiny random LlamaForCausalLM and DeepseekV2ForCausalLM models (the latter
with q_lora_rank set and rms_norm_eps = 1e-2, so that the latent norms'
fixed eps of 1e-6 matters, docs/MODEL.md) are written with transformers' own
save_pretrained; `egmla score` then scores token sequences with them, and
every log-probability must be within 1e-4 of transformers' forward pass in
fp32. Run by tests/check_transformers.sh, which makes the venv.
"""
import json
import os
import subprocess
import sys

import torch
import transformers
from transformers import (DeepseekV2Config, DeepseekV2ForCausalLM, LlamaConfig,
                          LlamaForCausalLM)

TOL = 1e-4
V = 300


def models():
    common = dict(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=128, bos_token_id=1,
                  eos_token_id=2, tie_word_embeddings=False)
    yield "llama", LlamaForCausalLM(LlamaConfig(num_key_value_heads=2, rms_norm_eps=1e-5,
                                                rope_theta=500.0, **common))
    # dense layers only: the engine runs no experts (first_k_dense_replace
    # covers every layer)
    yield "deepseek_v2", DeepseekV2ForCausalLM(DeepseekV2Config(
        q_lora_rank=24, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
        v_head_dim=12, head_dim=8, rms_norm_eps=1e-2, rope_theta=400.0,
        first_k_dense_replace=2, n_routed_experts=4, num_key_value_heads=4, **common))


def main():
    binary, work = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(1)
    seqs = [torch.randint(3, V, (n,), generator=gen).tolist() for n in (2, 9, 33)]
    worst_all, fails = 0.0, 0
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    for name, model in models():
        model = model.float().eval()
        with torch.no_grad():   # larger weights: logits far from uniform
            for p in model.parameters():
                if p.dim() == 2:
                    p.mul_(3.0)
        d = os.path.join(work, name)
        model.save_pretrained(d, safe_serialization=True)
        cfg = json.load(open(os.path.join(d, "config.json")))
        where = "rope_theta" if "rope_theta" in cfg else "rope_parameters.rope_theta"
        inp, out = os.path.join(work, name + ".in.jsonl"), os.path.join(work, name + ".out.jsonl")
        with open(inp, "w") as f:
            for i, s in enumerate(seqs):
                f.write(json.dumps({"id": i, "tokens": s}) + "\n")
        r = subprocess.run([binary, "score", "--model", d, "--input", inp, "--out", out],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(f"FAIL {name}: egmla score exit {r.returncode}: {r.stderr.strip()[:600]}")
            fails += 1
            continue
        got = {j["id"]: j["logprobs"] for j in map(json.loads, open(out))}
        worst = 0.0
        for i, s in enumerate(seqs):
            with torch.no_grad():
                lp = torch.log_softmax(model(torch.tensor([s])).logits[0].double(), dim=-1)
            want = [lp[t - 1, s[t]].item() for t in range(1, len(s))]
            worst = max([worst] + [abs(a - b) for a, b in zip(got[i], want)])
        worst_all = max(worst_all, worst)
        status = "ok  " if worst < TOL else "FAIL"
        fails += worst >= TOL
        print(f"{status} {name}: saved by save_pretrained ({where} in config.json), "
              f"max |logprob - transformers| = {worst:.2e} over {sum(len(s) - 1 for s in seqs)} "
              f"positions (tolerance {TOL:g})")
    print(f"check_transformers: {2 - fails} passed, {fails} failed")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
