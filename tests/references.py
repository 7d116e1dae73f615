"""Independent references the tests compare the engine with: written from diffusers' and transformers' own
classes and from published facts, never from the engine's helpers."""

from __future__ import annotations

import torch


def reference_decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """diffusers' untiled AutoencoderDC decode of DC-AE's own latents, mapped to ComfyUI's IMAGE: [B,H,W,3] in 0..1."""
    with torch.no_grad():
        x = vae.decode(latents).sample
    return ((x + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)


def reference_encode(vae, images: torch.Tensor) -> torch.Tensor:
    """diffusers' untiled AutoencoderDC encode of a 0..1 IMAGE [B,H,W,3]: DC-AE's own (unscaled) `.latent`."""
    with torch.no_grad():
        return vae.encode(images.permute(0, 3, 1, 2) * 2 - 1).latent
