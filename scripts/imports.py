#!/usr/bin/env python3
"""The crate's import graph between its top-level modules, and its circles.

Every `crate::NAME` a source file names outside comments and its unit tests is an edge from the
file's top-level module (src/NAME.rs or src/NAME/) to NAME. Prints each module's imports, then
every circle (a set of modules that import each other, directly or through others), and exits
1 if there is one.

    python3 scripts/imports.py          # from the repository root
"""

import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"


def module_of(path: pathlib.Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".rs")


def root_reexports() -> dict[str, str]:
    """Items lib.rs re-exports at the crate root (`crate::DType`), by the module they live in."""
    text = (SRC / "lib.rs").read_text()
    out = {}
    for module, items in re.findall(r"pub use (\w+)(?:::\w+)*::\{([^}]*)\}", text):
        for item in re.findall(r"\w+", items):
            out[item] = module
    for module, item in re.findall(r"pub use (\w+)(?:::\w+)*::(\w+);", text):
        out[item] = module
    return out


ROOT = root_reexports()


def imports(path: pathlib.Path) -> set[str]:
    text = path.read_text()
    # Unit tests may reach anywhere; they are not part of the layering.
    cut = re.search(r"#\[cfg\(test\)\]\s*(pub(\(crate\))?\s+)?mod \w+", text)
    if cut:
        text = text[: cut.start()]
    found = set()
    for line in text.splitlines():
        code = line.split("//", 1)[0]
        found.update(ROOT.get(n, n) for n in re.findall(r"\bcrate::(\w+)", code))
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                out.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_only(path: pathlib.Path) -> bool:
    """Whether the file is a module its parent declares under `#[cfg(test)]` (test helpers)."""
    parent = path.parent / "mod.rs" if path.name != "mod.rs" else path.parent.parent / "mod.rs"
    if path.parent == SRC or not parent.exists():
        return False
    name = path.stem if path.name != "mod.rs" else path.parent.name
    pattern = r"#\[cfg\(test\)\]\s*(pub(\(crate\))?\s+)?mod " + name + ";"
    return re.search(pattern, parent.read_text()) is not None


def main() -> int:
    graph: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.rs")):
        if path.name == "lib.rs" and path.parent == SRC:
            continue
        if test_only(path):
            continue
        m = module_of(path)
        graph.setdefault(m, set()).update(imports(path) - {m})
    for m in sorted(graph):
        print(f"{m} -> {', '.join(sorted(graph[m])) or '(nothing)'}")
    found = circles(graph)
    for c in found:
        print(f"circle: {' <-> '.join(c)}")
    print(f"{len(found)} circle(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
