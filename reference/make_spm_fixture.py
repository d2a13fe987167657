"""SentencePiece-style GGUF vocabulary fixture, with llama.cpp's own ids.

Trains a tiny SentencePiece BPE model (byte fallback, identity
normalisation, digits split: the Llama recipe) on text from this repository,
writes it as a vocab-only GGUF the way llama.cpp's convert_hf_to_gguf.py
writes a Llama SentencePiece vocabulary (tokenizer.ggml.model "llama",
tokens, scores, token types, add_space_prefix), and records what llama.cpp
(llama-cpp-python) makes of llama.cpp's tokenizer test texts and a few more:
ids without and with BOS, every id's piece, and llama_detokenize of each
case. tests/test_tokenizer_spm.c compares egmla against that.

    python3 reference/make_spm_fixture.py        # needs sentencepiece, gguf, llama_cpp

Writes tests/fixtures/tokenizer/spm{,_nospace}.gguf and spm_cases.json.
"""
import ctypes
import glob
import json
import os
import sys
import tempfile

import gguf
import sentencepiece as spm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
SEP = "\n__ggml_vocab_test__\n"
USER_DEFINED = ["<|im_end|>"]

# llama.cpp's tokenizer test texts (models/ggml-vocab-*.gguf.inp, written by
# convert_hf_to_gguf_update.py; the tinyllama ones exercise </s>)
LLAMACPP_TEXTS = os.path.join(OUT, "llamacpp_vocab_test.inp")
EXTRA = [
    "<s>Hello</s> world<s>", "<|im_end|>x <|im_end|> y<|im_end|>", "<unk> <ctl>a",
    "In the beginning God created the heaven and the earth.",
    "tab\there\r\nnew\u00a0line\u2028sep", "a  b   c    d", "\u2581 literal mark \u2581\u2581",
    "\U0001F600\U0001F600 emoji \u00e9\u00e8 caf\u00e9", "9876543210 3.14159",
    " ", "", "x",
]


def corpus():
    parts = []
    for p in sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))) + [os.path.join(ROOT, "README.md")]:
        parts.append(open(p, encoding="utf-8").read())
    with open(os.path.join(ROOT, "models", "kjv-continuation.jsonl"), encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            parts.append(r["context"] + r["choices"][r["gold"]])
    return "\n".join(parts)


def train(tmp):
    src = os.path.join(tmp, "corpus.txt")
    with open(src, "w", encoding="utf-8") as f:
        f.write(corpus())
    spm.SentencePieceTrainer.train(
        input=src, model_prefix=os.path.join(tmp, "spm"), vocab_size=1200, model_type="bpe",
        byte_fallback=True, split_digits=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        character_coverage=0.9995, user_defined_symbols=USER_DEFINED,
        control_symbols=["<ctl>"], unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=1, seed_sentencepiece_size=100000, minloglevel=2)
    return os.path.join(tmp, "spm.model")


def write_gguf(model_path, path, add_space_prefix):
    """What convert_hf_to_gguf.py's _set_vocab_sentencepiece writes."""
    sp = spm.SentencePieceProcessor(model_file=model_path)
    tokens, scores, types = [], [], []
    T = gguf.TokenType
    for i in range(sp.vocab_size()):
        tokens.append(sp.IdToPiece(i).encode("utf-8"))
        scores.append(sp.GetScore(i))
        t = T.NORMAL
        if sp.IsUnknown(i): t = T.UNKNOWN
        elif sp.IsControl(i): t = T.CONTROL
        elif sp.IsUnused(i): t = T.UNUSED
        elif sp.IsByte(i): t = T.BYTE
        if sp.IdToPiece(i) in USER_DEFINED:  # the model proto's USER_DEFINED pieces
            t = T.USER_DEFINED
        types.append(t)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("egmla spm test vocabulary")
    # hyper-parameters llama.cpp reads even for a vocab-only load
    w.add_context_length(128)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(32)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_add_space_prefix(add_space_prefix)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_cases(path, texts):
    import llama_cpp
    llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    buf = ctypes.create_string_buffer(4096)

    def piece(i, special):
        n = llama_cpp.llama_token_to_piece(vocab, i, buf, len(buf), 0, special)
        assert n >= 0
        return buf.raw[:n].hex()

    def detok(ids):
        arr = (llama_cpp.llama_token * max(len(ids), 1))(*ids)
        n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, len(buf), False, True)
        assert n >= 0
        return buf.raw[:n].hex()

    cases = []
    for t in texts:
        b = t.encode("utf-8")
        ids = llm.tokenize(b, add_bos=False, special=True)
        bos = llm.tokenize(b, add_bos=True, special=True)
        cases.append({"text": t, "ids": ids, "ids_bos": bos, "detok": detok(ids)})
    return {
        "n_vocab": n_vocab,
        "pieces": [piece(i, True) for i in range(n_vocab)],
        "pieces_plain": [piece(i, False) for i in range(n_vocab)],
        "cases": cases,
    }


def main():
    texts = open(LLAMACPP_TEXTS, encoding="utf-8").read().split(SEP)
    if texts and texts[-1] == "":
        texts.pop()
    texts += EXTRA
    import llama_cpp
    out = {"llama_cpp_python": llama_cpp.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        model = train(tmp)
        for name, prefix in (("spm", True), ("spm_nospace", False)):
            path = os.path.join(OUT, name + ".gguf")
            write_gguf(model, path, prefix)
            out[name] = llama_cases(path, texts)
    with open(os.path.join(OUT, "spm_cases.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=0)
        f.write("\n")
    print("cases:", len(texts), "vocab:", out["spm"]["n_vocab"], file=sys.stderr)


if __name__ == "__main__":
    main()
