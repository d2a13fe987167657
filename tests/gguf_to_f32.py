"""gguf_to_f32.py - rewrite a GGUF file with every tensor dequantised to F32
(or, with a third argument, its matrices requantised to another type).

    /usr/bin/python3 -m pip install --break-system-packages gguf
    /usr/bin/python3 tests/gguf_to_f32.py IN.gguf OUT.gguf [f32|f16|bf16|q8_0|q4_0|q4_1]

Other types: 2-D tensors become that type (quantised from the dequantised
values, with gguf-py's reference quantisers), 1-D ones (norms) stay F32, as
llama.cpp's quantize does; used to make the Q8_0 / BF16 copies the
comparison with llama.cpp runs on.

Why: llama.cpp multiplies Q4_1/Q8_0 weights with activations it quantises on
the fly (to Q8_1/Q8_0), egmla dequantises the weights once and multiplies in
fp32. Running llama.cpp on this F32 copy holds the same weight values egmla
uses (d * q + m, exactly representable in fp32) without that activation
quantisation, so llama.cpp(F32) vs egmla isolates the engines' math. All
metadata (tokenizer, chat template, hyperparameters) is copied as is, only
general.file_type becomes 0 (all F32)."""
import sys

import numpy as np
import gguf


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    qname = (sys.argv[3] if len(sys.argv) == 4 else "f32").upper()
    qtype = gguf.GGMLQuantizationType[qname]
    ftype = {"F32": "ALL_F32", "F16": "MOSTLY_F16", "BF16": "MOSTLY_BF16",
             "Q8_0": "MOSTLY_Q8_0", "Q4_0": "MOSTLY_Q4_0", "Q4_1": "MOSTLY_Q4_1"}[qname]
    r = gguf.GGUFReader(src)
    arch = r.fields[gguf.Keys.General.ARCHITECTURE].contents()
    w = gguf.GGUFWriter(dst, arch=arch, endianess=r.endianess)
    align = r.fields.get(gguf.Keys.General.ALIGNMENT)
    if align is not None:
        w.data_alignment = align.contents()
    for f in r.fields.values():
        # GGUF.* are the reader's virtual header fields; the writer adds the
        # architecture itself
        if f.name == gguf.Keys.General.ARCHITECTURE or f.name.startswith("GGUF."):
            continue
        if f.name == gguf.Keys.General.FILE_TYPE:
            w.add_key_value(f.name, int(gguf.LlamaFileType[ftype]), gguf.GGUFValueType.UINT32)
            continue
        vt = f.types[0]
        sub = f.types[-1] if vt == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(f.name, f.contents(), vt, sub_type=sub)
    counts = {}
    for t in r.tensors:
        # reader shape is numpy order (ne reversed); dequantize gives the
        # same order in elements, which add_tensor reverses back to ne
        x = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        x = np.ascontiguousarray(x.reshape(tuple(int(d) for d in reversed(t.shape))))
        if qname != "F32" and x.ndim == 2:
            q = gguf.quants.quantize(x, qtype)
            w.add_tensor(t.name, q, raw_shape=q.shape, raw_dtype=qtype)
        else:
            w.add_tensor(t.name, x, raw_dtype=gguf.GGMLQuantizationType.F32)
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{dst}: {len(r.tensors)} tensors to {qname} (from {counts}), "
          f"{len(r.fields)} fields copied", file=sys.stderr)


if __name__ == "__main__":
    main()
