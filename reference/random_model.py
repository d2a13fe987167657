"""Writes a model directory with random weights for any config.json.

    /usr/bin/python3 reference/random_model.py CONFIG.json OUT_DIR [--seed S]

Used by benchmarks that need a real checkpoint on disk (pipeline runs map
their layers from files); the weights are random, the shapes are exactly
MODEL.md's (reference/egmla_ref.py expected_shapes)."""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checkpoint import write_model  # noqa: E402
from egmla_ref import expected_shapes, parse_config  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    raw = json.load(open(a.config))
    c = parse_config(raw, a.config)
    g = torch.Generator().manual_seed(a.seed)
    tensors = {}
    # EG-MLA layers have eg_up_proj exactly when d_u differs from d_c
    has_up = [getattr(c, "du", 0) != getattr(c, "dc", 0)] * c.L
    for name, shape in expected_shapes(c, has_up).items():
        if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
            t = torch.ones(shape)
        elif name.endswith(".bias"):
            t = torch.zeros(shape)
        else:
            bound = 1.0 / (shape[-1] ** 0.5)
            t = (torch.rand(shape, generator=g) * 2 - 1) * bound
        tensors[name] = t
    write_model(a.out, raw, tensors, "F32")


if __name__ == "__main__":
    main()
