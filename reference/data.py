"""Corpus for the tiny twins: the King James Bible from Debian's bible-kjv-text.

The package stores the text in its own compressed format (/usr/lib/bible.data);
its reader, `bible` (package bible-kjv, which depends on bible-kjv-text), prints
it back. We ask it for Genesis 1:1 through Revelation 22:21 with an unlimited
line width, so every verse is one line "  N text" under a "Book C" heading.

Cleaning: verse numbers and chapter headings are dropped. To a 4k-token model
they are noise (numbers it cannot predict from the text) and they would cost
vocabulary; what remains is plain KJV English, one verse per line.

A chapter is one document. Split (deterministic, no randomness): chapter k of
the 1189 in canonical order goes to validation when k % 20 == 19 (59 chapters,
about 5 %), the rest to training. Every 20th chapter rather than the last books
so that validation has the same mix of genres (law, history, poetry, prophecy,
gospel, letters) as training; the last 5 % of books would be Revelation and the
short epistles only.

Nothing is written to the repository: the text is read from the package at run
time.
"""
import shutil
import subprocess

BIBLE_CMD = ["bible", "-l100000", "Gen1:1-Rev22:21"]
N_CHAPTERS = 1189      # KJV, Genesis..Revelation
N_VERSES = 31102
VAL_EVERY = 20         # chapter k is validation when k % VAL_EVERY == VAL_EVERY - 1
EOT = "<|endoftext|>"  # document separator, token id 0


def read_chapters():
    """Return [(book, chapter, [verse text, ...]), ...] in canonical order."""
    if shutil.which("bible") is None:
        raise SystemExit("reference/data.py: the `bible` reader is missing: "
                         "apt-get install bible-kjv bible-kjv-text")
    out = subprocess.run(BIBLE_CMD, check=True, capture_output=True,
                         text=True, encoding="ascii").stdout
    chapters = []
    for lineno, line in enumerate(out.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("  "):              # "  12 And God said, ..."
            num, _, text = line.strip().partition(" ")
            if not chapters or not num.isdigit() or not text:
                raise SystemExit(f"bible output line {lineno}: expected '  N text', "
                                 f"found {line[:60]!r}")
            chapters[-1][2].append(" ".join(text.split()))
        else:                                  # "1 Samuel 3"
            book, _, chap = line.strip().rpartition(" ")
            if not chap.isdigit():
                raise SystemExit(f"bible output line {lineno}: expected 'Book C', "
                                 f"found {line[:60]!r}")
            chapters.append((book, int(chap), []))
    nv = sum(len(c[2]) for c in chapters)
    if len(chapters) != N_CHAPTERS or nv != N_VERSES:
        raise SystemExit(f"bible output: expected {N_CHAPTERS} chapters and "
                         f"{N_VERSES} verses, found {len(chapters)} and {nv}")
    return chapters


def chapter_text(verses):
    """One verse per line, each line ending in a newline."""
    return "".join(v + "\n" for v in verses)


def split():
    """Return (train, val): lists of chapter texts."""
    train, val = [], []
    for k, (_, _, verses) in enumerate(read_chapters()):
        (val if k % VAL_EVERY == VAL_EVERY - 1 else train).append(chapter_text(verses))
    return train, val


if __name__ == "__main__":
    tr, va = split()
    nb = lambda docs: sum(len(d.encode()) for d in docs)
    print(f"train: {len(tr)} chapters, {nb(tr)} bytes; val: {len(va)} chapters, {nb(va)} bytes")
    print(tr[0][:300])
