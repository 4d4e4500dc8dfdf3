#!/usr/bin/env python3
"""Import cycles between the files of each crate, and oversized files.

Usage: scripts/import-cycles.py [--check] [--edges] [CRATE_DIR ...]
  (default: every crates/*; --check exits 1 when a crate has a cycle;
  --edges prints every file's dependencies)

A file depends on another when it names an item of it through `crate::`,
`super::` or `self::` (in a `use` or inline, test code included). A name
re-exported by a module (`pub use other::Item` in lib.rs) counts as a use of
the file that defines it, as rustc sees it; `mod x;` declarations are not
dependencies. Cycles are printed as the strongly connected components of
the file graph, with one cycle through each.

Also lists files with more than 800 production lines (lines outside
`#[cfg(test)]` modules, comments and blank lines excluded), each with
whether its first lines say why (a `//!` line containing "long").
"""

import os
import re
import sys
from pathlib import Path

LIMIT = 800


def strip(src):
    """Source with comments, string and char literals blanked (newlines kept)."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', src[i:]) and not re.match(r"\w", src[i - 1 : i] or " "):
            m = re.match(r'r(#*)"', src[i:])
            end = '"' + m.group(1)
            j = src.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif c == "'":
            # A char literal ('a', '\n', '\u{..}'), not a lifetime ('a).
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", src[i:])
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


class Crate:
    def __init__(self, root_dir):
        self.dir = Path(root_dir)
        src = self.dir / "src"
        root = src / "lib.rs"
        if not root.exists():
            root = src / "main.rs"
        self.files = {}  # module path (tuple) -> file
        self.code = {}  # file -> stripped source
        self.load(root, ())

    def load(self, path, modpath):
        self.files[modpath] = path
        code = strip(path.read_text())
        self.code[path] = code
        # Directory for child files: foo.rs -> foo/, lib.rs/main.rs/mod.rs -> own dir.
        if path.name in ("lib.rs", "main.rs", "mod.rs"):
            base = path.parent
        else:
            base = path.parent / path.stem
        for m in re.finditer(r"(?m)^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", code):
            name = m.group(1)
            for cand in (base / f"{name}.rs", base / name / "mod.rs"):
                if cand.exists():
                    self.load(cand, modpath + (name,))
                    break

    def module_of(self, path):
        for mp, f in self.files.items():
            if f == path:
                return mp

    def inline_modules(self, code):
        """(start, end, name) of inline `mod name { ... }` blocks."""
        spans = []
        for m in re.finditer(r"\bmod\s+(\w+)\s*\{", code):
            depth, j = 1, m.end()
            while j < len(code) and depth:
                depth += {"{": 1, "}": -1}.get(code[j], 0)
                j += 1
            spans.append((m.start(), j, m.group(1)))
        return spans

    def scope_at(self, path, pos, spans):
        """Module path of the code at `pos` (inline modules included)."""
        mp = self.module_of(path)
        for start, end, name in sorted(spans):
            if start < pos < end:
                mp = mp + (name,)
        return mp

    def resolve(self, scope, segments):
        """Absolute module path + remaining names for a path starting with
        crate/super/self, or None."""
        head, rest = segments[0], list(segments[1:])
        if head == "crate":
            base = ()
        elif head == "self":
            base = scope
        elif head == "super":
            base = scope[:-1]
            while rest and rest[0] == "super":
                base, rest = base[:-1], rest[1:]
        else:
            return None
        return tuple(base) + tuple(rest)

    def file_for(self, full, seen=None):
        """The file that defines the item named by the absolute path `full`
        (a module, or an item of a module), following re-exports."""
        seen = seen or set()
        # Longest module prefix that is a file.
        for k in range(len(full), -1, -1):
            if tuple(full[:k]) in self.files:
                mod, rest = tuple(full[:k]), full[k:]
                break
        f = self.files[mod]
        if rest and (mod, rest[0]) not in seen:
            seen.add((mod, rest[0]))
            target = self.reexport(mod, rest[0])
            if target is not None:
                return self.file_for(target + tuple(rest[1:]), seen)
        return f

    def reexport(self, mod, name):
        """If module `mod` imports `name` from inside the crate, its path."""
        f = self.files[mod]
        code = self.code[f]
        spans = self.inline_modules(code)
        for start, stmt in self.uses(code):
            if any(s < start < e for s, e, _ in spans):
                continue  # inside an inline module: not the file's own names
            for segs, alias in expand(stmt):
                if alias == name:
                    first = segs[0]
                    if first in ("crate", "self", "super"):
                        return self.resolve(mod, segs)
                    if mod + (first,) in self.files:  # `use child::Item`
                        return mod + tuple(segs)
        return None

    @staticmethod
    def uses(code):
        for m in re.finditer(r"\buse\s+([^;]*);", code):
            yield m.start(), m.group(1)

    def edges(self):
        graph = {f: set() for f in self.code}
        for f, code in self.code.items():
            spans = self.inline_modules(code)
            refs = []
            for start, stmt in self.uses(code):
                scope = self.scope_at(f, start, spans)
                for segs, _ in expand(stmt):
                    if segs[0] in ("crate", "self", "super"):
                        refs.append((scope, segs))
                    elif scope + (segs[0],) in self.files:
                        refs.append((scope, ["self"] + segs))
            no_use = re.sub(r"\buse\s+[^;]*;", lambda m: " " * len(m.group(0)), code)
            for m in re.finditer(r"(?<![\w:])\w+(?:\s*::\s*\w+)+", no_use):
                segs = re.split(r"\s*::\s*", m.group(0))
                scope = self.scope_at(f, m.start(), spans)
                if segs[0] in ("crate", "self", "super"):
                    refs.append((scope, segs))
                elif scope + (segs[0],) in self.files:  # a child module, relatively
                    refs.append((scope, ["self"] + segs))
            for scope, segs in refs:
                full = self.resolve(scope, segs)
                if full is None:
                    continue
                target = self.file_for(full)
                if target != f:
                    graph[f].add(target)
        return graph


def expand(tree):
    """`a::{b, c::{d as e}}` -> [(['a','b'],'b'), (['a','c','d'],'e')]."""
    tree = re.sub(r"(\w+)\s+as\s+(\w+)", r"\1@\2", tree)
    tree = re.sub(r"\s+", "", tree)
    out = []

    def walk(prefix, s):
        parts, depth, cur = [], 0, ""
        for ch in s:
            depth += {"{": 1, "}": -1}.get(ch, 0)
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        if cur:
            parts.append(cur)
        for p in parts:
            if "{" in p:
                head, inner = p.split("{", 1)
                walk(prefix + [x for x in head.split("::") if x], inner[: inner.rfind("}")])
                continue
            segs = [x for x in p.split("::") if x]
            alias = None
            if segs and "@" in segs[-1]:
                segs[-1], alias = segs[-1].split("@")
            if segs and segs[-1] == "self":
                segs = segs[:-1]
            full = prefix + segs
            if full:
                out.append((full, alias or full[-1]))

    walk([], tree)
    return out


def cycles(graph):
    """Strongly connected components with more than one file (Tarjan)."""
    index, low, stack, on, comps = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
                comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def one_cycle(graph, comp):
    """A cycle through the component's first file (BFS back to it)."""
    comp = set(comp)
    start = min(comp)
    prev, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w not in comp:
                    continue
                if w == start:
                    path = [v]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    return list(reversed(path)) + [start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return [start]


def production_lines(code_stripped):
    """Non-blank lines outside `#[cfg(test)]` items (comments already blank)."""
    lines = code_stripped.split("\n")
    skip = [False] * len(lines)
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{", code_stripped):
        depth, j = 1, m.end()
        while j < len(code_stripped) and depth:
            depth += {"{": 1, "}": -1}.get(code_stripped[j], 0)
            j += 1
        a = code_stripped.count("\n", 0, m.start())
        b = code_stripped.count("\n", 0, j)
        for k in range(a, b + 1):
            skip[k] = True
    return sum(1 for k, l in enumerate(lines) if l.strip() and not skip[k])


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    check = "--check" in sys.argv[1:]
    verbose = "--edges" in sys.argv[1:]
    root = Path(__file__).resolve().parent.parent
    os.chdir(root)
    dirs = args or sorted(str(p.parent) for p in Path("crates").glob("*/Cargo.toml"))
    failed = False
    for d in dirs:
        crate = Crate(d)
        graph = crate.edges()
        comps = cycles(graph)
        rel = lambda p: str(p.relative_to(crate.dir / "src"))
        if verbose:
            for f in sorted(graph):
                print(f"  {rel(f)} -> {', '.join(sorted(rel(t) for t in graph[f])) or '-'}")
        if comps:
            failed = True
            print(f"{d}: {len(comps)} import cycle(s) among {len(graph)} files")
            for comp in comps:
                print(f"  component: {', '.join(sorted(rel(f) for f in comp))}")
                print(f"    e.g. {' -> '.join(rel(f) for f in one_cycle(graph, comp))}")
        else:
            print(f"{d}: no import cycle ({len(graph)} files)")
        test_files = {
            f for f in graph if re.search(r"#\[cfg\(test\)\]\s*mod\s+" + re.escape(f.stem) + r"\s*;",
                                          crate.code.get(f.parent / "lib.rs", "") + crate.code.get(f.parent / "main.rs", ""))
        }
        for f in sorted(graph):
            if f in test_files:
                continue
            n = production_lines(crate.code[f])
            if n > LIMIT:
                head = "\n".join(f.read_text().split("\n")[:15])
                why = "reason at top" if re.search(r"(?m)^//!.*\blong\b", head) else "NO REASON AT TOP"
                print(f"  {rel(f)}: {n} production lines ({why})")
    if check and failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
