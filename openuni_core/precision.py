"""What happens when a part computing in fp16 overflows (which part runs in which precision: devices.part_dtypes).

fp16 holds values only up to 65504. DC-AE's activations exceed that (diffusers' maintainers: run it in fp32 or
bf16), so it never runs in fp16. InternVL3 and SANA usually fit, and fp16 is what GPUs without native bf16
(Turing: T4, RTX 20xx; Volta: V100) compute fast; so they run in fp16 when asked, their outputs are checked for
inf/NaN (after each SANA step, after each InternVL3 forward), and a part that overflowed is cast to bf16 (where the
GPU has it natively) or fp32 and run again, with one log line. A part that gives inf/NaN in bf16 or fp32 raises an
OpenUniError naming the precision setting and the fix, never a black image or a NaN latent for the next node.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch

from .devices import NAMES, fallback_dtype
from .errors import OpenUniError

LABELS = {"mllm": "InternVL3", "sana": "SANA", "vae": "DC-AE"}
T = TypeVar("T")


class NonFiniteError(Exception):
    """A part's output held inf or NaN. Raised inside a run; `recovering` turns it into a re-run or an OpenUniError."""

    def __init__(self, part: str, where: str):
        super().__init__(f"{LABELS[part]} gave inf/NaN values {where}")
        self.part, self.where = part, where


def check_finite(values: torch.Tensor, part: str, where: str) -> None:
    """Raise NonFiniteError unless every value is finite (one device sync)."""
    if not torch.isfinite(values).all():
        raise NonFiniteError(part, where)


def recovering(placement, part: str, run: Callable[[], T], log: Callable[[str], None]) -> T:
    """run(); if it raises NonFiniteError for `part` while that part computes in fp16, cast the part to
    `fallback_dtype` (placement.cast, one log line) and run() once more. Any other inf/NaN — in bf16 or fp32, or
    with a placement that cannot cast — raises OpenUniError naming the precision setting and the fix."""
    try:
        return run()
    except NonFiniteError as e:
        if e.part != part:
            raise
        failure = e.with_traceback(None)  # handled below without its frames, so the failed run's tensors are freed
    dtype_of, cast = getattr(placement, "dtype", None), getattr(placement, "cast", None)  # a host's may lack them
    dtype = dtype_of(part) if dtype_of is not None else None
    if dtype == torch.float16 and cast is not None:
        target = fallback_dtype(placement.device(part))
        log(f"[OpenUni] {failure} in fp16 (an overflow); running {LABELS[part]} in {NAMES[target]} from now on.")
        cast(part, target)
        try:
            return run()
        except NonFiniteError as e:
            if e.part != part:
                raise
            failure, dtype = e.with_traceback(None), target
    raise OpenUniError(advice(failure, dtype)) from None


def advice(failure: NonFiniteError, dtype: torch.dtype | None) -> str:
    """The one-line message for inf/NaN from a part computing in `dtype` (None: unknown): in fp16 an overflow, fixed
    by the loader's precision; in bf16/fp32 damaged files."""
    if dtype in (torch.float16, None):
        return (f"{failure}{' in fp16 (an overflow)' if dtype else ''}. Set the loader's precision to bf16 (GPUs "
                "from RTX 30xx/A100 on) or fp32 and run again.")
    return (f"{failure} in {NAMES.get(dtype, dtype)}, so its result would be a black or broken image. Load with "
            "precision fp32; if it happens in fp32 too, the model files are damaged: re-download them.")
