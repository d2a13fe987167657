"""Builds the multiple-choice task of the tiny models from the held-out split.

    /usr/bin/python3 reference/make_eval_task.py > models/kjv-continuation.jsonl

Each example is a held-out verse cut after its first half of words: the
context is that half, the choices are the true second half and the second
halves of three other held-out verses (the same length class), in a seeded
random order. Lines: {"id", "context", "choices", "gold"} as egmla eval and
lm-eval's multiple-choice tasks expect; choices start with a space, as a
continuation does."""
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from data import read_chapters, VAL_EVERY  # noqa: E402

N = 300


def main():
    verses = []
    for k, (book, ch, vs) in enumerate(read_chapters()):
        if k % VAL_EVERY == VAL_EVERY - 1:
            verses += [(f"{book} {ch}:{i + 1}", v) for i, v in enumerate(vs) if len(v.split()) >= 10]
    rng = random.Random(20250916)
    picks = rng.sample(range(len(verses)), N)
    halves = [v.split() for _, v in verses]
    for n, i in enumerate(picks):
        words = halves[i]
        cut = len(words) // 2
        context = " ".join(words[:cut])
        truth = " " + " ".join(words[cut:])
        others = []
        while len(others) < 3:
            j = rng.randrange(len(verses))
            if j == i:
                continue
            w = halves[j]
            cand = " " + " ".join(w[len(w) // 2:])
            if cand != truth and cand not in others:
                others.append(cand)
        choices = others + [truth]
        rng.shuffle(choices)
        print(json.dumps({"id": verses[i][0], "context": context, "choices": choices,
                          "gold": choices.index(truth)}))


if __name__ == "__main__":
    main()
