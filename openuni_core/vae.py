"""DC-AE f32c32: latents ↔ images. Images at the boundary are float [B,H,W,3] in 0..1 (ComfyUI's IMAGE)."""

from __future__ import annotations

import torch

from .errors import OpenUniError
from .sampling import SCALE, check_latents


@torch.no_grad()
def decode(vae, latents: torch.Tensor, *, tiled: bool | None = None) -> torch.Tensor:
    """Latents [B,32,h,w] → images [B,32h,32w,3] float32 on the CPU in 0..1."""
    check_latents(latents)
    device, dtype = vae.device, vae.dtype
    scaling = float(vae.config.scaling_factor)
    use_tiling = _want_tiling(vae, latents.shape[-2] * SCALE, latents.shape[-1] * SCALE, tiled)
    out = []
    for one in latents:  # one image at a time bounds peak memory for big batches
        x = vae.decode(one[None].to(device=device, dtype=dtype) / scaling, return_dict=False)[0]
        out.append(((x.float() + 1.0) / 2.0).clamp(0, 1).permute(0, 2, 3, 1).cpu())
    _restore_tiling(vae, use_tiling)
    return torch.cat(out)


@torch.no_grad()
def encode(vae, images: torch.Tensor, *, tiled: bool | None = None) -> torch.Tensor:
    """Images [B,H,W,C] in 0..1 (H, W multiples of 32) → latents [B,32,H/32,W/32] float32 on the CPU."""
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise OpenUniError(f"Expected images as [batch, height, width, channels], got {list(images.shape)}.")
    h, w = images.shape[1:3]
    if h % SCALE or w % SCALE:
        raise OpenUniError(f"The image is {w}×{h}; DC-AE encodes sizes that are multiples of {SCALE}. "
                           f"Resize or crop it to {max(SCALE, w // SCALE * SCALE)}×{max(SCALE, h // SCALE * SCALE)} first.")
    if not torch.isfinite(images).all():
        raise OpenUniError("The image contains NaN or infinite values.")
    x = images.float()
    if x.shape[-1] == 4:
        x = x[..., :3] * x[..., 3:] + (1 - x[..., 3:])
    elif x.shape[-1] == 1:
        x = x.expand(-1, -1, -1, 3)
    x = x.clamp(0, 1).permute(0, 3, 1, 2) * 2.0 - 1.0
    device, dtype = vae.device, vae.dtype
    scaling = float(vae.config.scaling_factor)
    use_tiling = _want_tiling(vae, h, w, tiled)
    out = []
    for one in x:
        enc = vae.encode(one[None].to(device=device, dtype=dtype), return_dict=False)[0]
        lat = enc.latent if hasattr(enc, "latent") else enc
        out.append((lat.float() * scaling).cpu())
    _restore_tiling(vae, use_tiling)
    return torch.cat(out)


TILE_THRESHOLD = 1024 * 1024  # pixels; above this DC-AE's attention blocks get memory-hungry


def _want_tiling(vae, h: int, w: int, tiled: bool | None) -> bool:
    want = (h * w > TILE_THRESHOLD) if tiled is None else tiled
    # diffusers 0.32 has enable_tiling() on AutoencoderDC but its tiled path is unfinished (missing tile sizes).
    if want and hasattr(vae, "enable_tiling") and hasattr(vae, "tile_latent_min_width"):
        vae.enable_tiling()
        return True
    return False


def _restore_tiling(vae, enabled: bool) -> None:
    if enabled and hasattr(vae, "disable_tiling"):
        vae.disable_tiling()
