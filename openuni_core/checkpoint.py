"""OpenUni checkpoints: a flat state dict in a `.pth` or `.safetensors` file, split into key groups.

`.pth` files are opened with `weights_only=True` (no pickled code ever runs) and `mmap=True`
(tensors are paged in on use, so a bf16 checkpoint never sits twice in RAM).
"""

from __future__ import annotations

import pickle
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


def read_state_dict(path) -> dict[str, torch.Tensor]:
    path = Path(path)
    expect("checkpoint", path)
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise OpenUniError(f"{path.name}: an OpenUni checkpoint must be a .pth or .safetensors file.")
    if path.stat().st_size == 0:
        raise OpenUniError(f"{path} is empty (0 bytes): the download did not finish. Delete it and download again.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:
            raise OpenUniError(f"Cannot read {path}: {e}. The file is corrupt or truncated; re-download it.") from e
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        raise OpenUniError(
            f"Refused to load {path}: it holds Python objects other than tensors, and loading it would run code "
            f"({str(e).splitlines()[0][:200]}). OpenUni checkpoints are plain state dicts; use the official file."
        ) from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise OpenUniError(f"Cannot read {path}: {str(e)[:300]}. The file is truncated or corrupt "
                           "(an interrupted download?); delete it and download it again.") from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise OpenUniError(f"{path} is not an OpenUni checkpoint: it does not hold a flat dict of tensors.")
    return obj


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
    """What a checkpoint holds, read from its header (safetensors) or lazily mapped (.pth): no weights read."""

    path: Path
    groups: list[str]
    llm_hidden: int
    caption_channels: int


def _check_groups(path: Path, shapes: dict[str, dict[str, torch.Size]]) -> CheckpointInfo:
    for required in ("meta_queries", "connector", "projector"):
        if not shapes[required]:
            raise OpenUniError(f"{path} has no {required} weights: it is not an OpenUni checkpoint "
                               "(or only part of one).")
    mq = shapes["meta_queries"][""]
    if len(mq) != 2 or mq[0] != NUM_QUERIES:
        raise OpenUniError(f"{path}: meta_queries has shape {list(mq)}, expected [{NUM_QUERIES}, LLM width].")
    if "weight" not in shapes["projector"]:
        raise OpenUniError(f"{path}: projector.weight is missing; the checkpoint is incomplete.")
    return CheckpointInfo(path, [g for g in GROUPS if shapes[g]], int(mq[1]), int(shapes["projector"]["weight"][0]))


def inspect_checkpoint(path) -> CheckpointInfo:
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file() and path.stat().st_size:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                state = {k: torch.Size(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as e:
            raise OpenUniError(f"Cannot read {path}: {e}. The file is corrupt or truncated; re-download it.") from e
    else:
        state = {k: v.shape for k, v in read_state_dict(path).items()}  # .pth: memory-mapped, nothing read
    return _check_groups(path, split_groups(state, str(path)))


def load_openuni_checkpoint(path) -> OpenUniCheckpoint:
    path = Path(path)
    groups = split_groups(read_state_dict(path), str(path))
    _check_groups(path, {g: {k: v.shape for k, v in sub.items()} for g, sub in groups.items()})
    return OpenUniCheckpoint(path, groups)
