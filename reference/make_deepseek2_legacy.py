"""An older-style deepseek2 GGUF (as llama.cpp's converter wrote them before
it split kv_b): attn_kv_b whole, head_count_kv = heads, per-head sizes in
attention.key_length / value_length, no *_mla keys. Made from a file
`egmla quantize` wrote (current style), so both forms hold the same weights.

    bin/egmla quantize --model tests/fixtures/models/mla --out /tmp/mla.gguf --type f32
    python3 reference/make_deepseek2_legacy.py /tmp/mla.gguf tests/fixtures/gguf/deepseek2-legacy.gguf
"""
import sys

import numpy as np
import gguf

src, dst = sys.argv[1], sys.argv[2]
r = gguf.GGUFReader(src)
kv = {f.name: f for f in r.fields.values()}


def val(name):
    f = kv[name]
    return f.parts[f.data[0]][0]


H = int(val("deepseek2.attention.head_count"))
dkm = int(val("deepseek2.attention.key_length_mla"))
dvm = int(val("deepseek2.attention.value_length_mla"))
w = gguf.GGUFWriter(dst, "deepseek2")
for name, f in kv.items():
    if name.startswith("GGUF.") or name == "general.architecture":
        continue
    if name in ("deepseek2.attention.key_length_mla", "deepseek2.attention.value_length_mla"):
        continue
    v = val(name) if f.types[0] != gguf.GGUFValueType.ARRAY else None
    if name == "deepseek2.attention.head_count_kv": v = H
    if name == "deepseek2.attention.key_length": v = dkm
    if name == "deepseek2.attention.value_length": v = dvm
    t = f.types[0]
    if t == gguf.GGUFValueType.STRING:
        w.add_string(name, bytes(f.parts[f.data[0]]).decode())
    elif t == gguf.GGUFValueType.ARRAY:
        raise SystemExit("arrays are not expected in this file: " + name)
    else:
        w.add_key_value(name, v.item() if hasattr(v, "item") else v, t)
tensors = {t.name: t for t in r.tensors}
for t in r.tensors:
    if t.tensor_type != gguf.GGMLQuantizationType.F32:
        raise SystemExit("expected an F32 file")
    if t.name.endswith("attn_v_b.weight"):
        continue
    data = np.array(t.data)
    if t.name.endswith("attn_k_b.weight"):
        kb = data                                               # [H, d_c, d_n]
        vb = np.array(tensors[t.name.replace("attn_k_b", "attn_v_b")].data)  # [H, d_v, d_c]
        kv_b = np.concatenate([kb.transpose(0, 2, 1), vb], axis=1)           # [H, d_n + d_v, d_c]
        w.add_tensor(t.name.replace("attn_k_b", "attn_kv_b"), kv_b.reshape(-1, kv_b.shape[-1]))
        continue
    w.add_tensor(t.name, data)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
