"""Small shims for the range of library versions we support (transformers 4.52 – 5.x, diffusers 0.33+).

ComfyUI users share one Python environment across many node packs, so we cannot pin versions and
instead absorb the few API differences here, in one place.
"""

from __future__ import annotations

import inspect

import torch
import transformers
from packaging.version import Version

from .errors import OpenUniError

TRANSFORMERS_5 = Version(transformers.__version__).major >= 5

# The oldest diffusers that gives the same images as the newest (requirements.txt says why). 0.32 builds SANA with a
# sinusoidal positional embedding that the SANA 512/1024 configs ("interpolation_scale": null) do not ask for.
DIFFUSERS_FLOOR = "0.33"

# Settings newer diffusers releases added: older ones ignore them (with only a log line) and build another model.
# class name → {setting: (the value that changes nothing, the first diffusers that knows the setting)}.
LATER_SETTINGS = {
    "SanaTransformer2DModel": {"qk_norm": (None, "0.33"), "timestep_scale": (1.0, "0.33"),
                               "guidance_embeds": (False, "0.33")},
    "AutoencoderDC": {"decoder_conv_act_fn": ("relu", "0.35"), "decoder_in_shortcut": (True, "0.35"),
                      "encoder_out_shortcut": (True, "0.35")},
}


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


def check_diffusers(configs: dict[str, tuple[dict, object]]) -> None:
    """Raise OpenUniError when the installed diffusers would build a different model than these configs describe:
    older than DIFFUSERS_FLOOR, or not knowing a setting a config sets to something that matters.

    configs: diffusers class name → (its config dict, the folder it came from, for the message)."""
    import diffusers

    installed = diffusers.__version__
    if Version(installed) < Version(DIFFUSERS_FLOOR):
        raise OpenUniError(f"diffusers {installed} builds SANA with a positional embedding its config does not ask "
                           f"for, which gives wrong images; upgrade it: pip install -U \"diffusers>={DIFFUSERS_FLOOR}\"")
    for cls_name, (cfg, folder) in configs.items():
        known = set(inspect.signature(getattr(diffusers, cls_name).__init__).parameters)
        later = LATER_SETTINGS.get(cls_name, {})
        unknown = [k for k, (neutral, _) in later.items() if cfg.get(k, neutral) != neutral and k not in known]
        if unknown:
            need = max((later[k][1] for k in unknown), key=Version)
            raise OpenUniError(f"{folder} uses {unknown}, which diffusers {installed} does not know (it would "
                               f"build another model); upgrade diffusers: pip install -U \"diffusers>={need}\"")
