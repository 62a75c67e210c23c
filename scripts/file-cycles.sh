#!/usr/bin/env bash
# Fails when the files of a crate import each other in a cycle (a.rs uses b.rs, which uses a.rs).
# Edges: `use crate::…` statements and `crate::…` paths anywhere in a file, and file-level (not
# indented) `use super::…` / `use self::…` statements; each path goes to the deepest module file
# that exists. `mod` declarations are not edges. Usage: scripts/file-cycles.sh [SRC_DIR…]
# (default: every crate's src/ in the workspace). Prints each cycle; exit 1 if there is one.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  set -- $(find . -name Cargo.toml -not -path './target/*' -not -path './.cache/*' -printf '%h/src\n' | sort)
fi
exec python3 - "$@" <<'PY'
import os, re, sys

def module_of(src, path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return rel

def file_of(src, parts):
    """The deepest existing file for a module path (a list of names)."""
    for n in range(len(parts), -1, -1):
        base = os.path.join(src, *parts[:n])
        for cand in ([base + ".rs", os.path.join(base, "mod.rs")] if n else
                     [os.path.join(src, "lib.rs"), os.path.join(src, "main.rs")]):
            if os.path.isfile(cand):
                return cand
    return None

def expand(tree):
    """`a::{b, c::{d}}` -> ["a::b", "a::c::d"]."""
    m = re.match(r"^([^{]*)\{(.*)\}$", tree.strip())
    if not m:
        return [tree.strip()]
    head, body, depth, part, out = m.group(1), m.group(2), 0, "", []
    for ch in body + ",":
        if ch == "," and depth == 0:
            out += [head + p for p in expand(part)] if part.strip() else []
            part = ""
            continue
        depth += (ch == "{") - (ch == "}")
        part += ch
    return out

def edges(src, path):
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"//[^\n]*", "", text)
    here = module_of(src, path)
    paths = [m.group(1) for m in re.finditer(r"\bcrate::((?:\w+::)*\w+)", text)]
    for m in re.finditer(r"^(?:pub(?:\([^)]*\))? )?use ((?:crate|super|self)\b[^;]*);", text, re.M):
        for p in expand(re.sub(r"\s+", "", m.group(1))):
            segs = [s for s in p.split(" as ")[0].split("::") if s not in ("*", "")]
            base = list(here) if segs[0] == "self" else here[:-1] if segs[0] == "super" else []
            rest = segs[1:]
            while rest and rest[0] == "super":
                base, rest = base[:-1], rest[1:]
            paths.append("::".join(base + rest))
    for p in paths:
        target = file_of(src, [s for s in p.split("::") if s])
        if target and os.path.abspath(target) != os.path.abspath(path):
            yield target

failed = False
for src in sys.argv[1:]:
    files = [os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs if f.endswith(".rs")]
    graph = {f: set(edges(src, f)) for f in files}
    index, low, stack, on, sccs = {}, {}, [], set(), []
    def visit(v):
        index[v] = low[v] = len(index); stack.append(v); on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop(); on.discard(w); scc.append(w)
                if w == v: break
            if len(scc) > 1: sccs.append(sorted(scc))
    sys.setrecursionlimit(10000)
    for f in sorted(graph):
        if f not in index: visit(f)
    for scc in sccs:
        failed = True
        print(f"cycle in {src}: " + " <-> ".join(os.path.relpath(f, src) for f in scc))
sys.exit(1 if failed else 0)
PY
