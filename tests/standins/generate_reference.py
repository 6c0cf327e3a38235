"""The reference captioning loop framefusion's `caption` (`onnx` backend) is compared with:
numpy + onnxruntime + the `tokenizers` package over an Optimum export of a
vision-encoder-decoder model, the way Hugging Face does it.

- Frames: ffmpeg decodes the video to RGB; frame `i` of a clip of `n` frames over
  [start, end) is the first at or after start + i * (end - start) / n (constant rate).
- Preprocessing as ViTImageProcessor from preprocessor_config.json: resize (PIL, the
  configured resample) when the size differs, rescale in float64 then float32, normalise
  with float32 mean and std, channels first.
- The encoder runs on every frame of a batch of clips; a clip's encoder states are the
  mean of its frames' (summed in frame order, then divided).
- Greedy as generate() does it (argmax, finished sequences padded); beam search as
  generate()'s beam scorer does it (log-softmax in float64, 2 * beams candidates, an end
  token among the first `beams` candidates closes a hypothesis scored
  sum / generated_len ** length_penalty, early_stopping True or False as
  generation_config.json says). The cache is reused between steps (the merged decoder's
  `use_cache_branch`).

Tokens are the generated ids after the start token, with the end token when a sequence
ended on it. Prints JSON: {"tokens": [...], "texts": [...], "generated": N, "seconds": S}
where S is the time of the encoder and decoder runs (not the decoding of the video).

usage: generate_reference.py MODEL_DIR VIDEO FPS CLIPS_JSON [--beams K] [--max-new N]
       [--batch B] [--threads T]
"""

import argparse
import json
import math
import os
import subprocess
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def load(path):
    with open(path) as f:
        return json.load(f)


def frames_of(video, width, height):
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", video, "-f", "rawvideo", "-pix_fmt",
                          "rgb24", "pipe:"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def preprocess(frame, cfg):
    from PIL import Image
    size = cfg["size"]
    h, w = size["height"], size["width"]
    if cfg.get("do_resize", True) and frame.shape[:2] != (h, w):
        frame = np.asarray(Image.fromarray(frame).resize((w, h), resample=cfg.get("resample", 2)))
    x = frame
    if cfg.get("do_rescale", True):
        x = (x.astype(np.float64) * cfg.get("rescale_factor", 1 / 255)).astype(np.float32)
    if cfg.get("do_normalize", True):
        mean = np.array(cfg["image_mean"], dtype=np.float32)
        std = np.array(cfg["image_std"], dtype=np.float32)
        x = (x - mean) / std
    return x.transpose(2, 0, 1)


class Decoder:
    def __init__(self, path, opts):
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.past = [i for i in self.session.get_inputs() if i.name.startswith("past_key_values.")]
        self.layout = {i.name: i.shape for i in self.past}
        self.masks = any(i.name == "encoder_attention_mask" for i in self.session.get_inputs())

    def empty_past(self, batch):
        return {name: np.zeros((batch, shape[1], 0, shape[3]), np.float32)
                for name, shape in self.layout.items()}

    def step(self, ids, enc, past, cached, mask=None):
        feed = {"input_ids": ids, "encoder_hidden_states": enc,
                "use_cache_branch": np.array([cached])}
        if self.masks:
            feed["encoder_attention_mask"] = mask
        feed.update(past)
        names = [o.name for o in self.session.get_outputs()]
        out = dict(zip(names, self.session.run(None, feed)))
        present = {name: out[name.replace("past_key_values.", "present.")] for name in self.layout}
        return out["logits"][:, -1, :], present


def process(scores, step, max_new, gen, renormalize):
    """The logits processors generate() builds from the generation config: bad_words_ids
    of one token, forced_eos_token_id on the last step, renormalize_logits (beams)."""
    scores = scores.astype(np.float64)
    bad = [w[0] for w in gen.get("bad_words_ids") or [] if len(w) == 1]
    if bad:
        scores[:, bad] = -np.inf
    forced = gen.get("forced_eos_token_id")
    if forced is not None and step + 1 == max_new:
        scores[:, :] = -np.inf
        scores[:, forced] = 0.0
    if renormalize and gen.get("renormalize_logits"):
        scores = log_softmax(scores)
    return scores


def greedy(dec, enc, gen, max_new, mask=None):
    b = enc.shape[0]
    start, eos, pad = gen["decoder_start_token_id"], gen["eos_token_id"], gen["pad_token_id"]
    ids = np.full((b, 1), start, np.int64)
    out = [[] for _ in range(b)]
    alive = np.ones(b, bool)
    past, cached = dec.empty_past(b), False
    for step in range(max_new):
        logits, past = dec.step(ids[:, -1:], enc, past, cached, mask)
        cached = True
        nxt = process(logits, step, max_new, gen, False).argmax(axis=-1)
        nxt = np.where(alive, nxt, pad)
        for i in range(b):
            if alive[i]:
                out[i].append(int(nxt[i]))
        alive &= nxt != eos
        ids = np.concatenate([ids, nxt[:, None]], axis=1)
        if not alive.any():
            break
    return out


class Hyps:
    def __init__(self, k, lp, early):
        self.k, self.lp, self.early = k, lp, early
        self.beams = []
        self.worst = 1e9

    def add(self, hyp, total, generated):
        score = total / (max(generated, 1) ** self.lp)
        if len(self.beams) < self.k or score > self.worst:
            self.beams.append((score, hyp))
            if len(self.beams) > self.k:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst = ranked[1][0]
            else:
                self.worst = min(score, self.worst)

    def done(self, best, generated):
        if len(self.beams) < self.k:
            return False
        if self.early:
            return True
        return self.worst >= best / (max(generated, 1) ** self.lp)


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def beam(dec, enc, gen, max_new, k, mask=None):
    b = enc.shape[0]
    start, eos = gen["decoder_start_token_id"], gen["eos_token_id"]
    lp = float(gen.get("length_penalty", 1.0))
    early = gen.get("early_stopping", False)
    if early not in (True, False):
        raise SystemExit("early_stopping 'never' is not supported")
    enc = np.repeat(enc, k, axis=0)
    mask = None if mask is None else np.repeat(mask, k, axis=0)
    seqs = [[] for _ in range(b * k)]
    scores = np.full((b, k), -1e9)
    scores[:, 0] = 0.0
    hyps = [Hyps(k, lp, early) for _ in range(b)]
    done = [False] * b
    past, cached = dec.empty_past(b * k), False
    last = np.full((b * k, 1), start, np.int64)
    for step in range(max_new):
        logits, past = dec.step(last, enc, past, cached, mask)
        cached = True
        v = logits.shape[-1]
        cand = process(log_softmax(logits), step, max_new, gen, True)
        cand = (cand + scores.reshape(-1, 1)).reshape(b, k * v)
        order = np.argsort(-cand, axis=1, kind="stable")[:, :2 * k]
        new_scores = np.zeros((b, k))
        new_tokens = np.full((b, k), gen["pad_token_id"], np.int64)
        origin = np.zeros((b, k), np.int64)
        generated = step  # tokens generated before this one
        for i in range(b):
            if done[i]:
                origin[i] = np.arange(k)
                continue
            j = 0
            for rank, flat in enumerate(order[i]):
                src, token = divmod(int(flat), v)
                score = cand[i, flat]
                if token == eos:
                    if rank >= k:
                        continue
                    hyps[i].add(seqs[i * k + src] + [eos], score, generated)
                else:
                    new_scores[i, j], new_tokens[i, j], origin[i, j] = score, token, src
                    j += 1
                if j == k:
                    break
            done[i] = done[i] or hyps[i].done(cand[i, order[i, 0]], generated)
        rows = (np.arange(b)[:, None] * k + origin).reshape(-1)
        seqs = [seqs[r] + [int(t)] for r, t in zip(rows, new_tokens.reshape(-1))]
        scores = new_scores
        past = {name: value[rows] for name, value in past.items()}
        last = new_tokens.reshape(-1, 1)
        if all(done):
            break
    for i in range(b):
        if done[i]:
            continue
        for j in range(k):
            hyps[i].add(seqs[i * k + j], scores[i, j], len(seqs[i * k + j]))
    best = []
    for h in hyps:
        ranked = sorted(h.beams, key=lambda x: x[0])
        best.append(ranked[-1][1])
    return best


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("video")
    p.add_argument("fps", type=float)
    p.add_argument("clips")
    p.add_argument("--beams", type=int, default=0)
    p.add_argument("--max-new", type=int, default=0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    pre = load(os.path.join(a.model, "preprocessor_config.json"))
    gen = load(os.path.join(a.model, "generation_config.json"))
    tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    opts = ort.SessionOptions()
    if a.threads:
        opts.intra_op_num_threads = a.threads
    encoder = ort.InferenceSession(os.path.join(a.model, "encoder_model.onnx"), opts,
                                   providers=["CPUExecutionProvider"])
    dec = Decoder(os.path.join(a.model, "decoder_model_merged.onnx"), opts)
    probe = json.loads(subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                                       "stream=width,height", "-of", "json", a.video],
                                      check=True, capture_output=True).stdout)["streams"][0]
    frames = frames_of(a.video, probe["width"], probe["height"])
    clips = json.loads(a.clips)
    k = a.beams or int(gen.get("num_beams", 1))
    max_new = int(gen.get("max_length", 20)) - 1
    if a.max_new:
        max_new = min(max_new, a.max_new)
    tokens, seconds, generated = [], 0.0, 0
    for at in range(0, len(clips), a.batch):
        batch = clips[at:at + a.batch]
        pixels = []
        for start, end, n in batch:
            step = (end - start) / n
            for i in range(n):
                index = min(int(math.ceil((start + i * step) * a.fps - 1e-9)), len(frames) - 1)
                pixels.append(preprocess(frames[index], pre))
        x = np.ascontiguousarray(np.stack(pixels))
        t0 = time.perf_counter()
        states = encoder.run(["last_hidden_state"], {"pixel_values": x})[0]
        pooled, row = [], 0
        for _, _, n in batch:
            acc = states[row].copy()
            for f in range(1, n):
                acc += states[row + f]
            pooled.append(acc / np.float32(n))
            row += n
        enc = np.ascontiguousarray(np.stack(pooled))
        out = greedy(dec, enc, gen, max_new) if k == 1 else beam(dec, enc, gen, max_new, k)
        seconds += time.perf_counter() - t0
        generated += sum(len(t) for t in out)
        tokens += out
    texts = [tok.decode(t, skip_special_tokens=True) for t in tokens]
    print(json.dumps({"tokens": tokens, "texts": texts, "generated": generated, "seconds": seconds}))


if __name__ == "__main__":
    main()
