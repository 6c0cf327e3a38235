#!/usr/bin/env python3
"""Semantic dedup at corpus scale: K-means, nearest centroid and within-cluster verdicts
(`kmeans_centroids`, `nearest_centroid`, `semantic_dedup`) over synthetic 512-d embeddings
on the release CLI, eps 0.02, under a memory limit.

The embeddings have structure: a mixture of about N / 1,000 clusters (random unit centres,
each member the centre plus Gaussian noise, normalised), and planted duplicate groups: 2%
of the items start a group of 2 to 5 near copies (within 1 - eps/2 of their first
member). Ranks are a fixed permutation. They are written as Parquet (`id`, `embedding`
FLOAT[] , `rank`) in four files, and framefusion is timed end to end as a user runs it:
`framefusion sql` fitting the centroids, assigning every row and writing every verdict
with `COPY`, from its start to its exit.

Checked: every planted copy ranked below another of its group is marked a duplicate of a
member of its group (recall); on the 100,000 set, the (id, duplicate_of) pairs against a
search without clusters (every item against every item ranked above it, numpy matrix
products), reporting the share that differ (K-means boundary losses).

    python3 benches/dedup_semantic.py FRAMEFUSION_BINARY [ROUNDS] [SIZES...] [--memory 4G]
"""
import os, statistics, subprocess, sys, tempfile, time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

args = [a for a in sys.argv[1:] if not a.startswith("--")]
memory = "4G"
if "--memory" in sys.argv:
    memory = sys.argv[sys.argv.index("--memory") + 1]
    args.remove(memory)
binary = args[0]
rounds = int(args[1]) if len(args) > 1 else 3
sizes = [int(s) for s in args[2:]] or [100_000, 1_000_000]
DIM, EPS = 512, 0.02
work = tempfile.mkdtemp(prefix="dedup-semantic-", dir=os.environ.get("BENCH_DIR"))


def make(n, seed):
    """n items: mixture members, then planted groups' copies; returns the folder's data."""
    rng = np.random.default_rng(seed)
    clusters = max(1, n // 1000)
    starts = n // 50
    sizes = rng.integers(1, 5, size=starts)  # copies per group: 1 to 4
    copies = int(sizes.sum())
    base_n = n - copies
    centres = rng.standard_normal((clusters, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.empty((n, DIM), np.float32)
    step = 65536
    for s in range(0, base_n, step):
        e = min(s + step, base_n)
        labels = rng.integers(0, clusters, size=e - s)
        block = centres[labels] + (0.6 / np.sqrt(DIM)) * rng.standard_normal((e - s, DIM)).astype(np.float32)
        x[s:e] = block / np.linalg.norm(block, axis=1, keepdims=True)
    groups = []
    at = base_n
    sources = rng.choice(base_n, size=starts, replace=False)
    for g, (src, k) in enumerate(zip(sources, sizes)):
        members = [int(src)]
        noise = (0.02 / np.sqrt(DIM)) * rng.standard_normal((k, DIM)).astype(np.float32)
        block = x[src] + noise
        x[at:at + k] = block / np.linalg.norm(block, axis=1, keepdims=True)
        members += list(range(at, at + k))
        at += k
        groups.append(members)
    ranks = rng.permutation(n).astype(np.float64)
    return x, ranks, groups


def write(x, ranks, folder):
    os.makedirs(folder, exist_ok=True)
    n = len(x)
    ids = np.array([f"e{i:07d}" for i in range(n)])
    for part, chunk in enumerate(np.array_split(np.arange(n), 4)):
        flat = pa.array(x[chunk].reshape(-1))
        lists = pa.ListArray.from_arrays(pa.array(np.arange(0, len(chunk) * DIM + 1, DIM, dtype=np.int32)), flat)
        table = pa.table({"id": ids[chunk], "embedding": lists, "rank": ranks[chunk]})
        pq.write_table(table, os.path.join(folder, f"part{part}.parquet"), compression="none")


def run(folder, out):
    sql = (f"SET datafusion.runtime.memory_limit = '{memory}'; "
           f"CREATE EXTERNAL TABLE items STORED AS PARQUET LOCATION '{folder}/'; "
           f"COPY (SELECT d['id'] AS id, d['duplicate_of'] AS duplicate_of, cluster_id FROM ("
           f"SELECT cluster_id, unnest(semantic_dedup(id, embedding, {EPS}, rank)) AS d FROM ("
           f"SELECT id, embedding, rank, nearest_centroid(embedding, "
           f"(SELECT kmeans_centroids(id, embedding) FROM items)) AS cluster_id FROM items) "
           f"GROUP BY cluster_id)) TO '{out}' STORED AS PARQUET")
    started = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", binary, "sql", "--no-catalog", sql], capture_output=True, text=True)
    seconds = time.monotonic() - started
    if p.returncode != 0:
        raise SystemExit(f"framefusion failed: {p.stderr[-2000:]}")
    peak_kib = int(p.stderr.strip().splitlines()[-1])
    return seconds, peak_kib / 1024


def verdicts(out):
    t = pq.read_table(out)
    ids, of, cl = t["id"].to_pylist(), t["duplicate_of"].to_pylist(), t["cluster_id"].to_pylist()
    return {(a, b) for a, b in zip(ids, of) if b is not None}, len(ids), len(set(cl))


def recall(found, groups, ranks):
    planted = hit = 0
    by_item = dict(found)
    for g in groups:
        top = min(g, key=lambda m: ranks[m])
        names = {f"e{m:07d}" for m in g}
        for m in g:
            if m == top:
                continue
            planted += 1
            if by_item.get(f"e{m:07d}") in names:
                hit += 1
    return hit / max(planted, 1), planted


def brute(x, ranks):
    order = np.lexsort((np.arange(len(x)), ranks))
    xs = x[order]
    out = set()
    step = 2048
    for s in range(0, len(xs), step):
        e = min(s + step, len(xs))
        sims = xs[s:e] @ xs[:e].T
        for i in range(s, e):
            if i == 0:
                continue
            row = sims[i - s, :i]
            j = int(np.argmax(row))
            if row[j] >= 1 - EPS:
                out.add((f"e{order[i]:07d}", f"e{order[j]:07d}"))
    return out


data = {}
for n in sizes:
    x, ranks, groups = make(n, n)
    folder = os.path.join(work, f"e{n}")
    write(x, ranks, folder)
    ref = brute(x, ranks) if n <= 100_000 else None
    data[n] = (folder, ranks, groups, ref)
    print(f"{n} embeddings, {sum(len(g) - 1 for g in groups)} planted copies"
          + (f", brute force {len(ref)} pairs" if ref is not None else ""), flush=True)
    del x

times = {n: [] for n in sizes}
for r in range(rounds):
    for n, (folder, ranks, groups, ref) in data.items():
        out = os.path.join(work, f"verdicts-{n}-{r}.parquet")
        seconds, peak = run(folder, out)
        found, rows, clusters = verdicts(out)
        assert rows == n, f"{rows} verdicts for {n} items"
        rate, planted = recall(found, groups, ranks)
        line = f"round {r + 1}: {n}: {seconds:.1f} s, peak {peak:.0f} MiB, {clusters} clusters, recall {rate:.4f} of {planted}"
        if ref is not None:
            differ = len(found ^ ref)
            line += f", {differ} of {len(ref)} pairs differ from brute force ({100 * differ / max(len(ref), 1):.2f}%)"
        print(line, flush=True)
        times[n].append(seconds)

medians = {n: statistics.median(t) for n, t in times.items()}
print("median: " + ", ".join(f"{n} {s:.1f} s" for n, s in medians.items()))
if 100_000 in medians and 1_000_000 in medians:
    print(f"ratio 1000000 / 100000: {medians[1_000_000] / medians[100_000]:.2f}x")
