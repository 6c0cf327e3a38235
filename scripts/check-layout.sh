#!/usr/bin/env bash
# The crate dependencies of the workspace follow the direction the README's layout gives
# ("Dependencies point down: ..."): a dependency of crate A on crate B is allowed when B is
# below A on that line (directly or through other crates), B is `common`, or A is
# `benches` or `tests`. Run by `make test`.
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
