"""The reference translation loop framefusion's `translate` (`onnx` backend) is compared
with: numpy + onnxruntime + the `tokenizers` package over an Optimum export of a seq2seq
model (Marian opus-mt's contract), the way Hugging Face does it.

- Each text (after PREFIX) is encoded by the tokenizer with its special tokens (Marian's
  post-processor appends `</s>`), cut to config.json's max_position_embeddings.
- Texts are encoded in batches of B, in the order given, padded with the pad token to the
  batch's longest and masked (`attention_mask`), which the decoder's cross-attention
  gets too (`encoder_attention_mask`).
- Greedy and beam search as generate() does them (generate_reference.py), with the
  processors the generation config names: `bad_words_ids`, `forced_eos_token_id`,
  `renormalize_logits`.

Prints JSON: {"tokens": [...], "texts": [...], "generated": N, "seconds": S}.

usage: translate_reference.py MODEL_DIR TEXTS_JSON_FILE [--beams K] [--max-new N]
       [--batch B] [--prefix P] [--threads T]
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from generate_reference import Decoder, beam, greedy, load  # noqa: E402


def tokens(tok, text, limit):
    enc = tok.encode(text, add_special_tokens=True)
    ids = list(enc.ids)
    if limit and len(ids) > limit:
        special = enc.special_tokens_mask
        closing = 0
        while closing < len(special) and special[len(special) - 1 - closing] == 1:
            closing += 1
        closing = min(closing, limit)
        ids = ids[:limit - closing] + ids[len(ids) - closing:]
    return ids


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("texts")
    p.add_argument("--beams", type=int, default=0)
    p.add_argument("--max-new", type=int, default=0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--prefix", default="")
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    gen = load(os.path.join(a.model, "generation_config.json"))
    config = os.path.join(a.model, "config.json")
    limit = load(config).get("max_position_embeddings") if os.path.exists(config) else None
    tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    opts = ort.SessionOptions()
    if a.threads:
        opts.intra_op_num_threads = a.threads
    encoder = ort.InferenceSession(os.path.join(a.model, "encoder_model.onnx"), opts,
                                   providers=["CPUExecutionProvider"])
    dec = Decoder(os.path.join(a.model, "decoder_model_merged.onnx"), opts)
    texts = load(a.texts)
    k = a.beams or int(gen.get("num_beams", 1))
    max_new = int(gen.get("max_length", 20)) - 1
    if a.max_new:
        max_new = min(max_new, a.max_new)
    pad = gen["pad_token_id"]
    out_tokens, seconds, generated = [], 0.0, 0
    for at in range(0, len(texts), a.batch):
        batch = [tokens(tok, a.prefix + t, limit) for t in texts[at:at + a.batch]]
        seq = max(len(t) for t in batch)
        ids = np.full((len(batch), seq), pad, np.int64)
        mask = np.zeros((len(batch), seq), np.int64)
        for i, t in enumerate(batch):
            ids[i, :len(t)] = t
            mask[i, :len(t)] = 1
        t0 = time.perf_counter()
        enc = encoder.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})[0]
        if k == 1:
            out = greedy(dec, enc, gen, max_new, mask)
        else:
            out = beam(dec, enc, gen, max_new, k, mask)
        seconds += time.perf_counter() - t0
        generated += sum(len(t) for t in out)
        out_tokens += out
    texts = [tok.decode(t, skip_special_tokens=True) for t in out_tokens]
    print(json.dumps({"tokens": out_tokens, "texts": texts, "generated": generated,
                      "seconds": seconds}))


if __name__ == "__main__":
    main()
