#!/usr/bin/env python3
"""Perceptual dedup at corpus scale: `hash_pairs` over 100,000 and 1,000,000 64-bit hashes
on the release CLI, radius 10, under a 2 GiB memory limit.

The hashes are uniform random 64-bit values (as pHashes of unrelated clips are, to a first
approximation) with planted near copies: 5% of the items are copies of an earlier item
with 0 to 12 random bits flipped (those beyond 10 must not be found). They are written as
Parquet (`id` text, `phash` BIGINT) in three files, and framefusion is timed end to end as
a user runs it: `framefusion sql` creating the table and writing every pair to Parquet
with `COPY`, from its start to its exit.

Checked each round: on the 100,000 set, the pairs equal a brute-force comparison of every
pair (numpy: XOR and popcount, chunked); on both sets, every planted pair within the
radius is found. Reported: seconds per size (median of the rounds, sizes alternating),
and the 1,000,000 run's time over the 100,000 run's.

    python3 benches/dedup_hashes.py FRAMEFUSION_BINARY [ROUNDS]
"""
import os, statistics, subprocess, sys, tempfile, time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

binary = sys.argv[1]
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
RADIUS = 10
work = tempfile.mkdtemp(prefix="dedup-hashes-")


def make(n, seed):
    rng = np.random.default_rng(seed)
    planted = n // 20
    base = rng.integers(0, 2**63, size=n - planted, dtype=np.int64).view(np.uint64)
    base ^= rng.integers(0, 2, size=n - planted, dtype=np.uint64) << np.uint64(63)
    sources = rng.integers(0, n - planted, size=planted)
    copies = base[sources].copy()
    distances = rng.integers(0, 13, size=planted)
    for k in range(planted):
        bits = rng.choice(64, size=distances[k], replace=False)
        for b in bits:
            copies[k] ^= np.uint64(1) << np.uint64(b)
    hashes = np.concatenate([base, copies])
    planted_pairs = {(int(s), n - planted + k) for k, s in enumerate(sources) if distances[k] <= RADIUS}
    return hashes, planted_pairs


def write(hashes, folder):
    os.makedirs(folder, exist_ok=True)
    ids = np.array([f"h{i:07d}" for i in range(len(hashes))])
    signed = hashes.view(np.int64)
    for part, chunk in enumerate(np.array_split(np.arange(len(hashes)), 3)):
        table = pa.table({"id": ids[chunk], "phash": signed[chunk]})
        pq.write_table(table, os.path.join(folder, f"part{part}.parquet"))


def brute(hashes):
    out = set()
    step = 2048
    for start in range(0, len(hashes), step):
        block = hashes[start:start + step]
        d = np.bitwise_count(block[:, None] ^ hashes[None, :])
        rows, cols = np.nonzero(d <= RADIUS)
        for r, c in zip(rows, cols):
            i = start + int(r)
            if int(c) > i:
                out.add((f"h{i:07d}", f"h{int(c):07d}", int(d[r, c])))
    return out


def run(folder, out):
    sql = (f"SET datafusion.runtime.memory_limit = '2G'; "
           f"CREATE EXTERNAL TABLE hashes STORED AS PARQUET LOCATION '{folder}/'; "
           f"COPY (SELECT p['a'] AS a, p['b'] AS b, p['distance'] AS distance "
           f"FROM (SELECT unnest(hash_pairs(id, phash, {RADIUS})) AS p FROM hashes)) "
           f"TO '{out}' STORED AS PARQUET")
    started = time.monotonic()
    subprocess.run([binary, "sql", "--no-catalog", sql], check=True, capture_output=True)
    return time.monotonic() - started


def found(out):
    t = pq.read_table(out)
    return set(zip(t["a"].to_pylist(), t["b"].to_pylist(), t["distance"].to_pylist()))


sets = {}
for n, seed in ((100_000, 1), (1_000_000, 2)):
    hashes, planted = make(n, seed)
    folder = os.path.join(work, f"h{n}")
    write(hashes, folder)
    sets[n] = (hashes, planted, folder)
    print(f"{n} hashes, {len(planted)} planted pairs within {RADIUS}", flush=True)

reference = brute(sets[100_000][0])
print(f"brute force on 100000: {len(reference)} pairs", flush=True)
times = {n: [] for n in sets}
for r in range(rounds):
    for n, (hashes, planted, folder) in sets.items():
        out = os.path.join(work, f"pairs-{n}-{r}.parquet")
        seconds = run(folder, out)
        pairs = found(out)
        ids = {(a, b) for a, b, _ in pairs}
        missing = [p for p in planted if (f"h{p[0]:07d}", f"h{p[1]:07d}") not in ids
                   and (f"h{p[1]:07d}", f"h{p[0]:07d}") not in ids]
        assert not missing, f"{n}: {len(missing)} planted pairs not found"
        if n == 100_000:
            assert pairs == reference, f"differs from brute force: {len(pairs ^ reference)} pairs"
        times[n].append(seconds)
        print(f"round {r + 1}: {n}: {seconds:.2f} s, {len(pairs)} pairs", flush=True)

small, large = statistics.median(times[100_000]), statistics.median(times[1_000_000])
print(f"median: 100000 {small:.2f} s, 1000000 {large:.2f} s, ratio {large / small:.2f}x")
