#!/usr/bin/env python3
"""Fails when a crate's top-level modules import each other in a cycle (`crate::a` in b and
`crate::b` in a, or longer loops), and prints the edges of each cycle. Run from the workspace root."""
import re
import sys
from pathlib import Path

CRATES = {"gst-plugin-moodmirror": Path("src"), "moodmirror": Path("moodmirror/src"),
          "moodmirror-train": Path("moodmirror-train/src"), "moodmirror-cli": Path("moodmirror-cli/src")}


def top_module(src: Path, file: Path) -> str:
    rel = file.relative_to(src).with_suffix("")
    return rel.parts[0]


def graph(src: Path) -> dict:
    files = list(src.rglob("*.rs"))
    modules = {top_module(src, f) for f in files}
    edges = {}
    for file in files:
        module = top_module(src, file)
        text = file.read_text()
        # Test modules may reach anywhere; only the code that ships counts.
        text = text.split("#[cfg(test)]")[0]
        # Comments (doc links included) are not imports.
        text = re.sub(r"//[^\n]*", "", text)
        targets = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", text))
        # `use super::x` from a file directly under src/ is the same as crate::x.
        if file.parent == src:
            targets |= set(re.findall(r"\bsuper::([a-z_][a-z0-9_]*)", text))
        edges.setdefault(module, set()).update(t for t in targets if t in modules and t != module)
    return edges


def cycles(edges: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


failed = False
for crate, src in CRATES.items():
    edges = graph(src)
    found = cycles(edges)
    for component in found:
        print(f"{crate}: module cycle {' <-> '.join(component)}")
        for a in component:
            for b in sorted(edges[a] & set(component)):
                print(f"  {a} -> {b}")
    if not found:
        print(f"{crate}: no module cycle ({len(edges)} modules)")
    failed |= bool(found)
sys.exit(1 if failed else 0)
