"""Small shims for the range of library versions we support (transformers 4.52 – 5.x, diffusers 0.32+).

ComfyUI users share one Python environment across many node packs, so we cannot pin versions and
instead absorb the few API differences here, in one place.
"""

from __future__ import annotations

import torch
import transformers
from packaging.version import Version

TRANSFORMERS_5 = Version(transformers.__version__).major >= 5


def dtype_kwargs(dtype: torch.dtype) -> dict:
    """`from_pretrained` was renamed `torch_dtype` → `dtype` in transformers 5."""
    return {"dtype": dtype} if TRANSFORMERS_5 else {"torch_dtype": dtype}


def image_features(output) -> torch.Tensor:
    """`get_image_features` returns a tensor in 4.x and a model output (pooler_output) in 5.x."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    return pooled if pooled is not None else output[0]


def set_attn_implementation(config, name: str) -> None:
    """Ask a config (and its sub-configs) for an attention kernel before the model is built."""
    for cfg in (config, getattr(config, "text_config", None), getattr(config, "vision_config", None)):
        if cfg is not None:
            cfg._attn_implementation = name
