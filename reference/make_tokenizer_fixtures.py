#!/usr/bin/env python3
"""make_tokenizer_fixtures.py - small byte-level BPE tokenizer.json files and
the ids Hugging Face `tokenizers` gives for a set of strings.

Writes into tests/fixtures/tokenizer/ (run from the repo root):
  gpt2.json         ByteLevel(use_regex) pre-tokenizer, "<|endoftext|>" plus
                    added tokens exercising lstrip / rstrip / single_word
  gpt2_prefix.json  the same vocab with add_prefix_space, merges in the old
                    "a b" string form and a TemplateProcessing post-processor
  llama3.json       Split(Llama-3 regex) + ByteLevel(use_regex=false),
                    ignore_merges, specials appended after the vocab,
                    post_processor Sequence[ByteLevel, TemplateProcessing]
  smollm2.json      Sequence[Digits(individual_digits), ByteLevel]
  cases.json        per tokenizer: text, ids (no specials), ids_special
                    (add_special_tokens=True), HF decode of ids with and
                    without skip_special_tokens, and whether it round-trips;
                    plus "pretok_variants": gpt2.json with its pre_tokenizer
                    replaced (every Split behaviour, invert, a String pattern,
                    Digits without individual_digits, ...) and the ids HF
                    gives for a few strings with each.

The tokenizers are trained on /usr/share/common-licenses (English legal text)
plus a short multilingual paragraph, so that some merges join partial UTF-8
sequences (useful for the streaming-decode test). Deterministic for a given
input and tokenizers version.

Usage: OMP_WAIT_POLICY=passive /usr/bin/python3 reference/make_tokenizer_fixtures.py
"""
import glob
import json
import os

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models
from tokenizers import pre_tokenizers, processors, trainers

OUT = "tests/fixtures/tokenizer"

LLAMA3_PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
              r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

MULTI = ("Le café est déjà prêt, naïve résumé à la crème. Über größere Straßen. "
         "日本語のテキストです。中文文本。 Привет, как дела? Ελληνικά. ") * 20


def corpus():
    texts = []
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                texts.append(f.read())
    texts.append(MULTI)
    return texts


def train(pre, specials, vocab_size):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer=trainer)
    return tok


def reload(tok, edit):
    """Round-trips through JSON so we can set fields the API does not expose."""
    j = json.loads(tok.to_str())
    edit(j)
    return Tokenizer.from_str(json.dumps(j)), j


COMMON = [
    "", "a", "Hello world", "Hello, world!", "The quick brown fox jumps over the lazy dog.",
    "  leading spaces", "trailing spaces   ", "multiple     spaces inside",
    "line one\nline two\n\nline four", "tabs\tand\t\ttabs", "\r\nwindows\r\nnewlines",
    "   \n\t  \n", "I'm sure you'll see they've done it, we'd said.",
    "DON'T SHOUT, IT'S LOUD", "numbers 0 7 42 123 1234 12345678 3.14159 -273.15",
    "2024-01-15T10:30:00Z", "phone: +1 (555) 010-9999", "x=y+z*2; if (a<b) {return;}",
    "https://example.com/path?q=1&r=two#frag", "email@example.org",
    "punctuation!!! ??? ... --- ;;; :::", "(parenthesized) [bracketed] {braced}",
    "café naïve résumé déjà", "Straße größer Übermut", "Ελληνικά κείμενο",
    "Привет, мир!", "日本語のテキスト", "中文文本测试", "한국어 텍스트",
    "emoji 😀 👍🏽 🇫🇷 family 👨‍👩‍👧", "mixed 日本 and English 123",
    "\u00a0non-breaking\u00a0space", "zero\u200bwidth", "a\u3000ideographic space",
    "The GNU General Public License is a free, copyleft license for software.",
    "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND.",
    "  \n  mixed\n\n\n   whitespace\t\t\n",
    "ﬁ ligature and ½ fraction and ² superscript and ٣ arabic digit",
    "a" * 300, "abc123def456 7890",
]

GPT2_EXTRA = [
    "<|endoftext|>", "Hello<|endoftext|>world", "end.<|endoftext|>",
    "<|endoftext|><|endoftext|>", " <|endoftext|> spaced ",
    "x <mask> y", "x   <mask>", "<mask>start", "a foo_bar b", "afoo_bar b",
    "foo_bar", "(foo_bar)", "the [R]   z", "[R]\n\nnext", "<|endoftext|>[R] <mask>",
    # single_word uses Rust regex \w (marks count, No digits do not) and the
    # strips \s (Unicode White_Space)
    "e\u0301foo_bar", "\u00bdfoo_bar", "x\u0085[R]\u0085\u3000y", "a\u3000<mask>",
]
LLAMA3_EXTRA = [
    "<|begin_of_text|>Hello", "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
    "text <|reserved_special_token_2|> more", "<|end_of_text|>", "zyzzyva", "a zyzzyva b",
    "<|begin_of_text|<|begin_of_text|>",
]
SMOL_EXTRA = [
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>",
    "<|endoftext|>", "year 1999 and 2024", "digits١٢٣ and ①②",
]


def cases(tok, texts):
    out = []
    for s in texts:
        ids = tok.encode(s, add_special_tokens=False).ids
        ids_sp = tok.encode(s, add_special_tokens=True).ids
        dec = tok.decode(ids, skip_special_tokens=False)
        dec_skip = tok.decode(ids, skip_special_tokens=True)
        out.append({"text": s, "ids": ids, "ids_special": ids_sp,
                    "decoded": dec, "decoded_skip": dec_skip,
                    "roundtrip": dec == s})
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    all_cases = {}

    # (a) GPT-2 style.
    gpt2 = train(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
                 ["<|endoftext|>"], 1000)
    gpt2.post_processor = processors.ByteLevel(trim_offsets=False)
    gpt2.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True,
                                        normalized=False)])
    gpt2.add_tokens([AddedToken("foo_bar", single_word=True),
                     AddedToken("[R]", rstrip=True)])
    gpt2.save(f"{OUT}/gpt2.json")
    all_cases["gpt2"] = {"file": "gpt2.json", "cases": cases(gpt2, COMMON + GPT2_EXTRA)}

    # (a') the same vocab: add_prefix_space, string merges, a template.
    def prefix(j):
        j["pre_tokenizer"]["add_prefix_space"] = True
        j["model"]["merges"] = [" ".join(m) for m in j["model"]["merges"]]
        eot = j["model"]["vocab"]["<|endoftext|>"]
        j["post_processor"] = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [eot],
                                                  "tokens": ["<|endoftext|>"]}}}
    pre, j = reload(gpt2, prefix)
    with open(f"{OUT}/gpt2_prefix.json", "w") as f:
        json.dump(j, f, ensure_ascii=False, indent=1)
    pre = Tokenizer.from_file(f"{OUT}/gpt2_prefix.json")
    all_cases["gpt2_prefix"] = {"file": "gpt2_prefix.json",
                                "cases": cases(pre, COMMON + GPT2_EXTRA)}

    # (b) Llama-3 style.
    llama = train(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PAT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]), [], 1200)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                "<|reserved_special_token_1|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|reserved_special_token_2|>", "<|reserved_special_token_3|>", "<|eot_id|>"]

    def llama_edit(j):
        j["model"]["ignore_merges"] = True
        # A word only reachable through ignore_merges (no merge builds it).
        j["model"]["vocab"]["Ġzyzzyva"] = len(j["model"]["vocab"])
        j["model"]["vocab"]["zyzzyva"] = len(j["model"]["vocab"])
    llama, _ = reload(llama, llama_edit)
    llama.add_special_tokens(specials)
    bos = llama.token_to_id("<|begin_of_text|>")
    llama.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    llama.save(f"{OUT}/llama3.json")
    all_cases["llama3"] = {"file": "llama3.json", "cases": cases(llama, COMMON + LLAMA3_EXTRA)}

    # (c) SmolLM2 style.
    smol = train(pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]),
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], 900)
    smol.save(f"{OUT}/smollm2.json")
    all_cases["smollm2"] = {"file": "smollm2.json", "cases": cases(smol, COMMON + SMOL_EXTRA)}

    # Pre-tokenizer variants on the gpt2 vocab (the test swaps them in).
    base = json.loads(gpt2.to_str())
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
          "use_regex": False}
    variants = []
    for beh in ["Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"]:
        for inv in [False, True]:
            for pat in [{"Regex": r"\s+|[.,!]"}, {"String": " "}]:
                variants.append({"type": "Sequence", "pretokenizers": [
                    {"type": "Split", "pattern": pat, "behavior": beh, "invert": inv}, bl]})
    variants.append({"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": False},
        dict(bl, use_regex=True)]})
    variants.append(dict(bl, add_prefix_space=True))
    variants.append({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"x*"}, "behavior": "MergedWithPrevious",
         "invert": False}, bl]})
    texts = ["", "Hello, world!", "  two  spaces. end!", "a,b,,c..d", "no delimiters",
             ", leading", "trailing ,", "12 345 6789 x1y22z", "x xx  xxx", "日本, 語!",
             "tab\tnew\nline", "[R] foo_bar <mask> y"]
    out = []
    for v in variants:
        j = dict(base, pre_tokenizer=v)
        tk = Tokenizer.from_str(json.dumps(j))
        out.append({"pre_tokenizer": v, "cases": [
            {"text": t, "ids": tk.encode(t, add_special_tokens=False).ids} for t in texts]})
    all_cases["pretok_variants"] = out

    with open(f"{OUT}/cases.json", "w") as f:
        json.dump(all_cases, f, ensure_ascii=False, indent=1)
    for name in sorted(os.listdir(OUT)):
        print(name, os.path.getsize(f"{OUT}/{name}"))


if __name__ == "__main__":
    main()
