"""checkpoint.py - writes model directories in the format of MODEL.md.

    write_model(dir, config, tensors, dtype="F32"|"BF16"|"F16", shards=1)

writes config.json and either model.safetensors or, with shards > 1,
model-0000k-of-0000n.safetensors plus model.safetensors.index.json.

The safetensors format is written here by hand because it is tiny:
    8 bytes   little-endian u64 N, the header length
    N bytes   JSON: {name: {"dtype", "shape", "data_offsets": [begin, end]}},
              "__metadata__": {str: str} optional; padded with spaces so
              that the data section starts at a multiple of 8
    data      the tensors back to back, little-endian, row-major; offsets
              are relative to the start of the data section
"""
import json
import os
import struct
import sys

import torch

TORCH_DTYPE = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def tensor_bytes(t, dtype):
    """Row-major little-endian bytes of t stored as dtype (round to nearest even)."""
    assert sys.byteorder == "little"
    t = t.detach().cpu().to(TORCH_DTYPE[dtype]).contiguous()
    if dtype == "BF16":
        t = t.view(torch.int16)          # numpy has no bfloat16: same bits as int16
    return t.numpy().tobytes()


def write_safetensors(path, tensors, dtype="F32", metadata=None):
    """tensors: {name: torch.Tensor}, stored in the given order as dtype."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, t in tensors.items():
        b = tensor_bytes(t, dtype)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)            # 8 + len(h) is a multiple of 8: data aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    return off


def split_shards(tensors, shards, dtype):
    """Contiguous groups of names, balanced by bytes, none empty."""
    names = list(tensors)
    if not 1 <= shards <= len(names):
        raise ValueError(f"shards: expected 1..{len(names)}, found {shards}")
    size = {n: tensors[n].numel() * (4 if dtype == "F32" else 2) for n in names}
    total, cum, groups = sum(size.values()), 0, [[]]
    for i, n in enumerate(names):
        left, need = len(names) - i, shards - len(groups)   # names to place, shards to open
        if groups[-1] and need > 0 and (cum * shards >= total * len(groups) or left <= need):
            groups.append([])
        groups[-1].append(n)
        cum += size[n]
    assert len(groups) == shards and all(groups)
    return groups


def write_model(d, config, tensors, dtype="F32", shards=1):
    """Writes a complete model directory; removes weights files left from before."""
    if dtype not in TORCH_DTYPE:
        raise ValueError(f"dtype: expected F32, BF16 or F16, found {dtype!r}")
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if f.startswith("model") and (f.endswith(".safetensors") or f.endswith(".safetensors.index.json")):
            os.remove(os.path.join(d, f))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    meta = {"format": "pt"}
    if shards == 1:
        write_safetensors(os.path.join(d, "model.safetensors"), tensors, dtype, meta)
        return
    weight_map, total = {}, 0
    for k, names in enumerate(split_shards(tensors, shards, dtype)):
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        total += write_safetensors(os.path.join(d, fname), {n: tensors[n] for n in names}, dtype, meta)
        weight_map.update({n: fname for n in names})
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        f.write("\n")
