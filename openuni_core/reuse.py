"""Reuse work that is constant across sampling steps.

SANA re-projects the (unchanging) query conditioning at every step: the caption projection + norm and,
in every block, the cross-attention key/value projections. diffusers has no switch for this, so during
one sampling call we wrap exactly those modules in a memo that returns the previous output when handed
the very same input tensor again. Results are bit-identical; the saving is ~28 layers × 2 projections
over 256 tokens (× 2 with CFG) per step.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


class _SameInputMemo(nn.Module):
    """Calls `inner` once per distinct input; the same (unmodified) tensor again gets the cached output.

    The input is kept referenced while cached, so its storage cannot be freed and reused by another
    tensor; the version counter catches in-place edits.
    """

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self._key = None
        self._input = None
        self._output = None

    @staticmethod
    def _key_of(x: torch.Tensor):
        # Inference tensors (ComfyUI runs nodes under torch.inference_mode()) have no version counter; they
        # cannot be edited in place outside inference mode, and nothing edits them inside one sampling call.
        version = 0 if x.is_inference() else x._version
        return (x.data_ptr(), x.storage_offset(), tuple(x.shape), x.stride(), version, x.dtype, x.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = self._key_of(x)
        if key != self._key:
            self._output = self.inner(x)
            self._key, self._input = key, x
        return self._output


def _constant_branches(transformer) -> list[tuple[nn.Module, str]]:
    targets = [(transformer, "caption_projection"), (transformer, "caption_norm")]
    for block in getattr(transformer, "transformer_blocks", []):
        attn2 = getattr(block, "attn2", None)
        if attn2 is not None:
            targets += [(attn2, "to_k"), (attn2, "to_v")]
    return [(parent, name) for parent, name in targets if isinstance(getattr(parent, name, None), nn.Module)]


@contextlib.contextmanager
def constant_conditioning(transformer):
    """Within the block, conditioning-only computations run once instead of once per step."""
    swapped = []
    try:
        for parent, name in _constant_branches(transformer):
            original = getattr(parent, name)
            setattr(parent, name, _SameInputMemo(original))
            swapped.append((parent, name, original))
        yield
    finally:
        for parent, name, original in reversed(swapped):
            setattr(parent, name, original)
