"""Train the byte-level BPE tokenizer of the tiny twins (GPT-2 style, 4096 tokens).

    /usr/bin/python3 reference/train_tokenizer.py --out models/egmla-tiny/tokenizer.json

Trained on the training split of reference/data.py only. `<|endoftext|>` is
id 0 and separates documents (chapters); there is no normalizer and no
post-processor: the engine adds BOS itself when it wants one. Deterministic:
the same corpus gives the same file.
"""
import argparse
import os
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402

VOCAB = 4096


def train_tokenizer(train_docs, vocab=VOCAB):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[data.EOT],                       # first, so id 0
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes
        show_progress=False)
    tok.train_from_iterator(train_docs, trainer=trainer)
    assert tok.token_to_id(data.EOT) == 0 and tok.get_vocab_size() == vocab
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="tokenizer.json to write")
    args = ap.parse_args()
    train, _ = data.split()
    tok = train_tokenizer(train)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tok.save(args.out)
    ntok = sum(len(e.ids) for e in tok.encode_batch(train))
    nbyte = sum(len(d.encode()) for d in train)
    print(f"{args.out}: vocab {tok.get_vocab_size()}, train {ntok} tokens, "
          f"{nbyte / ntok:.2f} bytes/token")


if __name__ == "__main__":
    main()
