"""gguf_to_f32.py - rewrite a GGUF file with every tensor dequantised to F32.

    /usr/bin/python3 -m pip install --break-system-packages gguf
    /usr/bin/python3 tests/gguf_to_f32.py IN.gguf OUT.gguf

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
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
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
            w.add_key_value(f.name, int(gguf.LlamaFileType.ALL_F32), gguf.GGUFValueType.UINT32)
            continue
        vt = f.types[0]
        sub = f.types[-1] if vt == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(f.name, f.contents(), vt, sub_type=sub)
    counts = {}
    for t in r.tensors:
        # reader shape is numpy order (ne reversed); dequantize gives the
        # same order in elements, which add_tensor reverses back to ne
        x = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        x = x.reshape(tuple(int(d) for d in reversed(t.shape)))
        w.add_tensor(t.name, np.ascontiguousarray(x), raw_dtype=gguf.GGMLQuantizationType.F32)
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{dst}: {len(r.tensors)} tensors to F32 (from {counts}), "
          f"{len(r.fields)} fields copied", file=sys.stderr)


if __name__ == "__main__":
    main()
