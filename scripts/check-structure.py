#!/usr/bin/env python3
"""Checks the layout rules of the workspace's crates (ARCHITECTURE.md):

- files import in one direction: no cycle between the files of a crate,
  counting every `crate::`, `super::`, `self::` and child-module path in
  production code (test modules are left out). A `pub use` re-export is a
  module's facade, not a dependency of its code, so it adds no edge; a path
  to a re-exported item counts as a path to the module that defines it;
- production lines (test modules left out) per file and per crate; a file
  over 800 must say why in its first lines (a line starting `//! Over 800
  lines:`), and the `forewarn` binary crate stays under 2,500;
- every repository path (`crates/...`, `scripts/...`, `tests/...`, ...)
  named in ARCHITECTURE.md and docs/DEVELOPING.md exists, and every source
  file they name in backquotes (`engine/forecaster.rs`) exists in some
  crate's src/ (the code map stays true).

Usage: python3 scripts/check-structure.py [--edges] [CRATE ...]
  (default: every crate; --edges also prints each file's dependencies)
Prints each crate's cycles and largest files; exits 1 if a checked crate
breaks a rule or a documented path is missing.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FILE_LIMIT = 800
BINARY = "forewarn"
BINARY_LIMIT = 2500
# Documents whose repository paths must exist.
CODE_MAPS = ["ARCHITECTURE.md", "docs/DEVELOPING.md"]
REPO_PATH = re.compile(
    r"(?<![\w./-])(?:crates|scripts|tests|benches|deploy|docs|build-support|fuzz)/[\w./-]*[\w/]")

CHAR = re.compile(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^'\\])'")


def blank(text):
    """`text` with comments and string and char literals blanked out (their
    newlines kept), so braces and paths are only those of code."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            # Rust block comments nest.
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            j = n if end < 0 else end + 1 + len(hashes)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'" and CHAR.match(text, i):
            # A char literal ('a', '\n', '\u{..}'), not a lifetime ('a).
            m = CHAR.match(text, i)
            out.append(" " * len(m.group(0)))
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def production(path):
    """(original lines, blanked lines) with `#[cfg(test)]` items removed
    (and any item under a cfg that names `test`)."""
    text = open(path, encoding="utf-8").read()
    lines, code = text.split("\n"), blank(text).split("\n")
    keep, i = [], 0
    while i < len(lines):
        attr = code[i].strip()
        if re.match(r"#\[cfg\((any\()?test\b", attr):
            j, depth, opened = i + 1, 0, False
            while j < len(lines):
                depth += code[j].count("{") - code[j].count("}")
                opened = opened or "{" in code[j]
                j += 1
                if (opened and depth <= 0) or (not opened and code[j - 1].rstrip().endswith(";")):
                    break
            i = j
            continue
        keep.append(i)
        i += 1
    while keep and lines[keep[-1]].strip() == "":
        keep.pop()
    return [lines[k] for k in keep], [code[k] for k in keep]


def production_lines(path):
    return production(path)[0]


def code_of(path):
    return "\n".join(production(path)[1])


def test_only(src):
    """Files of modules declared under a test cfg (`#[cfg(test)] mod x;`)."""
    out = set()
    for d, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(d, f)
            code = blank(open(path, encoding="utf-8").read())
            for m in re.finditer(r"#\[cfg\((?:any\()?test\b[^\]]*\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", code):
                base = path[:-3] if not f in ("lib.rs", "main.rs", "mod.rs") else os.path.dirname(path)
                for cand in (os.path.join(base, m.group(1) + ".rs"), os.path.join(base, m.group(1), "mod.rs")):
                    out.add(os.path.normpath(cand))
    return out


def modules(src):
    """Module path (tuple) -> file, for every file under `src`."""
    out = {}
    for d, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(d, f)
            rel = os.path.relpath(path, src)[:-3].split(os.sep)
            if rel in (["lib"], ["main"]):
                mod = ()
            elif rel[-1] == "mod":
                mod = tuple(rel[:-1])
            else:
                mod = tuple(rel)
            out[mod] = path
    skip = test_only(src)
    return {m: p for m, p in out.items() if os.path.normpath(p) not in skip}


def use_trees(code):
    """Every path of every `use` tree, expanded: lists of segments."""
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", code):
        paths.extend(expand(m.group(1).strip()))
    return paths


def expand(tree):
    tree = re.sub(r"\s+", "", tree)
    depth = 0
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                prefix = tree[:i].rstrip(":").split("::") if tree[:i] else []
                inner = tree[i + 1 : tree.rindex("}")]
                out = []
                for part in split_top(inner):
                    for p in expand(part):
                        out.append([s for s in prefix if s] + p)
                return out
            depth += 1
    name = tree.split(" as ")[0]
    return [name.split("::")]


def split_top(s):
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    if cur:
        parts.append(cur)
    return parts


PATH = re.compile(r"\b((?:crate|super|self)(?:::(?:super|\w+))+)")


def resolve(mods, reexports, here, segs, depth=0):
    """The module (tuple) a path from module `here` lands in, or None."""
    if not segs:
        return None
    if segs[0] == "crate":
        base, rest = (), segs[1:]
    elif segs[0] in ("super", "self"):
        base = here
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
        rest = segs
    elif here + (segs[0],) in mods:
        base, rest = here, segs
    else:
        return None
    mod = base
    for s in rest:
        if mod + (s,) in mods:
            mod = mod + (s,)
        else:
            # An item of `mod`: follow a re-export to where it is defined.
            target = reexports.get(mod, {}).get(s)
            if target and depth < 8:
                found = resolve(mods, reexports, mod, target, depth + 1)
                if found is not None:
                    return found
            break
    return mod


def crate_graph(src):
    mods = modules(src)
    codes = {m: code_of(p) for m, p in mods.items()}
    reexports = {}
    for m, code in codes.items():
        for tm in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", code):
            for p in expand(tm.group(1).strip()):
                alias = p[-1]
                reexports.setdefault(m, {})[alias] = p
    edges = {m: set() for m in mods}
    for m, code in codes.items():
        # Re-exports are a module's facade, not what its code depends on.
        code = re.sub(r"\bpub(?:\([^)]*\))?\s+use\s+[^;]+;", "", code)
        paths = use_trees(code) + [p.split("::") for p in PATH.findall(code)]
        for child in (c[-1] for c in mods if len(c) == len(m) + 1 and c[:-1] == m):
            if re.search(r"(?<!::)\b" + child + r"::\w", code):
                paths.append(["self", child])
        for p in paths:
            t = resolve(mods, reexports, m, p)
            if t is not None and t != m and t in mods:
                edges[m].add(t)
    return mods, edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def name(src, mods, m):
    return os.path.relpath(mods[m], src)


def missing_paths():
    """Repository paths named in the code maps that do not exist (globs and
    `{a,b}` alternatives are not expanded: name files plainly)."""
    out = []
    for doc in CODE_MAPS:
        path = os.path.join(ROOT, doc)
        if not os.path.exists(path):
            continue
        text = open(path, encoding="utf-8").read()
        for m in sorted(set(REPO_PATH.findall(text))):
            if not os.path.exists(os.path.join(ROOT, m)):
                out.append(f"{doc}: {m} does not exist")
        # A source file named within a crate's entry (`engine/forecaster.rs`)
        # must exist in some crate's src/.
        srcs = [os.path.join(ROOT, "crates", c, "src") for c in os.listdir(os.path.join(ROOT, "crates"))]
        for m in sorted(set(re.findall(r"`([\w/]+\.rs)`", text))):
            if REPO_PATH.match(m) or m.startswith("build-support/"):
                continue
            if not any(os.path.exists(os.path.join(d, m)) for d in srcs):
                out.append(f"{doc}: no crate has src/{m}")
    return out


def main():
    args = sys.argv[1:]
    show_edges = "--edges" in args
    wanted = [a for a in args if not a.startswith("--")]
    crates_dir = os.path.join(ROOT, "crates")
    failed = False
    total = 0
    for crate in sorted(os.listdir(crates_dir)):
        src = os.path.join(crates_dir, crate, "src")
        if not os.path.isdir(src):
            continue
        mods, edges = crate_graph(src)
        counts = {m: len(production_lines(p)) for m, p in mods.items()}
        lines = sum(counts.values())
        total += lines
        checked = not wanted or crate in wanted
        problems = []
        for comp in cycles(edges):
            files = sorted(name(src, mods, m) for m in comp)
            problems.append("import cycle: " + " <-> ".join(files))
        for m, n in counts.items():
            head = "\n".join(open(mods[m], encoding="utf-8").read().split("\n")[:40])
            if n > FILE_LIMIT and "Over 800 lines:" not in head:
                problems.append(f"{name(src, mods, m)}: {n} production lines, no reason at its top")
        if crate == BINARY and lines >= BINARY_LIMIT:
            problems.append(f"the binary crate has {lines} production lines (limit {BINARY_LIMIT})")
        biggest = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
        status = "ok" if not problems else ("FAIL" if checked else "(not checked)")
        print(f"{crate}: {lines} production lines in {len(mods)} files; largest "
              + ", ".join(f"{name(src, mods, m)} {n}" for m, n in biggest) + f" -- {status}")
        for p in problems:
            print(f"  {p}")
        if show_edges and checked:
            for m in sorted(mods):
                deps = sorted(name(src, mods, t) for t in edges[m])
                print(f"  {name(src, mods, m)} -> {', '.join(deps) or '-'}")
        failed |= checked and bool(problems)
    print(f"workspace: {total} production lines")
    for p in missing_paths():
        print(p)
        failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
