"""The SANA transformer and the DC-AE: built from their diffusers folders, with an OpenUni checkpoint's
`transformer.*` / `vae.*` groups laid over them."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .errors import OpenUniError


def load_part(cls, folder: Path, override: dict[str, torch.Tensor], dtype: torch.dtype, source: str,
              warn_partial: bool = False) -> tuple[torch.nn.Module, bool]:
    """Return (module, replaced_by_checkpoint) for a diffusers model class and its folder.

    When the checkpoint group holds every tensor the model has (the blip3o60k checkpoints ship a whole
    fine-tuned SANA), the base weights are never read: the model is built with its parameters on the meta
    device and the checkpoint's tensors are assigned in place. Reading the base weights and then copying
    over them would cost a second full copy of the transformer in RAM (BENCHMARKS.md, load section).
    Otherwise the folder's weights are loaded and the group, if any, is copied over them.
    """
    if override:
        from accelerate import init_empty_weights

        with init_empty_weights(include_buffers=False):
            empty = cls.from_config(cls.load_config(str(folder)))
        own = empty.state_dict()
        _check_fit(own, override, source)
        if len(override) == len(own):
            with torch.no_grad():
                empty.load_state_dict({k: _cast(v, dtype) for k, v in override.items()}, strict=True, assign=True)
            # Buffers that are not in the state dict were built in the default dtype: cast them too. The plain
            # nn.Module.to, because diffusers' override warns about fp32-kept modules this path has none of.
            return torch.nn.Module.to(empty, dtype).eval().requires_grad_(False), True
        del empty
    module = cls.from_pretrained(str(folder), torch_dtype=dtype)
    if override:
        overlay(module, override, source, warn_partial=warn_partial)
    return module.eval().requires_grad_(False), bool(override)


def overlay(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str, warn_partial: bool = False) -> None:
    """Copy checkpoint weights over a loaded module; every key must land, every shape must fit."""
    own = module.state_dict()
    _check_fit(own, state, source)
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)
    if warn_partial and len(state) < len(own):
        warnings.warn(f"{source}: replaced {len(state)} of {len(own)} tensors; the rest keep the base weights.")


def _check_fit(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: str) -> None:
    unknown = [k for k in state if k not in own]
    if unknown:
        raise OpenUniError(f"{source}: {len(unknown)} weights have no place in the model, e.g. {unknown[:3]}.")
    bad = [f"{k}: {list(v.shape)} vs {list(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape]
    if bad:
        raise OpenUniError(f"{source}: weights do not fit the model: {bad[:3]}. Is the SANA folder the one this "
                           "checkpoint was trained on?")


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t.to(dtype) if t.is_floating_point() and t.dtype != dtype else t
