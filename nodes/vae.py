"""DC-AE (f32c32) decode and encode: OpenUni LATENT ⇄ ComfyUI IMAGE."""

from __future__ import annotations

import logging

import torch

from .encode import MODEL_TOOLTIP, image_list, require_model
from .loader import CATEGORY, MODEL_TYPE
from .sample import _latent_samples
from ..openuni_core.errors import OpenUniError
from ..openuni_core.sampling import SCALE

log = logging.getLogger("OpenUni")
TILING = {"auto": None, "on": True, "off": False}
TILING_TOOLTIP = ("Decode/encode in tiles to bound memory. auto: tiles above 1 megapixel (DC-AE's attention "
                  "blocks grow quickly with size); on/off force it.")


class OpenUniVAEDecode:
    DESCRIPTION = "Decodes OpenUni latents to images with the DC-AE f32c32 autoencoder."
    CATEGORY = CATEGORY
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The decoded images.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL_TYPE, {"tooltip": MODEL_TOOLTIP + " Its DC-AE decodes."}),
            "latent": ("LATENT", {"tooltip": "OpenUni latents from OpenUni Sampler or OpenUni VAE Encode."}),
            "tiling": (list(TILING), {"default": "auto", "tooltip": TILING_TOOLTIP}),
        }}

    def decode(self, model, latent, tiling="auto"):
        require_model(model)
        samples = _latent_samples(latent)
        return (model.decode(samples, tiled=TILING.get(tiling)),)


class OpenUniVAEEncode:
    DESCRIPTION = ("Encodes images to OpenUni latents with DC-AE, for image-to-image with OpenUni Sampler. Sizes that "
                   "are not multiples of 32 are center-cropped to the nearest smaller multiple.")
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("OpenUni latents [batch, 32, height/32, width/32].",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL_TYPE, {"tooltip": MODEL_TOOLTIP + " Its DC-AE encodes."}),
            "image": ("IMAGE", {"tooltip": "Images to encode; center-cropped to multiples of 32 pixels."}),
            "tiling": (list(TILING), {"default": "auto", "tooltip": TILING_TOOLTIP}),
        }}

    def encode(self, model, image, tiling="auto"):
        require_model(model)
        images = crop_to_multiple(one_size_batch(image))
        return ({"samples": model.encode_images(images, tiled=TILING.get(tiling))},)


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


def crop_to_multiple(images: torch.Tensor, multiple: int = SCALE) -> torch.Tensor:
    """Center-crop [B,H,W,C] to multiples of `multiple` (as ComfyUI's VAE Encode crops to multiples of 8)."""
    h, w = images.shape[1:3]
    nh, nw = h // multiple * multiple, w // multiple * multiple
    if nh == 0 or nw == 0:
        raise OpenUniError(f"The image is {w}×{h}; DC-AE needs at least {multiple}×{multiple} pixels.")
    if (nh, nw) != (h, w):
        top, left = (h - nh) // 2, (w - nw) // 2
        log.info("[OpenUni] VAE Encode: cropping %d×%d to %d×%d", w, h, nw, nh)
        images = images[:, top:top + nh, left:left + nw]
    return images
