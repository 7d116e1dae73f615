"""DC-AE f32c32: latents <-> images. Images at the boundary are float [B,H,W,3] in 0..1 (ComfyUI's IMAGE).

Large images are decoded/encoded tile by tile (our own implementation: diffusers 0.32's AutoencoderDC
tiling is unfinished, and we want the same result on every diffusers version). The tiling is exact:
DC-AE's global-attention stages run on the whole, small, low-resolution feature map and only its
convolutional high-resolution stages (where the memory goes) are tiled, each tile with a halo of its
receptive field (see "exact tiling" below). The result equals the untiled decode up to float rounding,
so there are no seams. An image that fits in one tile goes through the untiled path unchanged.
"""

from __future__ import annotations

import math

import torch

from .errors import OpenUniError
from .options import SPATIAL_COMPRESSION as PX  # pixels per latent cell along a side (DC-AE f32)
from .precision import check_finite
from .sampling import check_latents
from .vae_tiling import decode_tiled, encode_one, encode_tiled

TILE_THRESHOLD = 1024 * 1024  # pixels; above this `tiled=None` tiles (DC-AE's high-res stages get memory-hungry)
TILE_SIZE = 768  # pixels per tile side (24 latents)
TILE_OVERLAP = 128  # pixels shared by neighbouring tiles, used only by the blended fallback (4 latents)


@torch.no_grad()
def decode(vae, latents: torch.Tensor, tiled: bool | None = None, *, tile_size: int | None = None,
           tile_overlap: int | None = None) -> torch.Tensor:
    """Latents [B,32,h,w] in DC-AE's own (unscaled) space → images [B,32h,32w,3] float32 on the CPU in 0..1.

    tiled: None = tile when the image has more than TILE_THRESHOLD pixels; True/False force it.
    tile_size: output pixels per tile side (multiple of 32). tile_overlap: pixels shared by neighbouring
    tiles in the blended fallback (used only for a DC-AE whose structure the exact tiling does not know).
    Raises precision.NonFiniteError when DC-AE's output holds inf/NaN (OpenUniModel.decode explains it).
    """
    check_latents(latents, what="latent input")
    device, dtype = vae.device, vae.dtype
    use_tiling, tile, overlap = _tiling_plan(latents.shape[-2] * PX, latents.shape[-1] * PX, tiled, tile_size,
                                             tile_overlap)
    out = []
    for one in latents:  # one image at a time bounds peak memory for big batches
        z = one[None].to(device=device, dtype=dtype)
        x = decode_tiled(vae, z, tile, overlap) if use_tiling else vae.decode(z, return_dict=False)[0]
        check_finite(x, "vae", "decoding")  # clamped, NaN would be saved as black
        out.append(((x.float() + 1.0) / 2.0).clamp(0, 1).permute(0, 2, 3, 1).cpu())
        del x
    return torch.cat(out)


@torch.no_grad()
def encode(vae, images: torch.Tensor, tiled: bool | None = None, *, tile_size: int | None = None,
           tile_overlap: int | None = None) -> torch.Tensor:
    """Images [B,H,W,C] in 0..1 (H, W multiples of 32) → latents [B,32,H/32,W/32] float32 on the CPU, in DC-AE's own
    (unscaled) space, which is what ComfyUI's LATENT holds; the scaling factor belongs to the diffusion model's side."""
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise OpenUniError(f"Expected images as [batch, height, width, channels], got {list(images.shape)}.")
    h, w = images.shape[1:3]
    if h % PX or w % PX:
        raise OpenUniError(f"The image is {w}×{h}; DC-AE encodes sizes that are multiples of {PX}. "
                           f"Resize or crop it to {max(PX, w // PX * PX)}×{max(PX, h // PX * PX)} first.")
    if not torch.isfinite(images).all():
        raise OpenUniError("The image contains NaN or infinite values.")
    x = images.float()
    if x.shape[-1] == 4:
        x = x[..., :3] * x[..., 3:] + (1 - x[..., 3:])
    elif x.shape[-1] == 1:
        x = x.expand(-1, -1, -1, 3)
    x = x.clamp(0, 1).permute(0, 3, 1, 2) * 2.0 - 1.0
    device, dtype = vae.device, vae.dtype
    use_tiling, tile, overlap = _tiling_plan(h, w, tiled, tile_size, tile_overlap)
    out = []
    for one in x:
        pixels = one[None].to(device=device, dtype=dtype)
        lat = encode_tiled(vae, pixels, tile, overlap) if use_tiling else encode_one(vae, pixels)
        check_finite(lat, "vae", "encoding")
        out.append(lat.float().cpu())
    return torch.cat(out)


def want_tiling(h: int, w: int, tiled: bool | None) -> bool:
    return (h * w > TILE_THRESHOLD) if tiled is None else bool(tiled)


def _tiling_plan(h: int, w: int, tiled: bool | None, tile_size: int | None, tile_overlap: int | None
                 ) -> tuple[bool, int, int]:
    """(tile?, tile, overlap in latents) for an h×w-pixel image; an image that fits in one tile is not tiled."""
    tile, overlap = _tile_geometry(tile_size, tile_overlap)
    return want_tiling(h, w, tiled) and (h > tile * PX or w > tile * PX), tile, overlap


def _tile_geometry(tile_size: int | None, tile_overlap: int | None) -> tuple[int, int]:
    """Pixels → latent units, checked. Returns (tile, overlap) in latents."""
    size = TILE_SIZE if tile_size is None else int(tile_size)
    over = min(TILE_OVERLAP, size // 2 // PX * PX) if tile_overlap is None else int(tile_overlap)
    if size < 2 * PX or size % PX:
        raise OpenUniError(f"tile_size {size} must be a multiple of {PX} and at least {2 * PX} pixels.")
    if over < 0 or over % PX or 2 * over > size:
        raise OpenUniError(f"tile_overlap {over} must be a multiple of {PX} between 0 and half the tile size ({size // 2}).")
    return size // PX, over // PX
