"""OpenUni query conditioning ⇄ ComfyUI's CONDITIONING layout.

ComfyUI conditioning is a list of `[tensor, dict]` entries; ComfyUI's own Conditioning (Combine),
(Average), (Concat) and ZeroOut nodes work on that list and copy each entry's dict, so the marker we put
in the dict travels with the tensor. An OpenUni entry is `[embeds [B,256,C] float32, {"openuni_model_id":
..., "openuni_variant": ..., "openuni_texts": [...]}]`.

Several entries (e.g. from Conditioning (Combine)) are stacked along the batch: the sampler makes one
image per row, for each of `batch_size` seeds. Keys that steer other models' samplers (area, mask,
strength, timestep ranges, ...) have no OpenUni meaning and are ignored with a warning.
"""

from __future__ import annotations

import logging

import torch

from ..openuni_core.conditioning import QueryConditioning
from ..openuni_core.errors import OpenUniError

MARKER = "openuni_model_id"
OUR_KEYS = {MARKER, "openuni_variant", "openuni_texts", "pooled_output"}
log = logging.getLogger("OpenUni")


def to_comfy(cond: QueryConditioning, model) -> list:
    return [[cond.embeds, {MARKER: cond.model_id, "openuni_variant": model.variant.name,
                           "openuni_texts": list(cond.texts)}]]


def from_comfy(conditioning, what: str) -> QueryConditioning:
    if not isinstance(conditioning, (list, tuple)) or not conditioning:
        raise OpenUniError(f"The {what} input is not conditioning (got {type(conditioning).__name__}); connect an "
                           "OpenUni Text Encode or OpenUni Image Edit Encode output.")
    tensors, texts, ids, ignored = [], [], set(), set()
    for entry in conditioning:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], torch.Tensor)
                and isinstance(entry[1], dict)):
            raise OpenUniError(f"The {what} input is not in ComfyUI's conditioning layout ([tensor, dict] entries).")
        tensor, meta = entry
        if MARKER not in meta:
            raise OpenUniError(
                f"This {what} conditioning did not come from an OpenUni encode node (it looks like "
                f"{_describe(tensor)} from another model's text encoder, e.g. CLIP Text Encode). OpenUni can only "
                "sample from conditioning made by OpenUni Text Encode or OpenUni Image Edit Encode (ComfyUI's "
                "Conditioning Combine/Average/Zero Out may sit in between).")
        ids.add(meta[MARKER])
        texts += list(meta.get("openuni_texts") or [])
        ignored |= {k for k, v in meta.items() if k not in OUR_KEYS and v is not None}
        tensors.append(tensor.detach().to("cpu", torch.float32))
    if len(ids) > 1:
        raise OpenUniError(f"The {what} conditioning mixes entries encoded by different OpenUni models; "
                           "encode every prompt with the same loaded model.")
    if ignored:
        log.warning("[OpenUni] %s conditioning: ignoring %s (not used by OpenUni's sampler)", what, sorted(ignored))
    if any(t.ndim != 3 for t in tensors) or len({t.shape[1:] for t in tensors}) > 1:
        raise OpenUniError(f"The {what} conditioning entries have shapes {[list(t.shape) for t in tensors]}; they "
                           "must all be [batch, queries, channels] with the same queries and channels to be stacked.")
    return QueryConditioning(torch.cat(tensors), ids.pop(), texts)


def _describe(tensor: torch.Tensor) -> str:
    return f"a {list(tensor.shape)} tensor" if isinstance(tensor, torch.Tensor) else type(tensor).__name__
