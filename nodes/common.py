"""What every OpenUni node shares: the category, the model type, tooltips, and input checks on ComfyUI's types.

Checks here run on the node's inputs (types and shapes ComfyUI hands over) before the engine is called; the
engine checks its own arguments (`OpenUniModel.check_inputs`) and its messages reach the user unchanged.
"""

from __future__ import annotations

import logging

import torch

from ..openuni_core.errors import OpenUniError
from ..openuni_core.images import crop_box_to_multiple
from ..openuni_core.options import MAX_IMAGE_PIXELS, SPATIAL_COMPRESSION
from ..openuni_core.sampling import check_side

CATEGORY = "OpenUni"
MODEL_TYPE = "OPENUNI_MODEL"
MODEL_TOOLTIP = "The OpenUni model from OpenUni Model Loader."
log = logging.getLogger("OpenUni")


def require_model(model):
    if not all(hasattr(model, a) for a in ("encode_prompt", "sample", "decode", "model_id")):
        raise OpenUniError(f"The model input is a {type(model).__name__}, not an OpenUni model; connect "
                           "OpenUni Model Loader.")
    return model


def text_input(value, what: str) -> str:
    if not isinstance(value, str):
        raise OpenUniError(f"The {what} input must be text, got {type(value).__name__}; connect a STRING.")
    return value


def image_batch(image, what: str = "image") -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[0] < 1:
        raise OpenUniError(f"The {what} input must be a ComfyUI IMAGE batch [batch, height, width, channels], got "
                           f"{list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__}.")
    return image


def image_list(image, what: str = "image"):
    """A ComfyUI IMAGE batch [B,H,W,C], or what a node hands over as a Python list (images of different sizes
    cannot share one batch tensor): a list of [H,W,C] or [B,H,W,C] tensors, flattened to [H,W,C] images."""
    if not isinstance(image, (list, tuple)):
        return image_batch(image, what)
    images = []
    for item in image:
        if isinstance(item, torch.Tensor) and item.ndim in (3, 4):
            images.extend(item if item.ndim == 4 else [item])
        else:
            raise OpenUniError(f"The {what} input is a list holding "
                               f"{list(item.shape) if isinstance(item, torch.Tensor) else type(item).__name__}; "
                               "each entry must be an image [height, width, channels] or a batch of them.")
    if not images:
        raise OpenUniError(f"The {what} input is an empty list; connect at least one image.")
    return images


def refuse_huge(images, what: str = "image") -> None:
    """The engine's pixel limit, checked on the shapes before it converts (and so copies) any image."""
    for im in images:
        h, w = int(im.shape[-3]), int(im.shape[-2])
        if h * w > MAX_IMAGE_PIXELS:
            raise OpenUniError(f"The {what} is {w}×{h}; images above {MAX_IMAGE_PIXELS // 1_000_000} MP are refused. "
                               "Downscale it first (e.g. with Upscale Image By).")


def one_size_batch(image) -> torch.Tensor:
    """One latent batch needs one size: a list of same-size images is stacked, mixed sizes are refused."""
    images = image_list(image)
    if isinstance(images, torch.Tensor):
        return images
    sizes = list(dict.fromkeys(f"{im.shape[1]}×{im.shape[0]}" for im in images))
    if len(sizes) > 1 or len({im.shape[-1] for im in images}) > 1:
        raise OpenUniError(f"VAE Encode got images of different sizes or channels ({', '.join(sizes)}); one latent "
                           "batch holds one size. Resize them to one size first (e.g. with Upscale Image).")
    return torch.stack(images)


def crop_to_multiple(images: torch.Tensor, multiple: int = SPATIAL_COMPRESSION) -> torch.Tensor:
    """Center-crop [B,H,W,C] to multiples of `multiple` (as ComfyUI's VAE Encode crops to multiples of 8)."""
    h, w = images.shape[1:3]
    left, top, right, bottom = crop_box_to_multiple(w, h, multiple)
    if (right - left, bottom - top) != (w, h):
        log.info("[OpenUni] VAE Encode: cropping %d×%d to %d×%d", w, h, right - left, bottom - top)
        images = images[:, top:bottom, left:right]
    return images


def side_problem(width=None, height=None) -> str | None:
    """The engine's message for a width/height it would refuse (openuni_core.sampling.check_side), for a node's
    VALIDATE_INPUTS, so e.g. 500 from an old workflow is refused when queued; None (linked inputs arrive as None
    there and are checked when the node runs) or a valid size give None."""
    for name, value in (("width", width), ("height", height)):
        if value is not None:
            try:
                check_side(name, value)
            except OpenUniError as e:
                return str(e)
    return None


def latent_samples(latent) -> torch.Tensor:
    """A ComfyUI LATENT's samples as float32 on the CPU (the engine checks their shape and values)."""
    if not isinstance(latent, dict) or not isinstance(latent.get("samples"), torch.Tensor):
        raise OpenUniError("The latent input must be a ComfyUI LATENT ({'samples': tensor}).")
    unused = sorted(k for k in latent if k not in ("samples", "batch_index", "noise_mask"))
    if unused:
        log.warning("[OpenUni] latent: ignoring %s (not used by OpenUni's sampler)", unused)
    return latent["samples"].detach().to("cpu", torch.float32)
