#!/usr/bin/env python3
"""check_layers.py - the folder stack of docs/DESIGN.md, checked.

    python3 tests/check_layers.py [BUILD_DIR]

Folders, bottom to top (a file may use its own folder and those below):

    base < kernels < model < worker < deploy < coordinator

Fails (exit 1, one line per finding) on
  - an #include of a file in a higher folder (or a folder not in the stack);
  - an include cycle between files;
  - with BUILD_DIR (its object files, read with nm): a call or data
    reference into a higher folder, or a cycle between source files (a.c
    uses b.c and b.c uses a.c, through any chain), which includes alone do
    not show when two files share one header.
"""
import os
import re
import subprocess
import sys

STACK = ["base", "kernels", "model", "worker", "deploy", "coordinator"]
LEVEL = {f: i for i, f in enumerate(STACK)}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def sources():
    for folder in STACK:
        for name in sorted(os.listdir(folder)):
            if name.endswith((".c", ".h")):
                yield folder + "/" + name


def resolve(src, inc):
    """The repository path an include names, or None (generated, system)."""
    for cand in (os.path.join(os.path.dirname(src), inc), inc):
        cand = os.path.normpath(cand)
        if os.path.isfile(cand):
            return cand
    return None


def sccs(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, on, stack, out, n = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check_includes(bad):
    graph = {}
    for src in sources():
        with open(src, encoding="utf-8", errors="replace") as f:
            text = f.read()
        for inc in INCLUDE.findall(text):
            dst = resolve(src, inc)
            if dst is None:
                continue
            top = dst.split("/")[0]
            if top not in LEVEL:
                bad.append("%s includes %s: %s/ is not in the stack" % (src, inc, top))
            elif LEVEL[top] > LEVEL[src.split("/")[0]]:
                bad.append("%s includes %s: %s/ is above %s/" % (src, inc, top, src.split("/")[0]))
            graph.setdefault(src, set()).add(dst)
    for comp in sccs(graph):
        bad.append("include cycle: " + " <-> ".join(comp))


def nm(obj):
    out = subprocess.run(["nm", "--defined-only", obj], capture_output=True, text=True).stdout
    defined = {l.split()[-1] for l in out.splitlines() if len(l.split()) == 3 and l.split()[1] in "TDBRC"}
    out = subprocess.run(["nm", "--undefined-only", obj], capture_output=True, text=True).stdout
    used = {l.split()[-1] for l in out.splitlines() if l.split()}
    return defined, used


def check_objects(build, bad):
    objs = {}
    for src in sources():
        if src.endswith(".c") and src != "coordinator/main.c":
            obj = os.path.join(build, src[:-2] + ".o")
            if not os.path.isfile(obj):
                bad.append("%s: no object file (build first)" % obj)
                return
            objs[src] = nm(obj)
    owner = {}
    for src, (defined, _) in objs.items():
        for sym in defined:
            owner[sym] = src
    graph = {}
    for src, (_, used) in objs.items():
        for sym in used:
            dst = owner.get(sym)
            if dst is None or dst == src:
                continue
            if LEVEL[dst.split("/")[0]] > LEVEL[src.split("/")[0]]:
                bad.append("%s uses %s from %s, a higher folder" % (src, sym, dst))
            graph.setdefault(src, set()).add(dst)
    for comp in sccs(graph):
        bad.append("files that use each other: " + " <-> ".join(comp))


def main():
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    bad = []
    check_includes(bad)
    if len(sys.argv) > 1:
        check_objects(sys.argv[1], bad)
    for b in bad:
        print("check_layers: " + b)
    print("check_layers: %s" % ("%d problems" % len(bad) if bad else "ok"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
