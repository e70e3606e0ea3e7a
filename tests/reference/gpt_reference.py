#!/usr/bin/env python3
"""Reference implementation for the golden test of cerberus's decoder-only Transformer.

An independent GPT-style language model written with PyTorch tensor operations (no torch.nn
modules, so every formula is spelled out here), run in float64 on fixed random weights. It writes
one safetensors file per configuration holding the weights under cerberus's parameter names, the
inputs, and what the C++ model must reproduce: the logits, the loss and the gradient of the loss
with respect to every parameter (`grad.<name>`).

CI never runs this script: the fixtures it wrote are committed in tests/reference/fixtures/ and
tests/nn/test_golden.cpp reads them. Regenerate with Debian's python3-torch and python3-numpy:

    /usr/bin/python3 tests/reference/gpt_reference.py tests/reference/fixtures

Shapes: B batch, T time, C d_model, H heads, Hkv key/value heads, D head dim, V vocab, F d_ff.
"""
import json
import math
import struct
import sys
from pathlib import Path

import numpy as np
import torch

torch.set_default_dtype(torch.float64)

CONFIGS = {
    # GPT-2 shape: LayerNorm with bias, GELU (tanh) MLP, learned positions, tied LM head.
    "gpt_tiny": dict(vocab_size=37, d_model=16, n_layers=2, n_heads=2, n_kv_heads=2, d_ff=64,
                     max_seq_len=12, norm="layer", mlp="gelu", position="learned",
                     tie_embeddings=True, bias=True),
    # Llama shape: RMSNorm, SwiGLU, rotary positions, one key/value head for four query heads,
    # no biases, untied LM head.
    "llama_tiny": dict(vocab_size=41, d_model=32, n_layers=2, n_heads=4, n_kv_heads=1, d_ff=48,
                       max_seq_len=16, norm="rms", mlp="swiglu", position="rope",
                       tie_embeddings=False, bias=False),
    # Vaswani positions, grouped-query attention (2 key/value heads for 4), untied head.
    "sinusoidal_tiny": dict(vocab_size=29, d_model=24, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=40,
                            max_seq_len=10, norm="layer", mlp="gelu", position="sinusoidal",
                            tie_embeddings=False, bias=True),
}
for _cfg in CONFIGS.values():  # the remaining fields of cerberus::nn::TransformerConfig
    _cfg.update(dropout=0.0, norm_eps=1e-5, gelu_approximation="tanh", rope_theta=10000.0,
                n_encoder_layers=0)
BATCH, TIME, IGNORE_INDEX = 2, 9, -100


def make_parameters(cfg, gen):
    """name -> tensor, in cerberus's naming contract (include/cerberus/nn/)."""
    V, C, F = cfg["vocab_size"], cfg["d_model"], cfg["d_ff"]
    D = C // cfg["n_heads"]
    kv = cfg["n_kv_heads"] * D

    def randn(*shape, std=0.3):
        return (torch.randn(*shape, generator=gen) * std).requires_grad_()

    def norm_params(prefix):
        p = {prefix + ".weight": (1.0 + torch.randn(C, generator=gen) * 0.1).requires_grad_()}
        if cfg["norm"] == "layer" and cfg["bias"]:
            p[prefix + ".bias"] = randn(C, std=0.1)
        return p

    def linear(prefix, out_features, in_features):
        p = {prefix + ".weight": randn(out_features, in_features, std=1.0 / math.sqrt(in_features))}
        if cfg["bias"]:
            p[prefix + ".bias"] = randn(out_features, std=0.1)
        return p

    params = {"decoder.embed_tokens.weight": randn(V, C, std=0.5)}
    if cfg["position"] == "learned":
        params["decoder.embed_positions.weight"] = randn(cfg["max_seq_len"], C, std=0.5)
    for i in range(cfg["n_layers"]):
        layer = f"decoder.layers.{i}"
        params.update(norm_params(layer + ".attn_norm"))
        params.update(linear(layer + ".attn.q_proj", C, C))
        params.update(linear(layer + ".attn.k_proj", kv, C))
        params.update(linear(layer + ".attn.v_proj", kv, C))
        params.update(linear(layer + ".attn.o_proj", C, C))
        params.update(norm_params(layer + ".mlp_norm"))
        if cfg["mlp"] == "swiglu":
            params.update(linear(layer + ".mlp.gate_proj", F, C))
        params.update(linear(layer + ".mlp.up_proj", F, C))
        params.update(linear(layer + ".mlp.down_proj", C, F))
    params.update(norm_params("decoder.final_norm"))
    if not cfg["tie_embeddings"]:
        params["lm_head.weight"] = randn(V, C, std=1.0 / math.sqrt(C))
    return params


def norm(cfg, p, prefix, x):
    w = p[prefix + ".weight"]
    if cfg["norm"] == "rms":
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + cfg["norm_eps"]) * w
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased, as in LayerNorm
    y = (x - mean) * torch.rsqrt(var + cfg["norm_eps"]) * w
    return y + p[prefix + ".bias"] if prefix + ".bias" in p else y


def linear(p, prefix, x):
    y = x @ p[prefix + ".weight"].T
    return y + p[prefix + ".bias"] if prefix + ".bias" in p else y


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def rope(cfg, x):
    """Rotary positions on [B, H, T, D], rotating the halves (x1, x2) = (x[..., :D/2], x[..., D/2:])."""
    T, D = x.shape[-2], x.shape[-1]
    inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, D, 2) / D))
    angles = torch.arange(T)[:, None] * inv_freq[None, :]          # [T, D/2]
    cos, sin = torch.cos(angles), torch.sin(angles)
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def sinusoidal(T, C):
    """PE[t, 2i] = sin(t / 10000^(2i/C)), PE[t, 2i+1] = cos(t / 10000^(2i/C))."""
    pe = torch.zeros(T, C)
    angle = torch.arange(T)[:, None] / (10000.0 ** (torch.arange(0, C, 2) / C))[None, :]
    pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)
    return pe


def attention(cfg, p, prefix, x):
    B, T, C = x.shape
    H, Hkv = cfg["n_heads"], cfg["n_kv_heads"]
    D = C // H
    q = linear(p, prefix + ".q_proj", x).view(B, T, H, D).transpose(1, 2)      # [B, H, T, D]
    k = linear(p, prefix + ".k_proj", x).view(B, T, Hkv, D).transpose(1, 2)    # [B, Hkv, T, D]
    v = linear(p, prefix + ".v_proj", x).view(B, T, Hkv, D).transpose(1, 2)
    if cfg["position"] == "rope":
        q, k = rope(cfg, q), rope(cfg, k)
    k = k.repeat_interleave(H // Hkv, dim=1)  # query head h reads key/value head h / (H / Hkv)
    v = v.repeat_interleave(H // Hkv, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D)                             # [B, H, T, T]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    y = torch.softmax(scores, dim=-1) @ v                                       # [B, H, T, D]
    return linear(p, prefix + ".o_proj", y.transpose(1, 2).reshape(B, T, C))


def mlp(cfg, p, prefix, x):
    if cfg["mlp"] == "swiglu":
        gate = linear(p, prefix + ".gate_proj", x)
        h = gate * torch.sigmoid(gate) * linear(p, prefix + ".up_proj", x)
    else:
        h = gelu_tanh(linear(p, prefix + ".up_proj", x))
    return linear(p, prefix + ".down_proj", h)


def forward(cfg, p, ids):
    B, T = ids.shape
    x = p["decoder.embed_tokens.weight"][ids]                                    # [B, T, C]
    if cfg["position"] == "learned":
        x = x + p["decoder.embed_positions.weight"][:T]
    elif cfg["position"] == "sinusoidal":
        x = x + sinusoidal(T, cfg["d_model"])
    for i in range(cfg["n_layers"]):
        layer = f"decoder.layers.{i}"
        x = x + attention(cfg, p, layer + ".attn", norm(cfg, p, layer + ".attn_norm", x))
        x = x + mlp(cfg, p, layer + ".mlp", norm(cfg, p, layer + ".mlp_norm", x))
    x = norm(cfg, p, "decoder.final_norm", x)
    head = p["decoder.embed_tokens.weight"] if cfg["tie_embeddings"] else p["lm_head.weight"]
    return x @ head.T                                                            # [B, T, V]


def write_safetensors(path, tensors, metadata):
    """The safetensors layout: u64 little-endian header length, JSON header padded with spaces to
    8 bytes, then the raw little-endian data of each tensor in header order."""
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name in sorted(tensors):
        array = tensors[name]
        dtype = {np.dtype("float64"): "F64", np.dtype("int64"): "I64"}[array.dtype]
        data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def main(out_dir):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for seed, (name, cfg) in enumerate(sorted(CONFIGS.items())):
        gen = torch.Generator().manual_seed(1234 + seed)
        params = make_parameters(cfg, gen)
        ids = torch.randint(0, cfg["vocab_size"], (BATCH, TIME), generator=gen)
        targets = torch.randint(0, cfg["vocab_size"], (BATCH, TIME), generator=gen)
        targets[0, 2] = targets[1, 7] = IGNORE_INDEX  # ignored positions must not count
        logits = forward(cfg, params, ids)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg["vocab_size"]),
                                                 targets.reshape(-1), ignore_index=IGNORE_INDEX)
        loss.backward()
        tensors = {k: v.detach().numpy() for k, v in params.items()}
        tensors.update({"grad." + k: v.grad.numpy() for k, v in params.items()})
        tensors.update(input_ids=ids.numpy(), targets=targets.numpy(),
                       logits=logits.detach().numpy(), loss=loss.detach().numpy())
        metadata = {"config": json.dumps(cfg), "generator": "tests/reference/gpt_reference.py",
                    "torch": torch.__version__}
        write_safetensors(out_dir / f"{name}.safetensors", tensors, metadata)
        print(f"{name}: {sum(v.numel() for v in params.values())} parameters, loss {loss.item():.6f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "fixtures")
