#!/usr/bin/env python3
"""Generated tokens per second of `caption`'s `onnx` backend against the Python reference
loop (tests/standins/generate_reference.py: numpy + onnxruntime + tokenizers, greedy as
generate() does it, the cache reused between steps), with the same model, the same
frames, the same batch, in the same run (alternating rounds).

The model is a stand-in of ViT-GPT2's shapes (tests/standins/vision_encoder_decoder.py:
a 12-layer ViT encoder at 224 x 224, patch 16; a 12-layer GPT-2 style merged decoder with
12 heads, hidden 768, vocabulary 50,257, cross-attention over the 196 patches recomputed
each step as GPT-2's is; random weights, about 1.2 GB), built once into
$FRAMEFUSION_HOME/bench/vit-gpt2-standin.

Both sides are timed end to end as a user runs them: framefusion's release CLI
(`framefusion sql`, one query captioning every clip) and the Python script (one
process), each from its start to its exit, model loading and frame decoding included.
Both must give the same captions (checked); the tokens counted are the Python loop's
(the end token included when a caption ended on it).

    python3 benches/caption_tokens.py FRAMEFUSION_BINARY [CLIPS] [BATCH] [ROUNDS] [BEAMS]
"""
import json, os, subprocess, sys, tempfile, time

binary = sys.argv[1]
clips = int(sys.argv[2]) if len(sys.argv) > 2 else 16
batch = int(sys.argv[3]) if len(sys.argv) > 3 else 8
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
beams = int(sys.argv[5]) if len(sys.argv) > 5 else 1
here = os.path.dirname(os.path.abspath(__file__))
standins = os.path.join(here, "..", "tests", "standins")
home = os.environ.get("FRAMEFUSION_HOME", os.path.expanduser("~/.cache/framefusion"))
python = os.path.join(home, "venv", "bin", "python")
model = os.path.join(home, "bench", "vit-gpt2-standin")
if not os.path.exists(os.path.join(model, "generation_config.json")):
    print(f"building the stand-in into {model} ...", flush=True)
    subprocess.run([python, os.path.join(standins, "vision_encoder_decoder.py"), model,
                    "--layers", "12", "--encoder-layers", "12", "--heads", "12", "--hidden", "768",
                    "--vocab", "50257", "--height", "224", "--width", "224", "--patch", "16",
                    "--max-positions", "1024", "--max-length", "21", "--std", "0.02",
                    "--cross-std", "0.06", "--eos-slope", "2.0", "--eos-at", "12"], check=True)
work = tempfile.mkdtemp(prefix="caption-tokens-")
video = os.path.join(work, "pattern.mkv")
seconds = clips * 0.5 + 1
subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                f"testsrc2=size=224x224:rate=10:duration={seconds}", "-c:v", "libx264rgb", "-qp", "0",
                "-pix_fmt", "rgb24", video], check=True)
spans = [(i * 0.5, i * 0.5 + 0.5) for i in range(clips)]


def python_round():
    started = time.monotonic()
    out = subprocess.run([python, os.path.join(standins, "generate_reference.py"), model, video, "10",
                          json.dumps([[s, e, 2] for s, e in spans]), "--beams", str(beams),
                          "--batch", str(batch)], check=True, capture_output=True, text=True)
    wall = time.monotonic() - started
    got = json.loads(out.stdout)
    return wall, got


def framefusion_round():
    values = ", ".join(f"({i}, {s}, {e})" for i, (s, e) in enumerate(spans))
    sql = (f"SET caption.backend = 'onnx'; SET caption.model = '{model}'; SET caption.frames = 2; "
           f"SET caption.batch_size = {batch}; SET caption.beams = {beams}; "
           f"SELECT i, caption('{video}', s, e) AS c FROM (VALUES {values}) t(i, s, e) ORDER BY i")
    started = time.monotonic()
    out = subprocess.run([binary, "sql", "--no-catalog", "--format", "json", sql],
                         capture_output=True, text=True)
    wall = time.monotonic() - started
    if out.returncode != 0:
        sys.exit(f"framefusion failed: {out.stderr}")
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip().startswith("{")]
    return wall, [r["c"] for r in rows]


ratios = []
for r in range(rounds):
    py_wall, py = python_round()
    ff_wall, texts = framefusion_round()
    if texts != py["texts"]:
        sys.exit(f"round {r + 1}: the captions differ:\nframefusion {texts}\npython      {py['texts']}")
    tokens = py["generated"]
    py_rate, ff_rate = tokens / py_wall, tokens / ff_wall
    ratios.append(ff_rate / py_rate)
    print(f"round {r + 1}: {tokens} tokens; python {py_wall:.2f} s wall ({py_rate:.1f} tokens/s; "
          f"{py['seconds']:.2f} s in its encoder and decoder runs), framefusion {ff_wall:.2f} s wall "
          f"({ff_rate:.1f} tokens/s): {ff_rate / py_rate:.3f}x", flush=True)
ratios.sort()
print(f"median framefusion / python tokens per second: {ratios[len(ratios) // 2]:.3f}x (target >= 1.0)")
