"""A stand-in translator with the contract of a Hugging Face Optimum / transformers.js
export of a seq2seq model with its cache (Marian opus-mt's):

    encoder_model.onnx           input_ids [B, S] (int64), attention_mask [B, S] (int64)
                                 -> last_hidden_state [B, S, D]
    decoder_model_merged.onnx    input_ids [B, s], encoder_attention_mask [B, S],
                                 encoder_hidden_states [B, S, D],
                                 past_key_values.{i}.decoder.key / .value [B, heads, P, D/heads],
                                 past_key_values.{i}.encoder.key / .value [B, heads, S, D/heads],
                                 use_cache_branch [1] (bool)
                                 -> logits [B, s, V], present.{i}.decoder.key / .value,
                                    present.{i}.encoder.key / .value
    tokenizer.json               a word-level tokenizer whose post-processor appends </s>
    generation_config.json       Marian's: decoder start = pad, end </s> = 0,
                                 bad_words_ids [[pad]], forced_eos_token_id, renormalize_logits,
                                 num_beams 4
    config.json                  max_position_embeddings and the shapes

Random weights (seeded), real transformer blocks (layer norm, masked multi-head attention,
MLP). As Optimum's merged decoder, it chooses with an `If` on `use_cache_branch` between
its branch with a cache (the self-attention past concatenated with the new keys and
values; the cross-attention keys and values passed through) and its branch without (the
cross-attention keys and values computed from the encoder's states). Padding is masked
in the encoder and the cross-attention, so a text's translation does not depend on the
batch it is in. The end token's logit grows with the position (translations end at
various lengths); the pad token's logit is the largest at some positions, so a loop that
does not ban it (bad_words_ids) generates it.

usage: seq2seq_translator.py OUT_DIR [--layers L] [--encoder-layers L] [--heads H]
       [--hidden D] [--vocab V] [--max-positions N] [--max-length N] [--seed S]
"""

import argparse
import json
import os
import sys

import numpy as np
from onnx import TensorProto, helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vision_encoder_decoder import WORDS, Graph, branch, save  # noqa: E402

I64 = np.int64


def padding_mask(g, mask):
    """attention_mask [B, S] -> an additive [B, 1, 1, S] mask (0 or -1e9)."""
    m = g.op("Cast", [mask], to=TensorProto.FLOAT)
    m = g.op("Mul", [g.op("Sub", [g.const(1.0), m]), g.const(-1e9)])
    return g.op("Unsqueeze", [m, g.const([1, 2], I64)])


def encoder(args, rng):
    g = Graph(rng, args.std)
    d, h = args.hidden, args.heads
    d_head = d // h
    seq = g.op("Gather", [g.op("Shape", ["input_ids"]), g.const(1, I64)])
    pos = g.op("Range", [g.const(0, I64), seq, g.const(1, I64)])
    x = g.op("Gather", [g.weight((args.vocab, d), std=1.0), "input_ids"])
    x = g.op("Add", [x, g.op("Gather", [g.weight((args.max_positions, d), std=1.0), pos])])
    mask = padding_mask(g, "attention_mask")
    for _ in range(args.encoder_layers):
        hn = g.norm(x, d)
        q, k, v = (g.heads(g.linear(hn, d, d), h, d_head) for _ in range(3))
        x = g.op("Add", [x, g.linear(g.merge(g.attend(q, k, v, d_head, mask), d), d, d)])
        x = g.op("Add", [x, g.mlp(g.norm(x, d), d)])
    g.nodes.append(helper.make_node("LayerNormalization",
                                    [x, g.const(np.ones(d)), g.const(np.zeros(d))],
                                    ["last_hidden_state"], axis=-1, epsilon=1e-5))
    b, s = "batch_size", "encoder_sequence_length"
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [b, s]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [b, s])]
    outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [b, s, d])]
    return helper.make_graph(g.nodes, "encoder", inputs, outputs, g.inits)


def decoder(args, rng):
    g = Graph(rng, args.std)
    d, h, v_size = args.hidden, args.heads, args.vocab
    d_head = d // h
    eos, pad = 0, v_size - 1
    past_len = g.op("Gather", [g.op("Shape", ["past_key_values.0.decoder.key"]), g.const(2, I64)])
    start = g.op("Where", ["use_cache_branch", g.op("Unsqueeze", [past_len, g.const([0], I64)]),
                           g.const([0], I64)])
    start = g.op("Squeeze", [start, g.const([0], I64)])
    seq = g.op("Gather", [g.op("Shape", ["input_ids"]), g.const(1, I64)])
    qpos = g.op("Range", [start, g.op("Add", [start, seq]), g.const(1, I64)])
    x = g.op("Gather", [g.weight((v_size, d), std=1.0), "input_ids"])
    x = g.op("Add", [x, g.op("Gather", [g.weight((args.max_positions, d), std=1.0), qpos])])
    cross_mask = padding_mask(g, "encoder_attention_mask")
    enc = "encoder_hidden_states"
    presents = []
    mask = None
    for i in range(args.layers):
        hn = g.norm(x, d)
        q = g.heads(g.linear(hn, d, d), h, d_head)
        k_new = g.heads(g.linear(hn, d, d), h, d_head)
        v_new = g.heads(g.linear(hn, d, d), h, d_head)
        pk, pv = f"present.{i}.decoder.key", f"present.{i}.decoder.value"
        cached = [helper.make_node("Concat", [f"past_key_values.{i}.decoder.key", k_new], [f"cat_k{i}"], axis=2),
                  helper.make_node("Concat", [f"past_key_values.{i}.decoder.value", v_new], [f"cat_v{i}"], axis=2)]
        fresh = [helper.make_node("Identity", [k_new], [f"new_k{i}"]),
                 helper.make_node("Identity", [v_new], [f"new_v{i}"])]
        g.nodes.append(helper.make_node(
            "If", ["use_cache_branch"], [pk, pv],
            then_branch=branch(f"with_past_{i}", cached, [f"cat_k{i}", f"cat_v{i}"]),
            else_branch=branch(f"without_past_{i}", fresh, [f"new_k{i}", f"new_v{i}"])))
        presents += [pk, pv]
        if mask is None:
            total = g.op("Gather", [g.op("Shape", [pk]), g.const(2, I64)])
            kpos = g.op("Range", [g.const(0, I64), total, g.const(1, I64)])
            later = g.op("Greater", [g.op("Unsqueeze", [kpos, g.const([0], I64)]),
                                     g.op("Unsqueeze", [qpos, g.const([1], I64)])])
            mask = g.op("Where", [later, g.const(-1e9), g.const(0.0)])
        x = g.op("Add", [x, g.linear(g.merge(g.attend(q, pk, pv, d_head, mask), d), d, d)])
        # cross-attention: its keys and values computed on the first step, then passed on
        hn = g.norm(x, d)
        std, g.std = g.std, args.cross_std
        q = g.heads(g.linear(hn, d, d), h, d_head)
        outer, g.nodes = g.nodes, []
        ek = g.heads(g.linear(enc, d, d), h, d_head)
        ev = g.heads(g.linear(enc, d, d), h, d_head)
        compute = g.nodes + [helper.make_node("Identity", [ek], [f"enc_k{i}"]),
                             helper.make_node("Identity", [ev], [f"enc_v{i}"])]
        g.nodes = outer
        g.std = std
        ck, cv = f"present.{i}.encoder.key", f"present.{i}.encoder.value"
        passed = [helper.make_node("Identity", [f"past_key_values.{i}.encoder.key"], [f"pass_k{i}"]),
                  helper.make_node("Identity", [f"past_key_values.{i}.encoder.value"], [f"pass_v{i}"])]
        g.nodes.append(helper.make_node(
            "If", ["use_cache_branch"], [ck, cv],
            then_branch=branch(f"cross_past_{i}", passed, [f"pass_k{i}", f"pass_v{i}"]),
            else_branch=branch(f"cross_new_{i}", compute, [f"enc_k{i}", f"enc_v{i}"])))
        presents += [ck, cv]
        x = g.op("Add", [x, g.linear(g.merge(g.attend(q, ck, cv, d_head, cross_mask), d), d, d)])
        x = g.op("Add", [x, g.mlp(g.norm(x, d), d)])
    x = g.norm(x, d)
    out = rng.normal(0, args.out_std, size=(d, v_size)).astype(np.float32)
    out[:, eos] *= args.eos_gain  # where a translation ends depends on its text
    logits = g.op("MatMul", [x, g.const(out)])
    # the end grows likelier with the position; the pad token leads at odd positions
    bias = np.zeros((args.max_positions, v_size), dtype=np.float32)
    bias[:, eos] = args.eos_slope * (np.arange(args.max_positions) - args.eos_at)
    bias[1::2, pad] = 50.0
    logits = g.op("Add", [logits, g.op("Gather", [g.const(bias), qpos])])
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"]))
    b, past, s_enc = "batch_size", "past_decoder_sequence_length", "encoder_sequence_length"
    inputs = [helper.make_tensor_value_info("encoder_attention_mask", TensorProto.INT64, [b, s_enc]),
              helper.make_tensor_value_info("input_ids", TensorProto.INT64, [b, "decoder_sequence_length"]),
              helper.make_tensor_value_info(enc, TensorProto.FLOAT, [b, s_enc, d])]
    for i in range(args.layers):
        for part, length in (("decoder", past), ("encoder", "encoder_sequence_length_out")):
            for kv in ("key", "value"):
                inputs.append(helper.make_tensor_value_info(
                    f"past_key_values.{i}.{part}.{kv}", TensorProto.FLOAT, [b, h, length, d_head]))
    inputs.append(helper.make_tensor_value_info("use_cache_branch", TensorProto.BOOL, [1]))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [b, "decoder_sequence_length", v_size])]
    for p in presents:
        outputs.append(helper.make_tensor_value_info(p, TensorProto.FLOAT, [b, h, "present_sequence_length", d_head]))
    return helper.make_graph(g.nodes, "decoder_merged", inputs, outputs, g.inits)


def tokenizer(vocab):
    # Marian's layout: </s> 0, <unk> 1, words, <pad> last
    words = ["</s>", "<unk>"]
    words += [WORDS[i] if i < len(WORDS) else f"w{i}" for i in range(vocab - 3)]
    words.append("<pad>")
    special = [(0, "</s>"), (1, "<unk>"), (vocab - 1, "<pad>")]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for i, c in special],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}},
                     {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "special_tokens": {"</s>": {"id": "</s>", "ids": [0], "tokens": ["</s>"]}}},
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": {w: i for i, w in enumerate(words)},
                  "unk_token": "<unk>"},
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--encoder-layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--vocab", type=int, default=64)
    p.add_argument("--max-positions", type=int, default=64)
    p.add_argument("--max-length", type=int, default=16)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--eos-slope", type=float, default=2.0)
    p.add_argument("--eos-at", type=float, default=8.0)
    p.add_argument("--eos-gain", type=float, default=6.0)
    p.add_argument("--beams", type=int, default=4)
    args = p.parse_args()
    args.std = 1.0 / np.sqrt(args.hidden)
    args.cross_std = 3 * args.std
    args.out_std = 2.0 / np.sqrt(args.hidden)
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.out, exist_ok=True)
    save(encoder(args, rng), os.path.join(args.out, "encoder_model.onnx"))
    save(decoder(args, rng), os.path.join(args.out, "decoder_model_merged.onnx"))
    pad = args.vocab - 1
    files = {
        "tokenizer.json": tokenizer(args.vocab),
        "generation_config.json": {
            "bad_words_ids": [[pad]], "bos_token_id": 0, "decoder_start_token_id": pad,
            "eos_token_id": 0, "forced_eos_token_id": 0, "max_length": args.max_length,
            "num_beams": args.beams, "pad_token_id": pad, "renormalize_logits": True},
        "config.json": {
            "model_type": "marian", "d_model": args.hidden, "encoder_layers": args.encoder_layers,
            "decoder_layers": args.layers, "encoder_attention_heads": args.heads,
            "decoder_attention_heads": args.heads, "vocab_size": args.vocab,
            "max_position_embeddings": args.max_positions, "pad_token_id": pad,
            "eos_token_id": 0, "decoder_start_token_id": pad},
    }
    for name, value in files.items():
        with open(os.path.join(args.out, name), "w") as f:
            json.dump(value, f, indent=1)


if __name__ == "__main__":
    main()
