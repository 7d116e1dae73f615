"""SANA LoRAs for the OpenUni MODEL.

Why not the core LoraLoaderModelOnly alone: comfy.sd.load_lora_for_models builds its key map with
comfy.lora.model_lora_keys_unet, which for a model class it does not know holds only the names derived from
the MODEL's own keys (`diffusion_model.<key>`, kohya `lora_unet_<key with _>`) plus per-architecture diffusers
names behind isinstance checks (SD3, Flux, PixArt, ...). Diffusers/PEFT SANA LoRAs are named
`transformer.<key>.lora_A.weight`, so the core loader patches nothing from them. Kohya-style `lora_unet_*`
files do load with the core node.

So this module builds a key map for every naming SANA trainers write and hands it to comfy.lora.load_lora,
then ModelPatcher.clone() + add_patches, exactly what load_lora_for_models does with its own map: strength,
stacking, partial loading and unpatching stay ComfyUI's.
"""

from __future__ import annotations

import json
import logging

import torch

import comfy.lora

from ...openuni_core.errors import OpenUniError

log = logging.getLogger("OpenUni")
PREFIX = "diffusion_model."
# Tensor-name suffixes of the adapter formats comfy.weight_adapter reads (LoRA, LoHa, LoKr, diff).
SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".lora_A.default.weight", ".lora_B.default.weight",
            ".lora_down.weight", ".lora_up.weight", ".lora_mid.weight", "_lora.down.weight", "_lora.up.weight",
            ".lora.down.weight", ".lora.up.weight", ".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight",
            ".alpha", ".dora_scale", ".diff", ".diff_b", ".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b",
            ".lokr_w1", ".lokr_w2", ".reshape_weight")


def key_map(model) -> dict[str, str]:
    """LoRA module name → MODEL state-dict key, for OpenUniSana (keys `diffusion_model.<diffusers SANA key>`)."""
    out: dict[str, str] = {}
    for k in model.state_dict():
        if not (k.startswith(PREFIX) and k.endswith(".weight")):
            continue
        base = k[len(PREFIX):-len(".weight")]
        under = base.replace(".", "_")
        for name in (f"transformer.{base}",  # diffusers SanaLoraLoaderMixin.save_lora_weights
                     f"base_model.model.{base}",  # peft get_peft_model_state_dict on the bare transformer
                     f"{PREFIX}{base}", base,  # ComfyUI's generic names, bare diffusers names
                     f"lora_unet_{under}", f"lora_transformer_{under}", f"lycoris_{under}"):  # kohya, OneTrainer, lycoris
            out[name] = k
    return out


def peft_alphas(lora: dict[str, torch.Tensor], metadata: dict | None) -> dict[str, torch.Tensor]:
    """`<module>.alpha` tensors from a PEFT adapter config in the file's metadata.

    PEFT keeps lora_alpha in the adapter config, not in the tensors; diffusers writes that config into the
    safetensors metadata ("lora_adapter_metadata", keys prefixed "transformer."). ComfyUI scales a LoRA by
    alpha/rank only when a `.alpha` tensor is present (else by 1), so without this a LoRA trained with
    alpha ≠ r would be off by alpha/r. rank = the lora_A rows, as ComfyUI computes it."""
    raw = (metadata or {}).get("lora_adapter_metadata")
    if not raw:
        return {}
    cfg = json.loads(raw) if isinstance(raw, str) else raw
    cfg = {k.removeprefix("transformer."): v for k, v in cfg.items()}
    alpha, rank = cfg.get("lora_alpha"), cfg.get("r")
    alpha_pattern, rank_pattern = cfg.get("alpha_pattern") or {}, cfg.get("rank_pattern") or {}
    out = {}
    for k, v in lora.items():
        if not k.endswith(".lora_A.weight"):
            continue
        module = k[: -len(".lora_A.weight")]
        a = next((val for pat, val in alpha_pattern.items() if module.endswith(pat)), alpha)
        if a is None:
            continue
        r = next((val for pat, val in rank_pattern.items() if module.endswith(pat)), rank) or v.shape[0]
        scale = a / (r ** 0.5 if cfg.get("use_rslora") else r)  # PEFT's scaling
        out[f"{module}.alpha"] = torch.tensor(float(scale * v.shape[0]))
    return out


def unmatched_keys(lora: dict, names: dict) -> list[str]:
    """LoRA tensors no key-map entry accounts for (a LoRA for another model, or a layer SANA does not have)."""
    bad = []
    for k in lora:
        module = next((k[: -len(s)] for s in SUFFIXES if k.endswith(s)), None)
        if module is None or module not in names:
            bad.append(k)
    return bad


def shape_mismatches(patches: dict, state_dict: dict) -> list[str]:
    """Keys of LoRA patches whose up/down matrices do not fit the weight they patch (a LoRA trained for another
    SANA size has the same names): ComfyUI would log and skip them at load time, leaving a partly applied LoRA."""
    bad = []
    for key, patch in patches.items():
        weights = getattr(patch, "weights", None)
        weight = state_dict.get(key if isinstance(key, str) else key[0])
        if not isinstance(weights, tuple) or len(weights) < 2 or weight is None or weight.ndim < 2:
            continue
        up, down = weights[0], weights[1]
        if isinstance(up, torch.Tensor) and isinstance(down, torch.Tensor) and up.ndim >= 2 and down.ndim >= 2 \
                and (up.shape[0] != weight.shape[0] or down.shape[1] != weight.shape[1]):
            bad.append(key)
    return bad


def apply_lora(patcher, lora: dict[str, torch.Tensor], strength: float, metadata: dict | None = None,
               name: str = "This LoRA"):
    """A clone of `patcher` (the OpenUni MODEL) with the LoRA added at `strength`; the same patcher at strength 0.

    Raises OpenUniError naming the first offending tensors for a file with any tensor that is not for this SANA
    (a LoRA for another model, or for another SANA size): part of a LoRA applied gives a silently wrong image."""
    if strength == 0:
        return patcher
    lora = {**peft_alphas(lora, metadata), **lora}
    names = key_map(patcher.model)
    foreign = unmatched_keys(lora, names)
    if foreign:
        how_many = "none" if len(foreign) == len(lora) else f"only {len(lora) - len(foreign)}"
        raise OpenUniError(f"{name} is not a LoRA for OpenUni's SANA: {how_many} of its {len(lora)} tensors match a "
                           f"SANA layer (unmatched: {', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}). "
                           "Pick a SANA LoRA trained for this model.")
    patches = comfy.lora.load_lora(lora, names, log_missing=False)
    wrong = shape_mismatches(patches, patcher.model.state_dict())
    if wrong:
        raise OpenUniError(f"{name} was trained for another SANA size: {len(wrong)} of its layers do not fit this "
                           f"model's weights (e.g. {', '.join(map(str, wrong[:3]))}).")
    out = patcher.clone()
    out.add_patches(patches, strength)
    return out
