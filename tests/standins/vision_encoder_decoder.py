"""A stand-in captioner with the contract of a Hugging Face Optimum / transformers.js
export of a vision-encoder-decoder model (ViT encoder, GPT-2 style decoder):

    encoder_model.onnx           pixel_values [B, 3, H, W] -> last_hidden_state [B, N, D]
    decoder_model_merged.onnx    input_ids [B, S] (int64), encoder_hidden_states [B, N, D],
                                 past_key_values.{i}.key / .value [B, heads, P, D/heads],
                                 use_cache_branch [1] (bool)
                                 -> logits [B, S, V], present.{i}.key / .value [B, heads, P + S, D/heads]
    tokenizer.json               a word-level tokenizer (the `tokenizers` package)
    preprocessor_config.json     ViTImageProcessor: resize, rescale, normalize
    generation_config.json       start, end and pad tokens, max_length, beams, length penalty
    config.json                  the shapes

Random weights (seeded), real transformer blocks (layer norm, multi-head attention, MLP),
so the cost of a step is a real model's at the same shapes. The merged decoder chooses, as
Optimum's does, between its branch with a cache (the past concatenated with the new keys
and values) and its branch without (the past ignored) with an `If` on `use_cache_branch`.
The end-of-text logit grows with the position, so sequences end at different lengths.

usage: vision_encoder_decoder.py OUT_DIR --layers L --heads H --hidden D --vocab V
       --height H --width W --patch P [--encoder-layers L] [--seed S] [--max-length N]
"""

import argparse
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class Graph:
    def __init__(self, rng, std):
        self.nodes = []
        self.inits = []
        self.rng = rng
        self.std = std
        self.n = 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, value, dtype=np.float32, base="c"):
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def weight(self, shape, std=None):
        std = self.std if std is None else std
        return self.const(self.rng.normal(0, std, size=shape).astype(np.float32), base="w")

    def op(self, kind, inputs, **attrs):
        out = self.name(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def linear(self, x, d_in, d_out):
        return self.op("Add", [self.op("MatMul", [x, self.weight((d_in, d_out))]),
                               self.const(np.zeros(d_out))])

    def norm(self, x, d):
        return self.op("LayerNormalization",
                       [x, self.const(np.ones(d)), self.const(np.zeros(d))],
                       axis=-1, epsilon=1e-5)

    def heads(self, x, heads, d_head):
        """[B, S, D] -> [B, heads, S, d_head]"""
        shape = self.const([0, 0, heads, d_head], np.int64)
        return self.op("Transpose", [self.op("Reshape", [x, shape])], perm=[0, 2, 1, 3])

    def merge(self, x, d):
        """[B, heads, S, d_head] -> [B, S, D]"""
        shape = self.const([0, 0, d], np.int64)
        return self.op("Reshape", [self.op("Transpose", [x], perm=[0, 2, 1, 3]), shape])

    def attend(self, q, k, v, d_head, mask=None):
        scores = self.op("MatMul", [q, self.op("Transpose", [k], perm=[0, 1, 3, 2])])
        scores = self.op("Mul", [scores, self.const(1.0 / np.sqrt(d_head))])
        if mask is not None:
            scores = self.op("Add", [scores, mask])
        return self.op("MatMul", [self.op("Softmax", [scores], axis=-1), v])

    def mlp(self, x, d):
        h = self.op("Relu", [self.linear(x, d, 4 * d)])
        return self.linear(h, 4 * d, d)


def encoder(args, rng):
    g = Graph(rng, args.std)
    d, p = args.hidden, args.patch
    n = (args.height // p) * (args.width // p)
    conv = g.op("Conv", ["pixel_values", g.weight((d, 3, p, p)), g.const(np.zeros(d))],
                kernel_shape=[p, p], strides=[p, p])
    flat = g.op("Reshape", [conv, g.const([0, d, -1], np.int64)])
    x = g.op("Transpose", [flat], perm=[0, 2, 1])
    x = g.op("Add", [x, g.weight((n, d))])
    d_head = d // args.heads
    for _ in range(args.encoder_layers):
        h = g.norm(x, d)
        q, k, v = (g.heads(g.linear(h, d, d), args.heads, d_head) for _ in range(3))
        x = g.op("Add", [x, g.linear(g.merge(g.attend(q, k, v, d_head), d), d, d)])
        x = g.op("Add", [x, g.mlp(g.norm(x, d), d)])
    g.nodes.append(helper.make_node("LayerNormalization",
                                    [x, g.const(np.ones(d)), g.const(np.zeros(d))],
                                    ["last_hidden_state"], axis=-1, epsilon=1e-5))
    inputs = [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT,
                                            ["batch_size", 3, args.height, args.width])]
    outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                             ["batch_size", n, d])]
    return helper.make_graph(g.nodes, "encoder", inputs, outputs, g.inits)


def branch(name, nodes, outputs):
    return helper.make_graph(nodes, name, [], [
        helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs])


def decoder(args, rng):
    g = Graph(rng, args.std)
    d, h, v_size = args.hidden, args.heads, args.vocab
    d_head = d // h
    eos = v_size - 1
    # positions: the past's length (0 without the cache) + 0..S
    past_len = g.op("Gather", [g.op("Shape", ["past_key_values.0.key"]), g.const(2, np.int64)])
    start = g.op("Where", ["use_cache_branch", g.op("Unsqueeze", [past_len, g.const([0], np.int64)]),
                           g.const([0], np.int64)])
    start = g.op("Squeeze", [start, g.const([0], np.int64)])
    seq = g.op("Gather", [g.op("Shape", ["input_ids"]), g.const(1, np.int64)])
    end = g.op("Add", [start, seq])
    qpos = g.op("Range", [start, end, g.const(1, np.int64)])
    x = g.op("Gather", [g.weight((v_size, d), std=args.embed_std), "input_ids"])
    x = g.op("Add", [x, g.op("Gather", [g.weight((args.max_positions, d), std=args.embed_std), qpos])])
    enc = "encoder_hidden_states"
    presents = []
    mask = None
    for i in range(args.layers):
        hn = g.norm(x, d)
        q = g.heads(g.linear(hn, d, d), h, d_head)
        k_new = g.heads(g.linear(hn, d, d), h, d_head)
        v_new = g.heads(g.linear(hn, d, d), h, d_head)
        pk, pv = f"present.{i}.key", f"present.{i}.value"
        cached = [helper.make_node("Concat", [f"past_key_values.{i}.key", k_new], [f"cat_k{i}"], axis=2),
                  helper.make_node("Concat", [f"past_key_values.{i}.value", v_new], [f"cat_v{i}"], axis=2)]
        fresh = [helper.make_node("Identity", [k_new], [f"new_k{i}"]),
                 helper.make_node("Identity", [v_new], [f"new_v{i}"])]
        g.nodes.append(helper.make_node(
            "If", ["use_cache_branch"], [pk, pv],
            then_branch=branch(f"with_past_{i}", cached, [f"cat_k{i}", f"cat_v{i}"]),
            else_branch=branch(f"without_past_{i}", fresh, [f"new_k{i}", f"new_v{i}"])))
        presents += [pk, pv]
        if mask is None:
            total = g.op("Gather", [g.op("Shape", [pk]), g.const(2, np.int64)])
            kpos = g.op("Range", [g.const(0, np.int64), total, g.const(1, np.int64)])
            later = g.op("Greater", [g.op("Unsqueeze", [kpos, g.const([0], np.int64)]),
                                     g.op("Unsqueeze", [qpos, g.const([1], np.int64)])])
            mask = g.op("Where", [later, g.const(-1e9), g.const(0.0)])
        x = g.op("Add", [x, g.linear(g.merge(g.attend(q, pk, pv, d_head, mask), d), d, d)])
        # cross-attention over the image (recomputed each step, as GPT-2's is)
        hn = g.norm(x, d)
        std, g.std = g.std, args.cross_std
        q = g.heads(g.linear(hn, d, d), h, d_head)
        ek = g.heads(g.linear(enc, d, d), h, d_head)
        ev = g.heads(g.linear(enc, d, d), h, d_head)
        x = g.op("Add", [x, g.linear(g.merge(g.attend(q, ek, ev, d_head), d), d, d)])
        g.std = std
        x = g.op("Add", [x, g.mlp(g.norm(x, d), d)])
    x = g.norm(x, d)
    logits = g.op("MatMul", [x, g.weight((d, v_size), std=args.out_std)])
    # the end of the text grows likelier with the position
    eos_table = np.zeros((args.max_positions, v_size), dtype=np.float32)
    eos_table[:, eos] = args.eos_slope * (np.arange(args.max_positions) - args.eos_at)
    logits = g.op("Add", [logits, g.op("Gather", [g.const(eos_table), qpos])])
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"]))
    batch, past = "batch_size", "past_sequence_length"
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [batch, "decoder_sequence_length"]),
              helper.make_tensor_value_info(enc, TensorProto.FLOAT, [batch, "encoder_sequence_length", d])]
    for i in range(args.layers):
        for kv in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(
                f"past_key_values.{i}.{kv}", TensorProto.FLOAT, [batch, h, past, d_head]))
    inputs.append(helper.make_tensor_value_info("use_cache_branch", TensorProto.BOOL, [1]))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, "decoder_sequence_length", v_size])]
    for p in presents:
        outputs.append(helper.make_tensor_value_info(p, TensorProto.FLOAT, [batch, h, "present_sequence_length", d_head]))
    return helper.make_graph(g.nodes, "decoder_merged", inputs, outputs, g.inits)


def save(graph, path):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    size = sum(np.prod(i.dims) * 4 for i in graph.initializer)
    if size > 1.5e9:
        onnx.save(model, path, save_as_external_data=True, location=os.path.basename(path) + ".data")
    else:
        onnx.checker.check_model(model)
        onnx.save(model, path)


WORDS = ("a the red blue green small large dog cat car man woman child street field sky "
         "water tree house runs walks sits stands looks plays holds near under over with "
         "and in on at of bright dark slowly quickly two three people bird boat road").split()


def tokenizer(vocab, eos):
    words = [WORDS[i] if i < len(WORDS) else f"w{i}" for i in range(vocab - 1)]
    words.append("<|endoftext|>")
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": eos, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": {w: i for i, w in enumerate(words)},
                  "unk_token": "<|endoftext|>"},
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--encoder-layers", type=int, default=1)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--vocab", type=int, default=48)
    p.add_argument("--height", type=int, default=32)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--max-positions", type=int, default=64)
    p.add_argument("--max-length", type=int, default=16)
    p.add_argument("--std", type=float, default=None)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--cross-std", type=float, default=None)
    p.add_argument("--eos-slope", type=float, default=1.5)
    p.add_argument("--eos-at", type=float, default=8.0)
    args = p.parse_args()
    args.std = args.std if args.std is not None else 1.0 / np.sqrt(args.hidden)
    args.cross_std = args.cross_std if args.cross_std is not None else 3 * args.std
    args.embed_std = 1.0
    args.out_std = 2.0 / np.sqrt(args.hidden)
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.out, exist_ok=True)
    save(encoder(args, rng), os.path.join(args.out, "encoder_model.onnx"))
    save(decoder(args, rng), os.path.join(args.out, "decoder_model_merged.onnx"))
    eos = args.vocab - 1
    files = {
        "tokenizer.json": tokenizer(args.vocab, eos),
        "preprocessor_config.json": {
            "image_processor_type": "ViTImageProcessor", "do_resize": True,
            "size": {"height": args.height, "width": args.width}, "resample": 2,
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
        "generation_config.json": {
            "decoder_start_token_id": eos, "bos_token_id": eos, "eos_token_id": eos,
            "pad_token_id": eos, "max_length": args.max_length, "num_beams": 1,
            "length_penalty": 1.0, "early_stopping": True},
        "config.json": {
            "model_type": "vision-encoder-decoder",
            "encoder": {"model_type": "vit", "hidden_size": args.hidden,
                        "num_hidden_layers": args.encoder_layers, "image_size": [args.height, args.width],
                        "patch_size": args.patch},
            "decoder": {"model_type": "gpt2", "n_layer": args.layers, "n_head": args.heads,
                        "n_embd": args.hidden, "vocab_size": args.vocab,
                        "n_positions": args.max_positions}},
    }
    for name, value in files.items():
        with open(os.path.join(args.out, name), "w") as f:
            json.dump(value, f, indent=1)


if __name__ == "__main__":
    main()
