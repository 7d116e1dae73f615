"""OpenUni query conditioning ⇄ ComfyUI's CONDITIONING layout.

ComfyUI conditioning is a list of `[tensor, dict]` entries; ComfyUI's own Conditioning (Combine),
(Average), (Concat) and ZeroOut nodes work on that list and copy each entry's dict, so the marker we put
in the dict travels with the tensor. An OpenUni entry is `[embeds [B,256,C] float32, {"openuni_model_id":
..., "openuni_variant": ..., "openuni_texts": [...]}]`.

For OpenUni Sampler, several entries (e.g. from Conditioning (Combine)) are stacked along the batch: the
sampler makes one image per row, for each of `batch_size` seeds; entries of different lengths (Conditioning
(Concat)) are repeated to a common length first (openuni_core.conditioning.same_token_count). Keys with
which other nodes steer KSampler (area, mask, strength, timestep ranges, ...) are refused unless their value
changes nothing: OpenUni Sampler cannot honour them, KSampler on the loader's MODEL output can.
"""

from __future__ import annotations

import torch

from ..openuni_core.conditioning import QueryConditioning, same_token_count
from ..openuni_core.errors import OpenUniError

MARKER = "openuni_model_id"
OUR_KEYS = {MARKER, "openuni_variant", "openuni_texts"}
# Keys that never change OpenUni's result: ComfyUI's pooled output slot (None or zeros from ZeroOut), and the
# companions of area/mask that matter only together with them.
HARMLESS_KEYS = {"pooled_output", "set_area_to_bounds", "mask_strength"}
NATIVE_HINT = ("OpenUni Sampler cannot apply it; use KSampler with the OpenUni Model Loader's MODEL output (which "
               "supports area, mask, strength and timestep ranges natively), or remove the node that set it.")


def to_comfy(cond: QueryConditioning, model) -> list:
    return [[cond.embeds, {MARKER: cond.model_id, "openuni_variant": model.variant.name,
                           "openuni_texts": list(cond.texts)}]]


def foreign_conditioning_error(tensor, what: str = "") -> OpenUniError:
    return OpenUniError(
        f"This {what + ' ' if what else ''}conditioning did not come from an OpenUni encode node (it looks like {_describe(tensor)} "
        "from another model's text encoder, e.g. CLIP Text Encode). OpenUni can only sample from conditioning made "
        "by OpenUni Text Encode or OpenUni Image Edit Encode (ComfyUI's Conditioning Combine/Average/Concat/Zero "
        "Out may sit in between).")


def from_comfy(conditioning, what: str, *, width: int | None = None, height: int | None = None) -> QueryConditioning:
    """ComfyUI CONDITIONING → one QueryConditioning [rows, T, C] on the CPU. width/height: the image size, to
    recognise an area that covers the whole image (which changes nothing)."""
    if not isinstance(conditioning, (list, tuple)) or not conditioning:
        raise OpenUniError(f"The {what} input is not conditioning (got {type(conditioning).__name__}); connect an "
                           "OpenUni Text Encode or OpenUni Image Edit Encode output.")
    tensors, texts, ids = [], [], set()
    for entry in conditioning:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], torch.Tensor)
                and isinstance(entry[1], dict)):
            raise OpenUniError(f"The {what} input is not in ComfyUI's conditioning layout ([tensor, dict] entries).")
        tensor, meta = entry
        if MARKER not in meta:
            raise foreign_conditioning_error(tensor, what)
        refuse_steering_keys(meta, what, width, height)
        ids.add(meta[MARKER])
        texts += list(meta.get("openuni_texts") or [])
        tensors.append(tensor.detach().to("cpu", torch.float32))
    if len(ids) > 1:
        raise OpenUniError(f"The {what} conditioning mixes entries encoded by different OpenUni models; "
                           "encode every prompt with the same loaded model.")
    if any(t.ndim != 3 for t in tensors) or len({t.shape[-1] for t in tensors}) > 1:
        raise OpenUniError(f"The {what} conditioning entries have shapes {[list(t.shape) for t in tensors]}; they "
                           "must all be [batch, queries, channels] with the same channels to be stacked.")
    return QueryConditioning(torch.cat(same_token_count(*tensors)), ids.pop(), texts)


def refuse_steering_keys(meta: dict, what: str, width: int | None, height: int | None) -> None:
    """Raise for a key that would change a KSampler result but that OpenUni Sampler cannot apply; neutral values
    (strength 1, timestep range 0..1, an area or mask that covers everything) pass."""
    for key, value in meta.items():
        if key in OUR_KEYS or key in HARMLESS_KEYS or value is None or _neutral(key, value, width, height):
            continue
        shown = f"{key}={value!r}" if isinstance(value, (int, float, str)) else key
        raise OpenUniError(f"The {what} conditioning carries {shown} (set by a node such as Conditioning (Set Area), "
                           f"(Set Mask) or (Set Timestep Range)). {NATIVE_HINT}")


def _neutral(key: str, value, width: int | None, height: int | None) -> bool:
    if key == "strength":
        return value == 1.0
    if key == "start_percent":
        return value <= 0.0
    if key == "end_percent":
        return value >= 1.0
    if key == "mask":
        return isinstance(value, torch.Tensor) and bool((value >= 1.0).all())
    if key == "area" and isinstance(value, (list, tuple)) and len(value) == 5 and value[0] == "percentage":
        _, h, w, y, x = value
        return y == 0 and x == 0 and h >= 1.0 and w >= 1.0
    if key == "area" and isinstance(value, (list, tuple)) and len(value) == 4 and width and height:
        h, w, y, x = value  # ComfyUI's units: 8 pixels (Conditioning (Set Area) divides by 8)
        return y == 0 and x == 0 and h * 8 >= height and w * 8 >= width
    return False


def _describe(tensor: torch.Tensor) -> str:
    return f"a {list(tensor.shape)} tensor" if isinstance(tensor, torch.Tensor) else type(tensor).__name__
