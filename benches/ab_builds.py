#!/usr/bin/env python3
"""Two framefusion builds side by side, for a change that must not cost speed.

    python3 benches/ab_builds.py BASE_BINARY NEW_BINARY [ROUNDS] [--long]

Runs the jobs of benches/benches/curation_floor.rs (examples/shots_text.sql and
examples/curate.sql through `framefusion run` on the four sample videos) and of
benches/benches/shots.rs (`detect_shots`, exact and fast, on the trailer and the
10-minute bbb.mp4) with each binary, in alternating rounds (the order swapped every
round: this machine's speed drifts within minutes), and prints each command's median
wall time per binary and their ratio; shot counts must agree. Build the two binaries
with `cargo build --release -p framefusion-cli` at each commit (a git worktree for the
older one) and copy each out of the target folder before building the other.
With --long, also examples/shots_text.sql on the 10-minute bbb.mp4 alone (about two
minutes a run).
"""
import os, shutil, subprocess, sys, tempfile, time, statistics
args = [a for a in sys.argv[1:] if a != "--long"]
long_job = "--long" in sys.argv[1:]
bins = {"base": args[0], "new": args[1]}
rounds = int(args[2]) if len(args) > 2 else 3
corpus = tempfile.mkdtemp(prefix="ab-corpus-")
home = os.environ.get("FRAMEFUSION_HOME", os.path.expanduser("~/.cache/framefusion"))
for name in ["bikes.mp4", "trailer_bbb.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"]:
    src, dst = os.path.join(home, "corpus", name), os.path.join(corpus, name)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy(src, dst)
bbb = os.path.join(home, "bench", "bbb.mp4")
trailer = os.path.join(home, "corpus", "trailer_bbb.mp4")
work = tempfile.mkdtemp(prefix="ab-")
jobs_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")
cats = {}
for name, b in bins.items():
    cat = os.path.join(work, f"{name}.catalog.json")
    subprocess.run([b, "sql", "--catalog", cat, f"CREATE EXTERNAL TABLE raw STORED AS VIDEO LOCATION '{corpus}'"], check=True, capture_output=True)
    cats[name] = cat
long_corpus = tempfile.mkdtemp(prefix="ab-long-")
long_cats = {}
if long_job:
    try:
        os.link(bbb, os.path.join(long_corpus, "bbb.mp4"))
    except OSError:
        shutil.copy(bbb, os.path.join(long_corpus, "bbb.mp4"))
    for name, b in bins.items():
        cat = os.path.join(work, f"{name}.long.catalog.json")
        subprocess.run([b, "sql", "--catalog", cat, f"CREATE EXTERNAL TABLE raw STORED AS VIDEO LOCATION '{long_corpus}'"], check=True, capture_output=True)
        long_cats[name] = cat
def timed(cmd):
    t = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.monotonic() - t
    if r.returncode != 0:
        print("FAILED", cmd, r.stderr[-2000:], file=sys.stderr)
        sys.exit(1)
    return dt, r.stdout
tasks = {
    "shots_text (4 videos)": lambda b, c, o: [b, "run", f"{jobs_dir}/shots_text.sql", "--output", o, "--catalog", c, "--quiet"],
    "curate (4 videos)": lambda b, c, o: [b, "run", f"{jobs_dir}/curate.sql", "--output", o, "--catalog", c, "--quiet"],
    "detect_shots trailer": lambda b, c, o: [b, "sql", "--catalog", c, f"SELECT cardinality(detect_shots(p)) FROM (VALUES ('{trailer}')) t(p)"],
    "detect_shots bbb 10 min": lambda b, c, o: [b, "sql", "--catalog", c, f"SELECT cardinality(detect_shots(p)) FROM (VALUES ('{bbb}')) t(p)"],
    "detect_shots fast bbb": lambda b, c, o: [b, "sql", "--catalog", c, f"SELECT cardinality(detect_shots(p, 'mode=fast')) FROM (VALUES ('{bbb}')) t(p)"],
}
if long_job:
    tasks["shots_text bbb.mp4 (10 min)"] = lambda b, c, o: [b, "run", f"{jobs_dir}/shots_text.sql", "--output", o, "--catalog", long_cats[next(n for n, x in bins.items() if x == b)], "--quiet"]
times = {t: {n: [] for n in bins} for t in tasks}
outs = {t: {} for t in tasks}
n = 0
for r in range(rounds):
    order = ["base", "new"] if r % 2 == 0 else ["new", "base"]
    for task, make in tasks.items():
        for name in order:
            n += 1
            out = os.path.join(work, f"out{n}")
            dt, stdout = timed(make(bins[name], cats[name], out))
            times[task][name].append(dt)
            outs[task][name] = stdout.strip()[-200:]
    print(f"round {r+1} done", flush=True)
print(f"{'task':<26} {'base median':>12} {'new median':>11} {'new/base':>9}  rounds (base | new)")
for task in tasks:
    b, nw = statistics.median(times[task]["base"]), statistics.median(times[task]["new"])
    print(f"{task:<26} {b:11.2f}s {nw:10.2f}s {nw/b:8.3f}x  {' '.join(f'{x:.2f}' for x in times[task]['base'])} | {' '.join(f'{x:.2f}' for x in times[task]['new'])}")
    if "detect_shots" in task and outs[task]["base"] != outs[task]["new"]:
        print("   answers differ:", outs[task])

