#!/usr/bin/env bash
# The workspace's layout, checked (run by `make test`):
# 1. crate dependencies follow the direction the README's layout gives ("Dependencies
#    point down: ..."): a dependency of crate A on crate B is allowed when B is below A on
#    that line (directly or through other crates), B is `common`, or A is `benches` or
#    `tests`;
# 2. no two top-level modules of a crate use each other, directly or through others (a
#    module's uses are its `crate::NAME` paths).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --no-deps | python3 -c '
import json, re, sys

readme = open("README.md").read()
line = re.search(r"Dependencies point down:(.*?)(?:\n\n|;)", readme, re.S)
if not line:
    sys.exit("check-layout: the README has no \"Dependencies point down:\" line")
below = {}
for chain in re.findall(r"`([^`]*->[^`]*)`", line.group(1)):
    steps = [re.sub(r"[{}]", "", s).split(",") for s in chain.split("->")]
    steps = [[c.strip() for c in s if c.strip()] for s in steps]
    for upper, lower in zip(steps, steps[1:]):
        for u in upper:
            below.setdefault(u, set()).update(lower)

def reachable(a):
    seen, todo = set(), [a]
    while todo:
        for b in below.get(todo.pop(), ()):
            if b not in seen:
                seen.add(b)
                todo.append(b)
    return seen

meta = json.load(sys.stdin)
crates = {p["name"]: p for p in meta["packages"]}
short = lambda n: n.removeprefix("framefusion-")
bad = []
for name, package in sorted(crates.items()):
    a = short(name)
    for dep in package["dependencies"]:
        if dep["name"] not in crates:
            continue
        b = short(dep["name"])
        if b == "common" or a in ("benches", "tests") or b in reachable(a):
            continue
        bad.append(f"{a} -> {b}")
if bad:
    print("check-layout: crate dependencies against the README layout direction:", ", ".join(bad), file=sys.stderr)
    sys.exit(1)
print(f"check-layout: {len(crates)} crates, every dependency points down")
'
python3 - <<'PY'
import os, re, sys, itertools
root = '.'
crates = [d for d in sorted(os.listdir(root)) if os.path.isfile(os.path.join(root, d, 'Cargo.toml')) and os.path.isdir(os.path.join(root, d, 'src'))]
problems = []
for crate in crates:
    src = os.path.join(root, crate, 'src')
    mods = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith('.rs'):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), src)[:-3]
            parts = rel.split(os.sep)
            if parts[-1] == 'mod':
                parts = parts[:-1]
            if parts in (['lib'], ['main']):
                continue
            mods[os.path.join(dirpath, f)] = parts[0]  # top-level module of the crate
    edges = {}
    for path, mod in mods.items():
        text = open(path).read()
        text = re.sub(r'//[^\n]*', '', text)
        for m in re.finditer(r'\bcrate::(\w+)', text):
            target = m.group(1)
            if target != mod and target in set(mods.values()):
                edges.setdefault(mod, set()).add(target)
    # cycles between top-level modules
    index, low, stack, on, comps = {}, {}, [], set(), []
    counter = itertools.count()
    def strong(v):
        index[v] = low[v] = next(counter); stack.append(v); on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1:
                comps.append(sorted(comp))
    for v in sorted(set(mods.values())):
        if v not in index:
            strong(v)
    for comp in comps:
        problems.append(f"{crate}: {' <-> '.join(comp)}")
if problems:
    print('check-layout: modules that use each other (move what they share into one of them or a third):', '; '.join(problems), file=sys.stderr)
    sys.exit(1)
print('check-layout: no module cycles')
PY
