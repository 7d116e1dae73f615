"""The original→native InternVL key mapping, checked against an independent re-implementation of the
ORIGINAL InternViT + pixel-shuffle + mlp1 math, run directly on the original-format weights."""

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from openuni_core import conditioning
from openuni_core.internvl import load_internvl


def original_image_tokens(w: dict, cfg: dict, pixels: torch.Tensor) -> torch.Tensor:
    vc = cfg["vision_config"]
    heads, eps = vc["num_attention_heads"], vc["layer_norm_eps"]
    p = "vision_model."
    x = F.conv2d(pixels, w[p + "embeddings.patch_embedding.weight"], w[p + "embeddings.patch_embedding.bias"],
                 stride=vc["patch_size"])
    x = x.flatten(2).transpose(1, 2)
    cls = w[p + "embeddings.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], 1) + w[p + "embeddings.position_embedding"]
    for i in range(vc["num_hidden_layers"]):
        q = f"{p}encoder.layers.{i}."
        y = F.layer_norm(x, x.shape[-1:], w[q + "norm1.weight"], w[q + "norm1.bias"], eps)
        B, N, C = y.shape
        qkv = F.linear(y, w[q + "attn.qkv.weight"], w[q + "attn.qkv.bias"]).reshape(B, N, 3, heads, C // heads)
        qq, kk, vv = qkv.permute(2, 0, 3, 1, 4)
        att = torch.softmax(qq @ kk.transpose(-1, -2) * (C // heads) ** -0.5, -1) @ vv
        att = F.linear(att.transpose(1, 2).reshape(B, N, C), w[q + "attn.proj.weight"], w[q + "attn.proj.bias"])
        x = x + att * w[q + "ls1"]
        y = F.layer_norm(x, x.shape[-1:], w[q + "norm2.weight"], w[q + "norm2.bias"], eps)
        y = F.linear(F.gelu(F.linear(y, w[q + "mlp.fc1.weight"], w[q + "mlp.fc1.bias"])), w[q + "mlp.fc2.weight"],
                     w[q + "mlp.fc2.bias"])
        x = x + y * w[q + "ls2"]
    x = x[:, 1:]  # drop CLS
    n, hw, c = x.shape
    side = int(hw ** 0.5)
    x = x.reshape(n, side, side, c)
    # pixel shuffle (downsample 0.5, ps_version v2), written out as in the original model
    s = 0.5
    n, wd, h, c = x.shape
    x = x.view(n, wd, int(h * s), int(c / s)).permute(0, 2, 1, 3).contiguous()
    x = x.view(n, int(h * s), int(wd * s), int(c / (s * s))).permute(0, 2, 1, 3).contiguous()
    x = x.reshape(n, -1, x.shape[-1])
    x = F.layer_norm(x, x.shape[-1:], w["mlp1.0.weight"], w["mlp1.0.bias"])
    x = F.linear(F.gelu(F.linear(x, w["mlp1.1.weight"], w["mlp1.1.bias"])), w["mlp1.3.weight"], w["mlp1.3.bias"])
    return x


def test_native_image_tokens_equal_original_math(tiny):
    import json

    cfg = json.loads((tiny.mllm_original / "config.json").read_text())
    weights = {k: v.float() for k, v in load_file(str(tiny.mllm_original / "model.safetensors")).items()}
    model, _, _ = load_internvl(tiny.mllm_original, dtype=torch.float32, attn_implementation="eager")
    pixels = torch.randn(2, 3, 448, 448)
    ours = conditioning.image_tokens(model, pixels)
    ref = original_image_tokens(weights, cfg, pixels)
    assert ours.shape == ref.shape == (2, 256, 32)
    assert (ours - ref).abs().max().item() < 1e-5
