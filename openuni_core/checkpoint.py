"""OpenUni checkpoints: a flat state dict in a `.pth` or `.safetensors` file, split into key groups.

`.pth` files are opened with `weights_only=True` (no pickled code ever runs) and `mmap=True`
(tensors are paged in on use, so a bf16 checkpoint never sits twice in RAM).
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import OpenUniError
from .files import expect
from .variants import NUM_QUERIES

GROUPS = ("meta_queries", "connector", "projector", "transformer", "lmm", "vae")
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")


@dataclass
class OpenUniCheckpoint:
    path: Path
    groups: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    config: dict = field(default_factory=dict)  # the optional CONFIG_KEY entry

    @property
    def meta_queries(self) -> torch.Tensor:
        return self.groups["meta_queries"][""]

    @property
    def llm_hidden(self) -> int:
        return int(self.meta_queries.shape[1])

    def found(self) -> list[str]:
        return [g for g in GROUPS if self.groups.get(g)]

    def describe(self) -> str:
        return ", ".join(f"{g} ({len(self.groups[g])} tensors)" for g in self.found())


# An optional entry beside the weights for what their shapes cannot tell, e.g. {"connector": {"num_attention_heads":
# 5}}: a dict under this key in a .pth, JSON under this metadata key in a .safetensors.
CONFIG_KEY = "openuni_config"
WRAPPERS = ("state_dict", "module")  # training states keep the weights under one of these (DeepSpeed: "module")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def read_state_dict(path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)[0]


def read_checkpoint(path) -> tuple[dict[str, torch.Tensor], dict]:
    """(flat state dict, CONFIG_KEY entry or {}) of a .pth/.pt/.safetensors file. Raises OpenUniError for missing,
    empty, corrupt or unsafe files, naming the problem and the fix."""
    path = Path(path)
    expect("checkpoint", path)
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise OpenUniError(f"{path.name}: an OpenUni checkpoint must be a .pth or .safetensors file.")
    if path.stat().st_size == 0:
        raise OpenUniError(f"{path} is empty (0 bytes): the download did not finish. Delete it and download again.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), _safetensors_config(path)
        except OpenUniError:
            raise
        except Exception as e:
            raise OpenUniError(f"Cannot read {path}: {e}. The file is corrupt or truncated; re-download it.") from e
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        raise OpenUniError(
            f"Refused to load {path}: besides tensors it holds {_unsafe_object(e)}, and loading it would run code. "
            "OpenUni checkpoints are plain state dicts: use the official file, or re-save just the weights "
            "(torch.save(state_dict, path)) where you trust the file."
        ) from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise OpenUniError(f"Cannot read {path}: {str(e)[:300]}. The file is truncated or corrupt "
                           "(an interrupted download?); delete it and download it again.") from e
    config = {}
    if isinstance(obj, dict):
        config = obj.pop(CONFIG_KEY, None) or {}
        wrapper = next((w for w in WRAPPERS if isinstance(obj.get(w), dict)), None)
        if wrapper is not None:
            obj = obj[wrapper]
            config = obj.pop(CONFIG_KEY, None) or config
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise OpenUniError(f"{path} is not an OpenUni checkpoint: it does not hold a flat dict of tensors.")
    if not isinstance(config, dict):
        raise OpenUniError(f"{path}: its {CONFIG_KEY!r} entry must be a dict, e.g. "
                           '{"connector": {"num_attention_heads": 14}}.')
    return obj, config


def _unsafe_object(e: pickle.UnpicklingError) -> str:
    """What torch's weights-only unpickler refused, e.g. "numpy.core.multiarray.scalar", without terminal colours."""
    text = _ANSI.sub("", str(e))
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"a Python object of type {found[1]}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return f"Python objects other than tensors ({(lines[-2] if len(lines) > 1 else text)[:200]})"


def _safetensors_config(path: Path) -> dict:
    import json

    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get(CONFIG_KEY)
    try:
        config = json.loads(raw) if raw else {}
    except json.JSONDecodeError as e:
        raise OpenUniError(f"{path}: its {CONFIG_KEY!r} metadata is not valid JSON ({e}).") from e
    if not isinstance(config, dict):
        raise OpenUniError(f"{path}: its {CONFIG_KEY!r} metadata must be a JSON object.")
    return config


def split_groups(state: dict[str, torch.Tensor], source: str) -> dict[str, dict[str, torch.Tensor]]:
    groups: dict[str, dict[str, torch.Tensor]] = {g: {} for g in GROUPS}
    unknown = []
    for key, tensor in state.items():
        head, _, rest = key.partition(".")
        if key == "meta_queries":
            groups["meta_queries"][""] = tensor
        elif head in GROUPS and head != "meta_queries" and rest:
            groups[head][rest] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise OpenUniError(f"{source}: {len(unknown)} keys cannot be placed, e.g. {unknown[:4]}. "
                           f"An OpenUni checkpoint holds only {', '.join(GROUPS)} weights.")
    return groups


@dataclass
class CheckpointInfo:
    """What a checkpoint holds, read from its header (safetensors) or lazily mapped (.pth): no weights read.

    connector: (width, MLP size, layers) from the connector's key names and shapes; projector: [out, in] of
    projector.weight; shapes: every tensor's shape per group; config: the CONFIG_KEY entry."""

    path: Path
    groups: list[str]
    llm_hidden: int
    caption_channels: int
    connector: tuple[int, int, int] = (0, 0, 0)
    projector: tuple[int, int] = (0, 0)
    shapes: dict[str, dict[str, torch.Size]] = field(default_factory=dict)
    config: dict = field(default_factory=dict)


def _check_groups(path: Path, shapes: dict[str, dict[str, torch.Size]], config: dict) -> CheckpointInfo:
    for required in ("meta_queries", "connector", "projector"):
        if not shapes[required]:
            raise OpenUniError(f"{path} has no {required} weights: it is not an OpenUni checkpoint (or only part of "
                               "one). Choose an OpenUni checkpoint (openuni_*.pth or .safetensors from wusize/openuni); "
                               "a truncated download must be fetched again.")
    mq = shapes["meta_queries"][""]
    if len(mq) != 2 or mq[0] != NUM_QUERIES:
        raise OpenUniError(f"{path}: meta_queries has shape {list(mq)}, expected [{NUM_QUERIES}, LLM width].")
    proj = shapes["projector"].get("weight")
    if proj is None or len(proj) != 2:
        raise OpenUniError(f"{path}: projector.weight is missing; the checkpoint is incomplete.")
    connector = shapes["connector"]
    layers = {int(m[1]) for k in connector if (m := re.match(r"layers\.(\d+)\.", k))}
    norm, fc1 = connector.get("layers.0.layer_norm1.weight"), connector.get("layers.0.mlp.fc1.weight")
    if norm is None or fc1 is None or layers != set(range(len(layers))):
        raise OpenUniError(f"{path}: the connector's weights are incomplete (layers found: {sorted(layers)}; "
                           "layers.0.layer_norm1.weight and layers.0.mlp.fc1.weight are needed). Re-download it.")
    return CheckpointInfo(path, [g for g in GROUPS if shapes[g]], int(mq[1]), int(proj[0]),
                          (int(norm[0]), int(fc1[0]), len(layers)), (int(proj[0]), int(proj[1])), shapes, config)


def inspect_checkpoint(path) -> CheckpointInfo:
    path = Path(path)
    config: dict = {}
    if path.suffix == ".safetensors" and path.is_file() and path.stat().st_size:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                state = {k: torch.Size(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as e:
            raise OpenUniError(f"Cannot read {path}: {e}. The file is corrupt or truncated; re-download it.") from e
        config = _safetensors_config(path)
    else:
        tensors, config = read_checkpoint(path)  # .pth: memory-mapped, nothing read
        state = {k: v.shape for k, v in tensors.items()}
    return _check_groups(path, split_groups(state, str(path)), config)


def load_openuni_checkpoint(path) -> OpenUniCheckpoint:
    path = Path(path)
    state, config = read_checkpoint(path)
    groups = split_groups(state, str(path))
    _check_groups(path, {g: {k: v.shape for k, v in sub.items()} for g, sub in groups.items()}, config)
    return OpenUniCheckpoint(path, groups, config)
