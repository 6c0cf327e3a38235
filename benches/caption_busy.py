#!/usr/bin/env python3
"""How busy `caption` keeps a model server: the release CLI against the tests' chat
server (framefusion_tests::chat, the chat-server binary: 100 ms per answer), 200 clips of 2 frames at 224 pixels,
caption.concurrency = 16. Prints the share of the time from the first request to the
last answer during which 16 requests were in flight (target: at least 80%).

    python3 benches/caption_busy.py FRAMEFUSION_BINARY CHAT_SERVER_BINARY [CLIPS] [LATENCY_MS] [ROUNDS]

Build the server with `cargo build -p framefusion-tests --bin chat-server`.
"""
import json, os, subprocess, sys, tempfile, time, urllib.request

binary, server_binary = sys.argv[1], sys.argv[2]
clips = int(sys.argv[3]) if len(sys.argv) > 3 else 200
latency = int(sys.argv[4]) if len(sys.argv) > 4 else 100
rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 3
work = tempfile.mkdtemp(prefix="caption-busy-")
video = os.path.join(work, "pattern.mp4")
subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                f"testsrc2=size=320x240:rate=10:duration={clips / 10}", "-pix_fmt", "yuv420p",
                "-c:v", "libx264", video], check=True)
results = []
for r in range(rounds):
    server = subprocess.Popen([server_binary, "test-vlm", "Describe the clip.", "", "2",
                               "224", "168", str(latency), "0"], stdout=subprocess.PIPE, text=True)
    port = int(server.stdout.readline())
    sql = (f"SET caption.endpoint = 'http://127.0.0.1:{port}/v1'; SET caption.model = 'test-vlm'; "
           "SET caption.prompt = 'Describe the clip.'; SET caption.frames = 2; SET caption.size = 224; "
           "SET caption.concurrency = 16; "
           f"SELECT count(caption('{video}', value * 0.1, value * 0.1 + 0.1)) AS n FROM generate_series(0, {clips - 1})")
    started = time.monotonic()
    out = subprocess.run([binary, "sql", sql], capture_output=True, text=True)
    wall = time.monotonic() - started
    stats = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/stats?target=16"))
    server.kill()
    answered = sum(stats["answers"].values())
    results.append(stats["busy"])
    print(f"round {r + 1}: busy {stats['busy'] * 100:.1f}%, max in flight {stats['max_in_flight']}, "
          f"{answered} answered, {len(stats['bad'])} refused, {wall:.2f} s wall (CLI exit {out.returncode})",
          flush=True)
results.sort()
print(f"median busy {results[len(results) // 2] * 100:.1f}% (target >= 80%)")
