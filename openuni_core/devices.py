"""Devices, precisions and attention kernels: the user's choice (see options.py) → what torch gets."""

from __future__ import annotations

import torch

from .errors import OpenUniError
from .options import ATTENTION_KERNELS, PRECISIONS

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CPU = torch.device("cpu")


NAMES = {dtype: name for name, dtype in DTYPES.items()}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """"auto" → bf16 on GPUs that compute it natively, else fp16; fp32 on the CPU. Raises OpenUniError for unknown
    names. What each part runs in: `part_dtypes`."""
    if name not in PRECISIONS:
        raise OpenUniError(f"Unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}.")
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if native_bf16(device) else torch.float16
        return torch.float32
    return DTYPES[name]


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively: CUDA GPUs from Ampere (compute capability 8) on, and ROCm. Older
    GPUs (T4, RTX 20xx, V100) only emulate it, slowly, so `torch.cuda.is_bf16_supported()` is not the test."""
    if device.type != "cuda":
        return False
    return bool(torch.version.hip) or torch.cuda.get_device_capability(device)[0] >= 8


def fallback_dtype(device: torch.device) -> torch.dtype:
    """What a part runs in instead of fp16: bf16 where native, else fp32 (on the CPU too, as ComfyUI does for
    its VAEs)."""
    return torch.bfloat16 if native_bf16(device) else torch.float32


def part_dtypes(name: str, device: torch.device) -> dict[str, torch.dtype]:
    """The dtype each part ("mllm", "sana", "vae") loads in for a precision setting (options.PRECISIONS) on
    `device`. DC-AE never runs in fp16 (its activations overflow it; diffusers' maintainers advise fp32 or bf16):
    it gets `fallback_dtype` instead. InternVL3 and SANA run in the setting's dtype; precision.py catches their
    fp16 overflows. Raises OpenUniError for an unknown setting."""
    dtype = resolve_dtype(name, device)
    return {"mllm": dtype, "sana": dtype, "vae": fallback_dtype(device) if dtype == torch.float16 else dtype}


def resolve_device(name) -> torch.device:
    """None/""/"auto" → the first GPU if there is one, else the CPU. Raises OpenUniError for unknown or absent devices."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise OpenUniError(f"Unknown device {name!r}; use cpu, cuda, cuda:1, ...") from e
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise OpenUniError(f"Device {name} is not available on this machine; use cpu or an existing GPU.")
    return dev


def resolve_attention(name: str, device: torch.device) -> str:
    """"auto" → flash_attention_2 when flash-attn is importable on CUDA, else sdpa."""
    if name not in ATTENTION_KERNELS:
        raise OpenUniError(f"Unknown attention {name!r}; choose one of {', '.join(ATTENTION_KERNELS)}.")
    if name == "flash_attention_2" or (name == "auto" and device.type == "cuda"):
        try:
            import flash_attn  # noqa: F401

            if device.type == "cuda":
                return "flash_attention_2"
        except ImportError:
            pass
        if name == "flash_attention_2":
            raise OpenUniError("flash_attention_2 needs the flash-attn package and a CUDA GPU; choose sdpa or auto.")
    return "sdpa" if name == "auto" else name
