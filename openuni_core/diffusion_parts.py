"""The SANA transformer and the DC-AE: built from their diffusers folders, with an OpenUni checkpoint's
`transformer.*` / `vae.*` groups laid over them.

Every folder's weights are checked against the model its config.json describes before anything is loaded (names
and shapes from the safetensors headers, the model built on the meta device): diffusers would otherwise leave a
missing tensor on the meta device ("Cannot copy out of meta tensor", naming no file) or randomly initialised.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from .errors import OpenUniError
from .files import weight_differences

WEIGHTS = "diffusion_pytorch_model.safetensors"  # what diffusers' from_pretrained reads (or its .index.json shards)


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
    check_group_fits({k: v.shape for k, v in own.items()}, {k: v.shape for k, v in state.items()}, source)


def check_group_fits(want: dict[str, torch.Size], group: dict[str, torch.Size], source: str) -> None:
    """A checkpoint group may replace some or all of a model's tensors: every one of its keys must name a tensor of
    the model (model_shapes) with the same shape. Raises OpenUniError naming both shapes."""
    unknown = [k for k in group if k not in want]
    if unknown:
        raise OpenUniError(f"{source}: {len(unknown)} weights have no place in the model, e.g. {unknown[:3]}.")
    bad = [f"{k}: {list(v)} vs {list(want[k])}" for k, v in group.items() if v != want[k]]
    if bad:
        raise OpenUniError(f"{source}: weights do not fit the model: {bad[:3]} (checkpoint vs folder). Is the SANA "
                           "folder the one this checkpoint was trained on?")


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t.to(dtype) if t.is_floating_point() and t.dtype != dtype else t


def model_shapes(cls, config: dict) -> dict[str, torch.Size]:
    """Name → shape of every tensor the model `config` describes has, built on the meta device (no memory)."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = cls.from_config(config)
    return {k: v.shape for k, v in model.state_dict().items()}


def check_folder_weights(folder: Path, want: dict[str, torch.Size], repo: str) -> None:
    """Raise OpenUniError unless the folder's weights hold exactly the tensors `want` (model_shapes of its
    config.json), naming the folder, the file, up to five keys and where to download the folder again."""
    from safetensors import safe_open

    index = folder / f"{WEIGHTS}.index.json"
    if index.is_file():
        try:
            files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError) as e:
            raise OpenUniError(f"{index} is not a valid weight index ({e}); re-download the folder from {repo}.") from e
    else:
        files = [WEIGHTS]
    have: dict[str, torch.Size] = {}
    for name in files:
        path = folder / name
        if not path.is_file():
            raise OpenUniError(f"{folder} has no {name} (diffusers reads the weights from it); re-download the folder "
                               f"from {repo}.")
        try:
            with safe_open(str(path), framework="pt") as f:
                have.update({k: torch.Size(f.get_slice(k).get_shape()) for k in f.keys()})
        except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
            raise OpenUniError(f"Cannot read {path}: {e}. The file is corrupt or incomplete; re-download the folder "
                               f"from {repo}.") from e
    label = f"{folder / files[0]}" if len(files) == 1 else f"{folder} ({', '.join(files)})"
    problems = weight_differences(want, have)
    if problems:
        raise OpenUniError(f"{label} does not hold the weights {folder / 'config.json'} describes: {problems}. "
                           f"The download is incomplete or the files belong to different models; re-download the "
                           f"folder from {repo}.")
